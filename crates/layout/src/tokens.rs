//! The gateway's token store, kept in each tenant's own database: schema
//! `tenantry`, owned by `<db>_owner`, holding table `tokens` (one row per
//! token: its role, label and SHA-256 hash, never the token) and
//! `token_role(hash)`, a SECURITY DEFINER function the tenant's member groups
//! may execute. The groups can neither read nor write the table, so a tenant
//! user cannot list or mint tokens; the gateway, logged in as one of them,
//! can only ask what role a hash has.
//!
//! Here: the names, the token format ([`generate`], [`hash`]), the SQL that
//! creates or repairs the store ([`setup`]) and that reads and writes it,
//! and the state apply expects to observe ([`Expected`]). Running it is
//! `tenantry-pg`'s (apply, restore, `tenantry token`) and the gateway's.
//! A restore leaves the store out of the archive (tokens are credentials: a
//! restore must neither revive a revoked token nor bring another database's
//! tokens along) and sets it up afresh where none exists.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use secrecy::SecretString;
use sha2::{Digest, Sha256};

use crate::ident::{idents, literal, Ident};
use crate::roles::{member_roles, Group};

/// The schema holding the store.
pub const SCHEMA: &str = "tenantry";
/// The table of token hashes, in [`SCHEMA`].
pub const TABLE: &str = "tokens";
/// The lookup function, in [`SCHEMA`].
pub const FUNCTION: &str = "token_role";
/// The lookup function with its argument types, for `to_regprocedure`.
pub const FUNCTION_SIGNATURE: &str = "tenantry.token_role(text)";

/// The lookup function's body (`prosrc`).
pub const FUNCTION_BODY: &str =
    " SELECT role FROM tenantry.tokens WHERE hash = token_hash AND revoked_at IS NULL ";

/// The lookup function's only setting (`proconfig`), so that a tenant user
/// cannot shadow `=` or the table through its search path.
pub const FUNCTION_CONFIG: &str = "search_path=pg_catalog, pg_temp";

/// The groups a token may carry.
pub const ROLES: [Group; 3] = Group::MEMBERS;

/// The first characters of every token.
const PREFIX: &str = "tnt_";

/// A new random token (`tnt_` + 43 URL-safe characters, 256 bits).
pub fn generate() -> SecretString {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    SecretString::from(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// The stored form of a token: hex SHA-256.
pub fn hash(token: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(64);
    for b in Sha256::digest(token.as_bytes()) {
        hex.push(HEX[usize::from(b >> 4)] as char);
        hex.push(HEX[usize::from(b & 0xf)] as char);
    }
    hex
}

/// The statements creating or repairing tenant `db`'s store, to run in one
/// transaction acting as `<db>_owner`; idempotent, and they keep every
/// stored token. `foreign` are other roles holding privileges on the store,
/// to revoke.
pub fn setup(db: &Ident, foreign: &[String]) -> Vec<String> {
    let gateway = crate::roles::gateway_login(db);
    let admin = crate::roles::group_role(db, Group::Admin);
    setup_for(&member_roles(db), Some((&gateway, &admin)), foreign)
}

/// [`setup`] with the roles allowed to look tokens up named directly, and
/// the gateway's login and the admin group (`None`: a database tenantry did
/// not provision, such as a single-tenant DSN's, where the DSN's login owns
/// what it writes).
pub fn setup_for<S: AsRef<str>>(
    groups: &[S],
    gateway_admin: Option<(&Ident, &Ident)>,
    foreign: &[String],
) -> Vec<String> {
    let groups = idents(groups.iter().map(AsRef::as_ref));
    let mut revoke = vec!["PUBLIC".to_owned()];
    revoke.extend(
        foreign
            .iter()
            .filter(|f| *f != "PUBLIC")
            .map(|f| crate::ident::quote(f)),
    );
    revoke.push(groups.clone());
    if let Some((gateway, _)) = gateway_admin {
        revoke.push(gateway.quoted());
    }
    let revoke = revoke.join(", ");
    let gateway = gateway_admin.map(|(g, _)| g.quoted());
    let admin = gateway_admin.map(|(_, a)| a.quoted());
    let mut sql = vec![
        format!("CREATE SCHEMA IF NOT EXISTS {SCHEMA}"),
        format!(
            "COMMENT ON SCHEMA {SCHEMA} IS {}",
            literal("the gateway's token store; managed by tenantry apply")
        ),
        format!("REVOKE ALL ON SCHEMA {SCHEMA} FROM {revoke}"),
        format!(
            "GRANT USAGE ON SCHEMA {SCHEMA} TO {groups}{}",
            gateway
                .as_ref()
                .map(|g| format!(", {g}"))
                .unwrap_or_default()
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {SCHEMA}.{TABLE} (
             id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             role text NOT NULL CHECK (role IN ('admin', 'developer', 'customer')),
             label text NOT NULL DEFAULT '',
             hash text NOT NULL UNIQUE,
             created_at timestamptz NOT NULL DEFAULT now(),
             revoked_at timestamptz)"
        ),
        format!("REVOKE ALL ON {SCHEMA}.{TABLE} FROM {revoke}"),
        // Dropped and created, not replaced: a function someone altered may
        // have another return type, which CREATE OR REPLACE cannot change.
        format!("DROP FUNCTION IF EXISTS {FUNCTION_SIGNATURE}"),
        format!(
            "CREATE FUNCTION {SCHEMA}.{FUNCTION}(token_hash text) RETURNS text \
             LANGUAGE sql STABLE SECURITY DEFINER \
             SET search_path = pg_catalog, pg_temp \
             AS $${FUNCTION_BODY}$$"
        ),
        format!("REVOKE ALL ON FUNCTION {FUNCTION_SIGNATURE} FROM {revoke}"),
        format!("GRANT EXECUTE ON FUNCTION {FUNCTION_SIGNATURE} TO {groups}"),
    ];
    if let Some(gateway) = &gateway {
        sql.push(format!(
            "GRANT {} ON {SCHEMA}.{TABLE} TO {gateway}",
            crate::audit::TOKEN_PRIVILEGES.join(", ")
        ));
    }
    sql.extend(crate::usage::create(&revoke, gateway.as_deref()));
    sql.extend(crate::audit::create(
        &revoke,
        gateway.as_deref(),
        admin.as_deref(),
    ));
    sql
}

/// The gateway's check: the role of token hash `$1`, NULL when it is unknown
/// or revoked.
pub const LOOKUP: &str = "SELECT tenantry.token_role($1)";

/// Stores a new token: `$1` role, `$2` label, `$3` hash; returns its id.
pub const INSERT: &str =
    "INSERT INTO tenantry.tokens (role, label, hash) VALUES ($1, $2, $3) RETURNING id";

/// Every stored token, oldest first: id, role, label, created_at and
/// revoked_at as text.
pub const LIST: &str =
    "SELECT id, role, label, created_at::text, revoked_at::text FROM tenantry.tokens ORDER BY id";

/// Revokes live token `$1` (by id); one row when it was live.
pub const REVOKE: &str =
    "UPDATE tenantry.tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL";

/// Whether hash `$1` is a live token: one boolean.
pub const IS_LIVE: &str =
    "SELECT EXISTS (SELECT 1 FROM tenantry.tokens WHERE hash = $1 AND revoked_at IS NULL)";

/// What apply expects to observe of tenant `db`'s schema `tenantry`, object
/// by object: each owned by `<db>_owner`, the grantees of each object's
/// map holding exactly those privileges, nobody else anything.
pub struct Expected {
    pub owner: Ident,
    pub groups: [Ident; 3],
    /// The gateway's login: it counts usage and appends API writes.
    pub gateway: Ident,
    /// The admin group: it reads the audit trail.
    pub admin: Ident,
}

/// Grantee -> the privileges it holds on one object.
pub type Grants = std::collections::BTreeMap<String, &'static [&'static str]>;

impl Expected {
    pub fn of(db: &Ident) -> Expected {
        Expected {
            owner: crate::roles::group_role(db, Group::Owner),
            groups: member_roles(db),
            gateway: crate::roles::gateway_login(db),
            admin: crate::roles::group_role(db, Group::Admin),
        }
    }

    fn grants(&self, groups: &'static [&'static str], gateway: &'static [&'static str]) -> Grants {
        let mut grants: Grants = self
            .groups
            .iter()
            .map(|g| (g.to_string(), groups))
            .collect();
        grants.insert(self.gateway.to_string(), gateway);
        grants
    }

    /// The schema: the groups and the gateway's login may use it.
    pub fn schema(&self) -> Grants {
        self.grants(&["USAGE"], &["USAGE"])
    }

    /// The token table: no group may read it; the gateway's login reads it.
    pub fn token_table(&self) -> Grants {
        self.grants(&[], crate::audit::TOKEN_PRIVILEGES)
    }

    /// The lookup function: the groups may execute it.
    pub fn function(&self) -> Grants {
        self.grants(&["EXECUTE"], &[])
    }

    /// `tenantry.usage`: the gateway's alone.
    pub fn usage_table(&self) -> Grants {
        self.grants(&[], crate::usage::GATEWAY_PRIVILEGES)
    }

    /// `tenantry.audit`: the gateway appends, the admin group reads.
    pub fn audit_table(&self) -> Grants {
        let mut grants = self.grants(&[], crate::audit::GATEWAY_PRIVILEGES);
        grants.insert(self.admin.to_string(), crate::audit::ADMIN_PRIVILEGES);
        grants
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_hashed() {
        use secrecy::ExposeSecret;
        let (a, b) = (generate(), generate());
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert!(a.expose_secret().starts_with(PREFIX));
        assert_eq!(a.expose_secret().len(), PREFIX.len() + 43);
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn setup_grants_lookup_only_and_revokes_the_rest() {
        let db = Ident::parse("shop").unwrap();
        let sql = setup(&db, &["PUBLIC".to_owned(), "intruder".to_owned()]).join(";\n");
        let groups = "\"shop_admin\", \"shop_developer\", \"shop_customer\"";
        assert!(sql.contains(&format!(
            "GRANT USAGE ON SCHEMA tenantry TO {groups}, \"shop_gateway\""
        )));
        assert!(sql.contains(&format!(
            "REVOKE ALL ON tenantry.tokens FROM PUBLIC, \"intruder\", {groups}, \"shop_gateway\""
        )));
        assert!(sql.contains("GRANT SELECT ON tenantry.tokens TO \"shop_gateway\""));
        assert!(sql.contains("GRANT SELECT ON tenantry.audit TO \"shop_admin\""));
        assert!(sql.contains(&format!(
            "GRANT EXECUTE ON FUNCTION tenantry.token_role(text) TO {groups}"
        )));
        assert!(sql.contains(&format!("AS $${FUNCTION_BODY}$$")));
        assert!(sql.contains("SECURITY DEFINER SET search_path = pg_catalog, pg_temp"));
        assert!(!sql.contains(&format!("GRANT SELECT ON tenantry.tokens TO {groups}")));
        for stmt in [LOOKUP, INSERT, LIST, REVOKE, IS_LIVE] {
            assert!(stmt.contains(&format!("{SCHEMA}.")), "{stmt}");
        }
        assert!(FUNCTION_SIGNATURE.starts_with(&format!("{SCHEMA}.{FUNCTION}(")));
        assert_eq!(
            FUNCTION_CONFIG.replace('=', " = "),
            "search_path = pg_catalog, pg_temp"
        );
    }
}
