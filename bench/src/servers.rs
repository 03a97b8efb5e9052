//! The several-servers benchmark: one fleet over three throwaway servers
//! against the same fleet on one, on this machine, in one run (four fresh
//! clusters: three for the fleet, one for the single server), reported as
//! ratios three/one and never asserted:
//!
//! 1. cold `tenantry apply` of N tenants over the three servers, against N
//!    on the one (same `--jobs`: per server for the fleet, as `apply` works
//!    each server at the same time);
//! 2. no-op `plan --detailed-exitcode` of 3 x P tenants (P on each server)
//!    against 3P on the one, median of `--plan-runs`;
//! 3. the gateway over G tenants spread over the three against the same G
//!    on the one, the same total connection budget (a third of
//!    `--max-connections` on each server), wrk as in the gateway bench.
//!
//! ```text
//! cargo build --release
//! cargo run --release -p tenantry-bench -- servers [--tenants 300] [--plan-tenants 300] [--gateway-tenants 100] [--quick]
//! ```
//!
//! What does not live here: the gateway run itself (`gateway::fleet`).

use std::time::Duration;

use anyhow::{bail, Result};
use tenantry_localpg::Cluster;

use crate::gateway::fleet::{self, Side};
use crate::inventory::{self, Extra};
use crate::{median, progress, ratio, secs, Tenantry};

/// three/one ratio the cold apply should stay under.
const APPLY_TARGET: f64 = 1.0;
/// three/one ratio the no-op plan should stay under.
const PLAN_TARGET: f64 = 1.1;
/// three/one gateway throughput ratio to reach at least.
const GATEWAY_TARGET: f64 = 0.95;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Tenants of the cold apply (on each side).
    #[arg(long, default_value_t = 300)]
    pub tenants: usize,
    /// Tenants per server of the no-op plan (three times that on the one).
    #[arg(long, default_value_t = 300)]
    pub plan_tenants: usize,
    /// `--jobs` given to tenantry.
    #[arg(long, default_value_t = 4)]
    pub jobs: u16,
    /// How many times each no-op plan is timed (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub plan_runs: usize,
    /// Tenants the gateway comparison rotates over.
    #[arg(long, default_value_t = 100)]
    pub gateway_tenants: usize,
    /// Length of each measured wrk run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Untimed wrk run before each measured one.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// wrk connections (`-c`).
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// wrk threads (`-t`).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// The gateway's connection budget in all (a third on each of three).
    #[arg(long, default_value_t = 90)]
    pub max_connections: usize,
    /// A smoke run: 15 tenants, 10 per server, 9 for the gateway, 3 s runs.
    #[arg(long)]
    pub quick: bool,
}

impl Args {
    pub fn apply_quick(&mut self) {
        if self.quick {
            self.tenants = 15;
            self.plan_tenants = 10;
            self.gateway_tenants = 9;
            self.duration = Duration::from_secs(3);
            self.warmup = Duration::from_secs(1);
        }
    }
}

const NAMES: [&str; 3] = ["a", "b", "c"];

pub fn run(args: &Args) -> Result<()> {
    if args.tenants == 0 || args.plan_tenants == 0 || args.gateway_tenants == 0 {
        bail!("--tenants, --plan-tenants and --gateway-tenants must be positive");
    }
    let bin = crate::tenantry_binary()?;
    let schema = crate::schema_dir()?;
    println!("Starting four throwaway PostgreSQL clusters (three for the fleet, one alone) ...");
    let start = crate::cluster::start;
    let three = [start()?, start()?, start()?];
    let one = start()?;
    let version = one.psql("postgres", "show server_version")?;
    println!(
        "PostgreSQL {}, {} CPU(s); tenantry: {}\n",
        version.trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        bin.display()
    );
    let work = tempfile::Builder::new()
        .prefix("tenantry-bench-servers-")
        .tempdir()?;
    let servers: Vec<(String, String)> = NAMES
        .iter()
        .zip(&three)
        .map(|(n, c)| ((*n).to_owned(), c.url("postgres")))
        .collect();
    let one_url = one.url("postgres");
    let on_three = Tenantry {
        bin: &bin,
        admin_url: None,
        jobs: args.jobs,
        workdir: work.path(),
    };
    let on_one = Tenantry {
        admin_url: Some(&one_url),
        ..on_three
    };
    // Fleet "three" names its tenants t0001..., fleet "one" s0001...: their
    // generated passwords share one secrets directory.
    let fleet_file = |name: &str, n: usize, extra: &Extra| -> Result<std::path::PathBuf> {
        let path = work.path().join(format!("{name}-{n}.toml"));
        let (fleet, prefix) = if extra.servers.is_empty() {
            ("one", "s")
        } else {
            ("three", "t")
        };
        std::fs::write(
            &path,
            inventory::render_fleet(fleet, prefix, n, &schema, extra),
        )?;
        Ok(path)
    };
    let three_extra = Extra {
        servers: &servers,
        ..Extra::default()
    };
    let one_extra = Extra::default();

    // 1. Cold apply.
    let n = args.tenants;
    println!(
        "[1/3] cold apply of {n} tenants x 3 users, --jobs {}: over three servers, then on one ...",
        args.jobs
    );
    let three_toml = fleet_file("three", n, &three_extra)?;
    let apply3 = on_three.apply(&three_toml, progress("apply, three servers".into(), n))?;
    println!("  three servers: {}", apply3.summary());
    let one_toml = fleet_file("one", n, &one_extra)?;
    let apply1 = on_one.apply(&one_toml, progress("apply, one server".into(), n))?;
    println!("  one server:    {}", apply1.summary());
    let spread: Vec<String> = three
        .iter()
        .zip(NAMES)
        .map(|(c, name)| Ok(format!("{name} {}", count_dbs(c, "t")?)))
        .collect::<Result<_>>()?;
    println!("  placement over the three: {}", spread.join(", "));
    let apply_ratio = ratio(apply3.wall, apply1.wall);

    // 2. No-op plan of 3P tenants.
    let p = args.plan_tenants;
    let total = 3 * p;
    println!("[2/3] setup: both fleets grown to {total} tenants (untimed) ...");
    let three_toml = fleet_file("three", total, &three_extra)?;
    on_three.apply(
        &three_toml,
        progress("grow, three servers".into(), total.saturating_sub(n)),
    )?;
    let one_toml = fleet_file("one", total, &one_extra)?;
    on_one.apply(
        &one_toml,
        progress("grow, one server".into(), total.saturating_sub(n)),
    )?;
    println!(
        "      no-op plan over {total} tenants, {} run(s) each, alternating ...",
        args.plan_runs
    );
    let (mut walls3, mut walls1) = (Vec::new(), Vec::new());
    for i in 1..=args.plan_runs.max(1) {
        for (side, walls, t, toml) in [
            ("three servers", &mut walls3, &on_three, &three_toml),
            ("one server", &mut walls1, &on_one, &one_toml),
        ] {
            let plan = t.plan(toml)?;
            if plan.status.code() != Some(0) {
                bail!(
                    "plan over {total} applied tenants ({side}) should find nothing to do, exit {}:\n{}\n{}",
                    plan.status,
                    crate::tail(&plan.stdout, 30),
                    plan.stderr.trim()
                );
            }
            println!("  run {i}, {side}: {}", plan.summary());
            walls.push(plan.wall);
        }
    }
    let (plan3, plan1) = (median(walls3), median(walls1));
    let plan_ratio = ratio(plan3, plan1);

    // 3. The gateway.
    let g = args.gateway_tenants.min(n);
    println!(
        "[3/3] tenantry serve over {g} tenants: spread over three servers ({} connections each) and on one ({} connections) ...",
        args.max_connections / 3,
        args.max_connections
    );
    let gw_extra3 = Extra {
        servers: &servers,
        gateway_connections: Some((args.max_connections / 3).max(1)),
        requests_per_second: Some(100_000),
    };
    let gw_extra1 = Extra {
        requests_per_second: Some(100_000),
        ..Extra::default()
    };
    let gw3_toml = work.path().join("gateway-three.toml");
    std::fs::write(
        &gw3_toml,
        inventory::render_fleet("three", "t", g, &schema, &gw_extra3),
    )?;
    let gw1_toml = work.path().join("gateway-one.toml");
    std::fs::write(
        &gw1_toml,
        inventory::render_fleet("one", "s", g, &schema, &gw_extra1),
    )?;
    let settings = fleet::Settings {
        threads: args.threads,
        connections: args.connections,
        duration: args.duration,
        warmup: args.warmup,
        max_connections: args.max_connections,
    };
    let dbs3: Vec<String> = (1..=g).map(|i| inventory::tenant_name("t", i)).collect();
    let dbs1: Vec<String> = (1..=g).map(|i| inventory::tenant_name("s", i)).collect();
    let clusters3: Vec<&Cluster> = three.iter().collect();
    let gw3 = fleet::serve(
        &bin,
        work.path(),
        &Side {
            config: &gw3_toml,
            admin_url: None,
            clusters: &clusters3,
            dbs: &dbs3,
        },
        &settings,
        "three",
    )?;
    println!("  three servers: {}", gw3.line());
    let gw1 = fleet::serve(
        &bin,
        work.path(),
        &Side {
            config: &gw1_toml,
            admin_url: Some(&one_url),
            clusters: &[&one],
            dbs: &dbs1,
        },
        &settings,
        "one",
    )?;
    println!("  one server:    {}", gw1.line());
    let gw_ratio = gw3.rps() / gw1.rps().max(1e-9);

    println!("\n## Results\n");
    println!("| metric | three servers | one server | ratio | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| cold apply, {n} tenants x 3 users (`--jobs {}`) | {} | {} | {apply_ratio:.2}x | <= {APPLY_TARGET:.1}x |",
        args.jobs,
        secs(apply3.wall),
        secs(apply1.wall)
    );
    println!(
        "| no-op `plan --detailed-exitcode`, {total} tenants (median of {}) | {} | {} | {plan_ratio:.2}x | <= {PLAN_TARGET:.1}x |",
        args.plan_runs.max(1),
        secs(plan3),
        secs(plan1)
    );
    println!(
        "| gateway, {g} tenants, budget {} in all: req/s (errors) | {:.0} ({}) | {:.0} ({}) | {gw_ratio:.2}x | >= {GATEWAY_TARGET:.2}x |",
        args.max_connections,
        gw3.rps(),
        gw3.errors(),
        gw1.rps(),
        gw1.errors()
    );
    let mut missed = Vec::new();
    if apply_ratio > APPLY_TARGET {
        missed.push(format!("cold apply {apply_ratio:.2}x > {APPLY_TARGET:.1}x"));
    }
    if plan_ratio > PLAN_TARGET {
        missed.push(format!("no-op plan {plan_ratio:.2}x > {PLAN_TARGET:.1}x"));
    }
    if gw_ratio < GATEWAY_TARGET {
        missed.push(format!("gateway {gw_ratio:.2}x < {GATEWAY_TARGET:.2}x"));
    }
    if missed.is_empty() {
        println!("\nAll targets met.");
    } else {
        println!("\nTargets missed: {}.", missed.join("; "));
    }
    Ok(())
}

/// Databases of this bench's fleet (`<prefix>0001`...) on `cluster`.
fn count_dbs(cluster: &Cluster, prefix: &str) -> Result<usize> {
    let out = cluster.psql(
        "postgres",
        &format!("SELECT count(*) FROM pg_database WHERE datname ~ '^{prefix}[0-9]+$'"),
    )?;
    Ok(out.trim().parse()?)
}
