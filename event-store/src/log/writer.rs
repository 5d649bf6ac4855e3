//! The single writer: a dedicated thread that takes every queued append,
//! checks expected versions, encodes all accepted batches into one buffer
//! and writes it; the syncer (`syncer.rs`) then makes it durable with one
//! `fdatasync` (group commit), and only then publishes the events to
//! readers and acknowledges the callers, while the writer goes on with the
//! next group. With few callers there is nothing to go on with: the
//! writer syncs itself and saves the hand-over, and a caller that finds
//! itself alone commits its own append on its own thread, which saves the
//! two thread wake-ups of a hand-over to the writer and back
//! (`commit_alone`).
//!
//! A failed write or fsync poisons the writer: the bytes may or may not be on
//! disk, so nothing of that group is acknowledged, and no later append is
//! accepted until the store is reopened and recovery has decided what the
//! file holds. A failed fsync is never retried as if the data were safe.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::format::bloom::BloomBuilder;
use crate::format::event::{EventRecord, FLAG_END_OF_BATCH};
use crate::format::frame::{Frame, append_frame, read_frame};
use crate::format::header::HEADER_LEN;
use crate::format::index::{self, IndexView, StreamInput};
use crate::log::fs::FsFile;
use crate::log::lock::DirLock;
use crate::log::mmap;
use crate::log::read;
use crate::log::recovery::{create_segment, write_file_durably};
use crate::log::segment::{
    ActiveSegment, SealedSegment, StreamMap, Upkeep, bloom_file_name, decode_event_at,
    index_file_name,
};
use crate::log::shared::Inner;
use crate::log::syncer::{self, PendingEvent, Progress, Reply, Written};
use crate::rules::{self, Plan};
use crate::types::{
    AppendResult, Direction, Position, ReadFrom, RecordedEvent, StreamAppend, StreamId,
};

/// At most this many queued requests are committed by one fsync.
const GROUP_REQUESTS_MAX: usize = 1024;

/// Zeros written ahead of the records at a time (see `Writer::zero_ahead`).
const ZERO_SLICE: u64 = 1 << 20;

static ZEROS: [u8; ZERO_SLICE as usize] = [0; ZERO_SLICE as usize];

pub(crate) struct AppendRequest {
    pub appends: Vec<StreamAppend>,
    /// Encoded size, computed by the caller when it validated the request.
    pub encoded_len: usize,
    pub reply: Reply,
}

pub(crate) struct Writer {
    inner: Arc<Inner>,
    file: Arc<dyn FsFile>,
    number: u64,
    path: PathBuf,
    /// Length of the active segment's records written so far (durable
    /// once the syncer has answered every group handed to it).
    len: u64,
    /// The position of the next event written.
    next_position: u64,
    /// The last group handed to the syncer (or synced here).
    seq: u64,
    /// Stream versions written by groups the syncer may not have
    /// published yet; emptied whenever it has caught up.
    in_flight: StreamMap<u64>,
    progress: Arc<Progress>,
    /// Where written groups go, and the thread that takes them; `None`
    /// once stopped.
    syncer: Option<(
        std::sync::mpsc::Sender<Written>,
        std::thread::JoinHandle<()>,
    )>,
    /// Whether the group in the making syncs on this thread (see `run`).
    sync_here: bool,
    /// The groups handed to the syncer and not known to be answered yet,
    /// with their callers.
    handed: std::collections::VecDeque<(u64, usize)>,
    /// The most callers seen at once lately (see `run`).
    callers_peak: usize,
    /// The active segment file's length: space past `len` is reserved and
    /// reads as zeros (see `reserve`).
    allocated: u64,
    /// Zeros are written from `len` up to here (see `zero_ahead`).
    zeroed: u64,
    /// Callers answered by the last group, who usually send again, and
    /// how long the writer waits for them (see `gather`).
    answered: usize,
    wait: std::time::Duration,
    /// Whether the last group was a lone caller's own (`commit_alone`):
    /// that caller was not in the queue the writer thread saw.
    alone_last: bool,
    /// Held for as long as the writer runs; dropping it releases the data
    /// directory to other processes only once no append can happen, and
    /// `None` once the writer has stopped.
    lock: Option<DirLock>,
}

/// The writer, shared by its thread and by callers that commit their own
/// append when they are alone (see [`commit_alone`]).
pub(crate) type SharedWriter = Arc<parking_lot::Mutex<Writer>>;

/// What the writer knows of a stream while it decides an append: the
/// durable log plus this group's accepted appends.
struct GroupLookup<'a> {
    writer: &'a Writer,
    group: &'a Group,
}

impl rules::Lookup for GroupLookup<'_> {
    fn current_version(&self, stream_id: &StreamId) -> Result<u64> {
        self.writer.current_version(stream_id, self.group)
    }

    fn ids(&self, stream_id: &StreamId, first: u64, last: u64) -> Option<Vec<Uuid>> {
        self.writer.durable_ids(stream_id, first, last)
    }

    fn stored(&self, stream_id: &StreamId, first: u64, last: u64) -> Result<Vec<RecordedEvent>> {
        self.writer.stored(stream_id, first, last, self.group)
    }
}

/// One group commit in the making.
struct Group {
    buf: Vec<u8>,
    events: Vec<PendingEvent>,
    /// Stream versions including this group's accepted appends.
    versions: StreamMap<u64>,
    next_position: u64,
    /// Answered once the group is durable and published: its successes,
    /// replays and refusals alike, as any of them may rest on an earlier
    /// append of this very group (see `commit`).
    waiting: Vec<(Reply, Result<Vec<AppendResult>>)>,
}

impl Writer {
    pub(crate) fn new(inner: Arc<Inner>, file: Arc<dyn FsFile>, lock: DirLock) -> Self {
        let (number, path, len, head) = {
            let st = inner.state.read();
            (
                st.active.number,
                st.active.path.clone(),
                st.active.durable_len,
                st.head,
            )
        };
        // Unknown, the next group reserves space again, which costs one
        // more sync and nothing else.
        let allocated = file.len().unwrap_or(len).max(len);
        Self {
            inner,
            file,
            number,
            path,
            len,
            next_position: head + 1,
            seq: 0,
            in_flight: StreamMap::default(),
            progress: Arc::new(Progress::default()),
            syncer: None,
            sync_here: true,
            handed: std::collections::VecDeque::new(),
            callers_peak: 1,
            allocated,
            zeroed: len,
            answered: 1,
            wait: GATHER_WAIT,
            alone_last: false,
            lock: Some(lock),
        }
    }

    /// Starts the writer's thread (and the syncer's): the thread, and the
    /// writer shared with callers.
    pub(crate) fn spawn(
        mut self,
        rx: mpsc::Receiver<AppendRequest>,
    ) -> std::io::Result<(std::thread::JoinHandle<()>, SharedWriter)> {
        self.syncer = Some(syncer::spawn(self.inner.clone(), self.progress.clone())?);
        let inner = self.inner.clone();
        let shared = Arc::new(parking_lot::Mutex::new(self));
        let writer = shared.clone();
        let thread = std::thread::Builder::new()
            .name("annals-writer".into())
            .spawn(move || run(&writer, inner, rx))?;
        Ok((thread, shared))
    }

    /// Commits a queued group of `requests`, which hold `events` events.
    fn commit_queued(&mut self, requests: Vec<AppendRequest>, events: usize, queued: usize) {
        // A lone caller that committed its own last group was not in the
        // queue, and comes back: it counts, or two callers taking turns
        // would never be seen as two.
        let callers = requests.len() + usize::from(std::mem::take(&mut self.alone_last));
        self.commit_group(requests, events, callers, queued);
    }

    /// Commits `requests` (`events` events) as one group, with `callers`
    /// seen and `queued` requests behind it: what the next gather waits
    /// for, and where the group syncs, follow from them.
    fn commit_group(
        &mut self,
        requests: Vec<AppendRequest>,
        events: usize,
        callers: usize,
        queued: usize,
    ) {
        self.answered = requests.len();
        self.wait = gather_wait(events);
        self.sync_here = self.holds_every_caller(callers, queued);
        self.commit(requests, events);
    }

    /// Whether a caller with nothing queued behind it is alone: no group is
    /// in flight and no other caller was seen lately, the writer is running,
    /// and its append of `encoded_len` bytes fits the active segment (a
    /// caller never seals one, which takes time a caller's thread should
    /// not spend).
    fn is_alone(&mut self, encoded_len: usize) -> bool {
        self.lock.is_some()
            && self.callers_peak <= 1
            && self.callers_in_flight() == 0
            && self.len + encoded_len as u64 <= self.inner.options.segment_bytes_max
    }

    /// Lets the syncer answer what it was handed, stops it, and releases
    /// the data directory: no append is written after this.
    fn stop(&mut self) {
        self.stop_syncer();
        self.lock = None;
        tracing::debug!("writer stopped");
    }

    /// Whether a group of `callers` with `queued` requests behind it
    /// holds every caller seen lately. Then no append will come to be
    /// written while it syncs, and syncing on this thread saves waking
    /// the syncer (if nothing is in flight, see `flush`). Otherwise the
    /// others come back during the sync, and the writer hands the sync
    /// over to write their group meanwhile. The peak forgets one caller
    /// a group, so that a load that shrinks is soon synced here again.
    fn holds_every_caller(&mut self, callers: usize, queued: usize) -> bool {
        let waiting = self.callers_in_flight();
        let now = waiting + callers + queued;
        self.callers_peak = now.max(self.callers_peak.saturating_sub(1));
        queued == 0 && self.handed.is_empty() && callers >= self.callers_peak
    }

    /// The callers of the groups in flight, when a group of `callers`
    /// written now would split a small load: a sync is in flight, and
    /// this group holds under half the callers seen lately, at most
    /// [`SMALL_LOAD_CALLERS`]. Those callers are then waited for, to join
    /// this group: written while another syncs, a group of a few callers
    /// keeps them apart for good (with 8 writers, groups held 4 callers on
    /// average), each sync carries part of them, and with few callers
    /// the disk's sync rate is what bounds their appends. With many,
    /// groups are large anyway, and writing while syncing is what keeps
    /// the disk busy.
    fn splits_a_small_load(&mut self, callers: usize) -> Option<usize> {
        if self.callers_peak > SMALL_LOAD_CALLERS || callers * 2 > self.callers_peak {
            return None;
        }
        let in_flight = self.callers_in_flight();
        (in_flight > 0).then_some(in_flight)
    }

    /// The callers of the groups handed over and not answered yet; drops
    /// the answered ones from `handed`.
    fn callers_in_flight(&mut self) -> usize {
        let answered = self.progress.answered();
        while self.handed.front().is_some_and(|(seq, _)| *seq <= answered) {
            self.handed.pop_front();
        }
        self.handed.iter().map(|(_, n)| n).sum()
    }

    /// Lets the syncer answer what it was handed, then stops it.
    fn stop_syncer(&mut self) {
        if let Some((sender, handle)) = self.syncer.take() {
            drop(sender);
            if handle.join().is_err() {
                syncer::poison(&self.inner, "the syncer thread panicked");
            }
        }
    }

    /// Waits until every group written so far is answered (and, unless a
    /// sync failed, durable and published).
    fn catch_up(&mut self) {
        self.progress.wait_for(self.seq);
        self.in_flight.clear();
        self.handed.clear();
    }

    fn refusal(&self) -> Option<Error> {
        if let Some(reason) = self.inner.failure.lock().clone() {
            return Some(Error::Poisoned(reason));
        }
        self.inner
            .state
            .read()
            .read_only
            .clone()
            .map(Error::ReadOnly)
    }

    /// Commits `requests`, which hold `events` events in all.
    fn commit(&mut self, requests: Vec<AppendRequest>, events: usize) {
        // `handed` was brought up to date by `holds_every_caller`.
        if self.handed.is_empty() {
            self.in_flight.clear();
        }
        // Sized for every request up front: no buffer grows by copying.
        let bytes = requests.iter().map(|r| r.encoded_len).sum();
        let mut group = Group {
            buf: Vec::with_capacity(bytes),
            events: Vec::with_capacity(events),
            versions: StreamMap::with_capacity_and_hasher(requests.len(), Default::default()),
            next_position: self.next_position,
            waiting: Vec::with_capacity(requests.len()),
        };
        let timestamp = self.inner.options.clock.now().0;
        for request in requests {
            if let Some(err) = self.refusal() {
                let _ = request.reply.send(Err(err));
                continue;
            }
            let lookup = GroupLookup {
                writer: self,
                group: &group,
            };
            match rules::plan(&request.appends, &lookup) {
                Err(err) => {
                    // A conflict may be with an append earlier in this very
                    // group: answered after the fsync, so that a caller told
                    // the stream was taken can read what took it.
                    group.waiting.push((request.reply, Err(err)));
                }
                Ok(Plan::AlreadyCommitted(results)) => {
                    // Its events may be in this very group: answer after the fsync.
                    group.waiting.push((request.reply, Ok(results)));
                }
                Ok(Plan::Write(currents)) => {
                    let used = self.len + group.buf.len() as u64;
                    if used > HEADER_LEN as u64
                        && used + request.encoded_len as u64 > self.inner.options.segment_bytes_max
                    {
                        self.flush(&mut group);
                        if let Err(err) = self.seal_and_start_next() {
                            let _ = request.reply.send(Err(err));
                            continue;
                        }
                        group.next_position = self.next_position;
                    }
                    let results = self.encode(&request.appends, &currents, &mut group, timestamp);
                    group.waiting.push((request.reply, Ok(results)));
                }
            }
        }
        self.flush(&mut group);
    }

    fn current_version(&self, stream_id: &StreamId, group: &Group) -> Result<u64> {
        match group
            .versions
            .get(stream_id)
            .or_else(|| self.in_flight.get(stream_id))
        {
            Some(version) => Ok(*version),
            None => self.inner.state.read().stream_version(stream_id.as_str()),
        }
    }

    /// The ids of the stream's events at versions `first ..= last` when all
    /// of them are durable records of the active segment (intact: each
    /// frame's checksum is checked); `None` otherwise, and for anything
    /// unexpected, which then goes the way of a full read.
    fn durable_ids(&self, stream_id: &StreamId, first: u64, last: u64) -> Option<Vec<Uuid>> {
        let st = self.inner.state.read();
        let stream = st.active.streams.get(stream_id)?;
        let from = usize::try_from(first.checked_sub(stream.first_version)?).ok()?;
        let to = usize::try_from(last.checked_sub(stream.first_version)?).ok()?;
        let offsets = stream.offsets.get(from..=to)?;
        let window = st.active.map.get(..st.active.durable_len as usize)?;
        offsets
            .iter()
            .map(|offset| match read_frame(window, *offset as usize) {
                Frame::Valid { body, .. } => {
                    let id: [u8; 16] = body.get(32..48)?.try_into().ok()?;
                    Some(Uuid::from_bytes(id))
                }
                _ => None,
            })
            .collect()
    }

    /// The stream's events at versions `first ..= last`: durable ones read
    /// from the log, this group's from its buffer.
    fn stored(
        &self,
        stream_id: &StreamId,
        first: u64,
        last: u64,
        group: &Group,
    ) -> Result<Vec<RecordedEvent>> {
        // Rare (a retry): groups in flight are waited for rather than read.
        self.progress.wait_for(self.seq);
        let durable_version = self.inner.state.read().stream_version(stream_id.as_str())?;
        let mut found = Vec::with_capacity((last - first + 1) as usize);
        if first <= durable_version {
            let n = (durable_version.min(last) - first + 1) as usize;
            let slice = read::read_stream(
                &self.inner,
                stream_id,
                ReadFrom::Version(first),
                Direction::Forward,
                n,
            )?;
            found.extend(slice.events);
        }
        let next = first + found.len() as u64;
        let pending: Vec<&PendingEvent> = group
            .events
            .iter()
            .filter(|e| e.stream_id == *stream_id && e.version >= next && e.version <= last)
            .collect();
        if !pending.is_empty() {
            // Rare (a retry racing its own first attempt): decode this
            // group's records from its buffer.
            let buf = bytes::Bytes::copy_from_slice(&group.buf);
            for e in pending {
                let at = (u64::from(e.offset) - self.len) as usize;
                let (event, _) = decode_event_at(&buf, buf.len(), at, &self.path)?;
                found.push(event);
            }
        }
        Ok(found)
    }

    fn encode(
        &self,
        appends: &[StreamAppend],
        currents: &[u64],
        group: &mut Group,
        timestamp: i64,
    ) -> Vec<AppendResult> {
        let total: usize = appends.iter().map(|a| a.events.len()).sum();
        let mut written = 0usize;
        let mut results = Vec::with_capacity(appends.len());
        for (append, &current) in appends.iter().zip(currents) {
            let first_position = group.next_position;
            for (i, event) in append.events.iter().enumerate() {
                written += 1;
                let offset = (self.len as usize + group.buf.len()) as u32;
                let record = EventRecord {
                    flags: if written == total {
                        FLAG_END_OF_BATCH
                    } else {
                        0
                    },
                    schema_version: event.schema_version,
                    position: group.next_position,
                    version: current + 1 + i as u64,
                    timestamp,
                    id: *event.id.as_bytes(),
                    stream_id: append.stream_id.as_str(),
                    event_type: &event.event_type,
                    data: &event.data,
                    metadata: &event.metadata,
                };
                append_frame(&mut group.buf, |b| record.encode(b));
                group.events.push(PendingEvent {
                    stream_id: append.stream_id.clone(),
                    version: record.version,
                    position: record.position,
                    offset,
                });
                group.next_position += 1;
            }
            let count = append.events.len() as u64;
            group
                .versions
                .insert(append.stream_id.clone(), current + count);
            results.push(AppendResult {
                stream_id: append.stream_id.clone(),
                first_version: current + 1,
                last_version: current + count,
                first_position: Position(first_position),
                last_position: Position(first_position + count - 1),
                already_committed: false,
            });
        }
        results
    }

    /// Writes the group's bytes, then has them synced, published and
    /// answered: here, or by the syncer while the writer goes on.
    fn flush(&mut self, group: &mut Group) {
        let bytes = group.buf.len();
        if bytes > 0 {
            let inner = self.inner.clone();
            let _writes = inner.writes.lock();
            // A sync failed since the group was decided: what it was
            // decided against may be lost, and the syncer has cut the
            // segment back, so nothing of it is written.
            if let Some(reason) = inner.failure.lock().clone() {
                abandon(group, &reason);
                return;
            }
            // A write that fails leaves at most a torn batch, which the
            // next open drops: nothing of the group was committed.
            let end = self.len + bytes as u64;
            let written = match self.reserve(end) {
                Err(e) => Err(("reserving space for", e)),
                Ok(()) => self
                    .file
                    .write_all_at(&group.buf, self.len)
                    .map_err(|e| ("writing", e)),
            };
            if let Err((what, e)) = written {
                let reason = format!(
                    "{what} {bytes} bytes to {} at offset {} failed: {e}; the store refuses appends until it is reopened",
                    self.path.display(),
                    self.len
                );
                syncer::poison(&inner, &reason);
                abandon(group, &reason);
                return;
            }
            self.len = end;
            self.next_position = group.next_position;
            // Seldom due (once a step, once a slice); before the sync, so
            // that a caller answered finds the writer idle.
            self.reserve_ahead();
            self.zero_ahead();
        }
        // `sync_here` holds only when nothing was in flight, and then
        // nothing is handed over until the next group.
        let here = self.sync_here;
        self.seq += 1;
        let written = Written {
            seq: self.seq,
            file: self.file.clone(),
            path: self.path.clone(),
            end: self.len,
            bytes,
            events: std::mem::take(&mut group.events),
            waiting: std::mem::take(&mut group.waiting),
        };
        group.buf.clear();
        if here {
            group.versions.clear();
            syncer::complete(&self.inner, &self.progress, vec![written]);
            return;
        }
        self.in_flight.extend(group.versions.drain());
        self.handed.push_back((self.seq, written.waiting.len()));
        let unsent = match &self.syncer {
            Some((sender, _)) => sender.send(written).err().map(|e| e.0),
            None => Some(written),
        };
        if let Some(written) = unsent {
            // The syncer is gone (it panicked): what it held is unknown.
            self.progress.fail("the syncer thread stopped".into());
            syncer::complete(&self.inner, &self.progress, vec![written]);
        }
    }

    /// Makes sure the file has space reserved up to `end`, reserving a
    /// step of `preallocate_bytes` (up to the segment's size) at a time and
    /// syncing the new length at once: the group commits that follow then
    /// overwrite reserved space, and their `fdatasync` writes data alone,
    /// which on common filesystems costs what an overwrite costs rather
    /// than a journal commit for the new length.
    fn reserve(&mut self, end: u64) -> std::io::Result<()> {
        let step = self.inner.options.preallocate_bytes;
        if end <= self.allocated || step == 0 {
            return Ok(());
        }
        let target = end.max((self.len + step).min(self.inner.options.segment_bytes_max));
        self.file.allocate(target)?;
        // A failure may have lost the bytes of groups written since the
        // last good sync, in flight ones too: `Progress::sync` records it,
        // and the syncer answers them indeterminate.
        let path = &self.path;
        self.progress
            .sync(self.file.as_ref(), |e| {
                format!("syncing reserved space of {} failed: {e}", path.display())
            })
            .map_err(std::io::Error::other)?;
        self.allocated = target;
        Ok(())
    }

    /// Writes zeros over the next slice of reserved space once less than
    /// half a slice is left, without syncing them. Reserved space is
    /// allocated but unwritten, and the first write to each block of it
    /// converts that block, which its `fdatasync` must commit as well;
    /// written once here, the next group's `fdatasync` commits the whole
    /// slice, and every later one in it overwrites written blocks and
    /// writes data alone. Past `len` lies free space only, so the zeros
    /// overwrite nothing. A failure is only logged: appends work without.
    fn zero_ahead(&mut self) {
        if self.inner.options.preallocate_bytes == 0
            || self.zeroed.saturating_sub(self.len) >= ZERO_SLICE / 2
        {
            return;
        }
        let from = self.zeroed.max(self.len);
        let to = (from + ZERO_SLICE).min(self.allocated);
        if to <= from {
            return;
        }
        match self.file.write_all_at(&ZEROS[..(to - from) as usize], from) {
            Ok(()) => self.zeroed = to,
            Err(e) => {
                tracing::warn!(segment = %self.path.display(), error = %e, "writing zeros ahead of appends failed");
            }
        }
    }

    /// Reserves the next step once a quarter of the current one is left,
    /// so that reserving seldom falls inside a group's write and sync. A
    /// failure is logged; a failed allocation is otherwise harmless (the
    /// next group tries again on its own path, and fails as a write
    /// would), a failed sync fails the groups not yet synced (`reserve`).
    fn reserve_ahead(&mut self) {
        let step = self.inner.options.preallocate_bytes;
        if step == 0 || self.allocated.saturating_sub(self.len) >= step / 4 {
            return;
        }
        let end = (self.len + step / 4 + 1).min(self.inner.options.segment_bytes_max);
        if end <= self.allocated {
            return;
        }
        if let Err(e) = self.reserve(end) {
            tracing::warn!(segment = %self.path.display(), error = %e, "reserving space ahead of appends failed");
        }
    }

    /// Seals the active segment and starts the next, unless the writer has
    /// already stopped; a failure to do so stops it.
    fn seal_and_start_next(&mut self) -> Result<()> {
        // The index is built from what is published.
        self.catch_up();
        if let Some(err) = self.refusal() {
            return Err(err);
        }
        self.roll().map_err(|err| {
            let reason = format!("sealing segment {} failed: {err}", self.number);
            syncer::poison(&self.inner, &reason);
            Error::Poisoned(reason)
        })
    }

    /// Seals the active segment (index and bloom filter written durably
    /// beside it) and starts the next one.
    fn roll(&mut self) -> Result<()> {
        let dir = self.inner.events_dir.clone();
        let fs = self.inner.options.fs.clone();
        self.trim_reserved()?;
        let (base, index_bytes, bloom) = {
            let st = self.inner.state.read();
            let active = &st.active;
            let inputs: Vec<StreamInput<'_>> = active
                .streams
                .iter()
                .map(|(id, s)| StreamInput {
                    stream_id: id.as_str(),
                    first_version: s.first_version,
                    offsets: &s.offsets,
                    last_rel: (s.last_position - active.base) as u32,
                })
                .collect();
            let bytes = index::encode(
                self.number,
                active.base,
                self.len,
                &active.positions,
                &inputs,
            );
            let mut bloom =
                BloomBuilder::with_capacity(inputs.len(), self.inner.options.bloom_bits_per_stream);
            for input in &inputs {
                bloom.insert(input.stream_id);
            }
            (active.base, bytes, bloom.finish())
        };
        write_file_durably(
            fs.as_ref(),
            &dir,
            &index_file_name(self.number),
            &index_bytes,
        )?;
        write_file_durably(
            fs.as_ref(),
            &dir,
            &bloom_file_name(self.number),
            &bloom.encode(self.number),
        )?;
        let index_path = dir.join(index_file_name(self.number));
        let index_file = fs
            .open(&index_path, false)
            .map_err(|e| Error::io(format!("opening {}", index_path.display()), e))?;
        let index_map = mmap::map_whole_file(index_file.std_file())
            .map_err(|e| Error::io(format!("mapping {}", index_path.display()), e))?;
        let index = IndexView::parse(index_map)
            .map_err(|detail| Error::corruption(&index_path, 0, detail))?;
        let data = mmap::map_whole_file(self.file.std_file())
            .map_err(|e| Error::io(format!("mapping {}", self.path.display()), e))?;
        let upkeep = Upkeep {
            fs: fs.clone(),
            dir: dir.clone(),
            number: self.number,
            bloom_bits_per_stream: self.inner.options.bloom_bits_per_stream,
            writable: true,
        };
        let sealed = SealedSegment::sealed_now(self.path.clone(), base, data, index, bloom, upkeep);

        let next_base = base + sealed.count;
        let next_number = self.number + 1;
        let (path, file) = create_segment(
            fs.as_ref(),
            &dir,
            next_number,
            next_base,
            self.inner.options.clock.now().0,
        )?;
        let reserve = self.inner.options.segment_bytes_max
            + self.inner.options.limits.append_bytes_max as u64;
        let map = mmap::map_growing_file(file.std_file(), reserve)
            .map_err(|e| Error::io(format!("mapping {}", path.display()), e))?;
        {
            let mut st = self.inner.state.write();
            st.sealed_bytes += sealed.data.len() as u64;
            st.sealed.push(Arc::new(sealed));
            st.active = ActiveSegment {
                number: next_number,
                base: next_base,
                path: path.clone(),
                map,
                durable_len: HEADER_LEN as u64,
                positions: Vec::new(),
                streams: StreamMap::default(),
            };
        }
        tracing::debug!(segment = self.number, "sealed segment");
        self.file = file;
        self.number = next_number;
        self.path = path;
        self.len = HEADER_LEN as u64;
        self.allocated = self.len;
        self.zeroed = self.len;
        self.reserve_ahead();
        self.zero_ahead();
        Ok(())
    }

    /// Gives back the space reserved past the records, durably, so that a
    /// sealed segment ends with its last record, as its index says.
    fn trim_reserved(&mut self) -> Result<()> {
        if self.allocated <= self.len {
            return Ok(());
        }
        let ctx = |what: &str| format!("{what} {}", self.path.display());
        self.file
            .set_len(self.len)
            .map_err(|e| Error::io(ctx("trimming the reserved space of"), e))?;
        self.file
            .sync_data()
            .map_err(|e| Error::io(ctx("syncing"), e))?;
        self.allocated = self.len;
        Ok(())
    }
}

/// Answers every caller of a group that is not written, refusals too:
/// what they were weighed against may be lost.
fn abandon(group: &mut Group, reason: &str) {
    for (reply, _) in group.waiting.drain(..) {
        let _ = reply.send(Err(Error::Poisoned(reason.to_owned())));
    }
    group.buf.clear();
    group.events.clear();
    group.versions.clear();
}

/// The writer thread: takes what is queued, in groups, until every
/// sender is gone.
fn run(writer: &SharedWriter, inner: Arc<Inner>, mut rx: mpsc::Receiver<AppendRequest>) {
    // A panic leaves the writer's state half-updated, and lone callers
    // could still take its lock: it stops appends instead.
    let _stops_on_panic = PoisonOnPanic(inner, "the writer thread panicked");
    while let Some(first) = rx.blocking_recv() {
        let (answered, wait) = {
            let w = writer.lock();
            (w.answered, w.wait)
        };
        let mut requests = gather(&mut rx, first, answered, wait);
        let mut w = writer.lock();
        if let Some(in_flight) = w.splits_a_small_load(requests.len()) {
            // Its callers are answered now, and come back within
            // microseconds: they join this group (the lock held meanwhile
            // makes a caller that finds itself alone queue as well).
            w.progress.wait_for(w.seq);
            let expected = requests.len() + in_flight;
            requests = gather_more(&mut rx, requests, expected, wait);
        }
        let events = events_of(&requests);
        w.commit_queued(requests, events, rx.len());
    }
    writer.lock().stop();
}

/// Commits `request` on the caller's own thread, when nothing is queued
/// (`queued`), no other caller is committing, and the caller is alone (see
/// `Writer::is_alone`): then the writer thread would take it alone and
/// sync it itself, and doing that here saves waking that thread and being
/// woken by it: on the virtual machine measured, the two wake-ups took
/// about a fifth of a 100 µs sync. The request comes back when it is not
/// taken; when it is, its reply is answered before this returns. Blocks
/// for the write and the sync, as the caller would have waited for them
/// anyway.
pub(crate) fn commit_alone(
    writer: &SharedWriter,
    request: AppendRequest,
    queued: usize,
) -> std::result::Result<(), AppendRequest> {
    if queued > 0 {
        return Err(request);
    }
    let Some(mut w) = writer.try_lock() else {
        return Err(request);
    };
    if !w.is_alone(request.encoded_len) {
        return Err(request);
    }
    let events = events_of(std::slice::from_ref(&request));
    w.alone_last = true;
    let _stops_on_panic = PoisonOnPanic(w.inner.clone(), "a caller's commit panicked");
    w.commit_group(vec![request], events, 1, 0);
    Ok(())
}

/// Poisons the store when dropped by a panic: a panic half-way through a
/// group, on the writer thread or a caller's, leaves the writer's state
/// half-updated, so nothing is appended after it until the store is
/// reopened and recovery has decided what the file holds.
struct PoisonOnPanic(Arc<Inner>, &'static str);

impl Drop for PoisonOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let reason = format!("{}; the store refuses appends until it is reopened", self.1);
            syncer::poison(&self.0, &reason);
        }
    }
}

/// The requests of the next group: `first` and whatever is queued, and,
/// while fewer than the `answered` callers of the last group have come
/// back, those that do within `wait` (see [`gather_wait`]). Without the
/// wait, callers answered together come back a few microseconds apart,
/// the first alone starts a group and the others wait out its fsync:
/// concurrent writers would settle into small groups. A caller that does
/// not come back costs the next group at most the wait.
fn gather(
    rx: &mut mpsc::Receiver<AppendRequest>,
    first: AppendRequest,
    answered: usize,
    wait: std::time::Duration,
) -> Vec<AppendRequest> {
    gather_more(rx, vec![first], answered, wait)
}

/// `requests` and whatever is queued, waiting up to `wait` for
/// `expected` callers in all (see `gather`).
fn gather_more(
    rx: &mut mpsc::Receiver<AppendRequest>,
    mut requests: Vec<AppendRequest>,
    expected: usize,
    wait: std::time::Duration,
) -> Vec<AppendRequest> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        while requests.len() < GROUP_REQUESTS_MAX {
            match rx.try_recv() {
                Ok(request) => requests.push(request),
                Err(_) => break,
            }
        }
        if requests.len() >= expected.min(GATHER_CALLERS_MAX)
            || std::time::Instant::now() >= deadline
        {
            return requests;
        }
        std::thread::yield_now();
    }
}

/// The most callers seen at once for which the writer keeps them in one
/// group rather than write a group while another syncs (see
/// `Writer::splits_a_small_load`).
const SMALL_LOAD_CALLERS: usize = 16;

/// How long the writer waits for the callers of its last group to come
/// back before it commits without them, at least, and longer by
/// [`GATHER_WAIT_PER_EVENT`] for each event that group carried, up to
/// [`GATHER_WAIT_MAX`] (see [`gather_wait`]).
const GATHER_WAIT: std::time::Duration = std::time::Duration::from_micros(50);
const GATHER_WAIT_PER_EVENT: std::time::Duration = std::time::Duration::from_nanos(1250);
const GATHER_WAIT_MAX: std::time::Duration = std::time::Duration::from_micros(200);

/// How long the callers answered by a group of `events` events may take
/// to come back: each builds and checks its next append before it sends,
/// which takes longer the more events it appends, and callers sharing the
/// CPUs come back one after another. With 8 writers of 10 events each a
/// wait of 50 µs let part of them miss nearly every group, which then
/// synced without them (150 µs: 10–13 % more events/s); a group of single
/// events keeps about the base wait.
fn gather_wait(events: usize) -> std::time::Duration {
    let per_event = GATHER_WAIT_PER_EVENT.saturating_mul(u32::try_from(events).unwrap_or(u32::MAX));
    GATHER_WAIT.saturating_add(per_event).min(GATHER_WAIT_MAX)
}

/// The events of every append of `requests`.
fn events_of(requests: &[AppendRequest]) -> usize {
    requests
        .iter()
        .flat_map(|r| &r.appends)
        .map(|a| a.events.len())
        .sum()
}

/// The writer waits for at most this many callers: past it, groups are
/// large without waiting, and the wait's yielding costs the callers CPU
/// (64 writers lost a fifth of their rate waiting for all of them).
const GATHER_CALLERS_MAX: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ExpectedVersion, NewEvent};
    use std::time::Duration;

    fn request(events: usize) -> AppendRequest {
        let stream = StreamId::new("writer-0").unwrap();
        let events = (0..events).map(|_| NewEvent::new("E", "{}")).collect();
        AppendRequest {
            appends: vec![StreamAppend::new(stream, ExpectedVersion::Any, events)],
            encoded_len: 0,
            reply: tokio::sync::oneshot::channel().0,
        }
    }

    #[test]
    fn callers_of_larger_groups_are_waited_for_longer_up_to_a_bound() {
        let single = gather_wait(events_of(&[request(1)]));
        let eight_of_ten: Vec<_> = (0..8).map(|_| request(10)).collect();
        assert_eq!(events_of(&eight_of_ten), 80);
        assert_eq!(single, Duration::from_nanos(51_250));
        assert_eq!(
            gather_wait(events_of(&eight_of_ten)),
            Duration::from_micros(150)
        );
        assert_eq!(gather_wait(events_of(&[request(10_000)])), GATHER_WAIT_MAX);
    }
}
