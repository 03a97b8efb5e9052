//! What a tenant database contains, named in one place.
//!
//! Every name tenantry gives a role or a schema object, and every rule about
//! which role may do what, lives here; the planner, the PostgreSQL side, the
//! gateway and the binary ask this crate and never spell a name by hand:
//!
//! - [`ident`]: [`Ident`], a validated identifier, and the one function that
//!   quotes identifiers ([`quote`]) and the one that quotes literals
//!   ([`literal`]);
//! - [`roles`]: the tenant's [`Group`]s, their roles `<db>_<group>`
//!   ([`roles::group_role`]), the privileges each group holds, and the
//!   gateway's login `<db>_gateway` ([`roles::gateway_login`]);
//! - [`marker`]: the COMMENT that tells tenantry's databases and roles from
//!   others (the catalog is the state);
//! - [`moves`]: the names a move between servers uses, and its channel;
//! - [`history`]: refinery's migration history table;
//! - [`tokens`]: the gateway's token store (schema `tenantry`), its SQL and
//!   the state apply expects of it (of the whole schema);
//! - [`usage`]: the requests the gateway counted, per day (`tenantry.usage`);
//! - [`audit`]: the audit trail (`tenantry.audit`).
//!
//! This crate does no I/O: it returns names and SQL text. Running the SQL is
//! `tenantry-pg`'s job (apply, restore, token commands) and the gateway's
//! (token checks).
#![forbid(unsafe_code)]

pub mod audit;
pub mod history;
pub mod ident;
pub mod marker;
pub mod moves;
pub mod roles;
pub mod tokens;
pub mod usage;

pub use ident::{idents, literal, quote, Ident, MAX_IDENT_BYTES};
pub use marker::{Kind, Marker, Move};
pub use roles::{gateway_login, group_role, Group};
