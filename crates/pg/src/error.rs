//! Errors of the Postgres side, with the server's own message, detail and
//! hint for people, and its SQLSTATE for callers that branch on it
//! ([`Error::code`], as tokio-postgres' own `Error::code`), with the
//! constraint it names ([`Error::constraint`]) and what tenantry was doing
//! ([`Error::context`]).

use std::path::PathBuf;

pub use tokio_postgres::error::SqlState;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no admin connection configured: set [server].admin_url in tenants.toml, or TENANTRY_ADMIN_URL (or run `tenantry up` for a local server)")]
    NoAdminUrl,
    #[error("admin_url is not a valid connection string: {0}")]
    BadUrl(String),
    #[error("cannot connect to {target}: {message}")]
    Connect {
        target: String,
        message: String,
        /// The server's SQLSTATE when it answered (a refused login is class
        /// 28); None when it could not be reached at all.
        code: Option<SqlState>,
    },
    #[error("{context}: {message}")]
    Sql {
        context: String,
        message: String,
        /// The server's SQLSTATE; None for an error of the client or of
        /// tenantry itself.
        code: Option<SqlState>,
        /// The constraint the statement violated, when the server names one.
        constraint: Option<String>,
    },
    #[error("another tenantry apply holds the lock of fleet '{fleet}'{holder}; waited {waited:?} (raise --lock-timeout to wait longer)")]
    Locked {
        fleet: String,
        holder: String,
        waited: std::time::Duration,
    },
    #[error("cannot read migrations in {path}: {message}")]
    Migrations { path: PathBuf, message: String },
    #[error("migration of {database} failed: {message}")]
    Migrate { database: String, message: String },
    #[error("backup of {database} failed: {message}")]
    Backup { database: String, message: String },
    #[error(transparent)]
    Manifest(#[from] tenantry_manifest::ManifestError),
    /// An error on one server of a fleet of several.
    #[error("server {server}: {source}")]
    OnServer {
        server: String,
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    pub(crate) fn sql(context: impl Into<String>, e: tokio_postgres::Error) -> Error {
        Error::Sql {
            context: context.into(),
            message: describe(&e),
            code: e.code().cloned(),
            constraint: e
                .as_db_error()
                .and_then(|db| db.constraint())
                .map(str::to_owned),
        }
    }

    /// An error of tenantry's own in a context (no SQLSTATE).
    pub(crate) fn other(context: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Sql {
            context: context.into(),
            message: message.into(),
            code: None,
            constraint: None,
        }
    }

    /// The constraint a statement violated, if the server named one.
    pub fn constraint(&self) -> Option<&str> {
        match self {
            Error::Sql { constraint, .. } => constraint.as_deref(),
            _ => None,
        }
    }

    /// What tenantry was doing (`tenant shop: privileges`), for an error of
    /// a statement or of tenantry itself.
    pub fn context(&self) -> Option<&str> {
        match self {
            Error::Sql { context, .. } => Some(context),
            _ => None,
        }
    }

    /// The server's SQLSTATE, if the server answered with an error.
    pub fn code(&self) -> Option<&SqlState> {
        match self {
            Error::Connect { code, .. } | Error::Sql { code, .. } => code.as_ref(),
            Error::OnServer { source, .. } => source.code(),
            _ => None,
        }
    }
}

/// The server's message with its detail and hint, or the client error.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = db.message().to_owned();
            if let Some(d) = db.detail() {
                s.push_str(&format!(" (detail: {d})"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!(" (hint: {h})"));
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(inner) = source {
                s.push_str(&format!(": {inner}"));
                source = inner.source();
            }
            s
        }
    }
}
