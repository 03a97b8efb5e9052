//! Command-line flags (clap derive). Parsing only: no behaviour here.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tenantry_manifest::Group;

#[derive(Parser, Debug)]
#[command(name = "tenantry", version, about = "Database-per-tenant provisioner for PostgreSQL", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// `--config` alone: the commands that read tenants.toml but never the server.
#[derive(Args, Debug, Clone)]
pub struct ConfigFile {
    /// The inventory file.
    #[arg(long, short = 'c', value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
}

/// `--config` and `--admin-url`: the commands that read tenants.toml and talk
/// to the server.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// The inventory file.
    #[arg(long, short = 'c', value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Admin connection URL; wins over TENANTRY_ADMIN_URL, which wins over [server].admin_url.
    #[arg(long, value_name = "URL")]
    pub admin_url: Option<String>,
}

/// `--jobs` of the commands that read or change many tenant databases at once.
#[derive(Args, Debug, Clone)]
pub struct Jobs {
    /// Tenant databases worked on at once (default 4).
    #[arg(long, short = 'j', value_name = "N", value_parser = parse::jobs)]
    pub jobs: Option<u16>,
}

impl Jobs {
    /// `--jobs`, or [`DEFAULT_JOBS`].
    pub fn get(&self) -> usize {
        self.jobs.map_or(DEFAULT_JOBS, usize::from)
    }
}

/// Tenant databases worked on at once without `--jobs`.
pub const DEFAULT_JOBS: usize = 4;

const DEFAULT_CONFIG: &str = "tenants.toml";

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check tenants.toml without touching any server.
    Validate {
        #[command(flatten)]
        file: ConfigFile,
    },
    /// Show what apply would change.
    Plan {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        jobs: Jobs,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
        /// Exit 0 when there is nothing to do, 2 when changes are pending, 1 on error.
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Make the cluster match tenants.toml.
    Apply {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        jobs: Jobs,
        #[command(flatten)]
        apply: ApplyFlags,
    },
    /// Bring every tenant database to the schema directory's latest migration.
    Migrate {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        flags: MigrateFlags,
    },
    /// Each tenant's schema version, pending migrations, and any divergent or unknown one.
    Status {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        jobs: Jobs,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the tenants: plan, status, and whether they exist on the server.
    List {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        jobs: Jobs,
    },
    /// Each server of the fleet: reachable, PostgreSQL version, tenants, their size, connections, room for new tenants.
    Servers {
        #[command(flatten)]
        common: Common,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Each tenant's usage against its plan's quotas: storage, requests today, users, connections, last request.
    Usage {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        jobs: Jobs,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A tenant's audit trail, newest first: what tenantry and the API changed, when, by whom.
    Audit {
        #[command(flatten)]
        common: Common,
        /// The tenant (its database name).
        tenant: String,
        /// Only entries this recent (24h, 7d, 30min).
        #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
        since: Option<Duration>,
        /// At most this many entries.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=100_000))]
        limit: i64,
        /// Print the entries as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one tenant: its settings, users and what the server has.
    Show {
        #[command(flatten)]
        common: Common,
        /// The tenant (its database name).
        tenant: String,
    },
    /// Start a local PostgreSQL (under .tenantry/pg), apply tenants.toml to it, and serve the gateway.
    Up {
        #[command(flatten)]
        file: ConfigFile,
        #[command(flatten)]
        jobs: Jobs,
        /// Where the local cluster lives (default: .tenantry/pg beside tenants.toml).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Stop after applying; do not start the gateway.
        #[arg(long)]
        no_serve: bool,
        #[command(flatten)]
        serve: ServeFlags,
    },
    /// Serve the store API: Host -> tenant -> per-tenant pools (or one database from DATABASE_DSN).
    Serve {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        serve: ServeFlags,
    },
    /// Bearer tokens of a tenant's API (stored hashed in the tenant's database).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print what a per-tenant container needs: DATABASE_DSN (with the password), TENANT_NAME, TENANT_SUBDOMAIN.
    Env {
        #[command(flatten)]
        common: Common,
        /// The tenant (its database name).
        tenant: String,
        /// Whose login the DSN carries: the tenant's first user of this role.
        #[arg(long, default_value = "admin", value_parser = parse::member_group())]
        role: Group,
        /// A specific user of the tenant instead of the role's first.
        #[arg(long, conflicts_with = "role")]
        user: Option<String>,
        /// env: KEY=value lines (docker --env-file); json; k8s-secret: a Kubernetes Secret manifest.
        #[arg(long, default_value = "env", value_parser = ["env", "json", "k8s-secret"])]
        format: String,
    },
    /// Write tenants.toml from a Terraform tenants.tfvars (passwords become password_env references).
    ImportTfvars {
        /// The tenants.tfvars to read.
        tfvars: PathBuf,
        /// Where to write the inventory ("-": standard output).
        #[arg(long, short = 'o', default_value = "tenants.toml")]
        output: PathBuf,
        /// Replace the output file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Take over a tenant database and roles made by another tool (e.g. Terraform): check, mark as managed, keep the data.
    Adopt {
        #[command(flatten)]
        common: Common,
        /// The tenant (its database name).
        tenant: String,
        /// Only report what adopt would check and do.
        #[arg(long)]
        dry_run: bool,
    },
    /// Give a tenant's users new passwords (generated ones) or re-read them (env, file), set as SCRAM verifiers.
    Rotate {
        #[command(flatten)]
        common: Common,
        /// The tenant (its database name).
        tenant: String,
        /// Only this user.
        #[arg(long)]
        user: Option<String>,
    },
    /// Dump a tenant database (pg_dump custom format, mode 0600) into the backups directory.
    Backup {
        #[command(flatten)]
        common: Common,
        /// The tenant (its database name).
        tenant: String,
        /// Write here instead of the backups directory.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// Restore a tenant database from a `tenantry backup` file (refuses a non-empty database without --force).
    Restore {
        #[command(flatten)]
        common: Common,
        /// The tenant (its database name).
        tenant: String,
        /// The dump to restore.
        file: PathBuf,
        /// Replace the data of a database that has rows.
        #[arg(long)]
        force: bool,
    },
    /// Print shell completions for bash, zsh, fish, elvish or powershell.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages (tenantry.1 and one per command) into a directory.
    Man {
        /// The directory (created if missing).
        #[arg(default_value = "man")]
        dir: PathBuf,
    },
    /// Stop the local PostgreSQL started by `up`.
    Down {
        #[command(flatten)]
        file: ConfigFile,
        /// Where the local cluster lives (default: .tenantry/pg beside tenants.toml).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
}

impl Command {
    /// `--config` and `--admin-url` of the commands that have them.
    pub fn common(&self) -> Option<&Common> {
        match self {
            Command::Plan { common, .. }
            | Command::Apply { common, .. }
            | Command::Migrate { common, .. }
            | Command::Status { common, .. }
            | Command::List { common, .. }
            | Command::Servers { common, .. }
            | Command::Show { common, .. }
            | Command::Usage { common, .. }
            | Command::Audit { common, .. }
            | Command::Serve { common, .. }
            | Command::Env { common, .. }
            | Command::Adopt { common, .. }
            | Command::Rotate { common, .. }
            | Command::Backup { common, .. }
            | Command::Restore { common, .. } => Some(common),
            Command::Token(
                TokenCommand::Create { common, .. }
                | TokenCommand::List { common, .. }
                | TokenCommand::Revoke { common, .. },
            ) => Some(common),
            Command::Validate { .. }
            | Command::Up { .. }
            | Command::ImportTfvars { .. }
            | Command::Completions { .. }
            | Command::Man { .. }
            | Command::Down { .. } => None,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct ApplyFlags {
    /// Apply without asking.
    #[arg(long)]
    pub auto_approve: bool,
    /// Allow destroying tenants removed from the file (never protected ones).
    #[arg(long)]
    pub allow_destroy: bool,
    /// How long to wait for another apply of the same fleet ("0s": fail at once).
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse::duration)]
    pub lock_timeout: Duration,
    /// Apply to the servers that can be read when others cannot (exits 1
    /// naming the ones skipped; a new tenant waits until every server can
    /// be read, as it may live on one of them).
    #[arg(long)]
    pub skip_unreachable: bool,
}

#[derive(Args, Debug, Clone)]
pub struct MigrateFlags {
    /// Tenant databases migrated at once (default: half the server's free connections, at most 8).
    #[arg(long, short = 'j', value_name = "N", value_parser = parse::jobs)]
    pub jobs: Option<u16>,
    /// Stop scheduling new tenants after the first failure.
    #[arg(long)]
    pub fail_fast: bool,
    /// Migrate this tenant first and stop if it fails (repeatable).
    #[arg(long = "canary", value_name = "TENANT")]
    pub canaries: Vec<String>,
    /// Print the per-tenant report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Only report versions (same as `tenantry status`).
    #[arg(long)]
    pub status: bool,
    /// How long to wait for another run migrating the same database.
    #[arg(long, default_value = "5min", value_name = "DURATION", value_parser = parse::duration)]
    pub lock_timeout: Duration,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token for one role of a tenant; it is printed once.
    Create {
        #[command(flatten)]
        common: Common,
        /// The tenant (its database name).
        tenant: String,
        /// What the token may do: the rights of this role.
        #[arg(long, value_parser = parse::member_group())]
        role: Group,
        /// A note to recognise the token by.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List a tenant's tokens (never the tokens themselves).
    List {
        #[command(flatten)]
        common: Common,
        /// The tenant (its database name).
        tenant: String,
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id.
    Revoke {
        #[command(flatten)]
        common: Common,
        /// The tenant (its database name).
        tenant: String,
        /// The token's id, as `tenantry token list` shows it.
        #[arg(value_parser = parse::number::<i64>)]
        id: i64,
    },
}

#[derive(Args, Debug, Clone)]
pub struct ServeFlags {
    /// Address of the API.
    #[arg(long, default_value = "0.0.0.0:4001", value_parser = parse::address)]
    pub listen: std::net::SocketAddr,
    /// Address of the admin listener (the console at /, /api/fleet, /healthz, /readyz, /metrics, /tenants/<name>/health).
    #[arg(long, default_value = "127.0.0.1:9090", value_parser = parse::address)]
    pub admin_listen: std::net::SocketAddr,
    /// Bearer token of the admin listener (or TENANTRY_ADMIN_TOKEN, which keeps it out of `ps`); required when --admin-listen is not loopback. /healthz and /readyz never ask for it.
    #[arg(long, value_name = "TOKEN")]
    pub admin_token: Option<String>,
    /// How often request counts and audit entries are written to the tenants' databases.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = parse::duration)]
    pub usage_flush_interval: Duration,
    /// How often the tenant databases' sizes are measured (one query per server).
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = parse::duration)]
    pub storage_interval: Duration,
    /// Count no requests, measure no storage, enforce no storage or daily quota, record no API writes.
    #[arg(long)]
    pub no_usage: bool,
    /// Connections all tenant pools together may hold.
    #[arg(long, default_value_t = 50, value_parser = parse::number::<usize>)]
    pub max_connections: usize,
    /// How long a request waits for a connection before a 503.
    #[arg(long, default_value = "2s", value_name = "DURATION", value_parser = parse::duration)]
    pub checkout_timeout: Duration,
    /// Close a pool unused this long.
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = parse::duration)]
    pub idle_timeout: Duration,
    /// How long connecting to a tenant database may take.
    #[arg(long, default_value = "3s", value_name = "DURATION", value_parser = parse::duration)]
    pub connect_timeout: Duration,
    /// PEM certificate chain: serve HTTPS (with --tls-key).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// How often tenants.toml is checked for changes (SIGHUP reloads at once).
    #[arg(long, default_value = "2s", value_name = "DURATION", value_parser = parse::duration)]
    pub reload_interval: Duration,
    /// How long a checked token is trusted before it is checked again (revocation delay).
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse::duration)]
    pub token_ttl: Duration,
    /// Single-tenant mode (DATABASE_DSN): pool size.
    #[arg(long, default_value_t = 8, value_parser = parse::number::<usize>)]
    pub pool_size: usize,
    /// Single-tenant mode (DATABASE_DSN): requests per second.
    #[arg(long, default_value_t = 1000, value_parser = parse::number::<u32>)]
    pub requests_per_second: u32,
    /// Most API client connections open at once (more wait; idle keep-alive ones are closed to make room).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_clients: u32,
    /// Longest time a client may take to send a request's line and headers (also a TLS handshake).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,
    /// Close a client's keep-alive connection idle this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub keepalive_timeout: Duration,
    /// On SIGTERM, /readyz answers 503 this long before the listeners close (Ctrl-C skips it).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub shutdown_delay: Duration,
    /// After the listeners close, how long requests in flight may take to finish.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// Requests per second a client address may send without a valid token (burst: twice that).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub unauthenticated_rps: u32,
}

/// Value parsers whose errors say what a good value looks like (clap puts
/// `invalid value 'x' for '--flag <FLAG>': ` before them).
mod parse {
    use std::net::SocketAddr;
    use std::str::FromStr;
    use std::time::Duration;

    use clap::builder::{PossibleValuesParser, TypedValueParser};
    use tenantry_manifest::Group;

    pub fn duration(s: &str) -> Result<Duration, String> {
        humantime::parse_duration(s).map_err(|e| {
            format!(
                "not a duration ({e}): write a number and a unit, like 30s, 2min, 1h30m or 500ms"
            )
        })
    }

    pub fn address(s: &str) -> Result<SocketAddr, String> {
        s.parse().map_err(|e| {
            format!(
                "not an IP address and port ({e}): write it like 0.0.0.0:4001, 127.0.0.1:9090 or [::]:4001 (host names are not accepted)"
            )
        })
    }

    pub fn number<T: FromStr>(s: &str) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        s.trim()
            .parse()
            .map_err(|e| format!("not a whole number ({e}): write digits only, like 50"))
    }

    pub fn jobs(s: &str) -> Result<u16, String> {
        match number::<u16>(s) {
            Ok(n) if (1..=64).contains(&n) => Ok(n),
            _ => Err("write a whole number from 1 to 64, like 4".to_owned()),
        }
    }

    /// admin, developer or customer, listed in `--help` and completions.
    pub fn member_group() -> impl TypedValueParser<Value = Group> {
        PossibleValuesParser::new(Group::MEMBERS.map(Group::as_str))
            .map(|s| Group::parse(&s).expect("a possible value names a group"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    /// Every command and subcommand with its path, e.g. `token create`.
    fn commands() -> Vec<(String, clap::Command)> {
        fn walk(prefix: &str, cmd: &clap::Command, out: &mut Vec<(String, clap::Command)>) {
            for sub in cmd.get_subcommands() {
                let name = format!("{prefix}{}", sub.get_name()).trim().to_owned();
                out.push((name.clone(), sub.clone()));
                walk(&format!("{name} "), sub, out);
            }
        }
        let mut out = Vec::new();
        walk("", &Cli::command(), &mut out);
        out
    }

    fn flags(cmd: &clap::Command) -> Vec<String> {
        cmd.get_arguments()
            .filter_map(|a| a.get_long().map(str::to_owned))
            .collect()
    }

    #[test]
    fn every_argument_has_a_description() {
        let mut missing = Vec::new();
        for (name, cmd) in commands() {
            if cmd.get_about().is_none() {
                missing.push(format!("`{name}` itself"));
            }
            for a in cmd.get_arguments() {
                if a.get_help().is_none() && !["help", "version"].contains(&a.get_id().as_str()) {
                    missing.push(format!("`{name}` argument {}", a.get_id()));
                }
            }
        }
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }

    #[test]
    fn commands_offer_only_the_flags_they_use() {
        let all = commands();
        let has = |cmd: &str, flag: &str| {
            let (_, c) = all
                .iter()
                .find(|(n, _)| n == cmd)
                .unwrap_or_else(|| panic!("no command {cmd}"));
            flags(c).iter().any(|f| f == flag)
        };
        // Neither the server nor parallelism.
        for cmd in ["validate", "down", "import-tfvars", "completions", "man"] {
            assert!(!has(cmd, "admin-url"), "{cmd} --admin-url");
            assert!(!has(cmd, "jobs"), "{cmd} --jobs");
        }
        // One tenant, or the gateway: the server but not --jobs.
        for cmd in [
            "show",
            "serve",
            "env",
            "adopt",
            "rotate",
            "backup",
            "restore",
            "token create",
            "token list",
            "token revoke",
        ] {
            assert!(has(cmd, "admin-url"), "{cmd} lacks --admin-url");
            assert!(!has(cmd, "jobs"), "{cmd} --jobs");
        }
        for cmd in ["plan", "apply", "migrate", "status", "list"] {
            assert!(
                has(cmd, "admin-url") && has(cmd, "jobs"),
                "{cmd} lacks --admin-url or --jobs"
            );
        }
        // `up` serves its own local server: no --admin-url.
        assert!(!has("up", "admin-url") && has("up", "jobs"));
    }

    #[test]
    fn token_create_lists_the_roles() {
        let err = Cli::try_parse_from(["tenantry", "token", "create", "t", "--role", "root"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("admin") && err.contains("developer") && err.contains("customer"),
            "{err}"
        );
        let ok = Cli::try_parse_from(["tenantry", "token", "create", "t", "--role", "customer"])
            .unwrap();
        let Command::Token(TokenCommand::Create { role, .. }) = ok.command else {
            panic!("{ok:?}")
        };
        assert_eq!(role, Group::Customer);
    }

    #[test]
    fn bad_values_say_what_a_good_one_looks_like() {
        let err = |args: &[&str]| Cli::try_parse_from(args).expect_err("rejected").to_string();
        let e = err(&["tenantry", "apply", "--lock-timeout", "banana"]);
        assert!(e.contains("--lock-timeout") && e.contains("30s"), "{e}");
        let e = err(&["tenantry", "serve", "--listen", "localhost"]);
        assert!(e.contains("0.0.0.0:4001"), "{e}");
        let e = err(&["tenantry", "serve", "--max-connections", "lots"]);
        assert!(e.contains("whole number"), "{e}");
        let e = err(&["tenantry", "plan", "--jobs", "0"]);
        assert!(e.contains("1 to 64"), "{e}");
        let ok = Cli::try_parse_from(["tenantry", "apply", "--lock-timeout", "2min"]).unwrap();
        let Command::Apply { apply, .. } = ok.command else {
            panic!()
        };
        assert_eq!(apply.lock_timeout, Duration::from_secs(120));
    }
}
