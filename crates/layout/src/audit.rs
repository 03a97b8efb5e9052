//! The tenant's audit trail, kept in the tenant's own database (table
//! `tenantry.audit`), so it travels with the tenant's backups and moves.
//! One row per thing tenantry changed for the tenant ([`Action`]): when,
//! what, who (the admin role, or the API token), the OS user and host of
//! the machine that ran the command, and a JSON detail.
//!
//! Who may do what is the point: the owner owns the table; tenantry's
//! commands append as the admin (who may act as the owner); the gateway's
//! login may only append; the tenant's admin group may only read; no tenant
//! role may change or delete a row. The gateway's login also reads the
//! token table's ids ([`TOKEN_PRIVILEGES`]) to name the token of an API
//! write.
//!
//! Here: the SQL ([`create`], [`APPEND`], [`APPEND_API`], [`LIST`]) and the
//! actions' names. Running it is `tenantry-pg`'s (apply, suspend, rotate,
//! token, backup, restore, adopt, destroy, `tenantry audit`) and the
//! gateway's (API writes, `GET /api/audit`).

use crate::tokens::SCHEMA;

/// The table, in [`SCHEMA`].
pub const TABLE: &str = "audit";

/// What the gateway's login holds on the table.
pub const GATEWAY_PRIVILEGES: &[&str] = &["INSERT"];
/// What the tenant's admin group holds on the table.
pub const ADMIN_PRIVILEGES: &[&str] = &["SELECT"];
/// What the gateway's login holds on the token table (to name the token of
/// an API write; the hashes are of random 256-bit tokens).
pub const TOKEN_PRIVILEGES: &[&str] = &["SELECT"];

/// What tenantry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Created,
    Updated,
    Suspended,
    Resumed,
    Migrated,
    PasswordRotated,
    TokenCreated,
    TokenRevoked,
    Backup,
    Restore,
    Adopted,
    MovedIn,
    DestroyStarted,
    /// A write through the gateway's API.
    ApiWrite,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Suspended => "suspended",
            Action::Resumed => "resumed",
            Action::Migrated => "migrated",
            Action::PasswordRotated => "password_rotated",
            Action::TokenCreated => "token_created",
            Action::TokenRevoked => "token_revoked",
            Action::Backup => "backup",
            Action::Restore => "restore",
            Action::Adopted => "adopted",
            Action::MovedIn => "moved_in",
            Action::DestroyStarted => "destroy_started",
            Action::ApiWrite => "api.write",
        }
    }
}

/// Creates the table when it is missing and sets who holds what on it:
/// `revoke` (a quoted grantee list) loses everything, then `gateway` may
/// insert and `admin` may read.
pub fn create(revoke: &str, gateway: Option<&str>, admin: Option<&str>) -> Vec<String> {
    let mut sql = vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {SCHEMA}.{TABLE} (
             id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             at timestamptz NOT NULL DEFAULT now(),
             action text NOT NULL,
             actor text NOT NULL,
             os_user text NOT NULL DEFAULT '',
             host text NOT NULL DEFAULT '',
             detail jsonb NOT NULL DEFAULT '{{}}')"
        ),
        format!("CREATE INDEX IF NOT EXISTS audit_at ON {SCHEMA}.{TABLE} (at, id)"),
        format!("REVOKE ALL ON {SCHEMA}.{TABLE} FROM {revoke}"),
    ];
    if let Some(gateway) = gateway {
        sql.push(format!(
            "GRANT {} ON {SCHEMA}.{TABLE} TO {gateway}",
            GATEWAY_PRIVILEGES.join(", ")
        ));
    }
    if let Some(admin) = admin {
        sql.push(format!(
            "GRANT {} ON {SCHEMA}.{TABLE} TO {admin}",
            ADMIN_PRIVILEGES.join(", ")
        ));
    }
    sql
}

/// Appends one entry of a tenantry command: `$1` action, `$2` OS user,
/// `$3` host, `$4` detail (JSON text). The actor is the session's role (the
/// admin the command logged in as).
pub const APPEND: &str = "INSERT INTO tenantry.audit (action, actor, os_user, host, detail) \
     VALUES ($1, session_user, $2, $3, $4::text::jsonb)";

/// Appends the gateway's batch of API writes, one array per field, in the
/// writes' order: `$1` times (timestamptz[]), `$2` token hashes (text[],
/// to name each token's id; never stored), `$3` roles, `$4` methods, `$5`
/// paths (text[]), `$6` statuses (int[]), `$7` row ids (bigint[], NULL
/// when none).
pub const APPEND_API: &str = "INSERT INTO tenantry.audit (at, action, actor, detail) \
     SELECT x.at, 'api.write', \
       coalesce('token ' || t.id || ' (' || x.role || ')', x.role), \
       jsonb_strip_nulls(jsonb_build_object('token', t.id, 'role', x.role, 'method', x.method, \
         'path', x.path, 'status', x.status, 'row', x.row_id)) \
     FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::bigint[]) \
       AS x(at, hash, role, method, path, status, row_id) \
     LEFT JOIN tenantry.tokens t ON t.hash = x.hash";

/// Entries newest first (by time: entries a restore added back keep
/// theirs): `$1` since (timestamptz text, or NULL), `$2`
/// limit, `$3` offset; id, at (RFC 3339 UTC), action, actor, os_user, host,
/// detail (JSON text).
pub const LIST: &str = "SELECT id, \
     to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
     action, actor, os_user, host, detail::text \
     FROM tenantry.audit WHERE $1::text IS NULL OR at >= $1::text::timestamptz \
     ORDER BY at DESC, id DESC LIMIT $2 OFFSET $3";

/// After a restore, the dump's entries the database lacks, from temporary
/// table `restored` (made `LIKE tenantry.audit` and filled with the dump's
/// rows), appended in their order with their times: a restore never takes
/// an entry away, and brings back a destroyed tenant's trail.
pub const MERGE_RESTORED: &str =
    "INSERT INTO tenantry.audit (at, action, actor, os_user, host, detail) \
     SELECT r.at, r.action, r.actor, r.os_user, r.host, r.detail FROM restored r \
     WHERE NOT EXISTS (SELECT 1 FROM tenantry.audit a WHERE a.at = r.at AND a.action = r.action \
       AND a.actor = r.actor AND a.detail = r.detail) \
     ORDER BY r.id";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_roles_get_read_or_append_only() {
        let sql = create(
            "PUBLIC, \"shop_admin\"",
            Some("\"shop_gateway\""),
            Some("\"shop_admin\""),
        )
        .join(";\n");
        assert!(sql.contains("REVOKE ALL ON tenantry.audit FROM PUBLIC, \"shop_admin\""));
        assert!(sql.contains("GRANT INSERT ON tenantry.audit TO \"shop_gateway\""));
        assert!(sql.contains("GRANT SELECT ON tenantry.audit TO \"shop_admin\""));
        assert!(!sql.contains("UPDATE") && !sql.contains("DELETE"), "{sql}");
        for stmt in [APPEND, APPEND_API, LIST] {
            assert!(stmt.contains(&format!("{SCHEMA}.{TABLE}")), "{stmt}");
        }
        assert!(!APPEND_API.contains("'hash'"), "the hash is never stored");
    }
}
