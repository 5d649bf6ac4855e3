//! `GET /orders/{id}` and `GET /orders`.

use crate::views::ORDER_STATUSES;
use projector::sqlx;
use serde::Serialize;
use utoipa::openapi::schema::{ObjectBuilder, Type};

use super::{Money, time};
use query_api::{Filter, FromViewRow, ItemRoute, Key, ListRoute, View, ViewRow};

const VIEW: View = View::new("orders");

const SELECT: &str = "SELECT id, customer_id, currency, total, line_count, status, reason, \
     placed_at, updated_at, version, position FROM orders";

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

impl FromViewRow for Order {
    fn from_row(row: &ViewRow<'_>) -> Result<Self, sqlx::Error> {
        Ok(Order {
            id: row.get("id")?,
            customer_id: row.get("customer_id")?,
            total: Money {
                amount: row.get("total")?,
                currency: row.get("currency")?,
            },
            line_count: row.get("line_count")?,
            status: row.get("status")?,
            reason: row.get("reason")?,
            placed_at: time(row.get("placed_at")?),
            updated_at: time(row.get("updated_at")?),
            version: row.get("version")?,
            position: row.get("position")?,
        })
    }

    fn version(&self) -> Option<i64> {
        Some(self.version)
    }
}

/// `GET /orders/{id}`.
pub(crate) fn item() -> ItemRoute<Order> {
    ItemRoute::new("/orders/{id}", VIEW, &format!("{SELECT} WHERE id = $1"))
        .summary("One order")
        .description(
            "An order the view does not hold is `404`. A client that has just placed one sends \
             the command's `position` as `min_position`, to be answered once the view reflects \
             it.",
        )
        .operation_id("get_order")
        .tag("orders")
}

/// `GET /orders`.
pub(crate) fn list() -> ListRoute<Order> {
    ListRoute::new("/orders", VIEW, SELECT)
        .key(Key::text("id"))
        .filter(
            Filter::id("customer_id")
                .eq("customer_id")
                .describe("Only the orders of this customer."),
        )
        .filter(
            Filter::one_of("status", &ORDER_STATUSES)
                .eq("status")
                .describe("Only the orders with this status."),
        )
        .summary("A page of orders")
        .description("Ordered by id. Filters combine.")
        .operation_id("list_orders")
        .tag("orders")
}
