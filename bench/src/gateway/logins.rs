//! What a new connection costs the gateway: `n` logins one after the other
//! of a role whose stored SCRAM verifier has `iterations` rounds, with the
//! client's CPU (this process: SCRAM's PBKDF2 runs on the client) and the
//! server's (backend start and authentication). The gateway's own login
//! uses `GATEWAY_SCRAM_ITERATIONS`; passwords people choose keep 4096.

use std::time::Instant;

use anyhow::{Context as _, Result};
use tenantry_localpg::Cluster;

use super::serve::{cpu_time, PgSide};

#[derive(Debug, Clone)]
pub(super) struct LoginCost {
    pub(super) iterations: u32,
    pub(super) per_second: f64,
    pub(super) client_cpu_us: f64,
    pub(super) server_cpu_us: f64,
}

impl LoginCost {
    pub(super) fn line(&self) -> String {
        format!(
            "{} rounds: {:.0} logins/s one after the other, client CPU {:.0} µs and server CPU {:.0} µs a login",
            self.iterations, self.per_second, self.client_cpu_us, self.server_cpu_us
        )
    }
}

pub(super) fn login_cost(cluster: &Cluster, iterations: u32, n: usize) -> Result<LoginCost> {
    let role = format!("bench_login_{iterations}");
    let password = "a-generated-looking-password-0123456789";
    let verifier = tenantry_plan::scram::verifier_iterations(password, iterations);
    cluster.psql(
        "postgres",
        &format!("DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN PASSWORD '{verifier}';"),
    )?;
    let url = cluster.user_url(&role, password, "postgres");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let me = std::process::id().to_string();
    let pg_before = PgSide::before(&[cluster]);
    let cpu_before = cpu_time(&me)?;
    let start = Instant::now();
    runtime.block_on(async {
        for _ in 0..n {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .context("a bench login failed")?;
            let driver = tokio::spawn(conn);
            drop(client);
            let _ = driver.await;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let wall = start.elapsed();
    let cpu = cpu_time(&me)?.saturating_sub(cpu_before);
    let pg = PgSide::since(&[cluster], pg_before);
    cluster.psql("postgres", &format!("DROP ROLE {role}"))?;
    Ok(LoginCost {
        iterations,
        per_second: n as f64 / wall.as_secs_f64().max(1e-9),
        client_cpu_us: cpu.as_micros() as f64 / n as f64,
        server_cpu_us: pg.cpu_us_per(n as u64),
    })
}
