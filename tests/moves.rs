//! Moving a tenant between servers (issue 14): plan says so, apply copies
//! with logical replication and cuts over, the old copy stays closed until
//! `apply --allow-destroy`. Two or three clusters of the tests' own, with
//! `wal_level = logical`.

mod common;

use common::{own_cluster, servers_toml, Admin, Fleet};
use tenantry_localpg::Cluster;

fn logical() -> &'static Cluster {
    own_cluster(&[
        ("wal_level", "logical"),
        ("max_wal_senders", "20"),
        ("max_replication_slots", "20"),
    ])
}

fn one(cluster: &Cluster, db: &str, sql: &str) -> String {
    cluster.psql(db, sql).unwrap().trim().to_owned()
}

#[test]
fn a_tenant_moves_and_its_data_and_sequences_follow() {
    let (a, b) = (logical(), logical());
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
}
