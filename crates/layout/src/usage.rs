//! The tenant's usage as the gateway counts it, kept in the tenant's own
//! database: table `tenantry.usage`, one row per UTC day (requests through
//! every gateway replica, and when the last one arrived). Replicas add their
//! counts in batches ([`ADD`]), so they sum up, and a restart loses only
//! what it had not flushed.
//!
//! Here: the table's SQL ([`create`]), the statements that write and read
//! it, and who may do what: the gateway's login reads and writes it (never
//! a tenant group), the owner owns it. Storage is not kept here: the gateway
//! measures it on the server (`pg_database_size`). Running the SQL is
//! `tenantry-pg`'s (apply, `tenantry usage`) and the gateway's.

use crate::tokens::SCHEMA;

/// The table, in [`SCHEMA`].
pub const TABLE: &str = "usage";

/// What the gateway's login holds on the table.
pub const GATEWAY_PRIVILEGES: &[&str] = &["INSERT", "SELECT", "UPDATE"];

/// Creates the table when it is missing, and leaves `revoke` (a grantee
/// list, quoted) nothing on it but what [`GATEWAY_PRIVILEGES`] gives
/// `gateway`.
pub fn create(revoke: &str, gateway: Option<&str>) -> Vec<String> {
    let mut sql = vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {SCHEMA}.{TABLE} (
             day date PRIMARY KEY,
             requests bigint NOT NULL DEFAULT 0 CHECK (requests >= 0),
             last_request_at timestamptz)"
        ),
        format!("REVOKE ALL ON {SCHEMA}.{TABLE} FROM {revoke}"),
    ];
    if let Some(gateway) = gateway {
        sql.push(format!(
            "GRANT {} ON {SCHEMA}.{TABLE} TO {gateway}",
            GATEWAY_PRIVILEGES.join(", ")
        ));
    }
    sql
}

/// Adds requests to days: `$1` the days (int[], days since 1970-01-01,
/// UTC; each once), `$2` their requests (bigint[]), `$3` each day's last
/// request (text[], RFC 3339); returns each day written (days since
/// 1970-01-01), its total (every replica's) and its last request (RFC 3339
/// text, UTC).
pub const ADD: &str = "INSERT INTO tenantry.usage AS u (day, requests, last_request_at) \
     SELECT DATE '1970-01-01' + x.day, x.requests, x.at::timestamptz \
     FROM unnest($1::int[], $2::bigint[], $3::text[]) AS x(day, requests, at) \
     ON CONFLICT (day) DO UPDATE SET requests = u.requests + EXCLUDED.requests, \
     last_request_at = greatest(u.last_request_at, EXCLUDED.last_request_at) \
     RETURNING day - DATE '1970-01-01', requests, \
       to_char(last_request_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')";

/// Today's total and the newest request of any day (one row; NULLs when
/// nothing was counted), for `tenantry usage`.
pub const TODAY: &str = "SELECT coalesce((SELECT requests FROM tenantry.usage \
       WHERE day = (now() AT TIME ZONE 'UTC')::date), 0), \
     (SELECT to_char(max(last_request_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
       FROM tenantry.usage)";

/// Days since 1970-01-01 (UTC) of `time`.
pub fn day(time: std::time::SystemTime) -> i32 {
    let secs = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (secs / 86_400) as i32
}

/// Measures the size of every database named in `$1` (text[]) that the
/// caller may measure (CONNECT on it, or pg_read_all_stats): name and bytes.
/// One query per server, on its admin database.
pub const STORAGE: &str = "SELECT datname::text, pg_database_size(oid) FROM pg_database \
     WHERE datname = ANY($1::text[]) AND datallowconn \
     AND (has_database_privilege(oid, 'CONNECT') OR pg_has_role('pg_read_all_stats', 'USAGE'))";

/// After a restore, the dump's days the database lacks, from temporary
/// table `restored` (made `LIKE tenantry.usage`); days it has keep their
/// counts.
pub const MERGE_RESTORED: &str = "INSERT INTO tenantry.usage (day, requests, last_request_at) \
     SELECT day, requests, last_request_at FROM restored ON CONFLICT (day) DO NOTHING";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_the_gateways_alone() {
        let sql = create("PUBLIC, \"shop_admin\"", Some("\"shop_gateway\"")).join(";\n");
        assert!(sql.contains("REVOKE ALL ON tenantry.usage FROM PUBLIC, \"shop_admin\""));
        assert!(sql.contains("GRANT INSERT, SELECT, UPDATE ON tenantry.usage TO \"shop_gateway\""));
        assert!(!create("PUBLIC", None).join(";").contains("GRANT"));
        for stmt in [ADD, TODAY] {
            assert!(stmt.contains(&format!("{SCHEMA}.{TABLE}")), "{stmt}");
        }
    }

    #[test]
    fn days_count_from_the_epoch_in_utc() {
        use std::time::{Duration, UNIX_EPOCH};
        assert_eq!(day(UNIX_EPOCH), 0);
        assert_eq!(day(UNIX_EPOCH + Duration::from_secs(86_399)), 0);
        // 2026-12-01T00:00:00Z
        assert_eq!(day(UNIX_EPOCH + Duration::from_secs(1_796_083_200)), 20_788);
    }
}
