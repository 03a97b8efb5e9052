//! The raw shape of `tenants.toml`, exactly as serde reads it: no validation
//! beyond types and `deny_unknown_fields`. Fields whose later validation can
//! fail are [`Spanned`] so errors can point at them. See `validate.rs` for
//! the step from here to [`crate::Inventory`].

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::Status;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawManifest {
    pub fleet: Option<Spanned<String>>,
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub paths: RawPaths,
    #[serde(default)]
    pub routing: RawRouting,
    #[serde(default)]
    pub plans: BTreeMap<Spanned<String>, RawPlan>,
    #[serde(default)]
    pub tenants: BTreeMap<Spanned<String>, RawTenant>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub admin_url: Option<Spanned<String>>,
    pub app_host: Option<Spanned<String>>,
    pub app_port: Option<Spanned<i64>>,
    pub app_sslmode: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPaths {
    pub schema: Option<Spanned<String>>,
    pub backups: Option<Spanned<String>>,
    pub secrets: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRouting {
    #[serde(default)]
    pub base_domains: Vec<Spanned<String>>,
    #[serde(default)]
    pub reserved_subdomains: Vec<Spanned<String>>,
    #[serde(default)]
    pub trust_tenant_header: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPlan {
    pub connection_limit: Spanned<i64>,
    pub statement_timeout: Spanned<String>,
    pub pool_size: Spanned<i64>,
    pub requests_per_second: Spanned<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTenant {
    pub display_name: Option<Spanned<String>>,
    pub plan: Spanned<String>,
    pub subdomain: Option<Spanned<String>>,
    #[serde(default)]
    pub domains: Vec<Spanned<String>>,
    #[serde(default)]
    pub status: Status,
    pub deletion_protection: Option<bool>,
    #[serde(default)]
    pub admins: Vec<RawUser>,
    #[serde(default)]
    pub developers: Vec<RawUser>,
    #[serde(default)]
    pub customers: Vec<RawUser>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUser {
    pub username: Spanned<String>,
    pub password_env: Option<Spanned<String>>,
    pub password_file: Option<Spanned<String>>,
    pub email: Option<Spanned<String>>,
}
