//! Day-two operations end to end, with the real binary on a real cluster:
//! `backup` and `restore` (round trip, refusals, a fresh database, another
//! tenant's dump), `rotate` (generated, env and file passwords; one user or
//! all), and a running gateway that keeps answering through a rotation and
//! picks the new passwords up on reload.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use common::gateway::{token, Gateway};
use common::{try_sql, Admin, Fleet, TWO_TENANTS};

/// The rows of the store's tables, as psql prints them (ids and timestamps included).
fn data(f: &Fleet, db: &str) -> String {
    f.psql(
        db,
        "SELECT 'customers'; SELECT * FROM customers ORDER BY id;
         SELECT 'widgets'; SELECT * FROM widgets ORDER BY id;
         SELECT 'orders'; SELECT * FROM orders ORDER BY id;",
    )
}

fn seed(f: &Fleet, db: &str, tag: &str) {
    f.psql(
        db,
        &format!(
            "INSERT INTO customers (first_name, last_name, email) VALUES
                ('Ada', 'Lovelace', 'ada@{tag}.example'), ('Bob', 'Marley', 'bob@{tag}.example');
             INSERT INTO widgets (name, price, inventory_level, description) VALUES
                ('{tag} hammer', 1299, 5, 'heavy'), ('{tag} saw', 2599, 2, ''), ('{tag} nail', 5, 1000, 'tiny');
             INSERT INTO orders (customer_id, widget_id, quantity, amount, status) VALUES (1, 1, 2, 2598, 'paid');"
        ),
    );
}

/// The path a `backup` printed: "Backed up <db> to <path> (...".
fn backup_path(stdout: &str) -> PathBuf {
    let rest = stdout
        .split_once(" to ")
        .unwrap_or_else(|| panic!("no path in {stdout:?}"))
        .1;
    PathBuf::from(rest.split(" (").next().unwrap())
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_then_restore_round_trips_the_data_as_a_createrole_admin() {
    let f = Fleet::new(Admin::CreateRole);
    f.write(TWO_TENANTS);
    f.apply().ok();
    let shop = f.name("{p}_shop");
    seed(&f, "{p}_shop", "shop");
    let backed_up = data(&f, "{p}_shop");

    // Backup: into [paths].backups by default, mode 0600, path and size printed.
    let out = f.tenantry(&["backup", &shop]);
    let path = backup_path(out.ok());
    assert!(path.is_file(), "{}", out.all());
    assert!(
        path.starts_with(f.dir.path().join(".tenantry/backups")),
        "{}",
        path.display()
    );
    assert!(path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with(&format!("{shop}-")));
    assert!(out.stdout.contains(" bytes"), "{}", out.stdout);
    assert_eq!(mode(&path), 0o600);

    // Change the data: delete, update, insert.
    f.psql(
        "{p}_shop",
        "DELETE FROM orders; DELETE FROM widgets WHERE name = 'shop nail';
         UPDATE widgets SET price = 1 WHERE name = 'shop hammer';
         INSERT INTO widgets (name, price) VALUES ('drill', 9999);",
    );
    let changed = data(&f, "{p}_shop");
    assert_ne!(changed, backed_up);

    // Without --force a database with rows is refused, naming the tables.
    let refused = f.tenantry(&["restore", &shop, path.to_str().unwrap()]);
    assert_eq!(refused.code, 1, "{}", refused.all());
    assert!(
        refused.stderr.contains("not empty")
            && refused.stderr.contains("customers")
            && refused.stderr.contains("widgets")
            && !refused.stderr.contains("orders")
            && refused.stderr.contains("--force"),
        "{}",
        refused.all()
    );
    assert_eq!(
        data(&f, "{p}_shop"),
        changed,
        "a refused restore changes nothing"
    );

    // A file that is not a dump: a clear error, nothing touched.
    let garbage = f.dir.path().join("garbage.dump");
    std::fs::write(&garbage, "this is not a dump\n").unwrap();
    let bad = f.tenantry(&["restore", &shop, garbage.to_str().unwrap(), "--force"]);
    assert_eq!(bad.code, 1, "{}", bad.all());
    assert!(
        bad.stderr.contains("not a pg_dump archive") && bad.stderr.contains("garbage.dump"),
        "{}",
        bad.all()
    );
    let missing = f.tenantry(&["restore", &shop, "/nonexistent/x.dump", "--force"]);
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("no such file"), "{}", missing.all());
    assert_eq!(data(&f, "{p}_shop"), changed);

    // --force: exactly the backed-up rows again.
    let restored = f.tenantry(&["restore", &shop, path.to_str().unwrap(), "--force"]);
    let text = restored.ok();
    assert!(
        text.contains("public.widgets") && text.contains("V1"),
        "{text}"
    );
    assert_eq!(data(&f, "{p}_shop"), backed_up);
    f.assert_converged();

    // The tiers still hold: the developer reads and writes, never deletes.
    let d = f.connect_as("{p}_shop_d", "{p}_shop").await.unwrap();
    let n: i64 = d
        .query_one("SELECT count(*) FROM widgets", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
    // The identity sequence came back too: the next id follows the backup's.
    let id: i64 = d
        .query_one(
            "INSERT INTO widgets (name, price) VALUES ('after', 1) RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(id, 4);
    assert!(try_sql(&d, "DELETE FROM widgets")
        .await
        .contains("permission denied"));
    let c = f.connect_as("{p}_shop_c", "{p}_shop").await.unwrap();
    assert_eq!(try_sql(&c, "SELECT * FROM orders").await, "ok");
    assert!(
        try_sql(&c, "INSERT INTO widgets (name, price) VALUES ('x', 1)")
            .await
            .contains("permission denied")
    );
    // Everything restored is owned by the tenant's owner role.
    let owners = f.psql(
        "{p}_shop",
        "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'",
    );
    assert_eq!(owners.trim(), f.name("{p}_shop_owner"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_into_a_fresh_database_and_another_tenants_dump() {
    let f = Fleet::new(Admin::Superuser);
    f.write(TWO_TENANTS);
    f.apply().ok();
    let (shop, cafe) = (f.name("{p}_shop"), f.name("{p}_cafe"));
    seed(&f, "{p}_cafe", "cafe");
    let cafe_rows = data(&f, "{p}_cafe");
    let file = f.dir.path().join("cafe.dump");
    let out = f.tenantry(&["backup", &cafe, "-o", file.to_str().unwrap()]);
    assert_eq!(backup_path(out.ok()), file);
    assert_eq!(mode(&file), 0o600);

    // The cafe is dropped, then re-created empty.
    let shop_only = TWO_TENANTS.split("[tenants.{p}_cafe]").next().unwrap();
    f.write(shop_only);
    f.tenantry(&["apply", "--auto-approve", "--allow-destroy"])
        .ok();
    let gone = f.tenantry(&["restore", &cafe, file.to_str().unwrap()]);
    assert_eq!(gone.code, 1);
    assert!(
        gone.stderr.contains("no tenant") && gone.stderr.contains(&shop),
        "{}",
        gone.all()
    );
    f.write(TWO_TENANTS);
    // In the file but not created yet.
    for args in [
        vec!["backup", cafe.as_str()],
        vec!["restore", cafe.as_str(), file.to_str().unwrap()],
    ] {
        let r = f.tenantry(&args);
        assert_eq!(r.code, 1, "{}", r.all());
        assert!(r.stderr.contains("tenantry apply"), "{}", r.all());
    }
    f.apply().ok();
    assert!(!data(&f, "{p}_cafe").contains("hammer"));
    // Empty (no rows): no --force needed.
    f.tenantry(&["restore", &cafe, file.to_str().unwrap()]).ok();
    assert_eq!(data(&f, "{p}_cafe"), cafe_rows);
    f.assert_converged();
    let a = f.connect_as("{p}_cafe_a", "{p}_cafe").await.unwrap();
    assert_eq!(try_sql(&a, "DELETE FROM orders").await, "ok");

    // A dump of another database: refused even into an empty one...
    let other = f.tenantry(&["restore", &shop, file.to_str().unwrap()]);
    assert_eq!(other.code, 1, "{}", other.all());
    assert!(
        other.stderr.contains(&format!("dump of database '{cafe}'"))
            && other.stderr.contains("--force"),
        "{}",
        other.all()
    );
    assert!(!data(&f, "{p}_shop").contains("hammer"));
    // ...and with --force it loads, granting nothing to the cafe's roles.
    f.tenantry(&["restore", &shop, file.to_str().unwrap(), "--force"])
        .ok();
    assert_eq!(data(&f, "{p}_shop"), cafe_rows);
    f.assert_converged();
    let d = f.connect_as("{p}_shop_d", "{p}_shop").await.unwrap();
    assert_eq!(try_sql(&d, "SELECT * FROM widgets").await, "ok");
    let foreign = f.psql(
        "{p}_shop",
        "SELECT count(*) FROM pg_class c, aclexplode(c.relacl) a WHERE a.grantee::regrole::text LIKE '{p}\\_cafe%'",
    );
    assert_eq!(foreign.trim(), "0");
}

/// Connects as `user` with `password`; the server's message on failure.
async fn login(f: &Fleet, user: &str, password: &str, db: &str) -> Result<(), String> {
    let url = f.cluster.user_url(&f.name(user), password, &f.name(db));
    common::connect(&url).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_generated_passwords_one_user_or_all_as_a_createrole_admin() {
    let f = Fleet::new(Admin::CreateRole);
    f.write(TWO_TENANTS);
    f.apply().ok();
    let shop = f.name("{p}_shop");
    let users = ["{p}_shop_a", "{p}_shop_d", "{p}_shop_c", "{p}_cafe_a"];
    let old: Vec<String> = users.iter().map(|u| f.secret(u)).collect();
    let secrets = f.dir.path().join(".tenantry/secrets");

    // --user: only that one.
    let out = f.tenantry(&["rotate", &shop, "--user", &f.name("{p}_shop_d")]);
    let text = out.ok();
    let path = secrets.join(f.name("{p}_shop_d"));
    assert_eq!(
        text.trim(),
        format!(
            "{}: new generated password saved to {} and set",
            f.name("{p}_shop_d"),
            path.display()
        )
    );
    let new_d = f.secret("{p}_shop_d");
    assert_ne!(new_d, old[1]);
    assert_eq!(new_d.len(), old[1].len());
    assert_eq!(mode(&path), 0o600);
    assert!(!out.all().contains(&new_d), "the password is never printed");
    assert!(login(&f, "{p}_shop_d", &old[1], "{p}_shop")
        .await
        .unwrap_err()
        .contains("password authentication failed"));
    login(&f, "{p}_shop_d", &new_d, "{p}_shop").await.unwrap();
    for (i, u) in users.iter().enumerate() {
        if i != 1 {
            assert_eq!(f.secret(u), old[i], "{u} untouched");
        }
    }
    login(&f, "{p}_shop_a", &old[0], "{p}_shop").await.unwrap();
    // No stray temporary files in the secrets directory.
    let mut names: Vec<String> = std::fs::read_dir(&secrets)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = users.iter().map(|u| f.name(u)).collect();
    want.push(f.name("{p}_cafe_c"));
    want.push(f.name("{p}_shop_gateway"));
    want.push(f.name("{p}_cafe_gateway"));
    want.sort();
    assert_eq!(names, want);

    // The whole tenant: its three users and its gateway login, not the
    // other tenant's.
    let gateway_before = f.secret("{p}_shop_gateway");
    let out = f.tenantry(&["rotate", &shop]);
    assert_eq!(out.ok().lines().count(), 4, "{}", out.stdout);
    let gateway_after = f.secret("{p}_shop_gateway");
    assert_ne!(gateway_after, gateway_before);
    login(&f, "{p}_shop_gateway", &gateway_after, "{p}_shop")
        .await
        .unwrap();
    for (i, u) in users.iter().enumerate().take(3) {
        let new = f.secret(u);
        assert_ne!(new, old[i]);
        assert_ne!(new, new_d);
        login(&f, u, &new, "{p}_shop").await.unwrap();
        assert!(login(&f, u, &old[i], "{p}_shop").await.is_err());
    }
    assert_eq!(f.secret("{p}_cafe_a"), old[3]);
    login(&f, "{p}_cafe_a", &old[3], "{p}_cafe").await.unwrap();
    f.assert_converged();

    // Unknown names: the error lists what exists.
    let r = f.tenantry(&["rotate", &shop, "--user", "nobody"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("no user 'nobody'") && r.stderr.contains(&f.name("{p}_shop_c")),
        "{}",
        r.all()
    );
    let r = f.tenantry(&["rotate", "nope"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains(&shop), "{}", r.all());

    // A user not created on the server yet: apply first; no file is written.
    f.write(&TWO_TENANTS.replace(
        "customers  = [{ username = \"{p}_shop_c\" }]",
        "customers  = [{ username = \"{p}_shop_c\" }, { username = \"{p}_shop_c2\" }]",
    ));
    let r = f.tenantry(&["rotate", &shop, "--user", &f.name("{p}_shop_c2")]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("does not exist on the server yet")
            && r.stderr.contains("tenantry apply"),
        "{}",
        r.all()
    );
    assert!(!secrets.join(f.name("{p}_shop_c2")).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_rereads_env_and_file_passwords() {
    let f = Fleet::new(Admin::Superuser);
    let var = format!("TENANTRY_OPS_TEST_{}_PW", f.p.to_uppercase());
    let pw_file = f.dir.path().join("dev.pw");
    std::fs::write(&pw_file, "file-pw-one\n").unwrap();
    // Password files must be private (0600); rewrites keep the mode.
    std::fs::set_permissions(&pw_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    f.write(&format!(
        r#"
[tenants.{{p}}_env]
plan = "starter"
admins     = [{{ username = "{{p}}_env_a", password_env = "{var}" }}]
developers = [{{ username = "{{p}}_env_d", password_file = "dev.pw" }}]
customers  = [{{ username = "{{p}}_env_c" }}]
"#
    ));
    let env1 = [(var.as_str(), "env-pw-one")];
    f.tenantry_env(&["apply", "--auto-approve"], &env1).ok();
    login(&f, "{p}_env_a", "env-pw-one", "{p}_env")
        .await
        .unwrap();
    let customer = f.secret("{p}_env_c");

    // The variable changes, then rotate sets it.
    let env2 = [(var.as_str(), "env-pw-two")];
    let out = f.tenantry_env(
        &["rotate", &f.name("{p}_env"), "--user", &f.name("{p}_env_a")],
        &env2,
    );
    assert_eq!(
        out.ok().trim(),
        format!("{}: re-read from env {var} and set", f.name("{p}_env_a"))
    );
    assert!(!out.all().contains("env-pw-two"));
    login(&f, "{p}_env_a", "env-pw-two", "{p}_env")
        .await
        .unwrap();
    assert!(login(&f, "{p}_env_a", "env-pw-one", "{p}_env")
        .await
        .is_err());

    // The file changes; rotating the whole tenant re-reads it (and gives the
    // generated user a new password).
    std::fs::write(&pw_file, "file-pw-two\n").unwrap();
    let out = f.tenantry_env(&["rotate", &f.name("{p}_env")], &env2);
    let text = out.ok();
    assert!(
        text.contains(&format!(
            "{}: re-read from file {} and set",
            f.name("{p}_env_d"),
            pw_file.display()
        )),
        "{text}"
    );
    // The three users, then the tenant's gateway login.
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(
        text.lines()
            .nth(3)
            .is_some_and(|l| l.starts_with(&f.name("{p}_env_gateway: new generated password"))),
        "{text}"
    );
    login(&f, "{p}_env_d", "file-pw-two", "{p}_env")
        .await
        .unwrap();
    assert!(login(&f, "{p}_env_d", "file-pw-one", "{p}_env")
        .await
        .is_err());
    assert_ne!(f.secret("{p}_env_c"), customer);
    // A superuser admin compares passwords: plan agrees with the sources.
    let plan = f.tenantry_env(&["plan", "--detailed-exitcode"], &env2);
    assert_eq!(plan.code, 0, "{}", plan.all());
}

/// Backend pids of a tenant's login users.
fn backends(f: &Fleet, tenant: &str) -> Vec<String> {
    f.psql(
        "postgres",
        &format!(
            "SELECT pid FROM pg_stat_activity WHERE datname = '{tenant}' AND usename LIKE '{tenant}\\_%' ORDER BY pid"
        ),
    )
    .lines()
    .map(str::to_owned)
    .filter(|l| !l.is_empty())
    .collect()
}

/// Ends the tenant's sessions, then waits for a request to succeed on new
/// ones, then checks a few more do and that the sessions are all new.
fn terminate_and_check(f: &Fleet, g: &Gateway, tenant: &str, host: &str, token: &str) {
    let old = backends(f, tenant);
    assert!(!old.is_empty(), "the gateway holds sessions of {tenant}");
    f.psql(
        "postgres",
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{tenant}' AND usename LIKE '{tenant}\\_%'"
        ),
    );
    let mut answers = Vec::new();
    let ok = (0..100).any(|_| {
        let (s, b) = g.get(host, token);
        answers.push(format!("{s} {b}"));
        if s != 200 {
            std::thread::sleep(Duration::from_millis(100));
        }
        s == 200
    });
    assert!(ok, "no success after the sessions ended: {answers:?}");
    for _ in 0..5 {
        let (s, b) = g.get(host, token);
        assert_eq!(s, 200, "{b}");
    }
    let now = backends(f, tenant);
    assert!(!now.is_empty());
    assert!(
        now.iter().all(|p| !old.contains(p)),
        "new sessions logged in with the new password: old {old:?}, now {now:?}"
    );
}

#[test]
fn rotate_keeps_the_gateway_serving_and_reload_uses_the_new_passwords() {
    let f = Fleet::new(Admin::Superuser);
    // The cafe's admin reads its password from a file.
    let pw_file = f.dir.path().join("cafe_a.pw");
    std::fs::write(&pw_file, "cafe-pw-one\n").unwrap();
    std::fs::set_permissions(&pw_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let tenants = TWO_TENANTS.replace(
        "admins     = [{ username = \"{p}_cafe_a\" }]",
        "admins     = [{ username = \"{p}_cafe_a\", password_file = \"cafe_a.pw\" }]",
    );
    assert_ne!(tenants, TWO_TENANTS);
    f.write(&tenants);
    f.apply().ok();
    let (shop, cafe) = (f.name("{p}_shop"), f.name("{p}_cafe"));
    let shop_host = f.name("{p}-shop.localhost");
    let cafe_host = f.name("{p}-cafe.localhost");
    let dev = token(&f, "{p}_shop", "developer");
    let cafe_admin = token(&f, "{p}_cafe", "admin");
    let g = Gateway::start(&f, &["--token-ttl", "10min"], &[]);

    // Warm up: the developer pool holds as many connections as the loops below use.
    const LOOPS: usize = 2;
    for _ in 0..200 {
        std::thread::scope(|s| {
            for _ in 0..6 {
                s.spawn(|| assert_eq!(g.get(&shop_host, &dev).0, 200));
            }
        });
        if g.open(&shop, "gateway") >= LOOPS {
            break;
        }
    }
    assert!(g.open(&shop, "gateway") >= LOOPS);

    // Requests in loops while the shop's passwords rotate.
    let stop = AtomicBool::new(false);
    let done = AtomicUsize::new(0);
    let answers: Mutex<Vec<(u16, String)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..LOOPS {
            s.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    let a = g.get(&shop_host, &dev);
                    answers.lock().unwrap().push(a);
                    done.fetch_add(1, Ordering::SeqCst);
                    // Well under the plan's 200 requests per second.
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
        }
        let wait_for = |n: usize| {
            let target = done.load(Ordering::SeqCst) + n;
            while done.load(Ordering::SeqCst) < target {
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        wait_for(20);
        let before = g.reloads();
        let out = f.tenantry(&["rotate", &shop]);
        assert_eq!(out.ok().lines().count(), 4, "{}", out.stdout);
        // Old sessions keep working; then the reload swaps the pools.
        wait_for(20);
        g.wait_for_reload(before);
        wait_for(40);
        stop.store(true, Ordering::SeqCst);
    });
    let answers = answers.into_inner().unwrap();
    let bad: Vec<&(u16, String)> = answers.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        bad.is_empty(),
        "{} of {} requests failed during the rotation: {:?}",
        bad.len(),
        answers.len(),
        &bad[..bad.len().min(5)]
    );
    // With the old sessions gone, new ones log in with the new passwords.
    terminate_and_check(&f, &g, &shop, &shop_host, &dev);

    // A user's password (the cafe's admin reads a password_file) is not
    // the gateway's: rotating it leaves the gateway's pool alone.
    std::fs::write(&pw_file, "cafe-pw-two\n").unwrap();
    let out = f.tenantry(&["rotate", &cafe, "--user", &f.name("{p}_cafe_a")]);
    assert!(out.ok().contains("re-read from file"), "{}", out.stdout);
    assert_eq!(g.get(&cafe_host, &cafe_admin).0, 200);

    // The cafe's gateway login alone: the gateway watches the secrets
    // directory and logs in with the new password.
    let rotate_cafe_gateway = || {
        let before = g.reloads();
        let out = f.tenantry(&["rotate", &cafe, "--user", &f.name("{p}_cafe_gateway")]);
        assert!(
            out.ok().contains("new generated password"),
            "{}",
            out.stdout
        );
        g.wait_for_reload(before);
        assert_eq!(g.get(&cafe_host, &cafe_admin).0, 200);
        terminate_and_check(&f, &g, &cafe, &cafe_host, &cafe_admin);
    };
    rotate_cafe_gateway();
    // A new password and, in the same reload, a new plan (pool size): the
    // pool must be rebuilt with the new password, not just resized.
    f.write(&tenants.replace("plan = \"starter\"", "plan = \"professional\""));
    rotate_cafe_gateway();
}
