//! The baselines tenantry is compared with, measured in the same run on the
//! same cluster:
//!
//! - **provisioning**: what a shell script around generated SQL would do:
//!   one `psql` per tenant, fed the very statements tenantry runs (built
//!   with `tenantry_plan::statements`), each block in its own transaction as
//!   tenantry does, plus the schema migration and a minimal migration-history
//!   row;
//! - **checking**: `psql -c 'select 1'` once per tenant database (what "look
//!   at each database" costs naively).
//!
//! Each runs as many `psql` at once as tenantry gets workers (`--jobs`, like
//! `xargs -P`): a ratio against a baseline with less parallelism would
//! measure the parallelism, not tenantry.
//!
//! What does not live here: running tenantry, or reporting.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use rand::distributions::Alphanumeric;
use rand::Rng as _;
use tenantry_layout::{history, Kind};
use tenantry_manifest::Status;
use tenantry_plan::model::DesiredTenant;
use tenantry_plan::scram;
use tenantry_plan::statements::{self, Memberships, UserSpec};

use crate::inventory;

/// The fleet named in the baseline's ownership markers (not the tenantry
/// fleets', so no tenantry run ever plans to touch these tenants).
const FLEET: &str = "baseline";

/// A `psql` command (`-X -q -v ON_ERROR_STOP=1`) connecting to `url`, with
/// the environment that could redirect it removed.
pub fn psql(bin_dir: &Path, url: &str) -> Command {
    let mut cmd = Command::new(bin_dir.join("psql"));
    cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url]);
    tenantry_localpg::without_libpq_env(&mut cmd);
    cmd
}

fn desired(name: String) -> DesiredTenant {
    let name = tenantry_layout::Ident::parse(&name).expect("bench tenant names are valid");
    DesiredTenant {
        gateway: tenantry_plan::model::DesiredGateway {
            name: tenantry_layout::gateway_login(&name),
            password: None,
        },
        moving: None,
        name,
        plan: "starter".into(),
        status: Status::Active,
        deletion_protection: true,
        connection_limit: inventory::CONNECTION_LIMIT,
        statement_timeout_ms: inventory::STATEMENT_TIMEOUT_MS,
        statement_timeout: inventory::STATEMENT_TIMEOUT.into(),
        users: vec![],
    }
}

/// One block as a transaction, as tenantry's `tx` runs it.
fn push_tx(script: &mut String, sql: &[String]) {
    script.push_str("BEGIN;\n");
    push(script, sql);
    script.push_str("COMMIT;\n");
}

fn push(script: &mut String, sql: &[String]) {
    for s in sql {
        script.push_str(s);
        script.push_str(";\n");
    }
}

/// The whole `psql` script that provisions tenant `db` from scratch: the
/// statements tenantry's apply runs for a new tenant, in the same order
/// (group roles, the gateway login, database, migration as the owner,
/// privileges, token store, users).
/// Passwords are generated and turned into SCRAM verifiers here, as
/// tenantry does.
pub fn script(db: &str, migration: &str) -> String {
    let t = desired(db.to_owned());
    let mut s = String::new();
    for kind in [Kind::Owner, Kind::Admin, Kind::Developer, Kind::Customer] {
        push_tx(
            &mut s,
            &statements::group_role(FLEET, db, kind, true, &[], &[], Memberships::default()),
        );
    }
    let gateway = scram::verifier_iterations(
        &password(),
        tenantry_layout::roles::GATEWAY_SCRAM_ITERATIONS,
    );
    push_tx(
        &mut s,
        &statements::gateway_login(
            FLEET,
            &t,
            true,
            Some(&gateway),
            &[],
            &[],
            Memberships::default(),
        ),
    );
    push(&mut s, &[statements::create_database(&t)]);
    push_tx(&mut s, &statements::database(FLEET, &t, true, &[]));
    s.push_str(&format!("\\c {db}\n"));
    // As apply does as a superuser (needed on PostgreSQL 14).
    push(&mut s, &[statements::public_schema_to_owner(&t)]);
    push(&mut s, &[statements::set_owner_role(&t)]);
    push(&mut s, &[history::CREATE.to_owned()]);
    s.push_str("BEGIN;\n");
    s.push_str(migration);
    s.push_str(&format!(
        "\n;\n{} VALUES (1, 'init', now()::text, '0');\nCOMMIT;\n",
        history::INSERT
            .split(" VALUES")
            .next()
            .expect("an INSERT has VALUES")
    ));
    push_tx(&mut s, &statements::privileges(&t, &[], true));
    push_tx(&mut s, &statements::token_store(&t, &[]));
    push(&mut s, &["RESET ROLE".to_owned()]);
    for (user, group) in inventory::users(db) {
        let verifier = scram::verifier(&password());
        let spec = UserSpec {
            fleet: FLEET,
            tenant: &t,
            user: &user,
            group,
            login: true,
            verifier: Some(&verifier),
        };
        push_tx(
            &mut s,
            &statements::user(&spec, true, &[], &[], Memberships::default()),
        );
    }
    s
}

/// A fresh 24-character password.
fn password() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

/// Runs `script` through one `psql` process connected to `url`.
fn run_script(bin_dir: &Path, url: &str, script: &str) -> Result<()> {
    let mut child = psql(bin_dir, url)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run psql")?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // The script is a few KiB and psql -q prints nearly nothing, so writing
    // all of it before reading any output cannot deadlock.
    stdin.write_all(script.as_bytes())?;
    drop(stdin);
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "psql failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `task(0..n)` on `workers` threads, each taking the next index as it
/// finishes one (as `xargs -P` does); returns the wall time. The first
/// error stops the handing out of new indexes and is returned.
pub fn parallel(
    n: usize,
    workers: usize,
    task: impl Fn(usize) -> Result<()> + Sync,
) -> Result<Duration> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error = Mutex::new(None);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..workers.clamp(1, n.max(1)) {
            s.spawn(|| {
                while !failed.load(Ordering::SeqCst) {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n {
                        break;
                    }
                    if let Err(e) = task(i) {
                        failed.store(true, Ordering::SeqCst);
                        first_error.lock().unwrap().get_or_insert(e);
                    }
                }
            });
        }
    });
    let elapsed = start.elapsed();
    match first_error.into_inner().unwrap() {
        Some(e) => Err(e),
        None => Ok(elapsed),
    }
}

/// Provisions tenants `<prefix>0001..=n`, one `psql` per tenant, `workers`
/// at once; returns the total wall time (script generation, including the
/// SCRAM verifiers, is inside it, as it is inside tenantry's).
pub fn provision(
    bin_dir: &Path,
    admin_url: &str,
    prefix: &str,
    n: usize,
    migration: &str,
    workers: usize,
) -> Result<Duration> {
    parallel(n, workers, |i| {
        let db = inventory::tenant_name(prefix, i + 1);
        let sql = script(&db, migration);
        run_script(bin_dir, admin_url, &sql).with_context(|| format!("baseline tenant {db}"))
    })
}

/// `psql -c 'select 1'` against each database, `workers` at once; returns
/// the total.
pub fn check_each(bin_dir: &Path, urls: &[String], workers: usize) -> Result<Duration> {
    parallel(urls.len(), workers, |i| {
        let url = &urls[i];
        let out = psql(bin_dir, url)
            .args(["-c", "select 1"])
            .stdin(Stdio::null())
            .output()
            .context("cannot run psql")?;
        if !out.status.success() {
            bail!(
                "psql -c 'select 1' on {url} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_runs_every_index_once_on_at_most_the_workers() {
        let seen = Mutex::new(Vec::new());
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        parallel(40, 4, |i| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            std::thread::yield_now();
            seen.lock().unwrap().push(i);
            running.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        })
        .unwrap();
        let mut seen = seen.into_inner().unwrap();
        seen.sort_unstable();
        assert_eq!(seen, (0..40).collect::<Vec<_>>());
        assert!(most.load(Ordering::SeqCst) <= 4);
        let err = parallel(40, 4, |i| if i == 7 { bail!("tenant {i}") } else { Ok(()) });
        assert_eq!(err.unwrap_err().to_string(), "tenant 7");
    }

    #[test]
    fn script_has_every_step_in_tenantry_order() {
        let s = script("b0001", "CREATE TABLE x ()");
        let at = |needle: &str| {
            s.find(needle)
                .unwrap_or_else(|| panic!("{needle:?} missing from:\n{s}"))
        };
        assert!(at("CREATE ROLE \"b0001_owner\" NOLOGIN") < at("CREATE DATABASE \"b0001\""));
        assert!(at("CREATE DATABASE") < at("\\c b0001\n"));
        assert!(at("\\c b0001") < at("SET ROLE \"b0001_owner\""));
        assert!(at("CREATE TABLE x ()") < at("GRANT USAGE ON SCHEMA public"));
        assert!(
            at("REVOKE ALL ON TABLE public.refinery_schema_history")
                < at("CREATE FUNCTION tenantry.token_role")
        );
        assert!(at("CREATE FUNCTION tenantry.token_role") < at("CREATE ROLE \"b0001_c\" LOGIN"));
        assert!(s.contains("PASSWORD 'SCRAM-SHA-256$4096:"));
        assert_eq!(s.matches("BEGIN;").count(), s.matches("COMMIT;").count());
    }
}
