//! Command-line flags (clap derive). Parsing only: no behaviour here.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "tenantry", version, about = "Database-per-tenant provisioner for PostgreSQL", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Common {
    /// The inventory file.
    #[arg(long, short = 'c', global = true, default_value = "tenants.toml")]
    pub config: PathBuf,
    /// Admin connection URL (overrides [server].admin_url; env TENANTRY_ADMIN_URL is read by the inventory).
    #[arg(long, global = true, hide_env_values = true)]
    pub admin_url: Option<String>,
    /// Tenant databases worked on at once (apply: 4; migrate: from the server's free connections).
    #[arg(long, short = 'j', global = true, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: Option<u16>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check tenants.toml without touching any server.
    Validate {
        #[command(flatten)]
        common: Common,
    },
    /// Show what apply would change.
    Plan {
        #[command(flatten)]
        common: Common,
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
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the tenants: plan, status, and whether they exist on the server.
    List {
        #[command(flatten)]
        common: Common,
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
        common: Common,
        /// Where the local cluster lives (default: .tenantry/pg beside tenants.toml).
        #[arg(long)]
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
        #[arg(long, default_value = "admin", value_parser = ["admin", "developer", "customer"])]
        role: String,
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
        common: Common,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
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
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub lock_timeout: Duration,
}

#[derive(Args, Debug, Clone)]
pub struct MigrateFlags {
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
    #[arg(long, default_value = "5min", value_parser = humantime::parse_duration)]
    pub lock_timeout: Duration,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token for one role of a tenant; it is printed once.
    Create {
        #[command(flatten)]
        common: Common,
        tenant: String,
        /// admin, developer or customer.
        #[arg(long)]
        role: String,
        /// A note to recognise the token by.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List a tenant's tokens (never the tokens themselves).
    List {
        #[command(flatten)]
        common: Common,
        tenant: String,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id.
    Revoke {
        #[command(flatten)]
        common: Common,
        tenant: String,
        id: i64,
    },
}

#[derive(Args, Debug, Clone)]
pub struct ServeFlags {
    /// Address of the API.
    #[arg(long, default_value = "0.0.0.0:4001")]
    pub listen: std::net::SocketAddr,
    /// Address of the admin listener (/healthz, /readyz, /metrics, /tenants/<name>/health).
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub admin_listen: std::net::SocketAddr,
    /// Connections all tenant pools together may hold.
    #[arg(long, default_value_t = 50)]
    pub max_connections: usize,
    /// How long a request waits for a connection before a 503.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub checkout_timeout: Duration,
    /// Close a pool unused this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// How long connecting to a tenant database may take.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// PEM certificate chain: serve HTTPS (with --tls-key).
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// How often tenants.toml is checked for changes (SIGHUP reloads at once).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub reload_interval: Duration,
    /// How long a checked token is trusted before it is checked again (revocation delay).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub token_ttl: Duration,
    /// Single-tenant mode (DATABASE_DSN): pool size.
    #[arg(long, default_value_t = 8)]
    pub pool_size: usize,
    /// Single-tenant mode (DATABASE_DSN): requests per second.
    #[arg(long, default_value_t = 1000)]
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
