//! `tenantry env`: what a per-tenant container needs to reach its database,
//! as env lines, JSON or a Kubernetes Secret. The DSN carries the password
//! (from the same source the provisioner uses); this command is the only place
//! it is ever printed, and only because it was asked for.

use std::fmt::Write as _;

use anyhow::{bail, Context as _, Result};
use secrecy::ExposeSecret;
use tenantry_manifest::{Group, Inventory, Tenant, User};
use tenantry_pgconn::{Endpoint, ServerAddress};

/// The variables, in output order.
struct Vars {
    tenant: String,
    role: Group,
    pairs: Vec<(&'static str, String)>,
}

pub fn env(
    inventory: &Inventory,
    tenant: &str,
    role: Group,
    user: Option<&str>,
    format: &str,
) -> Result<u8> {
    let vars = vars(inventory, tenant, role, user)?;
    out!(
        "{}",
        match format {
            "json" => json(&vars),
            "k8s-secret" => k8s_secret(&vars),
            _ => env_lines(&vars),
        }
    );
    Ok(0)
}

fn pick<'a>(t: &'a Tenant, role: Group, user: Option<&str>) -> Result<&'a User> {
    if let Some(name) = user {
        return t
            .users
            .iter()
            .find(|u| u.name.as_str() == name)
            .with_context(|| {
                format!(
                    "tenant {} has no user {name}; its users: {}",
                    t.name,
                    t.users
                        .iter()
                        .map(|u| u.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
    }
    t.users_in(role).next().with_context(|| {
        let has: Vec<&str> = Group::MEMBERS
            .into_iter()
            .filter(|&g| t.users_in(g).next().is_some())
            .map(Group::as_str)
            .collect();
        format!(
            "tenant {} has no {role} user; it has: {}. Add one to tenants.toml or pass --role",
            t.name,
            if has.is_empty() {
                "no users".to_owned()
            } else {
                has.join(", ")
            }
        )
    })
}

fn vars(inventory: &Inventory, tenant: &str, role: Group, user: Option<&str>) -> Result<Vars> {
    let t = crate::commands::tenant(inventory, tenant)?;
    let u = pick(t, role, user)?;
    let password = u.load_password()?.with_context(|| {
        format!(
            "{}'s password is generated on the first apply and there is none yet ({}): run `tenantry apply` first",
            u.name,
            u.password.describe()
        )
    })?;
    let dsn = endpoint(inventory)?.dsn(u.name.as_str(), &password, t.name.as_str());
    Ok(Vars {
        tenant: t.name.to_string(),
        role: u.group,
        pairs: vec![
            ("DATABASE_DSN", dsn.expose_secret().to_owned()),
            ("TENANT_NAME", t.name.to_string()),
            ("TENANT_SUBDOMAIN", t.subdomain.clone()),
        ],
    })
}

/// Where applications connect: `[server] app_*`, else the admin URL's.
fn endpoint(inventory: &Inventory) -> Result<Endpoint> {
    let server = inventory.only_server()?;
    let admin =
        match &server.admin_url {
            Some(url) => Some(ServerAddress::parse(url).map_err(|e| {
                anyhow::anyhow!("the admin URL is not a valid connection string: {e}")
            })?),
            None => None,
        };
    match Endpoint::new(
        admin.as_ref(),
        server.app_host.as_deref(),
        server.app_port,
        server.app_sslmode.as_deref(),
    ) {
        Some(e) => Ok(e),
        None => bail!(
            "no host for the DSN: set [server] app_host (or admin_url / TENANTRY_ADMIN_URL) in {}",
            inventory.path.display()
        ),
    }
}

/// `KEY=value` lines: every value is made of URL-safe characters only, so the
/// lines read the same in `docker --env-file`, compose and a shell.
fn env_lines(v: &Vars) -> String {
    v.pairs
        .iter()
        .map(|(k, val)| format!("{k}={val}\n"))
        .collect()
}

fn json(v: &Vars) -> String {
    let map: serde_json::Map<String, serde_json::Value> = v
        .pairs
        .iter()
        .map(|(k, val)| ((*k).to_owned(), serde_json::Value::String(val.clone())))
        .collect();
    format!("{}\n", serde_json::Value::Object(map))
}

/// The Secret's name: `tenantry-<tenant with '_' as '-'>-<role>` (DNS-1123).
pub fn secret_name(tenant: &str, role: Group) -> String {
    format!("tenantry-{}-{}", tenant.replace('_', "-"), role.as_str())
}

/// A Kubernetes Secret manifest; values are JSON strings, which YAML reads as
/// double-quoted scalars.
fn k8s_secret(v: &Vars) -> String {
    let q = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
    let mut out = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {}\n  labels:\n    app.kubernetes.io/part-of: tenantry\n    tenantry.dev/tenant: {}\n    tenantry.dev/role: {}\ntype: Opaque\nstringData:\n",
        secret_name(&v.tenant, v.role),
        q(&v.tenant),
        v.role.as_str()
    );
    for (k, val) in &v.pairs {
        let _ = writeln!(out, "  {k}: {}", q(val));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars {
            tenant: "building_shop".into(),
            role: Group::Developer,
            pairs: vec![
                (
                    "DATABASE_DSN",
                    "postgres://u:p%40ss@h:5432/building_shop".into(),
                ),
                ("TENANT_NAME", "building_shop".into()),
                ("TENANT_SUBDOMAIN", "building".into()),
            ],
        }
    }

    #[test]
    fn formats() {
        let v = vars();
        assert_eq!(
            env_lines(&v),
            "DATABASE_DSN=postgres://u:p%40ss@h:5432/building_shop\nTENANT_NAME=building_shop\nTENANT_SUBDOMAIN=building\n"
        );
        let j: serde_json::Value = serde_json::from_str(&json(&v)).unwrap();
        assert_eq!(j["TENANT_SUBDOMAIN"], "building");
        let k = k8s_secret(&v);
        assert!(
            k.contains("  name: tenantry-building-shop-developer\n"),
            "{k}"
        );
        assert!(k.contains("  TENANT_NAME: \"building_shop\"\n"), "{k}");
    }
}
