//! `tenants.toml` -> a validated [`Inventory`].
//!
//! This crate reads the inventory of a Tenantry fleet: the plans ([`Tier`]),
//! the tenants (one PostgreSQL database each, with group roles
//! `<db>_owner/_admin/_developer/_customer`) and their users. It does no
//! network I/O and needs no async runtime.
//!
//! Loading happens in two steps, as ripgrep does for its flags:
//!
//! 1. *raw*: serde structs mirroring the file, with `deny_unknown_fields`
//!    and [`toml::Spanned`] positions on everything validation may reject.
//!    A structure check runs first, so every unknown key, type error and
//!    missing key is reported in one run, not just the first serde meets;
//! 2. *validated*: domain types such as [`Ident`] that cannot hold an
//!    invalid value. Validation collects **every** problem as a
//!    [`Diagnostic`] (`tenants.toml:12:5: what\n  help: how to fix it`)
//!    before returning [`ManifestError::Invalid`].
//!
//! An empty file (zero bytes, or only white space and comments) is invalid.
//!
//! Passwords never leave [`SecretString`]: a [`User`]'s [`PasswordSource`]
//! says where the password lives (environment, file, or a file generated once
//! under `[paths] secrets`), and `Debug` output redacts the admin URL. A
//! password file must be a private regular file of at most
//! [`MAX_PASSWORD_FILE_BYTES`] holding one non-blank line (see
//! [`PasswordSource::load`]). [`Inventory::load`] requires every password
//! to be readable now; [`Inventory::load_with`] with [`Secrets::Deferred`]
//! leaves that to [`User::load_password`], so the gateway can serve a
//! tenant whose password cannot be read as unavailable.
//!
//! ```no_run
//! use tenantry_manifest::{Group, Inventory};
//!
//! let inv = Inventory::load("tenants.toml".as_ref())?;
//! for tenant in &inv.tenants {
//!     let tier = inv.tier(tenant);
//!     println!("{} ({}) owner {}", tenant.name, tier.name, tenant.role(Group::Owner).quoted());
//! }
//! # Ok::<(), tenantry_manifest::ManifestError>(())
//! ```
#![forbid(unsafe_code)]

mod duration;
mod error;
mod model;
mod password;
mod raw;
mod secret_file;
mod servers;
mod shape;
mod validate;

pub use secrecy::{ExposeSecret, SecretString};

pub use duration::{format_duration_ms, parse_duration_ms};
pub use error::{line_col, render, Diagnostic, ManifestError, Reporter};
pub use model::{
    GatewayLogin, Inventory, Login, Paths, Routing, Secrets, Server, ServerStatus, Status, Tenant,
    Tier, User, MAX_MANIFEST_BYTES,
};
pub use password::{
    create_private_dir, generate as generate_password, PasswordSource, GENERATED_PASSWORD_LEN,
};
pub use secret_file::MAX_PASSWORD_FILE_BYTES;
pub use servers::{admin_url_env, valid_server_name, DEFAULT_SERVER};
pub use tenantry_layout::roles::{LONGEST_ROLE_SUFFIX, RESERVED_ROLE_NAMES};
pub use tenantry_layout::{Group, Ident, MAX_IDENT_BYTES};
pub use validate::{
    ADMIN_URL_ENV, DEFAULT_BACKUPS_DIR, DEFAULT_FLEET, DEFAULT_SCHEMA_DIR, DEFAULT_SECRETS_DIR,
};

#[cfg(test)]
mod tests;

pub mod schema;
