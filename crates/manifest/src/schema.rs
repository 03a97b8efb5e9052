//! The JSON Schema of `tenants.toml`, for editor completion and hover help.
//!
//! It is generated with [`schemars`] from the raw serde structs of `raw.rs`
//! (their `///` comments become the `description`s an editor shows) and
//! checked in as `crates/manifest/tenants.schema.json`, which a test keeps
//! equal to [`json_schema()`]. After changing `raw.rs`, regenerate it with
//!
//! ```text
//! TENANTRY_BLESS=1 cargo test -p tenantry-manifest schema
//! ```
//!
//! Editors using taplo (e.g. VS Code's Even Better TOML) pick the schema up
//! from a directive on the first line of the TOML file:
//!
//! ```toml
//! #:schema ./crates/manifest/tenants.schema.json
//! ```
//!
//! The schema is draft-07 and catches unknown keys, wrong types, missing
//! required keys and malformed names and durations. It is a help, not the
//! authority: rules that span the file (unknown plans, names used twice,
//! password sources that must exist) are only checked by validation
//! ([`crate::Inventory::load`], `tenantry validate`).

use schemars::generate::SchemaSettings;
use serde_json::Value;

use crate::raw::RawManifest;

/// Where the checked-in schema lives, relative to the crate directory.
pub const SCHEMA_FILE: &str = "tenants.schema.json";

/// The command that rewrites the checked-in schema.
pub const BLESS_COMMAND: &str = "TENANTRY_BLESS=1 cargo test -p tenantry-manifest schema";

/// The JSON Schema (draft-07) of `tenants.toml`: pretty-printed, keys sorted,
/// ending in a newline, and the same on every call and every build.
pub fn json_schema() -> String {
    let schema = SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<RawManifest>();
    let mut value = schema.to_value();
    strip_null(&mut value);
    if let Value::Object(root) = &mut value {
        root.insert(
            "$comment".into(),
            format!(
                "Generated from crates/manifest/src/raw.rs; do not edit. Regenerate with `{BLESS_COMMAND}`."
            )
            .into(),
        );
    }
    let mut text = serde_json::to_string_pretty(&sorted(value))
        .expect("a serde_json::Value always serializes");
    text.push('\n');
    text
}

/// Removes the `null` schemars allows for `Option` fields: TOML has no null,
/// and a missing key is what an absent option means.
fn strip_null(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    map.insert("type".into(), only);
                }
            }
            for child in map.values_mut() {
                strip_null(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_null),
        _ => {}
    }
}

/// `value` with every object's keys in sorted order, whatever map type
/// serde_json was built with (`preserve_order` keeps insertion order, and
/// feature unification can turn it on behind this crate's back).
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use serde_json::{json, Value};

    use super::*;
    use crate::Inventory;

    fn schema_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(SCHEMA_FILE)
    }

    fn schema() -> Value {
        serde_json::from_str(&json_schema()).unwrap()
    }

    /// The example inventory at the root of the workspace.
    fn example_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tenants.toml")
    }

    /// The root schema and every definition: the tables of the file.
    fn tables(schema: &Value) -> Vec<(String, &Value)> {
        let mut tables = vec![("(root)".to_owned(), schema)];
        for (name, def) in schema["definitions"].as_object().unwrap() {
            tables.push((name.clone(), def));
        }
        tables
    }

    #[test]
    fn checked_in_schema_is_up_to_date() {
        let path = schema_path();
        let fresh = json_schema();
        if std::env::var_os("TENANTRY_BLESS").is_some_and(|v| !v.is_empty() && v != "0") {
            std::fs::write(&path, &fresh).unwrap();
            return;
        }
        let stored = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read {}: {e}\ncreate it with: {BLESS_COMMAND}",
                path.display()
            )
        });
        if stored != fresh {
            let line = stored
                .lines()
                .zip(fresh.lines())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| stored.lines().count().min(fresh.lines().count()))
                + 1;
            panic!(
                "{} is out of date with src/raw.rs (first difference at line {line}).\n\
                 Regenerate it with: {BLESS_COMMAND}\n\
                 then review and commit the result.",
                path.display()
            );
        }
    }

    #[test]
    fn output_is_deterministic_pretty_json() {
        let text = json_schema();
        assert_eq!(text, json_schema());
        assert!(text.starts_with("{\n  \"$comment\""), "{}", &text[..40]);
        assert!(text.ends_with("}\n"));
        assert!(!text.ends_with("\n\n"));
        assert!(text.contains(BLESS_COMMAND));
        let v = schema();
        assert_eq!(v["$schema"], "http://json-schema.org/draft-07/schema#");
        assert_eq!(v["title"], "tenants.toml");
        assert!(!text.contains("\"null\""), "TOML has no null");
    }

    #[test]
    fn every_table_rejects_unknown_keys() {
        let v = schema();
        let tables = tables(&v);
        let with_properties: Vec<_> = tables
            .iter()
            .filter(|(_, t)| t.get("properties").is_some())
            .collect();
        let names: Vec<&str> = with_properties.iter().map(|(n, _)| n.as_str()).collect();
        for expected in [
            "(root)", "Server", "Paths", "Routing", "Plan", "Tenant", "User",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
        for (name, table) in with_properties {
            assert_eq!(
                table["additionalProperties"],
                json!(false),
                "{name} must deny unknown keys"
            );
        }
    }

    #[test]
    fn required_keys() {
        let v = schema();
        let defs = &v["definitions"];
        let required = |def: &str| -> Vec<String> {
            let mut keys: Vec<String> = defs[def]["required"]
                .as_array()
                .map(|a| a.iter().map(|k| k.as_str().unwrap().to_owned()).collect())
                .unwrap_or_default();
            keys.sort();
            keys
        };
        assert_eq!(
            required("Plan"),
            [
                "connection_limit",
                "pool_size",
                "requests_per_second",
                "statement_timeout"
            ]
        );
        assert_eq!(required("Tenant"), ["plan"]);
        assert_eq!(required("User"), ["username"]);
        for optional in ["Server", "Paths", "Routing"] {
            assert!(required(optional).is_empty(), "{optional}");
        }
        assert!(
            v.get("required").is_none(),
            "every top-level key is optional"
        );
    }

    #[test]
    fn every_key_has_a_description_and_defaults_match_validation() {
        let v = schema();
        for (name, table) in tables(&v) {
            let desc = table["description"].as_str().unwrap_or("");
            assert!(!desc.trim().is_empty(), "{name} has no description");
            let Some(props) = table.get("properties").and_then(Value::as_object) else {
                continue;
            };
            for (key, prop) in props {
                let desc = prop["description"].as_str().unwrap_or("");
                assert!(
                    desc.len() > 20,
                    "{name}.{key} needs a /// comment in raw.rs"
                );
            }
        }
        let p = &v["properties"];
        let defs = &v["definitions"];
        assert_eq!(p["fleet"]["default"], crate::DEFAULT_FLEET);
        assert_eq!(
            defs["Paths"]["properties"]["schema"]["default"],
            crate::DEFAULT_SCHEMA_DIR
        );
        assert_eq!(
            defs["Paths"]["properties"]["backups"]["default"],
            crate::DEFAULT_BACKUPS_DIR
        );
        assert_eq!(
            defs["Paths"]["properties"]["secrets"]["default"],
            crate::DEFAULT_SECRETS_DIR
        );
        let tenant = &defs["Tenant"]["properties"];
        assert_eq!(tenant["deletion_protection"]["default"], true);
        assert_eq!(tenant["status"]["default"], "active");
        assert_eq!(defs["Status"]["enum"], json!(["active", "suspended"]));
    }

    #[test]
    fn example_file_starts_with_the_schema_directive_and_still_loads() {
        let path = example_path();
        let src = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            src.lines().next(),
            Some("#:schema ./crates/manifest/tenants.schema.json")
        );
        // The directive is relative to tenants.toml and must point at the file.
        let target = path
            .parent()
            .unwrap()
            .join("crates/manifest/tenants.schema.json");
        assert_eq!(
            std::fs::canonicalize(target).unwrap(),
            std::fs::canonicalize(schema_path()).unwrap()
        );
        let inv = Inventory::from_str_with(&src, &path, &|_| None).unwrap();
        assert!(!inv.tenants.is_empty());
    }

    /// A TOML document as the JSON an editor validates against the schema.
    fn as_json(toml_text: &str) -> Value {
        let value: toml::Value = toml::from_str(toml_text).unwrap();
        serde_json::to_value(value).unwrap()
    }

    fn validator() -> jsonschema::Validator {
        jsonschema::draft7::new(&schema()).expect("the schema is valid draft-07")
    }

    #[test]
    fn example_file_validates_against_the_schema() {
        let src = std::fs::read_to_string(example_path()).unwrap();
        let instance = as_json(&src);
        let errors: Vec<String> = validator()
            .iter_errors(&instance)
            .map(|e| format!("{}: {e}", e.instance_path))
            .collect();
        assert!(errors.is_empty(), "{errors:#?}");
    }

    const GOOD: &str = r#"
fleet = "staging-2"

[server]
admin_url = "postgres://postgres@localhost:5432/postgres"
app_host = "pgbouncer.internal"
app_port = 6432
app_sslmode = "verify-full"

[paths]
schema = "schema"
backups = "/var/backups/tenantry"
secrets = ".tenantry/secrets"

[routing]
base_domains = ["usualstore.com", "localhost"]
reserved_subdomains = ["www", "api"]
trust_tenant_header = true

[plans.starter]
connection_limit = 5
statement_timeout = "500ms"
pool_size = 2
requests_per_second = 20

[plans.big]
connection_limit = 2147483647
statement_timeout = " 2 min "
pool_size = 4294967295
requests_per_second = 1

[tenants.building_shop]
display_name = "Building Shop Inc."
plan = "starter"
subdomain = "building"
domains = ["shop.building.example"]
status = "suspended"
deletion_protection = false
admins     = [{ username = "building_admin", password_env = "BUILDING_ADMIN_PASSWORD", email = "ops@building.example" }]
developers = [{ username = "building_dev" }]
customers  = [{ username = "_building_customer" }]

[tenants.x_1]
plan = "big"
"#;

    fn loads(src: &str) -> bool {
        Inventory::from_str_with(src, Path::new("tenants.toml"), &|_| Some("secret".into())).is_ok()
    }

    #[test]
    fn schema_and_validation_agree_on_a_good_file() {
        assert!(loads(GOOD));
        let instance = as_json(GOOD);
        let errors: Vec<String> = validator()
            .iter_errors(&instance)
            .map(|e| format!("{}: {e}", e.instance_path))
            .collect();
        assert!(errors.is_empty(), "{errors:#?}");
    }

    #[test]
    fn schema_rejects_what_validation_rejects() {
        let validator = validator();
        let long_name = format!("[tenants.{}]", "a".repeat(54));
        let cases: &[(&str, &str, &str)] = &[
            (
                "tenant name too long for roles",
                "[tenants.x_1]",
                &long_name,
            ),
            (
                "unknown top-level key",
                "\n[plans.starter]",
                "colour = \"red\"\n[plans.starter]",
            ),
            (
                "unknown tenant key",
                "plan = \"big\"",
                "plan = \"big\"\nowner = \"me\"",
            ),
            (
                "unknown user key",
                "{ username = \"building_dev\" }",
                "{ username = \"building_dev\", role = \"x\" }",
            ),
            (
                "string limit",
                "connection_limit = 5",
                "connection_limit = \"5\"",
            ),
            ("zero limit", "connection_limit = 5", "connection_limit = 0"),
            (
                "limit too large",
                "connection_limit = 2147483647",
                "connection_limit = 2147483648",
            ),
            (
                "integer timeout",
                "statement_timeout = \"500ms\"",
                "statement_timeout = 500",
            ),
            (
                "bad duration unit",
                "statement_timeout = \"500ms\"",
                "statement_timeout = \"5sec\"",
            ),
            (
                "negative duration",
                "statement_timeout = \"500ms\"",
                "statement_timeout = \"-5s\"",
            ),
            ("missing plan key", "pool_size = 2\n", ""),
            (
                "tenant without plan",
                "plan = \"big\"",
                "display_name = \"X\"",
            ),
            ("upper-case tenant", "[tenants.x_1]", "[tenants.Shop]"),
            ("reserved tenant", "[tenants.x_1]", "[tenants.pg_shop]"),
            ("reserved username", "\"building_dev\"", "\"public\""),
            (
                "username with a dash",
                "\"building_dev\"",
                "\"building-dev\"",
            ),
            (
                "two password sources",
                "password_env = \"BUILDING_ADMIN_PASSWORD\"",
                "password_env = \"BUILDING_ADMIN_PASSWORD\", password_file = \"pw\"",
            ),
            ("bad email", "ops@building.example", "ops.building.example"),
            ("bad status", "\"suspended\"", "\"paused\""),
            (
                "string protection",
                "deletion_protection = false",
                "deletion_protection = \"no\"",
            ),
            ("bad sslmode", "\"verify-full\"", "\"sometimes\""),
            ("port zero", "app_port = 6432", "app_port = 0"),
            ("bad app host", "\"pgbouncer.internal\"", "\"db/x\""),
            ("bad fleet", "\"staging-2\"", "\"Staging\""),
            ("empty path", "schema = \"schema\"", "schema = \"\""),
            (
                "blank admin url",
                "\"postgres://postgres@localhost:5432/postgres\"",
                "\"  \"",
            ),
            ("bad subdomain", "\"building\"", "\"-building\""),
            (
                "domain without a dot",
                "\"shop.building.example\"",
                "\"shop\"",
            ),
            (
                "upper-case base domain",
                "\"usualstore.com\"",
                "\"UsualStore.com\"",
            ),
            (
                "table for an array",
                "domains = [\"shop.building.example\"]",
                "domains = \"shop.building.example\"",
            ),
        ];
        for (what, from, to) in cases {
            assert!(GOOD.contains(from), "{what}: {from:?} not in GOOD");
            let bad = GOOD.replacen(from, to, 1);
            assert!(!loads(&bad), "{what}: validation accepts it");
            assert!(
                !validator.is_valid(&as_json(&bad)),
                "{what}: the schema accepts it"
            );
        }
    }
}
