//! The validated domain types of an inventory: [`Inventory`], its plans
//! ([`Tier`]), [`Tenant`]s and their [`User`]s. Values of these types come
//! out of validation (see `validate.rs`) and cannot hold invalid names.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use secrecy::SecretString;

use crate::duration::format_duration_ms;
use crate::{Group, Ident, ManifestError, PasswordSource};

/// A validated `tenants.toml`.
#[derive(Clone, Debug)]
pub struct Inventory {
    /// The `tenants.toml` path as given.
    pub path: PathBuf,
    /// The directory holding the file (absolute).
    pub base_dir: PathBuf,
    /// Tags every object this file manages: `[a-z0-9_-]{1,32}`.
    pub fleet: String,
    /// The PostgreSQL servers by name: `[servers.<name>]`, or the one
    /// `[server]` as [`crate::DEFAULT_SERVER`]. Never empty.
    pub servers: BTreeMap<String, Server>,
    pub routing: Routing,
    pub paths: Paths,
    /// Plans by name.
    pub plans: BTreeMap<String, Tier>,
    /// Tenants, sorted by name.
    pub tenants: Vec<Tenant>,
}

/// Whether loading an inventory checks that every user's password can be
/// read now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Secrets {
    /// Every `password_env` must be set to a non-blank value and every
    /// `password_file` must be a readable password file (see
    /// [`PasswordSource::load`]); otherwise that is a diagnostic like any
    /// other. What every command but the gateway wants.
    #[default]
    Required,
    /// Only what the file says is checked (variable names, paths, one
    /// source per user, and every other rule); whether a password can be
    /// read is left to [`User::load_password`], which applies the same
    /// rules later. For the gateway: a tenant whose password cannot be read
    /// is served as unavailable while the rest of the file takes effect.
    Deferred,
}

impl Inventory {
    /// Reads the file and validates it against the process environment,
    /// with every password required to be readable now
    /// ([`Secrets::Required`]).
    pub fn load(path: &Path) -> Result<Inventory, ManifestError> {
        Inventory::load_with(path, Secrets::Required)
    }

    /// Like [`load`](Self::load), checking passwords as `secrets` says.
    pub fn load_with(path: &Path, secrets: Secrets) -> Result<Inventory, ManifestError> {
        let source = read_manifest(path).map_err(|error| ManifestError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Inventory::from_str_with_secrets(&source, path, &|name| std::env::var(name).ok(), secrets)
    }

    /// Validates `source` as if read from `path`, looking environment
    /// variables up with `env` (tests inject their own), with every password
    /// required to be readable now ([`Secrets::Required`]).
    pub fn from_str_with(
        source: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Inventory, ManifestError> {
        Inventory::from_str_with_secrets(source, path, env, Secrets::Required)
    }

    /// Like [`from_str_with`](Self::from_str_with), checking passwords as
    /// `secrets` says.
    pub fn from_str_with_secrets(
        source: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        secrets: Secrets,
    ) -> Result<Inventory, ManifestError> {
        crate::validate::validate(source, path, env, secrets)
    }

    /// The one server of a file that names one, for the commands that
    /// work on one server; an error naming them for a file with several.
    pub fn only_server(&self) -> Result<&Server, ManifestError> {
        match self.servers.values().next() {
            Some(server) if self.servers.len() == 1 => Ok(server),
            _ => Err(self.several_servers()),
        }
    }

    /// [`only_server`](Self::only_server), to override its admin URL
    /// (`--admin-url`).
    pub fn only_server_mut(&mut self) -> Result<&mut Server, ManifestError> {
        if self.servers.len() != 1 {
            return Err(self.several_servers());
        }
        Ok(self.servers.values_mut().next().expect("one server"))
    }

    /// This inventory cut down to one server's share: that server alone and
    /// the tenants `keep` names (the ones placed there). What a per-server
    /// plan and apply work from.
    ///
    /// # Panics
    /// If `server` is not one of this inventory's servers.
    pub fn share(&self, server: &str, keep: &dyn Fn(&str) -> bool) -> Inventory {
        let one = self
            .servers
            .get(server)
            .unwrap_or_else(|| panic!("no server {server} in this inventory"))
            .clone();
        Inventory {
            servers: BTreeMap::from([(server.to_owned(), one)]),
            tenants: self
                .tenants
                .iter()
                .filter(|t| keep(t.name.as_str()))
                .cloned()
                .collect(),
            ..self.clone()
        }
    }

    fn several_servers(&self) -> ManifestError {
        ManifestError::SeveralServers {
            path: self.path.clone(),
            names: self.servers.keys().cloned().collect(),
        }
    }

    /// The tenant whose database is `name`.
    pub fn tenant(&self, name: &str) -> Option<&Tenant> {
        self.tenants
            .binary_search_by(|t| t.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.tenants[i])
    }

    /// The plan of a tenant of this inventory (validated to exist).
    ///
    /// # Panics
    /// If `tenant` names a plan this inventory does not have, which only
    /// happens for a tenant taken from another inventory.
    pub fn tier(&self, tenant: &Tenant) -> &Tier {
        self.plans.get(&tenant.plan).unwrap_or_else(|| {
            panic!(
                "tenant {} has plan {:?}, unknown to this inventory",
                tenant.name, tenant.plan
            )
        })
    }
}

/// How to reach the cluster as an administrator.
#[derive(Clone, Debug)]
pub struct Server {
    /// `[servers.<name>]`'s name, or [`crate::DEFAULT_SERVER`].
    pub name: String,
    /// `TENANTRY_ADMIN_URL_<NAME>` (or, for a file with one server,
    /// `TENANTRY_ADMIN_URL`) if set, else `admin_url`. Never printed:
    /// `Debug` shows it redacted.
    pub admin_url: Option<SecretString>,
    /// Where applications reach the cluster, when not where the admin does
    /// (`[server] app_host`, e.g. a service name or a pooler in front).
    pub app_host: Option<String>,
    /// `[server] app_port`.
    pub app_port: Option<u16>,
    /// `sslmode` in the DSNs given to applications (`[server] app_sslmode`).
    pub app_sslmode: Option<String>,
    /// Most tenants placement puts here (None: no limit).
    pub max_tenants: Option<u32>,
    /// The gateway's connection budget on this server (None: its
    /// `--max-connections`).
    pub gateway_connections: Option<usize>,
    pub status: ServerStatus,
}

/// Whether a server takes new tenants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServerStatus {
    #[default]
    Active,
    /// Keeps its tenants, gets no new ones.
    Draining,
}

/// Directories the tool works with, all absolute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    /// Migrations applied to every tenant database.
    pub schema: PathBuf,
    /// Where dumps are written before a database is dropped.
    pub backups: PathBuf,
    /// Where generated passwords live.
    pub secrets: PathBuf,
}

/// Host-based routing of the gateway.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routing {
    /// `<subdomain>.<base>` routes to the tenant with that subdomain.
    pub base_domains: Vec<String>,
    /// Subdomains no tenant may use.
    pub reserved_subdomains: Vec<String>,
    /// Whether the gateway may pick the tenant from an `X-Tenant` header
    /// (off by default: anyone can set a header on a public edge).
    pub trust_tenant_header: bool,
}

/// A validated plan (`[plans.<name>]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tier {
    pub name: String,
    /// `CONNECTION LIMIT` of the database, >= 1.
    pub connection_limit: i32,
    /// `statement_timeout` in milliseconds; 0 means none.
    pub statement_timeout_ms: u64,
    /// Gateway pool size per tenant, >= 1.
    pub pool_size: u32,
    /// Gateway rate limit per tenant, >= 1.
    pub requests_per_second: u32,
    /// Storage quota per tenant database, in bytes.
    pub storage_bytes: Option<u64>,
    /// API calls per tenant per UTC day.
    pub requests_per_day: Option<u64>,
    /// Login users per tenant in the file.
    pub max_users: Option<u32>,
}

impl Tier {
    /// Canonical Postgres GUC text: `"0"`, `"500ms"`, `"5s"`, `"2min"`, ...
    /// (the largest unit among ms, s, min, h, d that divides exactly).
    pub fn statement_timeout_pg(&self) -> String {
        format_duration_ms(self.statement_timeout_ms)
    }
}

/// Whether a tenant is served.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Debug,
    Default,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Active,
    Suspended,
}

impl Status {
    /// `"active"` or `"suspended"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Suspended => "suspended",
        }
    }
}

/// One tenant: a database, its group roles and its users.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant {
    /// The database name.
    pub name: Ident,
    pub display_name: Option<String>,
    /// Names a key of [`Inventory::plans`].
    pub plan: String,
    /// The server it is pinned to (a key of [`Inventory::servers`]); None:
    /// placed by tenantry.
    pub server: Option<String>,
    /// A DNS label, unique across tenants.
    pub subdomain: String,
    /// Extra host names routed to this tenant, unique across tenants.
    pub domains: Vec<String>,
    pub status: Status,
    pub deletion_protection: bool,
    /// Admins, then developers, then customers, each in file order.
    pub users: Vec<User>,
    /// The gateway's login to this tenant (see
    /// `tenantry_layout::roles::gateway_login`); its password is generated
    /// under `[paths] secrets`.
    pub gateway: GatewayLogin,
}

/// The login the gateway's pool of one tenant uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayLogin {
    /// `<db>_gateway`.
    pub name: Ident,
    /// [`PasswordSource::Generated`], or [`PasswordSource::Env`] with the
    /// tenant's `gateway_password_env`.
    pub password: PasswordSource,
}

/// A login role whose password tenantry knows: a [`User`] or a tenant's
/// [`GatewayLogin`].
pub trait Login {
    fn name(&self) -> &Ident;
    fn source(&self) -> &PasswordSource;

    /// The password if available now (see [`PasswordSource::load`]), errors
    /// naming the role.
    fn load_password(&self) -> Result<Option<SecretString>, ManifestError> {
        self.source().load().map_err(|e| e.for_user(self.name()))
    }

    /// The password, generated now if needed (see [`PasswordSource::ensure`]).
    fn ensure_password(&self) -> Result<SecretString, ManifestError> {
        self.source().ensure().map_err(|e| e.for_user(self.name()))
    }
}

impl Login for GatewayLogin {
    fn name(&self) -> &Ident {
        &self.name
    }
    fn source(&self) -> &PasswordSource {
        &self.password
    }
}

impl Login for User {
    fn name(&self) -> &Ident {
        &self.name
    }
    fn source(&self) -> &PasswordSource {
        &self.password
    }
}

impl Tenant {
    /// The group role of this tenant: `<db>_owner`, `<db>_admin`,
    /// `<db>_developer` or `<db>_customer`.
    pub fn role(&self, group: Group) -> Ident {
        tenantry_layout::group_role(&self.name, group)
    }

    /// The users of one group, in file order.
    pub fn users_in(&self, group: Group) -> impl Iterator<Item = &User> {
        self.users.iter().filter(move |u| u.group == group)
    }
}

/// A login role, member of one group of one tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: Ident,
    /// Never [`Group::Owner`].
    pub group: Group,
    pub email: Option<String>,
    pub password: PasswordSource,
}

impl User {
    /// [`PasswordSource::load`], with errors naming this user.
    pub fn load_password(&self) -> Result<Option<SecretString>, ManifestError> {
        Login::load_password(self)
    }

    /// [`PasswordSource::ensure`], with errors naming this user.
    pub fn ensure_password(&self) -> Result<SecretString, ManifestError> {
        Login::ensure_password(self)
    }
}

/// Largest tenants.toml read: far above any fleet's file, small enough that
/// a wrong `--config` cannot exhaust memory.
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// The text of tenants.toml: a regular file (after links) of at most
/// [`MAX_MANIFEST_BYTES`], so `--config /dev/zero` or a FIFO is an error,
/// not a hang.
fn read_manifest(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
    if !std::fs::metadata(path)?.is_file() {
        return Err(invalid("not a regular file".into()));
    }
    let file = std::fs::File::open(path)?;
    let mut text = String::new();
    file.take(MAX_MANIFEST_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(invalid(format!(
            "larger than {} MiB",
            MAX_MANIFEST_BYTES >> 20
        )));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_round_trip() {
        for g in Group::ALL {
            assert_eq!(Group::parse(g.as_str()), Some(g));
        }
        assert_eq!(Group::parse("root"), None);
        assert!(!Group::MEMBERS.contains(&Group::Owner));
    }

    #[test]
    fn tenant_roles() {
        let t = Tenant {
            name: Ident::parse("building_shop").unwrap(),
            display_name: None,
            plan: "starter".into(),
            server: None,
            subdomain: "building-shop".into(),
            domains: vec![],
            status: Status::Active,
            deletion_protection: true,
            users: vec![],
            gateway: GatewayLogin {
                name: Ident::parse("building_shop_gateway").unwrap(),
                password: PasswordSource::Generated {
                    path: "/s/building_shop_gateway".into(),
                },
            },
        };
        let roles: Vec<String> = Group::ALL.iter().map(|g| t.role(*g).to_string()).collect();
        assert_eq!(
            roles,
            [
                "building_shop_owner",
                "building_shop_admin",
                "building_shop_developer",
                "building_shop_customer"
            ]
        );
    }

    #[test]
    fn statement_timeout_text() {
        let mut t = Tier {
            name: "x".into(),
            connection_limit: 1,
            statement_timeout_ms: 0,
            pool_size: 1,
            requests_per_second: 1,
            storage_bytes: None,
            requests_per_day: None,
            max_users: None,
        };
        for (ms, text) in [(0, "0"), (500, "500ms"), (5000, "5s"), (120_000, "2min")] {
            t.statement_timeout_ms = ms;
            assert_eq!(t.statement_timeout_pg(), text);
        }
    }
}
