//! Handing out connections under the global budget, and taking them back.
//!
//! Every *open* connection holds one permit of a [`Semaphore`] of `budget`
//! permits, held by the task driving it (see `session`), so the sum of open
//! connections never exceeds the budget, closing ones included. A checkout
//! ([`Registry::checkout`]) takes, in order:
//!
//! 1. an idle connection of its own pool (a hit: no I/O at all);
//! 2. a new one, if its pool is below its size and a permit is free, but a
//!    pool that already holds a connection grows only while more than a
//!    tenth of the budget is free: near the budget a tenant's burst waits
//!    for its own connections rather than close another tenant's;
//! 3. for a tenant holding no connection at all (a miss) at the budget:
//!    another tenant's idle connection, chosen by `policy`, is closed and
//!    its permit handed to this request (never to a bystander), then the
//!    new one is dialed;
//! 4. else the next connection its own pool gives back, handed over
//!    directly (first come, first served);
//! 5. else (no connection of its own, none idle anywhere) the next permit:
//!    a connection given back while such requests wait is closed for them.
//!
//! No step polls: waiters are woken by the connection or permit they wait
//! for. The whole checkout is bounded by `checkout_timeout` (then
//! [`PoolError::Busy`]); a dial by `connect_timeout`.
//!
//! What does not live here: the choice of victim and promotion (`policy`),
//! the pools' public management (`super`), what a failed dial means for the
//! tenant (`breaker`).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tokio::time::Instant;

#[cfg(doc)]
use tokio::sync::Semaphore;

use super::breaker::{Dial, Probe};
use super::policy::{self, For, Promotion};
use super::session::{Object, Session};
use super::{lock, Pool, PoolError, PoolKey, Registry, Shared, State, Target, BUSY_RETRY_AFTER};

/// What a checkout does next, decided under the lock.
enum Step {
    /// A connection, checked out.
    Ready(Object),
    /// Dial a new connection into `room` (`probe`: the breaker let it).
    Dial {
        config: Arc<tokio_postgres::Config>,
        generation: u64,
        room: Room,
        probe: Probe,
    },
    /// The circuit breaker says no (the tenant's database is down or
    /// refuses the login): fail fast.
    Blocked(PoolError),
    /// Wait for the pool to hand over one of its connections.
    Wait(oneshot::Receiver<Option<Object>>),
    /// Wait for a budget permit (counted in `State::starving`).
    Starve,
    /// The pool was closed (tenant removed or its credentials changed).
    Gone,
}

/// Where a new connection's budget permit comes from.
enum Room {
    Permit(OwnedSemaphorePermit),
    /// The permit of this connection, once closed.
    Closing(Session),
}

impl Registry {
    /// The synchronous start of [`Registry::get`]: the pool (created with
    /// `target()` if missing) marked as used.
    pub(super) fn start(&self, key: &PoolKey, target: &dyn Fn() -> Target) {
        if lock(&self.shared.state).touch(key, &self.shared) {
            return;
        }
        // Not under the lock: the closure is the caller's.
        let Target {
            config,
            size,
            epoch,
        } = target();
        let mut state = lock(&self.shared.state);
        let stale = matches!(state.floors.get(&key.tenant), Some((floor, _)) if epoch < *floor);
        if stale {
            // The checkout finds no pool and answers 503 (retry): this
            // request's configuration was replaced while it ran.
            tracing::debug!(tenant = %key.tenant, "a request older than the last reload makes no pool");
            return;
        }
        if !state.pools.contains_key(key) {
            state.generations += 1;
            let size = size.max(1);
            tracing::debug!(tenant = %key.tenant, role = %key.role, size, "new pool");
            let pool = Pool {
                key: Arc::new(key.clone()),
                generation: state.generations,
                config: Arc::new(config),
                max_size: size,
                idle: Vec::new(),
                busy: 0,
                dialing: 0,
                waiters: VecDeque::new(),
                hits: 0,
                touched: 0,
                last_used: Instant::now(),
                protected: false,
            };
            state.pools.insert(key.clone(), pool);
        }
        state.touch(key, &self.shared);
    }

    pub(super) async fn checkout(&self, key: &PoolKey) -> Result<Object, PoolError> {
        let shared = &self.shared;
        let deadline = Instant::now() + shared.settings.checkout_timeout;
        let mut held = None;
        loop {
            match self.step(key, &mut held, deadline) {
                Step::Ready(conn) => return Ok(conn),
                Step::Blocked(e) => return Err(e),
                Step::Dial {
                    config,
                    generation,
                    room,
                    probe,
                } => {
                    return match self.dial(key, generation, &config, room, deadline).await {
                        Ok(conn) => {
                            probe.succeeded();
                            Ok(conn)
                        }
                        Err(Some(dial)) => Err(self.trip(key, dial)),
                        Err(None) => Err(self.busy()),
                    }
                }
                Step::Wait(handoff) => {
                    let waiting = Waiting {
                        handoff,
                        shared,
                        key,
                    };
                    match waiting.wait(deadline).await {
                        Ok(Some(conn)) => return Ok(conn),
                        Ok(None) => {}
                        Err(TimedOut) => return Err(self.busy()),
                    }
                }
                Step::Starve => {
                    let mut starving = Starving {
                        shared,
                        served: false,
                    };
                    let permit =
                        tokio::time::timeout_at(deadline, shared.budget.clone().acquire_owned())
                            .await;
                    match permit {
                        Ok(Ok(permit)) => {
                            starving.served = true;
                            held = Some(permit);
                        }
                        _ => return Err(self.busy()),
                    }
                }
                // Not a pool made from this request's configuration: a
                // reload may have just replaced it (new credentials), and a
                // pool made from the old one would outlive the request. The
                // caller retries (503, Retry-After).
                Step::Gone => {
                    return Err(PoolError::Busy {
                        retry_after: BUSY_RETRY_AFTER,
                    })
                }
            }
        }
    }

    fn busy(&self) -> PoolError {
        self.shared.rejections.fetch_add(1, Ordering::Relaxed);
        PoolError::Busy {
            retry_after: BUSY_RETRY_AFTER,
        }
    }

    /// Decides the checkout's next step (see the module docs), with `held`
    /// a permit this request already waited for. No dial starts after
    /// `deadline`.
    fn step(
        &self,
        key: &PoolKey,
        held: &mut Option<OwnedSemaphorePermit>,
        deadline: Instant,
    ) -> Step {
        let shared = &self.shared;
        let mut state = lock(&shared.state);
        let state = &mut *state;
        let Some(pool) = state.pools.get_mut(key) else {
            return Step::Gone;
        };
        while let Some(session) = pool.idle.pop() {
            if session.is_closed() {
                continue;
            }
            pool.busy += 1;
            let conn = Object::new(
                session,
                Arc::clone(&self.shared),
                pool.key.clone(),
                pool.generation,
            );
            state.settle(key);
            return Step::Ready(conn);
        }
        let open = pool.open();
        let (generation, config) = (pool.generation, pool.config.clone());
        if open < pool.max_size && Instant::now() < deadline {
            let headroom = shared.settings.budget / 10;
            let may_grow =
                held.is_some() || open == 0 || shared.budget.available_permits() > headroom;
            let permit = if may_grow {
                held.take()
                    .or_else(|| shared.budget.clone().try_acquire_owned().ok())
            } else {
                None
            };
            if permit.is_some() || open == 0 {
                // About to dial: the breaker has its say first (a tenant
                // whose database is down fails fast, without closing
                // anybody's connection).
                let probe = match self.admit(key) {
                    Ok(probe) => probe,
                    Err(e) => return Step::Blocked(e),
                };
                let room = match permit {
                    Some(permit) => Room::Permit(permit),
                    None => match state.evict(Some(key), For::Miss, shared) {
                        Some(victim) => Room::Closing(victim),
                        None => {
                            state.starving += 1;
                            return Step::Starve;
                        }
                    },
                };
                if let Some(pool) = state.pools.get_mut(key) {
                    pool.dialing += 1;
                }
                state.settle(key);
                state.consider(key, shared.settings.budget);
                return Step::Dial {
                    config,
                    generation,
                    room,
                    probe,
                };
            }
        }
        // A permit held while waiting for a connection of its own would be
        // one nobody uses.
        drop(held.take());
        let Some(pool) = state.pools.get_mut(key) else {
            return Step::Gone;
        };
        let (tx, rx) = oneshot::channel();
        pool.waiters.push_back(tx);
        Step::Wait(rx)
    }

    /// Dials a connection for `key` into `room`. Err(None): no permit came
    /// in time.
    async fn dial(
        &self,
        key: &PoolKey,
        generation: u64,
        config: &tokio_postgres::Config,
        room: Room,
        deadline: Instant,
    ) -> Result<Object, Option<Dial>> {
        let shared = &self.shared;
        let mut dialing = Dialing {
            shared,
            key,
            generation,
            done: false,
        };
        let permit = match room {
            Room::Permit(permit) => permit,
            Room::Closing(victim) => {
                match tokio::time::timeout_at(deadline, victim.close()).await {
                    Ok(Ok(permit)) => permit,
                    // The driver task failed or is slow to close: its permit
                    // goes back to the semaphore; wait for one there.
                    _ => match tokio::time::timeout_at(
                        deadline,
                        shared.budget.clone().acquire_owned(),
                    )
                    .await
                    {
                        Ok(Ok(permit)) => permit,
                        _ => return Err(None),
                    },
                }
            }
        };
        shared.opened.fetch_add(1, Ordering::Relaxed);
        let session = match tokio::time::timeout(
            shared.settings.connect_timeout,
            Session::dial(config, permit),
        )
        .await
        {
            Ok(Ok(session)) => session,
            Ok(Err(e)) => return Err(Some(Dial::Error(e))),
            Err(_) => return Err(Some(Dial::TimedOut)),
        };
        dialing.done = true;
        let mut state = lock(&shared.state);
        let pool_key = match state.pools.get_mut(key) {
            Some(pool) if pool.generation == generation => {
                pool.dialing -= 1;
                pool.busy += 1;
                pool.key.clone()
            }
            // The pool was closed meanwhile: this request uses the
            // connection, which closes when it comes back.
            _ => Arc::new(key.clone()),
        };
        Ok(Object::new(
            session,
            Arc::clone(shared),
            pool_key,
            generation,
        ))
    }
}

/// A request waiting for its pool to hand over a connection. Dropped with
/// something handed over (it timed out, or its client went away), it
/// passes it on: a connection goes back to its pool (an [`Object`]), a
/// "look again" to the next waiter, so no wake-up is lost.
struct Waiting<'a> {
    handoff: oneshot::Receiver<Option<Object>>,
    shared: &'a Shared,
    key: &'a PoolKey,
}

impl Waiting<'_> {
    /// Until `deadline`. Ok(None): look again. (A pool closed meanwhile
    /// hands over nothing: its waiters' senders drop with it.)
    async fn wait(mut self, deadline: Instant) -> Result<Option<Object>, TimedOut> {
        match tokio::time::timeout_at(deadline, &mut self.handoff).await {
            Ok(Ok(handed)) => Ok(handed),
            // The pool was closed: the next step says so.
            Ok(Err(_)) => Ok(None),
            Err(_) => Err(TimedOut),
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.handoff.close();
        match self.handoff.try_recv() {
            // Back to its pool (the lock is not held here).
            Ok(Some(conn)) => drop(conn),
            Ok(None) => {
                let mut state = lock(&self.shared.state);
                if let Some(pool) = state.pools.get_mut(self.key) {
                    pool.wake_one();
                }
            }
            Err(_) => {}
        }
    }
}

/// No connection came before the deadline.
struct TimedOut;

/// A dial in progress for a pool: if it fails or the request goes away,
/// the pool forgets it and a waiter looks again (it may dial instead).
struct Dialing<'a> {
    shared: &'a Shared,
    key: &'a PoolKey,
    generation: u64,
    done: bool,
}

impl Drop for Dialing<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = lock(&self.shared.state);
        if let Some(pool) = state.pools.get_mut(self.key) {
            if pool.generation == self.generation {
                pool.dialing -= 1;
                pool.wake_one();
                state.settle(self.key);
            }
        }
    }
}

/// A request counted in `State::starving` while it waits for a permit
/// (`served` once it has one).
struct Starving<'a> {
    shared: &'a Shared,
    served: bool,
}

impl Drop for Starving<'_> {
    fn drop(&mut self) {
        let mut state = lock(&self.shared.state);
        state.starving -= 1;
        if self.served {
            state.freeing = state.freeing.saturating_sub(1);
        }
        // Never more permits on their way than requests waiting for one.
        state.freeing = state.freeing.min(state.starving);
    }
}

impl Pool {
    /// Tells the first waiter still waiting to look again (a connection
    /// closed, or a dial failed: it may dial instead).
    pub(super) fn wake_one(&mut self) {
        while let Some(waiter) = self.waiters.pop_front() {
            if waiter.send(None).is_ok() {
                return;
            }
        }
    }

    /// Hands `session` to the first waiter still waiting, checked out as an
    /// [`Object`] of this pool; gives it back if there is none.
    fn hand_over(&mut self, shared: &Arc<Shared>, mut session: Session) -> Option<Session> {
        while let Some(waiter) = self.waiters.pop_front() {
            self.busy += 1;
            let conn = Object::new(
                session,
                Arc::clone(shared),
                self.key.clone(),
                self.generation,
            );
            match waiter.send(Some(conn)) {
                Ok(()) => return None,
                Err(back) => {
                    self.busy -= 1;
                    session = back.expect("sent Some").into_session();
                }
            }
        }
        Some(session)
    }
}

impl Shared {
    /// Takes back a connection checked out of `key`'s pool of `generation`.
    pub(super) fn put_back(self: &Arc<Self>, key: &PoolKey, generation: u64, session: Session) {
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        let Some(pool) = state
            .pools
            .get_mut(key)
            .filter(|p| p.generation == generation)
        else {
            // Its pool was closed: so is the connection.
            drop(guard);
            drop(session);
            return;
        };
        pool.busy -= 1;
        if session.is_closed() || pool.open() >= pool.max_size {
            // Broken, or beyond a shrunk pool's size: closed; a waiter
            // looks again (and may dial).
            pool.wake_one();
            state.settle(key);
            drop(session);
            return;
        }
        let Some(session) = pool.hand_over(self, session) else {
            return;
        };
        pool.idle.push(session);
        if state.starving > state.freeing {
            // A request with no connection at all waits for a permit: an
            // idle connection gives way, the policy says which (this one
            // is among the candidates).
            if let Some(victim) = state.evict(None, For::Starving, self) {
                state.freeing += 1;
                drop(guard);
                drop(victim);
            }
        }
    }
}

impl State {
    /// Counts a checkout of `key`'s pool (if it exists): its hit count, the
    /// clock, aging every count now and then, and promotion. Returns whether
    /// the pool exists.
    fn touch(&mut self, key: &PoolKey, shared: &Shared) -> bool {
        self.clock += 1;
        let clock = self.clock;
        let Some(pool) = self.pools.get_mut(key) else {
            return false;
        };
        pool.hits = pool.hits.saturating_add(1);
        pool.touched = clock;
        pool.last_used = Instant::now();
        self.since_aging += 1;
        if self.since_aging >= policy::AGE_EVERY * shared.settings.budget.max(1) as u64 {
            self.since_aging = 0;
            for pool in self.pools.values_mut() {
                pool.hits /= 2;
            }
        }
        self.consider(key, shared.settings.budget);
        true
    }

    /// Promotes `key`'s pool to the protected segment if it holds
    /// connections and `policy::promotion` says so.
    fn consider(&mut self, key: &PoolKey, budget: usize) {
        let Some(pool) = self.pools.get(key) else {
            return;
        };
        if pool.protected || pool.open() == 0 {
            return;
        }
        let hits = pool.hits;
        let room = self.protected.len() < policy::protected_capacity(budget);
        let coldest = if room {
            None
        } else {
            self.protected
                .iter()
                .filter_map(|k| self.pools.get(&**k).map(|p| (p.hits, k)))
                .min_by_key(|(h, _)| *h)
        };
        let demoted = match policy::promotion(hits, room, coldest.map(|(h, _)| h)) {
            Promotion::Stay => return,
            Promotion::Join => None,
            Promotion::Replace => coldest.map(|(_, k)| k.clone()),
        };
        if let Some(demoted) = demoted {
            self.protected.remove(&demoted);
            if let Some(p) = self.pools.get_mut(&*demoted) {
                p.protected = false;
            }
        }
        if let Some(pool) = self.pools.get_mut(key) {
            pool.protected = true;
            self.protected.insert(pool.key.clone());
        }
    }

    /// Takes an idle connection of a pool other than `asking`'s to close
    /// for it (see `policy::victim`).
    fn evict(&mut self, asking: Option<&PoolKey>, needs: For, shared: &Shared) -> Option<Session> {
        let candidates: Vec<Arc<PoolKey>> = self
            .holders
            .iter()
            .filter(|k| Some(&***k) != asking)
            .cloned()
            .collect();
        let standings: Vec<policy::Standing> = candidates
            .iter()
            .map(|k| self.pools.get(&**k).map(Pool::standing).unwrap_or_default())
            .collect();
        let victim = candidates[policy::victim(&standings, needs)?].clone();
        let pool = self.pools.get_mut(&*victim)?;
        // The longest idle of its connections.
        let session = pool.idle.remove(0);
        self.settle(&victim);
        shared.evictions.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(tenant = %victim.tenant, role = %victim.role, "closing an idle connection to make room");
        Some(session)
    }
}

#[cfg(test)]
mod tests {
    //! Many tenants through a small budget: evictions, waiting, busy.
    use super::super::testkit::*;
    use super::super::{PoolError, Registry, Settings};
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

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

    /// Twelve tenants in turn through eight connections, six rounds: the
    /// protected six keep theirs and the other six take turns in the
    /// window, so each round after the first opens six connections (least
    /// recently or least frequently used would open twelve: every request).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_scan_beyond_the_budget_opens_only_what_does_not_fit() {
        let dbs: Vec<String> = (0..12).map(|_| database("scan")).collect();
        let reg = Registry::new(settings(8));
        for round in 0..6 {
            let opened = reg.stats().opened;
            for db in &dbs {
                let client = reg.get(&key(db), &|| superuser(db, 1)).await.unwrap();
                select_one(&client).await;
            }
            let stats = reg.stats();
            let fresh = stats.opened - opened;
            let expected = if round == 0 { 12 } else { 6 };
            assert_eq!(fresh, expected, "round {round}: {stats:?}");
            assert!(stats.open_connections <= 8, "{stats:?}");
        }
        assert_eq!(reg.stats().rejections, 0);
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
        reg.remove_tenant(&b, 0);
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
