//! `GET /customers/{id}` and `GET /customers`.

use projector::sqlx;
use serde::Serialize;

use super::{Money, time};
use query_api::{Filter, FromViewRow, ItemRoute, Key, ListRoute, View, ViewRow};

const VIEW: View = View::new("customers");
/// The largest credit amount a filter accepts (the domain's bound on
/// amounts, in minor units).
pub(crate) const AMOUNT_MAX: i64 = 1_000_000_000_000_000;
/// The longest name prefix accepted, in characters.
const NAME_PREFIX_CHARS_MAX: usize = 100;

const SELECT: &str = "SELECT id, name, email, currency, credit_limit, reserved, available, \
     orders_placed, orders_approved, orders_rejected, orders_cancelled, version, \
     registered_at, updated_at, position, name_folded FROM customers";

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
}

impl FromViewRow for Customer {
    fn from_row(row: &ViewRow<'_>) -> Result<Self, sqlx::Error> {
        let currency: String = row.get("currency")?;
        let money = |amount: i64| Money {
            amount,
            currency: currency.clone(),
        };
        Ok(Customer {
            id: row.get("id")?,
            name: row.get("name")?,
            email: row.get("email")?,
            credit_limit: money(row.get("credit_limit")?),
            reserved: money(row.get("reserved")?),
            available: money(row.get("available")?),
            orders: OrderCounts {
                placed: row.get("orders_placed")?,
                approved: row.get("orders_approved")?,
                rejected: row.get("orders_rejected")?,
                cancelled: row.get("orders_cancelled")?,
            },
            version: row.get("version")?,
            registered_at: time(row.get("registered_at")?),
            updated_at: time(row.get("updated_at")?),
            position: row.get("position")?,
        })
    }

    fn version(&self) -> Option<i64> {
        Some(self.version)
    }
}

/// `GET /customers/{id}`.
pub(crate) fn item() -> ItemRoute<Customer> {
    ItemRoute::new("/customers/{id}", VIEW, &format!("{SELECT} WHERE id = $1"))
        .summary("One customer")
        .description(
            "A customer the view does not hold is `404`. A client that has just registered one \
             sends the command's `position` as `min_position`, to be answered once the view \
             reflects it.",
        )
        .operation_id("get_customer")
        .tag("customers")
}

/// `GET /customers`.
pub(crate) fn list() -> ListRoute<Customer> {
    ListRoute::new("/customers", VIEW, SELECT)
        .key(Key::text("id"))
        .filter(
            Filter::integer("credit_available", 0, AMOUNT_MAX)
                .eq("available")
                .describe(
                    "Only customers with exactly this much credit available, in minor units \
                     (`0`: credit used up).",
                ),
        )
        .filter(
            Filter::text("name_prefix", NAME_PREFIX_CHARS_MAX)
                .normalize(projector::personal::fold)
                .starts_with("name_folded")
                .ordered_by(Key::text("name_folded").then_text("id"))
                .describe(
                    "Only customers whose name starts with this, ignoring case; the page is \
                     then ordered by name.",
                ),
        )
        .summary("A page of customers")
        .description("Ordered by id, or by name then id with `name_prefix`. Filters combine.")
        .operation_id("list_customers")
        .tag("customers")
}
