//! The operators' console: the fleet page and one page per tenant, rendered
//! here as HTML from [`crate::fleet`]'s views, and the stylesheet and script
//! they link ([`CSS`] at `/console.css`, [`JS`] at `/console.js`).
//!
//! The pages are complete without JavaScript: every figure is rendered here,
//! charts are inline SVG, fonts are the system's, and nothing is loaded from
//! another origin. The script sorts and filters the tenant table and, every 5
//! seconds, fetches the page's `data-endpoint` (`/api/fleet` or
//! `/api/fleet/tenants/<name>`) and redraws in place, building its DOM with
//! text nodes only. Every piece of data rendered here goes through `escape`:
//! display names, audit details and error texts are hostile text.
//!
//! What does not live here: the data (`fleet` builds it from the pools and
//! the usage counters), the routes and their access control (`server`).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::fleet::{AuditView, Fleet, Quota, ServerView, TenantPage, TenantView, Warning};

/// The stylesheet, served at `/console.css`.
pub const CSS: &str = include_str!("console/console.css");
/// The script, served at `/console.js`.
pub const JS: &str = include_str!("console/console.js");

/// Tenant statuses the stylesheet knows; anything else is drawn as `other`.
const STATUSES: [&str; 4] = ["active", "suspended", "moving", "unavailable"];

/// The fleet table's columns: header, how the script sorts it, cell class.
const COLUMNS: [(&str, &str, &str); 11] = [
    ("Tenant", "text", "c-name"),
    ("Server", "text", ""),
    ("Plan", "text", ""),
    ("Status", "text", ""),
    ("Schema", "num", "c-num c-schema"),
    ("Storage", "num", "c-quota"),
    ("Requests today", "num", "c-quota"),
    ("Req/min (1 h)", "num", "c-spark"),
    ("Errors", "num", "c-num"),
    ("p99", "num", "c-num"),
    ("Connections", "num", "c-num"),
];

const NO_TENANTS: &str = "No tenants in the fleet yet. Add one to the manifest and apply it; \
                          it shows up here on the next refresh.";

/// The fleet page (`GET /` on the admin listener).
pub fn fleet_page(fleet: &Fleet) -> String {
    let mut main = String::with_capacity(8 * 1024 + 2 * 1024 * fleet.tenants.len());
    servers(&mut main, &fleet.servers);
    tenant_table(&mut main, fleet);
    let summary = summary(fleet);
    let at = Some(fleet.generated_at.as_str());
    document("Fleet", "fleet", "/api/fleet", &summary, at, &main)
}

/// One tenant's page (`GET /tenants/<name>` on the admin listener).
pub fn tenant_page(page: &TenantPage) -> String {
    let name = &page.tenant.name;
    let endpoint = format!("/api/fleet/tenants/{}", path_segment(name));
    let crumbs = format!(
        "<nav class=\"crumbs\" aria-label=\"Breadcrumb\"><a href=\"/\">Fleet</a>\
         <span aria-hidden=\"true\">/</span><span>{}</span></nav>",
        escape(name)
    );
    document(name, "tenant", &endpoint, &crumbs, None, &tenant_body(page))
}

/// The page around `main`: the head, then the header bar (wordmark, `nav`,
/// "updated <time>" and the "stale since" the script shows when a refresh
/// fails). The body names `api` for the script; without `at` (the tenant
/// page: `TenantPage` carries no time) the script fills the time in.
fn document(title: &str, kind: &str, api: &str, nav: &str, at: Option<&str>, main: &str) -> String {
    let hidden = if at.is_none() { " hidden" } else { "" };
    let at = at.unwrap_or("");
    format!(
        "<!doctype html>\n<html lang=\"en\" class=\"no-js\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"color-scheme\" content=\"light dark\">\n<title>{} · tenantry</title>\n\
         <link rel=\"icon\" href=\"data:,\">\n<link rel=\"stylesheet\" href=\"/console.css\">\n\
         <script src=\"/console.js\" defer></script>\n</head>\n\
         <body data-page=\"{kind}\" data-endpoint=\"{}\">\n\
         <header class=\"top\"><a class=\"brand\" href=\"/\">tenantry</a>{nav}<div class=\"fresh\">\
         <span class=\"updated\" id=\"updated\"{hidden}>updated <time datetime=\"{}\">{}</time></span>\
         <span class=\"stale\" id=\"stale\" hidden>stale since <time></time></span></div></header>\n\
         <main class=\"{kind}-page\" id=\"{kind}\">\n{main}</main>\n</body>\n</html>\n",
        escape(title),
        escape(api),
        escape(at),
        escape(&stamp(at, false)),
    )
}

fn summary(fleet: &Fleet) -> String {
    let up = fleet.servers.iter().filter(|s| s.state == "up").count();
    let down = fleet.servers.len() - up;
    let warnings: usize = fleet.tenants.iter().map(|t| t.warnings.len()).sum();
    let stat = |class: &str, n: usize, label: String| {
        format!(
            "<span class=\"stat{class}\"><b>{}</b> {label}</span>",
            thousands(n as u64)
        )
    };
    let n = fleet.tenants.len();
    format!(
        "<div class=\"summary\" id=\"summary\">{}{}{}{}</div>",
        stat("", n, format!("tenant{}", plural(n))),
        stat("", up, format!("server{} up", plural(up))),
        stat(if down > 0 { " bad" } else { " zero" }, down, "down".into()),
        stat(
            if warnings > 0 { " warn" } else { " zero" },
            warnings,
            format!("warning{}", plural(warnings))
        ),
    )
}

fn servers(out: &mut String, servers: &[ServerView]) {
    out.push_str("<section class=\"servers\" id=\"servers\" aria-label=\"Servers\">");
    if servers.is_empty() {
        out.push_str("<p class=\"muted\">No servers configured.</p>");
    }
    for s in servers {
        let state = if s.state == "up" { "up" } else { "down" };
        let (name, label) = (escape(&s.name), escape(s.state));
        let reason = s.down_reason.as_deref().map(escape);
        let reason = reason.map_or(String::new(), |r| {
            format!("<p class=\"reason\" title=\"{r}\">{r}</p>")
        });
        let (open, in_use, budget) = (
            s.connections_open,
            s.connections_in_use,
            s.connections_budget,
        );
        let _ = writeln!(
            out,
            "<article class=\"server {state}\" data-server=\"{name}\"><div class=\"server-head\">\
             <h2>{name}</h2><span class=\"pill s-{state}\">{label}</span></div>{reason}\
             <dl class=\"facts\"><div><dt>Tenants</dt><dd>{}</dd></div><div><dt>Connections</dt>\
             <dd>{in_use}/{open} of {budget}</dd></div></dl>{}</article>",
            thousands(s.tenants as u64),
            dual_bar(open, in_use, budget, "in use / open of the server's budget"),
        );
    }
    out.push_str("</section>\n");
}

fn tenant_table(out: &mut String, fleet: &Fleet) {
    out.push_str(
        "<section class=\"tenants\" aria-label=\"Tenants\"><div class=\"toolbar\"><h2>Tenants</h2>\
         <div class=\"filters\"><input type=\"search\" id=\"f-name\" placeholder=\"Filter by name\" \
         aria-label=\"Filter by name\" autocomplete=\"off\" spellcheck=\"false\">\
         <select id=\"f-status\" aria-label=\"Status\"><option value=\"\">All statuses</option>",
    );
    for s in STATUSES {
        let _ = write!(out, "<option value=\"{s}\">{s}</option>");
    }
    out.push_str("</select><select id=\"f-server\" aria-label=\"Server\"><option value=\"\">All servers</option>");
    let names: BTreeSet<&str> = (fleet.servers.iter().map(|s| s.name.as_str()))
        .chain(fleet.tenants.iter().map(|t| t.server.as_str()))
        .collect();
    for name in names.into_iter().map(escape) {
        let _ = write!(out, "<option value=\"{name}\">{name}</option>");
    }
    let n = fleet.tenants.len();
    let _ = write!(
        out,
        "</select></div><span class=\"count\" id=\"count\">{} tenant{}</span></div>\n\
         <div class=\"table-wrap\"><table class=\"fleet\" id=\"table\"><thead><tr>",
        thousands(n as u64),
        plural(n)
    );
    for (title, kind, class) in COLUMNS {
        let _ = write!(
            out,
            "<th scope=\"col\" class=\"{class}\" data-type=\"{kind}\"><button type=\"button\">{title}</button></th>"
        );
    }
    out.push_str("</tr></thead>\n<tbody id=\"rows\">\n");
    if fleet.tenants.is_empty() {
        let _ = writeln!(
            out,
            "<tr class=\"empty\"><td colspan=\"{}\">{NO_TENANTS}</td></tr>",
            COLUMNS.len()
        );
    }
    for t in &fleet.tenants {
        tenant_row(out, t);
    }
    out.push_str("</tbody></table></div></section>\n");
}

fn tenant_row(out: &mut String, t: &TenantView) {
    let (name, display) = (escape(&t.name), escape(&t.display_name));
    let (server, plan, status) = (escape(&t.server), escape(&t.plan), escape(t.status));
    let class = match warning_class(&t.warnings) {
        "" => String::new(),
        class => format!(" class=\"{class}\""),
    };
    let mut notes = String::new();
    if !t.warnings.is_empty() {
        let titles: Vec<&str> = t.warnings.iter().map(|w| w.message.as_str()).collect();
        let titles = escape(&titles.join("\n"));
        notes = format!("<span class=\"wicon\" title=\"{titles}\" aria-hidden=\"true\">!</span>");
    }
    if !display.is_empty() {
        let _ = write!(notes, "<small>{display}</small>");
    }
    for w in &t.warnings {
        let class = warning_class(std::slice::from_ref(w));
        let _ = write!(
            notes,
            "<span class=\"wmsg {class}\">{}</span>",
            escape(&w.message)
        );
    }
    let series = &t.requests_per_minute;
    let total: u64 = series.iter().sum();
    let avg = match series.len() {
        0 => "—".to_string(),
        n => format!("{}/min", rate(total as f64 / n as f64)),
    };
    let c = &t.connections;
    let _ = writeln!(
        out,
        "<tr{class} data-tenant=\"{name}\" data-display=\"{display}\" data-status=\"{status}\" \
         data-server=\"{server}\"><td class=\"c-name\" data-sort=\"{name}\"><a href=\"/tenants/{}\">\
         {name}</a>{notes}</td><td data-sort=\"{server}\">{server}</td><td data-sort=\"{plan}\">{plan}\
         </td><td data-sort=\"{status}\">{}</td><td class=\"c-num c-schema\" data-sort=\"{}\">{}</td>\
         <td class=\"c-quota\" data-sort=\"{}\">{}</td><td class=\"c-quota\" data-sort=\"{}\">{}</td>\
         <td class=\"c-spark\" data-sort=\"{total}\">{}<span class=\"rate\">{avg}</span></td>\
         <td class=\"c-num{}\" data-sort=\"{}\">{}</td><td class=\"c-num\" data-sort=\"{}\">{}</td>\
         <td class=\"c-num\" data-sort=\"{}\">{}/{} <small>of {}</small></td></tr>",
        path_segment(&t.name),
        pill(t.status),
        opt(t.schema_version),
        t.schema_version.map_or("—".into(), |v| v.to_string()),
        opt(t.storage.used),
        quota(&t.storage, bytes),
        opt(t.requests_today.used),
        quota(&t.requests_today, thousands),
        sparkline(series),
        severity(t.error_rate, 0.01, 0.05),
        finite(t.error_rate).unwrap_or(0.0),
        percent(t.error_rate),
        opt(t.p99_ms.and_then(finite)),
        ms(t.p99_ms),
        c.in_use,
        c.in_use,
        c.open,
        c.limit,
    );
}

/// A bar against the quota, and "used / limit" under it.
fn quota(q: &Quota, unit: fn(u64) -> String) -> String {
    let text = match (q.used, q.limit) {
        (Some(u), Some(l)) => format!("{} / {}", unit(u), unit(l)),
        (Some(u), None) => unit(u),
        (None, Some(l)) => format!("— / {}", unit(l)),
        (None, None) => "—".into(),
    };
    let (class, fill, title) = match q.percent.and_then(finite) {
        Some(p) => (
            severity(p, 80.0, 95.0),
            width(p),
            format!("{}% of the limit", decimal(p)),
        ),
        None if q.used.is_none() => (" none", "0".into(), "not measured yet".into()),
        None => (" none", "0".into(), "no limit on this plan".into()),
    };
    format!(
        "<div class=\"bar{class}\" title=\"{title}\"><span style=\"width:{fill}%\"></span></div>\
         <span class=\"qt\">{}</span>",
        escape(&text)
    )
}

/// Connections: open (light) and in use (dark) against `whole`.
fn dual_bar(open: usize, in_use: usize, whole: usize, title: &str) -> String {
    let share = |n: usize| width(n as f64 * 100.0 / whole.max(1) as f64);
    format!(
        "<div class=\"bar dual\" title=\"{}\"><span class=\"open\" style=\"width:{}%\"></span>\
         <span style=\"width:{}%\"></span></div>",
        escape(title),
        share(open),
        share(in_use)
    )
}

/// The table's sparkline: one point per minute, left to right, the peak at
/// the top, zero (and so an all-zero series) on the bottom line.
fn sparkline(series: &[u64]) -> String {
    let (w, h, pad) = (120.0, 28.0, 3.0);
    let peak = series.iter().copied().max().unwrap_or(0);
    let step = w / series.len().saturating_sub(1).max(1) as f64;
    let points: Vec<(f64, f64)> = (series.iter().enumerate())
        .map(|(i, &v)| {
            let y = match peak {
                0 => h - pad,
                _ => h - pad - v as f64 / peak as f64 * (h - 2.0 * pad),
            };
            (i as f64 * step, y)
        })
        .collect();
    let mut out = format!(
        "<svg class=\"spark\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" \
         aria-label=\"requests per minute\"><title>{} requests in the last {} min, peak {}/min</title>",
        thousands(series.iter().sum()),
        series.len(),
        thousands(peak)
    );
    if let (Some(&(x0, _)), Some(&(x1, y1))) = (points.first(), points.last()) {
        let line = points.iter().map(|(x, y)| format!("{x:.1},{y:.1}"));
        let line = line.collect::<Vec<_>>().join(" ");
        let _ = write!(
            out,
            "<path class=\"area\" d=\"M{x0:.1},{h} L{line} L{x1:.1},{h} Z\"/>\
             <polyline points=\"{line}\"/><circle cx=\"{x1:.1}\" cy=\"{y1:.1}\" r=\"2\"/>"
        );
    }
    out + "</svg>"
}

fn tenant_body(page: &TenantPage) -> String {
    let t = &page.tenant;
    let mut out = format!("<section class=\"hero\"><div><h1>{}</h1>", escape(&t.name));
    if !t.display_name.is_empty() {
        let _ = write!(out, "<p class=\"display\">{}</p>", escape(&t.display_name));
    }
    let fact = |label: &str, value: &str| format!("<div><dt>{label}</dt><dd>{value}</dd></div>");
    let schema = t.schema_version.map_or("—".into(), |v| v.to_string());
    let last = t.last_request_at.as_deref().map(|at| stamp(at, true));
    let _ = writeln!(
        out,
        "</div><dl class=\"facts\">{}{}{}{}{}</dl></section>",
        fact("Server", &escape(&t.server)),
        fact("Plan", &escape(&t.plan)),
        fact("Status", &pill(t.status)),
        fact("Schema", &schema),
        fact("Last request", &escape(last.as_deref().unwrap_or("never"))),
    );
    if !t.warnings.is_empty() {
        out.push_str("<ul class=\"warnings\">");
        for w in &t.warnings {
            let _ = write!(
                out,
                "<li class=\"{}\"><span class=\"wicon\" aria-hidden=\"true\">!</span>{}</li>",
                warning_class(std::slice::from_ref(w)),
                escape(&w.message)
            );
        }
        out.push_str("</ul>\n");
    }

    let health = &page.health;
    let (class, label) = [("s-failing", "failing"), ("s-ok", "ok")][usize::from(health.ok)];
    let error = health.error.as_deref().map(escape);
    let error = error.map_or(String::new(), |e| format!("<p class=\"error\">{e}</p>"));
    let c = &t.connections;
    let _ = writeln!(
        out,
        "<div class=\"cards\"><section class=\"card\"><h2>Health</h2><p class=\"figure\">\
         <span class=\"pill {class}\">{label}</span></p><p class=\"sub\">round trip {}</p>{error}</section>\
         {}{}<section class=\"card\"><h2>Errors and latency</h2><div class=\"pair\"><div>\
         <p class=\"figure{}\">{}</p><p class=\"sub\">answered 5xx, last hour</p></div><div>\
         <p class=\"figure\">{}</p><p class=\"sub\">p99, last hour</p></div></div></section>\
         <section class=\"card\"><h2>Connections</h2><p class=\"figure\">{} / {}</p>{}\
         <p class=\"sub\">in use / open, pool of {}</p></section></div>",
        ms(health.round_trip_ms),
        quota_card("Storage", &t.storage, bytes),
        quota_card("Requests today", &t.requests_today, thousands),
        severity(t.error_rate, 0.01, 0.05),
        percent(t.error_rate),
        ms(t.p99_ms),
        c.in_use,
        c.open,
        dual_bar(c.open, c.in_use, c.limit, "in use / open of the pool"),
        c.limit,
    );

    let series = &t.requests_per_minute;
    let _ = writeln!(
        out,
        "<section class=\"card wide\"><div class=\"card-head\"><h2>Requests per minute</h2>\
         <p class=\"sub\">last {} min · {} requests · peak {}/min</p></div>{}</section>\n\
         <section class=\"card wide\"><h2>Recent audit entries</h2>{}</section>",
        series.len(),
        thousands(series.iter().sum()),
        thousands(series.iter().copied().max().unwrap_or(0)),
        chart(series),
        audit(&page.audit, page.audit_error.as_deref()),
    );
    out
}

fn quota_card(title: &str, q: &Quota, unit: fn(u64) -> String) -> String {
    let figure = match q.percent.and_then(finite) {
        Some(p) => format!("{}%", decimal(p)),
        None => q.used.map_or("—".into(), unit),
    };
    format!(
        "<section class=\"card\"><h2>{title}</h2><p class=\"figure\">{}</p>{}</section>",
        escape(&figure),
        quota(q, unit)
    )
}

/// Requests per minute as bars, labelled with the scale's top and middle,
/// "<n> min ago" and "now".
fn chart(series: &[u64]) -> String {
    let (w, h, left, right, top, bottom) = (960.0, 220.0, 48.0, 8.0, 12.0, 26.0);
    let (plot_w, plot_h, base, end) = (w - left - right, h - top - bottom, h - bottom, w - right);
    let (mid, label_x, n) = (top + plot_h / 2.0, left - 8.0, series.len());
    let scale = nice(series.iter().copied().max().unwrap_or(0));
    let mut out = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"requests per minute\">\
         <line class=\"grid\" x1=\"{left}\" y1=\"{top}\" x2=\"{end}\" y2=\"{top}\"/>\
         <line class=\"grid\" x1=\"{left}\" y1=\"{mid}\" x2=\"{end}\" y2=\"{mid}\"/>\
         <text class=\"y\" x=\"{label_x}\" y=\"{}\">{}</text><text class=\"y\" x=\"{label_x}\" y=\"{}\">{}</text>\
         <text class=\"y\" x=\"{label_x}\" y=\"{}\">0</text>",
        top + 4.0,
        thousands(scale),
        mid + 4.0,
        decimal(scale as f64 / 2.0),
        base + 4.0,
    );
    let slot = plot_w / n.max(1) as f64;
    for (i, &v) in series.iter().enumerate() {
        let bar_h = v as f64 / scale as f64 * plot_h;
        let ago = match n - 1 - i {
            0 => "now".to_string(),
            m => format!("{m} min ago"),
        };
        let _ = write!(
            out,
            "<rect class=\"b\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bar_h:.1}\">\
             <title>{} requests, {ago}</title></rect>",
            left + (i as f64 + 0.15) * slot,
            base - bar_h,
            slot * 0.7,
            thousands(v)
        );
    }
    if n == 0 {
        let x = left + plot_w / 2.0;
        let _ = write!(
            out,
            "<text class=\"none\" x=\"{x}\" y=\"{mid}\">no requests recorded</text>"
        );
    }
    let label_y = h - 6.0;
    out + &format!(
        "<line class=\"axis\" x1=\"{left}\" y1=\"{base}\" x2=\"{end}\" y2=\"{base}\"/>\
         <text class=\"x start\" x=\"{left}\" y=\"{label_y}\">{n} min ago</text>\
         <text class=\"x end\" x=\"{end}\" y=\"{label_y}\">now</text></svg>"
    )
}

/// The newest audit entries, or why they could not be read, or "No entries yet."
fn audit(entries: &[AuditView], error: Option<&str>) -> String {
    let mut out = match (error.map(escape), entries.is_empty()) {
        (Some(e), _) => format!("<p class=\"error\">Could not read the audit log: {e}</p>"),
        (None, true) => "<p class=\"muted\">No entries yet.</p>".into(),
        (None, false) => String::new(),
    };
    if entries.is_empty() {
        return out;
    }
    out.push_str(
        "<div class=\"table-wrap\"><table class=\"audit\"><thead><tr><th scope=\"col\">Time</th>\
         <th scope=\"col\">Action</th><th scope=\"col\">Actor</th><th scope=\"col\">Detail</th>\
         </tr></thead><tbody>",
    );
    for e in entries {
        let _ = write!(
            out,
            "<tr><td class=\"when\"><time datetime=\"{}\">{}</time></td><td><span class=\"tag\">{}\
             </span></td><td>{}</td><td><code>{}</code></td></tr>",
            escape(&e.at),
            escape(&stamp(&e.at, true)),
            escape(&e.action),
            escape(&e.actor),
            escape(&e.detail.to_string())
        );
    }
    out + "</tbody></table></div>"
}

/// `&`, `<`, `>`, `"` and `'` as entities: safe in text and in quoted attributes.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A tenant name as one URL path segment (what `encodeURIComponent` keeps),
/// escaped for an attribute.
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    escape(&out)
}

fn pill(status: &str) -> String {
    let class = STATUSES.iter().find(|s| **s == status).unwrap_or(&"other");
    format!("<span class=\"pill s-{class}\">{}</span>", escape(status))
}

/// `warn`, and `crit` too at 95% or more; empty without warnings.
fn warning_class(warnings: &[Warning]) -> &'static str {
    match warnings.iter().map(|w| w.level).max() {
        None => "",
        Some(level) if level >= 95 => "warn crit",
        Some(_) => "warn",
    }
}

/// " crit" from `crit` on, " warn" from `warn` on, else nothing.
fn severity(value: f64, warn: f64, crit: f64) -> &'static str {
    match finite(value).unwrap_or(0.0) {
        v if v >= crit => " crit",
        v if v >= warn => " warn",
        _ => "",
    }
}

/// The plural "s", or nothing for one.
fn plural(n: usize) -> &'static str {
    ["s", ""][usize::from(n == 1)]
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// A `data-sort` value: empty when unknown (the script sorts those last).
fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or(String::new(), |v| v.to_string())
}

/// A bar's width in percent, clamped to 0..=100.
fn width(percent: f64) -> String {
    decimal(finite(percent).unwrap_or(0.0).clamp(0.0, 100.0))
}

/// One decimal, without a trailing ".0".
fn decimal(v: f64) -> String {
    let s = format!("{v:.1}");
    match s.strip_suffix(".0") {
        Some(whole) => whole.to_string(),
        None => s,
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut v, mut unit) = (n as f64, 0);
    while v >= 1023.95 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{} {}", decimal(v), UNITS[unit])
}

fn percent(share: f64) -> String {
    match finite(share).unwrap_or(0.0) * 100.0 {
        p if p <= 0.0 => "0%".into(),
        p if p < 0.01 => "<0.01%".into(),
        p if p < 1.0 => format!("{p:.2}%"),
        p => format!("{}%", decimal(p)),
    }
}

/// Requests per minute: one decimal under 100, whole and grouped above.
fn rate(v: f64) -> String {
    match v {
        v if v < 100.0 => decimal(v),
        v => thousands(v.round() as u64),
    }
}

fn ms(v: Option<f64>) -> String {
    match v.and_then(finite) {
        None => "—".into(),
        Some(v) if v < 10.0 => format!("{} ms", decimal(v)),
        Some(v) => format!("{} ms", thousands(v.round() as u64)),
    }
}

/// The chart's top: the peak rounded up to 1, 2 or 5 times a power of ten.
fn nice(peak: u64) -> u64 {
    let mut magnitude: u64 = 1;
    while let Some(next) = magnitude.checked_mul(10).filter(|&next| next <= peak) {
        magnitude = next;
    }
    let mut steps = [1, 2, 5, 10]
        .map(|m| magnitude.saturating_mul(m))
        .into_iter();
    steps.find(|&top| top >= peak).unwrap_or(peak).max(1)
}

/// "YYYY-MM-DD HH:MM:SS UTC" (or just the time) of an RFC 3339 UTC time;
/// anything else as given.
fn stamp(at: &str, date: bool) -> String {
    match (at.get(..10), at.get(10..11), at.get(11..19)) {
        (Some(day), Some("T" | "t" | " "), Some(time)) if date => format!("{day} {time} UTC"),
        (Some(_), Some("T" | "t" | " "), Some(time)) => format!("{time} UTC"),
        _ => at.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{Connections, Health};

    const HOSTILE: &str = "<script>alert(1)</script>\"'&";
    const ESCAPED: &str = "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;";

    fn tenant(name: &str, series: Vec<u64>, levels: &[u8]) -> TenantView {
        let warning = |&level| Warning {
            quota: "storage",
            level,
            message: format!("storage at {level}%"),
        };
        TenantView {
            name: name.into(),
            display_name: HOSTILE.into(),
            server: "pg-1".into(),
            plan: "standard".into(),
            status: "active",
            schema_version: Some(20240501),
            storage: Quota::new(Some(12_900_000), Some(1 << 30)),
            requests_today: Quota::new(Some(4210), Some(50_000)),
            requests_per_minute: series,
            error_rate: 0.0012,
            p99_ms: Some(25.0),
            connections: Connections {
                in_use: 2,
                open: 5,
                limit: 10,
            },
            last_request_at: Some("2024-05-01T12:34:56Z".into()),
            warnings: levels.iter().map(warning).collect(),
        }
    }

    fn fleet(tenants: Vec<TenantView>) -> Fleet {
        let server = ServerView {
            name: "pg-1".into(),
            state: "up",
            down_reason: None,
            tenants: tenants.len(),
            connections_open: 8,
            connections_in_use: 3,
            connections_budget: 40,
        };
        let (generated_at, servers) = ("2024-05-01T12:35:00.123Z".into(), vec![server]);
        Fleet {
            generated_at,
            minutes: 60,
            servers,
            tenants,
        }
    }

    fn hour() -> Vec<u64> {
        (0..60).map(|i| i * 7 % 23).collect()
    }

    fn page(audit: Vec<AuditView>, audit_error: Option<&str>, series: Vec<u64>) -> TenantPage {
        let error = Some("timed <out>".into());
        let health = Health {
            ok: false,
            round_trip_ms: Some(3.2),
            error,
        };
        let (tenant, audit_error) = (tenant("acme", series, &[80]), audit_error.map(Into::into));
        TenantPage {
            tenant,
            health,
            audit,
            audit_error,
        }
    }

    /// Asserts that `html` contains every one of `parts`.
    fn has(html: &str, parts: &[&str]) {
        for part in parts {
            assert!(html.contains(part), "{part:?} missing");
        }
    }

    /// The `points` of the first polyline.
    fn polyline(html: &str) -> &str {
        let points = html
            .split("<polyline points=\"")
            .nth(1)
            .expect("a polyline");
        points.split('"').next().unwrap()
    }

    #[test]
    fn the_fleet_page_has_a_row_per_tenant_marked_by_its_warnings() {
        let (hot, warm) = (
            tenant("hot", hour(), &[80, 95]),
            tenant("warm", hour(), &[80]),
        );
        let html = fleet_page(&fleet(vec![hot, warm, tenant("calm", hour(), &[])]));
        assert_eq!(html.matches("data-tenant=").count(), 3);
        has(
            &html,
            &[
                "<tr class=\"warn crit\" data-tenant=\"hot\"",
                "<tr class=\"warn\" data-tenant=\"warm\"",
                "<tr data-tenant=\"calm\" data-display=\"&lt;script",
                "<a href=\"/tenants/calm\">calm</a>",
                "title=\"storage at 80%\nstorage at 95%\"",
                "<span class=\"wmsg warn crit\">storage at 95%</span>",
                "<b>3</b> tenants",
                "<b>1</b> server up",
                "<b>3</b> warnings",
                "<time datetime=\"2024-05-01T12:35:00.123Z\">12:35:00 UTC</time>",
                "12.3 MiB / 1 GiB",
                "4,210 / 50,000",
                "0.12%",
                "25 ms",
                "2/5 <small>of 10",
                "data-endpoint=\"/api/fleet\"",
                ESCAPED,
            ],
        );
        assert!(!html.contains("<script>alert") && !html.contains("http-equiv"));
    }

    #[test]
    fn sparklines_have_a_point_per_minute_and_no_nan() {
        let f = fleet(vec![tenant("acme", hour(), &[])]);
        let html = fleet_page(&f);
        assert!(html.contains("<svg class=\"spark\""));
        assert_eq!(polyline(&html).split_whitespace().count(), f.minutes);

        let (zero, empty) = (tenant("a", vec![0; 60], &[]), tenant("b", vec![], &[]));
        let html = fleet_page(&fleet(vec![zero, empty]));
        let ys = polyline(&html)
            .split_whitespace()
            .map(|p| p.split(',').nth(1));
        assert_eq!(
            ys.collect::<BTreeSet<_>>().len(),
            1,
            "all zero: a flat line"
        );
        assert_eq!(html.matches("<polyline").count(), 1, "empty: no line");
        assert!(!html.contains("NaN") && !html.contains("inf"));
    }

    #[test]
    fn nothing_is_loaded_from_elsewhere_nor_parsed_as_html() {
        let svg = "http://www.w3.org/2000/svg";
        assert!(JS.contains(svg), "createElementNS needs the SVG namespace");
        let fleet = fleet_page(&fleet(vec![tenant("acme", hour(), &[])]));
        let tenant = tenant_page(&page(vec![], None, hour()));
        for text in [&fleet, &tenant, CSS, &JS.replacen(svg, "", 1)] {
            assert!(!text.contains("http://") && !text.contains("https://"));
            assert!(!text.contains("url(") && !text.contains("@import"));
        }
        assert!(!JS.contains("innerHTML") && !JS.contains("insertAdjacentHTML"));
    }

    #[test]
    fn an_empty_fleet_says_so() {
        let mut f = fleet(vec![]);
        f.servers.clear();
        let html = fleet_page(&f);
        has(
            &html,
            &["No tenants in the fleet yet", "No servers configured"],
        );
        assert!(!html.contains("data-tenant="));
    }

    #[test]
    fn the_tenant_page_shows_health_chart_and_escaped_audit() {
        let detail = serde_json::json!({"name": "<img src=x onerror=alert(1)>", "n": 1});
        let (at, action, actor) = (
            "2024-05-01T10:00:00Z".into(),
            "api.write".into(),
            HOSTILE.into(),
        );
        let entry = AuditView {
            id: 7,
            at,
            action,
            actor,
            detail,
        };
        let html = tenant_page(&page(vec![entry], None, hour()));
        has(&html, &[
            "data-endpoint=\"/api/fleet/tenants/acme\"",
            "<li class=\"warn\">",
            "<time datetime=\"2024-05-01T10:00:00Z\">2024-05-01 10:00:00 UTC</time>",
            "<span class=\"tag\">api.write",
            ESCAPED,
            "<code>{&quot;n&quot;:1,&quot;name&quot;:&quot;&lt;img src=x onerror=alert(1)&gt;&quot;}",
            "timed &lt;out&gt;",
            ">failing<",
            "round trip 3.2 ms",
            "<svg class=\"chart\"",
            ">60 min ago<",
            ">now<",
            ">50</text>",
        ]);
        assert!(!html.contains("<img") && !html.contains("<script>alert"));
        assert_eq!(html.matches("<rect class=\"b\"").count(), 60);

        let html = tenant_page(&page(vec![], Some("permission denied <x>"), vec![]));
        has(
            &html,
            &[
                "audit log: permission denied &lt;x&gt;",
                "no requests recorded",
            ],
        );
        let html = tenant_page(&page(vec![], None, vec![0; 60]));
        assert!(html.contains("No entries yet.") && !html.contains("NaN"));
    }

    #[test]
    fn bars_are_clamped_and_figures_formatted() {
        let mut t = tenant("full", hour(), &[100]);
        t.storage = Quota::new(Some(5 << 30), Some(2 << 30));
        t.requests_today = Quota::new(Some(10), None);
        has(&fleet_page(&fleet(vec![t])), &[
            "<div class=\"bar crit\" title=\"250% of the limit\"><span style=\"width:100%\">",
            "no limit on this plan\"><span style=\"width:0%\"></span></div><span class=\"qt\">10<",
        ]);
        assert_eq!(
            [-3.0, f64::NAN, 42.25, 250.0].map(width),
            ["0", "0", "42.2", "100"]
        );
        let sizes = [0, 1023, 1024, 12_900_000, 1 << 30, 3 << 40].map(bytes);
        assert_eq!(
            sizes,
            ["0 B", "1023 B", "1 KiB", "12.3 MiB", "1 GiB", "3 TiB"]
        );
        assert_eq!(
            [0, 4210, 1_234_567].map(thousands),
            ["0", "4,210", "1,234,567"]
        );
        let shares = [0.0, 0.00001, 0.0012, 0.25, f64::NAN].map(percent);
        assert_eq!(shares, ["0%", "<0.01%", "0.12%", "25%", "0%"]);
        let times = [None, Some(2.5), Some(1234.0), Some(f64::INFINITY)].map(ms);
        assert_eq!(times, ["—", "2.5 ms", "1,234 ms", "—"]);
        assert_eq!(
            [0, 1, 7, 23, 100, u64::MAX].map(nice),
            [1, 1, 10, 50, 100, u64::MAX]
        );
        assert_eq!(path_segment("a b/<c>"), "a%20b%2F%3Cc%3E");
        assert_eq!(escape(HOSTILE), ESCAPED);
        assert_eq!(stamp("2024-05-01T10:00:00Z", false), "10:00:00 UTC");
        assert_eq!(stamp("soon", true), "soon");
    }
}
