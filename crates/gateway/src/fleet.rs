//! What the console and `/api/fleet` show of the fleet: one [`Fleet`] value,
//! built from the snapshot in force, the pools, the usage counters and the
//! per-minute request history, serialized as `/api/fleet`'s JSON and
//! rendered as the console's HTML (`console`).
//!
//! What does not live here: measuring storage and counting requests
//! (`usage`), the HTML itself (`console`), the admin routes (`server`).

use std::collections::HashMap;
use std::time::SystemTime;

use serde::Serialize;

use crate::recent::{Hour, MINUTES};
use crate::server::Gateway;
use crate::snapshot::TenantEntry;
use crate::usage;

/// The whole fleet as the gateway sees it now.
#[derive(Debug, Clone, Serialize)]
pub struct Fleet {
    /// When this view was taken (RFC 3339, UTC).
    pub generated_at: String,
    /// Minutes covered by each tenant's `requests_per_minute` (the last hour).
    pub minutes: usize,
    pub servers: Vec<ServerView>,
    /// By name.
    pub tenants: Vec<TenantView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerView {
    pub name: String,
    /// `up` or `down`.
    pub state: &'static str,
    pub down_reason: Option<String>,
    pub tenants: usize,
    pub connections_open: usize,
    pub connections_in_use: usize,
    pub connections_budget: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct TenantView {
    pub name: String,
    pub display_name: String,
    pub server: String,
    pub plan: String,
    /// `active`, `suspended`, `moving` or `unavailable` (no login the
    /// gateway can use).
    pub status: &'static str,
    /// The newest migration applied, when the gateway has read it.
    pub schema_version: Option<i64>,
    pub storage: Quota,
    /// Requests through the gateway today (UTC), against the plan's
    /// `requests_per_day`.
    pub requests_today: Quota,
    /// Requests per minute, oldest first, the last one the current minute;
    /// `minutes` values.
    pub requests_per_minute: Vec<u64>,
    /// Share of the last hour's requests answered 5xx (0 without requests).
    pub error_rate: f64,
    /// The last hour's 99th percentile latency, in milliseconds (upper
    /// bound of its histogram bucket); None without requests.
    pub p99_ms: Option<f64>,
    pub connections: Connections,
    /// RFC 3339, UTC; None when no request was seen (by any replica, once
    /// flushed).
    pub last_request_at: Option<String>,
    /// Quotas at or past 80%, in words ("storage at 96% of 1 GiB").
    pub warnings: Vec<Warning>,
}

/// A figure against its limit.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Quota {
    /// None: not measured yet.
    pub used: Option<u64>,
    /// None: the plan sets no limit.
    pub limit: Option<u64>,
    /// used / limit * 100, when both are known.
    pub percent: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Connections {
    pub in_use: usize,
    pub open: usize,
    /// The tenant's pool size.
    pub limit: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Warning {
    /// `storage` or `requests_per_day`.
    pub quota: &'static str,
    /// 80, 95 or 100.
    pub level: u8,
    pub message: String,
}

impl Quota {
    pub fn new(used: Option<u64>, limit: Option<u64>) -> Quota {
        let percent = match (used, limit) {
            (Some(u), Some(l)) if l > 0 => Some(u as f64 * 100.0 / l as f64),
            _ => None,
        };
        Quota {
            used,
            limit,
            percent,
        }
    }
}

/// One tenant's page: its row, its health check and its newest audit
/// entries (`/api/fleet/tenants/<name>`).
#[derive(Debug, Clone, Serialize)]
pub struct TenantPage {
    pub tenant: TenantView,
    pub health: Health,
    /// Newest first.
    pub audit: Vec<AuditView>,
    /// Why the audit entries could not be read, if they could not.
    pub audit_error: Option<String>,
}

/// The tenant's health check: one round trip on its pool.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub ok: bool,
    pub round_trip_ms: Option<f64>,
    pub error: Option<String>,
}

/// One row of `tenantry.audit`.
#[derive(Debug, Clone, Serialize)]
pub struct AuditView {
    pub id: i64,
    /// RFC 3339, UTC.
    pub at: String,
    /// `created`, `updated`, `suspended`, `api.write`, ...
    pub action: String,
    /// Who: the admin role and the OS user and host for tenantry's
    /// commands, the token's id and role for API writes.
    pub actor: String,
    pub detail: serde_json::Value,
}

/// What every tenant's view is built from, gathered once.
struct Inputs {
    now: SystemTime,
    day: i32,
    /// (tenant, pool role) -> (in use, open).
    pools: HashMap<(String, String), (usize, usize)>,
    counted: HashMap<String, usage::Counted>,
    hours: HashMap<String, Hour>,
}

impl Gateway {
    fn inputs(&self) -> Inputs {
        let now = SystemTime::now();
        let mut pools: HashMap<(String, String), (usize, usize)> = HashMap::new();
        for (_, registry) in self.all_pools() {
            for p in registry.stats().pools {
                let e = pools.entry((p.key.tenant, p.key.role)).or_default();
                e.0 += p.in_use;
                e.1 += p.size;
            }
        }
        Inputs {
            now,
            day: tenantry_layout::usage::day(now),
            pools,
            counted: self.usage.all(),
            hours: self.recent.hours(now),
        }
    }

    /// The fleet as it is now: every tenant of the snapshot in force, by
    /// name, with its numbers.
    pub fn fleet(&self) -> Fleet {
        let snap = self.snapshot();
        let inputs = self.inputs();
        Fleet {
            generated_at: usage::rfc3339(inputs.now),
            minutes: MINUTES,
            servers: self.server_views(),
            tenants: snap
                .all_tenants()
                .iter()
                .map(|t| self.tenant_view(t, &inputs))
                .collect(),
        }
    }

    /// Tenant `name`'s row, if it is served.
    pub fn fleet_tenant(&self, name: &str) -> Option<TenantView> {
        let t = self.snapshot().tenant(name)?;
        Some(self.tenant_view(&t, &self.inputs()))
    }

    fn tenant_view(&self, t: &TenantEntry, inputs: &Inputs) -> TenantView {
        let c = inputs
            .counted
            .get(&t.info.name)
            .cloned()
            .unwrap_or_default();
        let hour = inputs
            .hours
            .get(&t.info.name)
            .cloned()
            .unwrap_or_else(Hour::empty);
        let (in_use, open) = inputs
            .pools
            .get(&(t.info.name.clone(), t.pool_key_role().to_owned()))
            .copied()
            .unwrap_or_default();
        let requests = c.requests_on(inputs.day);
        TenantView {
            name: t.info.name.clone(),
            display_name: t.info.display_name.clone().unwrap_or_default(),
            server: t.server.clone(),
            plan: t.info.plan.clone(),
            status: if t.suspended {
                "suspended"
            } else if t.moving {
                "moving"
            } else if t.pool_login().is_none() {
                "unavailable"
            } else {
                "active"
            },
            schema_version: c.schema_version,
            storage: Quota::new(c.storage, t.quotas.storage_bytes),
            requests_today: Quota::new(
                self.usage.enabled().then_some(requests),
                t.quotas.requests_per_day,
            ),
            requests_per_minute: hour.per_minute,
            error_rate: hour.error_rate,
            p99_ms: hour.p99_ms,
            connections: Connections {
                in_use,
                open,
                limit: t.pool_size,
            },
            last_request_at: c.last_request_at.clone(),
            warnings: usage::warnings(t.quotas, c.storage, requests)
                .into_iter()
                .map(|(quota, level, message)| Warning {
                    quota: quota.as_str(),
                    level,
                    message,
                })
                .collect(),
        }
    }
}
