//! `tenantry servers`: what each server of a fleet holds and has room for,
//! read-only, every server at once, one connection and two queries each.
//!
//! A server that cannot be reached (or read) is reported as such with the
//! reason; the others are still read. Nothing here writes, locks or plans.
//!
//! What does not live here: placing tenants (`tenantry_plan::placement`),
//! rendering the report (the binary).

use std::time::Duration;

use futures_util::future::join_all;
use serde::Serialize;
use tenantry_layout::marker::{Kind, Marker};
use tenantry_manifest::{Inventory, Server, ServerStatus};

use crate::connect::Admin;
use crate::error::Error;

/// One server's line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Survey {
    pub name: String,
    /// "active" or "draining".
    pub status: &'static str,
    pub max_tenants: Option<u32>,
    /// What was read, or why nothing could be.
    #[serde(flatten)]
    pub state: State,
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum State {
    Read(Reading),
    Unreachable { unreachable: String },
}

/// What one server's catalog says.
#[derive(Debug, Clone, Serialize)]
pub struct Reading {
    /// `server_version`.
    pub version: String,
    /// This fleet's tenant databases on it.
    pub tenants: usize,
    /// Every other database but the templates (`postgres` included).
    pub other_databases: usize,
    /// Total size of the tenant databases, in bytes; None when the admin
    /// may not read a database's size (neither CONNECT on it nor
    /// `pg_read_all_stats`).
    pub tenant_bytes: Option<i64>,
    /// Client connections open now (this one included).
    pub connections: i64,
    pub max_connections: i64,
}

impl Survey {
    /// Tenants placement may still put here: None without a limit, 0 when
    /// draining or unreadable.
    pub fn free(&self) -> Option<u64> {
        let State::Read(r) = &self.state else {
            return Some(0);
        };
        if self.status == "draining" {
            return Some(0);
        }
        self.max_tenants
            .map(|max| u64::from(max).saturating_sub(r.tenants as u64))
    }

    pub fn reachable(&self) -> bool {
        matches!(self.state, State::Read(_))
    }
}

/// Reads every server of `inventory` at once, each within `timeout`.
pub async fn survey(inventory: &Inventory, timeout: Duration) -> Vec<Survey> {
    let reads = inventory.servers.values().map(|server| async move {
        let state = match tokio::time::timeout(timeout, read(server, &inventory.fleet)).await {
            Ok(Ok(reading)) => State::Read(reading),
            Ok(Err(e)) => State::Unreachable {
                unreachable: e.to_string(),
            },
            Err(_) => State::Unreachable {
                unreachable: format!("no answer within {}s", timeout.as_secs()),
            },
        };
        Survey {
            name: server.name.clone(),
            status: match server.status {
                ServerStatus::Active => "active",
                ServerStatus::Draining => "draining",
            },
            max_tenants: server.max_tenants,
            state,
        }
    });
    join_all(reads).await
}

const SETTINGS: &str = "SELECT current_setting('server_version'), \
     current_setting('max_connections')::bigint, \
     (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')";

/// Every database but the templates, its marker (if any) and its size when
/// the admin may read it.
const DATABASES: &str = "SELECT datname::text, shobj_description(oid, 'pg_database'), \
     CASE WHEN has_database_privilege(oid, 'CONNECT') \
            OR pg_has_role('pg_read_all_stats', 'MEMBER') \
          THEN pg_database_size(oid) END \
     FROM pg_database WHERE NOT datistemplate";

async fn read(server: &Server, fleet: &str) -> Result<Reading, Error> {
    let mut admin = Admin::from_url(server.admin_url.as_ref())?;
    admin.set_application_name(&format!("tenantry servers {fleet}"));
    let client = admin.connect(None).await?;
    let row = client
        .query_one(SETTINGS, &[])
        .await
        .map_err(|e| Error::sql("reading the server's settings", e))?;
    let rows = client
        .query(DATABASES, &[])
        .await
        .map_err(|e| Error::sql("listing databases", e))?;
    let mut tenants = 0;
    let mut tenant_bytes = Some(0i64);
    for r in &rows {
        let name: String = r.get(0);
        let ours = r
            .get::<_, Option<String>>(1)
            .and_then(|c| Marker::parse(&c))
            .is_some_and(|m| m.fleet == fleet && m.kind == Kind::Database && m.tenant == name);
        if ours {
            tenants += 1;
            let size: Option<i64> = r.get(2);
            tenant_bytes = tenant_bytes.zip(size).map(|(a, b)| a + b);
        }
    }
    Ok(Reading {
        version: row.get(0),
        max_connections: row.get(1),
        connections: row.get(2),
        tenants,
        other_databases: rows.len() - tenants,
        tenant_bytes,
    })
}
