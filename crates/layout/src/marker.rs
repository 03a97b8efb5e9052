//! The ownership marker: the COMMENT tenantry puts on each database and role
//! it manages, `tenantry:v1 fleet=<fleet> tenant=<db> kind=<kind>
//! [protected=<bool>]`, so the catalog alone tells managed objects from
//! others (no state file). Reading markers into a plan is the planner's job.

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
}

impl Marker {
    pub fn new(fleet: &str, tenant: &str, kind: Kind) -> Marker {
        Marker {
            fleet: fleet.to_owned(),
            tenant: tenant.to_owned(),
            kind,
            protected: None,
        }
    }

    /// Parses a comment; `None` when it is not a tenantry marker.
    pub fn parse(comment: &str) -> Option<Marker> {
        let mut words = comment.split_whitespace();
        if words.next()? != PREFIX {
            return None;
        }
        let (mut fleet, mut tenant, mut kind, mut protected) = (None, None, None, None);
        for word in words {
            let (key, value) = word.split_once('=')?;
            match key {
                "fleet" => fleet = Some(value.to_owned()),
                "tenant" => tenant = Some(value.to_owned()),
                "kind" => kind = Some(Kind::parse(value)?),
                "protected" => protected = Some(value.parse().ok()?),
                _ => {} // newer versions may add keys
            }
        }
        Some(Marker {
            fleet: fleet?,
            tenant: tenant?,
            kind: kind?,
            protected,
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
