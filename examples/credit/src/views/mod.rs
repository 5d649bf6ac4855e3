//! Views of the reference domain: customers with a credit limit, orders
//! that reserve credit (see the event contract in examples/credit/README.md).
//!
//! - [`CustomersProjection`] → table `customers`: identity, credit limit,
//!   reserved and available credit, order counts, stream version.
//! - [`OrdersProjection`] → table `orders`: customer, total, status, reason,
//!   times, stream version.
//!
//! Both fold a batch in memory (load the rows it touches, apply the events,
//! write each changed row once with a multi-row upsert), so a batch costs a
//! few statements whatever its size.

use std::sync::Arc;

mod customers;
pub mod events;
mod orders;
mod rows;
mod sql;

pub use customers::{COLUMNS as CUSTOMER_COLUMNS, CustomersProjection};
pub use orders::{COLUMNS as ORDER_COLUMNS, OrdersProjection, STATUSES as ORDER_STATUSES};

use projector::Projection;

/// The reference projections, ready to register.
pub fn projections() -> Vec<Arc<dyn Projection>> {
    vec![Arc::new(CustomersProjection), Arc::new(OrdersProjection)]
}
