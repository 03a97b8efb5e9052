//! One connection and what travels with it: [`Session`] (the client, the
//! group role the gateway last switched it to, and the task driving it,
//! which holds the connection's budget permit), [`Object`] (a session
//! checked out, back to its pool when dropped) and dialing one.
//!
//! The role lives with the connection it describes: a new connection starts
//! unknown, a failed switch makes it unknown again, and a connection that
//! is closed takes its state along. The gateway never runs a caller's SQL,
//! so nothing else changes a session's role.
//!
//! The budget permit lives in the driver task, so it is released exactly
//! when the connection is gone (closed by the registry, dropped, or
//! broken), never while a socket is still open; [`Session::close`] hands it
//! to whoever closed the connection to make room, so the freed place goes to
//! the request that paid for it.
//!
//! What does not live here: which role a request needs (the server asks the
//! snapshot), when connections are opened or closed (`checkout`, `policy`).

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::ClientWrapper;
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tokio::task::JoinHandle;

use super::{PoolKey, Shared};

/// How long a closing connection may take to say goodbye before it is cut.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// A connection of a tenant's pool.
pub struct Session {
    client: ClientWrapper,
    /// The role set by the last successful [`Session::act_as`] (None: the
    /// login's own, or unknown).
    role: Option<String>,
    /// The task driving the connection; it ends with the connection and
    /// yields the budget permit it held.
    ended: JoinHandle<OwnedSemaphorePermit>,
}

impl Session {
    /// Dials `config`, the connection holding `permit` until it is gone.
    pub(super) async fn dial(
        config: &tokio_postgres::Config,
        permit: OwnedSemaphorePermit,
    ) -> Result<Session, tokio_postgres::Error> {
        let (client, connection) = config.connect(tenantry_pgconn::connector()).await?;
        let (signal, ended) = spawn_driver(connection, permit);
        Ok(Session {
            client: ClientWrapper::new(client, signal),
            role: None,
            ended,
        })
    }

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

    /// Closes the connection (gracefully: tokio-postgres says Terminate once
    /// its client is gone); the returned task ends with it and yields its
    /// budget permit.
    pub(super) fn close(self) -> JoinHandle<OwnedSemaphorePermit> {
        let Session { client, ended, .. } = self;
        drop(client);
        ended
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

/// A [`Session`] checked out of a tenant's pool; back to it when dropped
/// (or closed, if its pool was closed or shrunk meanwhile, or the
/// connection broke).
pub struct Object {
    session: Option<Session>,
    shared: Arc<Shared>,
    key: Arc<PoolKey>,
    generation: u64,
}

impl Object {
    pub(super) fn new(
        session: Session,
        shared: Arc<Shared>,
        key: Arc<PoolKey>,
        generation: u64,
    ) -> Object {
        Object {
            session: Some(session),
            shared,
            key,
            generation,
        }
    }
}

impl Object {
    /// The session, no longer checked out of anything (nothing happens
    /// when the object drops).
    pub(super) fn into_session(mut self) -> Session {
        self.session.take().expect("present until dropped")
    }
}

impl Deref for Object {
    type Target = Session;
    fn deref(&self) -> &Session {
        self.session.as_ref().expect("present until dropped")
    }
}

impl DerefMut for Object {
    fn deref_mut(&mut self) -> &mut Session {
        self.session.as_mut().expect("present until dropped")
    }
}

impl std::fmt::Debug for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Object")
            .field("key", &self.key)
            .field("session", &self.session)
            .finish()
    }
}

impl Drop for Object {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            self.shared.put_back(&self.key, self.generation, session);
        }
    }
}

/// Spawns the task driving `connection`, which holds `permit` for as long as
/// the connection is open and yields it when the connection is gone.
/// Returns, first, the handle the client wrapper aborts when the client is
/// dropped: aborting it does not cut the connection but lets it end
/// gracefully (tokio-postgres sends Terminate once its client is gone),
/// within [`CLOSE_GRACE`]; second, the driver itself.
fn spawn_driver<C>(
    connection: C,
    permit: OwnedSemaphorePermit,
) -> (JoinHandle<()>, JoinHandle<OwnedSemaphorePermit>)
where
    C: Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    let (dropped_tx, dropped_rx) = oneshot::channel::<()>();
    let ended = tokio::spawn(async move {
        tokio::pin!(connection);
        let ended = tokio::select! {
            ended = &mut connection => Some(ended),
            _ = dropped_rx => tokio::time::timeout(CLOSE_GRACE, &mut connection).await.ok(),
        };
        match ended {
            Some(Ok(())) => {}
            Some(Err(e)) => tracing::debug!(error = %e, "database connection ended with an error"),
            None => tracing::debug!("database connection cut after the close grace period"),
        }
        permit
    });
    let signal = tokio::spawn(async move {
        let _dropped = dropped_tx;
        std::future::pending::<()>().await
    });
    (signal, ended)
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
