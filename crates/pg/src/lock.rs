//! The apply lock: a session-level advisory lock per fleet, held on the admin
//! connection for the whole apply, so two applies (from one machine or two)
//! never interleave. Released when the connection closes, even on a crash.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::error::Error;

/// First key of tenantry's advisory locks ("tnty").
const CLASS: i32 = 0x746e_7479;

/// A stable 32-bit key for a fleet name (FNV-1a).
pub fn fleet_key(fleet: &str) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in fleet.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h as i32
}

/// Takes the fleet's lock, waiting up to `timeout` (zero: fail at once).
pub async fn acquire(client: &Client, fleet: &str, timeout: Duration) -> Result<(), Error> {
    let key = fleet_key(fleet);
    let start = Instant::now();
    loop {
        let row = client
            .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&CLASS, &key])
            .await
            .map_err(|e| Error::sql("taking the apply lock", e))?;
        if row.get::<_, bool>(0) {
            return Ok(());
        }
        let waited = start.elapsed();
        if waited >= timeout {
            return Err(Error::Locked {
                fleet: fleet.to_owned(),
                holder: holder(client, key).await,
                waited,
            });
        }
        tokio::time::sleep(Duration::from_millis(200).min(timeout - waited)).await;
    }
}

/// Waits (up to `timeout`) for statements still running on behalf of an
/// apply of this fleet that died: the server finishes a statement such as
/// `CREATE DATABASE` even after its client is gone. With the lock held, any
/// other busy session under our application name is such an orphan; planning
/// before it ends would race with it.
pub async fn await_orphans(
    client: &Client,
    application_name: &str,
    timeout: Duration,
) -> Result<(), Error> {
    let start = Instant::now();
    loop {
        let busy: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE application_name = $1 AND pid <> pg_backend_pid() AND state NOT IN ('idle')",
                &[&application_name],
            )
            .await
            .map_err(|e| Error::sql("looking for sessions of an interrupted apply", e))?
            .get(0);
        if busy == 0 {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            tracing::warn!(
                busy,
                "sessions of an interrupted apply are still running; planning anyway"
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Who holds the lock, for the error message.
async fn holder(client: &Client, key: i32) -> String {
    let row = client
        .query_opt(
            "SELECT a.pid, a.usename::text, coalesce(host(a.client_addr), 'local socket'), a.backend_start::text
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.classid = $1::int::oid AND l.objid = $2::int::oid AND l.granted
             LIMIT 1",
            &[&CLASS, &key],
        )
        .await;
    match row {
        Ok(Some(r)) => format!(
            " (server pid {}, user {}, from {}, since {})",
            r.get::<_, i32>(0),
            r.get::<_, String>(1),
            r.get::<_, String>(2),
            r.get::<_, String>(3)
        ),
        _ => String::new(),
    }
}
