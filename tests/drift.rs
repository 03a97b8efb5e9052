//! Drift made by hand is shown by plan and repaired by apply: grants added
//! or revoked, default privileges, memberships, connection limits, settings,
//! passwords, attributes. After the repair, plan is clean again.

mod common;

use common::{try_sql, Admin, Fleet, TWO_TENANTS};

/// Plans (expecting changes), checks the plan text, applies, and checks
/// that the next plan is clean.
fn repaired(f: &Fleet, expect_in_plan: &[&str]) {
    let plan = f.tenantry(&["plan", "--detailed-exitcode"]);
    assert_eq!(
        plan.code,
        2,
        "drift must show as pending changes\n{}",
        plan.all()
    );
    for e in expect_in_plan {
        assert!(
            plan.stdout.contains(&f.name(e)),
            "plan should mention {e:?}:\n{}",
            plan.stdout
        );
    }
    f.apply().ok();
    let after = f.tenantry(&["plan", "--detailed-exitcode"]);
    assert_eq!(
        after.code,
        0,
        "apply must repair the drift\n{}",
        after.all()
    );
}

async fn drift_repaired(admin: Admin) {
    let f = Fleet::new(admin);
    f.write(TWO_TENANTS);
    f.apply().ok();

    // A grant added by hand: developer may DELETE.
    f.psql("{p}_shop", "GRANT DELETE ON widgets TO {p}_shop_developer");
    repaired(&f, &["table widgets: {p}_shop_developer: SELECT, INSERT, UPDATE, DELETE -> SELECT, INSERT, UPDATE"]);
    let d = f.connect_as("{p}_shop_d", "{p}_shop").await.unwrap();
    assert_eq!(
        try_sql(&d, "DELETE FROM widgets").await,
        "permission denied for table widgets"
    );

    // A grant revoked by hand: customers lose SELECT.
    f.psql("{p}_shop", "REVOKE SELECT ON orders FROM {p}_shop_customer");
    repaired(&f, &["table orders: {p}_shop_customer: (none) -> SELECT"]);
    let c = f.connect_as("{p}_shop_c", "{p}_shop").await.unwrap();
    assert_eq!(try_sql(&c, "SELECT * FROM orders").await, "ok");

    // A foreign role granted access, to tables and to the database.
    f.psql(
        "postgres",
        "CREATE ROLE {p}_intruder LOGIN PASSWORD 'intruder-pw'",
    );
    f.psql("{p}_shop", "GRANT SELECT ON customers TO {p}_intruder");
    f.psql(
        "postgres",
        "GRANT CONNECT ON DATABASE {p}_shop TO {p}_intruder",
    );
    repaired(
        &f,
        &[
            "table customers: {p}_intruder: SELECT -> (none)",
            "database: {p}_intruder: CONNECT -> (none)",
        ],
    );
    let url = f
        .cluster
        .user_url(&f.name("{p}_intruder"), "intruder-pw", &f.name("{p}_shop"));
    assert!(
        common::connect(&url).await.is_err(),
        "intruder's CONNECT was revoked"
    );

    // A default privilege changed: future tables would let customers INSERT.
    f.psql(
        "{p}_shop",
        "ALTER DEFAULT PRIVILEGES FOR ROLE {p}_shop_owner IN SCHEMA public GRANT INSERT ON TABLES TO {p}_shop_customer",
    );
    repaired(
        &f,
        &["default privileges on tables: {p}_shop_customer: SELECT, INSERT -> SELECT"],
    );

    // A membership removed, a membership added (into another tenant's group).
    // From PostgreSQL 16 on a membership is revoked per grantor: the one
    // apply made as a CREATEROLE admin is the admin's.
    let by = if admin == Admin::CreateRole && f.cluster.major() >= 16 {
        " GRANTED BY {p}_tenantry"
    } else {
        ""
    };
    f.psql(
        "postgres",
        &format!("REVOKE {{p}}_shop_admin FROM {{p}}_shop_a{by}"),
    );
    if !by.is_empty() {
        // A superuser's grant there is one the admin cannot revoke: plan
        // says so and how, apply refuses; the superuser's REVOKE ends it.
        f.psql("postgres", "GRANT {p}_cafe_admin TO {p}_shop_d");
        let plan = f.tenantry(&["plan"]);
        assert!(
            plan.stdout.contains(&f.name(
                "error: tenant {p}_shop: role {p}_shop_d is a member of {p}_cafe_admin by a grant of \"postgres\", which admin \"{p}_tenantry\", not a superuser, cannot change"
            )) && plan.stdout.contains(&f.name(
                "help: as \"postgres\" (or a role with its privileges) or a superuser: REVOKE \"{p}_cafe_admin\" FROM \"{p}_shop_d\" GRANTED BY \"postgres\""
            )),
            "{}",
            plan.all()
        );
        assert_eq!(f.apply().code, 1);
        f.psql(
            "postgres",
            "REVOKE {p}_cafe_admin FROM {p}_shop_d GRANTED BY postgres",
        );
        // Granted as the admin: apply takes it back itself.
        f.psql(
            "postgres",
            "SET ROLE {p}_tenantry; GRANT {p}_cafe_admin TO {p}_shop_d",
        );
    } else {
        f.psql("postgres", "GRANT {p}_cafe_admin TO {p}_shop_d");
    }
    repaired(
        &f,
        &[
            "member of {p}_shop_admin: no -> yes",
            "member of {p}_cafe_admin: yes -> no",
        ],
    );
    let a = f.connect_as("{p}_shop_a", "{p}_shop").await.unwrap();
    assert_eq!(try_sql(&a, "DELETE FROM widgets").await, "ok");
    assert!(
        f.connect_as("{p}_shop_d", "{p}_cafe").await.is_err(),
        "developer lost the foreign membership"
    );

    // Connection limit, statement_timeout and an attribute changed by hand.
    f.psql("postgres", "ALTER ROLE {p}_shop_c CONNECTION LIMIT 99");
    f.psql(
        "postgres",
        "ALTER ROLE {p}_shop_c SET statement_timeout = '1h'",
    );
    f.psql("postgres", "ALTER ROLE {p}_shop_c CREATEDB");
    repaired(
        &f,
        &[
            "connection limit: 99 -> 20",
            "statement_timeout: 1h -> 30s",
            "createdb: true -> false",
        ],
    );

    // Everything repaired: nothing left to do.
    f.assert_converged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_shown_and_repaired_as_superuser() {
    drift_repaired(Admin::Superuser).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_shown_and_repaired_as_createrole_admin() {
    drift_repaired(Admin::CreateRole).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_that_no_longer_matches_its_source_is_reset() {
    let f = Fleet::new(Admin::Superuser);
    f.write(TWO_TENANTS);
    f.apply().ok();
    f.psql("postgres", "ALTER ROLE {p}_shop_a PASSWORD 'set-by-hand'");
    let plan = f.tenantry(&["plan"]);
    assert!(
        plan.ok().contains("password: (hidden) -> (changed)"),
        "{}",
        plan.stdout
    );
    assert!(!plan.stdout.contains(&f.secret("{p}_shop_a")));
    f.apply().ok();
    f.connect_as("{p}_shop_a", "{p}_shop")
        .await
        .expect("source password works again");
    // And the password is not re-sent when it matches.
    let su = f.superuser("postgres").await;
    let user = f.name("{p}_shop_a");
    let stored = || async {
        su.query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get::<_, String>(0)
    };
    let before = stored().await;
    assert!(f.apply().ok().contains("No changes"));
    let after = stored().await;
    assert_eq!(
        before, after,
        "a matching password is left alone (same salt)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_created_later_by_the_owner_follow_default_privileges() {
    // A table created later by the owner (as a migration would) gets the tiers
    // from the default privileges without any apply.
    let f = Fleet::new(Admin::Superuser);
    f.write(TWO_TENANTS);
    f.apply().ok();
    f.psql(
        "{p}_shop",
        "SET ROLE {p}_shop_owner; CREATE TABLE coupons (id int PRIMARY KEY)",
    );
    let d = f.connect_as("{p}_shop_d", "{p}_shop").await.unwrap();
    assert_eq!(try_sql(&d, "INSERT INTO coupons VALUES (1)").await, "ok");
    assert_eq!(
        try_sql(&d, "DELETE FROM coupons").await,
        "permission denied for table coupons"
    );
    let c = f.connect_as("{p}_shop_c", "{p}_shop").await.unwrap();
    assert_eq!(
        try_sql(&c, "INSERT INTO coupons VALUES (2)").await,
        "permission denied for table coupons"
    );
    f.assert_converged();
}

/// The token store is part of every tenant: apply creates it (a first token
/// check on a fresh tenant finds the function, no error in the server log),
/// only the lookup function is open to the tenant's groups, and a store
/// altered or dropped by hand is repaired without losing a stored token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_store_is_created_by_apply_and_repaired() {
    let f = Fleet::new(Admin::CreateRole);
    f.write(TWO_TENANTS);
    f.apply().ok();
    let check = "SELECT coalesce(tenantry.token_role($1), 'none')";
    let role_of = |client: tokio_postgres::Client, hash: String| async move {
        client
            .query_one(check, &[&hash])
            .await
            .map(|r| r.get::<_, String>(0))
            .map_err(|e| e.to_string())
    };
    let c = f.connect_as("{p}_cafe_c", "{p}_cafe").await.unwrap();
    assert_eq!(role_of(c, "unknown".into()).await.unwrap(), "none");

    let created = f.tenantry(&[
        "token",
        "create",
        &f.name("{p}_shop"),
        "--role",
        "developer",
    ]);
    let token = created.ok().trim().to_owned();
    let hash = tenantry_layout::tokens::hash(&token);
    let live = || async {
        let d = f.connect_as("{p}_shop_d", "{p}_shop").await.unwrap();
        role_of(d, hash.clone()).await.unwrap()
    };
    assert_eq!(live().await, "developer");
    let c = f.connect_as("{p}_shop_c", "{p}_shop").await.unwrap();
    assert_eq!(
        try_sql(&c, "SELECT * FROM tenantry.tokens").await,
        "permission denied for table tokens"
    );

    // Altered by hand: a function that says "admin" to anyone, callable by
    // everybody, and a table the customers may read.
    f.psql(
        "{p}_shop",
        "CREATE OR REPLACE FUNCTION tenantry.token_role(token_hash text) RETURNS text \
           LANGUAGE sql SECURITY DEFINER AS $$ SELECT 'admin' $$; \
         GRANT EXECUTE ON FUNCTION tenantry.token_role(text) TO PUBLIC; \
         GRANT SELECT ON tenantry.tokens TO {p}_shop_customer",
    );
    repaired(
        &f,
        &[
            "~ token store in {p}_shop",
            "token store: function tenantry.token_role(text): body: (altered) -> (tenantry's)",
            "token store: function tenantry.token_role(text): PUBLIC: EXECUTE -> (none)",
            "token store: table tenantry.tokens: {p}_shop_customer: SELECT -> (none)",
        ],
    );
    assert_eq!(live().await, "developer", "the stored token survives");
    let c = f.connect_as("{p}_shop_c", "{p}_shop").await.unwrap();
    assert_eq!(role_of(c, "unknown".into()).await.unwrap(), "none");

    // Dropped by hand: the function, then the whole store.
    f.psql("{p}_shop", "DROP FUNCTION tenantry.token_role(text)");
    repaired(
        &f,
        &["token store: function tenantry.token_role(text): (missing) -> present"],
    );
    assert_eq!(live().await, "developer");
    f.psql("{p}_shop", "DROP SCHEMA tenantry CASCADE");
    repaired(&f, &["token store: schema tenantry: (missing) -> present"]);
    assert_eq!(
        role_of(
            f.connect_as("{p}_shop_d", "{p}_shop").await.unwrap(),
            hash.clone()
        )
        .await
        .unwrap(),
        "none",
        "a dropped store takes its tokens with it"
    );
    f.assert_converged();
}
