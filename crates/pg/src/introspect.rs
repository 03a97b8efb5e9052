//! Reads the catalog into an [`Observed`]: three set-based queries on the
//! admin database for roles, memberships and databases, then one pipelined
//! round of queries inside each managed tenant database (schema, relation and
//! default ACLs, migration version) in one round trip per tenant database,
//! many databases at a time (as many as the server's free connections allow,
//! see [`crate::budget`]).

use std::collections::{BTreeMap, BTreeSet};

use futures_util::{stream, StreamExt, TryStreamExt};
use tenantry_layout::history;
use tenantry_layout::roles::group_role_name;
use tenantry_layout::{literal, tokens, Group};
use tenantry_layout::{Kind, Marker};
use tenantry_plan::model::{
    Acl, Grant, Observed, ObservedContents, ObservedDatabase, ObservedFunction, ObservedObject,
    ObservedRelation, ObservedRole, ObservedTokenStore, PublicOwner, RelKind,
};
use tokio_postgres::Client;

use crate::connect::Admin;
use crate::error::Error;

use tenantry_layout::marker::LIKE as MARKER_LIKE;

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
/// to report conflicts); `jobs` bounds the tenant databases read at once,
/// and so does half of the server's free connections.
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
            "SELECT current_user::text, rolsuper, current_setting('server_version_num')::int \
             FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(|e| Error::sql(ctx, e))?;
    let mut observed = Observed {
        current_user: me.get(0),
        current_user_is_superuser: me.get(1),
        server_version_num: me.get(2),
        ..Observed::default()
    };
    if observed.server_version_num < 140000 {
        return Err(Error::other(
            ctx,
            format!(
                "the server runs PostgreSQL {}, and tenantry supports 14 to 18: upgrade the server first",
                observed.server_version_num / 10000
            ),
        ));
    }
    observed.new_public_owner = new_public_owner(admin, &observed).await?;

    // From PostgreSQL 16 on a membership is one grant per grantor, each
    // with its own inherit option, and a role changes only the grants of
    // roles whose privileges it has: read every grant there.
    let grants = if observed.server_version_num < 160000 {
        "'[]'".to_owned()
    } else {
        let acts = if observed.current_user_is_superuser {
            "true"
        } else {
            "pg_has_role(m.grantor, 'USAGE')"
        };
        format!(
            "coalesce((SELECT json_agg(json_build_array(g.rolname::text, pg_get_userbyid(m.grantor)::text,
                                        m.inherit_option, {acts}) ORDER BY g.rolname, m.grantor)
                       FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                       WHERE m.member = r.oid), '[]')::text"
        )
    };
    // From 16 on a member inherits through each grant's own option;
    // `rolinherit` is only the default for new grants.
    let inherit = if observed.server_version_num < 160000 {
        "r.rolinherit"
    } else {
        "r.rolinherit OR EXISTS (SELECT FROM pg_auth_members m WHERE m.member = r.oid AND m.inherit_option)"
    };
    let roles_sql = format!(
        "SELECT r.rolname::text, r.rolcanlogin, r.rolsuper, r.rolcreatedb, r.rolcreaterole,
                r.rolreplication, r.rolbypassrls, r.rolconnlimit, coalesce(r.rolconfig, '{{}}'),
                shobj_description(r.oid, 'pg_authid'),
                coalesce((SELECT array_agg(DISTINCT g.rolname::text)
                          FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                          WHERE m.member = r.oid), '{{}}'),
                {inherit},
                {grants}
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
            inherit: row.get(11),
            grants: parse_grants(row.get(12))?,
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
                        d.owner == group_role_name(&d.name, Group::Owner)
                            && ours(r.comment.as_ref(), Kind::Owner)
                    }))
        })
        .map(|d| d.name.clone())
        .collect();
    let jobs = if inside.len() > 1 {
        crate::budget::bound(client, jobs.min(inside.len()), 1).await?
    } else {
        1
    };
    observed.contents = stream::iter(inside)
        .map(|db| async move {
            let contents = contents(admin, &db).await?;
            Ok::<_, Error>((db, contents))
        })
        .buffer_unordered(jobs)
        .try_collect::<BTreeMap<_, _>>()
        .await?;
    Ok(observed)
}

/// The grants of a role's memberships as the roles query returns them:
/// `[[group, grantor, inherit, admin_acts_as_grantor], ...]`.
fn parse_grants(json: &str) -> Result<Vec<Grant>, Error> {
    let rows: Vec<(String, String, bool, bool)> = serde_json::from_str(json).map_err(|e| {
        Error::other(
            "reading the catalog",
            format!("unexpected membership grants {json:?}: {e}"),
        )
    })?;
    Ok(rows
        .into_iter()
        .map(|(group, grantor, inherit, admin_acts_as_grantor)| Grant {
            group,
            grantor,
            inherit,
            admin_acts_as_grantor,
        })
        .collect())
}

/// Who owns schema `public` in a database `CREATE DATABASE` makes now (it
/// copies template1), when the admin is not a superuser.
///
/// PostgreSQL 14 and older: template1's `public` belongs to the bootstrap
/// superuser (and PUBLIC may create in it) unless an operator changed it;
/// only a superuser or a member of its owner can give it to the tenant's
/// owner. From 15 on it belongs to `pg_database_owner`, which the
/// database's owner acts as. So this reads template1 (one short
/// connection) only for a non-superuser admin on 14 or older; `None`
/// otherwise. An unreadable template1 gives an empty role (unknown).
async fn new_public_owner(
    admin: &Admin,
    observed: &Observed,
) -> Result<Option<PublicOwner>, Error> {
    if observed.current_user_is_superuser || observed.server_version_num >= 150000 {
        return Ok(None);
    }
    let client = match admin.connect(Some("template1")).await {
        Ok(client) => client,
        // Not allowed to: unknown, and the planner refuses rather than fail
        // halfway at apply. Any other failure is the server's: reported.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) => {
            return Ok(Some(PublicOwner {
                role: String::new(),
                admin_acts_as: false,
            }))
        }
        Err(e) => return Err(e),
    };
    let row = client
        .query_opt(
            "SELECT pg_get_userbyid(nspowner)::text, pg_has_role(nspowner, 'USAGE') \
             FROM pg_namespace WHERE nspname = 'public'",
            &[],
        )
        .await
        .map_err(|e| Error::sql("reading template1's schema public", e))?;
    Ok(row.map(|r| PublicOwner {
        role: r.get(0),
        admin_acts_as: r.get(1),
    }))
}

/// `[grantee, privilege]` pairs of an ACL as a JSON array (grantee 0 is PUBLIC).
fn acl_json(acl: &str) -> String {
    format!(
        "coalesce((SELECT json_agg(json_build_array(CASE WHEN a.grantee = 0 THEN 'PUBLIC' \
         ELSE pg_get_userbyid(a.grantee)::text END, a.privilege_type)) FROM aclexplode({acl}) a), '[]')"
    )
}

/// One tenant database's schema, relation and default ACLs and migration
/// version: one connection, one simple query (one round trip) returning JSON.
pub async fn contents(admin: &Admin, db: &str) -> Result<ObservedContents, Error> {
    let client = admin.connect(Some(db)).await?;
    let ctx = format!("reading database {db}");
    let owner = literal(&group_role_name(db, Group::Owner));
    let schema_acl = acl_json("coalesce(n.nspacl, acldefault('n', n.nspowner))");
    let rel_acl = acl_json(
        "coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's'::\"char\" ELSE 'r'::\"char\" END, c.relowner))",
    );
    let store_schema_acl = acl_json("coalesce(n.nspacl, acldefault('n', n.nspowner))");
    let store_table_acl = acl_json("coalesce(c.relacl, acldefault('r', c.relowner))");
    let function_acl = acl_json("coalesce(p.proacl, acldefault('f', p.proowner))");
    let (store, table, function) = (
        literal(tokens::SCHEMA),
        literal(tokens::TABLE),
        literal(tokens::FUNCTION_SIGNATURE),
    );
    // The history table may not exist: query_to_xml runs its query only when
    // the CASE reaches it, so a missing table is never referenced.
    let history_max = literal(history::MAX_VERSION);
    let sql = format!(
        "SELECT json_build_object(
           'schema_owner', (SELECT pg_get_userbyid(n.nspowner)::text FROM pg_namespace n WHERE n.nspname = 'public'),
           'schema_acl', (SELECT {schema_acl} FROM pg_namespace n WHERE n.nspname = 'public'),
           'relations', coalesce((SELECT json_agg(json_build_array(c.relname::text, c.relkind = 'S',
                                   pg_get_userbyid(c.relowner)::text, {rel_acl})
                                   ORDER BY c.relname)
                                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
                                 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')), '[]'),
           'defaults', coalesce((SELECT json_agg(json_build_array(d.defaclobjtype::text,
                                   CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee)::text END,
                                   a.privilege_type))
                                 FROM pg_default_acl d
                                 JOIN pg_namespace n ON n.oid = d.defaclnamespace AND n.nspname = 'public'
                                 CROSS JOIN LATERAL aclexplode(d.defaclacl) a
                                 WHERE pg_get_userbyid(d.defaclrole) = {owner}), '[]'),
           'version', CASE WHEN to_regclass({history_table}) IS NOT NULL THEN
                        ((xpath('/row/v/text()', query_to_xml({history_max}, false, true, '')))[1])::text::int END,
           'token_store', (SELECT json_build_object(
               'owner', pg_get_userbyid(n.nspowner)::text,
               'acl', {store_schema_acl},
               'table', (SELECT json_build_object('owner', pg_get_userbyid(c.relowner)::text, 'acl', {store_table_acl})
                         FROM pg_class c WHERE c.relnamespace = n.oid AND c.relname = {table} AND c.relkind = 'r'),
               'usage', (SELECT json_build_object('owner', pg_get_userbyid(c.relowner)::text, 'acl', {store_table_acl})
                         FROM pg_class c WHERE c.relnamespace = n.oid AND c.relname = {usage} AND c.relkind = 'r'),
               'audit', (SELECT json_build_object('owner', pg_get_userbyid(c.relowner)::text, 'acl', {store_table_acl})
                         FROM pg_class c WHERE c.relnamespace = n.oid AND c.relname = {audit} AND c.relkind = 'r'),
               'function', (SELECT json_build_object('owner', pg_get_userbyid(p.proowner)::text, 'acl', {function_acl},
                                   'definer', p.prosecdef, 'config', coalesce(p.proconfig, '{{}}'),
                                   'body', p.prosrc, 'returns', pg_get_function_result(p.oid))
                            FROM pg_proc p WHERE p.oid = to_regprocedure({function})))
             FROM pg_namespace n WHERE n.nspname = {store})
         )::text",
        history_table = literal(history::QUALIFIED),
        usage = literal(tenantry_layout::usage::TABLE),
        audit = literal(tenantry_layout::audit::TABLE),
    );
    let rows = client
        .simple_query(&sql)
        .await
        .map_err(|e| Error::sql(&ctx, e))?;
    let text = rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .ok_or_else(|| Error::other(ctx.clone(), "the catalog query returned no row"))?;
    parse_contents(&text).map_err(|message| Error::other(ctx, message))
}

fn pairs(v: &serde_json::Value) -> Acl {
    let mut acl = Acl::new();
    for pair in v.as_array().into_iter().flatten() {
        if let (Some(grantee), Some(privilege)) = (pair[0].as_str(), pair[1].as_str()) {
            acl.entry(grantee.to_owned())
                .or_default()
                .insert(privilege.to_owned());
        }
    }
    acl
}

/// Parses the JSON built by [`contents`]'s query.
fn parse_contents(text: &str) -> Result<ObservedContents, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("unexpected catalog answer: {e}"))?;
    let mut c = ObservedContents {
        schema_owner: v["schema_owner"].as_str().unwrap_or_default().to_owned(),
        schema_acl: pairs(&v["schema_acl"]),
        migration_version: v["version"].as_i64(),
        ..ObservedContents::default()
    };
    for r in v["relations"].as_array().into_iter().flatten() {
        c.relations.push(ObservedRelation {
            name: r[0].as_str().unwrap_or_default().to_owned(),
            kind: if r[1].as_bool() == Some(true) {
                RelKind::Sequence
            } else {
                RelKind::Table
            },
            owner: r[2].as_str().unwrap_or_default().to_owned(),
            acl: pairs(&r[3]),
        });
    }
    for d in v["defaults"].as_array().into_iter().flatten() {
        let (Some(objtype), Some(grantee), Some(privilege)) = (
            d[0].as_str().and_then(|s| s.chars().next()),
            d[1].as_str(),
            d[2].as_str(),
        ) else {
            continue;
        };
        c.default_acl
            .entry(objtype)
            .or_default()
            .entry(grantee.to_owned())
            .or_default()
            .insert(privilege.to_owned());
    }
    c.token_store = token_store(&v["token_store"]);
    Ok(c)
}

fn object(v: &serde_json::Value) -> Option<ObservedObject> {
    Some(ObservedObject {
        owner: v.get("owner")?.as_str()?.to_owned(),
        acl: pairs(&v["acl"]),
    })
}

/// The `token_store` part of [`contents`]' answer (`null`: no schema).
fn token_store(v: &serde_json::Value) -> ObservedTokenStore {
    if v.is_null() {
        return ObservedTokenStore::default();
    }
    let text = |f: &serde_json::Value, key: &str| f[key].as_str().unwrap_or_default().to_owned();
    ObservedTokenStore {
        schema: object(v),
        table: object(&v["table"]),
        usage: object(&v["usage"]),
        audit: object(&v["audit"]),
        function: object(&v["function"]).map(|o| {
            let f = &v["function"];
            ObservedFunction {
                owner: o.owner,
                acl: o.acl,
                security_definer: f["definer"].as_bool() == Some(true),
                config: f["config"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.as_str().map(str::to_owned))
                    .collect(),
                body: text(f, "body"),
                returns: text(f, "returns"),
            }
        }),
    }
}

/// Which of `names` are databases this fleet manages (one query).
pub async fn managed_databases(
    client: &Client,
    fleet: &str,
    names: &[String],
) -> Result<BTreeSet<String>, Error> {
    let rows = client
        .query(
            "SELECT datname::text, shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = ANY($1)",
            &[&names],
        )
        .await
        .map_err(|e| Error::sql("listing tenant databases", e))?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let name: String = r.get(0);
            let marker = r
                .get::<_, Option<String>>(1)
                .and_then(|c| Marker::parse(&c))?;
            (marker.fleet == fleet && marker.kind == Kind::Database && marker.tenant == name)
                .then_some(name)
        })
        .collect())
}
