//! What an admin cannot change on its server, found before apply starts:
//! the planner turns each into a conflict with the statement that resolves
//! it, rather than let apply fail halfway or only warn. Both depend on the
//! PostgreSQL major and the admin's rights, as the catalog reader found
//! them (`Observed::server_version_num`, `ObservedRole::grants`,
//! `Observed::new_public_owner`).
//!
//! What does not live here: conflicts over names that are not this
//! fleet's (`diff`), placement conflicts (`placement`).

use tenantry_layout::{quote, Group};

use crate::model::{DesiredTenant, Observed};
use crate::plan::{Change, Conflict};

/// Grants a change must alter that the admin cannot (PostgreSQL 16 and
/// later keep one grant per grantor; `ObservedRole::grants`): a membership
/// to revoke, or the gateway login inheriting a group, through the grant of
/// a role a non-superuser admin cannot act as. Apply would only warn and
/// leave it so, so it does not start.
pub(crate) fn grants(t: &DesiredTenant, o: &Observed, changes: &[Change]) -> Vec<Conflict> {
    let mut out = Vec::new();
    for c in changes {
        let (role, revoke, gateway) = match c {
            Change::UpdateRole { role, revoke, .. }
            | Change::UpdateUser {
                user: role, revoke, ..
            } => (role, revoke, false),
            Change::UpdateGatewayLogin { role, revoke, .. } => (role, revoke, true),
            _ => continue,
        };
        let Some(r) = o.roles.get(role) else {
            continue;
        };
        for g in r.grants.iter().filter(|g| !g.admin_acts_as_grantor) {
            let (role_q, group_q, grantor_q) = (quote(role), quote(&g.group), quote(&g.grantor));
            let (what, fix) = if revoke.contains(&g.group) {
                (
                    format!("is a member of {}", g.group),
                    format!("REVOKE {group_q} FROM {role_q} GRANTED BY {grantor_q}"),
                )
            } else if gateway && g.inherit {
                (
                    format!("inherits the privileges of {}", g.group),
                    format!(
                        "REVOKE INHERIT OPTION FOR {group_q} FROM {role_q} GRANTED BY {grantor_q}"
                    ),
                )
            } else {
                continue;
            };
            out.push(Conflict {
                tenant: t.name.to_string(),
                object: "role",
                name: role.clone(),
                reason: format!(
                    "{what} by a grant of \"{}\", which admin \"{}\", not a superuser, cannot change (PostgreSQL {} keeps a grant per grantor)",
                    g.grantor,
                    o.current_user,
                    o.server_version_num / 10000
                ),
                help: Some(format!(
                    "as \"{}\" (or a role with its privileges) or a superuser: {fix}; then plan again",
                    g.grantor
                )),
            });
        }
    }
    out
}

/// A tenant whose privileges apply must set while schema `public` of its
/// database belongs to a role that neither its owner nor a non-superuser
/// admin can act as: apply would fail there, so it does not start.
///
/// This is PostgreSQL 14 and older, where a new database's `public` belongs
/// to the bootstrap superuser (`Observed::new_public_owner`), or an existing
/// database whose `public` someone gave away. A superuser admin, or one
/// with the privileges of the role holding template1's `public`, hands it
/// over itself (`statements::public_schema_to_owner`).
pub(crate) fn public_schema(
    t: &DesiredTenant,
    o: &Observed,
    changes: &[Change],
) -> Option<Conflict> {
    if o.current_user_is_superuser
        || !changes
            .iter()
            .any(|c| matches!(c, Change::Privileges { .. }))
    {
        return None;
    }
    let owner = t.role(Group::Owner);
    let (holder, new) = match o.contents.get(t.name.as_str()) {
        Some(c) => (c.schema_owner.clone(), false),
        None => {
            let new = o.new_public_owner.as_ref()?;
            if new.admin_acts_as {
                return None;
            }
            (new.role.clone(), true)
        }
    };
    if holder == owner.as_str() || holder == "pg_database_owner" {
        return None;
    }
    let admin = &o.current_user;
    let (reason, help) = if new && holder.is_empty() {
        (
            format!(
                "of its new database may belong to the bootstrap superuser (PostgreSQL {} copies it from template1, which admin \"{admin}\" could not read to check)",
                o.server_version_num / 10000
            ),
            format!(
                "as a superuser: GRANT CONNECT ON DATABASE template1 TO {}, then plan again; or run tenantry as a superuser",
                quote(admin)
            ),
        )
    } else if new {
        (
            format!(
                "of its new database would belong to \"{holder}\" (PostgreSQL {} copies it from template1), which admin \"{admin}\", not a superuser, cannot hand to the tenant's owner",
                o.server_version_num / 10000
            ),
            "once per server, as a superuser: psql -d template1 -c 'ALTER SCHEMA public OWNER TO pg_database_owner; REVOKE CREATE ON SCHEMA public FROM PUBLIC' (what PostgreSQL 15 and later do), then plan again; or run tenantry as a superuser".to_owned(),
        )
    } else {
        (
            format!(
                "belongs to \"{holder}\", and admin \"{admin}\" is not a superuser, so it cannot hand it to {owner}"
            ),
            format!(
                "as a superuser: psql -d {} -c 'ALTER SCHEMA public OWNER TO {}', then plan again; or run tenantry as a superuser",
                t.name,
                owner.quoted()
            ),
        )
    };
    Some(Conflict {
        tenant: t.name.to_string(),
        object: "schema",
        name: "public".to_owned(),
        reason,
        help: Some(help),
    })
}
