//! The ownership marker: the COMMENT tenantry puts on each database and role
//! it manages, `tenantry:v1 fleet=<fleet> tenant=<db> kind=<kind>
//! [protected=<bool>] [move=<in|cutover|out> from=<server>|to=<server> [at=<time>]]`,
//! so the catalog alone tells managed objects from others (no state file),
//! and where a tenant moving between servers stands ([`Move`]). Reading
//! markers into a plan is the planner's job.

use serde::Serialize;

use crate::roles::Group;

/// The first word of every marker.
pub const PREFIX: &str = "tenantry:v1";

/// A `LIKE` pattern matching every marker, for catalog queries.
pub const LIKE: &str = "tenantry:v1 %";

/// What kind of object a marker labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Database,
    Owner,
    Admin,
    Developer,
    Customer,
    User,
    /// The gateway's login (`<db>_gateway`).
    Gateway,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Database => "database",
            Kind::Owner => "owner",
            Kind::Admin => "admin",
            Kind::Developer => "developer",
            Kind::Customer => "customer",
            Kind::User => "user",
            Kind::Gateway => "gateway",
        }
    }

    /// The kind of a group role.
    pub fn of(group: Group) -> Kind {
        match group {
            Group::Owner => Kind::Owner,
            Group::Admin => Kind::Admin,
            Group::Developer => Kind::Developer,
            Group::Customer => Kind::Customer,
        }
    }

    /// The group of a group role's kind; `None` for a database or a user.
    pub fn group(self) -> Option<Group> {
        Group::ALL.into_iter().find(|&g| Kind::of(g) == self)
    }

    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "database" => Kind::Database,
            "owner" => Kind::Owner,
            "admin" => Kind::Admin,
            "developer" => Kind::Developer,
            "customer" => Kind::Customer,
            "user" => Kind::User,
            "gateway" => Kind::Gateway,
            _ => return None,
        })
    }
}

/// The ownership tag kept in an object's COMMENT.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Marker {
    pub fleet: String,
    pub tenant: String,
    pub kind: Kind,
    /// Only on databases: deletion protection as last applied.
    pub protected: Option<bool>,
    /// Only on databases: the copy's part in a move between servers.
    pub moving: Option<Move>,
}

/// A database copy's part in a move between servers (`crate::moves`). A
/// copy without one is the tenant's, open as its status says. Versions
/// before moves ignore the key and see two copies: a conflict, never a
/// second open copy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "move", rename_all = "lowercase")]
pub enum Move {
    /// Being filled from server `from`; closed; not the tenant's yet.
    In { from: String },
    /// Still the tenant's, closed: its writes are being handed to server
    /// `to`. A crash here is finished by the next apply.
    Cutover { to: String },
    /// Left behind, closed: the tenant moved to server `to` at `at`
    /// (RFC 3339, UTC). Dropped by `apply --allow-destroy`, after a backup.
    Out { to: String, at: String },
}

impl Marker {
    pub fn new(fleet: &str, tenant: &str, kind: Kind) -> Marker {
        Marker {
            fleet: fleet.to_owned(),
            tenant: tenant.to_owned(),
            kind,
            protected: None,
            moving: None,
        }
    }

    /// Parses a comment; `None` when it is not a tenantry marker.
    pub fn parse(comment: &str) -> Option<Marker> {
        let mut words = comment.split_whitespace();
        if words.next()? != PREFIX {
            return None;
        }
        let (mut fleet, mut tenant, mut kind, mut protected) = (None, None, None, None);
        let (mut moving, mut from, mut to, mut at) = (None, None, None, None);
        for word in words {
            let (key, value) = word.split_once('=')?;
            match key {
                "fleet" => fleet = Some(value.to_owned()),
                "tenant" => tenant = Some(value.to_owned()),
                "kind" => kind = Some(Kind::parse(value)?),
                "protected" => protected = Some(value.parse().ok()?),
                "move" => moving = Some(value),
                "from" => from = Some(value.to_owned()),
                "to" => to = Some(value.to_owned()),
                "at" => at = Some(value.to_owned()),
                _ => {} // newer versions may add keys
            }
        }
        // A move key that does not parse is not ours to guess at: the whole
        // comment is not a marker (a conflict, never an open copy).
        let moving = match moving {
            None => None,
            Some("in") => Some(Move::In { from: from? }),
            Some("cutover") => Some(Move::Cutover { to: to? }),
            Some("out") => Some(Move::Out { to: to?, at: at? }),
            Some(_) => return None,
        };
        Some(Marker {
            fleet: fleet?,
            tenant: tenant?,
            kind: kind?,
            protected,
            moving,
        })
    }

    pub fn render(&self) -> String {
        let mut s = format!(
            "{PREFIX} fleet={} tenant={} kind={}",
            self.fleet,
            self.tenant,
            self.kind.as_str()
        );
        if let Some(p) = self.protected {
            s.push_str(&format!(" protected={p}"));
        }
        match &self.moving {
            None => {}
            Some(Move::In { from }) => s.push_str(&format!(" move=in from={from}")),
            Some(Move::Cutover { to }) => s.push_str(&format!(" move=cutover to={to}")),
            Some(Move::Out { to, at }) => s.push_str(&format!(" move=out to={to} at={at}")),
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trips() {
        let mut m = Marker::new("prod", "building_shop", Kind::Database);
        m.protected = Some(true);
        let text = m.render();
        assert_eq!(
            text,
            "tenantry:v1 fleet=prod tenant=building_shop kind=database protected=true"
        );
        assert_eq!(Marker::parse(&text), Some(m));
        assert!(text.starts_with(LIKE.trim_end_matches('%')));
    }

    #[test]
    fn a_move_round_trips_and_a_broken_one_is_no_marker() {
        for moving in [
            Move::In { from: "eu1".into() },
            Move::Cutover { to: "eu2".into() },
            Move::Out {
                to: "eu2".into(),
                at: "2026-11-30T12:00:00Z".into(),
            },
        ] {
            let mut m = Marker::new("prod", "shop", Kind::Database);
            m.protected = Some(false);
            m.moving = Some(moving);
            assert_eq!(
                Marker::parse(&m.render()),
                Some(m.clone()),
                "{}",
                m.render()
            );
        }
        assert_eq!(
            Marker::new("p", "s", Kind::Database).render(),
            "tenantry:v1 fleet=p tenant=s kind=database"
        );
        for broken in [
            "tenantry:v1 fleet=p tenant=s kind=database move=in",
            "tenantry:v1 fleet=p tenant=s kind=database move=out to=eu2",
            "tenantry:v1 fleet=p tenant=s kind=database move=sideways to=eu2",
        ] {
            assert_eq!(Marker::parse(broken), None, "{broken}");
        }
    }

    #[test]
    fn foreign_comments_are_not_markers() {
        for c in [
            "",
            "created by terraform",
            "tenantry:v1 fleet=x",
            "tenantry:v1 fleet=x tenant=y kind=table",
        ] {
            assert_eq!(Marker::parse(c), None, "{c}");
        }
    }
}
