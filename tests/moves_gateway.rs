//! The gateway while `tenantry apply` moves a tenant to another server under
//! load: it hears of the cutover at once (LISTEN/NOTIFY on each server's
//! admin database, no reload by hand), holds the tenant's requests through
//! it and then routes them to the new server. No answer is a 500, every
//! write acknowledged is on the new server exactly once and consistent,
//! the sequences go on, the tiers hold there, the old copy takes no logins,
//! and the tenant that stays sees only successes.
//!
//! The same load and checks run for a plain move, for an apply killed
//! (SIGKILL) while the copy runs and again while the cutover waits for the
//! new server, each finished by the next apply, and for a move from
//! PostgreSQL 15 to 17. Two clusters of each test's own, with
//! `wal_level = logical`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::gateway::{fleet_token, http, http_with_headers, Gateway};
use common::{
    connect, logical_cluster, one, servers_toml, try_sql, wait_until, Admin, Fleet, LOGICAL,
};
use tenantry_localpg::Cluster;

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

/// How long the test waits for anything it expects to happen.
const LIMIT: Duration = Duration::from_secs(90);

/// Two tenants on server a behind a gateway, `{p}_mv` (to be moved to
/// server b) and `{p}_st` (staying), with a writer on each and a reader on
/// the moving one running from `start` to `finish`.
struct Scene {
    a: &'static Cluster,
    b: &'static Cluster,
    f: Fleet,
    servers: String,
    mv_db: String,
    st_db: String,
    tokens: [String; 2],
    hosts: [String; 2],
    gw: Gateway,
    orders: [String; 2],
    mv_widget: i64,
    /// Orders put straight into the moving tenant's database before the
    /// load (so that the copy takes a while).
    preloaded: i64,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<()>>,
    rt: tokio::runtime::Runtime,
}

fn tenants(pin: &str) -> String {
    format!(
        "[tenants.{{p}}_mv]\nplan = \"professional\"\nsubdomain = \"{{p}}-mv\"\nserver = \"{pin}\"\ndevelopers = [{{ username = \"{{p}}_mv_d\" }}]\n\n\
         [tenants.{{p}}_st]\nplan = \"professional\"\nsubdomain = \"{{p}}-st\"\nserver = \"a\"\ndevelopers = [{{ username = \"{{p}}_st_d\" }}]\n"
    )
}

impl Scene {
    /// Sets the two tenants up on `a`, puts `preload` orders into the
    /// moving one, starts the gateway and the clients, and waits for writes.
    fn start(a: &'static Cluster, b: &'static Cluster, preload: i64) -> Scene {
        let f = Fleet::on(a, Admin::Superuser);
        let servers = servers_toml(&[("a", &a.url("postgres"), ""), ("b", &b.url("postgres"), "")]);
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
        let field = |order: &str, name: &str| {
            serde_json::from_str::<serde_json::Value>(order).unwrap()[name]
                .as_i64()
                .unwrap()
        };
        let mv_widget = field(&orders[0], "widget_id");
        if preload > 0 {
            // Whole orders: the stock goes down by what they take.
            let customer = field(&orders[0], "customer_id");
            a.psql(
                &mv_db,
                &format!(
                    "INSERT INTO orders (customer_id, widget_id, quantity, amount)
                       SELECT {customer}, {mv_widget}, 1, 5 FROM generate_series(1, {preload});
                     UPDATE widgets SET inventory_level = inventory_level - {preload} WHERE id = {mv_widget};"
                ),
            )
            .unwrap();
        }

        let mut scene = Scene {
            a,
            b,
            f,
            servers,
            mv_db,
            st_db,
            tokens,
            hosts,
            gw,
            orders: [orders[0].clone(), orders[1].clone()],
            mv_widget,
            preloaded: preload,
            seen: Arc::default(),
            stop: Arc::new(AtomicBool::new(false)),
            clients: Vec::new(),
            rt: tokio::runtime::Runtime::new().unwrap(),
        };
        scene.run_clients();
        assert!(
            wait_until(LIMIT, || scene.writes_after(None) >= 20),
            "no writes before the move"
        );
        scene
    }

    /// Writers on both tenants and a reader on the moving one, under the
    /// plan's 200 requests a second but fast enough that writes are in
    /// flight whenever the cutover closes the old copy.
    fn run_clients(&mut self) {
        let clients: [(&'static str, usize, &'static str, Option<String>, u64); 3] = [
            (
                "mv write",
                0,
                "/api/orders",
                Some(self.orders[0].clone()),
                6,
            ),
            ("mv read", 0, "/api/widgets", None, 40),
            (
                "st write",
                1,
                "/api/orders",
                Some(self.orders[1].clone()),
                10,
            ),
        ];
        for (who, tenant, path, body, pace) in clients {
            let (seen, stop) = (self.seen.clone(), self.stop.clone());
            let (api, host, token) = (
                self.gw.api.clone(),
                self.hosts[tenant].clone(),
                self.tokens[tenant].clone(),
            );
            self.clients.push(std::thread::spawn(move || {
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
            }));
        }
    }

    /// The moving tenant's acknowledged writes (after `since`).
    fn writes_after(&self, since: Option<Instant>) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.who == "mv write" && s.status == 201 && since.is_none_or(|t| s.at > t))
            .count()
    }

    /// Pins the moving tenant to server b in the file.
    fn pin_to_b(&self) {
        self.f.write_servers(&self.servers, &tenants("b"));
    }

    /// `tenantry apply` on the file, as a child process (to be killed).
    fn spawn_apply(&self) -> std::process::Child {
        let log = std::fs::File::create(self.apply_log()).unwrap();
        let mut cmd = self.f.command(&["apply", "--auto-approve"]);
        cmd.env_remove("TENANTRY_ADMIN_URL")
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        cmd.spawn().expect("start tenantry apply")
    }

    /// Where the spawned apply's output goes.
    fn apply_log(&self) -> std::path::PathBuf {
        self.f.config().with_file_name("apply.log")
    }

    /// Whether the moving tenant's copy on b has its subscription.
    fn subscribed(&self) -> bool {
        one(
            self.b,
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid WHERE d.datname = '{}'",
                self.mv_db
            ),
        ) == "1"
    }

    /// The moving tenant's database marker on `cluster` (its comment).
    fn marker(&self, cluster: &Cluster) -> String {
        one(
            cluster,
            "postgres",
            &format!(
                "SELECT coalesce(shobj_description(oid, 'pg_database'), '(none)') FROM pg_database WHERE datname = '{}'",
                self.mv_db
            ),
        )
    }

    /// Runs `sql` in the moving tenant's database on `cluster` in a
    /// transaction left open: the returned client holds it until
    /// [`release`](Self::release).
    fn hold(&self, cluster: &Cluster, sql: &str) -> tokio_postgres::Client {
        self.rt.block_on(async {
            let c = connect(&cluster.url(&self.mv_db)).await.unwrap();
            c.batch_execute(&format!("BEGIN; {sql}")).await.unwrap();
            c
        })
    }

    /// Ends a transaction [`hold`](Self::hold) left open.
    fn release(&self, held: tokio_postgres::Client) {
        self.rt.block_on(held.batch_execute("ROLLBACK")).unwrap();
    }

    /// Kills `apply` (it must still be running: the kill lands mid-move).
    fn kill(&self, mut apply: std::process::Child, when: &str) {
        assert!(
            apply.try_wait().unwrap().is_none(),
            "apply had finished {when}: the kill would not land mid-move"
        );
        apply.kill().unwrap();
        apply.wait().unwrap();
    }

    /// Waits for `cond`, failing if `apply` exits first.
    fn wait_while_running(
        &self,
        apply: &mut std::process::Child,
        what: &str,
        mut cond: impl FnMut() -> bool,
    ) {
        let deadline = Instant::now() + LIMIT;
        while !cond() {
            let log = || std::fs::read_to_string(self.apply_log()).unwrap_or_default();
            if let Some(status) = apply.try_wait().unwrap() {
                panic!("apply exited ({status}) before {what}:\n{}", log());
            }
            if Instant::now() > deadline {
                let _ = apply.kill();
                panic!(
                    "{what}: not within {LIMIT:?}; apply's output:\n{}\nserver a's sessions:\n{}",
                    log(),
                    one(self.a, "postgres", "SELECT string_agg(format('%s %s %s: %s', usename, wait_event_type, wait_event, left(query, 200)), E'\n') FROM pg_stat_activity WHERE backend_type = 'client backend'")
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// After the move (`started` when apply began, `applied` when the last
    /// apply returned): waits until the gateway routes the tenant to b and
    /// writes went on there, stops the clients and checks everything.
    fn finish(mut self, started: Instant, applied: Instant) {
        let (a, b, mv_db) = (self.a, self.b, self.mv_db.clone());
        let routed = || {
            self.gw.log().lines().any(|l| {
                l.contains(&format!("tenant={mv_db}"))
                    && (l.contains("lives on another server now") || l.contains("cutover is over"))
            })
        };
        assert!(
            wait_until(LIMIT, || routed() && self.writes_after(Some(applied)) >= 20),
            "the moving tenant's writes did not go on after the move; the gateway's log:\n{}",
            self.gw.log()
        );
        self.stop.store(true, Ordering::Relaxed);
        for t in self.clients.drain(..) {
            t.join().unwrap();
        }
        let seen = self.seen.lock().unwrap().clone();

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
            .parse::<i64>()
            .unwrap()
            - self.preloaded;
        let failed = seen
            .iter()
            .filter(|s| s.who == "mv write" && s.status != 201)
            .count() as i64;
        assert!(
            on_b >= acked.len() as i64 && on_b <= acked.len() as i64 + failed,
            "{on_b} orders on b (besides the {} preloaded), {} acknowledged, {failed} failed",
            self.preloaded,
            acked.len()
        );
        let widget = self.mv_widget;
        assert_eq!(
            one(
                b,
                &mv_db,
                &format!(
                    "SELECT (SELECT inventory_level FROM widgets WHERE id = {widget}) + (SELECT coalesce(sum(quantity), 0) FROM orders WHERE widget_id = {widget})"
                )
            ),
            "1000000"
        );
        // The sequence goes on past every order copied.
        let max: i64 = one(b, &mv_db, "SELECT max(id) FROM orders")
            .parse()
            .unwrap();
        let (s, next) = http(
            &self.gw.api,
            "POST",
            &self.hosts[0],
            "/api/orders",
            Some(&self.tokens[0]),
            Some(&self.orders[0]),
        );
        assert_eq!(s, 201, "{next}");
        let next = serde_json::from_str::<serde_json::Value>(&next).unwrap()["id"]
            .as_i64()
            .unwrap();
        assert!(next > max, "order {next} after {max}");

        // The tiers hold on b: the developer writes but does not delete.
        let developer = self.f.name("{p}_mv_d");
        let url = b.user_url(&developer, &self.f.secret("{p}_mv_d"), &mv_db);
        self.rt.block_on(async {
            let d = connect(&url).await.expect("the developer logs in on b");
            assert_eq!(try_sql(&d, "UPDATE widgets SET price = 6").await, "ok");
            assert_eq!(
                try_sql(&d, "DELETE FROM orders").await,
                "permission denied for table orders"
            );
        });

        // The staying tenant's orders are all on a.
        let st_acked = seen
            .iter()
            .filter(|s| s.who == "st write" && s.status == 201)
            .count();
        assert_eq!(
            one(a, &self.st_db, "SELECT count(*) FROM orders"),
            st_acked.to_string()
        );

        // The old copy on a takes no connections as the tenant's logins.
        let logins = format!("'{mv_db}_gateway', '{developer}'");
        assert_eq!(
            one(
                a,
                "postgres",
                &format!(
                    "SELECT count(*) FROM pg_roles WHERE rolname IN ({logins}) AND rolcanlogin"
                )
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
        // Nothing of the move is left: no subscription, publication, slot
        // or streaming login.
        assert_eq!(one(b, &mv_db, "SELECT count(*) FROM pg_subscription"), "0");
        assert_eq!(one(a, &mv_db, "SELECT count(*) FROM pg_publication"), "0");
        assert_eq!(
            one(a, "postgres", "SELECT count(*) FROM pg_replication_slots"),
            "0"
        );
        assert_eq!(
            one(
                a,
                "postgres",
                "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'tenantry\\_move\\_%'"
            ),
            "0"
        );
        // The leftover copy is a note, not a change.
        let plan = self.f.tenantry_fleet(&["plan", "--detailed-exitcode"]);
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
        let unavailable = |who: &str| {
            seen.iter()
                .filter(|s| s.who == who && s.status == 503)
                .count()
        };
        let (_, metrics) = http(&self.gw.admin, "GET", "admin", "/metrics", None, None);
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
}

impl Drop for Scene {
    /// A failed test stops its clients too (before the gateway goes).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn a_tenant_moves_under_load_with_no_500_and_no_write_lost() {
    let s = Scene::start(logical_cluster(), logical_cluster(), 0);
    s.pin_to_b();
    let started = Instant::now();
    let apply = s.f.tenantry_fleet(&["apply", "--auto-approve"]);
    println!("{}", apply.all());
    apply.ok();
    s.finish(started, Instant::now());
}

#[test]
fn an_apply_killed_while_copying_is_resumed_by_the_next() {
    // Enough rows that the copy takes a while after the subscription exists.
    let s = Scene::start(logical_cluster(), logical_cluster(), 200_000);
    s.pin_to_b();
    let started = Instant::now();
    let mut apply = s.spawn_apply();
    s.wait_while_running(&mut apply, "the subscription appeared on b", || {
        s.subscribed()
    });
    s.kill(apply, "when the subscription appeared");
    // Killed while copying: tables not yet copied, the tenant open on a
    // (plain marker) and its copy on b still being filled.
    let copying = one(
        s.b,
        &s.mv_db,
        "SELECT count(*) FROM pg_subscription_rel WHERE srsubstate NOT IN ('r', 's')",
    );
    assert_ne!(copying, "0", "every table was copied when apply was killed");
    assert!(!s.marker(s.a).contains("move="), "{}", s.marker(s.a));
    assert!(
        s.marker(s.b).contains("move=in from=a"),
        "{}",
        s.marker(s.b)
    );
    // The tenant's writes go on on a meanwhile.
    let killed = Instant::now();
    assert!(
        wait_until(LIMIT, || s.writes_after(Some(killed)) >= 5),
        "no writes on a after the kill"
    );
    let plan = s.f.tenantry_fleet(&["plan"]);
    println!("{}", plan.all());
    assert!(
        plan.ok()
            .contains("will move from server a to server b (resumed"),
        "{}",
        plan.stdout
    );
    // Nothing else: the move's own objects on a are not drift.
    assert!(
        plan.stdout.contains("Plan: 0 to add, 1 to change"),
        "{}",
        plan.stdout
    );
    let apply = s.f.tenantry_fleet(&["apply", "--auto-approve"]);
    println!("{}", apply.all());
    apply.ok();
    assert!(
        apply
            .all()
            .contains("its copy is being filled already: waiting for it"),
        "the copy was not resumed"
    );
    s.finish(started, Instant::now());
}

#[test]
fn an_apply_killed_during_the_cutover_is_finished_by_the_next() {
    // Some rows, so that the copy outlasts the test's first step below.
    let s = Scene::start(logical_cluster(), logical_cluster(), 20_000);
    s.pin_to_b();
    let started = Instant::now();
    let mut apply = s.spawn_apply();
    s.wait_while_running(&mut apply, "the subscription appeared on b", || {
        s.subscribed()
    });
    // Role changes wait on a from now on (reads and logins go on): the
    // cutover's closing transaction (NOLOGIN) will wait here, after the
    // copy. (Taken only now: the streaming login is made before the
    // subscription, and a transaction with an id would hold up the copy's
    // replication slots.)
    let roles = s.hold(s.a, "LOCK TABLE pg_authid IN SHARE MODE");
    let closing = || {
        one(
            s.a,
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%NOLOGIN%'",
        ) != "0"
    };
    s.wait_while_running(
        &mut apply,
        "the cutover began to close the old copy",
        closing,
    );
    assert_eq!(
        one(
            s.b,
            &s.mv_db,
            "SELECT count(*) FROM pg_subscription_rel WHERE srsubstate NOT IN ('r', 's')"
        ),
        "0",
        "the cutover began before the copy was done"
    );
    // Stall the stream on b with a lock on orders, and let two more orders
    // be written on a (the second one surely after the lock): b cannot
    // confirm them, so once the old copy is closed the cutover's wait for
    // the new server's position holds.
    let stall = s.hold(s.b, "LOCK TABLE orders IN ACCESS EXCLUSIVE MODE");
    let locked = Instant::now();
    assert!(
        wait_until(LIMIT, || s.writes_after(Some(locked)) >= 2),
        "no write on a while the cutover waited"
    );
    s.release(roles);
    let cut = || s.marker(s.a).contains("move=cutover to=b");
    s.wait_while_running(&mut apply, "the old copy was marked as being cut over", cut);
    s.kill(apply, "during the cutover");
    // Killed during the cutover: the old copy closed and marked, the new
    // one not opened, the stream still there.
    assert!(
        s.marker(s.a).contains("move=cutover to=b"),
        "{}",
        s.marker(s.a)
    );
    assert!(
        s.marker(s.b).contains("move=in from=a"),
        "{}",
        s.marker(s.b)
    );
    assert!(s.subscribed());
    s.release(stall);
    let apply = s.f.tenantry_fleet(&["apply", "--auto-approve"]);
    println!("{}", apply.all());
    apply.ok();
    assert!(
        apply.all().contains("cutover done"),
        "the cutover was not finished"
    );
    s.finish(started, Instant::now());
}

#[test]
fn a_tenant_moves_from_postgresql_15_to_17_under_load() {
    let (Some(a), Some(b)) = (major_cluster(15), major_cluster(17)) else {
        return;
    };
    let s = Scene::start(a, b, 1000);
    s.pin_to_b();
    let plan = s.f.tenantry_fleet(&["plan"]);
    assert!(plan.ok().contains("PostgreSQL 15 to 17"), "{}", plan.stdout);
    let started = Instant::now();
    let apply = s.f.tenantry_fleet(&["apply", "--auto-approve"]);
    println!("{}", apply.all());
    apply.ok();
    assert_eq!(
        one(b, "postgres", "SHOW server_version_num").get(..2),
        Some("17")
    );
    s.finish(started, Instant::now());
}

/// A logical cluster of PostgreSQL `major`, or None (with a note) when this
/// machine lacks it outside CI (`scripts/fetch-postgres` brings it).
fn major_cluster(major: u32) -> Option<&'static Cluster> {
    match Cluster::start_temp_major(major, &LOGICAL) {
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
