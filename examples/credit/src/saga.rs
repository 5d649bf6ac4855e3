//! The order-fulfilment saga: the reference process manager, which takes a
//! placed order through the customer's credit check and back out again
//! when the order moves on.
//!
//! ```text
//! OrderPlaced    ──▶ ReserveCredit(customer, order, total)
//!                      ok / already reserved ──▶ Approve(order)
//!                      │                           order moved on ──▶ ReleaseCredit (compensation)
//!                      refused by a rule ───────▶ Reject(order, "<rule>: <why>")
//!                      not done in time ────────▶ Reject(order, "timeout: ...") + ReleaseCredit
//! OrderCancelled ──▶ ReleaseCredit(customer, order)   (nothing reserved: fine)
//! ```
//!
//! Orchestration: the saga alone decides what happens next; the customer
//! and order aggregates only accept or refuse its commands. Each order is a
//! lane (its stream), so its cancellation is always handled after its
//! placement, while different orders go through at the same time.
//!
//! The saga's own state is the set of orders it is deciding (placed, not
//! yet approved or rejected), with when each was placed; the status shows
//! how many and the oldest.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use event_store::{EventFilter, RecordedEvent, Timestamp};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::customer::Customer;
use crate::domain::customer::{CustomerCommand, CustomerError};
use crate::domain::order::{
    Order, OrderCommand, OrderError, OrderEvent, OrderPlaced, OrderStatus, Reason,
};
use command_api::aggregate::{Aggregate, DomainError, DomainEvent};
use command_api::error::CommandError;
use command_api::handler::CommandHandler;
use command_api::idempotency::Fenced;
use command_api::saga::{Saga, SagaContext, SagaError};

/// The saga's name: the first part of its idempotency keys.
pub const SAGA_NAME: &str = "order-fulfilment";

/// The stream holding the saga's checkpoints.
pub const CHECKPOINT_STREAM: &str = "saga-order-fulfilment-checkpoint";

/// What the order-fulfilment saga is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderFulfilmentConfig {
    /// An order whose credit check has not finished this long after it was
    /// placed (its commit time) is rejected with the reason `timeout: ...`,
    /// and whatever was reserved for it is released.
    pub decision_timeout: Duration,
}

impl Default for OrderFulfilmentConfig {
    fn default() -> Self {
        Self {
            decision_timeout: Duration::from_secs(30),
        }
    }
}

/// An order the saga is deciding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    pub customer_id: Uuid,
    /// The placement's commit time, µs since the Unix epoch.
    pub placed_at: i64,
}

/// The saga's durable state: the orders placed and not yet decided.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderFulfilmentState {
    #[serde(default)]
    pub in_flight: BTreeMap<Uuid, InFlight>,
}

/// The order-fulfilment saga. Build it with the command handlers it issues
/// commands through (those of the command API, so they share its locks and
/// caches), then run it with a [`SagaRunner`](command_api::saga::SagaRunner).
#[derive(Debug)]
pub struct OrderFulfilment {
    customers: CommandHandler<Customer>,
    orders: CommandHandler<Order>,
    config: OrderFulfilmentConfig,
}

/// What one event led to, for the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Approved,
    Rejected,
    TimedOut,
    /// Approving failed because the order moved on; its credit was released.
    Compensated,
    Released,
    NothingToDo,
}

#[async_trait]
impl Saga for OrderFulfilment {
    type State = OrderFulfilmentState;

    fn name(&self) -> &'static str {
        SAGA_NAME
    }

    fn filter(&self) -> EventFilter {
        Self::filter()
    }

    async fn handle(
        &self,
        event: &RecordedEvent,
        context: &SagaContext<Self::State>,
    ) -> Result<(), SagaError> {
        let decoded = OrderEvent::decode(&event.event_type, event.schema_version, &event.data)
            .map_err(|e| SagaError::Permanent(e.to_string()))?;
        let outcome = match decoded {
            OrderEvent::Placed(placed) => {
                let outcome = self.on_placed(event, &placed, context).await;
                // Every way on_placed succeeds leaves the order decided (or
                // found decided), and a permanent failure skips the event:
                // either way it is no longer in flight. Only a transient
                // failure (retried) keeps it.
                if !matches!(outcome, Err(SagaError::Transient(_))) {
                    context.update(|s| s.in_flight.remove(&placed.order_id));
                }
                outcome?
            }
            OrderEvent::Cancelled(cancelled) => {
                let outcome = self
                    .release(context, cancelled.customer_id, cancelled.order_id)
                    .await?;
                context.update(|s| s.in_flight.remove(&cancelled.order_id));
                outcome
            }
            OrderEvent::Approved(_) | OrderEvent::Rejected(_) => Outcome::NothingToDo,
        };
        tracing::debug!(
            position = event.position.0,
            ?outcome,
            "order-fulfilment step"
        );
        Ok(())
    }

    fn summary(&self, state: &Self::State) -> BTreeMap<String, serde_json::Value> {
        let mut summary = BTreeMap::new();
        summary.insert("orders_in_flight".into(), state.in_flight.len().into());
        if let Some(oldest) = state.in_flight.values().map(|o| o.placed_at).min() {
            summary.insert("oldest_in_flight_placed_at_us".into(), oldest.into());
        }
        summary
    }
}

impl OrderFulfilment {
    pub fn new(
        customers: CommandHandler<Customer>,
        orders: CommandHandler<Order>,
        config: OrderFulfilmentConfig,
    ) -> Self {
        Self {
            customers,
            orders,
            config,
        }
    }

    /// Which events the saga reacts to.
    pub fn filter() -> EventFilter {
        EventFilter {
            stream_prefixes: vec![format!("{}-", Order::TYPE)],
            event_types: vec!["OrderPlaced".into(), "OrderCancelled".into()],
        }
    }

    /// Takes a placed order through the credit check: reserve, then approve
    /// or reject; or, when the order moved on or its time ran out, undo
    /// what was reserved for it.
    async fn on_placed(
        &self,
        event: &RecordedEvent,
        placed: &OrderPlaced,
        context: &SagaContext<OrderFulfilmentState>,
    ) -> Result<Outcome, SagaError> {
        let order_id = placed.order_id;
        let customer_id = placed.customer_id;
        if let Some(outcome) = self.settled_already(placed, context).await? {
            return Ok(outcome);
        }
        context.update(|s| {
            s.in_flight.insert(
                order_id,
                InFlight {
                    customer_id,
                    placed_at: event.timestamp.as_micros(),
                },
            )
        });
        if self.overdue(event.timestamp, context.now()) {
            return self.time_out(context, customer_id, order_id).await;
        }
        if let Some(reason) = self.reserve(placed, context).await? {
            return self.refuse(context, customer_id, order_id, reason).await;
        }
        self.approve(context, customer_id, order_id).await
    }

    /// The outcome when the order's credit check is over already (`None`
    /// while the order is pending), undoing what is still held for an order
    /// that moved on.
    async fn settled_already(
        &self,
        placed: &OrderPlaced,
        context: &SagaContext<OrderFulfilmentState>,
    ) -> Result<Option<Outcome>, SagaError> {
        let order_id = placed.order_id;
        let order = self
            .orders
            .load(order_id)
            .await
            .map_err(SagaError::from_command)?;
        match order.state.status() {
            Some(OrderStatus::Pending) => Ok(None),
            // Handled before (this is a redelivery), or decided by someone
            // else; either way the credit check is over.
            Some(OrderStatus::Approved) => Ok(Some(Outcome::NothingToDo)),
            // Moved on: whatever is still held for it must go, and a
            // reservation a crashed run may still have on its way must
            // never land. One that beat the fence is readable once the
            // fence answers, so the release finds it (the cancellation's
            // own release may come too early to).
            Some(OrderStatus::Rejected | OrderStatus::Cancelled) => {
                context
                    .fence("reserve", "the order was decided or cancelled first")
                    .await?;
                self.release(context, placed.customer_id, order_id)
                    .await
                    .map(Some)
            }
            None => Err(SagaError::Permanent(format!(
                "order {order_id} has an OrderPlaced event but does not load as placed"
            ))),
        }
    }

    /// Rejects an order whose credit check ran past its time, and releases
    /// what was reserved for it.
    async fn time_out(
        &self,
        context: &SagaContext<OrderFulfilmentState>,
        customer_id: Uuid,
        order_id: Uuid,
    ) -> Result<Outcome, SagaError> {
        let limit = self.config.decision_timeout.as_millis();
        let reason = reason(
            "timeout",
            &format!("the credit check did not finish within {limit} ms of the placement"),
        )?;
        self.reject(context, customer_id, order_id, reason).await?;
        // A reservation made by an earlier attempt (or still on its way)
        // must not outlive the order.
        context.fence("reserve", "the order timed out").await?;
        self.release(context, customer_id, order_id).await?;
        Ok(Outcome::TimedOut)
    }

    /// Reserves the order's total on its customer: `None` when it is
    /// reserved (now or before), else why the credit check refuses.
    async fn reserve(
        &self,
        placed: &OrderPlaced,
        context: &SagaContext<OrderFulfilmentState>,
    ) -> Result<Option<Reason>, SagaError> {
        let (customer_id, order_id) = (placed.customer_id, placed.order_id);
        let ids = [customer_id.as_bytes().as_slice(), order_id.as_bytes()];
        let reserve = CustomerCommand::ReserveCredit {
            customer_id,
            order_id,
            amount: placed.total,
        };
        match self
            .customers
            .execute(reserve, context.command("reserve", &ids)?)
            .await
        {
            Ok(_) | Err(CommandError::Rejected(CustomerError::AlreadyReserved(_))) => Ok(None),
            Err(CommandError::Rejected(refusal)) => {
                Ok(Some(reason(refusal.rule(), &refusal.to_string())?))
            }
            Err(CommandError::NotFound { .. }) => {
                let refusal = CustomerError::NotRegistered(customer_id);
                Ok(Some(reason(refusal.rule(), &refusal.to_string())?))
            }
            // The key's record is a fence: an earlier run decided the
            // reservation must not happen and was on its way to reject.
            Err(CommandError::Fenced { .. }) => Ok(Some(reason(
                "credit-check-abandoned",
                "an earlier credit check was abandoned",
            )?)),
            Err(e) => Err(SagaError::from_command(e)),
        }
    }

    /// Rejects an order the credit check refused, once no reservation of an
    /// earlier run can land any more.
    async fn refuse(
        &self,
        context: &SagaContext<OrderFulfilmentState>,
        customer_id: Uuid,
        order_id: Uuid,
        reason: Reason,
    ) -> Result<Outcome, SagaError> {
        // A reservation a crashed run sent may still be on its way; it must
        // not land after the order is rejected.
        match context
            .fence("reserve", "the credit check refused it")
            .await?
        {
            Fenced::Now | Fenced::Before => {}
            // It landed just now: decide again with it.
            Fenced::Ran => {
                return Err(SagaError::Transient(
                    "a reservation of an earlier run landed meanwhile".into(),
                ));
            }
        }
        self.reject(context, customer_id, order_id, reason).await
    }

    /// Approves an order whose credit is reserved; releases the credit when
    /// the order moved on meanwhile.
    async fn approve(
        &self,
        context: &SagaContext<OrderFulfilmentState>,
        customer_id: Uuid,
        order_id: Uuid,
    ) -> Result<Outcome, SagaError> {
        let ids = [customer_id.as_bytes().as_slice(), order_id.as_bytes()];
        let approve = OrderCommand::Approve { order_id };
        match self
            .orders
            .execute(approve, context.command("approve", &ids)?)
            .await
        {
            Ok(_) => Ok(Outcome::Approved),
            Err(CommandError::Rejected(OrderError::InvalidTransition { status, .. })) => {
                if status == OrderStatus::Approved {
                    Ok(Outcome::Approved)
                } else {
                    // Cancelled (or rejected) between the reservation and
                    // the approval: the reservation must not outlive the
                    // order.
                    self.release(context, customer_id, order_id).await?;
                    Ok(Outcome::Compensated)
                }
            }
            Err(e) => Err(SagaError::from_command(e)),
        }
    }

    /// True when an order placed at `placed_at` is past its decision time
    /// at `now`.
    fn overdue(&self, placed_at: Timestamp, now: Timestamp) -> bool {
        let age_us = now.as_micros().saturating_sub(placed_at.as_micros());
        let limit_us = i64::try_from(self.config.decision_timeout.as_micros()).unwrap_or(i64::MAX);
        age_us > limit_us
    }

    async fn reject(
        &self,
        context: &SagaContext<OrderFulfilmentState>,
        customer_id: Uuid,
        order_id: Uuid,
        reason: Reason,
    ) -> Result<Outcome, SagaError> {
        let reject = OrderCommand::Reject { order_id, reason };
        let ids = [customer_id.as_bytes().as_slice(), order_id.as_bytes()];
        match self
            .orders
            .execute(reject, context.command("reject", &ids)?)
            .await
        {
            Ok(_) => Ok(Outcome::Rejected),
            // Cancelled (nothing was reserved) or decided meanwhile.
            Err(CommandError::Rejected(OrderError::InvalidTransition { .. })) => {
                Ok(Outcome::NothingToDo)
            }
            Err(e) => Err(SagaError::from_command(e)),
        }
    }

    async fn release(
        &self,
        context: &SagaContext<OrderFulfilmentState>,
        customer_id: Uuid,
        order_id: Uuid,
    ) -> Result<Outcome, SagaError> {
        let release = CustomerCommand::ReleaseCredit {
            customer_id,
            order_id,
        };
        let ids = [customer_id.as_bytes().as_slice(), order_id.as_bytes()];
        match self
            .customers
            .execute(release, context.command("release", &ids)?)
            .await
        {
            Ok(_) => Ok(Outcome::Released),
            // Nothing held for the order (never reserved, or released
            // already): what releasing wants is so.
            Err(
                CommandError::Rejected(
                    CustomerError::NoReservation(_) | CustomerError::NotRegistered(_),
                )
                | CommandError::NotFound { .. },
            ) => Ok(Outcome::NothingToDo),
            Err(e) => Err(SagaError::from_command(e)),
        }
    }
}

/// A rejection reason naming the rule: `<rule>: <explanation>`, cut to
/// the longest reason allowed.
fn reason(rule: &str, explanation: &str) -> Result<Reason, SagaError> {
    let full: String = format!("{rule}: {explanation}")
        .chars()
        .take(Reason::CHARS_MAX)
        .collect();
    Reason::parse(&full)
        .or_else(|_| Reason::parse(rule))
        .map_err(|e| SagaError::Permanent(format!("no valid rejection reason for {rule:?}: {e}")))
}
