//! Plans as text a terraform user recognises (`+` create, `~` change,
//! `-` destroy, a summary line) and as JSON. Passwords never appear: only
//! their source, or "(changed)".

use std::fmt::Write;
use tenantry_layout::Kind;

use crate::fleet_plan::FleetPlan;
use crate::plan::{Action, Change, Plan, Sign, TenantPlan};

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
    problems(&mut out, plan, "");
    if !plan.conflicts.is_empty() || !plan.warnings.is_empty() {
        out.push('\n');
    }
    if plan.is_empty() {
        out.push_str(if plan.conflicts.is_empty() {
            "No changes. The cluster matches the inventory.\n"
        } else {
            "Nothing else to change; apply runs once the conflicts above are resolved.\n"
        });
        return out;
    }
    out.push_str("Tenantry will perform the following actions:\n\n");
    for t in &plan.tenants {
        tenant(&mut out, t, None, None);
    }
    summary(&mut out, plan.counts(), &plan.protected_destroys());
    out
}

/// A plan over several servers as text: what could not be read and what is
/// held first, then every tenant's changes with the server they run on, the
/// summary and its split by server. A file with one server reads exactly
/// as [`text`].
pub fn fleet_text(fp: &FleetPlan) -> String {
    if let [only] = fp.servers.as_slice() {
        if let (Some(plan), true) = (only.plan, fp.held.is_empty() && fp.warnings.is_empty()) {
            return text(plan);
        }
    }
    let mut out = String::new();
    for s in &fp.servers {
        if let Some(why) = &s.unreachable {
            let _ = writeln!(out, "error: server {} cannot be read: {why}", s.server);
        }
    }
    for h in &fp.held {
        let level = if h.conflict { "error" } else { "note" };
        let _ = writeln!(out, "{level}: tenant {}: {}", h.tenant, h.reason);
    }
    for (server, plan) in fp.plans() {
        problems(&mut out, plan, &format!("server {server}: "));
    }
    for m in &fp.moves {
        if let Some(c) = &m.conflict {
            let _ = writeln!(out, "error: tenant {}: {c}", m.tenant);
        }
    }
    for w in &fp.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    if !out.is_empty() {
        out.push('\n');
    }
    let mut all: Vec<(&str, &TenantPlan)> = fp
        .plans()
        .flat_map(|(server, p)| p.tenants.iter().map(move |t| (server, t)))
        .collect();
    all.sort_by(|a, b| a.1.tenant.cmp(&b.1.tenant).then(a.0.cmp(b.0)));
    let (leftovers, all): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|(_, t)| t.action == Action::Leftover);
    for (server, t) in &leftovers {
        let moved = fp
            .leftovers
            .iter()
            .find(|l| l.tenant == t.tenant && l.server == *server)
            .map(|l| l.left.describe());
        tenant(&mut out, t, Some(server), moved.as_deref());
    }
    if fp.is_empty() {
        out.push_str(if fp.conflicts() > 0 {
            "Nothing else to change; apply runs once the conflicts above are resolved.\n"
        } else if fp.unreachable().is_empty() {
            "No changes. Every server matches the inventory.\n"
        } else {
            "No changes on the servers that were read.\n"
        });
        return out;
    }
    out.push_str("Tenantry will perform the following actions:\n\n");
    for (server, t) in all {
        tenant(&mut out, t, Some(server), None);
    }
    for m in fp.moves.iter().filter(|m| m.conflict.is_none()) {
        for line in m.lines() {
            let _ = writeln!(out, "{line}");
        }
        out.push('\n');
    }
    let protected: Vec<&str> = fp
        .plans()
        .flat_map(|(_, p)| p.protected_destroys())
        .collect();
    summary(&mut out, fp.counts(), &protected);
    let busy: Vec<String> = fp
        .plans()
        .filter(|(_, p)| !p.is_empty())
        .map(|(server, p)| {
            let (add, change, destroy) = p.counts();
            format!("{server}: {add} to add, {change} to change, {destroy} to destroy")
        })
        .collect();
    if busy.len() > 1 {
        let _ = writeln!(out, "By server: {}.", busy.join("; "));
    }
    out
}

/// Conflicts and warnings of one plan, each line starting with `prefix`.
fn problems(out: &mut String, plan: &Plan, prefix: &str) {
    for (i, c) in plan.conflicts.iter().enumerate() {
        if let Some(help) = &c.help {
            let _ = writeln!(
                out,
                "error: {prefix}tenant {}: {} {} {}",
                c.tenant, c.object, c.name, c.reason
            );
            // Said once, after the last conflict it resolves.
            if !plan.conflicts[i + 1..]
                .iter()
                .any(|n| n.help.as_ref() == Some(help))
            {
                let _ = writeln!(out, "  help: {help}");
            }
            continue;
        }
        let _ = writeln!(
            out,
            "error: {prefix}tenant {}: {} {} {}; tenantry will not take it over (rename the tenant, or drop or rename the existing {})",
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
        let _ = writeln!(out, "warning: {prefix}{w}");
    }
}

/// One tenant's block: its line (with the server it runs on, for a fleet of
/// several) and its changes.
fn tenant(out: &mut String, t: &TenantPlan, server: Option<&str>, moved: Option<&str>) {
    let on = server
        .map(|s| format!(" on server {s}"))
        .unwrap_or_default();
    let (sign, note) = match t.action {
        Action::Create => ('+', format!("will be created{on}")),
        Action::Update => ('~', format!("will be updated in place{on}")),
        Action::Destroy => (
            '-',
            format!("will be destroyed{on} (database backed up first)"),
        ),
        Action::Leftover => {
            // Not a change of this plan: a note, its drop only with
            // --allow-destroy.
            let _ = writeln!(
                out,
                "note: the leftover copy of tenant {}{on}{} is closed and kept; apply --allow-destroy drops it and its roles there (database backed up first)\n",
                t.tenant,
                moved.map(|m| format!(" ({m})")).unwrap_or_default()
            );
            return;
        }
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

/// One tenant's changes as the plan prints them, a line each (diffs
/// indented under their change): what its audit entry records.
pub fn change_lines(t: &TenantPlan) -> Vec<String> {
    let mut lines = Vec::new();
    for c in &t.changes {
        lines.push(format!("{} {}", mark(c.sign()), line(c)));
        for d in diffs(c) {
            lines.push(format!("    {}: {} -> {}", d.what, d.old, d.new));
        }
    }
    lines
}

/// The summary line, and the note about deletion-protected destroys.
fn summary(out: &mut String, (add, change, destroy): (usize, usize, usize), protected: &[&str]) {
    let _ = writeln!(
        out,
        "Plan: {add} to add, {change} to change, {destroy} to destroy."
    );
    if !protected.is_empty() {
        let _ = writeln!(
            out,
            "\nNote: {} {} deletion_protection; apply will refuse to destroy it until protection is turned off (set deletion_protection = false and apply) and --allow-destroy is given.",
            protected.join(", "),
            if protected.len() == 1 { "has" } else { "have" }
        );
    }
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

/// A plan over several servers as JSON: per server its summary, tenants,
/// conflicts and warnings (or why it could not be read), then the held
/// tenants. A file with one server gives exactly [`json`].
pub fn fleet_json(fp: &FleetPlan) -> String {
    if let [only] = fp.servers.as_slice() {
        if let (Some(plan), true) = (only.plan, fp.held.is_empty() && fp.warnings.is_empty()) {
            return json(plan);
        }
    }
    let (add, change, destroy) = fp.counts();
    let servers: Vec<serde_json::Value> = fp
        .servers
        .iter()
        .map(|s| match s.plan {
            Some(plan) => {
                let (add, change, destroy) = plan.counts();
                serde_json::json!({
                    "server": s.server,
                    "summary": { "add": add, "change": change, "destroy": destroy },
                    "tenants": plan.tenants,
                    "conflicts": plan.conflicts,
                    "warnings": plan.warnings,
                })
            }
            None => serde_json::json!({ "server": s.server, "unreachable": s.unreachable }),
        })
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({
        "fleet": fp.fleet,
        "summary": { "add": add, "change": change, "destroy": destroy },
        "servers": servers,
        "held": fp.held,
        "warnings": fp.warnings,
    }))
    .expect("plans serialise")
}
