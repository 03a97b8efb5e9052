//! An open-loop load: requests sent at a fixed rate whatever the answers'
//! speed, each latency counted from when the request was due, not from
//! when it could be sent (no coordinated omission: a stall shows as the
//! latency of every request it delayed). Connection `c` of `C` keep-alive
//! connections sends requests `c, c + C, c + 2C, ...`, request `i` due at
//! `i / rate` seconds, rotating over the targets as wrk's script does.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;

use super::{Target, WIDGET_ID};

/// What an open-loop run measured.
#[derive(Debug, Clone, Default)]
pub(super) struct OpenLoop {
    pub(super) rate: u32,
    pub(super) sent: u64,
    pub(super) non_2xx: u64,
    pub(super) errors: u64,
    pub(super) p50_us: f64,
    pub(super) p99_us: f64,
    pub(super) p999_us: f64,
    pub(super) max_us: f64,
}

impl OpenLoop {
    pub(super) fn line(&self) -> String {
        use super::report::ms;
        format!(
            "{} requests at {} req/s: p50 {}, p99 {}, p99.9 {}, max {}; non-2xx {}, errors {}",
            self.sent,
            self.rate,
            ms(self.p50_us),
            ms(self.p99_us),
            ms(self.p999_us),
            ms(self.max_us),
            self.non_2xx,
            self.errors
        )
    }
}

/// Sends `rate` requests a second for `duration` to `addr` over
/// `connections` connections.
pub(super) fn open_loop(
    addr: &str,
    targets: &[Target],
    rate: u32,
    duration: Duration,
    connections: usize,
) -> Result<OpenLoop> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let total = (rate as f64 * duration.as_secs_f64()) as usize;
    let headers: Vec<(String, String)> = targets
        .iter()
        .map(|t| (t.host.clone(), format!("Bearer {}", t.token)))
        .collect();
    let headers = std::sync::Arc::new(headers);
    runtime.block_on(async move {
        let start = tokio::time::Instant::now() + Duration::from_millis(50);
        let mut tasks = Vec::new();
        for c in 0..connections.max(1) {
            let (addr, headers) = (addr.to_owned(), headers.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let (mut non_2xx, mut errors) = (0u64, 0u64);
                let mut sender = None;
                for i in (c..total).step_by(connections.max(1)) {
                    let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
                    tokio::time::sleep_until(due).await;
                    if sender.is_none() {
                        sender = connect(&addr).await.ok();
                    }
                    let Some(s) = sender.as_mut() else {
                        errors += 1;
                        continue;
                    };
                    let (host, auth) = &headers[i % headers.len()];
                    let req = hyper::Request::get(format!("/api/widgets/{WIDGET_ID}"))
                        .header("host", host)
                        .header("authorization", auth)
                        .body(Empty::<Bytes>::new())
                        .expect("a valid request");
                    match send(s, req).await {
                        Ok(status) => {
                            if !(200..300).contains(&status) {
                                non_2xx += 1;
                            }
                        }
                        Err(_) => {
                            errors += 1;
                            sender = None;
                        }
                    }
                    let late = Instant::now() - due.into_std();
                    latencies.push(late.as_micros() as u64);
                }
                (latencies, non_2xx, errors)
            }));
        }
        let mut all = Vec::with_capacity(total);
        let mut out = OpenLoop {
            rate,
            ..OpenLoop::default()
        };
        for t in tasks {
            let (lat, n, e) = t.await.context("an open-loop connection panicked")?;
            all.extend(lat);
            out.non_2xx += n;
            out.errors += e;
        }
        all.sort_unstable();
        out.sent = all.len() as u64;
        let pct = |p: f64| {
            all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0) as f64
        };
        out.p50_us = pct(0.50);
        out.p99_us = pct(0.99);
        out.p999_us = pct(0.999);
        out.max_us = all.last().copied().unwrap_or(0) as f64;
        Ok(out)
    })
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: &str) -> Result<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn send(s: &mut Sender, req: hyper::Request<Empty<Bytes>>) -> Result<u16> {
    s.ready().await?;
    let resp = s.send_request(req).await?;
    let status = resp.status().as_u16();
    resp.into_body().collect().await?;
    Ok(status)
}
