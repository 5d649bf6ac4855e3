//! Why a command did not go through. Whatever the variant, the command
//! appended nothing.

use event_store::StreamId;

use crate::aggregate::{DecodeError, DomainError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError<E: DomainError> {
    /// The command breaks a business rule of the aggregate.
    #[error("{0}")]
    Rejected(E),

    /// The command needs an existing aggregate and the stream has no events.
    #[error("{stream} does not exist")]
    NotFound { stream: StreamId },

    /// The caller named the version it expects (HTTP `If-Match`) and the
    /// aggregate is at another one. Never retried: the caller decided on
    /// state it has seen, which is no longer current.
    #[error("{stream} is at version {current}, not at the expected version {expected}")]
    VersionMismatch {
        stream: StreamId,
        expected: u64,
        current: u64,
    },

    /// Other writers kept changing the aggregate between load and append,
    /// through every allowed retry.
    #[error("{stream} kept changing concurrently; gave up after {attempts} attempts")]
    Conflict { stream: StreamId, attempts: u32 },

    /// The idempotency key was already used for a request with a different
    /// fingerprint (another body, path or aggregate).
    #[error("idempotency key {key:?} was already used for a different request")]
    IdempotencyKeyReused { key: String },

    /// A concurrent request with the same idempotency key won the append,
    /// and its record did not become readable in time.
    #[error("a request with idempotency key {key:?} is still being processed")]
    IdempotencyKeyInFlight { key: String },

    /// A stored event this code cannot read.
    #[error("event {version} of {stream} cannot be read: {source}")]
    Decode {
        stream: StreamId,
        version: u64,
        #[source]
        source: DecodeError,
    },

    /// A stored idempotency record this code cannot read.
    #[error("idempotency record {stream} cannot be read: {detail}")]
    BadRecord { stream: StreamId, detail: String },

    /// The idempotency key was fenced (`idempotency::fence`): its command
    /// will never run.
    #[error("the key of {stream} was fenced, its command will never run: {reason}")]
    Fenced { stream: StreamId, reason: String },

    /// An event or record could not be serialized.
    #[error("encoding a {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    /// The store failed or refused (I/O, closed, read-only, limits).
    #[error(transparent)]
    Store(#[from] event_store::Error),
}
