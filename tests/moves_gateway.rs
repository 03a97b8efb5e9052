//! The gateway while `tenantry apply` moves a tenant to another server under
//! load: it hears of the cutover at once (LISTEN/NOTIFY on each server's
//! admin database, no reload by hand), holds the tenant's requests through
//! it and then routes them to the new server. No answer is a 500, every
//! write acknowledged is on the new server exactly once and consistent,
//! the sequences go on, the old copy takes no logins, and the tenant that
//! stays sees only successes. Two clusters of the test's own, with
//! `wal_level = logical`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::gateway::{fleet_token, http, http_with_headers, Gateway};
use common::{logical_cluster, one, servers_toml, wait_until, Admin, Fleet};

/// One answer a client thread saw.
#[derive(Clone, Debug)]
struct Seen {
    /// "mv write", "mv read", "st write".
    who: &'static str,
    status: u16,
    retry_after: Option<String>,
    body: String,
    at: Instant,
}

impl Seen {
    /// The id of a created order.
    fn id(&self) -> Option<i64> {
        let v: serde_json::Value = serde_json::from_str(&self.body).ok()?;
        v["id"].as_i64()
    }
}

#[test]
fn a_tenant_moves_under_load_with_no_500_and_no_write_lost() {
    let (a, b) = (logical_cluster(), logical_cluster());
    let f = Fleet::on(a, Admin::Superuser);
    let servers = servers_toml(&[("a", &a.url("postgres"), ""), ("b", &b.url("postgres"), "")]);
    let tenants = |pin: &str| {
        format!(
            "[tenants.{{p}}_mv]\nplan = \"professional\"\nsubdomain = \"{{p}}-mv\"\nserver = \"{pin}\"\ndevelopers = [{{ username = \"{{p}}_mv_d\" }}]\n\n\
             [tenants.{{p}}_st]\nplan = \"professional\"\nsubdomain = \"{{p}}-st\"\nserver = \"a\"\ndevelopers = [{{ username = \"{{p}}_st_d\" }}]\n"
        )
    };
    f.write_servers(&servers, &tenants("a"));
    f.tenantry_fleet(&["apply", "--auto-approve"]).ok();
    let (mv_db, st_db) = (f.name("{p}_mv"), f.name("{p}_st"));
    let tokens = [
        fleet_token(&f, "{p}_mv", "developer"),
        fleet_token(&f, "{p}_st", "developer"),
    ];
    let hosts = [f.name("{p}-mv.localhost"), f.name("{p}-st.localhost")];
    let gw = Gateway::start_fleet(&f, &["--checkout-timeout", "5s"], &[]);
    // Both servers listened to.
    gw.wait_for_log("listening for tenant moves on this server", 1);

    // A widget with plenty of stock and a customer per tenant.
    let mut orders = Vec::new();
    for (host, token) in hosts.iter().zip(&tokens) {
        let post =
            |path: &str, body: &str| http(&gw.api, "POST", host, path, Some(token), Some(body));
        let (s, w) = post(
            "/api/widgets",
            r#"{"name":"bolt","price":5,"inventory_level":1000000}"#,
        );
        assert_eq!(s, 201, "{w}");
        let (s, c) = post(
            "/api/customers",
            r#"{"first_name":"a","last_name":"b","email":"a@b.c"}"#,
        );
        assert_eq!(s, 201, "{c}");
        let id =
            |body: &str| serde_json::from_str::<serde_json::Value>(body).unwrap()["id"].clone();
        orders.push(
            serde_json::json!({"customer_id": id(&c), "widget_id": id(&w), "quantity": 1})
                .to_string(),
        );
    }
    let widget_of = |order: &str| {
        serde_json::from_str::<serde_json::Value>(order).unwrap()["widget_id"]
            .as_i64()
            .unwrap()
    };
    let mv_widget = widget_of(&orders[0]);

    // Writers on both tenants and a reader on the moving one, paced well
    // under the plan's 200 requests a second.
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<(&'static str, usize, &'static str, Option<String>, u64)> = vec![
        ("mv write", 0, "/api/orders", Some(orders[0].clone()), 10),
        ("mv read", 0, "/api/widgets", None, 20),
        ("st write", 1, "/api/orders", Some(orders[1].clone()), 10),
    ];
    let threads: Vec<_> = clients
        .into_iter()
        .map(|(who, tenant, path, body, pace)| {
            let (seen, stop) = (seen.clone(), stop.clone());
            let (api, host, token) = (
                gw.api.clone(),
                hosts[tenant].clone(),
                tokens[tenant].clone(),
            );
            std::thread::spawn(move || {
                let method = if body.is_some() { "POST" } else { "GET" };
                while !stop.load(Ordering::Relaxed) {
                    let (status, headers, answer) =
                        http_with_headers(&api, method, &host, path, Some(&token), body.as_deref());
                    let retry_after = headers
                        .lines()
                        .find_map(|l| l.strip_prefix("retry-after: "))
                        .map(str::to_owned);
                    seen.lock().unwrap().push(Seen {
                        who,
                        status,
                        retry_after,
                        body: answer,
                        at: Instant::now(),
                    });
                    std::thread::sleep(Duration::from_millis(pace));
                }
            })
        })
        .collect();
    let count =
        |pred: &dyn Fn(&Seen) -> bool| seen.lock().unwrap().iter().filter(|s| pred(s)).count();
    let limit = Duration::from_secs(60);
    assert!(
        wait_until(limit, || count(&|s| s.who == "mv write" && s.status == 201)
            >= 20),
        "no writes before the move"
    );

    // The move, with the writes going on.
    f.write_servers(&servers, &tenants("b"));
    let started = Instant::now();
    let apply = f.tenantry_fleet(&["apply", "--auto-approve"]);
    println!("{}", apply.all());
    apply.ok();
    let applied = Instant::now();
    // Until the gateway says it routes the tenant to b and writes have gone
    // on there for a while.
    let routed = || {
        gw.log().lines().any(|l| {
            l.contains(&format!("tenant={mv_db}"))
                && (l.contains("lives on another server now") || l.contains("cutover is over"))
        })
    };
    assert!(
        wait_until(limit, || routed()
            && count(&|s| s.who == "mv write"
                && s.status == 201
                && s.at > applied)
                >= 20),
        "the moving tenant's writes did not go on after the move; the gateway's log:\n{}",
        gw.log()
    );
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let seen = seen.lock().unwrap().clone();

    // Never a 500; the tenant that stays: only successes; the moving one:
    // successes or 503 with Retry-After.
    for s in &seen {
        assert_ne!(s.status, 500, "{s:?}");
        match s.who {
            "st write" => assert_eq!(s.status, 201, "the staying tenant: {s:?}"),
            "mv write" => assert!(s.status == 201 || s.status == 503, "{s:?}"),
            _ => assert!(s.status == 200 || s.status == 503, "{s:?}"),
        }
        if s.status == 503 {
            assert!(s.retry_after.is_some(), "a 503 without Retry-After: {s:?}");
        }
    }

    // Every acknowledged order is on b exactly once.
    let acked: Vec<i64> = seen
        .iter()
        .filter(|s| s.who == "mv write" && s.status == 201)
        .map(|s| s.id().expect("an order id"))
        .collect();
    let mut distinct = acked.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), acked.len(), "an id acknowledged twice");
    let list = acked
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(
        one(
            b,
            &mv_db,
            &format!("SELECT count(*) FROM orders WHERE id IN ({list})")
        ),
        acked.len().to_string(),
        "an acknowledged order is missing on b"
    );
    // No half-done order: the stock went down by exactly what the orders
    // took (a write that failed may have committed: then it is whole).
    let on_b: i64 = one(b, &mv_db, "SELECT count(*) FROM orders")
        .parse()
        .unwrap();
    let failed = seen
        .iter()
        .filter(|s| s.who == "mv write" && s.status != 201)
        .count() as i64;
    assert!(
        on_b >= acked.len() as i64 && on_b <= acked.len() as i64 + failed,
        "{on_b} orders on b, {} acknowledged, {failed} failed",
        acked.len()
    );
    assert_eq!(
        one(
            b,
            &mv_db,
            &format!(
                "SELECT (SELECT inventory_level FROM widgets WHERE id = {mv_widget}) + (SELECT coalesce(sum(quantity), 0) FROM orders WHERE widget_id = {mv_widget})"
            )
        ),
        "1000000"
    );
    // The sequence goes on past every order copied.
    let max: i64 = one(b, &mv_db, "SELECT max(id) FROM orders")
        .parse()
        .unwrap();
    let (s, next) = http(
        &gw.api,
        "POST",
        &hosts[0],
        "/api/orders",
        Some(&tokens[0]),
        Some(&orders[0]),
    );
    assert_eq!(s, 201, "{next}");
    let next = serde_json::from_str::<serde_json::Value>(&next).unwrap()["id"]
        .as_i64()
        .unwrap();
    assert!(next > max, "order {next} after {max}");

    // The staying tenant's orders are all on a.
    let st_acked = seen
        .iter()
        .filter(|s| s.who == "st write" && s.status == 201)
        .count();
    assert_eq!(
        one(a, &st_db, "SELECT count(*) FROM orders"),
        st_acked.to_string()
    );

    // The old copy on a takes no connections as the tenant's logins.
    let logins = format!("'{mv_db}_gateway', '{mv_db}_d'");
    assert_eq!(
        one(
            a,
            "postgres",
            &format!("SELECT count(*) FROM pg_roles WHERE rolname IN ({logins}) AND rolcanlogin")
        ),
        "0"
    );
    assert_eq!(
        one(
            a,
            "postgres",
            &format!("SELECT count(*) FROM pg_stat_activity WHERE usename IN ({logins})")
        ),
        "0"
    );
    // The leftover copy is a note, not a change.
    let plan = f.tenantry_fleet(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{}", plan.all());

    // What the clients saw around the cutover.
    let writes: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.who == "mv write" && s.status == 201)
        .collect();
    let pause = writes
        .windows(2)
        .filter(|w| w[1].at >= started)
        .map(|w| w[1].at.duration_since(w[0].at))
        .max()
        .unwrap_or_default();
    let unavailable = |who: &str| count_in(&seen, who, 503);
    let (_, metrics) = http(&gw.admin, "GET", "admin", "/metrics", None, None);
    let held = metrics
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "tenantry_requests_held_total{{tenant=\"{mv_db}\"}}"
            ))
        })
        .unwrap_or("tenantry_requests_held_total: none");
    println!(
        "the moving tenant's longest pause between two acknowledged writes: {pause:?} \
         (apply took {:?}); 503s: {} writes, {} reads, of {} requests; {held}",
        applied.duration_since(started),
        unavailable("mv write"),
        unavailable("mv read"),
        seen.iter().filter(|s| s.who != "st write").count(),
    );
}

fn count_in(seen: &[Seen], who: &str, status: u16) -> usize {
    seen.iter()
        .filter(|s| s.who == who && s.status == status)
        .count()
}
