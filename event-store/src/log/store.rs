//! The embedded store: opening a data directory, and the [`EventStore`]
//! operations on it.
//!
//! A data directory holds:
//! - `LOCK`: locked (`flock`) by the process that has the store open;
//! - `FORMAT`: `annals-data-format <n>`, the layout version of the directory;
//! - `events/`: the segments (`.seg`) with their indexes (`.idx`) and bloom
//!   filters (`.bloom`);
//! - `snapshots/`: the snapshot files (`.snap`).

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, oneshot, watch};

use crate::api::EventStore;
use crate::error::{Error, Result};
use crate::log::listing;
use crate::log::lock::DirLock;
use crate::log::read;
use crate::log::recovery::{self, RecoveryReport, write_file_durably};
use crate::log::shared::{HeadSignal, Inner};
use crate::log::snapshots::{SnapshotDamage, SnapshotStore};
use crate::log::subscribe;
use crate::log::writer::{self, AppendRequest, SharedWriter, Writer};
use crate::options::{StoreOptions, check_limit};
use crate::subscription::Subscription;
use crate::types::{
    AppendResult, CategoryPage, Direction, EventFilter, EventView, Position, ReadFrom,
    RecordedEvent, Snapshot, Stats, StreamAppend, StreamId, StreamListing, StreamPage, StreamSlice,
};

/// The layout version of a data directory this build reads and writes.
pub const DATA_FORMAT_VERSION: u32 = 1;
const FORMAT_FILE: &str = "FORMAT";

/// An open event store. Cheap to clone; the last clone dropped (or
/// [`Store::close`]) stops the writer and releases the directory.
#[derive(Debug, Clone)]
pub struct Store {
    handle: Arc<Handle>,
}

#[derive(Debug)]
struct Handle {
    inner: Arc<Inner>,
    dir: PathBuf,
    /// `None` once closed.
    sender: Mutex<Option<Appender>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    report: RecoveryReport,
    snapshot_damage: Vec<SnapshotDamage>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // The writer finishes what is queued, then exits and releases the lock.
        self.sender.lock().take();
        self.inner.head.send_modify(|h| h.closed = true);
    }
}

/// Where appends go: the writer's queue, or the writer itself for a
/// caller that is alone (see `writer::commit_alone`).
#[derive(Clone)]
struct Appender {
    queue: mpsc::Sender<AppendRequest>,
    writer: SharedWriter,
}

impl std::fmt::Debug for Appender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appender").finish_non_exhaustive()
    }
}

/// Runs blocking store work off the async runtime's worker threads.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::io("a store task failed", std::io::Error::other(e.to_string())))?
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, running recovery.
    pub async fn open(dir: impl AsRef<Path>, options: StoreOptions) -> Result<Store> {
        let dir = dir.as_ref().to_path_buf();
        blocking(move || Store::open_blocking(&dir, options)).await
    }

    /// [`Store::open`] for callers outside an async context. A Tokio runtime
    /// must still be running when the store is used.
    pub fn open_blocking(dir: &Path, options: StoreOptions) -> Result<Store> {
        options.validate()?;
        if options.log_only && !dir.join("events").is_dir() {
            // Read for what it holds, a directory without a log is a wrong
            // path, not a store to start: nothing is created in it.
            return Err(Error::InvalidOptions(format!(
                "{} holds no event log to read",
                dir.display()
            )));
        }
        let fs = options.fs.clone();
        fs.create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating the data directory {}", dir.display()), e))?;
        let lock = DirLock::acquire(dir)?;
        check_format(fs.as_ref(), dir)?;

        let events_dir = dir.join("events");
        let recovered = recovery::recover(&events_dir, &options)?;
        let now = options.clock.now().0;
        let (snapshots, snapshot_damage) = SnapshotStore::open(
            &dir.join("snapshots"),
            fs.clone(),
            options.snapshot_file_bytes_max,
            now,
        )?;
        let report = recovered.report;
        let head = recovered.state.head;
        let (head_tx, _) = watch::channel(HeadSignal {
            position: head,
            closed: false,
        });
        let inner = Arc::new(Inner {
            events_dir,
            options,
            state: RwLock::new(recovered.state),
            head: head_tx,
            failure: Mutex::new(None),
            writes: Mutex::new(()),
            snapshots,
            bloom_skips: AtomicU64::new(0),
            index_probes: AtomicU64::new(0),
        });
        let (sender, receiver) = mpsc::channel(inner.options.writer_queue_max);
        let (writer, shared) = Writer::new(inner.clone(), recovered.writer_file, lock)
            .spawn(receiver)
            .map_err(|e| Error::io("starting the writer thread", e))?;
        let appender = Appender {
            queue: sender,
            writer: shared,
        };
        tracing::info!(
            dir = %dir.display(),
            head,
            sealed_segments = report.sealed_segments,
            torn_bytes_dropped = report.torn_bytes_dropped,
            "event store open"
        );
        Ok(Store {
            handle: Arc::new(Handle {
                inner,
                dir: dir.to_path_buf(),
                sender: Mutex::new(Some(appender)),
                writer: Mutex::new(Some(writer)),
                report,
                snapshot_damage,
            }),
        })
    }

    /// What recovery found and did when this store was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.handle.report
    }

    /// Damaged snapshots found when opening (they are ignored).
    pub fn damaged_snapshots(&self) -> usize {
        self.handle.snapshot_damage.len()
    }

    pub fn dir(&self) -> &Path {
        &self.handle.dir
    }

    /// `Ok` while the store accepts appends; otherwise why it does not.
    pub fn health(&self) -> std::result::Result<(), String> {
        if let Some(reason) = self.handle.inner.failure.lock().clone() {
            return Err(reason);
        }
        if let Some(reason) = self.handle.inner.state.read().read_only.clone() {
            return Err(reason);
        }
        if self.handle.sender.lock().is_none() {
            return Err("the store is closed".into());
        }
        Ok(())
    }

    /// Stops accepting appends, lets queued ones finish, stops the writer
    /// and releases the data directory. Subscriptions end with
    /// [`Error::Closed`]. Every clone of this store is closed.
    pub async fn close(&self) -> Result<()> {
        self.handle.sender.lock().take();
        self.handle.inner.head.send_modify(|h| h.closed = true);
        let writer = self.handle.writer.lock().take();
        if let Some(writer) = writer {
            blocking(move || {
                writer
                    .join()
                    .map_err(|_| Error::Poisoned("the writer thread panicked".into()))
            })
            .await?;
        }
        Ok(())
    }

    /// Lends the log's events from `from` (inclusive), in position order,
    /// to `visit` one at a time, until it returns [`ControlFlow::Break`] or
    /// the head of the moment of the call is passed; the position to go on
    /// from. Nothing is allocated per event, so a catch-up that needs only
    /// some fields runs several times faster than [`EventStore::read_all`];
    /// the events are as stored (see [`EventView`]). It blocks on the
    /// disk: call it off the async runtime (`spawn_blocking`).
    pub fn scan(
        &self,
        from: Position,
        visit: impl FnMut(EventView<'_>) -> ControlFlow<()>,
    ) -> Result<Position> {
        read::scan(self.inner(), from, visit)
    }

    fn inner(&self) -> &Arc<Inner> {
        &self.handle.inner
    }

    /// Checks everything about an append that does not depend on the
    /// stream's state, so the writer only has to check versions.
    fn validate(&self, appends: &[StreamAppend]) -> Result<usize> {
        crate::rules::validate(appends, &self.inner().options.limits)
    }
}

fn check_format(fs: &dyn crate::log::fs::Fs, dir: &Path) -> Result<()> {
    let path = dir.join(FORMAT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let found = text
                .trim()
                .strip_prefix("annals-data-format ")
                .and_then(|v| v.parse::<u32>().ok())
                .ok_or_else(|| {
                    Error::corruption(
                        &path,
                        0,
                        format!("unrecognised format line {:?}", text.trim()),
                    )
                })?;
            if found > DATA_FORMAT_VERSION {
                return Err(Error::UnsupportedFormat {
                    path,
                    found,
                    supported: DATA_FORMAT_VERSION,
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => write_file_durably(
            fs,
            dir,
            FORMAT_FILE,
            format!("annals-data-format {DATA_FORMAT_VERSION}\n").as_bytes(),
        ),
        Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
    }
}

impl Store {
    /// Hands `appends` to the writer and waits for its answer; a caller
    /// that is alone commits them itself (see `writer::commit_alone`) when
    /// its runtime has other workers, unless
    /// [`StoreOptions::commit_on_caller`] is off.
    async fn append_now(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        let encoded_len = self.validate(&appends)?;
        if let Some(reason) = self.inner().failure.lock().clone() {
            return Err(Error::Poisoned(reason));
        }
        let appender = self.handle.sender.lock().clone().ok_or(Error::Closed)?;
        let (reply, answer) = oneshot::channel();
        let mut request = AppendRequest {
            appends,
            encoded_len,
            reply,
        };
        if self.inner().options.commit_on_caller && others_run_meanwhile() {
            let queued = appender.queue.max_capacity() - appender.queue.capacity();
            request = match writer::commit_alone(&appender.writer, request, queued) {
                Ok(()) => return answer.await.map_err(|_| Error::Closed)?,
                Err(request) => request,
            };
        }
        appender
            .queue
            .send(request)
            .await
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }
}

/// Whether the calling task's runtime keeps running other tasks while
/// this one blocks its thread: a multi-threaded runtime's other workers
/// do; a current-thread runtime would stall every task for the sync (and
/// for good, were another task to hold up that sync).
fn others_run_meanwhile() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

#[async_trait]
impl EventStore for Store {
    async fn append_many(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        let started = std::time::Instant::now();
        let outcome = self.append_now(appends).await;
        crate::telemetry::appended(&outcome, started);
        outcome
    }

    async fn read_stream(
        &self,
        stream_id: &StreamId,
        from: ReadFrom,
        direction: Direction,
        max_count: usize,
    ) -> Result<StreamSlice> {
        let inner = self.inner().clone();
        let stream_id = stream_id.clone();
        blocking(move || read::read_stream(&inner, &stream_id, from, direction, max_count)).await
    }

    async fn read_all(&self, from: Position, max_count: usize) -> Result<Vec<RecordedEvent>> {
        let inner = self.inner().clone();
        blocking(move || read::read_all(&inner, from, max_count)).await
    }

    async fn subscribe(&self, from: Position, filter: EventFilter) -> Result<Subscription> {
        if self.handle.sender.lock().is_none() {
            return Err(Error::Closed);
        }
        Ok(subscribe::spawn(self.inner().clone(), from, filter))
    }

    async fn save_snapshot(
        &self,
        stream_id: &StreamId,
        version: u64,
        schema_version: u32,
        state: Bytes,
    ) -> Result<()> {
        let limits = &self.inner().options.limits;
        check_limit("snapshot_bytes_max", state.len(), limits.snapshot_bytes_max)?;
        check_limit(
            "stream_id_bytes_max",
            stream_id.as_str().len(),
            limits.stream_id_bytes_max,
        )?;
        let current = self
            .inner()
            .state
            .read()
            .stream_version(stream_id.as_str())?;
        if version == 0 || version > current {
            return Err(Error::InvalidAppend(format!(
                "cannot snapshot stream {stream_id} at version {version}: it is at version {current}"
            )));
        }
        if self.handle.sender.lock().is_none() {
            return Err(Error::Closed);
        }
        let inner = self.inner().clone();
        let stream_id = stream_id.clone();
        blocking(move || {
            let now = inner.options.clock.now().0;
            inner
                .snapshots
                .save(&stream_id, version, schema_version, &state, now)
        })
        .await
    }

    async fn load_snapshot(&self, stream_id: &StreamId) -> Result<Option<Snapshot>> {
        let inner = self.inner().clone();
        let stream_id = stream_id.clone();
        blocking(move || inner.snapshots.load(&stream_id)).await
    }

    async fn stats(&self) -> Result<Stats> {
        let inner = self.inner();
        let (snapshots, snapshot_bytes) = inner.snapshots.stats();
        let st = inner.state.read();
        let read_only_reason = inner
            .failure
            .lock()
            .clone()
            .or_else(|| st.read_only.clone());
        Ok(Stats {
            events: st.head,
            streams: st.stream_count()?,
            segments: st.sealed.len() as u64 + 1,
            sealed_segments: st.sealed.len() as u64,
            bytes: st.sealed_bytes + st.active.durable_len,
            head: Position(st.head),
            snapshots,
            snapshot_bytes,
            segments_skipped_by_bloom: inner.bloom_skips.load(Ordering::Relaxed),
            segments_searched: inner.index_probes.load(Ordering::Relaxed),
            read_only_reason,
        })
    }

    async fn head(&self) -> Result<Position> {
        Ok(Position(self.inner().state.read().head))
    }

    async fn list_streams(&self, listing: StreamListing) -> Result<StreamPage> {
        let sources = self.inner().state.read().listing_sources(&listing.prefix)?;
        blocking(move || listing::streams(&sources, &listing)).await
    }

    async fn list_categories(&self, limit: usize) -> Result<CategoryPage> {
        let sources = self.inner().state.read().listing_sources("")?;
        blocking(move || listing::categories(&sources, limit)).await
    }

    async fn ready(&self) -> Result<()> {
        if let Some(reason) = self.inner().failure.lock().clone() {
            return Err(Error::Poisoned(reason));
        }
        if let Some(reason) = self.inner().state.read().read_only.clone() {
            return Err(Error::ReadOnly(reason));
        }
        if self.handle.sender.lock().is_none() {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Snapshot and events in one trip to a blocking thread, instead of one
    /// per call: loading is on every command's path.
    async fn load(
        &self,
        stream_id: &StreamId,
        snapshot_schema: Option<u32>,
    ) -> Result<crate::api::LoadedStream> {
        // A stream never written (the first command on a new aggregate, as
        // every registration is) is answered by the stream lookup (active
        // index, cache, mapped bloom filters; an index only on a false
        // positive), without a trip to the blocking pool: it has no events and, as a snapshot needs a
        // version, no snapshot. As a read of it would, it reports a damaged
        // log tail that may have held it.
        {
            let st = self.inner().state.read();
            if st.stream(stream_id.as_str())?.is_none() {
                st.check_tail()?;
                return Ok(crate::api::LoadedStream {
                    snapshot: None,
                    events: Vec::new(),
                    version: 0,
                });
            }
        }
        let inner = self.inner().clone();
        let stream_id = stream_id.clone();
        blocking(move || {
            let snapshot = match snapshot_schema {
                Some(schema) => inner
                    .snapshots
                    .load(&stream_id)?
                    .filter(|s| s.schema_version == schema),
                None => None,
            };
            let mut next = snapshot.as_ref().map_or(1, |s| s.version + 1);
            let page = inner.options.limits.read_count_max;
            let mut events = Vec::new();
            let version = loop {
                let slice = read::read_stream(
                    &inner,
                    &stream_id,
                    ReadFrom::Version(next),
                    Direction::Forward,
                    page,
                )?;
                next += slice.events.len() as u64;
                // Most loads fit in one page: that page is the answer,
                // not copied into another vector.
                if events.is_empty() {
                    events = slice.events;
                } else {
                    events.extend(slice.events);
                }
                if slice.is_end {
                    break slice.stream_version;
                }
            };
            Ok(crate::api::LoadedStream {
                snapshot,
                events,
                version,
            })
        })
        .await
    }

    fn read_page_max(&self) -> usize {
        self.inner().options.limits.read_count_max
    }
}
