//! Backups before a database is dropped: `pg_dump --format=custom` into the
//! backups directory, written under a temporary name and renamed only once
//! complete, mode 0600. A failed backup stops the drop.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio_postgres::config::Host;

use crate::connect::Admin;
use crate::error::Error;

/// Dumps `database` with `pg_dump` (acting as `role`, so a non-superuser admin
/// can read every table) and returns the backup's path.
pub async fn dump(
    admin: &Admin,
    pg_dump: &Path,
    database: &str,
    role: &str,
    dir: &Path,
) -> Result<PathBuf, Error> {
    let fail = |message: String| Error::Backup {
        database: database.to_owned(),
        message,
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(':', "");
    let path = dir.join(format!("{database}-{stamp}.dump"));
    let partial = path.with_extension("dump.partial");

    let config = admin.config();
    let mut cmd = tokio::process::Command::new(pg_dump);
    cmd.arg("--format=custom")
        .arg("--no-password")
        .arg(format!("--role={role}"))
        .arg(format!("--file={}", partial.display()))
        .arg(format!("--dbname={database}"));
    match config.get_hosts().first() {
        Some(Host::Tcp(h)) => {
            cmd.arg(format!("--host={h}"));
        }
        Some(Host::Unix(p)) => {
            cmd.arg(format!("--host={}", p.display()));
        }
        None => {}
    }
    if let Some(port) = config.get_ports().first() {
        cmd.arg(format!("--port={port}"));
    }
    if let Some(user) = config.get_user() {
        cmd.arg(format!("--username={user}"));
    }
    // TLS as the admin connection asks (libpq reads PGSSLMODE).
    let sslmode = match config.get_ssl_mode() {
        tokio_postgres::config::SslMode::Disable => "disable",
        tokio_postgres::config::SslMode::Require => "require",
        _ => "prefer",
    };
    cmd.env("PGSSLMODE", sslmode);
    // The password goes through the environment, never the command line.
    if let Some(pw) = config.get_password() {
        cmd.env("PGPASSWORD", String::from_utf8_lossy(pw).into_owned());
    }
    let out = cmd
        .output()
        .await
        .map_err(|e| fail(format!("cannot run {}: {e}", pg_dump.display())))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&partial);
        return Err(fail(format!(
            "{} exited with {}: {}",
            pg_dump.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let meta = std::fs::metadata(&partial).map_err(|e| fail(format!("no dump written: {e}")))?;
    if meta.len() == 0 {
        return Err(fail("pg_dump wrote an empty file".to_owned()));
    }
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| fail(format!("cannot restrict {}: {e}", partial.display())))?;
    let file = std::fs::File::open(&partial).map_err(|e| fail(e.to_string()))?;
    file.sync_all().map_err(|e| fail(e.to_string()))?;
    std::fs::rename(&partial, &path).map_err(|e| fail(e.to_string()))?;
    Ok(path)
}
