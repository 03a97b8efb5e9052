//! What the gateway counts of each tenant, and the quotas it enforces with
//! it: requests per UTC day (counted here, added to the tenant's own
//! `tenantry.usage` in batches by [`Gateway::flush_usage`], so replicas sum
//! up and a restart loses nothing flushed), the database's size (measured
//! per server in one query by [`Gateway::measure_storage`]), and the
//! tenant's API writes for its audit trail (queued here, appended to
//! `tenantry.audit` by the same flush). Nothing here runs on a request's
//! path but counting, queueing and comparing numbers.
//!
//! Over a quota, writes get 403 `quota_exceeded` ([`Usage::check_write`]);
//! reads keep working. Crossing 80% and 95% (and 100%) of a quota logs one
//! warning per crossing and shows in the metrics and the console.
//!
//! What does not live here: the tables and their SQL
//! (`tenantry_layout::usage`, `tenantry_layout::audit`), the last hour's
//! per-minute numbers (`recent`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tenantry_layout::{audit, usage};

use crate::error::ApiError;
use crate::pools::{PoolKey, Target};
use crate::server::Gateway;
use crate::snapshot::{Quotas, TenantEntry};

/// API writes waiting for their flush, all tenants together; past it, new
/// ones are dropped and counted (`tenantry_audit_dropped_total`).
pub const AUDIT_QUEUE: usize = 50_000;

/// How often a flush reads a tenant's schema version again.
const VERSION_EVERY: Duration = Duration::from_secs(60);

/// Tenants flushed at once. The flush is background work: each tenant at
/// once is a PostgreSQL backend inserting next to the ones serving
/// requests, and a burst of them takes the CPU requests wait for (seen as
/// the p99 of `tenantry-bench usage`). What a flush does not reach stays
/// pending for the next one, so a slow flush delays figures, never loses
/// them.
const FLUSH_AT_ONCE: usize = 2;

/// The warning levels of a quota, in percent.
pub const LEVELS: [u8; 3] = [80, 95, 100];

/// The two quotas the gateway measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    Storage,
    RequestsPerDay,
}

impl Quota {
    pub fn as_str(self) -> &'static str {
        match self {
            Quota::Storage => "storage",
            Quota::RequestsPerDay => "requests_per_day",
        }
    }
}

/// One API write, for the tenant's audit trail.
#[derive(Debug, Clone)]
pub struct ApiWrite {
    pub at: SystemTime,
    /// The token's hash, to name its id in the database; never stored.
    pub hash: String,
    pub role: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub row_id: Option<i64>,
}

/// The counters of every tenant, and the queue of API writes.
pub struct Usage {
    /// Off: nothing counted, queued or enforced (`--no-usage`).
    enabled: bool,
    tenants: Mutex<HashMap<String, Counted>>,
    audit: Mutex<HashMap<String, Vec<ApiWrite>>>,
    queued: AtomicU64,
    dropped: AtomicU64,
    flush_failures: AtomicU64,
}

/// Requests counted and not flushed yet: (day, requests, the last one's
/// time), one entry per day.
type Pending = Vec<(i32, u64, SystemTime)>;

/// What one tenant's flush learned.
struct Flushed {
    /// Each day written, with its total (every replica's) after it.
    totals: Vec<(i32, u64)>,
    /// The newest request any replica flushed.
    last: Option<String>,
    schema_version: Option<i64>,
}

/// One tenant's numbers.
#[derive(Default, Debug, Clone)]
pub struct Counted {
    /// Requests counted here and not flushed yet: (day, requests, last).
    pending: Pending,
    /// The day's total in the database (every replica's) at the last flush.
    flushed: Option<(i32, u64)>,
    /// The newest request any replica flushed (RFC 3339).
    pub last_request_at: Option<String>,
    /// The database's size at the last measurement.
    pub storage: Option<u64>,
    /// The newest migration applied, as read at a flush.
    pub schema_version: Option<i64>,
    /// When it was read.
    version_read_at: Option<std::time::Instant>,
    /// The highest level warned of, per quota (0: none).
    warned: [u8; 2],
    /// The last flush failed (logged once until one succeeds).
    failing: bool,
}

impl Counted {
    /// Today's requests: the last flushed total plus what is pending here.
    pub fn requests_on(&self, day: i32) -> u64 {
        let flushed = match self.flushed {
            Some((d, n)) if d == day => n,
            _ => 0,
        };
        flushed
            + self
                .pending
                .iter()
                .filter(|(d, ..)| *d == day)
                .map(|(_, n, _)| n)
                .sum::<u64>()
    }
}

impl Usage {
    pub fn new(enabled: bool) -> Usage {
        Usage {
            enabled,
            tenants: Mutex::default(),
            audit: Mutex::default(),
            queued: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            flush_failures: AtomicU64::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Counted>> {
        self.tenants.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of every tenant's numbers (one lock for all).
    pub fn all(&self) -> HashMap<String, Counted> {
        self.lock().clone()
    }

    /// A copy of `tenant`'s numbers.
    pub fn of(&self, tenant: &str) -> Counted {
        self.lock().get(tenant).cloned().unwrap_or_default()
    }

    /// Counts one API call of `t`; then, for a write, refuses it (403
    /// `quota_exceeded`) when the tenant is past a quota.
    pub fn count_and_check(
        &self,
        t: &TenantEntry,
        write: bool,
        now: SystemTime,
    ) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        let day = usage::day(now);
        let mut tenants = self.lock();
        let c = match tenants.get_mut(&t.info.name) {
            Some(c) => c,
            None => tenants.entry(t.info.name.clone()).or_default(),
        };
        match c.pending.iter_mut().find(|(d, ..)| *d == day) {
            Some((_, n, last)) => {
                *n += 1;
                *last = now;
            }
            None => c.pending.push((day, 1, now)),
        }
        let requests = c.requests_on(day);
        let storage = c.storage;
        let crossed = warn_crossing(
            c,
            Quota::RequestsPerDay,
            requests,
            t.quotas.requests_per_day,
        );
        drop(tenants);
        if let Some(level) = crossed {
            log_crossing(
                &t.info.name,
                Quota::RequestsPerDay,
                level,
                requests,
                t.quotas,
            );
        }
        if !write {
            return Ok(());
        }
        over_quota(t.quotas, storage, requests).map_or(Ok(()), |m| Err(ApiError::quota_exceeded(m)))
    }

    /// Queues one API write of `tenant` for its audit trail (dropped and
    /// counted when the queue is full: requests never wait for it).
    pub fn audit(&self, tenant: &str, write: ApiWrite) {
        if !self.enabled {
            return;
        }
        if self.queued.load(Ordering::Relaxed) >= AUDIT_QUEUE as u64 {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        let mut queue = self.audit.lock().unwrap_or_else(|e| e.into_inner());
        queue.entry(tenant.to_owned()).or_default().push(write);
    }

    /// Sets `tenant`'s measured size, warning when it crosses a level.
    fn measured(&self, t: &TenantEntry, bytes: u64) {
        let mut tenants = self.lock();
        let c = tenants.entry(t.info.name.clone()).or_default();
        c.storage = Some(bytes);
        let crossed = warn_crossing(c, Quota::Storage, bytes, t.quotas.storage_bytes);
        drop(tenants);
        if let Some(level) = crossed {
            log_crossing(&t.info.name, Quota::Storage, level, bytes, t.quotas);
        }
    }

    /// Forgets tenants no longer served (what they had pending is flushed
    /// first by the caller, or lost with them).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|name, _| keep(name));
    }

    /// The metrics of this module, as Prometheus text.
    pub fn render(&self, quotas: &dyn Fn(&str) -> Option<Quotas>, out: &mut String) {
        let tenants = self.lock();
        let mut names: Vec<&String> = tenants.keys().collect();
        names.sort();
        let _ = writeln!(
            out,
            "# HELP tenantry_quota_used_ratio Share of a plan's quota in use (1 = the whole quota).\n# TYPE tenantry_quota_used_ratio gauge"
        );
        let day = usage::day(SystemTime::now());
        for name in &names {
            let (Some(q), Some(c)) = (quotas(name), tenants.get(*name)) else {
                continue;
            };
            for (quota, used, limit) in [
                (Quota::Storage, c.storage, q.storage_bytes),
                (
                    Quota::RequestsPerDay,
                    Some(c.requests_on(day)),
                    q.requests_per_day,
                ),
            ] {
                if let (Some(used), Some(limit)) = (used, limit) {
                    let _ = writeln!(
                        out,
                        "tenantry_quota_used_ratio{{tenant=\"{name}\",quota=\"{}\"}} {}",
                        quota.as_str(),
                        ratio(used, limit)
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP tenantry_quota_warning Highest warning level a quota has crossed (0, 80, 95, 100).\n# TYPE tenantry_quota_warning gauge"
        );
        for name in &names {
            let c = &tenants[*name];
            for (i, quota) in [Quota::Storage, Quota::RequestsPerDay].iter().enumerate() {
                if c.warned[i] > 0 {
                    let _ = writeln!(
                        out,
                        "tenantry_quota_warning{{tenant=\"{name}\",quota=\"{}\"}} {}",
                        quota.as_str(),
                        c.warned[i]
                    );
                }
            }
        }
        for (name, help, value) in [
            (
                "tenantry_audit_dropped_total",
                "API writes left out of the audit trail because its queue was full.",
                self.dropped.load(Ordering::Relaxed),
            ),
            (
                "tenantry_usage_flush_failures_total",
                "Flushes of usage counts or audit entries to a tenant's database that failed (retried).",
                self.flush_failures.load(Ordering::Relaxed),
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        }
    }
}

fn ratio(used: u64, limit: u64) -> f64 {
    if limit == 0 {
        return 1.0;
    }
    used as f64 / limit as f64
}

/// Why a write of a tenant with these figures is refused, if it is.
fn over_quota(quotas: Quotas, storage: Option<u64>, requests: u64) -> Option<String> {
    if let (Some(used), Some(limit)) = (storage, quotas.storage_bytes) {
        if used > limit {
            return Some(format!(
                "over the storage quota: the database holds {} of its plan's {}; delete data or move to a larger plan (reads still work)",
                human_bytes(used),
                human_bytes(limit)
            ));
        }
    }
    if let Some(limit) = quotas.requests_per_day {
        if requests > limit {
            return Some(format!(
                "over the requests_per_day quota: {requests} requests today (UTC) of its plan's {limit}; writes resume tomorrow (UTC) or on a larger plan (reads still work)"
            ));
        }
    }
    None
}

/// The level `used` of `limit` has newly crossed, if any; a figure back
/// under a level lets it warn again at the next crossing.
fn warn_crossing(c: &mut Counted, quota: Quota, used: u64, limit: Option<u64>) -> Option<u8> {
    let i = match quota {
        Quota::Storage => 0,
        Quota::RequestsPerDay => 1,
    };
    let level = limit.map_or(0, |limit| {
        let percent = ratio(used, limit) * 100.0;
        LEVELS
            .iter()
            .rev()
            .find(|l| percent >= f64::from(**l))
            .copied()
            .unwrap_or(0)
    });
    let before = c.warned[i];
    c.warned[i] = level;
    (level > before).then_some(level)
}

fn log_crossing(tenant: &str, quota: Quota, level: u8, used: u64, quotas: Quotas) {
    let (used, limit) = match quota {
        Quota::Storage => (
            human_bytes(used),
            quotas.storage_bytes.map(human_bytes).unwrap_or_default(),
        ),
        Quota::RequestsPerDay => (
            used.to_string(),
            quotas
                .requests_per_day
                .map(|l| l.to_string())
                .unwrap_or_default(),
        ),
    };
    if level >= 100 {
        tracing::warn!(%tenant, quota = quota.as_str(), %used, %limit, "the tenant is at its quota: its writes are refused (403 quota_exceeded)");
    } else {
        tracing::warn!(%tenant, quota = quota.as_str(), level, %used, %limit, "the tenant crossed {level}% of its quota");
    }
}

/// The warnings of a tenant's figures, in words, highest level first.
pub fn warnings(quotas: Quotas, storage: Option<u64>, requests: u64) -> Vec<(Quota, u8, String)> {
    let mut out = Vec::new();
    for (quota, used, limit) in [
        (Quota::Storage, storage, quotas.storage_bytes),
        (
            Quota::RequestsPerDay,
            Some(requests),
            quotas.requests_per_day,
        ),
    ] {
        let (Some(used), Some(limit)) = (used, limit) else {
            continue;
        };
        let percent = ratio(used, limit) * 100.0;
        let Some(level) = LEVELS.iter().rev().find(|l| percent >= f64::from(**l)) else {
            continue;
        };
        let message = match quota {
            Quota::Storage => format!(
                "storage at {percent:.0}% of {} ({})",
                human_bytes(limit),
                human_bytes(used)
            ),
            Quota::RequestsPerDay => {
                format!("requests today at {percent:.0}% of {limit} ({used})")
            }
        };
        out.push((quota, *level, message));
    }
    out.sort_by_key(|w| std::cmp::Reverse(w.1));
    out
}

/// Bytes for people: `512 B`, `1.5 KiB`, `12.3 MiB`, `1 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// RFC 3339 (UTC, seconds) of `time`.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

impl Gateway {
    /// Adds every tenant's pending request counts to its `tenantry.usage`
    /// and appends its queued API writes to `tenantry.audit`, a few tenants
    /// at a time, each on a connection of its own pool acting as the
    /// gateway's login. What fails stays pending for the next flush.
    pub async fn flush_usage(self: &Arc<Gateway>) {
        use futures_util::StreamExt;
        if !self.usage.enabled() {
            return;
        }
        let snap = self.snapshot();
        let counts: Vec<(String, Pending)> = {
            let mut tenants = self.usage.lock();
            tenants
                .iter_mut()
                .filter(|(_, c)| !c.pending.is_empty())
                .map(|(name, c)| (name.clone(), std::mem::take(&mut c.pending)))
                .collect()
        };
        let writes: HashMap<String, Vec<ApiWrite>> = {
            let mut queue = self.usage.audit.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut *queue)
        };
        let queued: usize = writes.values().map(Vec::len).sum();
        self.usage
            .queued
            .fetch_sub(queued as u64, Ordering::Relaxed);
        let mut work: HashMap<String, (Pending, Vec<ApiWrite>)> = HashMap::new();
        for (name, c) in counts {
            work.entry(name).or_default().0 = c;
        }
        for (name, w) in writes {
            work.entry(name).or_default().1 = w;
        }
        let jobs = work.into_iter().filter_map(|(name, (counts, writes))| {
            // A tenant gone from the file takes its numbers along.
            let t = snap.tenant(&name)?;
            let gw = self.clone();
            let epoch = snap.epoch;
            Some(async move { gw.flush_tenant(&t, epoch, counts, writes).await })
        });
        futures_util::stream::iter(jobs)
            .buffer_unordered(FLUSH_AT_ONCE)
            .for_each(|()| async {})
            .await;
    }

    async fn flush_tenant(
        &self,
        t: &TenantEntry,
        epoch: u64,
        counts: Pending,
        writes: Vec<ApiWrite>,
    ) {
        let name = &t.info.name;
        // The schema version once a minute at most.
        let read_version = self
            .usage
            .lock()
            .get(name)
            .and_then(|c| c.version_read_at)
            .is_none_or(|at| at.elapsed() >= VERSION_EVERY);
        let outcome = self
            .write_usage(t, epoch, &counts, &writes, read_version)
            .await;
        let mut tenants = self.usage.lock();
        let c = tenants.entry(name.clone()).or_default();
        match outcome {
            Ok(Flushed {
                totals,
                last,
                schema_version,
            }) => {
                if read_version && !counts.is_empty() {
                    c.schema_version = schema_version;
                    c.version_read_at = Some(std::time::Instant::now());
                }
                if c.failing {
                    tracing::info!(tenant = %name, "usage and audit entries are recorded again");
                }
                c.failing = false;
                for (day, total) in totals {
                    if c.flushed.is_none_or(|(d, _)| d <= day) {
                        c.flushed = Some((day, total));
                    }
                }
                if last.is_some() {
                    c.last_request_at = last;
                }
            }
            Err((why, counts_kept, writes_kept)) => {
                self.usage.flush_failures.fetch_add(1, Ordering::Relaxed);
                if !c.failing {
                    tracing::warn!(tenant = %name, error = %why, "cannot record the tenant's usage and audit entries in its database; kept and tried again (tenantry apply creates tenantry.usage and tenantry.audit)");
                }
                c.failing = true;
                if counts_kept {
                    for (day, n, last) in counts {
                        match c.pending.iter_mut().find(|(d, ..)| *d == day) {
                            Some(p) => {
                                p.1 += n;
                                p.2 = p.2.max(last);
                            }
                            None => c.pending.push((day, n, last)),
                        }
                    }
                }
                drop(tenants);
                if writes_kept {
                    for w in writes {
                        self.usage.audit(name, w);
                    }
                }
            }
        }
    }

    /// The flush of one tenant: the days' totals after it and the newest
    /// request, or why not and whether the counts and the writes are still
    /// to be written.
    async fn write_usage(
        &self,
        t: &TenantEntry,
        epoch: u64,
        counts: &[(i32, u64, SystemTime)],
        writes: &[ApiWrite],
        read_version: bool,
    ) -> Result<Flushed, (String, bool, bool)> {
        let role = t
            .pool_login()
            .ok_or_else(|| ("no login the gateway can use".to_owned(), true, true))?;
        let config = t.config(role).expect("pool_login returns ready logins");
        let key = PoolKey {
            tenant: t.info.name.clone(),
            role: role.to_owned(),
        };
        let conn = self
            .pools(&t.server)
            .get(&key, &|| Target {
                config: config.clone(),
                size: t.pool_size,
                epoch,
            })
            .await
            .map_err(|e| (e.to_string(), true, true))?;
        // One transaction acting as the login itself (`SET LOCAL ROLE
        // NONE`: after it, the session acts as the group it did, so the
        // next request needs no switch), its statements prepared once per
        // connection and then sent together: one round trip. Any failure
        // leaves everything to the next flush (the transaction is all or
        // nothing).
        let failed = |e: tokio_postgres::Error| (db_error(&e), true, true);
        let add = conn.prepare_cached(usage::ADD).await.map_err(failed)?;
        let version = conn
            .prepare_cached(tenantry_layout::history::MAX_VERSION_IF_READABLE)
            .await
            .map_err(failed)?;
        let append = conn
            .prepare_cached(audit::APPEND_API)
            .await
            .map_err(failed)?;
        let days: Vec<i32> = counts.iter().map(|(d, ..)| *d).collect();
        let requests: Vec<i64> = counts.iter().map(|(_, n, _)| *n as i64).collect();
        let lasts: Vec<String> = counts.iter().map(|(.., at)| rfc3339(*at)).collect();
        let at: Vec<SystemTime> = writes.iter().map(|w| w.at).collect();
        let hashes: Vec<&str> = writes.iter().map(|w| w.hash.as_str()).collect();
        let roles: Vec<&str> = writes.iter().map(|w| w.role.as_str()).collect();
        let methods: Vec<&str> = writes.iter().map(|w| w.method.as_str()).collect();
        let paths: Vec<&str> = writes.iter().map(|w| w.path.as_str()).collect();
        let statuses: Vec<i32> = writes.iter().map(|w| i32::from(w.status)).collect();
        let rows: Vec<Option<i64>> = writes.iter().map(|w| w.row_id).collect();
        let read_version = read_version && !counts.is_empty();
        let (begun, added, version, appended, committed) = tokio::join!(
            conn.batch_execute("BEGIN; SET LOCAL ROLE NONE"),
            async {
                if counts.is_empty() {
                    return Ok(Vec::new());
                }
                conn.query(&add, &[&days, &requests, &lasts]).await
            },
            async {
                if !read_version {
                    return Ok(None);
                }
                conn.query_one(&version, &[]).await.map(Some)
            },
            async {
                if writes.is_empty() {
                    return Ok(0);
                }
                conn.execute(
                    &append,
                    &[&at, &hashes, &roles, &methods, &paths, &statuses, &rows],
                )
                .await
            },
            conn.batch_execute("COMMIT"),
        );
        begun.map_err(failed)?;
        let added = added.map_err(failed)?;
        let version = version.map_err(failed)?;
        appended.map_err(failed)?;
        committed.map_err(failed)?;
        let mut totals = Vec::new();
        let mut last = None;
        for row in &added {
            totals.push((row.get::<_, i32>(0), row.get::<_, i64>(1).max(0) as u64));
            last = last.max(row.get::<_, Option<String>>(2));
        }
        Ok(Flushed {
            totals,
            last,
            schema_version: version.and_then(|r| r.get::<_, Option<i64>>(0)),
        })
    }

    /// Measures the size of every tenant database, one query per server on
    /// its admin database (single-tenant mode: the one database, on its
    /// pool), and warns of quotas crossed.
    pub async fn measure_storage(self: &Arc<Gateway>) {
        if !self.usage.enabled() {
            return;
        }
        let snap = self.snapshot();
        if let Some(t) = snap.single.clone() {
            match self.single_size(&t, snap.epoch).await {
                Ok(bytes) => self.usage.measured(&t, bytes),
                Err(e) => tracing::debug!(error = %e, "cannot measure the database's size"),
            }
            return;
        }
        for (server, address) in &snap.addresses {
            let names: Vec<String> = snap
                .tenants
                .values()
                .filter(|t| &t.server == server && !t.moving)
                .map(|t| t.info.name.clone())
                .collect();
            if names.is_empty() {
                continue;
            }
            let mut config = address.config().clone();
            if config.get_dbname().is_none() {
                config.dbname("postgres");
            }
            config.connect_timeout(Duration::from_secs(5));
            config.application_name("tenantry gateway (usage)");
            let sizes = async {
                let (client, connection) = config.connect(tenantry_pgconn::connector()).await?;
                tokio::spawn(connection);
                client.query(usage::STORAGE, &[&names]).await
            }
            .await;
            match sizes {
                Ok(rows) => {
                    for row in rows {
                        let (name, bytes): (String, i64) = (row.get(0), row.get(1));
                        if let Some(t) = snap.tenants.get(&name) {
                            self.usage.measured(t, bytes.max(0) as u64);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(%server, error = %db_error(&e), "cannot measure the tenant databases' sizes on this server; their storage quotas use the last measurement");
                }
            }
        }
    }

    async fn single_size(&self, t: &TenantEntry, epoch: u64) -> Result<u64, String> {
        let role = t.pool_login().ok_or("no login")?;
        let config = t.config(role).expect("pool_login returns ready logins");
        let key = PoolKey {
            tenant: t.info.name.clone(),
            role: role.to_owned(),
        };
        let conn = self
            .pools(&t.server)
            .get(&key, &|| Target {
                config: config.clone(),
                size: t.pool_size,
                epoch,
            })
            .await
            .map_err(|e| e.to_string())?;
        let row = conn
            .query_one("SELECT pg_database_size(current_database())", &[])
            .await
            .map_err(|e| db_error(&e))?;
        Ok(row.get::<_, i64>(0).max(0) as u64)
    }
}

/// A database error with the server's message when there is one.
fn db_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// Runs the flush every `flush` and the measurement every `measure` until
/// `stop` fires; a flush under way when it does is finished first (what it
/// took out of the counters is written, not dropped), then the task ends
/// and the binary flushes once more after the listeners stop.
pub fn spawn(
    gateway: Arc<Gateway>,
    flush: Duration,
    measure: Duration,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // The first flush one interval in (at start nothing is pending);
        // storage is measured at once.
        let mut flush_tick = tokio::time::interval_at(tokio::time::Instant::now() + flush, flush);
        let mut measure_tick = tokio::time::interval(measure);
        flush_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        measure_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = flush_tick.tick() => gateway.flush_usage().await,
                _ = measure_tick.tick() => gateway.measure_storage().await,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_refuse_past_the_limit_and_say_by_how_much() {
        let q = Quotas {
            storage_bytes: Some(1024 * 1024),
            requests_per_day: Some(100),
        };
        assert_eq!(over_quota(q, Some(1024 * 1024), 100), None);
        let m = over_quota(q, Some(2 * 1024 * 1024), 1).unwrap();
        assert!(
            m.contains("storage quota") && m.contains("2 MiB") && m.contains("1 MiB"),
            "{m}"
        );
        let m = over_quota(q, None, 101).unwrap();
        assert!(
            m.contains("requests_per_day") && m.contains("101") && m.contains("100"),
            "{m}"
        );
        assert_eq!(
            over_quota(Quotas::default(), Some(u64::MAX), u64::MAX),
            None
        );
    }

    #[test]
    fn a_crossing_warns_once_until_the_figure_drops_back() {
        let mut c = Counted::default();
        let limit = Some(100);
        assert_eq!(warn_crossing(&mut c, Quota::Storage, 79, limit), None);
        assert_eq!(warn_crossing(&mut c, Quota::Storage, 80, limit), Some(80));
        assert_eq!(warn_crossing(&mut c, Quota::Storage, 90, limit), None);
        assert_eq!(warn_crossing(&mut c, Quota::Storage, 96, limit), Some(95));
        assert_eq!(warn_crossing(&mut c, Quota::Storage, 101, limit), Some(100));
        assert_eq!(warn_crossing(&mut c, Quota::Storage, 10, limit), None);
        assert_eq!(warn_crossing(&mut c, Quota::Storage, 85, limit), Some(80));
        // The other quota keeps its own level.
        assert_eq!(
            warn_crossing(&mut c, Quota::RequestsPerDay, 85, limit),
            Some(80)
        );
        assert_eq!(warn_crossing(&mut c, Quota::RequestsPerDay, 85, None), None);
    }

    #[test]
    fn warnings_and_bytes_read_well() {
        let q = Quotas {
            storage_bytes: Some(1024 * 1024 * 1024),
            requests_per_day: Some(1000),
        };
        let w = warnings(q, Some(1024 * 1024 * 1000), 500);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].1, 95);
        assert_eq!(w[0].2, "storage at 98% of 1 GiB (1000 MiB)");
        assert!(warnings(q, Some(1), 1).is_empty());
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5 GiB");
    }

    #[test]
    fn todays_requests_add_the_flushed_total_and_what_is_pending() {
        let now = SystemTime::now();
        let mut c = Counted {
            flushed: Some((10, 40)),
            pending: vec![(10, 2, now), (9, 7, now)],
            ..Counted::default()
        };
        assert_eq!(c.requests_on(10), 42);
        assert_eq!(c.requests_on(11), 0);
        c.flushed = Some((9, 1));
        assert_eq!(c.requests_on(10), 2);
    }
}
