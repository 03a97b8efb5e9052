//! Plans as text a terraform user recognises (`+` create, `~` change,
//! `-` destroy, a summary line) and as JSON. Passwords never appear: only
//! their source, or "(changed)".

use std::fmt::Write;
use tenantry_layout::Kind;

use crate::plan::{Action, Change, Plan, Sign};

fn mark(sign: Sign) -> char {
    match sign {
        Sign::Add => '+',
        Sign::Change => '~',
        Sign::Destroy => '-',
    }
}

/// The plan as text. Ends with the summary line (or "No changes.").
pub fn text(plan: &Plan) -> String {
    let mut out = String::new();
    for c in &plan.conflicts {
        let _ = writeln!(
            out,
            "error: tenant {}: {} {} {}; tenantry will not take it over (rename the tenant, or drop or rename the existing {})",
            c.tenant, c.object, c.name, c.reason, c.object
        );
        if c.reason.ends_with("not managed by tenantry") {
            let _ = writeln!(
                out,
                "  help: if another tool (e.g. Terraform) made it for this tenant, `tenantry adopt {}` checks it and takes it over, keeping the data",
                c.tenant
            );
        }
    }
    for w in &plan.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    if !plan.conflicts.is_empty() || !plan.warnings.is_empty() {
        out.push('\n');
    }
    if plan.is_empty() {
        out.push_str("No changes. The cluster matches the inventory.\n");
        return out;
    }
    out.push_str("Tenantry will perform the following actions:\n\n");
    for t in &plan.tenants {
        let (sign, note) = match t.action {
            Action::Create => ('+', "will be created"),
            Action::Update => ('~', "will be updated in place"),
            Action::Destroy => ('-', "will be destroyed (database backed up first)"),
        };
        let _ = writeln!(out, "  {sign} tenant {} {note}", t.tenant);
        for c in &t.changes {
            let _ = writeln!(out, "      {} {}", mark(c.sign()), line(c));
            for d in diffs(c) {
                let _ = writeln!(out, "          {}: {} -> {}", d.what, d.old, d.new);
            }
        }
        out.push('\n');
    }
    let (add, change, destroy) = plan.counts();
    let _ = writeln!(
        out,
        "Plan: {add} to add, {change} to change, {destroy} to destroy."
    );
    let protected = plan.protected_destroys();
    if !protected.is_empty() {
        let _ = writeln!(
            out,
            "\nNote: {} {} deletion_protection; apply will refuse to destroy it until protection is turned off (set deletion_protection = false and apply) and --allow-destroy is given.",
            protected.join(", "),
            if protected.len() == 1 { "has" } else { "have" }
        );
    }
    out
}

fn diffs(c: &Change) -> &[crate::plan::Diff] {
    match c {
        Change::UpdateRole { diffs, .. }
        | Change::UpdateDatabase { diffs, .. }
        | Change::Privileges { diffs, .. }
        | Change::TokenStore { diffs, .. }
        | Change::UpdateUser { diffs, .. }
        | Change::UpdateGatewayLogin { diffs, .. } => diffs,
        _ => &[],
    }
}

fn version(v: Option<i64>) -> String {
    v.map_or_else(|| "(empty)".to_owned(), |v| format!("V{v}"))
}

fn line(c: &Change) -> String {
    match c {
        Change::CreateRole { role, kind } => format!("role {role} ({} group, NOLOGIN)", kind.as_str()),
        Change::UpdateRole { role, .. } => format!("role {role}"),
        Change::CreateDatabase { database, owner } => format!("database {database} (owner {owner})"),
        Change::UpdateDatabase { database, .. } => format!("database {database}"),
        Change::Migrate { database, from, to } => {
            format!("migrate {database}: {} -> V{to}", version(*from))
        }
        Change::Privileges { database, diffs, .. } if diffs.is_empty() => format!(
            "privileges in {database}: admin SELECT, INSERT, UPDATE, DELETE; developer SELECT, INSERT, UPDATE; customer SELECT"
        ),
        Change::Privileges { database, .. } => format!("privileges in {database}"),
        Change::TokenStore { database, diffs, .. } if diffs.is_empty() => format!(
            "token store in {database} (schema tenantry: token hashes, lookup only for the tenant's groups)"
        ),
        Change::TokenStore { database, .. } => format!("token store in {database}"),
        Change::CreateGatewayLogin {
            role,
            login,
            connection_limit,
        } => format!(
            "gateway login {role} (NOINHERIT, member of the admin, developer and customer groups, connection limit {connection_limit}, generated password{})",
            if *login { "" } else { ", NOLOGIN: suspended" }
        ),
        Change::UpdateGatewayLogin { role, .. } => format!("gateway login {role}"),
        Change::CreateUser {
            user,
            group,
            login,
            connection_limit,
            statement_timeout,
            password_source,
        } => format!(
            "user {user} ({}, connection limit {connection_limit}, statement_timeout {statement_timeout}{}, password from {password_source})",
            group.as_str(),
            if *login { "" } else { ", NOLOGIN: suspended" }
        ),
        Change::UpdateUser { user, group, .. } => format!("user {user} ({})", group.as_str()),
        Change::DropUser { user } => format!("user {user} (objects reassigned to the owner, then dropped)"),
        Change::DropDatabase { database, protected } => format!(
            "database {database} (pg_dump backup, then DROP){}",
            if *protected { " [deletion_protection = true]" } else { "" }
        ),
        Change::DropRole {
            role,
            kind: Kind::Gateway,
        } => format!("gateway login {role}"),
        Change::DropRole { role, kind } => format!("role {role} ({} group)", kind.as_str()),
    }
}

/// The plan as pretty JSON (same data, machine-readable).
pub fn json(plan: &Plan) -> String {
    let (add, change, destroy) = plan.counts();
    serde_json::to_string_pretty(&serde_json::json!({
        "fleet": plan.fleet,
        "summary": { "add": add, "change": change, "destroy": destroy },
        "tenants": plan.tenants,
        "conflicts": plan.conflicts,
        "warnings": plan.warnings,
    }))
    .expect("plans serialise")
}
