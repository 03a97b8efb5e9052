//! The SQL each change runs, built only from validated names through
//! [`ident`]/[`literal`]. Every block is idempotent: re-running it after a crash
//! converges. Execution (connections, transactions, order) lives in `tenantry-pg`.

use tenantry_layout::roles::{
    gateway_login_name, group_role_name, member_roles, DATABASE_PRIVILEGES,
    GATEWAY_DATABASE_PRIVILEGES,
};
use tenantry_layout::{history, idents, literal, quote, tokens, Group, Kind, Marker};

use crate::model::{DesiredTenant, Grant, Observed};
use crate::plan::Diff;

/// `NOSUPERUSER NOCREATEDB ...` for the forbidden attributes a diff found set.
/// Only the attributes that drifted are named: a non-superuser admin may not
/// even mention SUPERUSER, REPLICATION or BYPASSRLS.
fn attribute_fixes(diffs: &[Diff]) -> String {
    let mut out = String::new();
    for d in diffs {
        let clause = match d.what.as_str() {
            "superuser" => " NOSUPERUSER",
            "createdb" => " NOCREATEDB",
            "createrole" => " NOCREATEROLE",
            "replication" => " NOREPLICATION",
            "bypassrls" => " NOBYPASSRLS",
            _ => continue,
        };
        out.push_str(clause);
    }
    out
}

/// A group role (NOLOGIN) with its marker. One transaction.
pub fn group_role(
    fleet: &str,
    tenant: &str,
    kind: Kind,
    create: bool,
    diffs: &[Diff],
    revoke: &[String],
    m: Memberships<'_>,
) -> Vec<String> {
    let group = kind
        .group()
        .expect("group_role is called with a group role's kind");
    let role = group_role_name(tenant, group);
    let mut sql = Vec::new();
    if create {
        sql.push(format!("CREATE ROLE {} NOLOGIN", quote(&role)));
    } else {
        sql.push(format!(
            "ALTER ROLE {} NOLOGIN{}",
            quote(&role),
            attribute_fixes(diffs)
        ));
    }
    for group in revoke {
        sql.extend(m.revoke(group, &role));
    }
    let marker = Marker::new(fleet, tenant, kind).render();
    sql.push(format!(
        "COMMENT ON ROLE {} IS {}",
        quote(&role),
        literal(&marker)
    ));
    sql
}

/// What the statements changing a role's memberships must know of the
/// server: its version and, from PostgreSQL 16 on, the role's grants (one
/// per grantor: a plain REVOKE or GRANT touches only the admin's own).
#[derive(Debug, Clone, Copy, Default)]
pub struct Memberships<'a> {
    pub server_version_num: i32,
    pub grants: &'a [Grant],
}

impl<'a> Memberships<'a> {
    /// Role `role` as `o` read it (no grants for a role yet to create).
    pub fn of(o: &'a Observed, role: &str) -> Memberships<'a> {
        Memberships {
            server_version_num: o.server_version_num,
            grants: o.roles.get(role).map_or(&[][..], |r| &r.grants[..]),
        }
    }

    /// Takes `group` away from `role` (unquoted names): before 16 one
    /// REVOKE; from 16 on one per grant, `GRANTED BY` its grantor.
    fn revoke(&self, group: &str, role: &str) -> Vec<String> {
        let (group_q, role_q) = (quote(group), quote(role));
        let by: Vec<String> = self
            .grants
            .iter()
            .filter(|g| g.group == group)
            .map(|g| {
                format!(
                    "REVOKE {group_q} FROM {role_q} GRANTED BY {}",
                    quote(&g.grantor)
                )
            })
            .collect();
        if by.is_empty() {
            vec![format!("REVOKE {group_q} FROM {role_q}")]
        } else {
            by
        }
    }

    /// From 16 on: every grant to `role` that lets it inherit (but those of
    /// the groups in `revoke`, about to go), made non-inheriting as its
    /// grantor. A REVOKE of the option, unlike a GRANT, never makes a grant.
    fn stop_inheriting(&self, role: &str, revoke: &[String]) -> Vec<String> {
        self.grants
            .iter()
            .filter(|g| g.inherit && !revoke.contains(&g.group))
            .map(|g| {
                format!(
                    "REVOKE INHERIT OPTION FOR {} FROM {} GRANTED BY {}",
                    quote(&g.group),
                    quote(role),
                    quote(&g.grantor)
                )
            })
            .collect()
    }

    /// The options of a repairing GRANT that sets whether the member
    /// inherits: from 16 on ` WITH INHERIT TRUE|FALSE`, before 16 none
    /// (the role's INHERIT or NOINHERIT decides).
    fn inherit_option(&self, inherit: bool) -> &'static str {
        match (self.server_version_num >= 160000, inherit) {
            (false, _) => "",
            (true, true) => " WITH INHERIT TRUE",
            (true, false) => " WITH INHERIT FALSE",
        }
    }
}

/// Lets a non-superuser admin (CREATEROLE, as on managed clouds) act as the
/// tenant's owner: create the database for it, run migrations, grant.
pub fn admin_membership(role: &str) -> String {
    format!("GRANT {} TO CURRENT_USER", quote(role))
}

/// `CREATE DATABASE`: cannot run inside a transaction.
pub fn create_database(t: &DesiredTenant) -> String {
    format!(
        "CREATE DATABASE {} OWNER {}",
        quote(&t.name),
        quote(&t.role(Group::Owner))
    )
}

/// Owner, marker and database-level isolation. One transaction.
pub fn database(
    fleet: &str,
    t: &DesiredTenant,
    allow_connections: bool,
    foreign: &[String],
) -> Vec<String> {
    let db = quote(&t.name);
    let mut marker = Marker::new(fleet, &t.name, Kind::Database);
    marker.protected = Some(t.deletion_protection);
    marker.moving.clone_from(&t.moving);
    let mut sql = vec![
        format!(
            "ALTER DATABASE {db} OWNER TO {}",
            quote(&t.role(Group::Owner))
        ),
        format!("COMMENT ON DATABASE {db} IS {}", literal(&marker.render())),
        format!("REVOKE ALL ON DATABASE {db} FROM PUBLIC"),
    ];
    for f in foreign.iter().filter(|f| *f != "PUBLIC") {
        sql.push(format!("REVOKE ALL ON DATABASE {db} FROM {}", quote(f)));
    }
    sql.push(format!(
        "GRANT {} ON DATABASE {db} TO {}",
        DATABASE_PRIVILEGES.join(", "),
        idents(member_roles(&t.name))
    ));
    sql.push(format!(
        "GRANT {} ON DATABASE {db} TO {}",
        GATEWAY_DATABASE_PRIVILEGES.join(", "),
        t.gateway.name.quoted()
    ));
    if !allow_connections {
        sql.push(format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true"));
    }
    sql
}

/// Inside the tenant database, as a superuser admin, before [`privileges`]:
/// gives schema `public` to the owner role whoever holds it. On PostgreSQL
/// 14 and older a new database's `public` belongs to the bootstrap
/// superuser, and PUBLIC may create in it; once the owner holds it,
/// [`privileges`] revokes that. From 15 on it belongs to
/// `pg_database_owner` and [`privileges`] takes it as the owner; this is
/// then a no-op.
pub fn public_schema_to_owner(t: &DesiredTenant) -> String {
    format!(
        "ALTER SCHEMA public OWNER TO {}",
        quote(&t.role(Group::Owner))
    )
}

/// Run inside the tenant database, before migrations and grants: act as the owner.
pub fn set_owner_role(t: &DesiredTenant) -> String {
    format!("SET ROLE {}", quote(&t.role(Group::Owner)))
}

/// Schema, table, sequence and default privileges inside the tenant database,
/// run as the owner role. One transaction. `has_history`: the migration
/// history table exists (no group may touch it).
pub fn privileges(t: &DesiredTenant, foreign: &[String], has_history: bool) -> Vec<String> {
    let owner = quote(&t.role(Group::Owner));
    let groups = idents(member_roles(&t.name));
    let mut revoke_from = vec!["PUBLIC".to_owned()];
    revoke_from.extend(
        foreign
            .iter()
            .filter(|f| *f != "PUBLIC" && **f != t.role(Group::Owner))
            .map(|f| quote(f)),
    );
    revoke_from.push(groups.clone());
    let revoke_from = revoke_from.join(", ");

    let mut sql = vec![
        format!("ALTER SCHEMA public OWNER TO {owner}"),
        format!("REVOKE ALL ON SCHEMA public FROM {revoke_from}"),
        format!(
            "GRANT USAGE ON SCHEMA public TO {groups}, {}",
            t.gateway.name.quoted()
        ),
        format!("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {revoke_from}"),
        format!("REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {revoke_from}"),
        format!("ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public REVOKE ALL ON TABLES FROM {revoke_from}"),
        format!("ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public REVOKE ALL ON SEQUENCES FROM {revoke_from}"),
    ];
    for g in Group::MEMBERS {
        let role = quote(&t.role(g));
        let tables = g.table_privileges().join(", ");
        sql.push(format!(
            "GRANT {tables} ON ALL TABLES IN SCHEMA public TO {role}"
        ));
        sql.push(format!(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public GRANT {tables} ON TABLES TO {role}"
        ));
        let seqs = g.sequence_privileges();
        if !seqs.is_empty() {
            let seqs = seqs.join(", ");
            sql.push(format!(
                "GRANT {seqs} ON ALL SEQUENCES IN SCHEMA public TO {role}"
            ));
            sql.push(format!(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public GRANT {seqs} ON SEQUENCES TO {role}"
            ));
        }
    }
    if has_history {
        sql.push(format!(
            "REVOKE ALL ON TABLE {} FROM {groups}",
            history::QUALIFIED
        ));
        sql.push(format!(
            "GRANT {} ON TABLE {} TO {}",
            history::GATEWAY_PRIVILEGES.join(", "),
            history::QUALIFIED,
            t.gateway.name.quoted()
        ));
    }
    sql
}

/// Creates or repairs the tenant's token store (`tenantry_layout::tokens`),
/// revoking what `foreign` roles hold on it. One transaction, as the owner
/// role; stored tokens are kept.
pub fn token_store(t: &DesiredTenant, foreign: &[String]) -> Vec<String> {
    tokens::setup(&t.name, foreign)
}

/// Hands the token store's objects to the owner role, as the admin, before
/// [`token_store`] when another role owns some (the function is dropped:
/// [`token_store`] creates it anew). Needs the schema to exist.
pub fn token_store_owner(t: &DesiredTenant) -> Vec<String> {
    let owner = t.role(Group::Owner).quoted();
    vec![
        format!("ALTER SCHEMA {} OWNER TO {owner}", tokens::SCHEMA),
        format!(
            "ALTER TABLE IF EXISTS {}.{} OWNER TO {owner}",
            tokens::SCHEMA,
            tokens::TABLE
        ),
        format!(
            "ALTER TABLE IF EXISTS {}.{} OWNER TO {owner}",
            tokens::SCHEMA,
            tenantry_layout::usage::TABLE
        ),
        format!(
            "ALTER TABLE IF EXISTS {}.{} OWNER TO {owner}",
            tokens::SCHEMA,
            tenantry_layout::audit::TABLE
        ),
        format!("DROP FUNCTION IF EXISTS {}", tokens::FUNCTION_SIGNATURE),
    ]
}

/// What a login user should look like.
pub struct UserSpec<'a> {
    pub fleet: &'a str,
    pub tenant: &'a DesiredTenant,
    pub user: &'a str,
    pub group: Group,
    pub login: bool,
    /// A SCRAM verifier to set, if any (never a clear password).
    pub verifier: Option<&'a str>,
}

/// Creates (`create`) or repairs a login user. One transaction.
///
/// From PostgreSQL 16 on the repair grants its group `WITH INHERIT TRUE`: a
/// user acts with its group's privileges without SET ROLE.
pub fn user(
    spec: &UserSpec<'_>,
    create: bool,
    diffs: &[Diff],
    revoke: &[String],
    m: Memberships<'_>,
) -> Vec<String> {
    let t = spec.tenant;
    login_role(
        spec.fleet,
        t,
        &LoginSql {
            role: spec.user,
            kind: Kind::User,
            login: spec.login,
            attributes: " INHERIT",
            grant_options: m.inherit_option(true),
            inherit_fixes: vec![],
            groups: quote(&t.role(spec.group)),
            verifier: spec.verifier,
        },
        create,
        diffs,
        revoke,
        m,
    )
}

/// Creates (`create`) or repairs the gateway's login of `t`: LOGIN while the
/// tenant is active, NOINHERIT, a member of the three member groups and of
/// nothing else, the tier's connection limit and statement timeout, its
/// marker. One transaction.
///
/// From PostgreSQL 16 on, whether a member inherits is an option of each
/// grant (NOINHERIT only sets the default for new ones): a repair grants
/// the groups again `WITH INHERIT FALSE`, and every inheriting grant of
/// another grantor too, `GRANTED BY` it.
pub fn gateway_login(
    fleet: &str,
    t: &DesiredTenant,
    create: bool,
    verifier: Option<&str>,
    diffs: &[Diff],
    revoke: &[String],
    m: Memberships<'_>,
) -> Vec<String> {
    login_role(
        fleet,
        t,
        &LoginSql {
            role: t.gateway.name.as_str(),
            kind: Kind::Gateway,
            login: t.status == tenantry_manifest::Status::Active,
            attributes: " NOINHERIT",
            grant_options: m.inherit_option(false),
            inherit_fixes: m.stop_inheriting(t.gateway.name.as_str(), revoke),
            groups: idents(member_roles(&t.name)),
            verifier,
        },
        create,
        diffs,
        revoke,
        m,
    )
}

/// A login role of tenant `t` as [`login_role`] writes it.
struct LoginSql<'a> {
    /// Unquoted.
    role: &'a str,
    kind: Kind,
    login: bool,
    /// Extra role attributes, e.g. ` NOINHERIT`.
    attributes: &'a str,
    /// Options of a repairing GRANT of its groups, e.g. ` WITH INHERIT FALSE`.
    grant_options: &'a str,
    /// Statements after that GRANT, e.g. other grantors' grants made
    /// non-inheriting.
    inherit_fixes: Vec<String>,
    /// The quoted roles it is a member of, comma-separated.
    groups: String,
    /// A SCRAM verifier to set, if any (never a clear password).
    verifier: Option<&'a str>,
}

/// The statements creating or repairing a login role of `t`: a user or the
/// gateway login.
fn login_role(
    fleet: &str,
    t: &DesiredTenant,
    l: &LoginSql<'_>,
    create: bool,
    diffs: &[Diff],
    revoke: &[String],
    m: Memberships<'_>,
) -> Vec<String> {
    let (role, groups, attributes) = (&quote(l.role), &l.groups, l.attributes);
    let login = if l.login { "LOGIN" } else { "NOLOGIN" };
    let password = l
        .verifier
        .map(|v| format!(" PASSWORD {}", literal(v)))
        .unwrap_or_default();
    let limit = t.connection_limit;
    let mut sql = Vec::new();
    if create {
        sql.push(format!(
            "CREATE ROLE {role} {login}{attributes} CONNECTION LIMIT {limit}{password} IN ROLE {groups}"
        ));
    } else {
        sql.push(format!(
            "ALTER ROLE {role} {login}{attributes} CONNECTION LIMIT {limit}{password}{}",
            attribute_fixes(diffs)
        ));
        sql.push(format!("GRANT {groups} TO {role}{}", l.grant_options));
        sql.extend(l.inherit_fixes.iter().cloned());
    }
    for group in revoke {
        sql.extend(m.revoke(group, l.role));
    }
    sql.push(format!(
        "ALTER ROLE {role} SET statement_timeout = {}",
        literal(&t.statement_timeout)
    ));
    let marker = Marker::new(fleet, &t.name, l.kind).render();
    sql.push(format!("COMMENT ON ROLE {role} IS {}", literal(&marker)));
    sql
}

/// Inside the tenant database: hand what a removed user owns to the owner role.
pub fn disown(user: &str, owner: &str) -> Vec<String> {
    vec![
        format!("REASSIGN OWNED BY {} TO {}", quote(user), quote(owner)),
        format!("DROP OWNED BY {}", quote(user)),
    ]
}

pub fn drop_role(role: &str) -> String {
    format!("DROP ROLE IF EXISTS {}", quote(role))
}

/// Stops new connections by the tenant's groups and, when it exists (a
/// tenant made before tenantry had one may lack it), its gateway login,
/// before a backup and drop.
pub fn revoke_connect(db: &str, gateway_exists: bool) -> String {
    let mut from = vec![
        "PUBLIC".to_owned(),
        idents(Group::MEMBERS.map(|g| group_role_name(db, g))),
    ];
    if gateway_exists {
        from.push(quote(&gateway_login_name(db)));
    }
    format!(
        "REVOKE CONNECT ON DATABASE {} FROM {}",
        quote(db),
        from.join(", ")
    )
}

pub fn drop_database(db: &str) -> String {
    format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote(db))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenantry_manifest::Status;

    fn tenant() -> DesiredTenant {
        DesiredTenant {
            name: tenantry_layout::Ident::parse("shop").unwrap(),
            gateway: crate::model::DesiredGateway {
                name: tenantry_layout::Ident::parse("shop_gateway").unwrap(),
                password: None,
            },
            moving: None,
            plan: "starter".into(),
            status: Status::Active,
            deletion_protection: true,
            connection_limit: 5,
            statement_timeout_ms: 5000,
            statement_timeout: "5s".into(),
            users: vec![],
        }
    }

    #[test]
    fn privileges_follow_the_tiers() {
        let sql = privileges(&tenant(), &["intruder".into()], true).join(";\n");
        assert!(sql.contains(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO \"shop_admin\""
        ));
        assert!(sql.contains(
            "GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO \"shop_developer\""
        ));
        assert!(sql.contains("GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"shop_customer\""));
        assert!(!sql.contains("ON ALL SEQUENCES IN SCHEMA public TO \"shop_customer\""));
        assert!(sql.contains("FROM PUBLIC, \"intruder\", \"shop_admin\""));
        assert!(sql.contains("REVOKE ALL ON TABLE public.refinery_schema_history"));
    }

    fn grant(group: &str, grantor: &str, inherit: bool) -> Grant {
        Grant {
            group: group.into(),
            grantor: grantor.into(),
            inherit,
            admin_acts_as_grantor: true,
        }
    }

    #[test]
    fn postgres_16_repairs_the_gateway_logins_grants_without_inherit() {
        let t = tenant();
        let groups = "\"shop_admin\", \"shop_developer\", \"shop_customer\"";
        let on = |server_version_num, grants| Memberships {
            server_version_num,
            grants,
        };
        let repair = |m| gateway_login("default", &t, false, None, &[], &[], m);
        // 16 and later: NOINHERIT is only the default for new grants; an
        // inheriting grant of another grantor is changed as that grantor.
        let grants = [
            grant("shop_admin", "tenantry", false),
            grant("shop_admin", "dba", true),
        ];
        let sql = repair(on(160014, &grants));
        assert!(sql.contains(&format!(
            "GRANT {groups} TO \"shop_gateway\" WITH INHERIT FALSE"
        )));
        assert!(sql.contains(
            &"REVOKE INHERIT OPTION FOR \"shop_admin\" FROM \"shop_gateway\" GRANTED BY \"dba\""
                .to_owned()
        ));
        assert_eq!(sql.iter().filter(|s| s.contains("GRANTED BY")).count(), 1);
        // 14 and 15 have no grant options (nor the syntax): NOINHERIT does it.
        assert!(repair(on(150018, &[])).contains(&format!("GRANT {groups} TO \"shop_gateway\"")));
        assert!(repair(on(140023, &[]))
            .iter()
            .all(|s| !s.contains("WITH INHERIT")));
        // Creation sets NOINHERIT first: its grants never inherit.
        let create = gateway_login("default", &t, true, None, &[], &[], on(170010, &[]));
        assert!(
            create[0].contains(" NOINHERIT ") && create[0].contains(&format!("IN ROLE {groups}"))
        );
    }

    #[test]
    fn postgres_16_revokes_a_membership_once_per_grantor() {
        let grants = [
            grant("cafe_admin", "dba", true),
            grant("cafe_admin", "postgres", true),
            grant("shop_admin", "postgres", true),
        ];
        let m = Memberships {
            server_version_num: 170010,
            grants: &grants,
        };
        assert_eq!(
            m.revoke("cafe_admin", "shop_bob"),
            [
                "REVOKE \"cafe_admin\" FROM \"shop_bob\" GRANTED BY \"dba\"",
                "REVOKE \"cafe_admin\" FROM \"shop_bob\" GRANTED BY \"postgres\""
            ]
        );
        // Before 16 (no grants read): one REVOKE ends the membership.
        assert_eq!(
            Memberships::default().revoke("cafe_admin", "shop_bob"),
            ["REVOKE \"cafe_admin\" FROM \"shop_bob\""]
        );
    }

    #[test]
    fn user_sql_carries_a_verifier_never_a_password() {
        let t = tenant();
        let spec = UserSpec {
            fleet: "default",
            tenant: &t,
            user: "bob",
            group: Group::Developer,
            login: true,
            verifier: Some("SCRAM-SHA-256$4096:c2FsdA==$a:b"),
        };
        let sql = user(&spec, true, &[], &[], Memberships::default());
        assert_eq!(
            sql[0],
            "CREATE ROLE \"bob\" LOGIN INHERIT CONNECTION LIMIT 5 PASSWORD 'SCRAM-SHA-256$4096:c2FsdA==$a:b' IN ROLE \"shop_developer\""
        );
        assert_eq!(sql[1], "ALTER ROLE \"bob\" SET statement_timeout = '5s'");
        assert!(sql[2].starts_with(
            "COMMENT ON ROLE \"bob\" IS 'tenantry:v1 fleet=default tenant=shop kind=user'"
        ));
    }

    #[test]
    fn only_drifted_attributes_are_named() {
        let d = [
            Diff::new("createdb", true, false),
            Diff::new("login", true, false),
        ];
        let sql = group_role(
            "f",
            "shop",
            Kind::Admin,
            false,
            &d,
            &[],
            Memberships::default(),
        );
        assert_eq!(sql[0], "ALTER ROLE \"shop_admin\" NOLOGIN NOCREATEDB");
    }
}
