//! The order-fulfilment saga: the process manager that takes a placed order
//! through the customer's credit check and back out again when the order
//! moves on.
//!
//! ```text
//! OrderPlaced    ──▶ ReserveCredit(customer, order, total)
//!                      ok / already reserved ──▶ Approve(order)
//!                      │                           order moved on ──▶ ReleaseCredit (compensation)
//!                      refused by a rule ───────▶ Reject(order, "<rule>: <why>")
//! OrderCancelled ──▶ ReleaseCredit(customer, order)   (nothing reserved: fine)
//! ```
//!
//! It follows the store with a push subscription (order streams, the two
//! event types above) and handles one event at a time, in log order, so an
//! order's cancellation is always handled after its placement.
//!
//! **Exactly-once effect.** Delivery is at least once: after a crash the
//! events after the last checkpoint come again. Every command the saga
//! issues carries an idempotency key made of the saga's name, the id of the
//! event that triggered it and the step (`order-fulfilment:<event id>:reserve`),
//! so a command that already succeeded is answered from its record instead
//! of running twice. The domain's "already so" refusals (a reservation that
//! exists, an order already approved, nothing left to release) count as
//! success. Commands carry the triggering event's correlation id, and its
//! id as causation id.
//!
//! **Checkpoint.** Like a persistent subscription, the saga appends its
//! position as a `SagaCheckpoint` event to its own stream
//! ([`CHECKPOINT_STREAM`]) every [`SagaConfig::checkpoint_every_events`]
//! events, at least every [`SagaConfig::checkpoint_interval`] while it has
//! progress to save, and when it stops; at start it resumes after the last
//! one. The checkpoint stream is outside the saga's filter, so its own
//! writes never wake it.
//!
//! **Failures.** A store that fails (I/O, unreachable, closed, a conflict
//! that outlasted the handler's retries) is retried on the same event with
//! a bounded exponential back-off that a shutdown interrupts. An event that
//! no retry can help (it does not decode, a record is damaged) is logged
//! with its position, counted and recorded in the status, and skipped: one
//! bad event must not stop every later order.
//!
//! Run it in exactly one process per store: two instances would not break
//! anything (the keys make their commands idempotent), but they would do
//! all the work twice.

use std::future::Future;
use std::num::NonZeroU64;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use event_store::{
    Direction, EventFilter, EventStore, ExpectedVersion, NewEvent, Position, ReadFrom,
    RecordedEvent, StreamId,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::{Aggregate, DomainError, DomainEvent};
use crate::domain::customer::{Customer, CustomerCommand, CustomerError};
use crate::domain::order::{
    Order, OrderCancelled, OrderCommand, OrderError, OrderEvent, OrderPlaced, OrderStatus, Reason,
};
use crate::error::CommandError;
use crate::handler::{CommandContext, CommandHandler};
use crate::idempotency::{Fingerprint, Idempotency, IdempotencyKey};

/// The saga's name: the first part of its idempotency keys.
pub const SAGA_NAME: &str = "order-fulfilment";

/// The stream holding the saga's checkpoints.
pub const CHECKPOINT_STREAM: &str = "saga-order-fulfilment-checkpoint";

/// Event type of a checkpoint; its data is [`Checkpoint`].
pub const CHECKPOINT_EVENT_TYPE: &str = "SagaCheckpoint";

/// The data of a `SagaCheckpoint` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Every event up to this position was handled (or skipped).
    pub position: u64,
}

/// How the saga checkpoints and retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaConfig {
    /// Write a checkpoint once this many events were handled since the last
    /// one. After a crash at most about this many events are handled again
    /// (harmlessly: the steps are idempotent).
    pub checkpoint_every_events: NonZeroU64,
    /// Write a checkpoint at least this often while there is progress to
    /// save, so a quiet saga does not leave its last events unrecorded.
    pub checkpoint_interval: Duration,
    /// First pause before retrying an event after a transient failure; it
    /// doubles on each failure up to `retry_backoff_max`.
    pub retry_backoff_min: Duration,
    pub retry_backoff_max: Duration,
}

impl Default for SagaConfig {
    fn default() -> Self {
        Self {
            checkpoint_every_events: NonZeroU64::new(1000).unwrap_or(NonZeroU64::MIN),
            checkpoint_interval: Duration::from_secs(1),
            retry_backoff_min: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(10),
        }
    }
}

/// Where the saga stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaState {
    /// Reading its checkpoint.
    Starting,
    /// Following the log.
    Running,
    /// Waiting to try again after a transient failure.
    Retrying,
    /// Returned (after a shutdown), or its task is gone.
    Stopped,
}

/// Something that went wrong, for diagnostics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SagaFailure {
    /// The event it happened on, when it was about one.
    pub position: Option<u64>,
    pub event_type: Option<String>,
    pub error: String,
    /// True when the event was given up on and skipped.
    pub skipped: bool,
}

/// What the saga has done so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SagaStatus {
    pub state: SagaState,
    /// The position the saga resumed after when it started.
    pub started_after: u64,
    /// The last position handled (or skipped), or `started_after`.
    pub position: u64,
    /// The position of the last checkpoint written (or read at start).
    pub checkpoint: u64,
    /// Events handled since the start, skipped ones included.
    pub events_handled: u64,
    /// Events given up on since the start.
    pub events_skipped: u64,
    /// The last failure, transient or not.
    pub last_error: Option<SagaFailure>,
}

/// A view of a running saga's status; cheap to clone.
#[derive(Debug, Clone)]
pub struct SagaHandle {
    status: Arc<Mutex<SagaStatus>>,
}

impl SagaHandle {
    fn new() -> Self {
        Self {
            status: Arc::new(Mutex::new(SagaStatus {
                state: SagaState::Starting,
                started_after: 0,
                position: 0,
                checkpoint: 0,
                events_handled: 0,
                events_skipped: 0,
                last_error: None,
            })),
        }
    }

    pub fn status(&self) -> SagaStatus {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, SagaStatus> {
        // The status is plain data; one left half-updated by a panic is
        // still worth showing.
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn update(&self, change: impl FnOnce(&mut SagaStatus)) {
        change(&mut self.lock());
    }
}

/// Why handling an event failed.
#[derive(Debug)]
enum Failure {
    /// Trying again later may work.
    Transient(String),
    /// Trying again cannot work.
    Permanent(String),
}

/// The order-fulfilment saga. Build it with the command handlers it issues
/// commands through (those of the command API, so they share its locks and
/// caches), then [`OrderFulfilment::run`] it.
#[derive(Debug)]
pub struct OrderFulfilment {
    customers: CommandHandler<Customer>,
    orders: CommandHandler<Order>,
    store: Arc<dyn EventStore>,
    config: SagaConfig,
    start_after: Option<Position>,
    status: SagaHandle,
}

/// What one event led to, for the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Approved,
    Rejected,
    /// Approving failed because the order moved on; its credit was released.
    Compensated,
    Released,
    NothingToDo,
}

impl OrderFulfilment {
    pub fn new(
        customers: CommandHandler<Customer>,
        orders: CommandHandler<Order>,
        config: SagaConfig,
    ) -> Self {
        Self {
            store: customers.store().clone(),
            customers,
            orders,
            config,
            start_after: None,
            status: SagaHandle::new(),
        }
    }

    /// Ignores the checkpoint and starts after `position` (`Position::ZERO`:
    /// the whole log). The steps are idempotent, so going over events again
    /// changes nothing.
    pub fn starting_after(mut self, position: Position) -> Self {
        self.start_after = Some(position);
        self
    }

    pub fn handle(&self) -> SagaHandle {
        self.status.clone()
    }

    /// Which events the saga reacts to.
    pub fn filter() -> EventFilter {
        EventFilter {
            stream_prefixes: vec![format!("{}-", Order::TYPE)],
            event_types: vec!["OrderPlaced".into(), "OrderCancelled".into()],
        }
    }

    /// Follows the log until `shutdown` resolves, then finishes the event it
    /// is on, writes a last checkpoint and returns. Failures never end it.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let _stopped = MarkStopped(self.status.clone());
        let mut shutdown = Shutdown::new(shutdown);
        let Some(start) = self.start_position(&mut shutdown).await else {
            return;
        };
        self.status.update(|s| {
            s.state = SagaState::Running;
            s.started_after = start.0;
            s.position = start.0;
            s.checkpoint = start.0;
        });
        tracing::info!(after = start.0, "order-fulfilment saga started");
        let mut progress = Progress {
            position: start,
            checkpointed: start,
            since_checkpoint: 0,
            checkpoint_due: tokio::time::Instant::now() + self.config.checkpoint_interval,
        };
        let mut pause = self.config.retry_backoff_min;
        'subscribe: loop {
            let from = Position(progress.position.0 + 1);
            let mut subscription = match self.store.subscribe(from, Self::filter()).await {
                Ok(subscription) => {
                    // Back after a failure: an idle log brings no event to
                    // say so, and readiness must not wait for one.
                    self.status.update(|s| s.state = SagaState::Running);
                    subscription
                }
                Err(e) => {
                    self.transient(None, None, format!("cannot subscribe: {e}"));
                    if !self.back_off(&mut pause, &mut shutdown).await {
                        break 'subscribe;
                    }
                    continue 'subscribe;
                }
            };
            loop {
                let next = tokio::select! {
                    biased;
                    () = shutdown.wait() => Next::Stop,
                    item = subscription.next() => Next::Event(item),
                    () = tokio::time::sleep_until(progress.checkpoint_due),
                        if progress.position > progress.checkpointed => Next::CheckpointDue,
                };
                match next {
                    Next::Stop => break 'subscribe,
                    Next::CheckpointDue => self.checkpoint(&mut progress).await,
                    Next::Event(Some(Ok(event))) => {
                        if !self.handle_until_done(&event, &mut shutdown).await {
                            break 'subscribe;
                        }
                        pause = self.config.retry_backoff_min;
                        progress.position = event.position;
                        progress.since_checkpoint += 1;
                        self.status.update(|s| {
                            s.state = SagaState::Running;
                            s.position = event.position.0;
                            s.events_handled += 1;
                        });
                        // The timer branch above only wins when no event is
                        // waiting, so a steady stream checks the time here.
                        if progress.since_checkpoint >= self.config.checkpoint_every_events.get()
                            || tokio::time::Instant::now() >= progress.checkpoint_due
                        {
                            self.checkpoint(&mut progress).await;
                        }
                    }
                    Next::Event(Some(Err(e))) => {
                        self.transient(None, None, format!("the subscription failed: {e}"));
                        if !self.back_off(&mut pause, &mut shutdown).await {
                            break 'subscribe;
                        }
                        continue 'subscribe;
                    }
                    Next::Event(None) => {
                        self.transient(None, None, "the subscription ended".into());
                        if !self.back_off(&mut pause, &mut shutdown).await {
                            break 'subscribe;
                        }
                        continue 'subscribe;
                    }
                }
            }
        }
        if progress.position > progress.checkpointed {
            self.checkpoint(&mut progress).await;
        }
        tracing::info!(
            position = progress.position.0,
            checkpoint = progress.checkpointed.0,
            "order-fulfilment saga stopped"
        );
    }

    /// Where to start: after the configured position, or after the last
    /// checkpoint. `None` when stopped meanwhile.
    async fn start_position(&self, shutdown: &mut Shutdown<'_>) -> Option<Position> {
        if let Some(position) = self.start_after {
            return Some(position);
        }
        let mut pause = self.config.retry_backoff_min;
        loop {
            match self.read_checkpoint().await {
                Ok(position) => return Some(position),
                Err(Failure::Transient(error)) => {
                    self.transient(None, None, format!("cannot read the checkpoint: {error}"));
                    if !self.back_off(&mut pause, shutdown).await {
                        return None;
                    }
                }
                Err(Failure::Permanent(error)) => {
                    // Starting over is slow but safe: every step is
                    // idempotent. Stopping would leave every order pending.
                    tracing::error!(stream = CHECKPOINT_STREAM, %error,
                        "the saga's checkpoint cannot be read; starting from the beginning of the log");
                    self.status.update(|s| {
                        s.last_error = Some(SagaFailure {
                            position: None,
                            event_type: Some(CHECKPOINT_EVENT_TYPE.into()),
                            error: format!("the checkpoint cannot be read: {error}"),
                            skipped: true,
                        });
                    });
                    return Some(Position::ZERO);
                }
            }
        }
    }

    async fn read_checkpoint(&self) -> Result<Position, Failure> {
        let stream = checkpoint_stream().map_err(|e| Failure::Permanent(e.to_string()))?;
        let slice = self
            .store
            .read_stream(&stream, ReadFrom::End, Direction::Backward, 1)
            .await
            .map_err(store_failure)?;
        let Some(event) = slice.events.first() else {
            return Ok(Position::ZERO);
        };
        event
            .data_as::<Checkpoint>()
            .map(|c| Position(c.position))
            .map_err(|e| {
                Failure::Permanent(format!(
                    "{} at position {} does not decode: {e}",
                    event.event_type, event.position
                ))
            })
    }

    /// Appends the position reached. A failure is logged and retried at the
    /// next occasion: the checkpoint only bounds how much is handled again.
    async fn checkpoint(&self, progress: &mut Progress) {
        progress.checkpoint_due = tokio::time::Instant::now() + self.config.checkpoint_interval;
        let written = async {
            let stream = checkpoint_stream()?;
            let event = NewEvent::json(
                CHECKPOINT_EVENT_TYPE,
                &Checkpoint {
                    position: progress.position.0,
                },
            )
            .map_err(|e| event_store::Error::InvalidAppend(e.to_string()))?;
            self.store
                .append(&stream, ExpectedVersion::Any, vec![event])
                .await
        }
        .await;
        match written {
            Ok(_) => {
                progress.checkpointed = progress.position;
                progress.since_checkpoint = 0;
                let position = progress.position.0;
                self.status.update(|s| s.checkpoint = position);
                tracing::debug!(position, "saga checkpoint written");
            }
            Err(e) => {
                tracing::warn!(position = progress.position.0, error = %e, "cannot write the saga's checkpoint");
                self.status.update(|s| {
                    s.last_error = Some(SagaFailure {
                        position: None,
                        event_type: Some(CHECKPOINT_EVENT_TYPE.into()),
                        error: format!("cannot write the checkpoint: {e}"),
                        skipped: false,
                    });
                });
            }
        }
    }

    /// Handles `event`, retrying transient failures and skipping one that
    /// cannot succeed. False when stopped while waiting to retry.
    async fn handle_until_done(&self, event: &RecordedEvent, shutdown: &mut Shutdown<'_>) -> bool {
        let mut pause = self.config.retry_backoff_min;
        loop {
            match self.on_event(event).await {
                Ok(outcome) => {
                    tracing::debug!(position = event.position.0, event_type = %event.event_type,
                        stream = %event.stream_id, ?outcome, "saga step done");
                    return true;
                }
                Err(Failure::Permanent(error)) => {
                    tracing::error!(position = event.position.0, event_type = %event.event_type,
                        stream = %event.stream_id, %error, "the saga skips an event it cannot handle");
                    self.status.update(|s| {
                        s.events_skipped += 1;
                        s.last_error = Some(SagaFailure {
                            position: Some(event.position.0),
                            event_type: Some(event.event_type.clone()),
                            error,
                            skipped: true,
                        });
                    });
                    return true;
                }
                Err(Failure::Transient(error)) => {
                    self.transient(Some(event.position), Some(&event.event_type), error);
                    if !self.back_off(&mut pause, shutdown).await {
                        return false;
                    }
                }
            }
        }
    }

    fn transient(&self, position: Option<Position>, event_type: Option<&str>, error: String) {
        tracing::warn!(position = position.map(|p| p.0), event_type, %error, "the saga will retry");
        self.status.update(|s| {
            s.state = SagaState::Retrying;
            s.last_error = Some(SagaFailure {
                position: position.map(|p| p.0),
                event_type: event_type.map(str::to_owned),
                error,
                skipped: false,
            });
        });
    }

    /// Waits `pause` (doubling it for next time, up to the maximum). False
    /// when stopped meanwhile.
    async fn back_off(&self, pause: &mut Duration, shutdown: &mut Shutdown<'_>) -> bool {
        let wait = *pause;
        *pause = (*pause * 2).min(self.config.retry_backoff_max);
        tokio::select! {
            () = tokio::time::sleep(wait) => true,
            () = shutdown.wait() => false,
        }
    }

    async fn on_event(&self, event: &RecordedEvent) -> Result<Outcome, Failure> {
        if event.stream_id.as_str() == CHECKPOINT_STREAM {
            return Ok(Outcome::NothingToDo);
        }
        let decoded = OrderEvent::decode(&event.event_type, event.schema_version, &event.data)
            .map_err(|e| Failure::Permanent(e.to_string()))?;
        // Metadata that does not parse only loses the conversation's id;
        // the event itself then starts one.
        let correlation_id = event
            .metadata()
            .ok()
            .and_then(|m| m.correlation_id)
            .unwrap_or(event.id);
        let trigger = Trigger {
            event_id: event.id,
            correlation_id,
        };
        match decoded {
            OrderEvent::Placed(placed) => self.on_placed(&trigger, &placed).await,
            OrderEvent::Cancelled(cancelled) => self.on_cancelled(&trigger, &cancelled).await,
            OrderEvent::Approved(_) | OrderEvent::Rejected(_) => Ok(Outcome::NothingToDo),
        }
    }

    async fn on_placed(&self, trigger: &Trigger, placed: &OrderPlaced) -> Result<Outcome, Failure> {
        let order_id = placed.order_id;
        let customer_id = placed.customer_id;
        let order = self.orders.load(order_id).await.map_err(command_failure)?;
        match order.state.status() {
            Some(OrderStatus::Pending) => {}
            // Handled before (this is a redelivery), or decided by someone
            // else; either way the credit check is over.
            Some(OrderStatus::Approved) => return Ok(Outcome::NothingToDo),
            // Moved on: whatever is still held for it must go.
            Some(OrderStatus::Rejected | OrderStatus::Cancelled) => {
                return self.release(trigger, customer_id, order_id).await;
            }
            None => {
                return Err(Failure::Permanent(format!(
                    "order {order_id} has an OrderPlaced event but does not load as placed"
                )));
            }
        }

        let reserve = CustomerCommand::ReserveCredit {
            customer_id,
            order_id,
            amount: placed.total,
        };
        match self
            .customers
            .execute(
                reserve,
                trigger.context(Step::Reserve, customer_id, order_id)?,
            )
            .await
        {
            Ok(_) | Err(CommandError::Rejected(CustomerError::AlreadyReserved(_))) => {}
            Err(CommandError::Rejected(refusal)) => {
                let reason = reason(refusal.rule(), &refusal.to_string())?;
                return self.reject(trigger, customer_id, order_id, reason).await;
            }
            Err(CommandError::NotFound { .. }) => {
                let refusal = CustomerError::NotRegistered(customer_id);
                let reason = reason(refusal.rule(), &refusal.to_string())?;
                return self.reject(trigger, customer_id, order_id, reason).await;
            }
            Err(e) => return Err(command_failure(e)),
        }

        let approve = OrderCommand::Approve { order_id };
        match self
            .orders
            .execute(
                approve,
                trigger.context(Step::Approve, customer_id, order_id)?,
            )
            .await
        {
            Ok(_) => Ok(Outcome::Approved),
            Err(CommandError::Rejected(OrderError::InvalidTransition { status, .. })) => {
                if status == OrderStatus::Approved {
                    return Ok(Outcome::Approved);
                }
                // Cancelled (or rejected) between the reservation and the
                // approval: the reservation must not outlive the order.
                self.release(trigger, customer_id, order_id).await?;
                Ok(Outcome::Compensated)
            }
            Err(e) => Err(command_failure(e)),
        }
    }

    async fn on_cancelled(
        &self,
        trigger: &Trigger,
        cancelled: &OrderCancelled,
    ) -> Result<Outcome, Failure> {
        self.release(trigger, cancelled.customer_id, cancelled.order_id)
            .await
    }

    async fn reject(
        &self,
        trigger: &Trigger,
        customer_id: Uuid,
        order_id: Uuid,
        reason: Reason,
    ) -> Result<Outcome, Failure> {
        let reject = OrderCommand::Reject { order_id, reason };
        match self
            .orders
            .execute(
                reject,
                trigger.context(Step::Reject, customer_id, order_id)?,
            )
            .await
        {
            Ok(_) => Ok(Outcome::Rejected),
            // Cancelled (nothing was reserved) or decided meanwhile.
            Err(CommandError::Rejected(OrderError::InvalidTransition { .. })) => {
                Ok(Outcome::NothingToDo)
            }
            Err(e) => Err(command_failure(e)),
        }
    }

    async fn release(
        &self,
        trigger: &Trigger,
        customer_id: Uuid,
        order_id: Uuid,
    ) -> Result<Outcome, Failure> {
        let release = CustomerCommand::ReleaseCredit {
            customer_id,
            order_id,
        };
        match self
            .customers
            .execute(
                release,
                trigger.context(Step::Release, customer_id, order_id)?,
            )
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
            Err(e) => Err(command_failure(e)),
        }
    }
}

/// The steps the saga takes; each names its idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Reserve,
    Approve,
    Reject,
    Release,
}

impl Step {
    fn as_str(self) -> &'static str {
        match self {
            Step::Reserve => "reserve",
            Step::Approve => "approve",
            Step::Reject => "reject",
            Step::Release => "release",
        }
    }
}

/// The event a command is issued for.
#[derive(Debug)]
struct Trigger {
    event_id: Uuid,
    correlation_id: Uuid,
}

impl Trigger {
    /// The context of `step`'s command: the same key on every delivery of
    /// the event, so a step that succeeded once is never done again.
    fn context(
        &self,
        step: Step,
        customer_id: Uuid,
        order_id: Uuid,
    ) -> Result<CommandContext, Failure> {
        let key = idempotency_key(self.event_id, step.as_str())
            .map_err(|e| Failure::Permanent(e.to_string()))?;
        let fingerprint = Fingerprint::of(&[
            SAGA_NAME.as_bytes(),
            step.as_str().as_bytes(),
            self.event_id.as_bytes(),
            customer_id.as_bytes(),
            order_id.as_bytes(),
        ]);
        Ok(CommandContext::new()
            .caused_by(self.correlation_id, self.event_id)
            .with_idempotency(Idempotency { key, fingerprint }))
    }
}

/// The idempotency key of the saga's `step` for the event `event_id`:
/// `order-fulfilment:<event id>:<step>`.
pub fn idempotency_key(
    event_id: Uuid,
    step: &str,
) -> Result<IdempotencyKey, crate::idempotency::KeyError> {
    IdempotencyKey::parse(&format!("{SAGA_NAME}:{}:{step}", event_id.as_hyphenated()))
}

fn checkpoint_stream() -> Result<StreamId, event_store::Error> {
    StreamId::new(CHECKPOINT_STREAM)
}

/// A rejection reason naming the rule: `<rule>: <explanation>`, cut to
/// the longest reason allowed.
fn reason(rule: &str, explanation: &str) -> Result<Reason, Failure> {
    let full: String = format!("{rule}: {explanation}")
        .chars()
        .take(Reason::CHARS_MAX)
        .collect();
    Reason::parse(&full)
        .or_else(|_| Reason::parse(rule))
        .map_err(|e| Failure::Permanent(format!("no valid rejection reason for {rule:?}: {e}")))
}

fn store_failure(e: event_store::Error) -> Failure {
    use event_store::Error as E;
    match e {
        // These describe the request or the data, not the moment.
        E::InvalidStreamId { .. }
        | E::InvalidAppend(_)
        | E::InvalidRead(_)
        | E::InvalidOptions(_)
        | E::LimitExceeded { .. }
        | E::Corruption { .. }
        | E::UnsupportedFormat { .. }
        | E::Upcast { .. }
        | E::KeyStore(_)
        | E::Unsupported(_) => Failure::Permanent(e.to_string()),
        other => Failure::Transient(other.to_string()),
    }
}

fn command_failure<D: DomainError>(e: CommandError<D>) -> Failure {
    match e {
        CommandError::Store(e) => store_failure(e),
        CommandError::Conflict { .. }
        | CommandError::IdempotencyKeyInFlight { .. }
        | CommandError::VersionMismatch { .. } => Failure::Transient(e.to_string()),
        CommandError::Rejected(_)
        | CommandError::NotFound { .. }
        | CommandError::IdempotencyKeyReused { .. }
        | CommandError::Decode { .. }
        | CommandError::BadRecord { .. }
        | CommandError::Encode { .. } => Failure::Permanent(e.to_string()),
    }
}

/// What woke the saga's loop.
enum Next {
    Stop,
    Event(Option<event_store::Result<RecordedEvent>>),
    CheckpointDue,
}

/// How far the saga got and what is saved of it.
#[derive(Debug)]
struct Progress {
    position: Position,
    checkpointed: Position,
    since_checkpoint: u64,
    checkpoint_due: tokio::time::Instant,
}

/// The shutdown future, waited on from several places and never polled
/// again once it resolved.
struct Shutdown<'a> {
    future: Pin<Box<dyn Future<Output = ()> + Send + 'a>>,
    resolved: bool,
}

impl<'a> Shutdown<'a> {
    fn new(future: impl Future<Output = ()> + Send + 'a) -> Self {
        Self {
            future: Box::pin(future),
            resolved: false,
        }
    }

    async fn wait(&mut self) {
        if !self.resolved {
            (&mut self.future).await;
            self.resolved = true;
        }
    }
}

/// Marks the status stopped however `run` ends (returned, or its task
/// aborted), so readiness never reports a saga that is gone as running.
struct MarkStopped(SagaHandle);

impl Drop for MarkStopped {
    fn drop(&mut self) {
        self.0.update(|s| s.state = SagaState::Stopped);
    }
}
