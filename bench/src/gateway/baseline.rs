//! The fair baseline: a hyper 1 server inside this process with ONE
//! deadpool-postgres pool, running the gateway's very query with no routing
//! or auth, measured with the same `wrk` settings.

use std::convert::Infallible;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tenantry_localpg::Cluster;

use super::*;

pub(super) struct BaselineRun {
    pub(super) wrk: Wrk,
    pub(super) cpu: Duration,
    pub(super) pg: PgSide,
}

impl BaselineRun {
    pub(super) fn cpu_us_per_request(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / (self.wrk.requests.max(1) as f64)
    }
}

/// Serves the baseline in this process on its own runtime while wrk runs.
pub(super) fn baseline_run(
    cluster: &Cluster,
    url: &str,
    targets: &[Target],
    script: &Path,
    load: &Load<'_>,
) -> Result<BaselineRun> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let config: tokio_postgres::Config = url.parse()?;
    let manager = Manager::from_config(
        config,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(BASELINE_POOL_SIZE)
        .build()
        .context("cannot build the baseline pool")?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?.to_string();
    let server = runtime.spawn(serve_baseline(listener, pool));
    check_widget(&addr, &[&targets[0]])?;
    let mut cpu_before = Duration::ZERO;
    let mut pg_before = PgSide::default();
    let wrk = load.measure(&addr, script, || {
        pg_before = PgSide::before(&[cluster]);
        cpu_before = cpu_time("self").unwrap_or_default();
    })?;
    let cpu = cpu_time("self")?.saturating_sub(cpu_before);
    let pg = PgSide::since(&[cluster], pg_before);
    server.abort();
    runtime.shutdown_timeout(Duration::from_secs(5));
    Ok(BaselineRun { wrk, cpu, pg })
}

pub(super) async fn serve_baseline(listener: tokio::net::TcpListener, pool: Pool) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let pool = pool.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let pool = pool.clone();
                async move { Ok::<_, Infallible>(baseline_handle(&pool, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

pub(super) async fn baseline_handle(pool: &Pool, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let id = req
        .uri()
        .path()
        .strip_prefix("/api/widgets/")
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|&id| id > 0);
    let Some(id) = id else {
        return json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "not_found"}),
        );
    };
    match widget(pool, id).await {
        Ok(Some(w)) => json(StatusCode::OK, &w),
        Ok(None) => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "not_found"}),
        ),
        Err(e) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &serde_json::json!({"error": e.to_string()}),
        ),
    }
}

pub(super) async fn widget(
    pool: &Pool,
    id: i64,
) -> Result<Option<serde_json::Value>, Box<dyn std::error::Error + Send + Sync>> {
    let client = pool.get().await?;
    let stmt = client.prepare_cached(GET_WIDGET).await?;
    let Some(row) = client.query_opt(&stmt, &[&id]).await? else {
        return Ok(None);
    };
    Ok(Some(serde_json::json!({
        "id": row.try_get::<_, i64>("id")?,
        "name": row.try_get::<_, String>("name")?,
        "description": row.try_get::<_, String>("description")?,
        "inventory_level": row.try_get::<_, i32>("inventory_level")?,
        "price": row.try_get::<_, i64>("price")?,
        "created_at": row.try_get::<_, String>("created_at")?,
        "updated_at": row.try_get::<_, String>("updated_at")?,
    })))
}

pub(super) fn json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}
