//! The throwaway clusters every benchmark runs on: the installed
//! PostgreSQL, or the major `--pg-bin` names for the current pass (one pass
//! per `--pg-bin`, so numbers on several majors come from one run).
//!
//! What does not live here: starting and stopping clusters
//! (`tenantry_localpg`).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context as _, Result};
use tenantry_localpg::Cluster;

/// The server programs of the current pass; None: the installed ones.
static PG_BIN: Mutex<Option<PathBuf>> = Mutex::new(None);

/// `--pg-bin` as given: a directory holding `initdb` and `pg_ctl`, or a
/// major version (`17`: Debian's, or fetched by `scripts/fetch-postgres`).
pub fn resolve(arg: &str) -> Result<PathBuf> {
    if let Ok(major) = arg.parse::<u32>() {
        return tenantry_localpg::bin_dir_of_major(major)
            .with_context(|| format!("--pg-bin {arg}"));
    }
    let dir = Path::new(arg);
    if !dir.join("initdb").is_file() || !dir.join("pg_ctl").is_file() {
        bail!("--pg-bin {arg}: neither a major version such as 17 nor a directory holding initdb and pg_ctl");
    }
    Ok(dir.to_path_buf())
}

/// Makes the clusters started from now on run the programs of `dir`.
pub fn use_bin(dir: Option<PathBuf>) {
    *PG_BIN.lock().unwrap_or_else(|e| e.into_inner()) = dir;
}

/// A throwaway cluster of the current pass's PostgreSQL.
pub fn start() -> Result<Cluster> {
    let bin = PG_BIN.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match bin {
        Some(dir) => Cluster::start_temp_from(&dir, &[]),
        None => Cluster::start_temp(),
    }
    .context("cannot start a throwaway cluster")
}

/// [`start`] with server settings on top of the usual ones.
pub fn start_with(settings: &[(&str, &str)]) -> Result<Cluster> {
    let bin = PG_BIN.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let bin = match bin {
        Some(dir) => dir,
        None => tenantry_localpg::find_bin_dir().context("cannot find PostgreSQL")?,
    };
    Cluster::start_temp_from(&bin, settings).context("cannot start a throwaway cluster")
}

/// The directory of the `psql` the baselines run against `cluster` (a
/// fetched server comes without one: the installed client's then).
pub fn psql_dir(cluster: &Cluster) -> PathBuf {
    cluster
        .tool("psql")
        .parent()
        .map_or_else(|| cluster.bin_dir().to_path_buf(), Path::to_path_buf)
}
