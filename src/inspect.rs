//! `tenantry list` and `tenantry show`: what the file says about each
//! tenant next to what its server has and what apply would change there,
//! or why that is unknown. Every server is read at once
//! (`tenantry_pg::sessions`); when a server cannot be read, the file's side
//! is still printed, then the command fails naming it.

use std::fmt::Write as _;

use anyhow::{bail, Result};
use tenantry_manifest::{Group, Inventory, Tenant};
use tenantry_pg::sessions::{self, Sessions};
use tenantry_plan::plan::Action;
use tenantry_plan::{Observed, Plan};

/// What the server of one tenant has and what apply would change there, or
/// why that is unknown.
type ServerView<'a> = std::result::Result<(&'a Observed, &'a Plan), String>;

/// One tenant's server (for a file with several) and its view.
struct Where<'a> {
    server: Option<&'a str>,
    view: ServerView<'a>,
}

/// Why nothing could be read, for a failure before any server was.
fn why_not(e: &tenantry_pg::Error) -> String {
    match e {
        tenantry_pg::Error::Connect { .. } => "unknown (cannot connect)".to_owned(),
        _ => "unknown (cannot read the server)".to_owned(),
    }
}

/// Where `tenant` is, from every server's session.
fn locate<'a>(
    read: &'a std::result::Result<Sessions, tenantry_pg::Error>,
    tenant: &str,
) -> Where<'a> {
    let s = match read {
        Ok(s) => s,
        Err(e) => {
            return Where {
                server: None,
                view: Err(why_not(e)),
            }
        }
    };
    // A conflict first: its server's session holds it (so that nothing is
    // planned as a destroy there), not as in sync.
    if s.held.iter().any(|h| h.tenant == tenant && h.conflict) {
        return Where {
            server: s.of(tenant).map(|on| on.name.as_str()),
            view: Err("conflict (see plan)".to_owned()),
        };
    }
    if let Some(on) = s.of(tenant) {
        return Where {
            server: Some(on.name.as_str()),
            view: match &on.session {
                Ok(session) => Ok((&session.observed, &session.plan)),
                Err(e) => Err(format!("{} on server {}", why_not(e), on.name)),
            },
        };
    }
    let why = match s.held.iter().find(|h| h.tenant == tenant) {
        Some(h) if h.conflict => "conflict (see plan)",
        _ => "unknown (a server cannot be read; see plan)",
    };
    Where {
        server: None,
        view: Err(why.to_owned()),
    }
}

/// Tenants the servers hold that the file does not name: (server, tenant).
fn leftovers(read: &std::result::Result<Sessions, tenantry_pg::Error>) -> Vec<(&str, &str)> {
    let Ok(s) = read else { return Vec::new() };
    s.servers
        .iter()
        .filter_map(|on| on.session.as_ref().ok().map(|session| (on, session)))
        .flat_map(|(on, session)| {
            session
                .plan
                .tenants
                .iter()
                .filter(|p| p.action == Action::Destroy)
                .map(move |p| (on.name.as_str(), p.tenant.as_str()))
        })
        .collect()
}

/// Fails naming what could not be read, after the table was printed.
fn check(read: std::result::Result<Sessions, tenantry_pg::Error>) -> Result<u8> {
    let s = read?;
    let unreachable: Vec<&str> = s
        .servers
        .iter()
        .filter(|on| on.session.is_err())
        .map(|on| on.name.as_str())
        .collect();
    if let Some(first) = s.servers.iter().find_map(|on| on.session.as_ref().err()) {
        if s.servers.len() == 1 {
            return Err(anyhow::anyhow!("{first}"));
        }
        bail!(
            "server(s) {} could not be read ({first}{})",
            unreachable.join(", "),
            if unreachable.len() > 1 { ", ..." } else { "" }
        );
    }
    Ok(0)
}

pub async fn list(inventory: &Inventory, jobs: usize) -> Result<u8> {
    let read = sessions::open(inventory, jobs * 4, None).await;
    let several = inventory.servers.len() > 1;
    out!(
        "{}",
        list_text(inventory, &|t| locate(&read, t), &leftovers(&read), several)
    );
    check(read)
}

/// The table of `list`.
fn list_text<'a>(
    inventory: &Inventory,
    of: &dyn Fn(&str) -> Where<'a>,
    leftovers: &[(&str, &str)],
    several: bool,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<32} {:<14} {:<10} {:<6} {:<8} SERVER",
        "TENANT", "PLAN", "STATUS", "USERS", "SCHEMA"
    );
    for t in &inventory.tenants {
        let at = of(t.name.as_str());
        let (state, schema) = match &at.view {
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
            Err(why) => (why.as_str(), "?".to_owned()),
        };
        let state = match at.server {
            Some(server) if several => format!("{server}: {state}"),
            _ => state.to_owned(),
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
    for (server, tenant) in leftovers {
        let _ = writeln!(
            out,
            "{:<32} {:<14} {:<10} {:<6} {:<8} {}not in {} (apply --allow-destroy drops it)",
            tenant,
            "-",
            "-",
            "-",
            "-",
            if several {
                format!("{server}: ")
            } else {
                String::new()
            },
            inventory.path.display()
        );
    }
    out
}

pub async fn show(inventory: &Inventory, name: &str) -> Result<u8> {
    let t = crate::commands::tenant(inventory, name)?;
    let read = sessions::open(inventory, crate::cli::DEFAULT_JOBS * 4, None).await;
    let at = locate(&read, name);
    let several = inventory.servers.len() > 1;
    out!("{}", show_text(inventory, t, &at, several));
    check(read)
}

/// What `show` prints about `t`.
fn show_text(inventory: &Inventory, t: &Tenant, at: &Where<'_>, several: bool) -> String {
    let server = &at.view;
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
    if several {
        let pin = match &t.server {
            Some(pin) if Some(pin.as_str()) == at.server => " (pinned)".to_owned(),
            Some(pin) => format!(" (pinned to {pin})"),
            None => String::new(),
        };
        let _ = writeln!(out, "server       {}{pin}", at.server.unwrap_or("-"));
    }
    let _ = writeln!(out, "subdomain    {}", t.subdomain);
    if !t.domains.is_empty() {
        let _ = writeln!(out, "domains      {}", t.domains.join(", "));
    }
    let database = match server {
        Err(why) => why.clone(),
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
        Err(why) => why.clone(),
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
            Err(why) => why.clone(),
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
        Err(why) => why.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let unknown = |_: &str| Where {
            server: None,
            view: Err(why.to_owned()),
        };
        let list = list_text(&inv, &unknown, &[], false);
        let row = list.lines().find(|l| l.starts_with("shop ")).unwrap();
        assert!(row.contains("starter") && row.contains("active"), "{list}");
        assert!(row.ends_with(why), "{list}");
        let show = show_text(&inv, &inv.tenants[0], &unknown("shop"), false);
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
        let known = |_: &str| Where {
            server: Some("default"),
            view: Ok((&observed, &plan)),
        };
        let list = list_text(&inv, &known, &[], false);
        assert!(list.contains("missing (apply creates it)"), "{list}");
    }
}
