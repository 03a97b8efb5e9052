//! The server's connection budget: how many tenant databases tenantry works
//! on at once. Every fan-out over the fleet (catalog reads, apply, migrate,
//! status) opens connections, and a server has only so many: asking for more
//! than are free fails with "sorry, too many clients already" and takes the
//! last ones from the applications. So each fan-out is bounded by half of
//! the free connections (the other half stays with the applications), with
//! a floor of one worker so a full server still gets served, slowly.
//!
//! "Free" is what a role without superuser may still open: `max_connections`
//! less `superuser_reserved_connections`, `reserved_connections` and the
//! client backends. A role that is not a superuser (or `pg_monitor`) sees
//! other users' sessions in `pg_stat_activity` without their backend type,
//! so every session connected to a database counts (autovacuum workers too:
//! an overestimate, never an under).
//!
//! What does not live here: what the workers do.

use tokio_postgres::Client;

use crate::connect::Admin;
use crate::error::Error;

/// Connections a role without superuser may still open on the server.
pub async fn free_connections(client: &Client) -> Result<usize, Error> {
    let row = client
        .query_one(
            "SELECT current_setting('max_connections')::int
                  - current_setting('superuser_reserved_connections')::int
                  - coalesce(current_setting('reserved_connections', true)::int, 0)
                  - (SELECT count(*) FROM pg_stat_activity
                     WHERE datid IS NOT NULL
                       AND coalesce(backend_type, 'client backend') = 'client backend')::int",
            &[],
        )
        .await
        .map_err(|e| Error::sql("reading the connection budget", e))?;
    Ok(usize::try_from(row.get::<_, i32>(0)).unwrap_or(0))
}

/// How many workers of `per_worker` connections each to run when `wanted`
/// were asked for and `free` connections are free: at most half of `free`,
/// at most `wanted`, at least one.
pub fn workers(wanted: usize, free: usize, per_worker: usize) -> usize {
    (free / 2 / per_worker.max(1)).clamp(1, wanted.max(1))
}

/// [`workers`] with the server's free connections read on `client`.
pub async fn bound(client: &Client, wanted: usize, per_worker: usize) -> Result<usize, Error> {
    let free = free_connections(client).await?;
    let n = workers(wanted, free, per_worker);
    if n < wanted {
        tracing::info!(
            wanted,
            free,
            workers = n,
            "fewer workers than asked for: the server has few free connections"
        );
    }
    Ok(n)
}

/// [`bound`] over a connection of its own to the admin database (closed
/// again before the workers start). One worker when the budget cannot be
/// read: each worker then meets the server's error itself and reports it
/// for its tenant.
pub async fn workers_for(admin: &Admin, wanted: usize, per_worker: usize) -> usize {
    if wanted <= 1 {
        return 1;
    }
    let read = async {
        let client = admin.connect(None).await?;
        bound(&client, wanted, per_worker).await
    };
    read.await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read the connection budget; one at a time");
        1
    })
}

#[cfg(test)]
mod tests {
    use super::workers;

    #[test]
    fn half_of_the_free_connections_at_most_what_was_asked_at_least_one() {
        assert_eq!(workers(16, 100, 1), 16, "room for all");
        assert_eq!(workers(16, 9, 1), 4, "half of 9 free");
        assert_eq!(workers(4, 9, 2), 2, "two connections a worker");
        assert_eq!(workers(4, 3, 2), 1, "floor of one");
        assert_eq!(workers(4, 0, 1), 1, "a full server still gets one");
        assert_eq!(workers(0, 100, 1), 1, "zero asked means one");
    }
}
