//! Where each tenant of a fleet lives, or goes, across its servers: pure,
//! from what each server's catalog holds and what the file says (pins,
//! `max_tenants`, draining). The catalogs are the only state: a tenant lives
//! where its marked database is, and nothing here remembers a placement.
//!
//! - A tenant marked on one server lives there; a pin naming another server
//!   asks for a [`Placement::Move`] there (online, `tenantry_pg::moves`),
//!   never a drop and a re-create. A move whose cutover has started is
//!   finished whatever the pin says; a copy a move began for a server the
//!   file no longer pins is a [`Conflict`].
//! - A tenant marked on several servers is a [`Conflict`]: nothing is done
//!   for it until an operator decides.
//! - A new tenant goes to its pin, else to the active server with the most
//!   free capacity: the fewest tenants relative to its `max_tenants` (a
//!   server without one counts as the largest limit given, so the fill is
//!   comparable), ties by name. Tenants placed earlier in the same plan
//!   count, so a plan of many new tenants spreads them. A server at its
//!   `max_tenants`, or draining, gets none.
//! - A new tenant whose name is taken on a server goes to that server,
//!   unless pinned: its creation was cut short there (its owner role
//!   exists, its database not yet) and apply finishes it, or a database of
//!   that name exists there unmanaged and the plan reports it as a conflict
//!   (`tenantry adopt` takes it over). Never a second database elsewhere.
//!
//! What does not live here: reading the catalogs (`tenantry-pg`), the
//! per-server plans themselves ([`crate::diff`]).

use std::collections::{BTreeMap, BTreeSet};

/// One server as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub name: String,
    /// Most tenants placement puts here (None: no limit).
    pub max_tenants: Option<u32>,
    /// Keeps its tenants, gets no new ones.
    pub draining: bool,
    /// The fleet's tenants its catalog holds (marked databases), whether or
    /// not the file still names them.
    pub holds: BTreeSet<String>,
    /// Tenants of the file whose name is taken here without a database of
    /// this fleet: a creation cut short (owner role, no database) or an
    /// unmanaged database of that name. An unpinned one is placed here.
    pub claimed: BTreeSet<String>,
    /// Copies a move is filling here (not in `holds`): tenant -> the
    /// server it comes from.
    pub incoming: BTreeMap<String, String>,
    /// Tenants of `holds` whose copy here is being cut over: tenant -> the
    /// server it goes to.
    pub cutover: BTreeMap<String, String>,
}

/// One tenant of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub name: String,
    /// Its `server = "..."`.
    pub pin: Option<String>,
}

/// Where one tenant is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Its database is on `server`.
    Lives { server: String },
    /// New: to be created on `server`.
    New {
        server: String,
        /// The file pinned it there (else placement chose).
        pinned: bool,
        /// Pinned to a draining server: allowed, with a warning.
        draining: bool,
    },
    /// Lives on `from`, goes to `to` (the file pins it there). Before the
    /// cutover its own copy on `from` is planned as usual; once the cutover
    /// has started (`cutover`) only the move touches it, until it ends.
    Move {
        from: String,
        to: String,
        cutover: bool,
    },
    /// Nothing is done for it.
    Conflict(Conflict),
}

impl Placement {
    /// The server the tenant's plan runs against, unless it conflicts.
    pub fn server(&self) -> Option<&str> {
        match self {
            Placement::Lives { server } | Placement::New { server, .. } => Some(server),
            Placement::Move {
                from,
                cutover: false,
                ..
            } => Some(from),
            Placement::Move { cutover: true, .. } | Placement::Conflict(_) => None,
        }
    }
}

/// Why a tenant is left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// Its database is marked on each of these servers.
    OnSeveral { servers: Vec<String> },
    /// A move to `to` was started (its copy there is being filled) but the
    /// file now pins it to a third server.
    UnfinishedMove { to: String },
    /// `on` holds a copy being filled from `from`, and no server holds the
    /// tenant's own copy.
    OrphanCopy { on: String, from: String },
    /// New, unpinned, and no active server has room.
    NoRoom,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Conflict::OnSeveral { servers } => write!(
                f,
                "its database exists on servers {}: keep one (back the others up and drop them by hand), then plan again",
                servers.join(" and ")
            ),
            Conflict::UnfinishedMove { to } => write!(
                f,
                "a move of it to server {to} was started and is not finished, and the file pins it to another server: set server = \"{to}\" to finish that move, or pin it back where it lives to call the move off (apply --allow-destroy then drops the unfinished copy), then move it"
            ),
            Conflict::OrphanCopy { on, from } => write!(
                f,
                "server {on} holds an unfinished copy of it from server {from}, and no server holds its own copy: restore it from a backup, or look at {from} by hand"
            ),
            Conflict::NoRoom => write!(
                f,
                "no active server has room for a new tenant: raise a server's max_tenants, add a server, or pin the tenant"
            ),
        }
    }
}

/// Where a tenant with a move under way stands: `lives` are the servers
/// holding its copy (open or being cut over), `cutover` (server, to) the
/// copies being cut over, `incoming` (server, from) the copies being
/// filled. None when no move concerns it.
fn moving(
    lives: &[&str],
    cutover: &[(&str, &str)],
    incoming: &[(&str, &str)],
    pin: Option<&str>,
) -> Option<Placement> {
    let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    match (cutover, lives, incoming) {
        // Cut over half-way: finished whatever the pin says (its target
        // may already be open, so it is among `lives`).
        ([(from, to)], _, _) => Some(Placement::Move {
            from: (*from).to_owned(),
            to: (*to).to_owned(),
            cutover: true,
        }),
        ([_, _, ..], _, _) => Some(Placement::Conflict(Conflict::OnSeveral {
            servers: owned(lives),
        })),
        ([], [], [(on, from), ..]) => Some(Placement::Conflict(Conflict::OrphanCopy {
            on: (*on).to_owned(),
            from: (*from).to_owned(),
        })),
        ([], [one], [(on, from)]) if *from == *one && pin == Some(*on) => Some(Placement::Move {
            from: (*one).to_owned(),
            to: (*on).to_owned(),
            cutover: false,
        }),
        // The pin back where it lives (or none): the move is called off;
        // its unfinished copies are dropped like a leftover
        // (`apply --allow-destroy`), the tenant stays.
        ([], [one], _) if pin.is_none_or(|p| p == *one) => Some(Placement::Lives {
            server: (*one).to_owned(),
        }),
        ([], [_], [(on, _), ..]) => Some(Placement::Conflict(Conflict::UnfinishedMove {
            to: (*on).to_owned(),
        })),
        _ => None,
    }
}

/// Places every tenant of `tenants` (see the module docs). `servers` are
/// all the fleet's servers, read in full.
pub fn place(servers: &[Server], tenants: &[Wanted]) -> BTreeMap<String, Placement> {
    let mut count: BTreeMap<&str, usize> = servers
        .iter()
        .map(|s| (s.name.as_str(), s.holds.len()))
        .collect();
    let widest = servers.iter().filter_map(|s| s.max_tenants).max();
    let mut out = BTreeMap::new();
    let mut new = Vec::new();
    for t in tenants {
        let lives: Vec<&str> = servers
            .iter()
            .filter(|s| s.holds.contains(&t.name))
            .map(|s| s.name.as_str())
            .collect();
        let cutover: Vec<(&str, &str)> = servers
            .iter()
            .filter_map(|s| Some((s.name.as_str(), s.cutover.get(&t.name)?.as_str())))
            .collect();
        let incoming: Vec<(&str, &str)> = servers
            .iter()
            .filter_map(|s| Some((s.name.as_str(), s.incoming.get(&t.name)?.as_str())))
            .collect();
        if let Some(placed) = moving(&lives, &cutover, &incoming, t.pin.as_deref()) {
            out.insert(t.name.clone(), placed);
            continue;
        }
        let placed = match (lives.as_slice(), &t.pin) {
            ([], Some(pin)) => {
                let draining = servers.iter().any(|s| &s.name == pin && s.draining);
                *count.entry(pin.as_str()).or_default() += 1;
                Placement::New {
                    server: pin.clone(),
                    pinned: true,
                    draining,
                }
            }
            ([], None) => match servers.iter().find(|s| s.claimed.contains(&t.name)) {
                Some(s) => {
                    *count.entry(s.name.as_str()).or_default() += 1;
                    Placement::New {
                        server: s.name.clone(),
                        pinned: false,
                        draining: s.draining,
                    }
                }
                None => {
                    new.push(&t.name);
                    continue;
                }
            },
            ([one], Some(pin)) if *one != pin.as_str() => Placement::Move {
                from: (*one).to_owned(),
                to: pin.clone(),
                cutover: false,
            },
            ([one], _) => Placement::Lives {
                server: (*one).to_owned(),
            },
            (several, _) => Placement::Conflict(Conflict::OnSeveral {
                servers: several.iter().map(|s| (*s).to_owned()).collect(),
            }),
        };
        out.insert(t.name.clone(), placed);
    }
    // Unpinned new tenants, in name order: each to the emptiest server.
    new.sort();
    for name in new {
        let best = servers
            .iter()
            .filter(|s| !s.draining)
            .filter(|s| {
                s.max_tenants
                    .is_none_or(|max| count[s.name.as_str()] < max as usize)
            })
            .min_by(|a, b| {
                let fill = |s: &Server| {
                    let capacity = s.max_tenants.or(widest).unwrap_or(1).max(1);
                    count[s.name.as_str()] as f64 / f64::from(capacity)
                };
                fill(a)
                    .total_cmp(&fill(b))
                    .then_with(|| a.name.cmp(&b.name))
            });
        let placed = match best {
            Some(server) => {
                *count.entry(server.name.as_str()).or_default() += 1;
                Placement::New {
                    server: server.name.clone(),
                    pinned: false,
                    draining: false,
                }
            }
            None => Placement::Conflict(Conflict::NoRoom),
        };
        out.insert(name.clone(), placed);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str, max: Option<u32>, draining: bool, holds: &[&str]) -> Server {
        Server {
            name: name.into(),
            max_tenants: max,
            draining,
            holds: holds.iter().map(|s| s.to_string()).collect(),
            claimed: BTreeSet::new(),
            incoming: BTreeMap::new(),
            cutover: BTreeMap::new(),
        }
    }

    fn wanted(name: &str, pin: Option<&str>) -> Wanted {
        Wanted {
            name: name.into(),
            pin: pin.map(Into::into),
        }
    }

    fn new(server: &str) -> Placement {
        Placement::New {
            server: server.into(),
            pinned: false,
            draining: false,
        }
    }

    #[test]
    fn a_tenant_lives_where_its_database_is() {
        let servers = [
            server("eu1", None, false, &["a", "b"]),
            server("eu2", None, true, &["c"]),
        ];
        let got = place(
            &servers,
            &[
                wanted("a", None),
                wanted("b", Some("eu1")),
                wanted("c", None),
            ],
        );
        assert_eq!(
            got["a"],
            Placement::Lives {
                server: "eu1".into()
            }
        );
        assert_eq!(
            got["b"],
            Placement::Lives {
                server: "eu1".into()
            }
        );
        // Draining keeps its tenants.
        assert_eq!(
            got["c"],
            Placement::Lives {
                server: "eu2".into()
            }
        );
    }

    #[test]
    fn a_pin_elsewhere_is_a_move_and_two_copies_a_conflict() {
        let servers = [
            server("eu1", None, false, &["a", "b"]),
            server("eu2", None, false, &["b"]),
        ];
        let got = place(&servers, &[wanted("a", Some("eu2")), wanted("b", None)]);
        assert_eq!(
            got["a"],
            Placement::Move {
                from: "eu1".into(),
                to: "eu2".into(),
                cutover: false
            }
        );
        // Until the cutover, its copy on eu1 is planned as usual.
        assert_eq!(got["a"].server(), Some("eu1"));
        assert_eq!(
            got["b"],
            Placement::Conflict(Conflict::OnSeveral {
                servers: vec!["eu1".into(), "eu2".into()]
            })
        );
        assert_eq!(got["b"].server(), None);
    }

    #[test]
    fn a_move_under_way_resumes_finishes_or_is_a_conflict() {
        let mut servers = vec![
            server("eu1", None, false, &["a", "b", "c"]),
            server("eu2", None, false, &[]),
            server("eu3", None, false, &[]),
        ];
        let mv = |from: &str, to: &str, cutover: bool| Placement::Move {
            from: from.into(),
            to: to.into(),
            cutover,
        };
        // Being copied to eu2: pinned there, the move goes on.
        servers[1].incoming.insert("a".into(), "eu1".into());
        // Cut over half-way: finished even if the pin went back.
        servers[0].cutover.insert("b".into(), "eu2".into());
        servers[1].incoming.insert("b".into(), "eu1".into());
        // Copy to eu3 started, then the pin changed to eu2.
        servers[2].incoming.insert("c".into(), "eu1".into());
        let got = place(
            &servers,
            &[
                wanted("a", Some("eu2")),
                wanted("b", Some("eu1")),
                wanted("c", Some("eu2")),
            ],
        );
        assert_eq!(got["a"], mv("eu1", "eu2", false));
        assert_eq!(got["b"], mv("eu1", "eu2", true));
        assert_eq!(got["b"].server(), None, "only the move touches it");
        assert!(pinned_text(&got["c"]).contains("set server = \"eu3\" to finish that move"));
        // The target already open, the source not yet marked: still the move's.
        servers[1].holds.insert("b".into());
        servers[1].incoming.remove("b");
        assert_eq!(
            place(&servers, &[wanted("b", None)])["b"],
            mv("eu1", "eu2", true)
        );
        // The pin back where it lives (or none): the move is called off.
        for pin in [None, Some("eu1")] {
            let got = place(&servers, &[wanted("a", pin)]);
            assert_eq!(
                got["a"],
                Placement::Lives {
                    server: "eu1".into()
                }
            );
        }
        // A copy whose source holds nothing.
        servers[0].holds.remove("a");
        let got = place(&servers, &[wanted("a", Some("eu2"))]);
        assert!(pinned_text(&got["a"]).contains("unfinished copy of it from server eu1"));
    }

    fn pinned_text(p: &Placement) -> String {
        match p {
            Placement::Conflict(c) => c.to_string(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn new_tenants_spread_over_the_emptiest_servers() {
        let servers = [
            server("eu1", None, false, &["x", "y"]),
            server("eu2", None, false, &["z"]),
            server("eu3", None, false, &[]),
        ];
        let tenants: Vec<Wanted> = ["n1", "n2", "n3", "n4", "n5", "n6"]
            .iter()
            .map(|n| wanted(n, None))
            .collect();
        let got = place(&servers, &tenants);
        let mut per: BTreeMap<&str, usize> = BTreeMap::new();
        for p in got.values() {
            *per.entry(p.server().unwrap()).or_default() += 1;
        }
        // 2 + 1 + 0 existing and 6 new: three each.
        assert_eq!(per, BTreeMap::from([("eu1", 1), ("eu2", 2), ("eu3", 3)]));
        // Ties go by name: the first new one to the empty eu3, the next
        // (eu2 and eu3 at one each) to eu2.
        assert_eq!(got["n1"], new("eu3"));
        assert_eq!(got["n2"], new("eu2"));
    }

    #[test]
    fn capacity_is_relative_and_never_exceeded_and_draining_gets_none() {
        // Half full against a tenth full: the larger server.
        let servers = [
            server("big", Some(1000), false, &[]),
            server("small", Some(4), false, &["a", "b"]),
        ];
        let mut servers = servers.to_vec();
        servers[0].holds = (0..100).map(|i| format!("t{i}")).collect();
        let got = place(&servers, &[wanted("n", None)]);
        assert_eq!(got["n"], new("big"));
        // A full server gets nothing; a draining one neither; a pin may.
        let servers = [
            server("full", Some(1), false, &["a"]),
            server("old", None, true, &[]),
        ];
        let got = place(&servers, &[wanted("n", None), wanted("p", Some("old"))]);
        assert_eq!(got["n"], Placement::Conflict(Conflict::NoRoom));
        assert_eq!(
            got["p"],
            Placement::New {
                server: "old".into(),
                pinned: true,
                draining: true
            }
        );
        // Room for two more: the third new tenant finds none.
        let servers = [server("s", Some(3), false, &["a"])];
        let got = place(
            &servers,
            &[wanted("n1", None), wanted("n2", None), wanted("n3", None)],
        );
        assert_eq!(
            (got["n1"].server(), got["n2"].server()),
            (Some("s"), Some("s"))
        );
        assert_eq!(got["n3"], Placement::Conflict(Conflict::NoRoom));
    }

    #[test]
    fn a_name_taken_on_a_server_is_placed_there() {
        let mut servers = vec![
            server("eu1", None, false, &[]),
            server("eu2", None, false, &["a", "b"]),
        ];
        servers[1].claimed.insert("n".into());
        let got = place(&servers, &[wanted("n", None), wanted("m", None)]);
        // eu2 is fuller, but n's roles are there.
        assert_eq!(got["n"], new("eu2"));
        assert_eq!(got["m"], new("eu1"));
        // A pin still wins (the leftover roles are reported, not reused).
        let got = place(&servers, &[wanted("n", Some("eu1"))]);
        assert_eq!(got["n"].server(), Some("eu1"));
    }

    #[test]
    fn pinned_new_tenants_count_for_the_others() {
        let servers = [
            server("eu1", None, false, &[]),
            server("eu2", None, false, &[]),
        ];
        let got = place(
            &servers,
            &[
                wanted("p1", Some("eu1")),
                wanted("p2", Some("eu1")),
                wanted("n", None),
            ],
        );
        assert_eq!(got["n"], new("eu2"));
    }
}
