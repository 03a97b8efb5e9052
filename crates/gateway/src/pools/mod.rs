//! [`Registry`]: one deadpool-postgres pool per [`PoolKey`] (a tenant and
//! the login its pool uses: the tenant's gateway login, or the DSN's user),
//! all of them under one global connection budget, plus a per-tenant
//! circuit breaker so a tenant whose database is down fails fast without
//! hurting the others. Its connections are [`Session`]s, which remember the
//! group role they act as (`session`).
//!
//! This module holds the registry itself and its public types: creating pools
//! lazily, checking a connection out within `checkout_timeout`, closing pools
//! whole ([`Registry::remove_tenant`], [`Registry::reap_idle`], shrinking
//! [`Registry::resize_tenant`]; busy connections of a closed pool finish
//! their request, then close) and [`Registry::stats`]. The two policies live
//! next door:
//!
//! - `budget`: the global connection budget (a permit per open connection,
//!   moved into the task driving it), evicting idle connections of other
//!   pools and the choice of victim, the checkout's phase, TLS.
//! - `breaker`: the circuit breaker and its backoff for a tenant whose
//!   database is down or a role whose login is refused.
//!
//! What does not live here: which database or login a key uses (the caller
//! builds the [`Target`] from the snapshot), HTTP status codes, and TLS to the
//! database beyond the one place it plugs in (`budget::tls`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use deadpool::managed::{PoolError as DeadpoolError, TimeoutType, Timeouts};
use deadpool::Runtime;
use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use breaker::{Breaker, BreakerKey, Dial, Probe};
use budget::{BudgetConnect, CHECKOUT, DIALING, QUEUED};

mod breaker;
mod budget;
mod session;

pub use session::Session;
use session::SessionManager;

/// A tenant's pool of [`Session`]s.
type Pool = deadpool::managed::Pool<SessionManager>;
/// A connection checked out of a tenant's pool; back to it when dropped.
pub type Object = deadpool::managed::Object<SessionManager>;
#[cfg(test)]
mod testkit;

/// How often a request waiting for its tenant's own connection under budget
/// pressure looks again (see `Registry::wait_for_own`): far below what a
/// new connection costs (a backend start and a login, milliseconds).
const OWN_POLL: Duration = Duration::from_millis(1);

/// The `Retry-After` suggested with [`PoolError::Busy`].
const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Which pool: a tenant and the login its connections use.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey {
    pub tenant: String,
    /// "gateway" (the tenant's gateway login) or "dsn" (single-tenant mode).
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
    /// Connections dialed (each a new backend and a login).
    pub opened: u64,
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

/// The pools of every tenant, shared by all requests.
pub struct Registry {
    shared: Arc<Shared>,
}

struct Shared {
    settings: Settings,
    /// Checkouts since the pools' hit counts were last halved.
    since_aging: AtomicU64,
    budget: Arc<Semaphore>,
    pools: Mutex<HashMap<PoolKey, Entry>>,
    breakers: Mutex<HashMap<BreakerKey, Breaker>>,
    evictions: AtomicU64,
    opened: AtomicU64,
    rejections: AtomicU64,
    down_rejections: AtomicU64,
}

#[derive(Clone)]
struct Entry {
    pool: Pool,
    /// Set each time a request asks for this pool (for `reap_idle`).
    last_used: Instant,
    /// Requests for this pool lately: counted on each checkout, halved for
    /// every pool each `AGE_EVERY` checkouts, so it follows the traffic
    /// (see `budget::victim`).
    hits: u32,
    /// Kept to rebuild the pool (shrinking, or after a race with a close).
    config: tokio_postgres::Config,
    max_size: usize,
}
impl Registry {
    pub fn new(settings: Settings) -> Arc<Registry> {
        Arc::new(Registry {
            shared: Arc::new(Shared {
                budget: Arc::new(Semaphore::new(settings.budget)),
                since_aging: AtomicU64::new(0),
                settings,
                pools: Mutex::default(),
                breakers: Mutex::default(),
                evictions: AtomicU64::new(0),
                opened: AtomicU64::new(0),
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
            opened: shared.opened.load(Ordering::Relaxed),
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
        entry.hits = entry.hits.saturating_add(1);
        let found = entry.clone();
        self.shared.age(&mut pools);
        Some(found)
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
                hits: 0,
                config,
                max_size: size,
            }
        });
        entry.last_used = Instant::now();
        entry.hits = entry.hits.saturating_add(1);
        let found = entry.clone();
        self.shared.age(&mut pools);
        found
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
        let manager = SessionManager(Manager::from_connect(
            config,
            connect,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        ));
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
            self.wait_for_own(&entry.pool, deadline).await;
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

    /// Under budget pressure (a tenth of the budget or less free), a request for a tenant whose
    /// connections are all busy waits for one of them to come back rather
    /// than dial another: a new one would close some other tenant's last
    /// connection and make it pay a new login. Polls every `OWN_POLL` until
    /// a connection is idle, the pressure is gone or `deadline`.
    async fn wait_for_own(&self, pool: &Pool, deadline: Instant) {
        // Near the budget, not only at it: a permit an eviction just freed
        // is for the request that evicted, not for a pool to grow into.
        let headroom = self.shared.settings.budget / 10;
        loop {
            let s = pool.status();
            let pressed = self.shared.budget.available_permits() <= headroom;
            if !(pressed && s.size >= 1 && s.available == 0) || Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(OWN_POLL.min(deadline.saturating_duration_since(Instant::now())))
                .await;
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
}

/// Why one checkout attempt failed.
enum Failure {
    Busy,
    Dial(Dial),
    Closed,
    Other(String),
}
/// A std mutex lock that survives poisoning (every critical section here
/// leaves the data consistent).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
#[cfg(test)]
mod tests {
    //! The registry's own behaviour (pool sizes, closing pools, health);
    //! the budget's and the breaker's tests are in their modules.
    use super::testkit::*;
    use super::*;

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
