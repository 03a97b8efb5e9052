//! The migrate benchmark: `tenantry migrate` bringing a fleet from V1 to V2
//! against the naive way, one `psql -1 -f V2.sql` per database, `--jobs` of
//! them at once (as `xargs -P` would), all in one run on one throwaway
//! cluster.
//!
//! 1. setup (untimed, but reported): a temp schema directory holding a copy
//!    of the bench's V1 (`tests/fixtures/schema`); for each size, two fleets of that many
//!    tenants (one admin user each) applied by `tenantry apply`, so both
//!    start identical at V1: one for tenantry, one for the baseline;
//! 2. V2 (a table, an index and a column) is added to the schema directory;
//! 3. per size: `tenantry migrate` (tenantry picks `--jobs`) on the first
//!    fleet, then the baseline on the second: `SET ROLE <db>_owner`, V2, and
//!    the history row, in one `psql -1` transaction per database, `--jobs`
//!    `psql` at once;
//! 4. for the main size also a no-op `tenantry migrate`, then
//!    `tenantry migrate --jobs J` and the baseline again, each after
//!    resetting its fleet to V1 (untimed), so that pair is measured side by
//!    side too (the first pair runs right after setup, on a colder cluster);
//! 5. every database of every timed run is checked: history at V2 with
//!    tenantry's checksum, table and index owned by `<db>_owner`, column there.
//!
//! What does not live here: the apply/plan benchmarks (`main.rs`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use tenantry_localpg::Cluster;

use crate::measure::{self, Finished};
use crate::{
    baseline, inventory, progress, ratio, report_targets, secs, tail, Tenantry, RSS_TARGET_MIB,
};

/// tenantry/baseline ratio the migration should stay under: no slower than
/// the same file through as many `psql` at once (tenantry also reads and
/// checks each database's history and takes its migration lock).
const MIGRATE_RATIO_TARGET: f64 = 1.0;

/// The migration every tenant is brought to.
const V2_FILE: &str = "V2__reviews.sql";
const V2_SQL: &str = "\
-- Product reviews, and a SKU on widgets.
CREATE TABLE reviews (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    widget_id   bigint      NOT NULL REFERENCES widgets (id),
    rating      integer     NOT NULL CHECK (rating BETWEEN 1 AND 5),
    body        text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reviews_widget_id_idx ON reviews (widget_id);
ALTER TABLE widgets ADD COLUMN sku text;
";

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Tenants migrated in the main measurement (and, separately, by the baseline).
    #[arg(long, default_value_t = 1000)]
    pub tenants: usize,
    /// Sizes of the scaling runs (fresh tenants for each, same cluster).
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    pub scaling: Vec<usize>,
    /// `--jobs` of the extra tenantry run at the main size (the main run
    /// lets tenantry pick), and the number of `psql` the baseline runs at once.
    #[arg(long, default_value_t = 4)]
    pub jobs: u16,
    /// `--jobs` of the setup applies (untimed).
    #[arg(long, default_value_t = 8)]
    pub setup_jobs: u16,
    /// A smoke run: 20 tenants, scaling 10,20.
    #[arg(long)]
    pub quick: bool,
}

/// The two fleets of one size.
struct Size {
    n: usize,
    /// Migrated by tenantry.
    ours: Fleet,
    /// Migrated by the psql baseline.
    base: Fleet,
}

struct Fleet {
    toml: PathBuf,
    dbs: Vec<String>,
}

/// One timed `tenantry migrate`.
struct Run {
    done: Finished,
    /// The worker count tenantry reported ("..., 8 at a time").
    jobs: String,
    /// Sum of the per-tenant durations tenantry reported, and their count.
    tenant_ms: u64,
    migrated: usize,
}

impl Run {
    fn per_tenant_ms(&self) -> f64 {
        self.tenant_ms as f64 / self.migrated.max(1) as f64
    }
}

/// What one size measured.
struct Measured {
    n: usize,
    ours: Run,
    base: Duration,
}

fn ms_per(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1000.0 / n.max(1) as f64
}

pub fn run(args: &Args) -> Result<()> {
    let bin = crate::tenantry_binary()?;
    let v1_path = crate::schema_dir()?.join(crate::SCHEMA_V1);
    let v1 = std::fs::read_to_string(&v1_path)
        .with_context(|| format!("cannot read {}", v1_path.display()))?;
    let mut sizes: Vec<usize> = args.scaling.clone();
    sizes.push(args.tenants);
    sizes.retain(|&n| n > 0);
    sizes.sort_unstable();
    sizes.dedup();
    if sizes.is_empty() {
        bail!("nothing to measure: --tenants and --scaling are all 0");
    }

    println!("Starting a throwaway PostgreSQL cluster ...");
    let cluster = crate::cluster::start()?;
    let version = cluster.psql("postgres", "show server_version")?;
    let max_conn = cluster.psql("postgres", "show max_connections")?;
    let admin_url = cluster.url("postgres");
    let bin_dir = crate::cluster::psql_dir(&cluster);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "PostgreSQL {} on port {} (max_connections {}), {cpus} CPU(s); tenantry: {}\n",
        version.trim(),
        cluster.port(),
        max_conn.trim(),
        bin.display()
    );

    let work = tempfile::Builder::new()
        .prefix("tenantry-bench-migrate-")
        .tempdir()?;
    let schema = work.path().join("schema");
    std::fs::create_dir(&schema)?;
    std::fs::write(schema.join(crate::SCHEMA_V1), &v1)?;
    let tenantry = Tenantry {
        bin: &bin,
        admin_url: Some(&admin_url),
        jobs: args.setup_jobs,
        workdir: work.path(),
    };

    // 1. Setup: two fleets per size, at V1.
    let total: usize = sizes.iter().map(|n| 2 * n).sum();
    println!(
        "[setup] tenantry apply --jobs {} of {total} tenants (2 fleets per size {sizes:?}, 1 user each), at V1 ...",
        args.setup_jobs
    );
    let setup_start = Instant::now();
    let mut fleets = Vec::new();
    for &n in &sizes {
        let mut pair = Vec::new();
        for (fleet, prefix) in [
            (format!("mig{n}"), format!("m{n}_")),
            (format!("base{n}"), format!("b{n}_")),
        ] {
            let toml = work.path().join(format!("{fleet}.toml"));
            std::fs::write(
                &toml,
                inventory::render_admins_only(&fleet, &prefix, n, &schema),
            )?;
            let done = tenantry.apply(&toml, progress(format!("apply {fleet}"), n))?;
            println!("  {fleet}: {n} tenants, {}", done.summary());
            let dbs = (1..=n)
                .map(|i| inventory::tenant_name(&prefix, i))
                .collect();
            pair.push(Fleet { toml, dbs });
        }
        let base = pair.pop().expect("two fleets");
        let ours = pair.pop().expect("two fleets");
        fleets.push(Size { n, ours, base });
    }
    let setup = setup_start.elapsed();
    println!("  setup took {}", secs(setup));
    // Creating thousands of databases leaves the checkpointer with a lot to
    // write; let it finish before anything is timed.
    let settle = Instant::now();
    cluster.psql("postgres", "CHECKPOINT")?;
    std::thread::sleep(Duration::from_secs(2));
    println!(
        "  CHECKPOINT and settle: {} (untimed)\n",
        secs(settle.elapsed())
    );
    for s in &fleets {
        verify(&cluster, &s.ours.dbs, 1, None).context("after setup")?;
        verify(&cluster, &s.base.dbs, 1, None).context("after setup")?;
    }

    // 2. V2 appears in the schema directory.
    std::fs::write(schema.join(V2_FILE), V2_SQL)?;
    let base_sql = work.path().join("baseline-V2.sql");
    std::fs::write(&base_sql, baseline_script())?;

    // 3. Measure each size.
    let mut measured = Vec::new();
    let mut extra: Option<(Run, Run, Duration)> = None;
    for (i, s) in fleets.iter().enumerate() {
        let n = s.n;
        println!("[{}/{}] {n} tenants: V1 -> V2", i + 1, fleets.len());
        let ours = migrate(&tenantry, &s.ours.toml, None, n)?;
        println!(
            "  tenantry migrate (it picked {} jobs): {}; {} migrated, mean {:.1} ms per tenant inside tenantry",
            ours.jobs,
            ours.done.summary(),
            ours.migrated,
            ours.per_tenant_ms()
        );
        let checksum = verify(&cluster, &s.ours.dbs, 2, None).context("after tenantry migrate")?;
        let workers = usize::from(args.jobs);
        let base = run_baseline(
            &bin_dir,
            &cluster,
            &s.base.dbs,
            &base_sql,
            &checksum,
            workers,
        )?;
        println!(
            "  baseline, one psql -1 per database, {workers} at once: {} ({:.1} ms per tenant)",
            secs(base),
            ms_per(base, n)
        );
        verify(&cluster, &s.base.dbs, 2, Some(&checksum)).context("after the baseline")?;
        if n == args.tenants {
            let noop = migrate(&tenantry, &s.ours.toml, None, n)?;
            println!(
                "  no-op tenantry migrate (all at V2): {}",
                noop.done.summary()
            );
            reset(&cluster, &s.ours.dbs)?;
            verify(&cluster, &s.ours.dbs, 1, None).context("after the reset")?;
            let fixed = migrate(&tenantry, &s.ours.toml, Some(args.jobs), n)?;
            println!(
                "  tenantry migrate --jobs {} (after a reset to V1): {}; mean {:.1} ms per tenant inside tenantry",
                args.jobs,
                fixed.done.summary(),
                fixed.per_tenant_ms()
            );
            verify(&cluster, &s.ours.dbs, 2, Some(&checksum))
                .context("after tenantry migrate --jobs")?;
            reset(&cluster, &s.base.dbs)?;
            verify(&cluster, &s.base.dbs, 1, None).context("after the reset")?;
            let again = run_baseline(
                &bin_dir,
                &cluster,
                &s.base.dbs,
                &base_sql,
                &checksum,
                workers,
            )?;
            println!(
                "  baseline again (after a reset to V1): {} ({:.1} ms per tenant)",
                secs(again),
                ms_per(again, n)
            );
            verify(&cluster, &s.base.dbs, 2, Some(&checksum)).context("after the baseline")?;
            extra = Some((noop, fixed, again));
        }
        measured.push(Measured { n, ours, base });
    }

    // 4. Report.
    let main = measured
        .iter()
        .find(|m| m.n == args.tenants)
        .context("the main size was not measured")?;
    let (noop, fixed, again) = extra.context("the main size was not measured")?;
    let n = args.tenants;
    let main_ratio = ratio(main.ours.done.wall, main.base);
    let fixed_ratio = ratio(fixed.done.wall, again);
    println!("\n## Results: `tenantry migrate`\n");
    println!("| metric | tenantry | baseline | ratio | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| migrate V1 -> V2, {n} tenants (jobs picked by tenantry: {}) | {} | {} (`psql -1 -f V2.sql` per database, {} at once) | {main_ratio:.2}x | <= {MIGRATE_RATIO_TARGET:.1}x |",
        main.ours.jobs,
        secs(main.ours.done.wall),
        secs(main.base),
        args.jobs
    );
    println!(
        "| migrate V1 -> V2, {n} tenants, `--jobs {}`, both after a reset to V1 | {} | {} (same) | {fixed_ratio:.2}x | <= {MIGRATE_RATIO_TARGET:.1}x |",
        args.jobs,
        secs(fixed.done.wall),
        secs(again)
    );
    println!(
        "| no-op migrate, {n} tenants already at V2 | {} | - | - | - |",
        secs(noop.done.wall)
    );
    for (what, run) in [
        (format!("jobs {}", main.ours.jobs), &main.ours),
        (format!("`--jobs {}`", args.jobs), &fixed),
    ] {
        println!(
            "| peak RSS, migrate of {n} tenants ({what}) | {:.1} MiB | - | - | < {RSS_TARGET_MIB:.0} MiB |",
            run.done.max_rss_mib()
        );
    }
    println!(
        "\n| scaling (tenantry picks jobs) | tenantry | ms/tenant | baseline | ms/tenant | ratio |"
    );
    println!("|---|---|---|---|---|---|");
    for m in &measured {
        println!(
            "| {} tenants | {} | {:.1} | {} | {:.1} | {:.2}x |",
            m.n,
            secs(m.ours.done.wall),
            ms_per(m.ours.done.wall, m.n),
            secs(m.base),
            ms_per(m.base, m.n),
            ratio(m.ours.done.wall, m.base)
        );
    }
    println!(
        "\nMeasured on one throwaway PostgreSQL {} cluster (fsync off), {cpus} CPU(s); V2 adds a table, an index and a column; \
         each baseline transaction also sets the role and writes the history row, as tenantry does; the baseline runs {} psql at once. \
         Setup (tenantry apply of {total} tenants at V1, --jobs {}) took {}.",
        version.trim(),
        args.jobs,
        args.setup_jobs,
        secs(setup)
    );
    let scaling = args
        .scaling
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    println!(
        "Reproduce: `cargo build --release && cargo run --release -p tenantry-bench -- migrate --tenants {n} --scaling {scaling} --jobs {}`",
        args.jobs
    );

    let mut missed = Vec::new();
    for (what, r) in [("picked jobs", main_ratio), ("--jobs", fixed_ratio)] {
        if r > MIGRATE_RATIO_TARGET {
            missed.push(format!(
                "migrate ({what}) ratio {r:.2}x > {MIGRATE_RATIO_TARGET:.1}x"
            ));
        }
    }
    for run in [&main.ours, &fixed, &noop] {
        let mib = run.done.max_rss_mib();
        if mib >= RSS_TARGET_MIB {
            missed.push(format!(
                "migrate peak RSS {mib:.1} MiB >= {RSS_TARGET_MIB:.0} MiB"
            ));
        }
    }
    report_targets(&missed);
    Ok(())
}

/// `tenantry migrate` over `config`, measured; fails unless it exited 0.
fn migrate(t: &Tenantry, config: &Path, jobs: Option<u16>, n: usize) -> Result<Run> {
    let mut cmd = Command::new(t.bin);
    cmd.arg("migrate")
        .arg("--config")
        .arg(config)
        .env_remove("TENANTRY_ADMIN_URL")
        .env_remove("RUST_LOG")
        .current_dir(t.workdir);
    if let Some(url) = t.admin_url {
        cmd.args(["--admin-url", url]);
    }
    if let Some(j) = jobs {
        cmd.args(["--jobs", &j.to_string()]);
    }
    let done = measure::run(&mut cmd, |_| {}).context("cannot run tenantry migrate")?;
    if !done.status.success() {
        bail!(
            "tenantry migrate failed ({}):\n{}\n{}",
            done.status,
            tail(&done.stdout, 40),
            done.stderr.trim()
        );
    }
    let (migrated, tenant_ms) = per_tenant(&done.stdout);
    let listed = done
        .stdout
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(3)
                .is_some_and(|d| d.ends_with("ms"))
        })
        .count();
    if listed != n {
        bail!(
            "tenantry migrate reported {listed} tenants, expected {n}:\n{}",
            tail(&done.stdout, 40)
        );
    }
    Ok(Run {
        jobs: picked_jobs(&done.stdout).unwrap_or_else(|| "?".into()),
        done,
        tenant_ms,
        migrated,
    })
}

/// "Migrating 1000 tenant(s) to V2 (...), 8 at a time." -> "8".
fn picked_jobs(stdout: &str) -> Option<String> {
    let line = stdout.lines().find(|l| l.starts_with("Migrating "))?;
    let before = &line[..line.find(" at a time")?];
    Some(before.rsplit(' ').next()?.to_owned())
}

/// From tenantry's report table, the tenants it migrated and the sum of
/// their durations in ms.
fn per_tenant(stdout: &str) -> (usize, u64) {
    let mut count = 0;
    let mut sum = 0;
    for line in stdout.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() >= 5 && cols[4] == "migrated" {
            if let Some(ms) = cols[3]
                .strip_suffix("ms")
                .and_then(|d| d.parse::<u64>().ok())
            {
                count += 1;
                sum += ms;
            }
        }
    }
    (count, sum)
}

/// V2 as the baseline runs it: the role tenantry migrates as, the file,
/// and the history row, all in the one transaction `psql -1` makes.
fn baseline_script() -> String {
    format!(
        "SET ROLE :\"owner\";\n{V2_SQL}\n;\n\
         INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
         VALUES (2, 'reviews', now()::text, :'checksum');\n"
    )
}

/// One `psql -1 -f` per database, `workers` at once; returns the total.
fn run_baseline(
    bin_dir: &Path,
    cluster: &Cluster,
    dbs: &[String],
    file: &Path,
    checksum: &str,
    workers: usize,
) -> Result<Duration> {
    baseline::parallel(dbs.len(), workers, |i| {
        let db = &dbs[i];
        let out = baseline::psql(bin_dir, &cluster.url(db))
            .args(["-1", "-v"])
            .arg(format!("owner={db}_owner"))
            .arg("-v")
            .arg(format!("checksum={checksum}"))
            .arg("-f")
            .arg(file)
            .stdin(Stdio::null())
            .output()
            .context("cannot run psql")?;
        if !out.status.success() {
            bail!(
                "baseline psql on {db} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    })
}

/// Checks every database in `dbs` (one psql session, `\c` to each): the
/// history is at `version`, and at V2 the table and index exist, owned by
/// `<db>_owner`, and widgets has `sku`. Every V2 row must have the same
/// checksum (`expect`, if given); returns it ("" at V1).
fn verify(cluster: &Cluster, dbs: &[String], version: i64, expect: Option<&str>) -> Result<String> {
    let mut script = String::new();
    for db in dbs {
        let _ = writeln!(
            script,
            "\\c {db}\n\
             SELECT current_database(), (SELECT max(version) FROM refinery_schema_history), \
             (SELECT count(*) FROM pg_class WHERE relname IN ('reviews', 'reviews_widget_id_idx') \
               AND relowner = (SELECT oid FROM pg_roles WHERE rolname = current_database() || '_owner')), \
             (SELECT count(*) FROM pg_attribute WHERE attrelid = 'widgets'::regclass AND attname = 'sku' AND NOT attisdropped), \
             coalesce((SELECT checksum FROM refinery_schema_history WHERE version = 2), '');"
        );
    }
    let out = cluster.psql("postgres", &script)?;
    let lines: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    if lines.len() != dbs.len() {
        bail!(
            "verification read {} databases, expected {}",
            lines.len(),
            dbs.len()
        );
    }
    let mut checksum = expect.map(str::to_owned);
    for (db, line) in dbs.iter().zip(&lines) {
        let cols: Vec<&str> = line.split('|').collect();
        let objects = if version >= 2 { "2" } else { "0" };
        let column = if version >= 2 { "1" } else { "0" };
        let ok = cols.len() == 5
            && cols[0] == db
            && cols[1] == version.to_string()
            && cols[2] == objects
            && cols[3] == column;
        if !ok {
            bail!("{db} is not as expected at V{version}: {line}");
        }
        match &checksum {
            None => checksum = Some(cols[4].to_owned()),
            Some(c) if c != cols[4] => {
                bail!("{db}: V2 checksum {:?}, expected {c:?}", cols[4])
            }
            Some(_) => {}
        }
    }
    Ok(checksum.unwrap_or_default())
}

/// Takes `dbs` back to V1 (untimed): drops what V2 made and its history row.
fn reset(cluster: &Cluster, dbs: &[String]) -> Result<()> {
    let mut script = String::new();
    for db in dbs {
        let _ = writeln!(
            script,
            "\\c {db}\n\
             SET ROLE \"{db}_owner\";\n\
             DROP TABLE reviews;\n\
             ALTER TABLE widgets DROP COLUMN sku;\n\
             DELETE FROM refinery_schema_history WHERE version = 2;"
        );
    }
    cluster.psql("postgres", &script)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_picked_jobs_and_per_tenant_times() {
        let out = "Migrating 2 tenant(s) to V2 (2 migration(s) in /x), 8 at a time.\n\n\
                   TENANT   FROM TO DURATION  RESULT ERROR\n\
                   m2_0001  V1 V2 12ms  migrated\n\
                   m2_0002  V2 V2 3ms  up to date\n";
        assert_eq!(picked_jobs(out).as_deref(), Some("8"));
        assert_eq!(per_tenant(out), (1, 12));
    }

    #[test]
    fn baseline_sets_the_role_and_writes_history_in_the_file() {
        let s = baseline_script();
        assert!(s.starts_with("SET ROLE :\"owner\";"));
        assert!(s.contains("CREATE INDEX reviews_widget_id_idx"));
        assert!(s.contains("VALUES (2, 'reviews', now()::text, :'checksum')"));
    }
}
