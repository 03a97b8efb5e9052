//! Client connections: binding, accepting (capped, with backoff when the
//! process runs out of file descriptors), TLS, the timeouts that keep a
//! silent or slow client from holding a connection, and graceful shutdown.
//!
//! Each connection is driven by [`drive`], which watches it through a
//! [`Tracker`] (requests in flight, bytes of a request not yet complete,
//! writes the socket has not taken) and closes it when:
//! - a request line and headers take longer than `header_timeout` (also the
//!   limit for a TLS handshake, and for a new connection's first byte);
//! - it sits idle between requests longer than `idle_timeout` (keep-alive),
//!   or its client stops reading an answer for that long;
//! - the client cap is reached and a new client waits (idle ones go first);
//! - the gateway shuts down: idle and half-read connections at once, the
//!   others once their requests in flight are answered.
//!
//! What does not live here: what a request means (the [`Gateway`]'s
//! handlers) and the configuration reload.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};

use crate::server::Gateway;

/// Where the listeners are, how they speak, and the limits on clients.
#[derive(Debug, Clone)]
pub struct Listen {
    pub api: SocketAddr,
    pub admin: SocketAddr,
    /// PEM certificate chain and private key: serve the API over HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// How long in-flight requests may take to finish after a shutdown signal.
    pub drain_timeout: Duration,
    /// Longest time for a request line and headers, a TLS handshake, or a new
    /// connection's first request to arrive.
    pub header_timeout: Duration,
    /// Longest time a keep-alive connection may sit between requests.
    pub idle_timeout: Duration,
    /// Most API client connections open at once; more wait to be accepted
    /// (idle keep-alive connections are closed to make room).
    pub max_clients: usize,
    /// After a graceful shutdown signal, how long `/readyz` answers 503 while
    /// requests are still served, so a load balancer stops sending first.
    pub shutdown_delay: Duration,
}

impl Listen {
    /// The defaults of `tenantry serve` for the given addresses.
    pub fn new(api: SocketAddr, admin: SocketAddr) -> Listen {
        Listen {
            api,
            admin,
            tls: None,
            drain_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_clients: 10_000,
            shutdown_delay: Duration::from_secs(5),
        }
    }
}

/// How serving should end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// SIGTERM: `/readyz` turns 503 for [`Listen::shutdown_delay`] while the
    /// listeners still serve, then they close and requests in flight drain.
    Graceful,
    /// Ctrl-C: no delay; close the listeners and drain at once.
    Now,
}

/// Binds both listeners (so callers learn bind errors, and the real ports
/// when asked for port 0).
pub async fn bind(listen: &Listen) -> io::Result<(TcpListener, TcpListener)> {
    let api = TcpListener::bind(listen.api).await?;
    let admin = TcpListener::bind(listen.admin).await?;
    Ok((api, admin))
}

fn tls_acceptor(cert: &PathBuf, key: &PathBuf) -> io::Result<tokio_rustls::TlsAcceptor> {
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let certs = rustls_pemfile::certs(&mut io::BufReader::new(std::fs::File::open(cert)?))
        .collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        return Err(invalid(format!(
            "{}: no PEM certificate found",
            cert.display()
        )));
    }
    let key = rustls_pemfile::private_key(&mut io::BufReader::new(std::fs::File::open(key)?))?
        .ok_or_else(|| invalid(format!("{}: no PEM private key found", key.display())))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| invalid(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| invalid(format!("TLS certificate/key: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The phase of the whole server, broadcast to every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    /// Listeners closed: idle connections close, busy ones finish.
    Draining,
}

/// What every connection task shares.
#[derive(Clone)]
struct Shared {
    gateway: Arc<Gateway>,
    builder: hyper_util::server::conn::auto::Builder<TokioExecutor>,
    phase: watch::Receiver<Phase>,
    /// Bumped when a client waits for a slot: idle connections close.
    pressure: watch::Receiver<u64>,
    header_timeout: Duration,
    idle_timeout: Duration,
    /// Dropped by each connection task when it ends: `serve` waits for all.
    alive: mpsc::Sender<()>,
}

/// Serves until `shutdown` resolves, then stops as [`Shutdown`] says: closes
/// the listeners, closes idle and half-read connections, lets requests in
/// flight finish (up to the drain timeout) and returns.
pub async fn serve(
    gateway: Arc<Gateway>,
    (api, admin): (TcpListener, TcpListener),
    listen: &Listen,
    shutdown: impl Future<Output = Shutdown>,
) -> io::Result<()> {
    let tls = match &listen.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
        None => None,
    };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // Header and idle timeouts are the driver's (hyper's own header timer
    // would also cut idle keep-alive connections at the header timeout).
    builder.http1().header_read_timeout(None);
    let (phase_tx, phase) = watch::channel(Phase::Serving);
    let (pressure_tx, pressure) = watch::channel(0u64);
    let (alive, mut all_done) = mpsc::channel::<()>(1);
    let shared = Shared {
        gateway: gateway.clone(),
        builder,
        phase,
        pressure,
        header_timeout: listen.header_timeout,
        idle_timeout: listen.idle_timeout,
        alive,
    };
    let housekeeping = {
        let gateway = gateway.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                gateway.housekeeping();
            }
        })
    };
    let slots = Arc::new(Semaphore::new(listen.max_clients.max(1)));
    let api_loop = tokio::spawn(accept_loop(
        api,
        Kind::Api { tls, slots },
        shared.clone(),
        pressure_tx,
    ));
    let admin_loop = tokio::spawn(accept_loop(
        admin,
        Kind::Admin,
        shared.clone(),
        watch::channel(0).0,
    ));
    drop(shared);

    let how = shutdown.await;
    gateway.stop();
    if how == Shutdown::Graceful && !listen.shutdown_delay.is_zero() {
        tracing::info!(
            delay_ms = listen.shutdown_delay.as_millis() as u64,
            "stopping: /readyz answers 503; still serving until the delay is over"
        );
        tokio::time::sleep(listen.shutdown_delay).await;
    }
    api_loop.abort();
    admin_loop.abort();
    // The listeners close with their tasks; wait for that, so no new
    // connection is accepted while draining.
    let _ = api_loop.await;
    let _ = admin_loop.await;
    housekeeping.abort();
    let _ = phase_tx.send(Phase::Draining);
    if tokio::time::timeout(listen.drain_timeout, all_done.recv())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within the drain timeout");
    }
    Ok(())
}

enum Kind {
    Api {
        tls: Option<tokio_rustls::TlsAcceptor>,
        slots: Arc<Semaphore>,
    },
    Admin,
}

/// Accepts until aborted. The API waits for a free client slot before each
/// accept; errors that mean the process is out of file descriptors (or
/// memory) back off instead of spinning.
async fn accept_loop(
    listener: TcpListener,
    kind: Kind,
    shared: Shared,
    pressure: watch::Sender<u64>,
) {
    let mut backoff = Backoff::default();
    loop {
        let permit = match &kind {
            Kind::Api { slots, .. } => Some(match slots.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    // Full: ask idle keep-alive connections to make room.
                    pressure.send_modify(|n| *n += 1);
                    match slots.clone().acquire_owned().await {
                        Ok(p) => p,
                        Err(_) => return,
                    }
                }
            }),
            Kind::Admin => None,
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => {
                backoff.reset();
                accepted
            }
            Err(e) => {
                if let Some(wait) = backoff.after(&e) {
                    tokio::time::sleep(wait).await;
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        match &kind {
            Kind::Api { tls, .. } => {
                let tls = tls.clone();
                tokio::spawn(api_connection(stream, peer, tls, shared, permit));
            }
            Kind::Admin => {
                tokio::spawn(admin_connection(stream, shared));
            }
        }
    }
}

/// Waits between accept attempts after errors: none for a connection that
/// failed on its own (ECONNABORTED and the like), growing from 10 ms to 1 s
/// while the process is out of descriptors or memory (EMFILE, ENFILE,
/// ENOBUFS, ENOMEM), logged once per episode.
#[derive(Default)]
struct Backoff {
    current: Option<Duration>,
}

impl Backoff {
    fn reset(&mut self) {
        if self.current.take().is_some() {
            tracing::info!("accepting connections again");
        }
    }

    fn after(&mut self, e: &io::Error) -> Option<Duration> {
        const EMFILE: i32 = 24;
        const ENFILE: i32 = 23;
        const ENOBUFS: i32 = 105;
        const ENOMEM: i32 = 12;
        if !matches!(e.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS | ENOMEM)) {
            tracing::debug!(error = %e, "accept failed");
            return None;
        }
        let next = match self.current {
            None => {
                tracing::warn!(error = %e, "cannot accept connections (raise the file descriptor limit, or lower --max-clients); backing off");
                Duration::from_millis(10)
            }
            Some(d) => (d * 2).min(Duration::from_secs(1)),
        };
        self.current = Some(next);
        Some(next)
    }
}

/// Which of the gateway's handlers a connection's requests go to.
#[derive(Clone, Copy)]
enum Handler {
    Api(IpAddr),
    Admin,
}

/// The hyper service of one connection: `handler`, each request marked in
/// flight on `tracker` until answered.
fn service(
    gateway: Arc<Gateway>,
    tracker: Tracker,
    handler: Handler,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = hyper::Response<http_body_util::Full<bytes::Bytes>>,
    Error = Infallible,
    Future = impl Future<
        Output = Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, Infallible>,
    > + Send,
> + Send
       + 'static {
    hyper::service::service_fn(move |req| {
        let gw = gateway.clone();
        let busy = tracker.start();
        async move {
            let response = match handler {
                Handler::Api(peer) => gw.handle(req, peer).await,
                Handler::Admin => gw.handle_admin(req).await,
            };
            drop(busy);
            Ok::<_, Infallible>(response)
        }
    })
}

async fn api_connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Shared,
    permit: Option<OwnedSemaphorePermit>,
) {
    let _permit = permit;
    let tracker = Tracker::new();
    let svc = service(
        shared.gateway.clone(),
        tracker.clone(),
        Handler::Api(peer.ip()),
    );
    match tls {
        Some(acceptor) => {
            let handshake =
                tokio::time::timeout(shared.header_timeout, acceptor.accept(stream)).await;
            match handshake {
                Ok(Ok(s)) => drive(Watched::new(s, tracker.clone()), svc, tracker, &shared).await,
                Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
        None => drive(Watched::new(stream, tracker.clone()), svc, tracker, &shared).await,
    }
}

async fn admin_connection(stream: TcpStream, shared: Shared) {
    let tracker = Tracker::new();
    let svc = service(shared.gateway.clone(), tracker.clone(), Handler::Admin);
    drive(Watched::new(stream, tracker.clone()), svc, tracker, &shared).await;
}

/// Serves one connection until it ends or [`Tracker::close_at`] says to
/// close it.
async fn drive<S, Svc>(io: Watched<S>, svc: Svc, tracker: Tracker, shared: &Shared)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Svc: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<http_body_util::Full<bytes::Bytes>>,
            Error = Infallible,
        > + Send
        + 'static,
    Svc::Future: Send + 'static,
{
    let _alive = shared.alive.clone();
    let conn = shared
        .builder
        .serve_connection(TokioIo::new(io), svc)
        .into_owned();
    tokio::pin!(conn);
    let mut phase = shared.phase.clone();
    let mut pressure = shared.pressure.clone();
    pressure.mark_unchanged();
    let mut draining = *phase.borrow() == Phase::Draining;
    let mut asked_to_finish = false;
    loop {
        if draining && !asked_to_finish {
            // Keep-alive off: a connection answering a request closes after it.
            conn.as_mut().graceful_shutdown();
            asked_to_finish = true;
        }
        let closable = tracker.closable_at();
        if draining && closable.is_some_and(|at| at <= Instant::now()) {
            return;
        }
        let mut wake = tracker.close_at(shared.header_timeout, shared.idle_timeout);
        if draining {
            wake = wake.into_iter().chain(closable).min();
        }
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = sleep => {
                if tracker.close_at(shared.header_timeout, shared.idle_timeout).is_some_and(|at| at <= Instant::now()) {
                    return;
                }
            }
            () = tracker.changed() => {}
            Ok(()) = phase.changed() => draining = *phase.borrow() == Phase::Draining,
            Ok(()) = pressure.changed() => {
                if tracker.closable_at().is_some_and(|at| at <= Instant::now()) {
                    tracing::debug!("closing an idle connection to make room for a new client");
                    return;
                }
            }
        }
    }
}

/// What a connection is doing, as far as closing it safely is concerned.
#[derive(Clone)]
struct Tracker(Arc<TrackerInner>);

struct TrackerInner {
    state: Mutex<State>,
    changed: Notify,
}

struct State {
    /// Requests handed to the service and not answered yet.
    in_flight: usize,
    /// Since when the socket has taken no write: a response is still going
    /// out to a client that does not read it.
    write_blocked_since: Option<Instant>,
    /// When the first byte of a request not yet handed over arrived.
    request_since: Option<Instant>,
    /// When the connection was accepted or last finished a request.
    idle_since: Instant,
    /// Requests answered so far.
    answered: u64,
    /// The client speaks HTTP/2: its first bytes were the whole preface.
    /// Its responses are written by the connection's task after the
    /// answering task is done, so an idle one is closed only
    /// [`H2_FLUSH_GRACE`] after its last answer.
    h2: bool,
    /// Bytes of the HTTP/2 preface seen so far; None once they differed.
    preface: Option<usize>,
}

/// The HTTP/2 connection preface (RFC 9113, 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long an idle HTTP/2 connection is left to write its last answers
/// before a shutdown or the client cap closes it.
const H2_FLUSH_GRACE: Duration = Duration::from_secs(1);

/// Marks a request in flight until dropped.
struct Busy(Tracker);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.update(|s| {
            s.in_flight -= 1;
            s.answered += 1;
            if s.in_flight == 0 {
                s.idle_since = Instant::now();
            }
            true
        });
    }
}

impl Tracker {
    fn new() -> Tracker {
        Tracker(Arc::new(TrackerInner {
            state: Mutex::new(State {
                in_flight: 0,
                write_blocked_since: None,
                request_since: None,
                idle_since: Instant::now(),
                answered: 0,
                h2: false,
                preface: Some(0),
            }),
            changed: Notify::new(),
        }))
    }

    /// Applies `f`; wakes the driver if it says something changed.
    fn update(&self, f: impl FnOnce(&mut State) -> bool) {
        let changed = f(&mut self.0.state.lock().unwrap_or_else(|e| e.into_inner()));
        if changed {
            self.0.changed.notify_one();
        }
    }

    fn start(&self) -> Busy {
        self.update(|s| {
            s.in_flight += 1;
            s.request_since = None;
            true
        });
        Busy(self.clone())
    }

    fn read(&self, bytes: &[u8]) {
        self.update(|s| {
            if let Some(seen) = s.preface {
                let n = bytes.len().min(H2_PREFACE.len() - seen);
                s.preface = (bytes[..n] == H2_PREFACE[seen..seen + n]).then_some(seen + n);
                if s.preface == Some(H2_PREFACE.len()) {
                    s.h2 = true;
                    s.preface = None;
                }
            }
            let first = s.in_flight == 0 && s.request_since.is_none();
            if first {
                s.request_since = Some(Instant::now());
            }
            first
        });
    }

    fn write_blocked(&self, blocked: bool) {
        self.update(|s| {
            let was = s.write_blocked_since.is_some();
            if blocked && !was {
                s.write_blocked_since = Some(Instant::now());
            } else if !blocked {
                s.write_blocked_since = None;
            }
            was != blocked
        });
    }

    #[cfg(test)]
    fn is_h2(&self) -> bool {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner()).h2
    }

    async fn changed(&self) {
        self.0.changed.notified().await;
    }

    /// When the connection is to be closed, None while a request is in
    /// flight: a write that made no progress for `idle` (a client that does
    /// not read); a new connection's first request, or a request begun and
    /// not complete, after `header`; an idle one between requests after
    /// `idle`.
    fn close_at(&self, header: Duration, idle: Duration) -> Option<Instant> {
        let s = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(since) = s.write_blocked_since {
            return Some(since + idle);
        }
        if s.in_flight > 0 {
            return None;
        }
        Some(match s.request_since {
            // HTTP/2 frames between requests (PING, SETTINGS) are not requests.
            Some(since) if !s.h2 => since + header,
            _ if s.answered == 0 => s.idle_since + header,
            _ => s.idle_since + idle,
        })
    }

    /// From when the connection may be closed without cutting an answer
    /// (a shutdown, the client cap): None while a request is in flight or
    /// a write is blocked.
    fn closable_at(&self) -> Option<Instant> {
        let s = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.in_flight > 0 || s.write_blocked_since.is_some() {
            return None;
        }
        Some(if s.h2 {
            s.idle_since + H2_FLUSH_GRACE
        } else {
            s.idle_since
        })
    }
}

/// A client socket that reports reads and blocked writes to its [`Tracker`].
struct Watched<S> {
    inner: S,
    tracker: Tracker,
}

impl<S> Watched<S> {
    fn new(inner: S, tracker: Tracker) -> Watched<S> {
        Watched { inner, tracker }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.tracker.read(&buf.filled()[before..]);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> Watched<S> {
    fn watch<T>(&self, result: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        self.tracker.write_blocked(result.is_pending());
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_descriptors_backs_off_and_other_errors_do_not() {
        let mut b = Backoff::default();
        let emfile = io::Error::from_raw_os_error(24);
        let aborted = io::Error::from_raw_os_error(103);
        assert_eq!(b.after(&aborted), None);
        let waits: Vec<_> = (0..9).map(|_| b.after(&emfile).unwrap()).collect();
        assert_eq!(waits[0], Duration::from_millis(10));
        assert_eq!(waits[1], Duration::from_millis(20));
        assert_eq!(waits[8], Duration::from_secs(1), "capped: {waits:?}");
        b.reset();
        assert_eq!(b.after(&emfile), Some(Duration::from_millis(10)));
    }

    #[test]
    fn close_deadlines_follow_the_connection_state() {
        let header = Duration::from_secs(10);
        let idle = Duration::from_secs(60);
        let t = Tracker::new();
        let accepted = t.0.state.lock().unwrap().idle_since;
        // New connection: the first request must come within the header time.
        assert_eq!(t.close_at(header, idle), Some(accepted + header));
        // A request in flight: never closed.
        let busy = t.start();
        assert_eq!(t.close_at(header, idle), None);
        drop(busy);
        let done = t.0.state.lock().unwrap().idle_since;
        // Between requests: the idle time.
        assert_eq!(t.close_at(header, idle), Some(done + idle));
        // Part of the next request arrived: the header time from then.
        t.read(b"GET / HT");
        assert!(!t.is_h2());
        let since = t.0.state.lock().unwrap().request_since.unwrap();
        assert_eq!(t.close_at(header, idle), Some(since + header));
        // A response the socket has not taken yet: closed only when it
        // makes no progress for the idle time; never closable at once.
        t.write_blocked(true);
        let blocked = t.0.state.lock().unwrap().write_blocked_since.unwrap();
        assert_eq!(t.close_at(header, idle), Some(blocked + idle));
        assert_eq!(t.closable_at(), None);
        t.write_blocked(false);
        assert!(t.closable_at().is_some());
    }

    #[test]
    fn http2_is_told_by_its_whole_preface_only() {
        let t = Tracker::new();
        t.read(b"PRI * HT");
        assert!(!t.is_h2(), "a part of the preface is not HTTP/2 yet");
        t.read(b"TP/2.0\r\n\r\nSM\r\n\r\n");
        assert!(t.is_h2());
        for start in [&b"P"[..], b"PRI / HTTP/1.1\r\n"] {
            let t = Tracker::new();
            t.read(start);
            assert!(!t.is_h2());
            // A client that sent one byte still has the header time only.
            let s = t.0.state.lock().unwrap();
            let since = s.request_since.unwrap();
            drop(s);
            assert_eq!(
                t.close_at(Duration::from_secs(10), Duration::from_secs(60)),
                Some(since + Duration::from_secs(10))
            );
        }
        // An idle HTTP/2 connection is closable only after the grace.
        let t = Tracker::new();
        t.read(H2_PREFACE);
        let idle = t.0.state.lock().unwrap().idle_since;
        assert_eq!(t.closable_at(), Some(idle + H2_FLUSH_GRACE));
    }
}
