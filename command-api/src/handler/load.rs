//! Loading an aggregate (its latest usable snapshot plus the events after
//! it, or the state kept from its last command) and saving snapshots.

use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff};
use bytes::Bytes;
use event_store::{Direction, Position, ReadFrom, StreamId, Upcasters};
use uuid::Uuid;

use super::{CommandHandler, Loaded, Result, stream_id};
use crate::aggregate::{Aggregate, DecodeError, decode_recorded};
use crate::cache::CachedState;
use crate::error::CommandError;

impl<A: Aggregate> CommandHandler<A> {
    /// The state to decide a command on: the cached one when it is at least
    /// at `seen_version` (false: not loaded for this command), else a fresh
    /// load (true).
    pub(super) async fn current_state(
        &self,
        cached: Option<CachedState<A>>,
        stream: &StreamId,
        seen_version: u64,
    ) -> Result<(CachedState<A>, bool), A> {
        if let Some(cached) = cached
            && cached.version >= seen_version
        {
            return Ok((cached, false));
        }
        let loaded = self.load_at_least(stream, seen_version).await?;
        // A long replay (no snapshot yet, one this build's state schema
        // cannot use, or a history of old events to upcast) is paid once:
        // the next load starts here.
        if self
            .config
            .snapshot_every_events
            .is_some_and(|every| loaded.events_applied as u64 >= every.get())
        {
            self.save_snapshot(stream, loaded.version, &loaded.state)
                .await;
        }
        let current = CachedState {
            state: loaded.state,
            version: loaded.version,
            position: loaded.last_position,
        };
        Ok((current, true))
    }

    /// The aggregate's current state: the latest usable snapshot plus the
    /// events after it.
    pub async fn load(&self, id: Uuid) -> Result<Loaded<A>, A> {
        self.load_stream(&stream_id::<A>(id)?).await
    }

    async fn load_stream(&self, stream: &StreamId) -> Result<Loaded<A>, A> {
        let (loaded, upcasters) = match self.store.load(stream, Some(A::SNAPSHOT_SCHEMA)).await {
            Ok(loaded) => loaded,
            // A snapshot is a cache of the events: when the damage is in
            // it, the events still tell the whole story (and when it is in
            // the events, the load without it says so).
            Err(e @ event_store::Error::Corruption { .. }) => {
                tracing::warn!(stream = %stream, error = %e, "damage in the aggregate's snapshot or events; loading its events alone");
                self.store.load(stream, None).await?
            }
            Err(e) => return Err(e.into()),
        };
        let upcasters = upcasters.as_deref();
        let (state, snapshot_version, events) = match &loaded.snapshot {
            None => (A::default(), None, loaded.events),
            Some(snapshot) => match serde_json::from_slice::<A>(&snapshot.state) {
                Ok(state) => (state, Some(snapshot.version), loaded.events),
                Err(e) => {
                    tracing::warn!(
                        stream = %stream,
                        version = snapshot.version,
                        error = %e,
                        "ignoring a snapshot that does not decode"
                    );
                    let (all, upcasters) = self.store.load(stream, None).await?;
                    return self.fold(
                        stream,
                        A::default(),
                        None,
                        all.events,
                        upcasters.as_deref(),
                        all.version,
                    );
                }
            },
        };
        self.fold(
            stream,
            state,
            snapshot_version,
            events,
            upcasters,
            loaded.version,
        )
    }

    /// Folds `events` into `state`, decoding them through `upcasters` as
    /// the store's typed load handed them back.
    fn fold(
        &self,
        stream: &StreamId,
        mut state: A,
        snapshot_version: Option<u64>,
        events: Vec<event_store::RecordedEvent>,
        upcasters: Option<&Upcasters>,
        version: u64,
    ) -> Result<Loaded<A>, A> {
        let events_applied = events.len();
        let last_position = events.last().map(|e| e.position);
        for recorded in &events {
            let event = decode_recorded::<A::Event>(recorded, upcasters).map_err(|e| match e {
                // Answered as when the store layer upcasts (it names the
                // event's type and version).
                DecodeError::Upcast(e) => CommandError::Store(e),
                source => CommandError::Decode {
                    stream: stream.clone(),
                    version: recorded.version,
                    source,
                },
            })?;
            state.apply(&event);
        }
        Ok(Loaded {
            state,
            version,
            snapshot_version,
            events_applied,
            last_position,
        })
    }

    /// Loads until the stream is at least at `version`: after a conflict the
    /// store knows of the winner's events before readers can see them (they
    /// are published after their fsync), and running the command again on
    /// the old state would only conflict again.
    async fn load_at_least(&self, stream: &StreamId, version: u64) -> Result<Loaded<A>, A> {
        let deadline = Instant::now() + self.config.visibility_wait;
        let mut pauses = visibility_pauses();
        loop {
            let loaded = self.load_stream(stream).await?;
            if loaded.version >= version || Instant::now() >= deadline {
                return Ok(loaded);
            }
            tokio::time::sleep(pauses.next().unwrap_or(VISIBILITY_PAUSE_MAX)).await;
        }
    }

    /// Position of the event at the state's version (zero for no stream).
    pub(super) async fn position_of(
        &self,
        current: &CachedState<A>,
        stream: &StreamId,
    ) -> Result<Position, A> {
        if let Some(position) = current.position {
            return Ok(position);
        }
        self.position_at(stream, current.version).await
    }

    pub(super) async fn position_at(&self, stream: &StreamId, version: u64) -> Result<Position, A> {
        if version == 0 {
            return Ok(Position::ZERO);
        }
        let slice = self
            .store
            .events()
            .read_stream(stream, ReadFrom::Version(version), Direction::Forward, 1)
            .await?;
        slice
            .events
            .first()
            .map(|e| e.position)
            .ok_or_else(|| CommandError::NotFound {
                stream: stream.clone(),
            })
    }

    pub(super) async fn snapshot_if_due(
        &self,
        stream: &StreamId,
        before: u64,
        after: u64,
        state: &A,
    ) {
        let Some(every) = self.config.snapshot_every_events else {
            return;
        };
        if before / every.get() == after / every.get() {
            return;
        }
        self.save_snapshot(stream, after, state).await;
    }

    async fn save_snapshot(&self, stream: &StreamId, version: u64, state: &A) {
        let result = match serde_json::to_vec(state) {
            Ok(bytes) => self
                .store
                .events()
                .save_snapshot(stream, version, A::SNAPSHOT_SCHEMA, Bytes::from(bytes))
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        // The events are committed whatever happens here: a missing
        // snapshot only makes the next load replay more.
        if let Err(error) = result {
            tracing::warn!(stream = %stream, version, %error, "could not save a snapshot");
        }
    }
}

/// The longest pause between two looks at something the store accepted
/// and has not made readable yet.
pub(super) const VISIBILITY_PAUSE_MAX: Duration = Duration::from_millis(20);

/// The pauses between looks at something the store accepted and has not
/// made readable yet: short at first, since it usually is once the batch
/// it went in is durable, then longer up to [`VISIBILITY_PAUSE_MAX`].
/// Jittered, so that commands waiting on one batch do not all read again
/// at once: the doubling stops at half the maximum and the jitter adds up
/// to as much again.
pub(super) fn visibility_pauses() -> ExponentialBackoff {
    event_store::pauses::jittered(Duration::from_micros(200), VISIBILITY_PAUSE_MAX).build()
}
