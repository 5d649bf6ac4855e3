//! Scanning a segment's bytes record by record: recovery of the active
//! segment, rebuilding a lost index, and `verify` all use this one pass.
//!
//! The recovery policy, in one place:
//! - A frame cut short by the end of the file, or an all-zero tail, is a
//!   **torn tail**: the batch it belongs to was never acknowledged (its fsync
//!   had not returned), so the whole batch is dropped and the file truncated
//!   back to the end of the last whole batch. A file that ends between two
//!   records of a batch is torn the same way.
//! - A whole frame that fails its checksum, a damaged length, a body that does
//!   not decode, or a position out of sequence is **damage**: it is reported
//!   with its offset and never served. Scanning resynchronises on the next
//!   valid frame so that everything intact after it is still found. Nothing
//!   in a batch that contains damage is treated as torn.

use crate::format::event::EventRecord;
use crate::format::frame::{Frame, read_frame, resync};
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
    let mut scan = SegmentScan {
        next_position: base_position,
        valid_end: HEADER_LEN as u64,
        ..SegmentScan::default()
    };
    let mut off = HEADER_LEN;
    let mut pending: Vec<ScannedEvent> = Vec::new();
    let mut batch_start = off;
    let mut batch_damaged = false;
    // Set after damage: the next intact record tells how many positions were lost.
    let mut awaiting_resync: Option<usize> = None;

    while off < bytes.len() {
        match read_frame(bytes, off) {
            Frame::Valid { body, frame_len } => match EventRecord::decode(body) {
                Ok(record) => {
                    if let Some(damage_index) = awaiting_resync.take()
                        && record.position > scan.next_position
                    {
                        {
                            scan.damage[damage_index].lost_positions =
                                Some((scan.next_position, record.position));
                            scan.next_position = record.position;
                        }
                    }
                    if record.position != scan.next_position {
                        scan.damage.push(Damage {
                            offset: off as u64,
                            detail: format!(
                                "event at position {} where position {} was expected",
                                record.position, scan.next_position
                            ),
                            lost_positions: None,
                        });
                        batch_damaged = true;
                        off += frame_len;
                        continue;
                    }
                    pending.push(ScannedEvent {
                        offset: off as u32,
                        position: record.position,
                        version: record.version,
                        stream_id: record.stream_id.to_owned(),
                    });
                    scan.next_position += 1;
                    off += frame_len;
                    if record.is_end_of_batch() {
                        scan.events.append(&mut pending);
                        scan.valid_end = off as u64;
                        batch_start = off;
                        batch_damaged = false;
                    }
                }
                Err(detail) => {
                    awaiting_resync = Some(scan.damage.len());
                    scan.damage.push(Damage {
                        offset: off as u64,
                        detail: format!("record does not decode: {detail}"),
                        lost_positions: None,
                    });
                    batch_damaged = true;
                    off += frame_len;
                }
            },
            Frame::BadChecksum { frame_len } => {
                awaiting_resync = Some(scan.damage.len());
                scan.damage.push(Damage {
                    offset: off as u64,
                    detail: "record checksum mismatch".into(),
                    lost_positions: None,
                });
                batch_damaged = true;
                off += frame_len;
            }
            Frame::BadLength => {
                awaiting_resync = Some(scan.damage.len());
                let next = resync(bytes, off + 1);
                scan.damage.push(Damage {
                    offset: off as u64,
                    detail: match next {
                        Some(n) => {
                            format!("record length field damaged; next intact record at offset {n}")
                        }
                        None => "record length field damaged; no intact record follows".into(),
                    },
                    lost_positions: None,
                });
                batch_damaged = true;
                match next {
                    Some(n) => off = n,
                    None => {
                        off = bytes.len();
                        break;
                    }
                }
            }
            Frame::Truncated | Frame::ZeroTail => {
                if batch_damaged {
                    scan.damage.push(Damage {
                        offset: off as u64,
                        detail: "segment ends inside a damaged batch".into(),
                        lost_positions: None,
                    });
                    off = bytes.len();
                } else {
                    scan.torn = Some(TornTail {
                        offset: batch_start as u64,
                        bytes: (bytes.len() - batch_start) as u64,
                        records: pending.len(),
                    });
                    pending.clear();
                }
                break;
            }
        }
    }

    if !pending.is_empty() || batch_damaged {
        if batch_damaged {
            // Keep what is intact; the damage is already reported.
            scan.events.append(&mut pending);
            scan.valid_end = off as u64;
        } else if scan.torn.is_none() {
            // The file ends between two records of a batch.
            scan.torn = Some(TornTail {
                offset: batch_start as u64,
                bytes: (bytes.len() - batch_start) as u64,
                records: pending.len(),
            });
            scan.next_position -= pending.len() as u64;
            pending.clear();
        }
    } else if let Some(torn) = &scan.torn {
        scan.next_position -= torn.records as u64;
    }
    if scan.torn.is_none() && !scan.damage.is_empty() {
        scan.valid_end = scan.valid_end.max(off as u64);
    }
    scan
}

#[cfg(test)]
mod tests {
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
    fn every_flipped_byte_is_damage_not_a_torn_tail() {
        let (buf, ends) = segment_with_batches(1, &[2, 3]);
        for at in HEADER_LEN..buf.len() {
            let mut bad = buf.clone();
            bad[at] ^= 0x10;
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
