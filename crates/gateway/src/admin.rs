//! The admin listener's routes: `/healthz`, `/readyz` (never behind the
//! admin token), `/metrics`, `/servers`, `/tenants/<name>/health`, and the
//! console: `/` (the fleet), `/tenants/<name>` (one tenant), their JSON
//! (`/api/fleet`, `/api/fleet/tenants/<name>`), `/console.css` and
//! `/console.js`.
//!
//! With an admin token (`--admin-token`, required when the admin listener
//! is not on loopback), every other route asks for it: `Authorization:
//! Bearer <token>`, or the `tenantry_admin` cookie a browser gets by opening
//! `/?token=<token>` once (HttpOnly, SameSite=Strict). Tokens are compared
//! as SHA-256 digests, in constant time.
//!
//! What does not live here: what the console looks like (`console`), what
//! the fleet view holds (`fleet`), the API listener's handling (`server`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE,
};
use hyper::{Method, Request, Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::fleet::{AuditView, Health, ServerView, TenantPage};
use crate::pools::{PoolKey, Target};
use crate::server::{act_as, error_response, json_response, text_response, Gateway};

/// The cookie a browser keeps the admin token in.
const COOKIE_NAME: &str = "tenantry_admin";

/// Audit entries a tenant's console page shows.
const PAGE_AUDIT: i64 = 25;

/// The admin token, kept as its digest.
pub struct AdminToken(Option<[u8; 32]>);

impl AdminToken {
    pub fn new(token: Option<&SecretString>) -> AdminToken {
        AdminToken(token.map(|t| digest(t.expose_secret())))
    }

    /// Whether `candidate` is the token (true when there is none).
    fn admits(&self, candidate: Option<&str>) -> bool {
        let Some(want) = &self.0 else {
            return true;
        };
        let Some(candidate) = candidate else {
            return false;
        };
        let got = digest(candidate);
        // Constant time: every byte is compared.
        want.iter()
            .zip(got.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    fn required(&self) -> bool {
        self.0.is_some()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The token a request carries: its bearer header, else its cookie.
fn presented<B>(req: &Request<B>) -> Option<&str> {
    if let Some(v) = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, token) = v.trim().split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim());
    }
    req.headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE_NAME)?.strip_prefix('='))
}

/// `?token=` of a request, percent-decoding nothing (tokens are printable).
fn query_token<B>(req: &Request<B>) -> Option<&str> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|p| p.strip_prefix("token="))
}

impl Gateway {
    /// Serves one admin request.
    pub async fn handle_admin<B>(self: &Arc<Self>, req: Request<B>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET {
            return error_response(&ApiError::method_not_allowed());
        }
        let path = req.uri().path().to_owned();
        match path.as_str() {
            "/healthz" => return text_response(StatusCode::OK, "ok\n"),
            "/readyz" => {
                return if self.stopping.load(Ordering::SeqCst) {
                    text_response(StatusCode::SERVICE_UNAVAILABLE, "stopping\n")
                } else if !self.some_server_up() {
                    text_response(StatusCode::SERVICE_UNAVAILABLE, "no server reachable\n")
                } else {
                    text_response(StatusCode::OK, "ready\n")
                }
            }
            _ => {}
        }
        if self.admin_token.required() {
            // A browser's first visit: the token in the address, once; it
            // goes into a cookie and out of the address bar.
            if let Some(token) = query_token(&req) {
                if !self.admin_token.admits(Some(token)) {
                    return admin_unauthorized();
                }
                let mut r = Response::new(Full::new(Bytes::new()));
                *r.status_mut() = StatusCode::SEE_OTHER;
                let cookie = format!("{COOKIE_NAME}={token}; HttpOnly; SameSite=Strict; Path=/");
                if let Ok(v) = HeaderValue::from_str(&cookie) {
                    r.headers_mut().insert(SET_COOKIE, v);
                }
                // Back to the page asked for, on this host: `//x` or `/\x`
                // would send the browser to another site.
                let local = path.starts_with('/') && !path[1..].starts_with(['/', '\\']);
                let to = HeaderValue::from_str(if local { &path } else { "/" })
                    .unwrap_or(HeaderValue::from_static("/"));
                r.headers_mut().insert(LOCATION, to);
                return r;
            }
            if !self.admin_token.admits(presented(&req)) {
                return admin_unauthorized();
            }
        }
        match path.as_str() {
            "/servers" => json_response(StatusCode::OK, Some(&self.servers_report())),
            "/metrics" => {
                let snap = self.snapshot.load();
                let stats: Vec<_> = self
                    .all_pools()
                    .into_iter()
                    .filter(|(name, _)| snap.servers.contains_key(name))
                    .map(|(name, p)| (name, p.stats(), p.server_down().is_some()))
                    .collect();
                let mut text = self.metrics.render(&stats);
                self.usage
                    .render(&|name| snap.tenant(name).map(|t| t.quotas), &mut text);
                let mut r = text_response(StatusCode::OK, &text);
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                r
            }
            "/" | "/api/fleet" => {
                // A large fleet takes a while to gather and write out: off
                // the threads that serve requests.
                let gw = self.clone();
                let html = path == "/";
                let built = tokio::task::spawn_blocking(move || {
                    let fleet = gw.fleet();
                    if html {
                        crate::console::fleet_page(&fleet).into_bytes()
                    } else {
                        serde_json::to_vec(&fleet).expect("the fleet serializes")
                    }
                })
                .await;
                match (built, html) {
                    (Ok(body), true) => html_response(body),
                    (Ok(body), false) => {
                        let mut r = Response::new(Full::new(Bytes::from(body)));
                        r.headers_mut()
                            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                        no_store(r)
                    }
                    (Err(e), _) => error_response(&ApiError::internal(format!(
                        "the fleet view could not be built: {e}"
                    ))),
                }
            }
            "/console.css" => asset(crate::console::CSS, "text/css; charset=utf-8"),
            "/console.js" => asset(crate::console::JS, "text/javascript; charset=utf-8"),
            p => {
                if let Some(name) = p
                    .strip_prefix("/tenants/")
                    .and_then(|r| r.strip_suffix("/health"))
                {
                    return self.tenant_health(name).await;
                }
                if let Some(name) = p.strip_prefix("/api/fleet/tenants/") {
                    return match self.tenant_page(name).await {
                        Some(page) => {
                            let page = serde_json::to_value(page).expect("a page serializes");
                            no_store(json_response(StatusCode::OK, Some(&page)))
                        }
                        None => error_response(&ApiError::unknown_tenant()),
                    };
                }
                if let Some(name) = p.strip_prefix("/tenants/") {
                    return match self.tenant_page(name).await {
                        Some(page) => {
                            html_response(crate::console::tenant_page(&page).into_bytes())
                        }
                        None => error_response(&ApiError::unknown_tenant()),
                    };
                }
                error_response(&ApiError::not_found("no such admin route"))
            }
        }
    }

    /// Whether a file with several servers has one that answers: read at
    /// the last load and not marked down since. (With one server the
    /// gateway stays ready while its server is down: its tenants get fast
    /// 503s, as they would from any replica.)
    fn some_server_up(&self) -> bool {
        let snap = self.snapshot.load();
        if snap.servers.len() < 2 {
            return true;
        }
        let pools = self.servers.load();
        snap.servers.keys().any(|name| {
            !snap.unreadable.contains(name)
                && pools.get(name).is_none_or(|p| p.server_down().is_none())
        })
    }

    /// Each server's tenants, budget, connections, and whether it is
    /// marked down (and why): `/servers`, and the console's.
    pub(crate) fn server_views(&self) -> Vec<ServerView> {
        let snap = self.snapshot.load_full();
        self.all_pools()
            .into_iter()
            .filter(|(name, _)| snap.servers.contains_key(name))
            .map(|(name, pools)| {
                let stats = pools.stats();
                let down = if snap.unreadable.contains(&name) {
                    Some("its catalog could not be read at the last load".to_owned())
                } else {
                    pools.server_down()
                };
                let tenants = snap
                    .tenants
                    .values()
                    .filter(|t| t.server == name && t.pool_login().is_some())
                    .count();
                ServerView {
                    state: if down.is_some() { "down" } else { "up" },
                    down_reason: down,
                    tenants,
                    connections_open: stats.open_connections,
                    connections_in_use: stats.pools.iter().map(|p| p.in_use).sum::<usize>(),
                    connections_budget: stats.budget,
                    name,
                }
            })
            .collect()
    }

    /// `/servers`.
    fn servers_report(&self) -> serde_json::Value {
        let snap = self.snapshot.load();
        serde_json::json!({ "servers": self.server_views(), "unplaced_tenants": snap.unplaced })
    }

    /// `/tenants/<name>/health`: one round trip on the tenant's pool.
    async fn tenant_health(&self, name: &str) -> Response<Full<Bytes>> {
        let snap = self.snapshot.load_full();
        let Some(t) = snap.tenant(name) else {
            return error_response(&ApiError::unknown_tenant());
        };
        let Some(role) = t.pool_login() else {
            return error_response(&ApiError::login_unavailable());
        };
        let health = self.health(name).await;
        let status = if health.ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        // The admin listener is the operators': the reason is theirs to see.
        let mut body = serde_json::json!({"tenant": name, "ok": health.ok, "role": role});
        if let Some(ms) = health.round_trip_ms {
            body["round_trip_ms"] = ms.into();
        }
        if let Some(e) = health.error {
            body["error"] = e.into();
        }
        json_response(status, Some(&body))
    }

    /// The health check of tenant `name` (it exists).
    async fn health(&self, name: &str) -> Health {
        let snap = self.snapshot.load_full();
        let Some(t) = snap.tenant(name) else {
            return Health::failed("no such tenant");
        };
        let Some(role) = t.pool_login() else {
            return Health::failed("the gateway has no login it can use for this tenant");
        };
        let config = t.config(role).expect("pool_login returns ready logins");
        let key = PoolKey {
            tenant: name.to_owned(),
            role: role.to_owned(),
        };
        let size = t.pool_size;
        match self
            .pools(&t.server)
            .health(&key, &|| Target {
                config: config.clone(),
                size,
                epoch: snap.epoch,
            })
            .await
        {
            Ok(rtt) => Health {
                ok: true,
                round_trip_ms: Some(rtt.as_secs_f64() * 1000.0),
                error: None,
            },
            Err(e) => Health::failed(e.to_string()),
        }
    }

    /// Tenant `name`'s console page: its row, health and newest audit
    /// entries (read as its admin group, as the tenant's admin would).
    async fn tenant_page(&self, name: &str) -> Option<TenantPage> {
        let tenant = self.fleet_tenant(name)?;
        let health = self.health(name).await;
        let (audit, audit_error) = match self.recent_audit(name).await {
            Ok(entries) => (entries, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        Some(TenantPage {
            tenant,
            health,
            audit,
            audit_error,
        })
    }

    async fn recent_audit(&self, name: &str) -> Result<Vec<AuditView>, String> {
        let snap = self.snapshot.load_full();
        let t = snap.tenant(name).ok_or("no such tenant")?;
        let role = t
            .pool_login()
            .ok_or("the gateway has no login it can use for this tenant")?;
        let config = t.config(role).expect("pool_login returns ready logins");
        let key = PoolKey {
            tenant: name.to_owned(),
            role: role.to_owned(),
        };
        let mut conn = self
            .pools(&t.server)
            .get(&key, &|| Target {
                config: config.clone(),
                size: t.pool_size,
                epoch: snap.epoch,
            })
            .await
            .map_err(|e| e.to_string())?;
        if let Some(admin) = t.session_role("admin") {
            act_as(&mut conn, &admin).await.map_err(|e| e.message)?;
        }
        let none: Option<String> = None;
        let rows = tokio::time::timeout(
            Duration::from_secs(5),
            conn.query(tenantry_layout::audit::LIST, &[&none, &PAGE_AUDIT, &0i64]),
        )
        .await
        .map_err(|_| "reading the audit trail timed out".to_owned())?
        .map_err(|e| match e.as_db_error() {
            Some(db) => db.message().to_owned(),
            None => e.to_string(),
        })?;
        Ok(rows
            .iter()
            .map(|r| {
                let (os_user, host): (String, String) = (r.get(4), r.get(5));
                let mut actor: String = r.get(3);
                if !os_user.is_empty() {
                    actor = format!("{actor} ({os_user}@{host})");
                }
                AuditView {
                    id: r.get(0),
                    at: r.get(1),
                    action: r.get(2),
                    actor,
                    detail: serde_json::from_str(&r.get::<_, String>(6))
                        .unwrap_or(serde_json::Value::Null),
                }
            })
            .collect())
    }
}

impl Health {
    fn failed(why: impl Into<String>) -> Health {
        Health {
            ok: false,
            round_trip_ms: None,
            error: Some(why.into()),
        }
    }
}

fn admin_unauthorized() -> Response<Full<Bytes>> {
    let mut r = error_response(&ApiError::unauthorized(
        "the admin listener needs its token: Authorization: Bearer <token>, or open /?token=<token> once in a browser",
    ));
    r.headers_mut()
        .insert("www-authenticate", HeaderValue::from_static("Bearer"));
    r
}

fn no_store(mut r: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn html_response(html: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(html)));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut().insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; frame-ancestors 'none'"),
    );
    r.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    no_store(r)
}

fn asset(body: &'static str, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_token_is_compared_whole() {
        let token = AdminToken::new(Some(&SecretString::from("s3cret-token".to_owned())));
        assert!(token.admits(Some("s3cret-token")));
        assert!(!token.admits(Some("s3cret-toke")));
        assert!(!token.admits(Some("")));
        assert!(!token.admits(None));
        assert!(AdminToken::new(None).admits(None));
        let req = |h: (&str, &str)| Request::builder().header(h.0, h.1).body(()).unwrap();
        assert_eq!(
            presented(&req(("authorization", "Bearer abc"))),
            Some("abc")
        );
        assert_eq!(
            presented(&req(("cookie", "a=b; tenantry_admin=xyz"))),
            Some("xyz")
        );
        assert_eq!(presented(&req(("authorization", "Basic abc"))), None);
    }
}
