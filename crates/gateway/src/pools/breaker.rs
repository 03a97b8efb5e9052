//! The circuit breaker: a server, a tenant whose database is down or a
//! login that is refused fails fast without touching the network or hurting
//! the others.
//!
//! A failed dial marks the whole server down when the server itself did not
//! answer (connection refused or reset, shutting down or starting up:
//! SQLSTATE 57P01, 57P02, 57P03), so its other tenants do not each try in
//! turn, and probes it at least every [`SERVER_BACKOFF_MAX`] so it is used
//! again soon after it is back; the tenant down for an error of its
//! database (missing, ...) or a dial that timed out (one slow login says
//! little about the server); or, for an authentication or permission
//! failure (SQLSTATE 28P01, 28000, 42501), that (tenant, role) refused.
//! Until the
//! backoff passes (`backoff_min`, doubling per failed probe up to
//! `backoff_max`) requests fail at once without touching the network; then
//! exactly one request probes, and its success clears the mark.
//!
//! What does not live here: the dial itself and the budget it waits for (in
//! [`super::budget`]), and forgetting long-expired marks and a removed
//! tenant's marks (done with its pools, in [`super::Registry::reap_idle`] and
//! [`super::Registry::remove_tenant`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_postgres::error::SqlState;

use super::{lock, PoolError, PoolKey, Registry, Shared};

impl Registry {
    /// The breaker's verdict for a new request: fail fast, go ahead, or go
    /// ahead as the one probe of a mark whose backoff has passed.
    pub(super) fn admit(&self, key: &PoolKey) -> Result<Probe, PoolError> {
        let shared = &self.shared;
        let now = Instant::now();
        let mut breakers = lock(&shared.breakers);
        let marks = [
            BreakerKey::SERVER,
            BreakerKey::tenant(key),
            BreakerKey::role(key),
        ];
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

    /// Marks the tenant down (or the key refused, or the server down) after
    /// a failed dial and returns the error for this request. A dial that
    /// timed out marks its tenant; a second tenant timing out soon after
    /// (within two connect timeouts, or 10 s) marks the whole server (a
    /// server that drops packets, not one slow login).
    pub(super) fn trip(&self, key: &PoolKey, dial: Dial) -> PoolError {
        let (scope, reason) = dial.classify();
        let timed_out = matches!(dial, Dial::TimedOut);
        let now = Instant::now();
        let mut breakers = lock(&self.shared.breakers);
        let mark = match scope {
            Scope::Role => BreakerKey::role(key),
            Scope::Tenant => BreakerKey::tenant(key),
            Scope::Server => BreakerKey::SERVER,
        };
        let error = self.mark(&mut breakers, mark, scope, &reason, timed_out, now);
        // Two timeouts close together: within two dials' time, or 10 s.
        let window = (self.shared.settings.connect_timeout * 2).max(Duration::from_secs(10));
        let others_timed_out = timed_out
            && breakers.iter().any(|(k, b)| {
                b.timed_out
                    && now.saturating_duration_since(b.failed_at) < window
                    && k.role.is_none()
                    && k.tenant.as_deref().is_some_and(|t| t != key.tenant)
            });
        let scope = if others_timed_out {
            let reason = format!("{reason} for several of its tenants");
            self.mark(
                &mut breakers,
                BreakerKey::SERVER,
                Scope::Server,
                &reason,
                true,
                now,
            );
            Scope::Server
        } else {
            scope
        };
        tracing::warn!(
            tenant = %key.tenant, role = %key.role, %reason,
            "{}", match scope {
                Scope::Role => "login refused",
                Scope::Tenant => "tenant database down",
                Scope::Server => "server down: its tenants fail fast until it answers again",
            }
        );
        error
    }

    /// Sets (or re-arms) one mark: its backoff doubles per failure, from
    /// `backoff_min` up to `backoff_max` (at most [`SERVER_BACKOFF_MAX`]
    /// for the server and for timeouts, so a server back is used again
    /// soon). Returns the error for the request that failed.
    fn mark(
        &self,
        breakers: &mut std::collections::HashMap<BreakerKey, Breaker>,
        mark: BreakerKey,
        scope: Scope,
        reason: &str,
        timed_out: bool,
        now: Instant,
    ) -> PoolError {
        let settings = &self.shared.settings;
        let refused = scope == Scope::Role;
        let b = breakers.entry(mark).or_insert_with(|| Breaker {
            refused,
            timed_out,
            failed_at: now,
            reason: String::new(),
            backoff: Duration::ZERO,
            until: now,
            probing: false,
        });
        // Several requests failing together count as one failure.
        if now >= b.until || b.backoff.is_zero() {
            let most = if scope == Scope::Server || timed_out {
                settings.backoff_max.min(SERVER_BACKOFF_MAX)
            } else {
                settings.backoff_max
            };
            b.backoff = if b.backoff.is_zero() {
                settings.backoff_min.min(most)
            } else {
                (b.backoff * 2).min(most)
            };
            b.until = now + b.backoff;
        }
        b.refused = refused;
        b.timed_out = timed_out;
        b.failed_at = now;
        b.reason = reason.to_owned();
        b.probing = false;
        b.error(b.until.saturating_duration_since(now))
    }

    /// Why the whole server is marked down, if it is.
    pub fn server_down(&self) -> Option<String> {
        let breakers = lock(&self.shared.breakers);
        breakers
            .get(&BreakerKey::SERVER)
            .filter(|b| Instant::now() < b.until || b.probing)
            .map(|b| b.reason.clone())
    }
}

/// The longest wait between two probes of a server marked down: one failed
/// dial a probe, and the server's tenants are back within this of its
/// return.
pub(super) const SERVER_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// What a failed dial marks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    /// The server did not answer: every tenant of it.
    Server,
    /// The tenant's database failed.
    Tenant,
    /// The login was refused.
    Role,
}

/// A failed dial.
pub(super) enum Dial {
    Error(tokio_postgres::Error),
    TimedOut,
}

impl Dial {
    /// (what it marks, the reason).
    fn classify(&self) -> (Scope, String) {
        match self {
            Dial::TimedOut => (Scope::Tenant, "timed out connecting".into()),
            Dial::Error(e) => match e.as_db_error() {
                None => (Scope::Server, e.to_string()),
                Some(db) => {
                    let c = db.code();
                    let scope = if *c == SqlState::INVALID_PASSWORD
                        || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                        || *c == SqlState::INSUFFICIENT_PRIVILEGE
                    {
                        Scope::Role
                    } else if *c == SqlState::ADMIN_SHUTDOWN
                        || *c == SqlState::CRASH_SHUTDOWN
                        || *c == SqlState::CANNOT_CONNECT_NOW
                    {
                        Scope::Server
                    } else {
                        Scope::Tenant
                    };
                    (scope, format!("{} ({})", db.message(), c.code()))
                }
            },
        }
    }
}

/// A circuit-breaker mark: the whole server (down; no tenant), a whole
/// tenant (down) or one (tenant, role) (refused).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct BreakerKey {
    pub(super) tenant: Option<String>,
    pub(super) role: Option<String>,
}

impl BreakerKey {
    const SERVER: BreakerKey = BreakerKey {
        tenant: None,
        role: None,
    };

    fn tenant(key: &PoolKey) -> BreakerKey {
        BreakerKey {
            tenant: Some(key.tenant.clone()),
            role: None,
        }
    }
    fn role(key: &PoolKey) -> BreakerKey {
        BreakerKey {
            tenant: Some(key.tenant.clone()),
            role: Some(key.role.clone()),
        }
    }
}

pub(super) struct Breaker {
    refused: bool,
    /// Its last failure was a dial that timed out.
    timed_out: bool,
    /// When it last failed.
    failed_at: Instant,
    reason: String,
    backoff: Duration,
    /// Requests fail fast until then.
    pub(super) until: Instant,
    /// A request is probing after the backoff; the others still fail fast.
    pub(super) probing: bool,
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
pub(super) struct Probe {
    shared: Arc<Shared>,
    marks: Vec<BreakerKey>,
}

impl Probe {
    pub(super) fn succeeded(mut self) {
        if self.marks.is_empty() {
            return;
        }
        let mut breakers = lock(&self.shared.breakers);
        for mark in self.marks.drain(..) {
            if breakers.remove(&mark).is_some() {
                match &mark.tenant {
                    Some(tenant) => tracing::info!(%tenant, "database reachable again"),
                    None => tracing::info!("server reachable again"),
                }
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

#[cfg(test)]
mod tests {
    //! Databases that are missing, unreachable or refuse the login.
    use super::super::testkit::*;
    use super::super::{Registry, Settings, Target};
    use super::*;

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
        let closed = at(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
        let reg = Registry::new(settings(4));
        let err = reg.get(&key("nowhere"), &closed).await.unwrap_err();
        assert!(matches!(err, PoolError::Down { .. }), "{err}");
        let err = reg.get(&key("nowhere"), &closed).await.unwrap_err();
        assert!(matches!(err, PoolError::Down { .. }), "{err}");
        let stats = reg.stats();
        assert_eq!(stats.down_rejections, 1);
        assert_eq!(stats.open_connections, 0);
    }

    /// A target whose dials meet `addr` (a closed port or a silent listener).
    fn at(addr: std::net::SocketAddr) -> impl Fn() -> Target {
        move || {
            let mut config = tokio_postgres::Config::new();
            config
                .host(addr.ip().to_string())
                .port(addr.port())
                .user("postgres")
                .dbname("postgres");
            Target {
                config,
                size: 2,
                epoch: 0,
            }
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_server_that_refuses_marks_all_its_tenants_a_slow_login_only_its_own_until_a_second()
    {
        // Refused: every tenant of this registry (one server) fails fast,
        // without a dial of its own.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let reg = Registry::new(settings(4));
        let err = reg.get(&key("one"), &at(closed)).await.unwrap_err();
        assert!(matches!(err, PoolError::Down { .. }), "{err}");
        assert!(reg.server_down().is_some());
        let err = reg.get(&key("another"), &at(closed)).await.unwrap_err();
        assert!(matches!(err, PoolError::Down { .. }), "{err}");
        assert_eq!(reg.stats().down_rejections, 1, "the second did not dial");

        // A listener that never answers: the dial times out, and only that
        // tenant is marked.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let reg = Registry::new(Settings {
            connect_timeout: Duration::from_millis(200),
            checkout_timeout: Duration::from_secs(2),
            ..settings(4)
        });
        let err = reg.get(&key("slow"), &at(addr)).await.unwrap_err();
        assert!(matches!(err, PoolError::Down { .. }), "{err}");
        assert!(err.to_string().contains("timed out"), "{err}");
        assert!(reg.server_down().is_none());
        let db = database("beside_slow");
        let client = reg.get(&key(&db), &|| superuser(&db, 2)).await.unwrap();
        select_one(&client).await;
        // A second tenant timing out meanwhile: the server is what is slow.
        let err = reg.get(&key("slow too"), &at(addr)).await.unwrap_err();
        assert!(err.to_string().contains("timed out"), "{err}");
        let down = reg.server_down().expect("the server is marked down");
        assert!(down.contains("several of its tenants"), "{down}");
        drop(silent);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_wrong_password_is_refused_for_that_role_only() {
        let db = database("auth");
        let role = tenantry_layout::roles::group_role_name(&db, tenantry_layout::Group::Customer);
        cluster()
            .psql(
                "postgres",
                &format!("CREATE ROLE {role} LOGIN PASSWORD 'right'"),
            )
            .unwrap();
        let wrong = || Target {
            config: cluster().user_url(&role, "wrong", &db).parse().unwrap(),
            size: 2,
            epoch: 0,
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
}
