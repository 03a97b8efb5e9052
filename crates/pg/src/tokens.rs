//! `tenantry token`'s side of the token store: a tenant's store opened as
//! its owner role, and tokens created, listed, revoked and checked there.
//!
//! The store's names, SQL and token format are `tenantry_layout::tokens`';
//! apply creates and repairs the store (it is part of every tenant), so this
//! module only uses it and says to run apply when it is missing. The
//! gateway's lookup (`token_role`) lives in the gateway.

use secrecy::{ExposeSecret, SecretString};
use tenantry_layout::audit::Action;
use tenantry_layout::{tokens, Group, Ident};
use tokio_postgres::Client;

use crate::connect::Admin;
use crate::error::{Error, SqlState};

/// One stored token (never the token itself).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenInfo {
    pub id: i64,
    pub role: String,
    pub label: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

/// A session in one tenant database acting as its owner role.
pub struct Store {
    client: Client,
    tenant: Ident,
}

impl Store {
    /// Connects to `tenant`'s database as the admin and acts as its owner.
    pub async fn open(admin: &Admin, tenant: &Ident) -> Result<Store, Error> {
        let client = admin.connect(Some(tenant)).await?;
        let owner = tenantry_layout::group_role(tenant, Group::Owner);
        client
            .batch_execute(&format!("SET ROLE {}", owner.quoted()))
            .await
            .map_err(|e| Error::sql(format!("token store of {tenant}: acting as {owner}"), e))?;
        Ok(Store {
            client,
            tenant: tenant.clone(),
        })
    }

    /// The error of a statement on the store; a missing store (a database
    /// made before tenantry kept one, and not applied since) says what to do.
    fn error(&self, what: &str, e: tokio_postgres::Error) -> Error {
        let context = format!("token store of {}: {what}", self.tenant);
        match e.code() {
            Some(c) if *c == SqlState::UNDEFINED_TABLE || *c == SqlState::INVALID_SCHEMA_NAME => {
                Error::other(
                    context,
                    format!(
                        "database {} has no token store yet: run `tenantry apply`, which creates it",
                        self.tenant
                    ),
                )
            }
            _ => Error::sql(context, e),
        }
    }

    /// Creates a token for `group` (a member group, not the owner) and
    /// returns its id and the token, which is stored only hashed.
    pub async fn create(&self, group: Group, label: &str) -> Result<(i64, SecretString), Error> {
        if !tokens::ROLES.contains(&group) {
            return Err(Error::other(
                format!("token store of {}", self.tenant),
                "a token's role is admin, developer or customer",
            ));
        }
        let token = tokens::generate();
        let hash = tokens::hash(token.expose_secret());
        let row = self
            .client
            .query_one(tokens::INSERT, &[&group.as_str(), &label, &hash])
            .await
            .map_err(|e| self.error("storing a token", e))?;
        let id: i64 = row.get(0);
        crate::audit::note_on(
            &self.client,
            &self.tenant,
            Action::TokenCreated,
            serde_json::json!({ "token": id, "role": group.as_str(), "label": label }),
        )
        .await;
        Ok((id, token))
    }

    /// Every token, oldest first.
    pub async fn list(&self) -> Result<Vec<TokenInfo>, Error> {
        let rows = self
            .client
            .query(tokens::LIST, &[])
            .await
            .map_err(|e| self.error("listing tokens", e))?;
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

    /// Revokes live token `id`; false when there is no such live token.
    pub async fn revoke(&self, id: i64) -> Result<bool, Error> {
        let n = self
            .client
            .execute(tokens::REVOKE, &[&id])
            .await
            .map_err(|e| self.error("revoking a token", e))?;
        if n == 1 {
            crate::audit::note_on(
                &self.client,
                &self.tenant,
                Action::TokenRevoked,
                serde_json::json!({ "token": id }),
            )
            .await;
        }
        Ok(n == 1)
    }

    /// Whether `token` is stored and not revoked.
    pub async fn is_live(&self, token: &SecretString) -> Result<bool, Error> {
        let hash = tokens::hash(token.expose_secret());
        Ok(self
            .client
            .query_one(tokens::IS_LIVE, &[&hash])
            .await
            .map_err(|e| self.error("checking a token", e))?
            .get(0))
    }
}
