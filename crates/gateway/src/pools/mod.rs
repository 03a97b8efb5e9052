//! [`Registry`]: a pool of connections per [`PoolKey`] (a tenant and the
//! login its pool uses: the tenant's gateway login, or the DSN's user), all
//! of them under one global connection budget, plus a per-tenant circuit
//! breaker so a tenant whose database is down fails fast without hurting
//! the others. Its connections are [`Session`]s, which remember the group
//! role they act as.
//!
//! This module holds the registry's public face: the types, creating pools
//! lazily, closing pools whole ([`Registry::remove_tenant`],
//! [`Registry::reap_idle`]) or shrinking them ([`Registry::resize_tenant`];
//! busy connections finish their request, then close) and
//! [`Registry::stats`]. The rest lives next door:
//!
//! - `checkout`: handing out a connection within `checkout_timeout`: an idle
//!   one, a new one within the budget, or the next one its tenant returns;
//!   closing another tenant's idle connection to make room; taking one back.
//! - `policy`: which connection gives way and which tenants keep theirs
//!   (pure).
//! - `session`: one connection, its role and its budget permit.
//! - `breaker`: the circuit breaker and its backoff for a tenant whose
//!   database is down or a role whose login is refused.
//!
//! What does not live here: which database or login a key uses (the caller
//! builds the [`Target`] from the snapshot), HTTP status codes, and TLS to
//! the database (`tenantry_pgconn`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{oneshot, Semaphore};
use tokio::time::Instant;

use breaker::{Breaker, BreakerKey};

mod breaker;
mod checkout;
mod policy;
mod session;
#[cfg(test)]
mod testkit;

pub use session::{Object, Session};

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
    /// The configuration load it was built from (`Snapshot::epoch`): no
    /// pool is made from one older than the load that last closed or
    /// resized the tenant's pools (a request that started before a reload
    /// must not bring back the old password or size).
    pub epoch: u64,
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
    /// How long dialing a connection may take, login included.
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
    /// Every pool holding or awaiting a connection, sorted by key.
    pub pools: Vec<PoolStat>,
    /// Connections open (or being opened, or closing) across all pools.
    pub open_connections: usize,
    pub budget: usize,
    /// Idle connections closed to make room for another tenant's.
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
    /// Connections open (or being dialed).
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
    /// A permit per open connection (held by the task driving it).
    budget: Arc<Semaphore>,
    state: Mutex<State>,
    breakers: Mutex<HashMap<BreakerKey, Breaker>>,
    evictions: AtomicU64,
    opened: AtomicU64,
    rejections: AtomicU64,
    down_rejections: AtomicU64,
}

/// Every pool and the policy's bookkeeping, under one lock (held for
/// bookkeeping only, never across I/O).
#[derive(Default)]
struct State {
    pools: HashMap<PoolKey, Pool>,
    /// Pools holding at least one connection (the only possible victims).
    holders: HashSet<Arc<PoolKey>>,
    /// Of which in the protected segment (see `policy`).
    protected: HashSet<Arc<PoolKey>>,
    /// Checkouts so far: the clock recency is measured on.
    clock: u64,
    /// Checkouts since the hit counts were last halved.
    since_aging: u64,
    /// Requests waiting for a budget permit, their tenant having no
    /// connection at all and none idle anywhere: a connection coming back
    /// is closed for them.
    starving: usize,
    /// Connections closed for them whose permit has not been taken yet.
    freeing: usize,
    /// Tells pools apart over time (a removed tenant's connections must not
    /// come back into the pool that replaced it).
    generations: u64,
    /// Per tenant, the configuration load that last closed or resized its
    /// pools, and when (forgotten after `FLOOR_KEPT`): pools are made only
    /// from that load or a later one.
    floors: HashMap<String, (u64, Instant)>,
}

/// How long a tenant's floor is kept: far beyond any request still holding
/// an older configuration.
const FLOOR_KEPT: Duration = Duration::from_secs(600);

/// One pool's connections and standing.
struct Pool {
    key: Arc<PoolKey>,
    generation: u64,
    config: Arc<tokio_postgres::Config>,
    max_size: usize,
    /// Idle connections, the most recently returned last.
    idle: Vec<Session>,
    /// Checked out.
    busy: usize,
    /// Being dialed for a request.
    dialing: usize,
    /// Requests waiting for one of this pool's connections; None tells one
    /// to look again (a connection closed or a dial failed).
    waiters: VecDeque<oneshot::Sender<Option<Object>>>,
    /// Recent checkouts (see `policy::AGE_EVERY`).
    hits: u32,
    /// The clock at the last checkout.
    touched: u64,
    /// When a request last asked for this pool (for `reap_idle`).
    last_used: Instant,
    protected: bool,
}

impl Pool {
    fn open(&self) -> usize {
        self.idle.len() + self.busy + self.dialing
    }

    fn standing(&self) -> policy::Standing {
        policy::Standing {
            open: self.open(),
            idle: self.idle.len(),
            hits: self.hits,
            touched: self.touched,
            protected: self.protected,
        }
    }
}

impl Registry {
    pub fn new(settings: Settings) -> Arc<Registry> {
        Arc::new(Registry {
            shared: Arc::new(Shared {
                budget: Arc::new(Semaphore::new(settings.budget)),
                settings,
                state: Mutex::default(),
                breakers: Mutex::default(),
                evictions: AtomicU64::new(0),
                opened: AtomicU64::new(0),
                rejections: AtomicU64::new(0),
                down_rejections: AtomicU64::new(0),
            }),
        })
    }

    /// Most connections this registry holds open at once.
    pub fn budget(&self) -> usize {
        self.shared.settings.budget
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
        self.start(key, target);
        let key = key.clone();
        async move { self.checkout(&key).await }
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

    /// Drops every pool of a tenant (removed from the configuration, or its
    /// credentials changed, by the load of `epoch`); in-flight connections
    /// finish, then close.
    pub fn remove_tenant(&self, tenant: &str, epoch: u64) {
        let mut closing = Vec::new();
        {
            let mut state = lock(&self.shared.state);
            state.raise_floor(tenant, epoch);
            for key in state.keys_of(tenant) {
                if let Some(pool) = state.forget(&key) {
                    tracing::debug!(tenant = %key.tenant, role = %key.role, "closing the pool of a removed tenant");
                    closing.extend(pool.idle);
                    // Its waiters hear the pool is gone (their senders drop).
                }
            }
        }
        lock(&self.shared.breakers).retain(|k, _| k.tenant.as_deref() != Some(tenant));
        drop(closing);
    }

    /// Changes the size of a tenant's pools (plan change). Growing takes effect
    /// at once; shrinking closes idle connections beyond the new size now
    /// and busy ones when they come back, so the new limit holds exactly.
    pub fn resize_tenant(&self, tenant: &str, size: usize, epoch: u64) {
        let size = size.max(1);
        let mut closing = Vec::new();
        {
            let mut state = lock(&self.shared.state);
            state.raise_floor(tenant, epoch);
            for (key, pool) in state.pools.iter_mut().filter(|(k, _)| k.tenant == tenant) {
                pool.max_size = size;
                while pool.open() > size && !pool.idle.is_empty() {
                    closing.push(pool.idle.remove(0));
                }
                // Requests waiting for a full pool may dial into the room.
                for _ in pool.open()..size {
                    pool.wake_one();
                }
                tracing::debug!(tenant = %key.tenant, role = %key.role, size, "pool resized");
            }
            for key in state.keys_of(tenant) {
                state.settle(&key);
            }
        }
        drop(closing);
    }

    /// Closes pools unused for `idle_timeout` (and forgets breaker marks long
    /// expired); call periodically.
    pub fn reap_idle(&self) {
        let settings = &self.shared.settings;
        let now = Instant::now();
        let mut closing = Vec::new();
        {
            let mut state = lock(&self.shared.state);
            let idle: Vec<PoolKey> = state
                .pools
                .iter()
                .filter(|(_, p)| {
                    // No request holds or awaits a connection of it.
                    let unused = p.busy == 0 && p.dialing == 0 && p.waiters.is_empty();
                    unused && now.saturating_duration_since(p.last_used) >= settings.idle_timeout
                })
                .map(|(k, _)| k.clone())
                .collect();
            state
                .floors
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < FLOOR_KEPT);
            for key in idle {
                if let Some(pool) = state.forget(&key) {
                    if !pool.idle.is_empty() {
                        tracing::debug!(tenant = %key.tenant, role = %key.role, "closing an idle pool");
                    }
                    closing.extend(pool.idle);
                }
            }
        }
        drop(closing);
        lock(&self.shared.breakers).retain(|_, b| {
            b.probing || now.saturating_duration_since(b.until) < settings.backoff_max
        });
    }

    pub fn stats(&self) -> Stats {
        let shared = &self.shared;
        let mut pools: Vec<PoolStat> = lock(&shared.state)
            .pools
            .iter()
            .filter(|(_, p)| p.open() > 0 || p.waiters.iter().any(|w| !w.is_closed()))
            .map(|(key, p)| PoolStat {
                key: key.clone(),
                size: p.open(),
                in_use: p.busy,
                waiting: p.waiters.iter().filter(|w| !w.is_closed()).count(),
                max_size: p.max_size,
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
}

impl State {
    /// Records that the load of `epoch` closed or resized `tenant`'s pools.
    fn raise_floor(&mut self, tenant: &str, epoch: u64) {
        let floor = self
            .floors
            .entry(tenant.to_owned())
            .or_insert((epoch, Instant::now()));
        *floor = (floor.0.max(epoch), Instant::now());
    }

    /// The keys of `tenant`'s pools.
    fn keys_of(&self, tenant: &str) -> Vec<PoolKey> {
        self.pools
            .keys()
            .filter(|k| k.tenant == tenant)
            .cloned()
            .collect()
    }

    /// Removes a pool and its bookkeeping; the caller closes its idle
    /// connections (outside the lock).
    fn forget(&mut self, key: &PoolKey) -> Option<Pool> {
        let pool = self.pools.remove(key)?;
        self.holders.remove(&pool.key);
        self.protected.remove(&pool.key);
        Some(pool)
    }

    /// Keeps `holders` and `protected` in step with a pool's connections
    /// after they changed: a pool without any is neither.
    fn settle(&mut self, key: &PoolKey) {
        let Some(pool) = self.pools.get_mut(key) else {
            return;
        };
        if pool.open() > 0 {
            if !self.holders.contains(key) {
                self.holders.insert(pool.key.clone());
            }
        } else {
            self.holders.remove(key);
            if pool.protected {
                pool.protected = false;
                self.protected.remove(key);
            }
        }
    }
}

/// A std mutex lock that survives poisoning (every critical section here
/// leaves the data consistent).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
#[cfg(test)]
mod tests {
    //! The registry's own behaviour (pool sizes, closing pools, health);
    //! the budget's (in `checkout`) and the breaker's tests are in their modules.
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

    /// A connection handed to a waiting request that then goes away (its
    /// client hung up) goes back to the pool: it is neither lost nor
    /// counted in use forever (which would make every later request of the
    /// tenant wait for it until its checkout timeout).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_connection_handed_to_a_request_that_went_away_comes_back() {
        let a = database("handoff");
        let reg = Registry::new(settings(4));
        let held = reg.get(&key(&a), &|| superuser(&a, 1)).await.unwrap();
        let mut waiter = Box::pin(reg.get(&key(&a), &|| superuser(&a, 1)));
        assert!(futures_util::poll!(waiter.as_mut()).is_pending());
        assert_eq!(reg.stats().pools[0].waiting, 1);
        // Handed over to the waiter, which is dropped before it looks.
        drop(held);
        drop(waiter);
        let stats = reg.stats();
        assert_eq!(
            (stats.pools[0].size, stats.pools[0].in_use),
            (1, 0),
            "{stats:?}"
        );
        let again = reg.get(&key(&a), &|| superuser(&a, 1)).await.unwrap();
        select_one(&again).await;
        assert_eq!(reg.stats().opened, 1, "the same connection");
    }

    /// A waiter told to look again (its pool's connection broke) that goes
    /// away before it looks passes the word on: the next waiter dials at
    /// once instead of waiting for its deadline.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_wake_up_is_passed_on_by_a_waiter_that_went_away() {
        let a = database("wake");
        let reg = Registry::new(settings(4));
        let held = reg.get(&key(&a), &|| superuser(&a, 1)).await.unwrap();
        let pid: i32 = held
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        let mut first = Box::pin(reg.get(&key(&a), &|| superuser(&a, 1)));
        let mut second = Box::pin(reg.get(&key(&a), &|| superuser(&a, 1)));
        assert!(futures_util::poll!(first.as_mut()).is_pending());
        assert!(futures_util::poll!(second.as_mut()).is_pending());
        cluster()
            .psql("postgres", &format!("SELECT pg_terminate_backend({pid})"))
            .unwrap();
        assert!(eventually(|| held.is_closed()).await);
        // Back broken: closed, and the first waiter is told to look again,
        // but it goes away before it looks.
        drop(held);
        drop(first);
        let conn = second.await.expect("the second waiter dials");
        select_one(&conn).await;
        assert_eq!(reg.stats().opened, 2);
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

        reg.remove_tenant(&a, 0);
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

    /// A request that started before a reload closed its tenant's pool
    /// (new credentials) does not make one from its old configuration; a
    /// request of the new configuration does.
    #[tokio::test(flavor = "multi_thread")]
    async fn no_pool_is_made_from_a_configuration_older_than_the_last_reload() {
        let a = database("epoch");
        let reg = Registry::new(settings(4));
        drop(reg.get(&key(&a), &|| superuser(&a, 1)).await.unwrap());
        reg.remove_tenant(&a, 3);
        let old = || Target {
            epoch: 2,
            ..superuser(&a, 1)
        };
        let err = reg.get(&key(&a), &old).await.unwrap_err();
        assert!(matches!(err, PoolError::Busy { .. }), "{err}");
        assert!(reg.stats().pools.is_empty(), "{:?}", reg.stats());
        let new = || Target {
            epoch: 3,
            ..superuser(&a, 1)
        };
        select_one(&reg.get(&key(&a), &new).await.unwrap()).await;
        // Once made, the pool serves requests of any configuration.
        select_one(&reg.get(&key(&a), &old).await.unwrap()).await;
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
        reg.resize_tenant(&a, 3, 0);
        let second = reg.get(&key(&a), &|| superuser(&a, 1)).await.unwrap();
        assert_eq!(reg.stats().pools[0].max_size, 3);

        reg.resize_tenant(&a, 1, 0);
        assert_eq!(reg.stats().pools[0].max_size, 1);
        // Busy connections finish their work; back, the one beyond the
        // new size closes and the other stays.
        select_one(&first).await;
        select_one(&second).await;
        let opened = reg.stats().opened;
        drop((first, second));
        assert!(eventually(|| reg.stats().open_connections == 1).await);
        assert!(eventually(|| backends(std::slice::from_ref(&a)) == 1).await);
        let third = reg.get(&key(&a), &|| superuser(&a, 1)).await.unwrap();
        select_one(&third).await;
        assert_eq!(reg.stats().opened, opened, "the kept connection is reused");
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
