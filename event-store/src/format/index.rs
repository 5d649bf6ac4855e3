//! The index written beside a sealed segment (`NNNNNNNNNN.idx`).
//!
//! ```text
//! header (64 bytes)
//!      0    8 magic           "ANNALIDX"
//!      8    2 format_version  u16, 1
//!     10    2 header_len      u16, 64
//!     12    4 reserved        0
//!     16    8 segment number  u64
//!     24    8 base_position   u64
//!     32    8 event_count     u64 (N)
//!     40    8 stream_count    u64 (S)
//!     48    8 segment_len     u64, byte length of the .seg file this index describes
//!     56    4 reserved        0
//!     60    4 header crc      CRC-32/ISO-HDLC of bytes 0..60
//! positions  N × u32          record offset of the event at base_position + i
//! streams    S × 40 bytes     sorted by (hash, stream id bytes):
//!      0    8 hash            xxh3-64 of the stream id bytes (seed 0)
//!      8    8 first_version   u64, the stream's first version in this segment
//!     16    4 count           u32, its events in this segment (versions are contiguous)
//!     20    4 versions_start  u32, index of its first entry in `versions`
//!     24    4 name_offset     u32, into `names`
//!     28    2 name_len        u16
//!     30    2 reserved        0
//!     32    4 last_rel        u32, position of its last event here minus base_position
//!     36    4 reserved        0
//! versions   N × u32          record offsets, per stream in version order
//! names      …                the stream ids, concatenated
//! trailer    4                CRC-32/ISO-HDLC of every preceding byte
//! ```
//!
//! A stream's versions inside one segment are contiguous: versions are
//! assigned in commit order, so every event of the stream between its first
//! and last event in the segment was committed in between, hence is there too.

use bytes::Bytes;

pub const INDEX_MAGIC: [u8; 8] = *b"ANNALIDX";
const HEADER_LEN: usize = 64;
const ENTRY_LEN: usize = 40;
const FORMAT_VERSION: u16 = 1;

/// The stable hash of a stream id used by indexes and bloom filters.
pub fn stream_hash(stream_id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(stream_id.as_bytes())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexMeta {
    pub segment_number: u64,
    pub base_position: u64,
    pub event_count: u64,
    pub stream_count: u64,
    pub segment_len: u64,
}

/// One stream's events in a segment, as given to [`encode`].
#[derive(Debug, Clone)]
pub struct StreamInput<'a> {
    pub stream_id: &'a str,
    pub first_version: u64,
    pub offsets: &'a [u32],
    pub last_rel: u32,
}

/// One stream's entry, as read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamEntry {
    pub first_version: u64,
    pub count: u32,
    versions_start: u32,
    pub last_rel: u32,
}

impl StreamEntry {
    pub fn last_version(&self) -> u64 {
        self.first_version + u64::from(self.count) - 1
    }
}

/// Encodes an index. `positions` holds the record offset of every event in
/// position order; `streams` may come in any order.
pub fn encode(
    segment_number: u64,
    base_position: u64,
    segment_len: u64,
    positions: &[u32],
    streams: &[StreamInput<'_>],
) -> Vec<u8> {
    let mut order: Vec<(u64, &StreamInput<'_>)> = streams
        .iter()
        .map(|s| (stream_hash(s.stream_id), s))
        .collect();
    order.sort_by(|a, b| (a.0, a.1.stream_id).cmp(&(b.0, b.1.stream_id)));

    let names_len: usize = streams.iter().map(|s| s.stream_id.len()).sum();
    let mut out = Vec::with_capacity(
        HEADER_LEN + positions.len() * 8 + streams.len() * ENTRY_LEN + names_len + 4,
    );
    out.extend_from_slice(&INDEX_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(HEADER_LEN as u16).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&segment_number.to_le_bytes());
    out.extend_from_slice(&base_position.to_le_bytes());
    out.extend_from_slice(&(positions.len() as u64).to_le_bytes());
    out.extend_from_slice(&(streams.len() as u64).to_le_bytes());
    out.extend_from_slice(&segment_len.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    let crc = crc32fast::hash(&out[0..60]);
    out.extend_from_slice(&crc.to_le_bytes());

    for offset in positions {
        out.extend_from_slice(&offset.to_le_bytes());
    }
    let mut versions_start = 0u32;
    let mut name_offset = 0u32;
    for (hash, s) in &order {
        out.extend_from_slice(&hash.to_le_bytes());
        out.extend_from_slice(&s.first_version.to_le_bytes());
        out.extend_from_slice(&(s.offsets.len() as u32).to_le_bytes());
        out.extend_from_slice(&versions_start.to_le_bytes());
        out.extend_from_slice(&name_offset.to_le_bytes());
        out.extend_from_slice(&(s.stream_id.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&s.last_rel.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        versions_start += s.offsets.len() as u32;
        name_offset += s.stream_id.len() as u32;
    }
    for (_, s) in &order {
        for offset in s.offsets {
            out.extend_from_slice(&offset.to_le_bytes());
        }
    }
    for (_, s) in &order {
        out.extend_from_slice(s.stream_id.as_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// A parsed, checksum-verified index over its bytes (usually a memory map).
#[derive(Debug, Clone)]
pub struct IndexView {
    bytes: Bytes,
    meta: IndexMeta,
    streams_at: usize,
    versions_at: usize,
    names_at: usize,
}

impl IndexView {
    /// Opens and fully checks an index: [`IndexView::open`], then
    /// [`IndexView::check`].
    pub fn parse(bytes: Bytes) -> Result<Self, String> {
        let view = Self::open(bytes)?;
        view.check()?;
        Ok(view)
    }

    /// Checks what a look at the header can: magic, header checksum,
    /// version and section sizes. It reads 64 bytes whatever the index
    /// holds, so opening a store does not grow with its streams; the rest
    /// is for [`IndexView::check`], before any lookup.
    pub fn open(bytes: Bytes) -> Result<Self, String> {
        if bytes.len() < HEADER_LEN + 4 {
            return Err(format!("index of {} bytes is too short", bytes.len()));
        }
        let b = &bytes[..];
        if b[0..8] != INDEX_MAGIC {
            return Err("not an index file (bad magic)".into());
        }
        if crc32fast::hash(&b[0..60]) != read_u32(b, 60) {
            return Err("index header checksum mismatch".into());
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        if version != FORMAT_VERSION {
            return Err(format!(
                "index format version {version} is not {FORMAT_VERSION}"
            ));
        }
        let end = b.len() - 4;
        let meta = IndexMeta {
            segment_number: read_u64(b, 16),
            base_position: read_u64(b, 24),
            event_count: read_u64(b, 32),
            stream_count: read_u64(b, 40),
            segment_len: read_u64(b, 48),
        };
        let n = usize::try_from(meta.event_count).map_err(|_| "event count too large")?;
        let s = usize::try_from(meta.stream_count).map_err(|_| "stream count too large")?;
        let streams_at = HEADER_LEN
            .checked_add(n.checked_mul(4).ok_or("event count too large")?)
            .ok_or("event count too large")?;
        let versions_at = streams_at
            .checked_add(s.checked_mul(ENTRY_LEN).ok_or("stream count too large")?)
            .ok_or("stream count too large")?;
        let names_at = versions_at
            .checked_add(n * 4)
            .ok_or("event count too large")?;
        if names_at > end {
            return Err("index sections overrun the file".into());
        }
        Ok(IndexView {
            bytes,
            meta,
            streams_at,
            versions_at,
            names_at,
        })
    }

    /// Verifies the whole-file checksum and that every entry points inside
    /// its sections, so that later lookups cannot panic or misread.
    pub fn check(&self) -> Result<(), String> {
        let b = &self.bytes[..];
        let end = b.len() - 4;
        if crc32fast::hash(&b[..end]) != read_u32(b, end) {
            return Err("index checksum mismatch".into());
        }
        let names_len = end - self.names_at;
        let mut versions_total = 0u64;
        for i in 0..self.meta.stream_count as usize {
            let (entry, name_offset, name_len) = self.raw_entry(i);
            if name_offset + name_len > names_len {
                return Err(format!("stream entry {i} names bytes outside the index"));
            }
            if entry.count == 0
                || u64::from(entry.versions_start) + u64::from(entry.count) > self.meta.event_count
                || u64::from(entry.last_rel) >= self.meta.event_count
            {
                return Err(format!("stream entry {i} points outside the index"));
            }
            if std::str::from_utf8(&self.bytes[self.names_at + name_offset..][..name_len]).is_err()
            {
                return Err(format!("stream entry {i} has a name that is not UTF-8"));
            }
            versions_total += u64::from(entry.count);
        }
        if versions_total != self.meta.event_count {
            return Err("stream entries do not cover every event".into());
        }
        Ok(())
    }

    /// How many streams begin in this segment (their first version is 1).
    pub fn streams_begun(&self) -> u64 {
        (0..self.meta.stream_count as usize)
            .filter(|&i| read_u64(&self.bytes, self.streams_at + i * ENTRY_LEN + 8) == 1)
            .count() as u64
    }

    /// The index file's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn meta(&self) -> IndexMeta {
        self.meta
    }

    /// Record offset of the event at `base_position + rel`.
    pub fn position_offset(&self, rel: u64) -> Option<u32> {
        (rel < self.meta.event_count).then(|| read_u32(&self.bytes, HEADER_LEN + rel as usize * 4))
    }

    /// The stream's entry, if the stream has events in this segment.
    ///
    /// Safe on an index not yet [`check`](IndexView::check)ed: whatever the
    /// bytes, it reads inside them and never panics. What it answers is
    /// then only as good as those bytes, which the caller confirms against
    /// the records the entry leads to.
    pub fn find(&self, stream_id: &str) -> Option<StreamEntry> {
        let hash = stream_hash(stream_id);
        let count = self.meta.stream_count as usize;
        // First entry whose hash is >= the one we look for.
        let (mut lo, mut hi) = (0usize, count);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if read_u64(&self.bytes, self.streams_at + mid * ENTRY_LEN) < hash {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let mut i = lo;
        while i < count && read_u64(&self.bytes, self.streams_at + i * ENTRY_LEN) == hash {
            let (entry, name_offset, name_len) = self.raw_entry(i);
            let name = self
                .bytes
                .get(self.names_at + name_offset..)
                .and_then(|names| names.get(..name_len));
            if name == Some(stream_id.as_bytes()) {
                return Some(entry);
            }
            i += 1;
        }
        None
    }

    /// Record offset of the stream's `i`-th event in this segment (`i <
    /// count`); `None` when the entry points outside the index (damage).
    pub fn version_offset(&self, entry: &StreamEntry, i: u32) -> Option<u32> {
        let at = (entry.versions_start as usize)
            .checked_add(i as usize)?
            .checked_mul(4)?
            .checked_add(self.versions_at)?;
        (at + 4 <= self.names_at).then(|| read_u32(&self.bytes, at))
    }

    /// Every stream with events in this segment.
    pub fn streams(&self) -> impl Iterator<Item = (&str, StreamEntry)> + '_ {
        (0..self.meta.stream_count as usize).map(move |i| {
            let (entry, name_offset, name_len) = self.raw_entry(i);
            let name = &self.bytes[self.names_at + name_offset..][..name_len];
            // Checked in `parse`.
            (std::str::from_utf8(name).unwrap_or_default(), entry)
        })
    }

    fn raw_entry(&self, i: usize) -> (StreamEntry, usize, usize) {
        let at = self.streams_at + i * ENTRY_LEN;
        let b = &self.bytes;
        (
            StreamEntry {
                first_version: read_u64(b, at + 8),
                count: read_u32(b, at + 16),
                versions_start: read_u32(b, at + 20),
                last_rel: read_u32(b, at + 32),
            },
            read_u32(b, at + 24) as usize,
            u16::from_le_bytes([b[at + 28], b[at + 29]]) as usize,
        )
    }
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        #[test]
        fn lookups_find_every_stream(assign in proptest::collection::vec(0usize..20, 1..300)) {
            // Event i belongs to stream assign[i]; offsets are made-up but distinct.
            let names: Vec<String> = (0..20).map(|i| format!("stream-{i}")).collect();
            let positions: Vec<u32> = (0..assign.len() as u32).map(|i| 64 + i * 100).collect();
            let mut per_stream: BTreeMap<usize, (Vec<u32>, u32)> = BTreeMap::new();
            for (i, s) in assign.iter().enumerate() {
                let e = per_stream.entry(*s).or_default();
                e.0.push(positions[i]);
                e.1 = i as u32;
            }
            let inputs: Vec<StreamInput<'_>> = per_stream.iter().map(|(s, (offsets, last))| StreamInput {
                stream_id: &names[*s], first_version: 10 + *s as u64, offsets, last_rel: *last,
            }).collect();
            let bytes = encode(7, 1000, 99_999, &positions, &inputs);
            let view = IndexView::parse(Bytes::from(bytes)).map_err(TestCaseError::fail)?;
            prop_assert_eq!(view.meta().event_count, assign.len() as u64);
            for (i, offset) in positions.iter().enumerate() {
                prop_assert_eq!(view.position_offset(i as u64), Some(*offset));
            }
            prop_assert_eq!(view.position_offset(assign.len() as u64), None);
            for (s, name) in names.iter().enumerate() {
                match (view.find(name), per_stream.get(&s)) {
                    (Some(entry), Some((offsets, last))) => {
                        prop_assert_eq!(entry.first_version, 10 + s as u64);
                        prop_assert_eq!(entry.count as usize, offsets.len());
                        prop_assert_eq!(entry.last_rel, *last);
                        for (i, o) in offsets.iter().enumerate() {
                            prop_assert_eq!(view.version_offset(&entry, i as u32), Some(*o));
                        }
                    }
                    (None, None) => {}
                    (got, want) => prop_assert!(false, "stream {}: {:?} vs {:?}", name, got, want),
                }
            }
            prop_assert_eq!(view.streams().count(), per_stream.len());
        }

        #[test]
        fn flipped_index_bytes_are_detected(at in any::<usize>(), bit in 0u8..8) {
            let positions = [64u32, 200, 300];
            let offsets = [64u32, 200, 300];
            let bytes = encode(1, 1, 400, &positions, &[StreamInput { stream_id: "a", first_version: 1, offsets: &offsets, last_rel: 2 }]);
            let mut bytes = bytes;
            let at = at % bytes.len();
            bytes[at] ^= 1 << bit;
            prop_assert!(IndexView::parse(Bytes::from(bytes)).is_err());
        }
    }
}
