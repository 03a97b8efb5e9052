//! The gateway benchmark: `tenantry serve` under HTTP load against a minimal
//! hyper server with one static deadpool-postgres pool, all in one run on
//! one throwaway cluster, driven by Debian's `wrk` (installed with apt-get
//! if missing) and a Lua script that rotates the Host header and the
//! matching bearer token across the tenants, one per request.
//!
//! 1. setup (untimed, reported): `tenantry apply` of one fleet of
//!    max(N, M) tenants (one customer user each; plan `bench`: pool size 2,
//!    100000 requests/s so the rate limit never interferes), one widget per
//!    tenant inserted as the superuser, one customer token per tenant made
//!    by `tenantry token create`;
//! 2. `tenantry serve --max-connections 90` over the first N tenants:
//!    warm-up, then `GET /api/widgets/1` rotating over the N hosts; req/s,
//!    p50/p99, non-2xx, socket errors, the gateway's CPU per request, and
//!    how many token lookups reached the database during the measured run;
//! 3. the baseline: a hyper 1 server inside this process with ONE pool
//!    (16 connections, superuser, the first tenant's database) running the
//!    gateway's very `SELECT ... FROM widgets WHERE id = $1`, no routing or
//!    auth; same wrk settings and script;
//! 4. `tenantry serve --max-connections 90` over all M tenants, wrk rotating
//!    over the M hosts; req/s, errors, and the highest
//!    `tenantry_connections_open` seen on /metrics (polled every 100 ms);
//! 5. resident memory of `tenantry serve` with 10,000 tenants configured
//!    (not created: one customer each, all reading one shared password
//!    file), idle, 1 s after its first line.
//!
//! What does not live here: the apply/plan and migrate benchmarks.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tenantry_localpg::Cluster;

use crate::inventory::toml_string;
use crate::{inventory, progress, report_targets, secs, tail, Tenantry, RSS_TARGET_MIB};

/// gateway/baseline throughput the gateway should reach at least.
const THROUGHPUT_RATIO_TARGET: f64 = 0.9;
/// gateway/baseline p99 the gateway should stay under.
const P99_RATIO_TARGET: f64 = 1.5;
/// The widget every request asks for (the first row of a fresh table).
const WIDGET_ID: i64 = 1;
/// The baseline's one pool.
const BASELINE_POOL_SIZE: usize = 16;
/// wrk's per-request timeout (its default, 2 s, equals the gateway's
/// checkout timeout; a slow answer should show as latency, not as an error).
const WRK_TIMEOUT: &str = "10s";
/// The gateway's store query, as in `crates/gateway/src/api.rs`.
const GET_WIDGET: &str = "SELECT id, name, description, inventory_level, price, \
     to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS created_at, \
     to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS updated_at \
     FROM widgets WHERE id = $1";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Tenants the gateway-vs-baseline comparison rotates over.
    #[arg(long, default_value_t = 100)]
    pub tenants: usize,
    /// Length of each measured wrk run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// wrk connections (`-c`).
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// wrk threads (`-t`).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Untimed wrk run before each measured one (fills pools and the token cache).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// The gateway's `--max-connections`.
    #[arg(long, default_value_t = 90)]
    pub max_connections: usize,
    /// The plan's `pool_size` (the example tenants.toml's plans use 2 and 8).
    #[arg(long, default_value_t = 2)]
    pub pool_size: usize,
    /// Tenants of the many-tenants run (step 4).
    #[arg(long, default_value_t = 1000)]
    pub many_tenants: usize,
    /// Tenants configured for the idle-memory measurement (step 5).
    #[arg(long, default_value_t = 10_000)]
    pub idle_tenants: usize,
    /// Also run the N-tenant gateway with this `--max-connections` (room for
    /// every pool: shows what connection churn costs); 0 skips it.
    #[arg(long, default_value_t = 250)]
    pub wide_budget: usize,
    /// `--jobs` of the setup apply (untimed).
    #[arg(long, default_value_t = 8)]
    pub setup_jobs: u16,
    /// A smoke run: 10 tenants, 3 s runs, 20 many-tenants, 1000 idle tenants.
    #[arg(long)]
    pub quick: bool,
}

impl Args {
    pub fn apply_quick(&mut self) {
        if self.quick {
            self.tenants = 10;
            self.duration = Duration::from_secs(3);
            self.warmup = Duration::from_secs(1);
            self.many_tenants = 20;
            self.idle_tenants = 1000;
        }
    }
}

/// One tenant as the load generator sees it.
struct Target {
    host: String,
    token: String,
}

pub fn run(args: &Args) -> Result<()> {
    let bin = crate::tenantry_binary()?;
    let schema = crate::schema_dir()?;
    let wrk = ensure_wrk()?;
    let wrk_version = wrk_version(&wrk);
    if args.tenants == 0 || args.many_tenants == 0 || args.connections == 0 {
        bail!("--tenants, --many-tenants and --connections must be positive");
    }

    println!("Starting a throwaway PostgreSQL cluster ...");
    let cluster = Cluster::start_temp().context("cannot start a throwaway cluster")?;
    let version = cluster.psql("postgres", "show server_version")?;
    let max_conn = cluster.psql("postgres", "show max_connections")?;
    let admin_url = cluster.url("postgres");
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "PostgreSQL {} on port {} (max_connections {}), {cpus} CPU(s); tenantry: {}; load: {wrk_version}\n",
        version.trim(),
        cluster.port(),
        max_conn.trim(),
        bin.display()
    );
    let work = tempfile::Builder::new()
        .prefix("tenantry-bench-gateway-")
        .tempdir()?;
    let tenantry = Tenantry {
        bin: &bin,
        admin_url: &admin_url,
        jobs: args.setup_jobs,
        workdir: work.path(),
    };

    // 1. Setup.
    let fleet_n = args.tenants.max(args.many_tenants);
    println!(
        "[1/5] setup: tenantry apply --jobs {} of {fleet_n} tenants (1 customer each), a widget and a token per tenant ...",
        args.setup_jobs
    );
    let setup_start = Instant::now();
    let fleet_toml = work.path().join("fleet.toml");
    std::fs::write(&fleet_toml, render(fleet_n, &schema, args.pool_size, None))?;
    let applied = tenantry.apply(&fleet_toml, progress("apply gw".into(), fleet_n))?;
    println!("  apply: {}", applied.summary());
    let dbs: Vec<String> = (1..=fleet_n).map(tenant).collect();
    insert_widgets(&cluster, &dbs)?;
    let tokens_start = Instant::now();
    let tokens = create_tokens(&bin, &fleet_toml, &admin_url, work.path(), &dbs)?;
    println!(
        "  {} widgets inserted, {} tokens created ({})",
        dbs.len(),
        tokens.len(),
        secs(tokens_start.elapsed())
    );
    let targets: Vec<Target> = dbs
        .iter()
        .zip(tokens)
        .map(|(db, token)| Target {
            host: format!("{db}.localhost"),
            token,
        })
        .collect();
    // Creating many databases leaves the checkpointer busy; settle first.
    cluster.psql("postgres", "CHECKPOINT")?;
    std::thread::sleep(Duration::from_secs(2));
    let setup = setup_start.elapsed();
    println!("  setup took {}\n", secs(setup));

    let n = args.tenants;
    let small_toml = work.path().join("gateway.toml");
    std::fs::write(&small_toml, render(n, &schema, args.pool_size, None))?;
    let small_lua = work.path().join("rotate-small.lua");
    std::fs::write(&small_lua, lua_script(&targets[..n])?)?;
    let load = Load {
        wrk: &wrk,
        threads: args.threads,
        connections: args.connections,
        duration: args.duration,
        warmup: args.warmup,
    };

    // 2. The gateway over N tenants.
    println!(
        "[2/5] tenantry serve --max-connections {} over {n} tenants; wrk -t{} -c{} -d{} rotating over {n} hosts ...",
        args.max_connections,
        args.threads,
        args.connections,
        secs(args.duration)
    );
    let gw = gateway_run(
        &bin,
        &small_toml,
        &admin_url,
        work.path(),
        args.max_connections,
        &targets[..n],
        &small_lua,
        &load,
        &cluster,
        Some(&dbs[..n]),
    )?;
    println!("  {}", gw.line());

    let wide = if args.wide_budget > 0 {
        println!(
            "      diagnostic: the same with --max-connections {} (room for every pool) ...",
            args.wide_budget
        );
        let r = gateway_run(
            &bin,
            &small_toml,
            &admin_url,
            work.path(),
            args.wide_budget,
            &targets[..n],
            &small_lua,
            &load,
            &cluster,
            None,
        )?;
        println!("  {}", r.line());
        Some(r)
    } else {
        None
    };

    // 3. The baseline.
    println!(
        "[3/5] baseline: hyper 1 + one deadpool-postgres pool ({BASELINE_POOL_SIZE}, superuser, database {}); same wrk settings ...",
        dbs[0]
    );
    let base = baseline_run(
        &cluster,
        &cluster.url(&dbs[0]),
        &targets[..n],
        &small_lua,
        &load,
    )?;
    println!(
        "  {}; server CPU {:.0} µs/request, PostgreSQL CPU {:.0} µs and {:.2} transactions/request",
        base.wrk.line(),
        base.cpu_us_per_request(),
        base.pg.cpu_us_per(base.wrk.requests),
        base.pg.xacts_per(base.wrk.requests)
    );

    // 4. Many tenants under the budget.
    let m = args.many_tenants;
    println!(
        "[4/5] tenantry serve --max-connections {} over {m} tenants; wrk rotating over {m} hosts ...",
        args.max_connections
    );
    let many_toml = work.path().join("many.toml");
    std::fs::write(&many_toml, render(m, &schema, args.pool_size, None))?;
    let many_lua = work.path().join("rotate-many.lua");
    std::fs::write(&many_lua, lua_script(&targets[..m])?)?;
    let many = gateway_run(
        &bin,
        &many_toml,
        &admin_url,
        work.path(),
        args.max_connections,
        &targets[..m],
        &many_lua,
        &load,
        &cluster,
        None,
    )?;
    println!("  {}", many.line());

    // 5. Idle memory with many tenants configured.
    let k = args.idle_tenants;
    println!("[5/5] tenantry serve with {k} tenants configured (not created), idle ...");
    let idle = idle_rss(&bin, &schema, work.path(), &admin_url, k, args)?;
    println!(
        "  first line after {}; VmRSS {:.1} MiB 1 s later",
        secs(idle.startup),
        idle.rss_mib
    );

    report(
        args,
        &Report {
            gw: &gw,
            wide: wide.as_ref(),
            base: &base,
            many: &many,
            idle: &idle,
            setup,
            cpus,
            pg_version: version.trim(),
            wrk_version: &wrk_version,
        },
    );
    Ok(())
}

struct Report<'a> {
    gw: &'a GatewayRun,
    wide: Option<&'a GatewayRun>,
    base: &'a BaselineRun,
    many: &'a GatewayRun,
    idle: &'a Idle,
    setup: Duration,
    cpus: usize,
    pg_version: &'a str,
    wrk_version: &'a str,
}

fn report(args: &Args, r: &Report<'_>) {
    let n = args.tenants;
    let m = args.many_tenants;
    let budget = args.max_connections;
    let (gw, base) = (&r.gw.wrk, &r.base.wrk);
    let tput = gw.rps() / base.rps().max(1e-9);
    let p50 = gw.p50_us / base.p50_us.max(1e-9);
    let p99 = gw.p99_us / base.p99_us.max(1e-9);
    let load = format!(
        "wrk -t{} -c{} -d{}",
        args.threads,
        args.connections,
        secs(args.duration)
    );
    println!("\n## Results: `tenantry serve`\n");
    println!("| metric | gateway | baseline | ratio | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| throughput, `GET /api/widgets/1` rotating over {n} tenants, `--max-connections {budget}`, {load} | {:.0} req/s | {:.0} req/s (hyper + one pool of {BASELINE_POOL_SIZE}, no routing or auth) | {tput:.2}x | >= {THROUGHPUT_RATIO_TARGET:.1}x |",
        gw.rps(),
        base.rps()
    );
    println!(
        "| p50 latency | {} | {} | {p50:.2}x | - |",
        ms(gw.p50_us),
        ms(base.p50_us)
    );
    println!(
        "| p99 latency | {} | {} | {p99:.2}x | <= {P99_RATIO_TARGET:.1}x |",
        ms(gw.p99_us),
        ms(base.p99_us)
    );
    println!(
        "| non-2xx responses / socket errors | {} / {} | {} / {} | - | 0 |",
        gw.non_2xx,
        gw.socket_errors(),
        base.non_2xx,
        base.socket_errors()
    );
    println!(
        "| server CPU per request (process user+sys) | {:.0} µs | {:.0} µs | {:.2}x | - |",
        r.gw.cpu_us_per_request(),
        r.base.cpu_us_per_request(),
        r.gw.cpu_us_per_request() / r.base.cpu_us_per_request().max(1e-9)
    );
    let (gpg, bpg) = (
        r.gw.pg.cpu_us_per(gw.requests),
        r.base.pg.cpu_us_per(base.requests),
    );
    println!(
        "| PostgreSQL CPU per request (all server processes) | {gpg:.0} µs | {bpg:.0} µs | {:.2}x | - |",
        gpg / bpg.max(1e-9)
    );
    println!(
        "| PostgreSQL transactions per request (pg_stat_database, approximate) | {:.2} | {:.2} | - | - |",
        r.gw.pg.xacts_per(gw.requests),
        r.base.pg.xacts_per(base.requests)
    );
    if let Some(lookups) = r.gw.token_lookups {
        println!(
            "| token lookups reaching the database during the measured run | {lookups} (of {} requests; cache TTL 30 s) | - | - | - |",
            gw.requests
        );
    }
    println!(
        "| pool evictions during warm-up + run, {n} tenants | {:.0} | - | - | - |",
        r.gw.evictions
    );
    if let Some(w) = r.wide {
        println!(
            "| diagnostic: same with `--max-connections {}` | {:.0} req/s, p99 {}, {} evictions | {:.0} req/s, p99 {} | {:.2}x, p99 {:.2}x | - |",
            args.wide_budget,
            w.wrk.rps(),
            ms(w.wrk.p99_us),
            w.evictions,
            base.rps(),
            ms(base.p99_us),
            w.wrk.rps() / base.rps().max(1e-9),
            w.wrk.p99_us / base.p99_us.max(1e-9)
        );
    }
    let mw = &r.many.wrk;
    println!(
        "| {m} tenants, `--max-connections {budget}`: throughput rotating over all {m} hosts | {:.0} req/s (p50 {}, p99 {}) | - | - | - |",
        mw.rps(),
        ms(mw.p50_us),
        ms(mw.p99_us)
    );
    println!(
        "| {m} tenants: non-2xx responses / socket errors | {} / {} | - | - | 0 |",
        mw.non_2xx,
        mw.socket_errors()
    );
    println!(
        "| {m} tenants: highest `tenantry_connections_open` (polled every 100 ms) | {:.0} | - | - | <= {budget} |",
        r.many.max_open
    );
    println!(
        "| {m} tenants: pool evictions during warm-up + run | {:.0} | - | - | - |",
        r.many.evictions
    );
    println!(
        "| {m} tenants: gateway VmHWM after the run | {:.1} MiB | - | - | - |",
        r.many.hwm_mib
    );
    println!(
        "| resident memory, {} tenants configured, idle (VmRSS 1 s after start) | {:.1} MiB | - | - | < {RSS_TARGET_MIB:.0} MiB |",
        args.idle_tenants, r.idle.rss_mib
    );
    println!(
        "\nMeasured on one throwaway PostgreSQL {} cluster (fsync off), {} CPU(s) shared by wrk, the server and PostgreSQL; {}; \
         each run after a {} warm-up; plan `bench`: pool_size {}, 100000 requests/s; tenantry logs at its default level (warn). \
         Setup (apply of {} tenants, widgets, tokens) took {}.",
        r.pg_version,
        r.cpus,
        r.wrk_version,
        secs(args.warmup),
        args.pool_size,
        n.max(m),
        secs(r.setup)
    );
    println!(
        "Reproduce: `cargo build --release && cargo run --release -p tenantry-bench -- gateway --tenants {n} --duration {} --connections {}`",
        humantime::format_duration(args.duration),
        args.connections
    );

    let mut missed = Vec::new();
    if tput < THROUGHPUT_RATIO_TARGET {
        missed.push(format!(
            "throughput {tput:.2}x < {THROUGHPUT_RATIO_TARGET:.1}x"
        ));
    }
    if p99 > P99_RATIO_TARGET {
        missed.push(format!("p99 {p99:.2}x > {P99_RATIO_TARGET:.1}x"));
    }
    for (what, w) in [(format!("{n} tenants"), gw), (format!("{m} tenants"), mw)] {
        if w.non_2xx + w.socket_errors() > 0 {
            missed.push(format!(
                "{what}: {} non-2xx, {} socket errors",
                w.non_2xx,
                w.socket_errors()
            ));
        }
    }
    if r.many.max_open > budget as f64 {
        missed.push(format!(
            "{:.0} connections open > budget {budget}",
            r.many.max_open
        ));
    }
    if r.idle.rss_mib >= RSS_TARGET_MIB {
        missed.push(format!(
            "idle RSS {:.1} MiB >= {RSS_TARGET_MIB:.0} MiB",
            r.idle.rss_mib
        ));
    }
    report_targets(&missed);
}

fn ms(us: f64) -> String {
    format!("{:.2} ms", us / 1000.0)
}

fn tenant(i: usize) -> String {
    inventory::tenant_name("t", i)
}

/// A tenants.toml of tenants `t0001..=n`, each with one customer user
/// (`<db>_c`) on plan `bench`. With `password_file`, every user reads that
/// one file (for a gateway that only loads the file) and generated
/// secrets go to `<dir>/idle-secrets`.
fn render(n: usize, schema: &Path, pool_size: usize, password_file: Option<&Path>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Generated by tenantry-bench gateway.");
    let _ = writeln!(s, "fleet = \"gw\"\n");
    let _ = writeln!(s, "[paths]");
    let _ = writeln!(s, "schema = {}", toml_string(&schema.to_string_lossy()));
    if let Some(pw) = password_file {
        let dir = pw.parent().unwrap_or(Path::new("."));
        let _ = writeln!(
            s,
            "secrets = {}",
            toml_string(&dir.join("idle-secrets").to_string_lossy())
        );
    }
    let _ = writeln!(s, "\n[routing]\nbase_domains = [\"localhost\"]\n");
    let _ = writeln!(s, "[plans.bench]");
    let _ = writeln!(s, "connection_limit = {}", inventory::CONNECTION_LIMIT);
    let _ = writeln!(
        s,
        "statement_timeout = {}",
        toml_string(inventory::STATEMENT_TIMEOUT)
    );
    let _ = writeln!(s, "pool_size = {pool_size}\nrequests_per_second = 100000");
    for i in 1..=n {
        let db = tenant(i);
        let _ = writeln!(s, "\n[tenants.{db}]\nplan = \"bench\"");
        match password_file {
            Some(pw) => {
                let _ = writeln!(
                    s,
                    "customers = [{{ username = \"{db}_c\", password_file = {} }}]",
                    toml_string(&pw.to_string_lossy())
                );
            }
            None => {
                let _ = writeln!(s, "customers = [{{ username = \"{db}_c\" }}]");
            }
        }
    }
    s
}

/// One widget per tenant database (id 1), as the superuser, one psql session.
fn insert_widgets(cluster: &Cluster, dbs: &[String]) -> Result<()> {
    let mut script = String::new();
    for db in dbs {
        let _ = writeln!(
            script,
            "\\c {db}\nINSERT INTO widgets (name, description, inventory_level, price) \
             VALUES ('bench widget', 'one per tenant', 42, 1999);"
        );
    }
    cluster.psql("postgres", &script)?;
    let ids = cluster.psql(
        dbs.first().map_or("postgres", String::as_str),
        "SELECT string_agg(id::text, ',') FROM widgets",
    )?;
    if ids.trim() != WIDGET_ID.to_string() {
        bail!(
            "expected one widget with id {WIDGET_ID} in {}, found ids {:?}",
            dbs[0],
            ids.trim()
        );
    }
    Ok(())
}

/// `tenantry token create <db> --role customer` for each database, four
/// at a time; returns the tokens in order.
fn create_tokens(
    bin: &Path,
    config: &Path,
    admin_url: &str,
    workdir: &Path,
    dbs: &[String],
) -> Result<Vec<String>> {
    const PARALLEL: usize = 4;
    let chunk = dbs.len().div_ceil(PARALLEL).max(1);
    let results: Vec<Result<Vec<String>>> = std::thread::scope(|s| {
        let handles: Vec<_> = dbs
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|db| token_create(bin, config, admin_url, workdir, db))
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| bail!("a token thread panicked"))
            })
            .collect()
    });
    let mut out = Vec::with_capacity(dbs.len());
    for r in results {
        out.extend(r?);
    }
    Ok(out)
}

fn token_create(
    bin: &Path,
    config: &Path,
    admin_url: &str,
    workdir: &Path,
    db: &str,
) -> Result<String> {
    let out = Command::new(bin)
        .args([
            "token", "create", db, "--role", "customer", "--label", "bench",
        ])
        .arg("--config")
        .arg(config)
        .args(["--admin-url", admin_url])
        .env_remove("TENANTRY_ADMIN_URL")
        .current_dir(workdir)
        .stdin(Stdio::null())
        .output()
        .context("cannot run tenantry token create")?;
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || token.is_empty() || token.contains('\n') {
        bail!(
            "tenantry token create {db} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(token)
}

// ---------------------------------------------------------------- wrk

/// `wrk` on PATH, installed with apt-get if missing.
fn ensure_wrk() -> Result<PathBuf> {
    if let Some(p) = which("wrk") {
        return Ok(p);
    }
    println!("wrk is not installed: installing Debian's wrk (apt-get install -y wrk) ...");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "wrk"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
    };
    let mut out = install().context("cannot run apt-get")?;
    if !out.status.success() {
        println!("  apt-get install failed; running apt-get update and trying again ...");
        let _ = Command::new("apt-get")
            .arg("update")
            .stdin(Stdio::null())
            .output();
        out = install().context("cannot run apt-get")?;
    }
    match which("wrk") {
        Some(p) if out.status.success() => {
            println!("  installed {}", p.display());
            Ok(p)
        }
        _ => bail!(
            "cannot install wrk ({}): {}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr), 10)
        ),
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn wrk_version(wrk: &Path) -> String {
    let out = Command::new(wrk).arg("-v").stdin(Stdio::null()).output();
    let text = out
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s
        })
        .unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("wrk "))
        .map(|l| l.split(" [").next().unwrap_or(l).trim().to_owned())
        .unwrap_or_else(|| "wrk".to_owned())
}

/// A wrk script: each request takes the next tenant (Host and token) in
/// turn, each thread starting at its own offset; `done` prints one
/// machine-readable line.
fn lua_script(targets: &[Target]) -> Result<String> {
    let safe = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    let mut s = String::from("-- Generated by tenantry-bench gateway.\nlocal targets = {\n");
    for t in targets {
        if !safe(&t.host) || !safe(&t.token) {
            bail!("unexpected characters in host {:?} or its token", t.host);
        }
        let _ = writeln!(s, "  {{ \"{}\", \"Bearer {}\" }},", t.host, t.token);
    }
    let _ = write!(
        s,
        r#"}}
local n = #targets
local path = "/api/widgets/{WIDGET_ID}"
local threads = 0
local i = 0

function setup(thread)
  thread:set("offset", threads * 7919)
  threads = threads + 1
end

function init(args)
  i = (offset or 0) % n
end

function request()
  i = i % n + 1
  local t = targets[i]
  return wrk.format("GET", path, {{ ["Host"] = t[1], ["Authorization"] = t[2] }})
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d status=%d connect=%d read=%d write=%d timeout=%d p50_us=%d p99_us=%d max_us=%d\n",
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50.0), latency:percentile(99.0), latency.max))
end
"#
    );
    Ok(s)
}

/// What one wrk run measured.
#[derive(Debug, Clone, Default)]
struct Wrk {
    requests: u64,
    duration: Duration,
    /// Responses with status >= 400 (wrk's "Non-2xx or 3xx"; neither
    /// server answers 3xx).
    non_2xx: u64,
    connect: u64,
    read: u64,
    write: u64,
    timeout: u64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
}

impl Wrk {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.duration.as_secs_f64().max(1e-9)
    }

    fn socket_errors(&self) -> u64 {
        self.connect + self.read + self.write + self.timeout
    }

    fn line(&self) -> String {
        format!(
            "{} requests in {}: {:.0} req/s, p50 {}, p99 {}, max {}; non-2xx {}, socket errors {} (connect {}, read {}, write {}, timeout {})",
            self.requests,
            secs(self.duration),
            self.rps(),
            ms(self.p50_us),
            ms(self.p99_us),
            ms(self.max_us),
            self.non_2xx,
            self.socket_errors(),
            self.connect,
            self.read,
            self.write,
            self.timeout
        )
    }

    fn parse(stdout: &str) -> Option<Wrk> {
        let line = stdout.lines().find(|l| l.starts_with("BENCH "))?;
        let mut w = Wrk::default();
        for kv in line.split_whitespace().skip(1) {
            let (k, v) = kv.split_once('=')?;
            let v: u64 = v.parse().ok()?;
            match k {
                "requests" => w.requests = v,
                "duration_us" => w.duration = Duration::from_micros(v),
                "status" => w.non_2xx = v,
                "connect" => w.connect = v,
                "read" => w.read = v,
                "write" => w.write = v,
                "timeout" => w.timeout = v,
                "p50_us" => w.p50_us = v as f64,
                "p99_us" => w.p99_us = v as f64,
                "max_us" => w.max_us = v as f64,
                _ => {}
            }
        }
        Some(w)
    }
}

/// How wrk is run.
struct Load<'a> {
    wrk: &'a Path,
    threads: usize,
    connections: usize,
    duration: Duration,
    warmup: Duration,
}

impl Load<'_> {
    fn run(&self, addr: &str, script: &Path, duration: Duration) -> Result<Wrk> {
        let secs = duration.as_secs().max(1);
        let out = Command::new(self.wrk)
            .arg(format!("-t{}", self.threads))
            .arg(format!("-c{}", self.connections))
            .arg(format!("-d{secs}s"))
            .args(["--timeout", WRK_TIMEOUT, "-s"])
            .arg(script)
            .arg(format!("http://{addr}/api/widgets/{WIDGET_ID}"))
            .stdin(Stdio::null())
            .output()
            .context("cannot run wrk")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "wrk failed ({}): {}\n{}",
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Wrk::parse(&stdout).with_context(|| format!("cannot read wrk's output:\n{stdout}"))
    }

    /// Warm-up (results dropped) then the measured run.
    fn measure(&self, addr: &str, script: &Path, between: impl FnOnce()) -> Result<Wrk> {
        if !self.warmup.is_zero() {
            self.run(addr, script, self.warmup)?;
        }
        between();
        self.run(addr, script, self.duration)
    }
}

// ---------------------------------------------------------------- HTTP

/// A one-shot HTTP/1.1 GET: (status, body).
fn http_get(addr: &str, path: &str, host: &str, token: Option<&str>) -> Result<(u16, String)> {
    let sock: SocketAddr = addr
        .parse()
        .with_context(|| format!("bad address {addr}"))?;
    let mut stream = TcpStream::connect_timeout(&sock, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(t) = token {
        let _ = write!(req, "Authorization: Bearer {t}\r\n");
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP response: {raw:?}"))?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Fails unless the widget comes back (200, id 1) for each of `targets`.
fn check_widget(addr: &str, targets: &[&Target]) -> Result<()> {
    for t in targets {
        let (status, body) = http_get(
            addr,
            &format!("/api/widgets/{WIDGET_ID}"),
            &t.host,
            Some(&t.token),
        )?;
        if status != 200 || !body.contains(&format!("\"id\":{WIDGET_ID}")) {
            bail!(
                "GET /api/widgets/{WIDGET_ID} for {} answered {status}: {body}",
                t.host
            );
        }
    }
    Ok(())
}

/// A sample without labels from a Prometheus text page.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `tenantry_requests_total` summed over samples whose status is not 2xx.
fn non_2xx_from_metrics(text: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("tenantry_requests_total{") && !l.contains("status=\"2"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

// ---------------------------------------------------------------- tenantry serve

/// A running `tenantry serve`; stopped (SIGTERM, then kill) on drop.
struct Served {
    child: Child,
    api: String,
    admin: String,
    started_after: Duration,
}

impl Served {
    fn start(
        bin: &Path,
        config: &Path,
        admin_url: &str,
        workdir: &Path,
        budget: usize,
    ) -> Result<Served> {
        let log = workdir.join(format!(
            "serve-{}.log",
            config.file_stem().unwrap_or_default().to_string_lossy()
        ));
        let start = Instant::now();
        let mut child = Command::new(bin)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .args(["--admin-url", admin_url])
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--max-connections", &budget.to_string()])
            // `serve` does not apply --admin-url to the file it loads (the
            // other commands do); the variable reaches it, and its reloads.
            .env("TENANTRY_ADMIN_URL", admin_url)
            .env_remove("TENANTRY_LOG")
            .env_remove("DATABASE_DSN")
            .current_dir(workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("cannot run tenantry serve")?;
        let mut out = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut first = String::new();
        let read = out.read_line(&mut first);
        let started_after = start.elapsed();
        // Keep draining stdout so the gateway never blocks on it.
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = out.read_to_end(&mut sink);
        });
        let mut served = Served {
            child,
            api: String::new(),
            admin: String::new(),
            started_after,
        };
        let addrs = read.ok().and_then(|_| parse_first_line(&first));
        match addrs {
            Some((api, admin)) => {
                served.api = api;
                served.admin = admin;
                Ok(served)
            }
            None => {
                drop(served);
                bail!(
                    "tenantry serve did not start; first line {first:?}; log:\n{}",
                    tail(&std::fs::read_to_string(&log).unwrap_or_default(), 20)
                )
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn metrics(&self) -> Result<String> {
        let (status, body) = http_get(&self.admin, "/metrics", "localhost", None)?;
        if status != 200 {
            bail!("/metrics answered {status}");
        }
        Ok(body)
    }

    /// SIGTERM and wait (the gateway drains in-flight requests first).
    fn stop(mut self) -> Result<()> {
        self.terminate()
    }

    fn terminate(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.kill()?;
        self.child.wait()?;
        bail!("tenantry serve did not stop within 40 s of SIGTERM; killed")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}

/// "Gateway serving ... on http://A (admin: http://B); ..." -> (A, B).
fn parse_first_line(line: &str) -> Option<(String, String)> {
    if !line.starts_with("Gateway serving ") {
        return None;
    }
    let api = line.split(" on http://").nth(1)?.split(' ').next()?;
    let admin = line.split("(admin: http://").nth(1)?.split(')').next()?;
    Some((api.to_owned(), admin.to_owned()))
}

/// (VmRSS, VmHWM) of `pid` in MiB.
fn rss_mib(pid: u32) -> Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Option<f64> {
        let l = status.lines().find(|l| l.starts_with(name))?;
        let kib: f64 = l.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    };
    Ok((
        field("VmRSS:").context("no VmRSS")?,
        field("VmHWM:").context("no VmHWM")?,
    ))
}

/// User + system CPU time of a whole process (all its threads), from
/// /proc/<pid>/stat (in USER_HZ = 100 ticks per second).
fn cpu_time(pid: &str) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("bad /proc stat")?.1;
    let f: Vec<u64> = after
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // After the command: state (not a number, dropped), then fields 4..;
    // utime and stime are fields 14 and 15, i.e. indexes 10 and 11 here.
    let ticks = f.get(10).context("no utime")? + f.get(11).context("no stime")?;
    Ok(Duration::from_millis(ticks * 10))
}

/// CPU time of the cluster's server processes: the postmaster (with its
/// reaped children) and its live children.
fn pg_cpu(cluster: &Cluster) -> Result<Duration> {
    let pidfile = std::fs::read_to_string(cluster.data_dir().join("postmaster.pid"))?;
    let postmaster = pidfile
        .lines()
        .next()
        .context("empty postmaster.pid")?
        .trim();
    let mut total = Duration::ZERO;
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let name = entry.file_name();
        let pid = name.to_string_lossy();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, after)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = after.split_whitespace().collect();
        // state, ppid, ...: ppid is index 1; utime..cstime are 11..=14.
        if pid != postmaster && f.get(1) != Some(&postmaster) {
            continue;
        }
        let ticks: u64 = f
            .get(11..=14)
            .unwrap_or_default()
            .iter()
            .filter_map(|x| x.parse::<u64>().ok())
            .sum();
        total += Duration::from_millis(ticks * 10);
    }
    Ok(total)
}

/// Transactions committed or rolled back in the whole cluster so far.
fn pg_xacts(cluster: &Cluster) -> Result<u64> {
    let out = cluster.psql(
        "postgres",
        "SELECT sum(xact_commit + xact_rollback) FROM pg_stat_database",
    )?;
    out.trim()
        .parse()
        .with_context(|| format!("bad transaction count {out:?}"))
}

/// PostgreSQL's side of a measured run: its CPU and transactions.
#[derive(Debug, Clone, Copy, Default)]
struct PgSide {
    cpu: Duration,
    xacts: u64,
}

impl PgSide {
    /// Before a run: let idle backends flush their statistics first.
    fn before(cluster: &Cluster) -> PgSide {
        std::thread::sleep(Duration::from_millis(1500));
        PgSide {
            cpu: pg_cpu(cluster).unwrap_or_default(),
            xacts: pg_xacts(cluster).unwrap_or_default(),
        }
    }

    /// After a run: what happened since `start` (CPU read at once).
    fn since(cluster: &Cluster, start: PgSide) -> PgSide {
        let cpu = pg_cpu(cluster).unwrap_or_default();
        std::thread::sleep(Duration::from_millis(1500));
        PgSide {
            cpu: cpu.saturating_sub(start.cpu),
            xacts: pg_xacts(cluster)
                .unwrap_or_default()
                .saturating_sub(start.xacts),
        }
    }

    fn cpu_us_per(&self, requests: u64) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / requests.max(1) as f64
    }

    fn xacts_per(&self, requests: u64) -> f64 {
        self.xacts as f64 / requests.max(1) as f64
    }
}

/// Polls /metrics every 100 ms until dropped; keeps the highest
/// `tenantry_connections_open`.
struct Poller {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<f64>>,
}

impl Poller {
    fn start(admin: &str) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let admin = admin.to_owned();
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut max = 0f64;
            while !flag.load(Ordering::Relaxed) {
                if let Ok((200, body)) = http_get(&admin, "/metrics", "localhost", None) {
                    if let Some(v) = metric(&body, "tenantry_connections_open") {
                        max = max.max(v);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            max
        });
        Poller {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or(0.0)
    }
}

/// What one gateway run measured.
struct GatewayRun {
    wrk: Wrk,
    cpu: Duration,
    max_open: f64,
    evictions: f64,
    hwm_mib: f64,
    /// Token lookups that reached the database during the measured run.
    token_lookups: Option<u64>,
    pg: PgSide,
}

impl GatewayRun {
    fn cpu_us_per_request(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / (self.wrk.requests.max(1) as f64)
    }

    fn line(&self) -> String {
        let mut s = self.wrk.line();
        let _ = write!(
            s,
            "; gateway CPU {:.0} µs/request, PostgreSQL CPU {:.0} µs and {:.2} transactions/request, max open connections {:.0}, evictions {:.0}, VmHWM {:.1} MiB",
            self.cpu_us_per_request(),
            self.pg.cpu_us_per(self.wrk.requests),
            self.pg.xacts_per(self.wrk.requests),
            self.max_open,
            self.evictions,
            self.hwm_mib
        );
        if let Some(t) = self.token_lookups {
            let _ = write!(s, ", token lookups in the database {t}");
        }
        s
    }
}

/// Starts the gateway, checks the first and last tenant, warms up,
/// measures, reads /metrics, stops it. With `stats`, also counts the token
/// lookups that reached the databases during the measured run.
#[allow(clippy::too_many_arguments)]
fn gateway_run(
    bin: &Path,
    config: &Path,
    admin_url: &str,
    workdir: &Path,
    budget: usize,
    targets: &[Target],
    script: &Path,
    load: &Load<'_>,
    cluster: &Cluster,
    token_dbs: Option<&[String]>,
) -> Result<GatewayRun> {
    let served = Served::start(bin, config, admin_url, workdir, budget)?;
    let ends = [&targets[0], &targets[targets.len() - 1]];
    check_widget(&served.api, &ends)?;
    let poller = Poller::start(&served.admin);
    let pid = served.pid().to_string();
    let mut before = None;
    let mut cpu_before = Duration::ZERO;
    let mut pg_before = PgSide::default();
    let wrk = load.measure(&served.api, script, || {
        pg_before = PgSide::before(cluster);
        before = token_dbs.and_then(|dbs| token_scans(cluster, dbs).ok());
        cpu_before = cpu_time(&pid).unwrap_or_default();
    })?;
    let cpu = cpu_time(&pid)?.saturating_sub(cpu_before);
    let pg = PgSide::since(cluster, pg_before);
    let max_open = poller.finish();
    let text = served.metrics()?;
    let evictions = metric(&text, "tenantry_pool_evictions_total").unwrap_or(0.0);
    let max_open = max_open.max(metric(&text, "tenantry_connections_open").unwrap_or(0.0));
    let from_metrics = non_2xx_from_metrics(&text);
    if from_metrics > 0.0 {
        println!("  note: /metrics counts {from_metrics:.0} non-2xx responses (warm-up included)");
    }
    let (_, hwm_mib) = rss_mib(served.pid())?;
    let token_lookups = match (token_dbs, before) {
        (Some(dbs), Some(b)) => token_scans(cluster, dbs).ok().map(|a| a.saturating_sub(b)),
        _ => None,
    };
    served.stop()?;
    Ok(GatewayRun {
        wrk,
        cpu,
        max_open,
        evictions,
        hwm_mib,
        token_lookups,
        pg,
    })
}

/// Scans of `tenantry.tokens` summed over `dbs` (from the statistics).
fn token_scans(cluster: &Cluster, dbs: &[String]) -> Result<u64> {
    let mut script = String::new();
    for db in dbs {
        let _ = writeln!(
            script,
            "\\c {db}\nSELECT coalesce(sum(seq_scan + coalesce(idx_scan, 0)), 0) \
             FROM pg_stat_user_tables WHERE schemaname = 'tenantry' AND relname = 'tokens';"
        );
    }
    let out = cluster.psql("postgres", &script)?;
    Ok(out
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .sum())
}

// ---------------------------------------------------------------- baseline

struct BaselineRun {
    wrk: Wrk,
    cpu: Duration,
    pg: PgSide,
}

impl BaselineRun {
    fn cpu_us_per_request(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / (self.wrk.requests.max(1) as f64)
    }
}

/// Serves the baseline in this process on its own runtime while wrk runs.
fn baseline_run(
    cluster: &Cluster,
    url: &str,
    targets: &[Target],
    script: &Path,
    load: &Load<'_>,
) -> Result<BaselineRun> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let config: tokio_postgres::Config = url.parse()?;
    let manager = Manager::from_config(
        config,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(BASELINE_POOL_SIZE)
        .build()
        .context("cannot build the baseline pool")?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?.to_string();
    let server = runtime.spawn(serve_baseline(listener, pool));
    check_widget(&addr, &[&targets[0]])?;
    let mut cpu_before = Duration::ZERO;
    let mut pg_before = PgSide::default();
    let wrk = load.measure(&addr, script, || {
        pg_before = PgSide::before(cluster);
        cpu_before = cpu_time("self").unwrap_or_default();
    })?;
    let cpu = cpu_time("self")?.saturating_sub(cpu_before);
    let pg = PgSide::since(cluster, pg_before);
    server.abort();
    runtime.shutdown_timeout(Duration::from_secs(5));
    Ok(BaselineRun { wrk, cpu, pg })
}

async fn serve_baseline(listener: tokio::net::TcpListener, pool: Pool) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let pool = pool.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let pool = pool.clone();
                async move { Ok::<_, Infallible>(baseline_handle(&pool, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn baseline_handle(pool: &Pool, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let id = req
        .uri()
        .path()
        .strip_prefix("/api/widgets/")
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|&id| id > 0);
    let Some(id) = id else {
        return json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "not_found"}),
        );
    };
    match widget(pool, id).await {
        Ok(Some(w)) => json(StatusCode::OK, &w),
        Ok(None) => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "not_found"}),
        ),
        Err(e) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &serde_json::json!({"error": e.to_string()}),
        ),
    }
}

async fn widget(
    pool: &Pool,
    id: i64,
) -> Result<Option<serde_json::Value>, Box<dyn std::error::Error + Send + Sync>> {
    let client = pool.get().await?;
    let stmt = client.prepare_cached(GET_WIDGET).await?;
    let Some(row) = client.query_opt(&stmt, &[&id]).await? else {
        return Ok(None);
    };
    Ok(Some(serde_json::json!({
        "id": row.try_get::<_, i64>("id")?,
        "name": row.try_get::<_, String>("name")?,
        "description": row.try_get::<_, String>("description")?,
        "inventory_level": row.try_get::<_, i32>("inventory_level")?,
        "price": row.try_get::<_, i64>("price")?,
        "created_at": row.try_get::<_, String>("created_at")?,
        "updated_at": row.try_get::<_, String>("updated_at")?,
    })))
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

// ---------------------------------------------------------------- idle memory

struct Idle {
    startup: Duration,
    rss_mib: f64,
}

/// `tenantry serve` with `k` tenants configured (one shared password file),
/// VmRSS 1 s after its first line.
fn idle_rss(
    bin: &Path,
    schema: &Path,
    workdir: &Path,
    admin_url: &str,
    k: usize,
    args: &Args,
) -> Result<Idle> {
    let pw = workdir.join("shared-password");
    std::fs::write(&pw, "not-a-real-password\n")?;
    // Password files must be private (0600), or tenantry refuses them.
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    std::fs::create_dir_all(workdir.join("idle-secrets"))?;
    let toml = workdir.join("idle.toml");
    std::fs::write(&toml, render(k, schema, args.pool_size, Some(&pw)))?;
    let served = Served::start(bin, &toml, admin_url, workdir, args.max_connections)?;
    std::thread::sleep(Duration::from_secs(1));
    let (rss, _) = rss_mib(served.pid())?;
    let startup = served.started_after;
    served.stop()?;
    Ok(Idle {
        startup,
        rss_mib: rss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_first_line() {
        let line = "Gateway serving 3 tenant(s) from x.toml on http://127.0.0.1:4001 (admin: http://127.0.0.1:9090); Ctrl-C or SIGTERM stops it.";
        assert_eq!(
            parse_first_line(line),
            Some(("127.0.0.1:4001".into(), "127.0.0.1:9090".into()))
        );
        assert_eq!(parse_first_line("error: x"), None);
    }

    #[test]
    fn reads_wrk_done_line() {
        let out = "Running 1s test\nBENCH requests=100 duration_us=2000000 status=3 connect=0 read=1 write=0 timeout=2 p50_us=900 p99_us=4000 max_us=9000\n";
        let w = Wrk::parse(out).unwrap();
        assert_eq!(w.requests, 100);
        assert!((w.rps() - 50.0).abs() < 1e-9);
        assert_eq!((w.non_2xx, w.socket_errors()), (3, 3));
        assert_eq!(w.p99_us, 4000.0);
    }

    #[test]
    fn reads_metrics() {
        let text = "# TYPE tenantry_connections_open gauge\ntenantry_connections_open 42\n\
                    tenantry_connections_budget 90\n\
                    tenantry_requests_total{tenant=\"a\",status=\"200\"} 10\n\
                    tenantry_requests_total{tenant=\"a\",status=\"503\"} 2\n";
        assert_eq!(metric(text, "tenantry_connections_open"), Some(42.0));
        assert_eq!(metric(text, "tenantry_connections"), None);
        assert_eq!(non_2xx_from_metrics(text), 2.0);
    }

    #[test]
    fn renders_shared_password_files() {
        let text = render(2, Path::new("/s"), 2, Some(Path::new("/w/pw")));
        assert!(text.contains("base_domains = [\"localhost\"]"));
        assert!(text.contains("requests_per_second = 100000"));
        assert!(
            text.contains("customers = [{ username = \"t0002_c\", password_file = \"/w/pw\" }]")
        );
        assert!(text.contains("secrets = \"/w/idle-secrets\""));
    }

    #[test]
    fn lua_rotates_hosts_and_tokens() {
        let t = [Target {
            host: "t0001.localhost".into(),
            token: "tnt_abc-_x".into(),
        }];
        let s = lua_script(&t).unwrap();
        assert!(s.contains("{ \"t0001.localhost\", \"Bearer tnt_abc-_x\" },"));
        assert!(s.contains("function done(summary, latency, requests)"));
        let bad = [Target {
            host: "x\"".into(),
            token: "y".into(),
        }];
        assert!(lua_script(&bad).is_err());
    }
}
