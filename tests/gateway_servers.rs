//! The gateway over three real servers under load: each tenant is served
//! from the server its database is on (placed by apply, learned from the
//! catalogs at start through a login that may only read the catalog, as a
//! deployment gives the gateway), no server ever sees more of the gateway's
//! connections than its `gateway_connections`, and when one server stops
//! for ten seconds its own tenants get 503s while every tenant on the other
//! two sees nothing but 200s; it recovers by itself once the server is
//! back. With every server down, `/readyz` turns 503, and a reload then
//! (no catalog readable) does not keep it so once the servers are back.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::gateway::{fleet_token, http, Gateway};
use common::{own_cluster, placed, servers_toml, wait_until, Admin, Fleet};
use tenantry_localpg::Cluster;

/// Per-server samples of a labelled metric: server -> value.
fn per_server(metrics: &str, name: &str) -> BTreeMap<String, f64> {
    metrics
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix("{server=\"")?;
            let (server, value) = rest.split_once("\"} ")?;
            Some((server.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// The gateway logins' backends on `cluster` (`<p>_..._gateway`); None
/// while it is stopped.
fn gateway_backends(cluster: &Cluster, p: &str) -> Option<usize> {
    cluster
        .psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE usename LIKE '{p}\\_%\\_gateway'"
            ),
        )
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[test]
fn one_server_down_leaves_the_others_untouched() {
    let a = own_cluster(&[]);
    let f = Fleet::on(a, Admin::Superuser);
    let (b, c) = (own_cluster(&[]), own_cluster(&[]));
    let clusters = [("a", a), ("b", b), ("c", c)];
    let budget = "gateway_connections = 3\n";
    let servers = servers_toml(&[
        ("a", &f.admin_url, budget),
        ("b", &b.url("postgres"), budget),
        ("c", &c.url("postgres"), budget),
    ]);
    let tenants: String = (0..6)
        .map(|i| {
            format!("[tenants.{{p}}_s{i}]\nplan = \"professional\"\nsubdomain = \"{{p}}-s{i}\"\n\n")
        })
        .collect();
    f.write_servers(&servers, &tenants);
    let plan = f.tenantry_fleet(&["plan"]);
    let home = placed(plan.ok());
    assert_eq!(home.len(), 6, "{}", plan.stdout);
    f.tenantry_fleet(&["apply", "--auto-approve"]).ok();
    let tokens: BTreeMap<String, String> = home
        .keys()
        .map(|t| (t.clone(), fleet_token(&f, t, "customer")))
        .collect();
    // The gateway reads the catalogs as a login that may do nothing else.
    let catalog: Vec<(String, String)> = clusters
        .iter()
        .map(|(name, cluster)| {
            let reader = format!("{}_catalog", f.p);
            cluster
                .psql(
                    "postgres",
                    &format!("CREATE ROLE {reader} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD 'reader-pw'"),
                )
                .unwrap();
            (
                format!("TENANTRY_ADMIN_URL_{}", name.to_uppercase()),
                cluster.user_url(&reader, "reader-pw", "postgres"),
            )
        })
        .collect();
    let env: Vec<(&str, &str)> = catalog
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let gw = Gateway::start_fleet(
        &f,
        &["--checkout-timeout", "2s", "--connect-timeout", "1s"],
        &env,
    );

    // Two clients per tenant, paced under the plan's rate limit.
    let seen: Arc<Mutex<Vec<(String, u16, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for (tenant, token) in &tokens {
        for _ in 0..2 {
            let (seen, stop) = (seen.clone(), stop.clone());
            let host = format!("{}.localhost", tenant.replace('_', "-"));
            let (api, tenant, token) = (gw.api.clone(), tenant.clone(), token.clone());
            load.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (status, _) = http(&api, "GET", &host, "/api/widgets", Some(&token), None);
                    seen.lock()
                        .unwrap()
                        .push((tenant.clone(), status, Instant::now()));
                    std::thread::sleep(Duration::from_millis(20));
                }
            }));
        }
    }
    // The most gateway connections each server saw (its own count, in
    // pg_stat_activity) and the gateway's own count, polled meanwhile.
    let highest: Arc<Mutex<BTreeMap<String, (usize, f64)>>> = Arc::default();
    let poller = {
        let (highest, stop, admin) = (highest.clone(), stop.clone(), gw.admin.clone());
        let p = f.p.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let (_, metrics) = http(&admin, "GET", "admin", "/metrics", None, None);
                let reported = per_server(&metrics, "tenantry_connections_open");
                for (name, cluster) in clusters {
                    // A stopped server has none (and psql cannot ask it).
                    let seen = gateway_backends(cluster, &p).unwrap_or(0);
                    let mut highest = highest.lock().unwrap();
                    let h = highest.entry(name.to_owned()).or_default();
                    h.0 = h.0.max(seen);
                    h.1 = h.1.max(reported.get(name).copied().unwrap_or_default());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let on = |server: &str| -> Vec<String> {
        home.iter()
            .filter(|(_, s)| s.as_str() == server)
            .map(|(t, _)| t.clone())
            .collect()
    };
    let on_c = on("c");
    assert!(!on_c.is_empty(), "{home:?}");
    let count = |pred: &dyn Fn(&str, u16) -> bool| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|(t, s, _)| pred(t, *s))
            .count()
    };
    let limit = Duration::from_secs(60);
    assert!(
        wait_until(limit, || count(
            &|t, s| s == 200 && on_c.iter().any(|c| c == t)
        ) >= 40),
        "no traffic on c's tenants"
    );

    c.pause().expect("stop server c");
    let stopped = Instant::now();
    let is_c = |t: &str| on_c.iter().any(|c| c == t);
    // Down for ten seconds at least, and long enough for 30 of its answers.
    assert!(
        wait_until(limit, || count(&|t, s| s == 503 && is_c(t)) >= 30
            && stopped.elapsed() >= Duration::from_secs(10)),
        "no 503 for c's tenants while it is down"
    );
    let (_, servers) = http(&gw.admin, "GET", "admin", "/servers", None, None);
    let report: serde_json::Value = serde_json::from_str(&servers).unwrap();
    let state = |name: &str| {
        report["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {report}"))["state"]
            .clone()
    };
    assert_eq!(state("c"), "down", "{report}");
    assert_eq!(state("a"), "up", "{report}");
    let (ready, _) = http(&gw.admin, "GET", "admin", "/readyz", None, None);
    assert_eq!(ready, 200, "ready while two servers answer");
    c.resume().expect("start server c again");
    let resumed = Instant::now();
    let ok_before = count(&|t, s| s == 200 && is_c(t));
    assert!(
        wait_until(limit, || count(&|t, s| s == 200 && is_c(t))
            >= ok_before + 40),
        "c's tenants did not recover"
    );
    let back = seen
        .lock()
        .unwrap()
        .iter()
        .find(|(t, s, at)| *at > resumed && *s == 200 && is_c(t))
        .map(|(_, _, at)| at.duration_since(resumed))
        .expect("a 200 after the restart");
    println!("c's tenants answered 200 again {back:?} after the server started");

    // Every server down: not ready (the load balancer should try another
    // replica); back: ready again.
    let ready = || http(&gw.admin, "GET", "admin", "/readyz", None, None).0;
    let settled = seen.lock().unwrap().len();
    for (_, cluster) in clusters {
        cluster.pause().unwrap();
    }
    assert!(
        wait_until(limit, || ready() == 503),
        "ready with every server down"
    );
    // A reload meanwhile (the file touched) finds no catalog it can read:
    // the tenants keep their servers, and once the servers are back the
    // gateway reads them again by itself and is ready.
    let before = gw.reloads();
    let config = f.config();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n# touched while every server is down\n");
    std::fs::write(&config, text).unwrap();
    gw.wait_for_reload(before);
    for (_, cluster) in clusters {
        cluster.resume().unwrap();
    }
    assert!(
        wait_until(limit, || ready() == 200),
        "not ready once the servers are back"
    );
    let servers = || http(&gw.admin, "GET", "admin", "/servers", None, None).1;
    assert!(
        wait_until(limit, || !servers().contains("\"down\"")),
        "{}",
        servers()
    );
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    poller.join().unwrap();

    let seen = seen.lock().unwrap();
    // Up to the moment every server was stopped.
    let seen = &seen[..settled];
    // Every tenant on a and b: nothing but 200s, the outage included.
    let others: Vec<&(String, u16, Instant)> =
        seen.iter().filter(|(t, _, _)| !on_c.contains(t)).collect();
    assert!(
        others
            .iter()
            .any(|(_, _, at)| *at > stopped && *at < resumed),
        "no traffic to a and b during the outage"
    );
    let bad: Vec<u16> = others
        .iter()
        .map(|(_, s, _)| *s)
        .filter(|s| *s != 200)
        .collect();
    assert!(bad.is_empty(), "tenants of a and b saw {bad:?}");
    // c's tenants: 200 or 503, never anything else.
    let odd: Vec<u16> = seen
        .iter()
        .filter(|(t, s, _)| on_c.contains(t) && *s != 200 && *s != 503)
        .map(|(_, s, _)| *s)
        .collect();
    assert!(odd.is_empty(), "c's tenants saw {odd:?}");
    // No server saw more of the gateway than its budget; each was used.
    let highest = highest.lock().unwrap();
    for server in ["a", "b", "c"] {
        let (seen, reported) = highest.get(server).copied().unwrap_or_default();
        assert!(
            seen <= 3 && reported <= 3.0,
            "{server}: {seen} backends, {reported} reported (budget 3)"
        );
        assert!(seen >= 1, "{server} was never used: {highest:?}");
    }
}
