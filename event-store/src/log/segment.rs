//! In-memory handles on segment files: the sealed ones (memory-mapped data,
//! index and bloom filter) and the active one (memory-mapped, growing, with
//! its index kept in memory until it is sealed).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::format::bloom::{BloomBuilder, BloomFilter};
use crate::format::event::EventRecord;
use crate::format::frame::{FRAME_HEADER_LEN, Frame, read_frame};
use crate::format::index::{IndexView, StreamEntry};
use crate::log::fs::Fs;
use crate::log::mmap;
use crate::log::recovery::{index_in_memory, write_file_durably};
use crate::types::{RecordedEvent, StreamId};

pub(crate) fn segment_file_name(number: u64) -> String {
    format!("{number:010}.seg")
}

pub(crate) fn index_file_name(number: u64) -> String {
    format!("{number:010}.idx")
}

pub(crate) fn bloom_file_name(number: u64) -> String {
    format!("{number:010}.bloom")
}

/// A segment that will never change again.
///
/// Opening one reads its header and its index's header only, so that
/// opening a store costs the same at a thousand streams as at a hundred
/// million. The index is checked in full (and rebuilt from the records if
/// that fails) the first time it is used, and the bloom filter read then
/// too; both stay in place for the life of the store.
#[derive(Debug)]
pub(crate) struct SealedSegment {
    pub base: u64,
    pub count: u64,
    pub path: PathBuf,
    pub data: Bytes,
    /// The index as opened: its header checked, the rest not yet.
    opened: IndexView,
    checked: OnceLock<Result<IndexView, Damage>>,
    bloom: OnceLock<Option<BloomFilter>>,
    streams_begun: OnceLock<u64>,
    upkeep: Upkeep,
}

/// What a sealed segment needs to repair its derived files on first use.
#[derive(Clone)]
pub(crate) struct Upkeep {
    pub fs: Arc<dyn Fs>,
    pub dir: PathBuf,
    pub number: u64,
    pub bloom_bits_per_stream: u32,
    /// Whether rebuilt files are written back (not when the store opened
    /// read-only: then nothing is written).
    pub writable: bool,
}

impl std::fmt::Debug for Upkeep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upkeep")
            .field("dir", &self.dir)
            .field("number", &self.number)
            .field("writable", &self.writable)
            .finish_non_exhaustive()
    }
}

impl SealedSegment {
    /// A sealed segment whose index is checked on first use and whose bloom
    /// filter is read then.
    pub fn new(path: PathBuf, base: u64, data: Bytes, opened: IndexView, upkeep: Upkeep) -> Self {
        Self {
            base,
            count: opened.meta().event_count,
            path,
            data,
            opened,
            checked: OnceLock::new(),
            bloom: OnceLock::new(),
            streams_begun: OnceLock::new(),
            upkeep,
        }
    }

    /// A segment just sealed: its index and bloom filter were built from
    /// what the writer holds in memory, so neither is checked again.
    pub fn sealed_now(
        path: PathBuf,
        base: u64,
        data: Bytes,
        index: IndexView,
        bloom: BloomFilter,
        upkeep: Upkeep,
    ) -> Self {
        let segment = Self::new(path, base, data, index.clone(), upkeep);
        let _ = segment.checked.set(Ok(index));
        let _ = segment.bloom.set(Some(bloom));
        segment
    }

    /// Position of the segment's last event.
    pub fn last_position(&self) -> u64 {
        self.base + self.count - 1
    }

    /// The path of the segment's index file.
    pub fn index_path(&self) -> PathBuf {
        self.upkeep.dir.join(index_file_name(self.upkeep.number))
    }

    /// The segment's index, checked in full on first use. An index that
    /// fails the check is rebuilt from the segment's records (and written
    /// back when the store may write); records that cannot be indexed are
    /// damage, reported by every use.
    pub fn index(&self) -> Result<&IndexView> {
        self.checked
            .get_or_init(|| match self.opened.check() {
                Ok(()) => Ok(self.opened.clone()),
                Err(why) => self.rebuild_index(&why),
            })
            .as_ref()
            .map_err(Damage::error)
    }

    /// The stream's entry in this segment, and the index it is in.
    ///
    /// A whole-index check costs a read of the whole index, tens of MB for
    /// a full segment, so a lookup does not wait for one: an entry found in
    /// the index as opened is confirmed by the record it names as the
    /// stream's last here (intact, of that stream, at that version and
    /// position). Only an answer that cannot be confirmed so (an entry the
    /// record contradicts, or no entry where the bloom filter said maybe,
    /// which is rarely a false positive and may be damage) checks the
    /// whole index first, once, and asks it again.
    pub fn find(&self, stream_id: &str) -> Result<Option<(&IndexView, StreamEntry)>> {
        if let Some(checked) = self.checked.get() {
            let index = checked.as_ref().map_err(Damage::error)?;
            return Ok(index.find(stream_id).map(|entry| (index, entry)));
        }
        if let Some(entry) = self.opened.find(stream_id)
            && self.confirms(stream_id, &entry)
        {
            return Ok(Some((&self.opened, entry)));
        }
        let index = self.index()?;
        Ok(index.find(stream_id).map(|entry| (index, entry)))
    }

    /// Whether the record the entry names as the stream's last in this
    /// segment is that event.
    fn confirms(&self, stream_id: &str, entry: &StreamEntry) -> bool {
        let last = u64::from(entry.last_rel);
        let Some(offset) = self.opened.position_offset(last) else {
            return false;
        };
        match read_frame(&self.data, offset as usize) {
            Frame::Valid { body, .. } => EventRecord::decode(body).is_ok_and(|r| {
                r.stream_id == stream_id
                    && r.version == entry.last_version()
                    && r.position == self.base + last
            }),
            _ => false,
        }
    }

    /// The segment's bloom filter, read on first use; `None` when the index
    /// it would be rebuilt from is damaged (every stream is then a maybe,
    /// and the index lookup reports the damage).
    pub fn bloom(&self) -> Option<&BloomFilter> {
        self.bloom
            .get_or_init(|| match self.load_bloom() {
                Ok(bloom) => Some(bloom),
                Err(why) => self.rebuild_bloom(&why),
            })
            .as_ref()
    }

    /// How many streams begin in this segment (counted once, on first use).
    pub fn streams_begun(&self) -> Result<u64> {
        if let Some(n) = self.streams_begun.get() {
            return Ok(*n);
        }
        let n = self.index()?.streams_begun();
        Ok(*self.streams_begun.get_or_init(|| n))
    }

    fn rebuild_index(&self, why: &str) -> Result<IndexView, Damage> {
        let up = &self.upkeep;
        let index_path = self.index_path();
        tracing::warn!(index = %index_path.display(), %why, "rebuilding a segment index from the segment's records");
        let view = index_in_memory(&self.path, &self.data, up.number, self.base)
            .map_err(|e| Damage::from_error(&self.path, e))?;
        if up.writable
            && let Err(e) = write_file_durably(
                up.fs.as_ref(),
                &up.dir,
                &index_file_name(up.number),
                view.as_bytes(),
            )
        {
            tracing::warn!(index = %index_path.display(), error = %e, "writing a rebuilt index failed; it is kept in memory");
        }
        Ok(view)
    }

    fn load_bloom(&self) -> std::result::Result<BloomFilter, String> {
        let up = &self.upkeep;
        let path = up.dir.join(bloom_file_name(up.number));
        // Mapped, not read: the filter is a view of the page cache, so it
        // costs no heap and no copy on a first lookup.
        let file = up.fs.open(&path, false).map_err(|e| e.to_string())?;
        let bytes = mmap::map_whole_file(file.std_file()).map_err(|e| e.to_string())?;
        let (bloom, segment) = BloomFilter::decode(bytes)?;
        let streams = self.opened.meta().stream_count;
        if segment != up.number || u64::from(bloom.items()) != streams {
            return Err(format!(
                "bloom filter belongs to segment {segment} with {} streams, not segment {} with {streams}",
                bloom.items(),
                up.number
            ));
        }
        Ok(bloom)
    }

    fn rebuild_bloom(&self, why: &str) -> Option<BloomFilter> {
        let up = &self.upkeep;
        let path = up.dir.join(bloom_file_name(up.number));
        tracing::warn!(bloom = %path.display(), %why, "rebuilding a bloom filter from the segment index");
        let index = self.index().ok()?;
        let mut builder = BloomBuilder::with_capacity(
            index.meta().stream_count as usize,
            up.bloom_bits_per_stream,
        );
        for (name, _) in index.streams() {
            builder.insert(name);
        }
        let bloom = builder.finish();
        if up.writable
            && let Err(e) = write_file_durably(
                up.fs.as_ref(),
                &up.dir,
                &bloom_file_name(up.number),
                &bloom.encode(up.number),
            )
        {
            tracing::warn!(bloom = %path.display(), error = %e, "writing a rebuilt bloom filter failed; it is kept in memory");
        }
        Some(bloom)
    }
}

/// Damage found in a file, kept to be reported again by every read that
/// meets it.
#[derive(Debug, Clone)]
pub(crate) struct Damage {
    pub file: PathBuf,
    pub offset: u64,
    pub detail: String,
}

impl Damage {
    pub fn error(&self) -> Error {
        Error::corruption(&self.file, self.offset, self.detail.clone())
    }

    fn from_error(path: &Path, error: Error) -> Self {
        match error {
            Error::Corruption {
                file,
                offset,
                detail,
            } => Self {
                file,
                offset,
                detail,
            },
            other => Self {
                file: path.to_path_buf(),
                offset: 0,
                detail: other.to_string(),
            },
        }
    }
}

/// The segment being appended to.
#[derive(Debug)]
pub(crate) struct ActiveSegment {
    pub number: u64,
    pub base: u64,
    pub path: PathBuf,
    /// A map reserving room for the whole segment; only `..durable_len` is read.
    pub map: Bytes,
    /// Bytes made durable by the writer and published to readers.
    pub durable_len: u64,
    /// Record offset of each event, indexed by `position - base`.
    pub positions: Vec<u32>,
    pub streams: StreamMap<ActiveStream>,
}

/// A map keyed by stream id, as the writer, the syncer and readers look
/// streams up on every append: foldhash, randomly seeded per map, rather
/// than SipHash, which took about a fifteenth of the writer's time.
pub(crate) type StreamMap<V> = std::collections::HashMap<StreamId, V, foldhash::fast::RandomState>;

/// One stream's events in the active segment.
#[derive(Debug, Clone, Default)]
pub(crate) struct ActiveStream {
    pub first_version: u64,
    /// Its last version here (in a damaged segment versions may be
    /// missing, so it is not always `first_version + offsets.len() - 1`).
    pub version: u64,
    pub offsets: Vec<u32>,
    pub last_position: u64,
}

/// Decodes the event record at `offset` of `bytes[..limit]`.
///
/// Returns the event and the frame's length. Anything but an intact event
/// record is reported as corruption at `offset`, never skipped.
pub(crate) fn decode_event_at(
    bytes: &Bytes,
    limit: usize,
    offset: usize,
    path: &Path,
) -> Result<(RecordedEvent, usize)> {
    let (record, frame_len) = decode_record_at(bytes, limit, offset, path)?;
    Ok((
        record.to_recorded(bytes, offset + FRAME_HEADER_LEN),
        frame_len,
    ))
}

/// The checksum-verified event record at `offset` of the first `limit`
/// bytes, lent from `bytes`, and the length of its frame.
pub(crate) fn decode_record_at<'a>(
    bytes: &'a [u8],
    limit: usize,
    offset: usize,
    path: &Path,
) -> Result<(EventRecord<'a>, usize)> {
    let window = &bytes[..limit.min(bytes.len())];
    match read_frame(window, offset) {
        Frame::Valid { body, frame_len } => {
            let record = EventRecord::decode(body)
                .map_err(|detail| Error::corruption(path, offset as u64, detail))?;
            Ok((record, frame_len))
        }
        Frame::BadChecksum { .. } => Err(Error::corruption(
            path,
            offset as u64,
            "record checksum mismatch",
        )),
        Frame::BadLength => Err(Error::corruption(
            path,
            offset as u64,
            "record length field damaged",
        )),
        Frame::Truncated | Frame::ZeroTail => Err(Error::corruption(
            path,
            offset as u64,
            "record runs past the end of the committed data",
        )),
    }
}
