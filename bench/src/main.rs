//! `tenantry-bench`: the real `tenantry` binary against naive `psql`
//! baselines, all measured in one run on one throwaway cluster, reported as
//! ratios (never asserted: wall-clock depends on the machine).
//!
//! 1. cold `tenantry apply` of N tenants (3 users each) vs. the same SQL fed
//!    to one `psql` per tenant, `--jobs` of them at once;
//! 2. no-op `tenantry plan --detailed-exitcode` over M tenants vs.
//!    `psql -c 'select 1'` once per tenant database, `--jobs` at once;
//! 3. peak memory (max RSS) of the apply and plan processes.
//!
//! ```text
//! cargo build --release
//! cargo run --release -p tenantry-bench -- [--tenants 100] [--plan-tenants 1000] [--jobs 4] [--quick]
//! ```
//!
//! The `migrate` subcommand benchmarks `tenantry migrate` (V1 -> V2 over a
//! fleet) against one `psql -1 -f V2.sql` per database, `--jobs` at once;
//! see [`migrate`]:
//!
//! ```text
//! cargo run --release -p tenantry-bench -- migrate [--tenants 1000] [--scaling 100,1000] [--jobs 4] [--quick]
//! ```
//!
//! The `gateway` subcommand benchmarks `tenantry serve` under `wrk` load
//! (Host and token rotating over the tenants) against a minimal hyper server
//! with one static pool, plus 1,000 tenants under a 90-connection budget and
//! the idle memory of 10,000 configured tenants; see [`gateway`]:
//!
//! ```text
//! cargo run --release -p tenantry-bench -- gateway [--tenants 100] [--duration 10s] [--connections 32] [--quick]
//! ```
//!
//! The `servers` subcommand compares one fleet over three servers with the
//! same fleet on one (apply, no-op plan, gateway); see [`servers`]:
//!
//! ```text
//! cargo run --release -p tenantry-bench -- servers [--tenants 300] [--plan-tenants 300] [--gateway-tenants 100] [--quick]
//! ```
//!
//! The `moves` subcommand moves a tenant of `--orders` orders between two
//! servers online under a writer, against `pg_dump | pg_restore` of the
//! same tenant; see [`moves`]:
//!
//! ```text
//! cargo run --release -p tenantry-bench -- moves [--orders 200000] [--quick]
//! ```
//!
//! Modules: [`inventory`] writes the `tenants.toml` files, [`baseline`] runs
//! the psql baselines, [`measure`] runs a child and reads its peak RSS,
//! [`migrate`] is the migrate benchmark, [`gateway`] the gateway benchmark.
#![deny(unsafe_code)]

mod baseline;
mod cluster;
mod gateway;
mod inventory;
mod measure;
mod migrate;
mod moves;
mod servers;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Parser;

use crate::measure::Finished;

/// Peak memory both tenantry processes should stay under.
const RSS_TARGET_MIB: f64 = 64.0;
/// Wall time the no-op plan should stay under.
const PLAN_TARGET: Duration = Duration::from_secs(2);
/// tenantry/baseline ratio the cold apply should stay under.
const APPLY_RATIO_TARGET: f64 = 1.0;

#[derive(Parser, Debug)]
#[command(
    name = "tenantry-bench",
    about = "Benchmarks tenantry against psql baselines on one throwaway cluster",
    args_conflicts_with_subcommands = true
)]
struct Args {
    /// Without a subcommand: the apply and plan benchmarks.
    #[command(subcommand)]
    command: Option<Bench>,
    /// Tenants created by the cold apply (and, separately, by the baseline).
    #[arg(long, default_value_t = 100)]
    tenants: usize,
    /// Tenants the no-op plan runs over.
    #[arg(long, default_value_t = 1000)]
    plan_tenants: usize,
    /// `--jobs` given to tenantry, and the number of `psql` the baselines
    /// run at once.
    #[arg(long, default_value_t = 4)]
    jobs: u16,
    /// How many times the no-op plan is timed (the median is reported).
    #[arg(long, default_value_t = 3)]
    plan_runs: usize,
    /// A smoke run: 10 tenants, 50 plan-tenants.
    #[arg(long)]
    quick: bool,
    /// Run on this PostgreSQL instead of the installed one: a major
    /// (`17`: Debian's, or fetched by `scripts/fetch-postgres`) or a
    /// directory holding initdb and pg_ctl. Repeat it to run the benchmark
    /// once per major, in this order, in one run.
    #[arg(long = "pg-bin", value_name = "MAJOR|DIR", global = true)]
    pg_bin: Vec<String>,
}

#[derive(clap::Subcommand, Debug, Clone)]
enum Bench {
    /// `tenantry migrate` (V1 -> V2) against one `psql -1 -f` per database.
    Migrate(migrate::Args),
    /// `tenantry serve` under wrk load against a hyper + one-pool baseline.
    Gateway(gateway::Args),
    /// One fleet over three servers against the same on one: apply, plan, gateway.
    Servers(servers::Args),
    /// A tenant moved online under a writer against pg_dump | pg_restore.
    Moves(moves::Args),
    /// The gateway with usage counting and the audit trail on against off; /api/fleet with 10,000 tenants.
    Usage(gateway::usage::Args),
}

fn main() {
    let mut args = Args::parse();
    let passes = match args
        .pg_bin
        .iter()
        .map(|a| cluster::resolve(a))
        .collect::<Result<Vec<_>>>()
    {
        Ok(dirs) if dirs.is_empty() => vec![None],
        Ok(dirs) => dirs.into_iter().map(Some).collect(),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    };
    let command = args.command.take();
    for dir in passes {
        if let Some(dir) = &dir {
            println!("=== PostgreSQL from {}\n", dir.display());
        }
        cluster::use_bin(dir);
        bench(&mut args, command.clone());
    }
}

/// One pass of the chosen benchmark.
fn bench(args: &mut Args, command: Option<Bench>) {
    let result = match command {
        Some(Bench::Migrate(mut m)) => {
            if m.quick {
                m.tenants = 20;
                m.scaling = vec![10, 20];
            }
            migrate::run(&m)
        }
        Some(Bench::Gateway(mut g)) => {
            g.apply_quick();
            gateway::run(&g)
        }
        Some(Bench::Servers(mut s)) => {
            s.apply_quick();
            servers::run(&s)
        }
        Some(Bench::Moves(m)) => moves::run(&m),
        Some(Bench::Usage(mut u)) => {
            u.apply_quick();
            gateway::usage::run(&u)
        }
        None => {
            if args.quick {
                args.tenants = 10;
                args.plan_tenants = 50;
            }
            run(args)
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// The `tenantry` binary next to this one (`target/release/tenantry`).
fn tenantry_binary() -> Result<PathBuf> {
    let me = std::env::current_exe().context("cannot locate this executable")?;
    let dir = me.parent().context("this executable has no directory")?;
    let bin = dir.join("tenantry");
    if !bin.is_file() {
        bail!(
            "{} not found: run cargo build --release first",
            bin.display()
        );
    }
    Ok(bin)
}

/// The fixture schema the tests use too (`tests/fixtures/schema`, a copy of
/// the shipped store schema): users edit the repository's `schema/`, and
/// that must not change the numbers.
fn schema_dir() -> Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/schema");
    dir.canonicalize()
        .with_context(|| format!("cannot find the schema directory {}", dir.display()))
}

/// The first (and only) migration of [`schema_dir`].
const SCHEMA_V1: &str = "V1__store.sql";

/// Everything one tenantry invocation needs.
struct Tenantry<'a> {
    bin: &'a Path,
    /// `--admin-url`; None for a file naming its servers.
    admin_url: Option<&'a str>,
    jobs: u16,
    workdir: &'a Path,
}

impl Tenantry<'_> {
    fn command(&self, subcommand: &str, config: &Path) -> Command {
        let mut cmd = Command::new(self.bin);
        cmd.arg(subcommand)
            .arg("--config")
            .arg(config)
            .args(["--jobs", &self.jobs.to_string()])
            .env_remove("TENANTRY_ADMIN_URL")
            .current_dir(self.workdir);
        if let Some(url) = self.admin_url {
            cmd.args(["--admin-url", url]);
        }
        cmd
    }

    /// `tenantry apply --auto-approve`, measured; fails unless it succeeded.
    /// `progress` sees each line tenantry prints.
    fn apply(&self, config: &Path, progress: impl FnMut(&str)) -> Result<Finished> {
        let mut cmd = self.command("apply", config);
        cmd.arg("--auto-approve");
        let done = measure::run(&mut cmd, progress).context("cannot run tenantry apply")?;
        if !done.status.success() {
            bail!(
                "tenantry apply failed ({}):\n{}\n{}",
                done.status,
                tail(&done.stdout, 40),
                done.stderr.trim()
            );
        }
        Ok(done)
    }

    /// `tenantry plan --detailed-exitcode`, measured.
    fn plan(&self, config: &Path) -> Result<Finished> {
        let mut cmd = self.command("plan", config);
        cmd.arg("--detailed-exitcode");
        measure::run(&mut cmd, |_| {}).context("cannot run tenantry plan")
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

/// Prints "what: k/n tenants (elapsed)" every tenth of the way.
fn progress(what: String, n: usize) -> impl FnMut(&str) {
    let start = Instant::now();
    let step = (n / 10).max(1);
    let mut done = 0usize;
    move |line: &str| {
        if line.contains(": created ") || line.contains(": FAILED after") {
            done += 1;
            if done.is_multiple_of(step) || done == n {
                println!(
                    "  {what}: {done}/{n} tenants ({:.1} s)",
                    start.elapsed().as_secs_f64()
                );
            }
        }
    }
}

/// CPU time `tenantry_plan::scram::verify` needs for `users` password
/// checks (100 timed, scaled): what a plan that re-checks every stored
/// verifier spends client-side.
fn scram_check_cost(users: usize) -> Duration {
    const SAMPLE: u32 = 100;
    let stored = tenantry_plan::scram::verifier("bench-password");
    let start = Instant::now();
    for _ in 0..SAMPLE {
        std::hint::black_box(tenantry_plan::scram::verify(
            std::hint::black_box("bench-password"),
            &stored,
        ));
    }
    start.elapsed() / SAMPLE * u32::try_from(users).unwrap_or(u32::MAX)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn run(args: &Args) -> Result<()> {
    let bin = tenantry_binary()?;
    let schema = schema_dir()?;
    let migration_path = schema.join(SCHEMA_V1);
    let migration = std::fs::read_to_string(&migration_path)
        .with_context(|| format!("cannot read {}", migration_path.display()))?;
    let migrations = std::fs::read_dir(&schema)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".sql"))
        .count();
    if migrations != 1 {
        println!(
            "warning: {} has {migrations} migrations; the baseline runs only {SCHEMA_V1}",
            schema.display()
        );
    }

    println!("Starting a throwaway PostgreSQL cluster ...");
    let cluster = crate::cluster::start()?;
    let version = cluster.psql("postgres", "show server_version")?;
    let max_conn = cluster.psql("postgres", "show max_connections")?;
    let admin_url = cluster.url("postgres");
    let bin_dir = crate::cluster::psql_dir(&cluster);
    println!(
        "PostgreSQL {} on port {} (max_connections {}), {} CPU(s); tenantry: {}\n",
        version.trim(),
        cluster.port(),
        max_conn.trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        bin.display()
    );

    let work = tempfile::Builder::new()
        .prefix("tenantry-bench-")
        .tempdir()?;
    let tenantry = Tenantry {
        bin: &bin,
        admin_url: Some(&admin_url),
        jobs: args.jobs,
        workdir: work.path(),
    };
    let n = args.tenants;
    let m = args.plan_tenants;

    // 1. Cold apply of N tenants.
    println!(
        "[1/4] tenantry apply: {n} tenants x 3 users, --jobs {} ...",
        args.jobs
    );
    let bench_toml = work.path().join("bench.toml");
    std::fs::write(&bench_toml, inventory::render("bench", "t", n, &schema))?;
    let apply = tenantry.apply(&bench_toml, progress("apply bench".into(), n))?;
    println!("  {}", apply.summary());
    let check = tenantry.plan(&bench_toml)?;
    if check.status.code() != Some(0) {
        println!(
            "  WARNING: plan after apply is not empty (exit {}):\n{}\n{}",
            check.status,
            tail(&check.stdout, 40),
            check.stderr.trim()
        );
    }

    // 2. Baseline: the same SQL, one psql per tenant, as many at once as tenantry's jobs.
    let workers = usize::from(args.jobs);
    println!("[2/4] baseline: {n} tenants, one psql per tenant, {workers} at once ...");
    let base_apply = baseline::provision(&bin_dir, &admin_url, "b", n, &migration, workers)?;
    println!("  {}", secs(base_apply));
    let dbs = cluster.psql(
        "postgres",
        "select count(*) from pg_database where datname ~ '^[tb][0-9]+$'",
    )?;
    if dbs.trim() != (2 * n).to_string() {
        bail!(
            "expected {} tenant databases after steps 1 and 2, found {}",
            2 * n,
            dbs.trim()
        );
    }

    // 3. The apply table.
    let apply_ratio = ratio(apply.wall, base_apply);
    println!("\n| cold apply, {n} tenants | seconds |");
    println!("|---|---|");
    println!(
        "| baseline (psql per tenant, {workers} at once) | {:.2} |",
        base_apply.as_secs_f64()
    );
    println!(
        "| tenantry --jobs {} | {:.2} |",
        args.jobs,
        apply.wall.as_secs_f64()
    );
    println!(
        "| ratio tenantry/baseline (target <= {APPLY_RATIO_TARGET:.1}x) | {apply_ratio:.2}x |\n"
    );

    // 4. No-op plan over M tenants.
    println!(
        "[3/4] setup: tenantry apply of {m} tenants (fleet plan1000), --jobs {} ...",
        args.jobs
    );
    let plan_toml = work.path().join("plan1000.toml");
    std::fs::write(&plan_toml, inventory::render("plan1000", "p", m, &schema))?;
    let setup = tenantry.apply(&plan_toml, progress("apply plan1000".into(), m))?;
    println!("  {}", setup.summary());

    println!(
        "[4/4] tenantry plan --detailed-exitcode over {m} tenants, {} run(s) ...",
        args.plan_runs
    );
    let mut plan_walls = Vec::new();
    let mut plan_rss = 0u64;
    for i in 1..=args.plan_runs.max(1) {
        let p = tenantry.plan(&plan_toml)?;
        if p.status.code() != Some(0) {
            bail!(
                "tenantry plan over {m} freshly applied tenants should report no changes (exit 0), got {}:\n{}\n{}",
                p.status,
                p.stdout.trim(),
                p.stderr.trim()
            );
        }
        println!("  run {i}: {}", p.summary());
        plan_walls.push(p.wall);
        plan_rss = plan_rss.max(p.max_rss_kib);
    }
    let plan_wall = median(plan_walls);
    let scram = scram_check_cost(3 * m);
    println!(
        "  for scale: checking {} stored SCRAM verifiers (4096 iterations each) takes {} of CPU in this process",
        3 * m,
        secs(scram)
    );
    let plan_rss_mib = plan_rss as f64 / 1024.0;

    println!("  baseline: psql -c 'select 1' on each of the {m} databases, {workers} at once ...");
    let urls: Vec<String> = (1..=m)
        .map(|i| cluster.url(&inventory::tenant_name("p", i)))
        .collect();
    let base_check = baseline::check_each(&bin_dir, &urls, workers)?;
    println!("  {}", secs(base_check));
    let plan_ratio = ratio(plan_wall, base_check);

    // 5. The summary.
    let apply_rss_mib = apply.max_rss_mib();
    println!("\n## Results\n");
    println!("| metric | tenantry | baseline | ratio | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| cold apply, {n} tenants x 3 users (`--jobs {}`) | {} | {} (same SQL, one `psql` per tenant, {workers} at once) | {apply_ratio:.2}x | <= {APPLY_RATIO_TARGET:.1}x |",
        args.jobs,
        secs(apply.wall),
        secs(base_apply)
    );
    println!(
        "| no-op `plan --detailed-exitcode`, {m} tenants (median of {}) | {} | {} (`psql -c 'select 1'` per database, {workers} at once) | {plan_ratio:.2}x | < {} s |",
        args.plan_runs.max(1),
        secs(plan_wall),
        secs(base_check),
        PLAN_TARGET.as_secs()
    );
    println!(
        "| peak RSS, apply of {n} tenants | {apply_rss_mib:.1} MiB | - | - | < {RSS_TARGET_MIB:.0} MiB |"
    );
    println!(
        "| peak RSS, plan over {m} tenants | {plan_rss_mib:.1} MiB | - | - | < {RSS_TARGET_MIB:.0} MiB |"
    );
    println!(
        "\nMeasured on one throwaway PostgreSQL {} cluster (fsync off), {} CPU(s); setup apply of {m} tenants took {} (peak RSS {:.1} MiB).",
        version.trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        secs(setup.wall),
        setup.max_rss_mib()
    );
    println!(
        "Reproduce: `cargo build --release && cargo run --release -p tenantry-bench -- --tenants {n} --plan-tenants {m} --jobs {}`",
        args.jobs
    );

    let mut missed = Vec::new();
    if apply_ratio > APPLY_RATIO_TARGET {
        missed.push(format!(
            "cold apply ratio {apply_ratio:.2}x > {APPLY_RATIO_TARGET:.1}x"
        ));
    }
    if plan_wall >= PLAN_TARGET {
        missed.push(format!(
            "no-op plan {} >= {} s",
            secs(plan_wall),
            PLAN_TARGET.as_secs()
        ));
    }
    for (what, mib) in [("apply", apply_rss_mib), ("plan", plan_rss_mib)] {
        if mib >= RSS_TARGET_MIB {
            missed.push(format!(
                "{what} peak RSS {mib:.1} MiB >= {RSS_TARGET_MIB:.0} MiB"
            ));
        }
    }
    report_targets(&missed);
    Ok(())
}

/// Prints whether the run met its targets. Misses are reported, never
/// asserted: wall-clock numbers belong in README, not in a pass/fail.
pub fn report_targets(missed: &[String]) {
    if missed.is_empty() {
        println!("\nAll targets met.");
    } else {
        println!(
            "\nTargets missed (reported, not asserted): {}.",
            missed.join("; ")
        );
    }
}
