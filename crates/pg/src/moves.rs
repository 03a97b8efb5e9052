//! A tenant's move from one server to another with PostgreSQL's logical
//! replication: what plan says about it ([`survey`]) and what apply does
//! ([`run`]). Every step is idempotent and where the move stands is kept in
//! the two database markers ([`tenantry_layout::Move`]), so an apply killed
//! at any point is resumed (or, in the cutover, finished) by the next one:
//!
//! 1. **Prepare** the new server: the tenant's roles, database, schema (the
//!    usual apply of a one-tenant share, its logins NOLOGIN and its marker
//!    `move=in`), then every table emptied of what migrations seeded.
//! 2. **Copy**: a temporary streaming login and a publication on the old
//!    server, a subscription on the new one (copy, then stream); wait for
//!    every table to be copied and the lag to be small.
//! 3. **Cutover**: mark the old copy `move=cutover` (gateways hold the
//!    tenant's requests), its logins NOLOGIN and their sessions ended; wait
//!    until the new server has everything up to the old one's WAL position;
//!    copy the sequences; drop subscription, publication and streaming
//!    login; open the new copy (its logins and its plain marker in one
//!    transaction: from then on it is the tenant's), and mark the old one
//!    `move=out` (closed, dropped later by `apply --allow-destroy`).
//!
//! At no moment do both copies take writes: the new one opens only after
//! the old one is closed and drained. Deciding that a tenant moves is
//! [`tenantry_plan::placement`]'s; its plan text is [`tenantry_plan::moves`].

use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use tenantry_layout::moves::replication_name;
use tenantry_layout::roles::group_role_name;
use tenantry_layout::{Group, Kind, Marker, Move};
use tenantry_manifest::{Inventory, Status};
use tenantry_plan::model::Observed;
use tenantry_plan::moves::{sql, Method, MovePlan, Stage};
use tokio_postgres::Client;

use crate::apply::{exec, tx};
use crate::connect::Admin;
use crate::error::Error;
use crate::migrate::Migrations;

/// One server of a move, as its planning session read it.
pub struct Side<'a> {
    pub name: &'a str,
    pub admin: &'a Admin,
    /// The admin connection (holding the apply lock).
    pub client: &'a Client,
    pub observed: &'a Observed,
}

/// What plan says about moving `tenant` (see [`MovePlan`]): how (and why
/// not online), how much, and what stops it.
pub async fn survey(
    fleet: &str,
    tenant: &str,
    from: &Side<'_>,
    to: &Side<'_>,
    cutover: bool,
) -> Result<MovePlan, Error> {
    let ctx = |what: &str| format!("tenant {tenant}: {what}");
    let row = from
        .client
        .query_one(
            "SELECT current_setting('wal_level'), pg_database_size($1::text)",
            &[&tenant],
        )
        .await
        .map_err(|e| Error::sql(ctx("reading the old server"), e))?;
    let wal_level: String = row.get(0);
    let bytes: i64 = row.get(1);
    let incoming = marker(fleet, to.client, tenant)
        .await?
        .is_some_and(|m| matches!(m.moving, Some(Move::In { .. })));
    let stage = match (cutover, incoming) {
        (true, _) => Stage::Cutover,
        (false, true) => Stage::Copying,
        (false, false) => Stage::Start,
    };
    let method = if !from.observed.current_user_is_superuser {
        Method::DumpRestore {
            why: format!("the admin of server {} is not a superuser", from.name),
        }
    } else if !to.observed.current_user_is_superuser {
        Method::DumpRestore {
            why: format!("the admin of server {} is not a superuser", to.name),
        }
    } else if wal_level != "logical" {
        Method::DumpRestore {
            why: format!(
                "server {} has wal_level = {wal_level}; logical replication needs wal_level = logical (and a restart)",
                from.name
            ),
        }
    } else {
        Method::Logical
    };
    let mut plan = MovePlan {
        tenant: tenant.to_owned(),
        from: from.name.to_owned(),
        to: to.name.to_owned(),
        stage,
        method,
        bytes: Some(bytes),
        versions: (
            from.observed.server_version_num,
            to.observed.server_version_num,
        ),
        conflict: None,
        waits: None,
        leftover_in_the_way: false,
    };
    if let Method::DumpRestore { why } = &plan.method {
        // The copy with writes closed throughout is not built yet: refuse
        // rather than pretend.
        plan.conflict = Some(format!(
            "it cannot move online: {why}. Online moves need superuser admins on both servers and wal_level = logical on the old one"
        ));
        return Ok(plan);
    }
    if stage != Stage::Cutover {
        let db = from.admin.connect(Some(tenant)).await?;
        let missing = without_identity(&db)
            .await
            .map_err(|e| Error::sql(ctx("reading its tables"), e))?;
        if !missing.is_empty() {
            plan.conflict = Some(format!(
                "it cannot move online: table(s) {} have no primary key or replica identity, so their updates and deletes cannot be streamed. Add a primary key (or ALTER TABLE ... REPLICA IDENTITY FULL) in a migration, then plan again",
                missing.join(", ")
            ));
        }
    }
    Ok(plan)
}

/// Tables (partitions included) whose updates and deletes logical
/// replication cannot carry: no primary key, and no replica identity
/// index or FULL identity.
async fn without_identity(db: &Client) -> Result<Vec<String>, tokio_postgres::Error> {
    let rows = db
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind = 'r'
               AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND n.nspname NOT LIKE 'pg\\_toast%'
               AND c.relreplident <> 'f'
               AND NOT EXISTS (
                 SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid
                   AND ((c.relreplident = 'd' AND i.indisprimary)
                     OR (c.relreplident = 'i' AND i.indisreplident)))
             ORDER BY 1",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The fleet's marker on database `tenant`, if any.
async fn marker(fleet: &str, client: &Client, tenant: &str) -> Result<Option<Marker>, Error> {
    let row = client
        .query_opt(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
            &[&tenant],
        )
        .await
        .map_err(|e| Error::sql(format!("tenant {tenant}: reading its marker"), e))?;
    Ok(row
        .and_then(|r| r.get::<_, Option<String>>(0))
        .and_then(|c| Marker::parse(&c))
        .filter(|m| m.fleet == fleet && m.tenant == tenant && m.kind == Kind::Database))
}

/// What a move needs besides its plan.
pub struct Job<'a> {
    pub plan: &'a MovePlan,
    /// The whole file (the tenant's share of the new server is cut from it).
    pub inventory: &'a Inventory,
    pub from: Side<'a>,
    pub to: Side<'a>,
    pub migrations: &'a Migrations,
    pub lock_wait: Duration,
    /// How small the lag must be before the cutover starts.
    pub max_lag: u64,
}

/// How long the writes were closed, and notes worth printing.
#[derive(Debug, Default)]
pub struct Moved {
    /// From the old copy's close to the new copy's open.
    pub paused: Option<Duration>,
    pub notes: Vec<String>,
}

/// Carries out (or resumes, or finishes) one move; `progress` gets a line
/// at each step and now and then while copying.
pub async fn run(job: &Job<'_>, progress: &(dyn Fn(&str) + Sync)) -> Result<Moved, Error> {
    let plan = job.plan;
    let (tenant, fleet) = (plan.tenant.as_str(), job.inventory.fleet.as_str());
    let old = marker(fleet, job.from.client, tenant).await?;
    let new = marker(fleet, job.to.client, tenant).await?;
    let want = |to: &str| to == plan.to;
    match (
        old.as_ref().map(|m| &m.moving),
        new.as_ref().map(|m| &m.moving),
    ) {
        // Opened already: only the old copy's marker is left.
        (Some(Some(Move::Cutover { to })), Some(None)) if want(to) => {
            progress("the new copy is open; marking the old one as left behind");
            leave(job).await?;
            return Ok(Moved::default());
        }
        (Some(Some(Move::Cutover { to })), Some(Some(Move::In { .. }))) if want(to) => {
            return cutover(job, progress).await;
        }
        (Some(None), None | Some(Some(Move::In { .. }))) => {}
        (old, new) => {
            return Err(Error::other(
                format!("tenant {tenant}: moving from {} to {}", plan.from, plan.to),
                format!(
                    "the copies are not where a move can go on from (old: {}, new: {}); plan again",
                    describe(old),
                    describe(new)
                ),
            ))
        }
    }
    progress(&format!("preparing its copy on server {}", plan.to));
    prepare(job).await?;
    stream(job, progress).await?;
    cutover(job, progress).await
}

fn describe(m: Option<&Option<Move>>) -> String {
    match m {
        None => "no copy".to_owned(),
        Some(None) => "open".to_owned(),
        Some(Some(Move::In { from })) => format!("being filled from {from}"),
        Some(Some(Move::Cutover { to })) => format!("being cut over to {to}"),
        Some(Some(Move::Out { to, .. })) => format!("left behind by a move to {to}"),
    }
}

/// Step 1: the tenant's roles, database and schema on the new server, as
/// apply makes them for a new tenant, but closed (NOLOGIN) and marked as
/// incoming. Idempotent: planned from the new server's catalog each time.
async fn prepare(job: &Job<'_>) -> Result<(), Error> {
    let (plan, inv) = (job.plan, job.inventory);
    let tenant = plan.tenant.as_str();
    let version = schema_version(job.migrations, job.from.admin, tenant).await?;
    if version != job.migrations.latest() {
        return Err(Error::other(
            format!("tenant {tenant}: moving"),
            format!(
                "its schema on server {} is at version {}, the schema directory's latest is {}: run `tenantry migrate` (or apply) first, then apply again",
                plan.from,
                version.map_or("(none)".to_owned(), |v| v.to_string()),
                job.migrations.latest().map_or("(none)".to_owned(), |v| v.to_string()),
            ),
        ));
    }
    let mut share = inv.share(&plan.to, &|t| t == tenant);
    for t in &mut share.tenants {
        t.status = Status::Suspended;
    }
    let client = job.to.admin.connect(None).await?;
    let from = plan.from.clone();
    let session = crate::session::plan_on_with(
        job.to.admin.clone(),
        client,
        &share,
        job.migrations.clone(),
        1,
        |d| {
            for t in &mut d.tenants {
                t.moving = Some(Move::In { from: from.clone() });
            }
        },
    )
    .await?;
    if let Some(c) = session.plan.conflicts.first() {
        return Err(Error::other(
            format!("tenant {tenant}: preparing its copy on server {}", plan.to),
            format!("{} {}: {}", c.object, c.name, c.reason),
        ));
    }
    let pg_dump = std::path::PathBuf::from("pg_dump");
    let ctx = crate::apply::Context {
        admin: &session.admin,
        inventory: &share,
        desired: &session.desired,
        observed: &session.observed,
        migrations: &session.migrations,
        pg_dump: &pg_dump,
        jobs: 1,
        lock_wait: job.lock_wait,
    };
    for outcome in crate::apply::apply(&ctx, &session.plan, |_| {}).await {
        outcome.result?;
    }
    Ok(())
}

/// The schema version of the tenant's database on a server.
async fn schema_version(
    migrations: &Migrations,
    admin: &Admin,
    tenant: &str,
) -> Result<Option<i64>, Error> {
    let db = admin.connect(Some(tenant)).await?;
    let history = migrations
        .history(&db)
        .await
        .map_err(|e| Error::sql(format!("tenant {tenant}: reading its schema version"), e))?;
    Ok(history.version)
}

/// Step 2: publication, streaming login and subscription (once), then wait
/// for the copy and for the lag to be small.
async fn stream(job: &Job<'_>, progress: &(dyn Fn(&str) + Sync)) -> Result<(), Error> {
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
            progress(&format!(
                "copying: {done}/{all} table(s) copied, {} in flight",
                tenantry_plan::moves::human_bytes(bytes)
            ));
            said = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether `sql` (a `SELECT count(*) > 0 ... $1`) holds for `name`.
async fn holds(client: &Client, sql: &str, name: &str, context: String) -> Result<bool, Error> {
    Ok(client
        .query_one(sql, &[&name])
        .await
        .map_err(|e| Error::sql(context, e))?
        .get(0))
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

/// The tenant's login roles on a server (its gateway login and users), by
/// their markers.
async fn logins(fleet: &str, client: &Client, tenant: &str) -> Result<Vec<String>, Error> {
    let rows = client
        .query(
            "SELECT rolname::text, shobj_description(oid, 'pg_authid') FROM pg_roles WHERE shobj_description(oid, 'pg_authid') LIKE $1",
            &[&tenantry_layout::marker::LIKE],
        )
        .await
        .map_err(|e| Error::sql(format!("tenant {tenant}: reading its logins"), e))?;
    Ok(rows
        .iter()
        .filter(|r| {
            r.get::<_, Option<String>>(1)
                .and_then(|c| Marker::parse(&c))
                .is_some_and(|m| {
                    m.fleet == fleet
                        && m.tenant == tenant
                        && matches!(m.kind, Kind::User | Kind::Gateway)
                })
        })
        .map(|r| r.get(0))
        .collect())
}

/// Step 3 (see the module docs). Each step may have run before (a killed
/// apply): closing again, waiting for a position already reached, copying
/// sequences again into a copy still closed, dropping what is gone, are
/// all no-ops.
async fn cutover(job: &Job<'_>, progress: &(dyn Fn(&str) + Sync)) -> Result<Moved, Error> {
    let plan = job.plan;
    let (tenant, fleet) = (plan.tenant.as_str(), job.inventory.fleet.as_str());
    let name = replication_name(fleet, tenant);
    let ctx = |what: &str| format!("tenant {tenant}: {what}");
    let t = job
        .inventory
        .tenant(tenant)
        .expect("a moving tenant is in the file");
    progress("cutover: closing the old copy");
    let start = Instant::now();
    // Closed and marked at once (gateways hold the tenant's requests from
    // here): a crash from now on leaves the tenant closed, never open on
    // either side, until the next apply finishes the cutover.
    let mut old_admin = job.from.admin.connect(None).await?;
    let old_logins = logins(fleet, &old_admin, tenant).await?;
    let mut close = sql::logins(&old_logins, false);
    close.extend(sql::mark(
        fleet,
        tenant,
        t.deletion_protection,
        Some(Move::Cutover {
            to: plan.to.clone(),
        }),
    ));
    tx(&mut old_admin, &close, ctx("closing the old copy")).await?;
    // End the sessions and wait until they are gone: a write in flight
    // either committed before (and is streamed) or is rolled back.
    loop {
        let left: i64 = old_admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = ANY($1) AND pid <> pg_backend_pid()",
                &[&old_logins],
            )
            .await
            .map_err(|e| Error::sql(ctx("ending its sessions on the old server"), e))?
            .get(0);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Everything written before is on the new server once the slot has
    // confirmed the old server's current position.
    let target: String = old_admin
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .map_err(|e| Error::sql(ctx("reading the old server's position"), e))?
        .get(0);
    let waited = Instant::now();
    loop {
        let row = old_admin
            .query_opt(
                "SELECT confirmed_flush_lsn >= $2::text::pg_lsn FROM pg_replication_slots WHERE slot_name = $1",
                &[&name, &target],
            )
            .await
            .map_err(|e| Error::sql(ctx("waiting for the new server"), e))?;
        match row.map(|r| r.get::<_, Option<bool>>(0)) {
            // No slot: dropped after an earlier run had caught up.
            None | Some(Some(true)) => break,
            _ => {}
        }
        if waited.elapsed() > Duration::from_secs(120) {
            return Err(Error::other(
                ctx("cutover"),
                format!(
                    "server {} has not confirmed the old server's position {target} after 2 minutes: see its log; apply again to finish the cutover (the tenant stays closed until then)",
                    plan.to
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let old_db = job.from.admin.connect(Some(tenant)).await?;
    let new_db = job.to.admin.connect(Some(tenant)).await?;
    copy_sequences(&old_db, &new_db)
        .await
        .map_err(|e| Error::sql(ctx("copying its sequences"), e))?;
    exec(
        &new_db,
        &sql::drop_subscription(&name),
        ctx("dropping the subscription"),
    )
    .await?;
    exec(
        &old_db,
        &sql::drop_publication(&name),
        ctx("dropping the publication"),
    )
    .await?;
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
    // The commit point: the new copy's logins and its plain marker at once.
    let mut new_admin = job.to.admin.connect(None).await?;
    let new_logins = logins(fleet, &new_admin, tenant).await?;
    let mut open = sql::logins(&new_logins, t.status == Status::Active);
    open.extend(sql::mark(fleet, tenant, t.deletion_protection, None));
    tx(&mut new_admin, &open, ctx("opening the new copy")).await?;
    let paused = start.elapsed();
    progress(&format!(
        "cutover done: writes were closed for {:.0?}",
        paused
    ));
    leave(job).await?;
    Ok(Moved {
        paused: Some(paused),
        notes: vec![format!(
            "moved to server {}; its old copy on {} is closed and kept until apply --allow-destroy (after a backup)",
            plan.to, plan.from
        )],
    })
}

/// Marks the old copy as left behind (closed, unprotected: it is no longer
/// the tenant).
async fn leave(job: &Job<'_>) -> Result<(), Error> {
    let plan = job.plan;
    let at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let mut admin = job.from.admin.connect(None).await?;
    tx(
        &mut admin,
        &sql::mark(
            &job.inventory.fleet,
            &plan.tenant,
            false,
            Some(Move::Out {
                to: plan.to.clone(),
                at,
            }),
        ),
        format!("tenant {}: marking its old copy", plan.tenant),
    )
    .await
}

/// Every sequence's position, old copy to new (logical replication does
/// not carry them). A sequence never used keeps its start.
async fn copy_sequences(old: &Client, new: &Client) -> Result<(), tokio_postgres::Error> {
    let rows = old
        .query(
            "SELECT format('%I.%I', schemaname, sequencename), last_value, start_value FROM pg_sequences",
            &[],
        )
        .await?;
    for r in rows {
        let (seq, last, start): (String, Option<i64>, i64) = (r.get(0), r.get(1), r.get(2));
        let (value, called) = match last {
            Some(v) => (v, true),
            None => (start, false),
        };
        new.execute(
            "SELECT setval($1::text::regclass, $2, $3)",
            &[&seq, &value, &called],
        )
        .await?;
    }
    Ok(())
}
