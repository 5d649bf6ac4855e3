//! `GET /customers/{id}` and `GET /customers`.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use projector::http::Problem;
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;
use utoipa::openapi::path::{Parameter, ParameterIn};

use crate::api_doc::{self, MinPosition, PageParams, PathId, ReadProblems};
use crate::params::{self, Params};
use crate::{
    Money, QueryState, consistency, cursor, database_problem, json_answer, not_found, time,
};

const PROJECTION: &str = "customers";
/// The largest credit amount a filter accepts (the domain's bound on
/// amounts, in minor units).
pub(crate) const AMOUNT_MAX: i64 = 1_000_000_000_000_000;
/// The longest name prefix accepted, in characters.
const NAME_PREFIX_CHARS_MAX: usize = 100;

const COLUMNS: &str = "c.id, c.name, c.email, c.currency, c.credit_limit, c.reserved, c.available, \
     c.orders_placed, c.orders_approved, c.orders_rejected, c.orders_cancelled, c.version, \
     c.registered_at, c.updated_at, c.position, c.name_folded";

/// How many of the customer's orders reached each stage.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct OrderCounts {
    placed: i64,
    approved: i64,
    rejected: i64,
    cancelled: i64,
}

/// A customer and their credit line.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Customer {
    #[schema(format = Uuid)]
    id: String,
    /// `[erased]` once the customer's personal data was erased.
    name: String,
    /// `[erased]` once the customer's personal data was erased.
    email: String,
    /// The credit the customer may reserve.
    credit_limit: Money,
    /// Credit reserved by orders.
    reserved: Money,
    /// Credit left to reserve; 0 when used up.
    available: Money,
    orders: OrderCounts,
    /// Version of the customer's stream: what to send as `If-Match`.
    version: i64,
    #[schema(format = DateTime)]
    registered_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
    /// Log position of the last event that changed the customer.
    position: i64,
    #[serde(skip)]
    name_folded: String,
}

/// Decodes the customer columns starting at column `first`.
fn decode(row: &AnyRow, first: usize) -> Result<Customer, sqlx::Error> {
    let currency: String = row.try_get(first + 3)?;
    let money = |amount: i64| Money {
        amount,
        currency: currency.clone(),
    };
    Ok(Customer {
        id: row.try_get(first)?,
        name: row.try_get(first + 1)?,
        email: row.try_get(first + 2)?,
        credit_limit: money(row.try_get(first + 4)?),
        reserved: money(row.try_get(first + 5)?),
        available: money(row.try_get(first + 6)?),
        orders: OrderCounts {
            placed: row.try_get(first + 7)?,
            approved: row.try_get(first + 8)?,
            rejected: row.try_get(first + 9)?,
            cancelled: row.try_get(first + 10)?,
        },
        version: row.try_get(first + 11)?,
        registered_at: time(row.try_get(first + 12)?),
        updated_at: time(row.try_get(first + 13)?),
        position: row.try_get(first + 14)?,
        name_folded: row.try_get(first + 15)?,
    })
}

/// One customer
///
/// A customer the view does not hold is `404`. A client that has just
/// registered one sends the command's `position` as `min_position`, to be
/// answered once the view reflects it.
#[utoipa::path(
    get,
    path = "/customers/{id}",
    operation_id = "get_customer",
    tag = "customers",
    params(PathId, MinPosition),
    responses(
        (status = 200, description = "The customer", body = Customer, headers(
            ("Annals-Position" = u64, description = "The log position the view reflects"),
            ("ETag" = String, description = "The version of the customer's stream, quoted (`\"3\"`): send it as `If-Match` to a command"),
        )),
        (status = 404, description = "`not-found`: no customer with this id in the view at the position in `Annals-Position`", body = Problem, content_type = "application/problem+json", headers(
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
    let id = params::id("customer id", &id)?;
    let params = Params::parse(raw.as_deref(), &["min_position"])?;
    if let Some(min) = consistency::requested(&params, &headers)? {
        consistency::wait_for(&state, PROJECTION, min).await?;
    }
    // The checkpoint and the row in one statement: one snapshot.
    let sql = format!(
        "SELECT cp.position, {COLUMNS} FROM projection_checkpoints cp \
         LEFT JOIN customers c ON c.id = $1 \
         WHERE cp.name = '{PROJECTION}' AND cp.track = 'live'"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&id)
        .fetch_optional(state.db().pool())
        .await
        .map_err(|e| database_problem(&e))?;
    let Some(row) = row else {
        // No checkpoint: the projector never ran, the view is empty.
        return Err(not_found("customer", &id, 0));
    };
    let position: i64 = row.try_get(0).map_err(|e| database_problem(&e))?;
    let found: Option<String> = row.try_get(1).map_err(|e| database_problem(&e))?;
    if found.is_none() {
        return Err(not_found("customer", &id, position));
    }
    let customer = decode(&row, 1).map_err(|e| database_problem(&e))?;
    Ok(json_answer(position, Some(customer.version), &customer))
}

/// A page of customers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct CustomerPage {
    items: Vec<Customer>,
    /// Pass as `cursor` for the next page; null on the last page.
    #[schema(required)]
    next_cursor: Option<String>,
    /// The log position the page reflects (also in `Annals-Position`).
    position: i64,
}

/// The filters of `GET /customers`, as [`list`] checks them.
pub(crate) struct CustomerFilters;

impl utoipa::IntoParams for CustomerFilters {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            api_doc::query_param(
                "credit_available",
                api_doc::integer(0, AMOUNT_MAX),
                "Only customers with exactly this much credit available, in minor units \
                 (`0`: credit used up).",
            ),
            api_doc::query_param(
                "name_prefix",
                api_doc::text(NAME_PREFIX_CHARS_MAX),
                "Only customers whose name starts with this, ignoring case; the page is \
                 then ordered by name.",
            ),
        ]
    }
}

/// A page of customers
///
/// Ordered by id, or by name then id with `name_prefix`. Filters combine.
#[utoipa::path(
    get,
    path = "/customers",
    operation_id = "list_customers",
    tag = "customers",
    params(CustomerFilters, PageParams, MinPosition),
    responses(
        (status = 200, description = "A page of customers", body = CustomerPage, headers(
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
        &[
            "credit_available",
            "name_prefix",
            "limit",
            "cursor",
            "min_position",
        ],
    )?;
    let credit = params.integer("credit_available", 0, AMOUNT_MAX)?;
    let prefix = params
        .text("name_prefix", NAME_PREFIX_CHARS_MAX)?
        .map(projector::personal::fold);
    let limit = crate::page_limit(&params, state.config())?;
    let credit_text = credit.map(|c| c.to_string());
    let by_name = prefix.is_some();
    let fingerprint = cursor::fingerprint(&[
        ("credit_available", credit_text.as_deref()),
        ("name_prefix", prefix.as_deref()),
    ]);
    let after = match params.get("cursor") {
        Some(raw) => Some(cursor::decode(
            raw,
            &fingerprint,
            if by_name { 2 } else { 1 },
        )?),
        None => None,
    };
    if let Some(min) = consistency::requested(&params, &headers)? {
        consistency::wait_for(&state, PROJECTION, min).await?;
    }

    // Only fixed fragments go into the SQL text; every value is bound.
    let mut sql = format!("SELECT {COLUMNS} FROM customers c WHERE 1 = 1");
    let mut binds: Vec<Bind> = Vec::new();
    if let Some(credit) = credit {
        binds.push(Bind::Int(credit));
        sql.push_str(&format!(" AND c.available = ${}", binds.len()));
    }
    if let Some(prefix) = &prefix {
        binds.push(Bind::Text(prefix.clone()));
        sql.push_str(&format!(" AND c.name_folded >= ${}", binds.len()));
        if let Some(upper) = prefix_upper_bound(prefix) {
            binds.push(Bind::Text(upper));
            sql.push_str(&format!(" AND c.name_folded < ${}", binds.len()));
        }
    }
    match (&after, by_name) {
        (Some(keys), true) => {
            binds.push(Bind::Text(keys[0].clone()));
            binds.push(Bind::Text(keys[1].clone()));
            sql.push_str(&format!(
                " AND (c.name_folded, c.id) > (${}, ${})",
                binds.len() - 1,
                binds.len()
            ));
        }
        (Some(keys), false) => {
            binds.push(Bind::Text(keys[0].clone()));
            sql.push_str(&format!(" AND c.id > ${}", binds.len()));
        }
        (None, _) => {}
    }
    sql.push_str(if by_name {
        " ORDER BY c.name_folded, c.id"
    } else {
        " ORDER BY c.id"
    });
    binds.push(Bind::Int(limit as i64 + 1));
    sql.push_str(&format!(" LIMIT ${}", binds.len()));

    let (position, rows) = crate::read_page(&state, PROJECTION, sql, binds).await?;
    let mut items = rows
        .iter()
        .map(|row| decode(row, 0))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| database_problem(&e))?;
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|last| {
            if by_name {
                cursor::encode(&fingerprint, &[&last.name_folded, &last.id])
            } else {
                cursor::encode(&fingerprint, &[&last.id])
            }
        })
    } else {
        None
    };
    Ok(json_answer(
        position,
        None,
        &CustomerPage {
            items,
            next_cursor,
            position,
        },
    ))
}

/// A value to bind to a page query.
pub(crate) enum Bind {
    Int(i64),
    Text(String),
}

/// The smallest string greater than every string starting with `prefix`
/// (byte order), or `None` when there is none.
fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = last as u32 + 1;
        // Skip the surrogate range, which no char occupies.
        if (0xD800..=0xDFFF).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upper_bound_of_a_prefix_covers_exactly_its_extensions() {
        assert_eq!(prefix_upper_bound("ab").as_deref(), Some("ac"));
        assert_eq!(prefix_upper_bound("zoë").as_deref(), Some("zoì"));
        assert_eq!(
            prefix_upper_bound("a\u{D7FF}").as_deref(),
            Some("a\u{E000}")
        );
        assert_eq!(
            prefix_upper_bound("a\u{10FFFF}").as_deref(),
            Some("b"),
            "the last char overflows into the previous one"
        );
        assert_eq!(prefix_upper_bound("\u{10FFFF}"), None);
        for name in ["ab", "abz", "ab\u{10FFFF}x"] {
            assert!(("ab".."ac").contains(&name));
        }
    }
}
