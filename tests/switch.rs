//! Switching from the Terraform workflow, end to end: `import-tfvars` writes
//! the expected tenants.toml; `adopt` takes over a tenant made the way the
//! Terraform module makes it (CREATE DATABASE, login roles, direct grants)
//! without losing a row, or reports the mismatch and changes nothing; `env`
//! prints DSNs that parse and connect.

mod common;

use std::path::Path;

use common::{count, try_sql, Admin, Fleet};

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The plaintext passwords of the tfvars fixture.
fn fixture_passwords() -> Vec<String> {
    let src = std::fs::read_to_string(fixture("tenants.tfvars")).unwrap();
    src.match_indices("password = \"")
        .map(|(i, m)| {
            let rest = &src[i + m.len()..];
            let mut out = String::new();
            let mut chars = rest.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => out.push(chars.next().unwrap()),
                    '"' => break,
                    c => out.push(c),
                }
            }
            out
        })
        .collect()
}

#[test]
fn import_tfvars_writes_the_expected_inventory() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tenants.toml");
    let bin = env!("CARGO_BIN_EXE_tenantry");
    let run = |args: &[&str]| {
        let o = std::process::Command::new(bin)
            .args(args)
            .env_remove("TENANTRY_ADMIN_URL")
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let tfvars = fixture("tenants.tfvars");
    let (code, stdout, stderr) = run(&[
        "import-tfvars",
        tfvars.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let golden = std::fs::read_to_string(fixture("tenants.from-tfvars.toml")).unwrap();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), golden);
    assert!(
        stderr.contains("export BUILDING_ADMIN_PASSWORD=..."),
        "{stderr}"
    );
    let passwords = fixture_passwords();
    assert!(passwords.len() >= 5, "{passwords:?}");
    for pw in &passwords {
        assert!(
            !stdout.contains(pw.as_str()) && !stderr.contains(pw.as_str()),
            "password leaked"
        );
        assert!(!golden.contains(pw.as_str()), "password copied");
    }

    // An existing file is not replaced without --force, and is left as it was.
    std::fs::write(&out, "# mine\n").unwrap();
    let (code, _, stderr) = run(&[
        "import-tfvars",
        tfvars.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("pass --force"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "# mine\n");
    let (code, stdout, _) = run(&["import-tfvars", tfvars.to_str().unwrap(), "-o", "-"]);
    assert_eq!((code, stdout.as_str()), (0, golden.as_str()));

    // A broken tfvars names its line; nothing is written.
    let bad = dir.path().join("bad.tfvars");
    std::fs::write(&bad, "tenants = {\n  shop = {\n    plan = 3\n  }\n}\n").unwrap();
    let fresh = dir.path().join("fresh.toml");
    let (code, _, stderr) = run(&[
        "import-tfvars",
        bad.to_str().unwrap(),
        "-o",
        fresh.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("bad.tfvars:3:"), "{stderr}");
    assert!(!fresh.exists());

    // The result validates once the variables are set.
    let mut validate = std::process::Command::new(bin);
    validate
        .args(["validate", "--config", out.to_str().unwrap()])
        .env_remove("TENANTRY_ADMIN_URL");
    std::fs::write(&out, &golden).unwrap();
    for line in golden.lines().filter(|l| l.contains("password_env")) {
        for part in line.split("password_env = \"").skip(1) {
            validate.env(part.split('"').next().unwrap(), "set-by-test");
        }
    }
    let o = validate.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// What the seed's Terraform module does for one tenant, run as `admin_url`:
/// the database, three login roles with plaintext passwords, the schema file,
/// direct grants, and some rows.
async fn terraform_tenant(f: &Fleet, extra_sql: &str) {
    let admin = common::connect(&f.admin_url).await.unwrap();
    admin
        .batch_execute(&f.name("CREATE DATABASE {p}_store"))
        .await
        .unwrap();
    admin
        .batch_execute(&f.name(
            "CREATE ROLE {p}_ada LOGIN PASSWORD 'ada pw:@/1';
             CREATE ROLE {p}_dev LOGIN PASSWORD 'dev-pw-2';
             CREATE ROLE {p}_cus LOGIN PASSWORD 'cus-pw-3';
             GRANT CONNECT ON DATABASE {p}_store TO {p}_ada, {p}_dev, {p}_cus;",
        ))
        .await
        .unwrap();
    let base = f.admin_url.rsplit_once('/').unwrap().0;
    let url = format!("{base}/{}", f.name("{p}_store"));
    let db = common::connect(&url).await.unwrap();
    db.batch_execute(&common::fixture_v1()).await.unwrap();
    db.batch_execute(&f.name(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {p}_ada;
         GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO {p}_dev;
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO {p}_cus;
         GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {p}_ada, {p}_dev;
         INSERT INTO customers (first_name, last_name, email)
             SELECT 'c', 'n' || i, 'c' || i || '@x.example' FROM generate_series(1, 3) i;
         INSERT INTO widgets (name, price, inventory_level)
             SELECT 'w' || i, 100 * i, 10 FROM generate_series(1, 5) i;
         INSERT INTO orders (customer_id, widget_id, quantity, amount) VALUES (1, 1, 2, 200), (2, 3, 1, 300);",
    ))
    .await
    .unwrap();
    if !extra_sql.is_empty() {
        db.batch_execute(&f.name(extra_sql)).await.unwrap();
    }
}

const STORE: &str = r#"
[tenants.{p}_store]
plan = "starter"
subdomain = "{p}-store"
admins     = [{ username = "{p}_ada", password_env = "ADA_PW" }]
developers = [{ username = "{p}_dev", password_env = "DEV_PW" }]
customers  = [{ username = "{p}_cus", password_env = "CUS_PW" }]
"#;

const PASSWORDS: [(&str, &str); 3] = [
    ("ADA_PW", "ada pw:@/1"),
    ("DEV_PW", "dev-pw-2"),
    ("CUS_PW", "cus-pw-3"),
];

async fn rows(f: &Fleet) -> (i64, i64, i64, i64) {
    let db = f.superuser("{p}_store").await;
    let one = |sql: &'static str| {
        let db = &db;
        async move { db.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    (
        one("SELECT count(*) FROM customers").await,
        one("SELECT count(*) FROM widgets").await,
        one("SELECT count(*) FROM orders").await,
        one("SELECT sum(price)::bigint FROM widgets").await,
    )
}

async fn adopt_converges(admin: Admin) {
    let f = Fleet::new(admin);
    terraform_tenant(&f, "").await;
    f.write(STORE);
    let before = rows(&f).await;
    assert_eq!(before, (3, 5, 2, 1500));

    // Before adopting, the tenant is a conflict: plan names it and adopt.
    let plan = f.tenantry_env(&["plan"], &PASSWORDS);
    assert_eq!(plan.code, 1, "{}", plan.all());
    assert!(plan.all().contains("tenantry adopt"), "{}", plan.all());

    // A dry run changes nothing.
    let dry = f.tenantry_env(&["adopt", &f.name("{p}_store"), "--dry-run"], &PASSWORDS);
    assert!(dry.ok().contains("ALTER DATABASE"), "{}", dry.all());
    let su = f.superuser("postgres").await;
    let comment = "SELECT count(*) FROM pg_database WHERE datname = $1 AND shobj_description(oid, 'pg_database') IS NOT NULL";
    assert_eq!(count(&su, comment, &f.name("{p}_store")).await, 0);

    let adopted = f.tenantry_env(&["adopt", &f.name("{p}_store")], &PASSWORDS);
    assert!(adopted.ok().contains("Adopted"), "{}", adopted.all());
    assert_eq!(count(&su, comment, &f.name("{p}_store")).await, 1);

    // The next plan only repairs grants, memberships and settings, and adds
    // the token store and the gateway login Terraform never made.
    let plan = f.tenantry_env(&["plan", "--json"], &PASSWORDS);
    let json: serde_json::Value = serde_json::from_str(plan.ok()).unwrap();
    let tenants = json["tenants"].as_array().unwrap();
    assert_eq!(tenants.len(), 1, "{json:#}");
    assert_eq!(tenants[0]["action"], "update", "{json:#}");
    for change in tenants[0]["changes"].as_array().unwrap() {
        let kind = change["type"].as_str().unwrap_or_default();
        assert!(
            [
                "update_database",
                "privileges",
                "token_store",
                "create_gateway_login",
                "update_user",
                "update_role"
            ]
            .contains(&kind),
            "adopt left more than repairs: {change:#}"
        );
        assert_ne!(
            change["set_password"], true,
            "the Terraform password is kept: {change:#}"
        );
    }

    f.tenantry_env(&["apply", "--auto-approve"], &PASSWORDS)
        .ok();
    let plan = f.tenantry_env(&["plan", "--detailed-exitcode"], &PASSWORDS);
    assert_eq!(plan.code, 0, "{}", plan.all());
    assert_eq!(rows(&f).await, before, "rows lost");
    let status = f.tenantry_env(&["status"], &PASSWORDS);
    assert!(status.ok().contains("V1"), "{}", status.all());

    // The Terraform passwords still work, and the tiers are tenantry's now.
    let url = |user: &str, pw: &str| f.cluster.user_url(&f.name(user), pw, &f.name("{p}_store"));
    let dev = common::connect(&url("{p}_dev", "dev-pw-2")).await.unwrap();
    assert_eq!(
        try_sql(&dev, "UPDATE widgets SET price = price WHERE id = 1").await,
        "ok"
    );
    assert!(try_sql(&dev, "DELETE FROM orders WHERE id = 2")
        .await
        .contains("permission denied"));
    let cus = common::connect(&url("{p}_cus", "cus-pw-3")).await.unwrap();
    assert!(try_sql(
        &cus,
        "INSERT INTO customers (first_name, last_name, email) VALUES ('a','b','a@b.c')"
    )
    .await
    .contains("permission denied"));
    let ada = common::connect(&url("{p}_ada", "ada pw:@/1"))
        .await
        .unwrap();
    assert_eq!(try_sql(&ada, "DELETE FROM orders WHERE id = 2").await, "ok");
    // The database now belongs to the tenant's owner role.
    let owner: String = su
        .query_one(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1",
            &[&f.name("{p}_store")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, f.name("{p}_store_owner"));

    // Adopting again is a no-op.
    let again = f.tenantry_env(&["adopt", &f.name("{p}_store")], &PASSWORDS);
    assert!(again.ok().contains("already managed"), "{}", again.all());
}

#[tokio::test]
async fn adopt_a_terraform_tenant_as_superuser() {
    adopt_converges(Admin::Superuser).await;
}

#[tokio::test]
async fn adopt_a_terraform_tenant_as_createrole_admin() {
    adopt_converges(Admin::CreateRole).await;
}

#[tokio::test]
async fn adopt_reports_mismatches_and_changes_nothing() {
    let f = Fleet::new(Admin::Superuser);
    terraform_tenant(
        &f,
        "CREATE ROLE {p}_intern LOGIN; GRANT SELECT ON widgets TO {p}_intern;
         ALTER TABLE widgets DROP COLUMN description;",
    )
    .await;
    f.write(STORE);
    let before = rows(&f).await;
    let run = f.tenantry_env(&["adopt", &f.name("{p}_store")], &PASSWORDS);
    assert_eq!(run.code, 1, "{}", run.all());
    let out = run.all();
    assert!(
        out.contains(&format!("role {}_intern has privileges", f.p)),
        "{out}"
    );
    assert!(out.contains("widgets.description"), "{out}");
    assert!(out.contains("Nothing was changed"), "{out}");
    let su = f.superuser("postgres").await;
    assert_eq!(
        count(
            &su,
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE $1",
            &format!("{}\\_store\\_%", f.p)
        )
        .await,
        0,
        "no group role may be created"
    );
    assert_eq!(
        count(&su, "SELECT count(*) FROM pg_database WHERE datname = $1 AND shobj_description(oid, 'pg_database') IS NOT NULL", &f.name("{p}_store")).await,
        0
    );
    assert_eq!(rows(&f).await, before);
    // No scratch database left behind.
    assert_eq!(
        count(
            &su,
            "SELECT count(*) FROM pg_database WHERE datname LIKE $1",
            &format!("tenantry\\_adopt\\_{}\\_%", f.p)
        )
        .await,
        0
    );
}

#[tokio::test]
async fn env_prints_dsns_that_connect() {
    let f = Fleet::new(Admin::Superuser);
    f.write(&format!(
        "{}\n[tenants.{{p}}_odd]\nplan = \"starter\"\nadmins = [{{ username = \"{{p}}_odd_a\", password_env = \"ODD_PW\" }}]\n",
        common::TWO_TENANTS
    ));
    let odd_pw = "p@ss:/w?rd#%& é'\"";
    let env = [("ODD_PW", odd_pw)];
    f.tenantry_env(&["apply", "--auto-approve"], &env).ok();

    // env lines
    let out = f.tenantry_env(&["env", &f.name("{p}_shop"), "--role", "developer"], &env);
    let vars: std::collections::BTreeMap<String, String> = out
        .ok()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    assert_eq!(vars["TENANT_NAME"], f.name("{p}_shop"));
    assert_eq!(vars["TENANT_SUBDOMAIN"], f.name("{p}-shop"));
    let c = common::connect(&vars["DATABASE_DSN"]).await.unwrap();
    let row = c
        .query_one("SELECT current_user::text, current_database()::text", &[])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        (f.name("{p}_shop_d"), f.name("{p}_shop"))
    );

    // JSON, a password full of URL syntax, percent-encoded.
    let out = f.tenantry_env(&["env", &f.name("{p}_odd"), "--format", "json"], &env);
    let json: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
    let dsn = json["DATABASE_DSN"].as_str().unwrap();
    assert!(
        !dsn.contains(odd_pw) && !dsn.contains('#') && !dsn.contains(' '),
        "{dsn}"
    );
    let c = common::connect(dsn).await.unwrap();
    let me: String = c
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(me, f.name("{p}_odd_a"));

    // A Kubernetes Secret.
    let out = f.tenantry_env(
        &["env", &f.name("{p}_cafe"), "--format", "k8s-secret"],
        &env,
    );
    let docs = yaml_rust2::YamlLoader::load_from_str(out.ok()).unwrap();
    let secret = &docs[0];
    assert_eq!(secret["kind"].as_str(), Some("Secret"));
    assert_eq!(
        secret["metadata"]["name"].as_str().unwrap(),
        format!("tenantry-{}-cafe-admin", f.p)
    );
    let dsn = secret["stringData"]["DATABASE_DSN"].as_str().unwrap();
    let c = common::connect(dsn).await.unwrap();
    let db: String = c
        .query_one("SELECT current_database()::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(db, f.name("{p}_cafe"));

    // What cannot be given is refused by name.
    let none = f.tenantry_env(&["env", &f.name("{p}_cafe"), "--role", "developer"], &env);
    assert_eq!(none.code, 1);
    assert!(
        none.all()
            .contains("has no developer user; it has: admin, customer"),
        "{}",
        none.all()
    );
    let none = f.tenantry_env(&["env", "nope"], &env);
    assert!(
        none.code == 1 && none.all().contains("no tenant 'nope'"),
        "{}",
        none.all()
    );
}
