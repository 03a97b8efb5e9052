//! Throwaway clusters: `start_temp` cleans up after itself, `shared` is one
//! per process, and the authentication rules match a managed cloud
//! (superuser trusted locally, everyone else SCRAM).

use std::net::TcpStream;
use std::process::Command;

use tenantry_localpg::Cluster;

/// Run `select current_user` through psql over TCP as a password user.
fn psql_as(cluster: &Cluster, user: &str, password: &str, sql: &str) -> Result<String, String> {
    let out = Command::new(cluster.tool("psql"))
        .args([
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
        ])
        .arg(cluster.port().to_string())
        .args(["-U", user, "-d", "postgres", "-c", sql])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .env_remove("PGPASSFILE")
        .output()
        .expect("run psql");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn start_temp_runs_sql_then_drop_removes_everything() {
    let cluster = Cluster::start_temp().expect("start a throwaway cluster");
    assert_eq!(cluster.psql("postgres", "select 1").unwrap().trim(), "1");
    assert_eq!(
        cluster.url("app"),
        format!("postgres://postgres@127.0.0.1:{}/app", cluster.port())
    );
    let settings = cluster
        .psql(
            "postgres",
            "select current_setting('fsync') || ' ' || current_setting('max_connections') \
             || ' ' || current_setting('listen_addresses')",
        )
        .unwrap();
    assert_eq!(settings.trim(), "off 300 127.0.0.1");
    let port = cluster.port();
    let data = cluster.data_dir().to_path_buf();
    let base = data.parent().unwrap().to_path_buf();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());

    drop(cluster);

    assert!(!data.exists(), "{} still exists", data.display());
    assert!(!base.exists(), "{} still exists", base.display());
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still open"
    );
}

#[test]
fn start_temp_with_applies_extra_settings_and_refuses_bad_names() {
    let cluster =
        Cluster::start_temp_with(&[("max_connections", "12"), ("application_name", "it's me")])
            .expect("start a throwaway cluster with settings");
    let shown = cluster
        .psql(
            "postgres",
            "select current_setting('max_connections') || ' ' || current_setting('fsync')",
        )
        .unwrap();
    assert_eq!(shown.trim(), "12 off", "extra settings win, the rest stays");
    let err = Cluster::start_temp_with(&[("fsync = on\nmax_connections", "1")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a PostgreSQL setting name"), "{err}");
}

#[test]
fn shared_is_one_cluster_per_process() {
    let a = Cluster::shared();
    let b = Cluster::shared();
    assert!(std::ptr::eq(a, b));
    assert_eq!(a.port(), b.port());
    assert_eq!(a.psql("postgres", "select 40 + 2").unwrap().trim(), "42");
}

#[test]
fn admin_role_is_not_superuser_but_can_create_databases() {
    let cluster = Cluster::shared();
    let url = cluster
        .create_admin_role("tenantry_admin", "pa ss@wo:rd'\"")
        .unwrap();
    assert_eq!(
        url,
        format!(
            "postgres://tenantry_admin:pa%20ss%40wo%3Ard%27%22@127.0.0.1:{}/postgres",
            cluster.port()
        )
    );
    // Idempotent.
    cluster
        .create_admin_role("tenantry_admin", "pa ss@wo:rd'\"")
        .unwrap();

    let attrs = cluster
        .psql(
            "postgres",
            "select rolsuper, rolcreatedb, rolcreaterole from pg_roles where rolname = 'tenantry_admin'",
        )
        .unwrap();
    assert_eq!(attrs.trim(), "f|t|t");

    let who = psql_as(
        cluster,
        "tenantry_admin",
        "pa ss@wo:rd'\"",
        "select current_user",
    )
    .unwrap();
    assert_eq!(who, "tenantry_admin");
    psql_as(
        cluster,
        "tenantry_admin",
        "pa ss@wo:rd'\"",
        "create database admin_made_this",
    )
    .unwrap();
    let found = cluster
        .psql(
            "postgres",
            "select count(*) from pg_database where datname = 'admin_made_this'",
        )
        .unwrap();
    assert_eq!(found.trim(), "1");
}

#[test]
fn wrong_password_is_rejected_for_non_superusers() {
    let cluster = Cluster::shared();
    cluster.create_admin_role("scram_probe", "right").unwrap();
    let verifier = cluster
        .psql(
            "postgres",
            "select left(rolpassword, 14) from pg_authid where rolname = 'scram_probe'",
        )
        .unwrap();
    assert_eq!(verifier.trim(), "SCRAM-SHA-256$");
    let err = psql_as(cluster, "scram_probe", "wrong", "select 1").unwrap_err();
    assert!(err.contains("password authentication failed"), "{err}");
    // No password at all is rejected too (the superuser's trust is not theirs).
    let err = psql_as(cluster, "scram_probe", "", "select 1").unwrap_err();
    assert!(!err.is_empty());
}

#[test]
fn psql_errors_carry_the_server_message() {
    let err = Cluster::shared()
        .psql("postgres", "select * from no_such_table")
        .unwrap_err()
        .to_string();
    assert!(err.contains("no_such_table"), "{err}");
}

/// A server-only bin directory (what `scripts/fetch-postgres` brings: no
/// psql, pg_dump or pg_restore) starts a cluster, and the harness's SQL
/// goes through the installed client instead.
#[test]
fn a_server_only_bin_dir_runs_with_the_installed_client() {
    let full = tenantry_localpg::find_bin_dir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Readable by the user the server runs as (when the tests run as root).
    std::fs::set_permissions(
        dir.path(),
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )
    .unwrap();
    for program in ["initdb", "pg_ctl", "postgres"] {
        std::os::unix::fs::symlink(full.join(program), dir.path().join(program)).unwrap();
    }
    let cluster =
        Cluster::start_temp_from(dir.path(), &[]).expect("start from a server-only directory");
    assert_eq!(cluster.bin_dir(), dir.path());
    let psql = cluster.tool("psql");
    assert!(
        !psql.starts_with(dir.path()) && psql.is_file(),
        "{}",
        psql.display()
    );
    assert_eq!(
        cluster.psql("postgres", "select 40 + 2").unwrap().trim(),
        "42"
    );
}
