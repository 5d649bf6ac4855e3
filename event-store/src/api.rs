//! The trait every store implements: the embedded [`crate::Store`] and the
//! HTTP client for a remote one. The command side and the projector are
//! written against it and run unchanged on either.

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;
use crate::subscription::Subscription;
use crate::types::{
    AppendResult, CategoryPage, Direction, EventFilter, ExpectedVersion, NewEvent, Position,
    ReadFrom, RecordedEvent, Snapshot, Stats, StreamAppend, StreamId, StreamListing, StreamPage,
    StreamSlice,
};

#[async_trait]
pub trait EventStore: Send + Sync + std::fmt::Debug + 'static {
    /// Appends events to several streams atomically: every stream's expected
    /// version must hold and then all events commit, or none do. The results
    /// come in the order of `appends`.
    async fn append_many(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>>;

    /// Appends a batch to one stream, atomically.
    async fn append(
        &self,
        stream_id: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        let mut results = self
            .append_many(vec![StreamAppend::new(stream_id.clone(), expected, events)])
            .await?;
        results
            .pop()
            .ok_or_else(|| crate::Error::InvalidAppend("the store returned no result".into()))
    }

    /// Reads up to `max_count` events of one stream.
    async fn read_stream(
        &self,
        stream_id: &StreamId,
        from: ReadFrom,
        direction: Direction,
        max_count: usize,
    ) -> Result<StreamSlice>;

    /// Reads up to `max_count` events of the whole log from `from` (inclusive)
    /// in commit order.
    async fn read_all(&self, from: Position, max_count: usize) -> Result<Vec<RecordedEvent>>;

    /// Delivers every event from `from` (inclusive) that passes `filter`: first
    /// from the log, then live as events commit, without gap or duplicate.
    async fn subscribe(&self, from: Position, filter: EventFilter) -> Result<Subscription>;

    /// Stores a snapshot of a stream's state at `version` (which must exist).
    async fn save_snapshot(
        &self,
        stream_id: &StreamId,
        version: u64,
        schema_version: u32,
        state: Bytes,
    ) -> Result<()>;

    /// The latest snapshot of a stream.
    async fn load_snapshot(&self, stream_id: &StreamId) -> Result<Option<Snapshot>>;

    async fn stats(&self) -> Result<Stats>;

    /// Position of the last committed event (0 = empty).
    async fn head(&self) -> Result<Position>;

    /// `Ok` while the store accepts appends; otherwise the error appends
    /// would get (stopped writer, read-only after damage, closed, unreachable).
    async fn ready(&self) -> Result<()> {
        Ok(())
    }

    /// Loads what an aggregate needs: the latest snapshot (when its schema
    /// version is `snapshot_schema`) and every event after it.
    async fn load(
        &self,
        stream_id: &StreamId,
        snapshot_schema: Option<u32>,
    ) -> Result<LoadedStream> {
        let snapshot = match snapshot_schema {
            Some(schema) => self
                .load_snapshot(stream_id)
                .await?
                .filter(|s| s.schema_version == schema),
            None => None,
        };
        let mut next = snapshot.as_ref().map_or(1, |s| s.version + 1);
        let mut events = Vec::new();
        let page = self.read_page_max();
        let version = loop {
            let slice = self
                .read_stream(stream_id, ReadFrom::Version(next), Direction::Forward, page)
                .await?;
            next += slice.events.len() as u64;
            events.extend(slice.events);
            if slice.is_end {
                break slice.stream_version;
            }
        };
        Ok(LoadedStream {
            snapshot,
            events,
            version,
        })
    }

    /// Destroys the key of the data subject that owns `stream_id`, so its
    /// personal data reads as erased from then on (crypto-shredding). Stores
    /// without a key store answer [`crate::Error::Unsupported`].
    async fn forget_subject(&self, stream_id: &StreamId) -> Result<()> {
        Err(crate::Error::Unsupported(format!(
            "this store keeps no personal-data keys, so {stream_id} cannot be forgotten"
        )))
    }

    /// The streams whose ids start with `listing.prefix`, in id order after
    /// `listing.after`, at most `listing.limit` of them, with how many
    /// match in all. For operators (a stream browser), not for hot paths:
    /// the segment store walks every segment's index to answer. Stores
    /// that cannot list answer [`crate::Error::Unsupported`].
    async fn list_streams(&self, listing: StreamListing) -> Result<StreamPage> {
        let _ = listing;
        Err(crate::Error::Unsupported(
            "this store cannot list its streams".into(),
        ))
    }

    /// The first `limit` stream categories by name (a stream id up to its
    /// first `-`), with their streams and events; costs what
    /// [`EventStore::list_streams`] costs.
    async fn list_categories(&self, limit: usize) -> Result<CategoryPage> {
        let _ = limit;
        Err(crate::Error::Unsupported(
            "this store cannot list its stream categories".into(),
        ))
    }

    /// The largest `max_count` this store accepts for one read.
    fn read_page_max(&self) -> usize;

    /// Checks that the log still holds event `id` at `position`, as a
    /// reader coming back after it (a subscription reconnecting, a
    /// projector restarting from its checkpoint) must before it goes on:
    /// a log truncated past it, or restored from an older copy, would
    /// otherwise hand it other events under positions it already read.
    /// [`crate::Error::Diverged`] when it does not.
    async fn check_continues(&self, position: Position, id: uuid::Uuid) -> Result<()> {
        let found = self.read_all(position, 1).await?;
        let why = match found.first() {
            Some(e) if e.position == position && e.id == id => return Ok(()),
            Some(e) => format!(
                "position {position} holds event {} where event {id} was read",
                e.id
            ),
            None => format!(
                "the log ends at position {}, before position {position}, where event {id} was read",
                self.head().await?
            ),
        };
        Err(crate::Error::Diverged(format!(
            "{why}: the log lost events it had served (a truncated segment, or a data directory \
             restored from an older copy)"
        )))
    }
}

/// A stream as an aggregate loads it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedStream {
    pub snapshot: Option<Snapshot>,
    /// Events after the snapshot (or all of them), in version order.
    pub events: Vec<RecordedEvent>,
    /// The stream's version: what to expect when appending next.
    pub version: u64,
}
