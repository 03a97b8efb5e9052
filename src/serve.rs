//! How `serve` and `token` are carried out: build the gateway's snapshot from
//! tenants.toml (or `DATABASE_DSN`), listen, reload, shut down on a signal;
//! create, list and revoke tokens in a tenant's database.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use secrecy::{ExposeSecret, SecretString};
use tenantry_gateway::listen::{self, Listen, Shutdown};
use tenantry_gateway::server::{Gateway, Options};
use tenantry_gateway::snapshot::Snapshot;
use tenantry_gateway::{pools, reload, tokens};
use tenantry_manifest::{Group, Inventory};

use crate::cli::{Common, ServeFlags};

/// The gateway's settings from the flags.
fn settings(flags: &ServeFlags) -> pools::Settings {
    pools::Settings {
        budget: flags.max_connections,
        checkout_timeout: flags.checkout_timeout,
        idle_timeout: flags.idle_timeout,
        connect_timeout: flags.connect_timeout,
        backoff_min: Duration::from_secs(1),
        backoff_max: Duration::from_secs(30),
    }
}

fn listen(flags: &ServeFlags) -> Result<Listen> {
    let tls = match (&flags.tls_cert, &flags.tls_key) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        (None, None) => None,
        _ => bail!("--tls-cert and --tls-key go together"),
    };
    Ok(Listen {
        tls,
        drain_timeout: flags.drain_timeout,
        header_timeout: flags.header_timeout,
        idle_timeout: flags.keepalive_timeout,
        max_clients: flags.max_clients as usize,
        shutdown_delay: flags.shutdown_delay,
        ..Listen::new(flags.listen, flags.admin_listen)
    })
}

/// Serves until SIGTERM or Ctrl-C: the tenants of `inventory`, or without
/// one, the single database of `DATABASE_DSN` (single-tenant mode). The
/// admin URL of `common` (`--admin-url`, or the server `up` started) keeps
/// applying across reloads.
pub async fn serve(
    common: &Common,
    flags: &ServeFlags,
    inventory: Option<Inventory>,
) -> Result<u8> {
    let (snapshot, file) = match inventory {
        Some(inv) => (
            Snapshot::from_inventory(&inv).map_err(anyhow::Error::msg)?,
            Some(common.config.clone()),
        ),
        None => {
            let dsn = std::env::var("DATABASE_DSN")
                .ok()
                .filter(|v| !v.is_empty())
                .with_context(|| {
                    format!(
                        "no {} and no DATABASE_DSN: nothing to serve",
                        common.config.display()
                    )
                })?;
            (
                Snapshot::single_tenant(
                    &SecretString::from(dsn),
                    flags.pool_size,
                    flags.requests_per_second,
                )
                .map_err(anyhow::Error::msg)?,
                None,
            )
        }
    };
    let mode = match &snapshot.single {
        Some(t) => format!("single-tenant mode: database {}", t.info.name),
        None => format!(
            "{} tenant(s) from {}",
            snapshot.tenants.len(),
            common.config.display()
        ),
    };
    let options = Options {
        token_ttl: flags.token_ttl,
        unauthenticated_per_second: flags.unauthenticated_rps,
    };
    reload::warn_unavailable_logins(&snapshot);
    let gateway = Gateway::new(snapshot, settings(flags), options);
    let listen = listen(flags)?;
    let listeners = listen::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {} / {}", listen.api, listen.admin))?;
    let scheme = if listen.tls.is_some() {
        "https"
    } else {
        "http"
    };
    // Signal handlers and the reloader are in place before the line that
    // says the gateway serves: a SIGTERM or SIGHUP sent right after it must
    // not meet the default action (the end of the process).
    let shutdown = shutdown_signal()?;
    let reloader = file.map(|path| {
        let admin_url = common.admin_url.clone().map(SecretString::from);
        reload::spawn_reloader(
            gateway.clone(),
            path,
            reload::loader(admin_url),
            flags.reload_interval,
        )
    });
    outln!(
        "Gateway serving {mode} on {scheme}://{} (admin: http://{}); Ctrl-C or SIGTERM stops it.",
        listeners.0.local_addr()?,
        listeners.1.local_addr()?
    );
    listen::serve(gateway, listeners, &listen, shutdown).await?;
    if let Some(r) = reloader {
        r.abort();
    }
    outln!("Gateway stopped.");
    Ok(0)
}

/// Resolves on SIGTERM (an orchestrator: let the load balancer see /readyz
/// fail first) or Ctrl-C (a person: stop now). The handlers are installed
/// when this is called, not when the future is first polled.
fn shutdown_signal() -> Result<impl std::future::Future<Output = Shutdown>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => Shutdown::Now,
            _ = term.recv() => Shutdown::Graceful,
        }
    })
}

/// A connection to the tenant's database acting as its owner, with the token
/// store in place.
async fn token_store(inventory: &Inventory, tenant: &str) -> Result<tokio_postgres::Client> {
    let t = crate::commands::tenant(inventory, tenant)?;
    let admin = tenantry_pg::Admin::from_url(inventory.server.admin_url.as_ref())?;
    let client = admin.connect(Some(tenant)).await?;
    let groups = tenantry_plan::sql::idents(Group::MEMBERS.iter().map(|&g| t.role(g).to_string()));
    client
        .batch_execute(&format!(
            "SET ROLE {};\n{}",
            tenantry_plan::sql::ident(t.role(Group::Owner).as_str()),
            tokens::schema_sql(&groups)
        ))
        .await
        .with_context(|| {
            format!("preparing the token store of {tenant} (has `tenantry apply` created it?)")
        })?;
    Ok(client)
}

/// Creates a token and returns it (shown once, stored hashed).
pub async fn create_token(
    inventory: &Inventory,
    tenant: &str,
    role: &str,
    label: &str,
) -> Result<(i64, SecretString)> {
    if !tokens::ROLES.contains(&role) {
        bail!("--role must be one of admin, developer, customer");
    }
    let client = token_store(inventory, tenant).await?;
    let token = tokens::generate();
    let id = tokens::insert(&client, role, label, &tokens::hash(token.expose_secret())).await?;
    Ok((id, token))
}

pub async fn list_tokens(inventory: &Inventory, tenant: &str, json: bool) -> Result<u8> {
    let client = token_store(inventory, tenant).await?;
    let list = tokens::list(&client).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(0);
    }
    outln!(
        "{:>6}  {:<10} {:<24} {:<32} REVOKED",
        "ID",
        "ROLE",
        "LABEL",
        "CREATED"
    );
    for t in list {
        outln!(
            "{:>6}  {:<10} {:<24} {:<32} {}",
            t.id,
            t.role,
            t.label,
            t.created_at,
            t.revoked_at.unwrap_or_else(|| "-".into())
        );
    }
    Ok(0)
}

pub async fn revoke_token(inventory: &Inventory, tenant: &str, id: i64) -> Result<u8> {
    let client = token_store(inventory, tenant).await?;
    if tokens::revoke(&client, id).await? {
        outln!("Token {id} of {tenant} revoked (gateways stop accepting it within their token cache time).");
        Ok(0)
    } else {
        bail!("tenant {tenant} has no live token {id}")
    }
}

/// A developer token for the demo curl line of `tenantry up`, kept (0600)
/// beside the generated passwords and reused while it is still valid.
pub async fn demo_token(inventory: &Inventory, tenant: &str) -> Result<SecretString> {
    let path = inventory.paths.secrets.join(format!("{tenant}.token"));
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim().to_owned();
        let client = token_store(inventory, tenant).await?;
        let live: bool = client
            .query_one(
                "SELECT count(*) > 0 FROM tenantry.tokens WHERE hash = $1 AND revoked_at IS NULL",
                &[&tokens::hash(&existing)],
            )
            .await?
            .get(0);
        if live {
            return Ok(SecretString::from(existing));
        }
    }
    let (_, token) = create_token(inventory, tenant, "developer", "tenantry up").await?;
    write_private(&path, token.expose_secret())?;
    Ok(token)
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        tenantry_manifest::create_private_dir(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(f, "{text}")?;
    Ok(())
}
