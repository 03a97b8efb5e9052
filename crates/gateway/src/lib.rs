//! The tenantry gateway: resolves a request's tenant from its Host, checks the
//! caller's bearer token, and runs the store API on a connection pool that
//! belongs to that tenant and role alone.
//!
//! - [`resolve`]: Host (or a trusted `X-Tenant`) -> tenant, a pure index;
//! - [`snapshot`]: the configuration in force (tenants, tiers, users), swapped on reload;
//! - [`tokens`]: bearer tokens, stored hashed in each tenant's own database;
//! - [`pools`]: one pool per (tenant, role) under a global connection budget;
//! - [`limit`]: per-tenant request rate limits;
//! - [`api`]: the reference store API (customers, widgets, orders);
//! - [`error`]: JSON errors with stable codes;
//! - [`metrics`]: Prometheus text;
//! - [`server`]: the hyper service, admin listener, TLS, reload and shutdown.
#![forbid(unsafe_code)]

pub mod api;
pub mod error;
pub mod limit;
pub mod metrics;
pub mod pools;
pub mod resolve;
pub mod server;
pub mod snapshot;
pub mod tokens;
