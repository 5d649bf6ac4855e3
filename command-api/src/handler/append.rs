//! The steps of one try at a command between load and bookkeeping: decide
//! on the loaded state, build the append (events, metadata, expected
//! version, idempotency record), and classify the store's answer.

use bytes::Bytes;
use event_store::{AppendResult, ExpectedVersion, Metadata, NewEvent, StreamAppend, StreamId};
use uuid::Uuid;

use super::context::{CommandContext, CommandOutcome};
use crate::aggregate::{Aggregate, AggregateCommand, DomainError, DomainEvent};
use crate::cache::CachedState;
use crate::error::CommandError;
use crate::idempotency::{CommandCompleted, Idempotency, RECORD_EVENT_TYPE};

/// The aggregate's answer to `command` on `current`, after the handler's own
/// preconditions: the aggregate exists (or the command creates it) and is at
/// the version the caller expects, if it named one.
pub(super) fn decide<A: Aggregate>(
    command: &A::Command,
    context: &CommandContext,
    stream: &StreamId,
    current: &CachedState<A>,
) -> Result<Vec<A::Event>, CommandError<A::Error>> {
    if current.version == 0 && !command.creates_aggregate() {
        return Err(CommandError::NotFound {
            stream: stream.clone(),
        });
    }
    if let Some(expected) = context.expected_version
        && expected != current.version
    {
        return Err(CommandError::VersionMismatch {
            stream: stream.clone(),
            expected,
            current: current.version,
        });
    }
    current
        .state
        .handle(command)
        .map_err(CommandError::Rejected)
}

/// What a command decided on one loaded state, and the versions around it.
pub(super) struct Decision<'a, E> {
    pub aggregate_id: Uuid,
    pub stream: &'a StreamId,
    pub command_id: Uuid,
    pub events: Vec<E>,
    /// The version the decision was made on: the append's expected version.
    pub loaded_version: u64,
    /// The aggregate's version once the events are appended.
    pub version: u64,
    /// Whether the events create the aggregate.
    pub created: bool,
}

impl<'a, E: DomainEvent> Decision<'a, E> {
    pub fn new<C: AggregateCommand>(
        command: &C,
        context: &CommandContext,
        stream: &'a StreamId,
        loaded_version: u64,
        events: Vec<E>,
    ) -> Self {
        Self {
            aggregate_id: command.aggregate_id(),
            stream,
            command_id: context.command_id,
            loaded_version,
            version: loaded_version + events.len() as u64,
            created: command.creates_aggregate() && !events.is_empty(),
            events,
        }
    }

    /// The writes that record the decision, all or none: the idempotency
    /// record (when the command has a key) and the events (when there are
    /// any), the events expecting the loaded version. Empty when there is
    /// nothing to write.
    pub fn appends<D: DomainError>(
        &self,
        context: &CommandContext,
        record_stream: Option<&StreamId>,
    ) -> Result<Vec<StreamAppend>, CommandError<D>> {
        let metadata = event_metadata(context)?;
        let mut appends = Vec::with_capacity(2);
        if let (Some(idempotency), Some(record_stream)) = (&context.idempotency, record_stream) {
            // The record goes first: when both streams fail their expected
            // versions, the store names the first, and a record that exists
            // decides the answer.
            appends.push(self.record_append(idempotency, record_stream, metadata.clone())?);
        }
        if !self.events.is_empty() {
            appends.push(self.events_append(metadata)?);
        }
        Ok(appends)
    }

    /// The idempotency record, on a stream that must not exist yet.
    fn record_append<D: DomainError>(
        &self,
        idempotency: &Idempotency,
        record_stream: &StreamId,
        metadata: Bytes,
    ) -> Result<StreamAppend, CommandError<D>> {
        let record = CommandCompleted {
            idempotency_key: idempotency.key.as_str().to_owned(),
            fingerprint: idempotency.fingerprint.to_hex(),
            command_id: self.command_id,
            stream_id: self.stream.as_str().to_owned(),
            aggregate_id: self.aggregate_id,
            version: self.version,
            events: self.events.len() as u64,
            created: self.created,
        };
        let event = NewEvent::json(RECORD_EVENT_TYPE, &record)
            .map_err(|source| CommandError::Encode {
                what: "idempotency record",
                source,
            })?
            .with_metadata_bytes(metadata);
        Ok(StreamAppend::new(
            record_stream.clone(),
            ExpectedVersion::NoStream,
            vec![event],
        ))
    }

    /// The events, expecting the stream at the version they were decided on.
    fn events_append<D: DomainError>(
        &self,
        metadata: Bytes,
    ) -> Result<StreamAppend, CommandError<D>> {
        let mut new_events = Vec::with_capacity(self.events.len());
        for event in &self.events {
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
        Ok(StreamAppend::new(
            self.stream.clone(),
            ExpectedVersion::Exact(self.loaded_version),
            new_events,
        ))
    }

    /// The command's outcome once the aggregate's event at `version` is at
    /// `position`.
    pub fn into_outcome(self, position: event_store::Position) -> CommandOutcome<E> {
        CommandOutcome {
            aggregate_id: self.aggregate_id,
            stream_id: self.stream.clone(),
            version: self.version,
            position,
            events: self.events,
            created: self.created,
            command_id: self.command_id,
            replayed: false,
        }
    }
}

/// The appends a command has tried, and what the last conflict showed.
#[derive(Debug)]
pub(super) struct Tries {
    /// Appends tried so far.
    pub appends: u32,
    /// Appends allowed: the first and the configured retries.
    appends_max: u32,
    /// The version another writer reached when it beat us: a reload must
    /// see at least that much to be worth running the command on.
    pub seen_version: u64,
}

impl Tries {
    pub fn new(conflict_retries_max: u32) -> Self {
        Self {
            appends: 0,
            appends_max: conflict_retries_max.saturating_add(1),
            seen_version: 0,
        }
    }
}

/// What the store's answer to an append means for the command.
#[derive(Debug)]
pub(super) enum Appended {
    /// The events (and the record) are in.
    Committed(Vec<AppendResult>),
    /// A request with the same idempotency key appended its record first.
    Duplicate,
    /// Another writer changed the aggregate first: load again and retry.
    Conflict { current: u64 },
}

/// Sorts the store's answer to the command's append: done, a duplicate to
/// replay, a conflict worth a retry, or an error (a conflict the caller's
/// expected version forbids retrying, or one past the last allowed try).
pub(super) fn classify<D: DomainError>(
    result: event_store::Result<Vec<AppendResult>>,
    context: &CommandContext,
    stream: &StreamId,
    record_stream: Option<&StreamId>,
    tries: &Tries,
) -> Result<Appended, CommandError<D>> {
    match result {
        Ok(results) => Ok(Appended::Committed(results)),
        Err(event_store::Error::WrongExpectedVersion { stream: failed, .. })
            if Some(&failed) == record_stream =>
        {
            Ok(Appended::Duplicate)
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
            if tries.appends >= tries.appends_max {
                tracing::warn!(stream = %stream, attempts = tries.appends, "command gave up on conflicts");
                return Err(CommandError::Conflict {
                    stream: stream.clone(),
                    attempts: tries.appends,
                });
            }
            Ok(Appended::Conflict { current })
        }
        Err(e) => Err(e.into()),
    }
}

/// The metadata every event of the command carries, serialized once.
fn event_metadata<E: DomainError>(context: &CommandContext) -> Result<Bytes, CommandError<E>> {
    let mut extra = serde_json::Map::new();
    extra.insert("command_id".into(), context.command_id.to_string().into());
    if let Some(i) = &context.idempotency {
        extra.insert("idempotency_key".into(), i.key.as_str().into());
    }
    if let Some(traceparent) = &context.traceparent {
        extra.insert(
            crate::trace::TRACEPARENT.into(),
            traceparent.to_string().into(),
        );
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
