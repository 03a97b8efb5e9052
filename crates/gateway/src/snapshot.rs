//! The configuration in force: which hosts route where, each tenant's status,
//! plan limits, the server it lives on, the one login its pool uses (its
//! gateway login, or the DSN's user) and the group a request of each role
//! runs as; and each server's connection budget. Built from tenants.toml
//! and where each tenant lives (the caller reads that from the servers'
//! catalogs, see [`Homes`]), or from a `DATABASE_DSN` in single-tenant
//! mode; swapped whole on reload, so a request sees one consistent snapshot
//! from start to end.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tenantry_manifest::{Group, Inventory, Login as _, PasswordSource, Status};
use tenantry_pgconn::ServerAddress;

use crate::api::TenantInfo;
use crate::resolve::HostIndex;

/// Everything the gateway knows, at one point in time.
pub struct Snapshot {
    /// Where the inventory keeps generated passwords (reload watches it).
    pub secrets_dir: Option<std::path::PathBuf>,
    /// The users' `password_file`s (reload watches them too).
    pub password_files: Vec<std::path::PathBuf>,
    pub index: HostIndex,
    pub tenants: HashMap<String, Arc<TenantEntry>>,
    pub trust_tenant_header: bool,
    /// Single-tenant mode: every request goes to this tenant, Host ignored.
    pub single: Option<Arc<TenantEntry>>,
    /// The servers by name, with the gateway's connection budget on each
    /// (None: `--max-connections`).
    pub servers: BTreeMap<String, Option<usize>>,
    /// Tenants whose server is not known yet (not created, or a server
    /// could not be read): the reloader looks again until there are none.
    pub unplaced: usize,
    /// Servers whose catalog could not be read at this load.
    pub unreadable: BTreeSet<String>,
    /// The file's fleet (empty in single-tenant mode).
    pub fleet: String,
    /// Each server's admin URL, parsed (empty in single-tenant mode): where
    /// the gateway listens for tenant moves (see [`crate::moves`]).
    pub addresses: BTreeMap<String, Arc<ServerAddress>>,
    /// Which load this is: 0 for the first, one more per reload (set by
    /// [`crate::server::Gateway::replace`]). Pools are never made from a
    /// snapshot older than the one that last closed or resized its
    /// tenant's (see [`crate::pools::Target::epoch`]).
    pub epoch: u64,
}

/// One tenant as the gateway serves it.
pub struct TenantEntry {
    pub info: TenantInfo,
    /// The server its database is on (its pools are that server's).
    pub server: String,
    /// Its cutover to another server (`server`) is under way: its requests
    /// wait for a snapshot that says where it lives (see [`Unplaced::moving`]).
    pub moving: bool,
    pub suspended: bool,
    pub pool_size: usize,
    pub requests_per_second: u32,
    /// The plan's quotas (None: no limit).
    pub quotas: Quotas,
    /// How the tenant's pool logs in: [`GATEWAY`] (its gateway login) or,
    /// in single-tenant mode, [`DSN`].
    pub logins: BTreeMap<String, Login>,
    /// Changes when sizes or credentials change: pools must be rebuilt.
    pub fingerprint: String,
    /// Its server's address and options (one allocation per server).
    base: Arc<ServerAddress>,
    /// Requests run as the caller's group role (`SET ROLE <db>_<role>`):
    /// a tenant of the inventory, served through its gateway login. False
    /// in single-tenant mode, where the DSN's user is the only role.
    groups: bool,
}

/// A plan's quotas the gateway enforces (None: no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quotas {
    /// The database's size (`pg_database_size`).
    pub storage_bytes: Option<u64>,
    /// Requests through the gateway per UTC day.
    pub requests_per_day: Option<u64>,
}

/// Where the tenants of a file with several servers live, as read from the
/// servers' catalogs: each tenant's server, or why that is not known (not
/// created yet, a conflict, a server that could not be read). A file with
/// one server needs none.
#[derive(Clone, Debug, Default)]
pub struct Homes {
    pub tenants: BTreeMap<String, Result<String, Unplaced>>,
    /// The servers whose catalog could not be read.
    pub unreadable: BTreeSet<String>,
}

/// Why a tenant's server is not known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unplaced {
    pub reason: String,
    /// Looking again may find it (a server could not be read).
    pub retry: bool,
    /// It is being moved and its cutover is under way: neither copy takes
    /// requests until the move ends, so they wait for it (up to the
    /// checkout timeout) rather than fail.
    pub moving: bool,
}

/// The name the single-tenant mode gives its one server.
pub const SINGLE_SERVER: &str = "default";

/// The key of a tenant's gateway login in [`TenantEntry::logins`].
pub const GATEWAY: &str = "gateway";
/// The key of the `DATABASE_DSN` login in single-tenant mode.
pub const DSN: &str = "dsn";

/// How a role's pool connects, or why it cannot.
pub enum Login {
    Ready {
        user: String,
        password: SecretString,
    },
    /// The password cannot be read (not generated yet, variable unset, ...).
    Unavailable(String),
}

impl TenantEntry {
    /// The connection settings of a role's pool, built when a pool is made
    /// (a snapshot keeps only the user and password per role).
    pub fn config(&self, role: &str) -> Option<tokio_postgres::Config> {
        let Some(Login::Ready { user, password }) = self.logins.get(role) else {
            return None;
        };
        let mut config = self.base.config().clone();
        config
            .user(user)
            .password(password.expose_secret())
            .dbname(&self.info.name)
            .application_name("tenantry gateway");
        Some(config)
    }

    /// Whether both log in the same way: same users, same passwords (or the
    /// same reason not to). When they differ, pools must be rebuilt; when
    /// only the pool size differs, they can be resized.
    pub fn same_logins(&self, other: &TenantEntry) -> bool {
        self.logins.len() == other.logins.len()
            && self
                .logins
                .iter()
                .zip(&other.logins)
                .all(|((ra, a), (rb, b))| {
                    ra == rb
                        && match (a, b) {
                            (
                                Login::Ready {
                                    user: ua,
                                    password: pa,
                                },
                                Login::Ready {
                                    user: ub,
                                    password: pb,
                                },
                            ) => ua == ub && pa.expose_secret() == pb.expose_secret(),
                            (Login::Unavailable(x), Login::Unavailable(y)) => x == y,
                            _ => false,
                        }
                })
    }

    /// The login of the tenant's one pool, when it can log in: the gateway
    /// login, or the DSN's user in single-tenant mode.
    pub fn pool_login(&self) -> Option<&'static str> {
        [GATEWAY, DSN]
            .into_iter()
            .find(|r| matches!(self.logins.get(*r), Some(Login::Ready { .. })))
    }

    /// The login the pool uses (ready or not): what errors name.
    pub fn pool_key_role(&self) -> &'static str {
        if self.groups {
            GATEWAY
        } else {
            DSN
        }
    }

    /// The group role a request of a `role` token runs as (`<db>_<role>`),
    /// or None when the pool's login is the only role (single-tenant mode)
    /// or `role` is no member group.
    pub fn session_role(&self, role: &str) -> Option<String> {
        let group = Group::parse(role).filter(|g| Group::MEMBERS.contains(g))?;
        self.groups
            .then(|| tenantry_layout::roles::group_role_name(&self.info.name, group))
    }
}

impl Snapshot {
    /// From a validated inventory with one server: reads every user's
    /// password now (from its env variable or file), so requests never
    /// touch the filesystem.
    pub fn from_inventory(inventory: &Inventory) -> Result<Snapshot, String> {
        Snapshot::from_fleet(inventory, &Homes::default())
    }

    /// From a validated inventory and where its tenants live (`homes`; a
    /// tenant missing from it lives on the file's only server, or, with
    /// several, is not known).
    pub fn from_fleet(inventory: &Inventory, homes: &Homes) -> Result<Snapshot, String> {
        let mut bases = BTreeMap::new();
        for (name, server) in &inventory.servers {
            let url = server.admin_url.as_ref().ok_or_else(|| {
                if inventory.servers.len() == 1 {
                    "the gateway needs [server].admin_url (or TENANTRY_ADMIN_URL) for the server's host and port".to_owned()
                } else {
                    format!(
                        "the gateway needs the admin URL of server {name} for its host and port: set admin_url in [servers.{name}] or {}",
                        tenantry_manifest::admin_url_env(name)
                    )
                }
            })?;
            let address = ServerAddress::parse(url).map_err(|e| {
                format!("the admin_url of server {name} is not a valid connection string: {e}")
            })?;
            bases.insert(name.clone(), Arc::new(address));
        }
        let only = (inventory.servers.len() == 1)
            .then(|| inventory.servers.keys().next().expect("one server").clone());
        let mut unplaced = 0;
        let mut tenants = HashMap::with_capacity(inventory.tenants.len());
        for t in &inventory.tenants {
            let tier = inventory.tier(t);
            let mut logins = BTreeMap::new();
            let mut fingerprint = Sha256::new();
            fingerprint.update(tier.pool_size.to_le_bytes());
            let home = match (homes.tenants.get(t.name.as_str()), &only) {
                (Some(home), _) => home.clone(),
                (None, Some(only)) => Ok(only.clone()),
                (None, None) => Err(Unplaced {
                    reason: "where it lives is not known".to_owned(),
                    retry: true,
                    moving: false,
                }),
            };
            // Its server, or (not known) one to name in metrics and errors.
            let server = match &home {
                Ok(server) => server.clone(),
                Err(_) => t
                    .server
                    .clone()
                    .or_else(|| inventory.servers.keys().next().cloned())
                    .expect("an inventory has a server"),
            };
            let base = bases
                .get(&server)
                .ok_or_else(|| {
                    format!(
                        "tenant {} lives on server {server}, which is not in the file",
                        t.name
                    )
                })?
                .clone();
            fingerprint.update(format!("server:{server}:{}:", base.target("")));
            // One login per tenant: its gateway login (`<db>_gateway`),
            // which runs each request as the caller's group (`SET ROLE`).
            let gateway = &t.gateway;
            let login = match (&home, gateway.load_password()) {
                (Err(why), _) => {
                    if why.retry {
                        unplaced += 1;
                    }
                    Login::Unavailable(format!("its server is not known: {}", why.reason))
                }
                (Ok(_), Ok(Some(pw))) => {
                    fingerprint.update(format!("gateway:{}:", gateway.name));
                    fingerprint.update(pw.expose_secret().as_bytes());
                    Login::Ready {
                        user: gateway.name.to_string(),
                        password: pw,
                    }
                }
                (Ok(_), Ok(None)) => Login::Unavailable(format!(
                    "the password of the gateway login {} has not been generated yet: run `tenantry apply`",
                    gateway.name
                )),
                (Ok(_), Err(e)) => Login::Unavailable(e.to_string()),
            };
            logins.insert(GATEWAY.to_owned(), login);
            let entry = TenantEntry {
                info: TenantInfo {
                    name: t.name.to_string(),
                    display_name: t.display_name.clone(),
                    plan: t.plan.clone(),
                },
                server,
                moving: home.as_ref().err().is_some_and(|why| why.moving),
                suspended: t.status == Status::Suspended,
                pool_size: tier.pool_size as usize,
                requests_per_second: tier.requests_per_second,
                quotas: Quotas {
                    storage_bytes: tier.storage_bytes,
                    requests_per_day: tier.requests_per_day,
                },
                logins,
                fingerprint: format!("{:x}", fingerprint.finalize()),
                base,
                groups: true,
            };
            tenants.insert(t.name.to_string(), Arc::new(entry));
        }
        let mut password_files: Vec<std::path::PathBuf> = inventory
            .tenants
            .iter()
            .flat_map(|t| &t.users)
            .filter_map(|u| match &u.password {
                PasswordSource::File { path } => Some(path.clone()),
                _ => None,
            })
            .collect();
        password_files.sort();
        password_files.dedup();
        Ok(Snapshot {
            secrets_dir: Some(inventory.paths.secrets.clone()),
            password_files,
            index: HostIndex::build(inventory),
            tenants,
            trust_tenant_header: inventory.routing.trust_tenant_header,
            single: None,
            servers: inventory
                .servers
                .iter()
                .map(|(name, s)| (name.clone(), s.gateway_connections))
                .collect(),
            unplaced,
            unreadable: homes.unreadable.clone(),
            epoch: 0,
            fleet: inventory.fleet.clone(),
            addresses: bases,
        })
    }

    /// Single-tenant mode from a `DATABASE_DSN`: the database in the DSN is the
    /// tenant, the DSN's user its only login.
    pub fn single_tenant(
        dsn: &SecretString,
        pool_size: usize,
        requests_per_second: u32,
    ) -> Result<Snapshot, String> {
        let address = ServerAddress::parse(dsn)
            .map_err(|e| format!("DATABASE_DSN is not a valid connection string: {e}"))?;
        let db = address
            .dbname()
            .ok_or("DATABASE_DSN names no database")?
            .to_owned();
        let user = address.user().unwrap_or("postgres").to_owned();
        let password = address
            .password()
            .unwrap_or_else(|| SecretString::from(String::new()));
        let mut logins = BTreeMap::new();
        logins.insert(DSN.to_owned(), Login::Ready { user, password });
        let entry = Arc::new(TenantEntry {
            info: TenantInfo {
                name: db.clone(),
                display_name: None,
                plan: "single-tenant".to_owned(),
            },
            server: SINGLE_SERVER.to_owned(),
            moving: false,
            suspended: false,
            pool_size,
            requests_per_second,
            quotas: Quotas::default(),
            logins,
            fingerprint: String::new(),
            base: Arc::new(address),
            groups: false,
        });
        Ok(Snapshot {
            secrets_dir: None,
            password_files: Vec::new(),
            index: HostIndex::default(),
            tenants: HashMap::from([(db, entry.clone())]),
            trust_tenant_header: false,
            single: Some(entry),
            servers: BTreeMap::from([(SINGLE_SERVER.to_owned(), None)]),
            unplaced: 0,
            unreadable: BTreeSet::new(),
            epoch: 0,
            fleet: String::new(),
            addresses: BTreeMap::new(),
        })
    }

    /// Whether a look at the servers again may change something: a tenant
    /// whose server is not known, or a server that could not be read.
    pub fn needs_another_look(&self) -> bool {
        self.unplaced > 0 || !self.unreadable.is_empty()
    }

    /// Whether `other` serves the same tenants the same way: same servers,
    /// logins and fingerprints (what a look again at the servers can change).
    pub fn same_tenants(&self, other: &Snapshot) -> bool {
        self.unplaced == other.unplaced
            && self.unreadable == other.unreadable
            && self.tenants.len() == other.tenants.len()
            && self.tenants.iter().all(|(name, a)| {
                other.tenants.get(name).is_some_and(|b| {
                    a.server == b.server
                        && a.moving == b.moving
                        && a.fingerprint == b.fingerprint
                        && a.same_logins(b)
                })
            })
    }

    /// The tenant a request is for: the single tenant, or by Host, or by a
    /// trusted `X-Tenant` header.
    /// The tenant named `name` (in single-tenant mode, the one tenant).
    pub fn tenant(&self, name: &str) -> Option<Arc<TenantEntry>> {
        match &self.single {
            Some(single) => (single.info.name == name).then(|| single.clone()),
            None => self.tenants.get(name).cloned(),
        }
    }

    /// Every tenant served, by name.
    pub fn all_tenants(&self) -> Vec<Arc<TenantEntry>> {
        let mut all: Vec<Arc<TenantEntry>> = match &self.single {
            Some(single) => vec![single.clone()],
            None => self.tenants.values().cloned().collect(),
        };
        all.sort_by(|a, b| a.info.name.cmp(&b.info.name));
        all
    }

    pub fn route(&self, host: Option<&str>, x_tenant: Option<&str>) -> Option<&Arc<TenantEntry>> {
        if let Some(single) = &self.single {
            return Some(single);
        }
        let name = match (self.trust_tenant_header, x_tenant) {
            (true, Some(value)) => self.index.by_name(value),
            _ => host.and_then(|h| self.index.resolve(h)),
        }?;
        self.tenants.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One tenant, its gateway login's password generated as `gateway_pw`
    /// (or not yet, when None).
    fn snapshot(dir: &std::path::Path, gateway_pw: Option<&str>, pool_size: u32) -> Snapshot {
        let secrets = dir.join(".tenantry/secrets");
        tenantry_manifest::create_private_dir(&secrets).unwrap();
        let file = secrets.join("shop_gateway");
        let _ = std::fs::remove_file(&file);
        if let Some(pw) = gateway_pw {
            std::fs::write(&file, pw).unwrap();
            // Password files must be private (tenantry_manifest refuses others).
            let private =
                <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600);
            std::fs::set_permissions(&file, private).unwrap();
        }
        let text = format!(
            r#"
[server]
admin_url = "postgres://admin@127.0.0.1:5432/postgres"

[routing]
base_domains = ["localhost"]

[plans.p]
connection_limit = 5
statement_timeout = "5s"
pool_size = {pool_size}
requests_per_second = 20

[tenants.shop]
plan = "p"
admins     = [{{ username = "shop_a", password_env = "UNUSED_BY_THE_GATEWAY" }}]
"#
        );
        let env = |var: &str| {
            (var == "UNUSED_BY_THE_GATEWAY").then(|| "the admin's, unused here".to_owned())
        };
        let inventory = Inventory::from_str_with(&text, &dir.join("tenants.toml"), &env).unwrap();
        Snapshot::from_inventory(&inventory).unwrap()
    }

    #[test]
    fn one_login_per_tenant_and_requests_run_as_the_callers_group() {
        let dir = tempfile::tempdir().unwrap();
        let snap = snapshot(dir.path(), Some("gw-one"), 2);
        let shop = &snap.tenants["shop"];
        assert_eq!(shop.logins.len(), 1);
        assert!(
            matches!(&shop.logins[GATEWAY], Login::Ready { user, .. } if user == "shop_gateway")
        );
        assert_eq!(shop.pool_login(), Some(GATEWAY));
        assert_eq!(
            shop.session_role("developer").as_deref(),
            Some("shop_developer")
        );
        assert_eq!(shop.session_role("owner"), None, "never the owner");
        assert_eq!(shop.session_role("root"), None);
        let config = shop.config(GATEWAY).unwrap();
        assert_eq!(config.get_user(), Some("shop_gateway"));
        assert_eq!(config.get_dbname(), Some("shop"));

        let missing = snapshot(dir.path(), None, 2);
        let shop = &missing.tenants["shop"];
        assert!(
            matches!(&shop.logins[GATEWAY], Login::Unavailable(why) if why.contains("tenantry apply"))
        );
        assert_eq!(shop.pool_login(), None);
    }

    #[test]
    fn logins_tell_a_new_password_from_a_new_size() {
        let dir = tempfile::tempdir().unwrap();
        let shop = |s: &Snapshot| s.tenants["shop"].clone();
        let a = snapshot(dir.path(), Some("one"), 2);
        let same = snapshot(dir.path(), Some("one"), 2);
        assert_eq!(shop(&a).fingerprint, shop(&same).fingerprint);
        assert!(shop(&a).same_logins(&shop(&same)));

        // Only the size: same logins (the pools can be resized).
        let bigger = snapshot(dir.path(), Some("one"), 8);
        assert_ne!(shop(&a).fingerprint, shop(&bigger).fingerprint);
        assert!(shop(&a).same_logins(&shop(&bigger)));

        // A new password, with or without a new size: new logins.
        for size in [2, 8] {
            let rotated = snapshot(dir.path(), Some("two"), size);
            assert_ne!(shop(&a).fingerprint, shop(&rotated).fingerprint);
            assert!(!shop(&a).same_logins(&shop(&rotated)));
        }
    }

    #[test]
    fn each_tenant_dials_its_own_server_and_an_unknown_one_none() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join(".tenantry/secrets");
        tenantry_manifest::create_private_dir(&secrets).unwrap();
        for t in ["shop", "cafe"] {
            let file = secrets.join(format!("{t}_gateway"));
            std::fs::write(&file, "gw-password").unwrap();
            let private =
                <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600);
            std::fs::set_permissions(&file, private).unwrap();
        }
        let text = r#"
[servers.a]
admin_url = "postgres://admin@10.0.0.1:5432/postgres"
gateway_connections = 7

[servers.b]
admin_url = "postgres://admin@10.0.0.2:6432/postgres"

[plans.p]
connection_limit = 5
statement_timeout = "5s"
pool_size = 2
requests_per_second = 20

[tenants.shop]
plan = "p"

[tenants.cafe]
plan = "p"
"#;
        let inventory =
            Inventory::from_str_with(text, &dir.path().join("tenants.toml"), &|_| None).unwrap();
        let mut homes = Homes::default();
        homes.tenants.insert("shop".into(), Ok("b".into()));
        homes.tenants.insert(
            "cafe".into(),
            Err(Unplaced {
                reason: "server a could not be read".into(),
                retry: true,
                moving: false,
            }),
        );
        homes.unreadable.insert("a".into());
        let snap = Snapshot::from_fleet(&inventory, &homes).unwrap();
        let shop = &snap.tenants["shop"];
        assert_eq!(shop.server, "b");
        let config = shop.config(GATEWAY).unwrap();
        assert_eq!(config.get_ports(), [6432]);
        assert_eq!(snap.servers["a"], Some(7));
        assert_eq!(snap.servers["b"], None);
        // Not known: no login, the reason kept, and another look asked for.
        let cafe = &snap.tenants["cafe"];
        assert_eq!(cafe.pool_login(), None);
        assert!(
            matches!(&cafe.logins[GATEWAY], Login::Unavailable(why) if why.contains("server a could not be read"))
        );
        assert_eq!(snap.unplaced, 1);
        assert!(snap.needs_another_look());
        // The same look again: nothing new.
        let again = Snapshot::from_fleet(&inventory, &homes).unwrap();
        assert!(snap.same_tenants(&again));
        homes.tenants.insert("cafe".into(), Ok("a".into()));
        homes.unreadable.clear();
        let found = Snapshot::from_fleet(&inventory, &homes).unwrap();
        assert!(!snap.same_tenants(&found));
        assert!(!found.needs_another_look());
        assert_eq!(found.fleet, inventory.fleet);
        assert_eq!(found.addresses["b"].port(), 6432);

        // Its cutover to a under way: held (no login), looked for again,
        // and a change from the snapshot where it lived on b.
        let mut cutover = homes.clone();
        cutover.tenants.insert(
            "shop".into(),
            Err(Unplaced {
                reason: "being moved to server a: its cutover is under way".into(),
                retry: true,
                moving: true,
            }),
        );
        let moving = Snapshot::from_fleet(&inventory, &cutover).unwrap();
        let shop = &moving.tenants["shop"];
        assert!(shop.moving);
        assert_eq!(shop.pool_login(), None);
        assert!(!moving.tenants["cafe"].moving);
        assert!(moving.needs_another_look());
        assert!(!moving.same_tenants(&found));
        assert!(!found.tenants["shop"].moving);
    }
}
