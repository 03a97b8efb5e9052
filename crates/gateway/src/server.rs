//! The gateway's request handling: one hyper handler for the API (resolve
//! tenant, status, bearer token, rate limit, pool of the token's role on the
//! tenant's server, store API) and one for the admin listener (`/healthz`,
//! `/readyz`, `/metrics`, `/servers`, `/tenants/<name>/health`). Each
//! server has its own pools [`Registry`]: its own connection budget and
//! breaker, so one busy or failing server never takes another's.
//!
//! The order of the API checks is the defence: nothing reaches a tenant's
//! database or spends its request budget before the caller proved a token.
//! Requests without a valid token (and every token lookup that goes to the
//! database) are limited per client address instead.
//!
//! Once it has a token, an API request is held while its tenant is being
//! moved, then run; one whose database went away under it (the old copy
//! closed by a cutover) may run once more where the tenant lives now.
//! `route` takes that decision; the hold, the run and what a request keeps
//! between its runs live in `hold`.
//!
//! What does not live here: sockets, timeouts and shutdown (`listen`), the
//! reload of the configuration (`reload`), hearing of moves (`moves`),
//! holding and running a request around a move (`hold`), the API itself
//! (`api`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Body;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, RETRY_AFTER};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use tokio::sync::watch;

use crate::admin::AdminToken;
use crate::error::ApiError;
use crate::hold::Attempt;
use crate::limit::{AddressLimits, Limits};
use crate::metrics::Metrics;
use crate::moves::Moves;
use crate::pools::{Object, PoolError, PoolKey, Registry, Settings, Target};
use crate::recent::Recent;
use crate::snapshot::{Snapshot, TenantEntry};
use crate::tokens;
use crate::usage::{ApiWrite, Usage};

/// Settings of the gateway that are not about pools.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a checked token is trusted before it is checked again.
    pub token_ttl: Duration,
    /// Requests per second a client address may make without a valid token
    /// (burst: twice that). They never spend a tenant's budget.
    pub unauthenticated_per_second: u32,
    /// Count requests and storage, enforce quotas, record API writes in
    /// the audit trail (off: none of it).
    pub usage: bool,
    /// The admin listener's bearer token (None: none asked, which only a
    /// loopback admin listener may do; the binary checks).
    pub admin_token: Option<secrecy::SecretString>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            token_ttl: Duration::from_secs(30),
            unauthenticated_per_second: 10,
            usage: true,
            admin_token: None,
        }
    }
}

/// The gateway's state, shared by every connection.
pub struct Gateway {
    pub(crate) snapshot: ArcSwap<Snapshot>,
    /// Each server's pools, by name (a server stays once seen: its pools
    /// drain when its tenants go).
    pub(crate) servers: ArcSwap<HashMap<String, Arc<Registry>>>,
    /// Pool settings; each server's budget is its own.
    pub(crate) settings: Settings,
    pub(crate) limits: Limits,
    /// Requests without a token, with a malformed one, or with one known
    /// to be bad, per client address.
    strangers: AddressLimits,
    /// Lookups of tokens that turned out bad, per client address: while it
    /// is exhausted, that address's unknown tokens are not looked up.
    bad_lookups: AddressLimits,
    pub(crate) metrics: Metrics,
    /// Requests per day, storage, quotas, API writes to audit.
    pub(crate) usage: Usage,
    /// The last hour of each tenant's requests.
    pub(crate) recent: Recent,
    tokens: tokens::Cache,
    pub(crate) stopping: AtomicBool,
    /// The admin listener's token, if it has one.
    pub(crate) admin_token: AdminToken,
    /// The epoch of the snapshot in force, sent at every swap: requests
    /// held for a move and the move listeners wait on it.
    pub(crate) swaps: watch::Sender<u64>,
    /// Asks for a look at where the tenants live, and the tenants held
    /// until one has finished.
    pub(crate) moves: Arc<Moves>,
}

impl Gateway {
    pub fn new(snapshot: Snapshot, settings: Settings, options: Options) -> Arc<Gateway> {
        let servers = registries(&snapshot, &settings, &HashMap::new());
        Arc::new(Gateway {
            snapshot: ArcSwap::from_pointee(snapshot),
            servers: ArcSwap::from_pointee(servers),
            settings,
            limits: Limits::new(),
            strangers: AddressLimits::new(options.unauthenticated_per_second),
            bad_lookups: AddressLimits::new(options.unauthenticated_per_second),
            metrics: Metrics::new(),
            usage: Usage::new(options.usage),
            recent: Recent::new(),
            tokens: tokens::Cache::new(options.token_ttl),
            stopping: AtomicBool::new(false),
            admin_token: AdminToken::new(options.admin_token.as_ref()),
            swaps: watch::Sender::new(0),
            moves: Arc::new(Moves::new()),
        })
    }

    /// The asks for a look at where the tenants live (the move listeners
    /// make them, the reloader carries them out) and the tenants held
    /// until one has finished.
    pub fn moves(&self) -> &Arc<Moves> {
        &self.moves
    }

    /// Every swap of the snapshot ([`Gateway::replace`]), as its epoch.
    pub fn swaps(&self) -> watch::Receiver<u64> {
        self.swaps.subscribe()
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The pools of `server` (every server of a loaded snapshot has some).
    pub fn pools(&self, server: &str) -> Arc<Registry> {
        self.servers
            .load()
            .get(server)
            .unwrap_or_else(|| panic!("server {server} has pools once its snapshot is loaded"))
            .clone()
    }

    /// Every server's pools, by name.
    pub(crate) fn all_pools(&self) -> Vec<(String, Arc<Registry>)> {
        let mut all: Vec<(String, Arc<Registry>)> = self
            .servers
            .load()
            .iter()
            .map(|(name, r)| (name.clone(), r.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Swaps in a new configuration. Requests in flight finish on the old
    /// one; pools of removed tenants are drained, pools whose size or
    /// credentials changed are rebuilt on next use, and so are the pools of
    /// a tenant that now lives on another server.
    pub fn replace(&self, mut new: Snapshot) {
        // Pools for any new server first: a request never sees a snapshot
        // whose servers have none.
        let servers = registries(&new, &self.settings, &self.servers.load());
        self.servers.store(Arc::new(servers));
        new.epoch = self.snapshot.load().epoch + 1;
        let epoch = new.epoch;
        let old = self.snapshot.swap(Arc::new(new));
        let new = self.snapshot.load();
        for (name, before) in &old.tenants {
            let pools = self.pools(&before.server);
            match new.tenants.get(name) {
                None => {
                    pools.remove_tenant(name, epoch);
                    self.limits.remove(name);
                    self.tokens.forget_tenant(name);
                }
                Some(after) if after.server != before.server => {
                    pools.remove_tenant(name, epoch);
                    self.tokens.forget_tenant(name);
                    if !after.moving {
                        tracing::info!(tenant = %name, from = %before.server, to = %after.server, "the tenant lives on another server now: its pools are rebuilt there");
                    }
                }
                Some(after) if after.fingerprint != before.fingerprint => {
                    if after.same_logins(before) {
                        // Only the size changed: resize, keeping connections.
                        pools.resize_tenant(name, after.pool_size, epoch);
                    } else {
                        // New credentials (and perhaps a new size): a resized
                        // pool would keep dialing with the old password, so
                        // the pools go (in-flight requests finish on them)
                        // and new ones are built from this snapshot on next use.
                        pools.remove_tenant(name, epoch);
                        // (A tenant held for its move had none: not news.)
                        if !before.moving {
                            tracing::info!(tenant = %name, "credentials changed: the tenant's pools are rebuilt with them");
                        }
                    }
                    self.tokens.forget_tenant(name);
                }
                Some(_) => {}
            }
        }
        for (name, after) in &new.tenants {
            let before = old.tenants.get(name).is_some_and(|b| b.moving);
            if after.moving && !before {
                tracing::info!(tenant = %name, to = %after.server, "the tenant is being moved: its requests wait for the cutover (up to the checkout timeout)");
            } else if before && !after.moving {
                tracing::info!(tenant = %name, server = %after.server, "the tenant's cutover is over: its requests go to its server");
            }
        }
        // Tenants gone from the file take their numbers along (what they
        // had not flushed is lost with them).
        if old
            .tenants
            .keys()
            .any(|name| !new.tenants.contains_key(name))
        {
            self.usage.retain(|name| new.tenant(name).is_some());
            self.recent.retain(|name| new.tenant(name).is_some());
        }
        self.swaps.send_replace(epoch);
    }

    /// Marks the gateway as stopping (`/readyz` answers 503).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Periodic chores: idle pools closed, idle address limits forgotten.
    pub fn housekeeping(&self) {
        for (_, pools) in self.all_pools() {
            pools.reap_idle();
        }
        self.strangers.prune();
        self.bad_lookups.prune();
    }

    /// Serves one API request from a client at `peer`.
    pub async fn handle<B>(&self, req: Request<B>, peer: IpAddr) -> Response<Full<Bytes>>
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let start = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let mut seen = Seen::default();
        let response = match self.route(req, peer, &mut seen).await {
            Ok(r) => r,
            Err(e) => error_response(&e),
        };
        let status = response.status().as_u16();
        let elapsed = start.elapsed();
        let tenant = seen.tenant.as_deref().unwrap_or("-");
        self.metrics.request(tenant, status, elapsed);
        if let Some(name) = &seen.tenant {
            let now = std::time::SystemTime::now();
            self.recent.record(name, status, elapsed, now);
            // Writes of a caller with a token go to the tenant's audit trail.
            if let (Some(hash), true) = (seen.token_hash.take(), is_write(&method)) {
                self.usage.audit(
                    name,
                    ApiWrite {
                        at: now,
                        hash,
                        role: seen.role.clone(),
                        method: method.to_string(),
                        path: path.clone(),
                        status,
                        row_id: seen.row_id.or_else(|| row_in_path(&path)),
                    },
                );
            }
        }
        let role = if seen.role.is_empty() {
            "-"
        } else {
            &seen.role
        };
        tracing::debug!(
            tenant = %tenant,
            role = %role,
            method = %method,
            path = %path,
            status,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
        response
    }

    async fn route<B>(
        &self,
        req: Request<B>,
        peer: IpAddr,
        seen: &mut Seen,
    ) -> Result<Response<Full<Bytes>>, ApiError>
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // Subscribed before the snapshot is loaded: no swap after it is missed.
        let mut changes = self.changes();
        let snap = self.snapshot.load_full();
        let (parts, body) = req.into_parts();
        let headers = &parts.headers;
        let host = host(headers, &parts.uri)?;
        let x_tenant = single(headers, "x-tenant")?;
        let Some(t) = snap.route(host, x_tenant).cloned() else {
            // Guessing tenant names costs the guesser's address budget.
            self.stranger(peer)?;
            return Err(ApiError::unknown_tenant());
        };
        seen.tenant = Some(t.info.name.clone());
        if t.suspended {
            return Err(ApiError::suspended());
        }
        if !(parts.uri.path() == "/api" || parts.uri.path().starts_with("/api/")) {
            return Err(ApiError::not_found(
                "no such route (the API lives under /api)",
            ));
        }
        // Authenticate first: only a caller with a valid token may spend the
        // tenant's request budget.
        let token = match bearer(single(headers, AUTHORIZATION.as_str())?) {
            Ok(token) => token.to_owned(),
            Err(why) => {
                self.stranger(peer)?;
                return Err(ApiError::unauthorized(why));
            }
        };
        let mut attempt = Attempt {
            parts: &parts,
            hash: tokens::hash(&token),
            peer,
            unread: Some(body),
            body: None,
            charged: false,
            ran: false,
        };
        let (mut snap, mut t) = self.hold(snap, t, host, x_tenant, &mut changes).await?;
        let mut again = true;
        loop {
            let error = match self.attempt(&snap, &t, &mut attempt, seen).await {
                Ok(response) => return Ok(response),
                Err(e) => e,
            };
            // Nothing of the request ran (or it only read), and its
            // database was not there: if that is because the tenant moved,
            // it runs once more where the tenant lives now.
            let read_only = parts.method == Method::GET || parts.method == Method::HEAD;
            if !(again && error.gone && (!attempt.ran || read_only)) {
                return Err(error);
            }
            again = false;
            let Some((newer, now)) = self.moved(&t, host, x_tenant, &mut changes).await else {
                return Err(error);
            };
            tracing::debug!(tenant = %t.info.name, from = %t.server, to = %now.server, "the tenant moved during the request: running it again");
            (snap, t) = self.hold(newer, now, host, x_tenant, &mut changes).await?;
            attempt.ran = false;
        }
    }

    /// Spends one unit of `peer`'s budget for requests without a valid
    /// token: 429 when it is exhausted.
    fn stranger(&self, peer: IpAddr) -> Result<(), ApiError> {
        self.strangers.check(peer).map_err(|wait| {
            self.metrics.unauthenticated_limited();
            ApiError::rate_limited_unauthenticated(wait.as_secs().max(1))
        })
    }

    /// The role of a bearer token in the tenant's database (cached, good and
    /// bad answers alike). A lookup that finds the token bad spends `peer`'s
    /// bad-lookup budget; while that is exhausted, tokens not in the cache
    /// are not looked up at all, so a flood of made-up tokens costs the
    /// tenant's database at most that budget (and delays only new tokens
    /// from that address; cached ones, and other addresses, are unaffected).
    /// A token already known to be bad spends the strangers' budget.
    pub(crate) async fn token_role(
        &self,
        t: &TenantEntry,
        epoch: u64,
        hash: &str,
        peer: IpAddr,
    ) -> Result<String, ApiError> {
        let role = match self.tokens.get(&t.info.name, hash) {
            Some(role) => role,
            None => {
                if let Err(wait) = self.bad_lookups.blocked(peer) {
                    self.metrics.unauthenticated_limited();
                    return Err(ApiError::rate_limited_unauthenticated(
                        wait.as_secs().max(1),
                    ));
                }
                let vrole = t.pool_login().ok_or_else(ApiError::login_unavailable)?;
                let config = t.config(vrole).expect("pool_login returns ready logins");
                let key = PoolKey {
                    tenant: t.info.name.clone(),
                    role: vrole.to_owned(),
                };
                let mut conn = self
                    .pools(&t.server)
                    .get(&key, &|| Target {
                        config: config.clone(),
                        size: t.pool_size,
                        epoch,
                    })
                    .await
                    .map_err(|e| pool_error(&key, e))?;
                // The lookup function is the member groups' to execute;
                // the least privileged one asks.
                if let Some(group) = t.session_role("customer") {
                    act_as(&mut conn, &group).await?;
                }
                let role = tokens::role_of(&conn, hash)
                    .await
                    .map_err(|e| ApiError::from_db(&e))?;
                self.tokens.put(&t.info.name, hash, role.clone());
                if role.is_none() {
                    if let Err(wait) = self.bad_lookups.check(peer) {
                        self.metrics.unauthenticated_limited();
                        return Err(ApiError::rate_limited_unauthenticated(
                            wait.as_secs().max(1),
                        ));
                    }
                    return Err(ApiError::unauthorized(
                        "unknown or revoked token for this tenant",
                    ));
                }
                role
            }
        };
        role.ok_or_else(|| match self.stranger(peer) {
            Ok(()) => ApiError::unauthorized("unknown or revoked token for this tenant"),
            Err(limited) => limited,
        })
    }
}

/// What a request's handling learned, for its metrics, log line and audit
/// entry.
#[derive(Default)]
pub(crate) struct Seen {
    /// The tenant it was routed to.
    pub tenant: Option<String>,
    /// Its token's role, once the token checked out.
    pub role: String,
    /// Its token's hash, once the token checked out.
    pub token_hash: Option<String>,
    /// The row it created or changed, when the API says.
    pub row_id: Option<i64>,
}

/// Whether a method writes (what quotas refuse and the audit trail keeps).
pub(crate) fn is_write(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// The row id at the end of an API path (`/api/orders/7` -> 7).
fn row_in_path(path: &str) -> Option<i64> {
    path.trim_end_matches('/').rsplit('/').next()?.parse().ok()
}

/// A pools registry for every server of `snapshot`: the ones of `existing`
/// kept (a budget changed in the file takes effect at the next start), new
/// ones made with the server's budget (else `settings.budget`).
fn registries(
    snapshot: &Snapshot,
    settings: &Settings,
    existing: &HashMap<String, Arc<Registry>>,
) -> HashMap<String, Arc<Registry>> {
    let mut all = existing.clone();
    for (name, budget) in &snapshot.servers {
        let wanted = budget.unwrap_or(settings.budget);
        match all.get(name) {
            Some(r) if r.budget() != wanted => tracing::warn!(
                server = %name,
                running = r.budget(),
                wanted,
                "the gateway's connection budget on this server changed: it takes effect when the gateway restarts"
            ),
            Some(_) => {}
            None => {
                all.insert(
                    name.clone(),
                    Registry::new(Settings {
                        budget: wanted,
                        ..settings.clone()
                    }),
                );
            }
        }
    }
    all
}

/// Switches a gateway session to `group` (`SET ROLE`, skipped when it acts
/// as `group` already), so every statement of the request runs with that
/// group's privileges and no other: the gateway login itself is NOINHERIT
/// and holds nothing. A switch that fails (the group was dropped or the
/// membership revoked) fails the request before any of its statements runs.
pub(crate) async fn act_as(conn: &mut Object, group: &str) -> Result<(), ApiError> {
    conn.act_as(group).await.map_err(|e| ApiError::from_db(&e))
}

/// The answer for a pool that cannot give a connection, marked
/// [`gone`](ApiError::gone). The reason (which names databases, hosts and
/// server messages) goes to the log, not to the caller.
pub(crate) fn pool_error(key: &PoolKey, e: PoolError) -> ApiError {
    let error = match e {
        PoolError::Busy { retry_after } => ApiError::unavailable(
            "every connection of this tenant is busy; try again shortly",
            retry_after.as_secs().max(1),
        ),
        PoolError::Down {
            reason,
            retry_after,
        } => {
            tracing::warn!(tenant = %key.tenant, role = %key.role, %reason, "tenant database unreachable");
            ApiError::unavailable(
                "the tenant's database is unreachable; try again later",
                retry_after.as_secs().max(1),
            )
        }
        PoolError::Refused { reason } => {
            tracing::warn!(tenant = %key.tenant, role = %key.role, %reason, "the database refused the gateway's login");
            ApiError::login_unavailable()
        }
    };
    // No statement ran: a request may run again where its tenant lives now.
    error.with_gone()
}

/// The one value of a header that may appear once: two `Host`,
/// `Authorization` or `X-Tenant` headers could be read differently by a
/// proxy in front and by the gateway, so they are refused.
fn single<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, ApiError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(ApiError::bad_request(format!(
            "the {name} header appears more than once"
        )));
    }
    match first {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("the {name} header is not visible ASCII"))),
    }
}

/// The token of an `Authorization: Bearer <token>` header (the scheme is
/// case-insensitive, RFC 7235), or why there is none.
fn bearer(header: Option<&str>) -> Result<&str, &'static str> {
    let header = header.ok_or("missing bearer token (Authorization: Bearer <token>)")?;
    let (scheme, token) = header
        .trim()
        .split_once([' ', '\t'])
        .ok_or("the Authorization header must be `Bearer <token>`")?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err("the Authorization scheme must be Bearer");
    }
    let token = token.trim();
    if token.is_empty() || token.contains([' ', '\t']) {
        return Err("the Authorization header must be `Bearer <token>`");
    }
    Ok(token)
}

/// The host that picks the tenant: the Host header, or the authority of an
/// absolute-form URI (HTTP/1.1) or `:authority` (HTTP/2). When both are
/// given they must name the same host (port aside), or a proxy in front
/// and the gateway could pick two different tenants: 400.
fn host<'r>(headers: &'r HeaderMap, uri: &'r hyper::Uri) -> Result<Option<&'r str>, ApiError> {
    let header = single(headers, HOST.as_str())?;
    let (Some(header), Some(authority)) = (header, uri.host()) else {
        return Ok(header.or(uri.host()));
    };
    let name = |h: &str| {
        let h = h.trim().trim_end_matches('.').to_ascii_lowercase();
        match h.rsplit_once(':') {
            Some((n, port))
                if !n.ends_with(']')
                    && port.bytes().all(|b| b.is_ascii_digit())
                    && !n.contains(':') =>
            {
                n.to_owned()
            }
            _ => h,
        }
    };
    if name(header) != name(authority) {
        return Err(ApiError::bad_request(
            "the Host header and the request's authority name different hosts",
        ));
    }
    Ok(Some(header))
}

/// Whether the body is declared JSON: `application/json` or
/// `application/<x>+json`, any case, charset UTF-8 if one is given. A
/// content encoding other than `identity` is 415 at once.
pub(crate) fn body_is_json(headers: &HeaderMap) -> Result<bool, ApiError> {
    if let Some(encoding) = headers.get(hyper::header::CONTENT_ENCODING) {
        if !encoding.as_bytes().eq_ignore_ascii_case(b"identity") {
            return Err(ApiError::unsupported_media_type());
        }
    }
    let Some(Ok(value)) = headers.get(CONTENT_TYPE).map(|v| v.to_str()) else {
        return Ok(false);
    };
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let json = essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"));
    let utf8 = parts.all(|p| match p.split_once('=') {
        Some((k, v)) if k.trim().eq_ignore_ascii_case("charset") => {
            v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        }
        _ => true,
    });
    Ok(json && utf8)
}

pub(crate) fn json_response(
    status: StatusCode,
    body: Option<&serde_json::Value>,
) -> Response<Full<Bytes>> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if status != StatusCode::NO_CONTENT {
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    r
}

pub(crate) fn text_response(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text.to_owned())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

pub fn error_response(e: &ApiError) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(e.body())));
    *r.status_mut() = e.status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(secs) = e.retry_after {
        r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn host_and_authority_must_agree() {
        let uri = |s: &str| s.parse::<hyper::Uri>().unwrap();
        let h = headers(&[("host", "shop.localhost:4001")]);
        assert_eq!(host(&h, &uri("/api")).unwrap(), Some("shop.localhost:4001"));
        assert_eq!(
            host(&h, &uri("http://SHOP.localhost./api")).unwrap(),
            Some("shop.localhost:4001")
        );
        let e = host(&h, &uri("http://cafe.localhost/api")).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST, "{e}");
        let none = HeaderMap::new();
        assert_eq!(
            host(&none, &uri("http://cafe.localhost/api")).unwrap(),
            Some("cafe.localhost")
        );
        let two = headers(&[("host", "a.localhost"), ("host", "b.localhost")]);
        assert!(host(&two, &uri("/api")).is_err());
    }

    #[test]
    fn bodies_must_be_declared_utf8_json_and_not_encoded() {
        let json = |ct: &str| body_is_json(&headers(&[("content-type", ct)])).unwrap();
        assert!(json("application/json"));
        assert!(json("Application/JSON; charset=UTF-8"));
        assert!(json("application/merge-patch+json"));
        assert!(!json("text/plain"));
        assert!(!json("application/json; charset=latin1"));
        assert!(!body_is_json(&HeaderMap::new()).unwrap());
        let gz = headers(&[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ]);
        assert_eq!(
            body_is_json(&gz).unwrap_err().status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer(Some("bEaReR\tabc  ")), Ok("abc"));
        assert!(bearer(Some("Basic abc")).is_err());
        assert!(bearer(Some("Bearer a b")).is_err());
        assert!(bearer(Some("Bearer")).is_err());
        assert!(bearer(None).is_err());
    }
}
