//! In-memory handles on segment files: the sealed ones (memory-mapped data,
//! index and bloom filter) and the active one (memory-mapped, growing, with
//! its index kept in memory until it is sealed).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::format::bloom::BloomFilter;
use crate::format::event::EventRecord;
use crate::format::frame::{FRAME_HEADER_LEN, Frame, read_frame};
use crate::format::index::IndexView;
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
#[derive(Debug)]
pub(crate) struct SealedSegment {
    pub base: u64,
    pub count: u64,
    pub path: PathBuf,
    pub data: Bytes,
    pub index: IndexView,
    pub bloom: BloomFilter,
}

impl SealedSegment {
    /// Position of the segment's last event.
    pub fn last_position(&self) -> u64 {
        self.base + self.count - 1
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
    pub streams: HashMap<StreamId, ActiveStream>,
}

/// One stream's events in the active segment.
#[derive(Debug, Clone, Default)]
pub(crate) struct ActiveStream {
    pub first_version: u64,
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
    let window = &bytes[..limit.min(bytes.len())];
    match read_frame(window, offset) {
        Frame::Valid { body, frame_len } => {
            let record = EventRecord::decode(body)
                .map_err(|detail| Error::corruption(path, offset as u64, detail))?;
            Ok((
                record.to_recorded(bytes, offset + FRAME_HEADER_LEN),
                frame_len,
            ))
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
