//! The gateway while its PostgreSQL server stops and comes back, under
//! load: requests get 503s (never a 500, never a hang past the checkout
//! timeout), and once the server is back they succeed again by themselves,
//! without a restart of the gateway.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::gateway::{token, Gateway};
use common::{own_cluster, wait_until, Admin, Fleet};

/// Statuses seen, in order, by the load threads.
#[derive(Default)]
struct Seen {
    statuses: Mutex<Vec<u16>>,
    /// The body of the first 503.
    first_503: Mutex<Option<String>>,
}

impl Seen {
    fn count(&self, status: u16) -> usize {
        self.statuses
            .lock()
            .unwrap()
            .iter()
            .filter(|s| **s == status)
            .count()
    }
    fn len(&self) -> usize {
        self.statuses.lock().unwrap().len()
    }
}

#[test]
fn a_server_that_stops_under_load_gives_503s_then_recovers_by_itself() {
    let cluster = own_cluster(&[]);
    let f = Fleet::on(cluster, Admin::Superuser);
    f.write(
        common::TWO_TENANTS
            .split("[tenants.{p}_cafe]")
            .next()
            .unwrap(),
    );
    f.apply().ok();
    let token = token(&f, "{p}_shop", "customer");
    let gw = Gateway::start(
        &f,
        &["--checkout-timeout", "2s", "--connect-timeout", "1s"],
        &[],
    );
    let host = format!("{}-shop.localhost", f.p);

    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    // Four clients, ~160 requests a second in all.
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (seen, stop) = (seen.clone(), stop.clone());
            let (api, host, token) = (gw.api.clone(), host.clone(), token.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (status, body) = common::gateway::http(
                        &api,
                        "GET",
                        &host,
                        "/api/widgets",
                        Some(&token),
                        None,
                    );
                    if status == 503 {
                        seen.first_503.lock().unwrap().get_or_insert(body);
                    }
                    seen.statuses.lock().unwrap().push(status);
                    // Paced under the plan's 200 requests a second (else
                    // 429s, which are not what this test is about).
                    std::thread::sleep(Duration::from_millis(25));
                }
            })
        })
        .collect();

    let limit = Duration::from_secs(60);
    assert!(wait_until(limit, || seen.count(200) >= 50), "no traffic");
    cluster.pause().expect("stop the server");
    // Down: answers become 503s.
    let before = seen.count(503);
    assert!(
        wait_until(limit, || seen.count(503) >= before + 20),
        "no 503 while the server is down"
    );
    let down_at = seen.len();
    cluster.resume().expect("start the server again");
    // Back: 200s again, by themselves, and then nothing but 200s.
    let ok_before = seen.count(200);
    assert!(
        wait_until(limit, || seen.count(200) >= ok_before + 50),
        "no recovery after the server came back"
    );
    let settled = seen.len();
    assert!(wait_until(limit, || seen.len() >= settled + 100));
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }

    let statuses = seen.statuses.lock().unwrap().clone();
    let other: Vec<u16> = statuses
        .iter()
        .copied()
        .filter(|s| *s != 200 && *s != 503)
        .collect();
    assert!(
        other.is_empty(),
        "statuses other than 200 and 503: {other:?}"
    );
    assert!(statuses[..down_at].contains(&503));
    assert!(
        statuses[settled..].iter().all(|s| *s == 200),
        "503s after recovery: {:?}",
        &statuses[settled..]
    );
    // The answers while down said what to do, without the server's
    // details (they go to the log).
    let body = seen.first_503.lock().unwrap().clone().unwrap();
    assert!(body.contains("\"code\""), "{body}");
    let port = cluster.port().to_string();
    assert!(
        !body.contains(&port) && !body.contains("127.0.0.1"),
        "{body}"
    );
}
