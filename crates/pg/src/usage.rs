//! `tenantry usage`'s reading of the fleet: each tenant's database size and
//! sessions (one query per server, on its admin database) and the requests
//! the gateways counted today (`tenantry.usage`, in the tenant's database,
//! a few tenants at a time).
//!
//! What does not live here: the quotas (the plans, in the manifest), the
//! table's SQL (`tenantry_layout::usage`), printing (the binary).

use std::collections::BTreeMap;

use futures_util::{stream, StreamExt};
use tenantry_layout::{quote, Group};
use tenantry_manifest::Inventory;

use crate::sessions::locate;
use crate::Error;

/// What was read of one tenant.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TenantUsage {
    pub tenant: String,
    /// Where its database is in use (None: not created, or not known).
    pub server: Option<String>,
    pub storage_bytes: Option<u64>,
    /// Sessions open on its database now.
    pub connections: Option<u64>,
    pub requests_today: Option<u64>,
    /// RFC 3339, UTC.
    pub last_request_at: Option<String>,
    /// Why something could not be read.
    pub problem: Option<String>,
}

/// Every tenant of the file, in its order.
pub async fn read(inventory: &Inventory, jobs: usize) -> Result<Vec<TenantUsage>, Error> {
    let located = locate(inventory, None).await?;
    let mut found: BTreeMap<String, TenantUsage> = inventory
        .tenants
        .iter()
        .map(|t| {
            let name = t.name.to_string();
            let server = located.in_use_on(&name).map(str::to_owned);
            (
                name.clone(),
                TenantUsage {
                    tenant: name,
                    server,
                    ..TenantUsage::default()
                },
            )
        })
        .collect();
    for r in &located.reached {
        let names: Vec<String> = found
            .values()
            .filter(|u| u.server.as_deref() == Some(&r.name) && r.marked.contains(&u.tenant))
            .map(|u| u.tenant.clone())
            .collect();
        if names.is_empty() {
            continue;
        }
        let rows = r
            .client
            .query(
                "SELECT d.datname::text, pg_database_size(d.oid), \
                   (SELECT count(*) FROM pg_stat_activity a WHERE a.datid = d.oid) \
                 FROM pg_database d WHERE d.datname = ANY($1)",
                &[&names],
            )
            .await
            .map_err(|e| Error::sql(format!("server {}: measuring databases", r.name), e))?;
        for row in rows {
            let name: String = row.get(0);
            if let Some(u) = found.get_mut(&name) {
                u.storage_bytes = Some(row.get::<_, i64>(1).max(0) as u64);
                u.connections = Some(row.get::<_, i64>(2).max(0) as u64);
            }
        }
    }
    for (server, e) in &located.unreachable {
        for u in found.values_mut() {
            if u.server.is_none() || u.server.as_deref() == Some(server) {
                u.problem
                    .get_or_insert_with(|| format!("server {server}: {e}"));
            }
        }
    }
    let counted = stream::iter(
        found
            .values()
            .filter(|u| u.storage_bytes.is_some())
            .map(|u| {
                let admin = located
                    .server_of(&u.tenant)
                    .map(|r| r.admin.clone())
                    .expect("a measured tenant's server was reached");
                let name = u.tenant.clone();
                async move {
                    let read = async {
                        let client = admin.connect(Some(&name)).await?;
                        let owner = tenantry_layout::roles::group_role_name(&name, Group::Owner);
                        let ctx = format!("tenant {name}: reading its usage");
                        client
                            .batch_execute(&format!("SET ROLE {}", quote(&owner)))
                            .await
                            .map_err(|e| Error::sql(&ctx, e))?;
                        let row = client
                            .query_one(tenantry_layout::usage::TODAY, &[])
                            .await
                            .map_err(|e| Error::sql(&ctx, e))?;
                        Ok::<_, Error>((
                            row.get::<_, i64>(0).max(0) as u64,
                            row.get::<_, Option<String>>(1),
                        ))
                    };
                    let read = read.await;
                    (name, read)
                }
            }),
    )
    .buffer_unordered(jobs.max(1))
    .collect::<Vec<_>>()
    .await;
    for (name, read) in counted {
        let u = found.get_mut(&name).expect("read for a tenant of the file");
        match read {
            Ok((requests, last)) => {
                u.requests_today = Some(requests);
                u.last_request_at = last;
            }
            Err(e) if crate::audit::is_missing_trail(&e) => {
                u.problem = Some("no tenantry.usage table yet: run `tenantry apply`".to_owned());
            }
            Err(e) => u.problem = Some(e.to_string()),
        }
    }
    Ok(inventory
        .tenants
        .iter()
        .filter_map(|t| found.remove(t.name.as_str()))
        .collect())
}
