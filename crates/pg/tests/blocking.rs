//! Blocking work stays off the async threads: planning checks every stored
//! SCRAM verifier with PBKDF2, seconds of CPU for a large fleet, and a task
//! sharing the runtime must keep running meanwhile.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tenantry_layout::{literal, Kind, Marker};
use tenantry_localpg::Cluster;

/// A tenant with `users` login roles (made by hand, marked as tenantry's)
/// whose stored verifiers take the most rounds plan will compute (what any
/// of them may set on itself), each with a password file.
fn fleet(cluster: &Cluster, dir: &std::path::Path, users: usize) -> tenantry_manifest::Inventory {
    let fleet = format!("blk{}", std::process::id());
    let rounds = *tenantry_plan::scram::VERIFIABLE_ITERATIONS.end();
    // Well-formed, so it is computed; salt and keys are arbitrary.
    let zeros = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let heavy = format!("SCRAM-SHA-256${rounds}:MDEyMzQ1Njc4OWFiY2RlZg==${zeros}:{zeros}");
    let mut toml = format!(
        "fleet = \"{fleet}\"\n[server]\nadmin_url = \"{}\"\n[paths]\nschema = \"schema\"\n\
         [plans.p]\nconnection_limit = 2\nstatement_timeout = \"1s\"\npool_size = 1\n\
         requests_per_second = 1\n[tenants.{fleet}_t]\nplan = \"p\"\nadmins = [",
        cluster.url("postgres")
    );
    let mut sql = String::new();
    for i in 0..users {
        let user = format!("{fleet}_u{i}");
        let pw = dir.join(format!("{user}.pw"));
        std::fs::write(&pw, "a-password\n").unwrap();
        // Password files must be private (the manifest refuses others).
        std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        toml.push_str(&format!(
            "{{ username = \"{user}\", password_file = \"{user}.pw\" }}, "
        ));
        let marker = Marker::new(&fleet, &format!("{fleet}_t"), Kind::User).render();
        sql.push_str(&format!(
            "CREATE ROLE {user} LOGIN PASSWORD '{heavy}'; COMMENT ON ROLE {user} IS {};\n",
            literal(&marker)
        ));
    }
    toml.push_str("]\n");
    std::fs::create_dir(dir.join("schema")).unwrap();
    std::fs::write(dir.join("tenants.toml"), toml).unwrap();
    cluster.psql("postgres", &sql).unwrap();
    tenantry_manifest::Inventory::load(&dir.join("tenants.toml")).unwrap()
}

// One thread: a task on this runtime runs only while nothing blocks it.
#[tokio::test(flavor = "current_thread")]
async fn planning_leaves_the_runtime_free_while_it_checks_verifiers() {
    let cluster = Cluster::shared();
    let dir = tempfile::tempdir().unwrap();
    let inventory = fleet(cluster, dir.path(), 4);

    // A task noting when it last ran and the longest it went without running.
    let ticks = Arc::new(Mutex::new((Instant::now(), Duration::ZERO)));
    let ticker = tokio::spawn({
        let ticks = ticks.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let mut t = ticks.lock().unwrap();
                let now = Instant::now();
                t.1 = t.1.max(now - t.0);
                t.0 = now;
            }
        }
    });
    tokio::task::yield_now().await;
    let session = tenantry_pg::session::open(&inventory, 4, None)
        .await
        .unwrap();
    ticker.abort();
    let longest = {
        let (last, longest) = *ticks.lock().unwrap();
        longest.max(last.elapsed())
    };
    assert!(
        session.observed.can_read_passwords,
        "the superuser reads verifiers"
    );

    // What those checks cost, on this thread.
    let start = Instant::now();
    let plan = tenantry_plan::plan(&session.desired, &session.observed);
    let pbkdf2 = start.elapsed();
    let text = tenantry_plan::render::text(&plan);
    assert_eq!(
        text.matches("password: (hidden) -> (changed)").count(),
        4,
        "{text}"
    );
    assert_eq!(text, tenantry_plan::render::text(&session.plan));
    assert!(
        longest < pbkdf2 / 4,
        "a task on the runtime went {longest:?} without running while plan spent {pbkdf2:?} \
         checking verifiers: the checks ran on the runtime's thread"
    );
}
