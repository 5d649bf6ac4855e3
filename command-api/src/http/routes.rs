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
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::domain::customer::{CustomerCommand, CustomerName, Email, PersonalData};
use crate::domain::money::{Currency, Money};
use crate::domain::order::{OrderCommand, OrderItems, OrderLine, Reason, Sku};
use crate::handler::{CommandContext, CommandHandler};
use crate::http::ApiState;
use crate::http::problem::{Problem, etag};
use crate::http::request::{
    BodyRule, COMMAND_ID, CORRELATION_ID, CommandRequest, FieldErrors, IDEMPOTENT_REPLAYED,
    path_id, path_rejection,
};

type Answer = Result<Response, Problem>;

/// What every successful command answers.
#[derive(Debug, Serialize)]
struct CommandResponse {
    id: Uuid,
    version: u64,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MoneyBody {
    amount: i64,
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

fn uuid(errors: &mut FieldErrors, pointer: &str, raw: &str) -> Option<Uuid> {
    let parsed = Uuid::parse_str(raw)
        .map_err(|_| format!("{raw:?} is not a UUID"))
        .and_then(|id| {
            if id.is_nil() {
                Err("the nil UUID is not an id".to_owned())
            } else {
                Ok(id)
            }
        });
    errors.check(pointer, parsed)
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterCustomerBody {
    #[serde(default)]
    customer_id: Option<String>,
    name: String,
    email: String,
    credit_limit: MoneyBody,
}

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreditLimitBody {
    credit_limit: MoneyBody,
}

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReserveCreditBody {
    order_id: String,
    amount: MoneyBody,
}

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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoFields {}

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderLineBody {
    sku: String,
    quantity: i64,
    unit_price: MoneyBody,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaceOrderBody {
    #[serde(default)]
    order_id: Option<String>,
    customer_id: String,
    #[serde(default)]
    lines: Option<Vec<OrderLineBody>>,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RejectBody {
    reason: String,
}

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    #[serde(default)]
    reason: Option<String>,
}

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
