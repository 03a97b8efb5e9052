//! Moving a tenant between servers (issue 14): plan says so, apply copies
//! with logical replication and cuts over, the old copy stays closed until
//! `apply --allow-destroy`. Two or three clusters of the tests' own, with
//! `wal_level = logical`.

mod common;

use common::{logical_cluster, one, servers_toml, Admin, Fleet};

#[test]
fn a_tenant_moves_and_its_data_and_sequences_follow() {
    let (a, b) = (logical_cluster(), logical_cluster());
    let f = Fleet::on(a, Admin::Superuser);
    let servers = servers_toml(&[("a", &a.url("postgres"), ""), ("b", &b.url("postgres"), "")]);
    let tenant = |pin: &str| {
        format!("[tenants.{{p}}_shop]\nplan = \"starter\"\nserver = \"{pin}\"\nadmins = [{{ username = \"{{p}}_shop_a\" }}]\ncustomers = [{{ username = \"{{p}}_shop_c\" }}]\n")
    };
    f.write_servers(&servers, &tenant("a"));
    f.tenantry_fleet(&["apply", "--auto-approve"]).ok();
    let db = f.name("{p}_shop");
    a.psql(
        &db,
        "INSERT INTO customers (first_name, last_name, email) SELECT 'f', 'l', 'c' || g || '@x' FROM generate_series(1, 50) g;
         INSERT INTO widgets (name, price, inventory_level) VALUES ('w', 100, 1000);
         INSERT INTO orders (customer_id, widget_id, quantity, amount) SELECT g, 1, 1, 100 FROM generate_series(1, 50) g;",
    )
    .unwrap();

    f.write_servers(&servers, &tenant("b"));
    let plan = f.tenantry_fleet(&["plan"]);
    assert!(
        plan.ok().contains(&format!(
            "~ tenant {db} will move from server a to server b"
        )),
        "{}",
        plan.stdout
    );
    let apply = f.tenantry_fleet(&["apply", "--auto-approve"]);
    println!("{}", apply.all());
    apply.ok();
    assert_eq!(one(b, &db, "SELECT count(*) FROM orders"), "50");
    assert_eq!(one(b, &db, "SELECT count(*) FROM customers"), "50");
    let next = one(b, &db, "INSERT INTO customers (first_name, last_name, email) VALUES ('n', 'n', 'new@x') RETURNING id");
    assert_eq!(next, "51");
    let plan = f.tenantry_fleet(&["plan"]);
    println!("{}", plan.all());
    assert!(
        plan.ok().contains("note: the leftover copy of tenant"),
        "{}",
        plan.stdout
    );
    // A leftover is a note, not a change.
    assert_eq!(f.tenantry_fleet(&["plan", "--detailed-exitcode"]).code, 0);
    // The old copy is closed: its logins cannot log in.
    assert_eq!(
        one(
            a,
            "postgres",
            &format!("SELECT count(*) FROM pg_roles WHERE rolname LIKE '{db}%' AND rolcanlogin")
        ),
        "0"
    );

    // Back to a: the leftover there goes first (after a backup), then the move.
    f.write_servers(&servers, &tenant("a"));
    let plan = f.tenantry_fleet(&["plan"]);
    assert!(
        plan.ok()
            .contains("waits: the copy an earlier move left on server a must go first"),
        "{}",
        plan.stdout
    );
    let apply = f.tenantry_fleet(&["apply", "--auto-approve", "--allow-destroy"]);
    println!("{}", apply.all());
    apply.ok();
    assert_eq!(one(a, &db, "SELECT count(*) FROM customers"), "51");
    let next = one(a, &db, "INSERT INTO customers (first_name, last_name, email) VALUES ('n', 'n', 'back@x') RETURNING id");
    assert_eq!(next, "52");
    assert_eq!(f.tenantry_fleet(&["plan", "--detailed-exitcode"]).code, 0);
}

#[test]
fn a_table_without_a_primary_key_is_refused_before_anything_is_made() {
    let (a, b) = (logical_cluster(), logical_cluster());
    let f = Fleet::on(a, Admin::Superuser);
    f.own_schema();
    f.add_migration("V2__logs.sql", "CREATE TABLE logs (msg text);");
    let servers = servers_toml(&[("a", &a.url("postgres"), ""), ("b", &b.url("postgres"), "")]);
    let tenant =
        |pin: &str| format!("[tenants.{{p}}_shop]\nplan = \"starter\"\nserver = \"{pin}\"\n");
    f.write_servers(&servers, &tenant("a"));
    f.tenantry_fleet(&["apply", "--auto-approve"]).ok();
    f.write_servers(&servers, &tenant("b"));
    let plan = f.tenantry_fleet(&["plan"]);
    assert_eq!(plan.code, 1, "{}", plan.all());
    assert!(
        plan.stdout
            .contains("table(s) public.logs have no primary key or replica identity"),
        "{}",
        plan.stdout
    );
    let apply = f.tenantry_fleet(&["apply", "--auto-approve"]);
    assert_eq!(apply.code, 1, "{}", apply.all());
    let db = f.name("{p}_shop");
    assert_eq!(
        one(
            b,
            "postgres",
            &format!("SELECT count(*) FROM pg_database WHERE datname = '{db}'")
        ),
        "0"
    );
    assert_eq!(
        one(
            b,
            "postgres",
            &format!("SELECT count(*) FROM pg_roles WHERE rolname LIKE '{db}%'")
        ),
        "0"
    );
    assert_eq!(one(a, &db, "SELECT count(*) FROM pg_publication"), "0");
}
