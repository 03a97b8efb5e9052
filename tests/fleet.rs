//! One tenants.toml over three real servers: the shared cluster (a, as the
//! superuser), a cluster of the test's own reached through a role with only
//! CREATEDB and CREATEROLE (b), and another of its own (c) that is stopped
//! and started again. Placement as plan says, each tenant's database and
//! roles on one server only, convergence, a fleet-wide migration with one
//! broken tenant, and a server down: plan names it, apply refuses, then
//! `--skip-unreachable` converges the others while a new tenant waits.

mod common;

use std::collections::BTreeMap;

use common::{own_cluster, placed, servers_toml, Admin, Fleet};
use tenantry_localpg::Cluster;

/// The rows of a one-column query, run as the superuser.
fn rows(cluster: &Cluster, sql: &str) -> Vec<String> {
    cluster
        .psql("postgres", sql)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_fleet_over_three_servers() {
    let f = Fleet::new(Admin::Superuser);
    f.own_schema();
    let a = f.cluster;
    let (b, c) = (own_cluster(&[]), own_cluster(&[]));
    let b_admin = format!("{}_tenantry", f.p);
    let b_url = b.create_admin_role(&b_admin, "admin-pw").unwrap();
    let servers = servers_toml(&[
        ("a", &f.admin_url, ""),
        ("b", &b_url, ""),
        ("c", &c.url("postgres"), ""),
    ]);
    let tenant = |i: usize, plan: &str| {
        let pin = match i {
            0..=4 => "server = \"b\"\n",
            5..=7 => "server = \"c\"\n",
            _ => "",
        };
        format!(
            "[tenants.{{p}}_t{i:02}]\nplan = \"{plan}\"\n{pin}customers = [{{ username = \"{{p}}_t{i:02}_c\" }}]\n\n"
        )
    };
    let file = |plans: &dyn Fn(usize) -> &'static str, count: usize| {
        (0..count).map(|i| tenant(i, plans(i))).collect::<String>()
    };
    f.write_servers(&servers, &file(&|_| "starter", 30));

    // Placement, decided and shown by plan: pins kept, the rest spread so
    // that each server ends with ten.
    let plan = f.tenantry_fleet(&["plan"]);
    let said = placed(plan.ok());
    assert_eq!(said.len(), 30, "{}", plan.stdout);
    for i in 0..8 {
        let pin = if i < 5 { "b" } else { "c" };
        assert_eq!(
            said[&f.name(&format!("{{p}}_t{i:02}"))],
            pin,
            "{}",
            plan.stdout
        );
    }
    let mut per: BTreeMap<&str, usize> = BTreeMap::new();
    for server in said.values() {
        *per.entry(server).or_default() += 1;
    }
    assert_eq!(
        per,
        BTreeMap::from([("a", 10), ("b", 10), ("c", 10)]),
        "{}",
        plan.stdout
    );
    assert!(plan.stdout.contains("By server: a: "), "{}", plan.stdout);

    f.tenantry_fleet(&["apply", "--auto-approve"]).ok();
    // Each database and its roles exist on exactly the server plan named.
    let like = f.like();
    for (name, cluster) in [("a", a), ("b", b), ("c", c)] {
        let dbs = rows(
            cluster,
            &format!("SELECT datname FROM pg_database WHERE datname LIKE '{like}' ORDER BY 1"),
        );
        let expected: Vec<String> = said
            .iter()
            .filter(|(_, s)| s.as_str() == name)
            .map(|(t, _)| t.clone())
            .collect();
        assert_eq!(dbs, expected, "databases on {name}");
        let roles = rows(
            cluster,
            &format!("SELECT rolname FROM pg_roles WHERE rolname LIKE '{like}' AND rolname <> '{b_admin}' ORDER BY 1"),
        );
        // Four groups, the gateway login and one customer per tenant.
        assert_eq!(
            roles.len(),
            6 * expected.len(),
            "roles on {name}: {roles:?}"
        );
        for role in &roles {
            let owner = expected.iter().any(|t| role.starts_with(&format!("{t}_")));
            assert!(
                owner,
                "role {role} on {name} belongs to none of its tenants"
            );
        }
    }
    let again = f.tenantry_fleet(&["plan", "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "{}", again.all());
    let list = f.tenantry_fleet(&["list"]);
    let t00 = f.name("{p}_t00");
    assert!(
        list.ok()
            .lines()
            .any(|l| l.starts_with(&t00) && l.ends_with("b: in sync")),
        "{}",
        list.stdout
    );
    let show = f.tenantry_fleet(&["show", &t00]);
    assert!(
        show.ok().contains("server       b (pinned)"),
        "{}",
        show.stdout
    );

    // A migration over the three servers; t05 (on c) is broken by hand and
    // fails alone, the others go on.
    f.add_migration(
        "V2__notes.sql",
        "CREATE TABLE notes (id bigint PRIMARY KEY);",
    );
    let t05 = f.name("{p}_t05");
    c.psql(&t05, "CREATE TABLE public.notes (x int)").unwrap();
    let run = f.tenantry_fleet(&["migrate"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stdout.contains("29 migrated, 0 up to date, 1 failed"),
        "{}",
        run.all()
    );
    let row = run.stdout.lines().find(|l| l.starts_with(&t05)).unwrap();
    assert!(row.contains(" c ") && row.contains("FAILED"), "{row}");
    let status = f.tenantry_fleet(&["status"]);
    let row = status
        .ok()
        .lines()
        .find(|l| l.starts_with(&t05))
        .unwrap()
        .to_owned();
    assert!(
        row.contains(" c ") && row.contains("V1") && row.contains("V2"),
        "{row}"
    );
    c.psql(&t05, "DROP TABLE public.notes").unwrap();
    let run = f.tenantry_fleet(&["migrate"]);
    assert!(
        run.ok().contains("1 migrated, 29 up to date, 0 failed"),
        "{}",
        run.all()
    );

    // Server c stops. A change on a and b, and a new tenant.
    c.pause().unwrap();
    let on = |server: &str| {
        said.iter()
            .filter(|(_, s)| s.as_str() == server)
            .map(|(t, _)| t.clone())
            .collect::<Vec<_>>()
    };
    let (on_a, on_b) = (on("a")[0].clone(), on("b")[0].clone());
    let professional = |i: usize| {
        let name = f.name(&format!("{{p}}_t{i:02}"));
        if name == on_a || name == on_b {
            "professional"
        } else {
            "starter"
        }
    };
    f.write_servers(&servers, &file(&professional, 31));
    let t30 = f.name("{p}_t30");
    let plan = f.tenantry_fleet(&["plan"]);
    assert_eq!(plan.code, 1, "{}", plan.all());
    assert!(
        plan.stderr.contains("server(s) c could not be read"),
        "{}",
        plan.all()
    );
    assert!(
        plan.stdout.contains("error: server c cannot be read"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains(&format!(
            "~ tenant {on_a} will be updated in place on server a"
        )),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout
            .contains(&format!("note: tenant {t30}: found on no server")),
        "{}",
        plan.stdout
    );
    let refused = f.tenantry_fleet(&["apply", "--auto-approve"]);
    assert_eq!(refused.code, 1, "{}", refused.all());
    assert!(
        refused.stderr.contains("--skip-unreachable"),
        "{}",
        refused.all()
    );
    // The plan's connection limit, on the tenant's customer login.
    let limit = |cluster: &Cluster, db: &str| {
        rows(
            cluster,
            &format!("SELECT rolconnlimit FROM pg_roles WHERE rolname = '{db}_c'"),
        )
    };
    assert_eq!(limit(a, &on_a), ["5"], "nothing was changed");
    let skipped = f.tenantry_fleet(&["apply", "--auto-approve", "--skip-unreachable"]);
    assert_eq!(skipped.code, 1, "{}", skipped.all());
    assert!(
        skipped.stderr.contains("skipped server(s) c"),
        "{}",
        skipped.all()
    );
    assert_eq!(limit(a, &on_a), ["20"]);
    assert_eq!(limit(b, &on_b), ["20"]);
    for cluster in [a, b] {
        assert!(
            limit(cluster, &t30).is_empty(),
            "the new tenant waits for c"
        );
    }

    // c is back: the new tenant is placed and everything converges.
    c.resume().unwrap();
    let plan = f.tenantry_fleet(&["plan"]);
    assert_eq!(placed(plan.ok()).len(), 1, "{}", plan.stdout);
    f.tenantry_fleet(&["apply", "--auto-approve"]).ok();
    let again = f.tenantry_fleet(&["plan", "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "{}", again.all());
}
