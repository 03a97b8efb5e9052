//! A tenant's move from one server to another, as plan shows it and apply
//! checks it: where the move stands, how it will copy and why, what it will
//! copy, and what stops it. Pure: `tenantry_pg::moves` surveys both servers
//! into a [`MovePlan`] and carries it out; [`crate::placement`] decides that
//! a tenant moves.

use serde::Serialize;
use tenantry_layout::{literal, quote, Kind, Marker, Move};

/// One tenant's move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MovePlan {
    pub tenant: String,
    pub from: String,
    pub to: String,
    pub stage: Stage,
    pub method: Method,
    /// The size of its database on `from` (what the copy carries).
    pub bytes: Option<i64>,
    /// `server_version_num` of `from` and `to`.
    pub versions: (i32, i32),
    /// Why it cannot run at all (apply refuses, like any conflict).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conflict: Option<String>,
    /// Why it waits for a later apply (apply runs the rest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waits: Option<String>,
    /// It waits only for the copy an earlier move left on `to`, which
    /// `apply --allow-destroy` drops before it moves the tenant.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub leftover_in_the_way: bool,
}

/// Where a move stands, from the markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Nothing made yet.
    Start,
    /// The copy on `to` exists and is being filled or streamed.
    Copying,
    /// The cutover started (an apply stopped in it): apply finishes it.
    Cutover,
}

/// How the data goes across.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Method {
    /// Publication and subscription: copy, stream, a short cutover.
    Logical,
    /// Every table and sequence copied (COPY, old server out, new server
    /// in) with the tenant's writes closed for the whole copy.
    DumpRestore { why: String },
}

impl MovePlan {
    /// Whether apply does something for it now.
    pub fn runs(&self) -> bool {
        self.conflict.is_none() && self.waits.is_none()
    }

    /// The plan's lines for it, without the trailing newline.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![match self.stage {
            Stage::Cutover => format!(
                "  ~ tenant {} will finish moving from server {} to server {} (its cutover was cut short)",
                self.tenant, self.from, self.to
            ),
            Stage::Copying => format!(
                "  ~ tenant {} will move from server {} to server {} (resumed: its copy there exists)",
                self.tenant, self.from, self.to
            ),
            Stage::Start => format!(
                "  ~ tenant {} will move from server {} to server {}",
                self.tenant, self.from, self.to
            ),
        }];
        let size = self
            .bytes
            .map(|b| format!("{} to copy", human_bytes(b)))
            .unwrap_or_else(|| "size unknown".to_owned());
        out.push(match &self.method {
            Method::Logical => format!(
                "      online, logical replication: {size}, writes paused only for the cutover"
            ),
            Method::DumpRestore { why } => format!(
                "      offline, dump and restore (COPY): {size}, writes closed for the whole copy, because {why}"
            ),
        });
        let (a, b) = (self.versions.0 / 10000, self.versions.1 / 10000);
        if a != b {
            out.push(format!("      PostgreSQL {a} to {b}"));
        }
        if let Some(w) = &self.waits {
            out.push(format!("      waits: {w}"));
        }
        out
    }
}

/// The SQL a move runs, each on the server and database its doc names;
/// `name` is [`tenantry_layout::moves::replication_name`].
pub mod sql {
    use super::*;

    /// Admin database, either server: the database's marker (a move's
    /// stage), and the notification gateways wait for, in one
    /// transaction so they learn of it once it holds.
    pub fn mark(fleet: &str, tenant: &str, protected: bool, moving: Option<Move>) -> Vec<String> {
        let mut marker = Marker::new(fleet, tenant, Kind::Database);
        marker.protected = Some(protected);
        marker.moving = moving;
        vec![
            format!(
                "COMMENT ON DATABASE {} IS {}",
                quote(tenant),
                literal(&marker.render())
            ),
            notify(fleet, tenant),
        ]
    }

    /// Admin database: tells the gateways listening there that `tenant`'s
    /// copies changed.
    pub fn notify(fleet: &str, tenant: &str) -> String {
        format!(
            "SELECT pg_notify({}, {})",
            literal(tenantry_layout::moves::CHANNEL),
            literal(&tenantry_layout::moves::payload(fleet, tenant))
        )
    }

    /// Admin database, either server: the tenant's logins may (or may no
    /// longer) log in.
    pub fn logins(roles: &[String], login: bool) -> Vec<String> {
        let word = if login { "LOGIN" } else { "NOLOGIN" };
        roles
            .iter()
            .map(|r| format!("ALTER ROLE {} {word}", quote(r)))
            .collect()
    }

    /// Old server, admin database: the login the new server streams as,
    /// for this move only (dropped at the cutover). It may read the
    /// tenant's tables as their owner, and replicate.
    pub fn streaming_login(
        name: &str,
        exists: bool,
        verifier: &str,
        tenant: &str,
        owner: &str,
    ) -> Vec<String> {
        let verb = if exists { "ALTER" } else { "CREATE" };
        vec![
            format!(
                "{verb} ROLE {} LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE INHERIT PASSWORD {}",
                quote(name),
                literal(verifier)
            ),
            format!("GRANT CONNECT ON DATABASE {} TO {}", quote(tenant), quote(name)),
            format!("GRANT {} TO {}", quote(owner), quote(name)),
        ]
    }

    /// Old server, admin database: the streaming login gone.
    pub fn drop_streaming_login(name: &str, tenant: &str) -> Vec<String> {
        vec![
            format!(
                "REVOKE ALL ON DATABASE {} FROM {}",
                quote(tenant),
                quote(name)
            ),
            format!("DROP ROLE IF EXISTS {}", quote(name)),
        ]
    }

    /// Old server, the tenant's database.
    pub fn create_publication(name: &str) -> String {
        format!("CREATE PUBLICATION {} FOR ALL TABLES", quote(name))
    }

    /// Old server, the tenant's database.
    pub fn drop_publication(name: &str) -> String {
        format!("DROP PUBLICATION IF EXISTS {}", quote(name))
    }

    /// New server, the tenant's database (outside a transaction: it makes
    /// the slot on the old server). `conninfo` holds the streaming login's
    /// password: the caller builds this text at the last moment and never
    /// shows it.
    ///
    /// `synchronous_commit = on`: the new server reports a change as
    /// flushed as soon as it is applied (the default, off, reports it only
    /// after its WAL writer's next round), which is what the cutover waits
    /// for.
    pub fn create_subscription(name: &str, conninfo: &str) -> String {
        format!(
            "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH (slot_name = {}, create_slot = true, copy_data = true, synchronous_commit = 'on')",
            quote(name),
            literal(conninfo),
            quote(name),
            literal(name)
        )
    }

    /// New server, the tenant's database: a subscription, disabled first
    /// ([`disable_subscription`]), dropped without touching the old server
    /// (its slots there are dropped on that side).
    pub fn detach_subscription(name: &str) -> Vec<String> {
        vec![
            format!("ALTER SUBSCRIPTION {} SET (slot_name = NONE)", quote(name)),
            format!("DROP SUBSCRIPTION IF EXISTS {}", quote(name)),
        ]
    }

    /// New server, the tenant's database: the subscription stops applying
    /// (the cutover's last step before the new copy opens; it is dropped
    /// after).
    pub fn disable_subscription(name: &str) -> String {
        format!("ALTER SUBSCRIPTION {} DISABLE", quote(name))
    }

    /// New server, the tenant's database: a subscription an earlier apply
    /// stopped applies again.
    pub fn enable_subscription(name: &str) -> String {
        format!("ALTER SUBSCRIPTION {} ENABLE", quote(name))
    }

    /// New server, the tenant's database (outside a transaction: it drops
    /// the slot on the old server).
    pub fn drop_subscription(name: &str) -> String {
        format!("DROP SUBSCRIPTION IF EXISTS {}", quote(name))
    }
}

/// `1.2 GB`, `340 MB`, `12 kB` (powers of 1024, as pg_size_pretty).
pub fn human_bytes(b: i64) -> String {
    let units = ["bytes", "kB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} bytes")
    } else if v < 10.0 {
        format!("{v:.1} {}", units[i])
    } else {
        format!("{v:.0} {}", units[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mv() -> MovePlan {
        MovePlan {
            tenant: "building_shop".into(),
            from: "eu1".into(),
            to: "eu2".into(),
            stage: Stage::Start,
            method: Method::Logical,
            bytes: Some(1_288_490_189),
            versions: (150018, 170010),
            conflict: None,
            waits: None,
            leftover_in_the_way: false,
        }
    }

    #[test]
    fn a_move_reads_like_the_issue_asked() {
        assert_eq!(
            mv().lines(),
            [
                "  ~ tenant building_shop will move from server eu1 to server eu2",
                "      online, logical replication: 1.2 GB to copy, writes paused only for the cutover",
                "      PostgreSQL 15 to 17",
            ]
        );
        let mut m = mv();
        m.versions = (170010, 170010);
        m.method = Method::DumpRestore {
            why: "the admin of eu1 is not a superuser".into(),
        };
        m.stage = Stage::Cutover;
        m.bytes = Some(7_500_000);
        assert_eq!(
            m.lines(),
            [
                "  ~ tenant building_shop will finish moving from server eu1 to server eu2 (its cutover was cut short)",
                "      offline, dump and restore (COPY): 7.2 MB to copy, writes closed for the whole copy, because the admin of eu1 is not a superuser",
            ]
        );
        assert_eq!(human_bytes(900), "900 bytes");
        let mark = sql::mark("p", "shop", false, Some(Move::Cutover { to: "eu2".into() }));
        assert_eq!(
            mark,
            [
                "COMMENT ON DATABASE \"shop\" IS 'tenantry:v1 fleet=p tenant=shop kind=database protected=false move=cutover to=eu2'",
                "SELECT pg_notify('tenantry_moves', 'p shop')",
            ]
        );
        assert!(sql::create_subscription("m", "host=x password=it''s")
            .contains("CONNECTION 'host=x password=it''''s' PUBLICATION \"m\""));
        assert_eq!(human_bytes(350 << 20), "350 MB");
    }
}
