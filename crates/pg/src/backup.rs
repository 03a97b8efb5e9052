//! Backups and restores of one tenant database with the PostgreSQL client
//! tools, connected as the admin and acting as the tenant's owner role (so a
//! CREATEROLE-only admin can do it too).
//!
//! - [`dump`] / [`dump_to`]: `pg_dump --format=custom`, written under a
//!   temporary name (created 0600 before pg_dump writes a byte) and renamed
//!   only once complete. Apply calls [`dump`] before a drop; a failed backup
//!   stops the drop.
//! - [`inspect`]: what an archive is (`pg_restore --list`): format, the
//!   database it was dumped from, the tables whose data it holds.
//! - [`tables_with_rows`]: the tables of schema `public` that hold any row,
//!   to refuse overwriting data by accident.
//! - [`restore`]: `pg_restore --single-transaction --clean --if-exists
//!   --no-owner --no-acl --role=<db>_owner`, then tenantry's privileges
//!   and token store re-applied (the store itself is never restored), so the
//!   result is what `tenantry plan` expects.
//!
//! - [`check_tool`]: whether a client program can work with the server
//!   (`pg_dump` refuses a server of a newer major), asked before anything
//!   starts.
//!
//! The connection (host, port, user, `PGSSLMODE`) comes from the admin URL
//! ([`command`]); the password goes through `PGPASSWORD`, never the command line.
//! Files are worked on off the async threads (`tokio::fs`, the blocking pool).

use std::path::{Path, PathBuf};

use tenantry_layout::{history, literal, quote};
use tenantry_plan::model::DesiredTenant;
use tenantry_plan::statements;

use crate::connect::Admin;
use crate::error::Error;

/// The schema of the gateway's token store: never restored (see
/// `tenantry_layout::tokens`); the live store stays, and one is set up
/// where none exists.
use tenantry_layout::tokens::SCHEMA as TOKEN_SCHEMA;

/// `program` (pg_dump, pg_restore, ...) set up to connect where and as whom
/// the admin does: `--host`, `--port`, `--username`, `PGSSLMODE` as the
/// admin URL asks, and the password in `PGPASSWORD` (never in argv).
/// `--no-password`: never prompt.
pub fn command(admin: &Admin, program: &Path) -> tokio::process::Command {
    let tools = admin.address().tool_args();
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&tools.args);
    // TLS as the admin connection asks (libpq reads PGSSLMODE).
    cmd.env("PGSSLMODE", tools.sslmode);
    // The password goes through the environment, never the command line.
    if let Some(pw) = &tools.password {
        cmd.env("PGPASSWORD", secrecy::ExposeSecret::expose_secret(pw));
    }
    cmd.kill_on_drop(true);
    cmd
}

/// Fails, before anything starts, when `program` (pg_dump, pg_restore) is
/// of an older major than the server `client` is connected to: pg_dump
/// refuses such a server, and a restore of its archives would lose what the
/// newer server has. The error names both versions and what to install.
pub async fn check_tool(client: &tokio_postgres::Client, program: &Path) -> Result<(), Error> {
    let ctx = format!("checking {}", program.display());
    let out = tokio::process::Command::new(program)
        .arg("--version")
        .output()
        .await
        .map_err(|e| Error::other(&ctx, format!("cannot run it: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let tool = tool_major(&text).ok_or_else(|| {
        Error::other(
            &ctx,
            format!("unexpected --version output {:?}", text.trim()),
        )
    })?;
    let server: String = client
        .query_one("SELECT current_setting('server_version_num')", &[])
        .await
        .map_err(|e| Error::sql(&ctx, e))?
        .get(0);
    let server = server_major(&server)
        .ok_or_else(|| Error::other(&ctx, format!("unexpected server_version_num {server:?}")))?;
    match too_old(tool, server) {
        None => Ok(()),
        Some(why) => Err(Error::other(&ctx, why)),
    }
}

/// The major of `pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)`.
fn tool_major(version: &str) -> Option<u32> {
    let number = version.split(") ").nth(1)?.split_whitespace().next()?;
    number.split('.').next()?.parse().ok()
}

/// The major of a `server_version_num` (`170010` -> 17, `90624` -> 9).
fn server_major(num: &str) -> Option<u32> {
    num.trim().parse::<u32>().ok().map(|n| n / 10_000)
}

/// Why a client of major `tool` cannot work with a server of major
/// `server`, if it cannot.
fn too_old(tool: u32, server: u32) -> Option<String> {
    (tool < server).then(|| {
        format!(
            "it is PostgreSQL {tool}'s and the server runs PostgreSQL {server}, which it cannot dump or restore into safely: install the client of {server} or newer (e.g. apt-get install postgresql-client-{server}: tenantry uses the newest one installed). Nothing was changed"
        )
    })
}

/// Dumps `database` with `pg_dump` (acting as `role`, so a non-superuser admin
/// can read every table) into `dir` as `<database>-<timestamp>.dump` and
/// returns the backup's path.
pub async fn dump(
    admin: &Admin,
    pg_dump: &Path,
    database: &str,
    role: &str,
    dir: &Path,
) -> Result<PathBuf, Error> {
    let path = dir.join(default_name(database));
    dump_to(admin, pg_dump, database, role, &path).await?;
    Ok(path)
}

/// `<database>-<UTC timestamp>.dump`, the name [`dump`] gives a backup.
pub fn default_name(database: &str) -> String {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(':', "");
    format!("{database}-{stamp}.dump")
}

/// Dumps `database` (acting as `role`) into `path`, mode 0600: written as
/// `<path>.partial` (created 0600 before pg_dump writes to it), synced, then
/// renamed over `path`. Creates missing directories. Returns the size in bytes.
pub async fn dump_to(
    admin: &Admin,
    pg_dump: &Path,
    database: &str,
    role: &str,
    path: &Path,
) -> Result<u64, Error> {
    let fail = |message: String| Error::Backup {
        database: database.to_owned(),
        message,
    };
    let (dir, name) = match (path.parent(), path.file_name()) {
        (Some(d), Some(n)) => (d, n.to_string_lossy()),
        _ => return Err(fail(format!("{} is not a file path", path.display()))),
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }
    .to_owned();
    let partial = dir.join(format!("{name}.partial"));
    let (d, p) = (dir.clone(), partial.clone());
    crate::blocking::run(move || {
        std::fs::create_dir_all(&d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        // Private from the first byte: pg_dump truncates the file and keeps its mode.
        create_private(&p).map_err(|e| format!("cannot create {}: {e}", p.display()))
    })
    .await
    .map_err(fail)?;

    let mut cmd = command(admin, pg_dump);
    cmd.arg("--format=custom")
        .arg(format!("--role={role}"))
        .arg(format!("--file={}", partial.display()))
        .arg(format!("--dbname={database}"));
    if let Err(why) = run(&mut cmd, pg_dump).await {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(fail(why));
    }
    let (p, path) = (partial.clone(), path.to_owned());
    let finish = move || -> std::io::Result<u64> {
        let file = std::fs::File::open(&p)?;
        let len = file.metadata()?.len();
        if len == 0 {
            return Err(std::io::Error::other("pg_dump wrote an empty file"));
        }
        file.sync_all()?;
        std::fs::rename(&p, &path)?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(len)
    };
    match crate::blocking::run(finish).await {
        Ok(len) => Ok(len),
        Err(e) => {
            let _ = tokio::fs::remove_file(&partial).await;
            Err(fail(e.to_string()))
        }
    }
}

/// Runs a PostgreSQL client tool; its stdout on success, else why not (the
/// tool's own stderr included).
async fn run(cmd: &mut tokio::process::Command, tool: &Path) -> Result<Vec<u8>, String> {
    let out = cmd
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", tool.display()))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!(
            "{} exited with {}: {}",
            tool.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Creates (or truncates) `path` with mode 0600.
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its mode on open: set it.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
}

/// What `pg_restore --list` says about an archive.
#[derive(Debug, Clone)]
pub struct Archive {
    /// The database it was dumped from.
    pub dbname: String,
    /// `CUSTOM`, `TAR`, `DIRECTORY`.
    pub format: String,
    /// When it was made, as pg_dump wrote it.
    pub created: String,
    /// Tables whose rows it holds, `schema.table`, in archive order.
    pub data: Vec<String>,
}

fn restore_error(database: &str, file: &Path, message: impl Into<String>) -> Error {
    Error::other(
        format!("cannot restore {database} from {}", file.display()),
        message,
    )
}

/// Reads the table of contents of `file` with `pg_restore --list`: an error
/// unless it is a pg_dump custom-format archive. Touches no database.
pub async fn inspect(pg_restore: &Path, database: &str, file: &Path) -> Result<Archive, Error> {
    let toc = list(pg_restore, database, file, &[]).await?;
    let header = |key: &str| {
        toc.lines()
            .filter_map(|l| l.strip_prefix(';'))
            .find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_owned()))
    };
    let format = header("Format:").unwrap_or_default();
    if format != "CUSTOM" {
        return Err(restore_error(
            database,
            file,
            format!(
                "not a custom-format dump (format {}): make backups with `tenantry backup` or `pg_dump --format=custom`",
                if format.is_empty() { "unknown" } else { &format }
            ),
        ));
    }
    let dbname = header("dbname:").ok_or_else(|| {
        restore_error(
            database,
            file,
            "the archive names no database in its header",
        )
    })?;
    let data = entries(&toc)
        .filter_map(|rest| {
            let mut words = rest.split_whitespace();
            match (words.next(), words.next(), words.next(), words.next()) {
                (Some("TABLE"), Some("DATA"), Some(schema), Some(table)) => {
                    Some(format!("{schema}.{table}"))
                }
                _ => None,
            }
        })
        .collect();
    Ok(Archive {
        dbname,
        format,
        created: header("Archive created at").unwrap_or_default(),
        data,
    })
}

/// `pg_restore --list [extra] file`, stdout; a clear error for a file that
/// is not an archive.
async fn list(
    pg_restore: &Path,
    database: &str,
    file: &Path,
    extra: &[&str],
) -> Result<String, Error> {
    match tokio::fs::metadata(file).await {
        Ok(m) if m.is_dir() => {
            return Err(restore_error(
                database,
                file,
                "a directory, not a custom-format dump file (make backups with `tenantry backup`)",
            ))
        }
        Ok(m) if m.is_file() => {}
        _ => return Err(restore_error(database, file, "no such file")),
    }
    let mut cmd = tokio::process::Command::new(pg_restore);
    cmd.arg("--list").args(extra).arg(file);
    let toc = run(&mut cmd, pg_restore)
        .await
        .map_err(|why| restore_error(database, file, format!("not a pg_dump archive ({why})")))?;
    Ok(String::from_utf8_lossy(&toc).into_owned())
}

/// The entries of a `--list` output, each without its `<id>; <tableoid> <oid> `
/// prefix: `TABLE DATA public widgets shop_owner`.
fn entries(toc: &str) -> impl Iterator<Item = &str> {
    toc.lines().filter(|l| !l.starts_with(';')).filter_map(|l| {
        let (_, rest) = l.split_once("; ")?;
        let mut parts = rest.splitn(3, ' ');
        let (_tableoid, _oid) = (parts.next()?, parts.next()?);
        parts.next()
    })
}

/// The `--use-list` of a restore: every entry but the token schema's (its
/// objects are left out by `-N`; the schema itself and its ACL and comment
/// by name, which `-N` keeps).
fn without_token_schema(toc: &str) -> String {
    let mut out = String::new();
    for line in toc.lines() {
        let drop = !line.starts_with(';')
            && line.split_once("; ").is_some_and(|(_, rest)| {
                let words: Vec<&str> = rest.split_whitespace().skip(2).collect();
                (words.len() >= 3 && words[..3] == ["SCHEMA", "-", TOKEN_SCHEMA])
                    || words.windows(3).any(|w| w == ["-", "SCHEMA", TOKEN_SCHEMA])
            });
        if !drop {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The tables of schema `public` (but the migration history) that hold at
/// least one row, sorted. Reads as the owner role (`owner`), one
/// `EXISTS (SELECT 1 FROM t)` per table: cheap whatever the table's size.
pub async fn tables_with_rows(
    admin: &Admin,
    database: &str,
    owner: &str,
) -> Result<Vec<String>, Error> {
    let client = admin.connect(Some(database)).await?;
    let ctx = format!("looking for rows in {database}");
    client
        .batch_execute(&format!("SET ROLE {}", quote(owner)))
        .await
        .map_err(|e| Error::sql(&ctx, e))?;
    let tables: Vec<String> = client
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
               AND c.relname <> $1
             ORDER BY 1",
            &[&history::TABLE],
        )
        .await
        .map_err(|e| Error::sql(&ctx, e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if tables.is_empty() {
        return Ok(Vec::new());
    }
    let sql = tables
        .iter()
        .map(|t| {
            format!(
                "SELECT {} WHERE EXISTS (SELECT 1 FROM public.{})",
                literal(t),
                quote(t)
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let mut full: Vec<String> = client
        .query(&format!("SELECT t::text FROM ({sql}) AS x(t)"), &[])
        .await
        .map_err(|e| Error::sql(&ctx, e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    full.sort();
    Ok(full)
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct Restored {
    /// Tables whose rows came from the archive, `schema.table`.
    pub tables: Vec<String>,
    /// The schema version the database is at now (from the restored history).
    pub schema_version: Option<i64>,
    /// Audit entries and usage days of the archive the database lacked,
    /// added back.
    pub trail: usize,
}

/// The archive's audit entries and usage days the database lacks, added to
/// its own (`tenantry_layout::audit::MERGE_RESTORED`): the restore leaves
/// schema `tenantry` as it is, so a restore never takes an entry away, and
/// this brings back those of a tenant destroyed (the backup holds its
/// trail), made anew, then restored. `client` acts as the owner.
async fn merge_trail(
    client: &mut tokio_postgres::Client,
    pg_restore: &Path,
    archive: &Archive,
    database: &str,
    file: &Path,
) -> Result<usize, Error> {
    use futures_util::SinkExt;
    use tenantry_layout::{audit, usage};
    let ctx = format!("adding the archive's audit trail to {database}");
    let mut added = 0;
    for (table, merge) in [
        (audit::TABLE, audit::MERGE_RESTORED),
        (usage::TABLE, usage::MERGE_RESTORED),
    ] {
        if !archive.data.contains(&format!("{TOKEN_SCHEMA}.{table}")) {
            continue;
        }
        let mut cmd = tokio::process::Command::new(pg_restore);
        cmd.args(["--data-only", "--file=-"])
            .arg(format!("--schema={TOKEN_SCHEMA}"))
            .arg(format!("--table={table}"))
            .arg(file);
        let script = run(&mut cmd, pg_restore)
            .await
            .map_err(|why| restore_error(database, file, why))?;
        let Some((columns, rows)) = copy_block(&String::from_utf8_lossy(&script), table) else {
            continue;
        };
        let tx = client
            .transaction()
            .await
            .map_err(|e| Error::sql(&ctx, e))?;
        tx.batch_execute(&format!(
            "CREATE TEMPORARY TABLE restored (LIKE {TOKEN_SCHEMA}.{table}) ON COMMIT DROP"
        ))
        .await
        .map_err(|e| Error::sql(&ctx, e))?;
        let sink = tx
            .copy_in(&format!("COPY restored ({columns}) FROM STDIN"))
            .await
            .map_err(|e| Error::sql(&ctx, e))?;
        futures_util::pin_mut!(sink);
        sink.send(bytes::Bytes::from(rows))
            .await
            .map_err(|e| Error::sql(&ctx, e))?;
        sink.as_mut()
            .finish()
            .await
            .map_err(|e| Error::sql(&ctx, e))?;
        added += tx
            .execute(merge, &[])
            .await
            .map_err(|e| Error::sql(&ctx, e))? as usize;
        tx.commit().await.map_err(|e| Error::sql(&ctx, e))?;
    }
    Ok(added)
}

/// The column list and the rows (COPY text, each line ending in a newline)
/// of the `COPY tenantry.<table> (...) FROM stdin;` block of a pg_restore
/// script; None without one. The column list is checked to be plain
/// identifiers (it goes into SQL).
fn copy_block(script: &str, table: &str) -> Option<(String, String)> {
    let head = format!("COPY {TOKEN_SCHEMA}.{table} (");
    let mut lines = script.lines();
    let columns = lines.find_map(|l| l.strip_prefix(&head)?.strip_suffix(") FROM stdin;"))?;
    let plain = columns
        .split(", ")
        .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
    if !plain {
        return None;
    }
    let mut rows = String::new();
    for line in lines.by_ref() {
        if line == "\\." {
            return Some((columns.to_owned(), rows));
        }
        rows.push_str(line);
        rows.push('\n');
    }
    None
}

/// Restores `file` into the tenant's database: `pg_restore` as the owner
/// role (`--role`), in one transaction (`--single-transaction`: all or
/// nothing), dropping the archive's objects first (`--clean --if-exists`).
///
/// Ownership and grants are not taken from the archive (`--no-owner
/// --no-acl`): every object is created by, hence owned by, `<db>_owner`, the
/// tenant's default privileges give the groups their tiers as it is
/// created, and tenantry's privilege statements are re-applied right after
/// (the history table, the schema), so `tenantry plan` finds nothing to do.
/// That also makes a dump of another database safe to load: it never grants
/// anything to that database's roles. The token store ([`TOKEN_SCHEMA`]) is
/// left as it is. Objects the archive does not have are left alone.
pub async fn restore(
    admin: &Admin,
    pg_restore: &Path,
    tenant: &DesiredTenant,
    archive: &Archive,
    file: &Path,
) -> Result<Restored, Error> {
    let database = tenant.name.as_str();
    let owner = tenant.role(tenantry_manifest::Group::Owner);
    let toc = list(
        pg_restore,
        database,
        file,
        &[&format!("--exclude-schema={TOKEN_SCHEMA}")],
    )
    .await?;
    let list_path = std::env::temp_dir().join(format!(
        "tenantry-restore-{}-{}.list",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    tokio::fs::write(&list_path, without_token_schema(&toc))
        .await
        .map_err(|e| {
            restore_error(
                database,
                file,
                format!("cannot write {}: {e}", list_path.display()),
            )
        })?;
    let mut cmd = command(admin, pg_restore);
    cmd.arg("--single-transaction")
        .arg("--clean")
        .arg("--if-exists")
        .arg("--no-owner")
        .arg("--no-acl")
        .arg(format!("--role={owner}"))
        .arg(format!("--use-list={}", list_path.display()))
        .arg(format!("--dbname={database}"))
        .arg(file);
    let ran = run(&mut cmd, pg_restore).await;
    let _ = tokio::fs::remove_file(&list_path).await;
    ran.map_err(|why| {
        restore_error(
            database,
            file,
            format!("{why}; the transaction was rolled back, the database is as it was"),
        )
    })?;

    // Tenantry's grants on what was just created (idempotent; as apply does).
    let mut client = admin.connect(Some(database)).await?;
    let ctx = format!("re-applying the privileges of {database} after the restore");
    client
        .batch_execute(&statements::set_owner_role(tenant))
        .await
        .map_err(|e| Error::sql(&ctx, e))?;
    let history = crate::migrate::has_history(&client)
        .await
        .map_err(|e| Error::sql(&ctx, e))?;
    let mut sql = statements::privileges(tenant, &[], history);
    sql.extend(statements::token_store(tenant, &[]));
    let tx = client
        .transaction()
        .await
        .map_err(|e| Error::sql(&ctx, e))?;
    tx.batch_execute(&sql.join(";\n"))
        .await
        .map_err(|e| Error::sql(&ctx, e))?;
    tx.commit().await.map_err(|e| Error::sql(&ctx, e))?;
    // Still acting as the owner (the temporary table is its).
    let trail = merge_trail(&mut client, pg_restore, archive, database, file).await?;
    let schema_version = match history {
        true => client
            .query_one(history::MAX_VERSION, &[])
            .await
            .map_err(|e| Error::sql(&ctx, e))?
            .get(0),
        false => None,
    };
    Ok(Restored {
        trail,
        tables: archive
            .data
            .iter()
            .filter(|t| {
                !t.starts_with(&format!("{TOKEN_SCHEMA}.")) && t.as_str() != history::QUALIFIED
            })
            .cloned()
            .collect(),
        schema_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trail_is_read_from_a_restore_script() {
        let script = "SET x = 1;\nCOPY tenantry.audit (id, at, action, actor, os_user, host, detail) FROM stdin;\n1\t2026-12-01 00:00:00+00\tcreated\tpostgres\troot\tvm\t{\"a\": \"b\\\\tc\"}\n2\t2026-12-01 00:00:01+00\tbackup\tpostgres\troot\tvm\t{}\n\\.\n\nSET y = 2;\n";
        let (columns, rows) = copy_block(script, "audit").unwrap();
        assert_eq!(columns, "id, at, action, actor, os_user, host, detail");
        assert_eq!(rows.lines().count(), 2);
        assert!(
            rows.ends_with("{}\n") && rows.contains("b\\\\tc"),
            "{rows:?}"
        );
        assert_eq!(copy_block(script, "usage"), None);
        // A column list that is not plain identifiers is not used.
        let odd = script.replace("(id, at", "(\"id\"; DROP, at");
        assert_eq!(copy_block(&odd, "audit"), None);
        // Cut short: no block.
        assert_eq!(copy_block(&script[..90], "audit"), None);
    }

    #[test]
    fn a_client_older_than_the_server_is_refused_by_name() {
        assert_eq!(
            tool_major("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"),
            Some(15)
        );
        assert_eq!(tool_major("pg_restore (PostgreSQL) 17.10\n"), Some(17));
        assert_eq!(tool_major("nonsense"), None);
        assert_eq!(server_major("170010"), Some(17));
        assert_eq!(server_major("140023"), Some(14));
        assert_eq!(server_major("90624"), Some(9));
        // PostgreSQL 15's pg_dump and a 17 server: refused, naming both.
        let why = too_old(15, 17).unwrap();
        assert!(
            why.contains("PostgreSQL 15") && why.contains("PostgreSQL 17"),
            "{why}"
        );
        assert!(why.contains("postgresql-client-17"), "{why}");
        // Same or newer: fine.
        assert_eq!(too_old(15, 15), None);
        assert_eq!(too_old(17, 14), None);
    }

    const TOC: &str = ";
; Archive created at 2026-11-23 17:50:35 UTC
;     dbname: shop
;     Format: CUSTOM
;
5; 2615 2200 SCHEMA - public shop_owner
3425; 0 0 ACL - SCHEMA public shop_owner
6; 2615 16464 SCHEMA - tenantry shop_owner
3426; 0 0 ACL - SCHEMA tenantry shop_owner
3427; 0 0 COMMENT - SCHEMA tenantry shop_owner
217; 1259 16398 TABLE public customers shop_owner
3410; 0 16398 TABLE DATA public customers shop_owner
3408; 0 16389 TABLE DATA public refinery_schema_history shop_owner
2058; 826 16459 DEFAULT ACL public DEFAULT PRIVILEGES FOR TABLES shop_owner
";

    #[test]
    fn the_token_schema_is_left_out_of_the_use_list() {
        let kept = without_token_schema(TOC);
        assert!(!kept.contains("tenantry"), "{kept}");
        for keep in [
            "SCHEMA - public",
            "ACL - SCHEMA public",
            "TABLE public customers",
            "TABLE DATA public customers",
            "DEFAULT ACL public",
            "dbname: shop",
        ] {
            assert!(kept.contains(keep), "{keep} missing from\n{kept}");
        }
    }

    #[test]
    fn entries_skip_the_numbers() {
        let e: Vec<&str> = entries(TOC).collect();
        assert_eq!(e[0], "SCHEMA - public shop_owner");
        assert!(e.contains(&"TABLE DATA public customers shop_owner"));
    }
}
