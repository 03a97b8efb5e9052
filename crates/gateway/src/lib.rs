//! The tenantry gateway: resolves a request's tenant from its Host, checks the
//! caller's bearer token, and runs the store API on a connection pool that
//! belongs to that tenant and role alone.
#![forbid(unsafe_code)]
