//! The fleet over all its servers, for every command that works on a file
//! with one server or several:
//!
//! 1. [`locate`]: one admin connection to every server, opened at the same
//!    time; with a lock (apply), each server's apply lock taken in
//!    server-name order, so two applies never deadlock; where the fleet's
//!    tenants are read from each catalog in one query, and every tenant of
//!    the file placed ([`tenantry_plan::placement`]).
//! 2. [`open`]: each server's share of the file (the tenants placed there)
//!    read and planned ([`crate::session`]), all servers at the same time.
//!
//! A server that cannot be reached or read is kept as such, never an error
//! of the whole: callers decide (plan fails naming it, `apply
//! --skip-unreachable` goes on with the others). While one cannot be read,
//! a tenant found on no other server waits: it may live there.
//!
//! Not here: one server's planning ([`crate::session`]), carrying a plan
//! out ([`crate::apply`]), the placement rules themselves.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_util::future::join_all;
use tenantry_layout::roles::group_role_name;
use tenantry_layout::{Group, Kind, Marker, Move};
use tenantry_manifest::{Inventory, ServerStatus};
use tenantry_plan::fleet_plan::{FleetPlan, Held, Left, Leftover, ServerPlan};
use tenantry_plan::moves::MovePlan;
use tenantry_plan::placement::{self, Placement};
use tenantry_plan::plan::Action;
use tokio_postgres::Client;

use crate::connect::Admin;
use crate::error::Error;
use crate::migrate::Migrations;
use crate::session::Session;

/// A server that answered.
pub struct Reached {
    pub name: String,
    pub admin: Admin,
    /// The admin connection; holds the apply lock when one was taken.
    pub client: Client,
    /// The fleet's tenants whose database is here (file or not), the
    /// window between CREATE DATABASE and its marker included.
    pub holds: BTreeSet<String>,
    /// Of which, marked (created to the end).
    pub marked: BTreeSet<String>,
    /// Tenants of the file whose name is taken here without a database of
    /// the fleet (see [`placement::Server::claimed`]).
    pub claimed: BTreeSet<String>,
    /// Copies a move is filling here: tenant -> the server it comes from.
    pub incoming: BTreeMap<String, String>,
    /// Tenants (of `holds`) being cut over from here: tenant -> where to.
    pub cutover: BTreeMap<String, String>,
    /// Copies left here by a move: tenant -> (where it went, when).
    pub leftovers: BTreeMap<String, (String, String)>,
}

/// Where every tenant of the file is, or goes.
pub struct Located {
    /// The servers read, in name order.
    pub reached: Vec<Reached>,
    /// The servers that could not be read, with why, in name order.
    pub unreachable: Vec<(String, Error)>,
    /// Each tenant of the file with a placement; the ones that wait for an
    /// unreachable server are in `waiting` instead.
    pub placement: BTreeMap<String, Placement>,
    /// Tenants found on no server that was read while one could not be.
    pub waiting: BTreeSet<String>,
}

impl Located {
    /// The server `tenant` lives on (or is to be created on).
    pub fn server_of(&self, tenant: &str) -> Option<&Reached> {
        let server = self.placement.get(tenant)?.server()?;
        self.reached.iter().find(|r| r.name == server)
    }

    /// The server whose copy of `tenant` is the one in use: where it lives
    /// (a move not cut over yet does not change that) or is to be created.
    /// None for a tenant on several servers, being cut over, or not found
    /// while a server could not be read.
    pub fn in_use_on(&self, tenant: &str) -> Option<&str> {
        self.placement.get(tenant)?.server()
    }

    /// The servers of `tenant`'s move once it has begun (a copy is being
    /// filled, or the cutover started): (from, to). Its schema must not
    /// change until the move ends: the copy streams the old schema's rows.
    pub fn move_begun(&self, tenant: &str) -> Option<(&str, &str)> {
        match self.placement.get(tenant)? {
            Placement::Move { from, to, cutover } => {
                let filling = self
                    .reached
                    .iter()
                    .any(|r| r.name == *to && r.incoming.contains_key(tenant));
                (*cutover || filling).then_some((from.as_str(), to.as_str()))
            }
            _ => None,
        }
    }

    /// The file's tenants with a move under way or to start.
    pub fn moving(&self) -> impl Iterator<Item = (&str, &str, &str, bool)> {
        self.placement.iter().filter_map(|(t, p)| match p {
            Placement::Move { from, to, cutover } => {
                Some((t.as_str(), from.as_str(), to.as_str(), *cutover))
            }
            _ => None,
        })
    }

    /// The file's tenants nothing is done for, with why.
    pub fn held(&self) -> Vec<Held> {
        let mut held: Vec<Held> = self
            .placement
            .iter()
            .filter_map(|(tenant, p)| match p {
                Placement::Conflict(c) => Some(Held {
                    tenant: tenant.clone(),
                    reason: c.to_string(),
                    conflict: true,
                }),
                _ => None,
            })
            .collect();
        let names: Vec<&str> = self.unreachable.iter().map(|(n, _)| n.as_str()).collect();
        held.extend(self.waiting.iter().map(|tenant| Held {
            tenant: tenant.clone(),
            reason: format!(
                "found on no server that was read, and server {} could not be read: it may live there, so nothing is done for it until every server can be read",
                names.join(", ")
            ),
            conflict: false,
        }));
        held.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        held
    }

    /// Warnings placement gives (a new tenant pinned to a draining server).
    pub fn warnings(&self) -> Vec<String> {
        self.placement
            .iter()
            .filter_map(|(tenant, p)| match p {
                Placement::New {
                    server,
                    pinned: true,
                    draining: true,
                } => Some(format!(
                    "tenant {tenant} is new and pinned to server {server}, which is draining: it is created there as pinned (remove the pin to place it on an active server)"
                )),
                _ => None,
            })
            .collect()
    }
}

/// Connects to every server, takes the apply locks with `lock` (waiting up
/// to that long on each), reads where the tenants are and places them. A
/// lock that cannot be taken fails the whole (nothing was read or changed);
/// so does the server of a file with one server that cannot be read.
pub async fn locate(inventory: &Inventory, lock: Option<Duration>) -> Result<Located, Error> {
    let names: Vec<String> = inventory
        .tenants
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    let reads = inventory.servers.values().map(|server| async {
        let read = async {
            let mut admin = Admin::from_url(server.admin_url.as_ref()).map_err(|e| match e {
                Error::NoAdminUrl if inventory.servers.len() > 1 => Error::other(
                    format!("server {}", server.name),
                    format!(
                        "no admin URL: set admin_url in [servers.{}] or {}",
                        server.name,
                        tenantry_manifest::admin_url_env(&server.name)
                    ),
                ),
                e => e,
            })?;
            if lock.is_some() {
                admin.set_application_name(&format!("tenantry apply {}", inventory.fleet));
            }
            let client = admin.connect(None).await?;
            Ok::<_, Error>((admin, client))
        };
        (server.name.clone(), read.await)
    });
    let mut reached = Vec::new();
    let mut unreachable = Vec::new();
    for (name, read) in join_all(reads).await {
        match read {
            Ok((admin, client)) => reached.push((name, admin, client)),
            Err(e) => unreachable.push((name, e)),
        }
    }
    // In name order (the map's), one server after the other.
    if let Some(timeout) = lock {
        let several = inventory.servers.len() > 1;
        for (name, admin, client) in &reached {
            let locked = async {
                crate::lock::acquire(client, &inventory.fleet, timeout).await?;
                crate::lock::await_orphans(client, admin.application_name(), timeout).await
            };
            locked.await.map_err(|e| match several {
                true => Error::OnServer {
                    server: name.clone(),
                    source: Box::new(e),
                },
                false => e,
            })?;
        }
    }
    let reads = reached.into_iter().map(|(name, admin, client)| {
        let (fleet, names) = (&inventory.fleet, &names);
        async move {
            match tenants_on(&client, fleet, names).await {
                Ok(on) => Ok(Reached {
                    name,
                    admin,
                    client,
                    holds: on.holds,
                    marked: on.marked,
                    claimed: on.claimed,
                    incoming: on.incoming,
                    cutover: on.cutover,
                    leftovers: on.leftovers,
                }),
                Err(e) => Err((name, e)),
            }
        }
    });
    let mut located = Located {
        reached: Vec::new(),
        unreachable,
        placement: BTreeMap::new(),
        waiting: BTreeSet::new(),
    };
    for read in join_all(reads).await {
        match read {
            Ok(r) => located.reached.push(r),
            Err(e) => located.unreachable.push(e),
        }
    }
    located.unreachable.sort_by(|a, b| a.0.cmp(&b.0));
    if inventory.servers.len() == 1 {
        if let Some((_, e)) = located.unreachable.pop() {
            return Err(e);
        }
    }
    let servers: Vec<placement::Server> = located
        .reached
        .iter()
        .map(|r| {
            let server = &inventory.servers[&r.name];
            placement::Server {
                name: r.name.clone(),
                max_tenants: server.max_tenants,
                draining: server.status == ServerStatus::Draining,
                holds: r.holds.clone(),
                claimed: r.claimed.clone(),
                incoming: r.incoming.clone(),
                cutover: r.cutover.clone(),
            }
        })
        .collect();
    let wanted: Vec<placement::Wanted> = inventory
        .tenants
        .iter()
        .map(|t| placement::Wanted {
            name: t.name.to_string(),
            pin: t.server.clone(),
        })
        .collect();
    located.placement = placement::place(&servers, &wanted);
    if !located.unreachable.is_empty() {
        let found: BTreeSet<&String> = located.reached.iter().flat_map(|r| &r.holds).collect();
        let waiting: Vec<String> = names.into_iter().filter(|n| !found.contains(n)).collect();
        for tenant in waiting {
            located.placement.remove(&tenant);
            located.waiting.insert(tenant);
        }
    }
    Ok(located)
}

/// What one server holds of the fleet.
struct On {
    holds: BTreeSet<String>,
    marked: BTreeSet<String>,
    claimed: BTreeSet<String>,
    incoming: BTreeMap<String, String>,
    cutover: BTreeMap<String, String>,
    leftovers: BTreeMap<String, (String, String)>,
}

/// The fleet's tenants whose database is on this server (marked, or in the
/// window between CREATE DATABASE and its COMMENT: unmarked but owned by
/// the tenant's marked owner role), and the file's tenants whose name is
/// taken here otherwise (an owner role without a database, or a database
/// that is not the fleet's). One query.
async fn tenants_on(client: &Client, fleet: &str, names: &[String]) -> Result<On, Error> {
    let like = tenantry_layout::marker::LIKE;
    let rows = client
        .query(
            &format!(
                "SELECT true, d.datname::text, shobj_description(d.oid, 'pg_database'), pg_get_userbyid(d.datdba)::text
                 FROM pg_database d
                 WHERE d.datname = ANY($1) OR shobj_description(d.oid, 'pg_database') LIKE '{like}'
                 UNION ALL
                 SELECT false, r.rolname::text, shobj_description(r.oid, 'pg_authid'), NULL
                 FROM pg_roles r WHERE shobj_description(r.oid, 'pg_authid') LIKE '{like}'"
            ),
            &[&names],
        )
        .await
        .map_err(|e| Error::sql("finding the fleet's tenants", e))?;
    let ours = |comment: Option<String>| {
        comment
            .and_then(|c| Marker::parse(&c))
            .filter(|m| m.fleet == fleet)
    };
    let mut owners = BTreeSet::new();
    let mut databases = Vec::new();
    for r in rows {
        let (is_db, name): (bool, String) = (r.get(0), r.get(1));
        let comment: Option<String> = r.get(2);
        // Another fleet's database of this name does not claim the name
        // here: the other fleet keeps it, this one places its tenant freely.
        let foreign = comment
            .as_deref()
            .and_then(Marker::parse)
            .is_some_and(|m| m.fleet != fleet);
        let marker = ours(comment);
        if is_db && foreign {
            continue;
        }
        if is_db {
            databases.push((name, marker, r.get::<_, Option<String>>(3)));
        } else if let Some(m) = marker.filter(|m| m.kind == Kind::Owner) {
            owners.insert(m.tenant);
        }
    }
    let mut on = On {
        holds: BTreeSet::new(),
        marked: BTreeSet::new(),
        claimed: BTreeSet::new(),
        incoming: BTreeMap::new(),
        cutover: BTreeMap::new(),
        leftovers: BTreeMap::new(),
    };
    for (name, marker, owner) in databases {
        let marked = marker
            .as_ref()
            .is_some_and(|m| m.kind == Kind::Database && m.tenant == name);
        // A copy a move made or left is not where the tenant lives.
        match marker
            .as_ref()
            .filter(|_| marked)
            .and_then(|m| m.moving.clone())
        {
            Some(Move::In { from }) => {
                on.incoming.insert(name, from);
                continue;
            }
            Some(Move::Out { to, at }) => {
                on.leftovers.insert(name, (to, at));
                continue;
            }
            Some(Move::Cutover { to }) => {
                on.cutover.insert(name.clone(), to);
            }
            None => {}
        }
        let cut_short = marker.is_none()
            && owners.contains(&name)
            && owner.as_deref() == Some(group_role_name(&name, Group::Owner).as_str());
        if marked {
            on.marked.insert(name.clone());
        }
        if marked || cut_short {
            on.holds.insert(name);
        } else if names.contains(&name) {
            on.claimed.insert(name);
        }
    }
    // Roles without a database claim the name (a creation cut short), but
    // not those of a copy being filled here (its database is marked).
    let started = owners
        .into_iter()
        .filter(|t| !on.holds.contains(t) && !on.incoming.contains_key(t) && names.contains(t));
    on.claimed.extend(started);
    Ok(on)
}

/// Every server's planning session.
pub struct Sessions {
    pub fleet: String,
    /// Every server of the file, in name order.
    pub servers: Vec<OnServer>,
    /// The file's tenants nothing is done for.
    pub held: Vec<Held>,
    pub warnings: Vec<String>,
    /// Tenants moving between servers ([`crate::moves::survey`]).
    pub moves: Vec<MovePlan>,
    /// Copies moves left behind; each is planned on its server as an
    /// [`Action::Leftover`].
    pub leftovers: Vec<Leftover>,
}

/// One server: its share of the file and its session, or why it could not
/// be read.
pub struct OnServer {
    pub name: String,
    /// The file cut down to this server and its tenants
    /// ([`Inventory::share`]).
    pub share: Inventory,
    pub session: Result<Session, Error>,
}

impl Sessions {
    /// The plan over every server.
    pub fn plan(&self) -> FleetPlan<'_> {
        FleetPlan {
            fleet: self.fleet.clone(),
            servers: self
                .servers
                .iter()
                .map(|s| ServerPlan {
                    server: s.name.clone(),
                    plan: s.session.as_ref().ok().map(|s| &s.plan),
                    unreachable: s.session.as_ref().err().map(|e| e.to_string()),
                })
                .collect(),
            held: self.held.clone(),
            warnings: self.warnings.clone(),
            moves: self.moves.clone(),
            leftovers: self.leftovers.clone(),
        }
    }

    /// The sessions of a server, when it was read.
    pub fn session(&self, server: &str) -> Option<&Session> {
        self.servers
            .iter()
            .find(|s| s.name == server)
            .and_then(|s| s.session.as_ref().ok())
    }

    /// The session of the server `tenant` is planned on, if any.
    pub fn of(&self, tenant: &str) -> Option<&OnServer> {
        self.servers
            .iter()
            .find(|s| s.share.tenant(tenant).is_some())
    }
}

/// Locates the tenants ([`locate`]) and plans every server's share at the
/// same time, `jobs` bounding the tenant databases read at once on each.
/// With `lock`, every server's apply lock is taken first, so the plan is
/// what apply will run.
pub async fn open(
    inventory: &Inventory,
    jobs: usize,
    lock: Option<Duration>,
) -> Result<Sessions, Error> {
    let schema = inventory.paths.schema.clone();
    let migrations = crate::blocking::run(move || Migrations::load(&schema)).await?;
    let located = locate(inventory, lock).await?;
    let held = located.held();
    let mut warnings = located.warnings();
    // A tenant held by a conflict stays in the share of each server holding
    // it (so it is not planned as a destroy there), its own changes dropped.
    let conflicting: BTreeSet<&str> = held
        .iter()
        .filter(|h| h.conflict)
        .map(|h| h.tenant.as_str())
        .collect();
    let in_file: BTreeSet<&str> = inventory.tenants.iter().map(|t| t.name.as_str()).collect();
    let move_list: Vec<(String, String, String, bool)> = located
        .moving()
        .map(|(t, from, to, cutover)| (t.to_owned(), from.to_owned(), to.to_owned(), cutover))
        .collect();
    let moving: BTreeSet<String> = move_list.iter().map(|m| m.0.clone()).collect();
    let claimed: BTreeMap<String, BTreeSet<String>> = located
        .reached
        .iter()
        .map(|r| (r.name.clone(), r.claimed.clone()))
        .collect();
    // What moves made or left on each server (its tenants' plans there
    // are the moves', or leftovers).
    let mut incoming: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut leftovers = Vec::new();
    for r in &located.reached {
        incoming.insert(r.name.clone(), r.incoming.keys().cloned().collect());
        for (tenant, (to, at)) in &r.leftovers {
            leftovers.push(Leftover {
                tenant: tenant.clone(),
                server: r.name.clone(),
                left: Left::MovedOut {
                    to: to.clone(),
                    at: at.clone(),
                },
            });
        }
        // A copy being filled for a move the file no longer asks for (the
        // tenant pinned back where it lives, or gone from the file).
        for (tenant, from) in &r.incoming {
            let asked = move_list
                .iter()
                .any(|(t, _, to, _)| t == tenant && *to == r.name);
            let conflict = conflicting.contains(tenant.as_str());
            if !asked && !conflict {
                leftovers.push(Leftover {
                    tenant: tenant.clone(),
                    server: r.name.clone(),
                    left: Left::Unfinished { from: from.clone() },
                });
            }
        }
    }
    let plans = located.reached.into_iter().map(|r| {
        let placement = &located.placement;
        let conflicting = &conflicting;
        let migrations = migrations.clone();
        let share = inventory.share(&r.name, &|t| {
            placement.get(t).and_then(Placement::server) == Some(r.name.as_str())
                || (conflicting.contains(t) && r.holds.contains(t))
        });
        async move {
            let session =
                crate::session::plan_on(r.admin, r.client, &share, migrations, jobs).await;
            (r.name, share, session)
        }
    });
    let mut servers: Vec<OnServer> = Vec::new();
    for (name, share, session) in join_all(plans).await {
        let r_name = name.as_str();
        let session = session.map(|mut s| {
            s.plan.tenants.retain_mut(|tp| {
                if conflicting.contains(tp.tenant.as_str()) {
                    return false;
                }
                if tp.action == Action::Destroy {
                    let name = tp.tenant.as_str();
                    if leftovers.iter().any(|l| l.tenant == name && l.server == r_name) {
                        tp.action = Action::Leftover;
                        return true;
                    }
                    if moving.contains(name) || incoming[r_name].contains(name) {
                        return false;
                    }
                }
                // Roles of a tenant that lives elsewhere (or waits): left alone.
                if tp.action == Action::Destroy && in_file.contains(tp.tenant.as_str()) {
                    warnings.push(format!(
                        "server {name} has roles of tenant {}, which does not live there; they are left alone (drop them by hand once you are sure)",
                        tp.tenant
                    ));
                    return false;
                }
                true
            });
            s.plan.conflicts.retain(|c| !conflicting.contains(c.tenant.as_str()));
            s
        });
        servers.push(OnServer {
            name,
            share,
            session,
        });
    }
    // A server that could not be read keeps the tenants pinned to it, for
    // the callers that say why each is unknown.
    for (name, error) in located.unreachable {
        servers.push(OnServer {
            share: inventory.share(&name, &|t| {
                inventory.tenant(t).and_then(|t| t.server.as_deref()) == Some(name.as_str())
            }),
            name,
            session: Err(error),
        });
    }
    servers.sort_by(|a, b| a.name.cmp(&b.name));
    let mut sessions = Sessions {
        fleet: inventory.fleet.clone(),
        servers,
        held,
        warnings,
        moves: Vec::new(),
        leftovers,
    };
    for (tenant, from, to, cutover) in move_list {
        match survey(&sessions, &tenant, &from, &to, cutover, &claimed).await {
            Ok(m) => sessions.moves.push(m),
            Err(held) => sessions.held.push(held),
        }
    }
    sessions.held.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    Ok(sessions)
}

/// A move's plan, or why it is held.
async fn survey(
    sessions: &Sessions,
    tenant: &str,
    from: &str,
    to: &str,
    cutover: bool,
    claimed: &BTreeMap<String, BTreeSet<String>>,
) -> Result<MovePlan, Held> {
    let held = |reason: String, conflict: bool| Held {
        tenant: tenant.to_owned(),
        reason,
        conflict,
    };
    let side = |name: &str| {
        let s = sessions.session(name).ok_or_else(|| {
            held(
                format!(
                    "its move from server {from} to server {to} waits: server {name} cannot be read"
                ),
                false,
            )
        })?;
        Ok(crate::moves::Side {
            name: sessions
                .servers
                .iter()
                .find(|s| s.name == name)
                .map(|s| s.name.as_str())
                .expect("a session's server"),
            admin: &s.admin,
            client: &s.client,
            observed: &s.observed,
        })
    };
    let (a, b) = (side(from)?, side(to)?);
    let leftover_there = sessions
        .leftovers
        .iter()
        .any(|l| l.tenant == tenant && l.server == to);
    // (A leftover's roles claim the name too: that copy goes first.)
    if !cutover && !leftover_there && claimed.get(to).is_some_and(|c| c.contains(tenant)) {
        return Err(held(
            format!("it cannot move to server {to}: a database or role named {tenant} that is not this fleet's exists there (rename or drop it, or `tenantry adopt`)"),
            true,
        ));
    }
    let mut plan = crate::moves::survey(&sessions.fleet, tenant, &a, &b, cutover)
        .await
        .map_err(|e| {
            held(
                format!("its move from server {from} to server {to} cannot be planned: {e}"),
                true,
            )
        })?;
    if leftover_there {
        plan.waits = Some(format!(
            "the copy an earlier move left on server {to} must go first: apply --allow-destroy drops it (after a backup), then moves the tenant"
        ));
        plan.leftover_in_the_way = true;
    }
    Ok(plan)
}
