//! Schema migrations: refinery migrations read at run time from the schema
//! directory, run inside a tenant database as its `<db>_owner` role, each in
//! its own transaction, so a failure leaves the database at its last good version.

use std::path::{Path, PathBuf};

use refinery::{Migration, Runner};
use tokio_postgres::Client;

use crate::error::Error;

/// The migrations of a schema directory, in version order.
pub struct Migrations {
    pub dir: PathBuf,
    list: Vec<Migration>,
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
        Ok(Migrations {
            dir: dir.to_owned(),
            list,
        })
    }

    /// The newest version, if any.
    pub fn latest(&self) -> Option<i64> {
        self.list.iter().map(|m| i64::from(m.version())).max()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Applies what is pending. The session must already act as the owner
    /// role (`SET ROLE`). Returns the version reached.
    pub async fn run(&self, client: &mut Client, database: &str) -> Result<Option<i64>, Error> {
        let report = Runner::new(&self.list)
            .set_abort_divergent(true)
            .set_abort_missing(true)
            .run_async(client)
            .await
            .map_err(|e| Error::Migrate {
                database: database.to_owned(),
                message: e.to_string(),
            })?;
        tracing::debug!(
            database,
            applied = report.applied_migrations().len(),
            "migrated"
        );
        Ok(self.latest())
    }
}
