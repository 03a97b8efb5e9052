//! Every supported PostgreSQL major, 14 to 18, side by side: the same file
//! plans the same on each and converges; what differs between majors is
//! handled in the catalog reader and the statement builder (schema `public`
//! on 14 is the bootstrap superuser's); a fleet whose servers run different
//! majors works, and `tenantry servers` shows each one's version.
//!
//! The majors other than the installed one come from
//! `scripts/fetch-postgres` (`bash .ci/run` fetches them first). A test
//! that needs a major this machine lacks returns early (noting it on
//! stderr), except under CI (`CI` set, as `.ci/run` does), where it fails.
//!
//! The core suites themselves (provision, gateway, migrate) run on each
//! major from `.ci/run`; this file is what needs several majors at once.

mod common;

use common::{placed, servers_toml, try_sql, Admin, Fleet, TWO_TENANTS};
use tenantry_localpg::Cluster;

const MAJORS: [u32; 5] = [14, 15, 16, 17, 18];

/// A throwaway cluster of PostgreSQL `major`, or None (with a note) when
/// this machine lacks it outside CI.
fn cluster_of(major: u32) -> Option<&'static Cluster> {
    match Cluster::start_temp_major(major, &[]) {
        Ok(c) => Some(Box::leak(Box::new(c))),
        Err(e @ tenantry_localpg::Error::NotInstalled { .. })
            if std::env::var_os("CI").is_none() =>
        {
            eprintln!("skipped: PostgreSQL {major}: {e}");
            None
        }
        Err(e) => panic!("PostgreSQL {major} is needed under CI: {e}"),
    }
}

/// One cluster per supported major (started at once), or None if any is
/// missing outside CI.
fn every_major() -> Option<Vec<(u32, &'static Cluster)>> {
    let started: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = MAJORS
            .iter()
            .map(|&m| s.spawn(move || cluster_of(m).map(|c| (m, c))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    started.into_iter().collect()
}

/// The server's `server_version_num`, for checking which major a cluster runs.
fn server_major(c: &Cluster) -> u32 {
    c.psql("postgres", "SHOW server_version_num")
        .unwrap()
        .trim()
        .parse::<u32>()
        .unwrap()
        / 10000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_file_plans_alike_and_converges_on_every_major() {
    let Some(clusters) = every_major() else {
        return;
    };
    for admin in [Admin::Superuser, Admin::CreateRole] {
        let (mut first, mut first_drift): (Option<(u32, String)>, Option<String>) = (None, None);
        for &(major, cluster) in &clusters {
            assert_eq!(server_major(cluster), major);
            let f = Fleet::on(cluster, admin);
            f.write(TWO_TENANTS);
            // Names differ per fleet only by their prefix, paths by the
            // fleet's directory.
            let dir = f.dir.path().display().to_string();
            let plan_text = || {
                f.tenantry(&["plan"])
                    .ok()
                    .replace(&dir, "DIR")
                    .replace(&f.p, "P")
            };
            let plan = plan_text();
            match &first {
                None => first = Some((major, plan)),
                Some((m, p)) => assert_eq!(
                    &plan, p,
                    "{admin:?}: the plan on PostgreSQL {major} differs from the one on {m}"
                ),
            }
            let applied = f.apply();
            assert!(
                applied.ok().contains("Apply complete: 2 created"),
                "{admin:?} on {major}: {}",
                applied.all()
            );
            f.assert_converged();

            // The same drift, made by hand, reads the same on every major.
            f.psql(
                "{p}_shop",
                "ALTER ROLE {p}_shop_a CONNECTION LIMIT 3; \
                 REVOKE SELECT ON widgets FROM {p}_shop_customer; \
                 GRANT INSERT ON orders TO PUBLIC; \
                 ALTER ROLE {p}_cafe_c SET statement_timeout = '1min'",
            );
            let drift = plan_text();
            assert!(drift.contains("Plan: 0 to add, 3 to change"), "{drift}");
            match (&first, &first_drift) {
                (Some((m, _)), Some(p)) => assert_eq!(
                    &drift, p,
                    "{admin:?}: the drift plan on PostgreSQL {major} differs from the one on {m}"
                ),
                _ => first_drift = Some(drift),
            }
            f.apply().ok();
            f.assert_converged();

            // Version-specific drift. 16+: memberships are one grant per
            // grantor, each with its own inherit option. A DBA role (one
            // the admin may act as) makes the gateway login inherit a group
            // despite NOINHERIT and puts a user into another tenant's group:
            // apply undoes both as that grantor. 17+: the MAINTAIN privilege.
            if major >= 16 {
                f.psql(
                    "postgres",
                    "CREATE ROLE {p}_dba CREATEROLE; \
                     GRANT {p}_shop_admin, {p}_cafe_admin TO {p}_dba WITH ADMIN TRUE",
                );
                if admin == Admin::CreateRole {
                    f.psql("postgres", "GRANT {p}_dba TO {p}_tenantry");
                }
                f.psql(
                    "postgres",
                    "SET ROLE {p}_dba; \
                     GRANT {p}_shop_admin TO {p}_shop_gateway WITH INHERIT TRUE; \
                     GRANT {p}_cafe_admin TO {p}_shop_d",
                );
                let plan = plan_text();
                assert!(
                    plan.contains("~ gateway login P_shop_gateway")
                        && plan.contains("inherit: true -> false")
                        && plan.contains("member of P_cafe_admin: yes -> no"),
                    "{admin:?} on {major}: {plan}"
                );
                f.apply().ok();
                f.assert_converged();
                let left = f.psql(
                    "postgres",
                    "SELECT count(*) FILTER (WHERE member = '{p}_shop_gateway'::regrole AND inherit_option) \
                          + count(*) FILTER (WHERE member = '{p}_shop_d'::regrole AND roleid = '{p}_cafe_admin'::regrole) \
                     FROM pg_auth_members",
                );
                assert_eq!(left.trim(), "0", "{admin:?} on {major}");
            }
            if major >= 17 {
                f.psql("{p}_shop", "GRANT MAINTAIN ON widgets TO {p}_shop_customer");
                let plan = plan_text();
                assert!(plan.contains("MAINTAIN"), "{admin:?} on {major}: {plan}");
                f.apply().ok();
                f.assert_converged();
            }

            // schema public is the owner's on every major; nobody else may
            // create in it (on 14 PUBLIC could, before apply).
            let owner = f.psql(
                "{p}_shop",
                "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public'",
            );
            assert_eq!(owner.trim(), f.name("{p}_shop_owner"), "on {major}");
            let a = f.connect_as("{p}_shop_a", "{p}_shop").await.unwrap();
            assert!(
                try_sql(&a, "CREATE TABLE evil (id int)")
                    .await
                    .contains("permission denied for schema public"),
                "{admin:?} on {major}"
            );
            let d = f.connect_as("{p}_shop_d", "{p}_shop").await.unwrap();
            assert_eq!(
                try_sql(&d, "DELETE FROM widgets").await,
                "permission denied for table widgets",
                "{admin:?} on {major}"
            );
            let err = f
                .connect_as("{p}_cafe_a", "{p}_shop")
                .await
                .expect_err("cross-tenant connect must fail");
            assert!(err.contains("permission denied for database"), "{err}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_14_public_schema_needs_a_superuser_or_a_prepared_template1() {
    let Some(cluster) = cluster_of(14) else {
        return;
    };
    // A CREATEDB + CREATEROLE admin made by hand: template1 untouched (its
    // `public` the bootstrap superuser's, PUBLIC may create in it).
    cluster
        .psql(
            "postgres",
            "CREATE ROLE v14_admin LOGIN CREATEDB CREATEROLE PASSWORD 'v14-admin-pw'",
        )
        .unwrap();
    let mut f = Fleet::on(cluster, Admin::Superuser);
    f.admin_url = cluster.user_url("v14_admin", "v14-admin-pw", "postgres");
    f.write(TWO_TENANTS);

    let plan = f.tenantry(&["plan"]);
    assert_ne!(plan.code, 0, "{}", plan.all());
    let text = plan.all();
    assert!(
        text.contains(&f.name(
            "error: tenant {p}_shop: schema public of its new database would belong to \"postgres\" (PostgreSQL 14 copies it from template1), which admin \"v14_admin\", not a superuser, cannot hand to the tenant's owner"
        )),
        "{text}"
    );
    assert_eq!(text.matches("help: once per server, as a superuser: psql -d template1 -c 'ALTER SCHEMA public OWNER TO pg_database_owner; REVOKE CREATE ON SCHEMA public FROM PUBLIC'").count(), 1, "{text}");
    let apply = f.apply();
    assert_ne!(apply.code, 0, "{}", apply.all());
    assert!(
        apply.stderr.contains("nothing was changed"),
        "{}",
        apply.all()
    );
    let made = f.psql(
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname LIKE '{p}\\_%'",
    );
    assert_eq!(made.trim(), "0", "apply refused, yet created databases");

    // The help's own command, then apply as the same admin: done, and
    // `public` is the tenant owner's with CREATE for nobody else.
    cluster
        .psql(
            "template1",
            "ALTER SCHEMA public OWNER TO pg_database_owner; REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        )
        .unwrap();
    assert!(f.apply().ok().contains("Apply complete: 2 created"));
    f.assert_converged();
    let owner = f.psql(
        "{p}_cafe",
        "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public'",
    );
    assert_eq!(owner.trim(), f.name("{p}_cafe_owner"));
    let c = f.connect_as("{p}_cafe_c", "{p}_cafe").await.unwrap();
    assert!(try_sql(&c, "CREATE TABLE evil (id int)")
        .await
        .contains("permission denied for schema public"));
}

#[test]
fn a_fleet_over_different_majors_places_applies_and_reports_each_version() {
    let (Some(old), Some(new)) = (cluster_of(14), cluster_of(17)) else {
        return;
    };
    let f = Fleet::on(old, Admin::Superuser);
    let servers = servers_toml(&[("old", &f.admin_url, ""), ("new", &new.url("postgres"), "")]);
    let tenants: String = (0..6)
        .map(|i| format!("\n[tenants.{{p}}_t{i}]\nplan = \"starter\"\n"))
        .collect();
    f.write_servers(&servers, &tenants);
    let plan = f.tenantry_fleet(&["plan"]);
    let placed = placed(plan.ok());
    assert_eq!(
        placed.values().filter(|s| *s == "old").count(),
        3,
        "{placed:?}"
    );
    assert_eq!(
        placed.values().filter(|s| *s == "new").count(),
        3,
        "{placed:?}"
    );
    assert!(f
        .tenantry_fleet(&["apply", "--auto-approve"])
        .ok()
        .contains("Apply complete: 6 created"));
    let again = f.tenantry_fleet(&["plan", "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "{}", again.all());

    // Each database on the server plan named, and nowhere else.
    for (tenant, server) in &placed {
        let (here, there) = if server == "old" {
            (old, new)
        } else {
            (new, old)
        };
        let q = format!("SELECT count(*) FROM pg_database WHERE datname = '{tenant}'");
        assert_eq!(here.psql("postgres", &q).unwrap().trim(), "1", "{tenant}");
        assert_eq!(there.psql("postgres", &q).unwrap().trim(), "0", "{tenant}");
    }

    let servers = f.tenantry_fleet(&["servers", "--json"]);
    let report: serde_json::Value = serde_json::from_str(servers.ok()).unwrap();
    for (name, major) in [("old", "14."), ("new", "17.")] {
        let s = report
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {report}"));
        let version = s["version"].as_str().unwrap_or_default();
        assert!(version.starts_with(major), "{name}: {s}");
        assert_eq!(s["tenants"], 3, "{name}: {s}");
    }
    let text = f.tenantry_fleet(&["servers"]);
    assert!(text.ok().contains("14."), "{}", text.stdout);
    assert!(text.ok().contains("17."), "{}", text.stdout);

    // Migrate reaches both majors.
    let migrate = f.tenantry_fleet(&["migrate"]);
    assert_eq!(migrate.code, 0, "{}", migrate.all());
}
