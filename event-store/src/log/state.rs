//! What readers share with the writer: the segment list, the active segment's
//! in-memory index and a bounded cache of streams last seen in sealed
//! segments. The writer changes it only after an fsync returned, under a
//! short write lock; readers copy what they need under a read lock and
//! decode outside it, so no reader waits for the writer's disk I/O.
//!
//! No table of every stream ever written is kept: a stream is found in the
//! active segment's index, else in the cache, else in the sealed segments,
//! newest first, through their bloom filters and indexes (all mapped or
//! read on first use). Memory and start-up thus do not grow with the
//! number of streams.

use std::sync::Arc;

use crate::log::listing;
use crate::log::segment::{ActiveSegment, Damage, SealedSegment};
use crate::types::StreamId;

/// What a stream's reads and appends need to know of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamState {
    /// Version of the stream's last event (= its number of events).
    pub version: u64,
    /// Position of its last event; reads never look at later segments.
    pub last_position: u64,
}

/// A sealed-segment lookup's answer, valid while the store has as many
/// sealed segments as it had then: sealing the active segment may move the
/// stream's latest events into a new one.
#[derive(Debug, Clone, Copy)]
struct Cached {
    sealed: usize,
    stream: Option<StreamState>,
}

#[derive(Debug)]
pub(crate) struct State {
    pub sealed: Vec<Arc<SealedSegment>>,
    pub active: ActiveSegment,
    cache: quick_cache::sync::Cache<StreamId, Cached>,
    use_bloom_filters: bool,
    /// Position of the last durable event (0 = empty store).
    pub head: u64,
    pub sealed_bytes: u64,
    /// Set when recovery found damage: reads are served, appends refused.
    pub read_only: Option<String>,
    /// Damage after the last intact record of the log: the records there are
    /// lost and nobody can tell which streams they belonged to, so reads that
    /// reach the end of the log or of a stream report it.
    pub damaged_tail: Option<Damage>,
    /// Opened with [`StoreOptions::log_only`]: streams are not looked up.
    ///
    /// [`StoreOptions::log_only`]: crate::StoreOptions::log_only
    pub log_only: bool,
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
        head: u64,
        sealed_bytes: u64,
        options: &crate::StoreOptions,
    ) -> Self {
        Self {
            sealed,
            active,
            cache: quick_cache::sync::Cache::new(options.stream_cache_entries.max(1)),
            use_bloom_filters: options.use_bloom_filters,
            head,
            sealed_bytes,
            read_only: None,
            damaged_tail: None,
            log_only: false,
        }
    }

    /// What the store knows of `stream_id`; an error when the store was
    /// opened to read the log in order only, where "unknown" would read as
    /// "empty", and when an index the lookup needs is damaged.
    pub fn stream(&self, stream_id: &str) -> crate::Result<Option<StreamState>> {
        if self.log_only {
            return Err(crate::Error::Unsupported(format!(
                "the store was opened to read the log in order only; stream {stream_id} cannot be read by itself"
            )));
        }
        if let Some(s) = self.active.streams.get(stream_id) {
            return Ok(Some(StreamState {
                version: s.version,
                last_position: s.last_position,
            }));
        }
        let sealed = self.sealed.len();
        if let Some(hit) = self.cache.get(stream_id)
            && hit.sealed == sealed
        {
            return Ok(hit.stream);
        }
        let stream = self.find_sealed(stream_id)?;
        self.cache
            .insert(StreamId::from_stored(stream_id), Cached { sealed, stream });
        Ok(stream)
    }

    /// The stream's version (0 when it has no events).
    pub fn stream_version(&self, stream_id: &str) -> crate::Result<u64> {
        Ok(self.stream(stream_id)?.map_or(0, |s| s.version))
    }

    /// The stream's last events in the sealed segments: in the newest one
    /// that holds it (a stream's versions grow with positions).
    fn find_sealed(&self, stream_id: &str) -> crate::Result<Option<StreamState>> {
        for segment in self.sealed.iter().rev() {
            if self.use_bloom_filters && segment.bloom().is_some_and(|b| !b.may_contain(stream_id))
            {
                continue;
            }
            if let Some((_, entry)) = segment.find(stream_id)? {
                return Ok(Some(StreamState {
                    version: entry.last_version(),
                    last_position: segment.base + u64::from(entry.last_rel),
                }));
            }
        }
        Ok(None)
    }

    /// How many streams the store holds: those begun in each sealed segment
    /// (counted once per segment, on first use) and in the active one.
    pub fn stream_count(&self) -> crate::Result<u64> {
        let mut count = self
            .active
            .streams
            .values()
            .filter(|s| s.first_version == 1)
            .count() as u64;
        for segment in &self.sealed {
            count += segment.streams_begun()?;
        }
        Ok(count)
    }

    /// What a listing of streams reads, copied under the read lock (the
    /// active segment's streams starting with `prefix`), so that the walk
    /// through the sealed indexes happens outside it.
    pub fn listing_sources(&self, prefix: &str) -> crate::Result<listing::Sources> {
        if self.log_only {
            return Err(crate::Error::Unsupported(
                "the store was opened to read the log in order only; its streams cannot be listed"
                    .into(),
            ));
        }
        let active = self
            .active
            .streams
            .iter()
            .filter(|(id, _)| id.as_str().starts_with(prefix))
            .map(|(id, s)| {
                let share = listing::Share {
                    first_version: s.first_version,
                    last_version: s.version,
                    last_position: s.last_position,
                };
                (id.as_str().to_owned(), share)
            })
            .collect();
        Ok(listing::Sources {
            sealed: self.sealed.clone(),
            active,
        })
    }
}
