//! Reaching a PostgreSQL server, shared by the provisioner, the gateway and
//! the test harness:
//!
//! - [`address`]: [`ServerAddress`], a connection URL parsed once (host,
//!   port, user, sslmode), and what derives from it: the target named in
//!   messages, the arguments of the client tools (`pg_dump`, `pg_restore`),
//!   the DSN applications get ([`Endpoint`]);
//! - [`tls`]: the rustls connector every connection uses.
//!
//! Which databases and roles exist on the server is not this crate's
//! business (`tenantry-layout` names them, `tenantry-pg` manages them).
#![forbid(unsafe_code)]

pub mod address;
pub mod tls;

pub use address::{percent_encode, AddressError, Endpoint, ServerAddress};
pub use tls::connector;
