//! [`Session`]: a pooled connection and the role the gateway last switched
//! it to, so a run of requests of the same role pays no round trip; and
//! [`SessionManager`], deadpool-postgres' manager with that state added.
//!
//! The role lives with the connection it describes: a new connection starts
//! unknown, a failed switch makes it unknown again, and a connection that
//! is closed takes its state along. The gateway never runs a caller's SQL,
//! so nothing else changes a session's role.
//!
//! What does not live here: which role a request needs (the server asks the
//! snapshot) and the budget and breaker (next door).

use std::ops::{Deref, DerefMut};

use deadpool::managed::{self, Metrics, RecycleResult};
use deadpool_postgres::ClientWrapper;

/// A connection of a tenant's pool.
pub struct Session {
    client: ClientWrapper,
    /// The role set by the last successful [`Session::act_as`] (None: the
    /// login's own, or unknown).
    role: Option<String>,
}

impl Session {
    /// Switches the session to `role` (`SET ROLE`) unless it acts as it
    /// already. A failed switch leaves the role unknown, so the next request
    /// switches again, and fails this request before any of its statements.
    pub async fn act_as(&mut self, role: &str) -> Result<(), tokio_postgres::Error> {
        if self.role.as_deref() == Some(role) {
            return Ok(());
        }
        self.role = None;
        self.client
            .batch_execute(&tenantry_layout::roles::set_role(role))
            .await?;
        self.role = Some(role.to_owned());
        Ok(())
    }

    /// The role the session acts as, if known.
    pub fn role(&self) -> Option<&str> {
        self.role.as_deref()
    }
}

impl Deref for Session {
    type Target = ClientWrapper;
    fn deref(&self) -> &ClientWrapper {
        &self.client
    }
}

impl DerefMut for Session {
    fn deref_mut(&mut self) -> &mut ClientWrapper {
        &mut self.client
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("role", &self.role).finish()
    }
}

/// deadpool-postgres' [`deadpool_postgres::Manager`], making [`Session`]s.
#[derive(Debug)]
pub struct SessionManager(pub deadpool_postgres::Manager);

impl managed::Manager for SessionManager {
    type Type = Session;
    type Error = tokio_postgres::Error;

    async fn create(&self) -> Result<Session, tokio_postgres::Error> {
        Ok(Session {
            client: self.0.create().await?,
            role: None,
        })
    }

    async fn recycle(
        &self,
        session: &mut Session,
        metrics: &Metrics,
    ) -> RecycleResult<tokio_postgres::Error> {
        self.0.recycle(&mut session.client, metrics).await
    }

    fn detach(&self, session: &mut Session) {
        self.0.detach(&mut session.client);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::Registry;

    async fn current_user(s: &super::Session) -> String {
        s.query_one("SELECT current_user::text", &[])
            .await
            .unwrap()
            .get(0)
    }

    /// The session remembers its role: a repeated switch sends nothing, a
    /// failed one forgets, and a new connection starts from its login.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_session_switches_role_once_and_forgets_after_a_failure() {
        let db = database("session");
        let (a, b) = (format!("{db}_a"), format!("{db}_b"));
        cluster()
            .psql(
                "postgres",
                &format!(
                    "CREATE ROLE {a} NOLOGIN; CREATE ROLE {b} NOLOGIN; GRANT {a}, {b} TO postgres;"
                ),
            )
            .unwrap();
        let reg = Registry::new(settings(4));
        let mut conn = reg.get(&key(&db), &|| superuser(&db, 1)).await.unwrap();
        assert_eq!(conn.role(), None);
        conn.act_as(&a).await.unwrap();
        assert_eq!(current_user(&conn).await, a);
        // A second switch to the same role is not sent: drop the role
        // behind the session's back (a SET ROLE to it would fail now).
        cluster()
            .psql("postgres", &format!("DROP ROLE {a}"))
            .unwrap();
        conn.act_as(&a).await.unwrap();
        assert_eq!(conn.role(), Some(a.as_str()));
        conn.act_as(&b).await.unwrap();
        assert_eq!(current_user(&conn).await, b);
        // A switch the server refuses fails and leaves the role unknown.
        let no_such = format!("{db}_nobody");
        assert!(conn.act_as(&no_such).await.is_err());
        assert_eq!(conn.role(), None);
        conn.act_as(&b).await.unwrap();
        assert_eq!(current_user(&conn).await, b);
        drop(conn);
        // Back from the pool, the same connection keeps its role.
        let conn = reg.get(&key(&db), &|| superuser(&db, 1)).await.unwrap();
        assert_eq!(conn.role(), Some(b.as_str()));
        cluster()
            .psql("postgres", &format!("DROP ROLE {b}"))
            .unwrap();
    }
}
