//! Process managers (sagas): long-running reactions to events that issue
//! commands through the same [`CommandHandler`](crate::CommandHandler)s the
//! REST API uses.
//!
//! A saga is a type implementing [`Saga`]: which events it reacts to, how
//! they are grouped into lanes, and what it does with one event. The
//! [`SagaRunner`] does everything else, the same way for every saga:
//!
//! - **Delivery.** A push subscription from the store (no polling) from the
//!   saga's checkpoint on. Events of one lane (by default one stream) are
//!   handled one at a time in log order; different lanes run concurrently
//!   (at most [`SagaConfig::concurrency`] at once), so one aggregate's
//!   trouble does not stall the others and the saga's commands share the
//!   store's group commits.
//! - **Exactly-once effect.** Delivery is at least once: after a crash the
//!   events after the last checkpoint come again. Every command carries an
//!   idempotency key made of the saga's name, the triggering event's id and
//!   the step ([`SagaContext::command`]), so a command that already
//!   succeeded is answered from its record instead of running twice.
//! - **Durable state.** The checkpoint is an event in the saga's own stream
//!   (`saga-<name>-checkpoint`) holding the position below which every
//!   event is done and the saga's [`Saga::State`]. It is written every
//!   [`SagaConfig::checkpoint_every_events`] events, at least every
//!   [`SagaConfig::checkpoint_interval`] while there is progress to save,
//!   and at shutdown; at start the saga resumes after it with that state.
//!   Events handled after the checkpoint are handled again after a crash, so
//!   a saga's state changes must be idempotent (insert or remove by key,
//!   never count).
//! - **Failures.** A transient failure (the store unreachable, a conflict
//!   that outlasted the handler's retries) is retried on the same event
//!   with an exponential back-off that a shutdown interrupts; the saga may
//!   give up itself (a deadline) because it sees the attempt number and
//!   the event's commit time. An event no retry can help is logged, counted,
//!   kept as the status's last error and skipped: one bad event must not
//!   stop every later one.
//!
//! - **Time.** A saga that decides by the clock (a deadline) asks
//!   [`SagaContext::now`], the runner's [`Clock`] ([`SagaRunner::with_clock`]),
//!   so a test moves time forward instead of sleeping.
//! - **Read-your-writes.** [`SagaHandle::handled`] waits until the saga is
//!   done with the log up to a position: a test, or a caller that wants to
//!   read what the saga did about its command, waits for that.
//!
//! Run each saga in exactly one process per store: two instances would not
//! break anything (the keys make their commands idempotent), but they would
//! do all the work twice.

mod runner;

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex, MutexGuard};

use std::time::Duration;
use tokio::sync::watch;

use async_trait::async_trait;
use event_store::{Clock, EventFilter, EventStore, Position, RecordedEvent, StreamId, Timestamp};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::DomainError;
use crate::error::CommandError;
use crate::handler::CommandContext;
use crate::idempotency::{FenceError, Fenced, Fingerprint, Idempotency, IdempotencyKey};

pub use runner::SagaRunner;

/// Event type of a checkpoint; its data is [`Checkpoint`].
pub const CHECKPOINT_EVENT_TYPE: &str = "SagaCheckpoint";

/// A process manager. Implement it and run it with a [`SagaRunner`]; the
/// runner owns delivery, checkpoints, retries and status.
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

impl<S> SagaContext<S> {
    pub(crate) fn new(
        store: Arc<dyn EventStore>,
        name: &'static str,
        event: &RecordedEvent,
        attempt: u32,
        state: Arc<Mutex<S>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        // Metadata that does not parse only loses the conversation's id;
        // the event itself then starts one.
        let correlation_id = event
            .metadata()
            .ok()
            .and_then(|m| m.correlation_id)
            .unwrap_or(event.id);
        Self {
            store,
            name,
            event_id: event.id,
            correlation_id,
            attempt,
            state,
            clock,
        }
    }

    /// The time now, by the runner's clock (the wall clock unless
    /// [`SagaRunner::with_clock`] says otherwise). Compare it with an
    /// event's commit time ([`RecordedEvent::timestamp`]) to give up on
    /// something that took too long.
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
    /// and its id as causation id.
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

/// The stream holding `saga`'s checkpoints.
pub fn checkpoint_stream(saga: &str) -> Result<StreamId, event_store::Error> {
    StreamId::new(format!("saga-{saga}-checkpoint")).map_err(Into::into)
}

/// The data of a `SagaCheckpoint` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint<S> {
    /// Every event up to this position was handled (or skipped).
    pub position: u64,
    /// The saga's state at that point (absent in checkpoints written before
    /// the saga had state: the default).
    #[serde(default)]
    pub state: S,
}

/// How a saga is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaConfig {
    /// Write a checkpoint once the watermark has moved this many log
    /// positions past the last one (positions the saga's filter skips count
    /// too). After a crash at most about this many positions are read, and
    /// the saga's events among them handled, again (harmlessly: the steps
    /// are idempotent).
    pub checkpoint_every_events: NonZeroU64,
    /// Write a checkpoint at least this often while there is progress to
    /// save, so a quiet saga does not leave its last events unrecorded.
    pub checkpoint_interval: Duration,
    /// First pause before retrying an event after a transient failure (or
    /// following the log again after it failed); it doubles on each failure,
    /// and each pause is lengthened by a random part of up to as much again
    /// so that retries do not come in lockstep; none is longer than
    /// `retry_backoff_max`.
    pub retry_backoff_min: Duration,
    pub retry_backoff_max: Duration,
    /// Events handled at once (in different lanes).
    pub concurrency: usize,
    /// Events received but not yet done, at most; past it the saga stops
    /// reading until some finish (one stuck lane must not fill memory).
    pub window: usize,
}

impl Default for SagaConfig {
    fn default() -> Self {
        Self {
            checkpoint_every_events: NonZeroU64::new(1000).unwrap_or(NonZeroU64::MIN),
            checkpoint_interval: Duration::from_secs(1),
            retry_backoff_min: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(10),
            concurrency: 32,
            window: 10_000,
        }
    }
}

/// Where a saga stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaState {
    /// Reading its checkpoint.
    Starting,
    /// Following the log (some events may be waiting to be retried; see
    /// [`SagaStatus::events_retrying`]).
    Running,
    /// Cannot follow the log (cannot read its checkpoint or subscribe);
    /// trying again.
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

/// What a saga has done so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SagaStatus {
    pub name: &'static str,
    pub state: SagaState,
    /// The position the saga resumed after when it started.
    pub started_after: u64,
    /// Every event up to this position is done (or skipped).
    pub position: u64,
    /// The position of the last checkpoint written (or read at start).
    pub checkpoint: u64,
    /// Events done since the start, skipped ones included.
    pub events_handled: u64,
    /// Events given up on since the start.
    pub events_skipped: u64,
    /// Events received and not done yet (being handled, queued behind
    /// their lane, or waiting to be retried).
    pub events_in_flight: u64,
    /// Events waiting to be retried after a transient failure.
    pub events_retrying: u64,
    /// The saga's state, as saved with checkpoints.
    pub state_summary: BTreeMap<String, serde_json::Value>,
    /// The last failure, transient or not.
    pub last_error: Option<SagaFailure>,
}

/// A view of a running saga's status; cheap to clone.
#[derive(Clone)]
pub struct SagaHandle {
    status: Arc<watch::Sender<SagaStatus>>,
    /// Where [`SagaHandle::handled`] looks for events the saga has not
    /// been given yet.
    log: Option<(Arc<dyn EventStore>, EventFilter)>,
}

impl fmt::Debug for SagaHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SagaHandle")
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

/// The saga stopped before it handled the log up to the position waited
/// for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the saga {name} stopped at position {position}, before position {waited_for}")]
pub struct SagaStopped {
    pub name: &'static str,
    /// Every event up to here was done.
    pub position: u64,
    pub waited_for: u64,
}

impl SagaHandle {
    pub(crate) fn new(name: &'static str, log: Option<(Arc<dyn EventStore>, EventFilter)>) -> Self {
        let status = SagaStatus {
            name,
            state: SagaState::Starting,
            started_after: 0,
            position: 0,
            checkpoint: 0,
            events_handled: 0,
            events_skipped: 0,
            events_in_flight: 0,
            events_retrying: 0,
            state_summary: BTreeMap::new(),
            last_error: None,
        };
        Self {
            status: Arc::new(watch::Sender::new(status)),
            log,
        }
    }

    pub fn status(&self) -> SagaStatus {
        self.status.borrow().clone()
    }

    /// The saga's name.
    pub fn name(&self) -> &'static str {
        self.status.borrow().name
    }

    /// Resolves once the saga is done (handled or skipped) with every
    /// event of the log up to `position`: pass the position an append
    /// returned to read what the saga did about it. Events the saga's
    /// filter passes over count as done, so any position of the log works;
    /// one the log has not reached yet is waited for. An event being
    /// retried keeps it waiting: put a timeout around it.
    ///
    /// Fails when the saga stops first.
    pub async fn handled(&self, position: Position) -> Result<(), SagaStopped> {
        /// How often the log is looked at again while it has not reached
        /// `position`, or cannot be read: nothing else says when.
        const LOOK_AGAIN: std::time::Duration = std::time::Duration::from_millis(20);
        let mut changes = self.status.subscribe();
        // The first event after the saga's position that the saga is given,
        // as a scan of the log found it: until the saga passes it there is
        // no need to look again.
        let mut next_for_saga: Option<u64> = None;
        loop {
            let status = changes.borrow_and_update().clone();
            if status.position >= position.0 {
                return Ok(());
            }
            if status.state == SagaState::Stopped {
                return Err(SagaStopped {
                    name: status.name,
                    position: status.position,
                    waited_for: position.0,
                });
            }
            // Nothing received and not done: the saga is at the last event
            // its filter passed. Whether any of the later ones up to
            // `position` are the saga's is in the log.
            let idle = status.state == SagaState::Running && status.events_in_flight == 0;
            let scan_from = status.position + 1;
            let mut look_again = false;
            if idle && next_for_saga.is_none_or(|next| next < scan_from) {
                match self.scan(scan_from, position).await {
                    Scan::NotTheSagas => return Ok(()),
                    Scan::SagasAt(next) => next_for_saga = Some(next),
                    Scan::LogEndsBefore => look_again = true,
                    Scan::Failed(e) => {
                        tracing::debug!(saga = status.name, error = %e,
                            "cannot read the log to see whether the saga has anything to do");
                        look_again = true;
                    }
                    Scan::Unknown => {}
                }
            }
            let changed = if look_again {
                tokio::select! {
                    changed = changes.changed() => changed,
                    () = tokio::time::sleep(LOOK_AGAIN) => Ok(()),
                }
            } else {
                changes.changed().await
            };
            // This handle holds the sender, so the channel cannot close;
            // were it to, the status would be final.
            if changed.is_err() {
                let status = self.status();
                return if status.position >= position.0 {
                    Ok(())
                } else {
                    Err(SagaStopped {
                        name: status.name,
                        position: status.position,
                        waited_for: position.0,
                    })
                };
            }
        }
    }

    /// What the log holds in `from..=to` for the saga.
    async fn scan(&self, from: u64, to: Position) -> Scan {
        /// Read a page at a time: the gap may be long, memory is bounded.
        const PAGE_EVENTS: usize = 512;
        let Some((store, filter)) = self.log.as_ref() else {
            return Scan::Unknown;
        };
        let mut next = from;
        while next <= to.0 {
            let page = match store.read_all(Position(next), PAGE_EVENTS).await {
                Ok(page) => page,
                Err(e) => return Scan::Failed(e),
            };
            let Some(last) = page.last().map(|e| e.position.0) else {
                return Scan::LogEndsBefore;
            };
            if let Some(event) = page
                .iter()
                .take_while(|e| e.position <= to)
                .find(|e| filter.matches(e.stream_id.as_str(), &e.event_type))
            {
                return Scan::SagasAt(event.position.0);
            }
            next = last + 1;
        }
        Scan::NotTheSagas
    }

    pub(crate) fn update(&self, change: impl FnOnce(&mut SagaStatus)) {
        self.status.send_modify(change);
    }
}

/// What [`SagaHandle::handled`] found in the log past the saga's position.
enum Scan {
    /// No event up to the position waited for is the saga's.
    NotTheSagas,
    /// The first event there that is the saga's.
    SagasAt(u64),
    /// The log does not reach the position yet.
    LogEndsBefore,
    Failed(event_store::Error),
    /// The handle does not know the saga's log.
    Unknown,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data: one left half-updated by a panic is still worth having.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Marks the status stopped however the run ends (returned, or its task
/// aborted), so readiness never reports a saga that is gone as running.
pub(crate) struct MarkStopped(pub(crate) SagaHandle);

impl Drop for MarkStopped {
    fn drop(&mut self) {
        self.0.update(|s| s.state = SagaState::Stopped);
    }
}
