//! A store front that holds back, forever, every append carrying an event
//! of one type, and says when it caught one: the saga sending it is then
//! stuck exactly between two steps, where a test kills it.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use event_store::{
    AppendResult, Direction, EventFilter, EventStore, LoadedStream, Position, ReadFrom,
    RecordedEvent, Result, Snapshot, Stats, StreamAppend, StreamId, StreamSlice, Subscription,
};
use tokio::sync::watch;

#[derive(Debug)]
pub struct Gate {
    inner: Arc<dyn EventStore>,
    held_type: &'static str,
    caught: watch::Sender<bool>,
}

impl Gate {
    /// `inner`, holding back appends of `held_type` events.
    pub fn new(inner: Arc<dyn EventStore>, held_type: &'static str) -> Arc<Gate> {
        Arc::new(Gate {
            inner,
            held_type,
            caught: watch::channel(false).0,
        })
    }

    /// Waits until an append was held back.
    pub async fn caught(&self) {
        let mut caught = self.caught.subscribe();
        let waited = tokio::time::timeout(crate::world::WAIT_MAX, caught.wait_for(|c| *c)).await;
        assert!(
            matches!(waited, Ok(Ok(_))),
            "no append of a {} event within the limit",
            self.held_type
        );
    }
}

#[async_trait]
impl EventStore for Gate {
    async fn append_many(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        let held = appends
            .iter()
            .flat_map(|a| &a.events)
            .any(|e| e.event_type == self.held_type);
        if held {
            self.caught.send_replace(true);
            std::future::pending::<()>().await;
        }
        self.inner.append_many(appends).await
    }

    async fn read_stream(
        &self,
        stream_id: &StreamId,
        from: ReadFrom,
        direction: Direction,
        max_count: usize,
    ) -> Result<StreamSlice> {
        self.inner
            .read_stream(stream_id, from, direction, max_count)
            .await
    }

    async fn read_all(&self, from: Position, max_count: usize) -> Result<Vec<RecordedEvent>> {
        self.inner.read_all(from, max_count).await
    }

    async fn subscribe(&self, from: Position, filter: EventFilter) -> Result<Subscription> {
        self.inner.subscribe(from, filter).await
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

    async fn ready(&self) -> Result<()> {
        self.inner.ready().await
    }

    async fn load(
        &self,
        stream_id: &StreamId,
        snapshot_schema: Option<u32>,
    ) -> Result<LoadedStream> {
        self.inner.load(stream_id, snapshot_schema).await
    }

    async fn forget_subject(&self, stream_id: &StreamId) -> Result<()> {
        self.inner.forget_subject(stream_id).await
    }

    fn read_page_max(&self) -> usize {
        self.inner.read_page_max()
    }

    async fn check_continues(&self, position: Position, id: uuid::Uuid) -> Result<()> {
        self.inner.check_continues(position, id).await
    }
}
