//! The roles of a tenant database and what each may do.
//!
//! A tenant `<db>` has four group roles, `<db>_owner`, `<db>_admin`,
//! `<db>_developer` and `<db>_customer` ([`group_role`]); login users are
//! members of one of the last three. The owner owns the database and every
//! object in it; the others hold the privileges below, so PostgreSQL itself
//! enforces each caller's tier. Which of these roles exist and how they
//! drift is the planner's business (`tenantry-plan`), not this module's.

use crate::ident::{Ident, MAX_IDENT_BYTES};

/// The groups of a tenant database; each is a role `<db>_<group>`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    Owner,
    Admin,
    Developer,
    Customer,
}

impl Group {
    /// Every group, owner first.
    pub const ALL: [Group; 4] = [
        Group::Owner,
        Group::Admin,
        Group::Developer,
        Group::Customer,
    ];
    /// The groups users can be members of (all but the owner).
    pub const MEMBERS: [Group; 3] = [Group::Admin, Group::Developer, Group::Customer];

    /// `"owner"`, `"admin"`, `"developer"` or `"customer"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Group::Owner => "owner",
            Group::Admin => "admin",
            Group::Developer => "developer",
            Group::Customer => "customer",
        }
    }

    /// The inverse of [`as_str`](Self::as_str).
    pub fn parse(s: &str) -> Option<Group> {
        Group::ALL.into_iter().find(|g| g.as_str() == s)
    }

    /// Table privileges the group holds on every table of schema `public`
    /// (the migration history excepted).
    pub fn table_privileges(self) -> &'static [&'static str] {
        match self {
            Group::Admin => &["SELECT", "INSERT", "UPDATE", "DELETE"],
            Group::Developer => &["SELECT", "INSERT", "UPDATE"],
            Group::Customer => &["SELECT"],
            Group::Owner => &[],
        }
    }

    /// Sequence privileges the group holds on every sequence of `public`.
    pub fn sequence_privileges(self) -> &'static [&'static str] {
        match self {
            Group::Admin | Group::Developer => &["USAGE", "SELECT"],
            Group::Customer | Group::Owner => &[],
        }
    }
}

impl std::fmt::Display for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Database privileges of each member group.
pub const DATABASE_PRIVILEGES: &[&str] = &["CONNECT", "TEMPORARY"];

/// Database privileges of the gateway's login (NOINHERIT: it must hold
/// CONNECT itself to log in; everything else comes with `SET ROLE`).
pub const GATEWAY_DATABASE_PRIVILEGES: &[&str] = &["CONNECT"];

/// Longest suffix a tenant name gets in a group role (`_developer`).
pub const LONGEST_ROLE_SUFFIX: usize = "_developer".len();

/// Longest tenant (database) name whose group roles still fit PostgreSQL's
/// identifier limit.
pub const MAX_TENANT_NAME_BYTES: usize = MAX_IDENT_BYTES - LONGEST_ROLE_SUFFIX;

/// Role names PostgreSQL refuses or treats specially, beyond [`Ident`]'s rules.
pub const RESERVED_ROLE_NAMES: [&str; 5] = [
    "public",
    "none",
    "current_user",
    "current_role",
    "session_user",
];

/// The group role `<db>_<group>` of tenant `db`. `db` must be at most
/// [`MAX_TENANT_NAME_BYTES`] long, which validation of the inventory ensures.
pub fn group_role(db: &Ident, group: Group) -> Ident {
    Ident::new_unchecked(group_role_name(db, group))
}

/// The same name for a tenant name read from elsewhere (the catalog, a
/// marker), which may not be a valid [`Ident`]: quote it before use.
pub fn group_role_name(db: &str, group: Group) -> String {
    format!("{db}_{}", group.as_str())
}

/// The gateway's login to tenant `db`: `<db>_gateway`. LOGIN, NOINHERIT,
/// member of the three member groups, CONNECT on the database and no other
/// privilege of its own: logged in alone it can read nothing. The gateway
/// runs each request as the caller's group ([`set_role`]), so PostgreSQL
/// enforces the tier on every statement, and a tenant needs one pool of
/// connections, not one per group. Its password is always generated.
pub fn gateway_login(db: &Ident) -> Ident {
    Ident::new_unchecked(gateway_login_name(db))
}

/// [`gateway_login`] for a name read from elsewhere (quote it before use).
pub fn gateway_login_name(db: &str) -> String {
    format!("{db}{GATEWAY_SUFFIX}")
}

const GATEWAY_SUFFIX: &str = "_gateway";

/// SCRAM-SHA-256 iterations of the gateway login's stored verifier. The
/// password is generated (about 190 bits), so the iteration count adds
/// nothing against guessing it, and a low one makes every new connection of
/// the gateway cheaper (the client side of SCRAM runs PBKDF2 with the
/// server's count). Passwords people choose keep PostgreSQL's 4096.
pub const GATEWAY_SCRAM_ITERATIONS: u32 = 16;

/// Switches a gateway session to `role` (a tenant's group role): the
/// statement the gateway runs before a request's queries.
pub fn set_role(role: &str) -> String {
    format!("SET ROLE {}", crate::ident::quote(role))
}

/// The roles users are members of: `<db>_admin`, `<db>_developer`,
/// `<db>_customer`.
pub fn member_roles(db: &Ident) -> [Ident; 3] {
    Group::MEMBERS.map(|g| group_role(db, g))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_roles_are_db_underscore_group() {
        let db = Ident::parse("shop").unwrap();
        assert_eq!(group_role(&db, Group::Owner), "shop_owner");
        assert_eq!(
            member_roles(&db).map(|r| r.to_string()),
            ["shop_admin", "shop_developer", "shop_customer"]
        );
        assert_eq!(gateway_login(&db), "shop_gateway");
        assert_eq!(set_role("shop_admin"), "SET ROLE \"shop_admin\"");
        let longest = Ident::parse(&"a".repeat(MAX_TENANT_NAME_BYTES)).unwrap();
        assert!(gateway_login(&longest).len() <= MAX_IDENT_BYTES);
        assert_eq!(
            group_role(&longest, Group::Developer).len(),
            MAX_IDENT_BYTES
        );
        assert_eq!(Group::parse("admin"), Some(Group::Admin));
        assert_eq!(Group::parse("root"), None);
    }

    #[test]
    fn tiers_narrow_from_admin_to_customer() {
        assert!(Group::Customer.table_privileges() == ["SELECT"]);
        assert!(Group::Developer
            .table_privileges()
            .iter()
            .all(|p| Group::Admin.table_privileges().contains(p)));
        assert!(Group::Customer.sequence_privileges().is_empty());
    }
}
