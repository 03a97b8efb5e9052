//! How each command is carried out: load the inventory, open a session,
//! print, confirm, apply. Exit codes: 0 ok (or no changes), 1 error,
//! 2 changes pending (`plan --detailed-exitcode`), 141 standard output
//! closed early (see `output.rs`).

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use secrecy::SecretString;
use tenantry_manifest::{Inventory, Tenant, ADMIN_URL_ENV};

use crate::cli::{ApplyFlags, Cli, Command, Common, ServeFlags, TokenCommand};

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
        } => crate::provision::plan(&load(&common)?, jobs.get(), json, detailed_exitcode).await,
        Command::Apply {
            common,
            jobs,
            apply,
        } => crate::provision::apply(&load(&common)?, jobs.get(), &apply).await,
        Command::Migrate { common, flags } => {
            let inventory = load(&common)?;
            if flags.status {
                crate::migrations::status(
                    &inventory,
                    flags.jobs.map_or(crate::cli::DEFAULT_JOBS, usize::from),
                    flags.json,
                )
                .await
            } else {
                crate::migrations::migrate(&inventory, &flags).await
            }
        }
        Command::Status { common, jobs, json } => {
            crate::migrations::status(&load(&common)?, jobs.get(), json).await
        }
        Command::List { common, jobs } => crate::inspect::list(&load(&common)?, jobs.get()).await,
        Command::Servers { common, json } => crate::servers::servers(&common, json).await,
        Command::Show { common, tenant } => crate::inspect::show(&load(&common)?, &tenant).await,
        Command::Usage { common, jobs, json } => {
            crate::activity::usage(&load(&common)?, jobs.get(), json).await
        }
        Command::Audit {
            common,
            tenant,
            since,
            limit,
            json,
        } => {
            let inventory = for_tenant(&common, &tenant, New::Placed).await?;
            crate::activity::audit(&inventory, &tenant, since, limit, json).await
        }
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
        } => crate::env::env(
            &for_tenant(&common, &tenant, New::Pinned).await?,
            &tenant,
            role,
            user.as_deref(),
            &format,
        ),
        Command::ImportTfvars {
            tfvars,
            output,
            force,
        } => crate::switch::import_tfvars(&tfvars, &output, force),
        Command::Adopt {
            common,
            tenant,
            dry_run,
        } => {
            let inventory = for_tenant(&common, &tenant, New::Placed).await?;
            crate::switch::adopt(&inventory, &common, &tenant, dry_run).await
        }
        Command::Rotate {
            common,
            tenant,
            user,
        } => {
            let inventory = for_tenant(&common, &tenant, New::Placed).await?;
            crate::ops::rotate(&inventory, &tenant, user.as_deref()).await
        }
        Command::Backup {
            common,
            tenant,
            output,
        } => {
            let inventory = for_tenant(&common, &tenant, New::Placed).await?;
            crate::ops::backup(&inventory, &tenant, output.as_deref()).await
        }
        Command::Restore {
            common,
            tenant,
            file,
            force,
        } => {
            let inventory = for_tenant(&common, &tenant, New::Placed).await?;
            crate::ops::restore(&inventory, &tenant, &file, force).await
        }
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

/// Loads and validates the inventory; `--admin-url` wins over file and env
/// (for a file with one server).
pub(crate) fn load(common: &Common) -> Result<Inventory> {
    load_with(common, tenantry_manifest::Secrets::Required)
}

/// What [`for_tenant`] does with a tenant that has no database yet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum New {
    /// Works on the server placement gives it (the command reports the
    /// missing database as it does on one server; `adopt` finds an
    /// unmanaged database there, as placement goes where the name is taken).
    Placed,
    /// Needs a pin (`env`: a DSN must not name a server apply may not
    /// choose in the end).
    Pinned,
}

/// The file cut down to the server tenant `name` lives on (whatever its pin
/// says) or would be created on, for the commands that work on one tenant;
/// a file with one server is returned whole. Every server is read to find
/// it: the catalogs are the only record of where a tenant lives.
pub(crate) async fn for_tenant(common: &Common, name: &str, new: New) -> Result<Inventory> {
    use tenantry_plan::placement::Placement;
    let inventory = load(common)?;
    if inventory.servers.len() == 1 {
        return Ok(inventory);
    }
    tenant(&inventory, name)?;
    let located = tenantry_pg::sessions::locate(&inventory, None).await?;
    let server = match located.placement.get(name) {
        Some(Placement::New { server, pinned, .. }) if *pinned || new == New::Placed => server,
        Some(Placement::New { server, .. }) => bail!(
            "tenant {name} is not created yet (apply would create it on server {server}, unless other changes place it elsewhere): run `tenantry apply` first, or pin it with server = \"<name>\" in [tenants.{name}] of {} (servers: {})",
            inventory.path.display(),
            inventory.servers.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
        _ => match located.in_use_on(name) {
            Some(server) => server,
            None => match located.held().into_iter().find(|h| h.tenant == name) {
                Some(h) => bail!("tenant {name}: {}", h.reason),
                None => bail!("tenant {name}: not found on any server"),
            },
        },
    };
    Ok(inventory.share(server, &|t| t == name))
}

/// The inventory with `--admin-url` applied (refused for a file with
/// several servers), whatever its number of servers.
pub(crate) fn load_with(common: &Common, secrets: tenantry_manifest::Secrets) -> Result<Inventory> {
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
        skip_unreachable: false,
    };
    let code = crate::provision::apply(&inventory, jobs, &flags).await?;
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
            let inventory = for_tenant(&common, &tenant, New::Placed).await?;
            let (id, token) = crate::tokens::create(&inventory, &tenant, role, &label).await?;
            errln!("Token {id} for {tenant} ({role}); it is shown only this once:");
            outln!("{}", secrecy::ExposeSecret::expose_secret(&token));
            Ok(0)
        }
        TokenCommand::List {
            common,
            tenant,
            json,
        } => {
            let inventory = for_tenant(&common, &tenant, New::Placed).await?;
            crate::tokens::list(&inventory, &tenant, json).await
        }
        TokenCommand::Revoke { common, tenant, id } => {
            let inventory = for_tenant(&common, &tenant, New::Placed).await?;
            crate::tokens::revoke(&inventory, &tenant, id).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

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
