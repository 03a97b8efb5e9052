//! Checking bearer tokens. A token belongs to one tenant and one role
//! (admin, developer, customer); only its hash is stored, in the tenant's own
//! database (the token store of `tenantry_layout::tokens`, which apply
//! creates). The gateway asks `tenantry.token_role(hash)`, a SECURITY
//! DEFINER function the tenant's groups may execute, and caches the answer
//! briefly ([`Cache`]). Creating and revoking tokens is `tenantry token`'s
//! (`tenantry_pg::tokens`).
//!
//! A token of one tenant is unknown to every other tenant: each database only
//! knows its own hashes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use tenantry_layout::tokens::hash;
use tenantry_layout::tokens::LOOKUP;

/// The role of a token in the connected tenant database, if it is live there.
pub async fn role_of(
    client: &deadpool_postgres::ClientWrapper,
    token_hash: &str,
) -> Result<Option<String>, tokio_postgres::Error> {
    let stmt = client.prepare_cached(LOOKUP).await;
    let row = match stmt {
        Ok(stmt) => client.query_one(&stmt, &[&token_hash]).await,
        Err(e) => Err(e),
    };
    match row {
        Ok(row) => Ok(row.get(0)),
        // No token store in this database (not applied since tenantry kept
        // one): no token is valid.
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
