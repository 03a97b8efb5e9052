//! The reference store API (customers, widgets, orders) over `/api`, run on
//! one pooled connection that already belongs to the caller's tenant and role.
//!
//! - routing of paths and methods ([`handle`], [`is_static`]);
//! - validation of paths, query strings and JSON bodies, all before any query;
//! - the SQL, every statement parameterized and prepared through the pool's
//!   statement cache (dropped and the request retried once when a migration
//!   made a cached statement stale).
//!
//! What does not live here: authentication, picking the tenant or the pool,
//! HTTP framing. Nor authorization: the database enforces the tiers (a
//! customer's `INSERT` fails with SQLSTATE 42501 and is answered 403 by
//! [`ApiError::from_db`]); the gateway does not re-implement them.
//!
//! JSON field names are the V1 column names; `price` and `amount` are cents;
//! timestamps are RFC 3339 strings in UTC with microseconds
//! (`2024-05-01T12:00:00.000000Z`). Lists are JSON arrays ordered by `id`,
//! paged with `?limit` (1..=500, default 50; larger values are clamped to 500)
//! and `?offset` (>= 0, default 0).
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/tenant` | `{"name", "display_name", "plan"}`, no query |
//! | `GET /api/audit?limit&offset&since` | the tenant's audit trail, newest first (admin tokens; others 403) |
//! | `GET /api/customers`, `/api/widgets`, `/api/orders` | 200, array |
//! | `GET /api/{customers,widgets,orders}/{id}` | 200, or 404 `not_found` |
//! | `POST /api/customers {"first_name", "last_name", "email"}` | 201 |
//! | `POST /api/widgets {"name", "description"?, "inventory_level"?, "price"}` | 201 |
//! | `PUT /api/widgets/{id}` (any of the widget fields, at least one) | 200, or 404 |
//! | `DELETE /api/widgets/{id}` | 204, 404, or 409 if orders refer to it |
//! | `POST /api/orders {"customer_id", "widget_id", "quantity"}` | 201; 422 `invalid_field` naming `customer_id` / `widget_id` if that row does not exist; 409 `conflict` "not enough inventory" |
//!
//! Errors: a body that is not JSON is 400 `bad_request`; a body that is not
//! an object, an unknown field, a missing required field, a wrong type, a
//! negative number, a non-positive quantity or id, a string out of bounds is
//! 422 `invalid_field` with the message starting with the field's name. An id
//! in a path that is not a positive integer is 404, an unknown path 404, a
//! known path with another method 405.

use hyper::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};
use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

use crate::error::ApiError;

/// What `GET /api/tenant` answers, from the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantInfo {
    pub name: String,
    pub display_name: Option<String>,
    pub plan: String,
}

/// The parts of an HTTP request the API looks at.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub method: &'a Method,
    /// The path without the query string: `/api/widgets/7`.
    pub path: &'a str,
    /// The query string without `?`.
    pub query: Option<&'a str>,
    pub body: &'a [u8],
}

/// A successful answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    pub status: StatusCode,
    /// None for 204.
    pub body: Option<Value>,
}

impl Response {
    fn ok(body: Value) -> Response {
        Response {
            status: StatusCode::OK,
            body: Some(body),
        }
    }

    fn created(body: Value) -> Response {
        Response {
            status: StatusCode::CREATED,
            body: Some(body),
        }
    }

    fn no_content() -> Response {
        Response {
            status: StatusCode::NO_CONTENT,
            body: None,
        }
    }
}

/// Whether the route needs no database (GET /api/tenant) — lets the server
/// skip checking out a connection.
pub fn is_static(req: &Request<'_>) -> bool {
    matches!(route(req.method, req.path), Ok(Op::Tenant))
}

/// Answers one API request on `client`. Paths, query strings and bodies are
/// validated before the first query; database errors go through
/// [`ApiError::from_db`].
///
/// A migration that changed a table under the connection's cached statements
/// makes them fail with [`ApiError::stale_statement`] before they do anything
/// (and a transaction is rolled back whole), so the request runs once more
/// on freshly prepared statements: no caller sees a migration.
pub async fn handle(
    req: &Request<'_>,
    tenant: &TenantInfo,
    client: &mut deadpool_postgres::ClientWrapper,
) -> Result<Response, ApiError> {
    match handle_once(req, tenant, client).await {
        Err(e) if e.is_stale_statement() => {
            tracing::debug!(tenant = %tenant.name, "schema changed: statement cache dropped, request retried");
            client.statement_cache.clear();
            handle_once(req, tenant, client).await
        }
        other => other,
    }
}

async fn handle_once(
    req: &Request<'_>,
    tenant: &TenantInfo,
    client: &mut deadpool_postgres::ClientWrapper,
) -> Result<Response, ApiError> {
    match route(req.method, req.path)? {
        Op::Tenant => Ok(Response::ok(json!({
            "name": tenant.name,
            "display_name": tenant.display_name,
            "plan": tenant.plan,
        }))),
        Op::List(kind) => {
            let page = Page::parse(req.query)?;
            let stmt = client.prepare_cached(kind.list_sql()).await?;
            let rows = client.query(&stmt, &[&page.limit, &page.offset]).await?;
            let items = rows
                .iter()
                .map(|r| kind.to_json(r))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Response::ok(Value::Array(items)))
        }
        Op::Audit => {
            let page = Page::parse(req.query)?;
            let since = since(req.query)?;
            let stmt = client.prepare_cached(tenantry_layout::audit::LIST).await?;
            let rows = client
                .query(&stmt, &[&since, &page.limit, &page.offset])
                .await?;
            let entries: Vec<Value> = rows
                .iter()
                .map(|r| {
                    let detail: String = r.get(6);
                    json!({
                        "id": r.get::<_, i64>(0),
                        "at": r.get::<_, String>(1),
                        "action": r.get::<_, String>(2),
                        "actor": r.get::<_, String>(3),
                        "os_user": r.get::<_, String>(4),
                        "host": r.get::<_, String>(5),
                        "detail": serde_json::from_str::<Value>(&detail).unwrap_or(Value::Null),
                    })
                })
                .collect();
            Ok(Response::ok(Value::Array(entries)))
        }
        Op::Get(kind, id) => {
            let stmt = client.prepare_cached(kind.get_sql()).await?;
            match client.query_opt(&stmt, &[&id]).await? {
                Some(row) => Ok(Response::ok(kind.to_json(&row)?)),
                None => Err(kind.not_found(id)),
            }
        }
        Op::Create(Kind::Customer) => {
            let c = NewCustomer::from_body(req.body)?;
            let stmt = client.prepare_cached(sql::INSERT_CUSTOMER).await?;
            let row = client
                .query_one(&stmt, &[&c.first_name, &c.last_name, &c.email])
                .await?;
            Ok(Response::created(customer_json(&row)?))
        }
        Op::Create(Kind::Widget) => {
            let w = NewWidget::from_body(req.body)?;
            let stmt = client.prepare_cached(sql::INSERT_WIDGET).await?;
            let row = client
                .query_one(
                    &stmt,
                    &[&w.name, &w.description, &w.inventory_level, &w.price],
                )
                .await?;
            Ok(Response::created(widget_json(&row)?))
        }
        Op::Create(Kind::Order) => {
            let o = NewOrder::from_body(req.body)?;
            create_order(client, &o).await
        }
        Op::UpdateWidget(id) => {
            let w = WidgetChanges::from_body(req.body)?;
            let stmt = client.prepare_cached(sql::UPDATE_WIDGET).await?;
            let row = client
                .query_opt(
                    &stmt,
                    &[&id, &w.name, &w.description, &w.inventory_level, &w.price],
                )
                .await?;
            match row {
                Some(row) => Ok(Response::ok(widget_json(&row)?)),
                None => Err(Kind::Widget.not_found(id)),
            }
        }
        Op::DeleteWidget(id) => {
            let stmt = client.prepare_cached(sql::DELETE_WIDGET).await?;
            match client.execute(&stmt, &[&id]).await {
                Ok(0) => Err(Kind::Widget.not_found(id)),
                Ok(_) => Ok(Response::no_content()),
                // Here a foreign key violation can only mean orders refer to it.
                Err(e) if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) => Err(
                    ApiError::conflict(format!("widget {id} has orders; it cannot be deleted")),
                ),
                Err(e) => Err(ApiError::from_db(&e)),
            }
        }
    }
}

/// One transaction: check the customer, lock the widget row, check and
/// decrement its inventory, insert the order at `price * quantity`.
async fn create_order(
    client: &mut deadpool_postgres::ClientWrapper,
    o: &NewOrder,
) -> Result<Response, ApiError> {
    let tx = client.transaction().await?;
    let stmt = tx.prepare_cached(sql::CUSTOMER_EXISTS).await?;
    if tx.query_opt(&stmt, &[&o.customer_id]).await?.is_none() {
        tx.rollback().await?;
        return Err(ApiError::invalid(
            "customer_id",
            format_args!("no customer {}", o.customer_id),
        ));
    }
    let stmt = tx.prepare_cached(sql::LOCK_WIDGET).await?;
    let Some(widget) = tx.query_opt(&stmt, &[&o.widget_id]).await? else {
        tx.rollback().await?;
        return Err(ApiError::invalid(
            "widget_id",
            format_args!("no widget {}", o.widget_id),
        ));
    };
    let price: i64 = widget.try_get("price")?;
    let inventory: i32 = widget.try_get("inventory_level")?;
    if inventory < o.quantity {
        tx.rollback().await?;
        return Err(ApiError::conflict(format!(
            "not enough inventory: widget {} has {inventory}, the order asks for {}",
            o.widget_id, o.quantity
        )));
    }
    let Some(amount) = price.checked_mul(i64::from(o.quantity)) else {
        tx.rollback().await?;
        return Err(ApiError::invalid("quantity", "the amount is too large"));
    };
    let stmt = tx.prepare_cached(sql::TAKE_INVENTORY).await?;
    tx.execute(&stmt, &[&o.widget_id, &o.quantity]).await?;
    let stmt = tx.prepare_cached(sql::INSERT_ORDER).await?;
    let row = tx
        .query_one(&stmt, &[&o.customer_id, &o.widget_id, &o.quantity, &amount])
        .await?;
    let body = order_json(&row)?;
    tx.commit().await?;
    Ok(Response::created(body))
}

// ---------------------------------------------------------------- routing

/// The collections of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Customer,
    Widget,
    Order,
}

impl Kind {
    fn from_segment(s: &str) -> Option<Kind> {
        match s {
            "customers" => Some(Kind::Customer),
            "widgets" => Some(Kind::Widget),
            "orders" => Some(Kind::Order),
            _ => None,
        }
    }

    fn singular(self) -> &'static str {
        match self {
            Kind::Customer => "customer",
            Kind::Widget => "widget",
            Kind::Order => "order",
        }
    }

    fn not_found(self, id: i64) -> ApiError {
        ApiError::not_found(format!("no {} {id}", self.singular()))
    }

    fn list_sql(self) -> &'static str {
        match self {
            Kind::Customer => sql::LIST_CUSTOMERS,
            Kind::Widget => sql::LIST_WIDGETS,
            Kind::Order => sql::LIST_ORDERS,
        }
    }

    fn get_sql(self) -> &'static str {
        match self {
            Kind::Customer => sql::GET_CUSTOMER,
            Kind::Widget => sql::GET_WIDGET,
            Kind::Order => sql::GET_ORDER,
        }
    }

    fn to_json(self, row: &Row) -> Result<Value, ApiError> {
        match self {
            Kind::Customer => customer_json(row),
            Kind::Widget => widget_json(row),
            Kind::Order => order_json(row),
        }
    }
}

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Tenant,
    List(Kind),
    Get(Kind, i64),
    Create(Kind),
    UpdateWidget(i64),
    DeleteWidget(i64),
    /// The tenant's audit trail (its admin group alone may read it).
    Audit,
}

/// Path and method -> operation: 404 for an unknown path or a bad id, 405
/// for a known path with another method.
fn route(method: &Method, path: &str) -> Result<Op, ApiError> {
    let not_found = || ApiError::not_found(format!("no route for {path}"));
    let rest = path.strip_prefix("/api/").ok_or_else(not_found)?;
    let segments: Vec<&str> = rest.split('/').collect();
    let op = match segments.as_slice() {
        ["tenant"] => (*method == Method::GET).then_some(Op::Tenant),
        ["audit"] => (*method == Method::GET).then_some(Op::Audit),
        [collection] => {
            let kind = Kind::from_segment(collection).ok_or_else(not_found)?;
            match *method {
                Method::GET => Some(Op::List(kind)),
                Method::POST => Some(Op::Create(kind)),
                _ => None,
            }
        }
        [collection, id] => {
            let kind = Kind::from_segment(collection).ok_or_else(not_found)?;
            let id = parse_id(id)
                .ok_or_else(|| ApiError::not_found(format!("no {} {id:?}", kind.singular())))?;
            match (kind, method) {
                (_, &Method::GET) => Some(Op::Get(kind, id)),
                (Kind::Widget, &Method::PUT) => Some(Op::UpdateWidget(id)),
                (Kind::Widget, &Method::DELETE) => Some(Op::DeleteWidget(id)),
                _ => None,
            }
        }
        _ => return Err(not_found()),
    };
    op.ok_or_else(ApiError::method_not_allowed)
}

/// A positive `i64` written in ASCII digits only (no sign, no spaces).
fn parse_id(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i64>().ok().filter(|&id| id > 0)
}

/// `?limit&offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Page {
    limit: i64,
    offset: i64,
}

impl Page {
    const DEFAULT_LIMIT: i64 = 50;
    const MAX_LIMIT: i64 = 500;

    /// Other parameters are ignored; when one is repeated the last wins.
    fn parse(query: Option<&str>) -> Result<Page, ApiError> {
        let mut page = Page {
            limit: Page::DEFAULT_LIMIT,
            offset: 0,
        };
        for pair in query.unwrap_or("").split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "limit" => {
                    let n = parse_count(value)
                        .filter(|&n| n >= 1)
                        .ok_or_else(|| ApiError::invalid("limit", "must be an integer >= 1"))?;
                    page.limit = n.min(Page::MAX_LIMIT);
                }
                "offset" => {
                    page.offset = parse_count(value)
                        .ok_or_else(|| ApiError::invalid("offset", "must be an integer >= 0"))?;
                }
                _ => {}
            }
        }
        Ok(page)
    }
}

/// `?since=<RFC 3339 time>` of `GET /api/audit`, checked here; the
/// database gets the time as parsed, written out again in UTC (never the
/// text as sent, which PostgreSQL may read differently or refuse).
fn since(query: Option<&str>) -> Result<Option<String>, ApiError> {
    let mut since = None;
    for pair in query.unwrap_or("").split('&') {
        if let Some(value) = pair.strip_prefix("since=") {
            let value = value
                .replace("%3A", ":")
                .replace("%3a", ":")
                .replace("%2B", "+");
            let time = humantime::parse_rfc3339_weak(&value).map_err(|_| {
                ApiError::invalid(
                    "since",
                    "must be an RFC 3339 time, e.g. 2026-12-01T00:00:00Z",
                )
            })?;
            since = Some(humantime::format_rfc3339_micros(time).to_string());
        }
    }
    Ok(since)
}

/// A non-negative integer in ASCII digits; huge values saturate.
fn parse_count(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse::<i64>().unwrap_or(i64::MAX))
}

// ---------------------------------------------------------------- bodies

/// A JSON object body, its fields taken one by one so that every error can
/// name its field (serde_json's type errors do not say which field).
/// Fields not in `allowed` are rejected up front, as `deny_unknown_fields`.
struct Body(Map<String, Value>);

impl Body {
    fn parse(bytes: &[u8], allowed: &[&str]) -> Result<Body, ApiError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_request("a JSON object body is required"));
        }
        let value = serde_json::from_slice::<Strict>(bytes)
            .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?
            .0;
        let Value::Object(map) = value else {
            return Err(ApiError::invalid("body", "must be a JSON object"));
        };
        if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ApiError::invalid(
                unknown,
                format_args!("unknown field; expected one of {}", allowed.join(", ")),
            ));
        }
        Ok(Body(map))
    }

    /// The field converted to `T`; None if absent or, when `null_ok`, null.
    fn optional<T: DeserializeOwned>(
        &mut self,
        field: &str,
        what: &str,
        null_ok: bool,
    ) -> Result<Option<T>, ApiError> {
        match self.0.remove(field) {
            None => Ok(None),
            Some(Value::Null) if null_ok => Ok(None),
            Some(Value::Null) => Err(ApiError::invalid(
                field,
                format_args!("must be {what}, not null"),
            )),
            Some(v) => serde_json::from_value(v)
                .map(Some)
                .map_err(|_| ApiError::invalid(field, format_args!("must be {what}"))),
        }
    }

    fn required<T: DeserializeOwned>(&mut self, field: &str, what: &str) -> Result<T, ApiError> {
        self.optional(field, what, true)?
            .ok_or_else(|| ApiError::invalid(field, "is required"))
    }
}

/// A JSON value whose objects may not repeat a key: `{"price": -1,
/// "price": 5}` could be read as -1 by one parser (a validating proxy, an
/// audit log) and as 5 by another, so it is refused rather than guessed.
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Strict, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format_args!(
                    "the key `{key}` appears more than once"
                )));
            }
            let Strict(value) = map.next_value()?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// 1 to 255 characters (as the schema's CHECKs), no NUL (Postgres text
/// cannot hold one).
fn check_name(field: &str, s: &str) -> Result<(), ApiError> {
    let n = s.chars().count();
    if !(1..=255).contains(&n) {
        return Err(ApiError::invalid(field, "must be 1 to 255 characters"));
    }
    check_text(field, s)
}

fn check_text(field: &str, s: &str) -> Result<(), ApiError> {
    if s.contains('\0') {
        return Err(ApiError::invalid(field, "must not contain NUL characters"));
    }
    Ok(())
}

fn check_non_negative<T: PartialOrd + Default>(field: &str, n: T) -> Result<T, ApiError> {
    if n < T::default() {
        return Err(ApiError::invalid(field, "must not be negative"));
    }
    Ok(n)
}

const STRING: &str = "a string";
const INT: &str = "an integer";
const INT32: &str = "an integer from -2147483648 to 2147483647";

#[derive(Debug, PartialEq, Eq)]
struct NewCustomer {
    first_name: String,
    last_name: String,
    email: String,
}

impl NewCustomer {
    fn from_body(bytes: &[u8]) -> Result<NewCustomer, ApiError> {
        let mut b = Body::parse(bytes, &["first_name", "last_name", "email"])?;
        let first_name: String = b.required("first_name", STRING)?;
        check_name("first_name", &first_name)?;
        let last_name: String = b.required("last_name", STRING)?;
        check_name("last_name", &last_name)?;
        let email: String = b.required("email", STRING)?;
        check_text("email", &email)?;
        // As the schema's CHECK: an '@' after at least one character.
        if !matches!(email.find('@'), Some(at) if at > 0) {
            return Err(ApiError::invalid("email", "must be an email address"));
        }
        Ok(NewCustomer {
            first_name,
            last_name,
            email,
        })
    }
}

const WIDGET_FIELDS: [&str; 4] = ["name", "description", "inventory_level", "price"];

#[derive(Debug, PartialEq, Eq)]
struct NewWidget {
    name: String,
    description: String,
    inventory_level: i32,
    price: i64,
}

impl NewWidget {
    /// `description` (default "") and `inventory_level` (default 0) may be
    /// absent or null.
    fn from_body(bytes: &[u8]) -> Result<NewWidget, ApiError> {
        let mut b = Body::parse(bytes, &WIDGET_FIELDS)?;
        let name: String = b.required("name", STRING)?;
        check_name("name", &name)?;
        let description: String = b.optional("description", STRING, true)?.unwrap_or_default();
        check_text("description", &description)?;
        let inventory_level = b.optional("inventory_level", INT32, true)?.unwrap_or(0);
        let inventory_level = check_non_negative("inventory_level", inventory_level)?;
        let price = check_non_negative("price", b.required::<i64>("price", INT)?)?;
        Ok(NewWidget {
            name,
            description,
            inventory_level,
            price,
        })
    }
}

/// `PUT /api/widgets/{id}`: the fields to change; null is rejected (every
/// widget column is NOT NULL).
#[derive(Debug, Default, PartialEq, Eq)]
struct WidgetChanges {
    name: Option<String>,
    description: Option<String>,
    inventory_level: Option<i32>,
    price: Option<i64>,
}

impl WidgetChanges {
    fn from_body(bytes: &[u8]) -> Result<WidgetChanges, ApiError> {
        let mut b = Body::parse(bytes, &WIDGET_FIELDS)?;
        let changes = WidgetChanges {
            name: b.optional("name", STRING, false)?,
            description: b.optional("description", STRING, false)?,
            inventory_level: b.optional("inventory_level", INT32, false)?,
            price: b.optional("price", INT, false)?,
        };
        if let Some(name) = &changes.name {
            check_name("name", name)?;
        }
        if let Some(d) = &changes.description {
            check_text("description", d)?;
        }
        if let Some(n) = changes.inventory_level {
            check_non_negative("inventory_level", n)?;
        }
        if let Some(n) = changes.price {
            check_non_negative("price", n)?;
        }
        if changes == WidgetChanges::default() {
            return Err(ApiError::invalid(
                "body",
                format_args!("give at least one of {}", WIDGET_FIELDS.join(", ")),
            ));
        }
        Ok(changes)
    }
}

#[derive(Debug, PartialEq, Eq)]
struct NewOrder {
    customer_id: i64,
    widget_id: i64,
    quantity: i32,
}

impl NewOrder {
    fn from_body(bytes: &[u8]) -> Result<NewOrder, ApiError> {
        let mut b = Body::parse(bytes, &["customer_id", "widget_id", "quantity"])?;
        let positive = |field: &str, n: i64| {
            if n > 0 {
                Ok(n)
            } else {
                Err(ApiError::invalid(field, "must be a positive integer"))
            }
        };
        let customer_id = positive("customer_id", b.required("customer_id", INT)?)?;
        let widget_id = positive("widget_id", b.required("widget_id", INT)?)?;
        let quantity: i32 = b.required("quantity", INT32)?;
        if quantity <= 0 {
            return Err(ApiError::invalid("quantity", "must be greater than 0"));
        }
        Ok(NewOrder {
            customer_id,
            widget_id,
            quantity,
        })
    }
}

// ---------------------------------------------------------------- rows

fn customer_json(row: &Row) -> Result<Value, ApiError> {
    Ok(json!({
        "id": row.try_get::<_, i64>("id")?,
        "first_name": row.try_get::<_, String>("first_name")?,
        "last_name": row.try_get::<_, String>("last_name")?,
        "email": row.try_get::<_, String>("email")?,
        "created_at": row.try_get::<_, String>("created_at")?,
        "updated_at": row.try_get::<_, String>("updated_at")?,
    }))
}

fn widget_json(row: &Row) -> Result<Value, ApiError> {
    Ok(json!({
        "id": row.try_get::<_, i64>("id")?,
        "name": row.try_get::<_, String>("name")?,
        "description": row.try_get::<_, String>("description")?,
        "inventory_level": row.try_get::<_, i32>("inventory_level")?,
        "price": row.try_get::<_, i64>("price")?,
        "created_at": row.try_get::<_, String>("created_at")?,
        "updated_at": row.try_get::<_, String>("updated_at")?,
    }))
}

fn order_json(row: &Row) -> Result<Value, ApiError> {
    Ok(json!({
        "id": row.try_get::<_, i64>("id")?,
        "customer_id": row.try_get::<_, i64>("customer_id")?,
        "widget_id": row.try_get::<_, i64>("widget_id")?,
        "quantity": row.try_get::<_, i32>("quantity")?,
        "amount": row.try_get::<_, i64>("amount")?,
        "status": row.try_get::<_, String>("status")?,
        "created_at": row.try_get::<_, String>("created_at")?,
        "updated_at": row.try_get::<_, String>("updated_at")?,
    }))
}

/// The statements, all parameterized. Timestamps are rendered as RFC 3339
/// text in UTC by the server, whatever the session's `TimeZone`.
mod sql {
    macro_rules! stamps {
        () => {
            "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS created_at, \
             to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS updated_at"
        };
    }
    macro_rules! customer {
        () => {
            concat!("id, first_name, last_name, email, ", stamps!())
        };
    }
    macro_rules! widget {
        () => {
            concat!("id, name, description, inventory_level, price, ", stamps!())
        };
    }
    macro_rules! order {
        () => {
            concat!(
                "id, customer_id, widget_id, quantity, amount, status, ",
                stamps!()
            )
        };
    }

    pub const LIST_CUSTOMERS: &str = concat!(
        "SELECT ",
        customer!(),
        " FROM customers ORDER BY id LIMIT $1 OFFSET $2"
    );
    pub const GET_CUSTOMER: &str = concat!("SELECT ", customer!(), " FROM customers WHERE id = $1");
    pub const INSERT_CUSTOMER: &str = concat!(
        "INSERT INTO customers (first_name, last_name, email) VALUES ($1, $2, $3) RETURNING ",
        customer!()
    );
    pub const CUSTOMER_EXISTS: &str = "SELECT 1 FROM customers WHERE id = $1";

    pub const LIST_WIDGETS: &str = concat!(
        "SELECT ",
        widget!(),
        " FROM widgets ORDER BY id LIMIT $1 OFFSET $2"
    );
    pub const GET_WIDGET: &str = concat!("SELECT ", widget!(), " FROM widgets WHERE id = $1");
    pub const INSERT_WIDGET: &str = concat!(
        "INSERT INTO widgets (name, description, inventory_level, price) \
         VALUES ($1, $2, $3, $4) RETURNING ",
        widget!()
    );
    pub const UPDATE_WIDGET: &str = concat!(
        "UPDATE widgets SET name = COALESCE($2, name), \
         description = COALESCE($3, description), \
         inventory_level = COALESCE($4, inventory_level), \
         price = COALESCE($5, price) \
         WHERE id = $1 RETURNING ",
        widget!()
    );
    pub const DELETE_WIDGET: &str = "DELETE FROM widgets WHERE id = $1";
    pub const LOCK_WIDGET: &str =
        "SELECT price, inventory_level FROM widgets WHERE id = $1 FOR UPDATE";
    pub const TAKE_INVENTORY: &str =
        "UPDATE widgets SET inventory_level = inventory_level - $2 WHERE id = $1";

    pub const LIST_ORDERS: &str = concat!(
        "SELECT ",
        order!(),
        " FROM orders ORDER BY id LIMIT $1 OFFSET $2"
    );
    pub const GET_ORDER: &str = concat!("SELECT ", order!(), " FROM orders WHERE id = $1");
    pub const INSERT_ORDER: &str = concat!(
        "INSERT INTO orders (customer_id, widget_id, quantity, amount) \
         VALUES ($1, $2, $3, $4) RETURNING ",
        order!()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_and_message(e: ApiError) -> (u16, &'static str, String) {
        (e.status.as_u16(), e.code, e.message)
    }

    #[test]
    fn since_reaches_the_database_as_parsed_in_utc() {
        let parsed = |q: &str| match since(Some(q)) {
            Ok(t) => Ok(t.expect("a since was given")),
            Err(e) => Err(field(e)),
        };
        assert_eq!(
            parsed("since=2026-01-01T00%3A00%3A00Z").as_deref(),
            Ok("2026-01-01T00:00:00.000000Z")
        );
        // What the lenient parser lets through is written out again, in
        // UTC, never handed on as sent; the rest is refused by name.
        for odd in [
            "since=2026-01-01T00:00:00Zjunk1",
            "since=2026-01-01T00:00:00.5%2B99:99",
            "since=2026-01-01 00:00:00",
            "since=yesterday",
        ] {
            match parsed(odd) {
                Ok(t) => assert!(humantime::parse_rfc3339(&t).is_ok(), "{odd} -> {t}"),
                Err(f) => assert_eq!(f, "since", "{odd}"),
            }
        }
    }

    /// The field an `invalid_field` error names (the message's prefix).
    fn field(e: ApiError) -> String {
        assert_eq!(e.code, "invalid_field", "{e}");
        e.message.split(':').next().unwrap().to_owned()
    }

    #[test]
    fn routes() {
        let get = Method::GET;
        assert_eq!(route(&get, "/api/tenant"), Ok(Op::Tenant));
        assert_eq!(route(&get, "/api/customers"), Ok(Op::List(Kind::Customer)));
        assert_eq!(route(&get, "/api/widgets/7"), Ok(Op::Get(Kind::Widget, 7)));
        assert_eq!(route(&get, "/api/orders/9"), Ok(Op::Get(Kind::Order, 9)));
        assert_eq!(
            route(&Method::POST, "/api/orders"),
            Ok(Op::Create(Kind::Order))
        );
        assert_eq!(
            route(&Method::PUT, "/api/widgets/3"),
            Ok(Op::UpdateWidget(3))
        );
        assert_eq!(
            route(&Method::DELETE, "/api/widgets/3"),
            Ok(Op::DeleteWidget(3))
        );
    }

    #[test]
    fn unknown_paths_and_bad_ids_are_404() {
        for path in [
            "/",
            "/api",
            "/api/",
            "/api/nothing",
            "/api/widgets/",
            "/api/widgets/1/2",
            "/api/widgets/0",
            "/api/widgets/-1",
            "/api/widgets/+1",
            "/api/widgets/1.5",
            "/api/widgets/abc",
            "/api/widgets/99999999999999999999",
            "/api/widgets/%31",
            "/apiwidgets",
            "/API/widgets",
        ] {
            let e = route(&Method::GET, path).unwrap_err();
            assert_eq!((e.status.as_u16(), e.code), (404, "not_found"), "{path}");
        }
        // A bad id is 404 whatever the method.
        let e = route(&Method::PATCH, "/api/widgets/x").unwrap_err();
        assert_eq!(e.code, "not_found");
    }

    #[test]
    fn wrong_methods_are_405() {
        for (method, path) in [
            (Method::POST, "/api/tenant"),
            (Method::DELETE, "/api/customers"),
            (Method::PUT, "/api/widgets"),
            (Method::PUT, "/api/customers/1"),
            (Method::DELETE, "/api/orders/1"),
            (Method::POST, "/api/widgets/1"),
            (Method::PATCH, "/api/widgets/1"),
        ] {
            let e = route(&method, path).unwrap_err();
            assert_eq!(e.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        }
    }

    #[test]
    fn only_get_tenant_is_static() {
        let req = |method, path| Request {
            method,
            path,
            query: None,
            body: b"",
        };
        assert!(is_static(&req(&Method::GET, "/api/tenant")));
        assert!(!is_static(&req(&Method::POST, "/api/tenant")));
        assert!(!is_static(&req(&Method::GET, "/api/widgets")));
        assert!(!is_static(&req(&Method::GET, "/api/nothing")));
    }

    #[test]
    fn paging() {
        let p = |q| Page::parse(q).map(|p| (p.limit, p.offset));
        assert_eq!(p(None), Ok((50, 0)));
        assert_eq!(p(Some("")), Ok((50, 0)));
        assert_eq!(p(Some("limit=10&offset=20")), Ok((10, 20)));
        assert_eq!(p(Some("offset=5&x=y&flag")), Ok((50, 5)));
        assert_eq!(p(Some("limit=500")), Ok((500, 0)));
        assert_eq!(p(Some("limit=501")), Ok((500, 0)));
        assert_eq!(p(Some("limit=99999999999999999999")), Ok((500, 0)));
        assert_eq!(p(Some("limit=1&limit=2")), Ok((2, 0)));
        for (q, f) in [
            ("limit=0", "limit"),
            ("limit=-1", "limit"),
            ("limit=", "limit"),
            ("limit", "limit"),
            ("limit=ten", "limit"),
            ("limit=1.5", "limit"),
            ("offset=-1", "offset"),
            ("offset=x", "offset"),
        ] {
            assert_eq!(field(Page::parse(Some(q)).unwrap_err()), f, "{q}");
        }
    }

    #[test]
    fn a_repeated_key_is_400_at_any_depth() {
        for body in [
            r#"{"name":"x","price":-1,"price":5}"#,
            r#"{"name":"x","price":5,"meta":[{"a":1,"a":2}]}"#,
        ] {
            let e = NewWidget::from_body(body.as_bytes()).unwrap_err();
            assert_eq!(e.code, "bad_request", "{body}: {e}");
            assert!(e.message.contains("appears more than once"), "{e}");
        }
        // Numbers keep their kind: an integer stays an integer.
        let w = NewWidget::from_body(br#"{"name":"x","price":5}"#).unwrap();
        assert_eq!(w.price, 5);
        let e = NewWidget::from_body(br#"{"name":"x","price":5.5}"#).unwrap_err();
        assert_eq!(e.code, "invalid_field", "{e}");
    }

    #[test]
    fn bad_json_is_400_and_non_objects_422() {
        for body in [&b""[..], b"  ", b"{", b"{\"name\": }", b"nul", b"\xff"] {
            let e = NewWidget::from_body(body).unwrap_err();
            assert_eq!(
                (e.status.as_u16(), e.code),
                (400, "bad_request"),
                "{body:?}"
            );
        }
        for body in [&b"[]"[..], b"null", b"1", b"\"x\""] {
            assert_eq!(field(NewWidget::from_body(body).unwrap_err()), "body");
        }
    }

    #[test]
    fn widget_bodies() {
        let w = NewWidget::from_body(br#"{"name": "Bolt", "price": 250}"#).unwrap();
        assert_eq!(
            w,
            NewWidget {
                name: "Bolt".into(),
                description: String::new(),
                inventory_level: 0,
                price: 250
            }
        );
        let w = NewWidget::from_body(
            br#"{"name": "Bolt", "price": 0, "description": null, "inventory_level": 3}"#,
        )
        .unwrap();
        assert_eq!((w.inventory_level, w.price), (3, 0));

        for (body, f) in [
            (r#"{"price": 1}"#, "name"),
            (r#"{"name": null, "price": 1}"#, "name"),
            (r#"{"name": "", "price": 1}"#, "name"),
            (r#"{"name": 5, "price": 1}"#, "name"),
            (r#"{"name": "a\u0000b", "price": 1}"#, "name"),
            (r#"{"name": "b"}"#, "price"),
            (r#"{"name": "b", "price": -1}"#, "price"),
            (r#"{"name": "b", "price": 1.5}"#, "price"),
            (r#"{"name": "b", "price": "1"}"#, "price"),
            (
                r#"{"name": "b", "price": 1, "inventory_level": -2}"#,
                "inventory_level",
            ),
            (
                r#"{"name": "b", "price": 1, "inventory_level": 3000000000}"#,
                "inventory_level",
            ),
            (
                r#"{"name": "b", "price": 1, "description": 7}"#,
                "description",
            ),
            (r#"{"name": "b", "price": 1, "colour": "red"}"#, "colour"),
            (r#"{"id": 1, "name": "b", "price": 1}"#, "id"),
        ] {
            let e = NewWidget::from_body(body.as_bytes()).unwrap_err();
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert_eq!(field(e), f, "{body}");
        }
        let long = format!(r#"{{"name": "{}", "price": 1}}"#, "é".repeat(256));
        assert_eq!(
            field(NewWidget::from_body(long.as_bytes()).unwrap_err()),
            "name"
        );
        let max = format!(r#"{{"name": "{}", "price": 1}}"#, "é".repeat(255));
        assert!(NewWidget::from_body(max.as_bytes()).is_ok());
    }

    #[test]
    fn widget_changes() {
        let c = WidgetChanges::from_body(br#"{"price": 300}"#).unwrap();
        assert_eq!(
            c,
            WidgetChanges {
                price: Some(300),
                ..Default::default()
            }
        );
        for (body, f) in [
            ("{}", "body"),
            (r#"{"price": null}"#, "price"),
            (r#"{"description": null}"#, "description"),
            (r#"{"name": ""}"#, "name"),
            (r#"{"inventory_level": -1}"#, "inventory_level"),
            (r#"{"price": -5}"#, "price"),
            (r#"{"id": 2}"#, "id"),
        ] {
            assert_eq!(
                field(WidgetChanges::from_body(body.as_bytes()).unwrap_err()),
                f,
                "{body}"
            );
        }
    }

    #[test]
    fn customer_bodies() {
        let ok = br#"{"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com"}"#;
        assert_eq!(NewCustomer::from_body(ok).unwrap().email, "ada@example.com");
        for (body, f) in [
            (r#"{"last_name": "L", "email": "a@b"}"#, "first_name"),
            (r#"{"first_name": "A", "email": "a@b"}"#, "last_name"),
            (r#"{"first_name": "A", "last_name": "L"}"#, "email"),
            (
                r#"{"first_name": "A", "last_name": "L", "email": "@b"}"#,
                "email",
            ),
            (
                r#"{"first_name": "A", "last_name": "L", "email": "nobody"}"#,
                "email",
            ),
            (
                r#"{"first_name": "A", "last_name": "L", "email": ["a@b"]}"#,
                "email",
            ),
            (
                r#"{"first_name": "A", "last_name": "L", "email": "a@b", "vip": true}"#,
                "vip",
            ),
        ] {
            assert_eq!(
                field(NewCustomer::from_body(body.as_bytes()).unwrap_err()),
                f,
                "{body}"
            );
        }
    }

    #[test]
    fn order_bodies() {
        let o =
            NewOrder::from_body(br#"{"customer_id": 1, "widget_id": 2, "quantity": 3}"#).unwrap();
        assert_eq!(
            o,
            NewOrder {
                customer_id: 1,
                widget_id: 2,
                quantity: 3
            }
        );
        for (body, f) in [
            (r#"{"widget_id": 2, "quantity": 3}"#, "customer_id"),
            (
                r#"{"customer_id": 0, "widget_id": 2, "quantity": 3}"#,
                "customer_id",
            ),
            (
                r#"{"customer_id": "1", "widget_id": 2, "quantity": 3}"#,
                "customer_id",
            ),
            (
                r#"{"customer_id": 1, "widget_id": -2, "quantity": 3}"#,
                "widget_id",
            ),
            (r#"{"customer_id": 1, "widget_id": 2}"#, "quantity"),
            (
                r#"{"customer_id": 1, "widget_id": 2, "quantity": 0}"#,
                "quantity",
            ),
            (
                r#"{"customer_id": 1, "widget_id": 2, "quantity": -4}"#,
                "quantity",
            ),
            (
                r#"{"customer_id": 1, "widget_id": 2, "quantity": 1.0}"#,
                "quantity",
            ),
            (
                r#"{"customer_id": 1, "widget_id": 2, "quantity": 1, "amount": 5}"#,
                "amount",
            ),
        ] {
            assert_eq!(
                field(NewOrder::from_body(body.as_bytes()).unwrap_err()),
                f,
                "{body}"
            );
        }
    }

    #[test]
    fn messages_name_things() {
        let (status, code, message) = code_and_message(Kind::Widget.not_found(4));
        assert_eq!(
            (status, code, message.as_str()),
            (404, "not_found", "no widget 4")
        );
    }

    /// Against a real server: a database per test on the shared cluster,
    /// with the V1 schema, reached as the superuser through a deadpool pool.
    mod db {
        use super::super::*;
        use tenantry_localpg::Cluster;

        struct Db {
            pool: deadpool_postgres::Pool,
            name: String,
        }

        fn schema() -> String {
            // The tests' own copy, never the repository's schema/ (users edit it).
            let path = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../tests/fixtures/schema/V1__store.sql"
            );
            std::fs::read_to_string(path).expect("read tests/fixtures/schema/V1__store.sql")
        }

        fn fresh_db(test: &str) -> Db {
            let cluster = Cluster::shared();
            let name = format!("gateway_api_{test}_{}", std::process::id());
            cluster
                .psql(
                    "postgres",
                    &format!("DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name};"),
                )
                .expect("create database");
            cluster.psql(&name, &schema()).expect("apply V1");
            Db {
                pool: pool(&cluster.url(&name)),
                name,
            }
        }

        fn pool(url: &str) -> deadpool_postgres::Pool {
            deadpool_postgres::Config {
                url: Some(url.to_owned()),
                ..Default::default()
            }
            .create_pool(
                Some(deadpool_postgres::Runtime::Tokio1),
                tokio_postgres::NoTls,
            )
            .expect("pool")
        }

        fn tenant() -> TenantInfo {
            TenantInfo {
                name: "shop".into(),
                display_name: Some("Shop".into()),
                plan: "starter".into(),
            }
        }

        impl Db {
            async fn call(
                &self,
                method: Method,
                path: &str,
                body: Value,
            ) -> Result<Response, ApiError> {
                let (path, query) = match path.split_once('?') {
                    Some((p, q)) => (p, Some(q)),
                    None => (path, None),
                };
                let body = if body.is_null() {
                    Vec::new()
                } else {
                    body.to_string().into_bytes()
                };
                let req = Request {
                    method: &method,
                    path,
                    query,
                    body: &body,
                };
                let mut client = self.pool.get().await.expect("connection");
                handle(&req, &tenant(), &mut client).await
            }

            /// The body of a call that must succeed with `status`.
            async fn ok(&self, method: Method, path: &str, body: Value, status: u16) -> Value {
                let r = self
                    .call(method.clone(), path, body)
                    .await
                    .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
                assert_eq!(r.status.as_u16(), status, "{method} {path}");
                r.body.unwrap_or(Value::Null)
            }

            async fn err(&self, method: Method, path: &str, body: Value) -> ApiError {
                match self.call(method.clone(), path, body).await {
                    Ok(r) => panic!("{method} {path}: expected an error, got {r:?}"),
                    Err(e) => e,
                }
            }

            /// A widget "Bolt" (250 cents, 10 in stock) and a customer "Ada".
            async fn bolt_and_ada(&self) -> (Value, Value) {
                let w = self
                    .ok(
                        Method::POST,
                        "/api/widgets",
                        json!({"name": "Bolt", "price": 250, "inventory_level": 10}),
                        201,
                    )
                    .await;
                let c = self
                    .ok(
                        Method::POST,
                        "/api/customers",
                        json!({"first_name": "Ada", "last_name": "L", "email": "ada@example.com"}),
                        201,
                    )
                    .await;
                (w, c)
            }

            async fn scalar(&self, sql: &str) -> i64 {
                let client = self.pool.get().await.unwrap();
                client.query_one(sql, &[]).await.unwrap().get(0)
            }
        }

        /// A migration that changes a column's type under cached statements
        /// (0A000 "cached plan must not change result type") is invisible to
        /// callers: single statements and the order transaction are retried
        /// once on fresh statements, and the transaction's first attempt
        /// leaves nothing behind.
        #[tokio::test]
        async fn a_migration_under_cached_statements_is_retried_not_500() {
            let db = fresh_db("stale");
            let (w, c) = db.bolt_and_ada().await;
            let (wid, cid) = (w["id"].as_i64().unwrap(), c["id"].as_i64().unwrap());
            let order = json!({"customer_id": cid, "widget_id": wid, "quantity": 2});
            // Every statement below is now prepared and cached.
            db.ok(Method::GET, "/api/widgets", Value::Null, 200).await;
            db.ok(
                Method::GET,
                &format!("/api/widgets/{wid}"),
                Value::Null,
                200,
            )
            .await;
            db.ok(Method::POST, "/api/orders", order.clone(), 201).await;
            // (Serial calls reuse the pool's one connection, which holds them.)
            let cached = db
                .scalar("SELECT count(*) FROM pg_prepared_statements")
                .await;
            assert!(cached >= 8, "only {cached} statements cached");

            let cluster = Cluster::shared();
            cluster
                .psql(
                    &db.name,
                    "ALTER TABLE widgets ALTER COLUMN description TYPE varchar(2000000);
                     ALTER TABLE orders ALTER COLUMN status TYPE varchar(20);",
                )
                .expect("migrate");
            let list = db.ok(Method::GET, "/api/widgets", Value::Null, 200).await;
            assert_eq!(list[0]["name"], "Bolt");
            db.ok(
                Method::GET,
                &format!("/api/widgets/{wid}"),
                Value::Null,
                200,
            )
            .await;
            // The order's INSERT ... RETURNING goes stale after the inventory
            // was taken: the retry must not take it twice.
            db.ok(Method::POST, "/api/orders", order, 201).await;
            assert_eq!(
                db.scalar("SELECT inventory_level::int8 FROM widgets").await,
                6
            );
            assert_eq!(db.scalar("SELECT count(*) FROM orders").await, 2);
        }

        /// A session the server ends (a move's cutover closes the old copy
        /// with `pg_terminate_backend`) fails the request with 503 and
        /// `Retry-After`, marked gone; never a 500.
        #[tokio::test]
        async fn a_session_ended_by_the_server_is_503_never_500() {
            let db = fresh_db("ended");
            db.bolt_and_ada().await;
            let order = json!({"customer_id": 1, "widget_id": 1, "quantity": 1});
            for (method, path, body) in [
                (Method::GET, "/api/widgets", Value::Null),
                (Method::POST, "/api/orders", order),
            ] {
                let mut client = db.pool.get().await.unwrap();
                let pid: i32 = client
                    .query_one("SELECT pg_backend_pid()", &[])
                    .await
                    .unwrap()
                    .get(0);
                let other = db.pool.get().await.unwrap();
                other
                    .execute("SELECT pg_terminate_backend($1)", &[&pid])
                    .await
                    .unwrap();
                drop(other);
                let body = body.to_string().into_bytes();
                let req = Request {
                    method: &method,
                    path,
                    query: None,
                    body: if method == Method::GET { &[] } else { &body },
                };
                let e = handle(&req, &tenant(), &mut client).await.unwrap_err();
                assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE, "{method} {e}");
                assert_eq!(e.retry_after, Some(1), "{method} {e}");
                assert!(e.gone, "{method} {e}");
                // Not back into the pool: it is closed.
                drop(deadpool_postgres::Object::take(client));
            }
            assert_eq!(db.scalar("SELECT count(*) FROM orders").await, 0);
        }

        #[tokio::test]
        async fn tenant_needs_no_query() {
            let db = fresh_db("tenant");
            let body = db.ok(Method::GET, "/api/tenant", Value::Null, 200).await;
            assert_eq!(
                body,
                json!({"name": "shop", "display_name": "Shop", "plan": "starter"})
            );
        }

        #[tokio::test]
        async fn orders_take_inventory_in_one_transaction() {
            let db = fresh_db("orders");
            let (w, c) = db.bolt_and_ada().await;
            assert_eq!(w["description"], "");
            assert!(w["created_at"].as_str().unwrap().ends_with('Z'));
            let (wid, cid) = (w["id"].as_i64().unwrap(), c["id"].as_i64().unwrap());

            let o = db
                .ok(
                    Method::POST,
                    "/api/orders",
                    json!({"customer_id": cid, "widget_id": wid, "quantity": 3}),
                    201,
                )
                .await;
            assert_eq!(o["amount"], 750);
            assert_eq!(o["quantity"], 3);
            assert_eq!(o["status"], "pending");
            let w = db
                .ok(
                    Method::GET,
                    &format!("/api/widgets/{wid}"),
                    Value::Null,
                    200,
                )
                .await;
            assert_eq!(w["inventory_level"], 7);
            let got = db
                .ok(
                    Method::GET,
                    &format!("/api/orders/{}", o["id"]),
                    Value::Null,
                    200,
                )
                .await;
            assert_eq!(got, o);

            // Not enough: 409, and nothing changed.
            let e = db
                .err(
                    Method::POST,
                    "/api/orders",
                    json!({"customer_id": cid, "widget_id": wid, "quantity": 8}),
                )
                .await;
            assert_eq!((e.status.as_u16(), e.code), (409, "conflict"), "{e}");
            assert!(e.message.contains("not enough inventory"), "{e}");
            assert_eq!(
                db.scalar(&format!(
                    "SELECT inventory_level::bigint FROM widgets WHERE id = {wid}"
                ))
                .await,
                7
            );
            assert_eq!(db.scalar("SELECT count(*) FROM orders").await, 1);

            // Missing rows name the field.
            let e = db
                .err(
                    Method::POST,
                    "/api/orders",
                    json!({"customer_id": 999, "widget_id": wid, "quantity": 1}),
                )
                .await;
            assert_eq!(super::field(e), "customer_id");
            let e = db
                .err(
                    Method::POST,
                    "/api/orders",
                    json!({"customer_id": cid, "widget_id": 999, "quantity": 1}),
                )
                .await;
            assert_eq!(super::field(e), "widget_id");

            // The whole stock can go.
            db.ok(
                Method::POST,
                "/api/orders",
                json!({"customer_id": cid, "widget_id": wid, "quantity": 7}),
                201,
            )
            .await;
            let list = db.ok(Method::GET, "/api/orders", Value::Null, 200).await;
            assert_eq!(list.as_array().unwrap().len(), 2);

            // A widget with orders cannot be deleted.
            let e = db
                .err(Method::DELETE, &format!("/api/widgets/{wid}"), Value::Null)
                .await;
            assert_eq!((e.status.as_u16(), e.code), (409, "conflict"), "{e}");

            // A duplicate email is a conflict naming the constraint.
            let e = db
                .err(
                    Method::POST,
                    "/api/customers",
                    json!({"first_name": "A", "last_name": "B", "email": "ada@example.com"}),
                )
                .await;
            assert_eq!((e.status.as_u16(), e.code), (409, "conflict"), "{e}");
            assert!(e.message.contains("customers_email_key"), "{e}");
        }

        #[tokio::test]
        async fn update_and_delete_widgets() {
            let db = fresh_db("widgets");
            let w = db
                .ok(
                    Method::POST,
                    "/api/widgets",
                    json!({"name": "Nut", "description": "M6", "price": 10}),
                    201,
                )
                .await;
            let path = format!("/api/widgets/{}", w["id"]);
            let u = db.ok(Method::PUT, &path, json!({"price": 12}), 200).await;
            assert_eq!(
                (
                    &u["name"],
                    &u["description"],
                    &u["price"],
                    &u["inventory_level"]
                ),
                (&json!("Nut"), &json!("M6"), &json!(12), &json!(0))
            );
            db.ok(Method::DELETE, &path, Value::Null, 204).await;
            for method in [Method::GET, Method::DELETE] {
                let e = db.err(method, &path, Value::Null).await;
                assert_eq!((e.status.as_u16(), e.code), (404, "not_found"));
            }
            let e = db.err(Method::PUT, &path, json!({"price": 1})).await;
            assert_eq!(e.status, StatusCode::NOT_FOUND);
        }

        #[tokio::test]
        async fn lists_page_by_id() {
            let db = fresh_db("paging");
            for i in 0..5 {
                db.ok(
                    Method::POST,
                    "/api/customers",
                    json!({"first_name": "C", "last_name": format!("{i}"), "email": format!("c{i}@x")}),
                    201,
                )
                .await;
            }
            let ids = |v: Value| -> Vec<i64> {
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["id"].as_i64().unwrap())
                    .collect()
            };
            let all = ids(db.ok(Method::GET, "/api/customers", Value::Null, 200).await);
            assert_eq!(all.len(), 5);
            let page = |q: &'static str| db.ok(Method::GET, q, Value::Null, 200);
            assert_eq!(ids(page("/api/customers?limit=2").await), all[..2]);
            assert_eq!(
                ids(page("/api/customers?limit=2&offset=2").await),
                all[2..4]
            );
            assert_eq!(ids(page("/api/customers?offset=4&limit=2").await), all[4..]);
            assert_eq!(
                ids(page("/api/customers?offset=10").await),
                Vec::<i64>::new()
            );
            let e = db
                .err(Method::GET, "/api/customers?limit=0", Value::Null)
                .await;
            assert_eq!(super::field(e), "limit");
        }

        #[tokio::test]
        async fn the_database_enforces_the_tiers() {
            let db = fresh_db("tiers");
            let cluster = Cluster::shared();
            let role = format!("{}_reader", db.name);
            cluster
                .psql(
                    &db.name,
                    &format!(
                        "DROP ROLE IF EXISTS {role}; \
                         CREATE ROLE {role} LOGIN PASSWORD 'pw'; \
                         GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role};"
                    ),
                )
                .unwrap();
            let reader = Db {
                pool: pool(&cluster.user_url(&role, "pw", &db.name)),
                name: db.name.clone(),
            };
            reader
                .ok(Method::GET, "/api/customers", Value::Null, 200)
                .await;
            let e = reader
                .err(
                    Method::POST,
                    "/api/customers",
                    json!({"first_name": "A", "last_name": "B", "email": "a@b"}),
                )
                .await;
            assert_eq!(
                (e.status.as_u16(), e.code),
                (403, "permission_denied"),
                "{e}"
            );
            assert!(!e.message.contains("customers"), "no server text: {e}");
        }

        #[tokio::test]
        async fn constraint_errors_name_the_column() {
            let db = fresh_db("constraints");
            let client = db.pool.get().await.unwrap();
            let e = client
                .execute("INSERT INTO widgets (name, price) VALUES ('x', -1)", &[])
                .await
                .unwrap_err();
            assert_eq!(super::field(ApiError::from_db(&e)), "price");
            let e = client
                .execute(
                    "INSERT INTO orders (customer_id, widget_id, quantity, amount) VALUES (1, 1, 1, 1)",
                    &[],
                )
                .await
                .unwrap_err();
            assert_eq!(super::field(ApiError::from_db(&e)), "customer_id");
            let e = client
                .execute("INSERT INTO widgets (name) VALUES ('x')", &[])
                .await
                .unwrap_err();
            assert_eq!(super::field(ApiError::from_db(&e)), "price");
            client
                .batch_execute("SET statement_timeout = 10")
                .await
                .unwrap();
            let e = client
                .batch_execute("SELECT pg_sleep(1)")
                .await
                .unwrap_err();
            let api = ApiError::from_db(&e);
            assert_eq!(
                (
                    api.status.as_u16(),
                    api.code,
                    api.message.as_str(),
                    api.retry_after
                ),
                (503, "unavailable", "statement timed out", Some(1))
            );
            let e = client
                .batch_execute("SELECT nonsense FROM nowhere")
                .await
                .unwrap_err();
            let api = ApiError::from_db(&e);
            assert_eq!((api.status.as_u16(), api.code), (500, "internal"));
            assert!(!api.message.contains("nowhere"));

            // A connection killed under us: 503, retry soon.
            let pid: i32 = client
                .query_one("SELECT pg_backend_pid()", &[])
                .await
                .unwrap()
                .get(0);
            let other = db.pool.get().await.unwrap();
            other
                .execute("SELECT pg_terminate_backend($1)", &[&pid])
                .await
                .unwrap();
            let mut api = None;
            for _ in 0..3 {
                if let Err(e) = client.batch_execute("SELECT 1").await {
                    api = Some(ApiError::from_db(&e));
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            let api = api.expect("the killed connection fails");
            assert_eq!(
                (api.status.as_u16(), api.code, api.retry_after),
                (503, "unavailable", Some(1)),
                "{api}"
            );
        }
    }
}
