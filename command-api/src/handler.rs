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
//! After a command, the aggregate's state stays in a bounded cache so that
//! the next command on it skips the load. A cached state may be stale, so it
//! only ever decides a command that appends, whose expected version the
//! store checks; every other answer is decided again on a fresh load.

use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use event_store::{
    Direction, EventStore, ExpectedVersion, Metadata, NewEvent, Position, ReadFrom, StreamAppend,
    StreamId, Upcasters,
};
use uuid::Uuid;

use crate::aggregate::{Aggregate, AggregateCommand, DecodeError, DomainEvent, decode_recorded};
use crate::cache::{CachedState, StateCache};
use crate::error::CommandError;
use crate::idempotency::{CommandCompleted, Idempotency, RECORD_EVENT_TYPE};

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

/// Who issued a command, and on what conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandContext {
    /// Identifies this command; stored in every event it appends.
    pub command_id: Uuid,
    /// The conversation the command belongs to, carried through sagas.
    pub correlation_id: Uuid,
    /// The message that caused the command (for a request from a client,
    /// the command itself).
    pub causation_id: Uuid,
    /// Run only if the aggregate is at exactly this version (HTTP `If-Match`).
    pub expected_version: Option<u64>,
    /// Makes retries of the command safe; see [`crate::idempotency`].
    pub idempotency: Option<Idempotency>,
}

impl CommandContext {
    /// A command that starts its own conversation: fresh command id, which
    /// is also the correlation and causation id.
    pub fn new() -> Self {
        let id = Uuid::now_v7();
        Self {
            command_id: id,
            correlation_id: id,
            causation_id: id,
            expected_version: None,
            idempotency: None,
        }
    }

    /// A command issued in reaction to message `causation_id` of
    /// conversation `correlation_id`.
    pub fn caused_by(mut self, correlation_id: Uuid, causation_id: Uuid) -> Self {
        self.correlation_id = correlation_id;
        self.causation_id = causation_id;
        self
    }

    pub fn expecting_version(mut self, version: u64) -> Self {
        self.expected_version = Some(version);
        self
    }

    pub fn with_idempotency(mut self, idempotency: Idempotency) -> Self {
        self.idempotency = Some(idempotency);
        self
    }
}

impl Default for CommandContext {
    fn default() -> Self {
        Self::new()
    }
}

/// What a command did.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandOutcome<E> {
    pub aggregate_id: Uuid,
    pub stream_id: StreamId,
    /// The aggregate's version after the command (the `ETag`).
    pub version: u64,
    /// Global position of the aggregate's event at `version`: once a reader
    /// of the log has reached it, it has seen this command's effect.
    pub position: Position,
    /// The events the command appended (none when it changed nothing).
    pub events: Vec<E>,
    /// Whether the command created the aggregate.
    pub created: bool,
    /// The command that produced this outcome: this one, or on a replay the
    /// original.
    pub command_id: Uuid,
    /// True when the outcome is that of an earlier command with the same
    /// idempotency key, and nothing was appended now.
    pub replayed: bool,
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
    store: Arc<dyn EventStore>,
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
    pub fn new(store: Arc<dyn EventStore>, config: HandlerConfig) -> Self {
        Self {
            store,
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
        &self.store
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

    /// The load-decide-append loop of [`CommandHandler::execute`].
    async fn run(
        &self,
        command: &A::Command,
        context: &CommandContext,
        id: Uuid,
        stream: &StreamId,
        record_stream: Option<&StreamId>,
    ) -> Result<CommandOutcome<A::Event>, A> {
        let appends_max = self.config.conflict_retries_max.saturating_add(1);
        let mut appends_tried = 0;
        // The version another writer reached when it beat us: a reload must
        // see at least that much to be worth running the command on.
        let mut seen_version = 0;
        let mut cached = self.cache.take(id);
        loop {
            let (current, fresh) = match cached.take() {
                Some(c) if c.version >= seen_version => (c, false),
                _ => {
                    let loaded = self.load_at_least(stream, seen_version).await?;
                    // A long replay (no snapshot yet, one this build's state
                    // schema cannot use, or a history of old events to
                    // upcast) is paid once: the next load starts here.
                    if self
                        .config
                        .snapshot_every_events
                        .is_some_and(|every| loaded.events_applied as u64 >= every.get())
                    {
                        self.save_snapshot(stream, loaded.version, &loaded.state)
                            .await;
                    }
                    let current = CachedState {
                        state: loaded.state,
                        version: loaded.version,
                        position: loaded.last_position,
                    };
                    (current, true)
                }
            };
            let verdict = if current.version == 0 && !command.creates_aggregate() {
                Err(CommandError::NotFound {
                    stream: stream.clone(),
                })
            } else if let Some(expected) = context.expected_version
                && expected != current.version
            {
                Err(CommandError::VersionMismatch {
                    stream: stream.clone(),
                    expected,
                    current: current.version,
                })
            } else {
                current
                    .state
                    .handle(command)
                    .map_err(CommandError::Rejected)
            };
            let events = match verdict {
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
            let loaded_version = current.version;
            let version = loaded_version + events.len() as u64;
            let created = command.creates_aggregate() && !events.is_empty();

            let metadata = event_metadata(context)?;
            let mut appends = Vec::with_capacity(2);
            if let (Some(idempotency), Some(record_stream)) = (&context.idempotency, record_stream)
            {
                // The record goes first: when both streams fail their
                // expected versions, the store names the first, and a
                // record that exists decides the answer.
                let record = CommandCompleted {
                    idempotency_key: idempotency.key.as_str().to_owned(),
                    fingerprint: idempotency.fingerprint.to_hex(),
                    command_id: context.command_id,
                    stream_id: stream.as_str().to_owned(),
                    aggregate_id: id,
                    version,
                    events: events.len() as u64,
                    created,
                };
                let event = NewEvent::json(RECORD_EVENT_TYPE, &record)
                    .map_err(|source| CommandError::Encode {
                        what: "idempotency record",
                        source,
                    })?
                    .with_metadata_bytes(metadata.clone());
                appends.push(StreamAppend::new(
                    record_stream.clone(),
                    ExpectedVersion::NoStream,
                    vec![event],
                ));
            }
            if !events.is_empty() {
                let mut new_events = Vec::with_capacity(events.len());
                for event in &events {
                    let data = event.encode().map_err(|source| CommandError::Encode {
                        what: "event",
                        source,
                    })?;
                    new_events.push(
                        NewEvent::new(event.event_type(), data)
                            .with_schema_version(event.schema_version())
                            .with_metadata_bytes(metadata.clone()),
                    );
                }
                appends.push(StreamAppend::new(
                    stream.clone(),
                    ExpectedVersion::Exact(loaded_version),
                    new_events,
                ));
            }
            let outcome = |position| CommandOutcome {
                aggregate_id: id,
                stream_id: stream.clone(),
                version,
                position,
                events: Vec::new(),
                created,
                command_id: context.command_id,
                replayed: false,
            };
            if appends.is_empty() {
                // Nothing changed (on a fresh load) and nothing to record.
                let position = self.position_of(&current, stream).await?;
                self.keep(id, current);
                return Ok(outcome(position));
            }

            appends_tried += 1;
            match self.store.append_many(appends).await {
                Ok(results) => {
                    let mut current = current;
                    let position = if events.is_empty() {
                        self.position_of(&current, stream).await?
                    } else {
                        let position = results
                            .iter()
                            .find(|r| r.stream_id == *stream)
                            .map_or(Position::ZERO, |r| r.last_position);
                        for event in &events {
                            current.state.apply(event);
                        }
                        current.version = version;
                        current.position = Some(position);
                        self.snapshot_if_due(stream, loaded_version, version, &current.state)
                            .await;
                        position
                    };
                    self.keep(id, current);
                    tracing::debug!(
                        command = command.name(),
                        stream = %stream,
                        version,
                        appends_tried,
                        "command executed"
                    );
                    return Ok(CommandOutcome {
                        events,
                        ..outcome(position)
                    });
                }
                Err(event_store::Error::WrongExpectedVersion { stream: failed, .. })
                    if Some(&failed) == record_stream =>
                {
                    // A request with the same key appended first: an earlier
                    // try (its record is readable), or a concurrent duplicate
                    // (its record is readable once its batch is durable).
                    let (Some(idempotency), Some(record_stream)) =
                        (&context.idempotency, &record_stream)
                    else {
                        return Err(CommandError::Store(event_store::Error::InvalidAppend(
                            "conflict on an idempotency record without a key".into(),
                        )));
                    };
                    let record = self.await_record(record_stream, idempotency).await?;
                    return self.replay(idempotency, record_stream, record).await;
                }
                Err(event_store::Error::WrongExpectedVersion {
                    stream: failed,
                    current,
                    ..
                }) if failed == *stream => {
                    if let Some(expected) = context.expected_version {
                        return Err(CommandError::VersionMismatch {
                            stream: stream.clone(),
                            expected,
                            current,
                        });
                    }
                    if appends_tried >= appends_max {
                        tracing::warn!(stream = %stream, attempts = appends_tried, "command gave up on conflicts");
                        return Err(CommandError::Conflict {
                            stream: stream.clone(),
                            attempts: appends_tried,
                        });
                    }
                    seen_version = current;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Keeps a state for the next command on the aggregate (not one that
    /// does not exist: requests for unknown ids must not evict real ones).
    fn keep(&self, id: Uuid, current: CachedState<A>) {
        if current.version > 0 {
            self.cache.put(id, current);
        }
    }

    /// The aggregate's current state: the latest usable snapshot plus the
    /// events after it.
    pub async fn load(&self, id: Uuid) -> Result<Loaded<A>, A> {
        self.load_stream(&stream_id::<A>(id)?).await
    }

    async fn load_stream(&self, stream: &StreamId) -> Result<Loaded<A>, A> {
        let (loaded, upcasters) = match self
            .store
            .load_leaving_typed(stream, Some(A::SNAPSHOT_SCHEMA))
            .await
        {
            Ok(loaded) => loaded,
            // A snapshot is a cache of the events: when the damage is in
            // it, the events still tell the whole story (and when it is in
            // the events, the load without it says so).
            Err(e @ event_store::Error::Corruption { .. }) => {
                tracing::warn!(stream = %stream, error = %e, "damage in the aggregate's snapshot or events; loading its events alone");
                self.store.load_leaving_typed(stream, None).await?
            }
            Err(e) => return Err(e.into()),
        };
        let upcasters = upcasters.as_deref();
        let (state, snapshot_version, events) = match &loaded.snapshot {
            None => (A::default(), None, loaded.events),
            Some(snapshot) => match serde_json::from_slice::<A>(&snapshot.state) {
                Ok(state) => (state, Some(snapshot.version), loaded.events),
                Err(e) => {
                    tracing::warn!(
                        stream = %stream,
                        version = snapshot.version,
                        error = %e,
                        "ignoring a snapshot that does not decode"
                    );
                    let (all, upcasters) = self.store.load_leaving_typed(stream, None).await?;
                    return self.fold(
                        stream,
                        A::default(),
                        None,
                        all.events,
                        upcasters.as_deref(),
                        all.version,
                    );
                }
            },
        };
        self.fold(
            stream,
            state,
            snapshot_version,
            events,
            upcasters,
            loaded.version,
        )
    }

    /// Folds `events` into `state`, decoding them through `upcasters` as
    /// `load_leaving_typed` handed them back.
    fn fold(
        &self,
        stream: &StreamId,
        mut state: A,
        snapshot_version: Option<u64>,
        events: Vec<event_store::RecordedEvent>,
        upcasters: Option<&Upcasters>,
        version: u64,
    ) -> Result<Loaded<A>, A> {
        let events_applied = events.len();
        let last_position = events.last().map(|e| e.position);
        for recorded in &events {
            let event = decode_recorded::<A::Event>(recorded, upcasters).map_err(|e| match e {
                // Answered as when the store layer upcasts (it names the
                // event's type and version).
                DecodeError::Upcast(e) => CommandError::Store(e),
                source => CommandError::Decode {
                    stream: stream.clone(),
                    version: recorded.version,
                    source,
                },
            })?;
            state.apply(&event);
        }
        Ok(Loaded {
            state,
            version,
            snapshot_version,
            events_applied,
            last_position,
        })
    }

    /// Loads until the stream is at least at `version`: after a conflict the
    /// store knows of the winner's events before readers can see them (they
    /// are published after their fsync), and running the command again on
    /// the old state would only conflict again.
    async fn load_at_least(&self, stream: &StreamId, version: u64) -> Result<Loaded<A>, A> {
        let deadline = Instant::now() + self.config.visibility_wait;
        let mut pause = Duration::from_micros(200);
        loop {
            let loaded = self.load_stream(stream).await?;
            if loaded.version >= version || Instant::now() >= deadline {
                return Ok(loaded);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Position of the event at the state's version (zero for no stream).
    async fn position_of(
        &self,
        current: &CachedState<A>,
        stream: &StreamId,
    ) -> Result<Position, A> {
        if let Some(position) = current.position {
            return Ok(position);
        }
        self.position_at(stream, current.version).await
    }

    async fn position_at(&self, stream: &StreamId, version: u64) -> Result<Position, A> {
        if version == 0 {
            return Ok(Position::ZERO);
        }
        let slice = self
            .store
            .read_stream(stream, ReadFrom::Version(version), Direction::Forward, 1)
            .await?;
        slice
            .events
            .first()
            .map(|e| e.position)
            .ok_or_else(|| CommandError::NotFound {
                stream: stream.clone(),
            })
    }

    async fn snapshot_if_due(&self, stream: &StreamId, before: u64, after: u64, state: &A) {
        let Some(every) = self.config.snapshot_every_events else {
            return;
        };
        if before / every.get() == after / every.get() {
            return;
        }
        self.save_snapshot(stream, after, state).await;
    }

    async fn save_snapshot(&self, stream: &StreamId, version: u64, state: &A) {
        let result = match serde_json::to_vec(state) {
            Ok(bytes) => self
                .store
                .save_snapshot(stream, version, A::SNAPSHOT_SCHEMA, Bytes::from(bytes))
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        // The events are committed whatever happens here: a missing
        // snapshot only makes the next load replay more.
        if let Err(error) = result {
            tracing::warn!(stream = %stream, version, %error, "could not save a snapshot");
        }
    }

    async fn find_record(&self, record_stream: &StreamId) -> Result<Option<CommandCompleted>, A> {
        let slice = self
            .store
            .read_stream(record_stream, ReadFrom::Start, Direction::Forward, 1)
            .await?;
        let Some(event) = slice.events.first() else {
            return Ok(None);
        };
        if event.event_type == crate::idempotency::FENCE_EVENT_TYPE {
            let reason = event
                .data_as::<crate::idempotency::CommandFenced>()
                .map_or_else(|e| format!("(unreadable: {e})"), |f| f.reason);
            return Err(CommandError::Fenced {
                stream: record_stream.clone(),
                reason,
            });
        }
        event
            .data_as::<CommandCompleted>()
            .map(Some)
            .map_err(|e| CommandError::BadRecord {
                stream: record_stream.clone(),
                detail: e.to_string(),
            })
    }

    async fn await_record(
        &self,
        record_stream: &StreamId,
        idempotency: &Idempotency,
    ) -> Result<CommandCompleted, A> {
        let deadline = Instant::now() + self.config.visibility_wait;
        let mut pause = Duration::from_micros(200);
        loop {
            if let Some(record) = self.find_record(record_stream).await? {
                return Ok(record);
            }
            if Instant::now() >= deadline {
                return Err(CommandError::IdempotencyKeyInFlight {
                    key: idempotency.key.as_str().to_owned(),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// The outcome of the recorded command, if this request is the same one.
    async fn replay(
        &self,
        idempotency: &Idempotency,
        record_stream: &StreamId,
        record: CommandCompleted,
    ) -> Result<CommandOutcome<A::Event>, A> {
        let reused = || CommandError::IdempotencyKeyReused {
            key: idempotency.key.as_str().to_owned(),
        };
        if record.fingerprint != idempotency.fingerprint.to_hex() {
            return Err(reused());
        }
        // The same request, but not necessarily the same stream: an id the
        // server generated differs on every try, and the record's is the one
        // that counts.
        let Some(stream) = StreamId::new(&record.stream_id).ok().filter(|s| {
            s.as_str()
                .strip_prefix(A::TYPE)
                .is_some_and(|rest| rest.starts_with('-'))
        }) else {
            return Err(reused());
        };
        let stream = &stream;
        let bad = |detail: String| CommandError::BadRecord {
            stream: record_stream.clone(),
            detail,
        };
        if record.events > record.version {
            return Err(bad(format!(
                "it claims {} events up to version {}",
                record.events, record.version
            )));
        }
        let (events, position) = if record.events == 0 {
            (Vec::new(), self.position_at(stream, record.version).await?)
        } else {
            let first = record.version - record.events + 1;
            let count = usize::try_from(record.events).unwrap_or(usize::MAX);
            let slice = self
                .store
                .read_stream(stream, ReadFrom::Version(first), Direction::Forward, count)
                .await?;
            if slice.events.len() as u64 != record.events {
                return Err(bad(format!(
                    "{} holds {} of the {} events it names",
                    stream,
                    slice.events.len(),
                    record.events
                )));
            }
            let mut events = Vec::with_capacity(slice.events.len());
            for recorded in &slice.events {
                events.push(
                    A::Event::decode(
                        &recorded.event_type,
                        recorded.schema_version,
                        &recorded.data,
                    )
                    .map_err(|source| CommandError::Decode {
                        stream: stream.clone(),
                        version: recorded.version,
                        source,
                    })?,
                );
            }
            let position = slice.events.last().map_or(Position::ZERO, |e| e.position);
            (events, position)
        };
        Ok(CommandOutcome {
            aggregate_id: record.aggregate_id,
            stream_id: stream.clone(),
            version: record.version,
            position,
            events,
            created: record.created,
            command_id: record.command_id,
            replayed: true,
        })
    }
}

/// The metadata every event of the command carries, serialized once.
fn event_metadata<E: crate::aggregate::DomainError>(
    context: &CommandContext,
) -> std::result::Result<Bytes, CommandError<E>> {
    let mut extra = serde_json::Map::new();
    extra.insert("command_id".into(), context.command_id.to_string().into());
    if let Some(i) = &context.idempotency {
        extra.insert("idempotency_key".into(), i.key.as_str().into());
    }
    let metadata = Metadata {
        correlation_id: Some(context.correlation_id),
        causation_id: Some(context.causation_id),
        extra,
    };
    serde_json::to_vec(&metadata)
        .map(Bytes::from)
        .map_err(|source| CommandError::Encode {
            what: "metadata",
            source,
        })
}

/// Sets already-serialized metadata on an event.
trait WithMetadataBytes {
    fn with_metadata_bytes(self, metadata: Bytes) -> Self;
}

impl WithMetadataBytes for NewEvent {
    fn with_metadata_bytes(mut self, metadata: Bytes) -> Self {
        self.metadata = metadata;
        self
    }
}
