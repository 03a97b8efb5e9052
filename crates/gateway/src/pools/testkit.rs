//! Helpers for the pools' tests, against the shared throwaway cluster: each
//! test makes its own databases (unique names) and its own registry.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::Object;
use tenantry_localpg::Cluster;

use super::{PoolKey, Settings, Target};

pub(super) fn cluster() -> &'static Cluster {
    Cluster::shared()
}

/// A fresh database named after `what`.
pub(super) fn database(what: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!("pools_{what}_{}_{n}", std::process::id());
    cluster()
        .psql("postgres", &format!("CREATE DATABASE {name}"))
        .unwrap();
    name
}

pub(super) fn superuser(db: &str, size: usize) -> Target {
    Target {
        config: cluster().url(db).parse().unwrap(),
        size,
        epoch: 0,
    }
}

pub(super) fn key(tenant: &str) -> PoolKey {
    PoolKey {
        tenant: tenant.into(),
        role: "admin".into(),
    }
}

pub(super) fn settings(budget: usize) -> Settings {
    Settings {
        budget,
        checkout_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(300),
        connect_timeout: Duration::from_secs(2),
        backoff_min: Duration::from_millis(300),
        backoff_max: Duration::from_secs(2),
    }
}

/// Server-side connections to `dbs`, as `pg_stat_activity` sees them.
pub(super) fn backends(dbs: &[String]) -> usize {
    let list: Vec<String> = dbs.iter().map(|d| format!("'{d}'")).collect();
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname IN ({})",
        list.join(",")
    );
    cluster()
        .psql("postgres", &sql)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Polls `cond` for up to 5 s (closing a connection is asynchronous).
pub(super) async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..250 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

pub(super) async fn select_one(client: &Object) {
    client.simple_query("SELECT 1").await.unwrap();
}
