//! How `serve` is carried out: build the gateway's snapshot from tenants.toml
//! (or `DATABASE_DSN`), listen, reload, shut down on a signal.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use secrecy::SecretString;
use tenantry_gateway::listen::{self, Listen, Shutdown};
use tenantry_gateway::server::{Gateway, Options};
use tenantry_gateway::snapshot::{Homes, Snapshot, Unplaced};
use tenantry_gateway::{moves, pools, reload};
use tenantry_manifest::Inventory;
use tenantry_plan::placement::Placement;

use crate::cli::{Common, ServeFlags};

/// The gateway's settings from the flags.
fn settings(flags: &ServeFlags) -> pools::Settings {
    pools::Settings {
        budget: flags.max_connections,
        checkout_timeout: flags.checkout_timeout,
        idle_timeout: flags.idle_timeout,
        connect_timeout: flags.connect_timeout,
        backoff_min: Duration::from_secs(1),
        backoff_max: Duration::from_secs(30),
    }
}

fn listen(flags: &ServeFlags) -> Result<Listen> {
    let tls = match (&flags.tls_cert, &flags.tls_key) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        (None, None) => None,
        _ => bail!("--tls-cert and --tls-key go together"),
    };
    Ok(Listen {
        tls,
        drain_timeout: flags.drain_timeout,
        header_timeout: flags.header_timeout,
        idle_timeout: flags.keepalive_timeout,
        max_clients: flags.max_clients as usize,
        shutdown_delay: flags.shutdown_delay,
        ..Listen::new(flags.listen, flags.admin_listen)
    })
}

/// Serves until SIGTERM or Ctrl-C: the tenants of `inventory`, or without
/// one, the single database of `DATABASE_DSN` (single-tenant mode). The
/// admin URL of `common` (`--admin-url`, or the server `up` started) keeps
/// applying across reloads.
pub async fn serve(
    common: &Common,
    flags: &ServeFlags,
    inventory: Option<Inventory>,
) -> Result<u8> {
    let locator = std::sync::Arc::new(Locator::default());
    let (snapshot, file) = match inventory {
        Some(inv) => {
            let homes = if inv.servers.len() > 1 {
                locator.homes(&inv).await.map_err(anyhow::Error::msg)?
            } else {
                Homes::default()
            };
            (
                Snapshot::from_fleet(&inv, &homes).map_err(anyhow::Error::msg)?,
                Some(common.config.clone()),
            )
        }
        None => {
            let dsn = std::env::var("DATABASE_DSN")
                .ok()
                .filter(|v| !v.is_empty())
                .with_context(|| {
                    format!(
                        "no {} and no DATABASE_DSN: nothing to serve",
                        common.config.display()
                    )
                })?;
            (
                Snapshot::single_tenant(
                    &SecretString::from(dsn),
                    flags.pool_size,
                    flags.requests_per_second,
                )
                .map_err(anyhow::Error::msg)?,
                None,
            )
        }
    };
    let mode = match &snapshot.single {
        Some(t) => format!("single-tenant mode: database {}", t.info.name),
        None => format!(
            "{} tenant(s) from {}",
            snapshot.tenants.len(),
            common.config.display()
        ),
    };
    let admin_token = flags
        .admin_token
        .clone()
        .or_else(|| std::env::var("TENANTRY_ADMIN_TOKEN").ok())
        .filter(|t| !t.is_empty());
    if let Some(t) = &admin_token {
        if t.len() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            bail!("the admin token must be at least 16 characters, without spaces (generate one with `openssl rand -hex 32`)");
        }
    } else if !flags.admin_listen.ip().is_loopback() {
        bail!(
            "--admin-listen {} is not a loopback address: the console and metrics would be open to the network; give --admin-token (or TENANTRY_ADMIN_TOKEN), or listen on 127.0.0.1",
            flags.admin_listen
        );
    }
    for (name, every) in [
        ("--usage-flush-interval", flags.usage_flush_interval),
        ("--storage-interval", flags.storage_interval),
    ] {
        if every < Duration::from_millis(100) {
            bail!("{name} must be at least 100ms (it is {every:?})");
        }
    }
    let options = Options {
        token_ttl: flags.token_ttl,
        unauthenticated_per_second: flags.unauthenticated_rps,
        usage: !flags.no_usage,
        admin_token: admin_token.map(SecretString::from),
    };
    reload::warn_unavailable_logins(&snapshot);
    let gateway = Gateway::new(snapshot, settings(flags), options);
    let listen = listen(flags)?;
    let listeners = listen::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {} / {}", listen.api, listen.admin))?;
    let scheme = if listen.tls.is_some() {
        "https"
    } else {
        "http"
    };
    // Signal handlers and the reloader are in place before the line that
    // says the gateway serves: a SIGTERM or SIGHUP sent right after it must
    // not meet the default action (the end of the process).
    let shutdown = shutdown_signal()?;
    let watching = file.is_some();
    let reloader = file.map(|path| {
        let admin_url = common.admin_url.clone().map(SecretString::from);
        reload::spawn_reloader(
            gateway.clone(),
            path,
            reload::loader(
                admin_url,
                std::sync::Arc::new(move |inv: &Inventory| {
                    // On a blocking thread of the runtime: wait for the reads here.
                    tokio::runtime::Handle::current().block_on(locator.homes(inv))
                }),
            ),
            flags.reload_interval,
        )
    });
    // A file with several servers: hear of moves at once (the reloader
    // carries out the looks they ask for).
    let move_listeners = watching.then(|| moves::spawn_listeners(gateway.clone()));
    outln!(
        "Gateway serving {mode} on {scheme}://{} (admin: http://{}); Ctrl-C or SIGTERM stops it.",
        listeners.0.local_addr()?,
        listeners.1.local_addr()?
    );
    let (stop_counting, stop) = tokio::sync::oneshot::channel();
    let counting = tenantry_gateway::usage::spawn(
        gateway.clone(),
        flags.usage_flush_interval,
        flags.storage_interval,
        stop,
    );
    listen::serve(gateway.clone(), listeners, &listen, shutdown).await?;
    for task in [reloader, move_listeners].into_iter().flatten() {
        task.abort();
    }
    // The flush under way ends (aborting it would drop what it had taken
    // from the counters), then what was counted and queued since, once more.
    let _ = stop_counting.send(());
    let last = async {
        let _ = counting.await;
        gateway.flush_usage().await;
    };
    if tokio::time::timeout(Duration::from_secs(10), last)
        .await
        .is_err()
    {
        tracing::warn!("the last flush of usage counts and audit entries took over 10s: given up");
    }
    outln!("Gateway stopped.");
    Ok(0)
}

/// Where the tenants of a file with several servers live, read from every
/// server's catalog (one query each, all at once), remembered between
/// reads: a tenant found before keeps its server while that server cannot
/// be read (its pools know best whether it answers).
#[derive(Default)]
struct Locator {
    known: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
}

impl Locator {
    /// - lives on a server: served there, whatever its pin says (a pin
    ///   elsewhere is a move apply carries out; until its cutover starts the
    ///   old copy serves);
    /// - being cut over: not served until the move ends (its requests
    ///   wait, see the gateway), looked for again; once its new copy is
    ///   open (the cutover's commit point), served there;
    /// - not created yet, or on two servers: not served (503), looked for
    ///   again (apply may place it elsewhere than this read would);
    /// - found on no server that was read while one could not be: its last
    ///   known server if that is one of the servers not read (its pools
    ///   know best whether it answers), else not served and looked for
    ///   again. The gateway reads the servers again until all are read.
    async fn homes(&self, inventory: &Inventory) -> std::result::Result<Homes, String> {
        let located = tenantry_pg::sessions::locate(inventory, None)
            .await
            .map_err(|e| e.to_string())?;
        let mut homes = Homes::default();
        for (server, e) in &located.unreachable {
            tracing::warn!(%server, error = %e, "cannot read this server's catalog: its tenants keep their last known server, new ones wait");
            homes.unreadable.insert(server.clone());
        }
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        // Only the file's tenants are remembered.
        known.retain(|tenant, _| inventory.tenant(tenant).is_some());
        let retry = |reason: String| {
            Err(Unplaced {
                reason,
                retry: true,
                moving: false,
            })
        };
        for t in &inventory.tenants {
            let name = t.name.as_str();
            let home = match located.placement.get(name) {
                Some(Placement::Lives { server })
                | Some(Placement::Move {
                    from: server,
                    cutover: false,
                    ..
                }) => Ok(server.clone()),
                Some(Placement::Move {
                    to, cutover: true, ..
                }) if opened(&located, to, name) => Ok(to.clone()),
                Some(Placement::Move {
                    to, cutover: true, ..
                }) => Err(Unplaced {
                    reason: format!("being moved to server {to}: its cutover is under way"),
                    retry: true,
                    moving: true,
                }),
                Some(Placement::New { server, .. }) => retry(format!(
                    "not created yet (apply creates it on server {server})"
                )),
                Some(Placement::Conflict(c)) => retry(c.to_string()),
                None => match known.get(name).filter(|s| homes.unreadable.contains(*s)) {
                    Some(server) => Ok(server.clone()),
                    None => retry(
                        located
                            .held()
                            .into_iter()
                            .find(|h| h.tenant == name)
                            .map_or_else(|| "not found on any server".to_owned(), |h| h.reason),
                    ),
                },
            };
            if let Ok(server) = &home {
                known.insert(name.to_owned(), server.clone());
            }
            homes.tenants.insert(name.to_owned(), home);
        }
        Ok(homes)
    }
}

/// Whether the copy of `tenant` on server `to` is open: its plain marker
/// (set with its logins' LOGIN in the cutover's last transaction), so it is
/// the tenant's even while the old copy's marker still says cutover.
fn opened(located: &tenantry_pg::sessions::Located, to: &str, tenant: &str) -> bool {
    located.reached.iter().any(|r| {
        r.name == to
            && r.marked.contains(tenant)
            && !r.incoming.contains_key(tenant)
            && !r.cutover.contains_key(tenant)
    })
}

/// Resolves on SIGTERM (an orchestrator: let the load balancer see /readyz
/// fail first) or Ctrl-C (a person: stop now). The handlers are installed
/// when this is called, not when the future is first polled.
fn shutdown_signal() -> Result<impl std::future::Future<Output = Shutdown>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => Shutdown::Now,
            _ = term.recv() => Shutdown::Graceful,
        }
    })
}
