//! The query routes of the reference credit domain, declared on the public
//! API like any application's: customers and their credit lines, orders.
//!
//! | method | path | answers |
//! |---|---|---|
//! | GET | `/customers/{id}` | one customer (`ETag: "<stream version>"`) |
//! | GET | `/customers?credit_available=&name_prefix=&limit=&cursor=` | a page of customers, by id (by name with `name_prefix`) |
//! | GET | `/orders/{id}` | one order (`ETag: "<stream version>"`) |
//! | GET | `/orders?customer_id=&status=&limit=&cursor=` | a page of orders, by id |

mod customers;
mod orders;

use query_api::QueryRoutes;

/// The reference domain's query routes.
pub fn routes() -> QueryRoutes {
    QueryRoutes::new()
        .list(customers::list())
        .item(customers::item())
        .list(orders::list())
        .item(orders::item())
}

/// An amount of money: an integer number of minor units (cents for EUR)
/// and an ISO 4217 currency code. `{"amount": 1250, "currency": "EUR"}` is
/// 12.50 EUR.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
// Only for the schema (`additionalProperties: false`): the command API's
// `Money` says the same, and a document merging both keeps one of them.
#[serde(deny_unknown_fields)]
pub(crate) struct Money {
    /// Minor units of the currency, never fractional.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_i64, example = 1250)]
    pub amount: i64,
    /// ISO 4217 currency code.
    #[schema(pattern = "^[A-Z]{3}$", example = "EUR")]
    pub currency: String,
}

/// A time from the views (µs since the epoch) as RFC 3339.
fn time(micros: i64) -> String {
    projector::time::rfc3339(event_store::Timestamp(micros))
}

#[cfg(test)]
mod tests;
