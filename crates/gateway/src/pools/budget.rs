//! The global connection budget: every *open* connection holds one permit of
//! a [`Semaphore`] of `budget` permits, and nothing else counts.
//!
//! Thousands of tenants may be configured but the server accepts only tens of
//! connections from the gateway, so:
//!
//! - Pools are created lazily with `max_size` = the tenant's tier size and
//!   never reserve anything up front; an idle tenant costs no connection.
//! - Connections are made by [`BudgetConnect`], the pools' deadpool
//!   [`Connect`]: it takes a permit *before* dialing and moves it into the
//!   task that drives the connection, so the permit is released exactly when
//!   the connection is gone (closed by the pool, dropped, or broken). The sum
//!   of open connections can therefore never exceed the budget.
//! - When no permit is free, the connector closes idle connections
//!   (`Pool::retain`, which only touches idle objects; one "eviction" per pool
//!   shrunk): one of a pool that has several, else those of the least used
//!   pool (see [`victim`] for why by frequency, not LRU), and waits for the
//!   permit to come back. Closing is graceful (the client is dropped, so
//!   tokio-postgres sends Terminate) and the permit is freed when the socket
//!   is closed. While waiting it re-checks every `EVICT_POLL` (20 ms) because a
//!   connection returned to *another* pool becomes evictable without freeing
//!   a permit.
//! - A checkout waits at most `checkout_timeout` in all (queueing for its own
//!   pool plus waiting for budget), then answers [`PoolError::Busy`]. The
//!   deadline is enforced around the whole checkout (in
//!   `Registry::checkout_once`); a checkout already
//!   dialing when it passes is let finish (the TCP connect is bounded by
//!   `connect_timeout`, the whole dial by deadpool's `create` timeout of
//!   `checkout_timeout + connect_timeout`, which also covers the budget
//!   wait). Which phase a checkout is in is told to the
//!   connector through a task-local ([`CHECKOUT`]), because deadpool calls it
//!   inline in the requesting task.
//!
//! What does not live here: the pools themselves and the checkout loop (in
//! [`super`]), and what a failed dial means for the tenant (in
//! [`super::breaker`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use deadpool_postgres::Connect;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

#[cfg(doc)]
use super::PoolError;
use super::{lock, Entry, PoolKey, Shared};

/// While waiting for budget, how often to look again for idle connections to
/// close (a connection going back to another pool frees no permit by itself).
const EVICT_POLL: Duration = Duration::from_millis(20);
/// How long a closing connection may take to say goodbye before it is cut.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Every this many checkouts (times the budget), every pool's hit count is
/// halved: a count weighs recent traffic over old (TinyLFU's reset).
const AGE_EVERY: u64 = 8;

impl Shared {
    /// Counts a checkout; every `AGE_EVERY` x budget of them, halves every
    /// pool's hit count. Called with the pools locked.
    pub(super) fn age(&self, pools: &mut std::collections::HashMap<PoolKey, Entry>) {
        let every = AGE_EVERY * self.settings.budget.max(1) as u64;
        if self.since_aging.fetch_add(1, Ordering::Relaxed) + 1 >= every {
            self.since_aging.store(0, Ordering::Relaxed);
            for entry in pools.values_mut() {
                entry.hits /= 2;
            }
        }
    }

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
            let sizes: Vec<(usize, u32)> = candidates.iter().map(|c| (c.2, c.1.hits)).collect();
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
/// with `pools[i] = (open connections, recent hits)` (not yet `tried`):
///
/// 1. a pool with a spare connection (more than one open) gives one up, the
///    least used such pool first: its tenant keeps being served without a
///    new login;
/// 2. else the least used pool closes its connection, ties broken at random
///    (`seed`).
///
/// Frequency, not recency: a load that visits more tenants than the budget
/// holds in a cycle (a crawler, a batch job, a load generator rotating
/// hosts) makes least-recently-used evict exactly the pool needed next, so
/// every request would pay a new connection and login; under such a scan
/// every count is alike and the choice is random, which keeps most pools.
/// Under skew, which is what real traffic looks like, the hot tenants'
/// counts keep their connections and the cold ones take turns.
fn victim(pools: &[(usize, u32)], tried: &[bool], seed: u64) -> Option<usize> {
    let open: Vec<usize> = (0..pools.len()).filter(|&i| !tried[i]).collect();
    let spare: Vec<usize> = open.iter().copied().filter(|&i| pools[i].0 > 1).collect();
    let among = if spare.is_empty() { open } else { spare };
    let coldest = among.iter().map(|&i| pools[i].1).min()?;
    let ties: Vec<usize> = among
        .into_iter()
        .filter(|&i| pools[i].1 == coldest)
        .collect();
    ties.get((seed % ties.len() as u64) as usize).copied()
}
/// Where a checkout is, for the deadline in [`super::Registry::checkout_once`].
pub(super) const QUEUED: u8 = 0;
const BUDGET: u8 = 1;
pub(super) const DIALING: u8 = 2;

tokio::task_local! {
    /// The phase of the checkout running in this task (deadpool dials inline).
    pub(super) static CHECKOUT: Arc<AtomicU8>;
}

fn set_phase(phase: u8) {
    let _ = CHECKOUT.try_with(|p| p.store(phase, Ordering::Release));
}

/// The TLS connector every connection uses (see `tenantry_pgconn`).
fn tls() -> tokio_postgres_rustls::MakeRustlsConnect {
    tenantry_pgconn::connector()
}

/// deadpool's [`Connect`] for our pools: takes a budget permit (evicting idle
/// connections of other pools if needed), dials, and hands the permit to the
/// task driving the connection.
pub(super) struct BudgetConnect {
    pub(super) budget: Arc<Semaphore>,
    pub(super) shared: Weak<Shared>,
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
            if let Some(shared) = self.shared.upgrade() {
                shared.opened.fetch_add(1, Ordering::Relaxed);
            }
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

#[cfg(test)]
mod tests {
    //! Many tenants through a small budget: evictions, waiting, busy.
    use super::super::testkit::*;
    use super::super::{PoolError, Registry, Settings};
    use super::*;
    use std::sync::atomic::AtomicUsize;

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
    fn victims_are_spare_connections_first_then_the_least_used() {
        let none = [false; 4];
        let cold = |sizes: [usize; 4]| sizes.map(|s| (s, 0u32));
        // A pool with a spare connection gives it up first, whatever the draw.
        for seed in 0..8 {
            assert_eq!(victim(&cold([1, 1, 3, 1]), &none, seed), Some(2));
            // ...even a busy one: its tenant keeps a connection.
            assert_eq!(
                victim(&[(1, 0), (1, 0), (3, 90), (1, 0)], &none, seed),
                Some(2)
            );
        }
        // Else the least used pool; a hot one is never picked.
        for seed in 0..8 {
            assert_eq!(
                victim(&[(1, 50), (1, 3), (1, 40), (1, 9)], &none, seed),
                Some(1)
            );
        }
        // Equal counts (a scan over more tenants than the budget): spread
        // by the draw, never always the same.
        let picked: std::collections::BTreeSet<usize> = (0..8)
            .filter_map(|seed| victim(&cold([1, 1, 1, 1]), &none, seed))
            .collect();
        assert_eq!(picked.len(), 4, "{picked:?}");
        // Tried ones are skipped; nothing left: none.
        assert_eq!(victim(&[(1, 9), (2, 0)], &[false, true], 5), Some(0));
        assert_eq!(victim(&[(1, 0), (2, 0)], &[true, true], 5), None);
        assert_eq!(victim(&[], &[], 5), None);
    }

    /// Skewed traffic: two hot tenants and a stream of cold ones through
    /// four slots. The cold ones take turns; the hot ones are never evicted
    /// (a random or least-recently-used victim would evict them often: each
    /// round below evicts six times).
    #[tokio::test(flavor = "multi_thread")]
    async fn hot_tenants_keep_their_connection_while_cold_ones_take_turns() {
        let hot: Vec<String> = (0..2).map(|_| database("hot")).collect();
        let cold: Vec<String> = (0..6).map(|_| database("cold")).collect();
        let reg = Registry::new(settings(4));
        let visit = |db: &String| {
            let (reg, db) = (reg.clone(), db.clone());
            async move {
                let client = reg.get(&key(&db), &|| superuser(&db, 1)).await.unwrap();
                select_one(&client).await;
            }
        };
        for round in 0..3 {
            for _ in 0..5 {
                for db in &hot {
                    visit(db).await;
                }
            }
            let evictions = reg.stats().evictions;
            for db in &cold {
                visit(db).await;
                let stats = reg.stats();
                for db in &hot {
                    let pool = stats.pools.iter().find(|p| &p.key.tenant == db).unwrap();
                    assert_eq!(
                        pool.size, 1,
                        "round {round}: hot {db} lost its connection: {stats:?}"
                    );
                }
            }
            assert!(reg.stats().evictions >= evictions + 4, "{:?}", reg.stats());
        }
        assert!(reg.stats().open_connections <= 4);
    }

    /// At the budget, a tenant that holds a connection waits for its own
    /// instead of growing its pool into another tenant's last connection;
    /// with room again it grows to its tier's size.
    #[tokio::test(flavor = "multi_thread")]
    async fn under_pressure_a_pool_waits_for_its_own_connection_instead_of_growing() {
        let (a, b) = (database("grow"), database("grow"));
        let reg = Registry::new(Settings {
            checkout_timeout: Duration::from_secs(5),
            ..settings(2)
        });
        let held = reg.get(&key(&a), &|| superuser(&a, 3)).await.unwrap();
        select_one(&held).await;
        drop(reg.get(&key(&b), &|| superuser(&b, 3)).await.unwrap());
        assert_eq!(reg.stats().open_connections, 2);
        let waiter = {
            let (reg, a) = (reg.clone(), a.clone());
            tokio::spawn(async move {
                let c = reg.get(&key(&a), &|| superuser(&a, 3)).await?;
                select_one(&c).await;
                Ok::<_, PoolError>(())
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !waiter.is_finished(),
            "the second request waits for a's connection"
        );
        drop(held);
        waiter.await.unwrap().unwrap();
        let stats = reg.stats();
        assert_eq!(stats.evictions, 0, "b kept its connection: {stats:?}");
        let pool_b = stats.pools.iter().find(|p| p.key.tenant == b).unwrap();
        assert_eq!(pool_b.size, 1, "{stats:?}");

        // Room again (b's pool is gone): a may grow back to its size.
        reg.remove_tenant(&b);
        assert!(eventually(|| reg.stats().open_connections == 1).await);
        let one = reg.get(&key(&a), &|| superuser(&a, 3)).await.unwrap();
        let two = reg.get(&key(&a), &|| superuser(&a, 3)).await.unwrap();
        select_one(&one).await;
        select_one(&two).await;
        let pool_a = reg
            .stats()
            .pools
            .into_iter()
            .find(|p| p.key.tenant == a)
            .unwrap();
        assert_eq!((pool_a.size, pool_a.max_size), (2, 3));
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
}
