//! Provisioning end to end: apply creates isolated tenant databases with the
//! tiered roles and the schema; a second plan shows no changes. Each scenario
//! runs both as a superuser and as a CREATEROLE/CREATEDB admin. A fleet larger
//! than the server's free connections is worked through a few at a time. An
//! apply killed midway converges when run again.

mod common;

use common::{try_sql, Admin, Fleet, TWO_TENANTS};

async fn tiers_and_isolation(admin: Admin) {
    let f = Fleet::new(admin);
    f.write(TWO_TENANTS);
    let out = f.apply();
    let text = out.ok();
    assert!(text.contains("Apply complete: 2 created"), "{text}");

    // Admin: full DML.
    let a = f.connect_as("{p}_shop_a", "{p}_shop").await.unwrap();
    assert_eq!(
        try_sql(&a, "INSERT INTO widgets (name, price) VALUES ('w', 100)").await,
        "ok"
    );
    assert_eq!(
        try_sql(
            &a,
            "INSERT INTO customers (first_name, last_name, email) VALUES ('a', 'b', 'a@b.c')"
        )
        .await,
        "ok"
    );
    assert_eq!(try_sql(&a, "UPDATE widgets SET price = 200").await, "ok");
    assert_eq!(try_sql(&a, "DELETE FROM customers").await, "ok");
    // Developer: no DELETE.
    let d = f.connect_as("{p}_shop_d", "{p}_shop").await.unwrap();
    assert_eq!(
        try_sql(&d, "INSERT INTO widgets (name, price) VALUES ('v', 1)").await,
        "ok"
    );
    assert_eq!(
        try_sql(&d, "UPDATE widgets SET inventory_level = 3").await,
        "ok"
    );
    assert_eq!(
        try_sql(&d, "DELETE FROM widgets").await,
        "permission denied for table widgets"
    );
    // Customer: read only.
    let c = f.connect_as("{p}_shop_c", "{p}_shop").await.unwrap();
    let rows = c
        .query("SELECT name FROM widgets ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        try_sql(&c, "INSERT INTO widgets (name, price) VALUES ('x', 1)").await,
        "permission denied for table widgets"
    );
    assert_eq!(
        try_sql(&c, "UPDATE widgets SET price = 0").await,
        "permission denied for table widgets"
    );
    // The gateway's login holds no tenant data itself: of schema public it
    // reads only the migration history's version; it counts usage,
    // appends to the audit trail (never reads or changes it) and reads
    // token ids; it may not become the owner or another tenant's group,
    // and acts only as one of its tenant's member groups, with exactly
    // that group's rights.
    let g = f.connect_as("{p}_shop_gateway", "{p}_shop").await.unwrap();
    for table in ["widgets", "customers", "orders"] {
        assert_eq!(
            try_sql(&g, &format!("SELECT * FROM public.{table}")).await,
            format!("permission denied for table {table}")
        );
    }
    assert_eq!(
        try_sql(&g, "CREATE TABLE public.mine (x int)").await,
        "permission denied for schema public"
    );
    assert_eq!(
        try_sql(
            &g,
            "SELECT max(version) FROM public.refinery_schema_history"
        )
        .await,
        "ok"
    );
    assert_eq!(
        try_sql(&g, "SELECT tenantry.token_role('x')").await,
        "permission denied for function token_role"
    );
    for sql in [
        "SELECT * FROM tenantry.audit",
        "UPDATE tenantry.audit SET action = 'x'",
        "DELETE FROM tenantry.audit",
        "INSERT INTO tenantry.tokens (role, hash) VALUES ('admin', 'x')",
        "DELETE FROM tenantry.usage",
    ] {
        assert!(
            try_sql(&g, sql)
                .await
                .starts_with("permission denied for table"),
            "{sql}"
        );
    }
    assert_eq!(
        try_sql(
            &g,
            "INSERT INTO tenantry.audit (action, actor) VALUES ('api.write', 'x')"
        )
        .await,
        "ok"
    );
    for other in ["{p}_shop_owner", "{p}_cafe_customer"] {
        let other = f.name(other);
        assert_eq!(
            try_sql(&g, &format!("SET ROLE {other}")).await,
            format!("permission denied to set role \"{other}\""),
        );
    }
    let set = f.name("SET ROLE {p}_shop_customer");
    assert_eq!(
        try_sql(&g, &format!("{set}; SELECT * FROM widgets")).await,
        "ok"
    );
    assert_eq!(
        try_sql(&g, "DELETE FROM widgets").await,
        "permission denied for table widgets"
    );
    // Nobody but the owner creates objects.
    assert!(try_sql(&a, "CREATE TABLE evil (id int)")
        .await
        .contains("permission denied for schema public"));
    // Nobody touches the migration history.
    assert!(try_sql(&a, "DELETE FROM refinery_schema_history")
        .await
        .contains("permission denied"));
    // updated_at is maintained by the trigger.
    let moved = a
        .query_one(
            "UPDATE widgets SET name = 'z' WHERE name = 'w' RETURNING updated_at > created_at",
            &[],
        )
        .await
        .unwrap();
    assert!(moved.get::<_, bool>(0));

    // Isolation: no user of one tenant connects to the other's database.
    for (user, db) in [
        ("{p}_shop_a", "{p}_cafe"),
        ("{p}_cafe_a", "{p}_shop"),
        ("{p}_cafe_c", "{p}_shop"),
    ] {
        let err = f
            .connect_as(user, db)
            .await
            .expect_err("cross-tenant connect must fail");
        assert!(
            err.contains("permission denied for database"),
            "{user} -> {db}: {err}"
        );
    }
    // Nor does any other login role of the cluster (CONNECT is revoked from PUBLIC).
    f.psql(
        "postgres",
        "CREATE ROLE {p}_outsider LOGIN PASSWORD 'outsider-pw'",
    );
    let url = f
        .cluster
        .user_url(&f.name("{p}_outsider"), "outsider-pw", &f.name("{p}_shop"));
    let err = common::connect(&url)
        .await
        .expect_err("outsider connect must fail");
    assert!(err.contains("permission denied for database"), "{err}");

    // Converged: a second plan has nothing to do, and says so with exit 0.
    f.assert_converged();
    let again = f.apply();
    assert!(again.ok().contains("No changes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_and_isolation_as_superuser() {
    tiers_and_isolation(Admin::Superuser).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_and_isolation_as_createrole_admin() {
    tiers_and_isolation(Admin::CreateRole).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_roles_have_no_dangerous_attributes_and_users_do_not_own_databases() {
    let f = Fleet::new(Admin::CreateRole);
    f.write(TWO_TENANTS);
    f.apply().ok();
    let su = f.superuser("postgres").await;
    let prefix = format!("{}\\_%", f.p);
    // Every role of the fleet but the admin tenantry connects as.
    let dangerous = common::count(
        &su,
        "SELECT count(*) FROM pg_roles WHERE rolname LIKE $1
               AND (rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls OR rolreplication)
               AND rolname NOT LIKE '%\\_tenantry'",
        &prefix,
    )
    .await;
    assert_eq!(dangerous, 0);
    let owners: Vec<String> = su
        .query("SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname LIKE $1 ORDER BY 1", &[&prefix])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        owners,
        vec![f.name("{p}_cafe_owner"), f.name("{p}_shop_owner")]
    );
    // Login users: plan's connection limit and statement_timeout.
    let row = su
        .query_one(
            "SELECT rolconnlimit, rolconfig::text[], rolcanlogin FROM pg_roles WHERE rolname = $1",
            &[&f.name("{p}_shop_d")],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 20);
    assert_eq!(
        row.get::<_, Vec<String>>(1),
        vec!["statement_timeout=30s".to_owned()]
    );
    assert!(row.get::<_, bool>(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_reach_the_server_only_as_scram_verifiers_and_never_the_output() {
    let f = Fleet::new(Admin::Superuser);
    f.write(&TWO_TENANTS.replace(
        "admins     = [{ username = \"{p}_shop_a\" }]",
        "admins     = [{ username = \"{p}_shop_a\", password_env = \"SHOP_ADMIN_PW\" }]",
    ));
    let pw = "env-Secret-123";
    let out = f.tenantry_env(&["apply", "--auto-approve"], &[("SHOP_ADMIN_PW", pw)]);
    out.ok();
    assert!(!out.all().contains(pw), "password printed");
    let su = f.superuser("postgres").await;
    let stored: String = su
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&f.name("{p}_shop_a")],
        )
        .await
        .unwrap()
        .get(0);
    assert!(stored.starts_with("SCRAM-SHA-256$"), "{stored}");
    let url = f
        .cluster
        .user_url(&f.name("{p}_shop_a"), pw, &f.name("{p}_shop"));
    common::connect(&url).await.expect("env password works");
    // Generated secrets are private.
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(
        f.dir
            .path()
            .join(".tenantry/secrets")
            .join(f.name("{p}_shop_d")),
    )
    .unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // Re-planning with the same sources changes nothing (no random-salt churn).
    let plan = f.tenantry_env(&["plan", "--detailed-exitcode"], &[("SHOP_ADMIN_PW", pw)]);
    assert_eq!(plan.code, 0, "{}", plan.all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_json_and_detailed_exitcode() {
    let f = Fleet::new(Admin::Superuser);
    f.write(TWO_TENANTS);
    let plan = f.tenantry(&["plan", "--json", "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "{}", plan.all());
    let json: serde_json::Value = serde_json::from_str(&plan.stdout).expect("plan --json is JSON");
    assert_eq!(json["summary"]["destroy"], 0);
    assert!(json["summary"]["add"].as_u64().unwrap() >= 10);
    assert_eq!(json["tenants"].as_array().unwrap().len(), 2);
    assert_eq!(json["tenants"][0]["action"], "create");
    // Nothing was created by planning.
    let su = f.superuser("postgres").await;
    let n: i64 = common::count(
        &su,
        "SELECT count(*) FROM pg_database WHERE datname LIKE $1",
        &f.like(),
    )
    .await;
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_without_a_terminal_needs_auto_approve() {
    let f = Fleet::new(Admin::Superuser);
    f.write(TWO_TENANTS);
    let out = f.tenantry(&["apply"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("--auto-approve"), "{}", out.stderr);
    let plan = f.tenantry(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "nothing was applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmanaged_database_with_a_tenant_name_is_a_conflict_not_a_takeover() {
    let f = Fleet::new(Admin::Superuser);
    f.psql("postgres", "CREATE DATABASE {p}_shop");
    f.write(TWO_TENANTS);
    let out = f.apply();
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stdout.contains(&format!(
            "database {}_shop exists but is not managed by tenantry",
            f.p
        )),
        "{}",
        out.stdout
    );
    assert!(out.stderr.contains("nothing was changed"), "{}", out.stderr);
    // Not even the other tenant was touched.
    let su = f.superuser("postgres").await;
    let n: i64 = common::count(
        &su,
        "SELECT count(*) FROM pg_roles WHERE rolname LIKE $1",
        &f.like(),
    )
    .await;
    assert_eq!(n, 0);
}

#[test]
fn a_fleet_larger_than_the_free_connections_is_read_applied_and_migrated_a_few_at_a_time() {
    // max_connections 8 leaves a role without superuser 5 (3 are reserved
    // for superusers), and tenantry's own admin session takes one. Unbounded,
    // apply would hold 2 per tenant x --jobs 4, plan would read 12 databases
    // at once (4 x --jobs), migrate and status 8 and 32. The server refuses
    // every connection past the 5th ("too many clients"), so each command
    // succeeding means the bound held at every instant: an exact count, not
    // a sample.
    let cluster = common::own_cluster(&[("max_connections", "8")]);
    let f = Fleet::on(cluster, Admin::CreateRole);
    f.own_schema();
    let mut tenants = String::new();
    for i in 0..12 {
        tenants.push_str(&format!(
            "[tenants.{{p}}_c{i:02}]\nplan = \"starter\"\nsubdomain = \"{{p}}-c{i:02}\"\n\n"
        ));
    }
    f.write(&tenants);
    let apply = f.tenantry(&["apply", "--auto-approve", "--jobs", "4"]);
    assert!(
        apply.ok().contains("Apply complete: 12 created"),
        "{}",
        apply.all()
    );
    // Plan reads inside all 12 databases.
    f.assert_converged();
    f.add_migration("V2__notes.sql", "CREATE TABLE notes (id int PRIMARY KEY);");
    let migrate = f.tenantry(&["migrate", "--jobs", "8"]);
    assert!(migrate.ok().contains("12 migrated"), "{}", migrate.all());
    let status = f.tenantry(&["status", "--json", "--jobs", "8"]);
    let rows: serde_json::Value = serde_json::from_str(status.ok()).unwrap();
    let at_v2 = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["version"] == 2 && r["error"].is_null())
        .count();
    assert_eq!(at_v2, 12, "{rows}");
    f.assert_converged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_killed_midway_converges_when_run_again() {
    let f = Fleet::new(Admin::CreateRole);
    let watch = f.superuser("postgres").await;
    let mut tenants = String::new();
    // Each round adds four tenants, starts apply, and kills it the moment the
    // first object of one kind appears: a group role (step 1 of a tenant), a
    // database (step 2, before migrations), a login user (step 4, after
    // them). The kill must land mid-apply: the process still running, work
    // left to do. The very next apply must succeed and converge (it waits
    // for statements the dead one left running, such as CREATE DATABASE).
    let rounds = [
        ("a group role", "{p}_k{i}_owner", "pg_roles WHERE rolname"),
        ("a database", "{p}_k{i}", "pg_database WHERE datname"),
        ("a login user", "{p}_k{i}_a", "pg_roles WHERE rolname"),
    ];
    for (round, (what, name, catalog)) in rounds.into_iter().enumerate() {
        let ids = round * 4..round * 4 + 4;
        for i in ids.clone() {
            tenants.push_str(&format!(
                "[tenants.{{p}}_k{i}]\nplan = \"starter\"\nsubdomain = \"{{p}}-k{i}\"\nadmins = [{{ username = \"{{p}}_k{i}_a\" }}]\n\n"
            ));
        }
        f.write(&tenants);
        let names: Vec<String> = ids
            .map(|i| f.name(&name.replace("{i}", &i.to_string())))
            .collect();
        let appeared = format!("SELECT count(*) > 0 FROM {catalog} = ANY($1)");
        let mut child = f
            .command(&["apply", "--auto-approve", "--jobs", "2"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !watch
            .query_one(&appeared, &[&names])
            .await
            .unwrap()
            .get::<_, bool>(0)
        {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("round {round}: apply exited ({status}) before {what} appeared");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: {what} never appeared"
            );
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "round {round}: apply had finished when {what} appeared: the kill would not land mid-apply"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        let left = f.tenantry(&["plan", "--detailed-exitcode"]);
        assert_eq!(
            left.code,
            2,
            "round {round}: killed at the first {what}, the apply left work to do\n{}",
            left.all()
        );
        f.apply().ok();
        f.assert_converged();
    }
    for i in 0..12 {
        let a = f
            .connect_as(&format!("{{p}}_k{i}_a"), &format!("{{p}}_k{i}"))
            .await
            .unwrap();
        assert_eq!(try_sql(&a, "SELECT count(*) FROM widgets").await, "ok");
    }
}
