//! `tenantry plan` and `tenantry apply` over every server of the file:
//! plan each server's share at once (`tenantry_pg::sessions`), print one
//! plan, check it may run as a whole, confirm, then apply every server at
//! the same time (`--jobs` tenants at once on each). Flags, printing and
//! exit codes only; the work is in `tenantry_pg`.

use std::io::{BufRead, IsTerminal};

use anyhow::{bail, Result};
use futures_util::future::join_all;
use tenantry_manifest::Inventory;
use tenantry_pg::apply::{self, Outcome};
use tenantry_pg::sessions::{self, Sessions};
use tenantry_plan::plan::Action;
use tenantry_plan::render;

use crate::cli::ApplyFlags;

/// Connects and plans; catalog reads use up to 4 connections per job on
/// each server.
async fn open(
    inventory: &Inventory,
    jobs: usize,
    lock: Option<std::time::Duration>,
) -> Result<Sessions> {
    Ok(sessions::open(inventory, jobs * 4, lock).await?)
}

pub async fn plan(inventory: &Inventory, jobs: usize, json: bool, detailed: bool) -> Result<u8> {
    let s = open(inventory, jobs, None).await?;
    let plan = s.plan();
    if json {
        outln!("{}", render::fleet_json(&plan));
    } else {
        out!("{}", render::fleet_text(&plan));
    }
    let unreachable = plan.unreachable();
    if !unreachable.is_empty() {
        bail!(
            "server(s) {} could not be read: the plan above covers the others only",
            unreachable.join(", ")
        );
    }
    if plan.conflicts() > 0 {
        return Ok(1);
    }
    Ok(if detailed && !plan.is_empty() { 2 } else { 0 })
}

pub async fn apply(inventory: &Inventory, jobs: usize, flags: &ApplyFlags) -> Result<u8> {
    let mut s = open(inventory, jobs, Some(flags.lock_timeout)).await?;
    let plan = s.plan();
    out!("{}", render::fleet_text(&plan));
    plan.check_runnable(flags.allow_destroy, flags.skip_unreachable)?;
    drop(plan);
    if !flags.allow_destroy {
        // Copies moves left behind stay until --allow-destroy.
        for server in &mut s.servers {
            if let Ok(session) = &mut server.session {
                session
                    .plan
                    .tenants
                    .retain(|tp| tp.action != Action::Leftover);
            }
        }
    }
    let moves: Vec<&tenantry_plan::moves::MovePlan> = s
        .moves
        .iter()
        .filter(|m| {
            m.runs() || (m.leftover_in_the_way && m.conflict.is_none() && flags.allow_destroy)
        })
        .collect();
    let plan = s.plan();
    // Every destroy backs up first: a pg_dump that cannot dump its server
    // is found now, before anything starts.
    let pg_dump = tenantry_localpg::client_tool("pg_dump");
    for server in &s.servers {
        if let Ok(session) = &server.session {
            if session.plan.has_destroys() {
                tenantry_pg::backup::check_tool(&session.client, &pg_dump)
                    .await
                    .map_err(|e| match inventory.servers.len() > 1 {
                        true => tenantry_pg::Error::OnServer {
                            server: server.name.clone(),
                            source: Box::new(e),
                        },
                        false => e,
                    })?;
            }
        }
    }
    let skipped: Vec<String> = plan.unreachable().into_iter().map(str::to_owned).collect();
    let skipped_error = || {
        anyhow::anyhow!(
            "skipped server(s) {} (could not be read); the others were applied. Run apply again once they are back.",
            skipped.join(", ")
        )
    };
    if plan.plans().all(|(_, p)| p.is_empty()) && moves.is_empty() {
        return if skipped.is_empty() {
            Ok(0)
        } else {
            Err(skipped_error())
        };
    }
    if !flags.auto_approve && !confirm()? {
        outln!("Apply cancelled. Nothing was changed.");
        return Ok(1);
    }
    let several = inventory.servers.len() > 1;
    outln!();
    let runs = s.servers.iter().filter_map(|server| {
        let session = server.session.as_ref().ok()?;
        if session.plan.is_empty() {
            return None;
        }
        let pg_dump = &pg_dump;
        Some(async move {
            let ctx = apply::Context {
                admin: &session.admin,
                inventory: &server.share,
                fleet: inventory,
                desired: &session.desired,
                observed: &session.observed,
                migrations: &session.migrations,
                pg_dump,
                jobs,
                lock_wait: flags.lock_timeout,
            };
            let on = several.then_some(server.name.as_str());
            apply::apply(&ctx, &session.plan, |o| {
                report(o, on);
                if o.result.is_ok() {
                    if let Some(tp) = session.plan.tenants.iter().find(|tp| tp.tenant == o.tenant) {
                        forget_secrets(inventory, tp);
                    }
                }
            })
            .await
        })
    });
    let mut outcomes: Vec<Outcome> = join_all(runs).await.into_iter().flatten().collect();
    // Moves last, one at a time: a tenant's own copy is up to date first.
    for m in moves {
        let start = std::time::Instant::now();
        let ready = !outcomes
            .iter()
            .any(|o| o.tenant == m.tenant && o.result.is_err());
        let result = if ready {
            outln!("  {}: moving from {} to {}", m.tenant, m.from, m.to);
            run_move(&s, inventory, m, flags.lock_timeout).await
        } else {
            Err(tenantry_pg::Error::Sql {
                context: format!("tenant {}: moving", m.tenant),
                message: "not started: its own changes failed above".to_owned(),
                code: None,
                constraint: None,
            })
        };
        let o = Outcome {
            tenant: m.tenant.clone(),
            action: Action::Update,
            elapsed: start.elapsed(),
            result,
        };
        report(&o, None);
        outcomes.push(o);
    }
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    let count = |a: Action| {
        outcomes
            .iter()
            .filter(|o| o.action == a && o.result.is_ok())
            .count()
    };
    outln!(
        "\nApply {}: {} created, {} updated, {} destroyed, {} failed{}.",
        if failed.is_empty() && skipped.is_empty() {
            "complete"
        } else {
            "incomplete"
        },
        count(Action::Create),
        count(Action::Update),
        count(Action::Destroy),
        failed.len(),
        if skipped.is_empty() {
            String::new()
        } else {
            format!(", server(s) {} skipped", skipped.join(", "))
        }
    );
    drop(plan);
    drop(s); // releases the apply locks
    if !failed.is_empty() {
        bail!(
            "{} tenant(s) failed: {}. Fix the cause and run apply again: it resumes where it stopped.",
            failed.len(),
            failed.iter().map(|o| o.tenant.as_str()).collect::<Vec<_>>().join(", ")
        )
    }
    if !skipped.is_empty() {
        return Err(skipped_error());
    }
    Ok(0)
}

fn report(o: &Outcome, server: Option<&str>) {
    let verb = match o.action {
        Action::Create => "created",
        Action::Update => "updated",
        Action::Destroy => "destroyed",
        Action::Leftover => "dropped its leftover copy",
    };
    let on = server.map(|s| format!(" on {s}")).unwrap_or_default();
    match &o.result {
        Ok(notes) => {
            outln!("  {}: {verb}{on} in {:.1?}", o.tenant, o.elapsed);
            for n in notes {
                outln!("      {n}");
            }
        }
        Err(e) => outln!("  {}{on}: FAILED after {:.1?}: {e}", o.tenant, o.elapsed),
    }
}

/// One move, with its progress printed as it goes.
async fn run_move(
    s: &Sessions,
    inventory: &Inventory,
    m: &tenantry_plan::moves::MovePlan,
    lock_wait: std::time::Duration,
) -> Result<Vec<String>, tenantry_pg::Error> {
    let side = |name: &str| {
        let session = s.session(name).expect("a move's servers were read");
        tenantry_pg::moves::Side {
            name: inventory.servers.get_key_value(name).expect("a server").0,
            admin: &session.admin,
            client: &session.client,
            observed: &session.observed,
        }
    };
    let from = s.session(&m.from).expect("read");
    let job = tenantry_pg::moves::Job {
        plan: m,
        inventory,
        from: side(&m.from),
        to: side(&m.to),
        migrations: &from.migrations,
        lock_wait,
        max_lag: 1 << 20,
    };
    let tenant = m.tenant.clone();
    let moved =
        tenantry_pg::moves::run(&job, &move |line| outln!("      {tenant}: {line}")).await?;
    Ok(moved.notes)
}

/// Removes the generated secrets of the users (and tenant) `tp` dropped.
fn forget_secrets(inventory: &Inventory, tp: &tenantry_plan::plan::TenantPlan) {
    for removed in crate::secrets::remove(&crate::secrets::orphaned(inventory, tp)) {
        match removed {
            Ok(path) => outln!("      removed {}", path.display()),
            Err(e) => outln!("      warning: {e}; delete it by hand"),
        }
    }
}

/// Asks on the terminal; refuses when there is none.
fn confirm() -> Result<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("refusing to apply without a terminal to confirm on: re-run with --auto-approve. Nothing was changed.");
    }
    out!("\nDo you want to perform these actions? Only 'yes' will be accepted: ");
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}
