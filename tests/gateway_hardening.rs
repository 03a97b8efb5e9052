//! The gateway against hostile clients and an operator breaking things on
//! purpose, while traffic flows: a migration that changes a column's type,
//! a flood without tokens, clients that send nothing or half a request,
//! shutdown with requests in flight, reloads of bad files, headers and
//! bodies that could be read two ways, and logs that must hold no secret.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::gateway::{http, token, Gateway};
use common::{Admin, Fleet};

/// Sends `raw` on a new connection and returns what came back until the
/// server closed it (or 60 s passed): the status and the whole text.
fn raw(addr: &str, raw: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

/// Whether the server closes `s` (EOF or reset) within 60 s without
/// having sent anything more than `expect_bytes`.
fn closed_by_server(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// A fleet with one applied tenant (`{p}_shop`; with its own schema
/// directory when `own_schema`, for tests that add migrations) and a token
/// of `role`.
fn shop(role: &str, own_schema: bool) -> (Fleet, String) {
    let f = Fleet::new(Admin::Superuser);
    if own_schema {
        f.own_schema();
    }
    f.write(&one_shop());
    f.apply().ok();
    let token = token(&f, "{p}_shop", role);
    (f, token)
}

fn one_shop() -> String {
    common::TWO_TENANTS
        .split("[tenants.{p}_cafe]")
        .next()
        .unwrap()
        .to_owned()
}

/// `tenantry migrate` of a column type change while readers and order
/// writers run: not one 500 (cached statements are re-prepared), and the
/// orders' inventory arithmetic stays exact.
#[test]
fn a_migration_that_changes_column_types_under_traffic_gives_no_500() {
    let (f, dev) = shop("developer", true);
    let g = Gateway::start(&f, &[], &[]);
    let host = f.name("{p}-shop.localhost");
    let post = |path: &str, body: &str| http(&g.api, "POST", &host, path, Some(&dev), Some(body));
    let (s, b) = post(
        "/api/widgets",
        r#"{"name":"bolt","price":5,"inventory_level":100000}"#,
    );
    assert_eq!(s, 201, "{b}");
    let (s, b) = post(
        "/api/customers",
        r#"{"first_name":"a","last_name":"b","email":"a@b.c"}"#,
    );
    assert_eq!(s, 201, "{b}");

    let stop = Arc::new(AtomicBool::new(false));
    let statuses = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<
        u16,
        usize,
    >::new()));
    let orders = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..3)
        .map(|i| {
            let (stop, statuses, orders) = (stop.clone(), statuses.clone(), orders.clone());
            let (api, host, dev) = (g.api.clone(), host.clone(), dev.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let (s, b) = if i == 0 {
                        http(
                            &api,
                            "POST",
                            &host,
                            "/api/orders",
                            Some(&dev),
                            Some(r#"{"customer_id":1,"widget_id":1,"quantity":1}"#),
                        )
                    } else {
                        http(&api, "GET", &host, "/api/widgets/1", Some(&dev), None)
                    };
                    if s == 201 {
                        orders.fetch_add(1, Ordering::SeqCst);
                    }
                    assert_ne!(s, 500, "{b}");
                    *statuses.lock().unwrap().entry(s).or_default() += 1;
                }
            })
        })
        .collect();
    let served = || statuses.lock().unwrap().values().sum::<usize>();
    let wait_for_more = |n: usize| {
        for _ in 0..1200 {
            if served() >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("traffic stalled at {} requests", served());
    };
    wait_for_more(50);
    f.add_migration(
        "V2__wider.sql",
        "ALTER TABLE widgets ALTER COLUMN description TYPE varchar(2000000);\n\
         ALTER TABLE orders ALTER COLUMN status TYPE varchar(20);\n",
    );
    f.tenantry(&["migrate"]).ok();
    // Traffic after the migration too, on the same pooled connections.
    let after = served();
    wait_for_more(after + 100);
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().expect("no 500 while migrating");
    }
    let statuses = statuses.lock().unwrap();
    assert!(
        statuses.keys().all(|s| [200, 201, 429].contains(s)),
        "{statuses:?}"
    );
    let stock = f.psql(
        &f.name("{p}_shop"),
        "SELECT inventory_level FROM widgets WHERE id = 1",
    );
    let ordered = orders.load(Ordering::SeqCst) as i64;
    assert!(ordered > 0, "no order went through");
    assert_eq!(stock.trim().parse::<i64>().unwrap(), 100_000 - ordered);
    let desc = f.psql(
        &f.name("{p}_shop"),
        "SELECT data_type FROM information_schema.columns WHERE table_name = 'widgets' AND column_name = 'description'",
    );
    assert_eq!(desc.trim(), "character varying", "the migration ran");
}

/// A flood of requests without a token, or with made-up ones, from one
/// address never spends the tenant's budget: its admin keeps working.
#[test]
fn strangers_cannot_rate_limit_a_tenants_users_out() {
    let (f, admin) = shop("admin", false);
    let g = Gateway::start(&f, &["--unauthenticated-rps", "5"], &[]);
    let host = f.name("{p}-shop.localhost");
    // The admin's token is checked once (and cached).
    assert_eq!(
        http(&g.api, "GET", &host, "/api/widgets", Some(&admin), None).0,
        200
    );

    let stop = Arc::new(AtomicBool::new(false));
    let flood: Vec<_> = (0..2)
        .map(|i| {
            let (stop, api, host) = (stop.clone(), g.api.clone(), host.clone());
            std::thread::spawn(move || {
                let mut seen = std::collections::BTreeMap::<u16, usize>::new();
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let bogus = format!("made-up-{i}-{n}");
                    let token = if i == 0 { None } else { Some(bogus.as_str()) };
                    *seen
                        .entry(http(&api, "GET", &host, "/api/widgets", token, None).0)
                        .or_default() += 1;
                }
                seen
            })
        })
        .collect();
    // The shop's plan allows 200 requests a second; the admin sends 60, a
    // few at a time, while the flood goes on.
    let mut ok = 0;
    for _ in 0..60 {
        let (s, b) = http(&g.api, "GET", &host, "/api/widgets", Some(&admin), None);
        assert_eq!(s, 200, "the admin was refused during the flood: {b}");
        ok += 1;
    }
    stop.store(true, Ordering::SeqCst);
    let mut flood_seen = std::collections::BTreeMap::<u16, usize>::new();
    for t in flood {
        for (s, n) in t.join().unwrap() {
            *flood_seen.entry(s).or_default() += n;
        }
    }
    assert_eq!(ok, 60);
    assert!(
        flood_seen.get(&429).copied().unwrap_or(0) > 0
            && flood_seen.get(&401).copied().unwrap_or(0) > 0,
        "the strangers were answered 401, then 429: {flood_seen:?}"
    );
    assert!(
        flood_seen.keys().all(|s| [401, 429].contains(s)),
        "{flood_seen:?}"
    );
    // Only the strangers' limit counted them; the tenant's never fired.
    let (_, metrics) = http(&g.admin, "GET", "localhost", "/metrics", None, None);
    assert!(
        !metrics.contains("tenantry_rate_limited_total{tenant="),
        "{metrics}"
    );
    let limited: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tenantry_unauthenticated_rate_limited_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the strangers' counter");
    assert!(limited > 0.0);
}

/// Connections that send nothing, half a request line, or idle after a
/// request are closed; a full gateway closes idle ones to make room.
#[test]
fn silent_slow_and_idle_clients_are_closed() {
    let (f, cust) = shop("customer", false);
    let g = Gateway::start(
        &f,
        &["--header-timeout", "1s", "--keepalive-timeout", "2s"],
        &[],
    );
    let host = f.name("{p}-shop.localhost");

    let mut silent = TcpStream::connect(&g.api).unwrap();
    assert!(
        closed_by_server(&mut silent),
        "a silent client stays connected"
    );

    let mut half = TcpStream::connect(&g.api).unwrap();
    half.write_all(b"GET /api/widgets HTTP/1.1\r\nHost: ")
        .unwrap();
    assert!(
        closed_by_server(&mut half),
        "half a request stays connected"
    );

    // A slow drip of header bytes does not keep the connection either.
    let mut drip = TcpStream::connect(&g.api).unwrap();
    let dripped = std::thread::spawn(move || {
        for b in b"GET /api/widgets HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if drip.write_all(&[*b]).is_err() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    });
    assert!(
        dripped.join().unwrap(),
        "a client dripping headers kept its connection for 8 s"
    );

    // Keep-alive: one request answered, then closed once idle.
    let mut ka = TcpStream::connect(&g.api).unwrap();
    write!(
        ka,
        "GET /api/widgets HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {cust}\r\n\r\n"
    )
    .unwrap();
    let mut first = [0u8; 12];
    ka.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    assert!(
        closed_by_server(&mut ka),
        "an idle keep-alive connection stays open"
    );
    // The gateway still serves.
    assert_eq!(
        http(&g.api, "GET", &host, "/api/widgets", Some(&cust), None).0,
        200
    );
}

#[test]
fn at_the_client_cap_idle_connections_make_room() {
    let (f, cust) = shop("customer", false);
    let g = Gateway::start(
        &f,
        &[
            "--max-clients",
            "2",
            "--header-timeout",
            "120s",
            "--keepalive-timeout",
            "120s",
        ],
        &[],
    );
    let host = f.name("{p}-shop.localhost");
    // Two keep-alive clients that answered one request and went quiet.
    let idle: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(&g.api).unwrap();
            write!(
                s,
                "GET /api/widgets HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {cust}\r\n\r\n"
            )
            .unwrap();
            let mut first = [0u8; 12];
            s.read_exact(&mut first).unwrap();
            assert_eq!(&first, b"HTTP/1.1 200");
            s
        })
        .collect();
    // A third client is served: an idle one was closed for it.
    assert_eq!(
        http(&g.api, "GET", &host, "/api/widgets", Some(&cust), None).0,
        200
    );
    let closed = idle
        .into_iter()
        .filter(|s| {
            let mut s = s.try_clone().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 4096];
            // Drain the first response's body; then EOF means closed.
            loop {
                match s.read(&mut buf) {
                    Ok(0) => return true,
                    Ok(_) => continue,
                    Err(_) => return false,
                }
            }
        })
        .count();
    assert!(closed >= 1, "no idle connection was closed to make room");
}

/// SIGTERM: /readyz turns 503 while the API still answers (the delay), then
/// the listeners close; a half-read connection does not hold the exit, a
/// request in flight is answered before it.
#[test]
fn shutdown_is_seen_first_drains_requests_in_flight_and_drops_half_read_ones() {
    let (f, cust) = shop("customer", false);
    let host = f.name("{p}-shop.localhost");

    // 1. The delay: readyz 503, API still serving.
    let mut g = Gateway::start(&f, &["--shutdown-delay", "120s"], &[]);
    assert_eq!(
        http(&g.admin, "GET", "localhost", "/readyz", None, None).0,
        200
    );
    g.signal("TERM");
    for i in 0.. {
        if http(&g.admin, "GET", "localhost", "/readyz", None, None).0 == 503 {
            break;
        }
        assert!(i < 600, "/readyz never turned 503");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        http(&g.api, "GET", &host, "/api/widgets", Some(&cust), None).0,
        200,
        "the API must keep serving while /readyz is 503"
    );
    assert!(g.wait_exit(Duration::from_millis(1)).is_none());
    drop(g);

    // 2. A request in flight (blocked on a table lock) and a half-read
    // connection; the drain timeout is far longer than the test.
    let mut g = Gateway::start(
        &f,
        &["--shutdown-delay", "0s", "--drain-timeout", "600s"],
        &[],
    );
    let db = f.name("{p}_shop");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let locker = rt.block_on(f.superuser(&db));
    rt.block_on(locker.batch_execute("BEGIN; LOCK TABLE widgets IN ACCESS EXCLUSIVE MODE"))
        .unwrap();
    let in_flight = {
        let (api, host, cust) = (g.api.clone(), host.clone(), cust.clone());
        std::thread::spawn(move || http(&api, "GET", &host, "/api/widgets", Some(&cust), None))
    };
    // (Another session: pg_stat_activity is a snapshot within a transaction.)
    let watcher = rt.block_on(f.superuser("postgres"));
    for i in 0.. {
        let waiting = rt.block_on(common::count(
            &watcher,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
            &db,
        ));
        if waiting > 0 {
            break;
        }
        assert!(i < 1200, "the request never reached the database");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut half = TcpStream::connect(&g.api).unwrap();
    half.write_all(b"GET /api/widgets HTTP/1.1\r\nHo").unwrap();
    g.signal("TERM");
    assert!(
        closed_by_server(&mut half),
        "the half-read connection was kept"
    );
    assert!(
        g.wait_exit(Duration::from_millis(500)).is_none(),
        "the gateway exited with a request in flight"
    );
    rt.block_on(locker.batch_execute("COMMIT")).unwrap();
    let (s, b) = in_flight.join().unwrap();
    assert_eq!(s, 200, "the request in flight was not answered: {b}");
    let status = g
        .wait_exit(Duration::from_secs(120))
        .expect("the gateway did not exit once drained");
    assert!(status.success(), "{status:?}\n{}", g.log());
}

/// Reload refuses an empty file and one that removes every tenant (an
/// editor truncating, then writing), and says so in the log.
#[test]
fn reload_refuses_empty_files_and_losing_every_tenant() {
    let (f, cust) = shop("customer", false);
    let g = Gateway::start(&f, &[], &[]);
    let host = f.name("{p}-shop.localhost");
    assert_eq!(
        http(&g.api, "GET", &host, "/api/widgets", Some(&cust), None).0,
        200
    );

    let invalid = g.logged("invalid configuration; keeping the running one");
    std::fs::write(f.config(), "").unwrap();
    g.wait_for_log("invalid configuration; keeping the running one", invalid);
    assert_eq!(
        http(&g.api, "GET", &host, "/api/widgets", Some(&cust), None).0,
        200
    );

    let refused = g.logged("refusing a configuration that removes every tenant");
    f.write("");
    g.signal("HUP");
    g.wait_for_log(
        "refusing a configuration that removes every tenant",
        refused,
    );
    assert_eq!(
        http(&g.api, "GET", &host, "/api/widgets", Some(&cust), None).0,
        200
    );

    // The real file back: a reload happens and the tenant is still served.
    let before = g.reloads();
    f.write(&one_shop().replace(
        "plan = \"professional\"",
        "plan = \"professional\"\ndisplay_name = \"Shop\"",
    ));
    g.wait_for_reload(before);
    let (s, b) = http(&g.api, "GET", &host, "/api/tenant", Some(&cust), None);
    assert!(
        s == 200 && b.contains("\"display_name\":\"Shop\""),
        "{s} {b}"
    );
}

/// Headers and bodies that two parsers could read two ways are refused;
/// the Bearer scheme is case-insensitive; 503s name no database.
#[test]
fn ambiguous_requests_are_refused_and_errors_reveal_nothing() {
    let (f, dev) = shop("developer", false);
    let g = Gateway::start(&f, &[], &[]);
    let host = f.name("{p}-shop.localhost");
    let request = |head: &str, body: &str| {
        raw(
            &g.api,
            &format!(
                "POST /api/widgets HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n{head}\r\n{body}",
                body.len()
            ),
        )
    };
    let auth = format!("Authorization: Bearer {dev}\r\n");
    let json = "Content-Type: application/json\r\n";
    let widget = r#"{"name":"w","price":5}"#;

    let (s, b) = request(
        &format!("Host: {host}\r\n{json}authorization: bEaReR {dev}\r\n"),
        widget,
    );
    assert_eq!(s, 201, "a lower-case scheme is still Bearer: {b}");
    let (s, b) = request(
        &format!("Host: {host}\r\n{auth}Content-Type: application/json; charset=utf-8\r\n"),
        widget,
    );
    assert_eq!(s, 201, "{b}");
    let (s, b) = request(
        &format!("Host: {host}\r\n{auth}Content-Type: text/plain\r\n"),
        widget,
    );
    assert_eq!(s, 415, "{b}");
    let (s, b) = request(&format!("Host: {host}\r\n{auth}"), widget);
    assert_eq!(s, 415, "no Content-Type: {b}");
    let (s, b) = request(
        &format!("Host: {host}\r\n{auth}{json}"),
        r#"{"name":"w","price":-1,"price":5}"#,
    );
    assert!(s == 400 && b.contains("appears more than once"), "{s} {b}");
    let (s, b) = request(
        &format!("Host: {host}\r\nHost: {host}\r\n{auth}{json}"),
        widget,
    );
    assert_eq!(s, 400, "two Host headers: {b}");
    let (s, b) = request(&format!("Host: {host}\r\n{auth}{auth}{json}"), widget);
    assert_eq!(s, 400, "two Authorization headers: {b}");
    let (s, b) = request(
        &format!("Host: {host}\r\n{auth}Content-Type: application/json; charset=latin1\r\n"),
        widget,
    );
    assert_eq!(s, 415, "a charset other than UTF-8: {b}");
    let (s, b) = raw(
        &g.api,
        &format!(
            "GET http://{}/api/widgets HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n",
            f.name("{p}-cafe.localhost")
        ),
    );
    assert_eq!(s, 400, "Host and the URI's authority differ: {b}");
    let (_, all) = http(&g.api, "GET", &host, "/api/widgets", Some(&dev), None);
    assert_eq!(
        all.matches("\"name\":\"w\"").count(),
        2,
        "only the two good POSTs wrote: {all}"
    );

    // The database goes away for this tenant: 503, without its name or SQLSTATE.
    let db = f.name("{p}_shop");
    f.psql("postgres", &format!("ALTER DATABASE {db} WITH ALLOW_CONNECTIONS false; SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"));
    let mut last = (0, String::new());
    for _ in 0..200 {
        last = http(&g.api, "GET", &host, "/api/widgets/1", Some(&dev), None);
        if last.0 == 503 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f.psql(
        "postgres",
        &format!("ALTER DATABASE {db} WITH ALLOW_CONNECTIONS true"),
    );
    let (s, b) = last;
    assert_eq!(s, 503, "{b}");
    assert!(
        !b.contains(&db) && !b.contains("55000") && !b.contains("SQLSTATE"),
        "{b}"
    );
}

/// Nothing secret in the gateway's log even at trace: not the tokens, not
/// their hashes, not the users' passwords, not the SQL parameters.
#[test]
fn the_log_at_trace_holds_no_secret() {
    let (f, dev) = shop("developer", false);
    let g = Gateway::start(&f, &[], &[("TENANTRY_LOG", "trace")]);
    let host = f.name("{p}-shop.localhost");
    let (s, b) = http(
        &g.api,
        "POST",
        &host,
        "/api/widgets",
        Some(&dev),
        Some(r#"{"name":"secret-widget-value","price":5}"#),
    );
    assert_eq!(s, 201, "{b}");
    assert_eq!(
        http(&g.api, "GET", &host, "/api/widgets", Some(&dev), None).0,
        200
    );
    let log = g.log();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "the log is not at trace: {log}"
    );
    let hash = tenantry_layout::tokens::hash(&dev);
    let mut secrets = vec![dev.clone(), hash, "secret-widget-value".to_owned()];
    for user in ["{p}_shop_a", "{p}_shop_d", "{p}_shop_c"] {
        secrets.push(f.secret(user));
    }
    for s in &secrets {
        assert!(
            !log.contains(s.as_str()),
            "the log holds a secret ({} chars)",
            s.len()
        );
    }
    assert!(!log.contains("SCRAM-SHA-256$"), "a verifier in the log");
}

/// A gateway started by `up` keeps dialing the server `up` started after a
/// reload that rebuilds pools (a password rotation), even though the file
/// names another server and TENANTRY_ADMIN_URL is not exported.
#[test]
fn reloads_keep_the_server_up_started() {
    use std::io::BufRead;
    let f = Fleet::new(Admin::Superuser);
    f.write(&one_shop());
    let mut text = std::fs::read_to_string(f.config()).unwrap();
    text.push_str("\n[server]\nadmin_url = \"postgres://postgres@127.0.0.1:1/postgres\"\n");
    std::fs::write(f.config(), text).unwrap();
    let data = f.dir.path().join("pg");

    /// Stops `up`'s gateway and its cluster, even when the test fails.
    struct Up(std::process::Child, Vec<String>);
    impl Drop for Up {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            let _ = std::process::Command::new(env!("CARGO_BIN_EXE_tenantry"))
                .arg("down")
                .arg("--data-dir")
                .arg(&self.1[0])
                .output();
        }
    }
    let mut child = f
        .command(&[
            "up",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--reload-interval",
            "200ms",
        ])
        .env_remove("TENANTRY_ADMIN_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let _up = Up(child, vec![data.to_str().unwrap().to_owned()]);
    let log = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for l in stderr.lines().map_while(Result::ok) {
            sink.lock().unwrap().push(l);
        }
    });
    let mut url = None;
    let mut api = None;
    let mut lines = stdout.lines();
    for l in lines.by_ref() {
        let l = l.unwrap();
        if let Some(u) = l.trim().strip_prefix("export TENANTRY_ADMIN_URL=") {
            url = Some(u.to_owned());
        }
        if let Some(rest) = l.split(" on http://").nth(1) {
            api = Some(rest.split([' ', ')', ';']).next().unwrap().to_owned());
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let (url, api) = (
        url.expect("up printed its admin URL"),
        api.expect("up served"),
    );
    let token = std::fs::read_to_string(
        f.dir
            .path()
            .join(".tenantry/secrets")
            .join(format!("{}.token", f.name("{p}_shop"))),
    )
    .unwrap();
    let token = token.trim();
    let host = f.name("{p}-shop.localhost");
    assert_eq!(
        http(&api, "GET", &host, "/api/widgets", Some(token), None).0,
        200
    );

    let count = |needle: &str| {
        log.lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    };
    let before = count("credentials changed");
    f.command(&["rotate", &f.name("{p}_shop")])
        .env("TENANTRY_ADMIN_URL", &url)
        .output()
        .map(|o| assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr)))
        .unwrap();
    for i in 0.. {
        if count("credentials changed") > before {
            break;
        }
        assert!(
            i < 1200,
            "no reload rebuilt the pools: {:?}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The tenant's pool is new: it dials the server again, for every role.
    for role in ["admin", "developer", "customer"] {
        let t = f
            .command(&["token", "create", &f.name("{p}_shop"), "--role", role])
            .env("TENANTRY_ADMIN_URL", &url)
            .output()
            .unwrap();
        let t = String::from_utf8_lossy(&t.stdout).trim().to_owned();
        let (s, b) = http(&api, "GET", &host, "/api/widgets", Some(&t), None);
        assert_eq!(s, 200, "{role} after the reload: {b}");
    }
}

/// Out of file descriptors, the accept loop backs off (one warning, no
/// spinning) and serves again once descriptors are free.
#[test]
fn running_out_of_file_descriptors_backs_off_and_recovers() {
    let (f, cust) = shop("customer", false);
    let g = Gateway::start(&f, &["--header-timeout", "120s"], &[]);
    let host = f.name("{p}-shop.localhost");
    assert_eq!(
        http(&g.api, "GET", &host, "/api/widgets", Some(&cust), None).0,
        200
    );
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", g.pid()))
            .unwrap()
            .count()
    };
    let limit = fds() + 16;
    let set = std::process::Command::new("prlimit")
        .arg(format!("--pid={}", g.pid()))
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .expect("prlimit");
    assert!(set.success());

    // More silent clients than descriptors left.
    let clients: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(&g.api).unwrap())
        .collect();
    g.wait_for_log("cannot accept connections", 0);
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", g.pid())).unwrap();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        // utime and stime, in clock ticks (fields 14 and 15 of stat).
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let (before, start) = (cpu(), std::time::Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let (used, elapsed) = (cpu() - before, start.elapsed());
    // A loop retrying accept at once would burn a core (100 ticks a second).
    assert!(
        (used as f64) < 25.0 * elapsed.as_secs_f64(),
        "{used} ticks of CPU in {elapsed:?} while out of descriptors"
    );
    assert_eq!(
        g.logged("cannot accept connections"),
        1,
        "one warning per episode"
    );

    drop(clients);
    g.wait_for_log("accepting connections again", 0);
    let mut ok = false;
    for _ in 0..600 {
        if http(&g.api, "GET", &host, "/api/widgets", Some(&cust), None).0 == 200 {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ok, "the gateway did not serve again: {}", g.log());
}

/// A tenant whose password cannot be read does not block a reload: it is
/// served as unavailable (503, no detail) while the rest of the change
/// takes effect.
#[test]
fn a_missing_secret_blocks_only_its_own_tenant() {
    let (f, cust) = shop("customer", false);
    let g = Gateway::start(&f, &[], &[]);
    let shop = f.name("{p}-shop.localhost");
    let cafe = f.name("{p}-cafe.localhost");
    assert_eq!(
        http(&g.api, "GET", &shop, "/api/widgets", Some(&cust), None).0,
        200
    );

    let var = f.name("{p}_CAFE_ADMIN_PASSWORD_NOT_SET").to_uppercase();
    let before = g.reloads();
    f.write(&format!(
        "{}\nstatus = \"suspended\"\n\n[tenants.{{p}}_cafe]\nplan = \"starter\"\nsubdomain = \"{{p}}-cafe\"\nadmins = [{{ username = \"{{p}}_cafe_a\", password_env = \"{var}\" }}]\n",
        one_shop().trim_end()
    ));
    g.wait_for_reload(before);
    let (s, b) = http(&g.api, "GET", &shop, "/api/widgets", Some(&cust), None);
    assert!(
        s == 403 && b.contains("tenant_suspended"),
        "the suspension took effect: {s} {b}"
    );
    let (s, b) = http(
        &g.api,
        "GET",
        &cafe,
        "/api/widgets",
        Some("any-token"),
        None,
    );
    // The cafe was never applied: its gateway login has no password yet.
    // (Its admin's unset variable does not matter: the gateway logs in as
    // the tenant's gateway login, never as its users.)
    let login = f.name("{p}_cafe_gateway");
    assert!(s == 503 && b.contains("login_unavailable"), "{s} {b}");
    assert!(!b.contains(&login), "the reason stays in the log: {b}");
    assert!(
        g.logged(&format!(
            "the gateway login {login} has not been generated yet"
        )) >= 1,
        "the log says which login and why: {}",
        g.log()
    );
}

/// A flood without tokens from the address users share (a NAT, a load
/// balancer) delays none of their new tokens: only bad tokens can.
#[test]
fn a_flood_without_tokens_does_not_delay_new_tokens() {
    let (f, _) = shop("admin", false);
    let fresh: Vec<String> = (0..5).map(|_| token(&f, "{p}_shop", "customer")).collect();
    let g = Gateway::start(&f, &["--unauthenticated-rps", "5"], &[]);
    let host = f.name("{p}-shop.localhost");
    let stop = Arc::new(AtomicBool::new(false));
    let limited = Arc::new(AtomicUsize::new(0));
    let flood = {
        let (stop, limited, api, host) =
            (stop.clone(), limited.clone(), g.api.clone(), host.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if http(&api, "GET", &host, "/api/widgets", None, None).0 == 429 {
                    limited.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    for i in 0.. {
        if limited.load(Ordering::SeqCst) > 0 {
            break;
        }
        assert!(i < 1200, "the flood was never limited");
        std::thread::sleep(Duration::from_millis(50));
    }
    for t in &fresh {
        let (s, b) = http(&g.api, "GET", &host, "/api/widgets", Some(t), None);
        assert_eq!(s, 200, "a new token was refused during the flood: {b}");
    }
    stop.store(true, Ordering::SeqCst);
    flood.join().unwrap();
}

/// Bytes that could begin an HTTP/2 preface buy no more time than any
/// other half request: the header time, not the keep-alive time.
#[test]
fn a_partial_http2_preface_gets_the_header_time_only() {
    let (f, _) = shop("customer", false);
    let g = Gateway::start(
        &f,
        &["--header-timeout", "1s", "--keepalive-timeout", "600s"],
        &[],
    );
    for start in [&b"P"[..], b"PRI * HTTP/2.0\r\n"] {
        let mut s = TcpStream::connect(&g.api).unwrap();
        s.write_all(start).unwrap();
        assert!(
            closed_by_server(&mut s),
            "{:?} kept its connection",
            String::from_utf8_lossy(start)
        );
    }
}
