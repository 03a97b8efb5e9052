//! Tenantry's commands writing to and reading a tenant's audit trail
//! (`tenantry.audit`, laid out by `tenantry_layout::audit`): [`record`]
//! appends one entry as the admin acting as the tenant's owner (the entry
//! names the admin role, and the OS user and host of this machine, see
//! [`Who`]); [`list`] reads entries back.
//!
//! A tenant whose database predates the trail (no table yet: the next
//! apply creates it) gets no entry, and says so through the error's
//! [`Error::is_missing_trail`] so callers can tell that from a failure.
//!
//! What does not live here: deciding what to record (each command does),
//! the gateway's own appends (API writes).

use std::time::SystemTime;

use tenantry_layout::audit::{Action, APPEND, LIST};
use tenantry_layout::{quote, Group};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::{Admin, Error};

/// The machine a command runs on: its OS user and host name, as an entry
/// records them (best effort: `unknown` when they cannot be told).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who {
    pub os_user: String,
    pub host: String,
}

impl Who {
    /// This process's user (`USER`, `LOGNAME`) and host name.
    pub fn here() -> Who {
        let os_user = ["USER", "LOGNAME"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
            .or_else(user_of_uid)
            .unwrap_or_else(|| "unknown".to_owned());
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "unknown".to_owned());
        Who { os_user, host }
    }
}

/// This process's user name from its uid (`/proc/self/status`, then
/// `/etc/passwd`), or `uid <n>` when it has no name there.
fn user_of_uid() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .to_owned();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let name = passwd.lines().find_map(|l| {
        let mut fields = l.split(':');
        let name = fields.next()?;
        (fields.nth(1)? == uid).then(|| name.to_owned())
    });
    Some(name.unwrap_or_else(|| format!("uid {uid}")))
}

/// Appends one entry to tenant `db`'s trail, on a connection of its own.
pub async fn record(
    admin: &Admin,
    db: &str,
    action: Action,
    detail: serde_json::Value,
) -> Result<(), Error> {
    let client = admin.connect(Some(db)).await?;
    record_on(&client, db, action, detail).await
}

/// Appends one entry to tenant `db`'s trail on `client` (connected to `db`
/// as the admin), acting as the owner for the insert only.
pub async fn record_on(
    client: &Client,
    db: &str,
    action: Action,
    detail: serde_json::Value,
) -> Result<(), Error> {
    let who = Who::here();
    let owner = tenantry_layout::roles::group_role_name(db, Group::Owner);
    let ctx = format!(
        "tenant {db}: recording `{}` in its audit trail",
        action.as_str()
    );
    let tx = client.simple_query("BEGIN").await;
    tx.map_err(|e| Error::sql(&ctx, e))?;
    let written = async {
        client
            .batch_execute(&format!("SET LOCAL ROLE {}", quote(&owner)))
            .await?;
        client
            .execute(
                APPEND,
                &[
                    &action.as_str(),
                    &who.os_user,
                    &who.host,
                    &detail.to_string(),
                ],
            )
            .await
    }
    .await;
    match written {
        Ok(_) => client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| Error::sql(&ctx, e)),
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(Error::sql(&ctx, e))
        }
    }
}

/// [`record`], for a command whose change already stands: a trail that
/// is not there yet is skipped, another failure is logged (a warning on
/// stderr), neither fails the command.
pub async fn note(admin: &Admin, db: &str, action: Action, detail: serde_json::Value) {
    if let Err(e) = record(admin, db, action, detail).await {
        warn_unrecorded(&e);
    }
}

/// [`record_on`], as [`note`] is [`record`].
pub async fn note_on(client: &Client, db: &str, action: Action, detail: serde_json::Value) {
    if let Err(e) = record_on(client, db, action, detail).await {
        warn_unrecorded(&e);
    }
}

fn warn_unrecorded(e: &Error) {
    if !is_missing_trail(e) {
        tracing::warn!(error = %e, "the audit trail did not get this entry");
    }
}

/// One entry of a trail.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry {
    pub id: i64,
    /// RFC 3339, UTC, milliseconds.
    pub at: String,
    pub action: String,
    pub actor: String,
    pub os_user: String,
    pub host: String,
    pub detail: serde_json::Value,
}

/// Tenant `db`'s entries since `since` (all without), newest first, at
/// most `limit`.
pub async fn list(
    admin: &Admin,
    db: &str,
    since: Option<SystemTime>,
    limit: i64,
) -> Result<Vec<Entry>, Error> {
    let client = admin.connect(Some(db)).await?;
    let ctx = format!("tenant {db}: reading its audit trail");
    let owner = tenantry_layout::roles::group_role_name(db, Group::Owner);
    client
        .batch_execute(&format!("SET ROLE {}", quote(&owner)))
        .await
        .map_err(|e| Error::sql(&ctx, e))?;
    let since = since.map(|s| humantime::format_rfc3339_micros(s).to_string());
    let rows = client
        .query(LIST, &[&since, &limit, &0i64])
        .await
        .map_err(|e| Error::sql(&ctx, e))?;
    Ok(rows
        .iter()
        .map(|r| Entry {
            id: r.get(0),
            at: r.get(1),
            action: r.get(2),
            actor: r.get(3),
            os_user: r.get(4),
            host: r.get(5),
            detail: serde_json::from_str(&r.get::<_, String>(6)).unwrap_or_default(),
        })
        .collect())
}

/// Whether `e` says the trail is not there (a database tenantry set up
/// before it had one; the next apply creates it).
pub fn is_missing_trail(e: &Error) -> bool {
    e.code() == Some(&SqlState::UNDEFINED_TABLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_is_named() {
        let who = Who::here();
        assert!(!who.os_user.is_empty() && !who.host.is_empty(), "{who:?}");
        assert!(user_of_uid().is_some_and(|u| !u.is_empty()));
        assert!(!who.host.contains('\n'));
    }
}
