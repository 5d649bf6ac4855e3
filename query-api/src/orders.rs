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

use crate::customers::Bind;
use crate::params::{ID_BYTES_MAX, Params, check_id};
use crate::{
    Money, QueryState, consistency, cursor, database_problem, json_answer, not_found, time,
};

const PROJECTION: &str = "orders";

const COLUMNS: &str = "o.id, o.customer_id, o.currency, o.total, o.line_count, o.status, \
     o.reason, o.placed_at, o.updated_at, o.version, o.position";

#[derive(Debug, Serialize)]
struct Order {
    id: String,
    customer_id: String,
    total: Money,
    line_count: i64,
    /// `pending`, `approved`, `rejected` or `cancelled`.
    status: String,
    /// Why it was rejected or cancelled, when given.
    reason: Option<String>,
    placed_at: String,
    updated_at: String,
    /// Version of the order's stream: what to send as `If-Match`.
    version: i64,
    /// Log position of the last event that changed the order.
    position: i64,
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

pub async fn one(
    State(state): State<QueryState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let Path(id) = path.map_err(|e| Problem::bad_request(e.body_text()))?;
    check_id(&id)?;
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

#[derive(Debug, Serialize)]
struct Page {
    items: Vec<Order>,
    next_cursor: Option<String>,
    position: i64,
}

pub async fn list(
    State(state): State<QueryState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let params = Params::parse(
        raw.as_deref(),
        &["customer_id", "status", "limit", "cursor", "min_position"],
    )?;
    let customer = params.text("customer_id", ID_BYTES_MAX)?;
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
        &Page {
            items,
            next_cursor,
            position,
        },
    ))
}
