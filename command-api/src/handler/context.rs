//! What a caller says about a command (who issued it, on what
//! conditions) and what the handler answers about it.

use event_store::{Position, StreamId};
use uuid::Uuid;

use crate::idempotency::Idempotency;
use crate::trace::TraceParent;

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
    /// The W3C trace the command is part of, stored in its events'
    /// metadata as `traceparent` (see [`crate::trace`]).
    pub traceparent: Option<TraceParent>,
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
            traceparent: None,
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

    /// Part of trace `traceparent` (a request's, or the child of an
    /// event's).
    pub fn with_traceparent(mut self, traceparent: Option<TraceParent>) -> Self {
        self.traceparent = traceparent;
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
