//! Test harness shared by the end-to-end tests: one throwaway cluster per test
//! binary ([`tenantry_localpg::Cluster::shared`]), a fresh fleet per test (its
//! own names, directory and tenants.toml, so tests run in parallel on one
//! cluster), the real `tenantry` binary, and connections as tenant users.
#![allow(dead_code)]

pub mod deploy;
pub mod gateway;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use tenantry_localpg::Cluster;

static NEXT: AtomicUsize = AtomicUsize::new(1);

/// How tenantry connects: as the superuser, or as a plain role with only
/// CREATEDB and CREATEROLE (as on managed clouds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admin {
    Superuser,
    CreateRole,
}

pub struct Fleet {
    pub cluster: &'static Cluster,
    /// Unique prefix of every name in this fleet (e.g. `f3`).
    pub p: String,
    pub dir: tempfile::TempDir,
    pub admin_url: String,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        &self.stdout
    }

    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// A throwaway cluster of the test's own with server settings on top of the
/// usual ones (e.g. a small `max_connections`). Never dropped: its watchdog
/// stops it and removes its directory when the test process exits.
pub fn own_cluster(settings: &[(&str, &str)]) -> &'static Cluster {
    let cluster = Cluster::start_temp_with(settings).expect("start a cluster of the test's own");
    Box::leak(Box::new(cluster))
}

impl Fleet {
    /// A fleet on the cluster shared by this test binary.
    pub fn new(admin: Admin) -> Fleet {
        Fleet::on(Cluster::shared(), admin)
    }

    /// A fleet on `cluster` (see [`own_cluster`]).
    pub fn on(cluster: &'static Cluster, admin: Admin) -> Fleet {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let p = format!("f{n}");
        let admin_url = match admin {
            Admin::Superuser => cluster.url("postgres"),
            Admin::CreateRole => cluster
                .create_admin_role(&format!("{p}_tenantry"), "admin-pw")
                .expect("create the CREATEROLE admin"),
        };
        let dir = tempfile::tempdir().expect("tempdir");
        Fleet {
            cluster,
            p,
            dir,
            admin_url,
        }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("tenants.toml")
    }

    /// Writes tenants.toml: a header (fleet, schema, plans) and `tenants`.
    /// `{p}` in `tenants` is replaced by the fleet's prefix. The schema is
    /// the tests' fixture ([`fixture_schema`]), never the repository's
    /// `schema/`, which users edit.
    pub fn write(&self, tenants: &str) {
        self.write_servers("", tenants);
    }

    /// [`write`](Self::write) with `servers` (e.g. `[servers.a]` tables)
    /// in the header; run such a file with [`tenantry_fleet`](Self::tenantry_fleet).
    pub fn write_servers(&self, servers: &str, tenants: &str) {
        // A test that made its own schema directory (see `own_schema`) uses it.
        let own = self.dir.path().join("schema");
        let schema = if own.is_dir() { own } else { fixture_schema() };
        let text = format!(
            r#"fleet = "{p}"

[paths]
schema = "{schema}"
{servers}
[routing]
base_domains = ["usualstore.com", "localhost"]
reserved_subdomains = ["www", "api", "admin"]

[plans.starter]
connection_limit = 5
statement_timeout = "5s"
pool_size = 2
requests_per_second = 20

[plans.professional]
connection_limit = 20
statement_timeout = "30s"
pool_size = 8
requests_per_second = 200

{tenants}
"#,
            p = self.p,
            schema = schema.display(),
            servers = servers.replace("{p}", &self.p),
            tenants = tenants.replace("{p}", &self.p)
        );
        std::fs::write(self.config(), text).expect("write tenants.toml");
    }

    /// Gives this fleet a schema directory of its own, starting with the
    /// fixture's migrations; returns it (call before `write`).
    pub fn own_schema(&self) -> PathBuf {
        let dir = self.dir.path().join("schema");
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(fixture_schema()).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
        dir
    }

    /// Adds a migration file to this fleet's own schema directory.
    pub fn add_migration(&self, file: &str, sql: &str) {
        std::fs::write(self.dir.path().join("schema").join(file), sql).unwrap();
    }

    /// Runs the real binary against this fleet's file and server.
    pub fn tenantry(&self, args: &[&str]) -> Run {
        self.tenantry_env(args, &[])
    }

    /// Runs the real binary on a file naming its servers (no
    /// `TENANTRY_ADMIN_URL`: it is refused for a file with several).
    pub fn tenantry_fleet(&self, args: &[&str]) -> Run {
        let mut cmd = self.command(args);
        cmd.env_remove("TENANTRY_ADMIN_URL");
        Run::from(cmd.output().expect("run tenantry"))
    }

    pub fn tenantry_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = self.command(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Run::from(cmd.output().expect("run tenantry"))
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenantry"));
        cmd.args(args)
            .arg("--config")
            .arg(self.config())
            .env("TENANTRY_ADMIN_URL", &self.admin_url)
            .env_remove("TENANTRY_LOG")
            .stdin(std::process::Stdio::null());
        cmd
    }

    pub fn apply(&self) -> Run {
        self.tenantry(&["apply", "--auto-approve"])
    }

    /// A generated password, as saved by apply.
    pub fn secret(&self, user: &str) -> String {
        let path = self
            .dir
            .path()
            .join(".tenantry/secrets")
            .join(self.name(user));
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
            .trim_end()
            .to_owned()
    }

    /// A name of this fleet: `{p}` replaced by the prefix.
    pub fn name(&self, name: &str) -> String {
        name.replace("{p}", &self.p)
    }

    /// Connects as a tenant user with its generated password.
    pub async fn connect_as(&self, user: &str, db: &str) -> Result<tokio_postgres::Client, String> {
        let (user, db) = (self.name(user), self.name(db));
        let url = self
            .cluster
            .user_url(&user, &self.secret(&user.replace(&self.p, "{p}")), &db);
        connect(&url).await
    }

    /// Connects as the superuser to a database of this fleet.
    pub async fn superuser(&self, db: &str) -> tokio_postgres::Client {
        connect(&self.cluster.url(&self.name(db)))
            .await
            .expect("superuser connects")
    }

    /// Runs SQL as the superuser (for setting up drift by hand).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.cluster
            .psql(&self.name(db), &self.name(sql))
            .unwrap_or_else(|e| panic!("psql: {e}"))
    }
}

/// The tests' schema directory: `tests/fixtures/schema`, a copy of the
/// store schema as shipped. Tests never read the repository's `schema/`: a
/// user adding `schema/V2__*.sql`, as README invites, must not break them.
pub fn fixture_schema() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schema")
}

/// The SQL of the fixture's first migration (for tests that build a
/// database by hand, as another tool would).
pub fn fixture_v1() -> String {
    let path = fixture_schema().join(FIXTURE_V1);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The file name of the fixture's first migration.
pub const FIXTURE_V1: &str = "V1__store.sql";

pub async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| {
            e.as_db_error()
                .map(|d| d.message().to_owned())
                .unwrap_or_else(|| e.to_string())
        })?;
    tokio::spawn(conn);
    Ok(client)
}

/// The SQLSTATE/message of a failed statement, or "ok".
pub async fn try_sql(client: &tokio_postgres::Client, sql: &str) -> String {
    match client.batch_execute(sql).await {
        Ok(()) => "ok".to_owned(),
        Err(e) => e
            .as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_else(|| e.to_string()),
    }
}

/// Two tenants with one user per tier (generated passwords).
pub const TWO_TENANTS: &str = r#"
[tenants.{p}_shop]
plan = "professional"
subdomain = "{p}-shop"
admins     = [{ username = "{p}_shop_a" }]
developers = [{ username = "{p}_shop_d" }]
customers  = [{ username = "{p}_shop_c" }]

[tenants.{p}_cafe]
plan = "starter"
subdomain = "{p}-cafe"
deletion_protection = false
admins     = [{ username = "{p}_cafe_a" }]
customers  = [{ username = "{p}_cafe_c" }]
"#;

/// The major of the `pg_dump` tenantry runs (the newest installed client):
/// older than a server of a fetched major, which backups then refuse.
pub fn pg_dump_major() -> u32 {
    let out = Command::new(tenantry_localpg::client_tool("pg_dump"))
        .arg("--version")
        .output()
        .expect("run pg_dump --version");
    // "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
    String::from_utf8_lossy(&out.stdout)
        .split(") ")
        .nth(1)
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.trim().parse().ok())
        .expect("pg_dump --version names its major")
}

/// Waits until `cond` holds, polling every 20 ms, for at most `limit`
/// (generous: the bound only turns a hang into a failure).
pub fn wait_until(limit: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    cond()
}

/// The `+ tenant X will be created on server Y` lines of a plan: X -> Y.
pub fn placed(plan: &str) -> std::collections::BTreeMap<String, String> {
    plan.lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("+ tenant ")?;
            let (tenant, server) = rest.split_once(" will be created on server ")?;
            Some((tenant.to_owned(), server.to_owned()))
        })
        .collect()
}

/// `[servers.<name>]` tables, one per (name, admin URL, extra lines).
pub fn servers_toml(servers: &[(&str, &str, &str)]) -> String {
    servers
        .iter()
        .map(|(name, url, extra)| format!("\n[servers.{name}]\nadmin_url = \"{url}\"\n{extra}"))
        .collect()
}

/// A throwaway cluster that can publish (`wal_level = logical`), for moves.
pub fn logical_cluster() -> &'static Cluster {
    own_cluster(&LOGICAL)
}

/// The settings of a cluster that can publish.
pub const LOGICAL: [(&str, &str); 3] = [
    ("wal_level", "logical"),
    ("max_wal_senders", "20"),
    ("max_replication_slots", "20"),
];

/// The trimmed output of one query, run as the superuser.
pub fn one(cluster: &Cluster, db: &str, sql: &str) -> String {
    cluster
        .psql(db, sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .trim()
        .to_owned()
}

/// Runs a `SELECT count(*) ...` with one text parameter.
pub async fn count(client: &tokio_postgres::Client, sql: &str, arg: &str) -> i64 {
    client
        .query_one(sql, &[&arg])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

impl Fleet {
    /// A LIKE pattern matching every database and role name of this fleet.
    pub fn like(&self) -> String {
        format!("{}\\_%", self.p)
    }

    /// The next plan has nothing to do (`--detailed-exitcode` exits 0).
    #[track_caller]
    pub fn assert_converged(&self) {
        let plan = self.tenantry(&["plan", "--detailed-exitcode"]);
        assert_eq!(plan.code, 0, "expected no changes\n{}", plan.all());
    }
}
