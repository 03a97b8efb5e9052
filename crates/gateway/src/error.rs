//! [`ApiError`]: the one error type the gateway answers clients with, as JSON
//! `{"error": {"code": "...", "message": "..."}}` with a stable `code`, plus
//! the mapping of Postgres errors onto it ([`ApiError::from_db`]).
//!
//! What does not live here: turning an error into an HTTP response (headers,
//! `Retry-After`) is the server's job; it reads [`ApiError::status`],
//! [`ApiError::retry_after`] and [`ApiError::body`].

use hyper::StatusCode;
use tokio_postgres::error::SqlState;

/// An error answered to the client as JSON `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable, machine-readable: `not_found`, `invalid_field`, ...
    pub code: &'static str,
    /// For humans; never holds SQL or a server's internal message.
    pub message: String,
    /// seconds, sent as Retry-After
    pub retry_after: Option<u64>,
    /// The tenant's database was not there for the request: no connection
    /// could be had, or the connection went away during it (closed, ended
    /// by the server, its login refused), as when a move's cutover closes
    /// the old copy. The server runs a request that had run none of its
    /// statements, or only read, once more if the tenant turns out to live
    /// elsewhere now. Never sent to the client.
    pub gone: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            gone: false,
        }
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 404 `unknown_tenant`: the Host (or `X-Tenant`) names no tenant.
    pub fn unknown_tenant() -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_tenant",
            "no tenant is served at this host",
        )
    }

    /// 403 `tenant_suspended`.
    pub fn suspended() -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "tenant_suspended",
            "this tenant is suspended",
        )
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403 `permission_denied`.
    pub fn permission_denied(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "permission_denied", message)
    }

    /// 400 `bad_request` (e.g. a body that is not JSON).
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 422 `invalid_field`; the message starts with the field: `"price: must be >= 0"`.
    pub fn invalid(field: &str, message: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("{field}: {message}"),
        )
    }

    /// 409 `conflict`.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 429 `rate_limited`, with `Retry-After`.
    pub fn rate_limited(retry_after_secs: u64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after_secs),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests for this tenant; retry later",
            )
        }
    }

    /// 403 `quota_exceeded`: the tenant is past a quota of its plan
    /// (`message` names it and the figures); reads still work.
    pub fn quota_exceeded(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "quota_exceeded", message)
    }

    /// 503 `unavailable`, with `Retry-After`.
    pub fn unavailable(message: impl Into<String>, retry_after_secs: u64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after_secs),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }

    /// 429 `rate_limited` for a client address sending requests without a
    /// valid token.
    pub fn rate_limited_unauthenticated(retry_after_secs: u64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after_secs),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests without a valid token from this address; retry later",
            )
        }
    }

    /// 503 `login_unavailable`: the gateway has no usable credentials for
    /// this tenant (a password that cannot be read, a login the database
    /// refused). The details are logged, never sent.
    pub fn login_unavailable() -> ApiError {
        ApiError {
            retry_after: Some(30),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "login_unavailable",
                "the gateway cannot log in to this tenant's database; the operators have been told in the log",
            )
        }
    }

    /// 503 `tenant_moving`, with `Retry-After: 1`: the tenant is being
    /// moved to another server and its cutover outlasted the time a
    /// request waits for it (the checkout timeout).
    pub fn tenant_moving() -> ApiError {
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "tenant_moving",
                "this tenant is being moved to another server; retry in a moment",
            )
        }
    }

    /// The same error, marked [`gone`](ApiError::gone).
    pub fn with_gone(self) -> ApiError {
        ApiError { gone: true, ..self }
    }

    /// 408 `timeout`: the client was too slow sending its request.
    pub fn timeout(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::REQUEST_TIMEOUT, "timeout", message)
    }

    /// 413 `too_large`: a body over `max` bytes.
    pub fn too_large(max: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is larger than {max} bytes"),
        )
    }

    /// 415 `unsupported_media_type`: a body that is not declared JSON.
    pub fn unsupported_media_type() -> ApiError {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be JSON in UTF-8, not encoded, sent with Content-Type: application/json",
        )
    }

    /// 405 `method_not_allowed`.
    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this path",
        )
    }

    /// 503 `stale_statement`: a prepared statement no longer matches the
    /// tables (a migration changed them) or no longer exists. The statement
    /// failed before doing anything, so the server drops the connection's
    /// statement cache and runs the request again once; a client sees this
    /// only if the retry went stale too (another migration in between).
    pub fn stale_statement() -> ApiError {
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "stale_statement",
                "the database schema changed during the request; retry",
            )
        }
    }

    /// Whether this is [`ApiError::stale_statement`].
    pub fn is_stale_statement(&self) -> bool {
        self.code == "stale_statement"
    }

    /// 500 `internal`. Callers log the details; `message` goes to the client,
    /// so keep it generic.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// Maps a Postgres error:
    ///
    /// | SQLSTATE | answer |
    /// |---|---|
    /// | 42501 insufficient_privilege | 403 `permission_denied` |
    /// | 23505 unique_violation | 409 `conflict`, naming the constraint |
    /// | 23503 foreign_key_violation | 422 `invalid_field`, the column taken from the constraint name (`orders_customer_id_fkey` -> `customer_id`) |
    /// | 23514 check, 23502 not null, 22P02 bad text, 22003 out of range, 22001 too long, 22021 bad character | 422 `invalid_field` |
    /// | 57014 query_canceled (statement timeout) | 503 `unavailable` "statement timed out", retry after 1 s |
    /// | 40001 serialization failure, 40P01 deadlock | 503 `unavailable`, retry after 1 s |
    /// | 53300 too many connections, 57P01..57P03 shutdown (a session ended by `pg_terminate_backend` too), class 08, 28000 a login no longer allowed | 503 `unavailable`, retry after 1 s ([`gone`](ApiError::gone) but for 53300) |
    /// | 0A000 "cached plan must not change result type", 26000 no such prepared statement | 503 [`stale_statement`](ApiError::stale_statement) (the server retries once) |
    /// | a closed or broken connection (no database error) | 503 `unavailable`, retry after 1 s, [`gone`](ApiError::gone) |
    /// | anything else | 500 `internal`, logged with `tracing::error!`; the client sees no SQL and no server message |
    pub fn from_db(e: &tokio_postgres::Error) -> ApiError {
        let Some(db) = e.as_db_error() else {
            return if connection_lost(e) {
                tracing::warn!(error = %e, "database connection lost");
                ApiError::unavailable("the database connection was lost; retry", 1).with_gone()
            } else {
                tracing::error!(error = %e, "database client error");
                ApiError::internal("internal error")
            };
        };
        let code = db.code();
        if is_stale(db) {
            tracing::debug!(code = code.code(), "stale prepared statement");
            return ApiError::stale_statement();
        }
        let field = || field_of(db.table(), db.column(), db.constraint());
        if *code == SqlState::INSUFFICIENT_PRIVILEGE {
            ApiError::permission_denied("your role may not do this")
        } else if *code == SqlState::UNIQUE_VIOLATION {
            match db.constraint() {
                Some(c) => ApiError::conflict(format!(
                    "a row with this value already exists (constraint {c})"
                )),
                None => ApiError::conflict("a row with this value already exists"),
            }
        } else if *code == SqlState::FOREIGN_KEY_VIOLATION {
            // Postgres reports the referencing table for both directions
            // (inserting a dangling reference, deleting a referenced row);
            // callers that delete map this code to a conflict themselves.
            let f = field().unwrap_or_else(|| "body".into());
            ApiError::invalid(&f, "refers to a row that does not exist")
        } else if *code == SqlState::CHECK_VIOLATION {
            let f = field().unwrap_or_else(|| "body".into());
            ApiError::invalid(&f, "violates a check constraint")
        } else if *code == SqlState::NOT_NULL_VIOLATION {
            let f = field().unwrap_or_else(|| "body".into());
            ApiError::invalid(&f, "is required")
        } else if *code == SqlState::INVALID_TEXT_REPRESENTATION {
            ApiError::invalid("body", "a value has an invalid format")
        } else if *code == SqlState::NUMERIC_VALUE_OUT_OF_RANGE {
            ApiError::invalid("body", "a number is out of range")
        } else if *code == SqlState::STRING_DATA_RIGHT_TRUNCATION {
            ApiError::invalid("body", "a value is too long")
        } else if *code == SqlState::CHARACTER_NOT_IN_REPERTOIRE {
            ApiError::invalid(
                "body",
                "a value holds a character the database cannot store",
            )
        } else if *code == SqlState::QUERY_CANCELED {
            ApiError::unavailable("statement timed out", 1)
        } else if *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
        {
            ApiError::unavailable("the request conflicted with another one; retry", 1)
        } else if *code == SqlState::TOO_MANY_CONNECTIONS {
            tracing::warn!(code = code.code(), "database unavailable: {}", db.message());
            ApiError::unavailable("the database is unavailable; retry", 1)
        } else if *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            || code.code().starts_with("08")
        {
            tracing::warn!(code = code.code(), "database unavailable: {}", db.message());
            ApiError::unavailable("the database is unavailable; retry", 1).with_gone()
        } else {
            tracing::error!(
                code = code.code(),
                table = db.table(),
                constraint = db.constraint(),
                "database error: {}",
                db.message()
            );
            ApiError::internal("internal error")
        }
    }

    /// The JSON body.
    pub fn body(&self) -> String {
        serde_json::json!({
            "error": { "code": self.code, "message": self.message }
        })
        .to_string()
    }
}

/// A prepared statement that DDL made unusable: PostgreSQL re-plans it on its
/// own unless the result columns changed (0A000, raised by
/// `RevalidateCachedQuery`; the routine name does not depend on
/// `lc_messages`, the message does), or a statement the session lost (26000).
/// Either way the statement failed before it did anything.
fn is_stale(db: &tokio_postgres::error::DbError) -> bool {
    let code = db.code();
    (*code == SqlState::FEATURE_NOT_SUPPORTED
        && (db.routine() == Some("RevalidateCachedQuery")
            || db
                .message()
                .contains("cached plan must not change result type")))
        || *code == SqlState::INVALID_SQL_STATEMENT_NAME
}

/// A client-side error meaning the connection is gone (closed, I/O error,
/// could not connect, timed out), as opposed to a bug such as a type mismatch.
fn connection_lost(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    // tokio-postgres keeps its error kinds private; their Display is stable.
    let text = e.to_string();
    [
        "error communicating with the server",
        "error connecting to server",
        "timeout waiting for server",
    ]
    .iter()
    .any(|p| text.starts_with(p))
}

/// The column a constraint violation is about: the server's column if it
/// sent one, else the constraint name with the table prefix and the
/// `_fkey` / `_check` / `_not_null` suffix removed (`orders_customer_id_fkey`
/// on table `orders` -> `customer_id`).
fn field_of(table: Option<&str>, column: Option<&str>, constraint: Option<&str>) -> Option<String> {
    if let Some(c) = column {
        return Some(c.to_owned());
    }
    // Without the table we cannot tell where its name ends.
    let rest = constraint?.strip_prefix(table?)?.strip_prefix('_')?;
    let col = ["_fkey", "_check", "_not_null"]
        .iter()
        .find_map(|s| rest.strip_suffix(s))?;
    (!col.is_empty()).then(|| col.to_owned())
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl From<tokio_postgres::Error> for ApiError {
    /// Same as [`ApiError::from_db`], so handlers can use `?`.
    fn from(e: tokio_postgres::Error) -> ApiError {
        ApiError::from_db(&e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> serde_json::Value {
        serde_json::from_str(body).unwrap()
    }

    #[test]
    fn body_is_the_documented_json() {
        let e = ApiError::invalid("price", "must be >= 0");
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            parse(&e.body()),
            serde_json::json!({"error": {"code": "invalid_field", "message": "price: must be >= 0"}})
        );
        // Quotes and control characters stay valid JSON.
        let e = ApiError::bad_request("bad \"json\"\n");
        assert_eq!(parse(&e.body())["error"]["message"], "bad \"json\"\n");
    }

    #[test]
    fn constructors_have_stable_codes() {
        let cases = [
            (ApiError::not_found("x"), 404, "not_found"),
            (ApiError::unknown_tenant(), 404, "unknown_tenant"),
            (ApiError::suspended(), 403, "tenant_suspended"),
            (ApiError::unauthorized("x"), 401, "unauthorized"),
            (ApiError::permission_denied("x"), 403, "permission_denied"),
            (ApiError::bad_request("x"), 400, "bad_request"),
            (ApiError::conflict("x"), 409, "conflict"),
            (ApiError::rate_limited(2), 429, "rate_limited"),
            (ApiError::unavailable("x", 1), 503, "unavailable"),
            (ApiError::method_not_allowed(), 405, "method_not_allowed"),
            (ApiError::internal("x"), 500, "internal"),
            (ApiError::stale_statement(), 503, "stale_statement"),
            (ApiError::login_unavailable(), 503, "login_unavailable"),
            (ApiError::tenant_moving(), 503, "tenant_moving"),
            (
                ApiError::unsupported_media_type(),
                415,
                "unsupported_media_type",
            ),
            (ApiError::timeout("x"), 408, "timeout"),
            (ApiError::too_large(1), 413, "too_large"),
            (
                ApiError::rate_limited_unauthenticated(1),
                429,
                "rate_limited",
            ),
        ];
        for (e, status, code) in cases {
            assert_eq!((e.status.as_u16(), e.code), (status, code), "{e}");
        }
        assert_eq!(ApiError::rate_limited(2).retry_after, Some(2));
        assert_eq!(ApiError::unavailable("x", 1).retry_after, Some(1));
        assert_eq!(ApiError::tenant_moving().retry_after, Some(1));
        assert!(!ApiError::tenant_moving().gone);
        assert!(ApiError::unavailable("x", 1).with_gone().gone);
        assert_eq!(ApiError::conflict("x").retry_after, None);
        assert_eq!(
            ApiError::conflict("taken").to_string(),
            "409 conflict: taken"
        );
    }

    #[test]
    fn field_from_constraint_names() {
        let f = |t, c, k| field_of(t, c, k);
        assert_eq!(
            f(Some("orders"), None, Some("orders_customer_id_fkey")).as_deref(),
            Some("customer_id")
        );
        assert_eq!(
            f(Some("widgets"), None, Some("widgets_price_check")).as_deref(),
            Some("price")
        );
        assert_eq!(
            f(Some("orders"), Some("quantity"), Some("whatever")).as_deref(),
            Some("quantity")
        );
        // A constraint named by hand, or no table: no guess.
        assert_eq!(f(Some("orders"), None, Some("fk_customer")), None);
        assert_eq!(f(None, None, Some("orders_customer_id_fkey")), None);
        assert_eq!(f(Some("orders"), None, None), None);
    }
}
