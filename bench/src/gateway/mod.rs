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
//! Where things live: this file holds the flags, the run from setup to
//! report, and the targets; `setup` the inventory, widgets and tokens;
//! `serve` the `tenantry serve` side and its measurements; `baseline` the
//! hyper server; `wrk` the load driver; `report` the printed comparison.
//!
//! What does not live here: the apply/plan and migrate benchmarks.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::{progress, secs, Tenantry};

mod baseline;
pub(crate) mod fleet;
mod logins;
mod openloop;
mod report;
mod serve;
mod setup;
pub(crate) mod usage;

pub(crate) use serve::Served;
pub(crate) use setup::token_create;
mod wrk;

use baseline::{baseline_run, BaselineRun};
use report::{ms, report, Report};
use serve::{check_widget, cpu_time, gateway_run, idle_rss, GatewayRun, Idle, PgSide};
use setup::{create_tokens, gateway_secrets, insert_widgets, render, tenant, zipf_order};
use wrk::{ensure_wrk, lua_script, lua_script_in, wrk_version, Load, Wrk};

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

#[derive(clap::Args, Debug, Clone)]
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
    /// Arrival rate of the open-loop run (requests a second).
    #[arg(long, default_value_t = 1500)]
    pub rate: u32,
    /// Logins of each login-cost measurement.
    #[arg(long, default_value_t = 300)]
    pub logins: usize,
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
            self.logins = 30;
        }
    }
}

/// One tenant as the load generator sees it.
struct Target {
    pub(super) host: String,
    pub(super) token: String,
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
    let cluster = crate::cluster::start()?;
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
        admin_url: Some(&admin_url),
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
    let tokens = create_tokens(
        &bin,
        &fleet_toml,
        Some(&admin_url),
        work.path(),
        &dbs,
        "customer",
    )?;
    // The first N tenants also get an admin and a developer token, for the
    // run whose requests are spread over the three roles.
    let mut role_tokens = Vec::new();
    for role in ["admin", "developer"] {
        let n = args.tenants.min(dbs.len());
        role_tokens.push(create_tokens(
            &bin,
            &fleet_toml,
            Some(&admin_url),
            work.path(),
            &dbs[..n],
            role,
        )?);
    }
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
        Some(&admin_url),
        work.path(),
        args.max_connections,
        &targets[..n],
        &small_lua,
        &load,
        &[&cluster],
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
            Some(&admin_url),
            work.path(),
            args.wide_budget,
            &targets[..n],
            &small_lua,
            &load,
            &[&cluster],
            None,
        )?;
        println!("  {}", r.line());
        Some(r)
    } else {
        None
    };

    // 2b. The same tenants, requests spread over their three roles: each
    // visit of a tenant comes with the next role's token.
    println!("      the same over the {n} tenants' admin, developer and customer tokens ...");
    let mut mixed: Vec<Target> = Vec::with_capacity(3 * n);
    for tokens in &role_tokens {
        for (i, token) in tokens.iter().enumerate() {
            mixed.push(Target {
                host: targets[i].host.clone(),
                token: token.clone(),
            });
        }
    }
    mixed.extend(targets[..n].iter().map(|t| Target {
        host: t.host.clone(),
        token: t.token.clone(),
    }));
    let mixed_lua = work.path().join("rotate-roles.lua");
    std::fs::write(&mixed_lua, lua_script(&mixed)?)?;
    let roles = gateway_run(
        &bin,
        &small_toml,
        Some(&admin_url),
        work.path(),
        args.max_connections,
        &mixed,
        &mixed_lua,
        &load,
        &[&cluster],
        None,
    )?;
    println!("  {}", roles.line());

    // 2c. Open loop: a fixed arrival rate over the N tenants.
    println!(
        "      open loop: {} req/s over {n} tenants, `--max-connections {}`, {} connections ...",
        args.rate, args.max_connections, args.connections
    );
    let open = serve::open_loop_run(
        &bin,
        &small_toml,
        &admin_url,
        work.path(),
        args.max_connections,
        &targets[..n],
        args.rate,
        &load,
    )?;
    println!("  {}", open.line());

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
        Some(&admin_url),
        work.path(),
        args.max_connections,
        &targets[..m],
        &many_lua,
        &load,
        &[&cluster],
        None,
    )?;
    println!("  {}", many.line());

    // 4b. The same tenants, Zipf-distributed (s = 1.0): a few hot, most cold.
    println!("      the same, hosts drawn from Zipf s=1.0 over the {m} tenants ...");
    let zipf_lua = work.path().join("zipf-many.lua");
    let order = zipf_order(m, 1.0, 50_000, 11);
    std::fs::write(&zipf_lua, lua_script_in(&targets[..m], Some(&order))?)?;
    let zipf = gateway_run(
        &bin,
        &many_toml,
        Some(&admin_url),
        work.path(),
        args.max_connections,
        &targets[..m],
        &zipf_lua,
        &load,
        &[&cluster],
        None,
    )?;
    println!("  {}", zipf.line());

    // 4c. What a new connection costs: the gateway login's rounds and the
    // default 4096.
    println!(
        "      logins: {} one after the other, per SCRAM iteration count ...",
        args.logins
    );
    let mut logins = Vec::new();
    for iterations in [
        tenantry_plan::scram::DEFAULT_ITERATIONS,
        tenantry_layout::roles::GATEWAY_SCRAM_ITERATIONS,
    ] {
        let cost = logins::login_cost(&cluster, iterations, args.logins)?;
        println!("  {}", cost.line());
        logins.push(cost);
    }

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
            roles: &roles,
            open: &open,
            zipf: &zipf,
            logins: &logins,
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
