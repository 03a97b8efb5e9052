//! Usage and quotas end to end: the gateway measures each tenant's storage
//! and counts its requests into `tenantry.usage` (several replicas add up;
//! a restart keeps what was flushed), refuses writes past a quota with 403
//! `quota_exceeded` while reads go on, warns at 80/95/100%, takes writes
//! again once back under; `tenantry usage` reports it all. Reloads under
//! load (a tenant removed, a broken file) lose no count and no audit entry;
//! a graceful stop writes what was pending.

mod common;

use std::time::Duration;

use common::gateway::{http, token, Gateway};
use common::{Admin, Fleet};
use serde_json::Value;

/// The fleet's tenants with a metered plan for the shop; `{storage}` and
/// `{requests}` fill its quotas.
fn metered(storage: &str, requests: u64) -> String {
    format!(
        r#"
[plans.metered]
connection_limit = 10
statement_timeout = "5s"
pool_size = 2
requests_per_second = 1000
storage = "{storage}"
requests_per_day = {requests}
max_users = 3
{}"#,
        common::TWO_TENANTS.replace("plan = \"professional\"", "plan = \"metered\"")
    )
}

/// A fleet applied from `config` (a `metered` file): the fleet, a
/// developer token of the shop and the shop's host.
fn shop_on(config: &str) -> (Fleet, String, String) {
    let f = Fleet::new(Admin::Superuser);
    f.write(config);
    f.apply().ok();
    let dev = token(&f, "{p}_shop", "developer");
    let shop = f.name("{p}-shop.localhost");
    (f, dev, shop)
}

/// `tenantry usage --json`, the row of `tenant`.
fn usage_of(f: &Fleet, tenant: &str) -> Value {
    let out = f.tenantry(&["usage", "--json"]);
    let rows: Vec<Value> = serde_json::from_str(out.ok()).unwrap();
    rows.into_iter()
        .find(|r| r["tenant"] == f.name(tenant))
        .unwrap_or_else(|| panic!("no row for {tenant}: {}", out.stdout))
}

fn post(g: &Gateway, host: &str, token: &str) -> (u16, String) {
    http(
        &g.api,
        "POST",
        host,
        "/api/widgets",
        Some(token),
        Some(r#"{"name":"w","price":1}"#),
    )
}

#[test]
fn past_its_storage_quota_a_tenant_reads_but_cannot_write_until_it_shrinks() {
    let f = Fleet::new(Admin::Superuser);
    f.write(&metered("1GiB", 1_000_000));
    f.apply().ok();
    let dev = token(&f, "{p}_shop", "developer");
    // The quota: what the database holds now and 2 MiB more.
    let size: u64 = f
        .psql("{p}_shop", "SELECT pg_database_size(current_database())")
        .trim()
        .parse()
        .unwrap();
    let quota = size + 2 * 1024 * 1024;
    f.write(&metered(&format!("{quota}B"), 1_000_000));
    let g = Gateway::start(
        &f,
        &[
            "--storage-interval",
            "200ms",
            "--usage-flush-interval",
            "200ms",
        ],
        &[],
    );
    let shop = f.name("{p}-shop.localhost");
    assert_eq!(post(&g, &shop, &dev).0, 201);

    // 4 MiB more data (not compressible, so TOAST cannot shrink it).
    f.psql(
        "{p}_shop",
        "INSERT INTO widgets (name, description, price) \
         SELECT 'filler', string_agg(md5(random()::text || i::text || j::text), ''), 1 \
         FROM generate_series(1, 64) i, generate_series(1, 2000) j GROUP BY i",
    );
    let mut refused = (0, String::new());
    assert!(
        common::wait_until(Duration::from_secs(30), || {
            refused = post(&g, &shop, &dev);
            refused.0 == 403
        }),
        "writes were never refused: {refused:?}\n{}",
        g.log()
    );
    let (_, body) = &refused;
    assert!(body.contains("quota_exceeded"), "{body}");
    assert!(body.contains("storage quota"), "{body}");
    assert!(
        body.contains(&common_bytes(quota)),
        "names the quota: {body}"
    );
    // Reads go on.
    assert_eq!(g.get(&shop, &dev).0, 200);
    // The other tenant is not concerned.
    let cafe_admin = token(&f, "{p}_cafe", "admin");
    assert_eq!(post(&g, &f.name("{p}-cafe.localhost"), &cafe_admin).0, 201);
    // Warned once per level crossed, and in the metrics.
    assert!(g.logged("the tenant is at its quota") >= 1, "{}", g.log());
    let (_, metrics) = http(&g.admin, "GET", "localhost", "/metrics", None, None);
    let warning = format!(
        "tenantry_quota_warning{{tenant=\"{}\",quota=\"storage\"}} 100",
        f.name("{p}_shop")
    );
    assert!(metrics.contains(&warning), "{metrics}");
    // `tenantry usage` says so too.
    let u = usage_of(&f, "{p}_shop");
    assert!(u["storage_bytes"].as_u64().unwrap() > quota, "{u}");
    assert_eq!(u["storage_quota_bytes"], quota);
    assert_eq!(u["users"], 3);
    assert_eq!(u["max_users"], 3);

    // Deleted and given back to the system: writes resume after the next
    // measurement.
    f.psql("{p}_shop", "DELETE FROM widgets WHERE name = 'filler'");
    f.psql("{p}_shop", "VACUUM FULL widgets");
    let mut again = (0, String::new());
    assert!(
        common::wait_until(Duration::from_secs(30), || {
            again = post(&g, &shop, &dev);
            again.0 == 201
        }),
        "writes never resumed: {again:?}"
    );
}

/// The quota as the gateway prints it (see `usage::human_bytes`).
fn common_bytes(bytes: u64) -> String {
    tenantry_gateway::usage::human_bytes(bytes)
}

#[test]
fn the_days_requests_add_up_across_replicas_and_restarts() {
    let (f, dev, shop) = shop_on(&metered("1GiB", 12));
    let flags = ["--usage-flush-interval", "200ms"];
    let a = Gateway::start(&f, &flags, &[]);
    let b = Gateway::start(&f, &flags, &[]);
    for g in [&a, &b, &a, &b, &a, &b] {
        assert_eq!(g.get(&shop, &dev).0, 200);
    }
    // Both replicas' counts land in the tenant's database.
    assert!(
        common::wait_until(Duration::from_secs(30), || {
            usage_of(&f, "{p}_shop")["requests_today"] == 6
        }),
        "{}",
        usage_of(&f, "{p}_shop")
    );
    let u = usage_of(&f, "{p}_shop");
    assert_eq!(u["requests_per_day"], 12);
    assert!(u["last_request_at"].as_str().unwrap().ends_with('Z'), "{u}");

    // A restart loses nothing flushed: a new gateway learns the day's
    // total at its first flush.
    drop(a);
    drop(b);
    let g = Gateway::start(&f, &flags, &[]);
    assert_eq!(g.get(&shop, &dev).0, 200); // 7
    assert!(common::wait_until(Duration::from_secs(30), || {
        usage_of(&f, "{p}_shop")["requests_today"] == 7
    }));
    for _ in 0..3 {
        assert_eq!(g.get(&shop, &dev).0, 200); // 8..10: 80% crossed
    }
    assert_eq!(post(&g, &shop, &dev).0, 201); // 11
    assert_eq!(post(&g, &shop, &dev).0, 201); // 12: at the quota
    let (s, body) = post(&g, &shop, &dev); // 13: past it
    assert_eq!(s, 403, "{body}");
    assert!(
        body.contains("quota_exceeded") && body.contains("requests_per_day") && body.contains("13"),
        "{body}"
    );
    // Reads go on (and count).
    assert_eq!(g.get(&shop, &dev).0, 200);
    assert!(g.logged("crossed 80% of its quota") >= 1, "{}", g.log());
    // The console's JSON shows the warning.
    let (s, fleet) = http(&g.admin, "GET", "localhost", "/api/fleet", None, None);
    assert_eq!(s, 200);
    let fleet: Value = serde_json::from_str(&fleet).unwrap();
    let row = fleet["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == f.name("{p}_shop"))
        .unwrap()
        .clone();
    assert_eq!(row["warnings"][0]["quota"], "requests_per_day", "{row}");
    assert_eq!(row["warnings"][0]["level"], 100, "{row}");
    assert_eq!(row["requests_today"]["limit"], 12);
    // The schema version, read at the flush (the fixture's V1).
    assert_eq!(row["schema_version"], 1, "{row}");
    assert_eq!(
        row["requests_per_minute"].as_array().unwrap().len(),
        fleet["minutes"].as_u64().unwrap() as usize
    );
}

#[test]
fn counts_and_audit_entries_survive_reloads_under_load() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    let config = metered("1GiB", 1_000_000);
    let (f, dev, shop) = shop_on(&config);
    let g = Arc::new(Gateway::start(
        &f,
        &["--usage-flush-interval", "200ms"],
        &[],
    ));

    // Three clients, each a write in four, until told to stop; every
    // answer must be a success.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, writes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (g, stop, sent, writes) = (g.clone(), stop.clone(), sent.clone(), writes.clone());
            let (shop, dev) = (shop.clone(), dev.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let write = i.is_multiple_of(4);
                    let (status, body) = if write {
                        post(&g, &shop, &dev)
                    } else {
                        g.get(&shop, &dev)
                    };
                    assert!(status == 200 || status == 201, "{status} {body}");
                    if write {
                        writes.fetch_add(1, Ordering::Relaxed);
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    // Requests between each change: the reloads land under traffic.
    let some_traffic = || {
        let before = sent.load(Ordering::Relaxed);
        assert!(
            common::wait_until(Duration::from_secs(30), || {
                sent.load(Ordering::Relaxed) >= before + 30
            }),
            "the clients stalled at {before} requests"
        );
    };

    some_traffic();
    // A valid change (a new quota figure, the other tenant gone: the
    // gateway forgets its numbers, not the shop's), a broken file, then
    // the file back.
    let cafe = &config[config.find("[tenants.{p}_cafe]").unwrap()..];
    let before = g.reloads();
    f.write(
        &config
            .replace(cafe, "")
            .replace("requests_per_day = 1000000", "requests_per_day = 2000000"),
    );
    g.wait_for_reload(before);
    some_traffic();
    let invalid = g.logged("invalid configuration; keeping the running one");
    std::fs::write(f.config(), "[plans.metered\n").unwrap();
    g.wait_for_log("invalid configuration; keeping the running one", invalid);
    some_traffic();
    let before = g.reloads();
    f.write(&config);
    g.wait_for_reload(before);
    some_traffic();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("a client saw a failed request");
    }

    // Every request counted once, every write in the trail once.
    let (sent, writes) = (sent.load(Ordering::Relaxed), writes.load(Ordering::Relaxed));
    assert!(
        common::wait_until(Duration::from_secs(30), || {
            usage_of(&f, "{p}_shop")["requests_today"] == sent
        }),
        "{sent} requests sent: {}",
        usage_of(&f, "{p}_shop")
    );
    let out = f.tenantry(&["audit", &f.name("{p}_shop"), "--json", "--limit", "100000"]);
    let trail: Vec<Value> = serde_json::from_str(out.ok()).unwrap();
    let api_writes = trail.iter().filter(|e| e["action"] == "api.write").count() as u64;
    assert_eq!(api_writes, writes, "{writes} writes made");
    assert_eq!(usage_of(&f, "{p}_shop")["requests_per_day"], 1_000_000);
}

#[test]
fn a_graceful_stop_flushes_what_was_counted_and_queued() {
    let (f, dev, shop) = shop_on(&metered("1GiB", 1_000_000));
    // No flush on the timer after the first (at start, with nothing yet).
    let mut g = Gateway::start(&f, &["--usage-flush-interval", "1h"], &[]);
    for _ in 0..3 {
        assert_eq!(g.get(&shop, &dev).0, 200);
    }
    for _ in 0..2 {
        assert_eq!(post(&g, &shop, &dev).0, 201);
    }
    assert_eq!(usage_of(&f, "{p}_shop")["requests_today"], 0);
    g.signal("TERM");
    let status = g.wait_exit(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        g.log()
    );
    assert_eq!(usage_of(&f, "{p}_shop")["requests_today"], 5);
    let out = f.tenantry(&["audit", &f.name("{p}_shop"), "--json"]);
    let trail: Vec<Value> = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(
        trail.iter().filter(|e| e["action"] == "api.write").count(),
        2,
        "{}",
        out.stdout
    );
}
