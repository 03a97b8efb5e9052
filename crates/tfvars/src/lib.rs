//! Import of a Terraform `tenants.tfvars` (the workflow Tenantry replaces):
//! [`convert`] turns its text into equivalent `tenants.toml` text, plus the
//! environment variables the new file needs ([`PasswordVar`]) and notes on
//! what was left out. The `tenantry import-tfvars` command is a thin wrapper.
//!
//! What is read, everything else being ignored with a note:
//!
//! ```hcl
//! postgres_host     = "localhost"       # with _port and _user: [server] admin_url
//! postgres_port     = 5432
//! postgres_user     = "postgres"
//! postgres_password = "..."             # never copied
//! tenants = {
//!   building_shop = {                   # the database name if database_name is absent
//!     database_name = "building_shop"   # the tenant's name in Tenantry
//!     tenant_name   = "Building Shop"   # -> display_name
//!     plan          = "professional"    # -> plan, and [plans.professional] with defaults
//!     admins     = [{ username = "building_admin", password = "...", email = "..." }]
//!     developers = [...]                # optional, like customers
//!     customers  = [...]
//!   }
//! }
//! ```
//!
//! Plaintext passwords are never copied, neither into the output nor into a
//! note or an error: a user who had one gets `password_env =
//! "<USERNAME>_PASSWORD"`, and one without gets none (Tenantry generates it).
//! Tenants keep their tfvars order; plans are sorted by name.
//!
//! Every problem that would make the output fail validation (a bad database
//! name, username, plan or email, a name used twice, a value of the wrong
//! type...) is reported instead, as a [`Diagnostic`] pointing at the tfvars
//! (`tenants.tfvars:12:5: ...`), all of them at once like the manifest
//! validator does.
//!
//! This crate is only the importer: what a valid `tenants.toml` is, and the
//! rules the output is checked against (identifiers, reserved role names,
//! the longest derived role), belong to `tenantry-manifest`, which the
//! gateway and every other reader of `tenants.toml` link without hcl-edit.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::ops::Range;
use std::path::Path;

use hcl_edit::expr::{Expression, Object, ObjectKey};
use hcl_edit::structure::Structure;
use hcl_edit::Span;

use tenantry_manifest::{
    render, Diagnostic, Group, Ident, Reporter, ADMIN_URL_ENV, DEFAULT_SECRETS_DIR,
    LONGEST_ROLE_SUFFIX, MAX_IDENT_BYTES, RESERVED_ROLE_NAMES,
};

/// The result of [`convert`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Converted {
    /// The `tenants.toml` text, ending with a newline.
    pub toml: String,
    /// The variables the output's `password_env`s name, in output order:
    /// each must hold the user's password when tenantry runs.
    pub env_vars: Vec<PasswordVar>,
    /// What was not carried over or was guessed, one line each, in tfvars
    /// order: `tenants.tfvars:12:5: <what>` (just `<what>` without a place).
    pub notes: Vec<String>,
}

/// An environment variable the converted file reads a password from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswordVar {
    /// The variable: `<USERNAME uppercased>_PASSWORD`.
    pub name: String,
    /// The tenant (database) of the user.
    pub tenant: String,
    /// The user (role) whose password it holds.
    pub username: String,
}

/// Why a tfvars file could not be converted. Never holds a password.
#[derive(Debug, thiserror::Error)]
pub enum TfvarsError {
    /// The file is not valid HCL.
    #[error("{0}")]
    Syntax(Diagnostic),
    /// The file is HCL but not a usable `tenants.tfvars`: every problem
    /// found, in file order.
    #[error("{}", render(.0))]
    Invalid(Vec<Diagnostic>),
}

impl TfvarsError {
    /// Every problem, with its place in the tfvars.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            TfvarsError::Syntax(d) => std::slice::from_ref(d),
            TfvarsError::Invalid(d) => d,
        }
    }
}

/// Converts the text of a `tenants.tfvars` read from `path` (used in the
/// header comment, notes and errors) into `tenants.toml` text.
///
/// The output validates with [`tenantry_manifest::Inventory::from_str_with`] once the
/// variables of [`Converted::env_vars`] are set. Tenants keep the tfvars
/// order, plans are sorted by name, and the same input always gives the same
/// output.
pub fn convert(source: &str, path: &Path) -> Result<Converted, TfvarsError> {
    let body = hcl_edit::parser::parse_body(source).map_err(|e| {
        TfvarsError::Syntax(Diagnostic {
            file: path.to_path_buf(),
            line: e.location().line(),
            column: e.location().column(),
            // Not `e.to_string()`: it quotes the source line, which may hold a password.
            message: format!("invalid HCL: {}", e.message()),
            help: Some(
                "a tfvars file holds `name = value` lines, e.g. tenants = { building_shop = { plan = \"starter\" } }"
                    .into(),
            ),
        })
    })?;

    let mut im = Importer {
        r: Reporter::new(source, path),
        notes: Vec::new(),
    };
    let input = im.read(&body);
    im.check_names(&input.tenants);

    let mut diagnostics = im.r.into_diagnostics();
    if !diagnostics.is_empty() {
        diagnostics.sort_by_key(|d| (d.line, d.column));
        return Err(TfvarsError::Invalid(diagnostics));
    }
    let env_vars = password_vars(&input.tenants);
    let mut notes = im.notes;
    notes.sort_by_key(|d| (d.line, d.column));
    let mut notes: Vec<String> = notes.iter().map(Diagnostic::to_string).collect();
    if !env_vars.is_empty() {
        notes.push(format!(
            "passwords are not copied: set {} before running tenantry",
            names_list(&env_vars)
        ));
    }
    Ok(Converted {
        toml: render_toml(&input, &env_vars, &file_name(path)),
        env_vars,
        notes,
    })
}

// ------------------------------------------------------------------ defaults

/// Limits of a plan, as written to `[plans.<name>]`.
struct PlanLimits {
    connection_limit: u32,
    statement_timeout: &'static str,
    pool_size: u32,
    requests_per_second: u32,
}

/// Limits written for a plan the tfvars names (it carries none): those of
/// the example `tenants.toml` for `starter` and `professional`, larger ones
/// for `enterprise`, and the cautious `starter` ones for any other name.
fn plan_limits(name: &str) -> PlanLimits {
    match name {
        "professional" => PlanLimits {
            connection_limit: 20,
            statement_timeout: "30s",
            pool_size: 8,
            requests_per_second: 200,
        },
        "enterprise" => PlanLimits {
            connection_limit: 100,
            statement_timeout: "60s",
            pool_size: 32,
            requests_per_second: 1000,
        },
        _ => PlanLimits {
            connection_limit: 5,
            statement_timeout: "5s",
            pool_size: 2,
            requests_per_second: 20,
        },
    }
}

/// The user lists of a tenant, in output order, with their group.
const GROUP_KEYS: [(&str, Group); 3] = [
    ("admins", Group::Admin),
    ("developers", Group::Developer),
    ("customers", Group::Customer),
];

const TENANT_KEYS: [&str; 6] = [
    "database_name",
    "tenant_name",
    "plan",
    "admins",
    "developers",
    "customers",
];

const USER_KEYS: [&str; 3] = ["username", "password", "email"];

/// Longest line of the output before a list of several users is split, one
/// user a line (a single user always stays on the line of its group).
const MAX_LINE: usize = 100;

// ------------------------------------------------------------------ reading

/// What the output is made of; names are checked before they get here.
struct Input {
    server: Option<String>,
    tenants: Vec<TenantIn>,
}

struct TenantIn {
    /// The database name, which is the tenant name in Tenantry.
    name: String,
    name_span: Range<usize>,
    display_name: Option<String>,
    plan: String,
    users: Vec<UserIn>,
}

struct UserIn {
    group: Group,
    name: String,
    span: Range<usize>,
    email: Option<String>,
    /// Whether the tfvars held a (non-empty) password; the value is never kept.
    has_password: bool,
}

/// A `postgres_*` variable with its place.
struct Var<'a> {
    span: Range<usize>,
    value: &'a Expression,
}

struct Importer<'a> {
    r: Reporter<'a>,
    notes: Vec<Diagnostic>,
}

impl<'a> Importer<'a> {
    fn note(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        let d = self.r.diagnostic(span, message, None);
        self.notes.push(d);
    }

    fn error(&mut self, span: Range<usize>, message: impl Into<String>, help: impl Into<String>) {
        self.r.error_help(span, message, help);
    }

    fn read(&mut self, body: &hcl_edit::structure::Body) -> Input {
        let mut tenants = None;
        let (mut host, mut port, mut user) = (None, None, None);
        for structure in body.iter() {
            let attr = match structure {
                Structure::Attribute(attr) => attr,
                Structure::Block(block) => {
                    self.error(
                        span_of(block),
                        format!("unexpected block `{}`", block.ident.as_str()),
                        "a tfvars file only assigns variables: write `name = { ... }`",
                    );
                    continue;
                }
            };
            let name = attr.key.as_str();
            let var = Var {
                span: span_of(&attr.key),
                value: &attr.value,
            };
            match name {
                "tenants" => tenants = Some(var),
                "postgres_host" => host = Some(var),
                "postgres_port" => port = Some(var),
                "postgres_user" => user = Some(var),
                "postgres_password" => self.note(
                    Some(var.span),
                    format!("postgres_password is not copied: give the admin password in {ADMIN_URL_ENV} (or --admin-url), which overrides [server] admin_url"),
                ),
                other => self.note(
                    Some(var.span),
                    format!("variable `{other}` is ignored: tenants.toml has no equivalent"),
                ),
            }
        }
        let server = self.server(host, port, user);
        let tenants = match tenants {
            Some(var) => self.tenants(var.value),
            None => {
                self.error(
                    0..0,
                    "no `tenants` variable in this file",
                    "expected `tenants = { <database> = { plan = \"...\", admins = [...] } }`",
                );
                Vec::new()
            }
        };
        Input { server, tenants }
    }

    /// `postgres://<user>@<host>:<port>/postgres` when all three are given.
    fn server(
        &mut self,
        host: Option<Var>,
        port: Option<Var>,
        user: Option<Var>,
    ) -> Option<String> {
        let host_text = host.as_ref().and_then(|v| {
            let h = self.string(v.value, "postgres_host")?;
            let valid = !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
            if !valid {
                self.error(
                    span_of(v.value),
                    format!("postgres_host: invalid host {h:?}"),
                    "expected a host name or an IP address, e.g. \"localhost\" or \"10.0.0.5\"",
                );
                return None;
            }
            // An IPv6 address goes in brackets in a URL.
            Some(if h.contains(':') {
                format!("[{h}]")
            } else {
                h.to_owned()
            })
        });
        let port_number = port.as_ref().and_then(|v| {
            let n = match v.value {
                Expression::Number(n) => n.value().as_u64(),
                Expression::String(s) => s.value().parse::<u64>().ok(),
                other => {
                    self.expected(other, "postgres_port", "a number", "postgres_port = 5432");
                    return None;
                }
            };
            match n {
                Some(n @ 1..=65535) => Some(n),
                _ => {
                    self.error(
                        span_of(v.value),
                        "postgres_port: invalid port",
                        "expected a port number from 1 to 65535, e.g. 5432",
                    );
                    None
                }
            }
        });
        let user_text = user.as_ref().and_then(|v| {
            let u = self.string(v.value, "postgres_user")?;
            if u.is_empty() {
                self.error(
                    span_of(v.value),
                    "postgres_user is empty",
                    "expected a PostgreSQL role name, e.g. \"postgres\"",
                );
                return None;
            }
            Some(tenantry_pgconn::percent_encode(u))
        });

        let given: Vec<&Var> = [&host, &port, &user].into_iter().flatten().collect();
        let missing: Vec<&str> = [
            ("postgres_host", &host),
            ("postgres_port", &port),
            ("postgres_user", &user),
        ]
        .into_iter()
        .filter(|(_, v)| v.is_none())
        .map(|(name, _)| name)
        .collect();
        if let Some(first) = given.first() {
            if !missing.is_empty() {
                self.note(
                    Some(first.span.clone()),
                    format!(
                        "no [server] admin_url written: {} not set; add it by hand or set {ADMIN_URL_ENV}",
                        missing.join(" and ")
                    ),
                );
            }
        }
        Some(format!(
            "postgres://{}@{}:{}/postgres",
            user_text?, host_text?, port_number?
        ))
    }

    fn tenants(&mut self, value: &Expression) -> Vec<TenantIn> {
        let Expression::Object(object) = value else {
            self.expected(
                value,
                "tenants",
                "an object of tenants",
                "tenants = { building_shop = { plan = \"starter\", admins = [...] } }",
            );
            return Vec::new();
        };
        if object.is_empty() {
            self.note(
                Some(span_of(value)),
                "tenants is empty: the output has no tenants",
            );
        }
        let mut tenants = Vec::new();
        for (key, value) in object.iter() {
            let Some(key_name) = self.key_name(key, "tenants") else {
                continue;
            };
            if let Some(t) = self.tenant(key_name, span_of(key), value.expr()) {
                tenants.push(t);
            }
        }
        tenants
    }

    fn tenant(
        &mut self,
        key: &str,
        key_span: Range<usize>,
        value: &Expression,
    ) -> Option<TenantIn> {
        let at = format!("tenants.{key}");
        let Expression::Object(object) = value else {
            self.expected(
                value,
                &at,
                "an object",
                "building_shop = { database_name = \"building_shop\", plan = \"starter\", admins = [...] }",
            );
            return None;
        };
        let fields = self.fields(object, &at, &TENANT_KEYS);
        let mut ok = true;

        let (name, name_span) = match fields.get("database_name").copied() {
            Some(e) => {
                let name = self.string(e, &format!("{at}.database_name"));
                if let Some(name) = name {
                    if name != key {
                        self.note(
                            Some(key_span.clone()),
                            format!("tenant `{key}` becomes `{name}`: in Tenantry a tenant is named after its database (database_name)"),
                        );
                    }
                }
                (name, span_of(e))
            }
            None => {
                self.note(
                    Some(key_span.clone()),
                    format!(
                        "{at} has no database_name: its key `{key}` is used as the database name"
                    ),
                );
                (Some(key), key_span.clone())
            }
        };
        if let Some(name) = name {
            if let Err(why) = check_database(name) {
                self.error(
                    name_span.clone(),
                    format!("{at}: invalid database name {name:?}: {why}"),
                    "database names are lower-case letters, digits and '_', starting with a letter, e.g. \"building_shop\"",
                );
                ok = false;
            }
        }

        let display_name = fields.get("tenant_name").copied().and_then(|e| {
            let text = self.string(e, &format!("{at}.tenant_name"))?;
            if text.trim().is_empty() {
                self.note(
                    Some(span_of(e)),
                    format!("{at}.tenant_name is empty: no display_name written"),
                );
                return None;
            }
            Some(text.to_owned())
        });

        let plan = match fields.get("plan").copied() {
            Some(e) => self.string(e, &format!("{at}.plan")).and_then(|plan| {
                if let Err(why) = check_plan(plan) {
                    self.error(
                        span_of(e),
                        format!("{at}: invalid plan name {plan:?}: {why}"),
                        "plan names are lower-case letters, digits, '_' and '-', e.g. \"starter\"",
                    );
                    return None;
                }
                Some(plan.to_owned())
            }),
            None => {
                self.error(
                    key_span.clone(),
                    format!("{at} has no plan"),
                    "every tenant needs a plan: add e.g. plan = \"starter\"",
                );
                None
            }
        };

        let mut users = Vec::new();
        for (list_key, group) in GROUP_KEYS {
            let Some(list) = fields.get(list_key).copied() else {
                continue;
            };
            let list_at = format!("{at}.{list_key}");
            let items = match list {
                Expression::Array(items) => items,
                Expression::Null(_) => continue,
                other => {
                    self.expected(
                        other,
                        &list_at,
                        "a list of users",
                        "admins = [{ username = \"...\", email = \"...\" }]",
                    );
                    ok = false;
                    continue;
                }
            };
            for (i, item) in items.iter().enumerate() {
                match self.user(&format!("{list_at}[{i}]"), group, item) {
                    Some(u) => users.push(u),
                    None => ok = false,
                }
            }
        }

        if !ok {
            return None;
        }
        Some(TenantIn {
            name: name?.to_owned(),
            name_span,
            display_name,
            plan: plan?,
            users,
        })
    }

    fn user(&mut self, at: &str, group: Group, value: &Expression) -> Option<UserIn> {
        let Expression::Object(object) = value else {
            self.expected(
                value,
                at,
                "an object",
                "{ username = \"...\", password = \"...\", email = \"...\" }",
            );
            return None;
        };
        let fields = self.fields(object, at, &USER_KEYS);
        let mut ok = true;

        let name = match fields.get("username").copied() {
            Some(e) => self
                .string(e, &format!("{at}.username"))
                .map(|n| (n, span_of(e))),
            None => {
                self.error(
                    span_of(value),
                    format!("{at} has no username"),
                    "every user needs username = \"...\"",
                );
                None
            }
        };
        if let Some((name, span)) = &name {
            let why = match Ident::parse(name) {
                Err(why) => Some(why),
                Ok(_) if RESERVED_ROLE_NAMES.contains(name) => {
                    Some(format!("`{name}` is reserved by PostgreSQL"))
                }
                Ok(_) => None,
            };
            if let Some(why) = why {
                self.error(
                    span.clone(),
                    format!("{at}: invalid username {name:?}: {why}"),
                    "usernames are PostgreSQL roles: lower-case letters, digits and '_', starting with a letter",
                );
                ok = false;
            }
        }

        let email = fields.get("email").copied().and_then(|e| {
            let text = self.string(e, &format!("{at}.email"));
            let Some(text) = text else {
                ok = false;
                return None;
            };
            if text.is_empty() {
                self.note(Some(span_of(e)), format!("{at}.email is empty: not copied"));
                return None;
            }
            let valid = text.split_once('@').is_some_and(|(local, domain)| {
                !local.trim().is_empty() && !domain.trim().is_empty() && !domain.contains('@')
            });
            if !valid {
                self.error(
                    span_of(e),
                    format!("{at}: invalid email {text:?}"),
                    "an email needs exactly one '@' with text on both sides, e.g. \"ops@example.com\"; remove it or fix it",
                );
                ok = false;
                return None;
            }
            Some(text.to_owned())
        });

        // Only whether there is one: the value is never read into anything.
        let has_password = match fields.get("password").copied() {
            None => false,
            Some(e) => match e {
                Expression::String(s) => !s.value().is_empty(),
                Expression::Null(_) => false,
                other => {
                    self.expected(other, &format!("{at}.password"), "a string", "");
                    ok = false;
                    false
                }
            },
        };
        let (name, span) = name?;
        if !has_password {
            self.note(
                Some(span.clone()),
                format!("user `{name}` has no password in the tfvars: tenantry generates one on first apply and saves it under {DEFAULT_SECRETS_DIR}/{name}"),
            );
        }
        if !ok {
            return None;
        }
        Some(UserIn {
            group,
            name: name.to_owned(),
            span,
            email,
            has_password,
        })
    }

    /// The known keys of `object` with their values (`null` ones left out);
    /// unknown keys get a note, keys given twice an error.
    fn fields<'e>(
        &mut self,
        object: &'e Object,
        at: &str,
        known: &[&'static str],
    ) -> HashMap<&'static str, &'e Expression> {
        let mut found: HashMap<&'static str, (&'e Expression, Range<usize>)> = HashMap::new();
        for (key, value) in object.iter() {
            let Some(name) = self.key_name(key, at) else {
                continue;
            };
            let span = span_of(key);
            let Some(known_name) = known.iter().copied().find(|k| *k == name) else {
                self.note(
                    Some(span),
                    format!("{at}: key `{name}` is ignored: tenantry does not know it"),
                );
                continue;
            };
            if let Some((_, first)) = found.get(known_name) {
                let first = self.r.location(first);
                self.error(
                    span,
                    format!("{at}: key `{name}` is given twice (first at {first})"),
                    "keep one of them",
                );
                continue;
            }
            found.insert(known_name, (value.expr(), span));
        }
        found
            .into_iter()
            .filter(|(_, (e, _))| !matches!(e, Expression::Null(_)))
            .map(|(k, (e, _))| (k, e))
            .collect()
    }

    /// The name of an object key: an identifier or a plain string.
    fn key_name<'e>(&mut self, key: &'e ObjectKey, at: &str) -> Option<&'e str> {
        match key {
            ObjectKey::Ident(ident) => Some(ident.value().as_str()),
            ObjectKey::Expression(Expression::String(s)) => Some(s.value().as_str()),
            ObjectKey::Expression(e) => {
                self.error(
                    span_of(e),
                    format!(
                        "{at}: expected a key (a name or a quoted string), found {}",
                        kind(e)
                    ),
                    "write the key as a name, e.g. building_shop = { ... }",
                );
                None
            }
        }
    }

    /// The text of a plain string, or an error naming `at`.
    fn string<'e>(&mut self, value: &'e Expression, at: &str) -> Option<&'e str> {
        match value {
            Expression::String(s) => Some(s.value().as_str()),
            other => {
                self.expected(other, at, "a string", "");
                None
            }
        }
    }

    /// Reports that `found` is not `expected` (with `example`, if not
    /// empty, as help); names the kind of value only, never the value (it
    /// may be a password).
    fn expected(&mut self, found: &Expression, at: &str, expected: &str, example: &str) {
        let help = match found {
            Expression::StringTemplate(_) | Expression::HeredocTemplate(_) => {
                "tfvars values are constants: write a plain \"...\" string without ${...} or %{...}"
            }
            Expression::Variable(_)
            | Expression::Traversal(_)
            | Expression::FuncCall(_)
            | Expression::Conditional(_)
            | Expression::UnaryOp(_)
            | Expression::BinaryOp(_)
            | Expression::ForExpr(_)
            | Expression::Parenthesis(_) => "tfvars values are constants: write the value itself",
            _ if example.is_empty() => "write a quoted string, e.g. \"...\"",
            _ => "",
        };
        let help = if help.is_empty() {
            format!("write it like {example}")
        } else {
            help.to_owned()
        };
        self.error(
            span_of(found),
            format!("{at}: expected {expected}, found {}", kind(found)),
            help,
        );
    }

    /// Checks across tenants, as the manifest validator does: database names
    /// and usernames used once, and no username equal to a database name or
    /// to a tenant's group role (`<db>_admin`, ...).
    fn check_names(&mut self, tenants: &[TenantIn]) {
        let mut databases: HashMap<&str, &Range<usize>> = HashMap::new();
        let mut roles: HashMap<String, (&str, Group)> = HashMap::new();
        for t in tenants {
            if let Some(first) = databases.get(t.name.as_str()) {
                let first = self.r.location(first);
                self.error(
                    t.name_span.clone(),
                    format!(
                        "database name `{}` is used twice (first at {first})",
                        t.name
                    ),
                    "each tenant needs its own database: change database_name",
                );
                continue;
            }
            databases.insert(&t.name, &t.name_span);
            for g in Group::ALL {
                roles.insert(format!("{}_{}", t.name, g.as_str()), (&t.name, g));
            }
        }
        let mut usernames: HashMap<&str, &Range<usize>> = HashMap::new();
        for t in tenants {
            for u in &t.users {
                if let Some(first) = usernames.get(u.name.as_str()) {
                    let first = self.r.location(first);
                    self.error(
                        u.span.clone(),
                        format!("username `{}` is used twice (first at {first})", u.name),
                        "roles are shared by the whole cluster: each username may appear only once",
                    );
                    continue;
                }
                usernames.insert(&u.name, &u.span);
                if let Some((owner, g)) = roles.get(&u.name) {
                    self.error(
                        u.span.clone(),
                        format!("username `{}` is the {g} group role of tenant `{owner}`", u.name),
                        "tenantry creates <db>_owner, <db>_admin, <db>_developer and <db>_customer for every tenant: choose another username",
                    );
                }
                if databases.contains_key(u.name.as_str()) {
                    self.error(
                        u.span.clone(),
                        format!(
                            "username `{}` is also the name of a tenant database",
                            u.name
                        ),
                        "choose a username that is not a database name",
                    );
                }
            }
        }
    }
}

/// The start of a parsed item (all have one); `0..0` otherwise.
fn span_of(item: &impl Span) -> Range<usize> {
    item.span().unwrap_or(0..0)
}

/// "a string", "a list", ...: what a value is, never what it holds.
fn kind(e: &Expression) -> &'static str {
    match e {
        Expression::Null(_) => "null",
        Expression::Bool(_) => "a bool",
        Expression::Number(_) => "a number",
        Expression::String(_) => "a string",
        Expression::Array(_) => "a list",
        Expression::Object(_) => "an object",
        Expression::StringTemplate(_) | Expression::HeredocTemplate(_) => "a string template",
        Expression::Parenthesis(_) => "a parenthesized expression",
        Expression::Variable(_) | Expression::Traversal(_) => "a reference",
        Expression::Conditional(_) => "a conditional",
        Expression::FuncCall(_) => "a function call",
        Expression::UnaryOp(_) | Expression::BinaryOp(_) => "an operation",
        Expression::ForExpr(_) => "a for expression",
    }
}

/// A database name valid as a tenant in `tenants.toml`: an [`Ident`] short
/// enough for its `_developer` role, whose derived subdomain (`_` -> `-`) is
/// a valid DNS label.
fn check_database(name: &str) -> Result<(), String> {
    Ident::parse(name)?;
    let max = MAX_IDENT_BYTES - LONGEST_ROLE_SUFFIX;
    if name.len() > max {
        return Err(format!(
            "it is {} bytes long; its role `{name}_developer` must fit PostgreSQL's {MAX_IDENT_BYTES} bytes, so use at most {max}",
            name.len()
        ));
    }
    if name.starts_with('_') || name.ends_with('_') {
        return Err(
            "it starts or ends with '_', so its subdomain (with '-' for '_') would not be a valid DNS label".into(),
        );
    }
    Ok(())
}

/// A plan name that is a bare TOML key: 1 to 63 of a-z, 0-9, '_' and '-'.
fn check_plan(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if name.len() > 63 {
        return Err(format!(
            "it is {} bytes long; at most 63 are allowed",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-')))
    {
        let hint = if bad.is_ascii_uppercase() {
            " (use lower case)"
        } else {
            ""
        };
        return Err(format!(
            "it contains {bad:?}; only a-z, 0-9, '_' and '-' are allowed{hint}"
        ));
    }
    Ok(())
}

// ------------------------------------------------------------------ writing

fn env_var_name(username: &str) -> String {
    format!("{}_PASSWORD", username.to_ascii_uppercase())
}

fn password_vars(tenants: &[TenantIn]) -> Vec<PasswordVar> {
    tenants
        .iter()
        .flat_map(|t| {
            ordered_users(t)
                .filter(|u| u.has_password)
                .map(|u| PasswordVar {
                    name: env_var_name(&u.name),
                    tenant: t.name.clone(),
                    username: u.name.clone(),
                })
        })
        .collect()
}

/// Users of a tenant in output order: admins, developers, customers.
fn ordered_users(t: &TenantIn) -> impl Iterator<Item = &UserIn> {
    GROUP_KEYS
        .iter()
        .flat_map(move |(_, g)| t.users.iter().filter(move |u| u.group == *g))
}

fn names_list(vars: &[PasswordVar]) -> String {
    vars.iter()
        .map(|v| v.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The file name of `path` for the header, without control characters (a
/// newline would end the comment).
fn file_name(path: &Path) -> String {
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    name.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A TOML basic string: `"..."` with `\`, `"` and control characters escaped.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Appends `#   a, b, c` lines listing `items`, wrapped before [`MAX_LINE`].
fn wrapped_comment(out: &mut String, items: &[&str]) {
    let mut line = String::from("#  ");
    for (i, item) in items.iter().enumerate() {
        let sep = if i + 1 < items.len() { "," } else { "" };
        if line.len() > 3 && line.len() + 1 + item.len() + sep.len() > MAX_LINE {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#  ");
        }
        line.push(' ');
        line.push_str(item);
        line.push_str(sep);
    }
    out.push_str(&line);
    out.push('\n');
}

fn render_toml(input: &Input, env_vars: &[PasswordVar], file: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Generated by `tenantry import-tfvars` from {file}; review it before `tenantry apply`."
    );
    if env_vars.is_empty() {
        out.push_str(
            "# No user had a password in the tfvars, so no environment variable is needed.\n",
        );
    } else {
        out.push_str(
            "# Passwords are not copied: set these environment variables to the users' passwords:\n",
        );
        let names: Vec<&str> = env_vars.iter().map(|v| v.name.as_str()).collect();
        wrapped_comment(&mut out, &names);
    }
    if input
        .tenants
        .iter()
        .any(|t| t.users.iter().any(|u| !u.has_password))
    {
        let _ = writeln!(
            out,
            "# Users without password_env get a password generated on first apply, saved under\n# {DEFAULT_SECRETS_DIR}/<username>."
        );
    }
    out.push_str("# Tenants are in the order of the tfvars.\n");

    if let Some(url) = &input.server {
        out.push('\n');
        out.push_str(
            "# From postgres_user, postgres_host and postgres_port. The password is not copied:\n",
        );
        let _ = writeln!(
            out,
            "# give the full URL in {ADMIN_URL_ENV} (or --admin-url), which overrides admin_url."
        );
        out.push_str("[server]\n");
        let _ = writeln!(out, "admin_url = {}", toml_str(url));
    }

    let mut plans: Vec<&str> = input.tenants.iter().map(|t| t.plan.as_str()).collect();
    plans.sort_unstable();
    plans.dedup();
    for plan in plans {
        let limits = plan_limits(plan);
        out.push('\n');
        out.push_str("# Not in the tfvars: default limits, review them.\n");
        let _ = writeln!(out, "[plans.{plan}]");
        let _ = writeln!(out, "connection_limit = {}", limits.connection_limit);
        let _ = writeln!(
            out,
            "statement_timeout = {}",
            toml_str(limits.statement_timeout)
        );
        let _ = writeln!(out, "pool_size = {}", limits.pool_size);
        let _ = writeln!(out, "requests_per_second = {}", limits.requests_per_second);
    }

    for t in &input.tenants {
        out.push('\n');
        let _ = writeln!(out, "[tenants.{}]", t.name);
        if let Some(display) = &t.display_name {
            let _ = writeln!(out, "display_name = {}", toml_str(display));
        }
        let _ = writeln!(out, "plan = {}", toml_str(&t.plan));
        for (key, group) in GROUP_KEYS {
            let users: Vec<String> = t
                .users
                .iter()
                .filter(|u| u.group == group)
                .map(user_table)
                .collect();
            if users.is_empty() {
                continue;
            }
            let head = format!("{key:<10} = [");
            let one_line = format!("{head}{}]", users.join(", "));
            if users.len() == 1 || one_line.chars().count() <= MAX_LINE {
                out.push_str(&one_line);
                out.push('\n');
            } else {
                out.push_str(&head);
                out.push('\n');
                for u in users {
                    let _ = writeln!(out, "  {u},");
                }
                out.push_str("]\n");
            }
        }
    }
    out
}

/// `{ username = "...", email = "...", password_env = "..." }`.
fn user_table(u: &UserIn) -> String {
    let mut s = format!("{{ username = {}", toml_str(&u.name));
    if let Some(email) = &u.email {
        let _ = write!(s, ", email = {}", toml_str(email));
    }
    if u.has_password {
        let _ = write!(s, ", password_env = {}", toml_str(&env_var_name(&u.name)));
    }
    s.push_str(" }");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use tenantry_manifest::{Inventory, PasswordSource};

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures")
            .join(name)
    }

    fn fixture_source() -> String {
        std::fs::read_to_string(fixture("tenants.tfvars")).unwrap()
    }

    fn convert_fixture() -> Converted {
        convert(&fixture_source(), Path::new("tenants.tfvars")).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Converting the fixture gives the golden file, byte for byte.
    /// After an intended change of the output, run
    /// `TENANTRY_BLESS=1 cargo test -p tenantry-tfvars` to rewrite
    /// `tests/fixtures/tenants.from-tfvars.toml`, then review its diff.
    #[test]
    fn golden() {
        let got = convert_fixture().toml;
        let golden = fixture("tenants.from-tfvars.toml");
        if std::env::var_os("TENANTRY_BLESS").is_some_and(|v| v == "1") {
            std::fs::write(&golden, &got).unwrap();
        }
        let want = std::fs::read_to_string(&golden).unwrap();
        assert_eq!(
            got,
            want,
            "output differs from {}; if intended, rerun with TENANTRY_BLESS=1",
            golden.display()
        );
    }

    #[test]
    fn output_validates_as_a_manifest() {
        let c = convert_fixture();
        let names: Vec<String> = c.env_vars.iter().map(|v| v.name.clone()).collect();
        let env = |name: &str| {
            names
                .iter()
                .any(|n| n == name)
                .then(|| "pw-from-env".to_owned())
        };
        let inv = Inventory::from_str_with(&c.toml, Path::new("tenants.toml"), &env)
            .unwrap_or_else(|e| panic!("{e}\n{}", c.toml));

        let tenant_names: Vec<&str> = inv.tenants.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            tenant_names,
            ["building_shop", "corner_cafe", "hardware_store"]
        );
        assert_eq!(
            inv.plans.keys().collect::<Vec<_>>(),
            ["professional", "starter"]
        );
        assert!(inv.only_server().unwrap().admin_url.is_some());

        let users = |t: &str, g: Group| -> Vec<String> {
            inv.tenant(t)
                .unwrap()
                .users_in(g)
                .map(|u| u.name.to_string())
                .collect()
        };
        let shop = inv.tenant("building_shop").unwrap();
        assert_eq!(shop.display_name.as_deref(), Some("Building Shop Inc."));
        assert_eq!(shop.plan, "professional");
        assert_eq!(users("building_shop", Group::Admin), ["building_admin"]);
        assert_eq!(users("building_shop", Group::Developer), ["building_dev"]);
        assert_eq!(
            users("building_shop", Group::Customer),
            ["building_customer", "building_kiosk"]
        );
        let admin = shop.users_in(Group::Admin).next().unwrap();
        assert_eq!(admin.email.as_deref(), Some("ops@building.example"));
        assert_eq!(
            admin.password,
            PasswordSource::Env {
                var: "BUILDING_ADMIN_PASSWORD".into()
            }
        );
        let kiosk = shop.users_in(Group::Customer).nth(1).unwrap();
        assert!(matches!(kiosk.password, PasswordSource::Generated { .. }));

        let hardware = inv.tenant("hardware_store").unwrap();
        assert_eq!(
            hardware.display_name.as_deref(),
            Some("Hardware Store \"Nuts & Bolts\"")
        );
        assert_eq!(hardware.plan, "starter");
        assert_eq!(users("hardware_store", Group::Admin), ["hardware_admin"]);
        assert_eq!(users("hardware_store", Group::Developer), ["hardware_dev"]);
        assert_eq!(
            users("hardware_store", Group::Customer),
            ["hardware_customer"]
        );
        assert_eq!(hardware.users_in(Group::Admin).next().unwrap().email, None);

        let cafe = inv.tenant("corner_cafe").unwrap();
        assert_eq!(cafe.display_name.as_deref(), Some("Corner Café"));
        assert_eq!(users("corner_cafe", Group::Admin), ["cafe_admin"]);
        assert!(users("corner_cafe", Group::Developer).is_empty());
        assert_eq!(users("corner_cafe", Group::Customer), ["cafe_customer"]);

        // Every password_env is listed, and nothing else.
        let mut in_inventory: Vec<String> = inv
            .tenants
            .iter()
            .flat_map(|t| &t.users)
            .filter_map(|u| match &u.password {
                PasswordSource::Env { var } => Some(var.clone()),
                _ => None,
            })
            .collect();
        let mut listed = names.clone();
        in_inventory.sort();
        listed.sort();
        assert_eq!(in_inventory, listed);
        assert_eq!(
            c.env_vars[0],
            PasswordVar {
                name: "BUILDING_ADMIN_PASSWORD".into(),
                tenant: "building_shop".into(),
                username: "building_admin".into(),
            }
        );

        // Without the variables, the manifest names the missing one.
        let err = Inventory::from_str_with(&c.toml, Path::new("tenants.toml"), &|_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("BUILDING_ADMIN_PASSWORD"), "{err}");
    }

    /// Every string value of a `password`/`postgres_password` key, anywhere.
    fn passwords_in(source: &str) -> Vec<String> {
        fn walk(e: &Expression, out: &mut Vec<String>) {
            match e {
                Expression::Array(items) => items.iter().for_each(|i| walk(i, out)),
                Expression::Object(o) => {
                    for (k, v) in o.iter() {
                        let is_password = match k {
                            ObjectKey::Ident(i) => i.value().as_str() == "password",
                            ObjectKey::Expression(e) => e.as_str() == Some("password"),
                        };
                        match v.expr() {
                            Expression::String(s) if is_password => out.push(s.value().clone()),
                            other => walk(other, out),
                        }
                    }
                }
                _ => {}
            }
        }
        let body = hcl_edit::parser::parse_body(source).unwrap();
        let mut out = Vec::new();
        for attr in body.attributes() {
            match &attr.value {
                Expression::String(s) if attr.key.as_str() == "postgres_password" => {
                    out.push(s.value().clone());
                }
                other => walk(other, &mut out),
            }
        }
        out
    }

    #[test]
    fn no_password_is_copied() {
        let source = fixture_source();
        let passwords = passwords_in(&source);
        assert_eq!(passwords.len(), 9, "{passwords:?}");
        let c = convert_fixture();
        let notes = c.notes.join("\n");
        let vars = format!("{:?}", c.env_vars);
        for p in &passwords {
            assert!(!c.toml.contains(p.as_str()), "password in the output");
            assert!(!notes.contains(p.as_str()), "password in a note");
            assert!(!vars.contains(p.as_str()), "password in env_vars");
        }

        // Nor in errors, even when the file is broken right after one.
        let broken = "tenants = {\n  a = { plan = \"x\", admins = [{ username = \"Bad\", password = \"s3cr3t-Pa55\" }] }\n}\npostgres_password = \"s3cr3t-Pa55\" oops\n";
        let err = convert(broken, Path::new("t.tfvars")).unwrap_err();
        assert!(!format!("{err} {err:?}").contains("s3cr3t"), "{err}");
        let bad_type = "tenants = { a = { plan = \"x\", admins = [{ username = \"u\", password = [\"s3cr3t-Pa55\"] }] } }\n";
        let err = convert(bad_type, Path::new("t.tfvars")).unwrap_err();
        assert!(
            err.to_string().contains(
                "t.tfvars:1:70: tenants.a.admins[0].password: expected a string, found a list"
            ),
            "{err}"
        );
        assert!(!format!("{err} {err:?}").contains("s3cr3t"), "{err}");
    }

    #[test]
    fn notes_name_what_was_left_out() {
        let c = convert_fixture();
        let notes = c.notes.join("\n");
        for needle in [
            "tenants.tfvars:5:1: postgres_password is not copied",
            "tenants.tfvars:38:3: tenant `cafe` becomes `corner_cafe`",
            "tenants.tfvars:42:5: tenants.cafe: key `region` is ignored",
            "tenants.tfvars:34:101: tenants.hardware_store.customers[0]: key `role` is ignored",
            "tenants.tfvars:20:20: user `building_kiosk` has no password",
            "tenants.tfvars:53:1: variable `environment` is ignored",
            "passwords are not copied: set BUILDING_ADMIN_PASSWORD, ",
        ] {
            assert!(notes.contains(needle), "{needle:?} not in:\n{notes}");
        }
    }

    #[test]
    fn minimal_tenant_without_server() {
        let src = "tenants = {\n  \"shop\" = {\n    plan = \"enterprise\"\n    admins = [{ username = \"shop_boss\", password = \"\" }]\n    developers = null\n  }\n}\npostgres_host = \"db.internal\"\n";
        let c = convert(src, Path::new("dir/my.tfvars")).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.env_vars.is_empty());
        assert!(!c.toml.contains("[server]"), "{}", c.toml);
        assert!(c
            .toml
            .starts_with("# Generated by `tenantry import-tfvars` from my.tfvars;"));
        assert!(c
            .toml
            .contains("[plans.enterprise]\nconnection_limit = 100\n"));
        assert!(c.toml.contains("[tenants.shop]\nplan = \"enterprise\"\nadmins     = [{ username = \"shop_boss\" }]\n"), "{}", c.toml);
        let notes = c.notes.join("\n");
        assert!(
            notes.contains(
                "dir/my.tfvars:2:3: tenants.shop has no database_name: its key `shop` is used"
            ),
            "{notes}"
        );
        assert!(notes.contains("dir/my.tfvars:8:1: no [server] admin_url written: postgres_port and postgres_user not set"), "{notes}");
        Inventory::from_str_with(&c.toml, Path::new("tenants.toml"), &|_| None)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn long_user_lists_are_split_and_strings_escaped() {
        let src = r#"tenants = {
  shop = {
    database_name = "shop"
    tenant_name   = "Tab\there \\ \"quoted\" \u00e9 line\nbreak"
    plan          = "starter"
    customers = [
      { username = "customer_one", email = "one@shop.example", password = "x" },
      { username = "customer_two", email = "two@shop.example" },
    ]
  }
}
postgres_host = "::1"
postgres_port = "6432"
postgres_user = "ad min@corp"
"#;
        let c = convert(src, Path::new("tenants.tfvars")).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.toml.contains("customers  = [\n  { username = \"customer_one\", email = \"one@shop.example\", password_env = \"CUSTOMER_ONE_PASSWORD\" },\n  { username = \"customer_two\", email = \"two@shop.example\" },\n]\n"), "{}", c.toml);
        assert!(
            c.toml
                .contains("admin_url = \"postgres://ad%20min%40corp@[::1]:6432/postgres\"\n"),
            "{}",
            c.toml
        );
        let env = |n: &str| (n == "CUSTOMER_ONE_PASSWORD").then(|| "pw".to_owned());
        let inv = Inventory::from_str_with(&c.toml, Path::new("tenants.toml"), &env)
            .unwrap_or_else(|e| panic!("{e}\n{}", c.toml));
        assert_eq!(
            inv.tenants[0].display_name.as_deref(),
            Some("Tab\there \\ \"quoted\" é line\nbreak")
        );
    }

    #[test]
    fn toml_strings_round_trip() {
        for s in [
            "",
            "plain",
            "a\"b",
            "back\\slash",
            "nl\nx\r\t",
            "\u{1}\u{7f}",
            "é ☃ 'single'",
        ] {
            let doc = format!("v = {}", toml_str(s));
            let table: toml::Table = doc.parse().unwrap_or_else(|e| panic!("{doc}: {e}"));
            assert_eq!(table["v"].as_str(), Some(s), "{doc}");
        }
    }

    /// Asserts `src` fails with a diagnostic at `line:column` containing `needle`.
    #[track_caller]
    fn error_at(src: &str, line: usize, column: usize, needle: &str) {
        let err = match convert(src, Path::new("tenants.tfvars")) {
            Ok(c) => panic!("expected an error containing {needle:?}, got:\n{}", c.toml),
            Err(e) => e,
        };
        let text = err.to_string();
        let at = format!("tenants.tfvars:{line}:{column}: ");
        assert!(
            text.lines()
                .any(|l| l.starts_with(&at) && l.contains(needle)),
            "{at}...{needle:?} not in:\n{text}"
        );
    }

    const USER: &str = "{ username = \"shop_admin\" }";

    #[test]
    fn errors_point_at_the_tfvars() {
        // HCL syntax error.
        error_at(
            "tenants = {\n  shop = {\n    plan = \"starter\"\n    admins = [{ username = }]\n  }\n}\n",
            4,
            28,
            "invalid HCL: invalid expression; expected",
        );
        // No `tenants`.
        error_at(
            "postgres_host = \"localhost\"\n",
            1,
            1,
            "no `tenants` variable",
        );
        // `tenants` not an object.
        error_at(
            "# tenants\ntenants = [\"shop\"]\n",
            2,
            11,
            "tenants: expected an object of tenants",
        );
        // A tenant that is not an object.
        error_at(
            "tenants = { shop = \"starter\" }\n",
            1,
            20,
            "tenants.shop: expected an object",
        );
        // Username not a string.
        error_at(
            "tenants = {\n  shop = {\n    plan = \"starter\"\n    admins = [{ username = 42 }]\n  }\n}\n",
            4,
            28,
            "tenants.shop.admins[0].username: expected a string, found a number",
        );
        // Missing username.
        error_at(
            "tenants = {\n  shop = {\n    plan = \"starter\"\n    admins = [{ email = \"a@b.c\" }]\n  }\n}\n",
            4,
            15,
            "tenants.shop.admins[0] has no username",
        );
        // Bad identifier in database_name.
        error_at(
            &format!("tenants = {{\n  shop = {{\n    database_name = \"Building-Shop\"\n    plan = \"starter\"\n    admins = [{USER}]\n  }}\n}}\n"),
            3,
            21,
            "invalid database name \"Building-Shop\"",
        );
        // A database name whose subdomain would be invalid.
        error_at(
            &format!("tenants = {{\n  shop_ = {{\n    plan = \"starter\"\n    admins = [{USER}]\n  }}\n}}\n"),
            2,
            3,
            "invalid database name \"shop_\"",
        );
        // Bad username.
        error_at(
            "tenants = {\n  shop = {\n    plan = \"starter\"\n    admins = [{ username = \"public\" }]\n  }\n}\n",
            4,
            28,
            "`public` is reserved",
        );
        // Bad plan, missing plan.
        error_at(
            &format!("tenants = {{\n  shop = {{\n    plan = \"Pro Plan\"\n    admins = [{USER}]\n  }}\n}}\n"),
            3,
            12,
            "invalid plan name \"Pro Plan\"",
        );
        error_at(
            &format!("tenants = {{\n  shop = {{\n    admins = [{USER}]\n  }}\n}}\n"),
            2,
            3,
            "tenants.shop has no plan",
        );
        // admins not a list.
        error_at(
            &format!("tenants = {{\n  shop = {{\n    plan = \"starter\"\n    admins = {USER}\n  }}\n}}\n"),
            4,
            14,
            "tenants.shop.admins: expected a list of users, found an object",
        );
        // Duplicate username across tenants.
        error_at(
            "tenants = {\n  a = {\n    plan = \"starter\"\n    admins = [{ username = \"boss\" }]\n  }\n  b = {\n    plan = \"starter\"\n    customers = [{ username = \"boss\" }]\n  }\n}\n",
            8,
            31,
            "username `boss` is used twice (first at tenants.tfvars:4:28)",
        );
        // Duplicate database across tenants.
        error_at(
            "tenants = {\n  a = { plan = \"starter\" }\n  b = {\n    database_name = \"a\"\n    plan = \"starter\"\n  }\n}\n",
            4,
            21,
            "database name `a` is used twice (first at tenants.tfvars:2:3)",
        );
        // A username that is another tenant's group role.
        error_at(
            "tenants = {\n  a = { plan = \"starter\" }\n  b = { plan = \"starter\", admins = [{ username = \"a_admin\" }] }\n}\n",
            3,
            50,
            "username `a_admin` is the admin group role of tenant `a`",
        );
        // Interpolation, a key given twice, an invalid email, a block.
        error_at(
            "tenants = { a = { plan = \"${var.plan}\" } }\n",
            1,
            26,
            "tenants.a.plan: expected a string, found a string template",
        );
        error_at(
            "tenants = { a = { plan = \"x\", \"plan\" = \"y\" } }\n",
            1,
            31,
            "key `plan` is given twice (first at tenants.tfvars:1:19)",
        );
        error_at(
            "tenants = { a = { plan = \"x\", admins = [{ username = \"u\", email = \"nope\" }] } }\n",
            1,
            67,
            "invalid email \"nope\"",
        );
        error_at("tenants {\n}\n", 1, 1, "unexpected block `tenants`");
        error_at(
            "tenants = {}\npostgres_port = 0\n",
            2,
            17,
            "postgres_port: invalid port",
        );
    }

    #[test]
    fn all_problems_are_reported_in_file_order() {
        let src = "tenants = {\n  a = { plan = 1 }\n  B = { plan = \"starter\" }\n}\n";
        let err = convert(src, Path::new("tenants.tfvars")).unwrap_err();
        let places: Vec<(usize, usize)> = err
            .diagnostics()
            .iter()
            .map(|d| (d.line, d.column))
            .collect();
        assert_eq!(places, [(2, 16), (3, 3)], "{err}");
    }
}
