//! The command handler: load, decide, append with the loaded version as the
//! expected version, retry on conflict, snapshot now and then.
//!
//! It is written against [`EventStore`] only, so it runs unchanged against
//! the embedded store or a remote one, and is used both by the HTTP API and
//! by code that issues commands itself (sagas, process managers), which pass
//! their own causation ids and idempotency keys in [`CommandContext`].
//!
//! Commands for one aggregate in one handler (and its clones) take turns on
//! a lock striped by aggregate id. The store's expected-version check stays
//! the authority (other processes may write the same streams); the lock only
//! keeps commands on a hot aggregate from failing each other's appends and
//! burning retries, since each conflict costs a load and a group commit.
//!
//! One try at a command goes through named steps: `current_state`
//! (`load.rs`: the cached state, or the latest usable snapshot plus the
//! events after it), `decide` (`append.rs`: the handler's preconditions,
//! then the aggregate's own rules), `Decision::appends` (the events with
//! their metadata and expected version, and the idempotency record),
//! `classify` (the store's answer: committed, a duplicate to replay, a
//! conflict to retry, or an error), then `committed` (the new state kept
//! and snapshotted when due). `replay.rs` answers a duplicate from the
//! record of the command that came first.
//!
//! After a command, the aggregate's state stays in a bounded cache so that
//! the next command on it skips the load. A cached state may be stale, so it
//! only ever decides a command that appends, whose expected version the
//! store checks; every other answer is decided again on a fresh load.

mod append;
mod context;
mod load;
mod replay;
mod store;

use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use event_store::{AppendResult, EventStore, Position, StreamId};
use uuid::Uuid;

use crate::aggregate::{Aggregate, AggregateCommand};
use crate::cache::{CachedState, StateCache};
use crate::error::CommandError;
use append::{Appended, Decision, Tries};

pub use context::{CommandContext, CommandOutcome};
pub use store::CommandStore;

/// How a handler behaves; one per aggregate type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerConfig {
    /// How many times a command is reloaded and run again after another
    /// writer changed the aggregate first, before giving up with
    /// [`CommandError::Conflict`]. Commands with an expected version are
    /// never retried.
    pub conflict_retries_max: u32,
    /// Save a snapshot of the state whenever the stream's version crosses a
    /// multiple of this, and whenever a command's load replays at least
    /// this many events (so that a stream without a usable snapshot is
    /// replayed in full once, not on every load). `None`: never.
    ///
    /// Two builds with different `Aggregate::SNAPSHOT_SCHEMA`s on one store
    /// (a rolling deploy) find each other's snapshots unusable, so each
    /// such load then writes one; and a save that fails (a state over the
    /// store's snapshot limit) is tried, and logged, on each such load.
    pub snapshot_every_events: Option<NonZeroU64>,
    /// How long to wait for events that the store has accepted but not yet
    /// made readable: after a conflict, the winner's events; after losing a
    /// race for an idempotency key, the winner's record.
    pub visibility_wait: Duration,
    /// Aggregate states kept in memory after a command, so that the next
    /// command on the same aggregate skips loading it (0: off). A cached
    /// state may be stale, so it only ever decides a command that appends
    /// (the append's expected version checks it); every other answer is
    /// decided again on a fresh load.
    pub cached_aggregates_max: usize,
}

impl Default for HandlerConfig {
    fn default() -> Self {
        Self {
            conflict_retries_max: 5,
            snapshot_every_events: NonZeroU64::new(100),
            visibility_wait: Duration::from_secs(2),
            cached_aggregates_max: 10_000,
        }
    }
}

/// An aggregate rebuilt from its stream.
#[derive(Debug, Clone)]
pub struct Loaded<A> {
    pub state: A,
    /// The stream's version (0: no events).
    pub version: u64,
    /// The snapshot's version, if loading started from one.
    pub snapshot_version: Option<u64>,
    /// Events applied after the snapshot (or from the start).
    pub events_applied: usize,
    /// Position of the last applied event, when one was read.
    last_position: Option<Position>,
}

const LOCK_STRIPES: usize = 1024;

/// Runs commands of aggregate type `A` against an event store. Cheap to
/// clone; clones share their per-aggregate locks.
pub struct CommandHandler<A: Aggregate> {
    store: CommandStore,
    config: Arc<HandlerConfig>,
    locks: Arc<[tokio::sync::Mutex<()>]>,
    cache: Arc<StateCache<A>>,
}

impl<A: Aggregate> Clone for CommandHandler<A> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            config: self.config.clone(),
            locks: self.locks.clone(),
            cache: self.cache.clone(),
        }
    }
}

impl<A: Aggregate> std::fmt::Debug for CommandHandler<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandHandler")
            .field("aggregate", &A::TYPE)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

type Result<T, A> = std::result::Result<T, CommandError<<A as Aggregate>::Error>>;

/// The stream of aggregate `A` with this id: `<A::TYPE>-<uuid>`.
pub fn stream_id<A: Aggregate>(id: Uuid) -> std::result::Result<StreamId, event_store::Error> {
    StreamId::new(format!("{}-{}", A::TYPE, id.as_hyphenated())).map_err(Into::into)
}

impl<A: Aggregate> CommandHandler<A> {
    /// A handler over `store`: any `Arc<dyn EventStore>`, or an
    /// [`event_store::Upcasting`] layer whose typed steps it then runs
    /// itself (see [`CommandStore`]).
    pub fn new(store: impl Into<CommandStore>, config: HandlerConfig) -> Self {
        Self {
            store: store.into(),
            cache: Arc::new(StateCache::new(config.cached_aggregates_max)),
            config: Arc::new(config),
            locks: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    pub fn config(&self) -> &HandlerConfig {
        &self.config
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        self.store.events()
    }

    /// Whether `other` is a clone of this handler (shares its locks and
    /// cache).
    pub fn shares_state_with(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.locks, &other.locks)
    }

    fn lock_for(&self, id: Uuid) -> &tokio::sync::Mutex<()> {
        let bits = id.as_u128();
        let mixed = (bits as u64) ^ ((bits >> 64) as u64);
        &self.locks[(mixed % self.locks.len() as u64) as usize]
    }

    /// Runs `command`: loads the aggregate, lets it decide, and appends the
    /// resulting events atomically with the idempotency record (if any).
    pub async fn execute(
        &self,
        command: A::Command,
        context: CommandContext,
    ) -> Result<CommandOutcome<A::Event>, A> {
        let id = command.aggregate_id();
        let stream = stream_id::<A>(id)?;
        let record_stream = match &context.idempotency {
            Some(i) => Some(i.key.record_stream()?),
            None => None,
        };
        let _turn = self.lock_for(id).lock().await;
        let result = self
            .run(&command, &context, id, &stream, record_stream.as_ref())
            .await;
        match result {
            // A retry of a command that succeeded may now break a rule, find
            // another version or lose a race; the first success's record is
            // its answer. Checking only here keeps the record lookup off the
            // path of commands that succeed (a duplicate of one of those
            // fails on the record's stream instead).
            Err(
                e @ (CommandError::Rejected(_)
                | CommandError::NotFound { .. }
                | CommandError::VersionMismatch { .. }
                | CommandError::Conflict { .. }),
            ) => {
                if let (Some(idempotency), Some(record_stream)) =
                    (&context.idempotency, &record_stream)
                    && let Some(record) = self.find_record(record_stream).await?
                {
                    return self.replay(idempotency, record_stream, record).await;
                }
                Err(e)
            }
            other => other,
        }
    }

    /// The command's tries: load, decide, build the append, append and
    /// classify the answer, retrying on conflict; then book the outcome.
    async fn run(
        &self,
        command: &A::Command,
        context: &CommandContext,
        id: Uuid,
        stream: &StreamId,
        record_stream: Option<&StreamId>,
    ) -> Result<CommandOutcome<A::Event>, A> {
        let mut tries = Tries::new(self.config.conflict_retries_max);
        let mut cached = self.cache.take(id);
        loop {
            let (current, fresh) = self
                .current_state(cached.take(), stream, tries.seen_version)
                .await?;
            let events = match append::decide(command, context, stream, &current) {
                // Only an append checks the version a decision was made on;
                // anything else decided on a cached state is decided again
                // on a fresh load.
                Ok(events) if !fresh && events.is_empty() => continue,
                Err(_) if !fresh => continue,
                Ok(events) => events,
                Err(e) => {
                    self.keep(id, current);
                    return Err(e);
                }
            };
            let decision = Decision::new(command, context, stream, current.version, events);
            let appends = decision.appends(context, record_stream)?;
            if appends.is_empty() {
                // Nothing changed (on a fresh load) and nothing to record.
                let position = self.position_of(&current, stream).await?;
                self.keep(id, current);
                return Ok(decision.into_outcome(position));
            }
            tries.appends += 1;
            let result = self.store.events().append_many(appends).await;
            match append::classify(result, context, stream, record_stream, &tries)? {
                Appended::Committed(results) => {
                    return self
                        .committed(command, current, decision, &results, &tries)
                        .await;
                }
                Appended::Duplicate => return self.replay_winner(context, record_stream).await,
                Appended::Conflict { current } => tries.seen_version = current,
            }
        }
    }

    /// Books a committed append: the state moves on to the new version, is
    /// kept for the next command, and is snapshotted when the version
    /// crossed a multiple of the snapshot interval.
    async fn committed(
        &self,
        command: &A::Command,
        mut current: CachedState<A>,
        decision: Decision<'_, A::Event>,
        results: &[AppendResult],
        tries: &Tries,
    ) -> Result<CommandOutcome<A::Event>, A> {
        let stream = decision.stream;
        let position = if decision.events.is_empty() {
            self.position_of(&current, stream).await?
        } else {
            let position = results
                .iter()
                .find(|r| r.stream_id == *stream)
                .map_or(Position::ZERO, |r| r.last_position);
            for event in &decision.events {
                current.state.apply(event);
            }
            current.version = decision.version;
            current.position = Some(position);
            self.snapshot_if_due(
                stream,
                decision.loaded_version,
                decision.version,
                &current.state,
            )
            .await;
            position
        };
        self.keep(decision.aggregate_id, current);
        tracing::debug!(
            command = command.name(),
            stream = %stream,
            version = decision.version,
            appends_tried = tries.appends,
            "command executed"
        );
        Ok(decision.into_outcome(position))
    }

    /// Keeps a state for the next command on the aggregate (not one that
    /// does not exist: requests for unknown ids must not evict real ones).
    fn keep(&self, id: Uuid, current: CachedState<A>) {
        if current.version > 0 {
            self.cache.put(id, current);
        }
    }
}
