//! Local PostgreSQL clusters started with the machine's own `initdb` and
//! `pg_ctl` (Debian's `postgresql` package, the highest version under
//! `/usr/lib/postgresql/<ver>/bin`; `TENANTRY_PG_BIN` (a directory) or
//! `TENANTRY_PG_VERSION` (a major, e.g. `17`, Debian's or fetched by
//! `scripts/fetch-postgres`) overrides; [`Cluster::start_temp_major`] picks
//! one for a single cluster).
//!
//! Two uses:
//! - **throwaway** clusters for tests and benches: [`Cluster::start_temp`]
//!   (one per call, removed on drop) and [`Cluster::shared`] (one per
//!   process, removed by a watchdog when the process exits). Durability is
//!   switched off for speed.
//! - the **persistent** embedded cluster of `tenantry up`:
//!   [`Cluster::start_persistent`] / [`Cluster::stop_persistent`], with its
//!   data in a directory such as `.tenantry/pg` that outlives the process.
//!
//! Every cluster listens on `127.0.0.1` at a free port and on a Unix socket
//! inside its own directory. The `postgres` superuser is trusted (no
//! password) on the socket and on loopback; every other user must
//! authenticate with SCRAM-SHA-256, as on a managed cloud.
//!
//! PostgreSQL refuses to run as root, so when this process is root the
//! server programs run as the `postgres` OS user (via `runuser`, else
//! `setpriv`), the cluster's directory is given to that user, and any
//! ancestor directory it could not traverse gets the search bit for others
//! (`chmod o+x`, never read).
//!
//! What does not live here: anything about tenants, plans or catalogs; this
//! crate only starts, stops and hands out connection strings.
//!
//! ```no_run
//! let cluster = tenantry_localpg::Cluster::shared();
//! cluster.psql("postgres", "create database t1").unwrap();
//! let admin_url = cluster.create_admin_role("admin", "s3cret").unwrap();
//! assert!(admin_url.starts_with("postgres://admin:s3cret@127.0.0.1:"));
//! ```
#![forbid(unsafe_code)]

mod bin;
mod conf;
mod error;
mod os;

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

pub use bin::{bin_dir_of_major, client_tool, find_bin_dir, find_client_dir};

/// Removes the libpq environment variables (`PGHOST`, `PGPASSWORD`, ...) that
/// could redirect a client program away from the cluster it was pointed at.
pub fn without_libpq_env(cmd: &mut Command) -> &mut Command {
    for var in [
        "PGHOST",
        "PGHOSTADDR",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "PGPASSWORD",
        "PGPASSFILE",
        "PGSERVICE",
        "PGSERVICEFILE",
        "PGOPTIONS",
    ] {
        cmd.env_remove(var);
    }
    cmd
}
pub use error::Error;

use conf::Profile;
use error::INSTALL_HINT;
use os::RunAs;

/// Unix socket paths are limited to ~107 bytes; `/.s.PGSQL.65535` takes 16.
const MAX_SOCKET_DIR_LEN: usize = 90;
/// How many ports to try when the free one we picked is taken before the
/// server binds it.
const START_ATTEMPTS: usize = 5;

/// A running local PostgreSQL cluster.
///
/// A throwaway cluster ([`Cluster::start_temp`]) is stopped and its directory
/// removed when this handle drops; a persistent one is left running.
#[derive(Debug)]
pub struct Cluster {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_file: PathBuf,
    port: u16,
    run_as: RunAs,
    kind: Kind,
    /// Settings asked for on top of the profile's ([`Cluster::start_temp_with`]).
    extra: Vec<conf::Setting>,
}

#[derive(Debug)]
enum Kind {
    /// Removed on drop (or, if this process dies first, by the watchdog).
    Temp {
        dir: Option<tempfile::TempDir>,
        watchdog: Option<Child>,
    },
    /// Left running on drop.
    Persistent,
}

impl Cluster {
    /// A fresh throwaway cluster in a temp dir; stopped and removed on Drop.
    ///
    /// If the process dies without dropping it (killed, `panic = "abort"`),
    /// a watchdog process stops the server and removes the directory.
    pub fn start_temp() -> Result<Cluster, Error> {
        Cluster::start_temp_with(&[])
    }

    /// Like [`start_temp`](Self::start_temp), with server settings on top of
    /// the throwaway ones (they win), e.g. `[("max_connections", "12")]`
    /// for a test about a small connection budget.
    pub fn start_temp_with(settings: &[(&str, &str)]) -> Result<Cluster, Error> {
        Cluster::start_temp_from(&find_bin_dir()?, settings)
    }

    /// Like [`start_temp_with`](Self::start_temp_with), on PostgreSQL
    /// `major` (see [`bin_dir_of_major`]), e.g. for a fleet whose servers
    /// run different majors.
    pub fn start_temp_major(major: u32, settings: &[(&str, &str)]) -> Result<Cluster, Error> {
        Cluster::start_temp_from(&bin_dir_of_major(major)?, settings)
    }

    /// Like [`start_temp_with`](Self::start_temp_with), with the server
    /// programs of `bin_dir` (a major of one's choosing, e.g. from
    /// `scripts/fetch-postgres`; its client programs may be missing, see
    /// [`Cluster::tool`]).
    pub fn start_temp_from(bin_dir: &Path, settings: &[(&str, &str)]) -> Result<Cluster, Error> {
        let extra = settings
            .iter()
            .map(|&(name, value)| {
                conf::Setting::new(name, value).ok_or_else(|| Error::BadSetting {
                    name: name.to_owned(),
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let bin_dir = bin_dir.to_path_buf();
        let run_as = RunAs::detect()?;
        let parent = temp_parent();
        run_as.ensure_reachable(&parent.join("x"))?;
        let dir = tempfile::Builder::new()
            .prefix("tenantry-pg-")
            .tempdir_in(&parent)
            .map_err(|e| Error::io("create a temporary directory in", &parent, e))?;
        let base = dir.path().to_path_buf();
        run_as.give(&base)?;
        let socket_dir = base.join("s");
        make_dir(&socket_dir, &run_as)?;
        let mut cluster = Cluster {
            data_dir: base.join("data"),
            log_file: base.join("postgres.log"),
            socket_dir,
            port: 0,
            kind: Kind::Temp {
                dir: Some(dir),
                watchdog: None,
            },
            bin_dir,
            run_as,
            extra,
        };
        // From here on, dropping `cluster` cleans up whatever exists.
        let watchdog = cluster.spawn_watchdog(&base)?;
        if let Kind::Temp { watchdog: w, .. } = &mut cluster.kind {
            *w = Some(watchdog);
        }
        cluster.initdb(Profile::Throwaway)?;
        cluster.start_server(Profile::Throwaway, None)?;
        Ok(cluster)
    }

    /// One throwaway cluster shared by everything in this process (tests
    /// reuse it: a database per test is cheap, a cluster per test is not).
    ///
    /// Created on first call. Statics are never dropped, so a watchdog
    /// process stops the server and removes its directory once this process
    /// has exited.
    ///
    /// # Panics
    /// With the [`Error`]'s message if the cluster cannot start (it is for
    /// tests). A later call tries again.
    pub fn shared() -> &'static Cluster {
        static SHARED: OnceLock<Cluster> = OnceLock::new();
        SHARED.get_or_init(|| match Cluster::start_temp() {
            Ok(c) => c,
            Err(e) => panic!("could not start the shared test cluster: {e}"),
        })
    }

    /// The persistent embedded cluster for `tenantry up`: initdb into `dir`
    /// if it holds no cluster yet, start it if not running (on the port
    /// recorded in `dir/port` if still free, else a new free port), and
    /// leave it running when dropped.
    ///
    /// Layout: `dir/data` (the data directory), `dir/s` (the socket, unless
    /// that path is too long, then a short directory under `/tmp`),
    /// `dir/postgres.log`, `dir/port`.
    pub fn start_persistent(dir: &Path) -> Result<Cluster, Error> {
        fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| Error::io("resolve", dir, e))?;
        let run_as = RunAs::detect()?;
        run_as.ensure_reachable(&dir)?;
        run_as.give(&dir)?;
        let data_dir = dir.join("data");
        let initialized = data_dir.join("PG_VERSION").is_file();
        let socket_dir = persistent_socket_dir(&dir);
        make_dir(&socket_dir, &run_as)?;
        let mut cluster = Cluster {
            bin_dir: persistent_bin_dir(&data_dir)?,
            log_file: dir.join("postgres.log"),
            data_dir,
            socket_dir,
            port: 0,
            run_as,
            kind: Kind::Persistent,
            extra: Vec::new(),
        };
        if !initialized {
            cluster.initdb(Profile::Persistent)?;
        }
        if cluster.is_running()? {
            if let Some((port, socket_dir)) = read_postmaster_pid(&cluster.data_dir) {
                cluster.port = port;
                cluster.socket_dir = socket_dir;
                return Ok(cluster);
            }
        }
        let port_file = dir.join("port");
        let recorded = fs::read_to_string(&port_file)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        cluster.start_server(Profile::Persistent, recorded)?;
        fs::write(&port_file, format!("{}\n", cluster.port))
            .map_err(|e| Error::io("write", &port_file, e))?;
        Ok(cluster)
    }

    /// Stop a persistent cluster in `dir` if running (for `tenantry down`).
    /// `Ok(false)` if there was none running.
    pub fn stop_persistent(dir: &Path) -> Result<bool, Error> {
        if !dir.join("data").join("PG_VERSION").is_file() {
            return Ok(false);
        }
        let dir = dir
            .canonicalize()
            .map_err(|e| Error::io("resolve", dir, e))?;
        let data_dir = dir.join("data");
        let cluster = Cluster {
            bin_dir: persistent_bin_dir(&data_dir)?,
            log_file: dir.join("postgres.log"),
            socket_dir: PathBuf::new(),
            data_dir,
            port: 0,
            run_as: RunAs::detect()?,
            kind: Kind::Persistent,
            extra: Vec::new(),
        };
        if !cluster.is_running()? {
            return Ok(false);
        }
        let mut cmd = cluster.pg_ctl();
        cmd.args(["stop", "-w", "-t", "120", "-m", "fast"]);
        let hint = format!("see {} for why it did not stop", cluster.log_file.display());
        os::run(cmd, None, &hint)?;
        let socket_dir = persistent_socket_dir(&dir);
        if !socket_dir.starts_with(&dir) {
            // The short fallback under /tmp: leave nothing behind (fails,
            // harmlessly, if something else put files there).
            let _ = fs::remove_dir(&socket_dir);
        }
        Ok(true)
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the server's Unix socket (`.s.PGSQL.<port>`).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The cluster's data directory (PGDATA).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server's major version, from the data directory's `PG_VERSION`
    /// (`14`, `17`, ...; 0 if unreadable).
    pub fn major(&self) -> u32 {
        fs::read_to_string(self.data_dir.join("PG_VERSION"))
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Where `initdb`, `pg_ctl` and `postgres` of the server's version are
    /// (and its client programs, unless it is a server-only directory: see
    /// [`Cluster::tool`]).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// A client program (`psql`, `pg_dump`, `pg_restore`): the server's
    /// own when its bin directory has it, else the installed client's
    /// ([`client_tool`]).
    pub fn tool(&self, name: &str) -> PathBuf {
        let own = self.bin_dir.join(name);
        if own.is_file() {
            own
        } else {
            client_tool(name)
        }
    }

    /// The server log file.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// Superuser URL over TCP: `postgres://postgres@127.0.0.1:<port>/<db>`.
    pub fn url(&self, db: &str) -> String {
        tenantry_pgconn::address::url("127.0.0.1", self.port, "postgres", None, db)
    }

    /// URL for a password user over TCP:
    /// `postgres://<user>:<password percent-encoded>@127.0.0.1:<port>/<db>`.
    pub fn user_url(&self, user: &str, password: &str, db: &str) -> String {
        let password = secrecy::SecretString::from(password.to_owned());
        tenantry_pgconn::address::url("127.0.0.1", self.port, user, Some(&password), db)
    }

    /// Run SQL as the superuser through the cluster's own `psql`
    /// (`-X -v ON_ERROR_STOP=1 -q`, unaligned and tuples-only, so
    /// `select 1` returns `"1\n"`), over the Unix socket. Statements run one
    /// by one, as from a script file. Returns stdout. For harness setup only.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, Error> {
        let mut cmd = Command::new(self.tool("psql"));
        cmd.args(["-X", "-v", "ON_ERROR_STOP=1", "-q", "-A", "-t", "-h"])
            .arg(&self.socket_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "postgres", "-d", db, "-f", "-"])
            .current_dir("/");
        without_libpq_env(&mut cmd);
        os::run(cmd, Some(sql), "the SQL above was rejected")
    }

    /// Create (if missing) a NON-superuser login role with only CREATEDB and
    /// CREATEROLE and the given password, as on managed clouds; an existing
    /// role is brought to exactly that. Returns its URL to database
    /// `postgres`.
    pub fn create_admin_role(&self, name: &str, password: &str) -> Result<String, Error> {
        let lit = tenantry_layout::literal(name);
        let sql = format!(
            "SELECT format('CREATE ROLE %I', {lit}::text) \
               WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {lit}) \\gexec\n\
             ALTER ROLE {ident} WITH LOGIN NOSUPERUSER CREATEDB CREATEROLE \
               NOREPLICATION NOBYPASSRLS INHERIT PASSWORD {pw};\n",
            ident = tenantry_layout::quote(name),
            pw = tenantry_layout::literal(password),
        );
        self.psql("postgres", &sql)?;
        if self.major() < 15 {
            self.template_public_to_database_owner()?;
        }
        Ok(self.user_url(name, password, "postgres"))
    }

    /// PostgreSQL 14 and older: gives template1's schema `public` to
    /// `pg_database_owner` and takes CREATE on it from PUBLIC, as 15 does,
    /// so that a non-superuser admin's tenant owners own their `public`
    /// (the one-time step README asks of an operator with such an admin;
    /// without it, tenantry's plan refuses). Idempotent; safe to run from
    /// several tests at once.
    pub fn template_public_to_database_owner(&self) -> Result<(), Error> {
        self.psql(
            "template1",
            "BEGIN;\n\
             SELECT pg_advisory_xact_lock(7400415);\n\
             ALTER SCHEMA public OWNER TO pg_database_owner;\n\
             REVOKE CREATE ON SCHEMA public FROM PUBLIC;\n\
             COMMIT;\n",
        )?;
        Ok(())
    }

    /// Stops the server (fast shutdown: every session is ended), keeping
    /// its data, to test what happens while a server is down;
    /// [`resume`](Self::resume) starts it again on the same port.
    pub fn pause(&self) -> Result<(), Error> {
        let mut cmd = self.pg_ctl();
        cmd.args(["stop", "-w", "-t", "120", "-m", "fast"]);
        os::run(cmd, None, "").map(drop)
    }

    /// Starts a server [`pause`](Self::pause)d earlier, on its port (an
    /// error if something took the port meanwhile).
    pub fn resume(&self) -> Result<(), Error> {
        let mut cmd = self.pg_ctl();
        cmd.args(["start", "-w", "-t", "120", "-l"])
            .arg(&self.log_file);
        os::run(cmd, None, "").map(drop)
    }

    /// A `pg_ctl` command for this cluster's data directory.
    fn pg_ctl(&self) -> Command {
        let mut cmd = self.run_as.command(self.bin_dir.join("pg_ctl"));
        cmd.arg("-D").arg(&self.data_dir);
        cmd
    }

    fn initdb(&self, profile: Profile) -> Result<(), Error> {
        let mut cmd = self.run_as.command(self.bin_dir.join("initdb"));
        cmd.arg("-D").arg(&self.data_dir).args([
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        if profile == Profile::Throwaway {
            cmd.arg("--no-sync");
        }
        let parent = self.data_dir.parent().unwrap_or(Path::new("/"));
        let hint = format!(
            "check that {} is empty or absent and that {} may write to {}",
            self.data_dir.display(),
            self.user_name(),
            parent.display()
        );
        os::run(cmd, None, &hint)?;
        let hba = self.data_dir.join("pg_hba.conf");
        fs::write(&hba, conf::PG_HBA).map_err(|e| Error::io("write", &hba, e))?;
        let main = self.data_dir.join("postgresql.conf");
        let mut text = fs::read_to_string(&main).map_err(|e| Error::io("read", &main, e))?;
        text.push_str(conf::INCLUDE_LINE);
        fs::write(&main, text).map_err(|e| Error::io("write", &main, e))
    }

    /// Start the server, on `preferred` if that port is free, else on a free
    /// one; retry with another port if it gets taken meanwhile.
    fn start_server(&mut self, profile: Profile, preferred: Option<u16>) -> Result<(), Error> {
        let mut preferred = preferred.filter(|&p| port_is_free(p));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = match preferred.take() {
                Some(p) => p,
                None => free_port()?,
            };
            let settings = self.data_dir.join(conf::SETTINGS_FILE);
            let text = conf::settings(profile, port, &self.socket_dir, &self.extra);
            fs::write(&settings, text).map_err(|e| Error::io("write", &settings, e))?;
            self.run_as.give(&settings)?;
            let log_start = fs::metadata(&self.log_file).map(|m| m.len()).unwrap_or(0);
            let mut cmd = self.pg_ctl();
            cmd.args(["start", "-w", "-t", "120", "-l"])
                .arg(&self.log_file);
            let err = match os::run(cmd, None, "") {
                Ok(_) => {
                    self.port = port;
                    return Ok(());
                }
                Err(e) => e,
            };
            let new_log = read_log_from(&self.log_file, log_start);
            let port_taken = [
                "could not bind",
                "Address already in use",
                "could not create any TCP/IP sockets",
            ]
            .iter()
            .any(|m| new_log.contains(m));
            if port_taken && attempt < START_ATTEMPTS {
                continue;
            }
            let detail = match err {
                Error::Command {
                    command, stderr, ..
                } => format!("`{command}`: {stderr}"),
                other => other.to_string(),
            };
            return Err(Error::Start {
                data_dir: self.data_dir.clone(),
                log: self.log_file.clone(),
                detail,
                log_tail: tail(&new_log, 30),
            });
        }
    }

    /// `pg_ctl status`: exit code 0 is running, 3 is not.
    fn is_running(&self) -> Result<bool, Error> {
        let mut cmd = self.pg_ctl();
        cmd.arg("status");
        let command = os::describe(&cmd);
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::Spawn {
                command: command.clone(),
                source: e,
                hint: INSTALL_HINT.to_owned(),
            })?;
        match out.status.code() {
            Some(0) => Ok(true),
            Some(3) => Ok(false),
            _ => Err(Error::Command {
                command,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                hint: format!(
                    "check that {} may read {}",
                    self.user_name(),
                    self.data_dir.display()
                ),
            }),
        }
    }

    /// A detached process that waits for this process to exit, then stops
    /// the server (`-m immediate`) and removes `base`.
    fn spawn_watchdog(&self, base: &Path) -> Result<Child, Error> {
        const SCRIPT: &str = r#"p=$1; d=$2; shift 2
while kill -0 "$p" 2>/dev/null; do sleep 1; done
"$@" >/dev/null 2>&1 || {
  f="$d/data/postmaster.pid"
  [ -f "$f" ] && kill -9 "$(head -n 1 "$f")" 2>/dev/null
}
rm -rf "$d""#;
        let mut cmd = Command::new("sh");
        cmd.args(["-c", SCRIPT, "tenantry-pg-watchdog"])
            .arg(std::process::id().to_string())
            .arg(base)
            .args(self.run_as.prefix())
            .arg(self.bin_dir.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data_dir)
            .args(["stop", "-w", "-t", "30", "-m", "immediate"])
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group, so a Ctrl-C that kills us does not kill it.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let command = os::describe(&cmd);
        cmd.spawn().map_err(|e| Error::Spawn {
            command,
            source: e,
            hint: "a POSIX `sh` is needed".to_owned(),
        })
    }

    fn user_name(&self) -> String {
        match &self.run_as {
            RunAs::Me => "this user".to_owned(),
            RunAs::User(u) => format!("the `{}` OS user", u.name),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let Kind::Temp { dir, watchdog } = &mut self.kind else {
            return;
        };
        if let Some(mut w) = watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        if self.data_dir.join("postmaster.pid").is_file() {
            let mut cmd = self.run_as.command(self.bin_dir.join("pg_ctl"));
            cmd.arg("-D")
                .arg(&self.data_dir)
                .args(["stop", "-w", "-t", "30", "-m", "fast"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let stopped = cmd.status().map(|s| s.success()).unwrap_or(false);
            if !stopped {
                if let Some(pid) = fs::read_to_string(self.data_dir.join("postmaster.pid"))
                    .ok()
                    .and_then(|s| s.lines().next().map(str::to_owned))
                {
                    let _ = Command::new("kill")
                        .args(["-9", pid.trim()])
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
        if let Some(dir) = dir.take() {
            let _ = dir.close();
        }
    }
}

/// Where throwaway clusters go: the system temp dir, unless its path is so
/// long that the socket path would not fit.
fn temp_parent() -> PathBuf {
    let t = std::env::temp_dir();
    if t.as_os_str().len() > MAX_SOCKET_DIR_LEN - 30 {
        PathBuf::from("/tmp")
    } else {
        t
    }
}

fn make_dir(dir: &Path, run_as: &RunAs) -> Result<(), Error> {
    fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    run_as.give(dir)
}

/// `dir/s`, unless that is too long for a Unix socket path; then a short
/// directory under `/tmp` named after `dir`.
fn persistent_socket_dir(dir: &Path) -> PathBuf {
    let socket_dir = dir.join("s");
    if socket_dir.as_os_str().len() > MAX_SOCKET_DIR_LEN {
        PathBuf::from(format!("/tmp/tenantry-pg-{:016x}", fnv1a(dir)))
    } else {
        socket_dir
    }
}

/// The binaries matching an existing data directory's version, if
/// installed; else the usual choice.
fn persistent_bin_dir(data_dir: &Path) -> Result<PathBuf, Error> {
    if let Ok(v) = fs::read_to_string(data_dir.join("PG_VERSION")) {
        if let Some(dir) = bin::bin_dir_for_version(v.trim()) {
            return Ok(dir);
        }
    }
    find_bin_dir()
}

/// Port (line 4) and first socket directory (line 5) of a running server.
fn read_postmaster_pid(data_dir: &Path) -> Option<(u16, PathBuf)> {
    let text = fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let mut lines = text.lines().skip(3);
    let port = lines.next()?.trim().parse().ok()?;
    let socket = lines.next()?.trim();
    Some((port, PathBuf::from(socket)))
}

fn free_port() -> Result<u16, Error> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| Error::io("bind a free port on", "127.0.0.1", e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::io("bind a free port on", "127.0.0.1", e))
}

fn port_is_free(port: u16) -> bool {
    port != 0 && TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

fn read_log_from(log: &Path, start: u64) -> String {
    let bytes = fs::read(log).unwrap_or_default();
    let start = usize::try_from(start).unwrap_or(0).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A stable 64-bit FNV-1a hash, for naming a directory after a path.
fn fnv1a(path: &Path) -> u64 {
    path.as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}
