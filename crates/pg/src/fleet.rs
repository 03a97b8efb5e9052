//! Fleet-wide migrations: every tenant database brought to the schema
//! directory's latest version by a bounded pool of workers, with canaries
//! first, optional fail-fast, and a per-tenant report. One tenant's failure
//! does not stop the others; each keeps its last good version.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::{stream, StreamExt};
use serde::Serialize;
use tokio_postgres::Client;

use crate::connect::Admin;
use crate::error::Error;
use crate::migrate::{History, Migrations};

/// How a fleet migration runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Databases migrated at once (one connection each).
    pub jobs: usize,
    /// Stop scheduling new tenants after the first failure.
    pub fail_fast: bool,
    /// Tenants migrated first; if any fails, nothing else runs.
    pub canaries: Vec<String>,
    /// How long to wait for another run holding a database's lock.
    pub lock_wait: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Result {
    /// Migrations were applied.
    Migrated,
    /// Nothing was pending (possibly because another run just did it).
    UpToDate,
    Failed,
    /// Not attempted (fail-fast or a failed canary).
    Skipped,
    /// The tenant is in the file but its database does not exist yet.
    NotCreated,
}

impl Result {
    pub fn as_str(self) -> &'static str {
        match self {
            Result::Migrated => "migrated",
            Result::UpToDate => "up to date",
            Result::Failed => "FAILED",
            Result::Skipped => "skipped",
            Result::NotCreated => "not created",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tenant: String,
    /// The server it lives on, for a fleet of several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub duration_ms: u64,
    pub result: Result,
    /// Time spent waiting for another run on the same database.
    pub waited_ms: Option<u64>,
    pub error: Option<String>,
}

impl Report {
    /// A report of `result` without versions (for a tenant not migrated).
    pub fn new(tenant: &str, result: Result, error: Option<String>) -> Report {
        Report {
            tenant: tenant.to_owned(),
            server: None,
            from: None,
            to: None,
            duration_ms: 0,
            result,
            waited_ms: None,
            error,
        }
    }
}

/// A default worker count: half of the server's free connections (leaving
/// room for the applications, see [`crate::budget`]), at most twice this
/// machine's cores (more workers only contend: measured in bench/), at most
/// 8, at least 1.
pub async fn default_jobs(client: &Client) -> std::result::Result<usize, Error> {
    let free = crate::budget::free_connections(client).await?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(crate::budget::workers((cores * 2).min(8), free, 1))
}

/// Migrates `tenants` (database names; `exists` says which have a database),
/// `options.jobs` at a time, or fewer when the server has few free
/// connections ([`crate::budget`]). `done` is called as each tenant
/// finishes, in completion order. `stop` is set by a failed canary (or any
/// failure with `fail_fast`) and, once set, keeps the tenants not started
/// from running: share one between the runs on several servers.
pub async fn migrate(
    admin: &Admin,
    migrations: &Migrations,
    tenants: &[(String, bool)],
    options: &Options,
    stop: &AtomicBool,
    done: &(dyn Fn(&Report) + Sync),
) -> Vec<Report> {
    let jobs = crate::budget::workers_for(admin, options.jobs.min(tenants.len()), 1).await;
    let mut reports = Vec::with_capacity(tenants.len());
    let (canaries, rest): (Vec<_>, Vec<_>) = tenants
        .iter()
        .partition(|(t, _)| options.canaries.contains(t));
    for (wave, list) in [(0, canaries), (1, rest)] {
        let wave_reports: Vec<Report> = stream::iter(list)
            .map(|(tenant, exists)| {
                let stop = &stop;
                async move {
                    let report = if !exists {
                        Report::new(
                            tenant,
                            Result::NotCreated,
                            Some("no database yet: run `tenantry apply`".to_owned()),
                        )
                    } else if stop.load(Ordering::SeqCst) {
                        let why = if wave == 1 && !options.canaries.is_empty() && !options.fail_fast
                        {
                            "a canary failed"
                        } else {
                            "--fail-fast: an earlier tenant failed"
                        };
                        Report::new(tenant, Result::Skipped, Some(why.to_owned()))
                    } else {
                        one(admin, migrations, tenant, options.lock_wait).await
                    };
                    if report.result == Result::Failed && (options.fail_fast || wave == 0) {
                        stop.store(true, Ordering::SeqCst);
                    }
                    done(&report);
                    report
                }
            })
            .buffer_unordered(jobs)
            .collect()
            .await;
        reports.extend(wave_reports);
    }
    reports.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    reports
}

async fn one(admin: &Admin, migrations: &Migrations, tenant: &str, lock_wait: Duration) -> Report {
    let start = Instant::now();
    let owner = tenantry_layout::roles::group_role_name(tenant, tenantry_layout::Group::Owner);
    let outcome = async {
        let mut client = admin.connect(Some(tenant)).await?;
        let ran = migrations
            .run(&mut client, tenant, &owner, lock_wait)
            .await?;
        if ran.from != ran.to {
            crate::audit::note_on(
                &client,
                tenant,
                tenantry_layout::audit::Action::Migrated,
                serde_json::json!({ "from": ran.from, "to": ran.to }),
            )
            .await;
        }
        Ok::<_, crate::Error>(ran)
    }
    .await;
    let mut report = Report::new(tenant, Result::Migrated, None);
    report.duration_ms = start.elapsed().as_millis() as u64;
    match outcome {
        Ok(ran) => {
            report.from = ran.from;
            report.to = ran.to;
            report.waited_ms = ran.waited.map(|w| w.as_millis() as u64);
            if ran.from == ran.to {
                report.result = Result::UpToDate;
            }
        }
        Err(e) => {
            report.result = Result::Failed;
            report.error = Some(e.to_string());
        }
    }
    report
}

/// One line of `tenantry status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub tenant: String,
    /// The server it lives on, for a fleet of several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    pub exists: bool,
    #[serde(flatten)]
    pub history: History,
    /// Divergent or unknown migrations, or why the database could not be read.
    pub error: Option<String>,
}

/// Each tenant's schema version, pending, divergent and missing migrations,
/// `jobs` databases at a time (fewer when the server has few free connections).
pub async fn status(
    admin: &Admin,
    migrations: &Migrations,
    tenants: &[(String, bool)],
    jobs: usize,
) -> Vec<Status> {
    let jobs = crate::budget::workers_for(admin, jobs.min(tenants.len()), 1).await;
    let mut out: Vec<Status> = stream::iter(tenants)
        .map(|(tenant, exists)| async move {
            let mut s = Status {
                tenant: tenant.clone(),
                server: None,
                exists: *exists,
                history: History::default(),
                error: None,
            };
            if !exists {
                s.history.pending = migrations.versions();
                return s;
            }
            let read = async {
                let client = admin.connect(Some(tenant)).await?;
                migrations
                    .history(&client)
                    .await
                    .map_err(|e| Error::sql(format!("reading the history of {tenant}"), e))
            };
            match read.await {
                Ok(h) => {
                    s.error = h.problem();
                    s.history = h;
                }
                Err(e) => s.error = Some(e.to_string()),
            }
            s
        })
        .buffer_unordered(jobs)
        .collect()
        .await;
    out.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    out
}
