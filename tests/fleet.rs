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
    // The one-tenant commands work on the tenant's own server: its DSN
    // names b, its backup comes from b.
    let env = f.tenantry_fleet(&["env", &t00, "--role", "customer"]);
    assert!(
        env.ok().contains(&format!("@127.0.0.1:{}/{t00}", b.port())),
        "{}",
        env.stdout
    );
    let dump = f.dir.path().join("t00.dump");
    f.tenantry_fleet(&["backup", &t00, "-o", dump.to_str().unwrap()])
        .ok();
    assert!(std::fs::metadata(&dump).unwrap().len() > 1000);

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

/// What placement refuses to guess, over two servers: a pin that disagrees
/// with where a tenant lives, a tenant marked on both, a database of a
/// tenant's name that tenantry does not manage, a new tenant pinned to a
/// draining server; and two applies at once.
#[test]
fn conflicts_are_reported_never_resolved_by_a_second_copy() {
    let f = Fleet::new(Admin::Superuser);
    let (a, b) = (f.cluster, own_cluster(&[]));
    let servers = |b_extra: &str| {
        servers_toml(&[("a", &f.admin_url, ""), ("b", &b.url("postgres"), b_extra)])
    };
    let tenant = |name: &str, pin: Option<&str>| {
        let pin = pin
            .map(|s| format!("server = \"{s}\"\n"))
            .unwrap_or_default();
        format!("[tenants.{{p}}_{name}]\nplan = \"starter\"\n{pin}\n")
    };
    let (x, y, z) = (f.name("{p}_x"), f.name("{p}_y"), f.name("{p}_z"));
    let exists = |cluster: &Cluster, db: &str| {
        rows(
            cluster,
            &format!("SELECT 1 FROM pg_database WHERE datname = '{db}'"),
        ) == ["1"]
    };

    // Two applies at once over both servers: both finish, each tenant once.
    let many: String = (0..6).map(|i| tenant(&format!("m{i}"), None)).collect();
    f.write_servers(&servers(""), &format!("{many}{}", tenant("x", Some("a"))));
    let mut runs: Vec<std::process::Child> = (0..2)
        .map(|_| {
            let mut cmd = f.command(&["apply", "--auto-approve"]);
            cmd.env_remove("TENANTRY_ADMIN_URL")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            cmd.spawn().unwrap()
        })
        .collect();
    for run in &mut runs {
        assert!(run.wait().unwrap().success(), "an apply failed");
    }
    let copies: usize = [a, b]
        .iter()
        .map(|c| {
            rows(
                c,
                &format!(
                    "SELECT datname FROM pg_database WHERE datname LIKE '{}'",
                    f.like()
                ),
            )
            .len()
        })
        .sum();
    assert_eq!(copies, 7, "seven tenants, one database each");
    assert!(exists(a, &x));

    // x pinned to b while it lives on a: a move (tests/moves.rs moves
    // tenants), which cannot run while a database of that name that is not
    // the fleet's is on b: a conflict naming why; apply changes nothing;
    // migrate still serves x where it lives.
    b.psql("postgres", &format!("CREATE DATABASE {x}")).unwrap();
    let others = format!("{many}{}", tenant("x", Some("b")));
    f.write_servers(&servers(""), &others);
    let plan = f.tenantry_fleet(&["plan"]);
    assert_eq!(plan.code, 1, "{}", plan.all());
    assert!(
        plan.stdout.contains(&format!(
            "error: tenant {x}: it cannot move to server b: a database or role named {x} that is not this fleet's exists there"
        )),
        "{}",
        plan.stdout
    );
    let apply = f.tenantry_fleet(&["apply", "--auto-approve"]);
    assert_eq!(apply.code, 1, "{}", apply.all());
    assert!(
        apply
            .stderr
            .contains("conflict(s) above: nothing was changed"),
        "{}",
        apply.all()
    );
    assert_eq!(
        b.psql(
            "postgres",
            &format!("SELECT shobj_description(oid, 'pg_database') IS NULL FROM pg_database WHERE datname = '{x}'")
        )
        .unwrap()
        .trim(),
        "t",
        "no second copy: the database on b is left as it was"
    );
    let list = f.tenantry_fleet(&["list"]);
    let row = list
        .stdout
        .lines()
        .find(|l| l.starts_with(&x))
        .unwrap()
        .to_owned();
    assert!(row.contains(" a"), "{row}");
    let migrate = f.tenantry_fleet(&["migrate"]);
    let row = migrate
        .ok()
        .lines()
        .find(|l| l.starts_with(&x))
        .unwrap()
        .to_owned();
    assert!(row.contains(" a ") && row.contains("up to date"), "{row}");

    // x marked on both servers (a copy made by hand): nothing is done for
    // it, migrate says so and fails.
    f.write_servers(&servers(""), &format!("{many}{}", tenant("x", None)));
    let marker = rows(
        a,
        &format!(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '{x}'"
        ),
    );
    b.psql(
        "postgres",
        &format!("COMMENT ON DATABASE {x} IS '{}'", marker[0]),
    )
    .unwrap();
    let plan = f.tenantry_fleet(&["plan"]);
    assert_eq!(plan.code, 1, "{}", plan.all());
    assert!(
        plan.stdout.contains(&format!(
            "error: tenant {x}: its database exists on servers a and b"
        )),
        "{}",
        plan.stdout
    );
    let migrate = f.tenantry_fleet(&["migrate"]);
    assert_eq!(migrate.code, 1, "{}", migrate.all());
    assert!(
        migrate.stderr.contains(&format!("were not migrated: {x}")),
        "{}",
        migrate.all()
    );
    b.psql("postgres", &format!("DROP DATABASE {x}")).unwrap();
    f.tenantry_fleet(&["plan", "--detailed-exitcode"]).ok();

    // y: a database of that name already on b, not tenantry's. The new
    // tenant goes there (where adopt can take it over), never to a.
    b.psql("postgres", &format!("CREATE DATABASE {y}")).unwrap();
    // z: new, pinned to b, which is now draining: created there, with a
    // warning.
    let file = format!(
        "{many}{}{}{}",
        tenant("x", None),
        tenant("y", None),
        tenant("z", Some("b"))
    );
    f.write_servers(&servers("status = \"draining\"\n"), &file);
    let plan = f.tenantry_fleet(&["plan"]);
    assert_eq!(plan.code, 1, "{}", plan.all());
    assert!(
        plan.stdout.contains(&format!(
            "error: server b: tenant {y}: database {y} exists but is not managed by tenantry"
        )),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains(&format!("tenantry adopt {y}")),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains(&format!(
            "warning: tenant {z} is new and pinned to server b, which is draining"
        )),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout
            .contains(&format!("+ tenant {z} will be created on server b")),
        "{}",
        plan.stdout
    );
    assert!(!exists(a, &y));
    b.psql("postgres", &format!("DROP DATABASE {y}")).unwrap();
}

/// An apply over two servers killed the moment the first group role, then
/// the first database, appears on either: the next apply finishes every
/// tenant where it was started (no tenant's roles left on the other
/// server, one database each) and the plan after it is clean.
#[test]
fn an_apply_over_servers_killed_midway_converges_where_it_started() {
    let f = Fleet::new(Admin::Superuser);
    let (a, b) = (f.cluster, own_cluster(&[]));
    let servers = servers_toml(&[("a", &f.admin_url, ""), ("b", &b.url("postgres"), "")]);
    let like = f.like();
    let count = |cluster: &Cluster, sql: &str| -> usize {
        rows(cluster, &sql.replace("{like}", &like))[0]
            .parse()
            .unwrap()
    };
    let mut tenants = String::new();
    let rounds = [
        ("a group role", "SELECT count(*) FROM pg_roles WHERE rolname LIKE '{like}' AND rolname LIKE '%\\_owner'"),
        ("a database", "SELECT count(*) FROM pg_database WHERE datname LIKE '{like}'"),
    ];
    for (round, (what, sql)) in rounds.into_iter().enumerate() {
        let before: usize = [a, b].iter().map(|c| count(c, sql)).sum();
        for i in round * 6..round * 6 + 6 {
            tenants.push_str(&format!(
                "[tenants.{{p}}_k{i}]\nplan = \"starter\"\nadmins = [{{ username = \"{{p}}_k{i}_a\" }}]\n\n"
            ));
        }
        f.write_servers(&servers, &tenants);
        let mut child = f.command(&["apply", "--auto-approve", "--jobs", "1"]);
        child
            .env_remove("TENANTRY_ADMIN_URL")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = child.spawn().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while [a, b].iter().map(|c| count(c, sql)).sum::<usize>() == before {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("round {round}: apply exited ({status}) before {what} appeared");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: {what} never appeared"
            );
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "round {round}: apply had finished when {what} appeared: the kill would not land mid-apply"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        let left = f.tenantry_fleet(&["plan", "--detailed-exitcode"]);
        assert_eq!(
            left.code,
            2,
            "round {round}: the killed apply left work\n{}",
            left.all()
        );
        f.tenantry_fleet(&["apply", "--auto-approve"]).ok();
        let again = f.tenantry_fleet(&["plan", "--detailed-exitcode"]);
        assert_eq!(again.code, 0, "round {round}\n{}", again.all());
        // One database per tenant, and each server's roles are its own
        // tenants' only.
        let mut seen = Vec::new();
        for cluster in [a, b] {
            let dbs = rows(
                cluster,
                &format!("SELECT datname FROM pg_database WHERE datname LIKE '{like}'"),
            );
            let roles = rows(
                cluster,
                &format!("SELECT rolname FROM pg_roles WHERE rolname LIKE '{like}'"),
            );
            for role in &roles {
                assert!(
                    dbs.iter().any(|db| role.starts_with(&format!("{db}_"))),
                    "round {round}: role {role} on a server without its tenant's database ({dbs:?})"
                );
            }
            seen.extend(dbs);
        }
        seen.sort();
        let n = seen.len();
        seen.dedup();
        assert_eq!(
            (n, seen.len()),
            ((round + 1) * 6, (round + 1) * 6),
            "{seen:?}"
        );
    }
}
