//! Carries out a plan: tenants in parallel (bounded), each tenant's changes in
//! a fixed, crash-safe order: group roles, database, migrations, privileges,
//! login users, removals. Every step is idempotent and re-planned from the
//! catalog on the next run, so an apply killed at any point converges when
//! run again. One tenant's failure does not stop the others.

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::{stream, StreamExt};
use secrecy::ExposeSecret;
use tenantry_layout::roles::{gateway_login_name, group_role_name, GATEWAY_SCRAM_ITERATIONS};
use tenantry_layout::Kind;
use tenantry_manifest::{Group, Inventory, Login as _, Status};
use tenantry_plan::model::{Desired, DesiredTenant, Observed};
use tenantry_plan::plan::{Action, Change, Plan, TenantPlan};
use tenantry_plan::statements::Memberships;
use tenantry_plan::{scram, statements};
use tokio_postgres::Client;

use crate::connect::Admin;
use crate::error::Error;
use crate::migrate::Migrations;

/// What apply needs besides the plan.
pub struct Context<'a> {
    pub admin: &'a Admin,
    /// This server's share of the file.
    pub inventory: &'a Inventory,
    /// The whole file (a move's other server, when a copy it left is
    /// dropped).
    pub fleet: &'a Inventory,
    pub desired: &'a Desired,
    pub observed: &'a Observed,
    pub migrations: &'a Migrations,
    /// The `pg_dump` used for backups before a drop.
    pub pg_dump: &'a Path,
    /// Tenants worked on at once (at most; fewer when the server has few
    /// free connections: each takes two, see [`crate::budget`]).
    pub jobs: usize,
    /// How long a migration waits for another run on the same database.
    pub lock_wait: Duration,
}

/// How one tenant went.
#[derive(Debug)]
pub struct Outcome {
    pub tenant: String,
    pub action: Action,
    pub elapsed: Duration,
    /// Notes worth printing (e.g. where a backup went), or the error.
    pub result: Result<Vec<String>, Error>,
}

/// Applies every tenant of the plan; `done` is called as each finishes.
pub async fn apply(ctx: &Context<'_>, plan: &Plan, mut done: impl FnMut(&Outcome)) -> Vec<Outcome> {
    let wanted = ctx.jobs.min(plan.tenants.len());
    let jobs = crate::budget::workers_for(ctx.admin, wanted, CONNECTIONS_PER_TENANT).await;
    let mut outcomes: Vec<Outcome> = stream::iter(&plan.tenants)
        .map(|tp| async move {
            let start = Instant::now();
            let result = match tp.action {
                Action::Destroy | Action::Leftover => destroy(ctx, tp).await,
                Action::Create | Action::Update => match converge(ctx, tp).await {
                    Ok(mut notes) => {
                        notes.extend(record(ctx, tp).await);
                        Ok(notes)
                    }
                    Err(e) => Err(e),
                },
            };
            Outcome {
                tenant: tp.tenant.clone(),
                action: tp.action,
                elapsed: start.elapsed(),
                result,
            }
        })
        .buffer_unordered(jobs)
        .inspect(|o| done(o))
        .collect()
        .await;
    outcomes.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    outcomes
}

/// Appends what apply did to the tenant's audit trail: created, or
/// suspended, resumed or updated (the plan's lines), and migrated (from,
/// to). A note when an entry could not be written (the change stands).
async fn record(ctx: &Context<'_>, tp: &TenantPlan) -> Option<String> {
    use tenantry_layout::audit::Action as Audit;
    let t = desired_tenant(ctx, &tp.tenant);
    if t.moving.is_some() {
        // A copy being filled by a move takes the trail from the old copy
        // (its rows stream in with their ids): nothing of its own.
        return None;
    }
    let login_turned = |to: &str| {
        tp.changes.iter().any(|c| match c {
            Change::UpdateUser { diffs, .. } | Change::UpdateGatewayLogin { diffs, .. } => {
                diffs.iter().any(|d| d.what == "login" && d.new == to)
            }
            _ => false,
        })
    };
    let action = match tp.action {
        Action::Create => Audit::Created,
        _ if t.status == Status::Suspended && login_turned("false") => Audit::Suspended,
        _ if t.status == Status::Active && login_turned("true") => Audit::Resumed,
        _ => Audit::Updated,
    };
    let mut entries = vec![(
        action,
        serde_json::json!({ "changes": tenantry_plan::render::change_lines(tp) }),
    )];
    // A new database's first migrations are part of its creation.
    for c in tp.changes.iter().filter(|_| action != Audit::Created) {
        if let Change::Migrate { from, to, .. } = c {
            entries.push((
                Audit::Migrated,
                serde_json::json!({ "from": from, "to": to }),
            ));
        }
    }
    let client = match ctx.admin.connect(Some(&t.name)).await {
        Ok(c) => c,
        Err(e) => return Some(format!("audit trail not written: {e}")),
    };
    for (action, detail) in entries {
        match crate::audit::record_on(&client, &t.name, action, detail).await {
            Ok(()) => {}
            Err(e) if crate::audit::is_missing_trail(&e) => return None,
            Err(e) => return Some(format!("audit trail not written: {e}")),
        }
    }
    None
}

/// Connections one tenant's apply holds at once: the admin database's and
/// the tenant database's (or pg_dump's, before a drop).
const CONNECTIONS_PER_TENANT: usize = 2;

/// Runs `statements` in one transaction, errors in `context`.
pub(crate) async fn tx(
    client: &mut Client,
    statements: &[String],
    context: impl Into<String>,
) -> Result<(), Error> {
    let context = context.into();
    let tx = client
        .transaction()
        .await
        .map_err(|e| Error::sql(&context, e))?;
    tx.batch_execute(&statements.join(";\n"))
        .await
        .map_err(|e| Error::sql(&context, e))?;
    tx.commit().await.map_err(|e| Error::sql(&context, e))
}

/// Runs `sql` (one or more statements), errors in `context`.
pub(crate) async fn exec(
    client: &Client,
    sql: &str,
    context: impl Into<String>,
) -> Result<(), Error> {
    client
        .batch_execute(sql)
        .await
        .map_err(|e| Error::sql(context, e))
}

/// Ends every session of a role (suspension, removal). Best effort: an admin
/// that may not signal other backends (a CREATEROLE admin without
/// pg_signal_backend) gets a note instead, and the sessions end on their own.
async fn terminate_user(client: &Client, user: &str, notes: &mut Vec<String>) -> Result<(), Error> {
    let result = client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid()",
            &[&user],
        )
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) => {
            notes.push(format!(
                "open sessions of {user} were not ended (the admin role needs pg_signal_backend); they end when they disconnect"
            ));
            Ok(())
        }
        Err(e) => Err(Error::sql(format!("ending the sessions of {user}"), e)),
    }
}

fn desired_tenant<'a>(ctx: &'a Context<'_>, name: &str) -> &'a DesiredTenant {
    ctx.desired
        .tenants
        .iter()
        .find(|t| t.name == name)
        .expect("planned tenants come from the desired state")
}

async fn converge(ctx: &Context<'_>, tp: &TenantPlan) -> Result<Vec<String>, Error> {
    let t = desired_tenant(ctx, &tp.tenant);
    let fleet = ctx.desired.fleet.as_str();
    let superuser = ctx.observed.current_user_is_superuser;
    let owner = t.role(Group::Owner);
    let mut client = ctx.admin.connect(None).await?;
    let mut notes = Vec::new();

    // 1. Group roles, each with its marker in the same transaction.
    for c in &tp.changes {
        let (role, kind, create, diffs, revoke) = match c {
            Change::CreateRole { role, kind } => (role, *kind, true, &[][..], &[][..]),
            Change::UpdateRole {
                role,
                kind,
                diffs,
                revoke,
            } => (role, *kind, false, &diffs[..], &revoke[..]),
            _ => continue,
        };
        let mut sql = statements::group_role(
            fleet,
            &t.name,
            kind,
            create,
            diffs,
            revoke,
            Memberships::of(ctx.observed, role),
        );
        if kind == Kind::Owner && !superuser {
            sql.push(statements::admin_membership(role));
        }
        tx(&mut client, &sql, format!("tenant {}: role {role}", t.name)).await?;
    }
    // 1b. The gateway's login (a member of the groups, CONNECT on the database).
    for c in &tp.changes {
        let (create, set_password, diffs, revoke) = match c {
            Change::CreateGatewayLogin { .. } => (true, true, &[][..], &[][..]),
            Change::UpdateGatewayLogin {
                diffs,
                set_password,
                revoke,
                ..
            } => (false, *set_password, &diffs[..], &revoke[..]),
            _ => continue,
        };
        let verifier = if set_password {
            let source = ctx
                .inventory
                .tenant(&t.name)
                .expect("planned tenants come from the inventory")
                .gateway
                .clone();
            let verifier = crate::blocking::run(move || {
                source.ensure_password().map(|pw| {
                    scram::verifier_iterations(pw.expose_secret(), GATEWAY_SCRAM_ITERATIONS)
                })
            })
            .await?;
            Some(verifier)
        } else {
            None
        };
        let role = &t.gateway.name;
        let sql = statements::gateway_login(
            fleet,
            t,
            create,
            verifier.as_deref(),
            diffs,
            revoke,
            Memberships::of(ctx.observed, role),
        );
        tx(
            &mut client,
            &sql,
            format!("tenant {}: gateway login {role}", t.name),
        )
        .await?;
        if t.status != tenantry_manifest::Status::Active && diffs.iter().any(|d| d.what == "login")
        {
            terminate_user(&client, role, &mut notes).await?;
        }
    }
    if !superuser {
        // A CREATEROLE admin acts through the owner role (idempotent).
        exec(
            &client,
            &statements::admin_membership(&owner),
            format!("tenant {}: joining {owner}", t.name),
        )
        .await?;
    }

    // 2. The database, its marker and database-level isolation.
    let mut created = false;
    for c in &tp.changes {
        match c {
            Change::CreateDatabase { .. } => {
                exec(
                    &client,
                    &statements::create_database(t),
                    format!("tenant {}: creating the database", t.name),
                )
                .await?;
                created = true;
                let sql = statements::database(fleet, t, true, &[]);
                tx(
                    &mut client,
                    &sql,
                    format!("tenant {}: database settings", t.name),
                )
                .await?;
            }
            Change::UpdateDatabase {
                foreign_grantees, ..
            } => {
                let allow = ctx
                    .observed
                    .databases
                    .get(t.name.as_str())
                    .is_none_or(|d| d.allow_connections);
                let sql = statements::database(fleet, t, allow, foreign_grantees);
                tx(
                    &mut client,
                    &sql,
                    format!("tenant {}: database settings", t.name),
                )
                .await?;
            }
            _ => {}
        }
    }

    // 3. Inside the database, as the owner: migrations, privileges, the token store.
    let migrate = tp
        .changes
        .iter()
        .any(|c| matches!(c, Change::Migrate { .. }));
    let privileges = tp.changes.iter().find_map(|c| match c {
        Change::Privileges {
            foreign_grantees, ..
        } => Some(foreign_grantees.clone()),
        _ => None,
    });
    let store = tp.changes.iter().find_map(|c| match c {
        Change::TokenStore {
            foreign_grantees,
            reown,
            ..
        } => Some((foreign_grantees.clone(), *reown)),
        _ => None,
    });
    let drops: Vec<&str> = tp
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::DropUser { user } => Some(user.as_str()),
            _ => None,
        })
        .collect();
    let grants = created || migrate || privileges.is_some();
    if grants || store.is_some() || !drops.is_empty() {
        let mut db = ctx.admin.connect(Some(&t.name)).await?;
        if let Some((_, true)) = &store {
            tx(
                &mut db,
                &statements::token_store_owner(t),
                format!("tenant {}: handing the token store to {owner}", t.name),
            )
            .await?;
        }
        if grants || store.is_some() {
            let hand_over = superuser
                || ctx
                    .observed
                    .new_public_owner
                    .as_ref()
                    .is_some_and(|o| o.admin_hands_over());
            if grants && hand_over {
                // PostgreSQL 14 and older: `public` of a new database is the
                // bootstrap superuser's; only a superuser (or a role with
                // its owner's privileges) can give it away. Other admins
                // never get here: the plan refuses.
                exec(
                    &db,
                    &statements::public_schema_to_owner(t),
                    format!("tenant {}: handing schema public to {owner}", t.name),
                )
                .await?;
            }
            if migrate {
                ctx.migrations
                    .run(&mut db, &t.name, &owner, ctx.lock_wait)
                    .await?;
            }
            exec(
                &db,
                &statements::set_owner_role(t),
                format!("tenant {}: acting as {owner}", t.name),
            )
            .await?;
            if grants {
                let has_history = crate::migrate::has_history(&db)
                    .await
                    .map_err(|e| Error::sql(format!("tenant {}: reading the schema", t.name), e))?;
                let sql =
                    statements::privileges(t, privileges.as_deref().unwrap_or(&[]), has_history);
                tx(&mut db, &sql, format!("tenant {}: privileges", t.name)).await?;
            }
            if let Some((foreign, _)) = &store {
                tx(
                    &mut db,
                    &statements::token_store(t, foreign),
                    format!("tenant {}: token store", t.name),
                )
                .await?;
            }
            exec(&db, "RESET ROLE", "resetting the role").await?;
        }
        // Login users the file no longer lists: hand their objects to the owner.
        for user in &drops {
            if !superuser {
                exec(
                    &client,
                    &statements::admin_membership(user),
                    format!("tenant {}: joining {user}", t.name),
                )
                .await?;
            }
            terminate_user(&client, user, &mut notes).await?;
            tx(
                &mut db,
                &statements::disown(user, &owner),
                format!("tenant {}: disowning {user}", t.name),
            )
            .await?;
        }
    }

    // 4. Login users, with verifiers computed here; the password never travels.
    for c in &tp.changes {
        let (user, group, create, set_password, diffs, revoke) = match c {
            Change::CreateUser { user, group, .. } => (user, *group, true, true, &[][..], &[][..]),
            Change::UpdateUser {
                user,
                group,
                diffs,
                set_password,
                revoke,
            } => (user, *group, false, *set_password, &diffs[..], &revoke[..]),
            _ => continue,
        };
        let verifier = if set_password {
            let source = ctx
                .inventory
                .tenants
                .iter()
                .flat_map(|t| &t.users)
                .find(|u| u.name.as_str() == user)
                .expect("planned users come from the inventory")
                .clone();
            // Writing a generated password (fsync, a racing writer's retry
            // sleep) and PBKDF2: off the async threads.
            let verifier = crate::blocking::run(move || {
                source
                    .ensure_password()
                    .map(|pw| scram::verifier(pw.expose_secret()))
            })
            .await?;
            Some(verifier)
        } else {
            None
        };
        let login = t.status == tenantry_manifest::Status::Active;
        let spec = statements::UserSpec {
            fleet,
            tenant: t,
            user,
            group,
            login,
            verifier: verifier.as_deref(),
        };
        let sql = statements::user(
            &spec,
            create,
            diffs,
            revoke,
            Memberships::of(ctx.observed, user),
        );
        tx(&mut client, &sql, format!("tenant {}: user {user}", t.name)).await?;
        if !login && diffs.iter().any(|d| d.what == "login") {
            terminate_user(&client, user, &mut notes).await?;
        }
    }

    // 5. Drop removed users last (nothing refers to them any more).
    for user in drops {
        exec(
            &client,
            &statements::drop_role(user),
            format!("tenant {}: dropping {user}", t.name),
        )
        .await?;
    }
    Ok(notes)
}

async fn destroy(ctx: &Context<'_>, tp: &TenantPlan) -> Result<Vec<String>, Error> {
    let superuser = ctx.observed.current_user_is_superuser;
    let client = ctx.admin.connect(None).await?;
    let mut notes = Vec::new();
    let name = &tp.tenant;
    for c in &tp.changes {
        match c {
            Change::DropDatabase { database, .. } => {
                let owner = group_role_name(database, Group::Owner);
                notes.extend(crate::moves::before_drop(ctx, &client, database).await?);
                // In the trail the backup keeps.
                if tp.action == Action::Destroy {
                    crate::audit::note(
                        ctx.admin,
                        database,
                        tenantry_layout::audit::Action::DestroyStarted,
                        serde_json::json!({ "backups": ctx.inventory.paths.backups.display().to_string() }),
                    )
                    .await;
                }
                if !superuser {
                    exec(
                        &client,
                        &statements::admin_membership(&owner),
                        format!("tenant {name}: joining {owner}"),
                    )
                    .await?;
                }
                exec(
                    &client,
                    &statements::revoke_connect(
                        database,
                        ctx.observed
                            .roles
                            .contains_key(&gateway_login_name(database)),
                    ),
                    format!("tenant {name}: closing the database"),
                )
                .await?;
                client
                    .execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                        &[database],
                    )
                    .await
                    .map_err(|e| Error::sql(format!("tenant {name}: ending sessions"), e))?;
                let path = crate::backup::dump(
                    ctx.admin,
                    ctx.pg_dump,
                    database,
                    &owner,
                    &ctx.inventory.paths.backups,
                )
                .await?;
                notes.push(format!("backup of {database}: {}", path.display()));
                exec(
                    &client,
                    &statements::drop_database(database),
                    format!("tenant {name}: dropping the database"),
                )
                .await?;
            }
            Change::DropUser { user } => {
                if !superuser {
                    exec(
                        &client,
                        &statements::admin_membership(user),
                        format!("tenant {name}: joining {user}"),
                    )
                    .await?;
                }
                terminate_user(&client, user, &mut notes).await?;
                exec(
                    &client,
                    &statements::drop_role(user),
                    format!("tenant {name}: dropping {user}"),
                )
                .await?;
            }
            Change::DropRole { role, .. } => {
                exec(
                    &client,
                    &statements::drop_role(role),
                    format!("tenant {name}: dropping {role}"),
                )
                .await?;
            }
            _ => {}
        }
    }
    Ok(notes)
}
