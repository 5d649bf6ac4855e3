//! What readers share with the writer: the segment list, the active segment's
//! in-memory index and the stream table. The writer changes it only after an
//! fsync returned, under a short write lock; readers copy what they need under
//! a read lock and decode outside it, so no reader ever waits for disk I/O.

use std::collections::HashMap;
use std::sync::Arc;

use crate::log::segment::{ActiveSegment, SealedSegment};
use crate::types::StreamId;

/// What the store keeps in memory per stream: 16 bytes plus the id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamState {
    /// Version of the stream's last event (= its number of events).
    pub version: u64,
    /// Position of its last event; reads never look at later segments.
    pub last_position: u64,
}

#[derive(Debug)]
pub(crate) struct State {
    pub sealed: Vec<Arc<SealedSegment>>,
    pub active: ActiveSegment,
    pub streams: HashMap<StreamId, StreamState>,
    /// Position of the last durable event (0 = empty store).
    pub head: u64,
    pub sealed_bytes: u64,
    /// Set when recovery found damage: reads are served, appends refused.
    pub read_only: Option<String>,
    /// Damage after the last intact record of the log: the records there are
    /// lost and nobody can tell which streams they belonged to, so reads that
    /// reach the end of the log or of a stream report it.
    pub damaged_tail: Option<DamagedTail>,
    /// Opened with [`StoreOptions::log_only`]: `streams` is empty.
    ///
    /// [`StoreOptions::log_only`]: crate::StoreOptions::log_only
    pub log_only: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct DamagedTail {
    pub file: std::path::PathBuf,
    pub offset: u64,
    pub detail: String,
}

impl DamagedTail {
    pub fn error(&self) -> crate::Error {
        crate::Error::corruption(&self.file, self.offset, self.detail.clone())
    }
}

impl State {
    /// What a read that finds nothing past the intact log answers: the
    /// damaged tail's error (the lost records may have held what it
    /// wanted), or nothing.
    pub fn check_tail(&self) -> crate::Result<()> {
        match &self.damaged_tail {
            Some(tail) => Err(tail.error()),
            None => Ok(()),
        }
    }

    pub fn new(
        sealed: Vec<Arc<SealedSegment>>,
        active: ActiveSegment,
        streams: HashMap<StreamId, StreamState>,
        head: u64,
        sealed_bytes: u64,
    ) -> Self {
        Self {
            sealed,
            active,
            streams,
            head,
            sealed_bytes,
            read_only: None,
            damaged_tail: None,
            log_only: false,
        }
    }

    /// What the table of streams knows of `stream_id`; an error when the
    /// store was opened without one, where "unknown" would read as "empty".
    pub fn stream(&self, stream_id: &str) -> crate::Result<Option<&StreamState>> {
        if self.log_only {
            return Err(crate::Error::Unsupported(format!(
                "the store was opened to read the log in order only; stream {stream_id} cannot be read by itself"
            )));
        }
        Ok(self.streams.get(stream_id))
    }

    pub fn stream_version(&self, stream_id: &str) -> u64 {
        self.streams.get(stream_id).map_or(0, |s| s.version)
    }
}
