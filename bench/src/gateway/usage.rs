//! The usage benchmark: what counting requests, measuring storage and
//! recording API writes in the audit trail cost the gateway, and how fast
//! the console's JSON is with a large fleet.
//!
//! 1. setup (untimed): `tenantry apply` of N tenants (plan `bench`), a
//!    widget and a developer token each;
//! 2. `tenantry serve` over them, wrk rotating over the N hosts, one
//!    request in `--write-every` a `PUT /api/widgets/1` (an audited write),
//!    the rest `GET /api/widgets/1`: runs alternate between usage on (the
//!    defaults: a flush every 5 s, storage measured at the start and every
//!    60 s; `--flush-interval` to try others) and `--no-usage`, the same
//!    settings otherwise; the median of each side and their ratio;
//! 3. `tenantry serve` with 10,000 tenants configured (not created; one
//!    request each first, so every tenant has a chart), `GET /api/fleet`
//!    and `GET /` timed, one after the other.
//!
//! What does not live here: the gateway-against-baseline benchmark (`mod`).

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::serve::{http_get, Served};
use super::setup::{create_tokens, gateway_secrets, insert_widgets, render, tenant};
use super::wrk::{ensure_wrk, lua_script_writing, wrk_version, Load};
use super::{ms, Target};
use crate::secs;

/// usage-on / usage-off throughput the gateway should keep at least.
const RATIO_TARGET: f64 = 0.95;
/// The slowest `/api/fleet` answer with 10,000 tenants allowed.
const FLEET_TARGET: Duration = Duration::from_millis(100);

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Tenants the load rotates over.
    #[arg(long, default_value_t = 50)]
    pub tenants: usize,
    /// Length of each measured wrk run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Runs of each side (alternating, on first).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// wrk connections (`-c`).
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// wrk threads (`-t`).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// One request in this many is a write (0: reads only).
    #[arg(long, default_value_t = 5)]
    pub write_every: u32,
    /// The gateway's `--usage-flush-interval` on the measured side (its
    /// default: 5s).
    #[arg(long, default_value = "5s")]
    pub flush_interval: String,
    /// Tenants configured for the `/api/fleet` timing.
    #[arg(long, default_value_t = 10_000)]
    pub fleet_tenants: usize,
    /// A smoke run: 10 tenants, 3 s runs, one each, 1,000 fleet tenants.
    #[arg(long)]
    pub quick: bool,
}

impl Args {
    pub fn apply_quick(&mut self) {
        if self.quick {
            self.tenants = 10;
            self.duration = Duration::from_secs(3);
            self.runs = 1;
            self.fleet_tenants = 1000;
        }
    }
}

pub fn run(args: &Args) -> Result<()> {
    if args.tenants == 0 || args.runs == 0 || args.fleet_tenants == 0 {
        bail!("--tenants, --runs and --fleet-tenants must be positive");
    }
    let bin = crate::tenantry_binary()?;
    let schema = crate::schema_dir()?;
    let wrk = ensure_wrk()?;
    println!("Starting a throwaway PostgreSQL cluster ...");
    let cluster = crate::cluster::start()?;
    let version = cluster.psql("postgres", "show server_version")?;
    let admin_url = cluster.url("postgres");
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "PostgreSQL {}, {cpus} CPU(s); load: {}\n",
        version.trim(),
        wrk_version(&wrk)
    );
    let work = tempfile::Builder::new()
        .prefix("tenantry-bench-usage-")
        .tempdir()?;
    let tenantry = crate::Tenantry {
        bin: &bin,
        admin_url: Some(&admin_url),
        jobs: 8,
        workdir: work.path(),
    };

    // 1. Setup.
    let n = args.tenants;
    println!("[1/3] setup: {n} tenants, a widget and a developer token each ...");
    let toml = work.path().join("usage.toml");
    std::fs::write(&toml, render(n, &schema, 2, None))?;
    tenantry.apply(&toml, crate::progress("apply".into(), n))?;
    let dbs: Vec<String> = (1..=n).map(tenant).collect();
    insert_widgets(&cluster, &dbs)?;
    let tokens = create_tokens(
        &bin,
        &toml,
        Some(&admin_url),
        work.path(),
        &dbs,
        "developer",
    )?;
    let targets: Vec<Target> = dbs
        .iter()
        .zip(tokens)
        .map(|(db, token)| Target {
            host: format!("{db}.localhost"),
            token,
        })
        .collect();
    let script = work.path().join("mixed.lua");
    std::fs::write(
        &script,
        lua_script_writing(&targets, None, args.write_every)?,
    )?;
    cluster.psql("postgres", "CHECKPOINT")?;
    let load = Load {
        wrk: &wrk,
        threads: args.threads,
        connections: args.connections,
        duration: args.duration,
        warmup: Duration::from_secs(2),
    };

    // 2. On against off, alternating.
    println!(
        "[2/3] usage and audit on (--usage-flush-interval {}) against --no-usage: wrk -t{} -c{} -d{} over {n} hosts, 1 write in {}, {} run(s) each ...",
        args.flush_interval,
        args.threads,
        args.connections,
        secs(args.duration),
        args.write_every,
        args.runs
    );
    let on_flags = ["--usage-flush-interval", args.flush_interval.as_str()];
    let (mut on, mut off) = (Vec::new(), Vec::new());
    let mut audited = 0u64;
    for run in 0..args.runs {
        for usage in [true, false] {
            let flags: &[&str] = if usage { &on_flags } else { &["--no-usage"] };
            let served = Served::start_with(&bin, &toml, Some(&admin_url), work.path(), 90, flags)?;
            let before = if usage {
                audit_rows(&cluster, &dbs)?
            } else {
                0
            };
            let w = load.measure(&served.api, &script, || {})?;
            served.stop()?; // flushes what is pending
            if usage {
                audited += audit_rows(&cluster, &dbs)?.saturating_sub(before);
            }
            println!(
                "  run {} usage {}: {}",
                run + 1,
                if usage { "on " } else { "off" },
                w.line()
            );
            if w.non_2xx > 0 || w.socket_errors() > 0 {
                bail!("errors under load: {}", w.line());
            }
            if usage { &mut on } else { &mut off }.push(w.rps());
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (on_rps, off_rps) = (median(&mut on), median(&mut off));
    let ratio = on_rps / off_rps;
    println!("  audit entries written by the gateway during the runs with usage on: {audited}\n");

    // 3. /api/fleet with a large fleet.
    let k = args.fleet_tenants;
    println!("[3/3] tenantry serve with {k} tenants configured (not created): GET /api/fleet and GET / ...");
    let pw = work.path().join("shared-password");
    std::fs::write(&pw, "not-a-real-password\n")?;
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    gateway_secrets(&work.path().join("idle-secrets"), (1..=k).map(tenant))?;
    let big = work.path().join("fleet.toml");
    std::fs::write(&big, render(k, &schema, 2, Some(&pw)))?;
    let served = Served::start(&bin, &big, Some(&admin_url), work.path(), 90)?;
    // One request per tenant (answered 503: not created), so each has an hour.
    for i in 1..=k {
        let (status, _) = http_get(
            &served.api,
            "/api/widgets",
            &format!("{}.localhost", tenant(i)),
            Some("tnt_x"),
        )?;
        if status < 400 {
            bail!("tenant {} answered {status}", tenant(i));
        }
    }
    let mut fleet = Vec::new();
    let mut page = Vec::new();
    let mut bytes = 0;
    for _ in 0..20 {
        let t = Instant::now();
        let (status, body) = http_get(&served.admin, "/api/fleet", "localhost", None)?;
        fleet.push(t.elapsed());
        if status != 200 || !body.contains(&tenant(k)) {
            bail!("/api/fleet answered {status} without the last tenant");
        }
        bytes = body.len();
        let t = Instant::now();
        let (status, _) = http_get(&served.admin, "/", "localhost", None)?;
        page.push(t.elapsed());
        if status != 200 {
            bail!("/ answered {status}");
        }
    }
    served.stop()?;
    fleet.sort();
    page.sort();
    let (fleet_median, fleet_max) = (fleet[fleet.len() / 2], fleet[fleet.len() - 1]);

    println!("\n## Results: usage, audit and the console\n");
    println!("| measure | value | target |\n|---|---|---|");
    println!(
        "| throughput, usage and audit on ({} runs, median) | {on_rps:.0} req/s | |",
        on.len()
    );
    println!("| throughput, `--no-usage` (median) | {off_rps:.0} req/s | |");
    println!(
        "| ratio on / off | {ratio:.2}x | >= {RATIO_TARGET}x {} |",
        verdict(ratio >= RATIO_TARGET)
    );
    println!(
        "| `GET /api/fleet`, {k} tenants ({:.1} MB), median / slowest of 20 | {} / {} | < {} {} |",
        bytes as f64 / 1e6,
        ms(fleet_median.as_secs_f64() * 1e6),
        ms(fleet_max.as_secs_f64() * 1e6),
        ms(FLEET_TARGET.as_secs_f64() * 1e6),
        verdict(fleet_max < FLEET_TARGET)
    );
    println!(
        "| `GET /` (the console's HTML), {k} tenants, median | {} | |",
        ms(page[page.len() / 2].as_secs_f64() * 1e6)
    );
    Ok(())
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**missed**"
    }
}

/// Rows of `tenantry.audit` over `dbs`.
fn audit_rows(cluster: &tenantry_localpg::Cluster, dbs: &[String]) -> Result<u64> {
    let mut script = String::new();
    for db in dbs {
        script.push_str(&format!(
            "\\c {db}\nSELECT count(*) FROM tenantry.audit WHERE action = 'api.write';\n"
        ));
    }
    Ok(cluster
        .psql("postgres", &script)?
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .sum())
}
