//! The annals event store: an append-only, segmented event log.
//!
//! - Appends are batches to one or several streams, each with an
//!   [`ExpectedVersion`]; a batch commits whole or not at all, and is
//!   acknowledged only once it is durable (`fdatasync`), with concurrent
//!   appends sharing one sync (group commit by a single writer thread).
//! - Events are read per stream (through per-segment bloom filters and
//!   indexes) or in global [`Position`] order, and pushed to subscribers as
//!   they commit.
//! - Snapshots live in their own files.
//! - Every record carries a CRC; recovery truncates a torn tail and reports
//!   damage instead of serving it. [`verify()`] checks a whole directory.
//!
//! The crate in folders by subsystem: [`log`] (the engine: writer,
//! recovery, reads, snapshots, subscriptions), [`personal`] (the key store
//! and crypto-shredding), [`upcast`] (schema evolution on read), [`format`](mod@format)
//! (byte layouts, also as one page in docs/format.md at the repository
//! root), and [`verify()`] above them. The HTTP server and client live in
//! the `event-store-http` crate.

mod api;
pub mod backup;
mod error;
mod fifo;
pub mod format;
pub mod log;
mod options;
pub mod pauses;
pub mod personal;
mod rawjson;
pub mod rules;
mod subscription;
pub mod telemetry;
pub mod trace;
mod types;
pub mod upcast;
mod verify;

pub use api::{EventStore, LoadedStream};
pub use error::{Error, IdConflict, Result};
pub use log::{DATA_FORMAT_VERSION, RecoveryReport, Store, fs};
pub use options::{Limits, StoreOptions};
pub use personal::{
    ERASED, KeyStore, PLAINTEXT_CACHE_BYTES_DEFAULT, PersonalData, Shredding, SubjectKeys, keys,
    shred, subjects,
};
pub use subscription::Subscription;
pub use types::{
    AppendResult, CategoryCount, CategoryPage, Clock, Direction, EventFilter, EventView,
    ExpectedVersion, InvalidStreamId, Metadata, NewEvent, Position, ReadFrom, RecordedEvent,
    STREAM_ID_PUNCTUATION, Snapshot, Stats, StreamAppend, StreamId, StreamListing, StreamPage,
    StreamSlice, StreamSummary, SystemClock, Timestamp,
};
pub use upcast::{
    EventObject, TypedLoader, UPCAST_CACHE_BYTES_DEFAULT, UpcastValue, Upcasters, Upcasting,
};
pub use verify::{Problem, VerifyReport, verify};
