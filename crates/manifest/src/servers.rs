//! `[server]` and `[servers.<name>]`: validating the PostgreSQL servers a
//! file names, their environment overrides, and a tenant's `server` pin.
//!
//! A file names one server with `[server]` (called [`DEFAULT_SERVER`]) or
//! several with `[servers.<name>]`, never both. Each server's admin URL is
//! overridden by `TENANTRY_ADMIN_URL_<NAME>` (the name upper-cased); the
//! plain `TENANTRY_ADMIN_URL` overrides the only server of a file that has
//! one, and is an error for a file with several (it could only be meant for
//! one of them).
//!
//! What does not live here: where tenants are placed (the planner's, from
//! the catalogs) and the other sections (`validate`).

use std::collections::BTreeMap;
use std::ops::Range;

use secrecy::SecretString;
use toml::Spanned;

use crate::error::Reporter;
use crate::model::{Server, ServerStatus};
use crate::raw::RawServer;
use crate::validate::ADMIN_URL_ENV;

/// The name of the one server of a `[server]` table (or of a file with
/// neither `[server]` nor `[servers]`).
pub const DEFAULT_SERVER: &str = "default";

/// The sslmode values libpq knows.
const SSLMODES: [&str; 6] = [
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

/// The variable that overrides the admin URL of server `name`:
/// `TENANTRY_ADMIN_URL_<NAME>`.
pub fn admin_url_env(name: &str) -> String {
    format!("{ADMIN_URL_ENV}_{}", name.to_ascii_uppercase())
}

/// Whether `name` is a valid server name: 1 to 32 of a-z, 0-9 and '_'.
pub fn valid_server_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The servers of a file, by name: `[servers.<name>]`, else `[server]`
/// (present at `single_span`, or absent) as [`DEFAULT_SERVER`].
pub(crate) fn servers(
    r: &mut Reporter,
    single: RawServer,
    single_span: Option<Range<usize>>,
    several: BTreeMap<Spanned<String>, RawServer>,
    env: &dyn Fn(&str) -> Option<String>,
) -> BTreeMap<String, Server> {
    let mut out = BTreeMap::new();
    if several.is_empty() {
        let mut server = server(r, DEFAULT_SERVER, single);
        let from_env = env(ADMIN_URL_ENV).filter(|v| !v.trim().is_empty());
        if let Some(url) = from_env {
            server.admin_url = Some(SecretString::from(url));
        }
        out.insert(DEFAULT_SERVER.to_owned(), server);
        return out;
    }
    if let Some(span) = single_span {
        r.error_help(
            span,
            "both [server] and [servers.<name>] tables",
            "one server is a [server] table, several are [servers.<name>] tables: move the keys of [server] into a [servers.<name>] table",
        );
    }
    let count = several.len();
    let mut urls: BTreeMap<String, String> = BTreeMap::new();
    for (name, raw) in several {
        let span = name.span();
        let name = name.into_inner();
        if !valid_server_name(&name) {
            r.error_help(
                span,
                format!("invalid server name {name:?}"),
                "use 1 to 32 characters among a-z, 0-9 and '_', e.g. [servers.eu1]",
            );
            continue;
        }
        let file_url = raw
            .admin_url
            .as_ref()
            .map(|u| (u.get_ref().clone(), u.span()));
        let mut server = server(r, &name, raw);
        let var = admin_url_env(&name);
        let from_env = env(&var).filter(|v| !v.trim().is_empty());
        if let Some(url) = &from_env {
            server.admin_url = Some(SecretString::from(url.clone()));
        }
        // The same server twice would hold the same tenants twice.
        let effective = from_env
            .clone()
            .or(file_url.as_ref().map(|(u, _)| u.clone()));
        if let Some(url) = effective {
            if let Some(first) = urls.get(&url) {
                let where_ = file_url
                    .as_ref()
                    .filter(|_| from_env.is_none())
                    .map(|(_, s)| s.clone())
                    .unwrap_or(span);
                r.error_help(
                    where_,
                    format!("servers `{first}` and `{name}` have the same admin URL"),
                    format!(
                        "each [servers.<name>] is a different PostgreSQL server: remove one, or correct its admin_url{}",
                        if from_env.is_some() { format!(" (set by {var})") } else { String::new() }
                    ),
                );
            } else {
                urls.insert(url, name.clone());
            }
        }
        out.insert(name, server);
    }
    let plain = env(ADMIN_URL_ENV).filter(|v| !v.trim().is_empty());
    if count == 1 {
        // The only server: the plain variable overrides it too, unless its
        // own does.
        if let Some((name, server)) = out.iter_mut().next() {
            if env(&admin_url_env(name)).is_none_or(|v| v.trim().is_empty()) {
                if let Some(url) = plain {
                    server.admin_url = Some(SecretString::from(url));
                }
            }
        }
        return out;
    }
    if plain.is_some() {
        let names: Vec<String> = out.keys().map(|n| admin_url_env(n)).collect();
        r.error_at(
            None,
            format!("{ADMIN_URL_ENV} is set, but this file has {count} servers"),
            format!(
                "it could only be meant for one of them: unset it, and set {} instead",
                names.join(" / ")
            ),
        );
    }
    out
}

/// One server's keys (the admin URL from the file; the caller applies the
/// environment).
fn server(r: &mut Reporter, name: &str, raw: RawServer) -> Server {
    let table = if name == DEFAULT_SERVER {
        "server".to_owned()
    } else {
        format!("servers.{name}")
    };
    let app_host = raw.app_host.and_then(|host| {
        let value = host.get_ref();
        let ok = !value.is_empty()
            && value.len() <= 253
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
        if ok {
            Some(host.into_inner())
        } else {
            r.error_help(
                host.span(),
                format!("invalid {table}.app_host {value:?}"),
                "give a host name or IP address, e.g. app_host = \"db.internal\"",
            );
            None
        }
    });
    let app_port = raw
        .app_port
        .and_then(|port| match u16::try_from(*port.get_ref()) {
            Ok(p) if p > 0 => Some(p),
            _ => {
                r.error_help(
                    port.span(),
                    format!("{table}.app_port {} is not a TCP port", port.get_ref()),
                    "use 1 to 65535, e.g. app_port = 6432",
                );
                None
            }
        });
    let app_sslmode = raw.app_sslmode.and_then(|mode| {
        if SSLMODES.contains(&mode.get_ref().as_str()) {
            Some(mode.into_inner())
        } else {
            r.error_help(
                mode.span(),
                format!("unknown {table}.app_sslmode {:?}", mode.get_ref()),
                format!("use one of {}", SSLMODES.join(", ")),
            );
            None
        }
    });
    let admin_url = raw.admin_url.and_then(|url| {
        if url.get_ref().trim().is_empty() {
            let var = if name == DEFAULT_SERVER {
                ADMIN_URL_ENV.to_owned()
            } else {
                admin_url_env(name)
            };
            r.error_help(
                url.span(),
                format!("{table}.admin_url is empty"),
                format!("remove the key, or give a URL like \"postgres://postgres@localhost:5432/postgres\" (or set {var})"),
            );
            None
        } else {
            Some(SecretString::from(url.into_inner()))
        }
    });
    let max_tenants = raw
        .max_tenants
        .and_then(|n| match u32::try_from(*n.get_ref()) {
            Ok(v) if (1..=1_000_000).contains(&v) => Some(v),
            _ => {
                r.error_help(
                    n.span(),
                    format!("{table}.max_tenants {} is out of range", n.get_ref()),
                    "use 1 to 1000000, or remove the key for no limit",
                );
                None
            }
        });
    let gateway_connections =
        raw.gateway_connections
            .and_then(|n| match usize::try_from(*n.get_ref()) {
                Ok(v) if (1..=100_000).contains(&v) => Some(v),
                _ => {
                    r.error_help(
                        n.span(),
                        format!(
                            "{table}.gateway_connections {} is out of range",
                            n.get_ref()
                        ),
                        "use 1 to 100000, or remove the key for `tenantry serve --max-connections`",
                    );
                    None
                }
            });
    let status = match raw.status {
        None => ServerStatus::Active,
        Some(s) => match s.get_ref().as_str() {
            "active" => ServerStatus::Active,
            "draining" => ServerStatus::Draining,
            other => {
                r.error_help(
                    s.span(),
                    format!("unknown {table}.status {other:?}"),
                    "use \"active\" or \"draining\" (keeps its tenants, gets no new ones)",
                );
                ServerStatus::Active
            }
        },
    };
    Server {
        name: name.to_owned(),
        admin_url,
        app_host,
        app_port,
        app_sslmode,
        max_tenants,
        gateway_connections,
        status,
    }
}

/// A tenant's `server` pin: it must name one of `servers`.
pub(crate) fn pin(
    r: &mut Reporter,
    tenant: &str,
    given: Option<Spanned<String>>,
    servers: &[String],
) -> Option<String> {
    let given = given?;
    let name = given.get_ref();
    if servers.iter().any(|s| s == name) {
        return Some(given.into_inner());
    }
    r.error_help(
        given.span(),
        format!("tenant `{tenant}`: unknown server {name:?}"),
        format!(
            "name one of the file's servers ({}), or remove `server` to let tenantry place the tenant",
            servers.join(", ")
        ),
    );
    None
}

#[cfg(test)]
mod tests {
    //! The rules of `[server]` / `[servers.<name>]` and a tenant's pin, each
    //! with the line its diagnostic points at.
    use std::path::Path;

    use secrecy::ExposeSecret;

    use crate::tests::{line_of, one_error};
    use crate::{Inventory, ManifestError, ServerStatus};

    const PLAN: &str = "[plans.p]\nconnection_limit = 5\nstatement_timeout = \"5s\"\npool_size = 2\nrequests_per_second = 20\n";

    fn load_env(src: &str, env: &[(&str, &str)]) -> Result<Inventory, ManifestError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        Inventory::from_str_with(src, Path::new("tenants.toml"), &lookup)
    }

    fn load(src: &str) -> Result<Inventory, ManifestError> {
        load_env(src, &[])
    }

    fn url(inv: &Inventory, server: &str) -> String {
        inv.servers[server]
            .admin_url
            .as_ref()
            .unwrap()
            .expose_secret()
            .to_owned()
    }

    #[test]
    fn several_servers_load_with_their_keys_and_pins() {
        let src = format!(
            "[servers.eu1]\nadmin_url = \"postgres://a@eu1/postgres\"\nmax_tenants = 2000\ngateway_connections = 80\nstatus = \"draining\"\napp_host = \"eu1-pooler.internal\"\n\n[servers.eu2]\nadmin_url = \"postgres://a@eu2/postgres\"\n\n{PLAN}\n[tenants.shop]\nplan = \"p\"\nserver = \"eu1\"\n\n[tenants.other]\nplan = \"p\"\n"
        );
        let inv = load_env(
            &src,
            &[("TENANTRY_ADMIN_URL_EU2", "postgres://env@eu2/postgres")],
        )
        .unwrap();
        assert_eq!(inv.servers.keys().collect::<Vec<_>>(), ["eu1", "eu2"]);
        let eu1 = &inv.servers["eu1"];
        assert_eq!(
            (eu1.max_tenants, eu1.gateway_connections, eu1.status),
            (Some(2000), Some(80), ServerStatus::Draining)
        );
        assert_eq!(eu1.app_host.as_deref(), Some("eu1-pooler.internal"));
        assert_eq!(inv.servers["eu2"].status, ServerStatus::Active);
        assert_eq!(
            url(&inv, "eu2"),
            "postgres://env@eu2/postgres",
            "the variable wins"
        );
        assert_eq!(url(&inv, "eu1"), "postgres://a@eu1/postgres");
        assert_eq!(inv.tenant("shop").unwrap().server.as_deref(), Some("eu1"));
        assert_eq!(inv.tenant("other").unwrap().server, None);
        let err = inv.only_server().unwrap_err().to_string();
        assert!(err.contains("2 servers (eu1, eu2)"), "{err}");
    }

    #[test]
    fn a_single_server_is_named_default() {
        let src = format!("[server]\nadmin_url = \"postgres://a@h/postgres\"\n\n{PLAN}\n[tenants.shop]\nplan = \"p\"\nserver = \"default\"\n");
        let inv = load_env(&src, &[("TENANTRY_ADMIN_URL", "postgres://env@h/postgres")]).unwrap();
        assert_eq!(inv.servers.keys().collect::<Vec<_>>(), ["default"]);
        assert_eq!(inv.only_server().unwrap().name, "default");
        assert_eq!(url(&inv, "default"), "postgres://env@h/postgres");
        // One [servers.<name>] is a single server too: the plain variable
        // overrides it.
        let src = "[servers.main]\nadmin_url = \"postgres://a@h/postgres\"\n";
        let inv = load_env(src, &[("TENANTRY_ADMIN_URL", "postgres://env@h/postgres")]).unwrap();
        assert_eq!(url(&inv, "main"), "postgres://env@h/postgres");
        // Neither table: one default server, from the variable or unset.
        let inv = load("[tenants]\n").unwrap();
        assert!(inv.only_server().unwrap().admin_url.is_none());
    }

    #[test]
    fn server_and_servers_together_are_an_error() {
        let src = "[server]\nadmin_url = \"postgres://a@h/postgres\"\n\n[servers.eu1]\nadmin_url = \"postgres://a@eu1/postgres\"\n";
        let d = one_error(load(src), 1, "both [server] and [servers.<name>]");
        assert!(d.help.unwrap().contains("move the keys of [server]"));
    }

    #[test]
    fn server_names_are_checked() {
        let src = "[servers.eu1]\n\n[servers.EU-2]\nadmin_url = \"x\"\n";
        let d = one_error(load(src), 3, "invalid server name \"EU-2\"");
        assert!(d.help.unwrap().contains("a-z, 0-9 and '_'"));
    }

    #[test]
    fn a_pin_names_a_server_of_the_file() {
        let src = format!("[servers.eu1]\n[servers.eu2]\n\n{PLAN}\n[tenants.shop]\nplan = \"p\"\nserver = \"eu3\"\n");
        let line = line_of(&src, "server = \"eu3\"");
        let d = one_error(load(&src), line, "tenant `shop`: unknown server \"eu3\"");
        assert!(d.help.unwrap().contains("(eu1, eu2)"));
        let src = format!("{PLAN}\n[tenants.shop]\nplan = \"p\"\nserver = \"eu1\"\n");
        let line = line_of(&src, "server = \"eu1\"");
        let d = one_error(load(&src), line, "unknown server \"eu1\"");
        assert!(d.help.unwrap().contains("(default)"));
    }

    #[test]
    fn two_servers_with_one_admin_url_are_an_error() {
        let src = "[servers.eu1]\nadmin_url = \"postgres://a@h/postgres\"\n\n[servers.eu2]\nadmin_url = \"postgres://a@h/postgres\"\n";
        one_error(
            load(src),
            5,
            "servers `eu1` and `eu2` have the same admin URL",
        );
        // Through a variable too (no position in the file: the server's).
        let src = "[servers.eu1]\nadmin_url = \"postgres://a@h/postgres\"\n\n[servers.eu2]\n";
        let d = one_error(
            load_env(
                src,
                &[("TENANTRY_ADMIN_URL_EU2", "postgres://a@h/postgres")],
            ),
            4,
            "same admin URL",
        );
        assert!(d.help.unwrap().contains("TENANTRY_ADMIN_URL_EU2"));
    }

    #[test]
    fn the_plain_variable_is_an_error_with_several_servers() {
        let src = "[servers.eu1]\nadmin_url = \"postgres://a@eu1/postgres\"\n\n[servers.eu2]\nadmin_url = \"postgres://a@eu2/postgres\"\n";
        // Not a place in the file: a diagnostic without a position.
        let err = load_env(src, &[("TENANTRY_ADMIN_URL", "postgres://x@y/postgres")]).unwrap_err();
        let diags = err.diagnostics();
        assert_eq!(diags.len(), 1, "{err}");
        let d = &diags[0];
        assert!(
            d.message
                .contains("TENANTRY_ADMIN_URL is set, but this file has 2 servers"),
            "{d:?}"
        );
        assert_eq!((d.line, d.column), (0, 0), "{d:?}");
        assert!(d
            .help
            .as_deref()
            .unwrap()
            .contains("TENANTRY_ADMIN_URL_EU1 / TENANTRY_ADMIN_URL_EU2"));
    }

    #[test]
    fn server_keys_are_checked() {
        let src = "[servers.eu1]\nmax_tenants = 0\n";
        one_error(load(src), 2, "servers.eu1.max_tenants 0 is out of range");
        let src = "[servers.eu1]\ngateway_connections = -3\n";
        one_error(
            load(src),
            2,
            "servers.eu1.gateway_connections -3 is out of range",
        );
        let src = "[servers.eu1]\nstatus = \"retired\"\n";
        one_error(load(src), 2, "retired");
        let src = "[servers.eu1]\nadmin_urll = \"x\"\n";
        one_error(load(src), 2, "admin_urll");
        let src = "[servers.eu1]\napp_port = 70000\n";
        one_error(load(src), 2, "servers.eu1.app_port 70000 is not a TCP port");
        let src = "[servers.eu1]\nadmin_url = \" \"\n";
        let d = one_error(load(src), 2, "servers.eu1.admin_url is empty");
        assert!(d.help.unwrap().contains("TENANTRY_ADMIN_URL_EU1"));
    }
}
