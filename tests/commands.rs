//! The read-only commands (`list`, `show`) and the embedded default
//! (`up` starts a local PostgreSQL, applies the inventory; `down` stops it);
//! what every command does with its output: a closed pipe, a log with no
//! secrets and no colour codes on a file, errors with a way forward, and
//! migrate's report.

mod common;

use std::process::Stdio;

use common::{Admin, Fleet, TWO_TENANTS};

/// A local address nothing listens on (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn list_and_show_report_file_and_server() {
    let f = Fleet::new(Admin::Superuser);
    f.write(TWO_TENANTS);
    let before = f.tenantry(&["list"]);
    assert!(
        before.ok().contains("missing (apply creates it)"),
        "{}",
        before.stdout
    );
    f.apply().ok();
    f.psql("postgres", "ALTER ROLE {p}_cafe_c CONNECTION LIMIT 1");
    let list = f.tenantry(&["list"]);
    let text = list.ok();
    let line = |t: &str| {
        text.lines()
            .find(|l| l.starts_with(&f.name(t)))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        line("{p}_shop ").contains("professional") && line("{p}_shop ").contains("in sync"),
        "{text}"
    );
    assert!(
        line("{p}_cafe ").contains("V1") && line("{p}_cafe ").contains("drift"),
        "{text}"
    );

    let show = f.tenantry(&["show", &f.name("{p}_shop")]);
    let text = show.ok();
    assert!(text.contains("connection limit 20"), "{text}");
    assert!(
        text.contains(&f.name("{p}_shop_d")) && text.contains("developer"),
        "{text}"
    );
    assert!(text.contains("schema V1"), "{text}");
    assert!(
        !text.contains(&f.secret("{p}_shop_d")),
        "show never prints a password"
    );
    let missing = f.tenantry(&["show", "nope"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("no tenant 'nope'"),
        "{}",
        missing.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_starts_a_local_server_applies_and_down_stops_it() {
    let f = Fleet::new(Admin::Superuser);
    f.write(TWO_TENANTS);
    let data = f.dir.path().join("pg");
    let data_arg = data.to_str().unwrap();
    let out = f.tenantry(&["up", "--no-serve", "--data-dir", data_arg]);
    let text = out.ok();
    assert!(text.contains("Apply complete: 2 created"), "{text}");
    let url = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("export TENANTRY_ADMIN_URL="))
        .expect("up prints the admin URL")
        .to_owned();
    let client = common::connect(&url).await.expect("local server answers");
    let n: i64 = common::count(
        &client,
        "SELECT count(*) FROM pg_database WHERE datname LIKE $1",
        &f.like(),
    )
    .await;
    assert_eq!(n, 2);
    drop(client);
    // Running up again converges to no changes on the same server.
    let again = f.tenantry(&["up", "--no-serve", "--data-dir", data_arg]);
    assert!(again.ok().contains("No changes"), "{}", again.stdout);
    let down = f.tenantry(&["down", "--data-dir", data_arg]);
    assert!(down.ok().contains("Stopped"), "{}", down.stdout);
    assert!(common::connect(&url).await.is_err(), "stopped");
}

/// Completions and man pages come from the clap definitions, so every
/// command is in them.
#[test]
fn completions_and_man_pages_cover_every_command() {
    let bin = env!("CARGO_BIN_EXE_tenantry");
    let commands = [
        "validate",
        "plan",
        "apply",
        "migrate",
        "status",
        "list",
        "show",
        "up",
        "serve",
        "token",
        "down",
        "env",
        "import-tfvars",
        "adopt",
        "rotate",
        "backup",
        "restore",
    ];
    for shell in ["bash", "zsh", "fish"] {
        let out = std::process::Command::new(bin)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        for c in commands {
            assert!(script.contains(c), "{shell} completion lacks {c}");
        }
    }
    let bad = std::process::Command::new(bin)
        .args(["completions", "cmd.exe"])
        .output()
        .unwrap();
    assert!(!bad.status.success());

    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin)
        .arg("man")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = std::fs::read_to_string(dir.path().join("tenantry.1")).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH tenantry"),
        "{page}"
    );
    for c in commands {
        let sub = dir.path().join(format!("tenantry-{c}.1"));
        let text =
            std::fs::read_to_string(&sub).unwrap_or_else(|e| panic!("{}: {e}", sub.display()));
        assert!(text.contains(".SH"), "{c}: not a man page");
    }
    let restore = std::fs::read_to_string(dir.path().join("tenantry-restore.1")).unwrap();
    assert!(restore.contains("force"), "{restore}");
}

/// `tenantry <cmd> | head -1`: the reader goes away, and tenantry ends as a
/// Unix tool does (quietly, status 141), never with a panic (status 101).
#[test]
fn a_closed_pipe_ends_any_command_quietly() {
    let f = Fleet::new(Admin::Superuser);
    f.write(TWO_TENANTS);
    f.apply().ok();
    let shop = f.name("{p}_shop");
    let commands: [&[&str]; 7] = [
        &["validate"],
        &["plan"],
        &["list"],
        &["show", &shop],
        &["status"],
        &["env", &shop],
        &["token", "list", &shop],
    ];
    let mut completions = std::process::Command::new(env!("CARGO_BIN_EXE_tenantry"));
    completions.args(["completions", "bash"]);
    for (what, mut cmd) in commands
        .iter()
        .map(|args| (args.join(" "), f.command(args)))
        .chain([("completions bash".to_owned(), completions)])
    {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The read end closes before tenantry writes anything.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{what}: {stderr}"
        );
        assert_eq!(out.status.code(), Some(141), "{what}: {stderr}");
    }
    // The same for standard error, where errors go.
    let mut child = f
        .command(&["show", "nope"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(141));
}

/// Nothing secret reaches the log at any level, whatever `TENANTRY_LOG`
/// asks for, and a log that is not a terminal has no colour codes.
#[test]
fn the_log_at_trace_holds_no_secret_and_no_colour_codes() {
    let f = Fleet::new(Admin::Superuser);
    f.write(TWO_TENANTS);
    let log = [(
        "TENANTRY_LOG",
        "trace,tokio_postgres=trace,tokio_postgres::query=trace,tokio_postgres::simple_query=trace",
    )];
    let apply = f.tenantry_env(&["apply", "--auto-approve"], &log);
    apply.ok();
    let rotate = f.tenantry_env(&["rotate", &f.name("{p}_cafe")], &log);
    rotate.ok();
    let logged = format!("{}{}", apply.stderr, rotate.stderr);
    assert!(
        logged.contains("TRACE") || logged.contains("DEBUG") || logged.contains("INFO"),
        "the log is empty, so this test would prove nothing:\n{logged}"
    );
    for leak in ["SCRAM-SHA-256$", "PASSWORD '", "PASSWORD "] {
        assert!(!logged.contains(leak), "{leak} in the log:\n{logged}");
    }
    for user in [
        "{p}_shop_a",
        "{p}_shop_d",
        "{p}_shop_c",
        "{p}_cafe_a",
        "{p}_cafe_c",
    ] {
        let password = f.secret(user);
        assert!(
            !logged.contains(&password),
            "{user}'s password in the log:\n{logged}"
        );
    }
    assert!(
        !logged.contains('\x1b'),
        "colour codes in a log file:\n{logged}"
    );
}

#[test]
fn list_and_show_without_a_server_print_the_file_and_fail() {
    let f = Fleet::new(Admin::Superuser);
    f.write(TWO_TENANTS);
    let url = format!(
        "postgres://postgres:s3cret-pw@127.0.0.1:{}/postgres",
        closed_port()
    );
    let list = f.tenantry(&["list", "--admin-url", &url]);
    assert_eq!(list.code, 1, "{}", list.all());
    let row = list
        .stdout
        .lines()
        .find(|l| l.starts_with(&f.name("{p}_shop ")))
        .unwrap_or_else(|| panic!("no row for the tenant:\n{}", list.all()));
    assert!(row.contains("professional"), "{row}");
    assert!(row.contains("unknown (cannot connect)"), "{row}");
    let show = f.tenantry(&["show", &f.name("{p}_shop"), "--admin-url", &url]);
    assert_eq!(show.code, 1, "{}", show.all());
    assert!(
        show.stdout.contains("connection limit 20"),
        "{}",
        show.all()
    );
    assert!(
        show.stdout
            .contains("database     unknown (cannot connect)"),
        "{}",
        show.all()
    );
    for run in [&list, &show] {
        let err = &run.stderr;
        assert!(err.contains("Connection refused"), "{err}");
        assert!(
            err.contains("help:") && err.contains("tenantry up"),
            "no way forward: {err}"
        );
        assert!(err.contains("came from --admin-url"), "{err}");
        assert!(!run.all().contains("s3cret-pw"), "the password is printed");
    }
    // Where the URL came from, when it is the environment.
    let env_url = format!("postgres://postgres@127.0.0.1:{}/postgres", closed_port());
    let plan = f.tenantry_env(&["plan"], &[("TENANTRY_ADMIN_URL", &env_url)]);
    assert_eq!(plan.code, 1);
    assert!(
        plan.stderr.contains("came from TENANTRY_ADMIN_URL"),
        "{}",
        plan.stderr
    );
}

/// A busy API or admin port is found before `up` starts anything.
#[test]
fn up_checks_its_ports_before_starting_anything() {
    let f = Fleet::new(Admin::Superuser);
    f.write(TWO_TENANTS);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    let data = f.dir.path().join("pg");
    let data_arg = data.to_str().unwrap();
    for (flag, other) in [
        ("--listen", "--admin-listen"),
        ("--admin-listen", "--listen"),
    ] {
        let out = f.tenantry(&[
            "up",
            "--data-dir",
            data_arg,
            flag,
            &busy,
            other,
            "127.0.0.1:0",
        ]);
        if data.exists() {
            // Without the check, up started a server: stop it.
            f.tenantry(&["down", "--data-dir", data_arg]);
        }
        assert_eq!(out.code, 1, "{}", out.all());
        assert!(
            out.stderr.contains(&format!("{flag} {busy}")),
            "names the flag and address: {}",
            out.stderr
        );
        assert!(!out.stdout.contains("Starting"), "{}", out.stdout);
        assert!(!data.exists(), "a server was started");
    }
}

/// A tenant whose migration fails shows the version it stays at, and the
/// error once.
#[test]
fn migrate_reports_where_a_failed_tenant_stays() {
    let f = Fleet::new(Admin::Superuser);
    f.own_schema();
    f.write(TWO_TENANTS);
    f.apply().ok();
    f.add_migration("V2__clash.sql", "CREATE TABLE clash (id int);\n");
    f.psql("{p}_cafe", "CREATE TABLE clash (id int)");
    let out = f.tenantry(&["migrate"]);
    assert_eq!(out.code, 1, "{}", out.all());
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with(&f.name("{p}_cafe ")))
        .unwrap_or_else(|| panic!("{}", out.all()));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1..3], ["?", "V1"], "FROM ? TO V1: {row}");
    assert!(row.contains("FAILED"), "{row}");
    assert_eq!(
        row.matches("already exists").count(),
        1,
        "the error once: {row}"
    );
    assert!(
        !row.contains(&format!("migration of {}", f.name("{p}_cafe"))),
        "the row names the tenant already: {row}"
    );
    let ok = out
        .stdout
        .lines()
        .find(|l| l.starts_with(&f.name("{p}_shop ")))
        .unwrap();
    assert!(
        ok.contains("V1") && ok.contains("V2") && ok.contains("migrated"),
        "{ok}"
    );
}
