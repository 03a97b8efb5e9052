//! The one error type of this crate. Every message says what failed, shows
//! what the failing program printed, and ends with what to do about it.

use std::io;
use std::path::PathBuf;

/// What to tell someone whose machine lacks the PostgreSQL server binaries.
pub(crate) const INSTALL_HINT: &str = "install postgresql: apt-get install -y postgresql \
     (or set TENANTRY_PG_BIN to the directory holding initdb and pg_ctl)";

/// Why a local cluster could not be found, created, started, stopped or used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No directory with `initdb` and `pg_ctl` was found.
    #[error("PostgreSQL server binaries not found (looked in: {searched}); {INSTALL_HINT}")]
    NotInstalled {
        /// The places that were looked at, comma separated.
        searched: String,
    },

    /// A program could not be started at all.
    #[error("could not run `{command}`: {source}; {hint}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why the OS refused.
        #[source]
        source: io::Error,
        /// What to do about it.
        hint: String,
    },

    /// A program ran and exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}\n{hint}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr (and stdout, if stderr was empty), trimmed.
        stderr: String,
        /// What to do about it.
        hint: String,
    },

    /// `pg_ctl start` did not bring the server up.
    #[error(
        "PostgreSQL in {data_dir} did not start: {detail}\n\
         --- last lines of {log} ---\n{log_tail}\n---\n\
         fix the cause shown in the log and start again"
    )]
    Start {
        /// The cluster's data directory.
        data_dir: PathBuf,
        /// The server log file.
        log: PathBuf,
        /// What pg_ctl said.
        detail: String,
        /// The end of the server log.
        log_tail: String,
    },

    /// A file system operation failed.
    #[error("could not {action} {path}: {source}")]
    Io {
        /// What was being done ("create directory", "write", ...).
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },

    /// Running as root, but PostgreSQL cannot be run as root and there is no
    /// `postgres` OS user to run it as.
    #[error(
        "running as root, and PostgreSQL refuses to run as root, but the OS user `postgres` \
         could not be found ({detail}); {INSTALL_HINT} (it creates that user), \
         or run as an ordinary user"
    )]
    NoPostgresUser {
        /// What looking it up said.
        detail: String,
    },

    /// Running as root, but neither `runuser` nor `setpriv` is available to
    /// switch to the `postgres` user.
    #[error(
        "running as root needs `runuser` or `setpriv` to run PostgreSQL as the `postgres` user, \
         and neither was found; install util-linux: apt-get install -y util-linux"
    )]
    NoUserSwitch,

    /// A server setting asked for by name is not a setting name.
    #[error(
        "`{name}` is not a PostgreSQL setting name (letters, digits, `_` and `.` only), \
         e.g. `max_connections`"
    )]
    BadSetting {
        /// The name given.
        name: String,
    },
}

impl Error {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
