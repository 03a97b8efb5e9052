//! How the gateway learns that a tenant is being moved to another server,
//! at once and without a reload by hand:
//!
//! - [`spawn_listeners`]: for each server of a file with several, one
//!   connection to its admin database that `LISTEN`s on
//!   [`tenantry_layout::moves::CHANNEL`]. `tenantry apply` notifies there
//!   when a cutover starts, when the new copy opens and when the old one is
//!   left behind (payload `<fleet> <tenant>`). A notification about this
//!   file's fleet, and every (re)connect (notifications sent meanwhile are
//!   lost), asks for a look at where the tenants live. A connection that
//!   fails is dialed again with a backoff (1 s doubling to 10 s), with one
//!   warning per outage. The listeners follow the configuration: a reload
//!   that changes the servers or their admin URLs restarts theirs.
//! - [`Moves`]: the asks for a look (the reloader carries them out, see
//!   `reload`) and the tenants a notification named: their requests wait
//!   until a look that started after the notification has finished, so
//!   none is sent to a copy whose cutover has started (see `hold`).
//!
//! What does not live here: reading the catalogs (the binary's locator,
//! run by the reloader), what a request does while its tenant is held
//! (`hold`), and the cutover itself (`tenantry-pg`'s `moves`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt as _;
use sha2::{Digest, Sha256};
use tenantry_pgconn::ServerAddress;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_postgres::AsyncMessage;

use crate::server::Gateway;
use crate::snapshot::Snapshot;

/// First wait before dialing a listener's server again...
const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// ...doubling up to this.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How long a listener's dial may take, when its admin URL does not say.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a listening connection is checked (a connection that died
/// silently would hear nothing), and how long the check may take.
const HEARTBEAT: Duration = Duration::from_secs(30);

/// The asks for a look at where the tenants live, and the tenants whose
/// requests wait for one. One per gateway ([`Gateway::moves`]).
pub struct Moves {
    /// Asks so far.
    asks: watch::Sender<u64>,
    /// The asks covered by the last look that finished.
    looked: watch::Sender<u64>,
    /// Tenants a notification named, with the ask it made.
    noticed: Mutex<HashMap<String, u64>>,
}

impl Default for Moves {
    fn default() -> Moves {
        Moves::new()
    }
}

impl Moves {
    pub fn new() -> Moves {
        Moves {
            asks: watch::Sender::new(0),
            looked: watch::Sender::new(0),
            noticed: Mutex::default(),
        }
    }

    /// Asks for a look at where the tenants live; returns the ask's number.
    pub fn ask(&self) -> u64 {
        let mut n = 0;
        self.asks.send_modify(|asks| {
            *asks += 1;
            n = *asks;
        });
        n
    }

    /// A notification named `tenant`: asks for a look, and holds the
    /// tenant's requests until one that started after now has finished.
    pub fn notice(&self, tenant: &str) {
        let mut noticed = self.lock();
        let n = self.ask();
        noticed.insert(tenant.to_owned(), n);
    }

    /// The asks, for the reloader: a change means a look is wanted; the
    /// value when a look starts is what it covers.
    pub fn asks(&self) -> watch::Receiver<u64> {
        self.asks.subscribe()
    }

    /// The reloader finished a look that started when the asks were
    /// `through` (whether it found anything new or failed): the tenants
    /// noticed up to then are no longer held.
    pub fn looked(&self, through: u64) {
        let mut noticed = self.lock();
        self.looked.send_if_modified(|looked| {
            let newer = through > *looked;
            if newer {
                *looked = through;
            }
            newer
        });
        noticed.retain(|_, n| *n > through);
    }

    /// Whether `tenant`'s requests wait for a look a notification asked for.
    pub fn awaiting(&self, tenant: &str) -> bool {
        let noticed = self.lock();
        noticed
            .get(tenant)
            .is_some_and(|n| *n > *self.looked.borrow())
    }

    /// Finished looks, for requests that wait for one.
    pub(crate) fn looks(&self) -> watch::Receiver<u64> {
        self.looked.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, u64>> {
        self.noticed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reports a look as finished when dropped (every way out of a look).
pub(crate) struct Looking<'m> {
    pub moves: &'m Moves,
    pub through: u64,
}

impl Drop for Looking<'_> {
    fn drop(&mut self) {
        self.moves.looked(self.through);
    }
}

/// Listens on every server of `gateway`'s configuration (a file with
/// several servers; none otherwise), following reloads. Aborting the
/// returned task stops every listener.
pub fn spawn_listeners(gateway: Arc<Gateway>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut swaps = gateway.swaps();
        let mut running = Listeners::default();
        loop {
            running.follow(&gateway.snapshot(), gateway.moves());
            if swaps.changed().await.is_err() {
                return;
            }
        }
    })
}

/// The running listeners by server: what they were started with, and
/// their tasks (aborted when dropped).
#[derive(Default)]
struct Listeners {
    by_server: BTreeMap<String, (Vec<u8>, JoinHandle<()>)>,
}

impl Drop for Listeners {
    fn drop(&mut self) {
        for (_, task) in self.by_server.values() {
            task.abort();
        }
    }
}

impl Listeners {
    /// Starts, restarts or stops listeners so that one runs per server of
    /// `snapshot` (none when it has one server: nothing moves).
    fn follow(&mut self, snapshot: &Snapshot, moves: &Arc<Moves>) {
        let wanted: BTreeMap<&String, (Vec<u8>, &Arc<ServerAddress>)> =
            if snapshot.addresses.len() > 1 {
                snapshot
                    .addresses
                    .iter()
                    .map(|(name, address)| (name, (identity(&snapshot.fleet, address), address)))
                    .collect()
            } else {
                BTreeMap::new()
            };
        self.by_server.retain(|name, (id, task)| {
            let keep = wanted.get(name).is_some_and(|(want, _)| want == id);
            if !keep {
                tracing::debug!(server = %name, "no longer listening for tenant moves on this server (the configuration changed)");
                task.abort();
            }
            keep
        });
        for (name, (id, address)) in wanted {
            if self.by_server.contains_key(name) {
                continue;
            }
            let task = tokio::spawn(listen(
                name.clone(),
                snapshot.fleet.clone(),
                config(address),
                moves.clone(),
            ));
            self.by_server.insert(name.clone(), (id, task));
        }
    }
}

/// What a listener was started with, to tell when it must restart: the
/// fleet and every connection setting, the password included (a digest:
/// `Debug` of a `Config` hides it).
fn identity(fleet: &str, address: &ServerAddress) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(fleet.as_bytes());
    h.update([0]);
    h.update(format!("{:?}", address.config()).as_bytes());
    h.update([0]);
    h.update(address.config().get_password().unwrap_or_default());
    h.finalize().to_vec()
}

/// A listener's connection settings: the admin URL's, in its database (as
/// `tenantry apply` notifies there; `postgres` when the URL names none).
fn config(address: &ServerAddress) -> tokio_postgres::Config {
    let mut config = address.config().clone();
    if config.get_dbname().is_none() {
        config.dbname("postgres");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.application_name("tenantry gateway (moves)");
    config
}

/// What a notification's payload (`<fleet> <tenant>`) means here.
#[derive(Debug, PartialEq, Eq)]
enum Heard<'p> {
    /// Another fleet's.
    Other,
    /// This fleet's tenant's copies changed.
    Tenant(&'p str),
    /// This fleet's, no tenant named: look anyway.
    Fleet,
}

fn heard<'p>(payload: &'p str, fleet: &str) -> Heard<'p> {
    let mut words = payload.split_whitespace();
    match words.next() {
        Some(f) if f == fleet => words.next().map_or(Heard::Fleet, Heard::Tenant),
        _ => Heard::Other,
    }
}

/// One server's listener: forever, a connection that listens, dialed
/// again after a backoff when it fails.
async fn listen(server: String, fleet: String, config: tokio_postgres::Config, moves: Arc<Moves>) {
    let mut backoff = BACKOFF_MIN;
    let mut warned = false;
    loop {
        let ended = session(&server, &config, &fleet, &moves, &mut warned).await;
        let Ended { listened, why } = ended;
        if listened {
            backoff = BACKOFF_MIN;
        }
        if !warned {
            tracing::warn!(
                %server,
                error = %why,
                "not listening for tenant moves on this server: dialing it again (until then the gateway learns of moves when it reads the servers again)"
            );
            warned = true;
        } else {
            tracing::debug!(%server, error = %why, "still not listening for tenant moves");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Why a listening session ended.
struct Ended {
    /// It had listened (the backoff starts over).
    listened: bool,
    why: String,
}

impl Ended {
    fn before_listening(why: impl Into<String>) -> Ended {
        Ended {
            listened: false,
            why: why.into(),
        }
    }

    fn after_listening(why: impl Into<String>) -> Ended {
        Ended {
            listened: true,
            why: why.into(),
        }
    }
}

/// One connection: `LISTEN`, a look asked for (what was sent while no
/// connection listened is lost), then every notification of this fleet
/// asks for one too, until the connection fails. `warned`: an outage was
/// warned about (once listening, its end is logged and it is over).
async fn session(
    server: &str,
    config: &tokio_postgres::Config,
    fleet: &str,
    moves: &Moves,
    warned: &mut bool,
) -> Ended {
    let (client, mut connection) = match config.connect(tenantry_pgconn::connector()).await {
        Ok(c) => c,
        Err(e) => return Ended::before_listening(describe(&e)),
    };
    // The connection is driven by its own task, which passes the
    // notifications on (and, last, why it ended).
    let (tx, mut rx) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(Ok(n.payload().to_owned())).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Err(describe(&e)));
                    return;
                }
            }
        }
        let _ = tx.send(Err("the server closed the connection".to_owned()));
    });
    let _driver = AbortOnDrop(driver);
    let listen = format!(
        "LISTEN {}",
        tenantry_layout::quote(tenantry_layout::moves::CHANNEL)
    );
    if let Err(e) = client.batch_execute(&listen).await {
        return Ended::before_listening(describe(&e));
    }
    if std::mem::take(warned) {
        tracing::info!(%server, "listening for tenant moves on this server again");
    } else {
        tracing::info!(%server, "listening for tenant moves on this server");
    }
    moves.ask();
    let mut heartbeat =
        tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = rx.recv() => match message {
                Some(Ok(payload)) => match heard(&payload, fleet) {
                    Heard::Tenant(tenant) => {
                        tracing::debug!(%tenant, "a tenant's copies changed: looking where it lives now");
                        moves.notice(tenant);
                    }
                    Heard::Fleet => {
                        moves.ask();
                    }
                    Heard::Other => {}
                },
                Some(Err(why)) => return Ended::after_listening(why),
                None => return Ended::after_listening("the connection ended"),
            },
            _ = heartbeat.tick() => {
                match tokio::time::timeout(HEARTBEAT, client.simple_query("SELECT 1")).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Ended::after_listening(describe(&e)),
                    Err(_) => return Ended::after_listening(format!("no answer within {HEARTBEAT:?}")),
                }
            }
        }
    }
}

/// A connection error with the server's message when there is one.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_of_this_fleet_name_a_tenant() {
        assert_eq!(heard("prod shop", "prod"), Heard::Tenant("shop"));
        assert_eq!(heard("prod", "prod"), Heard::Fleet);
        assert_eq!(heard("staging shop", "prod"), Heard::Other);
        assert_eq!(heard("production shop", "prod"), Heard::Other);
        assert_eq!(heard("", "prod"), Heard::Other);
    }

    #[test]
    fn a_noticed_tenant_waits_for_a_look_that_started_after_the_notice() {
        let moves = Moves::new();
        let mut asks = moves.asks();
        assert!(!moves.awaiting("shop"));
        // A look under way when the notification comes does not cover it.
        let first = moves.ask();
        moves.notice("shop");
        assert!(moves.awaiting("shop"));
        assert!(!moves.awaiting("cafe"));
        moves.looked(first);
        assert!(
            moves.awaiting("shop"),
            "that look started before the notice"
        );
        // Three asks in a burst: one look covers them all.
        moves.notice("shop");
        moves.notice("cafe");
        assert!(asks.has_changed().unwrap());
        let through = *asks.borrow_and_update();
        assert_eq!(through, 4);
        moves.looked(through);
        assert!(!moves.awaiting("shop") && !moves.awaiting("cafe"));
        assert!(!asks.has_changed().unwrap());
        // An older look finishing late changes nothing.
        moves.notice("shop");
        moves.looked(first);
        assert!(moves.awaiting("shop"));
        {
            let _looking = Looking {
                moves: &moves,
                through: 5,
            };
        }
        assert!(!moves.awaiting("shop"), "a look ends however it ends");
    }

    /// Against the shared cluster, as two servers of one file: both listen
    /// (and ask for a look as they start), a notification of this fleet
    /// holds its tenant, another fleet's does nothing, and a reload to one
    /// server stops them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn listeners_hear_their_fleet_and_follow_the_configuration() {
        let cluster = tenantry_localpg::Cluster::shared();
        let fleet = format!("listen{}", std::process::id());
        let dir = tempfile::tempdir().unwrap();
        let file = |servers: &str| {
            let text = format!(
                "fleet = \"{fleet}\"\n{servers}\n[plans.p]\nconnection_limit = 5\nstatement_timeout = \"5s\"\npool_size = 2\nrequests_per_second = 20\n\n[tenants.shop]\nplan = \"p\"\n"
            );
            let inventory = tenantry_manifest::Inventory::from_str_with(
                &text,
                &dir.path().join("tenants.toml"),
                &|_| None,
            )
            .unwrap();
            let mut homes = crate::snapshot::Homes::default();
            homes.tenants.insert("shop".into(), Ok("a".into()));
            Snapshot::from_fleet(&inventory, &homes).unwrap()
        };
        // One server under two URLs (a file refuses the same one twice).
        let url = cluster.url("postgres");
        let two =
            format!("[servers.a]\nadmin_url = \"{url}\"\n[servers.b]\nadmin_url = \"{url}?connect_timeout=9\"\n");
        let gateway = Gateway::new(file(&two), Default::default(), Default::default());
        let moves = gateway.moves().clone();
        let asks = moves.asks();
        let listeners = spawn_listeners(gateway.clone());
        let eventually = |what: &str, cond: &dyn Fn() -> bool| {
            for _ in 0..1000 {
                if cond() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            panic!("never: {what}");
        };
        let listening = || {
            let sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tenantry gateway (moves)' AND query ILIKE 'LISTEN%'";
            cluster.psql("postgres", sql).unwrap().trim().to_owned()
        };
        eventually("both listen", &|| *asks.borrow() >= 2 && listening() == "2");
        let notify = |payload: &str| {
            cluster
                .psql(
                    "postgres",
                    &format!("SELECT pg_notify('tenantry_moves', '{payload}')"),
                )
                .unwrap();
        };
        notify("another-fleet shop");
        notify(&format!("{fleet} cafe"));
        eventually("cafe held", &|| moves.awaiting("cafe"));
        // Notifications arrive in order: the other fleet's came first.
        assert!(!moves.awaiting("shop"));
        notify(&format!("{fleet} shop"));
        eventually("shop held", &|| moves.awaiting("shop"));

        let one = format!("[servers.a]\nadmin_url = \"{url}\"\n");
        gateway.replace(file(&one));
        eventually("no listener left", &|| listening() == "0");
        listeners.abort();
    }

    #[test]
    fn a_listener_restarts_when_its_admin_url_changes() {
        let parse = |url: &str| ServerAddress::parse(&url.to_owned().into()).unwrap();
        let a = parse("postgres://admin:one@10.0.0.1:5432/postgres");
        assert_eq!(identity("prod", &a), identity("prod", &a.clone()));
        let other_password = parse("postgres://admin:two@10.0.0.1:5432/postgres");
        assert_ne!(identity("prod", &a), identity("prod", &other_password));
        assert_ne!(identity("prod", &a), identity("staging", &a));
        // Its database is the admin URL's, `postgres` when it names none.
        let no_db = parse("postgres://admin@10.0.0.1:5432");
        assert_eq!(config(&no_db).get_dbname(), Some("postgres"));
        assert_eq!(config(&a).get_dbname(), Some("postgres"));
        let tenantry = parse("postgres://admin@10.0.0.1:5432/tenantry");
        assert_eq!(config(&tenantry).get_dbname(), Some("tenantry"));
    }
}
