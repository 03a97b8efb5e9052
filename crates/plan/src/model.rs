//! The two inputs of planning, as plain data: what the inventory wants
//! ([`Desired`]) and what the catalog holds ([`Observed`]).
//!
//! `Desired` is built from a validated inventory; `Observed` is filled by the
//! Postgres side (crate `tenantry-pg`) from a few set-based catalog queries.
//! Neither does any I/O here, so the planner is tested with hand-made values.

use std::collections::{BTreeMap, BTreeSet};

use secrecy::SecretString;
use tenantry_layout::{group_role, Group, Ident};
use tenantry_manifest::{Inventory, Login, Status};

/// Everything the inventory asks for.
#[derive(Debug, Default)]
pub struct Desired {
    pub fleet: String,
    pub tenants: Vec<DesiredTenant>,
    /// The newest migration version in the schema directory (None: no migrations).
    pub schema_version: Option<i64>,
}

#[derive(Debug)]
pub struct DesiredTenant {
    pub name: Ident,
    pub plan: String,
    pub status: Status,
    pub deletion_protection: bool,
    pub connection_limit: i32,
    pub statement_timeout_ms: u64,
    /// Canonical GUC text of the timeout, e.g. `5s`.
    pub statement_timeout: String,
    pub users: Vec<DesiredUser>,
    /// The gateway's login (`<db>_gateway`).
    pub gateway: DesiredGateway,
    /// This server's copy is part of a move (`tenantry_pg::moves` sets it
    /// for the copy it fills): its database marker says so. None for a
    /// tenant's own copy.
    pub moving: Option<tenantry_layout::Move>,
}

/// The gateway's login to a tenant, as the inventory wants it.
#[derive(Debug)]
pub struct DesiredGateway {
    pub name: Ident,
    /// The generated password if it exists already (None: generated on apply).
    pub password: Option<SecretString>,
}

#[derive(Debug)]
pub struct DesiredUser {
    pub name: Ident,
    pub group: Group,
    /// The password if it can be known now (None: generated on apply).
    pub password: Option<SecretString>,
    /// Where the password comes from, for display (never the password).
    pub password_source: String,
}

impl DesiredTenant {
    /// Name of one of the tenant's group roles: `<db>_<group>`.
    pub fn role(&self, group: Group) -> Ident {
        group_role(&self.name, group)
    }
}

impl Desired {
    /// Builds the desired state from a validated inventory. `password` yields
    /// each user's password where it can be known without side effects.
    pub fn from_inventory<E>(
        inventory: &Inventory,
        schema_version: Option<i64>,
        mut password: impl FnMut(&dyn Login) -> Result<Option<SecretString>, E>,
    ) -> Result<Desired, E> {
        let mut tenants = Vec::with_capacity(inventory.tenants.len());
        for t in &inventory.tenants {
            let tier = inventory.tier(t);
            let mut users = Vec::with_capacity(t.users.len());
            for u in &t.users {
                users.push(DesiredUser {
                    name: u.name.clone(),
                    group: u.group,
                    password: password(u)?,
                    password_source: u.password.describe(),
                });
            }
            tenants.push(DesiredTenant {
                name: t.name.clone(),
                plan: t.plan.clone(),
                status: t.status,
                deletion_protection: t.deletion_protection,
                connection_limit: tier.connection_limit,
                statement_timeout_ms: tier.statement_timeout_ms,
                statement_timeout: tier.statement_timeout_pg(),
                users,
                gateway: DesiredGateway {
                    name: t.gateway.name.clone(),
                    password: password(&t.gateway)?,
                },
                moving: None,
            });
        }
        Ok(Desired {
            fleet: inventory.fleet.clone(),
            tenants,
            schema_version,
        })
    }
}

/// Privileges per grantee (`PUBLIC` for the public pseudo-role), as Postgres
/// names them (`SELECT`, `CONNECT`, ...).
pub type Acl = BTreeMap<String, BTreeSet<String>>;

/// Everything the catalog says that matters to tenantry.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    /// The admin connection's role.
    pub current_user: String,
    pub current_user_is_superuser: bool,
    /// `server_version_num`, e.g. `170010` (0 when not read).
    pub server_version_num: i32,
    /// Who will own schema `public` in a database created now: read for a
    /// non-superuser admin on PostgreSQL 14 and older only (see
    /// `tenantry_pg::introspect`); `None` otherwise.
    pub new_public_owner: Option<PublicOwner>,
    /// Whether stored password verifiers could be read (superuser only).
    pub can_read_passwords: bool,
    pub roles: BTreeMap<String, ObservedRole>,
    pub databases: BTreeMap<String, ObservedDatabase>,
    /// Inside each managed tenant database that exists.
    pub contents: BTreeMap<String, ObservedContents>,
}

/// The owner of a schema, and whether the admin has its privileges (may
/// hand the schema to someone else).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicOwner {
    /// Empty: unknown (template1 could not be read).
    pub role: String,
    pub admin_acts_as: bool,
}

impl PublicOwner {
    /// Whether the admin must hand `public` to the tenant's owner itself:
    /// neither `pg_database_owner` (the owner acts as it) nor out of reach.
    pub fn admin_hands_over(&self) -> bool {
        self.admin_acts_as && self.role != "pg_database_owner"
    }
}

#[derive(Debug, Default, Clone)]
pub struct ObservedRole {
    pub name: String,
    pub login: bool,
    pub superuser: bool,
    pub createdb: bool,
    pub createrole: bool,
    pub replication: bool,
    pub bypassrls: bool,
    pub connection_limit: i32,
    /// `rolconfig` entries, e.g. `statement_timeout=5s`.
    pub config: Vec<String>,
    pub comment: Option<String>,
    /// The stored verifier, when readable and set.
    pub password: Option<String>,
    /// Roles this role is a member of.
    pub member_of: BTreeSet<String>,
    /// Uses the privileges of the roles it is a member of without `SET
    /// ROLE`: `rolinherit`, and from PostgreSQL 16 on also any membership
    /// granted `WITH INHERIT TRUE`.
    pub inherit: bool,
    /// PostgreSQL 16 and later: each grant of its memberships (one per
    /// grantor; a plain REVOKE or GRANT touches only the admin's own). Empty
    /// before 16, where a membership is one grant whoever made it.
    pub grants: Vec<Grant>,
}

/// One grant of a membership in `group`, PostgreSQL 16 and later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub group: String,
    pub grantor: String,
    /// `inherit_option`: the member uses the group's privileges without
    /// `SET ROLE`.
    pub inherit: bool,
    /// Whether the admin may act as the grantor (`GRANTED BY`): a
    /// superuser, or a role with the grantor's privileges.
    pub admin_acts_as_grantor: bool,
}

impl ObservedRole {
    /// The value of a per-role setting, if set.
    pub fn setting(&self, name: &str) -> Option<&str> {
        self.config.iter().find_map(|entry| {
            let (k, v) = entry.split_once('=')?;
            (k == name).then_some(v)
        })
    }
}

#[derive(Debug, Default, Clone)]
pub struct ObservedDatabase {
    pub name: String,
    pub owner: String,
    pub allow_connections: bool,
    pub comment: Option<String>,
    /// Effective ACL (the default ACL when none was ever granted).
    pub acl: Acl,
}

#[derive(Debug, Default, Clone)]
pub struct ObservedContents {
    pub schema_owner: String,
    pub schema_acl: Acl,
    /// By name (the catalog reader sorts them: plan output must not depend
    /// on where a row sits in pg_class).
    pub relations: Vec<ObservedRelation>,
    /// Default privileges `FOR ROLE <db>_owner IN SCHEMA public`, by object
    /// type: `r` tables, `S` sequences.
    pub default_acl: BTreeMap<char, Acl>,
    /// Highest applied migration version (None: no migration history).
    pub migration_version: Option<i64>,
    /// The gateway's token store (schema `tenantry`).
    pub token_store: ObservedTokenStore,
}

/// The token store as the catalog has it; what it should be is
/// `tenantry_layout::tokens`. `None`: that object does not exist.
#[derive(Debug, Default, Clone)]
pub struct ObservedTokenStore {
    pub schema: Option<ObservedObject>,
    pub table: Option<ObservedObject>,
    pub function: Option<ObservedFunction>,
    /// `tenantry.usage` (`tenantry_layout::usage`).
    pub usage: Option<ObservedObject>,
    /// `tenantry.audit` (`tenantry_layout::audit`).
    pub audit: Option<ObservedObject>,
}

/// An object's owner and effective ACL.
#[derive(Debug, Default, Clone)]
pub struct ObservedObject {
    pub owner: String,
    pub acl: Acl,
}

/// The token lookup function as defined.
#[derive(Debug, Default, Clone)]
pub struct ObservedFunction {
    pub owner: String,
    pub acl: Acl,
    pub security_definer: bool,
    /// `proconfig`, e.g. `search_path=pg_catalog, pg_temp`.
    pub config: Vec<String>,
    /// `prosrc`.
    pub body: String,
    /// The result type, as `pg_get_function_result` prints it.
    pub returns: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelKind {
    Table,
    Sequence,
}

#[derive(Debug, Clone)]
pub struct ObservedRelation {
    pub name: String,
    pub kind: RelKind,
    pub owner: String,
    pub acl: Acl,
}
