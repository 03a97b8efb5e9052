//! Switching from the Terraform workflow: `import-tfvars` (tenants.tfvars ->
//! tenants.toml) and `adopt` (take over a tenant Terraform created).

use std::io::Write as _;
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use tenantry_manifest::Inventory;
use tenantry_tfvars as tfvars;

use crate::cli::Common;

pub fn import_tfvars(path: &Path, output: &Path, force: bool) -> Result<u8> {
    let source =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let converted = tfvars::convert(&source, path)?;
    let to_stdout = output == Path::new("-");
    if to_stdout {
        out!("{}", converted.toml);
    } else {
        if output.exists() && !force {
            bail!(
                "{} exists: pass --force to replace it, or -o another path (nothing was written)",
                output.display()
            );
        }
        // Whole file or nothing: write beside it, then rename.
        let dir = output
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir)
            .with_context(|| format!("cannot write in {}", dir.display()))?;
        tmp.write_all(converted.toml.as_bytes())?;
        tmp.as_file().sync_all()?;
        tmp.persist(output)
            .with_context(|| format!("cannot write {}", output.display()))?;
        errln!(
            "Wrote {} ({} tenant(s)) from {}.",
            output.display(),
            converted.toml.matches("\n[tenants.").count(),
            path.display()
        );
    }
    for note in &converted.notes {
        errln!("note: {note}");
    }
    if !converted.env_vars.is_empty() {
        errln!("\nSet these before `tenantry plan` (the passwords the tfvars held):");
        for v in &converted.env_vars {
            errln!("  export {}=...   # {} of {}", v.name, v.username, v.tenant);
        }
    }
    if !to_stdout {
        errln!(
            "\nNext: `tenantry validate -c {0}`, then for each tenant Terraform made: `tenantry adopt <tenant> -c {0}`, then `tenantry plan -c {0}`.",
            output.display()
        );
    }
    Ok(0)
}

pub async fn adopt(
    inventory: &Inventory,
    common: &Common,
    tenant: &str,
    dry_run: bool,
) -> Result<u8> {
    crate::commands::tenant(inventory, tenant)?;
    let report = tenantry_pg::adopt::adopt(
        inventory,
        tenant,
        dry_run,
        std::time::Duration::from_secs(30),
    )
    .await?;
    let a = &report.adoption;
    for n in &a.notes {
        outln!("  note: {n}");
    }
    if !a.problems.is_empty() {
        for p in &a.problems {
            outln!("  MISMATCH: {p}");
        }
        bail!(
            "{tenant} does not match {}: {} mismatch(es) above. Nothing was changed.",
            common.config.display(),
            a.problems.len()
        );
    }
    if a.already_managed {
        return Ok(0);
    }
    let steps = a.cluster_sql.len()
        + a.database_sql.len()
        + a.database_after_sql.len()
        + a.marker_sql.len();
    if dry_run {
        outln!("{tenant} can be adopted ({steps} statement(s)); nothing was changed (--dry-run):");
        for sql in a
            .cluster_sql
            .iter()
            .chain(&a.database_sql)
            .chain(&a.database_after_sql)
            .chain(&a.marker_sql)
        {
            outln!("    {sql};");
        }
        return Ok(0);
    }
    outln!(
        "Adopted {tenant}: it is now managed by fleet '{}'; no data was touched.",
        inventory.fleet
    );
    outln!("Run `tenantry plan` to see the grants and settings apply will repair.");
    Ok(0)
}
