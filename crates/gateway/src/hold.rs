//! A request around its tenant's move to another server:
//!
//! - while the tenant's cutover is under way (or a notification said its
//!   copies changed and the look it asked for has not finished), its
//!   requests wait for the new snapshot, the one that says where it lives
//!   now ([`Gateway::hold`], waiting on [`Changes`]): up to the checkout
//!   timeout, then 503 `tenant_moving` with `Retry-After: 1`;
//! - a request whose connection's old copy closed under it (an error
//!   marked [`gone`](ApiError::gone)) is run once more, on the new server,
//!   only if nothing of it ran or it only read: [`Attempt`] keeps what a
//!   request needs between its runs (its body, read once; whether it was
//!   charged to the rate limit and whether any of it ran),
//!   [`Gateway::attempt`] is one run, and [`Gateway::moved`] says whether
//!   the tenant moved at all (else its database is simply down). A write
//!   that may have committed is never run twice (503, `Retry-After`).
//!
//! `Gateway::route` (in `server`) strings these together: hold, run, and
//! at most one run more.
//!
//! What does not live here: routing a request to its tenant, and the
//! token lookup a run calls (`server`), the API handlers (`server`'s
//! `handle` and `handle_admin`; the store API itself is `api`), and hearing
//! of moves, the `LISTEN` side (`moves`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use hyper::{Response, StatusCode};
use tokio::sync::watch;

use crate::api;
use crate::error::ApiError;
use crate::pools::{PoolKey, Target};
use crate::server::{act_as, body_is_json, is_write, json_response, pool_error, Gateway, Seen};
use crate::snapshot::{Login, Snapshot, TenantEntry};

/// Largest request body accepted.
const MAX_BODY: usize = 1 << 20;

/// How long a request body may take to arrive once its headers did.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

impl Gateway {
    /// A request's way to wait for a newer snapshot or look: until the
    /// checkout timeout from now.
    pub(crate) fn changes(&self) -> Changes {
        Changes {
            deadline: tokio::time::Instant::now() + self.settings.checkout_timeout,
            swaps: self.swaps.subscribe(),
            looks: self.moves.looks(),
        }
    }

    /// Holds a request for a tenant being moved (its cutover under way, or
    /// a notification said its copies changed and the look it asked for
    /// has not finished) until a snapshot says where it lives: that
    /// snapshot and the tenant in it. 503 `tenant_moving` once the request
    /// has waited the checkout timeout.
    pub(crate) async fn hold(
        &self,
        mut snap: Arc<Snapshot>,
        mut t: Arc<TenantEntry>,
        host: Option<&str>,
        x_tenant: Option<&str>,
        changes: &mut Changes,
    ) -> Result<(Arc<Snapshot>, Arc<TenantEntry>), ApiError> {
        let mut held = false;
        loop {
            if !t.moving && !self.moves.awaiting(&t.info.name) {
                if held {
                    tracing::debug!(tenant = %t.info.name, server = %t.server, "a request held for a move goes on");
                }
                return Ok((snap, t));
            }
            if !held {
                held = true;
                self.metrics.held(&t.info.name);
                tracing::debug!(tenant = %t.info.name, "request held: the tenant is being moved");
            }
            if changes.next().await.is_err() {
                self.metrics.moving(&t.info.name);
                return Err(ApiError::tenant_moving());
            }
            snap = self.snapshot.load_full();
            t = snap
                .route(host, x_tenant)
                .cloned()
                .ok_or_else(ApiError::unknown_tenant)?;
            if t.suspended {
                return Err(ApiError::suspended());
            }
        }
    }

    /// After a request on `t` found its database gone: a newer snapshot in
    /// which the tenant lives on another server or is being moved, and the
    /// tenant in it, waiting (within the request's bound) while a move's
    /// notification asked for a look that has not finished. None when
    /// nothing says the tenant moved (its database is simply down).
    pub(crate) async fn moved(
        &self,
        t: &TenantEntry,
        host: Option<&str>,
        x_tenant: Option<&str>,
        changes: &mut Changes,
    ) -> Option<(Arc<Snapshot>, Arc<TenantEntry>)> {
        loop {
            let snap = self.snapshot.load_full();
            let now = snap
                .route(host, x_tenant)
                .filter(|now| now.info.name == t.info.name)?
                .clone();
            if now.moving || now.server != t.server {
                return Some((snap, now));
            }
            if !self.moves.awaiting(&t.info.name) {
                return None;
            }
            changes.next().await.ok()?;
        }
    }

    /// One run of a request on `t` of `snap`: token, rate limit, body,
    /// connection, the store API. An error marked
    /// [`gone`](ApiError::gone) with `attempt.ran` false left no trace.
    pub(crate) async fn attempt<B>(
        &self,
        snap: &Snapshot,
        t: &TenantEntry,
        attempt: &mut Attempt<'_, B>,
        seen: &mut Seen,
    ) -> Result<Response<Full<Bytes>>, ApiError>
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let role = self
            .token_role(t, snap.epoch, &attempt.hash, attempt.peer)
            .await?;
        seen.role.clone_from(&role);
        let write = is_write(&attempt.parts.method);
        if write {
            seen.token_hash = Some(attempt.hash.clone());
        }
        // Once per request, however many times it runs.
        if !attempt.charged {
            if let Err(wait) = self.limits.check(&t.info.name, t.requests_per_second) {
                self.metrics.rate_limited(&t.info.name);
                return Err(ApiError::rate_limited(wait.as_secs().max(1)));
            }
            attempt.charged = true;
            // Counted once too; a write past a quota stops here.
            self.usage
                .count_and_check(t, write, std::time::SystemTime::now())?;
        }
        // One pool per tenant; each request runs as the token's group.
        let pool_role = t.pool_key_role();
        match t.logins.get(pool_role) {
            Some(Login::Ready { .. }) => {}
            Some(Login::Unavailable(why)) => {
                tracing::debug!(tenant = %t.info.name, role = %pool_role, reason = %why, "login unavailable");
                return Err(ApiError::login_unavailable());
            }
            None => return Err(ApiError::login_unavailable()),
        }
        let session_role = t.session_role(&role);
        let body = attempt.body().await?;
        let parts = attempt.parts;
        let areq = api::Request {
            method: &parts.method,
            path: parts.uri.path(),
            query: parts.uri.query(),
            body: &body,
        };
        if api::is_static(&areq) {
            let info = &t.info;
            return Ok(json_response(
                StatusCode::OK,
                Some(
                    &serde_json::json!({"name": info.name, "display_name": info.display_name, "plan": info.plan}),
                ),
            ));
        }
        let key = PoolKey {
            tenant: t.info.name.clone(),
            role: pool_role.to_owned(),
        };
        let size = t.pool_size;
        // The connection settings are only built for a new pool.
        let mut conn = self
            .pools(&t.server)
            .get(&key, &|| Target {
                config: t.config(pool_role).expect("a ready login has a config"),
                size,
                epoch: snap.epoch,
            })
            .await
            .map_err(|e| pool_error(&key, e))?;
        if let Some(group) = &session_role {
            act_as(&mut conn, group).await?;
        }
        attempt.ran = true;
        let out = api::handle(&areq, &t.info, &mut conn).await?;
        seen.row_id = out
            .body
            .as_ref()
            .and_then(|b| b.get("id"))
            .and_then(serde_json::Value::as_i64);
        Ok(json_response(out.status, out.body.as_ref()))
    }
}

/// What a request waits for while its tenant is held: a swap of the
/// snapshot or a finished look at where the tenants live, until the
/// checkout timeout from the request's start.
pub(crate) struct Changes {
    deadline: tokio::time::Instant,
    swaps: watch::Receiver<u64>,
    looks: watch::Receiver<u64>,
}

impl Changes {
    /// The next swap or look since the last one seen; Err once the
    /// deadline has passed.
    async fn next(&mut self) -> Result<(), ()> {
        let Changes {
            deadline,
            swaps,
            looks,
        } = self;
        let next = async {
            tokio::select! {
                r = swaps.changed() => r.is_ok(),
                r = looks.changed() => r.is_ok(),
            }
        };
        match tokio::time::timeout_at(*deadline, next).await {
            Ok(true) => Ok(()),
            _ => Err(()),
        }
    }
}

/// A request between its runs (see [`Gateway::attempt`]): what it asks,
/// its body (read once, on the first run that gets that far), whether it
/// was charged to the tenant's rate limit, and whether the store API ran
/// any of it.
pub(crate) struct Attempt<'r, B> {
    pub(crate) parts: &'r hyper::http::request::Parts,
    /// The bearer token's hash (what the token store and the cache know).
    pub(crate) hash: String,
    pub(crate) peer: IpAddr,
    pub(crate) unread: Option<B>,
    pub(crate) body: Option<Bytes>,
    pub(crate) charged: bool,
    pub(crate) ran: bool,
}

impl<B> Attempt<'_, B>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// The body, read (bounded in size and time) the first time.
    async fn body(&mut self) -> Result<Bytes, ApiError> {
        if let Some(body) = &self.body {
            return Ok(body.clone());
        }
        let json_body = body_is_json(&self.parts.headers)?;
        let Some(unread) = self.unread.take() else {
            return Err(ApiError::internal("the request body was lost"));
        };
        let body = match tokio::time::timeout(
            BODY_TIMEOUT,
            Limited::new(unread, MAX_BODY).collect(),
        )
        .await
        {
            Ok(Ok(body)) => body.to_bytes(),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(ApiError::too_large(MAX_BODY))
            }
            Ok(Err(e)) => {
                return Err(ApiError::bad_request(format!(
                    "cannot read the request body: {e}"
                )))
            }
            Err(_) => return Err(ApiError::timeout("the request body did not arrive in time")),
        };
        if !body.is_empty() && !json_body {
            return Err(ApiError::unsupported_media_type());
        }
        self.body = Some(body.clone());
        Ok(body)
    }
}

#[cfg(test)]
mod moving {
    //! Requests for a tenant being moved: held until a snapshot says where
    //! it lives, 503 `tenant_moving` past the checkout timeout. No database
    //! is reached (the tenant's login is not ready once it is placed).
    use super::*;
    use crate::pools::Settings;
    use crate::server::Options;
    use crate::snapshot::{Homes, Unplaced};
    use hyper::header::{AUTHORIZATION, HOST, RETRY_AFTER};
    use hyper::Request;
    use std::time::Instant;

    /// Two servers, tenant shop (no gateway password generated yet) on a,
    /// or being cut over to b.
    fn snapshot(dir: &std::path::Path, moving: bool) -> Snapshot {
        let text = r#"
[servers.a]
admin_url = "postgres://admin@127.0.0.1:1/postgres"

[servers.b]
admin_url = "postgres://admin@127.0.0.1:2/postgres"

[routing]
base_domains = ["localhost"]

[plans.p]
connection_limit = 5
statement_timeout = "5s"
pool_size = 2
requests_per_second = 1000

[tenants.shop]
plan = "p"
server = "b"
"#;
        let inventory =
            tenantry_manifest::Inventory::from_str_with(text, &dir.join("tenants.toml"), &|_| None)
                .unwrap();
        let mut homes = Homes::default();
        let home = if moving {
            Err(Unplaced {
                reason: "being moved to server b: its cutover is under way".into(),
                retry: true,
                moving: true,
            })
        } else {
            Ok("a".to_owned())
        };
        homes.tenants.insert("shop".into(), home);
        Snapshot::from_fleet(&inventory, &homes).unwrap()
    }

    fn gateway(snapshot: Snapshot, wait: Duration) -> Arc<Gateway> {
        let settings = Settings {
            checkout_timeout: wait,
            ..Settings::default()
        };
        Gateway::new(snapshot, settings, Options::default())
    }

    async fn get(gateway: &Gateway) -> Response<Full<Bytes>> {
        let req = Request::builder()
            .uri("/api/widgets")
            .header(HOST, "shop.localhost")
            .header(AUTHORIZATION, "Bearer some-token")
            .body(Full::new(Bytes::new()))
            .unwrap();
        gateway.handle(req, IpAddr::from([127, 0, 0, 1])).await
    }

    async fn code(r: Response<Full<Bytes>>) -> (u16, String, Option<String>) {
        let status = r.status().as_u16();
        let retry = r
            .headers()
            .get(RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = r.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        (
            status,
            body["error"]["code"].as_str().unwrap().to_owned(),
            retry,
        )
    }

    #[tokio::test]
    async fn a_cutover_longer_than_the_checkout_timeout_is_503_tenant_moving() {
        let dir = tempfile::tempdir().unwrap();
        let g = gateway(snapshot(dir.path(), true), Duration::from_millis(200));
        let started = Instant::now();
        let (status, code, retry) = code(get(&g).await).await;
        assert_eq!((status, code.as_str()), (503, "tenant_moving"));
        assert_eq!(retry.as_deref(), Some("1"));
        assert!(started.elapsed() >= Duration::from_millis(200));
        let metrics = g.metrics.render(&[]);
        assert!(metrics.contains("tenantry_requests_held_total{tenant=\"shop\"} 1\n"));
        assert!(metrics.contains("tenantry_tenant_moving_total{tenant=\"shop\"} 1\n"));
    }

    #[tokio::test]
    async fn a_held_request_goes_on_with_the_snapshot_that_places_its_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let g = gateway(snapshot(dir.path(), true), Duration::from_secs(30));
        let held = tokio::spawn({
            let g = g.clone();
            async move { code(get(&g).await).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!held.is_finished(), "held while the cutover is under way");
        let started = Instant::now();
        g.replace(snapshot(dir.path(), false));
        // Placed on a: on to its token lookup, which needs its login.
        let (status, code, _) = held.await.unwrap();
        assert_eq!((status, code.as_str()), (503, "login_unavailable"));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_notified_tenant_waits_for_the_look_its_notification_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let g = gateway(snapshot(dir.path(), false), Duration::from_secs(30));
        let ask = g.moves().ask();
        g.moves().notice("shop");
        let held = tokio::spawn({
            let g = g.clone();
            async move { code(get(&g).await).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        // A look that started before the notification does not release it.
        g.moves().looked(ask);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!held.is_finished(), "held until the look it asked for");
        g.moves().looked(ask + 1);
        let (status, code, _) = held.await.unwrap();
        assert_eq!((status, code.as_str()), (503, "login_unavailable"));
    }
}
