//! Validation: `tenants.toml` text -> [`Inventory`], collecting every problem
//! as a [`Diagnostic`] with file:line:column before giving up.
//!
//! Three steps: toml syntax (one error, there is no reading on after it),
//! then the structure (`shape.rs`: every unknown key, type error and
//! missing key), then every rule of the file (names, plans, clashes, ...).
//! Structure problems that leave the rest readable are reported together
//! with the rule problems, in file order. An empty file (no keys: zero
//! bytes, or only white space and comments) is invalid.
//!
//! The only I/O here is reading `password_file`s (to check them under the
//! rules of `secret_file.rs`; not with [`Secrets::Deferred`]) and resolving
//! paths against the current directory; environment variables come through
//! the injected lookup. Nothing touches a server. Next door: where
//! passwords come from (`passwords`), what a host name may be (`dns`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

use crate::error::Reporter;
use crate::raw::{RawManifest, RawPlan, RawTenant, RawUser};

use crate::servers;
use crate::shape;
use crate::{
    parse_duration_ms, Diagnostic, Group, Ident, Inventory, ManifestError, PasswordSource, Paths,
    Routing, Secrets, Tenant, Tier, User,
};
use tenantry_layout::roles::{LONGEST_ROLE_SUFFIX, RESERVED_ROLE_NAMES};
use tenantry_layout::MAX_IDENT_BYTES;

mod dns;
mod passwords;

use dns::{check_hostname, check_label};
use passwords::password;

/// The environment variable that overrides `[server] admin_url`.
pub const ADMIN_URL_ENV: &str = "TENANTRY_ADMIN_URL";
/// Fleet used when the file names none.
pub const DEFAULT_FLEET: &str = "default";
/// Default `[paths] schema`.
pub const DEFAULT_SCHEMA_DIR: &str = "schema";
/// Default `[paths] backups`.
pub const DEFAULT_BACKUPS_DIR: &str = ".tenantry/backups";
/// Default `[paths] secrets`.
pub const DEFAULT_SECRETS_DIR: &str = ".tenantry/secrets";

/// Largest `statement_timeout` Postgres accepts, in milliseconds.
const MAX_STATEMENT_TIMEOUT_MS: u64 = i32::MAX as u64;

pub(crate) fn validate(
    source: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    secrets: Secrets,
) -> Result<Inventory, ManifestError> {
    let mut r = Reporter::new(source, path);
    let mut root = match toml_edit::ImDocument::parse(source) {
        Ok(doc) => doc.into_table(),
        Err(e) => {
            let d = toml_error(&r, source, e.message(), e.span());
            return Err(ManifestError::Invalid(vec![d]));
        }
    };
    if root.is_empty() {
        let d = r.diagnostic(
            None,
            "the file is empty: it has no plans, no tenants and no settings",
            Some("an inventory needs at least a [plans.<name>] and a [tenants.<db>] table: start from the example tenants.toml, or write one from a Terraform tenants.tfvars with `tenantry import-tfvars`; if an editor or a failed write emptied it, restore it (e.g. from version control)".into()),
        );
        return Err(ManifestError::Invalid(vec![d]));
    }
    // Where `[server]` is, if it is there (its absence and an empty table
    // read alike below).
    let single_span = root.get("server").and_then(|item| item.span());
    // Every unknown key and type error, before serde would stop at the first.
    let sound = shape::check(&mut r, &mut root);
    if !sound {
        return Err(invalid(r.diagnostics));
    }
    let raw: RawManifest = match toml_edit::de::from_document(toml_edit::DocumentMut::from(root)) {
        Ok(raw) => raw,
        Err(e) => {
            // Only if the structure check missed something.
            let d = toml_error(&r, source, e.message(), e.span());
            r.diagnostics.push(d);
            return Err(invalid(r.diagnostics));
        }
    };
    let base_dir = base_dir_of(path)?;

    let fleet = fleet(&mut r, raw.fleet);
    let servers = servers::servers(&mut r, raw.server, single_span, raw.servers, env);
    let server_names: Vec<String> = servers.keys().cloned().collect();
    let paths = Paths {
        schema: resolve_dir(&mut r, &base_dir, raw.paths.schema, DEFAULT_SCHEMA_DIR),
        backups: resolve_dir(&mut r, &base_dir, raw.paths.backups, DEFAULT_BACKUPS_DIR),
        secrets: resolve_dir(&mut r, &base_dir, raw.paths.secrets, DEFAULT_SECRETS_DIR),
    };
    let routing = routing(&mut r, raw.routing);

    let plan_names: Vec<String> = raw.plans.keys().map(|k| k.get_ref().clone()).collect();
    let mut plans = BTreeMap::new();
    for (name, plan) in raw.plans {
        if let Some(tier) = tier(&mut r, name, plan) {
            plans.insert(tier.name.clone(), tier);
        }
    }

    let mut tenants = Tenants::new(&raw.tenants);
    let mut built = Vec::new();
    for (key, tenant) in raw.tenants {
        let t = tenants.tenant(
            &mut r,
            &Context {
                base_dir: &base_dir,
                secrets: &paths.secrets,
                routing: &routing,
                plan_names: &plan_names,
                plans: &plans,
                server_names: &server_names,
                env,
                passwords: secrets,
            },
            key,
            tenant,
        );
        built.push(t);
    }
    tenants.check_domains_against_subdomains(&mut r, &routing);

    if !r.diagnostics.is_empty() {
        return Err(invalid(r.diagnostics));
    }
    let mut tenants: Vec<Tenant> = built.into_iter().flatten().collect();
    tenants.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Inventory {
        path: path.to_path_buf(),
        base_dir,
        fleet,
        servers,
        routing,
        paths,
        plans,
        tenants,
    })
}

/// Every diagnostic, in file order.
fn invalid(mut diagnostics: Vec<Diagnostic>) -> ManifestError {
    diagnostics.sort_by_key(|d| (d.line, d.column));
    ManifestError::Invalid(diagnostics)
}

/// A diagnostic for an error of the toml parser (or of serde), quoting the
/// offending line: serde's message names the type, not the key.
fn toml_error(r: &Reporter, source: &str, message: &str, span: Option<Range<usize>>) -> Diagnostic {
    let line = span
        .clone()
        .and_then(|span| {
            source[..span.start.min(source.len())]
                .rsplit('\n')
                .next()
                .map(|head| {
                    let start = span.start.min(source.len()) - head.len();
                    source[start..]
                        .lines()
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_owned()
                })
        })
        .filter(|l| !l.is_empty());
    let text = match line {
        Some(line) => format!("{} (in `{line}`)", message.trim_end()),
        None => message.trim_end().to_owned(),
    };
    r.diagnostic(span, text, toml_help(message))
}

/// A little extra advice for some of toml's own errors.
fn toml_help(message: &str) -> Option<String> {
    if message.starts_with("unknown field") {
        Some("remove the key or fix its spelling".into())
    } else if message.starts_with("missing field") {
        Some("add the key; see the example tenants.toml".into())
    } else if message.starts_with("duplicate key") {
        Some("each key may appear only once in a table".into())
    } else {
        None
    }
}

fn base_dir_of(path: &Path) -> Result<PathBuf, ManifestError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    absolute(parent).map_err(|error| ManifestError::Read {
        path: path.to_path_buf(),
        error,
    })
}

/// `std::path::absolute`, minus `.` components it may keep.
fn absolute(path: &Path) -> std::io::Result<PathBuf> {
    let abs = std::path::absolute(path)?;
    Ok(abs.components().collect())
}

fn fleet(r: &mut Reporter, fleet: Option<Spanned<String>>) -> String {
    let Some(fleet) = fleet else {
        return DEFAULT_FLEET.into();
    };
    let value = fleet.get_ref();
    let ok = (1..=32).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !ok {
        r.error_help(
            fleet.span(),
            format!("invalid fleet name {value:?}"),
            "use 1 to 32 characters among a-z, 0-9, '_' and '-', e.g. fleet = \"default\"",
        );
    }
    fleet.into_inner()
}

fn resolve_dir(
    r: &mut Reporter,
    base_dir: &Path,
    given: Option<Spanned<String>>,
    default: &str,
) -> PathBuf {
    let text = match &given {
        Some(s) if s.get_ref().is_empty() => {
            r.error_help(
                s.span(),
                "path is empty",
                format!("remove the key to use the default \"{default}\""),
            );
            default
        }
        Some(s) => s.get_ref().as_str(),
        None => default,
    };
    resolve(base_dir, text)
}

/// `text` as an absolute path, relative ones taken from `base_dir`.
fn resolve(base_dir: &Path, text: &str) -> PathBuf {
    let joined = base_dir.join(text);
    absolute(&joined).unwrap_or(joined)
}

fn routing(r: &mut Reporter, raw: crate::raw::RawRouting) -> Routing {
    let mut seen: HashMap<String, Range<usize>> = HashMap::new();
    for d in &raw.base_domains {
        if let Err(why) = check_hostname(d.get_ref()) {
            r.error_help(
                d.span(),
                format!("invalid base domain {:?}: {why}", d.get_ref()),
                "base domains are host names like \"usualstore.com\" or \"localhost\"",
            );
        } else if let Some(first) = seen.get(d.get_ref()) {
            let at = r.location(first);
            r.error_help(
                d.span(),
                format!(
                    "base domain {:?} is listed twice (first at {at})",
                    d.get_ref()
                ),
                "remove one of them",
            );
        } else {
            seen.insert(d.get_ref().clone(), d.span());
        }
    }
    seen.clear();
    for s in &raw.reserved_subdomains {
        if let Err(why) = check_label(s.get_ref()) {
            r.error_help(
                s.span(),
                format!("invalid reserved subdomain {:?}: {why}", s.get_ref()),
                "reserved subdomains are single DNS labels like \"www\"",
            );
        } else if let Some(first) = seen.get(s.get_ref()) {
            let at = r.location(first);
            r.error_help(
                s.span(),
                format!(
                    "reserved subdomain {:?} is listed twice (first at {at})",
                    s.get_ref()
                ),
                "remove one of them",
            );
        } else {
            seen.insert(s.get_ref().clone(), s.span());
        }
    }
    Routing {
        base_domains: raw
            .base_domains
            .into_iter()
            .map(Spanned::into_inner)
            .collect(),
        reserved_subdomains: raw
            .reserved_subdomains
            .into_iter()
            .map(Spanned::into_inner)
            .collect(),
        trust_tenant_header: raw.trust_tenant_header,
    }
}

fn tier(r: &mut Reporter, name: Spanned<String>, plan: RawPlan) -> Option<Tier> {
    let plan_name = name.get_ref();
    let positive = |r: &mut Reporter, key: &str, v: &Spanned<i64>, max: i64| {
        let value = *v.get_ref();
        if (1..=max).contains(&value) {
            Some(value)
        } else {
            r.error_help(
                v.span(),
                format!("plans.{plan_name}.{key} is {value}, out of range"),
                format!("use an integer from 1 to {max}"),
            );
            None
        }
    };
    let connection_limit = positive(
        r,
        "connection_limit",
        &plan.connection_limit,
        i64::from(i32::MAX),
    );
    let pool_size = positive(r, "pool_size", &plan.pool_size, i64::from(u32::MAX));
    let requests_per_second = positive(
        r,
        "requests_per_second",
        &plan.requests_per_second,
        i64::from(u32::MAX),
    );
    // Optional quotas: Some(None) when unset, None when invalid.
    let storage = match &plan.storage {
        None => Some(None),
        Some(s) => match parse_size(s.get_ref()) {
            Some(bytes) if bytes > 0 => Some(Some(bytes)),
            _ => {
                r.error_help(
                    s.span(),
                    format!("plans.{plan_name}.storage {:?} is not a size", s.get_ref()),
                    "use a positive integer and a unit among B, kB, MB, GB, TB (1024-based, as in postgresql.conf) or KiB, MiB, GiB, TiB, e.g. \"1GiB\"",
                );
                None
            }
        },
    };
    let requests_per_day = match &plan.requests_per_day {
        None => Some(None),
        Some(v) => positive(r, "requests_per_day", v, 9_007_199_254_740_991).map(Some),
    };
    let max_users = match &plan.max_users {
        None => Some(None),
        Some(v) if (0..=1_000_000).contains(v.get_ref()) => Some(Some(*v.get_ref())),
        Some(v) => {
            r.error_help(
                v.span(),
                format!(
                    "plans.{plan_name}.max_users is {}, out of range",
                    v.get_ref()
                ),
                "use an integer from 0 to 1000000",
            );
            None
        }
    };
    let timeout_text = plan.statement_timeout.get_ref();
    let statement_timeout_ms = match parse_duration_ms(timeout_text) {
        Some(ms) if ms <= MAX_STATEMENT_TIMEOUT_MS => Some(ms),
        Some(_) => {
            r.error_help(
                plan.statement_timeout.span(),
                format!("plans.{plan_name}.statement_timeout {timeout_text:?} is too long"),
                format!("PostgreSQL allows at most {MAX_STATEMENT_TIMEOUT_MS}ms (about 24 days)"),
            );
            None
        }
        None => {
            r.error_help(
                plan.statement_timeout.span(),
                format!("plans.{plan_name}.statement_timeout {timeout_text:?} is not a duration"),
                "write an integer and a unit among us, ms, s, min, h, d, e.g. \"500ms\", \"5s\" or \"2min\"; \"0\" means no timeout",
            );
            None
        }
    };
    Some(Tier {
        name: name.into_inner(),
        connection_limit: i32::try_from(connection_limit?).ok()?,
        statement_timeout_ms: statement_timeout_ms?,
        pool_size: u32::try_from(pool_size?).ok()?,
        requests_per_second: u32::try_from(requests_per_second?).ok()?,
        storage_bytes: storage?,
        requests_per_day: requests_per_day?.map(|v| v as u64),
        max_users: max_users?.map(|v| v as u32),
    })
}

/// Bytes of a size such as "1GiB", "500MB" or "100 kB" (units 1024-based,
/// as in postgresql.conf); None when it is not one, or overflows.
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let unit = unit.strip_prefix(' ').unwrap_or(unit);
    let factor: u64 = match unit {
        "B" => 1,
        "kB" | "KiB" => 1 << 10,
        "MB" | "MiB" => 1 << 20,
        "GB" | "GiB" => 1 << 30,
        "TB" | "TiB" => 1 << 40,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(factor)
}

/// What validating one tenant needs from the rest of the file.
struct Context<'a> {
    base_dir: &'a Path,
    secrets: &'a Path,
    routing: &'a Routing,
    plan_names: &'a [String],
    /// The plans that validated, for their user limits.
    plans: &'a BTreeMap<String, Tier>,
    server_names: &'a [String],
    env: &'a dyn Fn(&str) -> Option<String>,
    /// Whether passwords must be readable now.
    passwords: Secrets,
}

/// Cross-tenant state: names seen so far, to catch clashes.
struct Tenants {
    /// Every tenant database name (valid or not).
    databases: BTreeSet<String>,
    /// Derived role (group roles, gateway login) -> (tenant, what it is),
    /// for valid tenant names.
    roles: HashMap<String, (String, &'static str)>,
    /// Username -> where it first appeared.
    usernames: HashMap<String, Range<usize>>,
    /// Password variable -> where it first appeared, and whether it was a
    /// `gateway_password_env` (which may share its variable with nothing).
    password_vars: HashMap<String, (Range<usize>, bool)>,
    /// Subdomain -> (tenant, where).
    subdomains: HashMap<String, (String, Range<usize>)>,
    /// Custom domain -> where it first appeared.
    domains: HashMap<String, Range<usize>>,
    /// Custom domains with their tenant, for the check against subdomains.
    domain_list: Vec<(String, String, Range<usize>)>,
}

impl Tenants {
    fn new(raw: &BTreeMap<Spanned<String>, RawTenant>) -> Self {
        let mut roles = HashMap::new();
        for key in raw.keys() {
            if Ident::parse(key.get_ref()).is_ok() {
                for g in Group::ALL {
                    let what = match g {
                        Group::Owner => "owner group role",
                        Group::Admin => "admin group role",
                        Group::Developer => "developer group role",
                        Group::Customer => "customer group role",
                    };
                    roles.insert(
                        tenantry_layout::roles::group_role_name(key.get_ref(), g),
                        (key.get_ref().clone(), what),
                    );
                }
                roles.insert(
                    tenantry_layout::roles::gateway_login_name(key.get_ref()),
                    (key.get_ref().clone(), "gateway login"),
                );
            }
        }
        Tenants {
            databases: raw.keys().map(|k| k.get_ref().clone()).collect(),
            roles,
            usernames: HashMap::new(),
            password_vars: HashMap::new(),
            subdomains: HashMap::new(),
            domains: HashMap::new(),
            domain_list: Vec::new(),
        }
    }

    fn tenant(
        &mut self,
        r: &mut Reporter,
        cx: &Context,
        key: Spanned<String>,
        raw: RawTenant,
    ) -> Option<Tenant> {
        let key_span = key.span();
        let key = key.into_inner();
        let name = match Ident::parse(&key) {
            Ok(name) if name.len() + LONGEST_ROLE_SUFFIX > MAX_IDENT_BYTES => {
                r.error_help(
                    key_span.clone(),
                    format!(
                        "database name `{key}` is too long: its role `{key}_developer` would be {} bytes, over PostgreSQL's {MAX_IDENT_BYTES}-byte limit",
                        key.len() + LONGEST_ROLE_SUFFIX
                    ),
                    format!(
                        "use a database name of at most {} bytes",
                        MAX_IDENT_BYTES - LONGEST_ROLE_SUFFIX
                    ),
                );
                None
            }
            Ok(name) => Some(name),
            Err(why) => {
                r.error_help(
                    key_span.clone(),
                    format!("invalid database name {key:?}: {why}"),
                    "tenant keys are database names: lower-case letters, digits and '_', starting with a letter, e.g. [tenants.building_shop]",
                );
                None
            }
        };

        let display_name = raw.display_name.and_then(|d| {
            if d.get_ref().trim().is_empty() {
                r.error_help(
                    d.span(),
                    format!("tenant `{key}`: display_name is empty"),
                    "remove the key or give a name",
                );
                None
            } else {
                Some(d.into_inner())
            }
        });

        let plan_ok = cx.plan_names.contains(raw.plan.get_ref());
        if !plan_ok {
            let help = if cx.plan_names.is_empty() {
                format!(
                    "no plans are defined: add a [plans.{}] table",
                    raw.plan.get_ref()
                )
            } else {
                format!("known plans: {}", cx.plan_names.join(", "))
            };
            r.error_help(
                raw.plan.span(),
                format!("tenant `{key}`: unknown plan {:?}", raw.plan.get_ref()),
                help,
            );
        }

        let server = servers::pin(r, &key, raw.server, cx.server_names);
        let subdomain = self.subdomain(r, cx, &key, &key_span, name.is_some(), raw.subdomain);
        self.domains(r, cx, &key, &raw.domains);

        // The plan's user limit, reported at the first user past it.
        let limit = cx
            .plans
            .get(raw.plan.get_ref())
            .and_then(|p| p.max_users.map(|m| (p.name.clone(), m)));
        let all: Vec<&RawUser> = raw
            .admins
            .iter()
            .chain(&raw.developers)
            .chain(&raw.customers)
            .collect();
        let mut users_ok = true;
        if let Some((plan, max)) = limit {
            if let Some(first_over) = all.get(max as usize) {
                r.error_help(
                    first_over.username.span(),
                    format!(
                        "tenant `{key}` has {} login users; its plan {plan:?} allows {max} (max_users)",
                        all.len()
                    ),
                    format!("remove users (admins, developers and customers count together), or raise plans.{plan}.max_users"),
                );
                users_ok = false;
            }
        }
        let mut users = Vec::new();
        for (group, list) in [
            (Group::Admin, raw.admins),
            (Group::Developer, raw.developers),
            (Group::Customer, raw.customers),
        ] {
            for user in list {
                match self.user(r, cx, &key, group, user) {
                    Some(u) => users.push(u),
                    None => users_ok = false,
                }
            }
        }

        let gateway_password = match raw.gateway_password_env {
            Some(var) => self.gateway_env_source(r, cx, &key, var),
            None => name.as_ref().map(|name| PasswordSource::Generated {
                path: cx
                    .secrets
                    .join(tenantry_layout::gateway_login(name).as_str()),
            }),
        };
        if !(plan_ok && users_ok) {
            return None;
        }
        let name = name?;
        let gateway = tenantry_layout::gateway_login(&name);
        Some(Tenant {
            gateway: crate::GatewayLogin {
                password: gateway_password?,
                name: gateway,
            },
            name,
            display_name,
            plan: raw.plan.into_inner(),
            server,
            subdomain: subdomain?,
            domains: raw.domains.into_iter().map(Spanned::into_inner).collect(),
            status: raw.status,
            deletion_protection: raw.deletion_protection.unwrap_or(true),
            users,
        })
    }

    fn subdomain(
        &mut self,
        r: &mut Reporter,
        cx: &Context,
        tenant: &str,
        key_span: &Range<usize>,
        name_ok: bool,
        given: Option<Spanned<String>>,
    ) -> Option<String> {
        let (sub, span) = match given {
            Some(s) => {
                if let Err(why) = check_label(s.get_ref()) {
                    r.error_help(
                        s.span(),
                        format!("tenant `{tenant}`: invalid subdomain {:?}: {why}", s.get_ref()),
                        "a subdomain is one DNS label: a-z, 0-9 and '-', 1 to 63 characters, not starting or ending with '-'",
                    );
                    return None;
                }
                (s.get_ref().clone(), s.span())
            }
            None => {
                if !name_ok {
                    // The name itself is already reported.
                    return None;
                }
                let sub = tenant.replace('_', "-");
                if let Err(why) = check_label(&sub) {
                    r.error_help(
                        key_span.clone(),
                        format!("tenant `{tenant}`: the subdomain derived from its name, {sub:?}, is not a valid DNS label: {why}"),
                        "set `subdomain = \"...\"` for this tenant",
                    );
                    return None;
                }
                (sub, key_span.clone())
            }
        };
        if cx.routing.reserved_subdomains.contains(&sub) {
            r.error_help(
                span,
                format!("tenant `{tenant}`: subdomain {sub:?} is reserved (routing.reserved_subdomains)"),
                "choose another subdomain with `subdomain = \"...\"`",
            );
            return None;
        }
        if let Some((other, first)) = self.subdomains.get(&sub) {
            let at = r.location(first);
            r.error_help(
                span,
                format!("tenant `{tenant}`: subdomain {sub:?} is already used by tenant `{other}` (at {at})"),
                "each tenant needs its own subdomain: set `subdomain = \"...\"` to a different label",
            );
            return None;
        }
        self.subdomains
            .insert(sub.clone(), (tenant.to_owned(), span));
        Some(sub)
    }

    fn domains(
        &mut self,
        r: &mut Reporter,
        cx: &Context,
        tenant: &str,
        domains: &[Spanned<String>],
    ) {
        for d in domains {
            let domain = d.get_ref();
            if let Err(why) = check_hostname(domain) {
                r.error_help(
                    d.span(),
                    format!("tenant `{tenant}`: invalid domain {domain:?}: {why}"),
                    "domains are lower-case host names like \"shop.example.com\"",
                );
                continue;
            }
            if !domain.contains('.') {
                r.error_help(
                    d.span(),
                    format!("tenant `{tenant}`: domain {domain:?} has no dot"),
                    "give a fully qualified host name like \"shop.example.com\"; single labels belong in `subdomain`",
                );
                continue;
            }
            if let Some(first) = self.domains.get(domain) {
                let at = r.location(first);
                r.error_help(
                    d.span(),
                    format!("tenant `{tenant}`: domain {domain:?} is already used at {at}"),
                    "a domain can route to one tenant only: remove one of them",
                );
                continue;
            }
            self.domains.insert(domain.clone(), d.span());
            if cx.routing.base_domains.contains(domain) {
                r.error_help(
                    d.span(),
                    format!("tenant `{tenant}`: domain {domain:?} is a base domain (routing.base_domains)"),
                    "tenants are reached at <subdomain>.<base domain>; remove this domain",
                );
                continue;
            }
            let reserved = cx.routing.base_domains.iter().find_map(|base| {
                let label = domain.strip_suffix(base.as_str())?.strip_suffix('.')?;
                cx.routing
                    .reserved_subdomains
                    .iter()
                    .any(|r| r == label)
                    .then_some(label)
            });
            if let Some(label) = reserved {
                r.error_help(
                    d.span(),
                    format!("tenant `{tenant}`: domain {domain:?} uses the reserved subdomain {label:?}"),
                    "reserved subdomains (routing.reserved_subdomains) cannot route to a tenant; remove this domain",
                );
                continue;
            }
            self.domain_list
                .push((domain.clone(), tenant.to_owned(), d.span()));
        }
    }

    /// A custom domain must not be another tenant's `<subdomain>.<base>`.
    fn check_domains_against_subdomains(&self, r: &mut Reporter, routing: &Routing) {
        for (domain, tenant, span) in &self.domain_list {
            for base in &routing.base_domains {
                let Some(label) = domain
                    .strip_suffix(base.as_str())
                    .and_then(|rest| rest.strip_suffix('.'))
                else {
                    continue;
                };
                if let Some((other, _)) = self.subdomains.get(label) {
                    if other != tenant {
                        r.error_help(
                            span.clone(),
                            format!("tenant `{tenant}`: domain {domain:?} is where tenant `{other}` is reached (its subdomain {label:?} under {base:?})"),
                            "remove this domain or change one of the subdomains",
                        );
                    }
                }
            }
        }
    }

    fn user(
        &mut self,
        r: &mut Reporter,
        cx: &Context,
        tenant: &str,
        group: Group,
        raw: RawUser,
    ) -> Option<User> {
        let uspan = raw.username.span();
        let uname = raw.username.get_ref().as_str();
        let mut ok = true;
        let name = match Ident::parse(uname) {
            Ok(name) => Some(name),
            Err(why) => {
                r.error_help(
                    uspan.clone(),
                    format!("tenant `{tenant}`: invalid username {uname:?}: {why}"),
                    "usernames are PostgreSQL roles: lower-case letters, digits and '_', starting with a letter",
                );
                None
            }
        };
        if name.is_some() && RESERVED_ROLE_NAMES.contains(&uname) {
            r.error_help(
                uspan.clone(),
                format!("tenant `{tenant}`: username `{uname}` is reserved by PostgreSQL"),
                "choose another username",
            );
            ok = false;
        }
        if name.is_some() {
            if let Some(first) = self.usernames.get(uname) {
                let at = r.location(first);
                r.error_help(
                    uspan.clone(),
                    format!("tenant `{tenant}`: username `{uname}` is already used at {at}"),
                    "roles are shared by the whole cluster: each username may appear only once in the file",
                );
                ok = false;
            } else {
                self.usernames.insert(uname.to_owned(), uspan.clone());
            }
            if let Some((owner, what)) = self.roles.get(uname) {
                r.error_help(
                    uspan.clone(),
                    format!("tenant `{tenant}`: username `{uname}` is the {what} of tenant `{owner}`"),
                    "tenantry creates <db>_owner, <db>_admin, <db>_developer, <db>_customer and <db>_gateway for every tenant: choose another username",
                );
                ok = false;
            }
            if self.databases.contains(uname) {
                r.error_help(
                    uspan.clone(),
                    format!("tenant `{tenant}`: username `{uname}` is also the name of a tenant database"),
                    "choose a username that is not a database name",
                );
                ok = false;
            }
        }

        let email = raw.email.and_then(|e| {
            let text = e.get_ref();
            let valid = match text.split_once('@') {
                Some((local, domain)) => {
                    !local.trim().is_empty() && !domain.trim().is_empty() && !domain.contains('@')
                }
                None => false,
            };
            if valid {
                Some(e.into_inner())
            } else {
                r.error_help(
                    e.span(),
                    format!("user `{uname}`: invalid email {text:?}"),
                    "an email needs exactly one '@' with text on both sides, e.g. \"ops@example.com\"",
                );
                ok = false;
                None
            }
        });

        if let Some(var) = &raw.password_env {
            self.password_var(r, var, false);
        }
        let password = password(r, cx, uname, raw.password_env, raw.password_file);
        if !ok {
            return None;
        }
        Some(User {
            name: name?,
            group,
            email,
            password: password?,
        })
    }
}
