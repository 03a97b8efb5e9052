//! The gateway half of the several-servers benchmark (`servers`): the same
//! tenants served from three servers and from one, under the same wrk load
//! and the same total connection budget. Widgets and tokens are made here;
//! which server each tenant is on is read from the servers.
//!
//! What does not live here: the apply and plan halves (`crate::servers`).

use std::path::Path;

use anyhow::{bail, Result};
use tenantry_localpg::Cluster;

use super::serve::{gateway_run, GatewayRun};
use super::setup::{create_tokens, insert_widgets};
use super::wrk::{ensure_wrk, lua_script, Load};
use super::Target;

/// One side of the comparison: a tenants.toml and what serving it needs.
pub(crate) struct Side<'a> {
    pub(crate) config: &'a Path,
    /// `--admin-url` (one server), or None (the file names its servers).
    pub(crate) admin_url: Option<&'a str>,
    /// The servers the tenants may be on.
    pub(crate) clusters: &'a [&'a Cluster],
    /// The tenants' database names.
    pub(crate) dbs: &'a [String],
}

/// How wrk loads each side.
pub(crate) struct Settings {
    pub(crate) threads: usize,
    pub(crate) connections: usize,
    pub(crate) duration: std::time::Duration,
    pub(crate) warmup: std::time::Duration,
    /// The gateway's `--max-connections` (the one server's budget; a file
    /// naming servers sets each one's in `gateway_connections`).
    pub(crate) max_connections: usize,
}

/// One widget and one customer token per tenant, then a measured wrk run.
pub(crate) fn serve(
    bin: &Path,
    workdir: &Path,
    side: &Side,
    settings: &Settings,
    label: &str,
) -> Result<GatewayRun> {
    for cluster in side.clusters {
        let here: Vec<String> = side
            .dbs
            .iter()
            .filter(|db| {
                cluster
                    .psql(
                        "postgres",
                        &format!("SELECT 1 FROM pg_database WHERE datname = '{db}'"),
                    )
                    .is_ok_and(|out| out.trim() == "1")
            })
            .cloned()
            .collect();
        insert_widgets(cluster, &here)?;
    }
    let tokens = create_tokens(
        bin,
        side.config,
        side.admin_url,
        workdir,
        side.dbs,
        "customer",
    )?;
    if tokens.len() != side.dbs.len() {
        bail!("{} tokens for {} tenants", tokens.len(), side.dbs.len());
    }
    let targets: Vec<Target> = side
        .dbs
        .iter()
        .zip(tokens)
        .map(|(db, token)| Target {
            host: format!("{db}.localhost"),
            token,
        })
        .collect();
    let script = workdir.join(format!("rotate-{label}.lua"));
    std::fs::write(&script, lua_script(&targets)?)?;
    let wrk = ensure_wrk()?;
    let load = Load {
        wrk: &wrk,
        threads: settings.threads,
        connections: settings.connections,
        duration: settings.duration,
        warmup: settings.warmup,
    };
    gateway_run(
        bin,
        side.config,
        side.admin_url,
        workdir,
        settings.max_connections,
        &targets,
        &script,
        &load,
        side.clusters,
        None,
    )
}
