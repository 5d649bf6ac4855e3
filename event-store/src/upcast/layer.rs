//! [`Upcasting`]: any [`EventStore`] whose reads return upcast events, and
//! a [`TypedLoader`] for readers that run typed steps themselves.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;

use super::UPCAST_CACHE_BYTES_DEFAULT;
use super::cache::UpcastCache;
use super::registry::Upcasters;
use crate::api::{EventStore, LoadedStream};
use crate::error::Result;
use crate::subscription::Subscription;
use crate::types::{
    AppendResult, Direction, EventFilter, Position, ReadFrom, RecordedEvent, Snapshot, Stats,
    StreamAppend, StreamId, StreamSlice,
};

/// An [`EventStore`] whose reads return upcast events.
///
/// Aggregate loads and stream reads keep what they upcast in a bounded
/// cache by position (see `upcast/cache.rs`), served only for the very
/// stored bytes it was made from; so steps must be pure functions of the
/// data they are given, as they are run again whenever an entry is gone.
#[derive(Debug, Clone)]
pub struct Upcasting<S> {
    inner: S,
    upcasters: Arc<Upcasters>,
    cache: Arc<UpcastCache>,
}

impl<S: EventStore> Upcasting<S> {
    /// With a cache of upcast events of [`UPCAST_CACHE_BYTES_DEFAULT`].
    pub fn new(inner: S, upcasters: Upcasters) -> Result<Self> {
        Self::with_cache(inner, upcasters, UPCAST_CACHE_BYTES_DEFAULT)
    }

    /// With a cache of upcast events of at most `cache_bytes_max` bytes; 0
    /// upcasts every event on every read.
    pub fn with_cache(inner: S, upcasters: Upcasters, cache_bytes_max: usize) -> Result<Self> {
        upcasters.validate()?;
        Ok(Self {
            inner,
            upcasters: Arc::new(upcasters),
            cache: Arc::new(UpcastCache::new(cache_bytes_max)),
        })
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn all(&self, events: Vec<RecordedEvent>) -> Result<Vec<RecordedEvent>> {
        self.upcasters.upcast_all(events)
    }

    /// As `all`, for reads that come back to the same events (a stream's),
    /// read in cache `generation` (taken before the read).
    fn all_cached(
        &self,
        events: Vec<RecordedEvent>,
        generation: u64,
    ) -> Result<Vec<RecordedEvent>> {
        self.upcasters
            .upcast_all_with(events, Some((&self.cache, generation)), false)
            .map(|(events, _)| events)
    }
}

#[async_trait]
impl<S: EventStore> EventStore for Upcasting<S> {
    async fn append_many(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        self.inner.append_many(appends).await
    }

    async fn read_stream(
        &self,
        stream_id: &StreamId,
        from: ReadFrom,
        direction: Direction,
        max_count: usize,
    ) -> Result<StreamSlice> {
        let generation = self.cache.generation();
        let mut slice = self
            .inner
            .read_stream(stream_id, from, direction, max_count)
            .await?;
        slice.events = self.all_cached(slice.events, generation)?;
        Ok(slice)
    }

    async fn read_all(&self, from: Position, max_count: usize) -> Result<Vec<RecordedEvent>> {
        let events = self.inner.read_all(from, max_count).await?;
        self.all(events)
    }

    async fn subscribe(&self, from: Position, filter: EventFilter) -> Result<Subscription> {
        let upcasters = self.upcasters.clone();
        let inner = self.inner.subscribe(from, filter).await?;
        Ok(Subscription::from_stream(
            inner.map(move |event| event.and_then(|e| upcasters.upcast(e))),
        ))
    }

    async fn save_snapshot(
        &self,
        stream_id: &StreamId,
        version: u64,
        schema_version: u32,
        state: Bytes,
    ) -> Result<()> {
        self.inner
            .save_snapshot(stream_id, version, schema_version, state)
            .await
    }

    async fn load_snapshot(&self, stream_id: &StreamId) -> Result<Option<Snapshot>> {
        self.inner.load_snapshot(stream_id).await
    }

    async fn stats(&self) -> Result<Stats> {
        self.inner.stats().await
    }

    async fn head(&self) -> Result<Position> {
        self.inner.head().await
    }

    async fn list_streams(&self, listing: crate::StreamListing) -> Result<crate::StreamPage> {
        self.inner.list_streams(listing).await
    }

    async fn list_categories(&self, limit: usize) -> Result<crate::CategoryPage> {
        self.inner.list_categories(limit).await
    }

    async fn ready(&self) -> Result<()> {
        self.inner.ready().await
    }

    async fn forget_subject(&self, stream_id: &StreamId) -> Result<()> {
        let forgotten = self.inner.forget_subject(stream_id).await;
        // Entries of the subject's events hold its plaintext. They could no
        // longer be served (their stored bytes now read erased), but they
        // must not stay in memory either; which they are is not known here,
        // and erasures are rare. Emptied even on failure, which may have
        // erased part-way.
        self.cache.clear();
        forgotten
    }

    async fn load(
        &self,
        stream_id: &StreamId,
        snapshot_schema: Option<u32>,
    ) -> Result<LoadedStream> {
        let generation = self.cache.generation();
        let mut loaded = self.inner.load(stream_id, snapshot_schema).await?;
        loaded.events = self.all_cached(loaded.events, generation)?;
        Ok(loaded)
    }

    fn read_page_max(&self) -> usize {
        self.inner.read_page_max()
    }
}

/// Loads streams for a reader that decodes events into Rust types through
/// typed upcasters itself, as the command handler does.
#[async_trait]
pub trait TypedLoader: Send + Sync {
    /// As [`EventStore::load`], except that the events which typed steps
    /// alone bring to their current version are left as stored and, when
    /// any were left, the upcasters to run them with
    /// ([`Upcasters::upcast_typed`]) are handed back, so that no JSON is
    /// written for them.
    async fn load_leaving_typed(
        &self,
        stream_id: &StreamId,
        snapshot_schema: Option<u32>,
    ) -> Result<(LoadedStream, Option<Arc<Upcasters>>)>;
}

#[async_trait]
impl<S: EventStore> TypedLoader for Upcasting<S> {
    async fn load_leaving_typed(
        &self,
        stream_id: &StreamId,
        snapshot_schema: Option<u32>,
    ) -> Result<(LoadedStream, Option<Arc<Upcasters>>)> {
        if !self.upcasters.has_typed_steps() {
            return Ok((self.load(stream_id, snapshot_schema).await?, None));
        }
        let generation = self.cache.generation();
        let mut loaded = self.inner.load(stream_id, snapshot_schema).await?;
        let left_typed;
        (loaded.events, left_typed) =
            self.upcasters
                .upcast_all_with(loaded.events, Some((&self.cache, generation)), true)?;
        // Without events left for typed steps, the reader decodes every
        // event as it is, without looking its type up again.
        Ok((loaded, left_typed.then(|| self.upcasters.clone())))
    }
}
