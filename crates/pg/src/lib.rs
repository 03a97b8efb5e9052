//! Everything tenantry does to a PostgreSQL cluster: read the catalog into an
//! `Observed` ([`introspect`]), carry out a plan ([`apply`]), run schema
//! migrations ([`migrate`]) across the fleet ([`fleet`]), move a tenant between servers ([`moves`]), serialise applies ([`lock`]), every server of a fleet at once ([`sessions`]) and back up before a
//! drop ([`backup`]), never opening more connections than the server has free ([`budget`]). Deciding what to do is `tenantry-plan`'s job, not ours.
#![forbid(unsafe_code)]

pub mod adopt;
pub mod apply;
pub mod audit;
pub mod backup;
mod blocking;
pub mod budget;
pub mod connect;
pub mod error;
pub mod fleet;
pub mod introspect;
pub mod lock;
pub mod migrate;
pub mod moves;
pub mod rotate;
pub mod servers;
pub mod session;
pub mod sessions;
pub mod tokens;
pub mod usage;

pub use connect::Admin;
pub use error::Error;
pub use migrate::Migrations;
