//! Schema migrations: refinery migrations (`V<n>__<name>.sql`) read at run
//! time from the schema directory and run inside one tenant database as its
//! `<db>_owner` role.
//!
//! - Each migration runs in its own transaction (refinery), so a failure
//!   leaves the database at its last good version and a re-run resumes.
//! - A migration whose first line is `-- tenantry:no-transaction` (for
//!   `CREATE INDEX CONCURRENTLY` and the like) runs statement by statement
//!   outside a transaction; its history row is written after it succeeds.
//! - A per-database advisory lock serialises runs on the same database, from
//!   any number of processes or machines; the second waits, then finds the
//!   work done.
//! - [`Migrations::history`] compares what a database applied with the files:
//!   divergent checksums and unknown versions are reported, never ignored.
//!
//! The fleet-wide fan-out (workers, canaries, fail-fast, report) is in
//! [`crate::fleet`].

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use refinery::{Migration, Runner, Target};
use tenantry_layout::history;
use tokio_postgres::Client;

use crate::error::Error;

/// The first line that marks a migration to run outside a transaction.
pub const NO_TRANSACTION: &str = "-- tenantry:no-transaction";

/// Key of the per-database migration lock ("tnmg"); advisory locks are
/// scoped to the database they are taken in.
const LOCK_CLASS: i32 = 0x746e_6d67;

/// The migrations of a schema directory, in version order.
#[derive(Clone)]
pub struct Migrations {
    pub dir: PathBuf,
    list: Vec<Migration>,
}

/// What one run did to one database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// Time spent waiting for another run holding the database's lock.
    pub waited: Option<Duration>,
}

/// How a database's history compares with the schema directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct History {
    /// Highest applied version.
    pub version: Option<i64>,
    /// Versions in the directory not applied yet.
    pub pending: Vec<i64>,
    /// Applied versions whose checksum (or name) differs from the file.
    pub divergent: Vec<i64>,
    /// Applied versions the directory does not have.
    pub missing: Vec<i64>,
}

impl History {
    /// A description of what is wrong, if anything.
    pub fn problem(&self) -> Option<String> {
        let list = |v: &[i64]| {
            v.iter()
                .map(|v| format!("V{v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut parts = Vec::new();
        if !self.divergent.is_empty() {
            parts.push(format!(
                "{} applied with a different checksum than the file (edited after it ran?)",
                list(&self.divergent)
            ));
        }
        if !self.missing.is_empty() {
            parts.push(format!(
                "{} applied but not in the schema directory (a newer tenantry or another branch ran it?)",
                list(&self.missing)
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

impl Migrations {
    /// Reads `V<n>__<name>.sql` files. A missing directory is an error; an
    /// empty one means "no schema".
    pub fn load(dir: &Path) -> Result<Migrations, Error> {
        if !dir.is_dir() {
            return Err(Error::Migrations {
                path: dir.to_owned(),
                message: "not a directory (set [paths] schema in tenants.toml)".to_owned(),
            });
        }
        let list = refinery::load_sql_migrations(dir).map_err(|e| Error::Migrations {
            path: dir.to_owned(),
            message: e.to_string(),
        })?;
        for pair in list.windows(2) {
            if pair[0].version() == pair[1].version() {
                return Err(Error::Migrations {
                    path: dir.to_owned(),
                    message: format!("two migrations have version V{}", pair[0].version()),
                });
            }
        }
        Ok(Migrations {
            dir: dir.to_owned(),
            list,
        })
    }

    /// The newest version, if any.
    pub fn latest(&self) -> Option<i64> {
        self.list.iter().map(|m| i64::from(m.version())).max()
    }

    /// Every version in the directory, ascending.
    pub fn versions(&self) -> Vec<i64> {
        self.list.iter().map(|m| i64::from(m.version())).collect()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Compares a database's applied history with the files. The session
    /// may be any role that can read the history table.
    pub async fn history(&self, client: &Client) -> Result<History, tokio_postgres::Error> {
        let exists = has_history(client).await?;
        let applied: Vec<(i64, String, String)> = if exists {
            client
                .query(history::ROWS, &[])
                .await?
                .iter()
                .map(|r| {
                    (
                        i64::from(r.get::<_, i32>(0)),
                        r.get::<_, Option<String>>(1).unwrap_or_default(),
                        r.get::<_, Option<String>>(3).unwrap_or_default(),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(self.compare(&applied))
    }

    /// Pure part of [`Migrations::history`]: `(version, name, checksum)` rows.
    pub fn compare(&self, applied: &[(i64, String, String)]) -> History {
        let mut h = History {
            version: applied.iter().map(|a| a.0).max(),
            ..History::default()
        };
        for (version, name, checksum) in applied {
            match self
                .list
                .iter()
                .find(|m| i64::from(m.version()) == *version)
            {
                None => h.missing.push(*version),
                Some(m) if m.name() != name || m.checksum().to_string() != *checksum => {
                    h.divergent.push(*version)
                }
                Some(_) => {}
            }
        }
        h.pending = self
            .list
            .iter()
            .map(|m| i64::from(m.version()))
            .filter(|v| !applied.iter().any(|a| a.0 == *v))
            .collect();
        h.divergent.sort_unstable();
        h.missing.sort_unstable();
        h
    }

    /// Applies what is pending in `database`, as its owner role, under the
    /// database's migration lock (waiting at most `lock_wait` for another run).
    pub async fn run(
        &self,
        client: &mut Client,
        database: &str,
        owner: &str,
        lock_wait: Duration,
    ) -> Result<Ran, Error> {
        let fail = |message: String| Error::Migrate {
            database: database.to_owned(),
            message,
        };
        let sql_fail = |e: tokio_postgres::Error| fail(crate::error::describe(&e));
        client
            .batch_execute(&format!("SET ROLE {}", tenantry_layout::quote(owner)))
            .await
            .map_err(sql_fail)?;
        let waited = lock(client, lock_wait)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let before = self.history(client).await.map_err(sql_fail)?;
        if let Some(problem) = before.problem() {
            return Err(fail(problem));
        }
        // Refinery runs the transactional ones; each no-transaction
        // migration is a stop where we run it ourselves.
        for m in self
            .list
            .iter()
            .filter(|m| before.pending.contains(&i64::from(m.version())))
        {
            if is_no_transaction(m) {
                self.refinery(client, Target::Version(m.version() - 1), &fail)
                    .await?;
                run_outside_transaction(client, m).await.map_err(|e| {
                    fail(format!(
                        "V{}__{} (no transaction): {}",
                        m.version(),
                        m.name(),
                        crate::error::describe(&e)
                    ))
                })?;
            }
        }
        self.refinery(client, Target::Latest, &fail).await?;
        let after = self.history(client).await.map_err(sql_fail)?;
        client
            .batch_execute(&format!(
                "SELECT pg_advisory_unlock({LOCK_CLASS}, 0); RESET ROLE"
            ))
            .await
            .map_err(sql_fail)?;
        tracing::debug!(database, from = ?before.version, to = ?after.version, "migrated");
        Ok(Ran {
            from: before.version,
            to: after.version,
            waited,
        })
    }

    async fn refinery(
        &self,
        client: &mut Client,
        target: Target,
        fail: &impl Fn(String) -> Error,
    ) -> Result<(), Error> {
        Runner::new(&self.list)
            .set_target(target)
            .set_abort_divergent(true)
            .set_abort_missing(true)
            .run_async(client)
            .await
            .map(|_| ())
            .map_err(|e| fail(refinery_message(&e)))
    }
}

/// Refinery's error with its cause (the server's message).
fn refinery_message(e: &refinery::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        let text = match inner.downcast_ref::<tokio_postgres::Error>() {
            Some(pg) => crate::error::describe(pg),
            None => inner.to_string(),
        };
        if !s.contains(&text) {
            s.push_str(&format!(": {text}"));
        }
        source = inner.source();
    }
    s
}

/// Takes the database's migration lock; returns how long it waited, if it had to.
async fn lock(client: &Client, wait: Duration) -> Result<Option<Duration>, String> {
    let got: bool = client
        .query_one(
            &format!("SELECT pg_try_advisory_lock({LOCK_CLASS}, 0)"),
            &[],
        )
        .await
        .map_err(|e| crate::error::describe(&e))?
        .get(0);
    if got {
        return Ok(None);
    }
    let start = Instant::now();
    client
        .batch_execute(&format!(
            "SET lock_timeout = {}; SELECT pg_advisory_lock({LOCK_CLASS}, 0); RESET lock_timeout",
            wait.as_millis().max(1)
        ))
        .await
        .map_err(|e| {
            format!(
                "another migration of this database is running; gave up after {:.1?} ({})",
                start.elapsed(),
                crate::error::describe(&e)
            )
        })?;
    Ok(Some(start.elapsed()))
}

fn is_no_transaction(m: &Migration) -> bool {
    m.sql().is_some_and(|sql| {
        sql.lines()
            .next()
            .is_some_and(|l| l.trim() == NO_TRANSACTION)
    })
}

/// Runs each statement on its own (no implicit transaction block), then
/// records the migration the way refinery does.
async fn run_outside_transaction(
    client: &Client,
    m: &Migration,
) -> Result<(), tokio_postgres::Error> {
    for statement in split_statements(m.sql().unwrap_or_default()) {
        client.simple_query(&statement).await?;
    }
    let applied_on = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    client
        .execute(
            history::INSERT,
            &[
                &(m.version() as i32),
                &m.name(),
                &applied_on,
                &m.checksum().to_string(),
            ],
        )
        .await?;
    Ok(())
}

/// Whether the database has refinery's history table (migrations ran).
pub async fn has_history(client: &Client) -> Result<bool, tokio_postgres::Error> {
    Ok(client.query_one(history::EXISTS, &[]).await?.get(0))
}

/// Splits SQL into statements at `;` outside quotes, dollar quotes and comments.
pub fn split_statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = sql.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' | '"' => {
                current.push(c);
                for (_, d) in chars.by_ref() {
                    current.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '-' if sql[i..].starts_with("--") => {
                for (_, d) in chars.by_ref() {
                    if d == '\n' {
                        current.push('\n');
                        break;
                    }
                }
            }
            '/' if sql[i..].starts_with("/*") => {
                let end = sql[i + 2..].find("*/").map_or(sql.len(), |e| i + 2 + e + 2);
                while chars.peek().is_some_and(|(j, _)| *j < end) {
                    chars.next();
                }
            }
            '$' => {
                // A dollar-quote tag: $$ or $name$.
                let tag_len = sql[i + 1..]
                    .find(|ch: char| !(ch.is_alphanumeric() || ch == '_'))
                    .filter(|&n| sql[i + 1 + n..].starts_with('$'));
                match tag_len {
                    Some(n) => {
                        let tag = &sql[i..i + n + 2];
                        let body_start = i + tag.len();
                        let end = sql[body_start..]
                            .find(tag)
                            .map_or(sql.len(), |e| body_start + e + tag.len());
                        current.push_str(&sql[i..end]);
                        while chars.peek().is_some_and(|(j, _)| *j < end) {
                            chars.next();
                        }
                    }
                    None => current.push(c),
                }
            }
            ';' => {
                if !current.trim().is_empty() {
                    out.push(current.trim().to_owned());
                }
                current.clear();
            }
            _ => current.push(c),
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_outside_quotes_and_bodies() {
        let sql = "-- tenantry:no-transaction\nCREATE INDEX CONCURRENTLY a ON t (x);\n\
                   INSERT INTO t VALUES ('a;b', \"c;d\"); /* ; */\n\
                   CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$;\n\
                   DO $body$ BEGIN PERFORM 1; END $body$";
        assert_eq!(
            split_statements(sql),
            [
                "CREATE INDEX CONCURRENTLY a ON t (x)",
                "INSERT INTO t VALUES ('a;b', \"c;d\")",
                "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$",
                "DO $body$ BEGIN PERFORM 1; END $body$",
            ]
        );
    }

    fn migrations(files: &[(&str, &str)]) -> Migrations {
        Migrations {
            dir: PathBuf::new(),
            list: files
                .iter()
                .map(|(n, s)| Migration::unapplied(n, s).unwrap())
                .collect(),
        }
    }

    #[test]
    fn history_finds_pending_divergent_and_missing() {
        let m = migrations(&[
            ("V1__init", "create table a ();"),
            ("V2__b", "create table b ();"),
            ("V3__c", "x"),
        ]);
        let v1 = Migration::unapplied("V1__init", "create table a ();").unwrap();
        let applied = vec![
            (1, "init".to_owned(), v1.checksum().to_string()),
            (2, "b".to_owned(), "12345".to_owned()),
            (7, "later".to_owned(), "1".to_owned()),
        ];
        let h = m.compare(&applied);
        assert_eq!(h.version, Some(7));
        assert_eq!(h.pending, [3]);
        assert_eq!(h.divergent, [2]);
        assert_eq!(h.missing, [7]);
        let problem = h.problem().unwrap();
        assert!(
            problem.contains("V2 applied with a different checksum"),
            "{problem}"
        );
        assert!(
            problem.contains("V7 applied but not in the schema directory"),
            "{problem}"
        );
        assert_eq!(m.compare(&applied[..1]).problem(), None);
    }

    #[test]
    fn the_marker_must_be_the_first_line() {
        let yes = Migration::unapplied(
            "V2__idx",
            "-- tenantry:no-transaction\nCREATE INDEX CONCURRENTLY i ON t (x);",
        )
        .unwrap();
        let no = Migration::unapplied("V2__idx", "CREATE TABLE t ();\n-- tenantry:no-transaction")
            .unwrap();
        assert!(is_no_transaction(&yes));
        assert!(!is_no_transaction(&no));
    }
}
