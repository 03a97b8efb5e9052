//! `tenantry token create | list | revoke` and the demo token of `tenantry
//! up`: flags in, output out. The store itself is `tenantry_pg::tokens`'.

use std::path::Path;

use anyhow::{bail, Context as _, Result};
use secrecy::{ExposeSecret, SecretString};
use tenantry_manifest::{Group, Inventory};
use tenantry_pg::tokens::Store;

async fn open(inventory: &Inventory, tenant: &str) -> Result<Store> {
    let t = crate::commands::tenant(inventory, tenant)?;
    let admin = tenantry_pg::Admin::from_url(inventory.only_server()?.admin_url.as_ref())?;
    Ok(Store::open(&admin, &t.name).await?)
}

/// Creates a token and returns it (shown once, stored hashed).
pub async fn create(
    inventory: &Inventory,
    tenant: &str,
    role: Group,
    label: &str,
) -> Result<(i64, SecretString)> {
    Ok(open(inventory, tenant).await?.create(role, label).await?)
}

pub async fn list(inventory: &Inventory, tenant: &str, json: bool) -> Result<u8> {
    let list = open(inventory, tenant).await?.list().await?;
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

pub async fn revoke(inventory: &Inventory, tenant: &str, id: i64) -> Result<u8> {
    if open(inventory, tenant).await?.revoke(id).await? {
        outln!("Token {id} of {tenant} revoked (gateways stop accepting it within their token cache time).");
        Ok(0)
    } else {
        bail!("tenant {tenant} has no live token {id}")
    }
}

/// A developer token for the demo curl line of `tenantry up`, kept (0600)
/// beside the generated passwords and reused while it is still valid.
pub async fn demo(inventory: &Inventory, tenant: &str) -> Result<SecretString> {
    let path = inventory.paths.secrets.join(format!("{tenant}.token"));
    let store = open(inventory, tenant).await?;
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = SecretString::from(existing.trim().to_owned());
        if store.is_live(&existing).await? {
            return Ok(existing);
        }
    }
    let (_, token) = store.create(Group::Developer, "tenantry up").await?;
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
