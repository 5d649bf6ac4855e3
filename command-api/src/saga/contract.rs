//! What a saga implements ([`Saga`]) and what its handler is given
//! ([`SagaContext`]), with the idempotency keys of the commands it issues.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use event_store::{Clock, EventFilter, EventStore, RecordedEvent, Timestamp};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::aggregate::DomainError;
use crate::error::CommandError;
use crate::handler::CommandContext;
use crate::idempotency::{FenceError, Fenced, Fingerprint, Idempotency, IdempotencyKey};
use crate::trace::TraceParent;

/// A process manager. Implement it and run it with a
/// [`SagaRunner`](super::runner::SagaRunner); the runner owns delivery,
/// checkpoints, retries and status.
#[async_trait]
pub trait Saga: Send + Sync + 'static {
    /// What the saga keeps between events, saved with every checkpoint.
    /// Changes must be idempotent: the events after a checkpoint are
    /// handled again after a crash.
    type State: Default + Clone + Serialize + DeserializeOwned + fmt::Debug + Send + Sync + 'static;

    /// The saga's name: its checkpoint stream is `saga-<name>-checkpoint`
    /// and its idempotency keys start with `<name>:`. Changing it starts the
    /// saga over.
    fn name(&self) -> &'static str;

    /// The events the saga is given (the store filters them).
    fn filter(&self) -> EventFilter;

    /// Events with the same lane are handled one at a time, in log order.
    /// By default each stream is a lane.
    fn lane(&self, event: &RecordedEvent) -> String {
        event.stream_id.as_str().to_owned()
    }

    /// Handles one event. Called again after a transient failure and, after
    /// a crash, for the events after the last checkpoint: commands must be
    /// issued with [`SagaContext::command`] so that a step done once is not
    /// done again.
    async fn handle(
        &self,
        event: &RecordedEvent,
        context: &SagaContext<Self::State>,
    ) -> Result<(), SagaError>;

    /// What the status shows of the state (figures, not the whole state).
    fn summary(&self, _state: &Self::State) -> BTreeMap<String, serde_json::Value> {
        BTreeMap::new()
    }
}

/// Why handling an event failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SagaError {
    /// Trying again later may work: the event is retried.
    #[error("{0}")]
    Transient(String),
    /// Trying again cannot work: the event is skipped and reported.
    #[error("{0}")]
    Permanent(String),
}

impl SagaError {
    /// Classifies a store error: problems with the request or the data are
    /// permanent, the rest (I/O, unreachable, closed, busy) transient.
    pub fn from_store(e: event_store::Error) -> SagaError {
        use event_store::Error as E;
        match e {
            E::InvalidStreamId { .. }
            | E::InvalidAppend(_)
            | E::InvalidRead(_)
            | E::InvalidOptions(_)
            | E::LimitExceeded { .. }
            | E::Corruption { .. }
            | E::UnsupportedFormat { .. }
            | E::NotDataDirectory { .. }
            | E::Upcast { .. }
            | E::KeyStore(_)
            | E::Unsupported(_) => SagaError::Permanent(e.to_string()),
            other => SagaError::Transient(other.to_string()),
        }
    }

    /// Classifies a command's failure that the saga did not expect: a
    /// conflict may pass, a refusal or bad data will not.
    pub fn from_command<D: DomainError>(e: CommandError<D>) -> SagaError {
        match e {
            CommandError::Store(e) => SagaError::from_store(e),
            CommandError::Conflict { .. }
            | CommandError::IdempotencyKeyInFlight { .. }
            | CommandError::VersionMismatch { .. } => SagaError::Transient(e.to_string()),
            CommandError::Rejected(_)
            | CommandError::NotFound { .. }
            | CommandError::IdempotencyKeyReused { .. }
            | CommandError::Decode { .. }
            | CommandError::BadRecord { .. }
            | CommandError::Fenced { .. }
            | CommandError::Encode { .. } => SagaError::Permanent(e.to_string()),
        }
    }
}

/// What a saga's handler gets besides the event.
pub struct SagaContext<S> {
    store: Arc<dyn EventStore>,
    name: &'static str,
    event_id: Uuid,
    correlation_id: Uuid,
    /// The trace of the event, whose child each command is.
    traceparent: Option<TraceParent>,
    attempt: u32,
    state: Arc<Mutex<S>>,
    clock: Arc<dyn Clock>,
}

impl<S> fmt::Debug for SagaContext<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SagaContext")
            .field("name", &self.name)
            .field("event_id", &self.event_id)
            .field("attempt", &self.attempt)
            .finish()
    }
}

/// The business flow an event belongs to, read from its metadata once
/// per event: its conversation and its trace.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Flow {
    pub correlation_id: Uuid,
    pub traceparent: Option<TraceParent>,
}

impl Flow {
    /// Metadata that does not parse only loses the conversation's id; the
    /// event itself then starts one.
    pub fn of(event: &RecordedEvent) -> Self {
        let metadata = event.metadata().ok();
        Self {
            correlation_id: metadata
                .as_ref()
                .and_then(|m| m.correlation_id)
                .unwrap_or(event.id),
            traceparent: metadata.as_ref().and_then(crate::trace::of_event),
        }
    }
}

impl<S> SagaContext<S> {
    pub(crate) fn new(
        store: Arc<dyn EventStore>,
        name: &'static str,
        event: &RecordedEvent,
        flow: Flow,
        attempt: u32,
        state: Arc<Mutex<S>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            name,
            event_id: event.id,
            correlation_id: flow.correlation_id,
            traceparent: flow.traceparent,
            attempt,
            state,
            clock,
        }
    }

    /// The time now, by the runner's clock (the wall clock unless
    /// [`SagaRunner::with_clock`](super::runner::SagaRunner::with_clock)
    /// says otherwise). Compare it with an event's commit time
    /// ([`RecordedEvent::timestamp`]) to give up on something that took too
    /// long.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// 1 on the first try of this delivery, then 2, 3... on retries.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The context of a command issued for `step` of this event: the
    /// idempotency key `<saga>:<event id>:<step>` (the same on every
    /// delivery), a fingerprint of the step and `parts` (what identifies
    /// the command: its aggregate, its target), the event's correlation id
    /// and its id as causation id, and a child of the event's trace.
    pub fn command(&self, step: &str, parts: &[&[u8]]) -> Result<CommandContext, SagaError> {
        let key = idempotency_key(self.name, self.event_id, step)
            .map_err(|e| SagaError::Permanent(e.to_string()))?;
        let mut all: Vec<&[u8]> = vec![
            self.name.as_bytes(),
            step.as_bytes(),
            self.event_id.as_bytes(),
        ];
        all.extend_from_slice(parts);
        Ok(CommandContext::new()
            .caused_by(self.correlation_id, self.event_id)
            .with_traceparent(self.traceparent.as_ref().map(TraceParent::child))
            .with_idempotency(Idempotency {
                key,
                fingerprint: Fingerprint::of(&all),
            }))
    }

    /// Makes sure `step`'s command for this event never runs from now on
    /// (see [`fence`](crate::idempotency::fence)). A saga calls it before
    /// acting on "that step did not happen" (nothing to release, say): a
    /// command an earlier, crashed run of the saga sent may still be on
    /// its way to the store, and would otherwise land afterwards.
    ///
    /// [`Fenced::Ran`] means the step's events can be read. A step whose
    /// command a store reports taken but cannot show yet is a transient
    /// failure: the event is retried, and the fence asked again.
    pub async fn fence(&self, step: &str, reason: &str) -> Result<Fenced, SagaError> {
        let key = idempotency_key(self.name, self.event_id, step)
            .map_err(|e| SagaError::Permanent(e.to_string()))?;
        crate::idempotency::fence(self.store.as_ref(), &key, reason)
            .await
            .map_err(|e| match e {
                FenceError::Store(e) => SagaError::from_store(e),
                e @ FenceError::NotReadableYet { .. } => SagaError::Transient(e.to_string()),
            })
    }

    /// Changes the saga's state; saved with the next checkpoint.
    pub fn update<R>(&self, change: impl FnOnce(&mut S) -> R) -> R {
        change(&mut lock(&self.state))
    }

    /// A copy of the saga's state.
    pub fn state(&self) -> S
    where
        S: Clone,
    {
        lock(&self.state).clone()
    }
}

/// The idempotency key of `saga`'s `step` for the event `event_id`:
/// `<saga>:<event id>:<step>`.
pub fn idempotency_key(
    saga: &str,
    event_id: Uuid,
    step: &str,
) -> Result<IdempotencyKey, crate::idempotency::KeyError> {
    IdempotencyKey::parse(&format!("{saga}:{}:{step}", event_id.as_hyphenated()))
}

/// Locks the saga's state, which [`SagaContext`] and the runner share.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data: one left half-updated by a panic is still worth having.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
