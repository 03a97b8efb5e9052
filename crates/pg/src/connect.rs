//! Connections: the admin connection from the inventory's URL, and the same
//! credentials pointed at one tenant database.

use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::{Client, Config};

use crate::error::{describe, Error};

/// Where and as whom tenantry connects. Cloning is cheap.
#[derive(Clone)]
pub struct Admin {
    config: Config,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // tokio-postgres redacts the password in its Debug.
        f.debug_struct("Admin")
            .field("config", &self.config)
            .finish()
    }
}

impl Admin {
    pub fn from_url(url: Option<&SecretString>) -> Result<Admin, Error> {
        let url = url.ok_or(Error::NoAdminUrl)?;
        let mut config: Config = url
            .expose_secret()
            .parse()
            .map_err(|e: tokio_postgres::Error| Error::BadUrl(describe(&e)))?;
        if config.get_dbname().is_none() {
            config.dbname("postgres");
        }
        config.application_name("tenantry");
        config.connect_timeout(std::time::Duration::from_secs(10));
        Ok(Admin { config })
    }

    /// Names this process's sessions in `pg_stat_activity` (e.g. `tenantry apply prod`).
    pub fn set_application_name(&mut self, name: &str) {
        self.config.application_name(name);
    }

    pub fn application_name(&self) -> &str {
        self.config.get_application_name().unwrap_or("tenantry")
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The admin database (the one in the URL).
    pub fn admin_db(&self) -> &str {
        self.config.get_dbname().unwrap_or("postgres")
    }

    /// A description of the server for messages: `user@host:port/db`, no password.
    pub fn target(&self, db: &str) -> String {
        let host = match self.config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".to_owned(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let user = self.config.get_user().unwrap_or("(default user)");
        format!("{user}@{host}:{port}/{db}")
    }

    /// Connects to `db` (the admin database when None).
    pub async fn connect(&self, db: Option<&str>) -> Result<Client, Error> {
        let mut config = self.config.clone();
        let db = db.unwrap_or(self.admin_db()).to_owned();
        config.dbname(&db);
        let (client, connection) =
            config
                .connect(tenantry_pgtls::connector())
                .await
                .map_err(|e| Error::Connect {
                    target: self.target(&db),
                    message: describe(&e),
                    code: e.code().cloned(),
                })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection closed");
            }
        });
        Ok(client)
    }
}
