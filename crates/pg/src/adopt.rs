//! `tenantry adopt`: the I/O around [`tenantry_plan::adopt`]. Reads what the
//! decision needs (the catalog, the objects and grants inside the tenant
//! database, and how its tables compare with the migrations, checked by
//! migrating a scratch database and comparing the two), then runs the
//! adoption in three committed steps ordered so a crash at any point leaves
//! something `adopt` can simply run again.

use std::collections::BTreeSet;
use std::time::Duration;

use tenantry_layout::history;
use tenantry_layout::quote;
use tenantry_manifest::{Group, Inventory};
use tenantry_plan::adopt::{adoption, baseline_sql, Adoption, SchemaCheck, Survey};
use tenantry_plan::DesiredTenant;
use tokio_postgres::Client;

use crate::connect::Admin;
use crate::error::Error;
use crate::migrate::Migrations;

/// The shape of schema `public`, one line per column, index, function and
/// trigger, leaving out the migration history table.
const SHAPE: &str = "
SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
       || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND a.attnum > 0 AND NOT a.attisdropped AND c.relname <> $1
UNION ALL
SELECT 'index ' || indexdef FROM pg_indexes
WHERE schemaname = 'public' AND tablename <> $1
UNION ALL
SELECT 'function ' || p.oid::regprocedure::text FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'
UNION ALL
SELECT 'trigger ' || t.tgname || ' on ' || c.relname FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND NOT t.tgisinternal";

/// Objects of schema `public` not owned by `$1`, with the statement keyword
/// and a target the server quoted itself. Sequences that belong to a column
/// follow their table and are left out.
const FOREIGN_OWNED: &str = "
SELECT CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                      WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
       c.oid::regclass::text, pg_get_userbyid(c.relowner)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
  AND pg_get_userbyid(c.relowner) <> $1
  AND NOT (c.relkind = 'S' AND EXISTS (
      SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
        AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))
UNION ALL
SELECT 'FUNCTION', p.oid::regprocedure::text, pg_get_userbyid(p.proowner)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'public' AND p.prokind = 'f' AND pg_get_userbyid(p.proowner) <> $1
UNION ALL
SELECT CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, t.oid::regtype::text,
       pg_get_userbyid(t.typowner)
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd') AND pg_get_userbyid(t.typowner) <> $1
ORDER BY 2";

/// Every role holding a privilege on a relation of schema `public` (other
/// than its owner's implicit ones).
const TABLE_GRANTEES: &str = "
SELECT DISTINCT CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(x.grantee) END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
     LATERAL aclexplode(c.relacl) x
WHERE n.nspname = 'public' AND c.relacl IS NOT NULL AND x.grantee <> c.relowner";

/// What `adopt` found and did.
pub struct Report {
    pub adoption: Adoption,
    /// Whether the adoption was carried out (false: dry run or problems).
    pub done: bool,
}

/// Checks `tenant` against the server and, unless `dry_run` or a problem was
/// found, adopts it. Holds the fleet's apply lock throughout.
pub async fn adopt(
    inventory: &Inventory,
    tenant: &str,
    dry_run: bool,
    lock_wait: Duration,
) -> Result<Report, Error> {
    let schema = inventory.paths.schema.clone();
    let migrations = crate::blocking::run(move || Migrations::load(&schema)).await?;
    let mut admin = Admin::from_url(inventory.only_server()?.admin_url.as_ref())?;
    admin.set_application_name(&format!("tenantry apply {}", inventory.fleet));
    let mut client = admin.connect(None).await?;
    crate::lock::acquire(&client, &inventory.fleet, lock_wait).await?;
    let desired = crate::session::desired(inventory, migrations.latest()).await?;
    let t = desired
        .tenants
        .iter()
        .find(|t| t.name == tenant)
        .ok_or_else(|| {
            Error::other(
                "adopt",
                format!("no tenant '{tenant}' in {}", inventory.path.display()),
            )
        })?;
    let mut names = vec![t.name.to_string()];
    names.extend(Group::ALL.iter().map(|&g| t.role(g).to_string()));
    names.extend(t.users.iter().map(|u| u.name.to_string()));
    let observed = crate::introspect::observe(&admin, &client, &inventory.fleet, &names, 1).await?;

    let mut rows = Vec::new();
    let survey = if observed.databases.contains_key(t.name.as_str()) {
        survey(
            &admin,
            &inventory.fleet,
            t,
            &migrations,
            lock_wait,
            &mut rows,
        )
        .await?
    } else {
        Survey::default()
    };
    let adoption = adoption(t, &inventory.fleet, &observed, &survey);
    if dry_run || !adoption.problems.is_empty() || adoption.already_managed {
        return Ok(Report {
            adoption,
            done: false,
        });
    }

    transaction(&mut client, "adopt: roles", &adoption.cluster_sql).await?;
    let mut db = admin.connect(Some(&t.name)).await?;
    let tx = db
        .transaction()
        .await
        .map_err(|e| Error::sql("adopt: begin", e))?;
    for sql in &adoption.database_sql {
        tx.batch_execute(sql)
            .await
            .map_err(|e| Error::sql(format!("adopt {}: {sql}", t.name), e))?;
    }
    if adoption.baseline.is_some() {
        for sql in baseline_sql(t) {
            tx.batch_execute(&sql)
                .await
                .map_err(|e| Error::sql(format!("adopt {}: {sql}", t.name), e))?;
        }
        for (version, name, applied_on, checksum) in &rows {
            tx.execute(history::INSERT, &[version, name, applied_on, checksum])
                .await
                .map_err(|e| Error::sql(format!("adopt {}: migration history", t.name), e))?;
        }
        tx.batch_execute("RESET ROLE")
            .await
            .map_err(|e| Error::sql("adopt: reset role", e))?;
    }
    for sql in &adoption.database_after_sql {
        tx.batch_execute(sql)
            .await
            .map_err(|e| Error::sql(format!("adopt {}: {sql}", t.name), e))?;
    }
    tx.commit()
        .await
        .map_err(|e| Error::sql(format!("adopt {}: commit", t.name), e))?;
    transaction(&mut client, "adopt: database marker", &adoption.marker_sql).await?;
    // A trail only once apply has created it: the entry waits for none.
    crate::audit::note_on(
        &db,
        &t.name,
        tenantry_layout::audit::Action::Adopted,
        serde_json::json!({ "baseline": adoption.baseline, "statements": adoption.cluster_sql.len() + adoption.database_sql.len() + adoption.database_after_sql.len() }),
    )
    .await;
    Ok(Report {
        adoption,
        done: true,
    })
}

async fn transaction(client: &mut Client, context: &str, sql: &[String]) -> Result<(), Error> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| Error::sql(context, e))?;
    for s in sql {
        tx.batch_execute(s)
            .await
            .map_err(|e| Error::sql(format!("{context}: {s}"), e))?;
    }
    tx.commit().await.map_err(|e| Error::sql(context, e))
}

type HistoryRow = (i32, String, String, String);

/// Reads the tenant database: foreign-owned objects, table grantees, and the
/// schema check. `rows` receives the history rows to record on a baseline.
async fn survey(
    admin: &Admin,
    fleet: &str,
    t: &DesiredTenant,
    migrations: &Migrations,
    lock_wait: Duration,
    rows: &mut Vec<HistoryRow>,
) -> Result<Survey, Error> {
    let owner = t.role(Group::Owner);
    let client = admin.connect(Some(&t.name)).await?;
    let context = format!("adopt {}: reading the database", t.name);
    let foreign_owned = client
        .query(FOREIGN_OWNED, &[&owner.as_str()])
        .await
        .map_err(|e| Error::sql(&context, e))?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let table_grantees = client
        .query(TABLE_GRANTEES, &[])
        .await
        .map_err(|e| Error::sql(&context, e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let has_history = crate::migrate::has_history(&client)
        .await
        .map_err(|e| Error::sql(&context, e))?;
    let schema = if has_history {
        let h = migrations
            .history(&client)
            .await
            .map_err(|e| Error::sql(&context, e))?;
        SchemaCheck::History {
            version: h.version,
            problem: h.problem(),
        }
    } else if let Some(latest) = migrations.latest() {
        let have = shape(&client, &context).await?;
        let (want, history) = scratch_shape(admin, fleet, migrations, lock_wait).await?;
        let missing: Vec<String> = want.difference(&have).cloned().collect();
        if missing.is_empty() {
            *rows = history;
            SchemaCheck::Matches {
                version: latest,
                extra: have.difference(&want).cloned().collect(),
            }
        } else {
            SchemaCheck::Differs { missing }
        }
    } else {
        SchemaCheck::NoMigrations
    };
    Ok(Survey {
        foreign_owned,
        table_grantees,
        schema,
    })
}

async fn shape(client: &Client, context: &str) -> Result<BTreeSet<String>, Error> {
    Ok(client
        .query(SHAPE, &[&history::TABLE])
        .await
        .map_err(|e| Error::sql(context, e))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Migrates a scratch database to the latest version and returns its shape
/// and history rows; the scratch database is dropped whatever happens.
async fn scratch_shape(
    admin: &Admin,
    fleet: &str,
    migrations: &Migrations,
    lock_wait: Duration,
) -> Result<(BTreeSet<String>, Vec<HistoryRow>), Error> {
    // At most 15 + 32 + 1 + 10 bytes: within PostgreSQL's 63.
    let name = format!(
        "tenantry_adopt_{fleet}_{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );
    let control = admin.connect(None).await?;
    let context = "adopt: scratch database for the schema check";
    // CREATE DATABASE runs alone: never inside a transaction block.
    for sql in [
        format!("CREATE DATABASE {}", quote(&name)),
        format!(
            "COMMENT ON DATABASE {} IS 'tenantry adopt scratch: safe to drop'",
            quote(&name)
        ),
    ] {
        control
            .batch_execute(&sql)
            .await
            .map_err(|e| Error::sql(context, e))?;
    }
    let result = async {
        let mut client = admin.connect(Some(&name)).await?;
        let me: String = client
            .query_one("SELECT current_user", &[])
            .await
            .map_err(|e| Error::sql(context, e))?
            .get(0);
        migrations.run(&mut client, &name, &me, lock_wait).await?;
        let shape = shape(&client, context).await?;
        let history = client
            .query(history::ROWS, &[])
            .await
            .map_err(|e| Error::sql(context, e))?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
        Ok::<_, Error>((shape, history))
    }
    .await;
    let dropped = control
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote(&name)
        ))
        .await
        .map_err(|e| Error::sql(context, e));
    let out = result?;
    dropped?;
    Ok(out)
}
