//! Configuration reload while serving: tenants.toml, the secrets directory
//! and the users' password files are watched (and SIGHUP forces a look);
//! a settled, valid change becomes a new [`Snapshot`] swapped into the
//! [`Gateway`].
//!
//! A tenant whose password cannot be read (an unset `password_env`, a
//! missing file) does not block a reload: its logins are unavailable (503
//! `login_unavailable`, logged once) while every other change takes effect.
//!
//! A file with several servers is loaded with where each tenant lives, read
//! from the servers' catalogs (one query per server, by the caller's
//! [`Locator`]); while a tenant's server is not known or a server cannot be
//! read, the reloader reads them again every [`LOOK_AGAIN`] until all is
//! known. It also reads them again at once when asked (a move's
//! notification, see [`crate::moves`]): a look with the files unchanged,
//! quiet unless a tenant's server changed; asks that come during a look
//! make one more look after it, never one per ask.
//!
//! What a reload refuses, keeping the running configuration and logging why:
//! a file that does not validate (an empty one included), and a file that
//! would remove every tenant at once (an editor that truncates, then writes,
//! shows exactly that for a moment). A file caught mid-write is not taken:
//! a change is acted on only once two looks in a row agree, and the bytes
//! parsed are the bytes looked at.
//!
//! What does not live here: what a snapshot holds (`snapshot`) and what a
//! swap does to pools, limits and tokens ([`Gateway::replace`]).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use sha2::{Digest, Sha256};

use tenantry_manifest::Inventory;

use crate::moves::Looking;
use crate::server::Gateway;
use crate::snapshot::{Homes, Snapshot};

/// How the reloader reads tenants.toml: the bytes and their path, into a
/// snapshot, or why not. The binary gives the process's own overrides (an
/// admin URL given at start keeps applying after every reload).
/// It runs on a blocking thread (it reads password files).
pub type Loader = dyn Fn(&str, &Path) -> Result<Snapshot, String> + Send + Sync;

/// Where the tenants of a file with several servers live, read from the
/// servers' catalogs by the caller (the gateway does not read catalogs).
/// Runs on a blocking thread.
pub type Locator = dyn Fn(&Inventory) -> Result<Homes, String> + Send + Sync;

/// The loader for a gateway started on `admin_url` (None: the file's, or
/// `TENANTRY_ADMIN_URL`'s at each reload), asking `locate` where the
/// tenants of a file with several servers live.
pub fn loader(admin_url: Option<SecretString>, locate: Arc<Locator>) -> Arc<Loader> {
    Arc::new(move |source, path| {
        // A password that cannot be read makes its login unavailable (503
        // for that tenant), not the whole file invalid.
        let mut inv = tenantry_manifest::Inventory::from_str_with_secrets(
            source,
            path,
            &|name| std::env::var(name).ok(),
            tenantry_manifest::Secrets::Deferred,
        )
        .map_err(|e| e.to_string())?;
        if let Some(url) = &admin_url {
            inv.only_server_mut().map_err(|e| e.to_string())?.admin_url = Some(url.clone());
        }
        let homes = if inv.servers.len() > 1 {
            locate(&inv)?
        } else {
            Homes::default()
        };
        Snapshot::from_fleet(&inv, &homes)
    })
}

/// Logs, once per load, each login the gateway cannot use (requests for it
/// answer 503 `login_unavailable` without repeating why).
pub fn warn_unavailable_logins(snapshot: &Snapshot) {
    // A tenant being moved is not served until its cutover ends: no login
    // to fix (the gateway logs its move).
    for t in snapshot
        .tenants
        .values()
        .chain(snapshot.single.iter())
        .filter(|t| !t.moving)
    {
        for (role, login) in &t.logins {
            if let crate::snapshot::Login::Unavailable(why) = login {
                tracing::warn!(tenant = %t.info.name, %role, reason = %why, "this login is unavailable: its requests answer 503 until it is fixed and reloaded");
            }
        }
    }
}

/// How often the servers are read again while a tenant's server is not
/// known (not created yet, a conflict) or a server could not be read.
const LOOK_AGAIN: Duration = Duration::from_secs(10);

/// How long to wait between two looks at a file that is being written.
const SETTLE: Duration = Duration::from_millis(100);

/// Reloads tenants.toml on SIGHUP and whenever it, a file in its secrets
/// directory (generated or rotated passwords) or a user's `password_file`
/// changes; checked every `interval`. A change is acted on once it has held
/// for one interval (SIGHUP: for [`SETTLE`]), so a rotation (new password
/// saved, then set on the server) is complete before new pools dial with it.
/// Asked through [`Gateway::moves`], it loads again at once (as for SIGHUP
/// when the files changed meanwhile) and reports the look done.
pub fn spawn_reloader(
    gateway: Arc<Gateway>,
    path: PathBuf,
    load: Arc<Loader>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    // Installed now, before the caller says it serves: a SIGHUP must never
    // meet the default action (the end of the process).
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    // Asks from now on are seen, whenever the task first runs.
    let moves = gateway.moves().clone();
    let mut asks = moves.asks();
    tokio::spawn(async move {
        let snapshot = gateway.snapshot();
        let mut watched = Watched {
            path: path.clone(),
            secrets: snapshot.secrets_dir.clone(),
            files: snapshot.password_files.clone(),
        };
        drop(snapshot);
        let mut loaded_at = watched.look().await.fingerprint;
        let mut seen = loaded_at.clone();
        let mut looked_again = tokio::time::Instant::now();
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let (forced, asked) = tokio::select! {
                _ = tick.tick() => (false, false),
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => (true, false),
                Ok(()) = asks.changed() => (true, true),
            };
            // A look asked for covers the asks made until now, and is
            // reported done however this turn ends.
            let looking = asked.then(|| Looking {
                moves: &moves,
                through: *asks.borrow_and_update(),
            });
            let mut now = watched.look().await;
            // Asked, with the files as loaded: no wait for them to settle,
            // and quiet unless where the tenants live changed.
            let look_only = looking.is_some() && now.fingerprint == loaded_at;
            // Tenants whose server is not known yet, or servers that could
            // not be read: look at the servers again now and then, even
            // with the files unchanged.
            let retry = !forced
                && now.fingerprint == loaded_at
                && gateway.snapshot().needs_another_look()
                && looked_again.elapsed() >= LOOK_AGAIN;
            if forced && !look_only {
                // Asked now: still, wait for the files to stop changing.
                for _ in 0..20 {
                    tokio::time::sleep(SETTLE).await;
                    let again = watched.look().await;
                    let settled = again.fingerprint == now.fingerprint;
                    now = again;
                    if settled {
                        break;
                    }
                }
            } else if !look_only {
                // Unchanged since the last load, or still changing: wait.
                let settled = now.fingerprint == seen;
                seen.clone_from(&now.fingerprint);
                if (now.fingerprint == loaded_at && !retry) || !settled {
                    continue;
                }
            }
            if retry || look_only {
                looked_again = tokio::time::Instant::now();
            }
            loaded_at.clone_from(&now.fingerprint);
            seen.clone_from(&now.fingerprint);
            let source = String::from_utf8(now.source)
                .map_err(|_| format!("{} is not valid UTF-8", path.display()));
            let loaded = match source {
                Ok(source) => {
                    let (load, path) = (load.clone(), path.clone());
                    tokio::task::spawn_blocking(move || load(&source, &path))
                        .await
                        .unwrap_or_else(|e| Err(format!("the reload failed: {e}")))
                }
                Err(e) => Err(e),
            };
            let snapshot = match loaded {
                Ok(s) => s,
                Err(e) if look_only => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read again where the tenants live; keeping the running configuration");
                    continue;
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "invalid configuration; keeping the running one");
                    continue;
                }
            };
            // Only a look again (the files are what was loaded): quiet
            // unless a tenant's server became known or changed.
            if (retry || look_only) && snapshot.same_tenants(&gateway.snapshot()) {
                continue;
            }
            let running = gateway.snapshot().tenants.len();
            if snapshot.tenants.is_empty() && running > 0 {
                tracing::error!(
                    path = %path.display(),
                    running,
                    "refusing a configuration that removes every tenant; keeping the running one (remove tenants in smaller steps, or restart the gateway to serve none)"
                );
                continue;
            }
            if snapshot.password_files != watched.files || snapshot.secrets_dir != watched.secrets {
                watched.files.clone_from(&snapshot.password_files);
                watched.secrets.clone_from(&snapshot.secrets_dir);
                loaded_at = watched.look().await.fingerprint;
                seen.clone_from(&loaded_at);
            }
            let n = snapshot.tenants.len();
            warn_unavailable_logins(&snapshot);
            gateway.replace(snapshot);
            if look_only {
                tracing::debug!(tenants = n, "where the tenants live changed");
            } else {
                tracing::info!(tenants = n, path = %path.display(), "configuration reloaded");
            }
            drop(looking);
        }
    })
}

/// The files a reload depends on.
#[derive(Clone)]
struct Watched {
    path: PathBuf,
    secrets: Option<PathBuf>,
    files: Vec<PathBuf>,
}

/// One look at them: tenants.toml's bytes, and a digest of everything.
struct Look {
    source: Vec<u8>,
    fingerprint: Vec<u8>,
}

impl Watched {
    /// Reads the files off the async threads.
    async fn look(&self) -> Look {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.look_blocking())
            .await
            .unwrap_or(Look {
                source: Vec::new(),
                fingerprint: Vec::new(),
            })
    }

    /// The file's contents, the secrets directory's listing (names, sizes,
    /// modification times, inodes: a password replaced by rename is a new
    /// inode even with the same size and time) and a digest of each
    /// password file (read bounded: a device or a huge file is not read
    /// through; validation says what is wrong with it).
    fn look_blocking(&self) -> Look {
        use std::os::unix::fs::MetadataExt;
        let source = read_bounded(&self.path, tenantry_manifest::MAX_MANIFEST_BYTES);
        let mut h = Sha256::new();
        h.update(&source);
        if let Some(entries) = self
            .secrets
            .as_deref()
            .and_then(|d| std::fs::read_dir(d).ok())
        {
            let mut list: Vec<String> = entries
                .flatten()
                .filter_map(|e| {
                    let m = e.metadata().ok()?;
                    Some(format!(
                        "{:?} {} {:?} {}",
                        e.file_name(),
                        m.len(),
                        m.modified().ok(),
                        m.ino()
                    ))
                })
                .collect();
            list.sort();
            h.update(list.join("\n"));
        }
        for file in &self.files {
            h.update(file.as_os_str().as_encoded_bytes());
            // Hashed, never kept: the digest is all that stays in memory.
            h.update(Sha256::digest(read_bounded(
                file,
                tenantry_manifest::MAX_PASSWORD_FILE_BYTES + 1,
            )));
        }
        Look {
            source,
            fingerprint: h.finalize().to_vec(),
        }
    }
}

/// Up to `max` bytes of a regular file (after symlinks); nothing for
/// anything else or on error.
fn read_bounded(path: &Path, max: u64) -> Vec<u8> {
    let mut out = Vec::new();
    if let Ok(file) = std::fs::File::open(path) {
        if file.metadata().is_ok_and(|m| m.is_file()) {
            let _ = file.take(max).read_to_end(&mut out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Asks for a look, three at once and one during a look: each is
    /// covered by a look that started after it, and a burst makes one or
    /// two looks, not one each.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn asks_for_a_look_coalesce_and_the_last_one_is_never_missed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenants.toml");
        let text = r#"
[server]
admin_url = "postgres://admin@127.0.0.1:1/postgres"

[plans.p]
connection_limit = 5
statement_timeout = "5s"
pool_size = 2
requests_per_second = 20

[tenants.shop]
plan = "p"
"#;
        std::fs::write(&path, text).unwrap();
        let snapshot = {
            let path = path.clone();
            move || {
                let inventory = Inventory::from_str_with(text, &path, &|_| None).unwrap();
                Snapshot::from_inventory(&inventory).unwrap()
            }
        };
        let loads = Arc::new(AtomicUsize::new(0));
        let load: Arc<Loader> = {
            let (loads, snapshot) = (loads.clone(), snapshot.clone());
            Arc::new(move |_, _| {
                loads.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(150));
                Ok(snapshot())
            })
        };
        let gateway = Gateway::new(snapshot(), Default::default(), Default::default());
        let reloader = spawn_reloader(
            gateway.clone(),
            path.clone(),
            load,
            Duration::from_secs(3600),
        );
        let moves = gateway.moves();
        let looked = |tenant: &'static str| {
            let moves = moves.clone();
            async move {
                for _ in 0..500 {
                    if !moves.awaiting(tenant) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!("no look covered the notification about {tenant}");
            }
        };
        moves.ask();
        moves.notice("cafe");
        moves.notice("shop");
        looked("shop").await;
        let burst = loads.load(Ordering::SeqCst);
        assert!((1..=2).contains(&burst), "{burst} looks for a burst of 3");
        // A notification during a look: one more look after it.
        moves.ask();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            loads.load(Ordering::SeqCst),
            burst + 1,
            "a look is under way"
        );
        moves.notice("shop");
        looked("shop").await;
        assert_eq!(loads.load(Ordering::SeqCst), burst + 2);
        reloader.abort();
    }

    #[test]
    fn devices_and_directories_are_not_read() {
        assert!(read_bounded(Path::new("/dev/zero"), 1 << 30).is_empty());
        assert!(read_bounded(Path::new("/"), 1 << 30).is_empty());
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 10_000]).unwrap();
        assert_eq!(read_bounded(&big, 4097).len(), 4097);
    }
}
