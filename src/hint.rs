//! Ways forward for errors the libraries report without knowing how the
//! command was called: which admin URL a failed connection used, where that
//! URL came from, and what to do about it. Never the URL's password.

use tenantry_manifest::ADMIN_URL_ENV;

use crate::cli::Common;

/// Where the admin URL of `common` comes from, for messages: the flag, the
/// environment, or the file (the same order of precedence as `load`).
pub fn url_source(common: &Common, env: Option<&str>) -> String {
    if common.admin_url.is_some() {
        "--admin-url".to_owned()
    } else if env.is_some_and(|v| !v.trim().is_empty()) {
        ADMIN_URL_ENV.to_owned()
    } else {
        format!("[server] admin_url in {}", common.config.display())
    }
}

/// The help line for `e`, if it is a connection problem; `source` says
/// where the URL came from.
pub fn help(e: &anyhow::Error, source: &str) -> Option<String> {
    e.chain().find_map(|cause| {
        match cause.downcast_ref::<tenantry_pg::Error>()? {
            e @ tenantry_pg::Error::Connect { .. } => Some(connect_help(e, source)),
            tenantry_pg::Error::BadUrl(_) => Some(format!(
                "the admin URL came from {source}; write it like postgres://user:password@host:5432/postgres"
            )),
            _ => None,
        }
    })
}

fn connect_help(e: &tenantry_pg::Error, source: &str) -> String {
    // The server answered (it has a SQLSTATE) unless it could not be reached.
    if e.code().is_none() {
        format!(
            "the admin URL came from {source}. Is PostgreSQL running there? `tenantry up` starts a local one and prints its URL; to use another server, set {ADMIN_URL_ENV} or pass --admin-url."
        )
    } else {
        format!(
            "the admin URL came from {source}. The server is there but did not let tenantry in: check the URL's user, password and database ({ADMIN_URL_ENV} or --admin-url override it)."
        )
    }
}

/// `e` with its help line, if it has one.
pub fn with_help(e: anyhow::Error, source: Option<&str>) -> anyhow::Error {
    match source.and_then(|s| help(&e, s)) {
        Some(h) => anyhow::anyhow!("{e:#}\n  help: {h}"),
        None => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common(flag: Option<&str>) -> Common {
        Common {
            config: "prod/tenants.toml".into(),
            admin_url: flag.map(str::to_owned),
        }
    }

    fn refused() -> anyhow::Error {
        anyhow::Error::from(tenantry_pg::Error::Connect {
            target: "postgres@localhost:5432/postgres".into(),
            message: "error connecting to server: Connection refused (os error 111)".into(),
            code: None,
        })
    }

    #[test]
    fn the_url_source_follows_precedence() {
        assert_eq!(
            url_source(&common(Some("postgres://x")), Some("y")),
            "--admin-url"
        );
        assert_eq!(
            url_source(&common(None), Some("postgres://y")),
            ADMIN_URL_ENV
        );
        assert_eq!(
            url_source(&common(None), Some("  ")),
            "[server] admin_url in prod/tenants.toml"
        );
        assert_eq!(
            url_source(&common(None), None),
            "[server] admin_url in prod/tenants.toml"
        );
    }

    #[test]
    fn a_refused_connection_points_at_up_and_the_url_source() {
        let e = with_help(refused().context("listing tenants"), Some(ADMIN_URL_ENV));
        let text = format!("{e:#}");
        assert!(text.contains("Connection refused"), "{text}");
        assert!(text.contains("\n  help: "), "{text}");
        assert!(text.contains("tenantry up"), "{text}");
        assert!(text.contains("--admin-url"), "{text}");
        assert!(
            text.contains(&format!("came from {ADMIN_URL_ENV}")),
            "{text}"
        );
    }

    #[test]
    fn a_refused_login_points_at_the_credentials() {
        let e = anyhow::Error::from(tenantry_pg::Error::Connect {
            target: "bob@db:5432/postgres".into(),
            message: "password authentication failed for user \"bob\"".into(),
            code: Some(tenantry_pg::error::SqlState::INVALID_PASSWORD),
        });
        let text = format!("{:#}", with_help(e, Some("--admin-url")));
        assert!(text.contains("check the URL's user, password"), "{text}");
        assert!(!text.contains("tenantry up"), "{text}");
    }

    #[test]
    fn other_errors_are_left_alone() {
        let e = with_help(anyhow::anyhow!("no tenant 'x'"), Some("--admin-url"));
        assert_eq!(format!("{e:#}"), "no tenant 'x'");
        assert!(help(&refused(), "x").is_some());
        let e = with_help(refused(), None);
        assert!(!format!("{e:#}").contains("help:"));
    }
}
