//! Configuration: every size and count a caller controls has a named limit.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::log::fs::{Fs, RealFs};
use crate::types::{Clock, SystemClock};

/// Limits on what callers may ask of the store. Each is checked before
/// anything is written, and exceeding one is [`Error::LimitExceeded`] naming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of one event's data plus metadata.
    pub event_bytes_max: usize,
    /// Bytes of an event type name.
    pub event_type_bytes_max: usize,
    /// Events in one append call (all streams together).
    pub events_per_append_max: usize,
    /// Encoded bytes of one append call (all events with their framing).
    pub append_bytes_max: usize,
    /// Streams in one multi-stream append.
    pub streams_per_append_max: usize,
    /// Bytes of a stream id.
    pub stream_id_bytes_max: usize,
    /// Events returned by one read call (the page size).
    pub read_count_max: usize,
    /// Bytes of one snapshot's state.
    pub snapshot_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            event_bytes_max: 1 << 20,
            event_type_bytes_max: 256,
            events_per_append_max: 1_000,
            append_bytes_max: 16 << 20,
            streams_per_append_max: 64,
            stream_id_bytes_max: 256,
            read_count_max: 10_000,
            snapshot_bytes_max: 16 << 20,
        }
    }
}

pub(crate) fn check_limit(limit: &'static str, actual: usize, max: usize) -> Result<()> {
    if actual > max {
        return Err(Error::LimitExceeded {
            limit,
            actual: actual as u64,
            max: max as u64,
        });
    }
    Ok(())
}

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// A segment is sealed once appending the next batch would take it past
    /// this size (a batch is never split, so one oversized batch may exceed it).
    pub segment_bytes_max: u64,
    /// Space the writer reserves ahead of its appends in the active segment
    /// (`fallocate`), a step at a time, so that a durable append overwrites
    /// reserved space instead of growing the file: its `fdatasync` then
    /// writes the data alone. The reserved space reads as zeros, which
    /// recovery knows from records; it is given back when the segment is
    /// sealed. 0: the file grows with every append.
    pub preallocate_bytes: u64,
    /// Snapshot files roll over at this size.
    pub snapshot_file_bytes_max: u64,
    pub limits: Limits,
    /// Bloom filter size per stream in a sealed segment; 10 bits give ~1%
    /// false positives.
    pub bloom_bits_per_stream: u32,
    /// Consult bloom filters before a segment's index. Off only to measure
    /// what they save.
    pub use_bloom_filters: bool,
    /// Streams whose state (version, last position) is kept in memory after
    /// a lookup in the sealed segments. The store keeps no table of every
    /// stream: a stream not in the active segment or this cache is looked
    /// up through the sealed segments' bloom filters and indexes.
    pub stream_cache_entries: usize,
    /// Events buffered per subscriber before the subscription stops reading
    /// ahead (a slow subscriber never holds up appends or other subscribers).
    pub subscription_buffer: usize,
    /// Append requests queued for the writer before appenders wait.
    pub writer_queue_max: usize,
    /// Whether a caller that is alone (nothing queued, nothing in flight,
    /// no other caller seen lately) writes and syncs its own append on its
    /// own thread instead of handing it to the writer thread and waiting
    /// to be woken: one caller appending in a loop gained about a fifth
    /// (docs/benchmarks.md, "Beside tephra").
    /// Its task then blocks its runtime worker for the sync, as a
    /// synchronous store would, while the runtime's other workers go on;
    /// on a current-thread runtime, which has none, callers never do.
    /// Turn it off where no worker may block for a sync.
    pub commit_on_caller: bool,
    pub clock: Arc<dyn Clock>,
    pub fs: Arc<dyn Fs>,
    /// Open to read the log in order only, as an offline rebuild does: no
    /// table of streams is built, so memory does not grow with the number
    /// of streams ever written. Appends, per-stream reads and loads are
    /// refused (the store is read-only), and stream versions are checked
    /// within each segment only.
    pub log_only: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            segment_bytes_max: 256 << 20,
            preallocate_bytes: 32 << 20,
            snapshot_file_bytes_max: 64 << 20,
            limits: Limits::default(),
            bloom_bits_per_stream: 10,
            use_bloom_filters: true,
            stream_cache_entries: 65_536,
            subscription_buffer: 1_024,
            writer_queue_max: 8_192,
            commit_on_caller: true,
            clock: Arc::new(SystemClock),
            fs: Arc::new(RealFs),
            log_only: false,
        }
    }
}

impl StoreOptions {
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::InvalidOptions(what.to_string()));
        if self.segment_bytes_max < 4096 || self.segment_bytes_max > (1 << 31) {
            return bad("segment_bytes_max must be between 4 KiB and 2 GiB");
        }
        if self.limits.append_bytes_max > (1 << 30) {
            return bad("append_bytes_max must be at most 1 GiB");
        }
        if self.limits.stream_id_bytes_max > u16::MAX as usize
            || self.limits.event_type_bytes_max > u16::MAX as usize
        {
            return bad("stream ids and event types are at most 65535 bytes");
        }
        if self.limits.read_count_max == 0 || self.subscription_buffer == 0 {
            return bad("read_count_max and subscription_buffer must be positive");
        }
        Ok(())
    }
}
