//! The store's one error type.

use std::path::PathBuf;

use crate::types::{AppendResult, ExpectedVersion, InvalidStreamId, StreamId};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Optimistic concurrency: the stream is not at the version the caller expected.
    #[error("stream {stream} is at version {current}, expected {expected}")]
    WrongExpectedVersion {
        stream: StreamId,
        expected: ExpectedVersion,
        /// The stream's current version (0 = the stream does not exist).
        current: u64,
    },

    /// An event id names one event: an append that repeats an id already in
    /// the stream with other content, or repeats part of an earlier append
    /// (or of one stream of a multi-stream append) and not the rest.
    #[error("{0}")]
    EventIdConflict(Box<IdConflict>),

    /// A caller-controlled size or count is over its configured limit.
    #[error("{limit} exceeded: {actual} > {max}")]
    LimitExceeded {
        /// Name of the option in [`crate::Limits`], e.g. `event_bytes_max`.
        limit: &'static str,
        actual: u64,
        max: u64,
    },

    #[error("invalid stream id {id:?}: {reason}")]
    InvalidStreamId { id: String, reason: String },

    /// An append that can never succeed as given (empty, bad JSON, a stream twice).
    #[error("invalid append: {0}")]
    InvalidAppend(String),

    /// Store options that cannot work together.
    #[error("invalid store options: {0}")]
    InvalidOptions(String),

    /// A read request that can never succeed as given.
    #[error("invalid read: {0}")]
    InvalidRead(String),

    /// Stored bytes fail their checksum or do not decode. Never served as data.
    #[error("corruption in {file} at offset {offset}: {detail}")]
    Corruption {
        file: PathBuf,
        offset: u64,
        detail: String,
    },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// The writer stopped after a failed write or fsync; appends are refused
    /// until the store is reopened (and recovery has run).
    #[error("the store stopped accepting appends: {0}")]
    Poisoned(String),

    /// An append whose outcome is not known: the store failed after the
    /// append may have become durable (an fsync that failed, a connection
    /// lost once the request was sent). Sending the same append again (the
    /// same event ids) is safe: it is answered as already committed, or
    /// commits now.
    #[error("the append may or may not have been committed: {0}")]
    Indeterminate(String),

    /// The log no longer holds an event a reader read before: it was
    /// truncated past it (damage, a lost tail) or restored from an older
    /// copy, and positions after it may now name other events. A reader
    /// that went on would skip or mix events; it must start again (a
    /// projection is rebuilt).
    #[error("the event log diverged from what was read: {0}")]
    Diverged(String),

    /// The store opened with damaged data and serves reads only.
    #[error("the store is read-only: {0}")]
    ReadOnly(String),

    #[error("the store is closed")]
    Closed,

    #[error("the data directory {path} is in use by another process")]
    Locked { path: PathBuf },

    /// A path given as a data directory that holds no store.
    #[error("{path} is not an annals data directory: {reason}")]
    NotDataDirectory { path: PathBuf, reason: String },

    #[error("{path} has format version {found}; this build reads versions up to {supported}")]
    UnsupportedFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },

    /// A stored event cannot be brought to the schema version the code reads.
    #[error("cannot upcast {event_type} from schema version {version}: {detail}")]
    Upcast {
        event_type: String,
        version: u32,
        detail: String,
    },

    /// A personal-data key is missing (and not erased), damaged, or does not
    /// decrypt: the key store is incomplete, never taken for an erasure.
    #[error("key store: {0}")]
    KeyStore(String),

    /// The store does not offer this operation.
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// A remote store answered with an error or could not be reached.
    #[error("remote store: {0}")]
    Remote(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn corruption(
        file: impl Into<PathBuf>,
        offset: u64,
        detail: impl Into<String>,
    ) -> Self {
        Error::Corruption {
            file: file.into(),
            offset,
            detail: detail.into(),
        }
    }

    /// True for errors that say nothing about the request itself: the store
    /// could not serve it (I/O, corruption, stopped writer).
    pub fn is_store_failure(&self) -> bool {
        matches!(
            self,
            Error::Corruption { .. }
                | Error::Io { .. }
                | Error::Poisoned(_)
                | Error::Indeterminate(_)
                | Error::ReadOnly(_)
                | Error::Closed
                | Error::Remote(_)
        )
    }
}

/// Why an append's event ids conflict with what the stream holds.
#[derive(Debug, Clone, PartialEq)]
pub struct IdConflict {
    pub stream: StreamId,
    pub event_id: uuid::Uuid,
    pub detail: String,
    /// Set when every event of the append is committed under its id, only
    /// with other bytes: where they are, for a layer that stores content
    /// transformed (encrypted with a fresh nonce) to compare what the bytes
    /// mean and take the append as a retry after all.
    pub committed: Option<Vec<AppendResult>>,
}

impl std::fmt::Display for IdConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "event id {} conflicts in stream {}: {}",
            self.event_id, self.stream, self.detail
        )
    }
}

impl From<InvalidStreamId> for Error {
    fn from(InvalidStreamId { id, reason }: InvalidStreamId) -> Self {
        Error::InvalidStreamId { id, reason }
    }
}
