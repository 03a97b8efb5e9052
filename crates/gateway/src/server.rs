//! The gateway as a service: one hyper handler for the API (resolve tenant,
//! status, rate limit, bearer token, pool of the token's role, store API) and
//! one for the admin listener (`/healthz`, `/readyz`, `/metrics`,
//! `/tenants/<name>/health`); plus listening (optionally over TLS), reload of
//! the configuration without restart, and graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::api;
use crate::error::ApiError;
use crate::limit::Limits;
use crate::metrics::Metrics;
use crate::pools::{PoolError, PoolKey, Registry, Settings, Target};
use crate::snapshot::{Login, Snapshot, TenantEntry};
use crate::tokens;

/// Largest request body accepted.
const MAX_BODY: usize = 1 << 20;

/// The gateway's state, shared by every connection.
pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    pools: Arc<Registry>,
    limits: Limits,
    metrics: Metrics,
    tokens: tokens::Cache,
    stopping: AtomicBool,
}

impl Gateway {
    pub fn new(snapshot: Snapshot, settings: Settings, token_ttl: Duration) -> Arc<Gateway> {
        Arc::new(Gateway {
            snapshot: ArcSwap::from_pointee(snapshot),
            pools: Registry::new(settings),
            limits: Limits::new(),
            metrics: Metrics::new(),
            tokens: tokens::Cache::new(token_ttl),
            stopping: AtomicBool::new(false),
        })
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    pub fn pools(&self) -> &Arc<Registry> {
        &self.pools
    }

    /// Swaps in a new configuration. Requests in flight finish on the old
    /// one; pools of removed tenants are drained, pools whose size or
    /// credentials changed are rebuilt on next use.
    pub fn replace(&self, new: Snapshot) {
        let old = self.snapshot.swap(Arc::new(new));
        let new = self.snapshot.load();
        for (name, before) in &old.tenants {
            match new.tenants.get(name) {
                None => {
                    self.pools.remove_tenant(name);
                    self.limits.remove(name);
                    self.tokens.forget_tenant(name);
                }
                Some(after) if after.fingerprint != before.fingerprint => {
                    if after.same_logins(before) {
                        // Only the size changed: resize, keeping connections.
                        self.pools.resize_tenant(name, after.pool_size);
                    } else {
                        // New credentials (and perhaps a new size): a resized
                        // pool would keep dialing with the old password, so
                        // the pools go (in-flight requests finish on them)
                        // and new ones are built from this snapshot on next use.
                        self.pools.remove_tenant(name);
                        tracing::info!(tenant = %name, "credentials changed: the tenant's pools are rebuilt with them");
                    }
                    self.tokens.forget_tenant(name);
                }
                Some(_) => {}
            }
        }
    }

    /// Marks the gateway as stopping (`/readyz` answers 503).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Serves one API request.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let start = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let mut tenant = String::from("-");
        let mut role = String::from("-");
        let response = match self.route(req, &mut tenant, &mut role).await {
            Ok(r) => r,
            Err(e) => error_response(&e),
        };
        let status = response.status().as_u16();
        let elapsed = start.elapsed();
        self.metrics.request(&tenant, status, elapsed);
        if status == 429 {
            self.metrics.rate_limited(&tenant);
        }
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
        tenant_out: &mut String,
        role_out: &mut String,
    ) -> Result<Response<Full<Bytes>>, ApiError>
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let snap = self.snapshot.load_full();
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let host = header(HOST.as_str()).or_else(|| req.uri().host());
        let t = snap
            .route(host, header("x-tenant"))
            .ok_or_else(ApiError::unknown_tenant)?
            .clone();
        *tenant_out = t.info.name.clone();
        if t.suspended {
            return Err(ApiError::suspended());
        }
        if let Err(wait) = self.limits.check(&t.info.name, t.requests_per_second) {
            return Err(ApiError::rate_limited(wait.as_secs().max(1)));
        }
        if !(req.uri().path() == "/api" || req.uri().path().starts_with("/api/")) {
            return Err(ApiError::not_found(
                "no such route (the API lives under /api)",
            ));
        }
        let token = header(AUTHORIZATION.as_str())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("missing bearer token (Authorization: Bearer <token>)")
            })?
            .to_owned();
        let role = self.token_role(&t, &token).await?;
        *role_out = role.clone();
        let pool_role = if snap.single.is_some() {
            "dsn".to_owned()
        } else {
            role
        };
        let config = match t.logins.get(&pool_role) {
            Some(Login::Ready { .. }) => t.config(&pool_role).expect("a ready login has a config"),
            Some(Login::Unavailable(why)) => return Err(ApiError::unavailable(why.clone(), 30)),
            None => {
                return Err(ApiError::permission_denied(format!(
                    "tenant {} has no {pool_role} user configured",
                    t.info.name
                )))
            }
        };

        let (parts, body) = req.into_parts();
        let body = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?
            .to_bytes();
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
            role: pool_role,
        };
        let size = t.pool_size;
        let mut conn = self
            .pools
            .get(&key, &|| Target {
                config: config.clone(),
                size,
            })
            .await
            .map_err(pool_error)?;
        let out = api::handle(&areq, &t.info, &mut conn).await?;
        Ok(json_response(out.status, out.body.as_ref()))
    }

    /// The role of a bearer token in the tenant's database (cached).
    async fn token_role(&self, t: &TenantEntry, token: &str) -> Result<String, ApiError> {
        let hash = tokens::hash(token);
        let role = match self.tokens.get(&t.info.name, &hash) {
            Some(role) => role,
            None => {
                let vrole = t.verifier_role().ok_or_else(|| {
                    ApiError::unavailable("no login of this tenant is usable to check tokens", 30)
                })?;
                let config = t.config(vrole).expect("verifier_role returns ready logins");
                let key = PoolKey {
                    tenant: t.info.name.clone(),
                    role: vrole.to_owned(),
                };
                let conn = self
                    .pools
                    .get(&key, &|| Target {
                        config: config.clone(),
                        size: t.pool_size,
                    })
                    .await
                    .map_err(pool_error)?;
                let role = tokens::role_of(&conn, &hash)
                    .await
                    .map_err(|e| ApiError::from_db(&e))?;
                self.tokens.put(&t.info.name, &hash, role.clone());
                role
            }
        };
        role.ok_or_else(|| ApiError::unauthorized("unknown or revoked token for this tenant"))
    }

    /// Serves one admin request.
    pub async fn handle_admin<B>(&self, req: Request<B>) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        if req.method() != Method::GET {
            return error_response(&ApiError::method_not_allowed());
        }
        match path {
            "/healthz" => text_response(StatusCode::OK, "ok\n"),
            "/readyz" => {
                if self.stopping.load(Ordering::SeqCst) {
                    text_response(StatusCode::SERVICE_UNAVAILABLE, "stopping\n")
                } else {
                    text_response(StatusCode::OK, "ready\n")
                }
            }
            "/metrics" => {
                let mut r =
                    text_response(StatusCode::OK, &self.metrics.render(&self.pools.stats()));
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                r
            }
            p => match p
                .strip_prefix("/tenants/")
                .and_then(|r| r.strip_suffix("/health"))
            {
                Some(name) => self.tenant_health(name).await,
                None => error_response(&ApiError::not_found("no such admin route")),
            },
        }
    }

    async fn tenant_health(&self, name: &str) -> Response<Full<Bytes>> {
        let snap = self.snapshot.load_full();
        let Some(t) = snap.tenants.get(name) else {
            return error_response(&ApiError::unknown_tenant());
        };
        let Some(role) = t.verifier_role() else {
            return error_response(&ApiError::unavailable("no usable login", 30));
        };
        let config = t.config(role).expect("verifier_role returns ready logins");
        let key = PoolKey {
            tenant: name.to_owned(),
            role: role.to_owned(),
        };
        let size = t.pool_size;
        match self
            .pools
            .health(&key, &|| Target {
                config: config.clone(),
                size,
            })
            .await
        {
            Ok(rtt) => json_response(
                StatusCode::OK,
                Some(
                    &serde_json::json!({"tenant": name, "ok": true, "role": role, "round_trip_ms": rtt.as_secs_f64() * 1000.0}),
                ),
            ),
            Err(e) => {
                let mut r = error_response(&pool_error(e));
                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                r
            }
        }
    }
}

fn pool_error(e: PoolError) -> ApiError {
    match e {
        PoolError::Busy { retry_after } => ApiError::unavailable(
            "every connection of this tenant is busy; try again shortly",
            retry_after.as_secs().max(1),
        ),
        PoolError::Down {
            reason,
            retry_after,
        } => ApiError::unavailable(
            format!("the tenant's database is unreachable: {reason}"),
            retry_after.as_secs().max(1),
        ),
        PoolError::Refused { reason } => {
            ApiError::unavailable(format!("the gateway cannot log in: {reason}"), 30)
        }
    }
}

fn json_response(status: StatusCode, body: Option<&serde_json::Value>) -> Response<Full<Bytes>> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if status != StatusCode::NO_CONTENT {
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    r
}

fn text_response(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
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

/// Where the listeners are and how they speak.
#[derive(Debug, Clone)]
pub struct Listen {
    pub api: SocketAddr,
    pub admin: SocketAddr,
    /// PEM certificate chain and private key: serve the API over HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// How long in-flight requests may take to finish after a shutdown signal.
    pub drain_timeout: Duration,
}

/// Binds both listeners (so callers learn bind errors, and the real ports
/// when asked for port 0).
pub async fn bind(listen: &Listen) -> std::io::Result<(TcpListener, TcpListener)> {
    let api = TcpListener::bind(listen.api).await?;
    let admin = TcpListener::bind(listen.admin).await?;
    Ok((api, admin))
}

fn tls_acceptor(cert: &PathBuf, key: &PathBuf) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(std::fs::File::open(cert)?))
        .collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        return Err(invalid(format!(
            "{}: no PEM certificate found",
            cert.display()
        )));
    }
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(std::fs::File::open(key)?))?
        .ok_or_else(|| invalid(format!("{}: no PEM private key found", key.display())))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| invalid(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| invalid(format!("TLS certificate/key: {e}")))?;
    let mut config = config;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves until `shutdown` resolves, then stops accepting, lets in-flight
/// requests finish (up to the drain timeout) and returns.
pub async fn serve(
    gateway: Arc<Gateway>,
    (api, admin): (TcpListener, TcpListener),
    listen: &Listen,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let tls = match &listen.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
        None => None,
    };
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let reaper = {
        let pools = gateway.pools.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                pools.reap_idle();
            }
        })
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = api.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let gw = gateway.clone();
                let watcher = graceful.watcher();
                let builder = builder.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let gw = gw.clone();
                        async move { Ok::<_, Infallible>(gw.handle(req).await) }
                    });
                    let result = match tls {
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(s) => watcher.watch(builder.serve_connection(TokioIo::new(s), svc).into_owned()).await,
                            Err(e) => {
                                tracing::debug!(error = %e, "TLS handshake failed");
                                return;
                            }
                        },
                        None => watcher.watch(builder.serve_connection(TokioIo::new(stream), svc).into_owned()).await,
                    };
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            accepted = admin.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let gw = gateway.clone();
                let watcher = graceful.watcher();
                let builder = builder.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let gw = gw.clone();
                        async move { Ok::<_, Infallible>(gw.handle_admin(req).await) }
                    });
                    let _ = watcher.watch(builder.serve_connection(TokioIo::new(stream), svc).into_owned()).await;
                });
            }
            () = &mut shutdown => break,
        }
    }
    gateway.stop();
    drop(api);
    drop(admin);
    reaper.abort();
    if tokio::time::timeout(listen.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within the drain timeout");
    }
    Ok(())
}

/// Reloads tenants.toml on SIGHUP and whenever it, a file in its secrets
/// directory (generated or rotated passwords) or a user's `password_file`
/// changes; checked every `interval`. A change is acted on once it has held
/// for one interval, so a rotation (new password saved, then set on the
/// server) is complete before new pools dial with it. An invalid file is
/// logged and the running configuration kept. `admin_url` overrides the
/// file's (as `--admin-url` does at start).
pub fn spawn_reloader(
    gateway: Arc<Gateway>,
    path: PathBuf,
    admin_url: Option<secrecy::SecretString>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let snapshot = gateway.snapshot();
        let mut secrets = snapshot.secrets_dir.clone();
        let mut files = snapshot.password_files.clone();
        drop(snapshot);
        let mut loaded_at = fingerprint(&path, secrets.as_deref(), &files);
        let mut seen = loaded_at.clone();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            let forced = tokio::select! {
                _ = tokio::time::sleep(interval) => false,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            let now = fingerprint(&path, secrets.as_deref(), &files);
            // Unchanged since the last load, or still changing: wait.
            let settled = now == seen;
            seen = now.clone();
            if !forced && (now == loaded_at || !settled) {
                continue;
            }
            loaded_at = now;
            let loaded = tenantry_manifest::Inventory::load(&path)
                .map(|mut inv| {
                    if let Some(url) = &admin_url {
                        inv.server.admin_url = Some(url.clone());
                    }
                    inv
                })
                .map_err(|e| e.to_string());
            match loaded.and_then(|inv| {
                secrets = Some(inv.paths.secrets.clone());
                Snapshot::from_inventory(&inv)
            }) {
                Ok(snapshot) => {
                    if snapshot.password_files != files {
                        files.clone_from(&snapshot.password_files);
                        loaded_at = fingerprint(&path, secrets.as_deref(), &files);
                        seen = loaded_at.clone();
                    }
                    let n = snapshot.tenants.len();
                    gateway.replace(snapshot);
                    tracing::info!(tenants = n, path = %path.display(), "configuration reloaded");
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "invalid configuration; keeping the running one")
                }
            }
        }
    })
}

/// What reload watches: the file's contents, the secrets directory's
/// listing (names, sizes, modification times, inodes: a password replaced
/// by rename is a new inode even with the same size and time) and the
/// contents of the users' password files.
fn fingerprint(
    path: &std::path::Path,
    secrets: Option<&std::path::Path>,
    password_files: &[PathBuf],
) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::MetadataExt;
    let mut h = Sha256::new();
    h.update(std::fs::read(path).unwrap_or_default());
    if let Some(entries) = secrets.and_then(|d| std::fs::read_dir(d).ok()) {
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
    for file in password_files {
        h.update(file.as_os_str().as_encoded_bytes());
        // Hashed, never kept: the digest is all that stays in memory.
        let contents = std::fs::read(file).unwrap_or_default();
        h.update(Sha256::digest(&contents));
    }
    h.finalize().to_vec()
}
