//! Connections: the admin connection from the inventory's URL, and the same
//! credentials pointed at one tenant database.

use secrecy::SecretString;
use tenantry_pgconn::ServerAddress;
use tokio_postgres::Client;

use crate::error::{describe, Error};

/// Where and as whom tenantry connects: the admin URL's [`ServerAddress`].
/// Cloning is cheap.
#[derive(Clone, Debug)]
pub struct Admin {
    address: ServerAddress,
}

impl Admin {
    pub fn from_url(url: Option<&SecretString>) -> Result<Admin, Error> {
        let url = url.ok_or(Error::NoAdminUrl)?;
        let mut address = ServerAddress::parse(url).map_err(|e| Error::BadUrl(e.to_string()))?;
        let config = address.config_mut();
        if config.get_dbname().is_none() {
            config.dbname("postgres");
        }
        config.application_name("tenantry");
        config.connect_timeout(std::time::Duration::from_secs(10));
        Ok(Admin { address })
    }

    /// Names this process's sessions in `pg_stat_activity` (e.g. `tenantry apply prod`).
    pub fn set_application_name(&mut self, name: &str) {
        self.address.config_mut().application_name(name);
    }

    pub fn application_name(&self) -> &str {
        self.address
            .config()
            .get_application_name()
            .unwrap_or("tenantry")
    }

    /// The server and credentials of the admin URL.
    pub fn address(&self) -> &ServerAddress {
        &self.address
    }

    /// The admin database (the one in the URL).
    pub fn admin_db(&self) -> &str {
        self.address.dbname().unwrap_or("postgres")
    }

    /// A description of the server for messages: `user@host:port/db`, no password.
    pub fn target(&self, db: &str) -> String {
        self.address.target(db)
    }

    /// Connects to `db` (the admin database when None).
    pub async fn connect(&self, db: Option<&str>) -> Result<Client, Error> {
        let mut config = self.address.config().clone();
        let db = db.unwrap_or(self.admin_db()).to_owned();
        config.dbname(&db);
        let (client, connection) =
            config
                .connect(tenantry_pgconn::connector())
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
