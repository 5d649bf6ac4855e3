//! A store in front of the real one that meddles with appends the way the
//! world does: another writer slipping an event in between a command's load
//! and its append, a slow disk, a bug that panics. Everything it forwards
//! goes to the real store.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use event_store::{
    AppendResult, Direction, EventFilter, EventStore, ExpectedVersion, NewEvent, Position,
    ReadFrom, RecordedEvent, Result, Snapshot, Stats, Store, StreamAppend, StreamId, StreamSlice,
    Subscription,
};
use parking_lot::Mutex;

/// An event another writer appends to a stream just before the API's append.
#[derive(Debug, Clone)]
pub struct Intrusion {
    pub stream: StreamId,
    pub event_type: &'static str,
    pub data: String,
}

#[derive(Debug)]
pub struct Meddling {
    pub inner: Store,
    intrusion: Mutex<Option<Intrusion>>,
    intrusions_left: AtomicU32,
    append_delay_ms: AtomicU32,
    panic_on_append: AtomicBool,
    appends_started: AtomicU32,
    appends_queued: AtomicU32,
    loads: AtomicU32,
    failures_left: AtomicU32,
    /// Appends touching these streams wait for `released`.
    held_streams: Mutex<Vec<StreamId>>,
    appends_held: AtomicU32,
    released: tokio::sync::Notify,
}

impl Meddling {
    pub fn new(inner: Store) -> Arc<Meddling> {
        Arc::new(Meddling {
            inner,
            intrusion: Mutex::new(None),
            intrusions_left: AtomicU32::new(0),
            append_delay_ms: AtomicU32::new(0),
            panic_on_append: AtomicBool::new(false),
            appends_started: AtomicU32::new(0),
            appends_queued: AtomicU32::new(0),
            loads: AtomicU32::new(0),
            failures_left: AtomicU32::new(0),
            held_streams: Mutex::new(Vec::new()),
            appends_held: AtomicU32::new(0),
            released: tokio::sync::Notify::new(),
        })
    }

    /// Before each of the next `times` appends touching the stream, another
    /// writer appends `intrusion` to it.
    pub fn intrude(&self, intrusion: Intrusion, times: u32) {
        *self.intrusion.lock() = Some(intrusion);
        self.intrusions_left.store(times, Ordering::SeqCst);
    }

    pub fn intrusions_left(&self) -> u32 {
        self.intrusions_left.load(Ordering::SeqCst)
    }

    pub fn delay_appends(&self, delay: Duration) {
        self.append_delay_ms
            .store(delay.as_millis() as u32, Ordering::SeqCst);
    }

    /// Appends touching any of `streams` wait, before reaching the real
    /// store, until [`release_appends`](Self::release_appends).
    pub fn hold_appends_to(&self, streams: Vec<StreamId>) {
        *self.held_streams.lock() = streams;
    }

    pub fn release_appends(&self) {
        self.held_streams.lock().clear();
        self.released.notify_waiters();
    }

    /// Appends waiting for [`release_appends`](Self::release_appends).
    pub fn appends_held(&self) -> u32 {
        self.appends_held.load(Ordering::SeqCst)
    }

    /// The next `times` appends fail as an unreachable store would make
    /// them fail, without reaching the real one.
    pub fn fail_appends(&self, times: u32) {
        self.failures_left.store(times, Ordering::SeqCst);
    }

    pub fn panic_on_append(&self) {
        self.panic_on_append.store(true, Ordering::SeqCst);
    }

    /// Appends handed to the real store so far (each in its writer's
    /// queue, or done).
    pub fn appends_queued(&self) -> u32 {
        self.appends_queued.load(Ordering::SeqCst)
    }

    /// Aggregate loads (snapshot plus events) asked of this store so far.
    pub fn loads(&self) -> u32 {
        self.loads.load(Ordering::SeqCst)
    }

    /// Appends that reached this store so far.
    pub fn appends(&self) -> u32 {
        self.appends_started.load(Ordering::SeqCst)
    }

    /// Waits until `n` appends have been handed to the real store.
    pub async fn queued(&self, n: u32) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.appends_queued.load(Ordering::SeqCst) < n {
            assert!(
                std::time::Instant::now() < deadline,
                "{n} appends were not queued within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Waits until `n` appends have reached this store (and are, with a
    /// delay set, held up in it).
    pub async fn appends_started(&self, n: u32) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.appends_started.load(Ordering::SeqCst) < n {
            assert!(
                std::time::Instant::now() < deadline,
                "{n} appends did not arrive within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

#[async_trait]
impl EventStore for Meddling {
    async fn append_many(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        self.appends_started.fetch_add(1, Ordering::SeqCst);
        loop {
            // Registered before the check, so a release between the two
            // still wakes it.
            let released = self.released.notified();
            let held = {
                let streams = self.held_streams.lock();
                appends.iter().any(|a| streams.contains(&a.stream_id))
            };
            if !held {
                break;
            }
            // Counted down however the wait ends (a killed task drops it).
            struct Held<'a>(&'a AtomicU32);
            impl Drop for Held<'_> {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, Ordering::SeqCst);
                }
            }
            self.appends_held.fetch_add(1, Ordering::SeqCst);
            let _held = Held(&self.appends_held);
            released.await;
        }
        assert!(
            !self.panic_on_append.load(Ordering::SeqCst),
            "injected panic in append"
        );
        if self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(event_store::Error::Remote(
                "injected: the store is unreachable".into(),
            ));
        }
        let intrusion = self.intrusion.lock().clone();
        if let Some(intrusion) = intrusion
            && appends.iter().any(|a| a.stream_id == intrusion.stream)
            && self
                .intrusions_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            self.inner
                .append(
                    &intrusion.stream,
                    ExpectedVersion::StreamExists,
                    // Written as current code would write it.
                    vec![
                        NewEvent::new(intrusion.event_type, intrusion.data.clone())
                            .with_schema_version(
                                annals_credit::domain::upcasters()
                                    .current_version(intrusion.event_type)
                                    .unwrap_or(1),
                            ),
                    ],
                )
                .await?;
        }
        let delay = self.append_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(u64::from(delay))).await;
        }
        // A store queues the request for its writer on the first poll;
        // counting it then tells a test its place in the queue is taken.
        let mut append = std::pin::pin!(self.inner.append_many(appends));
        let first = std::future::poll_fn(|cx| Poll::Ready(append.as_mut().poll(cx))).await;
        self.appends_queued.fetch_add(1, Ordering::SeqCst);
        match first {
            Poll::Ready(result) => result,
            Poll::Pending => append.await,
        }
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
    ) -> Result<event_store::LoadedStream> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.inner.load(stream_id, snapshot_schema).await
    }

    fn read_page_max(&self) -> usize {
        self.inner.read_page_max()
    }
}
