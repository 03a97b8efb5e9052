//! Bad inventories are rejected before any server is touched: each case names
//! the problem and its place (file:line:column), and nothing is created;
//! every problem of a file is reported in one run; an empty or missing file
//! is said so, with a way forward; a password file is only read when it is a
//! private regular one-line file.

mod common;

use common::{Admin, Fleet};

/// (what is wrong, tenants section, text the error must contain, line it must name)
const CASES: &[(&str, &str, &str, usize)] = &[
    (
        "unknown key",
        "[tenants.{p}_a]\nplan = \"starter\"\ncolour = \"red\"\n",
        "colour",
        3,
    ),
    (
        "wrong type",
        "[tenants.{p}_a]\nplan = \"starter\"\ndeletion_protection = \"yes\"\n",
        "deletion_protection",
        3,
    ),
    (
        "SQL in a database name",
        "[tenants.'shop\"; DROP DATABASE x; --']\nplan = \"starter\"\n",
        "invalid database name",
        1,
    ),
    (
        "upper-case database name",
        "[tenants.{p}_Shop]\nplan = \"starter\"\n",
        "lower-case",
        1,
    ),
    (
        "reserved database name",
        "[tenants.pg_{p}]\nplan = \"starter\"\n",
        "reserved",
        1,
    ),
    (
        "name too long for its roles",
        "[tenants.{p}_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa]\nplan = \"starter\"\n",
        "_developer",
        1,
    ),
    (
        "unknown plan",
        "[tenants.{p}_a]\nplan = \"enterprise\"\n",
        "enterprise",
        2,
    ),
    (
        "same username twice",
        "[tenants.{p}_a]\nplan = \"starter\"\nadmins = [{ username = \"{p}_u\" }]\n\n[tenants.{p}_b]\nplan = \"starter\"\ncustomers = [{ username = \"{p}_u\" }]\n",
        "{p}_u",
        7,
    ),
    (
        "username equal to a derived group role",
        "[tenants.{p}_a]\nplan = \"starter\"\nadmins = [{ username = \"{p}_a_owner\" }]\n",
        "{p}_a_owner",
        3,
    ),
    (
        "subdomain used twice",
        "[tenants.{p}_a]\nplan = \"starter\"\nsubdomain = \"same\"\n\n[tenants.{p}_b]\nplan = \"starter\"\nsubdomain = \"same\"\n",
        "same",
        7,
    ),
    (
        "reserved subdomain",
        "[tenants.{p}_a]\nplan = \"starter\"\nsubdomain = \"www\"\n",
        "www",
        3,
    ),
    (
        "password env variable missing",
        "[tenants.{p}_a]\nplan = \"starter\"\nadmins = [{ username = \"{p}_u\", password_env = \"TENANTRY_TEST_NOT_SET\" }]\n",
        "TENANTRY_TEST_NOT_SET",
        3,
    ),
    (
        "password file that is a device",
        "[tenants.{p}_a]\nplan = \"starter\"\nadmins = [{ username = \"{p}_u\", password_file = \"/dev/zero\" }]\n",
        "/dev/zero is a device, not a regular file",
        3,
    ),
    (
        "password file missing",
        "[tenants.{p}_a]\nplan = \"starter\"\nadmins = [{ username = \"{p}_u\", password_file = \"nope/secret\" }]\n",
        "nope/secret",
        3,
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inventories_are_rejected_with_a_place_and_nothing_is_created() {
    for (what, tenants, needle, line) in CASES {
        let f = Fleet::new(Admin::Superuser);
        f.write(tenants);
        // Header lines written by Fleet::write before the tenants section.
        let header = std::fs::read_to_string(f.config())
            .unwrap()
            .lines()
            .position(|l| l.starts_with("[tenants.") || l == "colour = \"red\"")
            .expect("tenants section");
        let expected_line = header + line;
        for cmd in [&["validate"][..], &["plan"], &["apply", "--auto-approve"]] {
            let out = f.tenantry(cmd);
            assert_eq!(out.code, 1, "{what}: {cmd:?} must fail\n{}", out.all());
            let needle = f.name(needle);
            assert!(
                out.stderr.contains(&needle),
                "{what}: error should name {needle:?}:\n{}",
                out.stderr
            );
            let place = format!("tenants.toml:{expected_line}:");
            assert!(
                out.stderr.contains(&place),
                "{what}: error should point at {place}:\n{}",
                out.stderr
            );
        }
        let su = f.superuser("postgres").await;
        let n: i64 = su
            .query_one(
                "SELECT (SELECT count(*) FROM pg_roles WHERE rolname LIKE $1) + (SELECT count(*) FROM pg_database WHERE datname LIKE $1)",
                &[&format!("%{}%", f.p)],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "{what}: nothing may be created");
    }
}

#[test]
fn the_checked_in_example_is_valid_with_no_variables_set() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["validate", "--config"])
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tenants.toml"))
        .env_remove("TENANTRY_ADMIN_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 tenant(s)"));
}

/// Runs the binary with `--config <config>` and no admin URL.
fn tenantry(config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("TENANTRY_ADMIN_URL")
        .env_remove("TENANTRY_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What every inventory below starts with.
const PLAN: &str = "[plans.starter]\nconnection_limit = 5\nstatement_timeout = \"5s\"\npool_size = 2\nrequests_per_second = 20\n\n";

#[test]
fn an_empty_file_is_refused_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tenants.toml");
    for text in ["", "# nothing yet\n\n"] {
        std::fs::write(&config, text).unwrap();
        for cmd in [&["validate"][..], &["plan"], &["list"], &["env", "shop"]] {
            let (code, stdout, stderr) = tenantry(&config, cmd);
            assert_eq!(code, 1, "{cmd:?}: {stdout}{stderr}");
            assert!(
                stderr.contains("tenants.toml: the file is empty") && stderr.contains("help: "),
                "{cmd:?}: {stderr}"
            );
        }
    }
}

/// A file naming several servers is valid; commands name the servers they
/// cannot read, and `--admin-url` (one server's override) is refused with
/// the per-server variables to use instead.
#[test]
fn several_servers_validate_and_commands_name_the_servers_they_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tenants.toml");
    let text = format!(
        "[servers.eu1]\nadmin_url = \"postgres://u@127.0.0.1:1/postgres\"\n\n[servers.eu2]\nadmin_url = \"postgres://u@127.0.0.1:2/postgres\"\n\n{PLAN}[tenants.shop]\nplan = \"starter\"\nserver = \"eu2\"\n"
    );
    std::fs::write(&config, text).unwrap();
    let (code, stdout, stderr) = tenantry(&config, &["validate"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    std::fs::create_dir(dir.path().join("schema")).unwrap();
    for cmd in [&["plan"][..], &["list"]] {
        let (code, stdout, stderr) = tenantry(&config, cmd);
        assert_eq!(code, 1, "{cmd:?}: {stdout}{stderr}");
        assert!(
            stderr.contains("server(s) eu1, eu2 could not be read"),
            "{cmd:?}: {stderr}"
        );
    }
    // A tenant's own command cannot tell where it lives either.
    let (code, stdout, stderr) = tenantry(&config, &["env", "shop"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains(
            "tenant shop: found on no server that was read, and server eu1, eu2 could not be read"
        ),
        "{stderr}"
    );
    let (code, _, stderr) = tenantry(
        &config,
        &["plan", "--admin-url", "postgres://u@127.0.0.1:3/postgres"],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("--admin-url overrides the admin URL of a file with one server")
            && stderr.contains("TENANTRY_ADMIN_URL_EU1 / TENANTRY_ADMIN_URL_EU2"),
        "{stderr}"
    );
}

#[test]
fn a_missing_file_is_said_once_with_a_way_forward() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tenants.toml");
    let (code, _, stderr) = tenantry(&config, &["validate"]);
    assert_eq!(code, 1);
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("help: looked for {}", config.display()))
            && stderr.contains("--config <path>")
            && stderr.contains("tenantry import-tfvars"),
        "{stderr}"
    );
}

#[test]
fn every_unknown_key_and_type_error_is_reported_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tenants.toml");
    std::fs::write(
        &config,
        format!(
            "{PLAN}[tenants.shop]\nplan = \"starter\"\ncolour = \"red\"\nsubdomian = \"x\"\n\n[server]\napp_port = \"5\"\n\n[tenants.Bad]\nplan = \"starter\"\n"
        ),
    )
    .unwrap();
    let (code, _, stderr) = tenantry(&config, &["validate"]);
    assert_eq!(code, 1, "{stderr}");
    for needle in [
        "tenants.toml:9:1: unknown key `colour` in tenants.shop",
        "tenants.toml:10:1: unknown key `subdomian` in tenants.shop",
        "help: did you mean `subdomain`?",
        "tenants.toml:13:12: invalid type for server.app_port: expected an integer, found string \"5\"",
        "help: write 5 without quotes: app_port = 5",
        "tenants.toml:15:10: invalid database name \"Bad\"",
    ] {
        assert!(stderr.contains(needle), "{needle:?} not in:\n{stderr}");
    }
}

/// `password_file` pointing at a file that holds more than a password
/// (through a link, here to /etc/passwd) is refused, and `tenantry env` never
/// prints it.
#[cfg(unix)]
#[test]
fn env_never_prints_a_file_that_is_not_a_password_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tenants.toml");
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("pw")).unwrap();
    std::fs::write(
        &config,
        format!(
            "{PLAN}[server]\nadmin_url = \"postgres://postgres@localhost:5432/postgres\"\n\n[tenants.shop]\nplan = \"starter\"\nadmins = [{{ username = \"shop_a\", password_file = \"pw\" }}]\n"
        ),
    )
    .unwrap();
    let (code, stdout, stderr) = tenantry(&config, &["env", "shop"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("tenants.toml:12:50: user `shop_a`: password file"),
        "{stderr}"
    );
    assert!(
        stderr.contains("is a link to /etc/passwd: point password_file at a file of your own"),
        "{stderr}"
    );
    assert!(
        !stdout.contains("root") && !stderr.contains("root:"),
        "{stdout}{stderr}"
    );
}
