//! The offline copy of a move ([`super`]), for when logical replication
//! cannot be used (an admin that is not a superuser, `wal_level` below
//! `logical`): in the cutover, once the old copy is closed and its
//! sessions ended, every table's rows go across with `COPY` (old server
//! out, new server in, streamed through tenantry, never staged on disk),
//! in one transaction on the new server, so a killed apply leaves nothing
//! half-copied and the next one copies again. Writes stay closed for the
//! whole copy; plan says so, and why.
//!
//! Both sides act as the tenant's owner role (`SET ROLE`), as backups do,
//! so a CREATEROLE admin can do it. Foreign keys are dropped for the copy
//! and added back after it (checked then, as pg_restore does), and the
//! tables' own triggers are disabled during it, so rows arrive as they
//! were, in any order.

use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use tenantry_layout::roles::group_role_name;
use tenantry_layout::{quote, Group};
use tokio_postgres::GenericClient;

use super::{copy_sequences, Job};
use crate::error::Error;

/// The tables of a tenant database (partitions come through their
/// parents): name, whether partitioned, and the columns COPY carries
/// (generated ones are computed again).
const TABLES: &str = "SELECT format('%I.%I', n.nspname, c.relname), c.relkind = 'p',
        (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) FROM pg_attribute a
          WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '')
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
       AND n.nspname NOT IN ('pg_catalog', 'information_schema')
       AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
     ORDER BY 1";

/// Foreign keys: table, constraint (quoted), definition.
const FOREIGN_KEYS: &str = "SELECT format('%I.%I', n.nspname, c.relname), quote_ident(k.conname), pg_get_constraintdef(k.oid)
     FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE k.contype = 'f' AND NOT c.relispartition AND k.conparentid = 0
       AND n.nspname NOT IN ('pg_catalog', 'information_schema')
     ORDER BY 1, 2";

/// The tables' own triggers that are enabled: table, trigger (quoted).
const TRIGGERS: &str = "SELECT format('%I.%I', n.nspname, c.relname), quote_ident(t.tgname)
     FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE NOT t.tgisinternal AND t.tgenabled <> 'D' AND t.tgparentid = 0
       AND n.nspname NOT IN ('pg_catalog', 'information_schema')
     ORDER BY 1, 2";

struct Table {
    name: String,
    partitioned: bool,
    columns: String,
}

async fn tables(client: &impl GenericClient) -> Result<Vec<Table>, tokio_postgres::Error> {
    Ok(client
        .query(TABLES, &[])
        .await?
        .iter()
        .map(|r| Table {
            name: r.get(0),
            partitioned: r.get(1),
            columns: r.get::<_, Option<String>>(2).unwrap_or_default(),
        })
        .collect())
}

/// Copies every row and sequence of the tenant's old copy into its new one
/// (emptied first), in one transaction on the new server.
pub(super) async fn copy(job: &Job<'_>, progress: &(dyn Fn(&str) + Sync)) -> Result<(), Error> {
    let plan = job.plan;
    let tenant = plan.tenant.as_str();
    let ctx = |what: &str| format!("tenant {tenant}: {what}");
    let owner = quote(&group_role_name(tenant, Group::Owner));
    let old = job.from.admin.connect(Some(tenant)).await?;
    let mut new = job.to.admin.connect(Some(tenant)).await?;
    let as_owner = format!("SET ROLE {owner}");
    old.batch_execute(&as_owner)
        .await
        .map_err(|e| Error::sql(ctx("reading its old copy as its owner"), e))?;
    let from = tables(&old)
        .await
        .map_err(|e| Error::sql(ctx("listing its tables on the old server"), e))?;
    let started = Instant::now();
    let tx = new
        .transaction()
        .await
        .map_err(|e| Error::sql(ctx("copying"), e))?;
    let run = |sql: String, what: &'static str| {
        let tx = &tx;
        async move {
            tx.batch_execute(&sql)
                .await
                .map_err(|e| Error::sql(format!("tenant {tenant}: {what}"), e))
        }
    };
    run(as_owner.clone(), "writing its new copy as its owner").await?;
    let to = tables(&tx)
        .await
        .map_err(|e| Error::sql(ctx("listing its tables on the new server"), e))?;
    if let Some(t) = from.iter().find(|t| {
        !to.iter()
            .any(|u| u.name == t.name && u.columns == t.columns)
    }) {
        return Err(Error::other(
            ctx("copying"),
            format!(
                "table {} differs between its copies (old server columns: {}); both are at the same schema version, so it was changed by hand on one of them: make them the same, then apply again",
                t.name, t.columns
            ),
        ));
    }
    let rows = |sql: &'static str| {
        let tx = &tx;
        async move {
            tx.query(sql, &[])
                .await
                .map_err(|e| Error::sql(format!("tenant {tenant}: reading its new copy"), e))
        }
    };
    let keys = rows(FOREIGN_KEYS).await?;
    let triggers = rows(TRIGGERS).await?;
    let mut before = Vec::new();
    for k in &keys {
        before.push(format!(
            "ALTER TABLE {} DROP CONSTRAINT {}",
            k.get::<_, String>(0),
            k.get::<_, String>(1)
        ));
    }
    if !to.is_empty() {
        let all: Vec<&str> = to.iter().map(|t| t.name.as_str()).collect();
        before.push(format!("TRUNCATE {}", all.join(", ")));
    }
    for t in &triggers {
        before.push(format!(
            "ALTER TABLE {} DISABLE TRIGGER {}",
            t.get::<_, String>(0),
            t.get::<_, String>(1)
        ));
    }
    run(before.join(";\n"), "emptying its new copy").await?;
    for (i, t) in from.iter().enumerate() {
        if t.columns.is_empty() {
            continue;
        }
        let only = if t.partitioned { "" } else { "ONLY " };
        let out = old
            .copy_out(&format!(
                "COPY (SELECT {} FROM {only}{}) TO STDOUT",
                t.columns, t.name
            ))
            .await
            .map_err(|e| Error::sql(ctx(&format!("reading table {}", t.name)), e))?;
        let sink = tx
            .copy_in(&format!("COPY {} ({}) FROM STDIN", t.name, t.columns))
            .await
            .map_err(|e| Error::sql(ctx(&format!("writing table {}", t.name)), e))?;
        futures_util::pin_mut!(out, sink);
        let mut bytes = 0usize;
        while let Some(chunk) = out.next().await {
            let chunk =
                chunk.map_err(|e| Error::sql(ctx(&format!("reading table {}", t.name)), e))?;
            bytes += chunk.len();
            sink.send(chunk)
                .await
                .map_err(|e| Error::sql(ctx(&format!("writing table {}", t.name)), e))?;
        }
        let n = sink
            .as_mut()
            .finish()
            .await
            .map_err(|e| Error::sql(ctx(&format!("writing table {}", t.name)), e))?;
        progress(&format!(
            "copied table {} ({} of {}): {n} row(s), {}",
            t.name,
            i + 1,
            from.len(),
            tenantry_plan::moves::human_bytes(bytes as i64)
        ));
    }
    let mut after = Vec::new();
    for t in &triggers {
        after.push(format!(
            "ALTER TABLE {} ENABLE TRIGGER {}",
            t.get::<_, String>(0),
            t.get::<_, String>(1)
        ));
    }
    for k in &keys {
        after.push(format!(
            "ALTER TABLE {} ADD CONSTRAINT {} {}",
            k.get::<_, String>(0),
            k.get::<_, String>(1),
            k.get::<_, String>(2)
        ));
    }
    run(after.join(";\n"), "checking its foreign keys again").await?;
    copy_sequences(&old, &tx)
        .await
        .map_err(|e| Error::sql(ctx("copying its sequences"), e))?;
    tx.commit()
        .await
        .map_err(|e| Error::sql(ctx("committing the copy"), e))?;
    progress(&format!(
        "copied {} table(s) in {:.1?}",
        from.len(),
        started.elapsed()
    ));
    Ok(())
}
