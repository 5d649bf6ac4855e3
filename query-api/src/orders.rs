//! `GET /orders/{id}` and `GET /orders`.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use projector::http::Problem;
use projector::reference::ORDER_STATUSES;
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};

use crate::api_doc::{self, MinPosition, PageParams, PathId, ReadProblems};
use crate::customers::Bind;
use crate::params::{self, Params};
use crate::{
    Money, QueryState, consistency, cursor, database_problem, json_answer, not_found, time,
};

const PROJECTION: &str = "orders";

const COLUMNS: &str = "o.id, o.customer_id, o.currency, o.total, o.line_count, o.status, \
     o.reason, o.placed_at, o.updated_at, o.version, o.position";

/// An order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Order {
    #[schema(format = Uuid)]
    id: String,
    #[schema(format = Uuid)]
    customer_id: String,
    total: Money,
    /// Order lines; 0 for an order placed with a total only.
    line_count: i64,
    /// `pending`, `approved`, `rejected` or `cancelled`.
    #[schema(schema_with = status_schema)]
    status: String,
    /// Why it was rejected or cancelled, when given.
    #[schema(required)]
    reason: Option<String>,
    #[schema(format = DateTime)]
    placed_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
    /// Version of the order's stream: what to send as `If-Match`.
    version: i64,
    /// Log position of the last event that changed the order.
    position: i64,
}

fn status_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(ORDER_STATUSES))
        .description(Some("Where the order is in its life."))
}

fn decode(row: &AnyRow, first: usize) -> Result<Order, sqlx::Error> {
    Ok(Order {
        id: row.try_get(first)?,
        customer_id: row.try_get(first + 1)?,
        total: Money {
            amount: row.try_get(first + 3)?,
            currency: row.try_get(first + 2)?,
        },
        line_count: row.try_get(first + 4)?,
        status: row.try_get(first + 5)?,
        reason: row.try_get(first + 6)?,
        placed_at: time(row.try_get(first + 7)?),
        updated_at: time(row.try_get(first + 8)?),
        version: row.try_get(first + 9)?,
        position: row.try_get(first + 10)?,
    })
}

/// One order
///
/// An order the view does not hold is `404`. A client that has just placed
/// one sends the command's `position` as `min_position`, to be answered once
/// the view reflects it.
#[utoipa::path(
    get,
    path = "/orders/{id}",
    operation_id = "get_order",
    tag = "orders",
    params(PathId, MinPosition),
    responses(
        (status = 200, description = "The order", body = Order, headers(
            ("Annals-Position" = u64, description = "The log position the view reflects"),
            ("ETag" = String, description = "The version of the order's stream, quoted (`\"3\"`): send it as `If-Match` to a command"),
        )),
        (status = 404, description = "`not-found`: no order with this id in the view at the position in `Annals-Position`", body = Problem, content_type = "application/problem+json", headers(
            ("Annals-Position" = u64, description = "The log position the view reflects"),
        )),
        ReadProblems,
    )
)]
pub async fn one(
    State(state): State<QueryState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let Path(id) = path.map_err(params::path_rejection)?;
    let id = params::id("order id", &id)?;
    let params = Params::parse(raw.as_deref(), &["min_position"])?;
    if let Some(min) = consistency::requested(&params, &headers)? {
        consistency::wait_for(&state, PROJECTION, min).await?;
    }
    let sql = format!(
        "SELECT cp.position, {COLUMNS} FROM projection_checkpoints cp \
         LEFT JOIN orders o ON o.id = $1 \
         WHERE cp.name = '{PROJECTION}' AND cp.track = 'live'"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&id)
        .fetch_optional(state.db().pool())
        .await
        .map_err(|e| database_problem(&e))?;
    let Some(row) = row else {
        return Err(not_found("order", &id, 0));
    };
    let position: i64 = row.try_get(0).map_err(|e| database_problem(&e))?;
    let found: Option<String> = row.try_get(1).map_err(|e| database_problem(&e))?;
    if found.is_none() {
        return Err(not_found("order", &id, position));
    }
    let order = decode(&row, 1).map_err(|e| database_problem(&e))?;
    Ok(json_answer(position, Some(order.version), &order))
}

/// A page of orders.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct OrderPage {
    items: Vec<Order>,
    /// Pass as `cursor` for the next page; null on the last page.
    #[schema(required)]
    next_cursor: Option<String>,
    /// The log position the page reflects (also in `Annals-Position`).
    position: i64,
}

/// The filters of `GET /orders`, as [`list`] checks them.
pub(crate) struct OrderFilters;

impl utoipa::IntoParams for OrderFilters {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            api_doc::query_param(
                "customer_id",
                api_doc::id_schema(),
                "Only the orders of this customer.",
            ),
            api_doc::query_param(
                "status",
                status_schema(),
                "Only the orders with this status.",
            ),
        ]
    }
}

/// A page of orders
///
/// Ordered by id. Filters combine.
#[utoipa::path(
    get,
    path = "/orders",
    operation_id = "list_orders",
    tag = "orders",
    params(OrderFilters, PageParams, MinPosition),
    responses(
        (status = 200, description = "A page of orders", body = OrderPage, headers(
            ("Annals-Position" = u64, description = "The log position the view reflects"),
        )),
        ReadProblems,
    )
)]
pub async fn list(
    State(state): State<QueryState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let params = Params::parse(
        raw.as_deref(),
        &["customer_id", "status", "limit", "cursor", "min_position"],
    )?;
    let customer = params
        .get("customer_id")
        .map(|raw| params::id("customer_id", raw))
        .transpose()?;
    let customer = customer.as_deref();
    let status = params.get("status");
    if let Some(status) = status
        && !ORDER_STATUSES.contains(&status)
    {
        return Err(Problem::bad_request(format!(
            "status must be one of {}, not {status:?}",
            ORDER_STATUSES.join(", ")
        ))
        .with("parameter", "status"));
    }
    let limit = crate::page_limit(&params, state.config())?;
    let fingerprint = cursor::fingerprint(&[("customer_id", customer), ("status", status)]);
    let after = match params.get("cursor") {
        Some(raw) => Some(cursor::decode(raw, &fingerprint, 1)?),
        None => None,
    };
    if let Some(min) = consistency::requested(&params, &headers)? {
        consistency::wait_for(&state, PROJECTION, min).await?;
    }

    let mut sql = format!("SELECT {COLUMNS} FROM orders o WHERE 1 = 1");
    let mut binds: Vec<Bind> = Vec::new();
    if let Some(customer) = customer {
        binds.push(Bind::Text(customer.to_owned()));
        sql.push_str(&format!(" AND o.customer_id = ${}", binds.len()));
    }
    if let Some(status) = status {
        binds.push(Bind::Text(status.to_owned()));
        sql.push_str(&format!(" AND o.status = ${}", binds.len()));
    }
    if let Some(keys) = &after {
        binds.push(Bind::Text(keys[0].clone()));
        sql.push_str(&format!(" AND o.id > ${}", binds.len()));
    }
    binds.push(Bind::Int(limit as i64 + 1));
    sql.push_str(&format!(" ORDER BY o.id LIMIT ${}", binds.len()));

    let (position, rows) = crate::read_page(&state, PROJECTION, sql, binds).await?;
    let mut items = rows
        .iter()
        .map(|row| decode(row, 0))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| database_problem(&e))?;
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items
            .last()
            .map(|last| cursor::encode(&fingerprint, &[&last.id]))
    } else {
        None
    };
    Ok(json_answer(
        position,
        None,
        &OrderPage {
            items,
            next_cursor,
            position,
        },
    ))
}
