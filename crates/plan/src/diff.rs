//! The planner: `(Desired, Observed) -> Plan`. Pure; every rule is unit-tested
//! here with hand-made catalogs.
//!
//! Ownership is read from markers only: an object is ours when its COMMENT is a
//! tenantry marker of this fleet. One exception covers a crash between
//! `CREATE DATABASE` and `COMMENT ON DATABASE`: a database with no comment owned
//! by our own `<db>_owner` role is ours too (apply then writes the marker).

use std::collections::{BTreeMap, BTreeSet};

use secrecy::ExposeSecret;
use tenantry_layout::roles::{
    DATABASE_PRIVILEGES, GATEWAY_DATABASE_PRIVILEGES, GATEWAY_SCRAM_ITERATIONS,
};
use tenantry_layout::{audit, history, tokens, usage, Group, Kind, Marker};
use tenantry_manifest::{parse_duration_ms, Status};

use crate::model::{
    Acl, Desired, DesiredTenant, Observed, ObservedContents, ObservedObject, ObservedTokenStore,
    RelKind,
};
use crate::plan::{Action, Change, Conflict, Diff, Plan, TenantPlan};
use crate::reach;
use crate::scram;

fn marker_of(comment: Option<&str>) -> Option<Marker> {
    comment.and_then(Marker::parse)
}

/// Computes the plan.
pub fn plan(desired: &Desired, observed: &Observed) -> Plan {
    let mut plan = Plan {
        fleet: desired.fleet.clone(),
        ..Plan::default()
    };
    let fleet = desired.fleet.as_str();
    let ours = |comment: Option<&str>| marker_of(comment).filter(|m| m.fleet == fleet);
    let wanted_users: BTreeSet<&str> = desired
        .tenants
        .iter()
        .flat_map(|t| t.users.iter().map(|u| u.name.as_str()))
        .collect();

    let matching = matching_passwords(desired, observed);
    // This fleet's login users that no tenant lists any more, by tenant.
    let mut unwanted_users: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (name, role) in &observed.roles {
        if let Some(m) = ours(role.comment.as_deref()) {
            if m.kind == Kind::User && !wanted_users.contains(name.as_str()) {
                unwanted_users.entry(m.tenant).or_default().push(name);
            }
        }
    }
    for t in &desired.tenants {
        let conflicts = conflicts(t, fleet, observed);
        if !conflicts.is_empty() {
            plan.conflicts.extend(conflicts);
            continue;
        }
        let mut changes = Vec::new();
        for group in Group::ALL {
            changes.extend(group_role(t, group, fleet, observed));
        }
        let db = observed.databases.get(t.name.as_str());
        match db {
            None => {
                changes.push(Change::CreateDatabase {
                    database: t.name.to_string(),
                    owner: t.role(Group::Owner).to_string(),
                });
                if let Some(to) = desired.schema_version {
                    changes.push(Change::Migrate {
                        database: t.name.to_string(),
                        from: None,
                        to,
                    });
                }
                changes.push(Change::Privileges {
                    database: t.name.to_string(),
                    diffs: vec![],
                    foreign_grantees: vec![],
                });
                changes.push(Change::TokenStore {
                    database: t.name.to_string(),
                    diffs: vec![],
                    foreign_grantees: vec![],
                    reown: false,
                });
            }
            Some(db) => {
                let (diffs, foreign) = database_diffs(t, fleet, db);
                if !diffs.is_empty() || !foreign.is_empty() {
                    changes.push(Change::UpdateDatabase {
                        database: t.name.to_string(),
                        diffs,
                        foreign_grantees: foreign,
                    });
                }
                if let Some(contents) = observed.contents.get(t.name.as_str()) {
                    match (contents.migration_version, desired.schema_version) {
                        (from, Some(to)) if from.is_none_or(|f| f < to) => {
                            changes.push(Change::Migrate {
                                database: t.name.to_string(),
                                from,
                                to,
                            })
                        }
                        (Some(at), latest) if latest.is_none_or(|l| at > l) => {
                            plan.warnings.push(format!(
                                "database {} is at migration V{at}, newer than the schema directory's {}",
                                t.name,
                                latest.map_or("(none)".to_owned(), |l| format!("V{l}"))
                            ))
                        }
                        _ => {}
                    }
                    let (diffs, foreign) = contents_diffs(t, contents);
                    if !diffs.is_empty() || !foreign.is_empty() {
                        changes.push(Change::Privileges {
                            database: t.name.to_string(),
                            diffs,
                            foreign_grantees: foreign,
                        });
                    }
                    let (diffs, foreign, reown) = token_store_diffs(t, &contents.token_store);
                    if !diffs.is_empty() || !foreign.is_empty() {
                        changes.push(Change::TokenStore {
                            database: t.name.to_string(),
                            diffs,
                            foreign_grantees: foreign,
                            reown,
                        });
                    }
                }
            }
        }
        for u in &t.users {
            changes.extend(user(t, u, fleet, observed, &matching));
        }
        changes.extend(gateway(t, fleet, observed, &matching));
        // Login users of this tenant that the file no longer lists.
        for name in unwanted_users.get(t.name.as_str()).into_iter().flatten() {
            changes.push(Change::DropUser {
                user: (*name).to_owned(),
            });
        }
        let mut out_of_reach = reach::grants(t, observed, &changes);
        out_of_reach.extend(reach::public_schema(t, observed, &changes));
        if !out_of_reach.is_empty() {
            plan.conflicts.extend(out_of_reach);
            continue;
        }
        if !changes.is_empty() {
            plan.tenants.push(TenantPlan {
                tenant: t.name.to_string(),
                action: if db.is_none() {
                    Action::Create
                } else {
                    Action::Update
                },
                changes,
            });
        }
    }

    // Tenants the file no longer lists: their database and every role they own.
    let wanted: BTreeSet<&str> = desired.tenants.iter().map(|t| t.name.as_str()).collect();
    let mut gone: BTreeMap<String, Vec<Change>> = BTreeMap::new();
    for db in observed.databases.values() {
        if wanted.contains(db.name.as_str()) {
            continue;
        }
        let protected = match ours(db.comment.as_deref()) {
            Some(m) if m.kind == Kind::Database && m.tenant == db.name => {
                m.protected.unwrap_or(true)
            }
            // A crash between CREATE DATABASE and its COMMENT: ours through
            // its owner role; protection unknown, so protected.
            None if db.comment.is_none()
                && owned_by_our_owner(observed, fleet, &db.name, &db.owner) =>
            {
                true
            }
            _ => continue,
        };
        gone.entry(db.name.clone())
            .or_default()
            .push(Change::DropDatabase {
                database: db.name.clone(),
                protected,
            });
    }
    // Roles first users, then groups, the owner last (it owns the database).
    let mut roles: Vec<(&String, Marker)> = observed
        .roles
        .iter()
        .filter_map(|(n, r)| ours(r.comment.as_deref()).map(|m| (n, m)))
        .filter(|(_, m)| !wanted.contains(m.tenant.as_str()))
        .collect();
    roles.sort_by_key(|(n, m)| (std::cmp::Reverse(m.kind), (*n).clone()));
    for (name, m) in roles {
        if m.kind == Kind::Database {
            continue;
        }
        let change = if m.kind == Kind::User {
            if wanted_users.contains(name.as_str()) {
                continue; // moved to a tenant that is still wanted: handled there
            }
            Change::DropUser { user: name.clone() }
        } else {
            Change::DropRole {
                role: name.clone(),
                kind: m.kind,
            }
        };
        gone.entry(m.tenant.clone()).or_default().push(change);
    }
    for (tenant, changes) in gone {
        plan.tenants.push(TenantPlan {
            tenant,
            action: Action::Destroy,
            changes,
        });
    }
    plan.tenants.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    plan
}

/// Whether database `db` is owned by this fleet's marked `<db>_owner` role.
fn owned_by_our_owner(o: &Observed, fleet: &str, db: &str, owner: &str) -> bool {
    owner == tenantry_layout::roles::group_role_name(db, Group::Owner)
        && o.roles
            .get(owner)
            .and_then(|r| marker_of(r.comment.as_deref()))
            .is_some_and(|m| m.fleet == fleet && m.kind == Kind::Owner && m.tenant == db)
}

/// Objects that carry the tenant's names but are not this fleet's.
fn conflicts(t: &DesiredTenant, fleet: &str, o: &Observed) -> Vec<Conflict> {
    let mut out = Vec::new();
    let describe = |m: Option<Marker>| match m {
        None => "exists but is not managed by tenantry".to_owned(),
        Some(m) if m.fleet != fleet => {
            format!("is managed by tenantry fleet '{}', not '{fleet}'", m.fleet)
        }
        Some(m) => format!(
            "is managed by tenantry as {} of tenant '{}'",
            m.kind.as_str(),
            m.tenant
        ),
    };
    if let Some(db) = o.databases.get(t.name.as_str()) {
        let m = marker_of(db.comment.as_deref());
        let ok = match &m {
            Some(m) => m.fleet == fleet && m.kind == Kind::Database && m.tenant == t.name,
            // Crash between CREATE DATABASE and its COMMENT: owned by our owner role.
            None => owned_by_our_owner(o, fleet, &t.name, &db.owner),
        };
        if !ok {
            out.push(Conflict {
                tenant: t.name.to_string(),
                object: "database",
                name: t.name.to_string(),
                reason: describe(m),
                help: None,
            });
        }
    }
    for group in Group::ALL {
        let name = t.role(group);
        if let Some(r) = o.roles.get(name.as_str()) {
            let m = marker_of(r.comment.as_deref());
            let ok = m.as_ref().is_some_and(|m| {
                m.fleet == fleet && m.kind == Kind::of(group) && m.tenant == t.name
            });
            if !ok {
                out.push(Conflict {
                    tenant: t.name.to_string(),
                    object: "role",
                    name: name.to_string(),
                    reason: describe(m),
                    help: None,
                });
            }
        }
    }
    if let Some(r) = o.roles.get(t.gateway.name.as_str()) {
        let m = marker_of(r.comment.as_deref());
        let ok = m
            .as_ref()
            .is_some_and(|m| m.fleet == fleet && m.kind == Kind::Gateway && m.tenant == t.name);
        if !ok {
            out.push(Conflict {
                tenant: t.name.to_string(),
                object: "role",
                name: t.gateway.name.to_string(),
                reason: describe(m),
                help: None,
            });
        }
    }
    for u in &t.users {
        if let Some(r) = o.roles.get(u.name.as_str()) {
            let m = marker_of(r.comment.as_deref());
            // A user may move between tenants of the same fleet.
            let ok = m
                .as_ref()
                .is_some_and(|m| m.fleet == fleet && m.kind == Kind::User);
            if !ok {
                out.push(Conflict {
                    tenant: t.name.to_string(),
                    object: "role",
                    name: u.name.to_string(),
                    reason: describe(m),
                    help: None,
                });
            }
        }
    }
    out
}

/// Attributes no tenant role may have, with their display names.
fn forbidden_attributes(r: &crate::model::ObservedRole) -> Vec<Diff> {
    [
        ("superuser", r.superuser),
        ("createdb", r.createdb),
        ("createrole", r.createrole),
        ("replication", r.replication),
        ("bypassrls", r.bypassrls),
    ]
    .into_iter()
    .filter(|(_, on)| *on)
    .map(|(what, _)| Diff::new(what, true, false))
    .collect()
}

fn group_role(t: &DesiredTenant, group: Group, fleet: &str, o: &Observed) -> Option<Change> {
    let name = t.role(group);
    let kind = Kind::of(group);
    let Some(r) = o.roles.get(name.as_str()) else {
        return Some(Change::CreateRole {
            role: name.to_string(),
            kind,
        });
    };
    let mut diffs = forbidden_attributes(r);
    if r.login {
        diffs.push(Diff::new("login", true, false));
    }
    let marker = Marker::new(fleet, &t.name, kind).render();
    if r.comment.as_deref() != Some(marker.as_str()) {
        diffs.push(Diff::new(
            "marker",
            r.comment.as_deref().unwrap_or("(none)"),
            &marker,
        ));
    }
    // Group roles are members of nothing (the admin connection's own
    // membership in the owner role is the other direction).
    let revoke: Vec<String> = r.member_of.iter().cloned().collect();
    for m in &revoke {
        diffs.push(Diff::new(format!("member of {m}"), "yes", "no"));
    }
    (!diffs.is_empty()).then_some(Change::UpdateRole {
        role: name.to_string(),
        kind,
        diffs,
        revoke,
    })
}

fn database_diffs(
    t: &DesiredTenant,
    fleet: &str,
    db: &crate::model::ObservedDatabase,
) -> (Vec<Diff>, Vec<String>) {
    let mut diffs = Vec::new();
    let owner = t.role(Group::Owner);
    if db.owner != owner {
        diffs.push(Diff::new("owner", &db.owner, &owner));
    }
    let mut marker = Marker::new(fleet, &t.name, Kind::Database);
    marker.protected = Some(t.deletion_protection);
    marker.moving.clone_from(&t.moving);
    let old = marker_of(db.comment.as_deref());
    if old.as_ref() != Some(&marker) {
        match old {
            Some(old) if old.protected.is_some() && old.protected != marker.protected => diffs
                .push(Diff::new(
                    "deletion_protection",
                    old.protected.unwrap_or(true),
                    t.deletion_protection,
                )),
            _ => diffs.push(Diff::new(
                "marker",
                db.comment.as_deref().unwrap_or("(none)"),
                marker.render(),
            )),
        }
    }
    if !db.allow_connections {
        diffs.push(Diff::new("allow_connections", false, true));
    }
    let mut expect: BTreeMap<String, &[&str]> = Group::MEMBERS
        .iter()
        .map(|&g| (t.role(g).to_string(), DATABASE_PRIVILEGES))
        .collect();
    expect.insert(t.gateway.name.to_string(), GATEWAY_DATABASE_PRIVILEGES);
    // The login a move of this tenant streams as connects while the move
    // runs; the move grants and drops it.
    let mover = tenantry_layout::moves::replication_name(fleet, &t.name);
    let ignore = [owner.as_str(), mover.as_str()];
    let foreign = acl_diffs("database", &db.acl, &expect, &ignore, &mut diffs);
    (diffs, foreign)
}

/// Compares an ACL with the expected privileges per grantee; every grantee not
/// expected (and not in `ignore`) is foreign: it should hold nothing.
fn acl_diffs(
    object: &str,
    acl: &Acl,
    expect: &BTreeMap<String, &[&str]>,
    ignore: &[&str],
    diffs: &mut Vec<Diff>,
) -> Vec<String> {
    let show = |set: &BTreeSet<String>| {
        if set.is_empty() {
            "(none)".to_owned()
        } else {
            ordered(set).join(", ")
        }
    };
    for (grantee, want) in expect {
        let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
        let have = acl.get(grantee).cloned().unwrap_or_default();
        if have != want {
            diffs.push(Diff::new(
                format!("{object}: {grantee}"),
                show(&have),
                show(&want),
            ));
        }
    }
    let mut foreign = Vec::new();
    for (grantee, have) in acl {
        if expect.contains_key(grantee) || ignore.contains(&grantee.as_str()) || have.is_empty() {
            continue;
        }
        diffs.push(Diff::new(
            format!("{object}: {grantee}"),
            show(have),
            "(none)",
        ));
        foreign.push(grantee.clone());
    }
    foreign
}

/// Privileges in the order people write them.
fn ordered(set: &BTreeSet<String>) -> Vec<&str> {
    const ORDER: &[&str] = &[
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "TRUNCATE",
        "REFERENCES",
        "TRIGGER",
        "USAGE",
        "CREATE",
        "CONNECT",
        "TEMPORARY",
        "EXECUTE",
    ];
    let mut v: Vec<&str> = set.iter().map(String::as_str).collect();
    v.sort_by_key(|p| ORDER.iter().position(|o| o == p).unwrap_or(usize::MAX));
    v
}

fn contents_diffs(t: &DesiredTenant, c: &ObservedContents) -> (Vec<Diff>, Vec<String>) {
    let mut diffs = Vec::new();
    let owner = t.role(Group::Owner);
    let mut foreign = BTreeSet::new();
    if c.schema_owner != owner {
        diffs.push(Diff::new("schema public: owner", &c.schema_owner, &owner));
    }
    let usage: &[&str] = &["USAGE"];
    let mut expect: BTreeMap<String, &[&str]> = Group::MEMBERS
        .iter()
        .map(|&g| (t.role(g).to_string(), usage))
        .collect();
    // The gateway's login finds the migration history (and no table else).
    expect.insert(t.gateway.name.to_string(), usage);
    foreign.extend(acl_diffs(
        "schema public",
        &c.schema_acl,
        &expect,
        &[owner.as_str(), "pg_database_owner"],
        &mut diffs,
    ));

    for rel in &c.relations {
        let mut expect: BTreeMap<String, &[&str]> = Group::MEMBERS
            .iter()
            .map(|&g| {
                let privs = match rel.kind {
                    _ if rel.name == history::TABLE => &[][..],
                    RelKind::Table => g.table_privileges(),
                    RelKind::Sequence => g.sequence_privileges(),
                };
                (t.role(g).to_string(), privs)
            })
            .collect();
        if rel.name == history::TABLE {
            expect.insert(t.gateway.name.to_string(), history::GATEWAY_PRIVILEGES);
        }
        let what = match rel.kind {
            RelKind::Table => format!("table {}", rel.name),
            RelKind::Sequence => format!("sequence {}", rel.name),
        };
        foreign.extend(acl_diffs(
            &what,
            &rel.acl,
            &expect,
            &[rel.owner.as_str()],
            &mut diffs,
        ));
    }
    for (objtype, label, privs) in [
        (
            'r',
            "default privileges on tables",
            Group::table_privileges as fn(Group) -> &'static [&'static str],
        ),
        (
            'S',
            "default privileges on sequences",
            Group::sequence_privileges,
        ),
    ] {
        let expect: BTreeMap<String, &[&str]> = Group::MEMBERS
            .iter()
            .map(|&g| (t.role(g).to_string(), privs(g)))
            .collect();
        let empty = Acl::new();
        let acl = c.default_acl.get(&objtype).unwrap_or(&empty);
        foreign.extend(acl_diffs(
            label,
            acl,
            &expect,
            &[owner.as_str()],
            &mut diffs,
        ));
    }
    // Expected-empty grantees show as "(none) -> (none)" never: drop no-op lines.
    diffs.retain(|d| d.old != d.new);
    (diffs, foreign.into_iter().collect())
}

/// How the token store differs from `tenantry_layout::tokens`' layout: the
/// diffs, roles holding privileges they should not (to revoke), and whether
/// an object belongs to a role other than the owner (to hand over first).
fn token_store_diffs(t: &DesiredTenant, s: &ObservedTokenStore) -> (Vec<Diff>, Vec<String>, bool) {
    let want = tokens::Expected::of(&t.name);
    let owner = want.owner.as_str();
    let mut diffs = Vec::new();
    let mut foreign = BTreeSet::new();
    let mut reown = false;
    let mut object = |what: &str, found: Option<&ObservedObject>, expect: tokens::Grants| {
        let Some(o) = found else {
            diffs.push(Diff::new(what, "(missing)", "present"));
            return;
        };
        if o.owner != owner {
            diffs.push(Diff::new(format!("{what}: owner"), &o.owner, owner));
            reown = true;
        }
        foreign.extend(acl_diffs(
            what,
            &o.acl,
            &expect,
            &[o.owner.as_str()],
            &mut diffs,
        ));
    };
    let schema = format!("token store: schema {}", tokens::SCHEMA);
    object(&schema, s.schema.as_ref(), want.schema());
    if s.schema.is_some() {
        let table = format!("token store: table {}.{}", tokens::SCHEMA, tokens::TABLE);
        object(&table, s.table.as_ref(), want.token_table());
        let usage = format!("usage: table {}.{}", tokens::SCHEMA, usage::TABLE);
        object(&usage, s.usage.as_ref(), want.usage_table());
        let audit = format!("audit trail: table {}.{}", tokens::SCHEMA, audit::TABLE);
        object(&audit, s.audit.as_ref(), want.audit_table());
        let what = format!("token store: function {}", tokens::FUNCTION_SIGNATURE);
        let function = s.function.as_ref().map(|f| ObservedObject {
            owner: f.owner.clone(),
            acl: f.acl.clone(),
        });
        object(&what, function.as_ref(), want.function());
        if let Some(f) = &s.function {
            if !f.security_definer {
                diffs.push(Diff::new(format!("{what}: security"), "invoker", "definer"));
            }
            if f.config != [tokens::FUNCTION_CONFIG] {
                diffs.push(Diff::new(
                    format!("{what}: settings"),
                    f.config.join("; "),
                    tokens::FUNCTION_CONFIG,
                ));
            }
            if f.body.trim() != tokens::FUNCTION_BODY.trim() {
                diffs.push(Diff::new(
                    format!("{what}: body"),
                    "(altered)",
                    "(tenantry's)",
                ));
            }
            if f.returns != "text" {
                diffs.push(Diff::new(format!("{what}: returns"), &f.returns, "text"));
            }
        }
    }
    diffs.retain(|d| d.old != d.new);
    (diffs, foreign.into_iter().collect(), reown)
}

/// The users whose stored verifier matches their source password. PBKDF2 is
/// slow on purpose (4096 rounds a check), so a fleet's worth is checked on
/// every core at once. The rounds come from the stored verifier, which a
/// tenant user can set: [`scram::verify`] computes at most
/// [`scram::VERIFIABLE_ITERATIONS`] of them and calls anything else drift.
fn matching_passwords<'a>(desired: &'a Desired, o: &Observed) -> BTreeSet<&'a str> {
    if !o.can_read_passwords {
        return BTreeSet::new();
    }
    const GATEWAY: std::ops::RangeInclusive<u32> =
        GATEWAY_SCRAM_ITERATIONS..=GATEWAY_SCRAM_ITERATIONS;
    type Work<'d, 'o> = (
        &'d str,
        &'d secrecy::SecretString,
        &'o str,
        &'static std::ops::RangeInclusive<u32>,
    );
    let logins = desired.tenants.iter().flat_map(|t| {
        t.users
            .iter()
            .map(|u| (&u.name, &u.password, &scram::VERIFIABLE_ITERATIONS))
            .chain([(&t.gateway.name, &t.gateway.password, &GATEWAY)])
    });
    let work: Vec<Work<'a, '_>> = logins
        .filter_map(|(name, password, allowed)| {
            let stored = o.roles.get(name.as_str())?.password.as_deref()?;
            Some((name.as_str(), password.as_ref()?, stored, allowed))
        })
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = work.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = work
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .filter(|(_, pw, stored, allowed)| {
                            scram::verify_within(pw.expose_secret(), stored, allowed)
                        })
                        .map(|(name, ..)| *name)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("verifier threads do not panic"))
            .collect()
    })
}

/// A login role of a tenant as it should be: a user or the gateway login.
struct LoginRole<'a> {
    name: &'a str,
    kind: Kind,
    /// Users inherit their group's privileges; the gateway login must not.
    inherit: bool,
    /// Exactly the roles it is a member of.
    groups: &'a [String],
    /// Whether the source password is known now.
    password: bool,
}

/// How login role `r` differs from `want`: the diffs, whether to send a new
/// verifier, and the memberships to revoke. Shared by users and the gateway
/// login: login while the tenant is active, the tier's connection limit and
/// statement timeout, the marker, exact memberships, the password.
fn login_role_diffs(
    t: &DesiredTenant,
    want: &LoginRole<'_>,
    r: &crate::model::ObservedRole,
    fleet: &str,
    o: &Observed,
    matching: &BTreeSet<&str>,
) -> (Vec<Diff>, bool, Vec<String>) {
    let login = t.status == Status::Active;
    let mut diffs = forbidden_attributes(r);
    if r.login != login {
        diffs.push(Diff::new("login", r.login, login));
    }
    if want.inherit != r.inherit {
        diffs.push(Diff::new("inherit", r.inherit, want.inherit));
    }
    if r.connection_limit != t.connection_limit {
        diffs.push(Diff::new(
            "connection limit",
            r.connection_limit,
            t.connection_limit,
        ));
    }
    let timeout = r.setting("statement_timeout");
    if timeout.and_then(parse_duration_ms) != Some(t.statement_timeout_ms) {
        diffs.push(Diff::new(
            "statement_timeout",
            timeout.unwrap_or("(unset)"),
            &t.statement_timeout,
        ));
    }
    let marker = Marker::new(fleet, &t.name, want.kind).render();
    if r.comment.as_deref() != Some(marker.as_str()) {
        diffs.push(Diff::new(
            "marker",
            r.comment.as_deref().unwrap_or("(none)"),
            &marker,
        ));
    }
    for group in want.groups {
        if !r.member_of.contains(group) {
            diffs.push(Diff::new(format!("member of {group}"), "no", "yes"));
        } else if want.inherit
            && !r.grants.is_empty()
            && !r.grants.iter().any(|g| &g.group == group && g.inherit)
        {
            // PostgreSQL 16+: a member only through grants WITH INHERIT
            // FALSE has none of the group's privileges without SET ROLE.
            diffs.push(Diff::new(format!("inherits {group}"), "no", "yes"));
        }
    }
    let revoke: Vec<String> = r
        .member_of
        .iter()
        .filter(|m| !want.groups.contains(m))
        .cloned()
        .collect();
    for m in &revoke {
        diffs.push(Diff::new(format!("member of {m}"), "yes", "no"));
    }
    let set_password = match (want.password, o.can_read_passwords) {
        // Not generated yet (the file is gone): a new one replaces whatever is set.
        (false, _) => true,
        (true, true) => !matching.contains(want.name),
        // The verifier cannot be read: never reset blindly on every run.
        (true, false) => false,
    };
    if set_password {
        diffs.push(Diff::new("password", "(hidden)", "(changed)"));
    }
    (diffs, set_password, revoke)
}

/// The gateway's login: created, or the drift from what
/// `tenantry_layout::roles::gateway_login` says it is.
fn gateway(
    t: &DesiredTenant,
    fleet: &str,
    o: &Observed,
    matching: &BTreeSet<&str>,
) -> Option<Change> {
    let g = &t.gateway;
    let login = t.status == Status::Active;
    let Some(r) = o.roles.get(g.name.as_str()) else {
        return Some(Change::CreateGatewayLogin {
            role: g.name.to_string(),
            login,
            connection_limit: t.connection_limit,
        });
    };
    let groups: Vec<String> = Group::MEMBERS
        .iter()
        .map(|&m| t.role(m).to_string())
        .collect();
    let want = LoginRole {
        name: &g.name,
        kind: Kind::Gateway,
        inherit: false,
        groups: &groups,
        password: g.password.is_some(),
    };
    let (diffs, set_password, revoke) = login_role_diffs(t, &want, r, fleet, o, matching);
    (!diffs.is_empty()).then_some(Change::UpdateGatewayLogin {
        role: g.name.to_string(),
        diffs,
        set_password,
        revoke,
    })
}

fn user(
    t: &DesiredTenant,
    u: &crate::model::DesiredUser,
    fleet: &str,
    o: &Observed,
    matching: &BTreeSet<&str>,
) -> Option<Change> {
    let group_role = t.role(u.group);
    let login = t.status == Status::Active;
    let Some(r) = o.roles.get(u.name.as_str()) else {
        return Some(Change::CreateUser {
            user: u.name.to_string(),
            group: u.group,
            login,
            connection_limit: t.connection_limit,
            statement_timeout: t.statement_timeout.clone(),
            password_source: u.password_source.clone(),
        });
    };
    let groups = [group_role.to_string()];
    let want = LoginRole {
        name: &u.name,
        kind: Kind::User,
        inherit: true,
        groups: &groups,
        password: u.password.is_some(),
    };
    let (diffs, set_password, revoke) = login_role_diffs(t, &want, r, fleet, o, matching);
    (!diffs.is_empty()).then_some(Change::UpdateUser {
        user: u.name.to_string(),
        group: u.group,
        diffs,
        set_password,
        revoke,
    })
}

#[cfg(test)]
#[path = "diff_tests.rs"]
mod tests;
