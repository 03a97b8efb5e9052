//! [`Registry`]: one deadpool-postgres pool per (tenant, role) — a
//! [`PoolKey`] — all of them under one global connection budget, plus a
//! per-tenant circuit breaker so a tenant whose database is down fails fast
//! without hurting the others.
//!
//! # The budget
//!
//! Thousands of tenants may be configured but the server accepts only tens of
//! connections from the gateway, so every *open* connection holds one permit
//! of a global [`Semaphore`] of `budget` permits, and nothing else counts:
//!
//! - Pools are created lazily with `max_size` = the tenant's tier size and
//!   never reserve anything up front; an idle tenant costs no connection.
//! - Connections are made by `BudgetConnect`, the pools' deadpool
//!   [`Connect`]: it takes a permit *before* dialing and moves it into the
//!   task that drives the connection, so the permit is released exactly when
//!   the connection is gone (closed by the pool, dropped, or broken). The sum
//!   of open connections can therefore never exceed the budget.
//! - When no permit is free, the connector closes idle connections
//!   (`Pool::retain`, which only touches idle objects; one "eviction" per pool
//!   shrunk): one of a pool that has several, else those of a pool chosen at
//!   random (see [`victim`] for why not LRU), and waits for the
//!   permit to come back. Closing is graceful (the client is dropped, so
//!   tokio-postgres sends Terminate) and the permit is freed when the socket
//!   is closed. While waiting it re-checks every `EVICT_POLL` (20 ms) because a
//!   connection returned to *another* pool becomes evictable without freeing
//!   a permit.
//! - A checkout waits at most `checkout_timeout` in all (queueing for its own
//!   pool plus waiting for budget), then answers [`PoolError::Busy`]. The
//!   deadline is enforced around the whole checkout; a checkout already
//!   dialing when it passes is let finish (the TCP connect is bounded by
//!   `connect_timeout`, the whole dial by deadpool's `create` timeout of
//!   `checkout_timeout + connect_timeout`, which also covers the budget
//!   wait). Which phase a checkout is in is told to the
//!   connector through a task-local, because deadpool calls it inline in the
//!   requesting task.
//! - Pools are only ever closed whole by [`Registry::remove_tenant`],
//!   [`Registry::reap_idle`] and shrinking [`Registry::resize_tenant`]; busy
//!   connections of a closed pool finish their request, then close.
//!
//! # The circuit breaker
//!
//! A failed dial marks the tenant down (connection refused, timed out,
//! database missing, ...) or, for an authentication or permission failure
//! (SQLSTATE 28P01, 28000, 42501), marks that (tenant, role) refused. Until the
//! backoff passes (`backoff_min`, doubling per failed probe up to
//! `backoff_max`) requests fail at once without touching the network; then
//! exactly one request probes, and its success clears the mark.
//!
//! What does not live here: which database or login a key uses (the caller
//! builds the [`Target`] from the snapshot), HTTP status codes, and TLS to the
//! database beyond the one place it plugs in (`fn tls`).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use deadpool_postgres::{
    Connect, Manager, ManagerConfig, Object, Pool, PoolError as DeadpoolError, RecyclingMethod,
    Runtime, TimeoutType, Timeouts,
};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::error::SqlState;

/// While waiting for budget, how often to look again for idle connections to
/// close (a connection going back to another pool frees no permit by itself).
const EVICT_POLL: Duration = Duration::from_millis(20);
/// How long a closing connection may take to say goodbye before it is cut.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// The `Retry-After` suggested with [`PoolError::Busy`].
const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Which pool: a tenant and the role its connections log in as.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey {
    pub tenant: String,
    /// "admin" | "developer" | "customer" | "dsn" (single-tenant mode)
    pub role: String,
}

/// How to open connections for a key: built by the caller from the inventory
/// (user, password, host, port, dbname) or a `DATABASE_DSN`.
pub struct Target {
    pub config: tokio_postgres::Config,
    /// Most connections this key's pool may hold (the tier's pool size).
    pub size: usize,
}

/// Limits and timeouts of the [`Registry`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// Most connections all pools together may hold open.
    pub budget: usize,
    /// How long a request waits for a connection, in all.
    pub checkout_timeout: Duration,
    /// A pool unused this long is closed by [`Registry::reap_idle`].
    pub idle_timeout: Duration,
    /// How long dialing a connection may take (also the TCP connect timeout
    /// when the target's config sets none).
    pub connect_timeout: Duration,
    /// First backoff after a failed dial; doubles per failed probe...
    pub backoff_min: Duration,
    /// ...up to this.
    pub backoff_max: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            budget: 20,
            checkout_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// Why no connection was handed out.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Every connection busy and the budget reached: answered 503 with Retry-After.
    #[error("all database connections are busy; retry in {}s", retry_after.as_secs().max(1))]
    Busy { retry_after: Duration },
    /// The tenant's database is unreachable (connect failed); further requests
    /// fail fast until the backoff passes.
    #[error("the tenant's database is unreachable: {reason}")]
    Down {
        reason: String,
        retry_after: Duration,
    },
    /// Authentication or permission failure connecting (wrong password, no
    /// CONNECT): not retried quickly either.
    #[error("the database refused the gateway's login: {reason}")]
    Refused { reason: String },
}

/// What [`Registry::stats`] reports, for metrics and the admin listener.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Every live pool, sorted by key.
    pub pools: Vec<PoolStat>,
    /// Connections open (or being opened) across all pools.
    pub open_connections: usize,
    pub budget: usize,
    /// Pools whose idle connections were closed to make room for another's.
    pub evictions: u64,
    /// [`PoolError::Busy`] answers.
    pub rejections: u64,
    /// Requests failed fast by the circuit breaker (down or refused).
    pub down_rejections: u64,
}

/// One pool in [`Stats`].
#[derive(Debug, Clone)]
pub struct PoolStat {
    pub key: PoolKey,
    /// Connections open.
    pub size: usize,
    /// Of which checked out.
    pub in_use: usize,
    /// Requests queued for this pool.
    pub waiting: usize,
    pub max_size: usize,
}

/// The pools of every (tenant, role), shared by all requests.
pub struct Registry {
    shared: Arc<Shared>,
}

struct Shared {
    settings: Settings,
    budget: Arc<Semaphore>,
    pools: Mutex<HashMap<PoolKey, Entry>>,
    breakers: Mutex<HashMap<BreakerKey, Breaker>>,
    evictions: AtomicU64,
    rejections: AtomicU64,
    down_rejections: AtomicU64,
}

#[derive(Clone)]
struct Entry {
    pool: Pool,
    /// Set each time a request asks for this pool (the LRU order).
    last_used: Instant,
    /// Kept to rebuild the pool (shrinking, or after a race with a close).
    config: tokio_postgres::Config,
    max_size: usize,
}

impl Registry {
    pub fn new(settings: Settings) -> Arc<Registry> {
        Arc::new(Registry {
            shared: Arc::new(Shared {
                budget: Arc::new(Semaphore::new(settings.budget)),
                settings,
                pools: Mutex::default(),
                breakers: Mutex::default(),
                evictions: AtomicU64::new(0),
                rejections: AtomicU64::new(0),
                down_rejections: AtomicU64::new(0),
            }),
        })
    }

    /// A connection for `key`, creating its pool on first use with `target()`.
    ///
    /// `target` is only called here, before the returned future first
    /// awaits, so the future is `Send` whatever the closure captures.
    pub fn get<'r>(
        &'r self,
        key: &PoolKey,
        target: &dyn Fn() -> Target,
    ) -> impl Future<Output = Result<Object, PoolError>> + Send + 'r {
        let start = self.start(key, target);
        let key = key.clone();
        async move {
            let (entry, probe) = start?;
            self.checkout(&key, entry, probe).await
        }
    }

    /// Can the tenant's `role` pool hand out a connection now, and the round
    /// trip of `SELECT 1`.
    pub fn health<'r>(
        &'r self,
        key: &PoolKey,
        target: &dyn Fn() -> Target,
    ) -> impl Future<Output = Result<Duration, PoolError>> + Send + 'r {
        let checkout = self.get(key, target);
        let retry_after = self.shared.settings.backoff_min;
        async move {
            let client = checkout.await?;
            let started = Instant::now();
            client
                .simple_query("SELECT 1")
                .await
                .map_err(|e| PoolError::Down {
                    reason: e.to_string(),
                    retry_after,
                })?;
            Ok(started.elapsed())
        }
    }

    /// Drops every pool of a tenant (removed from the configuration); in-flight
    /// connections finish, then close.
    pub fn remove_tenant(&self, tenant: &str) {
        let removed: Vec<(PoolKey, Entry)> = {
            let mut pools = lock(&self.shared.pools);
            let keys: Vec<PoolKey> = pools
                .keys()
                .filter(|k| k.tenant == tenant)
                .cloned()
                .collect();
            keys.into_iter()
                .filter_map(|k| pools.remove(&k).map(|e| (k, e)))
                .collect()
        };
        lock(&self.shared.breakers).retain(|k, _| k.tenant != tenant);
        for (key, entry) in removed {
            tracing::debug!(tenant = %key.tenant, role = %key.role, "closing the pool of a removed tenant");
            entry.pool.close();
        }
    }

    /// Changes the size of a tenant's pools (plan change). Growing takes effect
    /// at once; a shrunk pool is replaced by a new one of the new size (the
    /// old one's busy connections finish, then close), so the new limit holds
    /// exactly.
    pub fn resize_tenant(&self, tenant: &str, size: usize) {
        let size = size.max(1);
        let mut retired = Vec::new();
        {
            let mut pools = lock(&self.shared.pools);
            for (key, entry) in pools.iter_mut().filter(|(k, _)| k.tenant == tenant) {
                if size >= entry.max_size {
                    entry.pool.resize(size);
                } else {
                    let fresh = self.build_pool(&entry.config, size);
                    retired.push(std::mem::replace(&mut entry.pool, fresh));
                    tracing::debug!(tenant = %key.tenant, role = %key.role, size, "pool replaced by a smaller one");
                }
                entry.max_size = size;
            }
        }
        for pool in retired {
            pool.close();
        }
    }

    /// Closes pools unused for `idle_timeout` (and forgets breaker marks long
    /// expired); call periodically.
    pub fn reap_idle(&self) {
        let settings = &self.shared.settings;
        let now = Instant::now();
        let reaped: Vec<(PoolKey, Entry)> = {
            let mut pools = lock(&self.shared.pools);
            let idle: Vec<PoolKey> = pools
                .iter()
                .filter(|(_, e)| {
                    let s = e.pool.status();
                    // No request holds or awaits a connection of it.
                    let unused = s.available == s.size && s.waiting == 0;
                    unused && now.saturating_duration_since(e.last_used) >= settings.idle_timeout
                })
                .map(|(k, _)| k.clone())
                .collect();
            idle.into_iter()
                .filter_map(|k| pools.remove(&k).map(|e| (k, e)))
                .collect()
        };
        for (key, entry) in reaped {
            tracing::debug!(tenant = %key.tenant, role = %key.role, "closing an idle pool");
            entry.pool.close();
        }
        lock(&self.shared.breakers).retain(|_, b| {
            b.probing || now.saturating_duration_since(b.until) < settings.backoff_max
        });
    }

    pub fn stats(&self) -> Stats {
        let shared = &self.shared;
        let mut pools: Vec<PoolStat> = lock(&shared.pools)
            .iter()
            .map(|(key, e)| {
                let s = e.pool.status();
                PoolStat {
                    key: key.clone(),
                    size: s.size,
                    in_use: s.size - s.available,
                    waiting: s.waiting,
                    max_size: s.max_size,
                }
            })
            .collect();
        pools.sort_by(|a, b| a.key.cmp(&b.key));
        let budget = shared.settings.budget;
        Stats {
            pools,
            open_connections: budget.saturating_sub(shared.budget.available_permits()),
            budget,
            evictions: shared.evictions.load(Ordering::Relaxed),
            rejections: shared.rejections.load(Ordering::Relaxed),
            down_rejections: shared.down_rejections.load(Ordering::Relaxed),
        }
    }

    /// The synchronous start of [`Registry::get`]: the breaker's verdict, then
    /// the pool (created with `target()` if missing) marked as just used.
    fn start(
        &self,
        key: &PoolKey,
        target: &dyn Fn() -> Target,
    ) -> Result<(Entry, Probe), PoolError> {
        let probe = self.admit(key)?;
        if let Some(entry) = self.touch(key) {
            return Ok((entry, probe));
        }
        // Not under the lock: the closure is the caller's.
        let Target { config, size } = target();
        Ok((self.insert(key, config, size), probe))
    }

    /// The pool of `key` if it exists, marked as just used.
    fn touch(&self, key: &PoolKey) -> Option<Entry> {
        let mut pools = lock(&self.shared.pools);
        let entry = pools.get_mut(key)?;
        entry.last_used = Instant::now();
        Some(entry.clone())
    }

    /// The pool of `key`, created from `config` and `size` unless another
    /// request created it meanwhile.
    fn insert(&self, key: &PoolKey, config: tokio_postgres::Config, size: usize) -> Entry {
        let mut pools = lock(&self.shared.pools);
        let entry = pools.entry(key.clone()).or_insert_with(|| {
            let size = size.max(1);
            tracing::debug!(tenant = %key.tenant, role = %key.role, size, "new pool");
            Entry {
                pool: self.build_pool(&config, size),
                last_used: Instant::now(),
                config,
                max_size: size,
            }
        });
        entry.last_used = Instant::now();
        entry.clone()
    }

    fn build_pool(&self, config: &tokio_postgres::Config, size: usize) -> Pool {
        let settings = &self.shared.settings;
        let mut config = config.clone();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(settings.connect_timeout);
        }
        let connect = BudgetConnect {
            budget: self.shared.budget.clone(),
            shared: Arc::downgrade(&self.shared),
        };
        let manager = Manager::from_connect(
            config,
            connect,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let built = Pool::builder(manager)
            .max_size(size)
            .runtime(Runtime::Tokio1)
            .timeouts(self.timeouts(settings.checkout_timeout))
            .build();
        match built {
            Ok(pool) => pool,
            // Only fails when timeouts are set without a runtime; one is set.
            Err(e) => unreachable!("building a pool with a runtime: {e}"),
        }
    }

    /// deadpool's timeouts for a checkout with `wait` left before its
    /// deadline. `create` covers waiting for budget (bounded by the deadline
    /// we enforce ourselves) and dialing (bounded by `connect_timeout`).
    fn timeouts(&self, wait: Duration) -> Timeouts {
        let s = &self.shared.settings;
        Timeouts {
            wait: Some(wait),
            create: Some(s.checkout_timeout + s.connect_timeout),
            recycle: Some(s.connect_timeout),
        }
    }

    async fn checkout(
        &self,
        key: &PoolKey,
        mut entry: Entry,
        probe: Probe,
    ) -> Result<Object, PoolError> {
        let deadline = Instant::now() + self.shared.settings.checkout_timeout;
        let mut closed_races = 0;
        loop {
            match self.checkout_once(&entry.pool, deadline).await {
                Ok(client) => {
                    probe.succeeded();
                    return Ok(client);
                }
                Err(Failure::Busy) => {
                    self.shared.rejections.fetch_add(1, Ordering::Relaxed);
                    return Err(PoolError::Busy {
                        retry_after: BUSY_RETRY_AFTER,
                    });
                }
                Err(Failure::Dial(dial)) => return Err(self.trip(key, dial)),
                Err(Failure::Other(reason)) => {
                    return Err(PoolError::Down {
                        reason,
                        retry_after: self.shared.settings.backoff_min,
                    })
                }
                // The pool was closed under us (tenant removed or resized, or
                // reaped): take the current one. If there is none, do not
                // make one from this request's configuration: a reload may
                // have just replaced it (new credentials), and a pool made
                // from the old one would outlive the request. The caller
                // retries (503, Retry-After).
                Err(Failure::Closed) if closed_races < 2 => {
                    closed_races += 1;
                    entry = match self.touch(key) {
                        Some(current) => current,
                        None => {
                            return Err(PoolError::Busy {
                                retry_after: BUSY_RETRY_AFTER,
                            })
                        }
                    };
                }
                Err(Failure::Closed) => {
                    return Err(PoolError::Down {
                        reason: "the pool was closed".into(),
                        retry_after: self.shared.settings.backoff_min,
                    })
                }
            }
        }
    }

    async fn checkout_once(&self, pool: &Pool, deadline: Instant) -> Result<Object, Failure> {
        let phase = Arc::new(AtomicU8::new(QUEUED));
        let timeouts = self.timeouts(deadline.saturating_duration_since(Instant::now()));
        let get = CHECKOUT.scope(phase.clone(), pool.timeout_get(&timeouts));
        tokio::pin!(get);
        let result = tokio::select! {
            biased;
            result = &mut get => result,
            () = tokio::time::sleep_until(deadline) => {
                if phase.load(Ordering::Acquire) == DIALING {
                    // Bounded by connect_timeout; a slow database is not "busy".
                    get.await
                } else {
                    return Err(Failure::Busy);
                }
            }
        };
        result.map_err(|e| match e {
            DeadpoolError::Timeout(TimeoutType::Wait) => Failure::Busy,
            DeadpoolError::Timeout(TimeoutType::Create) => Failure::Dial(Dial::TimedOut),
            DeadpoolError::Backend(e) => Failure::Dial(Dial::Error(e)),
            DeadpoolError::Closed => Failure::Closed,
            other => Failure::Other(other.to_string()),
        })
    }

    /// The breaker's verdict for a new request: fail fast, go ahead, or go
    /// ahead as the one probe of a mark whose backoff has passed.
    fn admit(&self, key: &PoolKey) -> Result<Probe, PoolError> {
        let shared = &self.shared;
        let now = Instant::now();
        let mut breakers = lock(&shared.breakers);
        let marks = [BreakerKey::tenant(key), BreakerKey::role(key)];
        let mut probes = Vec::new();
        for mark in marks {
            let Some(b) = breakers.get(&mark) else {
                continue;
            };
            if now < b.until || b.probing {
                shared.down_rejections.fetch_add(1, Ordering::Relaxed);
                let retry_after = if now < b.until {
                    b.until - now
                } else {
                    shared.settings.backoff_min
                };
                return Err(b.error(retry_after));
            }
            probes.push(mark);
        }
        for mark in &probes {
            if let Some(b) = breakers.get_mut(mark) {
                b.probing = true;
            }
        }
        Ok(Probe {
            shared: self.shared.clone(),
            marks: probes,
        })
    }

    /// Marks the tenant down (or the key refused) after a failed dial and
    /// returns the error for this request.
    fn trip(&self, key: &PoolKey, dial: Dial) -> PoolError {
        let settings = &self.shared.settings;
        let (refused, reason) = dial.classify();
        let mark = if refused {
            BreakerKey::role(key)
        } else {
            BreakerKey::tenant(key)
        };
        let now = Instant::now();
        let mut breakers = lock(&self.shared.breakers);
        let b = breakers.entry(mark).or_insert_with(|| Breaker {
            refused,
            reason: String::new(),
            backoff: Duration::ZERO,
            until: now,
            probing: false,
        });
        // Several requests failing together count as one failure.
        if now >= b.until || b.backoff.is_zero() {
            b.backoff = if b.backoff.is_zero() {
                settings.backoff_min
            } else {
                (b.backoff * 2).min(settings.backoff_max)
            };
            b.until = now + b.backoff;
        }
        b.refused = refused;
        b.reason.clone_from(&reason);
        b.probing = false;
        tracing::warn!(
            tenant = %key.tenant, role = %key.role, %reason,
            backoff_ms = b.backoff.as_millis() as u64,
            "{}", if refused { "login refused" } else { "tenant database down" }
        );
        b.error(b.until.saturating_duration_since(now))
    }
}

impl Shared {
    /// Frees one budget slot's worth of idle connections (see [`victim`]).
    /// Returns whether it closed something.
    fn evict(&self) -> bool {
        let (key, closed) = {
            let pools = lock(&self.pools);
            // Not `status().available`: it counts a request dialing for a
            // pool as a user, hiding that pool's idle connections.
            let candidates: Vec<(&PoolKey, &Entry, usize)> = pools
                .iter()
                .map(|(k, e)| (k, e, e.pool.status().size))
                .filter(|(_, _, size)| *size > 0)
                .collect();
            let sizes: Vec<usize> = candidates.iter().map(|c| c.2).collect();
            let mut found = None;
            // A victim may turn out to have nothing idle (all busy): try the
            // next choice, at most once per candidate.
            let mut tried = vec![false; candidates.len()];
            while let Some(i) = victim(&sizes, &tried, rand::random::<u64>()) {
                tried[i] = true;
                let (key, entry, size) = candidates[i];
                // Keep a tenant's last connection when it has others idle.
                let mut close = if size > 1 { 1 } else { usize::MAX };
                let removed = entry
                    .pool
                    .retain(|_, _| {
                        if close > 0 {
                            close -= 1;
                            false
                        } else {
                            true
                        }
                    })
                    .removed;
                if !removed.is_empty() {
                    found = Some((key.clone(), removed));
                    break;
                }
            }
            match found {
                Some(found) => found,
                None => return false,
            }
        };
        self.evictions.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(tenant = %key.tenant, role = %key.role, connections = closed.len(), "evicted idle connections");
        // Dropping the clients closes the connections (see `spawn_driver`).
        drop(closed);
        true
    }
}

/// Which pool gives up connections when the budget is spent, among pools
/// with `sizes[i]` open connections (not yet `tried`): first one with more
/// than one connection (it keeps the others, so the tenant keeps being served
/// without a new login); else any, chosen at random (`seed`).
///
/// Random, not least-recently-used: a load that visits more tenants than the
/// budget holds in a cycle (a crawler, a batch job, a load generator rotating
/// hosts) makes LRU evict exactly the pool needed next, so every request
/// would pay a new connection and login; random replacement keeps most of
/// them.
fn victim(sizes: &[usize], tried: &[bool], seed: u64) -> Option<usize> {
    let open: Vec<usize> = (0..sizes.len()).filter(|&i| !tried[i]).collect();
    let pick = |among: &[usize]| {
        among
            .get((seed % among.len().max(1) as u64) as usize)
            .copied()
    };
    let shared: Vec<usize> = open.iter().copied().filter(|&i| sizes[i] > 1).collect();
    if shared.is_empty() {
        pick(&open)
    } else {
        pick(&shared)
    }
}

/// Why one checkout attempt failed.
enum Failure {
    Busy,
    Dial(Dial),
    Closed,
    Other(String),
}

/// A failed dial.
enum Dial {
    Error(tokio_postgres::Error),
    TimedOut,
}

impl Dial {
    /// (is it an authentication/permission refusal, the reason).
    fn classify(&self) -> (bool, String) {
        match self {
            Dial::TimedOut => (false, "timed out connecting".into()),
            Dial::Error(e) => {
                let refused = matches!(
                    e.code(),
                    Some(c) if *c == SqlState::INVALID_PASSWORD
                        || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                        || *c == SqlState::INSUFFICIENT_PRIVILEGE
                );
                let reason = match e.as_db_error() {
                    Some(db) => format!("{} ({})", db.message(), db.code().code()),
                    None => e.to_string(),
                };
                (refused, reason)
            }
        }
    }
}

/// A circuit-breaker mark: a whole tenant (down) or one (tenant, role)
/// (refused).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct BreakerKey {
    tenant: String,
    role: Option<String>,
}

impl BreakerKey {
    fn tenant(key: &PoolKey) -> BreakerKey {
        BreakerKey {
            tenant: key.tenant.clone(),
            role: None,
        }
    }
    fn role(key: &PoolKey) -> BreakerKey {
        BreakerKey {
            tenant: key.tenant.clone(),
            role: Some(key.role.clone()),
        }
    }
}

struct Breaker {
    refused: bool,
    reason: String,
    backoff: Duration,
    /// Requests fail fast until then.
    until: Instant,
    /// A request is probing after the backoff; the others still fail fast.
    probing: bool,
}

impl Breaker {
    fn error(&self, retry_after: Duration) -> PoolError {
        if self.refused {
            PoolError::Refused {
                reason: self.reason.clone(),
            }
        } else {
            PoolError::Down {
                reason: self.reason.clone(),
                retry_after,
            }
        }
    }
}

/// The marks a request probes. Success clears them; failure re-arms them
/// (in [`Registry::trip`]); a request dropped midway lets the next one probe.
struct Probe {
    shared: Arc<Shared>,
    marks: Vec<BreakerKey>,
}

impl Probe {
    fn succeeded(mut self) {
        if self.marks.is_empty() {
            return;
        }
        let mut breakers = lock(&self.shared.breakers);
        for mark in self.marks.drain(..) {
            if breakers.remove(&mark).is_some() {
                tracing::info!(tenant = %mark.tenant, "database reachable again");
            }
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        if self.marks.is_empty() {
            return;
        }
        let mut breakers = lock(&self.shared.breakers);
        for mark in &self.marks {
            if let Some(b) = breakers.get_mut(mark) {
                b.probing = false;
            }
        }
    }
}

/// Where a checkout is, for the deadline in [`Registry::checkout_once`].
const QUEUED: u8 = 0;
const BUDGET: u8 = 1;
const DIALING: u8 = 2;

tokio::task_local! {
    /// The phase of the checkout running in this task (deadpool dials inline).
    static CHECKOUT: Arc<AtomicU8>;
}

fn set_phase(phase: u8) {
    let _ = CHECKOUT.try_with(|p| p.store(phase, Ordering::Release));
}

/// The TLS connector every connection uses (see `tenantry_pgtls`).
fn tls() -> tokio_postgres_rustls::MakeRustlsConnect {
    tenantry_pgtls::connector()
}

/// deadpool's [`Connect`] for our pools: takes a budget permit (evicting idle
/// connections of other pools if needed), dials, and hands the permit to the
/// task driving the connection.
struct BudgetConnect {
    budget: Arc<Semaphore>,
    shared: Weak<Shared>,
}

type Dialed = Result<(tokio_postgres::Client, JoinHandle<()>), tokio_postgres::Error>;

impl Connect for BudgetConnect {
    fn connect(
        &self,
        config: &tokio_postgres::Config,
    ) -> Pin<Box<dyn Future<Output = Dialed> + Send + '_>> {
        let config = config.clone();
        Box::pin(async move {
            set_phase(BUDGET);
            let permit = self.reserve().await;
            set_phase(DIALING);
            let (client, connection) = config.connect(tls()).await?;
            Ok((client, spawn_driver(connection, permit)))
        })
    }
}

impl BudgetConnect {
    /// A budget permit, evicting idle connections as needed; waits until one
    /// is free (the caller's deadline cancels the wait).
    async fn reserve(&self) -> OwnedSemaphorePermit {
        loop {
            if let Ok(permit) = self.budget.clone().try_acquire_owned() {
                return permit;
            }
            if let Some(shared) = self.shared.upgrade() {
                shared.evict();
            }
            tokio::select! {
                permit = self.budget.clone().acquire_owned() => match permit {
                    Ok(permit) => return permit,
                    // Never closed; do not spin if it ever were.
                    Err(_) => tokio::time::sleep(EVICT_POLL).await,
                },
                () = tokio::time::sleep(EVICT_POLL) => {}
            }
        }
    }
}

/// Spawns the task driving `connection`, which holds `permit` for as long as
/// the connection is open. Returns the handle deadpool aborts when it drops
/// the client: aborting it does not cut the connection but lets it end
/// gracefully (tokio-postgres sends Terminate once its client is gone), within
/// [`CLOSE_GRACE`].
fn spawn_driver<C>(connection: C, permit: OwnedSemaphorePermit) -> JoinHandle<()>
where
    C: Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    let (dropped_tx, dropped_rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _permit = permit;
        tokio::pin!(connection);
        let ended = tokio::select! {
            ended = &mut connection => Some(ended),
            _ = dropped_rx => tokio::time::timeout(CLOSE_GRACE, &mut connection).await.ok(),
        };
        match ended {
            Some(Ok(())) => {}
            Some(Err(e)) => tracing::debug!(error = %e, "database connection ended with an error"),
            None => tracing::debug!("database connection cut after the close grace period"),
        }
    });
    tokio::spawn(async move {
        let _dropped = dropped_tx;
        std::future::pending::<()>().await
    })
}

/// A std mutex lock that survives poisoning (every critical section here
/// leaves the data consistent).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    //! Against the shared throwaway cluster: each test makes its own
    //! databases (unique names) and its own registry.
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tenantry_localpg::Cluster;

    fn cluster() -> &'static Cluster {
        Cluster::shared()
    }

    /// A fresh database named after `what`.
    fn database(what: &str) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("pools_{what}_{}_{n}", std::process::id());
        cluster()
            .psql("postgres", &format!("CREATE DATABASE {name}"))
            .unwrap();
        name
    }

    fn superuser(db: &str, size: usize) -> Target {
        Target {
            config: cluster().url(db).parse().unwrap(),
            size,
        }
    }

    fn key(tenant: &str) -> PoolKey {
        PoolKey {
            tenant: tenant.into(),
            role: "admin".into(),
        }
    }

    fn settings(budget: usize) -> Settings {
        Settings {
            budget,
            checkout_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(2),
            backoff_min: Duration::from_millis(300),
            backoff_max: Duration::from_secs(2),
        }
    }

    /// Server-side connections to `dbs`, as `pg_stat_activity` sees them.
    fn backends(dbs: &[String]) -> usize {
        let list: Vec<String> = dbs.iter().map(|d| format!("'{d}'")).collect();
        let sql = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname IN ({})",
            list.join(",")
        );
        cluster()
            .psql("postgres", &sql)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Polls `cond` for up to 5 s (closing a connection is asynchronous).
    async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
        for _ in 0..250 {
            if cond() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cond()
    }

    async fn select_one(client: &Object) {
        client.simple_query("SELECT 1").await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn ten_tenants_share_a_budget_of_four() {
        let dbs: Vec<String> = (0..10).map(|_| database("lru")).collect();
        let reg = Registry::new(settings(4));
        for round in 0..2 {
            for db in &dbs {
                let client = reg.get(&key(db), &|| superuser(db, 2)).await.unwrap();
                select_one(&client).await;
                assert!(reg.stats().open_connections <= 4, "round {round}, {db}");
                // A closed connection's backend may take a moment to exit.
                assert!(
                    eventually(|| backends(&dbs) <= 4).await,
                    "round {round}, {db}"
                );
            }
        }
        let stats = reg.stats();
        assert_eq!(stats.budget, 4);
        assert_eq!(stats.open_connections, 4);
        // Ten tenants through four slots, twice: whatever the policy, at
        // least 6 evictions a round; each evicted one visit.
        assert!((12..=16).contains(&stats.evictions), "{stats:?}");
        assert_eq!(stats.rejections, 0);
        let open: usize = stats.pools.iter().map(|p| p.size).sum();
        assert_eq!(open, 4, "{stats:?}");
        // The last one visited is among the survivors.
        let last = stats.pools.iter().find(|p| p.key.tenant == dbs[9]).unwrap();
        assert_eq!(last.size, 1, "{stats:?}");
    }

    #[test]
    fn victims_are_spare_connections_first_then_random() {
        let none = [false; 4];
        // A pool with a spare connection gives it up first, whatever the draw.
        for seed in 0..8 {
            assert_eq!(victim(&[1, 1, 3, 1], &none, seed), Some(2));
        }
        // Else any pool, spread by the draw.
        let picked: std::collections::BTreeSet<usize> = (0..8)
            .filter_map(|seed| victim(&[1, 1, 1, 1], &none, seed))
            .collect();
        assert_eq!(picked.len(), 4, "{picked:?}");
        // Tried ones are skipped; nothing left: none.
        assert_eq!(victim(&[1, 2], &[false, true], 5), Some(0));
        assert_eq!(victim(&[1, 2], &[true, true], 5), None);
        assert_eq!(victim(&[], &[], 5), None);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_load_on_many_tenants_stays_within_the_budget() {
        let dbs: Vec<String> = (0..8).map(|_| database("load")).collect();
        let reg = Registry::new(Settings {
            checkout_timeout: Duration::from_secs(20),
            ..settings(3)
        });
        let peak = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..40 {
            let (reg, db, peak) = (reg.clone(), dbs[i % dbs.len()].clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                let client = reg.get(&key(&db), &|| superuser(&db, 2)).await?;
                peak.fetch_max(reg.stats().open_connections, Ordering::Relaxed);
                client.simple_query("SELECT pg_sleep(0.01)").await.unwrap();
                Ok::<_, PoolError>(())
            }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert!(peak.load(Ordering::Relaxed) <= 3);
        let stats = reg.stats();
        assert!(stats.open_connections <= 3, "{stats:?}");
        assert!(stats.evictions > 0, "{stats:?}");
        assert_eq!(stats.rejections, 0);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn beyond_the_budget_a_checkout_waits_then_is_busy() {
        let (a, b) = (database("busy"), database("busy"));
        let reg = Registry::new(settings(2));
        let held1 = reg.get(&key(&a), &|| superuser(&a, 3)).await.unwrap();
        let held2 = reg.get(&key(&a), &|| superuser(&a, 3)).await.unwrap();

        // Another tenant: nothing idle to evict, the budget is spent.
        let err = reg.get(&key(&b), &|| superuser(&b, 2)).await.unwrap_err();
        assert!(matches!(err, PoolError::Busy { retry_after } if retry_after > Duration::ZERO));
        // The same tenant, below its pool size: also over budget.
        let err = reg.get(&key(&a), &|| superuser(&a, 3)).await.unwrap_err();
        assert!(matches!(err, PoolError::Busy { .. }), "{err}");
        assert_eq!(reg.stats().rejections, 2);
        assert_eq!(reg.stats().open_connections, 2);

        // A waiting checkout gets the room a returned connection leaves.
        let waiter = {
            let (reg, b) = (reg.clone(), b.clone());
            tokio::spawn(async move {
                let client = reg.get(&key(&b), &|| superuser(&b, 2)).await?;
                client.simple_query("SELECT 1").await.unwrap();
                Ok::<_, PoolError>(())
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(held1);
        waiter.await.unwrap().unwrap();
        let stats = reg.stats();
        assert!(stats.evictions >= 1, "{stats:?}");
        assert!(stats.open_connections <= 2, "{stats:?}");
        drop(held2);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_full_pool_makes_its_own_requests_wait() {
        let a = database("full");
        let reg = Registry::new(settings(10));
        let held = reg.get(&key(&a), &|| superuser(&a, 1)).await.unwrap();
        let err = reg.get(&key(&a), &|| superuser(&a, 1)).await.unwrap_err();
        assert!(matches!(err, PoolError::Busy { .. }), "{err}");
        let waiter = {
            let (reg, a) = (reg.clone(), a.clone());
            tokio::spawn(async move { reg.get(&key(&a), &|| superuser(&a, 1)).await.map(drop) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(held);
        waiter.await.unwrap().unwrap();
        assert_eq!(reg.stats().open_connections, 1);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_missing_database_fails_fast_then_recovers() {
        let good = database("up");
        let gone = database("gone");
        cluster()
            .psql("postgres", &format!("DROP DATABASE {gone}"))
            .unwrap();
        let reg = Registry::new(settings(4));

        // The first request dials and learns the database is gone.
        let err = reg
            .get(&key(&gone), &|| superuser(&gone, 2))
            .await
            .unwrap_err();
        assert!(matches!(err, PoolError::Down { .. }), "{err}");
        assert!(err.to_string().contains("3D000"), "{err}");
        assert_eq!(reg.stats().down_rejections, 0);
        // The second does not dial: the breaker answers.
        let err = reg
            .get(&key(&gone), &|| superuser(&gone, 2))
            .await
            .unwrap_err();
        assert!(matches!(err, PoolError::Down { retry_after, .. } if retry_after > Duration::ZERO));
        assert_eq!(reg.stats().down_rejections, 1);
        // Every role of that tenant is down; other tenants are not.
        let dev = PoolKey {
            tenant: gone.clone(),
            role: "developer".into(),
        };
        assert!(matches!(
            reg.get(&dev, &|| superuser(&gone, 2)).await,
            Err(PoolError::Down { .. })
        ));
        assert_eq!(reg.stats().down_rejections, 2);
        let client = reg.get(&key(&good), &|| superuser(&good, 2)).await.unwrap();
        select_one(&client).await;

        // After the backoff one probe dials again; failing, the backoff doubles.
        tokio::time::sleep(Duration::from_millis(350)).await;
        let err = reg
            .get(&key(&gone), &|| superuser(&gone, 2))
            .await
            .unwrap_err();
        let PoolError::Down { retry_after, .. } = err else {
            panic!("{err}")
        };
        assert!(retry_after > Duration::from_millis(300), "{retry_after:?}");
        assert_eq!(reg.stats().down_rejections, 2);

        cluster()
            .psql("postgres", &format!("CREATE DATABASE {gone}"))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(650)).await;
        let client = reg.get(&key(&gone), &|| superuser(&gone, 2)).await.unwrap();
        select_one(&client).await;
        // Cleared: the other role dials normally.
        drop(reg.get(&dev, &|| superuser(&gone, 2)).await.unwrap());
        assert_eq!(reg.stats().down_rejections, 2);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_closed_port_is_down_and_fails_fast() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let closed = || {
            let mut config = tokio_postgres::Config::new();
            config
                .host("127.0.0.1")
                .port(port)
                .user("postgres")
                .dbname("postgres");
            Target { config, size: 2 }
        };
        let reg = Registry::new(settings(4));
        let err = reg.get(&key("nowhere"), &closed).await.unwrap_err();
        assert!(matches!(err, PoolError::Down { .. }), "{err}");
        let err = reg.get(&key("nowhere"), &closed).await.unwrap_err();
        assert!(matches!(err, PoolError::Down { .. }), "{err}");
        let stats = reg.stats();
        assert_eq!(stats.down_rejections, 1);
        assert_eq!(stats.open_connections, 0);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_wrong_password_is_refused_for_that_role_only() {
        let db = database("auth");
        let role = format!("{db}_customer");
        cluster()
            .psql(
                "postgres",
                &format!("CREATE ROLE {role} LOGIN PASSWORD 'right'"),
            )
            .unwrap();
        let wrong = || Target {
            config: cluster().user_url(&role, "wrong", &db).parse().unwrap(),
            size: 2,
        };
        let customer = PoolKey {
            tenant: db.clone(),
            role: "customer".into(),
        };
        let reg = Registry::new(settings(4));
        let err = reg.get(&customer, &wrong).await.unwrap_err();
        assert!(matches!(err, PoolError::Refused { .. }), "{err}");
        assert!(err.to_string().contains("28P01"), "{err}");
        let err = reg.get(&customer, &wrong).await.unwrap_err();
        assert!(matches!(err, PoolError::Refused { .. }), "{err}");
        assert_eq!(reg.stats().down_rejections, 1);
        // The tenant's other roles still work.
        let client = reg.get(&key(&db), &|| superuser(&db, 2)).await.unwrap();
        select_one(&client).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn remove_tenant_drops_its_pools_after_in_flight_work() {
        let (a, b) = (database("rm"), database("rm"));
        let reg = Registry::new(settings(4));
        let held = reg.get(&key(&a), &|| superuser(&a, 2)).await.unwrap();
        let admin = PoolKey {
            tenant: a.clone(),
            role: "developer".into(),
        };
        drop(reg.get(&admin, &|| superuser(&a, 2)).await.unwrap());
        drop(reg.get(&key(&b), &|| superuser(&b, 2)).await.unwrap());
        assert_eq!(reg.stats().pools.len(), 3);

        reg.remove_tenant(&a);
        let stats = reg.stats();
        assert_eq!(stats.pools.len(), 1);
        assert_eq!(stats.pools[0].key.tenant, b);
        // The idle one closed at once, the busy one finishes its work.
        assert!(eventually(|| reg.stats().open_connections == 2).await);
        select_one(&held).await;
        drop(held);
        assert!(eventually(|| reg.stats().open_connections == 1).await);
        assert!(eventually(|| backends(std::slice::from_ref(&a)) == 0).await);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn reap_idle_closes_only_pools_unused_for_the_idle_timeout() {
        let (a, b) = (database("reap"), database("reap"));
        let reg = Registry::new(Settings {
            idle_timeout: Duration::from_millis(100),
            ..settings(4)
        });
        drop(reg.get(&key(&a), &|| superuser(&a, 2)).await.unwrap());
        let held = reg.get(&key(&b), &|| superuser(&b, 2)).await.unwrap();
        reg.reap_idle();
        assert_eq!(reg.stats().pools.len(), 2, "not idle long enough");

        tokio::time::sleep(Duration::from_millis(150)).await;
        reg.reap_idle();
        let stats = reg.stats();
        assert_eq!(stats.pools.len(), 1, "{stats:?}");
        assert_eq!(stats.pools[0].key.tenant, b, "in use, so kept");
        assert!(eventually(|| reg.stats().open_connections == 1).await);
        assert!(eventually(|| backends(std::slice::from_ref(&a)) == 0).await);
        select_one(&held).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn resize_tenant_changes_its_pool_size() {
        let a = database("resize");
        let reg = Registry::new(settings(10));
        let first = reg.get(&key(&a), &|| superuser(&a, 1)).await.unwrap();
        assert!(matches!(
            reg.get(&key(&a), &|| superuser(&a, 1)).await,
            Err(PoolError::Busy { .. })
        ));
        reg.resize_tenant(&a, 3);
        let second = reg.get(&key(&a), &|| superuser(&a, 1)).await.unwrap();
        assert_eq!(reg.stats().pools[0].max_size, 3);

        reg.resize_tenant(&a, 1);
        assert_eq!(reg.stats().pools[0].max_size, 1);
        // The old connections finish their work on the retired pool.
        select_one(&first).await;
        select_one(&second).await;
        drop((first, second));
        assert!(eventually(|| reg.stats().open_connections == 0).await);
        let third = reg.get(&key(&a), &|| superuser(&a, 1)).await.unwrap();
        assert!(matches!(
            reg.get(&key(&a), &|| superuser(&a, 1)).await,
            Err(PoolError::Busy { .. })
        ));
        drop(third);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn health_reports_a_round_trip() {
        let a = database("health");
        let reg = Registry::new(settings(2));
        let rtt = reg.health(&key(&a), &|| superuser(&a, 1)).await.unwrap();
        assert!(rtt < Duration::from_secs(2));
        assert!(reg.stats().open_connections <= 1);
    }
}
