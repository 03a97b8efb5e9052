//! The tenantry gateway: resolves a request's tenant from its Host, checks the
//! caller's bearer token, and runs the store API on a connection pool that
//! belongs to that tenant and role alone.
//!
//! - [`resolve`]: Host (or a trusted `X-Tenant`) -> tenant, a pure index;
//! - [`snapshot`]: the configuration in force (tenants, tiers, users), swapped on reload;
//! - [`tokens`]: bearer tokens, stored hashed in each tenant's own database;
//! - [`pools`]: one pool per (tenant, role) under a global connection budget;
//! - [`limit`]: request rate limits, per tenant and per client address;
//! - [`api`]: the reference store API (customers, widgets, orders);
//! - [`error`]: JSON errors with stable codes;
//! - [`metrics`]: Prometheus text;
//! - [`usage`]: requests counted per day, storage measured, quotas, the
//!   API writes queued for the audit trail;
//! - [`recent`]: each tenant's last hour, minute by minute;
//! - [`fleet`]: the fleet as the console and `/api/fleet` show it;
//! - [`console`]: the operators' page (HTML, CSS, a little JavaScript);
//! - [`server`]: the API's request handler, in the order that keeps
//!   strangers away from tenants' databases and budgets;
//! - [`admin`]: the admin listener's routes, the console's among them;
//! - [`listen`]: sockets, TLS, client timeouts and caps, graceful shutdown;
//! - [`reload`]: the configuration watched and swapped while serving;
//! - [`moves`]: tenant moves between servers, heard at once (`LISTEN`);
//! - `hold`: the requests held through a cutover, and the one more run of a
//!   request whose old copy closed under it.
#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod console;
pub mod error;
pub mod fleet;
mod hold;
pub mod limit;
pub mod listen;
pub mod metrics;
pub mod moves;
pub mod pools;
pub mod recent;
pub mod reload;
pub mod resolve;
pub mod server;
pub mod snapshot;
pub mod tokens;
pub mod usage;
