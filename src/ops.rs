//! Day-two operations on one tenant: rotate its users' passwords, back its
//! database up, restore it. Flags, checks and printing only; the work is in
//! `tenantry_pg::rotate` and `tenantry_pg::backup`.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};
use tenantry_layout::audit::Action;
use tenantry_manifest::{Group, Inventory, Tenant};
use tenantry_pg::{backup, rotate, Admin};

/// How long rotate and restore wait for a running apply of the fleet.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// The admin, and whether the tenant's managed database exists.
async fn admin_and_database(
    inventory: &Inventory,
    t: &Tenant,
) -> Result<(Admin, tokio_postgres::Client, bool)> {
    let admin = Admin::from_url(inventory.only_server()?.admin_url.as_ref())?;
    let client = admin.connect(None).await?;
    let name = t.name.to_string();
    let exists = tenantry_pg::introspect::managed_databases(
        &client,
        &inventory.fleet,
        std::slice::from_ref(&name),
    )
    .await?
    .contains(&name);
    Ok((admin, client, exists))
}

pub async fn rotate(inventory: &Inventory, tenant_name: &str, user: Option<&str>) -> Result<u8> {
    let t = crate::commands::tenant(inventory, tenant_name)?;
    // The gateway login rotates with the whole tenant, or alone by its name.
    let gateway = user.is_none_or(|u| u == t.gateway.name.as_str());
    let users: Vec<&tenantry_manifest::User> = match user {
        None => t.users.iter().collect(),
        Some(u) if u == t.gateway.name.as_str() => Vec::new(),
        Some(u) => match t.users.iter().find(|x| x.name.as_str() == u) {
            Some(x) => vec![x],
            None => bail!(
                "tenant {tenant_name} has no user '{u}' (users: {})",
                if t.users.is_empty() {
                    "none".to_owned()
                } else {
                    t.users
                        .iter()
                        .map(|x| x.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
        },
    };
    let admin = Admin::from_url(inventory.only_server()?.admin_url.as_ref())?;
    let client = admin.connect(None).await?;
    tenantry_pg::lock::acquire(&client, &inventory.fleet, LOCK_WAIT).await?;
    if !users.is_empty() {
        rotate::rotate(&client, &inventory.fleet, t, &users, &mut |u, how| {
            outln!("{}: {how}", u.name);
        })
        .await?;
    }
    if gateway {
        let how = rotate::rotate_gateway(&client, &inventory.fleet, t).await?;
        outln!("{}: {how}", t.gateway.name);
    }
    let mut rotated: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
    if gateway {
        rotated.push(t.gateway.name.as_str());
    }
    tenantry_pg::audit::note(
        &admin,
        tenant_name,
        Action::PasswordRotated,
        serde_json::json!({ "users": rotated }),
    )
    .await;
    drop(client); // releases the apply lock
    Ok(0)
}

pub async fn backup(inventory: &Inventory, tenant_name: &str, output: Option<&Path>) -> Result<u8> {
    let t = crate::commands::tenant(inventory, tenant_name)?;
    let (admin, client, exists) = admin_and_database(inventory, t).await?;
    let pg_dump = tenantry_localpg::client_tool("pg_dump");
    backup::check_tool(&client, &pg_dump).await?;
    drop(client);
    if !exists {
        bail!("the database of tenant {tenant_name} has not been created yet: run `tenantry apply` first");
    }
    let path = match output {
        Some(p) if p.is_dir() => p.join(backup::default_name(tenant_name)),
        Some(p) => p.to_path_buf(),
        None => inventory
            .paths
            .backups
            .join(backup::default_name(tenant_name)),
    };
    let size = backup::dump_to(
        &admin,
        &pg_dump,
        tenant_name,
        t.role(Group::Owner).as_str(),
        &path,
    )
    .await?;
    tenantry_pg::audit::note(
        &admin,
        tenant_name,
        Action::Backup,
        serde_json::json!({ "file": path.display().to_string(), "bytes": size }),
    )
    .await;
    outln!(
        "Backed up {tenant_name} to {} ({size} bytes{}, mode 0600).",
        path.display(),
        human_size(size)
    );
    Ok(0)
}

/// `, 18.5 KiB` from 1 KiB up; empty below.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return String::new();
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!(", {v:.1} {}", UNITS[unit])
}

pub async fn restore(
    inventory: &Inventory,
    tenant_name: &str,
    file: &Path,
    force: bool,
) -> Result<u8> {
    let t = crate::commands::tenant(inventory, tenant_name)?;
    let pg_restore = tenantry_localpg::client_tool("pg_restore");
    // The file first: a bad one touches nothing.
    let archive = backup::inspect(&pg_restore, tenant_name, file).await?;
    let (admin, client, exists) = admin_and_database(inventory, t).await?;
    backup::check_tool(&client, &pg_restore).await?;
    if !exists {
        bail!("the database of tenant {tenant_name} has not been created yet: run `tenantry apply` first, then restore into it");
    }
    if archive.dbname != tenant_name && !force {
        bail!(
            "{} is a dump of database '{}', not of {tenant_name}: refusing to restore it here (re-run with --force to load it anyway). Nothing was changed.",
            file.display(),
            archive.dbname
        );
    }
    tenantry_pg::lock::acquire(&client, &inventory.fleet, LOCK_WAIT).await?;
    let owner = t.role(Group::Owner);
    let full = backup::tables_with_rows(&admin, tenant_name, owner.as_str()).await?;
    if !full.is_empty() && !force {
        bail!(
            "{tenant_name} is not empty: table(s) {} have rows. Re-run with --force to replace its data with the dump's. Nothing was changed.",
            full.join(", ")
        );
    }
    let desired = tenantry_plan::Desired::from_inventory(inventory, None, |_| {
        Ok::<_, std::convert::Infallible>(None)
    })
    .unwrap_or_else(|e| match e {});
    let desired_tenant = desired
        .tenants
        .iter()
        .find(|d| d.name == tenant_name)
        .expect("the tenant is in the inventory");
    let restored = backup::restore(&admin, &pg_restore, desired_tenant, &archive, file).await?;
    tenantry_pg::audit::note(
        &admin,
        tenant_name,
        Action::Restore,
        serde_json::json!({
            "file": file.display().to_string(),
            "dump_of": archive.dbname,
            "made": archive.created,
            "replaced": full,
        }),
    )
    .await;
    drop(client); // releases the apply lock
    outln!(
        "Restored {tenant_name} from {} (a dump of {}{}).",
        file.display(),
        archive.dbname,
        if archive.created.is_empty() {
            String::new()
        } else {
            format!(" made {}", archive.created)
        }
    );
    if !full.is_empty() {
        outln!("  replaced the rows of: {}", full.join(", "));
    }
    if restored.trail > 0 {
        outln!(
            "  audit entries and usage days of the dump added back: {}",
            restored.trail
        );
    }
    outln!(
        "  tables restored with their rows: {}",
        if restored.tables.is_empty() {
            "none".to_owned()
        } else {
            restored.tables.join(", ")
        }
    );
    outln!("  owner {owner}, tenantry's grants re-applied; API tokens kept as they were (not restored).");
    let latest = tenantry_pg::Migrations::load(&inventory.paths.schema)
        .ok()
        .and_then(|m| m.latest());
    match (restored.schema_version, latest) {
        (Some(v), Some(l)) if v < l => outln!(
            "  schema version V{v} (from the dump); {} has V{l}: run `tenantry migrate` to bring it up to date.",
            inventory.paths.schema.display()
        ),
        (Some(v), _) => outln!("  schema version V{v}."),
        (None, _) => outln!("  the dump has no migration history."),
    }
    Ok(0)
}
