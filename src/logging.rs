//! The log on standard error: `TENANTRY_LOG` (tracing's env-filter syntax,
//! e.g. `debug` or `tenantry_gateway=trace`) picks what is shown, except
//! what could hold a secret, and colours only on a terminal.
//!
//! tokio-postgres logs every statement it prepares or runs, with its
//! parameters, at `debug` (through the `log` crate, which tracing-subscriber
//! bridges): `CREATE ROLE ... PASSWORD 'SCRAM-SHA-256$...'` from apply and
//! rotate, token hashes from the gateway. Those targets are capped at `info`
//! by a filter of its own, which no `TENANTRY_LOG` directive can widen.

use std::io::IsTerminal;

use tracing::Level;
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

/// What is shown when `TENANTRY_LOG` is unset or invalid.
const DEFAULT: &str = "warn,refinery_core=error,tenantry_gateway=info";

/// Targets whose `debug` and `trace` events carry SQL text or statement
/// parameters, and so may carry secrets.
const STATEMENT_LOGGERS: [&str; 1] = ["tokio_postgres"];

/// Whether an event of `target` at `level` may be written at all.
pub fn may_log(target: &str, level: &Level) -> bool {
    let statements = STATEMENT_LOGGERS.iter().any(|t| {
        target == *t
            || target
                .strip_prefix(t)
                .is_some_and(|rest| rest.starts_with("::"))
    });
    !statements || *level <= Level::INFO
}

/// Installs the subscriber (and the bridge from the `log` crate).
pub fn init() {
    let filter =
        EnvFilter::try_from_env("TENANTRY_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(filter)
        .with_filter(filter_fn(|meta| may_log(meta.target(), meta.level())));
    tracing_subscriber::registry().with(layer).init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_logs_stop_at_info_whatever_the_filter_says() {
        for target in [
            "tokio_postgres",
            "tokio_postgres::query",
            "tokio_postgres::prepare",
        ] {
            assert!(!may_log(target, &Level::DEBUG), "{target}");
            assert!(!may_log(target, &Level::TRACE), "{target}");
            assert!(may_log(target, &Level::INFO), "{target}");
            assert!(may_log(target, &Level::WARN), "{target}");
        }
        assert!(may_log("tenantry_pg::migrate", &Level::TRACE));
        assert!(may_log("tokio_postgres_rustls", &Level::DEBUG));
    }
}
