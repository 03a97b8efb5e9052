//! Password rotation of a tenant's login users.
//!
//! A generated password is replaced by a new random one, saved (atomically,
//! 0600) to its file *before* the server hears of it, so a crash never leaves
//! the server with a password nobody has; a password from an environment
//! variable or a file is re-read. Either way the server gets only a
//! SCRAM-SHA-256 verifier computed here (`ALTER ROLE .. PASSWORD '<verifier>'`),
//! never the password. Sessions already open stay open: PostgreSQL checks a
//! password only when logging in.
//!
//! The caller holds the fleet's apply lock on `client` ([`crate::lock`]).
//! PBKDF2 and the password files are worked on the blocking pool
//! ([`crate::blocking`]).

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use tenantry_layout::{literal, quote, Kind, Marker};
use tenantry_manifest::{Login, ManifestError, PasswordSource, Tenant, User};
use tenantry_plan::scram;
use tokio_postgres::Client;

use crate::error::Error;

/// Why a rotation stopped.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error(transparent)]
    Pg(#[from] Error),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Some users are not (yet) login roles of this fleet on the server.
    #[error("{}", not_ready_message(.tenant, .problems))]
    NotReady {
        tenant: String,
        /// (user, what is wrong).
        problems: Vec<(String, String)>,
    },
    /// The new password is on disk, but the server refused it.
    #[error("{user}: the new password is saved to {} but setting it on the server failed: {message}. Re-running `tenantry rotate {tenant} --user {user}` sets a new one; `tenantry apply` sets the saved one (when its admin is a superuser, which can compare passwords)", .path.display())]
    SavedNotSet {
        tenant: String,
        user: String,
        path: PathBuf,
        message: String,
    },
}

fn not_ready_message(tenant: &str, problems: &[(String, String)]) -> String {
    let list = problems
        .iter()
        .map(|(u, why)| format!("{u} {why}"))
        .collect::<Vec<_>>()
        .join("; ");
    format!("cannot rotate passwords of tenant {tenant}: {list}. Run `tenantry apply` first")
}

/// Where a rotated password came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotated {
    /// A new generated password, saved here.
    Generated { path: PathBuf },
    /// Re-read from this variable.
    Env { var: String },
    /// Re-read from this file.
    File { path: PathBuf },
}

impl std::fmt::Display for Rotated {
    /// `new generated password saved to <path> and set`, `re-read from env X and set`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rotated::Generated { path } => write!(
                f,
                "new generated password saved to {} and set",
                path.display()
            ),
            Rotated::Env { var } => write!(f, "re-read from env {var} and set"),
            Rotated::File { path } => write!(f, "re-read from file {} and set", path.display()),
        }
    }
}

/// `ALTER ROLE "<user>" PASSWORD '<verifier>'`. `verifier` must be a
/// SCRAM verifier, never a password.
pub fn set_password_sql(user: &str, verifier: &str) -> String {
    format!("ALTER ROLE {} PASSWORD {}", quote(user), literal(verifier))
}

/// The users of `tenant` that are not login roles of this fleet's tenant on
/// the server, each with what is wrong.
pub async fn not_ready(
    client: &Client,
    fleet: &str,
    tenant: &Tenant,
    users: &[&User],
) -> Result<Vec<(String, String)>, Error> {
    let names: Vec<String> = users.iter().map(|u| u.name.to_string()).collect();
    let rows = client
        .query(
            "SELECT rolname::text, shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = ANY($1)",
            &[&names],
        )
        .await
        .map_err(|e| Error::sql("looking up the tenant's users", e))?;
    let mut problems = Vec::new();
    for name in &names {
        let row = rows.iter().find(|r| r.get::<_, String>(0) == *name);
        let why = match row {
            None => "does not exist on the server yet",
            Some(r) => {
                let marker = r
                    .get::<_, Option<String>>(1)
                    .and_then(|c| Marker::parse(&c));
                match marker {
                    Some(m)
                        if m.fleet == fleet
                            && m.tenant == tenant.name.as_str()
                            && m.kind == Kind::User =>
                    {
                        continue
                    }
                    _ => "exists on the server but is not a user tenantry manages for this tenant (see `tenantry plan`)",
                }
            }
        };
        problems.push((name.clone(), why.to_owned()));
    }
    Ok(problems)
}

/// Sets `password` as `user`'s password, as a fresh SCRAM verifier.
pub async fn set_password(
    client: &Client,
    user: &str,
    password: &SecretString,
) -> Result<(), Error> {
    let password = password.clone();
    let verifier = crate::blocking::run(move || scram::verifier(password.expose_secret())).await;
    set_verifier(client, user, &verifier).await
}

async fn set_verifier(client: &Client, user: &str, verifier: &str) -> Result<(), Error> {
    client
        .batch_execute(&set_password_sql(user, verifier))
        .await
        .map_err(|e| Error::sql(format!("setting the password of {user}"), e))
}

/// Rotates `users` of `tenant` one by one, calling `done` after each. Stops
/// at the first failure (the users before it are rotated, the ones after
/// untouched). Checks first that every user is a login role of this tenant
/// on the server.
pub async fn rotate(
    client: &Client,
    fleet: &str,
    tenant: &Tenant,
    users: &[&User],
    done: &mut dyn FnMut(&User, &Rotated),
) -> Result<(), RotateError> {
    let problems = not_ready(client, fleet, tenant, users).await?;
    if !problems.is_empty() {
        return Err(RotateError::NotReady {
            tenant: tenant.name.to_string(),
            problems,
        });
    }
    for user in users {
        let name = user.name.as_str();
        let rotated = match &user.password {
            PasswordSource::Generated { path } => {
                let source = user.password.clone();
                let verifier = crate::blocking::run(move || {
                    let password = PasswordSource::generate();
                    // Computed before the file changes, so the server hears
                    // of the new password right after it is saved.
                    let verifier = scram::verifier(password.expose_secret());
                    source.store_generated(&password).map(|()| verifier)
                })
                .await?;
                set_verifier(client, name, &verifier).await.map_err(|e| {
                    RotateError::SavedNotSet {
                        tenant: tenant.name.to_string(),
                        user: name.to_owned(),
                        path: path.clone(),
                        message: e.to_string(),
                    }
                })?;
                Rotated::Generated { path: path.clone() }
            }
            PasswordSource::Env { var } => {
                set_verifier(
                    client,
                    name,
                    &reread(*user, scram::DEFAULT_ITERATIONS).await?,
                )
                .await?;
                Rotated::Env { var: var.clone() }
            }
            PasswordSource::File { path } => {
                set_verifier(
                    client,
                    name,
                    &reread(*user, scram::DEFAULT_ITERATIONS).await?,
                )
                .await?;
                Rotated::File { path: path.clone() }
            }
        };
        done(user, &rotated);
    }
    Ok(())
}

/// Rotates the password of `tenant`'s gateway login: a generated one is
/// replaced (new password saved first, then its verifier set), one from
/// `gateway_password_env` re-read and set; with the gateway's iteration
/// count.
/// Gateways pick it up on reload; their open connections stay open.
pub async fn rotate_gateway(
    client: &Client,
    fleet: &str,
    tenant: &Tenant,
) -> Result<Rotated, RotateError> {
    let gateway = &tenant.gateway;
    let name = gateway.name.as_str();
    let row = client
        .query_opt(
            "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1",
            &[&name],
        )
        .await
        .map_err(|e| Error::sql("looking up the gateway login", e))?;
    let ours = row
        .and_then(|r| r.get::<_, Option<String>>(0))
        .and_then(|c| Marker::parse(&c))
        .is_some_and(|m| {
            m.fleet == fleet && m.tenant == tenant.name.as_str() && m.kind == Kind::Gateway
        });
    if !ours {
        return Err(RotateError::NotReady {
            tenant: tenant.name.to_string(),
            problems: vec![(
                name.to_owned(),
                "is not this tenant's gateway login on the server yet (see `tenantry plan`)"
                    .to_owned(),
            )],
        });
    }
    let iterations = tenantry_layout::roles::GATEWAY_SCRAM_ITERATIONS;
    let path = match &gateway.password {
        PasswordSource::Generated { path } => path,
        // `gateway_password_env`: re-read and set.
        PasswordSource::Env { var } => {
            set_verifier(client, name, &reread(gateway, iterations).await?).await?;
            return Ok(Rotated::Env { var: var.clone() });
        }
        PasswordSource::File { path } => {
            set_verifier(client, name, &reread(gateway, iterations).await?).await?;
            return Ok(Rotated::File { path: path.clone() });
        }
    };
    let source = gateway.password.clone();
    let verifier = crate::blocking::run(move || {
        let password = PasswordSource::generate();
        let verifier = scram::verifier_iterations(
            password.expose_secret(),
            tenantry_layout::roles::GATEWAY_SCRAM_ITERATIONS,
        );
        source.store_generated(&password).map(|()| verifier)
    })
    .await?;
    set_verifier(client, name, &verifier)
        .await
        .map_err(|e| RotateError::SavedNotSet {
            tenant: tenant.name.to_string(),
            user: name.to_owned(),
            path: path.clone(),
            message: e.to_string(),
        })?;
    Ok(Rotated::Generated { path: path.clone() })
}

/// A fresh verifier of an env or file password, read now.
async fn reread<L>(login: &L, iterations: u32) -> Result<String, ManifestError>
where
    L: Login + Clone + Send + 'static,
{
    let login = login.clone();
    crate::blocking::run(move || {
        load(&login).map(|pw| scram::verifier_iterations(pw.expose_secret(), iterations))
    })
    .await
}

/// An env or file password, which must be readable now.
fn load(login: &dyn Login) -> Result<SecretString, ManifestError> {
    login.load_password()?.ok_or_else(|| ManifestError::Secret {
        user: Some(login.name().to_string()),
        origin: login.source().describe(),
        reason: "no password to read".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statement_quotes_the_name_and_the_verifier() {
        let v = scram::verifier("pw");
        let sql = set_password_sql("odd\"name", &v);
        assert_eq!(sql, format!("ALTER ROLE \"odd\"\"name\" PASSWORD '{v}'"));
        assert!(!sql.contains("'pw'"));
    }

    #[test]
    fn lines_never_show_a_password() {
        let r = Rotated::Generated {
            path: "/s/building_admin".into(),
        };
        assert_eq!(
            r.to_string(),
            "new generated password saved to /s/building_admin and set"
        );
        assert_eq!(
            Rotated::Env { var: "X".into() }.to_string(),
            "re-read from env X and set"
        );
    }
}
