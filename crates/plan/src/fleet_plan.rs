//! A plan over a fleet's servers: each server's own [`Plan`] (or why the
//! server could not be read), the tenants left alone across the fleet
//! ([`Held`]: placement conflicts, new tenants waiting for a server that
//! could not be read), and the rules deciding whether it may run. Pure:
//! reading the servers and placing the tenants happen in `tenantry-pg` and
//! [`crate::placement`].

use serde::Serialize;

use crate::moves::MovePlan;
use crate::plan::{Action, Plan, Refusal};

#[derive(Debug, Default, Serialize)]
pub struct FleetPlan<'a> {
    pub fleet: String,
    /// Every server of the file, in name order.
    pub servers: Vec<ServerPlan<'a>>,
    /// Tenants nothing is done for, by name.
    pub held: Vec<Held>,
    /// Fleet-wide things worth knowing (e.g. a pin to a draining server).
    pub warnings: Vec<String>,
    /// Tenants moving between servers, by name.
    pub moves: Vec<MovePlan>,
    /// Copies moves left behind (see [`crate::plan::Action::Leftover`]).
    pub leftovers: Vec<Leftover>,
}

/// A copy a move left on `server`, closed: dropped (after a backup) only
/// by `apply --allow-destroy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Leftover {
    pub tenant: String,
    pub server: String,
    #[serde(flatten)]
    pub left: Left,
}

/// Why a move left a copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "left", rename_all = "snake_case")]
pub enum Left {
    /// The tenant went to `to` at `at`: this is its old copy.
    MovedOut { to: String, at: String },
    /// A move from `from` was called off while this copy was being
    /// filled (still subscribed to `from`, whose replication slot keeps
    /// WAL for it until it is dropped).
    Unfinished { from: String },
}

impl Left {
    /// How plan describes it, after "the leftover copy of tenant X on
    /// server Y".
    pub fn describe(&self) -> String {
        match self {
            Left::MovedOut { to, at } => format!("moved to server {to} at {at}"),
            Left::Unfinished { from } => format!(
                "an unfinished move from server {from}, called off; its replication slot on {from} keeps WAL until the copy is dropped"
            ),
        }
    }
}

/// One server's part.
#[derive(Debug, Serialize)]
pub struct ServerPlan<'a> {
    pub server: String,
    /// What apply does there; None when the server could not be read.
    pub plan: Option<&'a Plan>,
    /// Why the server could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<String>,
}

/// A tenant of the file nothing is done for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Held {
    pub tenant: String,
    pub reason: String,
    /// A conflict an operator must resolve (apply refuses to run); else a
    /// tenant that waits for an unreachable server.
    pub conflict: bool,
}

impl<'a> FleetPlan<'a> {
    /// The plans of the servers that were read.
    pub fn plans(&self) -> impl Iterator<Item = (&str, &'a Plan)> {
        self.servers
            .iter()
            .filter_map(|s| s.plan.map(|p| (s.server.as_str(), p)))
    }

    /// The servers that could not be read.
    pub fn unreachable(&self) -> Vec<&str> {
        self.servers
            .iter()
            .filter(|s| s.plan.is_none())
            .map(|s| s.server.as_str())
            .collect()
    }

    /// Nothing to do on any server that was read, and no move, not even
    /// one that waits (copies
    /// moves left behind do not count: they wait for `--allow-destroy`).
    pub fn is_empty(&self) -> bool {
        self.plans()
            .flat_map(|(_, p)| &p.tenants)
            .all(|t| t.action == Action::Leftover)
            && !self.moves.iter().any(|m| m.conflict.is_none())
    }

    /// Conflicts anywhere: placement's, each server's, the moves'.
    pub fn conflicts(&self) -> usize {
        self.held.iter().filter(|h| h.conflict).count()
            + self.plans().map(|(_, p)| p.conflicts.len()).sum::<usize>()
            + self.moves.iter().filter(|m| m.conflict.is_some()).count()
    }

    /// (to add, to change, to destroy) over every server; a move is one
    /// change.
    pub fn counts(&self) -> (usize, usize, usize) {
        let n = self.plans().fold((0, 0, 0), |n, (_, p)| {
            let c = p.counts_without_leftovers();
            (n.0 + c.0, n.1 + c.1, n.2 + c.2)
        });
        (
            n.0,
            n.1 + self.moves.iter().filter(|m| m.runs()).count(),
            n.2,
        )
    }

    /// Whether this plan may run: every server's plan may
    /// ([`Plan::check_runnable`]), no placement conflict, and every server
    /// read unless `skip_unreachable` (the user's `--skip-unreachable`).
    /// Checked for the whole fleet before anything runs, so one server's
    /// problem never leaves another half-applied.
    pub fn check_runnable(
        &self,
        allow_destroy: bool,
        skip_unreachable: bool,
    ) -> Result<(), Refusal> {
        let conflicts = self.conflicts();
        if conflicts > 0 {
            return Err(Refusal::Conflicts(conflicts));
        }
        let unreachable = self.unreachable();
        if !unreachable.is_empty() && !skip_unreachable {
            return Err(Refusal::Unreachable(
                unreachable.into_iter().map(str::to_owned).collect(),
            ));
        }
        for (_, plan) in self.plans() {
            plan.check_runnable(allow_destroy)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Action, Change, TenantPlan};

    fn plan(tenants: Vec<TenantPlan>) -> Plan {
        Plan {
            fleet: "f".into(),
            tenants,
            ..Plan::default()
        }
    }

    fn server<'a>(name: &str, plan: &'a Plan) -> ServerPlan<'a> {
        ServerPlan {
            server: name.into(),
            plan: Some(plan),
            unreachable: None,
        }
    }

    fn destroy(tenant: &str) -> TenantPlan {
        TenantPlan {
            tenant: tenant.into(),
            action: Action::Destroy,
            changes: vec![Change::DropDatabase {
                database: tenant.into(),
                protected: false,
            }],
        }
    }

    #[test]
    fn one_servers_problem_stops_the_whole_fleet() {
        let (a, b) = (plan(vec![]), plan(vec![destroy("x")]));
        let mut fp = FleetPlan {
            fleet: "f".into(),
            servers: vec![server("a", &a), server("b", &b)],
            ..FleetPlan::default()
        };
        assert_eq!(fp.counts(), (0, 0, 1));
        assert_eq!(
            fp.check_runnable(false, false),
            Err(Refusal::DestroyNotAllowed)
        );
        fp.check_runnable(true, false).unwrap();
        fp.servers.push(ServerPlan {
            server: "c".into(),
            plan: None,
            unreachable: Some("refused".into()),
        });
        assert_eq!(
            fp.check_runnable(true, false),
            Err(Refusal::Unreachable(vec!["c".into()]))
        );
        fp.check_runnable(true, true).unwrap();
        fp.held.push(Held {
            tenant: "n".into(),
            reason: "waits".into(),
            conflict: false,
        });
        fp.check_runnable(true, true).unwrap();
        fp.held.push(Held {
            tenant: "t".into(),
            reason: "on two servers".into(),
            conflict: true,
        });
        assert_eq!(fp.check_runnable(true, true), Err(Refusal::Conflicts(1)));
    }

    #[test]
    fn the_text_names_servers_only_for_a_fleet_of_several() {
        use crate::render::{fleet_text, text};
        let create = TenantPlan {
            tenant: "acme".into(),
            action: Action::Create,
            changes: vec![Change::CreateDatabase {
                database: "acme".into(),
                owner: "acme_owner".into(),
            }],
        };
        let one = plan(vec![create]);
        // One server: exactly the one-server text.
        let single = FleetPlan {
            fleet: "f".into(),
            servers: vec![server("default", &one)],
            ..FleetPlan::default()
        };
        assert_eq!(fleet_text(&single), text(&one));
        assert!(!text(&one).contains("on server"));

        let other = plan(vec![destroy("gone")]);
        let mut fp = FleetPlan {
            fleet: "f".into(),
            servers: vec![
                server("eu1", &other),
                server("eu2", &one),
                ServerPlan {
                    server: "eu3".into(),
                    plan: None,
                    unreachable: Some("refused".into()),
                },
            ],
            held: vec![Held {
                tenant: "newco".into(),
                reason: "waits for eu3".into(),
                conflict: false,
            }],
            ..FleetPlan::default()
        };
        let t = fleet_text(&fp);
        assert!(
            t.starts_with(
                "error: server eu3 cannot be read: refused\nnote: tenant newco: waits for eu3\n"
            ),
            "{t}"
        );
        assert!(
            t.contains("  + tenant acme will be created on server eu2\n"),
            "{t}"
        );
        assert!(
            t.contains(
                "  - tenant gone will be destroyed on server eu1 (database backed up first)\n"
            ),
            "{t}"
        );
        // acme before gone: one list by tenant, whatever the server.
        assert!(
            t.find("tenant acme").unwrap() < t.find("tenant gone").unwrap(),
            "{t}"
        );
        assert!(t.contains("Plan: 1 to add, 0 to change, 1 to destroy.\nBy server: eu1: 0 to add, 0 to change, 1 to destroy; eu2: 1 to add, 0 to change, 0 to destroy.\n"), "{t}");

        // Nothing to do but a conflict: not "everything matches".
        let (empty_a, empty_b) = (plan(vec![]), plan(vec![]));
        fp.servers = vec![server("eu1", &empty_a), server("eu2", &empty_b)];
        fp.held = vec![Held {
            tenant: "x".into(),
            reason: "on two servers".into(),
            conflict: true,
        }];
        let t = fleet_text(&fp);
        assert!(t.contains("error: tenant x: on two servers\n"), "{t}");
        assert!(
            t.ends_with("apply runs once the conflicts above are resolved.\n"),
            "{t}"
        );
    }
}
