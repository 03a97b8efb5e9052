//! How each command is carried out: load the inventory, open a session,
//! print, confirm, apply. Exit codes: 0 ok (or no changes), 1 error,
//! 2 changes pending (`plan --detailed-exitcode`), 141 standard output
//! closed early (see `output.rs`).

use std::fmt::Write as _;
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use secrecy::SecretString;
use tenantry_manifest::{Group, Inventory, Tenant, ADMIN_URL_ENV};
use tenantry_pg::apply::{self, Outcome};
use tenantry_pg::session::{self, Session};
use tenantry_plan::plan::Action;
use tenantry_plan::{render, Observed, Plan};

use crate::cli::{ApplyFlags, Cli, Command, Common, MigrateFlags, ServeFlags, TokenCommand};

pub async fn run(cli: Cli) -> Result<u8> {
    // Where the admin URL comes from, for the help line of a failed connection.
    let source = cli
        .command
        .common()
        .map(|c| crate::hint::url_source(c, std::env::var(ADMIN_URL_ENV).ok().as_deref()));
    dispatch(cli)
        .await
        .map_err(|e| crate::hint::with_help(e, source.as_deref()))
}

async fn dispatch(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Validate { file } => validate(&file.config),
        Command::Plan {
            common,
            jobs,
            json,
            detailed_exitcode,
        } => plan(&common, jobs.get(), json, detailed_exitcode).await,
        Command::Apply {
            common,
            jobs,
            apply,
        } => {
            let inventory = load(&common)?;
            apply_inventory(&inventory, jobs.get(), &apply).await
        }
        Command::Migrate { common, flags } => {
            if flags.status {
                status(
                    &common,
                    flags.jobs.map_or(crate::cli::DEFAULT_JOBS, usize::from),
                    flags.json,
                )
                .await
            } else {
                migrate(&common, &flags).await
            }
        }
        Command::Status { common, jobs, json } => status(&common, jobs.get(), json).await,
        Command::List { common, jobs } => list(&common, jobs.get()).await,
        Command::Servers { common, json } => crate::servers::servers(&common, json).await,
        Command::Show { common, tenant } => show(&common, &tenant).await,
        Command::Up {
            file,
            jobs,
            data_dir,
            no_serve,
            serve,
        } => {
            up(
                &file.config,
                jobs.get(),
                data_dir,
                (!no_serve).then_some(serve),
            )
            .await
        }
        Command::Serve { common, serve } => {
            check_ports(&serve)?;
            // Without tenants.toml but with DATABASE_DSN: single-tenant mode.
            let single = !common.config.exists() && std::env::var_os("DATABASE_DSN").is_some();
            let inventory = if single {
                None
            } else {
                Some(load_with(&common, tenantry_manifest::Secrets::Deferred)?)
            };
            crate::serve::serve(&common, &serve, inventory).await
        }
        Command::Token(cmd) => token(cmd).await,
        Command::Down { file, data_dir } => down(&file.config, data_dir),
        Command::Env {
            common,
            tenant,
            role,
            user,
            format,
        } => crate::env::env(&load(&common)?, &tenant, role, user.as_deref(), &format),
        Command::ImportTfvars {
            tfvars,
            output,
            force,
        } => crate::switch::import_tfvars(&tfvars, &output, force),
        Command::Adopt {
            common,
            tenant,
            dry_run,
        } => crate::switch::adopt(&load(&common)?, &common, &tenant, dry_run).await,
        Command::Rotate {
            common,
            tenant,
            user,
        } => crate::ops::rotate(&load(&common)?, &tenant, user.as_deref()).await,
        Command::Backup {
            common,
            tenant,
            output,
        } => crate::ops::backup(&load(&common)?, &tenant, output.as_deref()).await,
        Command::Restore {
            common,
            tenant,
            file,
            force,
        } => crate::ops::restore(&load(&common)?, &tenant, &file, force).await,
        Command::Completions { shell } => crate::docs::completions(shell),
        Command::Man { dir } => crate::docs::man(&dir),
    }
}

/// The tenant named on the command line, or an error listing the file's.
pub(crate) fn tenant<'a>(inventory: &'a Inventory, name: &str) -> Result<&'a Tenant> {
    inventory.tenant(name).with_context(|| {
        let known: Vec<&str> = inventory.tenants.iter().map(|t| t.name.as_str()).collect();
        format!(
            "no tenant '{name}' in {} (tenants: {})",
            inventory.path.display(),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )
    })
}

/// Loads and validates the inventory; `--admin-url` wins over file and env.
pub(crate) fn load(common: &Common) -> Result<Inventory> {
    load_with(common, tenantry_manifest::Secrets::Required)
}

/// [`load`], choosing whether every password must be readable now (the
/// gateway serves a tenant whose password is not as unavailable instead).
pub(crate) fn load_with(common: &Common, secrets: tenantry_manifest::Secrets) -> Result<Inventory> {
    let inventory = load_fleet(common, secrets)?;
    // Every command but `validate` and `servers` works on one server so
    // far: say so before anything else is read or touched.
    inventory.only_server()?;
    Ok(inventory)
}

/// The inventory with `--admin-url` applied (refused for a file with
/// several servers), whatever its number of servers.
pub(crate) fn load_fleet(
    common: &Common,
    secrets: tenantry_manifest::Secrets,
) -> Result<Inventory> {
    let mut inventory = Inventory::load_with(&common.config, secrets)?;
    if let Some(url) = &common.admin_url {
        if inventory.servers.len() > 1 {
            let vars: Vec<String> = inventory
                .servers
                .keys()
                .map(|n| tenantry_manifest::admin_url_env(n))
                .collect();
            anyhow::bail!(
                "--admin-url overrides the admin URL of a file with one server, and {} names {} ({})\nhelp: give each server's URL in its [servers.<name>] table or with {}",
                common.config.display(),
                inventory.servers.len(),
                inventory.servers.keys().cloned().collect::<Vec<_>>().join(", "),
                vars.join(" / ")
            );
        }
        inventory.only_server_mut()?.admin_url = Some(SecretString::from(url.clone()));
    }
    Ok(inventory)
}

fn validate(config: &std::path::Path) -> Result<u8> {
    let inventory = Inventory::load(config)?;
    let users: usize = inventory.tenants.iter().map(|t| t.users.len()).sum();
    outln!(
        "{} is valid: {} tenant(s), {} user(s), plans: {}.",
        config.display(),
        inventory.tenants.len(),
        users,
        inventory
            .plans
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(0)
}

/// Connects and plans; catalog reads use up to 4 connections per job.
async fn open(
    inventory: &Inventory,
    jobs: usize,
    lock: Option<std::time::Duration>,
) -> Result<Session> {
    Ok(session::open(inventory, jobs * 4, lock).await?)
}

async fn plan(common: &Common, jobs: usize, json: bool, detailed: bool) -> Result<u8> {
    let inventory = load(common)?;
    let s = open(&inventory, jobs, None).await?;
    if json {
        outln!("{}", render::json(&s.plan));
    } else {
        out!("{}", render::text(&s.plan));
    }
    if !s.plan.conflicts.is_empty() {
        return Ok(1);
    }
    Ok(if detailed && !s.plan.is_empty() { 2 } else { 0 })
}

async fn apply_inventory(inventory: &Inventory, jobs: usize, flags: &ApplyFlags) -> Result<u8> {
    let s = open(inventory, jobs, Some(flags.lock_timeout)).await?;
    out!("{}", render::text(&s.plan));
    s.plan.check_runnable(flags.allow_destroy)?;
    if s.plan.is_empty() {
        return Ok(0);
    }
    if !flags.auto_approve && !confirm()? {
        outln!("Apply cancelled. Nothing was changed.");
        return Ok(1);
    }
    let pg_dump = tenantry_localpg::find_bin_dir()
        .map(|d| d.join("pg_dump"))
        .unwrap_or_else(|_| PathBuf::from("pg_dump"));
    let ctx = apply::Context {
        admin: &s.admin,
        inventory,
        desired: &s.desired,
        observed: &s.observed,
        migrations: &s.migrations,
        pg_dump: &pg_dump,
        jobs,
        lock_wait: flags.lock_timeout,
    };
    outln!();
    let outcomes = apply::apply(&ctx, &s.plan, |o| {
        report(o);
        if o.result.is_ok() {
            if let Some(tp) = s.plan.tenants.iter().find(|tp| tp.tenant == o.tenant) {
                forget_secrets(inventory, tp);
            }
        }
    })
    .await;
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    let count = |a: Action| {
        outcomes
            .iter()
            .filter(|o| o.action == a && o.result.is_ok())
            .count()
    };
    outln!(
        "\nApply {}: {} created, {} updated, {} destroyed, {} failed.",
        if failed.is_empty() {
            "complete"
        } else {
            "incomplete"
        },
        count(Action::Create),
        count(Action::Update),
        count(Action::Destroy),
        failed.len()
    );
    drop(s.client); // releases the apply lock
    if failed.is_empty() {
        Ok(0)
    } else {
        bail!(
            "{} tenant(s) failed: {}. Fix the cause and run apply again: it resumes where it stopped.",
            failed.len(),
            failed.iter().map(|o| o.tenant.as_str()).collect::<Vec<_>>().join(", ")
        )
    }
}

fn report(o: &Outcome) {
    let verb = match o.action {
        Action::Create => "created",
        Action::Update => "updated",
        Action::Destroy => "destroyed",
    };
    match &o.result {
        Ok(notes) => {
            outln!("  {}: {verb} in {:.1?}", o.tenant, o.elapsed);
            for n in notes {
                outln!("      {n}");
            }
        }
        Err(e) => outln!("  {}: FAILED after {:.1?}: {e}", o.tenant, o.elapsed),
    }
}

/// Removes the generated secrets of the users (and tenant) `tp` dropped.
fn forget_secrets(inventory: &Inventory, tp: &tenantry_plan::plan::TenantPlan) {
    for removed in crate::secrets::remove(&crate::secrets::orphaned(inventory, tp)) {
        match removed {
            Ok(path) => outln!("      removed {}", path.display()),
            Err(e) => outln!("      warning: {e}; delete it by hand"),
        }
    }
}

/// Asks on the terminal; refuses when there is none.
fn confirm() -> Result<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("refusing to apply without a terminal to confirm on: re-run with --auto-approve. Nothing was changed.");
    }
    out!("\nDo you want to perform these actions? Only 'yes' will be accepted: ");
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}

/// What `list` and `show` say about the server: what it has and what apply
/// would change, or why that is unknown.
type ServerView<'a> = std::result::Result<(&'a Observed, &'a Plan), &'a str>;

/// Opens a session for `list` and `show`; without one they still print what
/// the file says, with the server marked unknown, then fail.
async fn open_for_reading(
    inventory: &Inventory,
    jobs: usize,
) -> (
    std::result::Result<Session, tenantry_pg::Error>,
    &'static str,
) {
    match session::open(inventory, jobs * 4, None).await {
        Ok(s) => (Ok(s), ""),
        Err(e @ tenantry_pg::Error::Connect { .. }) => (Err(e), "unknown (cannot connect)"),
        Err(e) => (Err(e), "unknown (cannot read the server)"),
    }
}

fn view<'a>(
    session: &'a std::result::Result<Session, tenantry_pg::Error>,
    why: &'a str,
) -> ServerView<'a> {
    match session {
        Ok(s) => Ok((&s.observed, &s.plan)),
        Err(_) => Err(why),
    }
}

async fn list(common: &Common, jobs: usize) -> Result<u8> {
    let inventory = load(common)?;
    let (session, why) = open_for_reading(&inventory, jobs).await;
    out!("{}", list_text(&inventory, view(&session, why)));
    session?;
    Ok(0)
}

/// The table of `list`.
fn list_text(inventory: &Inventory, server: ServerView<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<32} {:<14} {:<10} {:<6} {:<8} SERVER",
        "TENANT", "PLAN", "STATUS", "USERS", "SCHEMA"
    );
    for t in &inventory.tenants {
        let (state, schema) = match server {
            Ok((observed, plan)) => {
                let pending = plan.tenants.iter().find(|p| p.tenant == t.name.as_str());
                let state = match (observed.databases.contains_key(t.name.as_str()), pending) {
                    (false, _) => "missing (apply creates it)",
                    (true, None) => "in sync",
                    (true, Some(_)) => "drift (see plan)",
                };
                let schema = observed
                    .contents
                    .get(t.name.as_str())
                    .and_then(|c| c.migration_version)
                    .map_or("-".to_owned(), |v| format!("V{v}"));
                (state, schema)
            }
            Err(why) => (why, "?".to_owned()),
        };
        let _ = writeln!(
            out,
            "{:<32} {:<14} {:<10} {:<6} {:<8} {state}",
            t.name.as_str(),
            t.plan,
            t.status.as_str(),
            t.users.len(),
            schema
        );
    }
    if let Ok((_, plan)) = server {
        for p in plan.tenants.iter().filter(|p| p.action == Action::Destroy) {
            let _ = writeln!(
                out,
                "{:<32} {:<14} {:<10} {:<6} {:<8} not in {} (apply --allow-destroy drops it)",
                p.tenant,
                "-",
                "-",
                "-",
                "-",
                inventory.path.display()
            );
        }
    }
    out
}

async fn show(common: &Common, name: &str) -> Result<u8> {
    let inventory = load(common)?;
    let t = tenant(&inventory, name)?;
    let (session, why) = open_for_reading(&inventory, crate::cli::DEFAULT_JOBS).await;
    out!("{}", show_text(&inventory, t, view(&session, why)));
    session?;
    Ok(0)
}

/// What `show` prints about `t`.
fn show_text(inventory: &Inventory, t: &Tenant, server: ServerView<'_>) -> String {
    let mut out = String::new();
    let tier = inventory.tier(t);
    let _ = writeln!(out, "tenant       {}", t.name);
    if let Some(d) = &t.display_name {
        let _ = writeln!(out, "display name {d}");
    }
    let _ = writeln!(
        out,
        "plan         {} (connection limit {}, statement_timeout {}, pool {}, {} req/s)",
        tier.name,
        tier.connection_limit,
        tier.statement_timeout_pg(),
        tier.pool_size,
        tier.requests_per_second
    );
    let _ = writeln!(out, "status       {}", t.status.as_str());
    let _ = writeln!(out, "protected    {}", t.deletion_protection);
    let _ = writeln!(out, "subdomain    {}", t.subdomain);
    if !t.domains.is_empty() {
        let _ = writeln!(out, "domains      {}", t.domains.join(", "));
    }
    let database = match server {
        Err(why) => why.to_owned(),
        Ok((observed, _)) => match observed.databases.get(t.name.as_str()) {
            Some(db) => {
                let version = observed
                    .contents
                    .get(t.name.as_str())
                    .and_then(|c| c.migration_version);
                format!(
                    "present, owner {}, schema {}",
                    db.owner,
                    version.map_or("(none)".into(), |v| format!("V{v}"))
                )
            }
            None => "not created yet".to_owned(),
        },
    };
    let _ = writeln!(out, "database     {database}");
    let _ = writeln!(
        out,
        "groups       {}",
        Group::ALL
            .iter()
            .map(|&g| t.role(g).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let gateway = match server {
        Err(why) => why.to_owned(),
        Ok((observed, _)) => match observed.roles.get(t.gateway.name.as_str()) {
            Some(r) if r.login => "can log in".to_owned(),
            Some(_) => "NOLOGIN".to_owned(),
            None => "not created yet".to_owned(),
        },
    };
    let _ = writeln!(
        out,
        "gateway      {} ({gateway}; password {})",
        t.gateway.name,
        t.gateway.password.describe()
    );
    let _ = writeln!(out, "users:");
    for u in &t.users {
        let state = match server {
            Err(why) => why.to_owned(),
            Ok((observed, _)) => match observed.roles.get(u.name.as_str()) {
                Some(r) => format!(
                    "{}, connection limit {}",
                    if r.login { "can log in" } else { "NOLOGIN" },
                    r.connection_limit
                ),
                None => "not created yet".to_owned(),
            },
        };
        let _ = writeln!(
            out,
            "  {:<24} {:<10} password from {:<40} {state}",
            u.name.as_str(),
            u.group.as_str(),
            u.password.describe()
        );
    }
    let pending = match server {
        Err(why) => why.to_owned(),
        Ok((_, plan)) => match plan.tenants.iter().find(|p| p.tenant == t.name.as_str()) {
            Some(p) => format!(
                "{} change(s): run `tenantry plan` for details",
                p.changes.len()
            ),
            None => "none".to_owned(),
        },
    };
    let _ = writeln!(out, "pending      {pending}");
    out
}

fn data_dir(inventory_dir: &std::path::Path, flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| inventory_dir.join(".tenantry").join("pg"))
}

/// Fails, naming the flag, when an address the gateway listens on is taken;
/// called before anything starts, so nothing is left half done. Each
/// address is bound and released (the gateway binds it again moments later).
fn check_ports(flags: &ServeFlags) -> Result<()> {
    let (api, admin) = (flags.listen, flags.admin_listen);
    if api == admin && api.port() != 0 {
        bail!("--listen and --admin-listen are both {api}: give the admin listener another port, e.g. --admin-listen 127.0.0.1:9090. Nothing was started.");
    }
    let mut held = Vec::new();
    for (flag, addr) in [("--listen", api), ("--admin-listen", admin)] {
        match std::net::TcpListener::bind(addr) {
            Ok(listener) => held.push(listener),
            Err(e) => bail!(port_error(flag, addr, &e)),
        }
    }
    Ok(())
}

/// Why the gateway cannot listen on `addr` (given by `flag`), and what to do.
fn port_error(flag: &str, addr: std::net::SocketAddr, e: &std::io::Error) -> String {
    let mut other = addr;
    other.set_port(addr.port().wrapping_add(1).max(1024));
    let why = match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "another program holds port {} (an earlier `tenantry up` or `tenantry serve`?). Stop it, or pick a free port",
            addr.port()
        ),
        std::io::ErrorKind::PermissionDenied => {
            "ports below 1024 need privileges. Pick a higher port".to_owned()
        }
        _ => "Pick another address".to_owned(),
    };
    format!("cannot listen on {addr} ({flag} {addr}): {e}.\n  help: {why} with {flag} {other}. Nothing was started.")
}

async fn up(
    config: &std::path::Path,
    jobs: usize,
    dir: Option<PathBuf>,
    serve: Option<ServeFlags>,
) -> Result<u8> {
    let mut inventory = Inventory::load(config)?;
    if let Some(serve) = &serve {
        check_ports(serve)?;
    }
    let dir = data_dir(&inventory.base_dir, dir);
    outln!("Starting the local PostgreSQL in {} ...", dir.display());
    let cluster = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || tenantry_localpg::Cluster::start_persistent(&dir))
            .await??
    };
    let url = cluster.url("postgres");
    outln!(
        "PostgreSQL is running on 127.0.0.1:{} (socket {}).\n",
        cluster.port(),
        cluster.socket_dir().display()
    );
    inventory.only_server_mut()?.admin_url = Some(SecretString::from(url.clone()));
    let flags = ApplyFlags {
        auto_approve: true,
        allow_destroy: false,
        lock_timeout: std::time::Duration::from_secs(30),
    };
    let code = apply_inventory(&inventory, jobs, &flags).await?;
    outln!("\nThe local cluster keeps running. To use it with other commands:");
    outln!("  export TENANTRY_ADMIN_URL={url}");
    outln!("  tenantry plan\nStop it with `tenantry down`.");
    let Some(serve) = serve else {
        return Ok(code);
    };
    // Serve, with a developer token of the first tenant for the curl line.
    if let Some(first) = inventory.tenants.first() {
        let token = crate::tokens::demo(&inventory, first.name.as_str()).await?;
        let host = match inventory
            .routing
            .base_domains
            .iter()
            .find(|d| *d == "localhost")
        {
            Some(_) => format!("{}.localhost", first.subdomain),
            None => first.subdomain.clone(),
        };
        outln!(
            "\nTry the store API of {} (a developer token, kept in {}):",
            first.name,
            crate::secrets::token_file(&inventory, first.name.as_str()).display()
        );
        outln!(
            "  curl -H 'Authorization: Bearer {}' http://{host}:{}/api/widgets\n",
            secrecy::ExposeSecret::expose_secret(&token),
            serve.listen.port()
        );
    }
    // The gateway keeps using the local server, reloads included.
    let common = Common {
        config: config.to_path_buf(),
        admin_url: Some(url),
    };
    crate::serve::serve(&common, &serve, Some(inventory)).await
}

async fn token(cmd: TokenCommand) -> Result<u8> {
    match cmd {
        TokenCommand::Create {
            common,
            tenant,
            role,
            label,
        } => {
            let inventory = load(&common)?;
            let (id, token) = crate::tokens::create(&inventory, &tenant, role, &label).await?;
            errln!("Token {id} for {tenant} ({role}); it is shown only this once:");
            outln!("{}", secrecy::ExposeSecret::expose_secret(&token));
            Ok(0)
        }
        TokenCommand::List {
            common,
            tenant,
            json,
        } => crate::tokens::list(&load(&common)?, &tenant, json).await,
        TokenCommand::Revoke { common, tenant, id } => {
            crate::tokens::revoke(&load(&common)?, &tenant, id).await
        }
    }
}

fn down(config: &std::path::Path, dir: Option<PathBuf>) -> Result<u8> {
    let base = config
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(|p| p.to_path_buf()))
        .unwrap_or_else(|| PathBuf::from("."));
    let dir = data_dir(&base, dir);
    if tenantry_localpg::Cluster::stop_persistent(&dir)? {
        outln!("Stopped the local PostgreSQL in {}.", dir.display());
    } else {
        outln!("No local PostgreSQL is running in {}.", dir.display());
    }
    Ok(0)
}

/// The inventory's tenants, each with whether its managed database exists.
async fn fleet_tenants(
    inventory: &Inventory,
    admin: &tenantry_pg::Admin,
) -> Result<(tokio_postgres::Client, Vec<(String, bool)>)> {
    let client = admin.connect(None).await?;
    let names: Vec<String> = inventory
        .tenants
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    let existing =
        tenantry_pg::introspect::managed_databases(&client, &inventory.fleet, &names).await?;
    let tenants = names.into_iter().map(|n| {
        let exists = existing.contains(&n);
        (n, exists)
    });
    Ok((client, tenants.collect()))
}

fn version(v: Option<i64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("V{v}"))
}

async fn migrate(common: &Common, flags: &MigrateFlags) -> Result<u8> {
    use tenantry_pg::fleet::Result as R;
    let inventory = load(common)?;
    for c in &flags.canaries {
        if inventory.tenant(c).is_none() {
            bail!(
                "--canary {c}: no such tenant in {}",
                common.config.display()
            );
        }
    }
    let migrations = tenantry_pg::Migrations::load(&inventory.paths.schema)?;
    let admin = tenantry_pg::Admin::from_url(inventory.only_server()?.admin_url.as_ref())?;
    let (client, tenants) = fleet_tenants(&inventory, &admin).await?;
    let jobs = match flags.jobs {
        Some(j) => usize::from(j),
        None => tenantry_pg::fleet::default_jobs(&client).await?,
    };
    let options = tenantry_pg::fleet::Options {
        jobs,
        fail_fast: flags.fail_fast,
        canaries: flags.canaries.clone(),
        lock_wait: flags.lock_timeout,
    };
    if !flags.json {
        outln!(
            "Migrating {} tenant(s) to {} ({} migration(s) in {}), {jobs} at a time{}.",
            tenants.len(),
            version(migrations.latest()),
            migrations.len(),
            migrations.dir.display(),
            if flags.canaries.is_empty() {
                String::new()
            } else {
                format!(", canaries first: {}", flags.canaries.join(", "))
            }
        );
    }
    let progress = Progress::new(tenants.len() as u64, flags.json);
    let mut reports = tenantry_pg::fleet::migrate(&admin, &migrations, &tenants, &options, &|r| {
        progress.done(r)
    })
    .await;
    progress.finish();
    drop(client);
    // A failed tenant stays at its last good version: read which (pg does
    // not report it), and say what failed once.
    let failed: Vec<(String, bool)> = reports
        .iter()
        .filter(|r| r.result == R::Failed)
        .map(|r| (r.tenant.clone(), true))
        .collect();
    if !failed.is_empty() {
        let now = tenantry_pg::fleet::status(&admin, &migrations, &failed, jobs).await;
        for r in reports.iter_mut().filter(|r| r.result == R::Failed) {
            r.to = now
                .iter()
                .find(|s| s.tenant == r.tenant && s.error.is_none())
                .and_then(|s| s.history.version);
            r.error = r.error.as_deref().map(|e| migrate_error(&r.tenant, e));
        }
    }
    if flags.json {
        outln!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        out!("{}", migrate_table(&reports));
    }
    if !failed.is_empty() {
        bail!("{} tenant(s) failed; each stays at its last good version (TO). Fix the cause and run migrate again: only what is pending runs.", failed.len());
    }
    Ok(0)
}

/// The per-tenant report of `migrate` and its summary line. A failed row's
/// FROM is `?` (not known), its TO the version it stays at.
fn migrate_table(reports: &[tenantry_pg::fleet::Report]) -> String {
    use tenantry_pg::fleet::Result as R;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:<32} {:>6} {:>6} {:>10}  {:<11} ERROR",
        "TENANT", "FROM", "TO", "DURATION", "RESULT"
    );
    for r in reports {
        let mut result = r.result.as_str().to_owned();
        if let Some(w) = r.waited_ms {
            let _ = write!(result, " (waited {w} ms for another run)");
        }
        let from = match (r.result, r.from) {
            (R::Failed, None) => "?".to_owned(),
            (_, v) => version(v),
        };
        let to = match (r.result, r.to) {
            (R::Failed, None) => "?".to_owned(),
            (_, v) => version(v),
        };
        let _ = writeln!(
            out,
            "{:<32} {:>6} {:>6} {:>8}ms  {:<11} {}",
            r.tenant,
            from,
            to,
            r.duration_ms,
            result,
            r.error.as_deref().unwrap_or("")
        );
    }
    let count = |k| reports.iter().filter(|r| r.result == k).count();
    let _ = writeln!(
        out,
        "\n{} migrated, {} up to date, {} failed, {} skipped, {} not created.",
        count(R::Migrated),
        count(R::UpToDate),
        count(R::Failed),
        count(R::Skipped),
        count(R::NotCreated)
    );
    out
}

/// A failed tenant's error without what its row already says or what the
/// text repeats: `migration of shop failed: `error applying migration
/// V2__x`, `db error`: relation "t" already exists: ERROR: relation "t"
/// already exists` becomes `V2__x: relation "t" already exists`.
fn migrate_error(tenant: &str, text: &str) -> String {
    let mut s = text
        .strip_prefix(&format!("migration of {tenant} failed: "))
        .unwrap_or(text)
        .to_owned();
    // refinery's "`what`, `cause`": the cause is the client's summary of the
    // server's message that follows.
    if let Some(rest) = s.strip_prefix("`error applying migration ") {
        if let Some((name, after)) = rest.split_once('`') {
            let after = after.strip_prefix(", `db error`").unwrap_or(after);
            s = format!("{name}{after}");
        }
    }
    // The server's error again, as tokio-postgres prints it ("ERROR: msg").
    for severity in ["ERROR", "FATAL", "PANIC"] {
        let marker = format!(": {severity}: ");
        if let Some(i) = s.rfind(&marker) {
            let repeated = s[i + marker.len()..].lines().next().unwrap_or("");
            if !repeated.is_empty() && s[..i].contains(repeated) {
                s.truncate(i);
            }
        }
    }
    s
}

async fn status(common: &Common, jobs: usize, json: bool) -> Result<u8> {
    let inventory = load(common)?;
    let migrations = tenantry_pg::Migrations::load(&inventory.paths.schema)?;
    let admin = tenantry_pg::Admin::from_url(inventory.only_server()?.admin_url.as_ref())?;
    let (_client, tenants) = fleet_tenants(&inventory, &admin).await?;
    let rows = tenantry_pg::fleet::status(&admin, &migrations, &tenants, jobs * 4).await;
    let bad: Vec<&str> = rows
        .iter()
        .filter(|r| r.error.is_some())
        .map(|r| r.tenant.as_str())
        .collect();
    if json {
        outln!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        outln!(
            "Schema directory {}: {} migration(s), latest {}.\n",
            migrations.dir.display(),
            migrations.len(),
            version(migrations.latest())
        );
        outln!(
            "{:<32} {:>7}  {:<20} PROBLEM",
            "TENANT",
            "VERSION",
            "PENDING"
        );
        for r in &rows {
            let pending = if !r.exists {
                "(not created)".to_owned()
            } else if r.history.pending.is_empty() {
                "-".to_owned()
            } else {
                r.history
                    .pending
                    .iter()
                    .map(|v| format!("V{v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            outln!(
                "{:<32} {:>7}  {:<20} {}",
                r.tenant,
                version(r.history.version),
                pending,
                r.error.as_deref().unwrap_or("")
            );
        }
    }
    if !bad.is_empty() {
        bail!(
            "{} tenant(s) have a schema problem: {}",
            bad.len(),
            bad.join(", ")
        );
    }
    Ok(0)
}

/// A progress bar on a terminal; one plain line per tenant otherwise (CI logs).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    quiet: bool,
}

impl Progress {
    fn new(len: u64, quiet: bool) -> Progress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(len);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} tenants, {elapsed} elapsed, eta {eta} {msg}",
                )
                .expect("valid template"),
            );
            bar
        });
        Progress { bar, quiet }
    }

    fn done(&self, r: &tenantry_pg::fleet::Report) {
        let failed = r.result == tenantry_pg::fleet::Result::Failed;
        let error = r
            .error
            .as_deref()
            .map(|e| migrate_error(&r.tenant, e))
            .unwrap_or_default();
        match &self.bar {
            Some(bar) => {
                if failed {
                    bar.println(format!("{}: FAILED: {error}", r.tenant));
                }
                bar.set_message(r.tenant.clone());
                bar.inc(1);
            }
            // A failure's versions are not known yet: the table has them.
            None if !self.quiet && failed => {
                errln!("  {}: FAILED in {} ms: {error}", r.tenant, r.duration_ms)
            }
            None if !self.quiet => errln!(
                "  {}: {} {} -> {} in {} ms{}",
                r.tenant,
                r.result.as_str(),
                version(r.from),
                version(r.to),
                r.duration_ms,
                if error.is_empty() {
                    String::new()
                } else {
                    format!(": {error}")
                }
            ),
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn inventory() -> Inventory {
        let src = r#"
[plans.starter]
connection_limit = 5
statement_timeout = "5s"
pool_size = 2
requests_per_second = 20
[tenants.shop]
plan = "starter"
admins = [{ username = "shop_a" }]
"#;
        Inventory::from_str_with(src, std::path::Path::new("/x/tenants.toml"), &|_| None).unwrap()
    }

    #[test]
    fn list_and_show_say_what_the_file_says_when_the_server_is_unknown() {
        let inv = inventory();
        let why = "unknown (cannot connect)";
        let list = list_text(&inv, Err(why));
        let row = list.lines().find(|l| l.starts_with("shop ")).unwrap();
        assert!(row.contains("starter") && row.contains("active"), "{list}");
        assert!(row.ends_with(why), "{list}");
        let show = show_text(&inv, &inv.tenants[0], Err(why));
        assert!(show.contains("connection limit 5"), "{show}");
        assert!(show.contains(&format!("database     {why}")), "{show}");
        assert!(show.contains("shop_a"), "{show}");
        assert!(show.contains(&format!("pending      {why}")), "{show}");
    }

    #[test]
    fn list_marks_a_tenant_without_a_database() {
        let inv = inventory();
        let observed = Observed::default();
        let plan = Plan {
            fleet: "default".into(),
            tenants: vec![],
            conflicts: vec![],
            warnings: vec![],
        };
        let list = list_text(&inv, Ok((&observed, &plan)));
        assert!(list.contains("missing (apply creates it)"), "{list}");
    }

    #[test]
    fn a_migration_error_says_what_failed_once() {
        let raw = "migration of shop failed: `error applying migration V2__bad`, `db error`: relation \"widgets\" already exists: ERROR: relation \"widgets\" already exists";
        assert_eq!(
            migrate_error("shop", raw),
            "V2__bad: relation \"widgets\" already exists"
        );
        let detail = "migration of shop failed: `error applying migration V3__x`, `db error`: could not create unique index \"i\" (detail: Key (a)=(1) is duplicated.): ERROR: could not create unique index \"i\"\nDETAIL: Key (a)=(1) is duplicated.";
        assert_eq!(
            migrate_error("shop", detail),
            "V3__x: could not create unique index \"i\" (detail: Key (a)=(1) is duplicated.)"
        );
        // What does not repeat is kept.
        let lock = "migration of shop failed: another migration of this database is running; gave up after 5.0s (canceling statement due to lock timeout)";
        assert_eq!(
            migrate_error("shop", lock),
            "another migration of this database is running; gave up after 5.0s (canceling statement due to lock timeout)"
        );
    }

    #[test]
    fn failed_rows_show_where_the_tenant_stays() {
        use tenantry_pg::fleet::{Report, Result as R};
        let row = |tenant: &str, result, from, to| Report {
            tenant: tenant.into(),
            from,
            to,
            duration_ms: 18,
            result,
            waited_ms: None,
            error: None,
        };
        let text = migrate_table(&[
            row("a", R::Failed, None, Some(1)),
            row("b", R::Migrated, Some(1), Some(2)),
        ]);
        let a = text.lines().find(|l| l.starts_with("a ")).unwrap();
        assert!(a.contains("     ?     V1 "), "{text}");
        assert!(!a.contains(" - "), "{text}");
        let b = text.lines().find(|l| l.starts_with("b ")).unwrap();
        assert!(b.contains("    V1     V2 "), "{text}");
        assert!(
            text.contains("1 migrated, 0 up to date, 1 failed"),
            "{text}"
        );
    }

    #[test]
    fn a_busy_port_is_named_with_its_flag() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let flags = |listen, admin_listen| {
            let cli = crate::cli::Cli::try_parse_from([
                "tenantry",
                "serve",
                "--listen",
                &format!("{listen}"),
                "--admin-listen",
                &format!("{admin_listen}"),
            ])
            .unwrap();
            let Command::Serve { serve, .. } = cli.command else {
                unreachable!()
            };
            serve
        };
        let free: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        let e = check_ports(&flags(addr, free)).unwrap_err().to_string();
        assert!(e.contains(&format!("--listen {addr}")), "{e}");
        assert!(e.contains("Nothing was started"), "{e}");
        let e = check_ports(&flags(free, addr)).unwrap_err().to_string();
        assert!(e.contains(&format!("--admin-listen {addr}")), "{e}");
        let e = check_ports(&flags(addr, addr)).unwrap_err().to_string();
        assert!(e.contains("both"), "{e}");
        check_ports(&flags(free, free)).unwrap();
    }
}
