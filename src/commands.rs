//! How each command is carried out: load the inventory, open a session,
//! print, confirm, apply. Exit codes: 0 ok (or no changes), 1 error,
//! 2 changes pending (`plan --detailed-exitcode`), 141 standard output
//! closed early (see `output.rs`).

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use secrecy::SecretString;
use tenantry_manifest::{Group, Inventory, Tenant};
use tenantry_pg::apply::{self, Outcome};
use tenantry_pg::session::{self, Session};
use tenantry_plan::plan::Action;
use tenantry_plan::render;

use crate::cli::{ApplyFlags, Cli, Command, Common, MigrateFlags, ServeFlags, TokenCommand};

pub async fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Validate { common } => validate(&common),
        Command::Plan {
            common,
            json,
            detailed_exitcode,
        } => plan(&common, json, detailed_exitcode).await,
        Command::Apply { common, apply } => {
            let inventory = load(&common)?;
            apply_inventory(&inventory, &common, &apply).await
        }
        Command::Migrate { common, flags } => {
            if flags.status {
                status(&common, flags.json).await
            } else {
                migrate(&common, &flags).await
            }
        }
        Command::Status { common, json } => status(&common, json).await,
        Command::List { common } => list(&common).await,
        Command::Show { common, tenant } => show(&common, &tenant).await,
        Command::Up {
            common,
            data_dir,
            no_serve,
            serve,
        } => up(&common, data_dir, (!no_serve).then_some(serve)).await,
        Command::Serve { common, serve } => {
            // Without tenants.toml but with DATABASE_DSN: single-tenant mode.
            let single = !common.config.exists() && std::env::var_os("DATABASE_DSN").is_some();
            let inventory = if single { None } else { Some(load(&common)?) };
            crate::serve::serve(&common, &serve, inventory).await
        }
        Command::Token(cmd) => token(cmd).await,
        Command::Down { common, data_dir } => down(&common, data_dir),
        Command::Env {
            common,
            tenant,
            role,
            user,
            format,
        } => crate::env::env(&load(&common)?, &tenant, &role, user.as_deref(), &format),
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

/// `--jobs`, or 4.
fn jobs(common: &Common) -> usize {
    common.jobs.map_or(4, usize::from)
}

/// Loads and validates the inventory; `--admin-url` wins over file and env.
pub(crate) fn load(common: &Common) -> Result<Inventory> {
    let mut inventory = Inventory::load(&common.config)?;
    if let Some(url) = &common.admin_url {
        inventory.server.admin_url = Some(SecretString::from(url.clone()));
    }
    Ok(inventory)
}

fn validate(common: &Common) -> Result<u8> {
    let inventory = load(common)?;
    let users: usize = inventory.tenants.iter().map(|t| t.users.len()).sum();
    outln!(
        "{} is valid: {} tenant(s), {} user(s), plans: {}.",
        common.config.display(),
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

async fn open(
    inventory: &Inventory,
    common: &Common,
    lock: Option<std::time::Duration>,
) -> Result<Session> {
    Ok(session::open(inventory, jobs(common) * 4, lock).await?)
}

async fn plan(common: &Common, json: bool, detailed: bool) -> Result<u8> {
    let inventory = load(common)?;
    let s = open(&inventory, common, None).await?;
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

async fn apply_inventory(inventory: &Inventory, common: &Common, flags: &ApplyFlags) -> Result<u8> {
    let s = open(inventory, common, Some(flags.lock_timeout)).await?;
    out!("{}", render::text(&s.plan));
    if !s.plan.conflicts.is_empty() {
        bail!(
            "{} conflict(s) above: nothing was changed",
            s.plan.conflicts.len()
        );
    }
    if s.plan.is_empty() {
        return Ok(0);
    }
    if s.plan.has_destroys() {
        let protected = s.plan.protected_destroys();
        if !protected.is_empty() {
            bail!(
                "refusing to destroy {}: deletion_protection is on. Put the tenant back, set deletion_protection = false, apply, then remove it and apply with --allow-destroy. Nothing was changed.",
                protected.join(", ")
            );
        }
        if !flags.allow_destroy {
            bail!("this plan destroys tenants; re-run with --allow-destroy to back them up and drop them. Nothing was changed.");
        }
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
        jobs: jobs(common),
        lock_wait: flags.lock_timeout,
    };
    outln!();
    let outcomes = apply::apply(&ctx, &s.plan, report).await;
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

async fn list(common: &Common) -> Result<u8> {
    let inventory = load(common)?;
    let s = open(&inventory, common, None).await?;
    outln!(
        "{:<32} {:<14} {:<10} {:<6} {:<8} SERVER",
        "TENANT", "PLAN", "STATUS", "USERS", "SCHEMA"
    );
    for t in &inventory.tenants {
        let pending = s.plan.tenants.iter().find(|p| p.tenant == t.name.as_str());
        let server = match (s.observed.databases.contains_key(t.name.as_str()), pending) {
            (false, _) => "missing (apply creates it)",
            (true, None) => "in sync",
            (true, Some(_)) => "drift (see plan)",
        };
        let schema = s
            .observed
            .contents
            .get(t.name.as_str())
            .and_then(|c| c.migration_version)
            .map_or("-".to_owned(), |v| format!("V{v}"));
        outln!(
            "{:<32} {:<14} {:<10} {:<6} {:<8} {server}",
            t.name.as_str(),
            t.plan,
            t.status.as_str(),
            t.users.len(),
            schema
        );
    }
    for p in s
        .plan
        .tenants
        .iter()
        .filter(|p| p.action == Action::Destroy)
    {
        outln!(
            "{:<32} {:<14} {:<10} {:<6} {:<8} not in {} (apply --allow-destroy drops it)",
            p.tenant,
            "-",
            "-",
            "-",
            "-",
            common.config.display()
        );
    }
    Ok(0)
}

async fn show(common: &Common, name: &str) -> Result<u8> {
    let inventory = load(common)?;
    let t = tenant(&inventory, name)?;
    let tier = inventory.tier(t);
    let s = open(&inventory, common, None).await?;
    outln!("tenant       {}", t.name);
    if let Some(d) = &t.display_name {
        outln!("display name {d}");
    }
    outln!(
        "plan         {} (connection limit {}, statement_timeout {}, pool {}, {} req/s)",
        tier.name,
        tier.connection_limit,
        tier.statement_timeout_pg(),
        tier.pool_size,
        tier.requests_per_second
    );
    outln!("status       {}", t.status.as_str());
    outln!("protected    {}", t.deletion_protection);
    outln!("subdomain    {}", t.subdomain);
    if !t.domains.is_empty() {
        outln!("domains      {}", t.domains.join(", "));
    }
    match s.observed.databases.get(t.name.as_str()) {
        Some(db) => {
            let version = s
                .observed
                .contents
                .get(t.name.as_str())
                .and_then(|c| c.migration_version);
            outln!(
                "database     present, owner {}, schema {}",
                db.owner,
                version.map_or("(none)".into(), |v| format!("V{v}"))
            );
        }
        None => outln!("database     not created yet"),
    }
    outln!(
        "groups       {}",
        Group::ALL
            .iter()
            .map(|&g| t.role(g).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    outln!("users:");
    for u in &t.users {
        let server = match s.observed.roles.get(u.name.as_str()) {
            Some(r) => format!(
                "{}, connection limit {}",
                if r.login { "can log in" } else { "NOLOGIN" },
                r.connection_limit
            ),
            None => "not created yet".to_owned(),
        };
        outln!(
            "  {:<24} {:<10} password from {:<40} {server}",
            u.name.as_str(),
            u.group.as_str(),
            u.password.describe()
        );
    }
    match s.plan.tenants.iter().find(|p| p.tenant == name) {
        Some(p) => outln!(
            "pending      {} change(s): run `tenantry plan` for details",
            p.changes.len()
        ),
        None => outln!("pending      none"),
    }
    Ok(0)
}

fn data_dir(inventory_dir: &std::path::Path, flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| inventory_dir.join(".tenantry").join("pg"))
}

async fn up(common: &Common, dir: Option<PathBuf>, serve: Option<ServeFlags>) -> Result<u8> {
    let mut inventory = Inventory::load(&common.config)?;
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
    inventory.server.admin_url = Some(SecretString::from(url.clone()));
    let flags = ApplyFlags {
        auto_approve: true,
        allow_destroy: false,
        lock_timeout: std::time::Duration::from_secs(30),
    };
    let code = apply_inventory(&inventory, common, &flags).await?;
    outln!("\nThe local cluster keeps running. To use it with other commands:");
    outln!("  export TENANTRY_ADMIN_URL={url}");
    outln!("  tenantry plan\nStop it with `tenantry down`.");
    let Some(serve) = serve else {
        return Ok(code);
    };
    // Serve, with a developer token of the first tenant for the curl line.
    if let Some(first) = inventory.tenants.first() {
        let token = crate::serve::demo_token(&inventory, first.name.as_str()).await?;
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
            inventory
                .paths
                .secrets
                .join(format!("{}.token", first.name))
                .display()
        );
        outln!(
            "  curl -H 'Authorization: Bearer {}' http://{host}:{}/api/widgets\n",
            secrecy::ExposeSecret::expose_secret(&token),
            serve.listen.port()
        );
    }
    crate::serve::serve(common, &serve, Some(inventory)).await
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
            let (id, token) =
                crate::serve::create_token(&inventory, &tenant, &role, &label).await?;
            errln!("Token {id} for {tenant} ({role}); it is shown only this once:");
            outln!("{}", secrecy::ExposeSecret::expose_secret(&token));
            Ok(0)
        }
        TokenCommand::List {
            common,
            tenant,
            json,
        } => crate::serve::list_tokens(&load(&common)?, &tenant, json).await,
        TokenCommand::Revoke { common, tenant, id } => {
            crate::serve::revoke_token(&load(&common)?, &tenant, id).await
        }
    }
}

fn down(common: &Common, dir: Option<PathBuf>) -> Result<u8> {
    let base = common
        .config
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
    let admin = tenantry_pg::Admin::from_url(inventory.server.admin_url.as_ref())?;
    let (client, tenants) = fleet_tenants(&inventory, &admin).await?;
    let jobs = match common.jobs {
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
    let reports = tenantry_pg::fleet::migrate(&admin, &migrations, &tenants, &options, &|r| {
        progress.done(r)
    })
    .await;
    progress.finish();
    drop(client);
    let failed = reports
        .iter()
        .filter(|r| r.result == tenantry_pg::fleet::Result::Failed)
        .count();
    if flags.json {
        outln!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        outln!(
            "\n{:<32} {:>6} {:>6} {:>10}  {:<11} ERROR",
            "TENANT", "FROM", "TO", "DURATION", "RESULT"
        );
        for r in &reports {
            let mut result = r.result.as_str().to_owned();
            if let Some(w) = r.waited_ms {
                result.push_str(&format!(" (waited {w} ms for another run)"));
            }
            outln!(
                "{:<32} {:>6} {:>6} {:>8}ms  {:<11} {}",
                r.tenant,
                version(r.from),
                version(r.to),
                r.duration_ms,
                result,
                r.error.as_deref().unwrap_or("")
            );
        }
        let count = |k| reports.iter().filter(|r| r.result == k).count();
        use tenantry_pg::fleet::Result as R;
        outln!(
            "\n{} migrated, {} up to date, {} failed, {} skipped, {} not created.",
            count(R::Migrated),
            count(R::UpToDate),
            failed,
            count(R::Skipped),
            count(R::NotCreated)
        );
    }
    if failed > 0 {
        bail!("{failed} tenant(s) failed; each stays at its last good version. Fix the cause and run migrate again: only what is pending runs.");
    }
    Ok(0)
}

async fn status(common: &Common, json: bool) -> Result<u8> {
    let inventory = load(common)?;
    let migrations = tenantry_pg::Migrations::load(&inventory.paths.schema)?;
    let admin = tenantry_pg::Admin::from_url(inventory.server.admin_url.as_ref())?;
    let (_client, tenants) = fleet_tenants(&inventory, &admin).await?;
    let rows = tenantry_pg::fleet::status(&admin, &migrations, &tenants, jobs(common) * 4).await;
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
            "TENANT", "VERSION", "PENDING"
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
        match &self.bar {
            Some(bar) => {
                if r.result == tenantry_pg::fleet::Result::Failed {
                    bar.println(format!(
                        "{}: FAILED: {}",
                        r.tenant,
                        r.error.as_deref().unwrap_or("")
                    ));
                }
                bar.set_message(r.tenant.clone());
                bar.inc(1);
            }
            None if !self.quiet => errln!(
                "  {}: {} {} -> {} in {} ms{}",
                r.tenant,
                r.result.as_str(),
                version(r.from),
                version(r.to),
                r.duration_ms,
                r.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
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
