//! Scanning a segment's bytes record by record: recovery of the active
//! segment, rebuilding a lost index, and `verify` all use this one pass.
//!
//! The recovery policy, in one place:
//! - Zeros from the end of a whole batch to the end of the file are **free
//!   space**: the writer reserves segment space ahead of its appends (see
//!   `FsFile::allocate`), and what it has not written yet reads as zeros.
//! - A frame cut short by the end of the file, a frame whose bytes stop
//!   inside it and are zeros from there to the end of the file (a write
//!   torn inside reserved space), or zeros after part of a batch, is a
//!   **torn tail**: the batch it belongs to was never acknowledged (its
//!   fsync had not returned), so the whole batch is dropped and the file
//!   truncated back to the end of the last whole batch. A file that ends
//!   between two records of a batch is torn the same way. An intact
//!   record never ends in a zero byte (its body ends with JSON text), so
//!   damage to a whole last record is never taken for a torn one.
//! - A whole frame that fails its checksum, a damaged length, a body that does
//!   not decode, or a position out of sequence is **damage**: it is reported
//!   with its offset and never served. Scanning resynchronises on the next
//!   valid frame so that everything intact after it is still found. Nothing
//!   in a batch that contains damage is treated as torn.

use crate::format::event::EventRecord;
use crate::format::frame::{FRAME_HEADER_LEN, Frame, read_frame, resync};
use crate::format::header::HEADER_LEN;

/// One intact event found by a scan.
#[derive(Debug, Clone)]
pub struct ScannedEvent {
    pub offset: u32,
    pub position: u64,
    pub version: u64,
    pub stream_id: String,
}

/// A damaged region found by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub offset: u64,
    pub detail: String,
    /// Positions whose records are unreadable because of this damage, when a
    /// later intact record tells how many were lost: `first..next`.
    pub lost_positions: Option<(u64, u64)>,
}

/// Bytes a recovery drops from the end of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// Where the file is cut: the end of the last whole batch.
    pub offset: u64,
    /// Bytes dropped.
    pub bytes: u64,
    /// Whole records of the incomplete batch that are dropped with it.
    pub records: usize,
}

#[derive(Debug, Clone, Default)]
pub struct SegmentScan {
    /// Intact events of whole batches (and of damaged batches), in file order.
    pub events: Vec<ScannedEvent>,
    /// Offset just after the last record kept.
    pub valid_end: u64,
    pub torn: Option<TornTail>,
    pub damage: Vec<Damage>,
    /// The position the next event appended after this segment would get.
    pub next_position: u64,
}

/// Scans the records of a segment whose 64-byte header has been checked.
pub fn scan_segment(bytes: &[u8], base_position: u64) -> SegmentScan {
    let mut scanner = Scanner::new(base_position);
    while scanner.off < bytes.len() {
        match read_frame(bytes, scanner.off) {
            Frame::Valid { body, frame_len } => match EventRecord::decode(body) {
                Ok(record) => scanner.record(&record, frame_len),
                Err(detail) => {
                    scanner.damaged_frame(format!("record does not decode: {detail}"), frame_len);
                }
            },
            Frame::BadChecksum { frame_len } if !cut_inside(bytes, scanner.off, frame_len) => {
                scanner.damaged_frame("record checksum mismatch".into(), frame_len);
            }
            Frame::BadLength if !cut_inside(bytes, scanner.off, FRAME_HEADER_LEN) => {
                if !scanner.bad_length(bytes) {
                    break;
                }
            }
            Frame::ZeroTail if scanner.between_batches() => break,
            Frame::Truncated => {
                scanner.end_of_records(bytes, bytes.len());
                break;
            }
            Frame::ZeroTail | Frame::BadChecksum { .. } | Frame::BadLength => {
                scanner.end_of_records(bytes, data_end(bytes, scanner.off));
                break;
            }
        }
    }
    scanner.finish(bytes.len())
}

/// Whether the bytes from `off` on stop inside the frame's first `extent`
/// bytes and are zeros from there to the end: a write torn inside space
/// reserved ahead, which reads as zeros where it did not reach.
fn cut_inside(bytes: &[u8], off: usize, extent: usize) -> bool {
    let data_end = data_end(bytes, off);
    data_end > off && data_end < off + extent
}

/// Offset just after the last non-zero byte at or after `off` (`off` when
/// there is none).
fn data_end(bytes: &[u8], off: usize) -> usize {
    bytes
        .get(off..)
        .and_then(|rest| rest.iter().rposition(|b| *b != 0))
        .map_or(off, |i| off + i + 1)
}

/// The state of one pass over a segment's records.
struct Scanner {
    scan: SegmentScan,
    off: usize,
    /// Records of the batch being read, kept once its last record is.
    pending: Vec<ScannedEvent>,
    batch_start: usize,
    batch_damaged: bool,
    /// Set after damage: the next intact record tells how many positions
    /// were lost.
    awaiting_resync: Option<usize>,
}

impl Scanner {
    fn new(base_position: u64) -> Self {
        Self {
            scan: SegmentScan {
                next_position: base_position,
                valid_end: HEADER_LEN as u64,
                ..SegmentScan::default()
            },
            off: HEADER_LEN,
            pending: Vec::new(),
            batch_start: HEADER_LEN,
            batch_damaged: false,
            awaiting_resync: None,
        }
    }

    fn damage(&mut self, detail: String) {
        self.scan.damage.push(Damage {
            offset: self.off as u64,
            detail,
            lost_positions: None,
        });
        self.batch_damaged = true;
    }

    /// An intact record of `frame_len` bytes at `off`.
    fn record(&mut self, record: &EventRecord<'_>, frame_len: usize) {
        let scan = &mut self.scan;
        if let Some(damage_index) = self.awaiting_resync.take()
            && record.position > scan.next_position
        {
            scan.damage[damage_index].lost_positions = Some((scan.next_position, record.position));
            scan.next_position = record.position;
        }
        if record.position != scan.next_position {
            let detail = format!(
                "event at position {} where position {} was expected",
                record.position, scan.next_position
            );
            self.damage(detail);
            self.off += frame_len;
            return;
        }
        self.pending.push(ScannedEvent {
            offset: self.off as u32,
            position: record.position,
            version: record.version,
            stream_id: record.stream_id.to_owned(),
        });
        scan.next_position += 1;
        self.off += frame_len;
        if record.is_end_of_batch() {
            scan.events.append(&mut self.pending);
            scan.valid_end = self.off as u64;
            self.batch_start = self.off;
            self.batch_damaged = false;
        }
    }

    /// A record whose frame is whole but whose content is not.
    fn damaged_frame(&mut self, detail: String, frame_len: usize) {
        self.awaiting_resync = Some(self.scan.damage.len());
        self.damage(detail);
        self.off += frame_len;
    }

    /// A damaged length field: skips to the next intact record; false when
    /// none follows.
    fn bad_length(&mut self, bytes: &[u8]) -> bool {
        self.awaiting_resync = Some(self.scan.damage.len());
        let next = resync(bytes, self.off + 1);
        self.damage(match next {
            Some(n) => format!("record length field damaged; next intact record at offset {n}"),
            None => "record length field damaged; no intact record follows".into(),
        });
        match next {
            Some(n) => {
                self.off = n;
                true
            }
            None => {
                self.off = bytes.len();
                false
            }
        }
    }

    /// Whether the records read so far end with a whole batch.
    fn between_batches(&self) -> bool {
        self.pending.is_empty() && !self.batch_damaged
    }

    /// The records end inside a batch (a cut frame, or zeros after part of
    /// it): a torn append, or the end of a damaged batch. The torn bytes
    /// end at `torn_end`: the end of the file, or of the written bytes
    /// before reserved space.
    fn end_of_records(&mut self, bytes: &[u8], torn_end: usize) {
        if self.batch_damaged {
            self.scan.damage.push(Damage {
                offset: self.off as u64,
                detail: "segment ends inside a damaged batch".into(),
                lost_positions: None,
            });
            self.off = bytes.len();
        } else {
            self.scan.torn = Some(TornTail {
                offset: self.batch_start as u64,
                bytes: (torn_end - self.batch_start) as u64,
                records: self.pending.len(),
            });
            self.pending.clear();
        }
    }

    fn finish(mut self, len: usize) -> SegmentScan {
        let scan = &mut self.scan;
        if !self.pending.is_empty() || self.batch_damaged {
            if self.batch_damaged {
                // Keep what is intact; the damage is already reported.
                scan.events.append(&mut self.pending);
                scan.valid_end = self.off as u64;
            } else if scan.torn.is_none() {
                // The file ends between two records of a batch.
                scan.torn = Some(TornTail {
                    offset: self.batch_start as u64,
                    bytes: (len - self.batch_start) as u64,
                    records: self.pending.len(),
                });
                scan.next_position -= self.pending.len() as u64;
            }
        } else if let Some(torn) = &scan.torn {
            scan.next_position -= torn.records as u64;
        }
        if scan.torn.is_none() && !scan.damage.is_empty() {
            scan.valid_end = scan.valid_end.max(self.off as u64);
        }
        self.scan
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::format::event::FLAG_END_OF_BATCH;
    use crate::format::frame::append_frame;
    use crate::format::header::{FORMAT_VERSION, FileHeader, SEGMENT_MAGIC};

    /// A segment holding batches of the given sizes, one stream per batch.
    pub(crate) fn segment_with_batches(base: u64, batches: &[usize]) -> (Vec<u8>, Vec<usize>) {
        let header = FileHeader {
            magic: SEGMENT_MAGIC,
            format_version: FORMAT_VERSION,
            number: 1,
            base_position: base,
            created: 0,
        };
        let mut buf = header.encode().to_vec();
        let mut batch_ends = Vec::new();
        let mut position = base;
        for (b, size) in batches.iter().enumerate() {
            let stream = format!("s-{b}");
            for i in 0..*size {
                let record = EventRecord {
                    flags: if i + 1 == *size { FLAG_END_OF_BATCH } else { 0 },
                    schema_version: 1,
                    position,
                    version: i as u64 + 1,
                    timestamp: 0,
                    id: [b as u8; 16],
                    stream_id: &stream,
                    event_type: "t",
                    data: b"{\"x\":1}",
                    metadata: b"{}",
                };
                append_frame(&mut buf, |out| record.encode(out));
                position += 1;
            }
            batch_ends.push(buf.len());
        }
        (buf, batch_ends)
    }

    #[test]
    fn whole_segment_scans_clean() {
        let (buf, ends) = segment_with_batches(5, &[1, 3, 2]);
        let scan = scan_segment(&buf, 5);
        assert_eq!(scan.events.len(), 6);
        assert!(scan.damage.is_empty());
        assert_eq!(scan.torn, None);
        assert_eq!(scan.valid_end, *ends.last().unwrap() as u64);
        assert_eq!(scan.next_position, 11);
    }

    #[test]
    fn every_cut_inside_the_last_batch_drops_exactly_that_batch() {
        let (buf, ends) = segment_with_batches(1, &[2, 3, 4]);
        for cut in ends[1] + 1..ends[2] {
            let scan = scan_segment(&buf[..cut], 1);
            assert!(scan.damage.is_empty(), "cut at {cut}: {:?}", scan.damage);
            assert_eq!(scan.events.len(), 5, "cut at {cut}");
            assert_eq!(scan.valid_end, ends[1] as u64, "cut at {cut}");
            assert_eq!(scan.next_position, 6, "cut at {cut}");
            let torn = scan.torn.expect("torn tail");
            assert_eq!(torn.offset, ends[1] as u64);
        }
    }

    #[test]
    fn zeros_after_whole_batches_are_free_space() {
        let (mut buf, ends) = segment_with_batches(1, &[2, 3]);
        buf.resize(buf.len() + 8192, 0);
        let scan = scan_segment(&buf, 1);
        assert!(scan.damage.is_empty());
        assert_eq!(scan.torn, None);
        assert_eq!(scan.events.len(), 5);
        assert_eq!(scan.valid_end, ends[1] as u64);
        assert_eq!(scan.next_position, 6);

        let empty = &buf[..HEADER_LEN + 100];
        let empty: Vec<u8> = empty[..HEADER_LEN]
            .iter()
            .copied()
            .chain([0u8; 100])
            .collect();
        let scan = scan_segment(&empty, 1);
        assert_eq!((scan.torn, scan.events.len()), (None, 0));
        assert_eq!(scan.valid_end, HEADER_LEN as u64);
    }

    #[test]
    fn every_cut_of_the_last_batch_inside_reserved_space_drops_exactly_that_batch() {
        let (buf, ends) = segment_with_batches(1, &[2, 3, 4]);
        for cut in ends[1] + 1..ends[2] {
            // What reached the disk up to `cut`, zeros after it.
            let mut torn = buf[..cut].to_vec();
            torn.resize(buf.len() + 4096, 0);
            let scan = scan_segment(&torn, 1);
            assert!(scan.damage.is_empty(), "cut at {cut}: {:?}", scan.damage);
            assert_eq!(scan.events.len(), 5, "cut at {cut}");
            assert_eq!(scan.valid_end, ends[1] as u64, "cut at {cut}");
            assert_eq!(scan.next_position, 6, "cut at {cut}");
            let tail = scan.torn.expect("torn tail");
            assert_eq!(tail.offset, ends[1] as u64);
            assert!(
                tail.bytes <= (cut - ends[1]) as u64,
                "cut at {cut}: {tail:?}"
            );
        }
    }

    /// A write torn with a hole (a later part on disk, an earlier one not)
    /// cannot be told from damage to acknowledged records: it is reported,
    /// never dropped in silence.
    #[test]
    fn a_hole_before_written_bytes_is_damage() {
        let (buf, ends) = segment_with_batches(1, &[2, 3]);
        let mut holed = buf.clone();
        holed[ends[0] + 20..ends[0] + 40].fill(0);
        holed.resize(buf.len() + 4096, 0);
        let scan = scan_segment(&holed, 1);
        assert!(!scan.damage.is_empty());
        assert!(scan.torn.is_none());
    }

    #[test]
    fn every_flipped_byte_is_damage_not_a_torn_tail() {
        let (buf, ends) = segment_with_batches(1, &[2, 3]);
        // In a file that ends with its records, and in one with space
        // reserved after them.
        for (at, pad) in (HEADER_LEN..buf.len()).flat_map(|at| [(at, 0), (at, 4096)]) {
            let mut bad = buf.clone();
            bad[at] ^= 0x10;
            bad.resize(buf.len() + pad, 0);
            let scan = scan_segment(&bad, 1);
            assert!(!scan.damage.is_empty(), "flip at {at} not reported");
            assert!(scan.torn.is_none(), "flip at {at} taken for a torn tail");
            let first = &scan.damage[0];
            assert!(
                first.offset as usize <= at,
                "flip at {at} reported at {}",
                first.offset
            );
            assert!(scan.events.len() >= 4, "flip at {at} lost intact events");
            assert!(scan.valid_end >= ends[1] as u64 || scan.valid_end as usize >= at);
        }
    }

    #[test]
    fn damage_reports_lost_positions_when_resynchronised() {
        let (buf, ends) = segment_with_batches(1, &[1, 1, 1]);
        let mut bad = buf.clone();
        bad[ends[0] + 20] ^= 0xff; // inside the second record's body
        let scan = scan_segment(&bad, 1);
        assert_eq!(scan.damage.len(), 1);
        assert_eq!(scan.damage[0].offset, ends[0] as u64);
        assert_eq!(scan.damage[0].lost_positions, Some((2, 3)));
        assert_eq!(
            scan.events.iter().map(|e| e.position).collect::<Vec<_>>(),
            vec![1, 3]
        );
    }
}
