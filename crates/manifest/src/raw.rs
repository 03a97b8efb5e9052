//! The raw shape of `tenants.toml`, exactly as serde reads it: no validation
//! beyond types and `deny_unknown_fields`. Fields whose later validation can
//! fail are [`Spanned`] so errors can point at them. See `validate.rs` for
//! the step from here to [`crate::Inventory`]. Before serde runs,
//! `shape.rs` checks the document against a description of these structs
//! (kept equal to their schema by a test), so that every unknown key and
//! type error is reported in one run, not only the first one serde meets.
//!
//! The same structs derive [`schemars::JsonSchema`]: their `///` comments are
//! the descriptions an editor shows for each key of the published schema
//! (`crate::schema`), and the `#[schemars(...)]` attributes encode the cheap
//! part of the rules (patterns, ranges, defaults). `validate.rs` stays the
//! authority; the schema only helps while typing.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

use crate::validate::{
    DEFAULT_BACKUPS_DIR, DEFAULT_FLEET, DEFAULT_SCHEMA_DIR, DEFAULT_SECRETS_DIR,
};
use crate::Status;

/// `fleet`: 1 to 32 of a-z, 0-9, '_' and '-'.
const FLEET_PATTERN: &str = "^[a-z0-9_-]{1,32}$";
/// A server's name (`[servers.<name>]`, a tenant's `server`).
pub(crate) const SERVER_NAME_PATTERN: &str = "^[a-z0-9_]{1,32}$";
/// `[server] app_host`: ASCII letters, digits, '.', '-', '_' and ':'.
const APP_HOST_PATTERN: &str = "^[A-Za-z0-9._:-]{1,253}$";
/// One DNS label: a-z, 0-9 and '-', 1 to 63, no '-' at either end.
const LABEL_PATTERN: &str = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";
/// Dot-separated DNS labels (length checked by `maxLength`).
const HOSTNAME_PATTERN: &str =
    r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$";
/// Like [`HOSTNAME_PATTERN`], with at least one dot.
const DOMAIN_PATTERN: &str =
    r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$";
/// What `parse_duration_ms` accepts (the 24-day ceiling is left to validation).
const DURATION_PATTERN: &str = r"^\s*[0-9]+\s*(us|ms|s|min|h|d)?\s*$";
/// A tenant database name: an identifier short enough for `<db>_developer`
/// to fit in 63 bytes.
const DATABASE_PATTERN: &str = "^[a-z_][a-z0-9_]{0,52}$";
/// Database names PostgreSQL reserves.
const RESERVED_DATABASE_PATTERN: &str = "^pg_|^(postgres|template0|template1)$";
/// A role name: a lower-case identifier of at most 63 bytes.
const ROLE_PATTERN: &str = "^[a-z_][a-z0-9_]{0,62}$";
/// Role names PostgreSQL reserves or treats specially.
const RESERVED_ROLE_PATTERN: &str =
    "^pg_|^(postgres|template0|template1|public|none|current_user|current_role|session_user)$";
/// An environment variable name: no '=' and no NUL.
const ENV_VAR_PATTERN: &str = r"^[^=\x00]+$";
/// Exactly one '@', with something other than white space on both sides.
const EMAIL_PATTERN: &str = r"^[^@]*[^@\s][^@]*@[^@]*[^@\s][^@]*$";
/// Not only white space.
const NOT_BLANK_PATTERN: &str = r"\S";

/// Inventory of a Tenantry fleet: the plans, and the tenants (one PostgreSQL
/// database each, with group roles `<db>_owner`, `<db>_admin`,
/// `<db>_developer` and `<db>_customer`) with their users.
/// `tenantry validate` checks it without touching a server and reports every
/// problem with file:line:column.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "tenants.toml")]
pub(crate) struct RawManifest {
    /// Name that scopes the markers (COMMENTs) on every database and role this
    /// file manages, so several inventories (staging, prod, tests) can share
    /// one server. 1 to 32 characters among a-z, 0-9, '_' and '-'.
    /// Default: "default".
    #[schemars(with = "Option<String>", pattern(FLEET_PATTERN), extend("default" = DEFAULT_FLEET))]
    pub fleet: Option<Spanned<String>>,
    /// How tenantry reaches the cluster as an administrator, and where
    /// applications reach it: the one server of a single-server fleet (its
    /// name is "default"). Optional table; not together with `[servers]`.
    #[serde(default)]
    pub server: RawServer,
    /// Several servers by name, `[servers.<name>]` (1 to 32 characters
    /// among a-z, 0-9 and '_'), each with the keys of `[server]`: tenants are
    /// placed on them (or pinned with a tenant's `server`). Not together
    /// with `[server]`. Default: none.
    #[serde(default)]
    #[schemars(
        with = "BTreeMap<String, RawServer>",
        extend("propertyNames" = { "pattern": SERVER_NAME_PATTERN }),
    )]
    pub servers: BTreeMap<Spanned<String>, RawServer>,
    /// Directories tenantry works with, relative to the directory of
    /// tenants.toml. Optional table; every key has a default.
    #[serde(default)]
    pub paths: RawPaths,
    /// Host-based routing of the gateway (`tenantry serve`): validated here,
    /// read by the gateway. Optional table.
    #[serde(default)]
    pub routing: RawRouting,
    /// Plans (tiers) by name, `[plans.<name>]`: the limits a tenant gets.
    /// Every tenant's `plan` must name one of them. Default: none.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawPlan>")]
    pub plans: BTreeMap<Spanned<String>, RawPlan>,
    /// Tenants by database name, `[tenants.<db>]`. The key is the database
    /// name: a lower-case PostgreSQL identifier (a-z, 0-9 and '_', starting
    /// with a letter or '_') of at most 53 bytes, so that the role
    /// `<db>_developer` fits in 63; not `postgres`, `template0`, `template1`
    /// or `pg_*`. Default: none.
    #[serde(default)]
    #[schemars(
        with = "BTreeMap<String, RawTenant>",
        extend("propertyNames" = {
            "pattern": DATABASE_PATTERN,
            "not": { "pattern": RESERVED_DATABASE_PATTERN },
        }),
    )]
    pub tenants: BTreeMap<Spanned<String>, RawTenant>,
}

/// `[server]`: how tenantry reaches the cluster as an administrator, and the
/// endpoint given to applications when it differs. Every key is optional.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Server")]
pub(crate) struct RawServer {
    /// PostgreSQL URL of a role with CREATEDB and CREATEROLE (or a
    /// superuser) that `plan` and `apply` connect as, e.g.
    /// "postgres://postgres@localhost:5432/postgres". Must not be empty.
    /// The environment variable TENANTRY_ADMIN_URL, then `--admin-url`,
    /// override it. Default: unset (then one of those must be given).
    #[schemars(with = "Option<String>", pattern(NOT_BLANK_PATTERN))]
    pub admin_url: Option<Spanned<String>>,
    /// Host applications connect to, when not the one the admin does (e.g. a
    /// service name, or a pooler in front of the cluster): a host name or IP
    /// address of 1 to 253 characters among ASCII letters, digits, '.', '-',
    /// '_' and ':'. Default: unset (the host of the admin URL).
    #[schemars(with = "Option<String>", pattern(APP_HOST_PATTERN))]
    pub app_host: Option<Spanned<String>>,
    /// TCP port applications connect to, from 1 to 65535 (e.g. 6432 for a
    /// pooler). Default: unset (the port of the admin URL).
    #[schemars(with = "Option<i64>", range(min = 1, max = 65535))]
    pub app_port: Option<Spanned<i64>>,
    /// `sslmode` put in the connection strings given to applications: one of
    /// "disable", "allow", "prefer", "require", "verify-ca", "verify-full".
    /// Default: unset (no sslmode in those connection strings).
    #[schemars(
        with = "Option<String>",
        extend("enum" = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]),
    )]
    pub app_sslmode: Option<Spanned<String>>,
    /// Most tenants placement puts on this server, from 1 to 1000000.
    /// Default: unset (no limit; servers are then filled evenly).
    #[schemars(with = "Option<i64>", range(min = 1, max = 1_000_000))]
    pub max_tenants: Option<Spanned<i64>>,
    /// The gateway's connection budget on this server, from 1 to 100000.
    /// Default: unset (`tenantry serve --max-connections`).
    #[schemars(with = "Option<i64>", range(min = 1, max = 100_000))]
    pub gateway_connections: Option<Spanned<i64>>,
    /// "active", or "draining": keeps its tenants but gets no new ones.
    /// Default: "active".
    #[schemars(with = "Option<String>", extend("enum" = ["active", "draining"]))]
    pub status: Option<Spanned<String>>,
}

/// `[paths]`: directories tenantry works with. Relative paths are taken from
/// the directory holding tenants.toml. Every key is optional and must not be
/// empty when given (remove the key to get its default).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Paths")]
pub(crate) struct RawPaths {
    /// Directory of the refinery migrations (`V<n>__<name>.sql`) applied to
    /// every tenant database, read at run time. Non-empty path.
    /// Default: "schema".
    #[schemars(
        with = "Option<String>",
        length(min = 1),
        extend("default" = DEFAULT_SCHEMA_DIR)
    )]
    pub schema: Option<Spanned<String>>,
    /// Directory where a `pg_dump` backup (mode 0600) is written before a
    /// tenant database is dropped. Non-empty path.
    /// Default: ".tenantry/backups".
    #[schemars(
        with = "Option<String>",
        length(min = 1),
        extend("default" = DEFAULT_BACKUPS_DIR)
    )]
    pub backups: Option<Spanned<String>>,
    /// Directory of the generated passwords: one file per user, named after
    /// the username, mode 0600. Non-empty path. Default: ".tenantry/secrets".
    #[schemars(
        with = "Option<String>",
        length(min = 1),
        extend("default" = DEFAULT_SECRETS_DIR)
    )]
    pub secrets: Option<Spanned<String>>,
}

/// `[routing]`: how the gateway picks a tenant from the Host header. Every
/// key is optional.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Routing")]
pub(crate) struct RawRouting {
    /// Domains under which `<subdomain>.<base domain>` routes to the tenant
    /// with that subdomain, e.g. ["usualstore.com", "localhost"]. Each is a
    /// lower-case host name (dot-separated DNS labels of a-z, 0-9 and '-',
    /// at most 253 characters, no trailing dot), listed once. Default: [].
    #[serde(default)]
    #[schemars(
        with = "Vec<String>",
        inner(length(min = 1, max = 253), pattern(HOSTNAME_PATTERN))
    )]
    pub base_domains: Vec<Spanned<String>>,
    /// Subdomains no tenant may use, e.g. ["www", "api", "admin"]. Each is
    /// one DNS label (a-z, 0-9 and '-', 1 to 63 characters, not starting or
    /// ending with '-'), listed once. Default: [].
    #[serde(default)]
    #[schemars(
        with = "Vec<String>",
        inner(length(min = 1, max = 63), pattern(LABEL_PATTERN))
    )]
    pub reserved_subdomains: Vec<Spanned<String>>,
    /// Whether the gateway may take the tenant from an `X-Tenant` request
    /// header. Only for a trusted edge: anyone can set a header on a public
    /// one. Default: false.
    #[serde(default)]
    pub trust_tenant_header: bool,
}

/// `[plans.<name>]`: a plan (tier). The first four keys are required; the
/// quotas are optional (unset: no quota).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Plan")]
pub(crate) struct RawPlan {
    /// CONNECTION LIMIT of each login user of the tenant, enforced by
    /// PostgreSQL: an integer from 1 to 2147483647. Required.
    #[schemars(with = "i64", range(min = 1, max = i32::MAX))]
    pub connection_limit: Spanned<i64>,
    /// `statement_timeout` of each login user of the tenant, enforced by
    /// PostgreSQL: an integer followed by a unit among us, ms, s, min, h, d,
    /// e.g. "500ms", "5s" or "2min" (a bare integer is milliseconds; "0"
    /// means no timeout), at most 2147483647ms (about 24 days). Required.
    #[schemars(with = "String", pattern(DURATION_PATTERN))]
    pub statement_timeout: Spanned<String>,
    /// Size of the gateway's connection pool for each (tenant, role): an
    /// integer from 1 to 4294967295. Required.
    #[schemars(with = "i64", range(min = 1, max = u32::MAX))]
    pub pool_size: Spanned<i64>,
    /// Gateway rate limit per tenant, in requests per second (beyond it the
    /// gateway answers 429): an integer from 1 to 4294967295. Required.
    #[schemars(with = "i64", range(min = 1, max = u32::MAX))]
    pub requests_per_second: Spanned<i64>,
    /// Storage quota of each tenant's database (`pg_database_size`): an
    /// integer followed by a unit among B, kB, MB, GB, TB (1024-based, as
    /// in postgresql.conf) or KiB, MiB, GiB, TiB, e.g. "1GiB" or "500MB".
    /// The gateway measures it (every `--storage-interval`) and refuses
    /// writes past it (403 `quota_exceeded`). Default: unset (no quota).
    #[schemars(with = "Option<String>", pattern(SIZE_PATTERN))]
    pub storage: Option<Spanned<String>>,
    /// API calls through the gateway per tenant per UTC day, from 1 to
    /// 9007199254740991. The gateway counts them (every replica's, in the
    /// tenant's `tenantry.usage`) and refuses writes past it (403
    /// `quota_exceeded`). Default: unset (no quota).
    #[schemars(with = "Option<i64>", range(min = 1, max = 9_007_199_254_740_991_i64))]
    pub requests_per_day: Option<Spanned<i64>>,
    /// Login users (admins, developers and customers together) a tenant of
    /// this plan may have in tenants.toml, from 0 to 1000000. Default:
    /// unset (no limit).
    #[schemars(with = "Option<i64>", range(min = 0, max = 1_000_000))]
    pub max_users: Option<Spanned<i64>>,
}

/// `storage`: an integer and a size unit.
pub(crate) const SIZE_PATTERN: &str = r"^[0-9]+ ?(B|kB|MB|GB|TB|KiB|MiB|GiB|TiB)$";

/// `[tenants.<db>]`: a tenant, i.e. one PostgreSQL database (named by the
/// key), its four group roles and its users. Only `plan` is required.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Tenant")]
pub(crate) struct RawTenant {
    /// Human name of the tenant, e.g. "Building Shop Inc."; must not be
    /// blank. Default: unset.
    #[schemars(with = "Option<String>", pattern(NOT_BLANK_PATTERN))]
    pub display_name: Option<Spanned<String>>,
    /// The server the tenant lives on: a key of `[servers]` (or "default"
    /// with a single `[server]`). Default: unset (tenantry places it).
    #[schemars(with = "Option<String>", pattern(SERVER_NAME_PATTERN))]
    pub server: Option<Spanned<String>>,
    /// Name of the tenant's plan: a key of `[plans]`. Required.
    #[schemars(with = "String")]
    pub plan: Spanned<String>,
    /// Label under which the gateway reaches this tenant
    /// (`<subdomain>.<base domain>`): one DNS label (a-z, 0-9 and '-', 1 to
    /// 63 characters, not starting or ending with '-'), unique across
    /// tenants and not in `routing.reserved_subdomains`.
    /// Default: the tenant key with '_' replaced by '-'.
    #[schemars(
        with = "Option<String>",
        length(min = 1, max = 63),
        pattern(LABEL_PATTERN)
    )]
    pub subdomain: Option<Spanned<String>>,
    /// Extra host names routed to this tenant, e.g.
    /// ["shop.building.example"]: lower-case, fully qualified (at least one
    /// dot), at most 253 characters, each used by one tenant only, and
    /// neither a base domain nor `<subdomain>.<base domain>` of a reserved
    /// subdomain or another tenant. Default: [].
    #[serde(default)]
    #[schemars(
        with = "Vec<String>",
        inner(length(min = 3, max = 253), pattern(DOMAIN_PATTERN))
    )]
    pub domains: Vec<Spanned<String>>,
    /// "active" (served) or "suspended": a suspended tenant's users get
    /// NOLOGIN and their sessions are ended, and the gateway answers 403;
    /// nothing is dropped, and "active" restores them. Default: "active".
    #[serde(default)]
    pub status: Status,
    /// Whether the tenant's database is protected from being dropped. To
    /// remove a tenant, set it to false and apply, then delete the tenant
    /// and run `tenantry apply --allow-destroy` (a backup is written to
    /// `[paths] backups` first). Default: true.
    #[schemars(extend("default" = true))]
    pub deletion_protection: Option<bool>,
    /// Environment variable holding the password of the tenant's gateway
    /// login (`<db>_gateway`), set for apply and the gateway alike: for
    /// deployments where the gateway cannot read the passwords tenantry
    /// generates under `[paths] secrets` (e.g. Kubernetes pods, which share
    /// no disk with the apply Job). Default: unset (generated once and
    /// saved, mode 0600, under `[paths] secrets`).
    #[schemars(with = "Option<String>", length(min = 1))]
    pub gateway_password_env: Option<Spanned<String>>,
    /// Users of the group `<db>_admin`: SELECT, INSERT, UPDATE and DELETE
    /// on every table. Default: [].
    #[serde(default)]
    #[schemars(extend("default" = []))]
    pub admins: Vec<RawUser>,
    /// Users of the group `<db>_developer`: SELECT, INSERT and UPDATE (no
    /// DELETE). Default: [].
    #[serde(default)]
    #[schemars(extend("default" = []))]
    pub developers: Vec<RawUser>,
    /// Users of the group `<db>_customer`: SELECT only. Default: [].
    #[serde(default)]
    #[schemars(extend("default" = []))]
    pub customers: Vec<RawUser>,
}

/// A user: a PostgreSQL login role, member of one group of one tenant. Its
/// password comes from `password_env`, from `password_file`, or (with
/// neither) is generated once and saved (mode 0600) under `[paths] secrets`.
/// At most one of `password_env` and `password_file` may be given.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    rename = "User",
    extend("not" = { "required": ["password_env", "password_file"] }),
)]
pub(crate) struct RawUser {
    /// Login role name: a lower-case PostgreSQL identifier (a-z, 0-9 and
    /// '_', starting with a letter or '_', at most 63 bytes), not reserved
    /// (`postgres`, `template0`, `template1`, `pg_*`, `public`, `none`,
    /// `current_user`, `current_role`, `session_user`). Roles are
    /// cluster-wide: unique in the whole file, and neither a tenant
    /// database name nor a group role `<db>_owner/_admin/_developer/_customer`.
    /// Required.
    #[schemars(
        with = "String",
        pattern(ROLE_PATTERN),
        extend("not" = { "pattern": RESERVED_ROLE_PATTERN }),
    )]
    pub username: Spanned<String>,
    /// Name of an environment variable holding the password, e.g.
    /// "BUILDING_ADMIN_PASSWORD"; it must be set, and not empty or only
    /// white space, when tenantry runs. No '=' or NUL. Not together with
    /// `password_file`.
    /// Default: unset (see the user's description).
    #[schemars(with = "Option<String>", pattern(ENV_VAR_PATTERN))]
    pub password_env: Option<Spanned<String>>,
    /// Path of a file holding the password, relative to the directory of
    /// tenants.toml. After following links it must be a regular file of at
    /// most 4 KiB holding the password alone on one line (a trailing newline
    /// is fine; not blank), owned by the user running tenantry and private
    /// to it (`chmod 600`). Not together with `password_env`.
    /// Default: unset (see the user's description).
    #[schemars(with = "Option<String>", length(min = 1))]
    pub password_file: Option<Spanned<String>>,
    /// Contact address, e.g. "ops@example.com": exactly one '@' with text on
    /// both sides. Default: unset.
    #[schemars(with = "Option<String>", pattern(EMAIL_PATTERN))]
    pub email: Option<Spanned<String>>,
}
