//! `tenantry migrate` and `tenantry status` over every server of the
//! file: each tenant is found on its server (`tenantry_pg::sessions`), the
//! servers are worked on at the same time (`--jobs` databases at once on
//! each), canaries first across the fleet, and one report comes out.
//! Printing and exit codes here; the work is `tenantry_pg::fleet`'s.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::atomic::AtomicBool;

use anyhow::{bail, Context as _, Result};
use futures_util::future::join_all;
use tenantry_manifest::Inventory;
use tenantry_pg::fleet::{self, Report, Result as R, Status};
use tenantry_pg::sessions::{self, Located};
use tenantry_pg::Migrations;

use crate::cli::MigrateFlags;

/// Each server read, with the file's tenants in use there (a tenant pinned
/// elsewhere is migrated where it lives: its application runs the new code
/// too) and whether each one's database exists (aligned with
/// `located.reached`).
fn shares(located: &Located, inventory: &Inventory) -> Vec<Vec<(String, bool)>> {
    located
        .reached
        .iter()
        .map(|r| {
            inventory
                .tenants
                .iter()
                .map(|t| t.name.to_string())
                .filter(|t| located.in_use_on(t) == Some(r.name.as_str()))
                .map(|t| {
                    let exists = r.marked.contains(&t);
                    (t, exists)
                })
                .collect()
        })
        .collect()
}

/// The file's tenants no server is migrated for (on several servers, or
/// not found while a server could not be read), with why.
fn left_out(located: &Located) -> Vec<tenantry_plan::fleet_plan::Held> {
    located
        .held()
        .into_iter()
        .filter(|h| located.in_use_on(&h.tenant).is_none())
        .collect()
}

/// The server names to show, for a file with several.
fn server_name(inventory: &Inventory, name: &str) -> Option<String> {
    (inventory.servers.len() > 1).then(|| name.to_owned())
}

/// Fails naming the servers that could not be read (after the report).
fn check_reached(located: &Located) -> Result<()> {
    if let Some((_, first)) = located.unreachable.first() {
        let names: Vec<&str> = located
            .unreachable
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        bail!(
            "server(s) {} could not be read ({first}); their tenants were not looked at",
            names.join(", ")
        );
    }
    Ok(())
}

/// The SERVER column of a table (empty unless the rows name servers).
fn server_column(several: bool, server: Option<&str>) -> String {
    if several {
        format!("{:<16} ", server.unwrap_or("-"))
    } else {
        String::new()
    }
}

fn version(v: Option<i64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("V{v}"))
}

pub async fn migrate(inventory: &Inventory, flags: &MigrateFlags) -> Result<u8> {
    for c in &flags.canaries {
        if inventory.tenant(c).is_none() {
            bail!(
                "--canary {c}: no such tenant in {}",
                inventory.path.display()
            );
        }
    }
    let migrations = Migrations::load(&inventory.paths.schema)?;
    let located = sessions::locate(inventory, None).await?;
    let held = left_out(&located);
    if let Some(h) = held.iter().find(|h| flags.canaries.contains(&h.tenant)) {
        bail!("--canary {}: {}. Nothing was migrated.", h.tenant, h.reason);
    }
    let mut held = held;
    let mut shares = shares(&located, inventory);
    // A tenant being moved keeps its schema until the move ends.
    for share in &mut shares {
        share.retain(|(t, _)| match located.move_begun(t) {
            Some((from, to)) => {
                held.push(tenantry_plan::fleet_plan::Held {
                    tenant: t.clone(),
                    reason: format!("its move from server {from} to server {to} is under way: migrate it once apply has finished the move"),
                    conflict: false,
                });
                false
            }
            None => true,
        });
    }
    let mut jobs = Vec::with_capacity(shares.len());
    for r in &located.reached {
        jobs.push(match flags.jobs {
            Some(j) => usize::from(j),
            None => fleet::default_jobs(&r.client)
                .await
                .with_context(|| format!("server {}", r.name))?,
        });
    }
    let total = shares.iter().map(Vec::len).sum::<usize>() + held.len();
    if !flags.json {
        let at_once = match jobs.as_slice() {
            [one] => format!("{one} at a time"),
            many => format!(
                "up to {} at a time on each of {} servers",
                many.iter().max().unwrap_or(&1),
                many.len()
            ),
        };
        outln!(
            "Migrating {total} tenant(s) to {} ({} migration(s) in {}), {at_once}{}.",
            version(migrations.latest()),
            migrations.len(),
            migrations.dir.display(),
            if flags.canaries.is_empty() {
                String::new()
            } else {
                format!(", canaries first: {}", flags.canaries.join(", "))
            }
        );
    }
    let progress = Progress::new(total as u64, flags.json);
    // Canaries first (on their servers at once), then the rest; a failed
    // canary, or any failure with --fail-fast, stops the whole fleet.
    let stop = AtomicBool::new(false);
    let mut reports: Vec<Report> = Vec::with_capacity(total);
    for canaries in [true, false] {
        let runs = located
            .reached
            .iter()
            .zip(&shares)
            .zip(&jobs)
            .map(|((r, share), &jobs)| {
                let list: Vec<(String, bool)> = share
                    .iter()
                    .filter(|(t, _)| flags.canaries.contains(t) == canaries)
                    .cloned()
                    .collect();
                let options = fleet::Options {
                    jobs,
                    fail_fast: flags.fail_fast,
                    canaries: flags.canaries.clone(),
                    lock_wait: flags.lock_timeout,
                };
                let (migrations, stop, progress) = (&migrations, &stop, &progress);
                let server = server_name(inventory, &r.name);
                async move {
                    let mut out =
                        fleet::migrate(&r.admin, migrations, &list, &options, stop, &|rep| {
                            progress.done(rep)
                        })
                        .await;
                    for rep in &mut out {
                        rep.server.clone_from(&server);
                    }
                    out
                }
            });
        reports.extend(join_all(runs).await.into_iter().flatten());
    }
    for h in &held {
        let rep = Report::new(&h.tenant, R::Skipped, Some(h.reason.clone()));
        progress.done(&rep);
        reports.push(rep);
    }
    progress.finish();
    // A failed tenant stays at its last good version: read which (pg does
    // not report it), and say what failed once.
    let failed = reports.iter().filter(|r| r.result == R::Failed).count();
    if failed > 0 {
        let reads = located.reached.iter().zip(&jobs).map(|(r, &jobs)| {
            let list: Vec<(String, bool)> = reports
                .iter()
                .filter(|rep| rep.result == R::Failed)
                .filter(|rep| located.in_use_on(&rep.tenant) == Some(r.name.as_str()))
                .map(|rep| (rep.tenant.clone(), true))
                .collect();
            let migrations = &migrations;
            async move { fleet::status(&r.admin, migrations, &list, jobs).await }
        });
        let now: Vec<Status> = join_all(reads).await.into_iter().flatten().collect();
        for r in reports.iter_mut().filter(|r| r.result == R::Failed) {
            r.to = now
                .iter()
                .find(|s| s.tenant == r.tenant && s.error.is_none())
                .and_then(|s| s.history.version);
            r.error = r.error.as_deref().map(|e| migrate_error(&r.tenant, e));
        }
    }
    reports.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    if flags.json {
        outln!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        out!("{}", migrate_table(&reports));
    }
    check_reached(&located)?;
    let mut problems = Vec::new();
    if failed > 0 {
        problems.push(format!("{failed} tenant(s) failed; each stays at its last good version (TO). Fix the cause and run migrate again: only what is pending runs"));
    }
    if !held.is_empty() {
        problems.push(format!(
            "{} tenant(s) were not migrated: {} (see ERROR above)",
            held.len(),
            held.iter()
                .map(|h| h.tenant.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !problems.is_empty() {
        bail!("{}.", problems.join("; "));
    }
    Ok(0)
}

/// The per-tenant report of `migrate` and its summary line. A failed row's
/// FROM is `?` (not known), its TO the version it stays at.
fn migrate_table(reports: &[Report]) -> String {
    let mut out = String::new();
    let several = reports.iter().any(|r| r.server.is_some());
    let server = |s: Option<&str>| server_column(several, s);
    let _ = writeln!(
        out,
        "\n{:<32} {}{:>6} {:>6} {:>10}  {:<11} ERROR",
        "TENANT",
        server(Some("SERVER")),
        "FROM",
        "TO",
        "DURATION",
        "RESULT"
    );
    for r in reports {
        let mut result = r.result.as_str().to_owned();
        if let Some(w) = r.waited_ms {
            let _ = write!(result, " (waited {w} ms for another run)");
        }
        let from = match (r.result, r.from) {
            (R::Failed, None) => "?".to_owned(),
            (_, v) => version(v),
        };
        let to = match (r.result, r.to) {
            (R::Failed, None) => "?".to_owned(),
            (_, v) => version(v),
        };
        let _ = writeln!(
            out,
            "{:<32} {}{:>6} {:>6} {:>8}ms  {:<11} {}",
            r.tenant,
            server(r.server.as_deref()),
            from,
            to,
            r.duration_ms,
            result,
            r.error.as_deref().unwrap_or("")
        );
    }
    let count = |k| reports.iter().filter(|r| r.result == k).count();
    let _ = writeln!(
        out,
        "\n{} migrated, {} up to date, {} failed, {} skipped, {} not created.",
        count(R::Migrated),
        count(R::UpToDate),
        count(R::Failed),
        count(R::Skipped),
        count(R::NotCreated)
    );
    out
}

/// A failed tenant's error without what its row already says or what the
/// text repeats: `migration of shop failed: `error applying migration
/// V2__x`, `db error`: relation "t" already exists: ERROR: relation "t"
/// already exists` becomes `V2__x: relation "t" already exists`.
fn migrate_error(tenant: &str, text: &str) -> String {
    let mut s = text
        .strip_prefix(&format!("migration of {tenant} failed: "))
        .unwrap_or(text)
        .to_owned();
    // refinery's "`what`, `cause`": the cause is the client's summary of the
    // server's message that follows.
    if let Some(rest) = s.strip_prefix("`error applying migration ") {
        if let Some((name, after)) = rest.split_once('`') {
            let after = after.strip_prefix(", `db error`").unwrap_or(after);
            s = format!("{name}{after}");
        }
    }
    // The server's error again, as tokio-postgres prints it ("ERROR: msg").
    for severity in ["ERROR", "FATAL", "PANIC"] {
        let marker = format!(": {severity}: ");
        if let Some(i) = s.rfind(&marker) {
            let repeated = s[i + marker.len()..].lines().next().unwrap_or("");
            if !repeated.is_empty() && s[..i].contains(repeated) {
                s.truncate(i);
            }
        }
    }
    s
}

pub async fn status(inventory: &Inventory, jobs: usize, json: bool) -> Result<u8> {
    let migrations = Migrations::load(&inventory.paths.schema)?;
    let located = sessions::locate(inventory, None).await?;
    let shares = shares(&located, inventory);
    let reads = located.reached.iter().zip(&shares).map(|(r, share)| {
        let migrations = &migrations;
        let server = server_name(inventory, &r.name);
        async move {
            let mut rows = fleet::status(&r.admin, migrations, share, jobs * 4).await;
            for row in &mut rows {
                row.server.clone_from(&server);
            }
            rows
        }
    });
    let mut rows: Vec<Status> = join_all(reads).await.into_iter().flatten().collect();
    for h in left_out(&located) {
        rows.push(Status {
            tenant: h.tenant,
            server: None,
            exists: false,
            history: Default::default(),
            error: Some(h.reason),
        });
    }
    rows.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    let bad: Vec<&str> = rows
        .iter()
        .filter(|r| r.error.is_some())
        .map(|r| r.tenant.as_str())
        .collect();
    if json {
        outln!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        out!("{}", status_table(&migrations, &rows));
    }
    check_reached(&located)?;
    if !bad.is_empty() {
        bail!(
            "{} tenant(s) have a schema problem: {}",
            bad.len(),
            bad.join(", ")
        );
    }
    Ok(0)
}

/// The table of `status`, with a SERVER column when rows name one.
fn status_table(migrations: &Migrations, rows: &[Status]) -> String {
    let mut out = String::new();
    let several = rows.iter().any(|r| r.server.is_some());
    let _ = writeln!(
        out,
        "Schema directory {}: {} migration(s), latest {}.\n",
        migrations.dir.display(),
        migrations.len(),
        version(migrations.latest())
    );
    let server = |s: Option<&str>| server_column(several, s);
    let _ = writeln!(
        out,
        "{:<32} {}{:>7}  {:<20} PROBLEM",
        "TENANT",
        server(Some("SERVER")),
        "VERSION",
        "PENDING"
    );
    for r in rows {
        let pending = if !r.exists {
            "(not created)".to_owned()
        } else if r.history.pending.is_empty() {
            "-".to_owned()
        } else {
            r.history
                .pending
                .iter()
                .map(|v| format!("V{v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "{:<32} {}{:>7}  {:<20} {}",
            r.tenant,
            server(r.server.as_deref()),
            version(r.history.version),
            pending,
            r.error.as_deref().unwrap_or("")
        );
    }
    out
}

/// A progress bar on a terminal; one plain line per tenant otherwise (CI logs).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    quiet: bool,
}

impl Progress {
    fn new(len: u64, quiet: bool) -> Progress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(len);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} tenants, {elapsed} elapsed, eta {eta} {msg}",
                )
                .expect("valid template"),
            );
            bar
        });
        Progress { bar, quiet }
    }

    fn done(&self, r: &tenantry_pg::fleet::Report) {
        let failed = r.result == tenantry_pg::fleet::Result::Failed;
        let error = r
            .error
            .as_deref()
            .map(|e| migrate_error(&r.tenant, e))
            .unwrap_or_default();
        match &self.bar {
            Some(bar) => {
                if failed {
                    bar.println(format!("{}: FAILED: {error}", r.tenant));
                }
                bar.set_message(r.tenant.clone());
                bar.inc(1);
            }
            // A failure's versions are not known yet: the table has them.
            None if !self.quiet && failed => {
                errln!("  {}: FAILED in {} ms: {error}", r.tenant, r.duration_ms)
            }
            None if !self.quiet => errln!(
                "  {}: {} {} -> {} in {} ms{}",
                r.tenant,
                r.result.as_str(),
                version(r.from),
                version(r.to),
                r.duration_ms,
                if error.is_empty() {
                    String::new()
                } else {
                    format!(": {error}")
                }
            ),
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_migration_error_says_what_failed_once() {
        let raw = "migration of shop failed: `error applying migration V2__bad`, `db error`: relation \"widgets\" already exists: ERROR: relation \"widgets\" already exists";
        assert_eq!(
            migrate_error("shop", raw),
            "V2__bad: relation \"widgets\" already exists"
        );
        let detail = "migration of shop failed: `error applying migration V3__x`, `db error`: could not create unique index \"i\" (detail: Key (a)=(1) is duplicated.): ERROR: could not create unique index \"i\"\nDETAIL: Key (a)=(1) is duplicated.";
        assert_eq!(
            migrate_error("shop", detail),
            "V3__x: could not create unique index \"i\" (detail: Key (a)=(1) is duplicated.)"
        );
        // What does not repeat is kept.
        let lock = "migration of shop failed: another migration of this database is running; gave up after 5.0s (canceling statement due to lock timeout)";
        assert_eq!(
            migrate_error("shop", lock),
            "another migration of this database is running; gave up after 5.0s (canceling statement due to lock timeout)"
        );
    }

    #[test]
    fn failed_rows_show_where_the_tenant_stays() {
        use tenantry_pg::fleet::{Report, Result as R};
        let row = |tenant: &str, result, from, to| Report {
            tenant: tenant.into(),
            server: None,
            from,
            to,
            duration_ms: 18,
            result,
            waited_ms: None,
            error: None,
        };
        let text = migrate_table(&[
            row("a", R::Failed, None, Some(1)),
            row("b", R::Migrated, Some(1), Some(2)),
        ]);
        let a = text.lines().find(|l| l.starts_with("a ")).unwrap();
        assert!(a.contains("     ?     V1 "), "{text}");
        assert!(!a.contains(" - "), "{text}");
        let b = text.lines().find(|l| l.starts_with("b ")).unwrap();
        assert!(b.contains("    V1     V2 "), "{text}");
        assert!(
            text.contains("1 migrated, 0 up to date, 1 failed"),
            "{text}"
        );
    }
}
