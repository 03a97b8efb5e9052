//! The structure check: every key of `tenants.toml` is known, every value
//! has the right type and every required key is there, with **all** of these
//! problems reported in one run, each with file:line:column and a `help:`
//! line (serde stops at the first one).
//!
//! It walks the parsed [`toml_edit`] document (which keeps every span)
//! against [`ROOT`], a description of the keys of `raw.rs`. Unknown keys and
//! badly typed optional values are reported and removed, so serde can still
//! read the rest and validation can still report every other problem in the
//! same run. A badly typed or missing required key, or a plan, tenant or
//! user that is not a table, leaves nothing sound to validate: then only
//! the structure problems are reported.
//!
//! `raw.rs` stays the definition of the file; a test keeps [`ROOT`] equal
//! to the JSON Schema generated from it (keys, types and required keys).

use std::ops::Range;

use toml_edit::{Item, TableLike, Value};

use crate::error::Reporter;

/// What a key holds.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    Str,
    Int,
    Bool,
    /// An array of strings.
    Strs,
    /// A string among these.
    OneOf(&'static [&'static str]),
    /// A table with these keys.
    Table(&'static [Field]),
    /// A table of tables by name (`[plans.<name>]`), each with these keys.
    Named(&'static [Field]),
    /// An array of tables (`[{ ... }]` or `[[...]]`), each with these keys.
    List(&'static [Field]),
}

/// One key of a table.
#[derive(Debug)]
pub(crate) struct Field {
    pub(crate) key: &'static str,
    pub(crate) kind: Kind,
    pub(crate) required: bool,
    /// A valid value, for help lines: `key = <example>`.
    example: &'static str,
}

const fn opt(key: &'static str, kind: Kind, example: &'static str) -> Field {
    Field {
        key,
        kind,
        required: false,
        example,
    }
}

const fn req(key: &'static str, kind: Kind, example: &'static str) -> Field {
    Field {
        key,
        kind,
        required: true,
        example,
    }
}

/// The top level of `tenants.toml` (`RawManifest`).
pub(crate) const ROOT: &[Field] = &[
    opt("fleet", Kind::Str, "\"default\""),
    opt("server", Kind::Table(SERVER), "{ admin_url = \"...\" }"),
    opt("servers", Kind::Named(SERVER), "a [servers.eu1] table"),
    opt(
        "paths",
        Kind::Table(PATHS),
        "{ secrets = \".tenantry/secrets\" }",
    ),
    opt(
        "routing",
        Kind::Table(ROUTING),
        "{ base_domains = [\"localhost\"] }",
    ),
    opt("plans", Kind::Named(PLAN), "a [plans.starter] table"),
    opt("tenants", Kind::Named(TENANT), "a [tenants.shop] table"),
];

const SERVER: &[Field] = &[
    opt(
        "admin_url",
        Kind::Str,
        "\"postgres://postgres@localhost:5432/postgres\"",
    ),
    opt("app_host", Kind::Str, "\"db.internal\""),
    opt("app_port", Kind::Int, "6432"),
    opt("app_sslmode", Kind::Str, "\"require\""),
    opt("max_tenants", Kind::Int, "2000"),
    opt("gateway_connections", Kind::Int, "80"),
    opt("status", Kind::OneOf(&["active", "draining"]), "\"active\""),
];

const PATHS: &[Field] = &[
    opt("schema", Kind::Str, "\"schema\""),
    opt("backups", Kind::Str, "\".tenantry/backups\""),
    opt("secrets", Kind::Str, "\".tenantry/secrets\""),
];

const ROUTING: &[Field] = &[
    opt(
        "base_domains",
        Kind::Strs,
        "[\"usualstore.com\", \"localhost\"]",
    ),
    opt("reserved_subdomains", Kind::Strs, "[\"www\", \"api\"]"),
    opt("trust_tenant_header", Kind::Bool, "false"),
];

const PLAN: &[Field] = &[
    req("connection_limit", Kind::Int, "5"),
    req("statement_timeout", Kind::Str, "\"5s\""),
    req("pool_size", Kind::Int, "2"),
    req("requests_per_second", Kind::Int, "20"),
    opt("storage", Kind::Str, "\"1GiB\""),
    opt("requests_per_day", Kind::Int, "50000"),
    opt("max_users", Kind::Int, "5"),
];

const TENANT: &[Field] = &[
    opt("display_name", Kind::Str, "\"Building Shop Inc.\""),
    opt("server", Kind::Str, "\"eu1\""),
    req("plan", Kind::Str, "\"starter\""),
    opt("subdomain", Kind::Str, "\"shop\""),
    opt("domains", Kind::Strs, "[\"shop.example.com\"]"),
    opt(
        "status",
        Kind::OneOf(&["active", "suspended"]),
        "\"active\"",
    ),
    opt("deletion_protection", Kind::Bool, "true"),
    opt(
        "gateway_password_env",
        Kind::Str,
        "\"BUILDING_GATEWAY_PASSWORD\"",
    ),
    opt(
        "admins",
        Kind::List(USER),
        "[{ username = \"shop_admin\" }]",
    ),
    opt(
        "developers",
        Kind::List(USER),
        "[{ username = \"shop_dev\" }]",
    ),
    opt(
        "customers",
        Kind::List(USER),
        "[{ username = \"shop_customer\" }]",
    ),
];

const USER: &[Field] = &[
    req("username", Kind::Str, "\"shop_admin\""),
    opt("password_env", Kind::Str, "\"SHOP_ADMIN_PASSWORD\""),
    opt("password_file", Kind::Str, "\"secrets/shop_admin\""),
    opt("email", Kind::Str, "\"ops@example.com\""),
];

/// Checks `root` against [`ROOT`], reporting every problem to `r` and
/// removing what serde would stop at. Returns whether what is left can be
/// read and validated.
pub(crate) fn check(r: &mut Reporter, root: &mut dyn TableLike) -> bool {
    let mut check = Check { r, sound: true };
    check.table(root, ROOT, "", None);
    check.sound
}

struct Check<'r, 'a> {
    r: &'r mut Reporter<'a>,
    /// False once a problem leaves nothing sound to validate.
    sound: bool,
}

impl Check<'_, '_> {
    /// The keys of the table at `path` (`""` for the top level), which
    /// starts at `at`.
    fn table(
        &mut self,
        table: &mut dyn TableLike,
        fields: &[Field],
        path: &str,
        at: Option<Range<usize>>,
    ) {
        let keys: Vec<String> = table.iter().map(|(k, _)| k.to_owned()).collect();
        for key in &keys {
            let key_span = table.key(key).and_then(|k| k.span());
            let Some(field) = fields.iter().find(|f| f.key == key) else {
                self.unknown(key, key_span, fields, path);
                table.remove(key);
                continue;
            };
            let item = table.get_mut(key).expect("a key just listed");
            let keep = self.item(item, field, &join(path, key), key_span);
            if !keep {
                table.remove(key);
                if field.required {
                    self.sound = false;
                }
            }
        }
        for field in fields {
            if field.required && !keys.iter().any(|k| k == field.key) {
                let place = if path.is_empty() {
                    "the file".to_owned()
                } else {
                    format!("`{path}`")
                };
                self.r.error_at(
                    at.clone(),
                    format!("{place} is missing the required key `{}`", field.key),
                    format!("add it, e.g. {} = {}", field.key, field.example),
                );
                self.sound = false;
            }
        }
    }

    /// Checks the value of `field` at `path`; false if it must be removed.
    fn item(
        &mut self,
        item: &mut Item,
        field: &Field,
        path: &str,
        key_span: Option<Range<usize>>,
    ) -> bool {
        let span = item.span().or_else(|| key_span.clone());
        match field.kind {
            Kind::Str => self.expect(item.is_str(), item, field, path),
            Kind::Int => self.expect(item.is_integer(), item, field, path),
            Kind::Bool => self.expect(item.is_bool(), item, field, path),
            Kind::OneOf(values) => match item.as_str() {
                Some(v) if values.contains(&v) => true,
                Some(v) => {
                    let known = values
                        .iter()
                        .map(|v| format!("\"{v}\""))
                        .collect::<Vec<_>>()
                        .join(" or ");
                    self.r.error_at(
                        span,
                        format!("unknown {path} {v:?}"),
                        format!("use {known}, e.g. {} = {}", field.key, field.example),
                    );
                    false
                }
                None => self.expect(false, item, field, path),
            },
            Kind::Strs => {
                let Some(array) = item.as_array() else {
                    return self.expect(false, item, field, path);
                };
                let mut ok = true;
                for (i, value) in array.iter().enumerate() {
                    if !value.is_str() {
                        self.r.error_at(
                            value.span().or_else(|| span.clone()),
                            format!(
                                "invalid type for {path}[{i}]: expected a string, found {}",
                                found_value(value)
                            ),
                            format!(
                                "write each entry in quotes, e.g. {} = {}",
                                field.key, field.example
                            ),
                        );
                        ok = false;
                    }
                }
                ok
            }
            Kind::Table(fields) => match item.as_table_like_mut() {
                Some(table) => {
                    self.table(table, fields, path, span);
                    true
                }
                None => self.expect(false, item, field, path),
            },
            Kind::Named(fields) => {
                let Some(tables) = item.as_table_like_mut() else {
                    return self.expect(false, item, field, path);
                };
                let names: Vec<String> = tables.iter().map(|(k, _)| k.to_owned()).collect();
                for name in names {
                    let key_span = tables.key(&name).and_then(|k| k.span());
                    let entry = tables.get_mut(&name).expect("a key just listed");
                    let entry_path = join(path, &name);
                    let entry_span = entry.span().or_else(|| key_span.clone());
                    match entry.as_table_like_mut() {
                        Some(table) => self.table(table, fields, &entry_path, entry_span),
                        None => {
                            self.r.error_at(
                                entry_span,
                                format!(
                                    "invalid type for {entry_path}: expected a table, found {}",
                                    found(entry)
                                ),
                                format!("write it as a table: [{entry_path}] followed by its keys"),
                            );
                            self.sound = false;
                        }
                    }
                }
                true
            }
            Kind::List(fields) => match item {
                Item::ArrayOfTables(tables) => {
                    for (i, table) in tables.iter_mut().enumerate() {
                        let at = table.span();
                        self.table(table, fields, &format!("{path}[{i}]"), at);
                    }
                    true
                }
                Item::Value(Value::Array(array)) => {
                    for (i, value) in array.iter_mut().enumerate() {
                        let at = value.span();
                        let entry_path = format!("{path}[{i}]");
                        match value.as_inline_table_mut() {
                            Some(table) => self.table(table, fields, &entry_path, at),
                            None => {
                                self.r.error_at(
                                    at.or_else(|| span.clone()),
                                    format!(
                                        "invalid type for {entry_path}: expected a table, found {}",
                                        found_value(value)
                                    ),
                                    format!(
                                        "write each entry as a table, e.g. {} = {}",
                                        field.key, field.example
                                    ),
                                );
                                self.sound = false;
                            }
                        }
                    }
                    true
                }
                _ => self.expect(false, item, field, path),
            },
        }
    }

    /// Reports a value of the wrong type unless `ok`; returns `ok`.
    fn expect(&mut self, ok: bool, item: &Item, field: &Field, path: &str) -> bool {
        if !ok {
            self.r.error_at(
                item.span(),
                format!(
                    "invalid type for {path}: expected {}, found {}",
                    expected(field.kind),
                    found(item)
                ),
                type_help(item, field),
            );
        }
        ok
    }

    fn unknown(&mut self, key: &str, span: Option<Range<usize>>, fields: &[Field], path: &str) {
        let place = if path.is_empty() {
            "at the top level".to_owned()
        } else {
            format!("in {path}")
        };
        let help = match fields.iter().find(|f| close(key, f.key)) {
            Some(f) => format!("did you mean `{}`? Otherwise remove it", f.key),
            None => format!(
                "remove it or fix its spelling; the keys here are {}",
                fields.iter().map(|f| f.key).collect::<Vec<_>>().join(", ")
            ),
        };
        self.r
            .error_at(span, format!("unknown key `{key}` {place}"), help);
    }
}

/// `path.key`, quoting a key that is not bare.
fn join(path: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let key = if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if path.is_empty() {
        key
    } else {
        format!("{path}.{key}")
    }
}

fn expected(kind: Kind) -> &'static str {
    match kind {
        Kind::Str | Kind::OneOf(_) => "a string",
        Kind::Int => "an integer",
        Kind::Bool => "true or false",
        Kind::Strs => "an array of strings",
        Kind::Table(_) | Kind::Named(_) => "a table",
        Kind::List(_) => "an array of tables",
    }
}

fn found(item: &Item) -> String {
    match item {
        Item::None => "nothing".into(),
        Item::Value(v) => found_value(v),
        Item::Table(_) => "a table".into(),
        Item::ArrayOfTables(_) => "an array of tables".into(),
    }
}

fn found_value(value: &Value) -> String {
    match value {
        // Short strings are shown (they are what the help line is about);
        // long ones may be anything.
        Value::String(s) if s.value().chars().count() <= 32 => format!("string {:?}", s.value()),
        Value::String(_) => "a string".into(),
        Value::Integer(i) => format!("integer {}", i.value()),
        Value::Float(f) => format!("float {}", f.value()),
        Value::Boolean(b) => format!("boolean {}", b.value()),
        Value::Datetime(_) => "a date-time".into(),
        Value::Array(_) => "an array".into(),
        Value::InlineTable(_) => "a table".into(),
    }
}

/// What to write instead of a value of the wrong type.
fn type_help(item: &Item, field: &Field) -> String {
    let key = field.key;
    let example = format!("e.g. {key} = {}", field.example);
    let Item::Value(value) = item else {
        return match field.kind {
            Kind::Table(_) => format!("write it as a [{key}] table, or {example}"),
            _ => example,
        };
    };
    match (field.kind, value) {
        (Kind::Int, Value::String(s)) => match s.value().trim().parse::<i64>() {
            Ok(n) => format!("write {n} without quotes: {key} = {n}"),
            Err(_) => format!("write an integer without quotes, {example}"),
        },
        (Kind::Int, Value::Float(f)) => format!(
            "write a whole number, without a decimal point ({} is not one), {example}",
            f.value()
        ),
        (Kind::Bool, Value::String(s)) => match s.value().trim().to_ascii_lowercase().as_str() {
            b @ ("true" | "false") => format!("write {b} without quotes: {key} = {b}"),
            _ => format!("write true or false without quotes, {example}"),
        },
        (Kind::Str | Kind::OneOf(_), Value::Integer(_) | Value::Float(_) | Value::Boolean(_)) => {
            format!(
                "write it in quotes: {key} = \"{}\"",
                value.to_string().trim()
            )
        }
        (Kind::Strs, Value::String(s)) => {
            format!("write a list, even of one: {key} = [{:?}]", s.value())
        }
        (Kind::List(_), Value::InlineTable(_)) => {
            format!("write a list, even of one: {key} = [{{ ... }}], {example}")
        }
        _ => example,
    }
}

/// Whether `typed` is probably a misspelling of `key`: at most two edits
/// apart (one for short keys), ignoring case.
fn close(typed: &str, key: &str) -> bool {
    let a: Vec<char> = typed.to_lowercase().chars().collect();
    let b: Vec<char> = key.chars().collect();
    let limit = if b.len() <= 4 { 1 } else { 2 };
    if a.len().abs_diff(b.len()) > limit {
        return false;
    }
    // Levenshtein distance, one row at a time.
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            let next = (row[j + 1] + 1).min(row[j] + 1).min(prev + cost);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()] <= limit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_catches_typos_not_other_words() {
        assert!(close("subdomian", "subdomain"));
        assert!(close("pasword_env", "password_env"));
        assert!(close("Plan", "plan"));
        assert!(close("serverr", "server"));
        assert!(!close("colour", "plan"));
        assert!(!close("name", "plan"));
        assert!(!close("password", "password_env"));
    }

    /// The JSON Schema is generated from `raw.rs`; [`ROOT`] must describe
    /// the same keys, types and required keys.
    #[test]
    fn root_matches_the_schema_of_the_raw_structs() {
        let schema: serde_json::Value =
            serde_json::from_str(&crate::schema::json_schema()).unwrap();
        let defs = &schema["definitions"];
        let resolve = |s: &serde_json::Value| -> serde_json::Value {
            let r = s
                .get("$ref")
                .or_else(|| s.get("allOf").and_then(|a| a[0].get("$ref")));
            match r.and_then(|r| r.as_str()) {
                Some(r) => defs[r.trim_start_matches("#/definitions/")].clone(),
                None => s.clone(),
            }
        };
        fn compare(
            fields: &[Field],
            table: &serde_json::Value,
            resolve: &dyn Fn(&serde_json::Value) -> serde_json::Value,
            at: &str,
        ) {
            let props = table["properties"].as_object().unwrap();
            let mut keys: Vec<&str> = props.keys().map(String::as_str).collect();
            keys.sort_unstable();
            let mut ours: Vec<&str> = fields.iter().map(|f| f.key).collect();
            ours.sort_unstable();
            assert_eq!(ours, keys, "keys of {at}");
            assert_eq!(table["additionalProperties"], false, "{at}");
            let required: Vec<&str> = table
                .get("required")
                .and_then(|r| r.as_array())
                .map(|r| r.iter().map(|k| k.as_str().unwrap()).collect())
                .unwrap_or_default();
            for f in fields {
                let at = format!("{at}.{}", f.key);
                assert_eq!(f.required, required.contains(&f.key), "{at} required");
                let s = resolve(&props[f.key]);
                match f.kind {
                    Kind::Str => assert_eq!(s["type"], "string", "{at}"),
                    Kind::Int => assert_eq!(s["type"], "integer", "{at}"),
                    Kind::Bool => assert_eq!(s["type"], "boolean", "{at}"),
                    Kind::OneOf(values) => assert_eq!(s["enum"], serde_json::json!(values), "{at}"),
                    Kind::Strs => {
                        assert_eq!(s["type"], "array", "{at}");
                        assert_eq!(s["items"]["type"], "string", "{at}");
                    }
                    Kind::Table(inner) => compare(inner, &s, resolve, &at),
                    Kind::Named(inner) => {
                        assert_eq!(s["type"], "object", "{at}");
                        compare(inner, &resolve(&s["additionalProperties"]), resolve, &at);
                    }
                    Kind::List(inner) => {
                        assert_eq!(s["type"], "array", "{at}");
                        compare(inner, &resolve(&s["items"]), resolve, &at);
                    }
                }
            }
        }
        compare(ROOT, &schema, &resolve, "(root)");
    }
}
