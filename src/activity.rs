//! `tenantry usage` and `tenantry audit`: the fleet's usage against its
//! plans' quotas, and one tenant's audit trail, as tables or JSON. Reading
//! them is `tenantry_pg::usage`'s and `tenantry_pg::audit`'s.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use tenantry_manifest::Inventory;

/// `figure / limit (pct%)`, or the figure alone without a limit.
fn against(used: Option<u64>, limit: Option<u64>, show: &dyn Fn(u64) -> String) -> String {
    match (used, limit) {
        (None, _) => "-".to_owned(),
        (Some(u), None) => show(u),
        (Some(u), Some(l)) => {
            let pct = if l == 0 {
                100.0
            } else {
                u as f64 * 100.0 / l as f64
            };
            format!("{} / {} ({pct:.0}%)", show(u), show(l))
        }
    }
}

pub async fn usage(inventory: &Inventory, jobs: usize, json: bool) -> Result<u8> {
    let read = tenantry_pg::usage::read(inventory, jobs).await?;
    let rows: Vec<serde_json::Value> = inventory
        .tenants
        .iter()
        .zip(&read)
        .map(|(t, u)| {
            let tier = inventory.tier(t);
            serde_json::json!({
                "tenant": u.tenant,
                "plan": t.plan,
                "server": u.server,
                "storage_bytes": u.storage_bytes,
                "storage_quota_bytes": tier.storage_bytes,
                "requests_today": u.requests_today,
                "requests_per_day": tier.requests_per_day,
                "users": t.users.len(),
                "max_users": tier.max_users,
                "connections": u.connections,
                "connection_limit": tier.connection_limit,
                "last_request_at": u.last_request_at,
                "problem": u.problem,
            })
        })
        .collect();
    if json {
        outln!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<12} {:<30} {:<28} {:<10} {:<10} LAST REQUEST",
        "TENANT", "PLAN", "STORAGE", "REQUESTS TODAY", "USERS", "CONNS"
    );
    let bytes = |b: u64| tenantry_gateway::usage::human_bytes(b);
    let count = |n: u64| n.to_string();
    for (t, u) in inventory.tenants.iter().zip(&read) {
        let tier = inventory.tier(t);
        let users = match tier.max_users {
            Some(m) => format!("{}/{m}", t.users.len()),
            None => t.users.len().to_string(),
        };
        let conns = u
            .connections
            .map_or("-".to_owned(), |c| format!("{c}/{}", tier.connection_limit));
        let _ = writeln!(
            out,
            "{:<24} {:<12} {:<30} {:<28} {:<10} {:<10} {}",
            u.tenant,
            t.plan,
            against(u.storage_bytes, tier.storage_bytes, &bytes),
            against(u.requests_today, tier.requests_per_day, &count),
            users,
            conns,
            u.last_request_at.as_deref().unwrap_or("-"),
        );
        if let Some(p) = &u.problem {
            let _ = writeln!(out, "    note: {p}");
        }
    }
    out!("{out}");
    Ok(0)
}

pub async fn audit(
    inventory: &Inventory,
    tenant: &str,
    since: Option<Duration>,
    limit: i64,
    json: bool,
) -> Result<u8> {
    let t = crate::commands::tenant(inventory, tenant)?;
    let server = inventory.only_server()?;
    let admin = tenantry_pg::Admin::from_url(server.admin_url.as_ref())?;
    let since = since.map(|d| SystemTime::now() - d);
    let entries = match tenantry_pg::audit::list(&admin, &t.name, since, limit).await {
        Err(e) if tenantry_pg::audit::is_missing_trail(&e) => anyhow::bail!(
            "tenant {tenant} has no audit trail yet: run `tenantry apply`, which creates it"
        ),
        other => other?,
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(0);
    }
    if entries.is_empty() {
        outln!(
            "No audit entries for {tenant}{}.",
            if since.is_some() { " in that time" } else { "" }
        );
        return Ok(0);
    }
    let mut out = String::new();
    let _ = writeln!(out, "{:<25} {:<17} {:<32} DETAIL", "TIME", "ACTION", "WHO");
    for e in &entries {
        let who = if e.os_user.is_empty() {
            e.actor.clone()
        } else {
            format!("{} ({}@{})", e.actor, e.os_user, e.host)
        };
        let _ = writeln!(
            out,
            "{:<25} {:<17} {:<32} {}",
            e.at, e.action, who, e.detail
        );
    }
    out!("{out}");
    Ok(0)
}
