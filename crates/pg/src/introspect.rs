//! Reads the catalog into an [`Observed`]: three set-based queries on the
//! admin database for roles, memberships and databases, then one pipelined
//! round of queries inside each managed tenant database (schema, relation and
//! default ACLs, migration version), many databases at a time.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::{stream, StreamExt, TryStreamExt};
use tenantry_plan::diff::HISTORY_TABLE;
use tenantry_plan::model::{
    Acl, Observed, ObservedContents, ObservedDatabase, ObservedRelation, ObservedRole, RelKind,
};
use tenantry_plan::sql::{Kind, Marker};
use tokio_postgres::Client;

use crate::connect::Admin;
use crate::error::Error;

const MARKER_LIKE: &str = "tenantry:v1 %";

/// Grantee/privilege pairs as `grantee=PRIVILEGE` text (grantee 0 is PUBLIC).
const ACL_AGG: &str =
    "coalesce(array_agg(coalesce(g.rolname, 'PUBLIC') || '=' || a.privilege_type) \
     FILTER (WHERE a.privilege_type IS NOT NULL), '{}')";

fn acl(entries: Vec<String>) -> Acl {
    let mut acl = Acl::new();
    for e in entries {
        if let Some((grantee, privilege)) = e.rsplit_once('=') {
            acl.entry(grantee.to_owned())
                .or_default()
                .insert(privilege.to_owned());
        }
    }
    acl
}

/// Reads everything the planner needs. `names` are the database and role names
/// the inventory wants (objects with those names are read even when unmarked,
/// to report conflicts); `jobs` bounds the tenant databases read at once.
pub async fn observe(
    admin: &Admin,
    client: &Client,
    fleet: &str,
    names: &[String],
    jobs: usize,
) -> Result<Observed, Error> {
    let ctx = "reading the catalog";
    let me = client
        .query_one(
            "SELECT current_user::text, rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(|e| Error::sql(ctx, e))?;
    let mut observed = Observed {
        current_user: me.get(0),
        current_user_is_superuser: me.get(1),
        ..Observed::default()
    };

    let roles_sql = format!(
        "SELECT r.rolname::text, r.rolcanlogin, r.rolsuper, r.rolcreatedb, r.rolcreaterole,
                r.rolreplication, r.rolbypassrls, r.rolconnlimit, coalesce(r.rolconfig, '{{}}'),
                shobj_description(r.oid, 'pg_authid'),
                coalesce((SELECT array_agg(g.rolname::text ORDER BY g.rolname)
                          FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                          WHERE m.member = r.oid), '{{}}')
         FROM pg_roles r
         WHERE r.rolname = ANY($1) OR shobj_description(r.oid, 'pg_authid') LIKE '{MARKER_LIKE}'"
    );
    let dbs_sql = format!(
        "SELECT d.datname::text, pg_get_userbyid(d.datdba)::text, d.datallowconn,
                shobj_description(d.oid, 'pg_database'), {ACL_AGG}
         FROM pg_database d
         LEFT JOIN LATERAL aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a ON true
         LEFT JOIN pg_roles g ON g.oid = a.grantee
         WHERE d.datname = ANY($1) OR shobj_description(d.oid, 'pg_database') LIKE '{MARKER_LIKE}'
         GROUP BY d.oid"
    );
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&names];
    let (roles, dbs) = futures_util::try_join!(
        client.query(&roles_sql, &params),
        client.query(&dbs_sql, &params)
    )
    .map_err(|e| Error::sql(ctx, e))?;

    for row in roles {
        let role = ObservedRole {
            name: row.get(0),
            login: row.get(1),
            superuser: row.get(2),
            createdb: row.get(3),
            createrole: row.get(4),
            replication: row.get(5),
            bypassrls: row.get(6),
            connection_limit: row.get(7),
            config: row.get(8),
            comment: row.get(9),
            password: None,
            member_of: row.get::<_, Vec<String>>(10).into_iter().collect(),
        };
        observed.roles.insert(role.name.clone(), role);
    }
    if observed.current_user_is_superuser {
        let role_names: Vec<&String> = observed.roles.keys().collect();
        let rows = client
            .query(
                "SELECT rolname::text, rolpassword FROM pg_authid WHERE rolname = ANY($1)",
                &[&role_names],
            )
            .await
            .map_err(|e| Error::sql(ctx, e))?;
        for row in rows {
            let name: String = row.get(0);
            if let Some(role) = observed.roles.get_mut(&name) {
                role.password = row.get(1);
            }
        }
        observed.can_read_passwords = true;
    }
    for row in dbs {
        let db = ObservedDatabase {
            name: row.get(0),
            owner: row.get(1),
            allow_connections: row.get(2),
            comment: row.get(3),
            acl: acl(row.get(4)),
        };
        observed.databases.insert(db.name.clone(), db);
    }

    // Look inside the databases that are ours (by marker, or by owner role
    // after a crash before the marker was written) and that accept connections.
    let wanted: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let inside: Vec<String> = observed
        .databases
        .values()
        .filter(|d| d.allow_connections && wanted.contains(d.name.as_str()))
        .filter(|d| {
            let ours = |c: Option<&String>, kind| {
                c.and_then(|c| Marker::parse(c))
                    .is_some_and(|m| m.fleet == fleet && m.kind == kind && m.tenant == d.name)
            };
            ours(d.comment.as_ref(), Kind::Database)
                || (d.comment.is_none()
                    && observed.roles.get(&d.owner).is_some_and(|r| {
                        d.owner == format!("{}_owner", d.name)
                            && ours(r.comment.as_ref(), Kind::Owner)
                    }))
        })
        .map(|d| d.name.clone())
        .collect();
    observed.contents = stream::iter(inside)
        .map(|db| async move {
            let contents = contents(admin, &db).await?;
            Ok::<_, Error>((db, contents))
        })
        .buffer_unordered(jobs.max(1))
        .try_collect::<BTreeMap<_, _>>()
        .await?;
    Ok(observed)
}

/// One tenant database's schema, relation and default ACLs and migration version.
pub async fn contents(admin: &Admin, db: &str) -> Result<ObservedContents, Error> {
    let client = admin.connect(Some(db)).await?;
    let ctx = format!("reading database {db}");
    let schema_sql = format!(
        "SELECT pg_get_userbyid(n.nspowner)::text, {ACL_AGG}
         FROM pg_namespace n
         LEFT JOIN LATERAL aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a ON true
         LEFT JOIN pg_roles g ON g.oid = a.grantee
         WHERE n.nspname = 'public' GROUP BY n.oid"
    );
    let relations_sql = format!(
        "SELECT c.relname::text, c.relkind = 'S', pg_get_userbyid(c.relowner)::text, {ACL_AGG}
         FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
         LEFT JOIN LATERAL aclexplode(coalesce(c.relacl, acldefault(
             CASE WHEN c.relkind = 'S' THEN 's'::\"char\" ELSE 'r'::\"char\" END, c.relowner))) a ON true
         LEFT JOIN pg_roles g ON g.oid = a.grantee
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
         GROUP BY c.oid"
    );
    let default_sql =
        "SELECT d.defaclobjtype::text, coalesce(g.rolname, 'PUBLIC') || '=' || a.privilege_type
         FROM pg_default_acl d
         JOIN pg_namespace n ON n.oid = d.defaclnamespace AND n.nspname = 'public'
         CROSS JOIN LATERAL aclexplode(d.defaclacl) a
         LEFT JOIN pg_roles g ON g.oid = a.grantee
         WHERE d.defaclrole = (SELECT oid FROM pg_roles WHERE rolname = $1)";
    let history_sql = format!("SELECT to_regclass('public.{HISTORY_TABLE}') IS NOT NULL");
    let owner = format!("{db}_owner");
    let owner_param: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&owner];
    let (schema, relations, defaults, history) = futures_util::try_join!(
        client.query_opt(&schema_sql, &[]),
        client.query(&relations_sql, &[]),
        client.query(default_sql, &owner_param),
        client.query_one(&history_sql, &[]),
    )
    .map_err(|e| Error::sql(&ctx, e))?;

    let mut c = ObservedContents::default();
    if let Some(row) = schema {
        c.schema_owner = row.get(0);
        c.schema_acl = acl(row.get(1));
    }
    c.relations = relations
        .into_iter()
        .map(|row| ObservedRelation {
            name: row.get(0),
            kind: if row.get(1) {
                RelKind::Sequence
            } else {
                RelKind::Table
            },
            owner: row.get(2),
            acl: acl(row.get(3)),
        })
        .collect();
    for row in defaults {
        let objtype: String = row.get(0);
        let entry: String = row.get(1);
        let Some(objtype) = objtype.chars().next() else {
            continue;
        };
        let map = c.default_acl.entry(objtype).or_default();
        if let Some((grantee, privilege)) = entry.rsplit_once('=') {
            map.entry(grantee.to_owned())
                .or_default()
                .insert(privilege.to_owned());
        }
    }
    if history.get::<_, bool>(0) {
        let row = client
            .query_one(
                &format!("SELECT max(version) FROM public.{HISTORY_TABLE}"),
                &[],
            )
            .await
            .map_err(|e| Error::sql(&ctx, e))?;
        c.migration_version = row.get::<_, Option<i32>>(0).map(i64::from);
    }
    Ok(c)
}
