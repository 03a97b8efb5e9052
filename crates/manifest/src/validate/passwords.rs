//! Where passwords come from: `password_env` and `password_file` of users,
//! `gateway_password_env` of tenants, or (with neither) a generated password
//! under `[paths] secrets`; each checked as far as the file and the
//! environment allow (not with [`Secrets::Deferred`]: the gateway checks
//! when it loads a password). A gateway login's variable is its own and
//! holds a long random value.
//!
//! What does not live here: reading and generating passwords
//! (`password.rs`), the rules of a password file (`secret_file.rs`).

use toml::Spanned;

use super::{resolve, Context, Tenants};
use crate::error::Reporter;
use crate::secret_file::{self, Whose};
use crate::{Ident, PasswordSource, Secrets};

impl Tenants {
    /// Notes a password variable: a gateway login's shares it with no
    /// other login (the gateway login may act as every group of its
    /// tenant: a customer who knew its password would be an admin).
    pub(super) fn password_var(&mut self, r: &mut Reporter, var: &Spanned<String>, gateway: bool) {
        let name = var.get_ref();
        match self.password_vars.get(name) {
            Some((first, first_gateway)) if gateway || *first_gateway => {
                let at = r.location(first);
                r.error_help(
                    var.span(),
                    format!("environment variable {name} is already a password source at {at}"),
                    "a gateway_password_env must be a variable of its own: the gateway login may act as each of its tenant's groups",
                );
            }
            Some(_) => {}
            None => {
                self.password_vars
                    .insert(name.clone(), (var.span(), gateway));
            }
        }
    }

    /// The password source of a tenant's gateway login from
    /// `gateway_password_env`: a variable of its own, holding at least
    /// [`MIN_GATEWAY_PASSWORD`] characters (its verifier is a fast one,
    /// fit for random values only).
    pub(super) fn gateway_env_source(
        &mut self,
        r: &mut Reporter,
        cx: &Context,
        tenant: &str,
        var: Spanned<String>,
    ) -> Option<PasswordSource> {
        self.password_var(r, &var, true);
        let span = var.span();
        let source = env_source(
            r,
            cx,
            &format!("tenant `{tenant}`"),
            "gateway_password_env",
            var,
        )?;
        if let (Secrets::Required, PasswordSource::Env { var: name }) = (cx.passwords, &source) {
            let len = (cx.env)(name).map_or(0, |v| v.chars().count());
            if len < MIN_GATEWAY_PASSWORD {
                r.error_help(
                    span,
                    format!("tenant `{tenant}`: environment variable {name} (gateway_password_env) holds {len} characters; at least {MIN_GATEWAY_PASSWORD} are needed"),
                    "the gateway login's password is stored with a fast verifier, fit for a random value only: use e.g. `openssl rand -hex 24`",
                );
                return None;
            }
        }
        Some(source)
    }
}

pub(super) fn password(
    r: &mut Reporter,
    cx: &Context,
    user: &str,
    env: Option<Spanned<String>>,
    file: Option<Spanned<String>>,
) -> Option<PasswordSource> {
    match (env, file) {
        (Some(_), Some(file)) => {
            r.error_help(
                file.span(),
                format!("user `{user}`: both password_env and password_file are given"),
                "keep one of them (or neither, to have tenantry generate a password)",
            );
            None
        }
        (Some(var), None) => env_source(r, cx, &format!("user `{user}`"), "password_env", var),
        (None, Some(file)) => {
            let text = file.get_ref();
            if text.is_empty() {
                r.error_help(
                    file.span(),
                    format!("user `{user}`: password_file is empty"),
                    "give the path of a file holding the password",
                );
                return None;
            }
            let path = resolve(cx.base_dir, text);
            if cx.passwords == Secrets::Deferred {
                return Some(PasswordSource::File { path });
            }
            // Read to check, and dropped (zeroed) at once.
            match secret_file::read(&path, Whose::User) {
                Ok(_) => Some(PasswordSource::File { path }),
                Err(problem) => {
                    r.error_help(
                        file.span(),
                        format!(
                            "user `{user}`: password file {} {}",
                            path.display(),
                            problem.what()
                        ),
                        problem.help(&path, Whose::User),
                    );
                    None
                }
            }
        }
        (None, None) => {
            // An invalid username is reported elsewhere; never build a path from it.
            Ident::parse(user).ok().map(|_| PasswordSource::Generated {
                path: cx.secrets.join(user),
            })
        }
    }
}

/// The shortest password a `gateway_password_env` may hold.
const MIN_GATEWAY_PASSWORD: usize = 24;

/// A password from the environment variable `var` (given as `key` of
/// `who`): a valid name, and (unless the check is deferred) set to
/// something other than white space.
fn env_source(
    r: &mut Reporter,
    cx: &Context,
    who: &str,
    key: &str,
    var: Spanned<String>,
) -> Option<PasswordSource> {
    let name = var.get_ref();
    if name.is_empty() || name.contains(['=', '\0']) {
        r.error_help(
            var.span(),
            format!("{who}: invalid environment variable name {name:?}"),
            "give a variable name like \"BUILDING_ADMIN_PASSWORD\"",
        );
        return None;
    }
    if cx.passwords == Secrets::Deferred {
        return Some(PasswordSource::Env { var: name.clone() });
    }
    let what = match (cx.env)(name) {
        Some(v) if !v.trim().is_empty() => return Some(PasswordSource::Env { var: name.clone() }),
        Some(v) if v.is_empty() => "is empty",
        Some(_) => "holds only white space",
        None => "is not set",
    };
    r.error_help(
        var.span(),
        format!("{who}: environment variable {name} ({key}) {what}"),
        format!("set {name} to the password before running tenantry, or remove {key} to have a password generated"),
    );
    None
}
