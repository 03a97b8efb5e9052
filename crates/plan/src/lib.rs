//! Pure planning for tenantry: `(Desired, Observed) -> Plan`, the SQL each
//! change runs, and the plan rendered as text or JSON. No I/O at all: the
//! catalog is read and the plan applied by `tenantry-pg`. Names, quoting,
//! markers and grants come from `tenantry-layout`.
//!
//! - [`model`]: the desired and observed state as plain data;
//! - [`adopt`]: taking over a tenant another tool made;
//! - [`diff`]: the planner itself;
//! - [`fleet_plan`]: one plan over several servers;
//! - [`placement`]: which server each tenant lives on or goes to;
//! - [`moves`]: a tenant's move between servers, as plan shows it;
//! - `reach`: what the admin cannot change on its server (per major), as conflicts;
//! - [`plan`]: the plan's types;
//! - [`render`]: text and JSON output;
//! - [`statements`]: the SQL of each change;
//! - [`scram`]: SCRAM-SHA-256 verifiers, made and checked client-side.
#![forbid(unsafe_code)]

pub mod adopt;
pub mod diff;
pub mod fleet_plan;
pub mod model;
pub mod moves;
pub mod placement;
pub mod plan;
mod reach;
pub mod render;
pub mod scram;
pub mod statements;

pub use diff::plan;
pub use fleet_plan::FleetPlan;
pub use model::{Desired, DesiredTenant, DesiredUser, Observed};
pub use plan::{Action, Change, Diff, Plan};
