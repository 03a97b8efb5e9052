//! [`ServerAddress`]: a PostgreSQL connection URL parsed once, and what is
//! derived from it, so no other code reads a host, port or sslmode out of a
//! URL: [`ServerAddress::target`] for messages, [`ServerAddress::tool_args`]
//! for the client tools, and [`Endpoint`], where applications connect, with
//! its DSN. The password stays a secret: it is never part of a target, and
//! the client tools get it through `PGPASSWORD`.

use std::fmt;
use std::path::PathBuf;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::Config;

/// A URL that is not a valid connection string; the message never holds
/// the URL (it may hold a password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressError(String);

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AddressError {}

/// A server and the credentials in its URL. Cloning is cheap enough (a
/// tokio-postgres `Config`); `Debug` redacts the password.
#[derive(Clone)]
pub struct ServerAddress {
    config: Config,
}

impl fmt::Debug for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.target(self.dbname().unwrap_or("(default)")))
    }
}

/// The server's host: a name or address, or a Unix socket directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerHost {
    Tcp(String),
    Unix(PathBuf),
}

impl ServerHost {
    /// As libpq's `--host` takes it.
    pub fn as_arg(&self) -> String {
        match self {
            ServerHost::Tcp(h) => h.clone(),
            ServerHost::Unix(p) => p.display().to_string(),
        }
    }

    /// As a URL's host part: IPv6 literals in brackets, a socket directory
    /// percent-encoded.
    pub fn as_url(&self) -> String {
        match self {
            ServerHost::Tcp(h) if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
            ServerHost::Tcp(h) => h.clone(),
            ServerHost::Unix(p) => percent_encode(&p.to_string_lossy()),
        }
    }
}

impl ServerAddress {
    /// Parses a `postgres://` URL or a `key=value` connection string.
    pub fn parse(url: &SecretString) -> Result<ServerAddress, AddressError> {
        let config: Config = url
            .expose_secret()
            .parse()
            .map_err(|e: tokio_postgres::Error| AddressError(e.to_string()))?;
        Ok(ServerAddress { config })
    }

    /// The parsed connection settings, to connect with or to derive a
    /// tenant's login from (same host, port and TLS; another user).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Mutable settings (application name, timeouts, the database).
    pub fn config_mut(&mut self) -> &mut Config {
        &mut self.config
    }

    /// The first host, if the URL names one (libpq then uses its default).
    pub fn host(&self) -> Option<ServerHost> {
        match self.config.get_hosts().first()? {
            Host::Tcp(h) => Some(ServerHost::Tcp(h.clone())),
            Host::Unix(p) => Some(ServerHost::Unix(p.clone())),
        }
    }

    /// The first port, 5432 when none is given.
    pub fn port(&self) -> u16 {
        self.config.get_ports().first().copied().unwrap_or(5432)
    }

    pub fn user(&self) -> Option<&str> {
        self.config.get_user()
    }

    pub fn dbname(&self) -> Option<&str> {
        self.config.get_dbname()
    }

    /// The password in the URL, if any.
    pub fn password(&self) -> Option<SecretString> {
        self.config
            .get_password()
            .map(|pw| SecretString::from(String::from_utf8_lossy(pw).into_owned()))
    }

    /// libpq's name of the URL's sslmode: `disable`, `prefer` or `require`.
    pub fn sslmode(&self) -> &'static str {
        match self.config.get_ssl_mode() {
            SslMode::Disable => "disable",
            SslMode::Require => "require",
            _ => "prefer",
        }
    }

    /// The sslmode when the URL asks for one explicitly (`prefer`, the
    /// default, is not worth repeating in an application's DSN).
    fn explicit_sslmode(&self) -> Option<&'static str> {
        match self.config.get_ssl_mode() {
            SslMode::Disable => Some("disable"),
            SslMode::Require => Some("require"),
            _ => None,
        }
    }

    /// `user@host:port/db` for messages; never the password.
    pub fn target(&self, db: &str) -> String {
        let host = self
            .host()
            .map_or_else(|| "localhost".to_owned(), |h| h.as_arg());
        let user = self.user().unwrap_or("(default user)");
        format!("{user}@{host}:{}/{db}", self.port())
    }

    /// What a libpq client tool (`pg_dump`, `pg_restore`, `psql`) needs to
    /// connect where and as whom this URL does: `--host`, `--port`,
    /// `--username` and `--no-password`; `PGSSLMODE`, and the password in
    /// `PGPASSWORD` (never on the command line).
    pub fn tool_args(&self) -> ToolArgs {
        let mut args = vec!["--no-password".to_owned()];
        if let Some(h) = self.host() {
            args.push(format!("--host={}", h.as_arg()));
        }
        if let Some(port) = self.config.get_ports().first() {
            args.push(format!("--port={port}"));
        }
        if let Some(user) = self.user() {
            args.push(format!("--username={user}"));
        }
        ToolArgs {
            args,
            sslmode: self.sslmode(),
            password: self.password(),
        }
    }
}

/// See [`ServerAddress::tool_args`].
pub struct ToolArgs {
    pub args: Vec<String>,
    /// For `PGSSLMODE`.
    pub sslmode: &'static str,
    /// For `PGPASSWORD`.
    pub password: Option<SecretString>,
}

/// Where applications connect: the admin URL's host, port and sslmode
/// unless `[server] app_host`, `app_port`, `app_sslmode` say otherwise (a
/// pooler, a private address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// URL-ready (see [`ServerHost::as_url`]).
    host: String,
    port: u16,
    sslmode: Option<String>,
}

impl Endpoint {
    /// `None` when neither an application host nor an admin URL names a
    /// host.
    pub fn new(
        admin: Option<&ServerAddress>,
        app_host: Option<&str>,
        app_port: Option<u16>,
        app_sslmode: Option<&str>,
    ) -> Option<Endpoint> {
        let host = match (app_host, admin) {
            (Some(h), _) => ServerHost::Tcp(h.to_owned()).as_url(),
            (None, Some(a)) => a
                .host()
                .map_or_else(|| "localhost".to_owned(), |h| h.as_url()),
            (None, None) => return None,
        };
        let port = app_port.or(admin.map(ServerAddress::port)).unwrap_or(5432);
        let sslmode = app_sslmode
            .map(str::to_owned)
            .or_else(|| admin?.explicit_sslmode().map(str::to_owned));
        Some(Endpoint {
            host,
            port,
            sslmode,
        })
    }

    /// `postgres://user:password@host:port/db[?sslmode=...]`, every part
    /// percent-encoded.
    pub fn dsn(&self, user: &str, password: &SecretString, db: &str) -> SecretString {
        let mut dsn = url(&self.host, self.port, user, Some(password), db);
        if let Some(mode) = &self.sslmode {
            dsn.push_str("?sslmode=");
            dsn.push_str(&percent_encode(mode));
        }
        SecretString::from(dsn)
    }
}

/// `postgres://user[:password]@host:port/db`, user, password and database
/// percent-encoded; `host` must already be URL-ready.
pub fn url(host: &str, port: u16, user: &str, password: Option<&SecretString>, db: &str) -> String {
    let password = password
        .map(|pw| format!(":{}", percent_encode(pw.expose_secret())))
        .unwrap_or_default();
    format!(
        "postgres://{}{password}@{host}:{port}/{}",
        percent_encode(user),
        percent_encode(db)
    )
}

/// Percent-encodes everything but RFC 3986's unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`), so the value is safe in any URL component (a
/// DSN's user or password) and in an unquoted env line.
pub fn percent_encode(value: &str) -> String {
    const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    utf8_percent_encode(value, COMPONENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> ServerAddress {
        ServerAddress::parse(&SecretString::from(url.to_owned())).unwrap()
    }

    #[test]
    fn a_url_is_read_once_for_every_use() {
        let a = parse("postgres://admin:s%40cret@db.example:6432/postgres?sslmode=require");
        assert_eq!(a.host(), Some(ServerHost::Tcp("db.example".into())));
        assert_eq!(a.port(), 6432);
        assert_eq!(a.sslmode(), "require");
        assert_eq!(a.target("shop"), "admin@db.example:6432/shop");
        assert!(!format!("{a:?}").contains("cret"));
        let tools = a.tool_args();
        assert_eq!(
            tools.args,
            [
                "--no-password",
                "--host=db.example",
                "--port=6432",
                "--username=admin"
            ]
        );
        assert_eq!(tools.sslmode, "require");
        assert_eq!(tools.password.unwrap().expose_secret(), "s@cret");
    }

    #[test]
    fn defaults_and_bad_urls() {
        let a = parse("postgres://u@/postgres");
        assert_eq!((a.host(), a.port(), a.sslmode()), (None, 5432, "prefer"));
        assert_eq!(a.target("x"), "u@localhost:5432/x");
        let e = ServerAddress::parse(&SecretString::from(
            "postgres://u:pw@h:notaport/x".to_owned(),
        ))
        .unwrap_err();
        assert!(!e.to_string().contains("pw"), "{e}");
    }

    #[test]
    fn application_dsns_take_the_app_settings_first() {
        let admin = parse("postgres://admin:x@10.0.0.5:5433/postgres?sslmode=require");
        let pw = SecretString::from("p@ss:w/rd%".to_owned());
        let e = Endpoint::new(Some(&admin), None, None, None).unwrap();
        assert_eq!(
            e.dsn("shop_bob", &pw, "shop").expose_secret(),
            "postgres://shop_bob:p%40ss%3Aw%2Frd%25@10.0.0.5:5433/shop?sslmode=require"
        );
        let e = Endpoint::new(Some(&admin), Some("::1"), Some(6432), Some("disable")).unwrap();
        assert_eq!(
            e.dsn("u", &pw, "d").expose_secret(),
            "postgres://u:p%40ss%3Aw%2Frd%25@[::1]:6432/d?sslmode=disable"
        );
        let socket = parse("host=/run/postgresql user=admin");
        let e = Endpoint::new(Some(&socket), None, None, None).unwrap();
        assert!(e
            .dsn("u", &pw, "d")
            .expose_secret()
            .starts_with("postgres://u:p%40ss%3Aw%2Frd%25@%2Frun%2Fpostgresql:5432/d"));
        assert_eq!(Endpoint::new(None, None, None, None), None);
        assert_eq!(percent_encode("a-Z_0.~é"), "a-Z_0.~%C3%A9");
    }

    #[test]
    fn percent_encoding_leaves_only_unreserved_characters_and_round_trips() {
        let pw = "p@ss:/w?rd#%& é'\"";
        let enc = percent_encode(pw);
        assert!(
            enc.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._~%".contains(c)),
            "{enc}"
        );
        let back = percent_encoding::percent_decode_str(&enc)
            .decode_utf8()
            .unwrap();
        assert_eq!(back, pw);
    }
}
