//! The `orders` view: one row per order with its status as the order
//! stream's events left it.

use projector::sqlx;
use std::collections::HashMap;

use async_trait::async_trait;
use event_store::RecordedEvent;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::events::{self, OrderCancelled, OrderPlaced, OrderRef, OrderRejected};
use super::rows::{self, AnyQuery, Stamp, ViewRow};
use projector::Schema;
use projector::{ApplyError, Projection, ViewTx};

/// Builds the `orders` table.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrdersProjection;

/// The columns of `orders`, in the order rows are read and written.
pub const COLUMNS: [&str; 11] = [
    "id",
    "customer_id",
    "currency",
    "total",
    "line_count",
    "status",
    "reason",
    "placed_at",
    "updated_at",
    "version",
    "position",
];

/// The statuses an order row can have.
pub const STATUSES: [&str; 4] = ["pending", "approved", "rejected", "cancelled"];

/// Columns set when an order is placed that no later event changes (a
/// second placement is refused): the upsert leaves them, and the
/// by-customer index, alone. A new event that changes one must take it out
/// of here.
const FIXED_COLUMNS: [&str; 5] = [
    "customer_id",
    "currency",
    "total",
    "line_count",
    "placed_at",
];

#[derive(Debug, Clone, PartialEq)]
struct Order {
    id: String,
    customer_id: String,
    currency: String,
    total: i64,
    line_count: i64,
    status: &'static str,
    reason: Option<String>,
    placed_at: i64,
    stamp: Stamp,
}

impl Order {
    /// Marks the row as changed by `event`.
    fn touched_by(&mut self, event: &RecordedEvent) {
        self.stamp.touched_by(event, events::ORDER_STREAM_PREFIX);
    }
}

impl ViewRow for Order {
    const KIND: &'static str = "order";
    const COLUMNS: &'static [&'static str] = &COLUMNS;
    const FIXED_COLUMNS: &'static [&'static str] = &FIXED_COLUMNS;

    fn id(&self) -> &str {
        &self.id
    }

    fn from_row(row: &AnyRow) -> Result<Self, ApplyError> {
        let status: String = row.try_get(5)?;
        let status = STATUSES
            .iter()
            .find(|s| **s == status)
            .copied()
            .ok_or_else(|| ApplyError::Handler(format!("unknown order status {status:?}")))?;
        Ok(Self {
            id: row.try_get(0)?,
            customer_id: row.try_get(1)?,
            currency: row.try_get(2)?,
            total: row.try_get(3)?,
            line_count: row.try_get(4)?,
            status,
            reason: row.try_get(6)?,
            placed_at: row.try_get(7)?,
            stamp: Stamp {
                updated_at: row.try_get(8)?,
                version: row.try_get(9)?,
                position: row.try_get(10)?,
            },
        })
    }

    fn bind(&self, query: AnyQuery) -> AnyQuery {
        query
            .bind(self.id.clone())
            .bind(self.customer_id.clone())
            .bind(self.currency.clone())
            .bind(self.total)
            .bind(self.line_count)
            .bind(self.status)
            .bind(self.reason.clone())
            .bind(self.placed_at)
            .bind(self.stamp.updated_at)
            .bind(self.stamp.version)
            .bind(self.stamp.position)
    }
}

enum Change {
    Placed(OrderPlaced),
    Approved(OrderRef),
    Rejected(OrderRejected),
    Cancelled(OrderCancelled),
}

impl Change {
    fn decode(event: &RecordedEvent) -> Result<Option<Self>, ApplyError> {
        let bad = |e: serde_json::Error| {
            ApplyError::event(event, format!("{} does not decode: {e}", event.event_type))
        };
        Ok(Some(match event.event_type.as_str() {
            events::ORDER_PLACED => Change::Placed(event.data_as().map_err(bad)?),
            events::ORDER_APPROVED => Change::Approved(event.data_as().map_err(bad)?),
            events::ORDER_REJECTED => Change::Rejected(event.data_as().map_err(bad)?),
            events::ORDER_CANCELLED => Change::Cancelled(event.data_as().map_err(bad)?),
            _ => return Ok(None),
        }))
    }

    fn order_id(&self) -> &str {
        match self {
            Change::Placed(e) => &e.order_id,
            Change::Approved(e) => &e.order_id,
            Change::Rejected(e) => &e.order_id,
            Change::Cancelled(e) => &e.order_id,
        }
    }
}

#[async_trait]
impl Projection for OrdersProjection {
    fn name(&self) -> &'static str {
        "orders"
    }

    fn version(&self) -> u32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["orders"]
    }

    fn schema(&self) -> Schema {
        // The handler finds rows by their id only: the other indexes are
        // built after a rebuild's load.
        Schema::new(
            include_str!("schema/orders.sqlite.sql"),
            include_str!("schema/orders.postgres.sql"),
        )
        .indexes_after_load()
    }

    fn event_types(&self) -> &'static [&'static str] {
        &[
            events::ORDER_PLACED,
            events::ORDER_APPROVED,
            events::ORDER_REJECTED,
            events::ORDER_CANCELLED,
        ]
    }

    async fn apply(&self, tx: &mut ViewTx<'_>, batch: &[RecordedEvent]) -> Result<(), ApplyError> {
        let table = tx.table("orders")?;
        let changes = rows::decode_batch(batch, Change::decode)?;
        // Placed orders are looked up too: one that exists is a duplicate.
        let ids = rows::distinct(changes.iter().map(|(_, c)| c.order_id()).collect());
        let mut orders: HashMap<String, Order> = rows::load(tx, table, &ids).await?;
        let mut changed: Vec<String> = Vec::with_capacity(changes.len());
        for (event, change) in changes {
            let id = change.order_id().to_owned();
            fold(&mut orders, event, change, &id)?;
            changed.push(id);
        }
        rows::write(tx, table, &rows::distinct(changed), &orders).await
    }
}

fn fold(
    orders: &mut HashMap<String, Order>,
    event: &RecordedEvent,
    change: Change,
    id: &str,
) -> Result<(), ApplyError> {
    if let Change::Placed(e) = change {
        if orders.contains_key(id) {
            return Err(ApplyError::event(
                event,
                format!("order {id} was already placed"),
            ));
        }
        let mut order = Order {
            id: e.order_id.clone(),
            customer_id: e.customer_id,
            currency: e.total.currency,
            total: e.total.amount,
            line_count: e.lines.len() as i64,
            status: "pending",
            reason: None,
            placed_at: event.timestamp.0,
            stamp: Stamp::default(),
        };
        order.touched_by(event);
        orders.insert(e.order_id, order);
        return Ok(());
    }
    let order = orders.get_mut(id).ok_or_else(|| {
        ApplyError::event(
            event,
            format!(
                "{} for order {id}, which was never placed",
                event.event_type
            ),
        )
    })?;
    // The aggregate decides which transitions are allowed; the view shows
    // where the events left the order.
    match change {
        Change::Placed(_) => {}
        Change::Approved(_) => {
            order.status = "approved";
            order.reason = None;
        }
        Change::Rejected(e) => {
            order.status = "rejected";
            order.reason = Some(e.reason);
        }
        Change::Cancelled(e) => {
            order.status = "cancelled";
            order.reason = e.reason;
        }
    }
    order.touched_by(event);
    Ok(())
}
