//! Moving a tenant between servers (issue 14): plan says so, apply copies
//! with logical replication and cuts over, the old copy stays closed until
//! `apply --allow-destroy`. Two or three clusters of the tests' own, with
//! `wal_level = logical`.

mod common;

use common::{logical_cluster, one, own_cluster, servers_toml, Admin, Fleet};

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
    assert_eq!(databases(b, &db), "0");
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

#[test]
fn a_tenant_moves_offline_when_an_admin_is_not_a_superuser() {
    // Plain clusters (wal_level = replica) and CREATEROLE admins, as on
    // managed clouds: the copy runs with the tenant's writes closed.
    let (a, b) = (own_cluster(&[]), own_cluster(&[]));
    let f = Fleet::on(a, Admin::CreateRole);
    let admin = f.name("{p}_tenantry");
    let (a_url, b_url) = (
        a.create_admin_role(&admin, "admin-pw").unwrap(),
        b.create_admin_role(&admin, "admin-pw").unwrap(),
    );
    f.own_schema();
    // A table without a primary key (fine offline) and a trigger that must
    // not fire while rows are copied.
    f.add_migration(
        "V2__notes.sql",
        "CREATE TABLE notes (body text, seen text);
         CREATE FUNCTION mark_seen() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.seen := 'trigger'; RETURN NEW; END$$;
         CREATE TRIGGER notes_mark BEFORE INSERT ON notes FOR EACH ROW EXECUTE FUNCTION mark_seen();",
    );
    let servers = servers_toml(&[("a", &a_url, ""), ("b", &b_url, "")]);
    let tenant = |pin: &str| {
        format!("[tenants.{{p}}_shop]\nplan = \"starter\"\nserver = \"{pin}\"\ndevelopers = [{{ username = \"{{p}}_shop_d\" }}]\n")
    };
    f.write_servers(&servers, &tenant("a"));
    f.tenantry_fleet(&["apply", "--auto-approve"]).ok();
    let db = f.name("{p}_shop");
    f.tenantry_fleet(&["token", "create", &db, "--role", "developer"])
        .ok();
    a.psql(
        &db,
        "INSERT INTO customers (first_name, last_name, email) SELECT 'f', 'l', 'c' || g || '@x' FROM generate_series(1, 30) g;
         INSERT INTO widgets (name, price, inventory_level) VALUES ('w', 100, 1000);
         INSERT INTO orders (customer_id, widget_id, quantity, amount) SELECT g, 1, 1, 100 FROM generate_series(1, 30) g;
         INSERT INTO notes (body) VALUES ('n1'), ('n2');
         UPDATE notes SET seen = 'edited' WHERE body = 'n1';",
    )
    .unwrap();

    // Writes are closed by ending the tenant's sessions: an admin that may
    // not do that cannot move it.
    f.write_servers(&servers, &tenant("b"));
    let plan = f.tenantry_fleet(&["plan"]);
    assert_eq!(plan.code, 1, "{}", plan.all());
    assert!(
        plan.stdout
            .contains("may not end the tenant's sessions, so its writes could not be closed"),
        "{}",
        plan.stdout
    );
    a.psql("postgres", &format!("GRANT pg_signal_backend TO {admin}"))
        .unwrap();
    let plan = f.tenantry_fleet(&["plan"]);
    assert!(
        plan.ok().contains("offline, dump and restore (COPY): "),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains(
            "writes closed for the whole copy, because the admin of server a is not a superuser"
        ),
        "{}",
        plan.stdout
    );
    let apply = f.tenantry_fleet(&["apply", "--auto-approve"]);
    println!("{}", apply.all());
    assert!(apply.ok().contains("cutover done"), "{}", apply.stdout);

    assert_eq!(one(b, &db, "SELECT count(*) FROM orders"), "30");
    assert_eq!(
        one(
            b,
            &db,
            "SELECT string_agg(body || '=' || coalesce(seen, ''), ',' ORDER BY body) FROM notes"
        ),
        "n1=edited,n2=trigger"
    );
    assert_eq!(one(b, &db, "SELECT count(*) FROM tenantry.tokens"), "1");
    // The foreign keys and the trigger are back.
    assert_eq!(
        one(
            b,
            &db,
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f'"
        ),
        one(
            a,
            &db,
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f'"
        )
    );
    assert!(b
        .psql(
            &db,
            "INSERT INTO orders (customer_id, widget_id, quantity, amount) VALUES (999, 1, 1, 1)"
        )
        .is_err());
    b.psql(&db, "INSERT INTO notes (body) VALUES ('n3')")
        .unwrap();
    assert_eq!(
        one(b, &db, "SELECT seen FROM notes WHERE body = 'n3'"),
        "trigger"
    );
    // The sequences go on; the old copy takes no logins; plan is clean.
    let next = one(b, &db, "INSERT INTO customers (first_name, last_name, email) VALUES ('n', 'n', 'new@x') RETURNING id");
    assert_eq!(next, "31");
    assert_eq!(
        one(
            a,
            "postgres",
            &format!("SELECT count(*) FROM pg_roles WHERE rolname LIKE '{db}%' AND rolcanlogin")
        ),
        "0"
    );
    assert_eq!(f.tenantry_fleet(&["plan", "--detailed-exitcode"]).code, 0);
}

#[test]
fn a_move_called_off_leaves_a_copy_that_allow_destroy_drops_with_its_replication() {
    let (a, b) = (logical_cluster(), logical_cluster());
    let f = Fleet::on(a, Admin::Superuser);
    let servers = servers_toml(&[("a", &a.url("postgres"), ""), ("b", &b.url("postgres"), "")]);
    let tenant =
        |pin: &str| format!("[tenants.{{p}}_shop]\nplan = \"starter\"\nserver = \"{pin}\"\n");
    f.write_servers(&servers, &tenant("a"));
    f.tenantry_fleet(&["apply", "--auto-approve"]).ok();
    let db = f.name("{p}_shop");
    a.psql(
        &db,
        "INSERT INTO customers (first_name, last_name, email) VALUES ('f', 'l', 'c@x');
         INSERT INTO widgets (name, price, inventory_level) VALUES ('w', 100, 1000000);
         INSERT INTO orders (customer_id, widget_id, quantity, amount) SELECT 1, 1, 1, 100 FROM generate_series(1, 50000);",
    )
    .unwrap();

    // The move starts; apply is stopped while the copy is being filled.
    f.write_servers(&servers, &tenant("b"));
    let mut apply = f
        .command(&["apply", "--auto-approve"])
        .env_remove("TENANTRY_ADMIN_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let subscribed = || {
        one(
            b,
            "postgres",
            &format!("SELECT count(*) FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid WHERE d.datname = '{db}'"),
        ) == "1"
    };
    assert!(
        common::wait_until(std::time::Duration::from_secs(90), || subscribed()
            || apply.try_wait().unwrap().is_some()),
        "no subscription"
    );
    assert!(
        apply.try_wait().unwrap().is_none(),
        "apply finished before it could be stopped mid-copy"
    );
    apply.kill().unwrap();
    apply.wait().unwrap();

    // Called off: the pin back on a. The tenant stays there; the copy on b
    // is a note until apply --allow-destroy drops it.
    f.write_servers(&servers, &tenant("a"));
    let plan = f.tenantry_fleet(&["plan", "--detailed-exitcode"]);
    println!("{}", plan.all());
    assert_eq!(plan.code, 0, "{}", plan.all());
    assert!(
        plan.stdout.contains(&format!(
            "note: the leftover copy of tenant {db} on server b (an unfinished move from server a, called off"
        )),
        "{}",
        plan.stdout
    );
    let apply = f.tenantry_fleet(&["apply", "--auto-approve"]);
    apply.ok();
    assert_eq!(databases(b, &db), "1", "kept without --allow-destroy");
    let apply = f.tenantry_fleet(&["apply", "--auto-approve", "--allow-destroy"]);
    println!("{}", apply.all());
    assert!(
        apply.ok().contains("the move from server a was called off"),
        "{}",
        apply.stdout
    );
    assert_eq!(databases(b, &db), "0");
    assert_eq!(
        one(b, "postgres", "SELECT count(*) FROM pg_subscription"),
        "0"
    );
    assert_eq!(
        one(a, "postgres", "SELECT count(*) FROM pg_replication_slots"),
        "0"
    );
    assert_eq!(one(a, &db, "SELECT count(*) FROM pg_publication"), "0");
    assert_eq!(
        one(
            a,
            "postgres",
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'tenantry\\_move\\_%'"
        ),
        "0"
    );
    assert_eq!(one(a, &db, "SELECT count(*) FROM orders"), "50000");
    assert_eq!(f.tenantry_fleet(&["plan", "--detailed-exitcode"]).code, 0);
}

/// How many databases named `db` `cluster` has (0 or 1).
fn databases(cluster: &tenantry_localpg::Cluster, db: &str) -> String {
    one(
        cluster,
        "postgres",
        &format!("SELECT count(*) FROM pg_database WHERE datname = '{db}'"),
    )
}
