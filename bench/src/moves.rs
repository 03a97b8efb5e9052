//! The moves benchmark: one tenant with `--orders` orders (plus customers
//! and widgets) moved from one throwaway server to another by
//! `tenantry apply` while a writer creates orders through `tenantry serve`
//! the whole time, against the same tenant copied by
//! `pg_dump -Fc | pg_restore` (what an operator does today, with the
//! tenant's writes stopped for the whole copy), in the same run, on the
//! same two clusters. Reported, never asserted:
//!
//! - the online move's write pause: the longest time between two writes
//!   the writer got acknowledged while the move ran (the last write on the
//!   old server to the first on the new one), with the cutover apply
//!   reports and the whole move's time;
//! - the baseline's pause: the whole `pg_dump | pg_restore` (into a fresh
//!   database: no roles, no privileges, no checks; only the copy), the
//!   median of `--baseline-runs`;
//! - their ratio (the target is <= 0.1) and the pause's target (<= 1 s).
//!
//! ```text
//! cargo build --release
//! cargo run --release -p tenantry-bench -- moves [--orders 200000] [--quick]
//! ```
//!
//! What does not live here: the gateway process (`gateway::serve`).

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use tenantry_localpg::Cluster;

use crate::gateway::{token_create, Served};
use crate::inventory::{self, Extra};
use crate::{secs, Tenantry};

/// The online move's write pause should stay under this.
const PAUSE_TARGET: Duration = Duration::from_secs(1);
/// online pause / baseline pause should stay under this.
const RATIO_TARGET: f64 = 0.1;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Orders of the moved tenant (customers: a twentieth, widgets: 100).
    #[arg(long, default_value_t = 200_000)]
    pub orders: u64,
    /// How many times the baseline copy is timed (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub baseline_runs: usize,
    /// A smoke run: 20,000 orders.
    #[arg(long)]
    pub quick: bool,
}

/// Settings of a cluster that can publish.
const LOGICAL: [(&str, &str); 3] = [
    ("wal_level", "logical"),
    ("max_wal_senders", "20"),
    ("max_replication_slots", "20"),
];

/// One write the writer sent: when it ended and how.
#[derive(Clone, Copy)]
struct Write {
    done: Instant,
    status: u16,
    id: i64,
}

pub fn run(args: &Args) -> Result<()> {
    let orders = if args.quick { 20_000 } else { args.orders };
    if orders == 0 {
        bail!("--orders must be positive");
    }
    let bin = crate::tenantry_binary()?;
    let schema = crate::schema_dir()?;
    println!("Starting two throwaway PostgreSQL clusters (wal_level = logical) ...");
    let (a, b) = (
        crate::cluster::start_with(&LOGICAL)?,
        crate::cluster::start_with(&LOGICAL)?,
    );
    let version = a.psql("postgres", "show server_version")?;
    println!(
        "PostgreSQL {}, {} CPU(s); tenantry: {}\n",
        version.trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        bin.display()
    );
    let work = tempfile::Builder::new()
        .prefix("tenantry-bench-moves-")
        .tempdir()?;
    let servers = [
        ("a".to_owned(), a.url("postgres")),
        ("b".to_owned(), b.url("postgres")),
    ];
    let extra = Extra {
        servers: &servers,
        gateway_connections: None,
        requests_per_second: Some(1_000_000),
    };
    let file = inventory::render_fleet("mv", "mv", 1, &schema, &extra);
    let db = inventory::tenant_name("mv", 1);
    let config = work.path().join("tenants.toml");
    let pin = |server: &str| std::fs::write(&config, format!("{file}server = \"{server}\"\n"));
    pin("a")?;
    let tenantry = Tenantry {
        bin: &bin,
        admin_url: None,
        jobs: 1,
        workdir: work.path(),
    };
    tenantry.apply(&config, |_| {})?;

    println!("Filling {db} on server a: {orders} orders ...");
    let customers = (orders / 20).max(1);
    a.psql(
        &db,
        &format!(
            "INSERT INTO customers (first_name, last_name, email)
               SELECT 'first' || g, 'last' || g, 'c' || g || '@example.com' FROM generate_series(1, {customers}) g;
             INSERT INTO widgets (name, price, inventory_level)
               SELECT 'widget ' || g, 100 + g, 100000000 FROM generate_series(1, 100) g;
             INSERT INTO orders (customer_id, widget_id, quantity, amount)
               SELECT 1 + g % {customers}, 1 + g % 100, 1, 100 FROM generate_series(1, {orders}) g;
             UPDATE widgets w SET inventory_level = inventory_level - o.n
               FROM (SELECT widget_id, count(*) AS n FROM orders GROUP BY 1) o WHERE o.widget_id = w.id;
             VACUUM ANALYZE;"
        ),
    )?;
    let size = a.psql(
        "postgres",
        &format!("SELECT pg_size_pretty(pg_database_size('{db}'))"),
    )?;
    println!("  {db}: {}\n", size.trim());

    // The baseline: the copy an operator runs with the tenant's writes
    // stopped, into a fresh database on b.
    println!("Baseline: pg_dump -Fc | pg_restore into a fresh database on server b ...");
    let mut runs = Vec::new();
    for _ in 0..args.baseline_runs.max(1) {
        runs.push(dump_restore(&a, &b, &db)?);
    }
    let shown: Vec<String> = runs.iter().map(|d| secs(*d)).collect();
    let baseline = crate::median(runs);
    println!(
        "  pg_dump | pg_restore: {} (median of {})\n",
        secs(baseline),
        shown.join(", ")
    );

    // The online move, with a writer going the whole time.
    let token = token_create(&bin, &config, None, work.path(), &db, "developer")?;
    let served = Served::start(&bin, &config, None, work.path(), 20)?;
    let host = format!("{db}.localhost");
    let writes: Arc<Mutex<Vec<Write>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (api, writes, stop) = (served.api.clone(), writes.clone(), stop.clone());
        std::thread::spawn(move || {
            let body = r#"{"customer_id":1,"widget_id":1,"quantity":1}"#;
            while !stop.load(Ordering::Relaxed) {
                let (status, id) = post(&api, &host, "/api/orders", &token, body).unwrap_or((0, 0));
                writes.lock().unwrap().push(Write {
                    done: Instant::now(),
                    status,
                    id,
                });
            }
        })
    };
    let acked = |since: Instant| {
        writes
            .lock()
            .unwrap()
            .iter()
            .filter(|w| w.status == 201 && w.done > since)
            .count()
    };
    let ready = Instant::now();
    wait_for(|| acked(ready) >= 200, "the writer's first writes")?;
    println!("Online: tenantry apply moves {db} from a to b, a writer creating orders through tenantry serve ...");
    pin("b")?;
    let started = Instant::now();
    let mut cutover = String::new();
    let mut lines: Vec<(Duration, String)> = Vec::new();
    tenantry.apply(&config, |line| {
        lines.push((started.elapsed(), line.to_owned()));
        if let Some(rest) = line.split("writes were closed for ").nth(1) {
            cutover = rest.trim().to_owned();
        }
    })?;
    let moved = started.elapsed();
    let after = Instant::now();
    let routed = wait_for(|| acked(after) >= 200, "writes on the new server");
    stop.store(true, Ordering::Relaxed);
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the writer panicked"))?;
    routed?;
    drop(served);

    let writes = writes.lock().unwrap().clone();
    let ok: Vec<&Write> = writes.iter().filter(|w| w.status == 201).collect();
    let pause = ok
        .windows(2)
        .filter(|w| w[1].done >= started)
        .map(|w| w[1].done - w[0].done)
        .max()
        .unwrap_or_default();
    let typical = {
        let mut gaps: Vec<Duration> = ok
            .windows(2)
            .filter(|w| w[1].done < started)
            .map(|w| w[1].done - w[0].done)
            .collect();
        gaps.sort();
        gaps.get(gaps.len() / 2).copied().unwrap_or_default()
    };
    let refused = writes
        .iter()
        .filter(|w| w.status != 201 && w.done >= started)
        .count();
    let on_b = check_orders(&a, &b, &db, orders, &ok, refused).inspect_err(|_| {
        // What happened when: apply's lines and the new server's log.
        for (at, line) in &lines {
            eprintln!("  apply +{:>8.1} ms  {line}", at.as_secs_f64() * 1e3);
        }
        let log = std::fs::read_to_string(b.log_file()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        for l in tail.into_iter().rev() {
            eprintln!("  server b's log: {l}");
        }
    })?;
    let ratio = pause.as_secs_f64() / baseline.as_secs_f64().max(1e-9);
    println!(
        "  moved in {} (cutover as apply reports it: {cutover}); {} writes acknowledged in all, {refused} refused during the move; {on_b} orders on b, every acknowledged one among them",
        secs(moved),
        ok.len(),
    );
    println!(
        "  the writer's usual time between writes: {:.1} ms\n",
        typical.as_secs_f64() * 1e3
    );
    println!(
        "| {orders} orders ({}) | write pause | whole move |",
        size.trim()
    );
    println!("|---|---|---|");
    println!(
        "| tenantry apply (online, logical replication) | {} | {} |",
        secs(pause),
        secs(moved)
    );
    println!(
        "| pg_dump -Fc \\| pg_restore (writes stopped throughout) | {} | {} |",
        secs(baseline),
        secs(baseline)
    );
    println!(
        "\nonline pause / dump-restore pause: {ratio:.3} (target <= {RATIO_TARGET}: {}); pause {} (target <= {}: {})",
        if ratio <= RATIO_TARGET { "met" } else { "NOT met" },
        secs(pause),
        secs(PAUSE_TARGET),
        if pause <= PAUSE_TARGET { "met" } else { "NOT met" },
    );
    Ok(())
}

/// Fails unless every acknowledged order is on `b` once (an order whose
/// write was refused may be there too: it may have committed before its
/// connection was cut); returns how many orders `b` has.
fn check_orders(
    a: &Cluster,
    b: &Cluster,
    db: &str,
    preloaded: u64,
    ok: &[&Write],
    refused: usize,
) -> Result<i64> {
    let on_b: i64 = b
        .psql(db, "SELECT count(*) FROM orders")?
        .trim()
        .parse()
        .context("counting orders on b")?;
    let ids = ok
        .iter()
        .map(|w| w.id.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let missing = b.psql(
        db,
        &format!("SELECT coalesce(string_agg(i::text, ','), '') FROM unnest(ARRAY[{ids}]::bigint[]) i WHERE NOT EXISTS (SELECT 1 FROM orders WHERE id = i)"),
    )?;
    let missing = missing.trim();
    if !missing.is_empty() {
        let on_a = a.psql(
            db,
            &format!("SELECT string_agg(id::text || ' created ' || created_at::text, ', ') FROM orders WHERE id IN ({missing})"),
        )?;
        bail!(
            "acknowledged orders missing on the new server: {missing} (on the old one: {})",
            on_a.trim()
        );
    }
    let distinct = ok
        .iter()
        .map(|w| w.id)
        .collect::<std::collections::BTreeSet<_>>();
    let expected = preloaded as i64 + ok.len() as i64;
    if distinct.len() != ok.len() || on_b < expected || on_b > expected + refused as i64 {
        bail!(
            "{on_b} orders on the new server: {preloaded} preloaded, {} acknowledged ({} distinct ids), {refused} refused",
            ok.len(),
            distinct.len()
        );
    }
    Ok(on_b)
}

/// `pg_dump -Fc` of `db` on `from` piped into `pg_restore` of a fresh
/// database on `to` (created first, dropped after), timed from the
/// database's creation to the restore's end.
fn dump_restore(from: &Cluster, to: &Cluster, db: &str) -> Result<Duration> {
    let copy = format!("{db}_baseline");
    let start = Instant::now();
    to.psql("postgres", &format!("CREATE DATABASE {copy}"))?;
    let mut dump = Command::new(from.tool("pg_dump"))
        .args(["--format=custom", "--no-owner", "--no-acl", "--dbname"])
        .arg(from.url(db))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot run pg_dump")?;
    let restore = Command::new(to.tool("pg_restore"))
        .args(["--no-owner", "--no-acl", "--exit-on-error", "--dbname"])
        .arg(to.url(&copy))
        .stdin(dump.stdout.take().expect("piped"))
        .stderr(Stdio::inherit())
        .status()
        .context("cannot run pg_restore")?;
    let dumped = dump.wait()?;
    let took = start.elapsed();
    if !dumped.success() || !restore.success() {
        bail!("pg_dump ({dumped}) | pg_restore ({restore}) failed");
    }
    let rows = to.psql(&copy, "SELECT count(*) FROM orders")?;
    println!("  restored {} orders", rows.trim());
    to.psql("postgres", &format!("DROP DATABASE {copy}"))?;
    Ok(took)
}

/// One POST with a JSON body: its status and the created row's id (0 when
/// none).
fn post(addr: &str, host: &str, path: &str, token: &str, body: &str) -> Result<(u16, i64)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("not an HTTP response: {raw:?}"))?;
    let id = raw
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(b).ok())
        .and_then(|v| v["id"].as_i64())
        .unwrap_or(0);
    Ok((status, id))
}

/// Waits (up to two minutes) for `cond`.
fn wait_for(mut cond: impl FnMut() -> bool, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !cond() {
        if Instant::now() > deadline {
            bail!("{what}: not within two minutes");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
