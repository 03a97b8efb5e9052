//! A tenant's move from one server to another, online with PostgreSQL's
//! logical replication ([`logical`]) or, when that cannot be used, offline
//! with COPY while its writes are closed ([`offline`]): what plan says
//! about it ([`survey`]) and what apply does ([`run`]). Every step is idempotent and where the move stands is kept in
//! the two database markers ([`tenantry_layout::Move`]), so an apply killed
//! at any point is resumed (or, in the cutover, finished) by the next one:
//!
//! 1. **Prepare** the new server: the tenant's roles, database, schema (the
//!    usual apply of a one-tenant share, its logins NOLOGIN and its marker
//!    `move=in`), then every table emptied of what migrations seeded.
//! 2. **Copy** (online only): a temporary streaming login and a
//!    publication on the old server, a subscription on the new one (copy,
//!    then stream); wait for every table to be copied and the lag to be
//!    small.
//! 3. **Cutover**: mark the old copy `move=cutover` (gateways hold the
//!    tenant's requests), its logins NOLOGIN and their sessions ended; wait
//!    until the new server has everything up to the old one's WAL position;
//!    copy the sequences; drop subscription, publication and streaming
//!    login (offline: copy every table and sequence instead); open the new copy (its logins and its plain marker in one
//!    transaction: from then on it is the tenant's), and mark the old one
//!    `move=out` (closed, dropped later by `apply --allow-destroy`).
//!
//! At no moment do both copies take writes: the new one opens only after
//! the old one is closed and drained. Deciding that a tenant moves is
//! [`tenantry_plan::placement`]'s; its plan text is [`tenantry_plan::moves`].

use std::time::{Duration, Instant};

use tenantry_layout::{Kind, Marker, Move};
use tenantry_manifest::{Inventory, Status};
use tenantry_plan::model::Observed;
use tenantry_plan::moves::{sql, Method, MovePlan, Stage};
use tokio_postgres::{Client, GenericClient};

use crate::apply::{exec, tx};
use crate::connect::Admin;
use crate::error::Error;
use crate::migrate::Migrations;

mod logical;
mod offline;

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
            "SELECT current_setting('wal_level'), pg_database_size($1::text),
                    (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) OR pg_has_role('pg_signal_backend', 'USAGE')",
            &[&tenant],
        )
        .await
        .map_err(|e| Error::sql(ctx("reading the old server"), e))?;
    let wal_level: String = row.get(0);
    let bytes: i64 = row.get(1);
    let can_signal: bool = row.get(2);
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
    if let Method::DumpRestore { .. } = &plan.method {
        // Writes are closed by ending the tenant's sessions.
        if !can_signal {
            plan.conflict = Some(format!(
                "it cannot move: the admin of server {} may not end the tenant's sessions, so its writes could not be closed for the copy. As a superuser there: GRANT pg_signal_backend TO <the admin role>, then plan again",
                from.name
            ));
        }
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
            if plan.method == Method::Logical {
                logical::clean_up(job).await?;
            }
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
    if plan.method == Method::Logical {
        logical::stream(job, progress).await?;
    }
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
        fleet: inv,
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
/// Whether `sql` (a `SELECT count(*) > 0 ... $1`) holds for `name`.
async fn holds(client: &Client, sql: &str, name: &str, context: String) -> Result<bool, Error> {
    Ok(client
        .query_one(sql, &[&name])
        .await
        .map_err(|e| Error::sql(context, e))?
        .get(0))
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
    let ctx = |what: &str| format!("tenant {tenant}: {what}");
    let t = job
        .inventory
        .tenant(tenant)
        .expect("a moving tenant is in the file");
    // Everything the cutover uses is connected first: the pause is only
    // statements.
    let mut old_admin = job.from.admin.connect(None).await?;
    let old_logins = logins(fleet, &old_admin, tenant).await?;
    let mut new_admin = job.to.admin.connect(None).await?;
    let new_logins = logins(fleet, &new_admin, tenant).await?;
    let mut catch_up = match plan.method {
        Method::Logical => Some(logical::CatchUp::connect(job).await?),
        Method::DumpRestore { .. } => None,
    };
    progress("cutover: closing the old copy");
    let start = Instant::now();
    // Closed and marked at once (gateways hold the tenant's requests from
    // here): a crash from now on leaves the tenant closed, never open on
    // either side, until the next apply finishes the cutover.
    let mut close = sql::logins(&old_logins, false);
    // New sessions are turned away by CONNECT too: it is checked after a
    // starting session takes its lock on the database (see `drain`).
    close.push(tenantry_plan::statements::revoke_connect(
        tenant,
        old_logins.contains(&tenantry_layout::roles::gateway_login_name(tenant)),
    ));
    close.extend(sql::mark(
        fleet,
        tenant,
        t.deletion_protection,
        Some(Move::Cutover {
            to: plan.to.clone(),
        }),
    ));
    tx(&mut old_admin, &close, ctx("closing the old copy")).await?;
    drain(&old_admin, tenant, &old_logins)
        .await
        .map_err(|e| Error::sql(ctx("ending its sessions on the old server"), e))?;
    match &mut catch_up {
        Some(c) => c.run(job).await?,
        None => offline::copy(job, progress).await?,
    }
    // The commit point: the new copy's logins and its plain marker at once.
    let mut open = sql::logins(&new_logins, t.status == Status::Active);
    open.extend(sql::mark(fleet, tenant, t.deletion_protection, None));
    tx(&mut new_admin, &open, ctx("opening the new copy")).await?;
    let paused = start.elapsed();
    progress(&format!(
        "cutover done: writes were closed for {:.0?}",
        paused
    ));
    if catch_up.is_some() {
        logical::clean_up(job).await?;
    }
    leave(job).await?;
    Ok(Moved {
        paused: Some(paused),
        notes: vec![format!(
            "moved to server {}; its old copy on {} is closed and kept until apply --allow-destroy (after a backup)",
            plan.to, plan.from
        )],
    })
}

/// Ends the sessions of `logins` on a closed copy and waits until none is
/// left or starting: a write in flight either committed before (and goes
/// across) or is rolled back. A session that passed its LOGIN check just
/// before the close is either visible (and ended) or still starting, and
/// then holds its lock on the database: it took it before checking CONNECT
/// and shows in `pg_stat_activity` before it lets go. So the locks are read
/// first, then the sessions, until both are none.
async fn drain(
    admin: &Client,
    tenant: &str,
    logins: &[String],
) -> Result<(), tokio_postgres::Error> {
    loop {
        let starting: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'object' AND classid = 'pg_database'::regclass
                   AND objid = (SELECT oid FROM pg_database WHERE datname = $1) AND pid <> pg_backend_pid()",
                &[&tenant],
            )
            .await?
            .get(0);
        let left: i64 = admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = ANY($1) AND pid <> pg_backend_pid()",
                &[&logins],
            )
            .await?
            .get(0);
        if starting == 0 && left == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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
async fn copy_sequences(
    old: &impl GenericClient,
    new: &impl GenericClient,
) -> Result<(), tokio_postgres::Error> {
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

/// Before a tenant's database is dropped on a server (`ctx.admin`, whose
/// admin database `client` is connected to): what a move of it left. A
/// copy being filled by a move that was called off is unsubscribed, and
/// the move's replication slot, publication and streaming login on the
/// server it came from are dropped (first: if that server cannot be
/// reached, nothing is dropped here either, so the slot is never
/// forgotten while it keeps WAL). A copy that is itself the source of a
/// move loses the move's slot and streaming login here (its publication
/// goes with the database). Returns notes worth printing.
pub(crate) async fn before_drop(
    ctx: &crate::apply::Context<'_>,
    client: &Client,
    tenant: &str,
) -> Result<Vec<String>, Error> {
    let fleet = ctx.fleet.fleet.as_str();
    let name = tenantry_layout::moves::replication_name(fleet, tenant);
    let ctx_of = |what: &str| format!("tenant {tenant}: {what}");
    let mut notes = Vec::new();
    if let Some(Marker {
        moving: Some(Move::In { from }),
        ..
    }) = marker(fleet, client, tenant).await?
    {
        let server = ctx.fleet.servers.get(&from).ok_or_else(|| {
            Error::other(
                ctx_of("dropping its unfinished copy"),
                format!("it was being filled from server {from}, which is not in the file: put the server back (its replication slot for this copy keeps WAL there), then apply again"),
            )
        })?;
        let source = Admin::from_url(server.admin_url.as_ref())?;
        let source_client = source.connect(None).await.map_err(|e| {
            Error::other(
                ctx_of("dropping its unfinished copy"),
                format!("server {from}, whose replication slot for this copy keeps WAL, cannot be reached ({e}): apply again once it can"),
            )
        })?;
        // Stopped first (no new table copies, so no new slots on the
        // source), dropped last.
        let here = ctx.admin.connect(Some(tenant)).await?;
        let subscription: Option<u32> = here
            .query_opt(
                "SELECT oid FROM pg_subscription WHERE subname = $1 AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[&name],
            )
            .await
            .map_err(|e| Error::sql(ctx_of("reading its subscription"), e))?
            .map(|r| r.get(0));
        if subscription.is_some() {
            exec(
                &here,
                &sql::disable_subscription(&name),
                ctx_of("stopping its subscription"),
            )
            .await?;
        }
        if let Ok(db) = source.connect(Some(tenant)).await {
            exec(
                &db,
                &sql::drop_publication(&name),
                ctx_of("dropping the move's publication"),
            )
            .await?;
        }
        release_source(&source_client, tenant, &name).await?;
        if let Some(oid) = subscription {
            // The slots of its table copies still under way (PostgreSQL
            // names them after the subscription).
            let pattern = format!("pg\\_{oid}\\_sync\\_%");
            for slot in slots(&source_client, &pattern, tenant).await? {
                release_slot(&source_client, tenant, &slot).await?;
            }
            for statement in sql::detach_subscription(&name) {
                exec(
                    &here,
                    &statement,
                    ctx_of("unsubscribing its unfinished copy"),
                )
                .await?;
            }
        }
        notes.push(format!(
            "the move from server {from} was called off: its subscription, and the replication slot, publication and streaming login on {from}, are dropped"
        ));
    }
    release_source(client, tenant, &name).await?;
    Ok(notes)
}

/// On a move's source server (admin database): its streaming login (no
/// new connections) and its replication slot (its sender ended first), if
/// there. The login's grant on the tenant's database goes before it, while
/// the database exists.
async fn release_source(client: &Client, tenant: &str, name: &str) -> Result<(), Error> {
    let ctx_of = |what: &str| format!("tenant {tenant}: {what}");
    if holds(
        client,
        "SELECT count(*) > 0 FROM pg_roles WHERE rolname = $1",
        name,
        ctx_of("reading the move's streaming login"),
    )
    .await?
    {
        let exists = holds(
            client,
            "SELECT count(*) > 0 FROM pg_database WHERE datname = $1",
            tenant,
            ctx_of("reading its database"),
        )
        .await?;
        let mut drop = sql::drop_streaming_login(name, tenant);
        if !exists {
            drop.remove(0);
        }
        for statement in drop {
            exec(
                client,
                &statement,
                ctx_of("dropping the move's streaming login"),
            )
            .await?;
        }
    }
    release_slot(client, tenant, name).await
}

/// The replication slots whose names are LIKE `pattern`.
async fn slots(client: &Client, pattern: &str, tenant: &str) -> Result<Vec<String>, Error> {
    Ok(client
        .query(
            "SELECT slot_name::text FROM pg_replication_slots WHERE slot_name LIKE $1",
            &[&pattern],
        )
        .await
        .map_err(|e| {
            Error::sql(
                format!("tenant {tenant}: reading the move's replication slots"),
                e,
            )
        })?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Drops replication slot `name` if there, ending its sender first.
async fn release_slot(client: &Client, tenant: &str, name: &str) -> Result<(), Error> {
    let ctx_of = |what: &str| format!("tenant {tenant}: {what}");
    loop {
        let active: Option<Option<i32>> = client
            .query_opt(
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
                &[&name],
            )
            .await
            .map_err(|e| Error::sql(ctx_of("reading the move's replication slot"), e))?
            .map(|r| r.get(0));
        match active {
            None => return Ok(()),
            Some(Some(pid)) => {
                client
                    .execute("SELECT pg_terminate_backend($1)", &[&pid])
                    .await
                    .map_err(|e| Error::sql(ctx_of("ending the move's sender"), e))?;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Some(None) => {
                client
                    .execute("SELECT pg_drop_replication_slot($1)", &[&name])
                    .await
                    .map_err(|e| Error::sql(ctx_of("dropping the move's replication slot"), e))?;
            }
        }
    }
}
