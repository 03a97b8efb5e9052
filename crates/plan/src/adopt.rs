//! Adoption of a tenant made by another tool (the Terraform module tenantry
//! replaces): from what the catalog holds, decide whether the database and
//! roles match the inventory, and if they do, the SQL that marks them as
//! managed. Nothing here touches data, and nothing is forced: a mismatch is a
//! problem to report. Grants, memberships and settings are left to the next
//! plan, which shows them as repairs.

use std::collections::BTreeSet;

use tenantry_manifest::Group;

use crate::model::{DesiredTenant, Observed};
use crate::statements;
use tenantry_layout::{history, literal, quote, Kind, Marker};

/// What adoption needs to know beyond [`Observed`], read inside the tenant
/// database.
#[derive(Debug, Default, Clone)]
pub struct Survey {
    /// Objects of schema `public` not owned by the tenant's owner role, as
    /// ready-to-run `ALTER ... OWNER TO` targets: `(keyword, target, owner)`,
    /// e.g. `("TABLE", "public.widgets", "postgres")`.
    pub foreign_owned: Vec<(String, String, String)>,
    /// Every role holding a privilege on a relation of schema `public`.
    pub table_grantees: BTreeSet<String>,
    /// How the schema compares with the migrations.
    pub schema: SchemaCheck,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum SchemaCheck {
    /// The database already has a migration history; `problem` is set when
    /// it does not agree with the schema directory.
    #[default]
    NoMigrations,
    History {
        version: Option<i64>,
        problem: Option<String>,
    },
    /// No history; the tables hold everything the migrations up to
    /// `version` create. `extra`: what the database has beyond that (kept).
    Matches { version: i64, extra: Vec<String> },
    /// No history, and the tables differ from what the migrations create.
    Differs { missing: Vec<String> },
}

/// The verdict and, when there is no problem, what to run.
#[derive(Debug, Default)]
pub struct Adoption {
    /// Mismatches that stop adoption; nothing is changed when any exists.
    pub problems: Vec<String>,
    /// What adoption noticed and what the next plan will do about it.
    pub notes: Vec<String>,
    /// Whether the tenant is already managed by this fleet (nothing to do).
    pub already_managed: bool,
    /// First, on the admin database, one transaction: group roles, user
    /// markers, the admin's membership in the owner role.
    pub cluster_sql: Vec<String>,
    /// Then inside the tenant database, one transaction: object ownership,
    /// and, as the owner role, the migration history baseline (see
    /// [`baseline_sql`]).
    pub database_sql: Vec<String>,
    /// Closes that transaction, after the baseline.
    pub database_after_sql: Vec<String>,
    /// Last, on the admin database: the database's owner and marker. Until
    /// this commits the database is not managed, so adopt can run again
    /// after a crash at any step.
    pub marker_sql: Vec<String>,
    /// The schema version to record as applied (None: record nothing).
    pub baseline: Option<i64>,
}

fn marker(comment: Option<&str>) -> Option<Marker> {
    comment.and_then(Marker::parse)
}

/// Decides adoption of `t`. Pure: the caller reads `o` (with the tenant's
/// database, its group roles and its users) and `survey`.
pub fn adoption(t: &DesiredTenant, fleet: &str, o: &Observed, survey: &Survey) -> Adoption {
    let mut a = Adoption::default();
    let Some(db) = o.databases.get(t.name.as_str()) else {
        a.problems.push(format!(
            "database {} does not exist: there is nothing to adopt (`tenantry apply` creates it)",
            t.name
        ));
        return a;
    };
    let owner = t.role(Group::Owner);
    match marker(db.comment.as_deref()) {
        Some(m) if m.fleet == fleet && m.kind == Kind::Database && m.tenant == t.name => {
            a.already_managed = true;
            a.notes.push(format!(
                "database {} is already managed by fleet '{fleet}': nothing to adopt",
                t.name
            ));
            return a;
        }
        Some(m) => {
            a.problems.push(format!(
                "database {} is managed by tenantry fleet '{}' as {} of '{}': adopt only takes unmanaged databases",
                t.name,
                m.fleet,
                m.kind.as_str(),
                m.tenant
            ));
        }
        None => {}
    }

    // Group roles: ours or absent. Terraform's module makes none of them.
    for group in Group::ALL {
        let name = t.role(group);
        let kind = Kind::of(group);
        match o.roles.get(name.as_str()) {
            None => a
                .cluster_sql
                .extend(statements::group_role(
                    fleet,
                    &t.name,
                    kind,
                    true,
                    &[],
                    &[],
                    statements::Memberships::default(),
                )),
            Some(r) => match marker(r.comment.as_deref()) {
                Some(m) if m.fleet == fleet && m.kind == kind && m.tenant == t.name => {}
                _ => a.problems.push(format!(
                    "role {name} exists but is not tenantry's {} role of {}: rename or drop it, then adopt again",
                    kind.as_str(),
                    t.name
                )),
            },
        }
    }
    if !o.current_user_is_superuser {
        a.cluster_sql.push(statements::admin_membership(&owner));
    }

    // Users: existing ones get marked; absent ones are created by apply.
    let wanted: BTreeSet<&str> = t.users.iter().map(|u| u.name.as_str()).collect();
    for u in &t.users {
        let Some(r) = o.roles.get(u.name.as_str()) else {
            a.notes.push(format!(
                "user {} does not exist yet: apply creates it",
                u.name
            ));
            continue;
        };
        match marker(r.comment.as_deref()) {
            None => a.cluster_sql.push(format!(
                "COMMENT ON ROLE {} IS {}",
                quote(&u.name),
                literal(&Marker::new(fleet, &t.name, Kind::User).render())
            )),
            Some(m) if m.fleet == fleet && m.kind == Kind::User => {}
            Some(m) => a.problems.push(format!(
                "role {} is managed by tenantry fleet '{}' as {}: it cannot be adopted into fleet '{fleet}'",
                u.name,
                m.fleet,
                m.kind.as_str()
            )),
        }
        if r.superuser || r.replication || r.bypassrls {
            a.problems.push(format!(
                "user {} has SUPERUSER, REPLICATION or BYPASSRLS: a tenant user may not; remove it by hand (ALTER ROLE {} NOSUPERUSER NOREPLICATION NOBYPASSRLS), then adopt again",
                u.name,
                quote(&u.name)
            ));
        }
        if !r.login {
            a.notes.push(format!(
                "user {} cannot log in: apply enables LOGIN",
                u.name
            ));
        }
        let ours: BTreeSet<String> = Group::MEMBERS
            .iter()
            .map(|&g| t.role(g).to_string())
            .collect();
        for other in r.member_of.iter().filter(|m| !ours.contains(*m)) {
            a.notes.push(format!(
                "user {} is a member of {other}: apply revokes that membership",
                u.name
            ));
        }
    }

    // Whoever else can reach the data would lose that access on the next
    // apply: that is the inventory's call to make, not adopt's.
    let ours: BTreeSet<String> = Group::ALL.iter().map(|&g| t.role(g).to_string()).collect();
    let outsiders = |grantees: &mut dyn Iterator<Item = &String>| -> Vec<String> {
        grantees
            .filter(|g| {
                *g != "PUBLIC"
                    && !ours.contains(*g)
                    && !wanted.contains(g.as_str())
                    && **g != o.current_user
                    && **g != db.owner
            })
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    let db_outsiders = outsiders(&mut db.acl.keys());
    let table_outsiders = outsiders(&mut survey.table_grantees.iter());
    for g in db_outsiders.iter().chain(&table_outsiders) {
        a.problems.push(format!(
            "role {g} has privileges on {} but is not a user of it in tenants.toml: add it to the tenant (admins, developers or customers), or revoke its access by hand",
            t.name
        ));
    }
    if db.acl.contains_key("PUBLIC") {
        a.notes.push(format!(
            "every role may connect to {} (PUBLIC): apply revokes that",
            t.name
        ));
    }

    match &survey.schema {
        SchemaCheck::NoMigrations => {}
        SchemaCheck::History { problem: Some(p), .. } => a.problems.push(format!(
            "the migration history of {} does not agree with the schema directory: {p}",
            t.name
        )),
        SchemaCheck::History { version, .. } => a.notes.push(format!(
            "migration history present (at {}): migrate applies what is pending",
            version.map_or("no version".to_owned(), |v| format!("V{v}"))
        )),
        SchemaCheck::Matches { version, extra } => {
            a.baseline = Some(*version);
            a.notes.push(format!(
                "the tables match the migrations up to V{version}: they are recorded as applied, not run"
            ));
            if !extra.is_empty() {
                a.notes.push(format!(
                    "kept as they are, unknown to the schema directory: {}",
                    extra.join(", ")
                ));
            }
        }
        SchemaCheck::Differs { missing } => a.problems.push(format!(
            "the tables of {} differ from what the schema directory creates; missing or different: {}",
            t.name,
            missing.join("; ")
        )),
    }

    if !a.problems.is_empty() {
        a.cluster_sql.clear();
        return a;
    }
    let mut m = Marker::new(fleet, &t.name, Kind::Database);
    m.protected = Some(t.deletion_protection);
    a.marker_sql.push(format!(
        "ALTER DATABASE {} OWNER TO {}",
        quote(&t.name),
        quote(&owner)
    ));
    a.marker_sql.push(format!(
        "COMMENT ON DATABASE {} IS {}",
        quote(&t.name),
        literal(&m.render())
    ));
    // The new owner needs CREATE on the schema to receive objects; granted
    // and taken back in the same transaction.
    let needs_create = !survey.foreign_owned.is_empty() || a.baseline.is_some();
    if needs_create {
        a.database_sql.push(format!(
            "GRANT CREATE ON SCHEMA public TO {}",
            quote(&owner)
        ));
    }
    for (keyword, target, was) in &survey.foreign_owned {
        a.database_sql.push(format!(
            "ALTER {keyword} {target} OWNER TO {}",
            quote(&owner)
        ));
        a.notes.push(format!(
            "{} {target} is owned by {was}: it now belongs to {owner}",
            keyword.to_lowercase()
        ));
    }
    if needs_create {
        a.database_after_sql.push(format!(
            "REVOKE CREATE ON SCHEMA public FROM {}",
            quote(&owner)
        ));
    }
    a
}

/// Records migrations as applied without running them: acting as the owner
/// role, the history table in refinery's layout. The caller then inserts the
/// rows (version, name, applied_on, checksum) and resets the role.
pub fn baseline_sql(t: &DesiredTenant) -> Vec<String> {
    vec![statements::set_owner_role(t), history::CREATE.to_owned()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DesiredUser, ObservedDatabase, ObservedRole};
    use tenantry_manifest::Status;

    fn tenant() -> DesiredTenant {
        let user = |name: &str, group| DesiredUser {
            name: tenantry_layout::Ident::parse(name).unwrap(),
            group,
            password: None,
            password_source: "env X".into(),
        };
        DesiredTenant {
            name: tenantry_layout::Ident::parse("shop").unwrap(),
            gateway: crate::model::DesiredGateway {
                name: tenantry_layout::Ident::parse("shop_gateway").unwrap(),
                password: None,
            },
            moving: None,
            plan: "p".into(),
            status: Status::Active,
            deletion_protection: true,
            connection_limit: 5,
            statement_timeout_ms: 5000,
            statement_timeout: "5s".into(),
            users: vec![
                user("shop_admin_user", Group::Admin),
                user("shop_dev", Group::Developer),
            ],
        }
    }

    /// What the Terraform module leaves: a database owned by postgres, login
    /// users with direct grants, no group roles, no markers.
    fn terraform() -> Observed {
        let mut o = Observed {
            current_user: "postgres".into(),
            current_user_is_superuser: true,
            ..Observed::default()
        };
        let mut acl = crate::model::Acl::new();
        acl.insert("PUBLIC".into(), ["CONNECT".into()].into());
        acl.insert("shop_dev".into(), ["CONNECT".into()].into());
        o.databases.insert(
            "shop".into(),
            ObservedDatabase {
                name: "shop".into(),
                owner: "postgres".into(),
                allow_connections: true,
                comment: None,
                acl,
            },
        );
        for u in ["shop_admin_user", "shop_dev"] {
            o.roles.insert(
                u.into(),
                ObservedRole {
                    name: u.into(),
                    login: true,
                    connection_limit: -1,
                    ..ObservedRole::default()
                },
            );
        }
        o
    }

    fn survey() -> Survey {
        Survey {
            foreign_owned: vec![("TABLE".into(), "public.widgets".into(), "postgres".into())],
            table_grantees: ["shop_dev".to_owned(), "shop_admin_user".to_owned()].into(),
            schema: SchemaCheck::Matches {
                version: 1,
                extra: vec![],
            },
        }
    }

    #[test]
    fn terraform_made_tenant_is_marked_and_handed_to_the_owner_role() {
        let a = adoption(&tenant(), "f", &terraform(), &survey());
        assert!(a.problems.is_empty(), "{:?}", a.problems);
        let sql = [a.cluster_sql.join(";\n"), a.marker_sql.join(";\n")].join(";\n");
        for role in [
            "shop_owner",
            "shop_admin",
            "shop_developer",
            "shop_customer",
        ] {
            assert!(
                sql.contains(&format!("CREATE ROLE \"{role}\" NOLOGIN")),
                "{sql}"
            );
        }
        assert!(
            sql.contains(
                "COMMENT ON ROLE \"shop_dev\" IS 'tenantry:v1 fleet=f tenant=shop kind=user'"
            ),
            "{sql}"
        );
        assert!(
            sql.contains("ALTER DATABASE \"shop\" OWNER TO \"shop_owner\""),
            "{sql}"
        );
        assert!(sql.contains("kind=database protected=true'"), "{sql}");
        assert!(
            !sql.contains("GRANT \"shop_owner\" TO CURRENT_USER"),
            "superuser needs no membership"
        );
        assert_eq!(
            a.database_sql,
            [
                "GRANT CREATE ON SCHEMA public TO \"shop_owner\"",
                "ALTER TABLE public.widgets OWNER TO \"shop_owner\"",
            ]
        );
        assert_eq!(
            a.database_after_sql,
            ["REVOKE CREATE ON SCHEMA public FROM \"shop_owner\""]
        );
        assert_eq!(a.baseline, Some(1));
        assert!(
            a.notes.iter().any(|n| n.contains("PUBLIC")),
            "{:?}",
            a.notes
        );
        // Nothing that touches data or grants: those are the plan's.
        assert!(!sql.contains("DROP") && !sql.contains("REVOKE") && !sql.contains("DELETE"));
    }

    #[test]
    fn a_createrole_admin_joins_the_owner_role() {
        let mut o = terraform();
        o.current_user = "tenantry".into();
        o.current_user_is_superuser = false;
        let a = adoption(&tenant(), "f", &o, &survey());
        assert!(a
            .cluster_sql
            .iter()
            .any(|s| s == "GRANT \"shop_owner\" TO CURRENT_USER"));
    }

    #[test]
    fn mismatches_are_reported_and_nothing_is_run() {
        let t = tenant();
        // A user outside the inventory with access.
        let mut o = terraform();
        o.databases
            .get_mut("shop")
            .unwrap()
            .acl
            .insert("intern".into(), ["CONNECT".into()].into());
        let a = adoption(&t, "f", &o, &survey());
        assert!(
            a.problems
                .iter()
                .any(|p| p.contains("role intern has privileges on shop")),
            "{:?}",
            a.problems
        );
        assert!(a.cluster_sql.is_empty() && a.database_sql.is_empty() && a.marker_sql.is_empty());

        // A table grantee outside the inventory.
        let mut s = survey();
        s.table_grantees.insert("reporting".into());
        let a = adoption(&t, "f", &terraform(), &s);
        assert!(
            a.problems.iter().any(|p| p.contains("role reporting")),
            "{:?}",
            a.problems
        );

        // The schema differs.
        let mut s = survey();
        s.schema = SchemaCheck::Differs {
            missing: vec!["column widgets.price integer".into()],
        };
        let a = adoption(&t, "f", &terraform(), &s);
        assert!(
            a.problems.iter().any(|p| p.contains("widgets.price")),
            "{:?}",
            a.problems
        );

        // A group role name taken by someone else.
        let mut o = terraform();
        o.roles.insert(
            "shop_admin".into(),
            ObservedRole {
                name: "shop_admin".into(),
                ..Default::default()
            },
        );
        let a = adoption(&t, "f", &o, &survey());
        assert!(
            a.problems
                .iter()
                .any(|p| p.contains("role shop_admin exists")),
            "{:?}",
            a.problems
        );

        // A superuser tenant user.
        let mut o = terraform();
        o.roles.get_mut("shop_dev").unwrap().superuser = true;
        let a = adoption(&t, "f", &o, &survey());
        assert!(
            a.problems.iter().any(|p| p.contains("SUPERUSER")),
            "{:?}",
            a.problems
        );

        // Another fleet's database.
        let mut o = terraform();
        o.databases.get_mut("shop").unwrap().comment =
            Some("tenantry:v1 fleet=other tenant=shop kind=database".into());
        let a = adoption(&t, "f", &o, &survey());
        assert!(
            a.problems.iter().any(|p| p.contains("fleet 'other'")),
            "{:?}",
            a.problems
        );

        // No database at all.
        let mut o = terraform();
        o.databases.clear();
        let a = adoption(&t, "f", &o, &survey());
        assert!(a.problems[0].contains("does not exist"), "{:?}", a.problems);
    }

    #[test]
    fn an_adopted_tenant_is_left_alone() {
        let mut o = terraform();
        o.databases.get_mut("shop").unwrap().comment =
            Some("tenantry:v1 fleet=f tenant=shop kind=database protected=true".into());
        let a = adoption(&tenant(), "f", &o, &survey());
        assert!(a.already_managed && a.problems.is_empty());
        assert!(a.cluster_sql.is_empty() && a.marker_sql.is_empty());
    }

    #[test]
    fn a_missing_user_is_left_to_apply() {
        let mut o = terraform();
        o.roles.remove("shop_admin_user");
        let a = adoption(&tenant(), "f", &o, &survey());
        assert!(a.problems.is_empty(), "{:?}", a.problems);
        assert!(a
            .notes
            .iter()
            .any(|n| n.contains("shop_admin_user does not exist yet")));
    }
}
