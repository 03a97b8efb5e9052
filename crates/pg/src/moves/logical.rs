//! The online copy of a move ([`super`]): a publication on the old
//! server and a subscription on the new one ([`stream`]: copy, then
//! stream, until the lag is small), and in the cutover, once the old copy
//! is closed, the wait for the new server to have everything, the
//! sequences, and the replication objects dropped ([`finish`]). Needs
//! superuser admins on both servers and `wal_level = logical` on the old
//! one ([`super::survey`] says so; else [`super::offline`]).

use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use tenantry_layout::moves::replication_name;
use tenantry_layout::roles::group_role_name;
use tenantry_layout::{history, Group};
use tenantry_plan::moves::sql;
use tokio_postgres::Client;

use super::{copy_sequences, holds, Job};
use crate::apply::{exec, tx};
use crate::error::Error;

/// Step 2: the streaming login and publication on the old server, the
/// subscription on the new one (made once: a subscription that exists is
/// waited for), then [`wait_copied`].
pub(super) async fn stream(job: &Job<'_>, progress: &(dyn Fn(&str) + Sync)) -> Result<(), Error> {
    let plan = job.plan;
    let tenant = plan.tenant.as_str();
    let name = replication_name(&job.inventory.fleet, tenant);
    let ctx = |what: &str| format!("tenant {tenant}: {what}");
    let new_db = job.to.admin.connect(Some(tenant)).await?;
    let subscribed = holds(&new_db, "SELECT count(*) > 0 FROM pg_subscription WHERE subname = $1 AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())", &name, ctx("reading its subscription"))

        .await?;
    if !subscribed {
        // What migrations seeded goes: the copy brings the old rows (and
        // the migration history) instead.
        let tables: Vec<String> = new_db
            .query(
                "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'",
                &[],
            )
            .await
            .map_err(|e| Error::sql(ctx("listing its tables on the new server"), e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !tables.is_empty() {
            exec(
                &new_db,
                &format!("TRUNCATE {} CASCADE", tables.join(", ")),
                ctx("emptying its copy before the copy"),
            )
            .await?;
        }
        // The streaming login and the publication on the old server.
        let old_db = job.from.admin.connect(Some(tenant)).await?;
        let password = tenantry_manifest::generate_password();
        let verifier = tenantry_plan::scram::verifier(password.expose_secret());
        let exists = holds(
            job.from.client,
            "SELECT count(*) > 0 FROM pg_roles WHERE rolname = $1",
            &name,
            ctx("reading the streaming login"),
        )
        .await?;
        let owner = group_role_name(tenant, Group::Owner);
        exec(
            job.from.client,
            &sql::streaming_login(&name, exists, &verifier, tenant, &owner).join(";\n"),
            ctx("the streaming login on the old server"),
        )
        .await?;
        let published = holds(
            &old_db,
            "SELECT count(*) > 0 FROM pg_publication WHERE pubname = $1",
            &name,
            ctx("reading its publication"),
        )
        .await?;
        if !published {
            exec(
                &old_db,
                &sql::create_publication(&name),
                ctx("publishing its tables"),
            )
            .await?;
        }
        // A slot left by a subscription that never committed.
        job.from
            .client
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active",
                &[&name],
            )
            .await
            .map_err(|e| Error::sql(ctx("dropping a stale replication slot"), e))?;
        let server = &job.inventory.servers[&plan.from];
        let endpoint = tenantry_pgconn::Endpoint::new(
            Some(job.from.admin.address()),
            server.app_host.as_deref(),
            server.app_port,
            server.app_sslmode.as_deref(),
        )
        .ok_or_else(|| {
            Error::other(
                ctx("subscribing"),
                format!("server {} has no host to stream from", plan.from),
            )
        })?;
        let conninfo = endpoint.dsn(&name, &password, tenant);
        progress(&format!(
            "copying from server {} (logical replication)",
            plan.from
        ));
        // The statement holds the password: its text is never shown, only
        // the server's error.
        new_db
            .batch_execute(&sql::create_subscription(&name, conninfo.expose_secret()))
            .await
            .map_err(|e| Error::sql(ctx("subscribing to the old server"), e))?;
    } else {
        progress("its copy is being filled already: waiting for it");
    }
    wait_copied(job, &new_db, &name, progress).await
}

/// Waits until every table is copied and the lag is under `max_lag`,
/// failing when the subscription reports errors (PostgreSQL 15 and newer
/// count them).
async fn wait_copied(
    job: &Job<'_>,
    new_db: &Client,
    name: &str,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(), Error> {
    let tenant = job.plan.tenant.as_str();
    let ctx = |what: &str| format!("tenant {tenant}: {what}");
    let stats = job.plan.versions.1 >= 150000;
    let mut said = Instant::now();
    let started = Instant::now();
    loop {
        let row = new_db
            .query_one(
                "SELECT count(*) FILTER (WHERE r.srsubstate IN ('r', 's')), count(*),
                        (SELECT coalesce(sum(bytes_processed), 0)::bigint FROM pg_stat_progress_copy WHERE datname = current_database())
                 FROM pg_subscription s JOIN pg_subscription_rel r ON r.srsubid = s.oid WHERE s.subname = $1",
                &[&name],
            )
            .await
            .map_err(|e| Error::sql(ctx("following the copy"), e))?;
        let (done, all, bytes): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        if stats {
            let errors: i64 = new_db
                .query_opt(
                    "SELECT (sync_error_count + apply_error_count)::bigint FROM pg_stat_subscription_stats WHERE subname = $1",
                    &[&name],
                )
                .await
                .map_err(|e| Error::sql(ctx("following the copy"), e))?
                .map_or(0, |r| r.get(0));
            if errors > 0 {
                return Err(Error::other(
                    ctx("copying"),
                    format!(
                        "the subscription on server {} reports {errors} error(s): see that server's log (a table that differs, a duplicate key). Fix it and apply again: the move resumes",
                        job.plan.to
                    ),
                ));
            }
        }
        if done == all {
            let lag = lag(job, name).await?;
            if lag.is_some_and(|l| l <= job.max_lag as i64) {
                progress(&format!(
                    "copied {all} table(s) in {:.1?}; streaming",
                    started.elapsed()
                ));
                return Ok(());
            }
        }
        if said.elapsed() >= Duration::from_secs(5) {
            let behind = match lag(job, name).await? {
                Some(l) => format!("; {} behind", tenantry_plan::moves::human_bytes(l)),
                None => String::new(),
            };
            progress(&format!(
                "copying: {done}/{all} table(s) copied, {} in flight{behind}",
                tenantry_plan::moves::human_bytes(bytes)
            ));
            said = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Bytes of WAL on the old server the new one has not confirmed; None
/// while the slot has not confirmed anything.
async fn lag(job: &Job<'_>, name: &str) -> Result<Option<i64>, Error> {
    let row = job
        .from
        .client
        .query_opt(
            "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = $1",
            &[&name],
        )
        .await
        .map_err(|e| Error::sql(format!("tenant {}: reading the lag", job.plan.tenant), e))?;
    Ok(row.and_then(|r| r.get(0)))
}

/// The connections the cutover's wait needs, made before the old copy
/// closes (the pause is only statements).
pub(super) struct CatchUp {
    name: String,
    old_db: Client,
    new_db: Client,
}

impl CatchUp {
    /// Connects, and enables the subscription again if an apply stopped
    /// after [`run`](Self::run) disabled it (the new copy still closed).
    pub(super) async fn connect(job: &Job<'_>) -> Result<CatchUp, Error> {
        let tenant = job.plan.tenant.as_str();
        let name = replication_name(&job.inventory.fleet, tenant);
        let new_db = job.to.admin.connect(Some(tenant)).await?;
        let stopped = holds(
            &new_db,
            "SELECT count(*) > 0 FROM pg_subscription WHERE subname = $1 AND NOT subenabled",
            &name,
            format!("tenant {tenant}: reading its subscription"),
        )
        .await?;
        if stopped {
            exec(
                &new_db,
                &sql::enable_subscription(&name),
                format!("tenant {tenant}: starting its subscription again"),
            )
            .await?;
        }
        Ok(CatchUp {
            name,
            old_db: job.from.admin.connect(Some(tenant)).await?,
            new_db,
        })
    }

    /// The cutover's middle, once the old copy is closed and drained: a
    /// fence written on the old copy ([`history::FENCE`], committed
    /// synchronously), and the wait until the new server has committed it
    /// (its replication origin has passed the fence's position): changes
    /// are applied in commit order, so everything written before is there
    /// too. (The slot's confirmed position is not enough: the new server
    /// may report a position as flushed while it is still applying what
    /// came before it.) Then the sequences, and the subscription is
    /// disabled (dropped after the new copy opens, [`clean_up`]).
    pub(super) async fn run(&mut self, job: &Job<'_>) -> Result<(), Error> {
        let plan = job.plan;
        let tenant = plan.tenant.as_str();
        let ctx = |what: &str| format!("tenant {tenant}: {what}");
        let fence = ctx("marking the end of the stream on the old server");
        let tx = self
            .old_db
            .transaction()
            .await
            .map_err(|e| Error::sql(&fence, e))?;
        tx.batch_execute("SET LOCAL synchronous_commit = on")
            .await
            .map_err(|e| Error::sql(&fence, e))?;
        let marked = tx
            .execute(history::FENCE, &[])
            .await
            .map_err(|e| Error::sql(&fence, e))?;
        let position: String = tx
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .await
            .map_err(|e| Error::sql(&fence, e))?
            .get(0);
        tx.commit().await.map_err(|e| Error::sql(&fence, e))?;
        if marked == 0 {
            return Err(Error::other(
                fence,
                "its migration history is empty, so there is no row to mark the end of the stream with: apply its schema first",
            ));
        }
        let waited = Instant::now();
        loop {
            let reached = self
                .new_db
                .query_opt(
                    "SELECT o.remote_lsn >= $2::text::pg_lsn FROM pg_replication_origin_status o
                       JOIN pg_subscription s ON o.external_id = 'pg_' || s.oid
                     WHERE s.subname = $1",
                    &[&self.name, &position],
                )
                .await
                .map_err(|e| Error::sql(ctx("waiting for the new server"), e))?
                .and_then(|r| r.get::<_, Option<bool>>(0));
            if reached == Some(true) {
                break;
            }
            if waited.elapsed() > Duration::from_secs(120) {
                return Err(Error::other(
                    ctx("cutover"),
                    format!(
                        "server {} has not applied the old server's changes up to {position} after 2 minutes: see its log; apply again to finish the cutover (the tenant stays closed until then)",
                        plan.to
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        copy_sequences(&self.old_db, &self.new_db)
            .await
            .map_err(|e| Error::sql(ctx("copying its sequences"), e))?;
        exec(
            &self.new_db,
            &sql::disable_subscription(&self.name),
            ctx("stopping the subscription"),
        )
        .await
    }
}

/// After the new copy opened (or on a later apply, when it was opened by
/// one that stopped): the subscription, publication, slot and streaming
/// login go. Each is dropped only if it is there.
pub(super) async fn clean_up(job: &Job<'_>) -> Result<(), Error> {
    let tenant = job.plan.tenant.as_str();
    let name = replication_name(&job.inventory.fleet, tenant);
    let ctx = |what: &str| format!("tenant {tenant}: {what}");
    let new_db = job.to.admin.connect(Some(tenant)).await?;
    exec(
        &new_db,
        &sql::drop_subscription(&name),
        ctx("dropping the subscription"),
    )
    .await?;
    let old_db = job.from.admin.connect(Some(tenant)).await?;
    exec(
        &old_db,
        &sql::drop_publication(&name),
        ctx("dropping the publication"),
    )
    .await?;
    let mut old_admin = job.from.admin.connect(None).await?;
    old_admin
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active",
            &[&name],
        )
        .await
        .map_err(|e| Error::sql(ctx("dropping the replication slot"), e))?;
    old_admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
            &[&name],
        )
        .await
        .map_err(|e| Error::sql(ctx("ending the streaming login's sessions"), e))?;
    let exists = holds(
        &old_admin,
        "SELECT count(*) > 0 FROM pg_roles WHERE rolname = $1",
        &name,
        ctx("reading the streaming login"),
    )
    .await?;
    if exists {
        tx(
            &mut old_admin,
            &sql::drop_streaming_login(&name, tenant),
            ctx("dropping the streaming login"),
        )
        .await?;
    }
    Ok(())
}
