//! The endpoints: each parses its request into one command, runs it through
//! the aggregate's handler and renders the outcome.
//!
//! Request bodies are parsed in two steps: serde checks the JSON's shape
//! (unknown fields, wrong types and non-integer amounts are `400
//! malformed-request`), then the domain's parsers check every field and
//! report all that are wrong at once (`400 invalid-fields`, with JSON
//! pointers).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::domain::customer::{CustomerCommand, CustomerName, Email, PersonalData};
use crate::domain::money::{Currency, Money};
use crate::domain::order::{OrderCommand, OrderItems, OrderLine, Reason, Sku};
use crate::error::CommandError;
use crate::handler::{CommandContext, CommandHandler, CommandOutcome};
use crate::http::ApiState;
use crate::http::api_doc::{Applied, CommandHeaders, CommandProblems, Created, NotFound};
use crate::http::problem::{Problem, etag};
use crate::http::request::{
    BodyRule, COMMAND_ID, CORRELATION_ID, CommandRequest, FieldErrors, IDEMPOTENT_REPLAYED,
    path_id, path_rejection,
};

type Answer = Result<Response, Problem>;

/// What every successful command answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct CommandResponse {
    /// The customer's or the order's id (generated when the request gave
    /// none).
    id: Uuid,
    /// The version of the aggregate's stream after the command, also sent
    /// as `ETag`: what to send as `If-Match` next.
    #[schema(example = 3)]
    version: u64,
    /// The log position of the aggregate's latest event: send it as
    /// `min_position` to the query API to read this write.
    #[schema(example = 1042)]
    position: u64,
}

/// The command context a request asks for through its headers.
fn context(request: &CommandRequest) -> Result<CommandContext, Problem> {
    let mut context = CommandContext::new();
    if let Some(correlation_id) = request.correlation_id()? {
        context.correlation_id = correlation_id;
    }
    context.expected_version = request.if_match()?;
    context.idempotency = request.idempotency()?;
    Ok(context)
}

/// Runs the command and renders its outcome; `collection` is where created
/// aggregates live (`/customers`), for `Location`.
async fn execute<A: Aggregate>(
    handler: &CommandHandler<A>,
    context: CommandContext,
    command: A::Command,
    collection: &str,
) -> Answer {
    let correlation_id = context.correlation_id;
    let outcome = handler.execute(command, context).await?;
    render(&outcome, correlation_id, collection)
}

/// A command's outcome as the HTTP answer.
fn render<E>(outcome: &CommandOutcome<E>, correlation_id: Uuid, collection: &str) -> Answer {
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = serde_json::to_vec(&CommandResponse {
        id: outcome.aggregate_id,
        version: outcome.version,
        position: outcome.position.get(),
    })
    .map_err(|e| Problem::internal(&e))?;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::ETAG, etag(outcome.version));
    let ids = [
        (CORRELATION_ID, correlation_id),
        (COMMAND_ID, outcome.command_id),
    ];
    for (name, id) in ids {
        if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
            headers.insert(name, value);
        }
    }
    if outcome.created
        && let Ok(location) =
            HeaderValue::from_str(&format!("{collection}/{}", outcome.aggregate_id))
    {
        headers.insert(header::LOCATION, location);
    }
    if outcome.replayed {
        headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok((status, headers, body).into_response())
}

/// An amount of money: an integer number of minor units (cents for EUR)
/// and an ISO 4217 currency code. `{"amount": 1250, "currency": "EUR"}` is
/// 12.50 EUR.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Money)]
pub(super) struct MoneyBody {
    /// Minor units of the currency, never fractional.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_i64, example = 1250)]
    amount: i64,
    /// ISO 4217 currency code.
    #[schema(pattern = "^[A-Z]{3}$", example = "EUR")]
    currency: String,
}

/// The money at `pointer`; `positive` also refuses zero.
fn money(
    errors: &mut FieldErrors,
    pointer: &str,
    body: &MoneyBody,
    positive: bool,
) -> Option<Money> {
    let currency = errors.check(
        &format!("{pointer}/currency"),
        Currency::parse(&body.currency),
    )?;
    let amount = if positive {
        Money::positive(body.amount, currency)
    } else {
        Money::new(body.amount, currency)
    };
    errors.check(&format!("{pointer}/amount"), amount)
}

/// An id in the body, parsed as in the path.
fn uuid(errors: &mut FieldErrors, pointer: &str, raw: &str) -> Option<Uuid> {
    errors.check(pointer, http_edge::ids::parse_id(raw))
}

fn path_uuid(
    name: &'static str,
    path: Result<Path<String>, PathRejection>,
) -> Result<Uuid, Problem> {
    let Path(raw) = path.map_err(path_rejection)?;
    path_id(name, &raw)
}

fn path_uuids(
    names: (&'static str, &'static str),
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(Uuid, Uuid), Problem> {
    let Path((a, b)) = path.map_err(path_rejection)?;
    Ok((path_id(names.0, &a)?, path_id(names.1, &b)?))
}

/// Either all fields parsed, or every error at once.
fn finish<T>(errors: FieldErrors, value: impl FnOnce() -> Option<T>) -> Result<T, Problem> {
    if !errors.is_empty() {
        return Err(errors.into_problem());
    }
    let mut errors = FieldErrors::new();
    match value() {
        Some(v) => Ok(v),
        None => {
            errors.add("", "the request is incomplete");
            Err(errors.into_problem())
        }
    }
}

/// A customer to register.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RegisterCustomer)]
pub(super) struct RegisterCustomerBody {
    /// The new customer's id; generated when absent. Registering an id
    /// again is `422` (`customer-already-registered`).
    #[serde(default)]
    #[schema(format = Uuid)]
    customer_id: Option<String>,
    /// 1 to 200 characters once trimmed, no control characters.
    #[schema(example = "Ada Lovelace")]
    name: String,
    /// An address of the form `local@domain.tld`, at most 254 bytes.
    #[schema(example = "ada@example.com")]
    email: String,
    /// The credit the customer may reserve for orders; may be 0.
    credit_limit: MoneyBody,
}

/// Register a customer
#[utoipa::path(
    post,
    path = "/customers",
    tag = "customers",
    params(CommandHeaders),
    request_body(content = RegisterCustomerBody, description = "JSON (`application/json` or `application/*+json`)"),
    responses(Created, CommandProblems)
)]
pub async fn register_customer(State(state): State<ApiState>, request: CommandRequest) -> Answer {
    let context = context(&request)?;
    let body: RegisterCustomerBody = request.json(BodyRule::Required)?;
    let mut errors = FieldErrors::new();
    let customer_id = match &body.customer_id {
        Some(raw) => uuid(&mut errors, "/customer_id", raw),
        None => Some(Uuid::now_v7()),
    };
    let name = errors.check("/name", CustomerName::parse(&body.name));
    let email = errors.check("/email", Email::parse(&body.email));
    let credit_limit = money(&mut errors, "/credit_limit", &body.credit_limit, false);
    let command = finish(errors, || {
        Some(CustomerCommand::Register {
            customer_id: customer_id?,
            personal: PersonalData {
                name: name?,
                email: email?,
            },
            credit_limit: credit_limit?,
        })
    })?;
    execute(state.customers(), context, command, "/customers").await
}

/// A customer's new credit limit.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ChangeCreditLimit)]
pub(super) struct CreditLimitBody {
    /// The new limit; not below the credit reserved now
    /// (`credit-limit-below-reserved`), in the customer's currency.
    credit_limit: MoneyBody,
}

/// Change a customer's credit limit
#[utoipa::path(
    post,
    path = "/customers/{id}/credit-limit",
    tag = "customers",
    params(("id" = Uuid, Path, description = "The customer's id"), CommandHeaders),
    request_body(content = CreditLimitBody, description = "JSON (`application/json` or `application/*+json`)"),
    responses(Applied, NotFound, CommandProblems)
)]
pub async fn change_credit_limit(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    request: CommandRequest,
) -> Answer {
    let customer_id = path_uuid("customer id", path)?;
    let context = context(&request)?;
    let body: CreditLimitBody = request.json(BodyRule::Required)?;
    let mut errors = FieldErrors::new();
    let credit_limit = money(&mut errors, "/credit_limit", &body.credit_limit, false);
    let command = finish(errors, || {
        Some(CustomerCommand::ChangeCreditLimit {
            customer_id,
            credit_limit: credit_limit?,
        })
    })?;
    execute(state.customers(), context, command, "/customers").await
}

/// Credit to reserve for an order.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ReserveCredit)]
pub(super) struct ReserveCreditBody {
    /// The order the credit is for; one reservation per order.
    #[schema(format = Uuid)]
    order_id: String,
    /// More than 0, in the customer's currency, within the credit available
    /// (`credit-limit-exceeded`).
    amount: MoneyBody,
}

/// Reserve credit for an order
#[utoipa::path(
    post,
    path = "/customers/{id}/reservations",
    tag = "customers",
    params(("id" = Uuid, Path, description = "The customer's id"), CommandHeaders),
    request_body(content = ReserveCreditBody, description = "JSON (`application/json` or `application/*+json`)"),
    responses(Applied, NotFound, CommandProblems)
)]
pub async fn reserve_credit(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    request: CommandRequest,
) -> Answer {
    let customer_id = path_uuid("customer id", path)?;
    let context = context(&request)?;
    let body: ReserveCreditBody = request.json(BodyRule::Required)?;
    let mut errors = FieldErrors::new();
    let order_id = uuid(&mut errors, "/order_id", &body.order_id);
    let amount = money(&mut errors, "/amount", &body.amount, true);
    let command = finish(errors, || {
        Some(CustomerCommand::ReserveCredit {
            customer_id,
            order_id: order_id?,
            amount: amount?,
        })
    })?;
    execute(state.customers(), context, command, "/customers").await
}

/// The body of commands that take no fields: empty, or `{}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NoFields {}

/// Release the credit reserved for an order
#[utoipa::path(
    post,
    path = "/customers/{id}/reservations/{order_id}/release",
    tag = "customers",
    params(
        ("id" = Uuid, Path, description = "The customer's id"),
        ("order_id" = Uuid, Path, description = "The order the credit was reserved for"),
        CommandHeaders,
    ),
    request_body(content = ref("#/components/schemas/NoFields"), content_type = "application/json", description = "None, or `{}` as JSON"),
    responses(Applied, NotFound, CommandProblems)
)]
pub async fn release_credit(
    State(state): State<ApiState>,
    path: Result<Path<(String, String)>, PathRejection>,
    request: CommandRequest,
) -> Answer {
    let (customer_id, order_id) = path_uuids(("customer id", "order id"), path)?;
    let context = context(&request)?;
    let NoFields {} = request.json(BodyRule::Optional)?;
    let command = CustomerCommand::ReleaseCredit {
        customer_id,
        order_id,
    };
    execute(state.customers(), context, command, "/customers").await
}

/// Erase a customer's personal data (the right to be forgotten)
///
/// Records `CustomerForgotten` (the views erase their copies of the name and
/// email) and destroys the key that encrypts the customer's personal data
/// in the event store, so every stored copy reads as `[erased]` from then
/// on. The credit line stays. Deleting again is harmless (`200`, nothing
/// new recorded): a retry after a failure finishes the erasure. An unknown
/// customer is `404`.
#[utoipa::path(
    delete,
    path = "/customers/{id}/personal-data",
    tag = "customers",
    params(
        ("id" = Uuid, Path, description = "The customer's id"),
        CommandHeaders,
    ),
    request_body(content = ref("#/components/schemas/NoFields"), content_type = "application/json", description = "None, or `{}` as JSON"),
    responses(Applied, NotFound, CommandProblems,
        (status = 501, description = "The event store keeps no personal-data keys", body = Problem, content_type = "application/problem+json"))
)]
pub async fn erase_personal_data(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    request: CommandRequest,
) -> Answer {
    forget(state, path, request).await
}

/// Forget a customer (the older form of `DELETE /customers/{id}/personal-data`)
///
/// The same command as `DELETE /customers/{id}/personal-data`, with the
/// same answers; kept so that existing clients go on working. Every answer
/// says it is deprecated (`Deprecation`, RFC 9745) and names its successor
/// (`Link: </customers/{id}/personal-data>; rel="successor-version"`).
#[utoipa::path(
    post,
    path = "/customers/{id}/forget",
    tag = "customers",
    params(
        ("id" = Uuid, Path, description = "The customer's id"),
        CommandHeaders,
    ),
    request_body(content = ref("#/components/schemas/NoFields"), content_type = "application/json", description = "None, or `{}` as JSON"),
    responses(Applied, NotFound, CommandProblems,
        (status = 501, description = "The event store keeps no personal-data keys", body = Problem, content_type = "application/problem+json"))
)]
#[deprecated = "use DELETE /customers/{id}/personal-data"]
pub async fn forget_customer(
    State(state): State<ApiState>,
    uri: Uri,
    path: Result<Path<String>, PathRejection>,
    request: CommandRequest,
) -> Response {
    let mut response = forget(state, path, request).await.into_response();
    deprecated(response.headers_mut(), &uri);
    response
}

/// When `POST /customers/{id}/forget` was deprecated (2026-11-26, in Unix
/// seconds), for its `Deprecation` header.
const FORGET_DEPRECATED_AT: u64 = 1_795_651_200;

/// Marks an answer of the deprecated route, whatever its status (RFC 9745):
/// `Deprecation` with the date, and a `Link` to the route that replaces it,
/// built from the path as the client sent it.
fn deprecated(headers: &mut HeaderMap, uri: &Uri) {
    let deprecation = format!("@{FORGET_DEPRECATED_AT}");
    if let Ok(value) = HeaderValue::from_str(&deprecation) {
        headers.insert(HeaderName::from_static("deprecation"), value);
    }
    let successor = uri
        .path()
        .strip_suffix("/forget")
        .map(|customer| format!("<{customer}/personal-data>; rel=\"successor-version\""));
    if let Some(Ok(link)) = successor.map(|l| HeaderValue::from_str(&l)) {
        headers.insert(header::LINK, link);
    }
}

async fn forget(
    state: ApiState,
    path: Result<Path<String>, PathRejection>,
    request: CommandRequest,
) -> Answer {
    let customer_id = path_uuid("customer id", path)?;
    let context = context(&request)?;
    let NoFields {} = request.json(BodyRule::Optional)?;
    let correlation_id = context.correlation_id;
    match crate::erasure::forget_customer(state.customers(), customer_id, context).await {
        Ok(outcome) => render(&outcome, correlation_id, "/customers"),
        Err(CommandError::Store(event_store::Error::Unsupported(detail))) => Err(Problem::new(
            StatusCode::NOT_IMPLEMENTED,
            crate::http::problem::kind::NOT_IMPLEMENTED,
            "Not implemented",
            detail,
        )),
        Err(e) => Err(e.into()),
    }
}

/// One line of an order.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = OrderLine)]
pub(super) struct OrderLineBody {
    /// The stock-keeping unit: printable ASCII, no spaces.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[!-~]+$",
        example = "BOOK-0042"
    )]
    sku: String,
    #[schema(minimum = 1, maximum = 1_000_000, example = 2)]
    quantity: i64,
    /// More than 0; every line of an order in the same currency.
    unit_price: MoneyBody,
}

/// An order to place: its lines, its total, or both.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PlaceOrder)]
pub(super) struct PlaceOrderBody {
    /// The new order's id; generated when absent. Placing an id again is
    /// `422` (`order-already-placed`).
    #[serde(default)]
    #[schema(format = Uuid)]
    order_id: Option<String>,
    /// The customer placing it; the command API does not check that it
    /// exists (credit is reserved by a separate command).
    #[schema(format = Uuid)]
    customer_id: String,
    /// The lines; without lines (absent or empty), `total` is required.
    #[serde(default)]
    #[schema(max_items = 100)]
    lines: Option<Vec<OrderLineBody>>,
    /// More than 0. With lines, it must equal their sum.
    #[serde(default)]
    total: Option<MoneyBody>,
}

/// Lines (each checked) and/or a total. With lines, a total is optional and
/// must equal their sum; without lines (absent or empty), it is required.
fn order_items(errors: &mut FieldErrors, body: &PlaceOrderBody) -> Option<OrderItems> {
    let lines = body.lines.as_deref().unwrap_or_default();
    if lines.len() > OrderItems::LINES_MAX {
        errors.add(
            "/lines",
            format!(
                "an order has at most {} lines; {} were given",
                OrderItems::LINES_MAX,
                lines.len()
            ),
        );
        return None;
    }
    let mut parsed = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let sku = errors.check(&format!("/lines/{i}/sku"), Sku::parse(&line.sku));
        let quantity = errors.check(
            &format!("/lines/{i}/quantity"),
            u32::try_from(line.quantity)
                .ok()
                .filter(|q| (1..=OrderItems::QUANTITY_MAX).contains(q))
                .ok_or_else(|| {
                    format!(
                        "the quantity must be between 1 and {}; {} was given",
                        OrderItems::QUANTITY_MAX,
                        line.quantity
                    )
                }),
        );
        let unit_price = money(
            errors,
            &format!("/lines/{i}/unit_price"),
            &line.unit_price,
            true,
        );
        if let (Some(sku), Some(quantity), Some(unit_price)) = (sku, quantity, unit_price) {
            parsed.push(OrderLine {
                sku,
                quantity,
                unit_price,
            });
        }
    }
    let total = match &body.total {
        Some(t) => Some(money(errors, "/total", t, true)?),
        None => None,
    };
    if !errors.is_empty() {
        return None;
    }
    let items = if parsed.is_empty() {
        let Some(total) = total else {
            errors.add("/lines", "give the order's lines, its total, or both");
            return None;
        };
        OrderItems::total_only(total)
    } else {
        OrderItems::from_lines(parsed)
    };
    let items = match items {
        Ok(items) => items,
        Err(e) => {
            let pointer = match e.line {
                Some(i) => format!("/lines/{i}/{}", e.field),
                None => format!("/{}", e.field),
            };
            errors.add(pointer, e.message);
            return None;
        }
    };
    if let Some(total) = total
        && total != items.total()
    {
        errors.add(
            "/total",
            format!(
                "the total {total} is not the sum of the lines, {}",
                items.total()
            ),
        );
        return None;
    }
    Some(items)
}

/// Place an order
#[utoipa::path(
    post,
    path = "/orders",
    tag = "orders",
    params(CommandHeaders),
    request_body(content = PlaceOrderBody, description = "JSON (`application/json` or `application/*+json`)"),
    responses(Created, CommandProblems)
)]
pub async fn place_order(State(state): State<ApiState>, request: CommandRequest) -> Answer {
    let context = context(&request)?;
    let body: PlaceOrderBody = request.json(BodyRule::Required)?;
    let mut errors = FieldErrors::new();
    let order_id = match &body.order_id {
        Some(raw) => uuid(&mut errors, "/order_id", raw),
        None => Some(Uuid::now_v7()),
    };
    let customer_id = uuid(&mut errors, "/customer_id", &body.customer_id);
    let items = order_items(&mut errors, &body);
    let command = finish(errors, || {
        Some(OrderCommand::Place {
            order_id: order_id?,
            customer_id: customer_id?,
            items: items?,
        })
    })?;
    execute(state.orders(), context, command, "/orders").await
}

/// Approve a pending order
#[utoipa::path(
    post,
    path = "/orders/{id}/approve",
    tag = "orders",
    params(("id" = Uuid, Path, description = "The order's id"), CommandHeaders),
    request_body(content = ref("#/components/schemas/NoFields"), content_type = "application/json", description = "None, or `{}` as JSON"),
    responses(Applied, NotFound, CommandProblems)
)]
pub async fn approve_order(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    request: CommandRequest,
) -> Answer {
    let order_id = path_uuid("order id", path)?;
    let context = context(&request)?;
    let NoFields {} = request.json(BodyRule::Optional)?;
    execute(
        state.orders(),
        context,
        OrderCommand::Approve { order_id },
        "/orders",
    )
    .await
}

/// Why an order is rejected.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RejectOrder)]
pub(super) struct RejectBody {
    /// 1 to 500 characters once trimmed, no control characters.
    #[schema(example = "credit limit exceeded")]
    reason: String,
}

/// Reject a pending order
#[utoipa::path(
    post,
    path = "/orders/{id}/reject",
    tag = "orders",
    params(("id" = Uuid, Path, description = "The order's id"), CommandHeaders),
    request_body(content = RejectBody, description = "JSON (`application/json` or `application/*+json`)"),
    responses(Applied, NotFound, CommandProblems)
)]
pub async fn reject_order(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    request: CommandRequest,
) -> Answer {
    let order_id = path_uuid("order id", path)?;
    let context = context(&request)?;
    let body: RejectBody = request.json(BodyRule::Required)?;
    let mut errors = FieldErrors::new();
    let reason = errors.check("/reason", Reason::parse(&body.reason));
    let command = finish(errors, || {
        Some(OrderCommand::Reject {
            order_id,
            reason: reason?,
        })
    })?;
    execute(state.orders(), context, command, "/orders").await
}

/// Why an order is cancelled, if the client says.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CancelOrder)]
pub(super) struct CancelBody {
    /// 1 to 500 characters once trimmed, no control characters.
    #[serde(default)]
    #[schema(example = "ordered twice")]
    reason: Option<String>,
}

/// Cancel an order
#[utoipa::path(
    post,
    path = "/orders/{id}/cancel",
    tag = "orders",
    params(("id" = Uuid, Path, description = "The order's id"), CommandHeaders),
    request_body(content = ref("#/components/schemas/CancelOrder"), content_type = "application/json", description = "None, or JSON"),
    responses(Applied, NotFound, CommandProblems)
)]
pub async fn cancel_order(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    request: CommandRequest,
) -> Answer {
    let order_id = path_uuid("order id", path)?;
    let context = context(&request)?;
    let body: CancelBody = request.json(BodyRule::Optional)?;
    let mut errors = FieldErrors::new();
    let reason = match &body.reason {
        Some(raw) => errors.check("/reason", Reason::parse(raw)).map(Some),
        None => Some(None),
    };
    let command = finish(errors, || {
        Some(OrderCommand::Cancel {
            order_id,
            reason: reason?,
        })
    })?;
    execute(state.orders(), context, command, "/orders").await
}
