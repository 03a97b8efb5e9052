//! The gateway over three real servers under load: each tenant is served
//! from the server its database is on (placed by apply, learned from the
//! catalogs at start), no server's pools ever hold more than its
//! `gateway_connections`, and when one server stops its own tenants get
//! 503s while every tenant on the other two sees nothing but 200s; it
//! recovers by itself once the server is back.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::gateway::{fleet_token, http, Gateway};
use common::{own_cluster, placed, servers_toml, Admin, Fleet};

/// Waits until `cond` holds, polling every 20 ms, for at most `limit`
/// (generous: the bound only turns a hang into a failure).
fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

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

#[test]
fn one_server_down_leaves_the_others_untouched() {
    let f = Fleet::new(Admin::Superuser);
    let (b, c) = (own_cluster(&[]), own_cluster(&[]));
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
    let gw = Gateway::start_fleet(&f, &["--checkout-timeout", "2s", "--connect-timeout", "1s"]);

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
    // The most connections each server's pools held, polled meanwhile.
    let highest: Arc<Mutex<BTreeMap<String, f64>>> = Arc::default();
    let poller = {
        let (highest, stop, admin) = (highest.clone(), stop.clone(), gw.admin.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let (_, metrics) = http(&admin, "GET", "admin", "/metrics", None, None);
                let mut highest = highest.lock().unwrap();
                for (server, open) in per_server(&metrics, "tenantry_connections_open") {
                    let h = highest.entry(server).or_default();
                    *h = h.max(open);
                }
                drop(highest);
                std::thread::sleep(Duration::from_millis(50));
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
    assert!(
        wait_until(limit, || count(&|t, s| s == 503 && is_c(t)) >= 30),
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
        wait_until(limit, || count(
            &|t, s| s == 200 && on_c.iter().any(|c| c == t)
        ) >= ok_before + 40),
        "c's tenants did not recover"
    );
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    poller.join().unwrap();

    let seen = seen.lock().unwrap();
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
    // No server's pools above its budget; a and b's were used.
    let highest = highest.lock().unwrap();
    for server in ["a", "b", "c"] {
        let h = highest.get(server).copied().unwrap_or_default();
        assert!(h <= 3.0, "{server} held {h} connections (budget 3)");
    }
    assert!(
        highest.get("a").copied().unwrap_or_default() >= 1.0,
        "{highest:?}"
    );
}
