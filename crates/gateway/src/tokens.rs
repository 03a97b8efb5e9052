//! Bearer tokens. A token belongs to one tenant and one role (admin,
//! developer, customer); it is shown once when created and only its SHA-256
//! hash is stored, in the tenant's own database (schema `tenantry`, owned by
//! `<db>_owner`, unreadable by the tenant's roles). The gateway checks a token
//! through `tenantry.token_role(hash)`, a SECURITY DEFINER function the
//! tenant's groups may execute, and caches the answer briefly.
//!
//! A token of one tenant is unknown to every other tenant: each database only
//! knows its own hashes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use tokio_postgres::Client;

/// Roles a token may carry.
pub const ROLES: [&str; 3] = ["admin", "developer", "customer"];

const PREFIX: &str = "tnt_";

/// A new random token (`tnt_` + 43 URL-safe characters, 256 bits).
pub fn generate() -> SecretString {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    SecretString::from(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// The stored form of a token: hex SHA-256.
pub fn hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// SQL creating the token store in a tenant database; idempotent. Runs as the
/// tenant's owner role. `groups` are the tenant's quoted group role names.
pub fn schema_sql(groups: &str) -> String {
    format!(
        "CREATE SCHEMA IF NOT EXISTS tenantry;
         REVOKE ALL ON SCHEMA tenantry FROM PUBLIC;
         GRANT USAGE ON SCHEMA tenantry TO {groups};
         CREATE TABLE IF NOT EXISTS tenantry.tokens (
             id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             role text NOT NULL CHECK (role IN ('admin', 'developer', 'customer')),
             label text NOT NULL DEFAULT '',
             hash text NOT NULL UNIQUE,
             created_at timestamptz NOT NULL DEFAULT now(),
             revoked_at timestamptz
         );
         REVOKE ALL ON tenantry.tokens FROM PUBLIC, {groups};
         CREATE OR REPLACE FUNCTION tenantry.token_role(token_hash text) RETURNS text
             LANGUAGE sql STABLE SECURITY DEFINER
             SET search_path = pg_catalog, pg_temp
             AS $$ SELECT role FROM tenantry.tokens WHERE hash = token_hash AND revoked_at IS NULL $$;
         REVOKE ALL ON FUNCTION tenantry.token_role(text) FROM PUBLIC;
         GRANT EXECUTE ON FUNCTION tenantry.token_role(text) TO {groups};"
    )
}

/// One stored token (never the token itself).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenInfo {
    pub id: i64,
    pub role: String,
    pub label: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

/// Stores a new token's hash; the client acts as the tenant's owner with the
/// schema in place. Returns its id.
pub async fn insert(
    client: &Client,
    role: &str,
    label: &str,
    token_hash: &str,
) -> Result<i64, tokio_postgres::Error> {
    let row = client
        .query_one(
            "INSERT INTO tenantry.tokens (role, label, hash) VALUES ($1, $2, $3) RETURNING id",
            &[&role, &label, &token_hash],
        )
        .await?;
    Ok(row.get(0))
}

pub async fn list(client: &Client) -> Result<Vec<TokenInfo>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT id, role, label, created_at::text, revoked_at::text FROM tenantry.tokens ORDER BY id",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| TokenInfo {
            id: r.get(0),
            role: r.get(1),
            label: r.get(2),
            created_at: r.get(3),
            revoked_at: r.get(4),
        })
        .collect())
}

/// Revokes a token by id; false if there was no such live token.
pub async fn revoke(client: &Client, id: i64) -> Result<bool, tokio_postgres::Error> {
    let n = client
        .execute(
            "UPDATE tenantry.tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
            &[&id],
        )
        .await?;
    Ok(n == 1)
}

/// The role of a token in the connected tenant database, if it is live there.
pub async fn role_of(
    client: &deadpool_postgres::ClientWrapper,
    token_hash: &str,
) -> Result<Option<String>, tokio_postgres::Error> {
    let stmt = client
        .prepare_cached("SELECT tenantry.token_role($1)")
        .await;
    let row = match stmt {
        Ok(stmt) => client.query_one(&stmt, &[&token_hash]).await,
        Err(e) => Err(e),
    };
    match row {
        Ok(row) => Ok(row.get(0)),
        // No token store yet in this database: no token is valid.
        Err(e)
            if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_FUNCTION)
                || e.code() == Some(&tokio_postgres::error::SqlState::INVALID_SCHEMA_NAME) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Recent answers of [`role_of`] per (tenant, hash): a live token is trusted
/// for `ttl` (so a revocation takes effect within it), an unknown one for a
/// shorter time (so guessing costs no database round trip per request).
pub struct Cache {
    ttl: Duration,
    negative_ttl: Duration,
    max_entries: usize,
    map: Mutex<HashMap<CacheKey, Answer>>,
}

/// (tenant, token hash).
type CacheKey = (String, String);
/// The token's role (None: unknown or revoked) and when that was learnt.
type Answer = (Option<String>, Instant);

impl Cache {
    pub fn new(ttl: Duration) -> Cache {
        Cache {
            ttl,
            negative_ttl: ttl.min(Duration::from_secs(5)),
            max_entries: 100_000,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(answer)` if a fresh answer is cached.
    pub fn get(&self, tenant: &str, token_hash: &str) -> Option<Option<String>> {
        let map = self.map.lock().expect("token cache lock");
        let (role, at) = map.get(&(tenant.to_owned(), token_hash.to_owned()))?;
        let ttl = if role.is_some() {
            self.ttl
        } else {
            self.negative_ttl
        };
        (at.elapsed() < ttl).then(|| role.clone())
    }

    pub fn put(&self, tenant: &str, token_hash: &str, role: Option<String>) {
        let mut map = self.map.lock().expect("token cache lock");
        if map.len() >= self.max_entries {
            map.clear();
        }
        map.insert(
            (tenant.to_owned(), token_hash.to_owned()),
            (role, Instant::now()),
        );
    }

    /// Forgets a tenant's answers (reload, removal).
    pub fn forget_tenant(&self, tenant: &str) {
        self.map
            .lock()
            .expect("token cache lock")
            .retain(|(t, _), _| t != tenant);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, b) = (generate(), generate());
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert!(a.expose_secret().starts_with("tnt_"));
        assert_eq!(a.expose_secret().len(), 4 + 43);
        let h = hash(a.expose_secret());
        assert_eq!(h.len(), 64);
        assert_eq!(h, hash(a.expose_secret()));
        assert_ne!(h, hash(b.expose_secret()));
    }

    #[test]
    fn cache_expires_and_is_per_tenant() {
        let c = Cache::new(Duration::from_secs(60));
        c.put("a", "h", Some("developer".into()));
        assert_eq!(c.get("a", "h"), Some(Some("developer".into())));
        assert_eq!(c.get("b", "h"), None);
        c.forget_tenant("a");
        assert_eq!(c.get("a", "h"), None);
        let short = Cache::new(Duration::ZERO);
        short.put("a", "h", None);
        assert_eq!(short.get("a", "h"), None);
    }
}
