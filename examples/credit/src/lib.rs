//! The reference example domain of annals, built on its public API alone:
//! customers with a credit line, orders that reserve it, and the
//! order-fulfilment saga that drives a placed order through the
//! customer's credit check (and compensates).
//!
//! - [`domain`]: the aggregates ([`domain::customer::Customer`],
//!   [`domain::order::Order`]), their events, upcasters and personal-data
//!   policy;
//! - [`routes`]: their command routes;
//! - [`saga`]: the order-fulfilment saga;
//! - [`views`]: the `customers` and `orders` projections and their DDL;
//! - [`queries`]: the query routes over those views;
//! - [`generator`]: realistic event streams of this domain for tests and
//!   benchmarks.
//!
//! [`app`] puts them together; the `annals` binary is `annals_credit::app().run()`.

use std::time::Duration;

use annals::{App, SagaSetup, Setting};

pub mod domain;
mod erasure;
pub mod generator;
pub mod queries;
pub mod routes;
pub mod saga;
pub mod views;

pub use erasure::forget_customer;
pub use saga::{OrderFulfilment, OrderFulfilmentConfig};

/// The setting of how long an order may wait for its credit check:
/// `--order-decision-timeout-ms`, `ANNALS_ORDER_DECISION_TIMEOUT_MS`.
pub const ORDER_DECISION_TIMEOUT: &str = "order-decision-timeout";

/// The credit domain as an annals application: customers, orders, the
/// order-fulfilment saga and their views and queries.
pub fn app() -> App {
    App::new("annals")
        .aggregate(routes::customers())
        .aggregate(routes::orders())
        .upcasters(domain::upcasters())
        .personal_data(domain::customer::shredding_policy())
        .setting(Setting::duration(
            ORDER_DECISION_TIMEOUT,
            Duration::from_secs(30),
            "An order whose credit check has not finished this many milliseconds after it was \
             placed is rejected (reason `timeout: ...`) and any credit reserved for it released.",
        ))
        .saga(|setup: &SagaSetup| {
            use domain::{customer::Customer, order::Order};
            Ok(OrderFulfilment::new(
                setup.commands().handler::<Customer>(),
                setup.commands().handler::<Order>(),
                OrderFulfilmentConfig {
                    decision_timeout: setup.settings().duration(ORDER_DECISION_TIMEOUT)?,
                },
            ))
        })
        .projection(views::CustomersProjection)
        .projection(views::OrdersProjection)
        .queries(queries::routes())
}
