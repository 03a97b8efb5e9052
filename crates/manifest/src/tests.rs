//! Validation specs: one test per rule of `tenants.toml`, each asserting the
//! message and the line it points at, plus a full example that must load
//! into the expected [`Inventory`].

use std::path::{Path, PathBuf};

use crate::*;

/// The environment the tests run against.
fn env(name: &str) -> Option<String> {
    match name {
        "BUILDING_ADMIN_PASSWORD" | "OTHER_PASSWORD" => Some("hunter2-from-env".into()),
        "EMPTY_PASSWORD" => Some(String::new()),
        "BLANK_PASSWORD" => Some(" \t ".into()),
        "SHOP_GATEWAY_PASSWORD" => Some("0123456789abcdef0123456789abcdef".into()),
        "SHORT_GATEWAY_PASSWORD" => Some("hunter2".into()),
        _ => None,
    }
}

fn load(src: &str) -> Result<Inventory, ManifestError> {
    Inventory::from_str_with(src, Path::new("tenants.toml"), &env)
}

fn load_in(dir: &Path, src: &str) -> Result<Inventory, ManifestError> {
    Inventory::from_str_with(src, &dir.join("tenants.toml"), &env)
}

/// 1-based line of the first line of `src` containing `needle`.
pub(crate) fn line_of(src: &str, needle: &str) -> usize {
    src.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in source"))
        + 1
}

/// 1-based column (in characters) of `needle` on the first line holding it.
fn line_of_column(src: &str, needle: &str) -> usize {
    let line = src
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in source"));
    line[..line.find(needle).unwrap()].chars().count() + 1
}

/// 1-based line of the first line of `src` starting with `prefix`.
fn line_starting(src: &str, prefix: &str) -> usize {
    src.lines()
        .position(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starts with {prefix:?}"))
        + 1
}

/// Asserts `src` fails with exactly one diagnostic, containing `needle`, on
/// `line`; returns it.
#[track_caller]
pub(crate) fn one_error(
    result: Result<Inventory, ManifestError>,
    line: usize,
    needle: &str,
) -> Diagnostic {
    let err = match result {
        Ok(inv) => panic!("expected an error containing {needle:?}, got {inv:#?}"),
        Err(e) => e,
    };
    let diags = err.diagnostics();
    assert_eq!(diags.len(), 1, "expected one diagnostic, got:\n{err}");
    let d = diags[0].clone();
    assert!(d.message.contains(needle), "{needle:?} not in:\n{d}");
    assert_eq!(d.line, line, "wrong line in:\n{d}");
    assert!(d.column >= 1, "no column in:\n{d}");
    d
}

const PLANS: &str = r#"
[plans.starter]
connection_limit = 5
statement_timeout = "5s"
pool_size = 2
requests_per_second = 20

[plans.professional]
connection_limit = 50
statement_timeout = "30s"
pool_size = 10
requests_per_second = 200
"#;

/// Writes `text` to `path` with mode 0600, as a password file must be.
fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// The plans plus `rest`.
fn with_plans(rest: &str) -> String {
    format!("{PLANS}\n{rest}")
}

// ---------------------------------------------------------------- full example

#[test]
fn full_example_loads_into_the_expected_inventory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("secrets")).unwrap();
    write_private(&dir.path().join("secrets/building_dev"), "dev-pass\n");
    let src = with_plans(
        r#"
[server]
admin_url = "postgres://postgres:topsecret@localhost:5432/postgres"

[paths]
schema = "schema"
backups = ".tenantry/backups"
secrets = ".tenantry/secrets"

[routing]
base_domains = ["usualstore.com", "localhost"]
reserved_subdomains = ["www", "api", "admin"]

[tenants.building_shop]
display_name = "Building Shop Inc."
plan = "professional"
subdomain = "building"
domains = ["shop.building.example"]
status = "active"
deletion_protection = true
admins     = [{ username = "building_admin", password_env = "BUILDING_ADMIN_PASSWORD", email = "ops@building.example" }]
developers = [{ username = "building_dev", password_file = "secrets/building_dev" }]
customers  = [{ username = "building_customer" }]

[tenants.acme]
plan = "starter"
status = "suspended"
deletion_protection = false
"#,
    );
    let inv = load_in(dir.path(), &src).unwrap_or_else(|e| panic!("{e}"));
    let base = std::path::absolute(dir.path()).unwrap();

    assert_eq!(inv.path, dir.path().join("tenants.toml"));
    assert_eq!(inv.base_dir, base);
    assert_eq!(inv.fleet, "default");
    assert_eq!(
        inv.only_server()
            .unwrap()
            .admin_url
            .as_ref()
            .unwrap()
            .expose_secret(),
        "postgres://postgres:topsecret@localhost:5432/postgres"
    );
    assert_eq!(
        inv.paths,
        Paths {
            schema: base.join("schema"),
            backups: base.join(".tenantry/backups"),
            secrets: base.join(".tenantry/secrets"),
        }
    );
    assert_eq!(
        inv.routing,
        Routing {
            base_domains: vec!["usualstore.com".into(), "localhost".into()],
            reserved_subdomains: vec!["www".into(), "api".into(), "admin".into()],
            trust_tenant_header: false,
        }
    );
    assert_eq!(inv.plans.len(), 2);
    assert_eq!(
        inv.plans["starter"],
        Tier {
            name: "starter".into(),
            connection_limit: 5,
            statement_timeout_ms: 5000,
            pool_size: 2,
            requests_per_second: 20,
            storage_bytes: None,
            requests_per_day: None,
            max_users: None,
        }
    );
    assert_eq!(inv.plans["professional"].statement_timeout_pg(), "30s");

    let names: Vec<&str> = inv.tenants.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["acme", "building_shop"], "sorted by name");

    let acme = inv.tenant("acme").unwrap();
    assert_eq!(
        *acme,
        Tenant {
            name: Ident::parse("acme").unwrap(),
            display_name: None,
            plan: "starter".into(),
            server: None,
            subdomain: "acme".into(),
            domains: vec![],
            status: Status::Suspended,
            deletion_protection: false,
            users: vec![],
            gateway: GatewayLogin {
                name: Ident::parse("acme_gateway").unwrap(),
                password: PasswordSource::Generated {
                    path: inv.paths.secrets.join("acme_gateway"),
                },
            },
        }
    );
    assert_eq!(inv.tier(acme).name, "starter");

    let shop = inv.tenant("building_shop").unwrap();
    assert_eq!(
        *shop,
        Tenant {
            name: Ident::parse("building_shop").unwrap(),
            display_name: Some("Building Shop Inc.".into()),
            plan: "professional".into(),
            server: None,
            subdomain: "building".into(),
            domains: vec!["shop.building.example".into()],
            status: Status::Active,
            deletion_protection: true,
            gateway: GatewayLogin {
                name: Ident::parse("building_shop_gateway").unwrap(),
                password: PasswordSource::Generated {
                    path: inv.paths.secrets.join("building_shop_gateway"),
                },
            },
            users: vec![
                User {
                    name: Ident::parse("building_admin").unwrap(),
                    group: Group::Admin,
                    email: Some("ops@building.example".into()),
                    password: PasswordSource::Env {
                        var: "BUILDING_ADMIN_PASSWORD".into()
                    },
                },
                User {
                    name: Ident::parse("building_dev").unwrap(),
                    group: Group::Developer,
                    email: None,
                    password: PasswordSource::File {
                        path: base.join("secrets/building_dev")
                    },
                },
                User {
                    name: Ident::parse("building_customer").unwrap(),
                    group: Group::Customer,
                    email: None,
                    password: PasswordSource::Generated {
                        path: base.join(".tenantry/secrets/building_customer")
                    },
                },
            ],
        }
    );
    assert_eq!(inv.tier(shop).name, "professional");
    assert_eq!(shop.role(Group::Developer), "building_shop_developer");
    assert!(inv.tenant("nope").is_none());

    let dev = &shop.users[1];
    assert_eq!(
        dev.load_password().unwrap().unwrap().expose_secret(),
        "dev-pass"
    );

    // Debug never shows the admin URL's password or any user password.
    let debug = format!("{inv:?}");
    assert!(!debug.contains("topsecret"), "{debug}");
    assert!(!debug.contains("dev-pass"), "{debug}");
    assert!(!debug.contains("hunter2"), "{debug}");
}

#[test]
fn minimal_file_uses_defaults() {
    // The smallest file that is not empty.
    let inv = load("[tenants]\n").unwrap();
    assert_eq!(inv.fleet, "default");
    assert!(inv.only_server().unwrap().admin_url.is_none());
    assert!(inv.tenants.is_empty() && inv.plans.is_empty());
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(inv.base_dir, cwd);
    assert_eq!(inv.paths.schema, cwd.join("schema"));
    assert_eq!(inv.paths.backups, cwd.join(".tenantry/backups"));
    assert_eq!(inv.paths.secrets, cwd.join(".tenantry/secrets"));

    let src = with_plans("[tenants.building_shop]\nplan = \"starter\"\n");
    let inv = load(&src).unwrap();
    let t = &inv.tenants[0];
    assert_eq!(t.subdomain, "building-shop");
    assert_eq!(t.status, Status::Active);
    assert!(t.deletion_protection);
    assert!(t.domains.is_empty() && t.users.is_empty());
}

#[test]
fn admin_url_env_wins_over_the_file() {
    let src = "[server]\nadmin_url = \"postgres://from-file\"\n";
    let env = |name: &str| (name == ADMIN_URL_ENV).then(|| "postgres://from-env".to_string());
    let inv = Inventory::from_str_with(src, Path::new("t.toml"), &env).unwrap();
    assert_eq!(
        inv.only_server()
            .unwrap()
            .admin_url
            .as_ref()
            .unwrap()
            .expose_secret(),
        "postgres://from-env"
    );
    let inv = Inventory::from_str_with("[tenants]\n", Path::new("t.toml"), &env).unwrap();
    assert_eq!(
        inv.only_server()
            .unwrap()
            .admin_url
            .as_ref()
            .unwrap()
            .expose_secret(),
        "postgres://from-env"
    );
    let inv = load(src).unwrap();
    assert_eq!(
        inv.only_server()
            .unwrap()
            .admin_url
            .as_ref()
            .unwrap()
            .expose_secret(),
        "postgres://from-file"
    );
}

#[test]
fn app_endpoint_is_read_and_checked() {
    let src =
        "[server]\napp_host = \"pgbouncer.internal\"\napp_port = 6432\napp_sslmode = \"require\"\n";
    let inv = load(src).unwrap();
    assert_eq!(
        inv.only_server().unwrap().app_host.as_deref(),
        Some("pgbouncer.internal")
    );
    assert_eq!(inv.only_server().unwrap().app_port, Some(6432));
    assert_eq!(
        inv.only_server().unwrap().app_sslmode.as_deref(),
        Some("require")
    );
    let defaults = load("[tenants]\n").unwrap().only_server().unwrap().clone();
    assert_eq!(
        (defaults.app_host, defaults.app_port, defaults.app_sslmode),
        (None, None, None)
    );

    let src = "[server]\napp_host = \"db/x\"\n";
    one_error(load(src), 2, "invalid server.app_host");
    let src = "[server]\n\napp_port = 70000\n";
    one_error(load(src), 3, "is not a TCP port");
    let src = "[server]\napp_sslmode = \"sometimes\"\n";
    let d = one_error(load(src), 2, "unknown server.app_sslmode");
    assert!(d.to_string().contains("verify-full"), "{d}");
}

#[test]
fn load_reads_the_file_and_reports_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenants.toml");
    std::fs::write(&path, "fleet = \"blue\"\n").unwrap();
    let inv = Inventory::load(&path).unwrap();
    assert_eq!(inv.fleet, "blue");
    assert_eq!(inv.path, path);

    let missing = dir.path().join("missing.toml");
    let err = Inventory::load(&missing).unwrap_err();
    assert!(matches!(err, ManifestError::Read { .. }));
    assert!(err.to_string().contains("missing.toml"), "{err}");
}

/// The I/O error is said once: in the message, not again as a `source` that
/// a report printing the chain (anyhow's `{:#}`) would append.
#[test]
fn a_file_that_cannot_be_read_is_said_once_with_a_way_forward() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("tenants.toml");
    let err = Inventory::load(&missing).unwrap_err();
    assert!(std::error::Error::source(&err).is_none());
    let text = err.to_string();
    assert_eq!(text.matches("os error 2").count(), 1, "{text}");
    let (first, help) = text.split_once("\n  help: ").expect("a help line");
    assert_eq!(
        first,
        format!(
            "cannot read {}: No such file or directory (os error 2)",
            missing.display()
        )
    );
    for hint in [
        &format!("looked for {}", missing.display()),
        "--config <path>",
        "tenantry import-tfvars",
    ] {
        assert!(help.contains(hint), "{hint:?} not in {help}");
    }

    let err = Inventory::load(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("is a directory")
            && err.contains(&format!(
                "--config {}",
                dir.path().join("tenants.toml").display()
            )),
        "{err}"
    );
}

// ---------------------------------------------------------------- empty file

/// An empty inventory (zero bytes, or nothing but white space and comments)
/// is refused by every load, with a diagnostic saying so and what to do:
/// an editor that truncates before writing must not make every tenant vanish.
#[test]
fn an_empty_file_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenants.toml");
    for text in ["", "\n  \n\t", "# tenants go here\n\n# later\n"] {
        std::fs::write(&path, text).unwrap();
        for result in [
            Inventory::load(&path),
            Inventory::load_with(&path, Secrets::Deferred),
            load(text),
        ] {
            let err = result.unwrap_err();
            let diags = err.diagnostics();
            assert_eq!(diags.len(), 1, "{err}");
            let d = &diags[0];
            assert!(d.message.contains("the file is empty"), "{d}");
            let help = d.help.as_deref().unwrap();
            assert!(
                help.contains("[tenants.<db>]") && help.contains("example tenants.toml"),
                "{help}"
            );
        }
    }
    // Anything at all is not empty (a file with no tenants is valid).
    assert!(load("[tenants]\n").unwrap().tenants.is_empty());
    assert_eq!(load("fleet = \"x\" # only\n").unwrap().fleet, "x");
}

// ---------------------------------------------------------------- toml level

#[test]
fn toml_syntax_error_has_a_position() {
    let src = "fleet = \"a\"\n\n[routing\nbase_domains = []\n";
    let d = one_error(load(src), 3, "");
    assert_eq!(d.file, PathBuf::from("tenants.toml"));
    assert!(d.to_string().starts_with("tenants.toml:3:"), "{d}");
}

#[test]
fn unknown_key_is_an_error() {
    let src = with_plans("[tenants.shop]\nplan = \"starter\"\nsubdomian = \"x\"\n");
    let d = one_error(
        load(&src),
        line_of(&src, "subdomian"),
        "unknown key `subdomian` in tenants.shop",
    );
    assert_eq!(d.column, 1);
    assert_eq!(
        d.help.as_deref(),
        Some("did you mean `subdomain`? Otherwise remove it")
    );
}

#[test]
fn unknown_top_level_table_is_an_error() {
    let src = "fleet = \"a\"\n[serverr]\nadmin_url = \"x\"\n";
    one_error(load(src), 2, "unknown key `serverr` at the top level");
}

#[test]
fn wrong_type_is_an_error() {
    let src = with_plans("[tenants.shop]\nplan = \"starter\"\ndeletion_protection = \"yes\"\n");
    one_error(
        load(&src),
        line_of(&src, "deletion_protection"),
        "invalid type",
    );
}

#[test]
fn a_quoted_number_gets_a_help_line_saying_what_to_write() {
    let src = with_plans("[plans.tiny]\nconnection_limit = \"5\"\nstatement_timeout = \"1s\"\npool_size = 1\nrequests_per_second = 1\n");
    let d = one_error(
        load(&src),
        line_of(&src, "connection_limit = \"5\""),
        "invalid type for plans.tiny.connection_limit: expected an integer, found string \"5\"",
    );
    assert_eq!(
        d.help.as_deref(),
        Some("write 5 without quotes: connection_limit = 5")
    );
    assert_eq!(d.column, 20);

    let src = with_plans("[tenants.shop]\nplan = \"starter\"\ndeletion_protection = \"false\"\nsubdomain = 7\ndomains = \"shop.example.com\"\n");
    let err = load(&src).unwrap_err();
    let helps: Vec<&str> = err
        .diagnostics()
        .iter()
        .map(|d| d.help.as_deref().unwrap())
        .collect();
    assert_eq!(
        helps,
        [
            "write false without quotes: deletion_protection = false",
            "write it in quotes: subdomain = \"7\"",
            "write a list, even of one: domains = [\"shop.example.com\"]",
        ],
        "{err}"
    );
}

/// Unknown keys and type errors do not stop at the first one (serde's way):
/// they are all reported in one run, with every other problem of the file.
#[test]
fn every_unknown_key_and_type_error_is_reported_in_one_run() {
    let src = r#"flet = "blue"
[server]
app_port = "6432"

[plans.starter]
connection_limit = 5
statement_timeout = "5s"
pool_size = 2
requests_per_second = 20
burst = 3

[tenants.shop]
plan = "starter"
colour = "red"
deletion_protection = "yes"
status = "paused"
admins = [{ username = "a1", pasword_env = "X" }, { username = "a2", email = "no-at" }]

[tenants.Bad]
plan = "starter"
"#;
    let err = load(src).unwrap_err();
    let text = err.to_string();
    let found: Vec<(usize, &str)> = err
        .diagnostics()
        .iter()
        .map(|d| (d.line, d.message.as_str()))
        .collect();
    let expected = [
        (1, "unknown key `flet` at the top level"),
        (3, "invalid type for server.app_port: expected an integer, found string \"6432\""),
        (10, "unknown key `burst` in plans.starter"),
        (14, "unknown key `colour` in tenants.shop"),
        (15, "invalid type for tenants.shop.deletion_protection: expected true or false, found string \"yes\""),
        (16, "unknown tenants.shop.status \"paused\""),
        (17, "unknown key `pasword_env` in tenants.shop.admins[0]"),
        (17, "user `a2`: invalid email \"no-at\""),
        (19, "invalid database name \"Bad\""),
    ];
    assert_eq!(found.len(), expected.len(), "{text}");
    for ((line, message), (want_line, want)) in found.iter().zip(expected) {
        assert_eq!(*line, want_line, "{text}");
        assert!(
            message.starts_with(want),
            "{want:?} is not the start of {message:?}"
        );
    }
    assert_eq!(text.matches("\n  help: ").count(), expected.len(), "{text}");
    assert!(text.contains("help: did you mean `fleet`?"), "{text}");
    assert!(
        text.contains("help: write true or false without quotes"),
        "{text}"
    );
}

/// A missing or mistyped required key leaves nothing sound to validate: then
/// every structure problem is reported, and only those.
#[test]
fn missing_required_keys_are_all_reported() {
    let src = r#"[plans.a]
connection_limit = "1"

[tenants.shop]
display_name = 5
admins = [{ email = "ops@example.com" }, { username = 7 }]
"#;
    let err = load(src).unwrap_err();
    let found: Vec<(usize, &str)> = err
        .diagnostics()
        .iter()
        .map(|d| (d.line, d.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (1, "`plans.a` is missing the required key `statement_timeout`"),
            (1, "`plans.a` is missing the required key `pool_size`"),
            (1, "`plans.a` is missing the required key `requests_per_second`"),
            (2, "invalid type for plans.a.connection_limit: expected an integer, found string \"1\""),
            (4, "`tenants.shop` is missing the required key `plan`"),
            (5, "invalid type for tenants.shop.display_name: expected a string, found integer 5"),
            (6, "`tenants.shop.admins[0]` is missing the required key `username`"),
            (6, "invalid type for tenants.shop.admins[1].username: expected a string, found integer 7"),
        ],
        "{err}"
    );
    // Tables of either syntax: inline, dotted, and arrays of tables.
    let src = with_plans(
        "[tenants.shop]\nplan = \"starter\"\n\n[[tenants.shop.admins]]\nusername = \"a1\"\nnickname = \"x\"\n",
    );
    one_error(
        load(&src),
        line_of(&src, "nickname"),
        "unknown key `nickname` in tenants.shop.admins[0]",
    );
    let src = "server = { admin_url = \"postgres://x\", port = 1 }\ntenants.shop.plann = \"x\"\n";
    let err = load(src).unwrap_err().to_string();
    assert!(
        err.contains("tenants.toml:1:40: unknown key `port` in server"),
        "{err}"
    );
    assert!(
        err.contains("tenants.toml:2:9: `tenants.shop` is missing the required key `plan`"),
        "{err}"
    );
    assert!(
        err.contains("tenants.toml:2:14: unknown key `plann` in tenants.shop"),
        "{err}"
    );
    assert!(err.contains("did you mean `plan`?"), "{err}");
}

#[test]
fn unknown_status_is_an_error() {
    let src = with_plans("[tenants.shop]\nplan = \"starter\"\nstatus = \"paused\"\n");
    one_error(load(&src), line_of(&src, "paused"), "paused");
}

#[test]
fn unknown_user_key_is_an_error() {
    let src = with_plans(
        "[tenants.shop]\nplan = \"starter\"\nadmins = [{ username = \"a1\", pasword_env = \"X\" }]\n",
    );
    one_error(
        load(&src),
        line_of(&src, "pasword_env"),
        "unknown key `pasword_env` in tenants.shop.admins[0]",
    );
}

// ---------------------------------------------------------------- names

#[test]
fn invalid_database_name_is_an_error() {
    let src = with_plans("[tenants.Shop]\nplan = \"starter\"\n");
    let d = one_error(
        load(&src),
        line_of(&src, "[tenants.Shop]"),
        "invalid database name \"Shop\"",
    );
    assert!(d.message.contains("lower-case"), "{d}");
}

#[test]
fn sql_injection_in_a_tenant_name_is_an_error() {
    let src = with_plans("[tenants.'shop\"; DROP DATABASE x; --']\nplan = \"starter\"\n");
    let d = one_error(
        load(&src),
        line_of(&src, "DROP DATABASE"),
        "invalid database name",
    );
    assert!(d.message.contains("only a-z, 0-9 and '_'"), "{d}");
}

#[test]
fn sql_injection_in_a_username_is_an_error() {
    let src = with_plans(
        "[tenants.shop]\nplan = \"starter\"\ncustomers = [{ username = \"bob'; DROP ROLE x; --\" }]\n",
    );
    one_error(load(&src), line_of(&src, "DROP ROLE"), "invalid username");
}

#[test]
fn reserved_database_name_is_an_error() {
    let src = with_plans("[tenants.pg_shop]\nplan = \"starter\"\n");
    one_error(
        load(&src),
        line_of(&src, "pg_shop"),
        "reserved by PostgreSQL",
    );
    let src = with_plans("[tenants.template1]\nplan = \"starter\"\nsubdomain = \"t\"\n");
    one_error(
        load(&src),
        line_of(&src, "template1"),
        "reserved by PostgreSQL",
    );
}

#[test]
fn database_name_must_leave_room_for_its_roles() {
    let name = "a".repeat(54);
    let src = with_plans(&format!(
        "[tenants.{name}]\nplan = \"starter\"\nsubdomain = \"long\"\n"
    ));
    let d = one_error(load(&src), line_of(&src, &name), "too long");
    assert!(d.message.contains(&format!("{name}_developer")), "{d}");
    assert!(d.message.contains("64 bytes"), "{d}");
    assert!(d.help.unwrap().contains("at most 53 bytes"));

    let ok = "a".repeat(53);
    let src = with_plans(&format!(
        "[tenants.{ok}]\nplan = \"starter\"\nsubdomain = \"long\"\n"
    ));
    load(&src).unwrap();
}

#[test]
fn username_over_63_bytes_is_an_error() {
    let user = "u".repeat(64);
    let src = with_plans(&format!(
        "[tenants.shop]\nplan = \"starter\"\ncustomers = [{{ username = \"{user}\" }}]\n"
    ));
    one_error(load(&src), line_of(&src, &user), "64 bytes");
}

#[test]
fn reserved_role_name_is_an_error() {
    let src =
        with_plans("[tenants.shop]\nplan = \"starter\"\ncustomers = [{ username = \"public\" }]\n");
    one_error(
        load(&src),
        line_of(&src, "public"),
        "reserved by PostgreSQL",
    );
}

#[test]
fn duplicate_username_names_the_first_occurrence() {
    let src = with_plans(
        r#"[tenants.alpha]
plan = "starter"
admins = [{ username = "sam" }]

[tenants.beta]
plan = "starter"
customers = [{ username = "sam" }]
"#,
    );
    let first = line_of(&src, "admins = [{ username = \"sam\"");
    let second = line_of(&src, "customers = [{ username = \"sam\"");
    let d = one_error(load(&src), second, "username `sam` is already used at");
    assert!(d.message.contains(&format!("tenants.toml:{first}:")), "{d}");
    assert!(d.help.unwrap().contains("cluster"));
}

#[test]
fn username_equal_to_a_gateway_login_is_an_error() {
    let src = with_plans(
        "[tenants.shop]\nplan = \"starter\"\ndevelopers = [{ username = \"shop_gateway\" }]\n",
    );
    let d = one_error(
        load(&src),
        line_of(&src, "shop_gateway"),
        "username `shop_gateway` is the gateway login of tenant `shop`",
    );
    assert!(d.help.unwrap().contains("<db>_gateway"));
}

#[test]
fn username_equal_to_a_group_role_is_an_error() {
    let src = with_plans(
        "[tenants.shop]\nplan = \"starter\"\n\n[tenants.other]\nplan = \"starter\"\nadmins = [{ username = \"shop_owner\" }]\n",
    );
    let d = one_error(
        load(&src),
        line_of(&src, "shop_owner"),
        "owner group role of tenant `shop`",
    );
    assert!(d.message.contains("username `shop_owner`"), "{d}");
}

#[test]
fn username_equal_to_a_database_name_is_an_error() {
    let src = with_plans(
        "[tenants.shop]\nplan = \"starter\"\n\n[tenants.other]\nplan = \"starter\"\ndevelopers = [{ username = \"shop\" }]\n",
    );
    one_error(
        load(&src),
        line_of(&src, "username = \"shop\""),
        "is also the name of a tenant database",
    );
}

// ---------------------------------------------------------------- plans

#[test]
fn unknown_plan_lists_the_known_ones() {
    let src = with_plans("[tenants.shop]\nplan = \"enterprise\"\n");
    let d = one_error(
        load(&src),
        line_of(&src, "enterprise"),
        "unknown plan \"enterprise\"",
    );
    assert_eq!(d.help.unwrap(), "known plans: professional, starter");
}

#[test]
fn plan_values_out_of_range() {
    let src = r#"
[plans.tiny]
connection_limit = 0
statement_timeout = "5s"
pool_size = 1
requests_per_second = 1
"#;
    one_error(
        load(src),
        3,
        "plans.tiny.connection_limit is 0, out of range",
    );
    let src = r#"
[plans.tiny]
connection_limit = 1
statement_timeout = "5s"
pool_size = -1
requests_per_second = 1
"#;
    one_error(load(src), 5, "plans.tiny.pool_size is -1, out of range");
    let src = r#"
[plans.tiny]
connection_limit = 3000000000
statement_timeout = "5s"
pool_size = 1
requests_per_second = 0
"#;
    let err = load(src).unwrap_err();
    let lines: Vec<usize> = err.diagnostics().iter().map(|d| d.line).collect();
    assert_eq!(lines, [3, 6], "all problems, in file order:\n{err}");
}

#[test]
fn quotas_are_read_and_checked() {
    let plan = |quotas: &str| {
        format!("[plans.tiny]\nconnection_limit = 1\nstatement_timeout = \"5s\"\npool_size = 1\nrequests_per_second = 1\n{quotas}")
    };
    let inv = load(&plan(
        "storage = \"1GiB\"\nrequests_per_day = 50000\nmax_users = 5\n",
    ))
    .unwrap();
    let tiny = &inv.plans["tiny"];
    assert_eq!(tiny.storage_bytes, Some(1 << 30));
    assert_eq!(tiny.requests_per_day, Some(50_000));
    assert_eq!(tiny.max_users, Some(5));
    assert_eq!(
        load(&plan("storage = \"500 MB\"\n")).unwrap().plans["tiny"].storage_bytes,
        Some(500 << 20)
    );
    let src = plan("storage = \"1 gigabyte\"\n");
    let d = one_error(
        load(&src),
        6,
        "plans.tiny.storage \"1 gigabyte\" is not a size",
    );
    assert!(d.help.unwrap().contains("e.g. \"1GiB\""));
    one_error(load(&plan("storage = \"0GiB\"\n")), 6, "is not a size");
    one_error(
        load(&plan("storage = \"99999999TB\"\n")),
        6,
        "is not a size",
    );
    one_error(
        load(&plan("requests_per_day = 0\n")),
        6,
        "plans.tiny.requests_per_day is 0, out of range",
    );
    one_error(
        load(&plan("max_users = -1\n")),
        6,
        "plans.tiny.max_users is -1, out of range",
    );
}

#[test]
fn more_users_than_the_plan_allows_is_an_error_at_the_first_one_past_it() {
    let src = String::from(
        "[plans.tiny]\nconnection_limit = 1\nstatement_timeout = \"5s\"\npool_size = 1\nrequests_per_second = 1\nmax_users = 2\n\n\
         [tenants.shop]\nplan = \"tiny\"\nadmins = [{ username = \"shop_a\" }]\ndevelopers = [{ username = \"shop_d\" }]\ncustomers = [{ username = \"shop_c\" }, { username = \"shop_c2\" }]\n"
    );
    let d = one_error(
        load(&src),
        line_of(&src, "shop_c2"),
        "tenant `shop` has 4 login users; its plan \"tiny\" allows 2 (max_users)",
    );
    assert_eq!(d.column, line_of_column(&src, "\"shop_c\""));
    assert!(d.help.unwrap().contains("raise plans.tiny.max_users"));
    // At the limit: fine.
    let ok = src.replace("max_users = 2", "max_users = 4");
    assert_eq!(load(&ok).unwrap().tenants[0].users.len(), 4);
}

#[test]
fn bad_duration_is_an_error() {
    let src = r#"
[plans.tiny]
connection_limit = 1
statement_timeout = "5 seconds"
pool_size = 1
requests_per_second = 1
"#;
    let d = one_error(
        load(src),
        4,
        "plans.tiny.statement_timeout \"5 seconds\" is not a duration",
    );
    assert!(d.help.unwrap().contains("\"0\" means no timeout"));
    let src = src.replace("5 seconds", "30d");
    one_error(load(&src), 4, "too long");
    let src = src.replace("30d", "0");
    assert_eq!(
        load(&src).unwrap().plans["tiny"].statement_timeout_pg(),
        "0"
    );
}

#[test]
fn missing_plan_key_is_an_error() {
    let src = "[plans.tiny]\nconnection_limit = 1\npool_size = 1\nrequests_per_second = 1\n";
    let d = one_error(
        load(src),
        1,
        "`plans.tiny` is missing the required key `statement_timeout`",
    );
    assert_eq!(
        d.help.as_deref(),
        Some("add it, e.g. statement_timeout = \"5s\"")
    );
}

// ---------------------------------------------------------------- routing

#[test]
fn invalid_subdomain_is_an_error() {
    let src = with_plans("[tenants.shop]\nplan = \"starter\"\nsubdomain = \"-shop\"\n");
    one_error(
        load(&src),
        line_of(&src, "-shop"),
        "invalid subdomain \"-shop\"",
    );
    let src = with_plans("[tenants.shop]\nplan = \"starter\"\nsubdomain = \"Shop\"\n");
    one_error(load(&src), line_of(&src, "\"Shop\""), "use lower case");
}

#[test]
fn derived_subdomain_must_be_a_label() {
    let src = with_plans("[tenants.shop_]\nplan = \"starter\"\n");
    let d = one_error(
        load(&src),
        line_of(&src, "shop_"),
        "derived from its name, \"shop-\"",
    );
    assert!(d.help.unwrap().contains("subdomain ="));
}

#[test]
fn duplicate_subdomain_is_an_error() {
    let src = with_plans(
        "[tenants.alpha]\nplan = \"starter\"\nsubdomain = \"shop\"\n\n[tenants.beta]\nplan = \"starter\"\nsubdomain = \"shop\"\n",
    );
    let second = src.match_indices("subdomain = \"shop\"").nth(1).unwrap().0;
    let line = crate::line_col(&src, second).0;
    one_error(load(&src), line, "already used by tenant `alpha`");
}

#[test]
fn reserved_subdomain_is_an_error() {
    let src = with_plans(
        "[routing]\nreserved_subdomains = [\"www\", \"api\"]\n\n[tenants.api]\nplan = \"starter\"\n",
    );
    one_error(
        load(&src),
        line_of(&src, "[tenants.api]"),
        "subdomain \"api\" is reserved",
    );
}

#[test]
fn invalid_domain_is_an_error() {
    let src = with_plans("[tenants.shop]\nplan = \"starter\"\ndomains = [\"shop_x.example\"]\n");
    one_error(
        load(&src),
        line_of(&src, "domains"),
        "invalid domain \"shop_x.example\"",
    );
    let src = with_plans("[tenants.shop]\nplan = \"starter\"\ndomains = [\"intranet\"]\n");
    one_error(load(&src), line_of(&src, "domains"), "has no dot");
}

#[test]
fn duplicate_domain_is_an_error() {
    let src = with_plans(
        "[tenants.alpha]\nplan = \"starter\"\ndomains = [\"shop.example\"]\n\n[tenants.beta]\nplan = \"starter\"\ndomains = [\"x.example\", \"shop.example\"]\n",
    );
    let d = one_error(
        load(&src),
        line_of(&src, "\"x.example\""),
        "domain \"shop.example\" is already used at",
    );
    assert!(d
        .message
        .contains(&format!("tenants.toml:{}:", line_of(&src, "alpha") + 2)));
    assert!(d.column > 20, "points at the second element: {d}");
}

#[test]
fn domain_equal_to_a_base_domain_is_an_error() {
    let src = with_plans(
        "[routing]\nbase_domains = [\"usualstore.com\"]\n\n[tenants.shop]\nplan = \"starter\"\ndomains = [\"usualstore.com\"]\n",
    );
    one_error(
        load(&src),
        line_starting(&src, "domains = "),
        "is a base domain",
    );
}

#[test]
fn domain_under_a_reserved_subdomain_is_an_error() {
    let src = with_plans(
        "[routing]\nbase_domains = [\"usualstore.com\"]\nreserved_subdomains = [\"www\"]\n\n[tenants.shop]\nplan = \"starter\"\ndomains = [\"www.usualstore.com\"]\n",
    );
    one_error(
        load(&src),
        line_starting(&src, "domains = "),
        "reserved subdomain \"www\"",
    );
}

#[test]
fn domain_of_another_tenants_subdomain_is_an_error() {
    let src = with_plans(
        "[routing]\nbase_domains = [\"usualstore.com\"]\n\n[tenants.alpha]\nplan = \"starter\"\ndomains = [\"beta.usualstore.com\"]\n\n[tenants.beta]\nplan = \"starter\"\n",
    );
    one_error(
        load(&src),
        line_starting(&src, "domains = "),
        "tenant `beta` is reached",
    );
}

#[test]
fn invalid_base_domain_and_reserved_label_are_errors() {
    let src = "[routing]\nbase_domains = [\"usual store.com\"]\n";
    one_error(load(src), 2, "invalid base domain");
    let src = "[routing]\nreserved_subdomains = [\"w.w\"]\n";
    one_error(load(src), 2, "invalid reserved subdomain");
}

// ---------------------------------------------------------------- users

#[test]
fn invalid_email_is_an_error() {
    let src = with_plans(
        "[tenants.shop]\nplan = \"starter\"\nadmins = [{ username = \"a1\", email = \"ops@@x\" }]\n",
    );
    one_error(
        load(&src),
        line_of(&src, "ops@@x"),
        "invalid email \"ops@@x\"",
    );
    let src = with_plans(
        "[tenants.shop]\nplan = \"starter\"\nadmins = [{ username = \"a1\", email = \"@x\" }]\n",
    );
    one_error(load(&src), line_of(&src, "\"@x\""), "invalid email");
}

#[test]
fn missing_password_env_is_an_error() {
    let src = with_plans(
        "[tenants.shop]\nplan = \"starter\"\nadmins = [{ username = \"a1\", password_env = \"NOT_SET_ANYWHERE\" }]\n",
    );
    let d = one_error(load(&src), line_of(&src, "NOT_SET_ANYWHERE"), "is not set");
    assert!(
        d.message.contains("NOT_SET_ANYWHERE") && d.message.contains("user `a1`"),
        "{d}"
    );
}

#[test]
fn the_gateway_password_may_come_from_the_environment() {
    let src = with_plans(
        "[tenants.shop]\nplan = \"starter\"\ngateway_password_env = \"SHOP_GATEWAY_PASSWORD\"\n",
    );
    let inv = load(&src).unwrap();
    assert_eq!(
        inv.tenants[0].gateway.password,
        PasswordSource::Env {
            var: "SHOP_GATEWAY_PASSWORD".into()
        }
    );
    // Too short for the gateway login's fast verifier.
    let src = with_plans(
        "[tenants.shop]\nplan = \"starter\"\ngateway_password_env = \"SHORT_GATEWAY_PASSWORD\"\n",
    );
    let d = one_error(
        load(&src),
        line_of(&src, "SHORT_GATEWAY"),
        "holds 7 characters; at least 24",
    );
    assert!(
        d.help.as_deref().unwrap_or("").contains("openssl rand"),
        "{d}"
    );
    // Shared with a user's password: that user could act as every group.
    let src = with_plans(
        "[tenants.shop]\nplan = \"starter\"\ncustomers = [{ username = \"c1\", password_env = \"SHOP_GATEWAY_PASSWORD\" }]\ngateway_password_env = \"SHOP_GATEWAY_PASSWORD\"\n",
    );
    let d = one_error(
        load(&src),
        line_of(&src, "gateway_password_env = "),
        "is already a password source at tenants.toml:",
    );
    assert!(d.message.contains("SHOP_GATEWAY_PASSWORD"), "{d}");
    // Unset: an error at its line, naming the tenant and the key; without
    // the key the password is generated.
    let src = with_plans(
        "[tenants.shop]\nplan = \"starter\"\ngateway_password_env = \"NOT_SET_ANYWHERE\"\n",
    );
    let d = one_error(load(&src), line_of(&src, "NOT_SET_ANYWHERE"), "is not set");
    assert!(
        d.message.contains("tenant `shop`") && d.message.contains("(gateway_password_env)"),
        "{d}"
    );
    let src = with_plans("[tenants.shop]\nplan = \"starter\"\n");
    assert!(matches!(
        load(&src).unwrap().tenants[0].gateway.password,
        PasswordSource::Generated { .. }
    ));
}

#[test]
fn empty_password_env_is_an_error() {
    let src = with_plans(
        "[tenants.shop]\nplan = \"starter\"\nadmins = [{ username = \"a1\", password_env = \"EMPTY_PASSWORD\" }]\n",
    );
    let d = one_error(
        load(&src),
        line_of(&src, "EMPTY_PASSWORD"),
        "EMPTY_PASSWORD",
    );
    assert!(
        d.message.contains("is empty") && d.message.contains("user `a1`"),
        "{d}"
    );
}

#[test]
fn missing_password_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let src = with_plans(
        "[tenants.shop]\nplan = \"starter\"\ndevelopers = [{ username = \"d1\", password_file = \"secrets/d1\" }]\n",
    );
    let d = one_error(
        load_in(dir.path(), &src),
        line_of(&src, "secrets/d1"),
        "does not exist",
    );
    assert!(
        d.message.contains("secrets/d1") && d.message.contains("user `d1`"),
        "{d}"
    );
}

#[test]
fn empty_password_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write_private(&dir.path().join("d1.pw"), "\n\n");
    let src = with_plans(
        "[tenants.shop]\nplan = \"starter\"\ndevelopers = [{ username = \"d1\", password_file = \"d1.pw\" }]\n",
    );
    let d = one_error(
        load_in(dir.path(), &src),
        line_of(&src, "d1.pw"),
        "is empty",
    );
    assert!(
        d.message.contains("d1.pw") && d.message.contains("user `d1`"),
        "{d}"
    );
}

#[test]
fn blank_password_env_is_an_error() {
    let src = with_plans(
        "[tenants.shop]\nplan = \"starter\"\nadmins = [{ username = \"a1\", password_env = \"BLANK_PASSWORD\" }]\n",
    );
    one_error(
        load(&src),
        line_of(&src, "BLANK_PASSWORD"),
        "user `a1`: environment variable BLANK_PASSWORD (password_env) holds only white space",
    );
}

/// A password_file must be a private regular file of at most 4 KiB holding
/// one non-blank line (`secret_file.rs`). Any other file is refused at its
/// `password_file` key, with a help line, and its contents are never shown.
#[test]
fn password_files_that_break_the_rules_are_refused_at_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_private(&d.join("ok.pw"), "fine\n");
    write_private(&d.join("two.pw"), "root:x:0:0:root\ndaemon:x:1:1\n");
    write_private(&d.join("big.pw"), &"x".repeat(5000));
    write_private(&d.join("blank.pw"), "   \n");
    std::fs::create_dir(d.join("adir")).unwrap();
    let abs = std::path::absolute(d).unwrap();
    let mut cases = vec![
        (
            "adir",
            "is a directory, not a regular file".to_owned(),
            "point password_file at a regular file",
        ),
        (
            "two.pw",
            "holds 2 lines; a password file holds one".to_owned(),
            "alone on one line",
        ),
        (
            "big.pw",
            "is 5000 bytes; a password file holds at most 4096".to_owned(),
            "alone on one line",
        ),
        (
            "blank.pw",
            "holds only white space".to_owned(),
            "write the password into it",
        ),
    ];
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        write_private(&d.join("open.pw"), "fine\n");
        std::fs::set_permissions(d.join("open.pw"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        std::os::unix::fs::symlink(d.join("ok.pw"), d.join("ok-link")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", d.join("zero-link")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.join("passwd-link")).unwrap();
        cases.push((
            "/dev/zero",
            "is a device, not a regular file".to_owned(),
            "point password_file at a regular file",
        ));
        cases.push((
            "zero-link",
            "is a device, not a regular file".to_owned(),
            "point password_file at a regular file",
        ));
        cases.push((
            "open.pw",
            "can be read or written by group or others (mode 0644)".to_owned(),
            "run `chmod 600 ",
        ));
        // /etc/passwd belongs to root (and is world-readable): refused
        // either way, whoever runs the tests.
        cases.push(("passwd-link", String::new(), ""));
    }
    let users: String = cases
        .iter()
        .enumerate()
        .map(|(i, (file, _, _))| {
            format!("  {{ username = \"u{i}\", password_file = \"{file}\" }},\n")
        })
        .collect();
    let src = with_plans(&format!(
        "[tenants.shop]\nplan = \"starter\"\ndevelopers = [{{ username = \"ok\", password_file = \"ok.pw\" }}]\ncustomers = [\n{users}]\n"
    ));
    let err = load_in(d, &src).unwrap_err();
    let text = err.to_string();
    assert_eq!(err.diagnostics().len(), cases.len(), "{text}");
    assert!(
        !text.contains("root:x") && !text.contains("daemon"),
        "{text}"
    );
    for (diag, (i, (file, what, help))) in err.diagnostics().iter().zip(cases.iter().enumerate()) {
        let shown = if file.starts_with('/') {
            PathBuf::from(file)
        } else {
            abs.join(file)
        };
        assert_eq!(diag.line, line_of(&src, &format!("\"u{i}\"")), "{diag}");
        assert_eq!(
            diag.column,
            line_of_column(&src, &format!("\"{file}\"")),
            "{diag}"
        );
        assert!(
            diag.message.starts_with(&format!(
                "user `u{i}`: password file {} {what}",
                shown.display()
            )),
            "{diag}"
        );
        assert!(diag.help.as_deref().unwrap().contains(help), "{diag}");
    }
    #[cfg(unix)]
    assert!(
        text.contains(&format!("chmod 600 {}", abs.join("open.pw").display())),
        "{text}"
    );

    // A link to a private regular file is followed.
    #[cfg(unix)]
    {
        let src = with_plans("[tenants.shop]\nplan = \"starter\"\nadmins = [{ username = \"a1\", password_file = \"ok-link\" }]\n");
        let inv = load_in(d, &src).unwrap();
        assert_eq!(
            inv.tenants[0].users[0]
                .load_password()
                .unwrap()
                .unwrap()
                .expose_secret(),
            "fine"
        );
    }
}

/// With [`Secrets::Deferred`], a password that cannot be read now (unset or
/// blank variable, missing or broken file) is no load error: the gateway
/// serves that tenant as unavailable while the rest of the file takes
/// effect. `load_password` applies the same rules later. Every other rule
/// still holds.
#[test]
fn deferred_secrets_leave_unreadable_passwords_to_load_password() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_private(&d.join("ok.pw"), "fine\n");
    write_private(&d.join("two.pw"), "one\ntwo\n");
    std::fs::create_dir(d.join("adir")).unwrap();
    let src = with_plans(
        r#"[tenants.shop]
plan = "starter"
admins = [{ username = "a1", password_env = "NOT_SET_ANYWHERE_9F3A" }]
developers = [{ username = "d1", password_env = "BLANK_PASSWORD" }, { username = "d2", password_file = "missing.pw" }]
customers = [{ username = "c1", password_file = "adir" }, { username = "c2", password_file = "two.pw" }, { username = "c3", password_file = "ok.pw" }]
"#,
    );
    let path = d.join("tenants.toml");
    let strict = Inventory::from_str_with(&src, &path, &env).unwrap_err();
    assert_eq!(strict.diagnostics().len(), 5, "{strict}");

    let inv = Inventory::from_str_with_secrets(&src, &path, &env, Secrets::Deferred)
        .unwrap_or_else(|e| panic!("{e}"));
    let users = &inv.tenants[0].users;
    assert_eq!(users.len(), 6);
    let reasons: Vec<String> = users[..5]
        .iter()
        .map(|u| u.load_password().unwrap_err().to_string())
        .collect();
    for (reason, want) in reasons.iter().zip([
        "password of user `a1` (env NOT_SET_ANYWHERE_9F3A): the variable is not set",
        "password of user `d1` (env BLANK_PASSWORD): the variable is not set",
        "the file does not exist",
        "the file is a directory, not a regular file",
        "the file holds 2 lines",
    ]) {
        assert!(reason.contains(want), "{want:?} not in {reason:?}");
    }
    assert_eq!(
        users[5].load_password().unwrap().unwrap().expose_secret(),
        "fine"
    );

    // The file on disk, through load_with.
    std::fs::write(&path, &src).unwrap();
    assert!(Inventory::load(&path).is_err());
    let inv = Inventory::load_with(&path, Secrets::Deferred).unwrap();
    assert_eq!(inv.tenants[0].users.len(), 6);

    // Everything the file itself says is still checked.
    for (user, needle) in [
        (
            "{ username = \"a1\", password_env = \"A=B\" }",
            "invalid environment variable name",
        ),
        (
            "{ username = \"a1\", password_file = \"\" }",
            "password_file is empty",
        ),
        (
            "{ username = \"a1\", password_env = \"X\", password_file = \"x\" }",
            "both password_env and password_file",
        ),
        (
            "{ username = \"a1\", password_fil = \"x\" }",
            "unknown key `password_fil`",
        ),
        (
            "{ username = \"A1\", password_env = \"X\" }",
            "invalid username",
        ),
    ] {
        let src = with_plans(&format!(
            "[tenants.shop]\nplan = \"starter\"\nadmins = [{user}]\n"
        ));
        one_error(
            Inventory::from_str_with_secrets(&src, &path, &env, Secrets::Deferred),
            line_of(&src, "admins"),
            needle,
        );
    }
}

#[test]
fn both_password_sources_is_an_error() {
    let src = with_plans(
        "[tenants.shop]\nplan = \"starter\"\nadmins = [{ username = \"a1\", password_env = \"OTHER_PASSWORD\", password_file = \"x\" }]\n",
    );
    one_error(
        load(&src),
        line_of(&src, "password_file"),
        "both password_env and password_file",
    );
}

#[test]
fn password_sources_load_and_never_leak() {
    let dir = tempfile::tempdir().unwrap();
    write_private(&dir.path().join("d1.pw"), "file-secret\n");
    let src = with_plans(
        r#"[paths]
secrets = "generated"

[tenants.shop]
plan = "starter"
admins = [{ username = "a1", password_env = "OTHER_PASSWORD" }]
developers = [{ username = "d1", password_file = "d1.pw" }]
customers = [{ username = "c1" }]
"#,
    );
    let inv = load_in(dir.path(), &src).unwrap();
    let users = &inv.tenants[0].users;
    assert_eq!(users[0].password.describe(), "env OTHER_PASSWORD");
    let file = users[1].ensure_password().unwrap();
    assert_eq!(file.expose_secret(), "file-secret");

    let generated = &users[2];
    let expected_path = std::path::absolute(dir.path())
        .unwrap()
        .join("generated/c1");
    assert_eq!(
        generated.password,
        PasswordSource::Generated {
            path: expected_path.clone()
        }
    );
    assert!(generated.load_password().unwrap().is_none());
    let first = generated.ensure_password().unwrap();
    let second = generated.ensure_password().unwrap();
    assert_eq!(first.expose_secret(), second.expose_secret());
    assert_eq!(
        std::fs::read_to_string(&expected_path).unwrap().trim_end(),
        first.expose_secret()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&expected_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let debug = format!("{users:?}");
    assert!(!debug.contains("file-secret") && !debug.contains(first.expose_secret()));

    // Errors name the user and the source, not the value.
    std::fs::write(dir.path().join("d1.pw"), "").unwrap();
    let err = users[1].load_password().unwrap_err().to_string();
    assert!(err.contains("user `d1`") && err.contains("d1.pw"), "{err}");
}

// ---------------------------------------------------------------- fleet & paths

#[test]
fn invalid_fleet_is_an_error() {
    let d = one_error(
        load("\n\nfleet = \"Blue Fleet\"\n"),
        3,
        "invalid fleet name \"Blue Fleet\"",
    );
    assert_eq!(d.column, 9);
    one_error(
        load(&format!("fleet = \"{}\"\n", "a".repeat(33))),
        1,
        "invalid fleet",
    );
    assert_eq!(load("fleet = \"blue-2_x\"").unwrap().fleet, "blue-2_x");
}

#[test]
fn absolute_paths_stay_absolute() {
    let src = "[paths]\nbackups = \"/var/backups/tenantry\"\nschema = \"./db/schema\"\n";
    let inv = load(src).unwrap();
    assert_eq!(inv.paths.backups, PathBuf::from("/var/backups/tenantry"));
    assert_eq!(
        inv.paths.schema,
        std::env::current_dir().unwrap().join("db/schema")
    );
}

// ---------------------------------------------------------------- all at once

#[test]
fn all_errors_are_reported_in_file_order() {
    let src = format!(
        r#"fleet = "BAD"
{PLANS}
[tenants.Bad]
plan = "nope"
customers = [{{ username = "c1", email = "no-at" }}, {{ username = "c1" }}]
"#
    );
    let err = load(&src).unwrap_err();
    let diags = err.diagnostics();
    let text = err.to_string();
    assert_eq!(diags.len(), 5, "{text}");
    let mut sorted = diags.to_vec();
    sorted.sort_by_key(|d| (d.line, d.column));
    assert_eq!(sorted, diags);
    for needle in [
        "invalid fleet",
        "invalid database name",
        "unknown plan",
        "invalid email",
        "already used",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    assert!(text.contains("\n  help: "), "{text}");
}

#[test]
fn a_device_or_a_directory_is_not_read_as_tenants_toml() {
    for path in ["/dev/zero", "/"] {
        let e = Inventory::load(std::path::Path::new(path)).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{path}: {e}");
    }
}
