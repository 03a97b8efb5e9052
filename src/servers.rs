//! `tenantry servers [--json]`: each server of the fleet, read at once
//! (`tenantry_pg::servers`), as a table or JSON. Exits 1 when a server
//! cannot be reached, after reporting every one.

use std::time::Duration;

use anyhow::Result;
use tenantry_manifest::Secrets;
use tenantry_pg::servers::{State, Survey};

use crate::cli::Common;

/// How long one server may take to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

pub async fn servers(common: &Common, json: bool) -> Result<u8> {
    let inventory = crate::commands::load_with(common, Secrets::Deferred)?;
    let report = tenantry_pg::servers::survey(&inventory, TIMEOUT).await;
    let unreachable: Vec<&str> = report
        .iter()
        .filter(|s| !s.reachable())
        .map(|s| s.name.as_str())
        .collect();
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        outln!(
            "{:<16} {:<9} {:<10} {:>8} {:>10} {:>12} {:>13} {:>9}",
            "SERVER",
            "STATUS",
            "VERSION",
            "TENANTS",
            "OTHER DBS",
            "TENANT SIZE",
            "CONNECTIONS",
            "ROOM"
        );
        for s in &report {
            outln!("{}", line(s));
        }
    }
    if unreachable.is_empty() {
        return Ok(0);
    }
    eprintln!(
        "error: {} of {} servers could not be read: {}",
        unreachable.len(),
        report.len(),
        unreachable.join(", ")
    );
    Ok(1)
}

fn line(s: &Survey) -> String {
    let room = match s.free() {
        Some(n) => n.to_string(),
        None => "no limit".to_owned(),
    };
    match &s.state {
        State::Read(r) => format!(
            "{:<16} {:<9} {:<10} {:>8} {:>10} {:>12} {:>13} {:>9}",
            s.name,
            s.status,
            r.version.split_whitespace().next().unwrap_or(""),
            r.tenants,
            r.other_databases,
            r.tenant_bytes.map_or("?".to_owned(), size),
            format!("{}/{}", r.connections, r.max_connections),
            room
        ),
        State::Unreachable { unreachable } => {
            format!("{:<16} {:<9} unreachable: {unreachable}", s.name, s.status)
        }
    }
}

/// Bytes in binary units, one decimal.
fn size(bytes: i64) -> String {
    let mut value = bytes as f64;
    for unit in ["B", "KiB", "MiB", "GiB"] {
        if value < 1024.0 {
            return format!("{value:.1} {unit}");
        }
        value /= 1024.0;
    }
    format!("{value:.1} TiB")
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(super::size(0), "0.0 B");
        assert_eq!(super::size(7_700_000), "7.3 MiB");
        assert_eq!(super::size(3 << 40), "3.0 TiB");
    }
}
