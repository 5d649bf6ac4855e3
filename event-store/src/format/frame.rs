//! Record framing, shared by segment and snapshot files.
//!
//! Every record is a frame (all integers little-endian):
//!
//! ```text
//! offset size field
//!      0    4 body_len  number of body bytes that follow the 12-byte header
//!      4    4 len_crc   CRC-32/ISO-HDLC of bytes 0..4 (the length alone)
//!      8    4 crc       CRC-32/ISO-HDLC of bytes 0..8 followed by the body
//!     12    n body
//! ```
//!
//! The checksum is the one `crc32fast` computes: CRC-32/ISO-HDLC (the zlib and
//! Ethernet CRC, polynomial 0x04C11DB7 reflected), not CRC-32C.
//!
//! `len_crc` exists so recovery can tell a torn tail from damage: a crash
//! mid-write leaves a *prefix* of the frame, so either the header is cut short
//! or the body runs past the end of the file. A complete header whose length
//! fails its own checksum, or a complete frame whose `crc` fails, cannot come
//! from a torn append and is reported as corruption.

/// Bytes of the frame header.
pub const FRAME_HEADER_LEN: usize = 12;

/// The largest body a frame may declare. Larger lengths are treated as damage.
pub const BODY_LEN_MAX: usize = 1 << 30;

/// Appends one frame to `buf`, with the body written by `write_body`.
pub fn append_frame(buf: &mut Vec<u8>, write_body: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
    write_body(buf);
    let body_len = (buf.len() - start - FRAME_HEADER_LEN) as u32;
    buf[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
    let len_crc = crc32fast::hash(&body_len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&len_crc.to_le_bytes());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&buf[start..start + 8]);
    hasher.update(&buf[start + FRAME_HEADER_LEN..]);
    let crc = hasher.finalize();
    buf[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

/// What lies at an offset of a file's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole frame whose checksums match.
    Valid {
        body: &'a [u8],
        /// Header plus body: the distance to the next frame.
        frame_len: usize,
    },
    /// The bytes end before the frame does: what a crash mid-append leaves.
    Truncated,
    /// Every byte from here to the end is zero: space a filesystem extended
    /// but never wrote. Treated like a torn tail.
    ZeroTail,
    /// A whole header whose length fails `len_crc`: the following frames
    /// cannot be found by length.
    BadLength,
    /// A whole frame whose `crc` does not match its bytes.
    BadChecksum { frame_len: usize },
}

/// Reads the frame starting at `offset` of `bytes` (`offset < bytes.len()`).
pub fn read_frame(bytes: &[u8], offset: usize) -> Frame<'_> {
    let rest = bytes.get(offset..).unwrap_or_default();
    if rest.len() < FRAME_HEADER_LEN {
        return if is_zero(rest) {
            Frame::ZeroTail
        } else {
            Frame::Truncated
        };
    }
    let len_bytes = [rest[0], rest[1], rest[2], rest[3]];
    let body_len = u32::from_le_bytes(len_bytes) as usize;
    let len_crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
    if crc32fast::hash(&len_bytes) != len_crc || body_len > BODY_LEN_MAX {
        return if is_zero(rest) {
            Frame::ZeroTail
        } else {
            Frame::BadLength
        };
    }
    let frame_len = FRAME_HEADER_LEN + body_len;
    if rest.len() < frame_len {
        return Frame::Truncated;
    }
    let crc = u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]]);
    let body = &rest[FRAME_HEADER_LEN..frame_len];
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&rest[..8]);
    hasher.update(body);
    if hasher.finalize() != crc {
        return Frame::BadChecksum { frame_len };
    }
    Frame::Valid { body, frame_len }
}

/// Finds the next offset after `from` where a valid frame starts, for
/// resynchronising a scan after a damaged length. Only frames that pass both
/// checksums count, so a false match needs two 32-bit collisions.
pub fn resync(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while at + FRAME_HEADER_LEN <= bytes.len() {
        let len_bytes = [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
        let len_crc =
            u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
        if crc32fast::hash(&len_bytes) == len_crc
            && let Frame::Valid { .. } = read_frame(bytes, at)
        {
            return Some(at);
        }
        at += 1;
    }
    None
}

fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| *b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame_of(body: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        append_frame(&mut buf, |b| b.extend_from_slice(body));
        buf
    }

    #[test]
    fn crc_is_iso_hdlc() {
        // The check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn empty_body_round_trips() {
        let buf = frame_of(b"");
        assert_eq!(
            read_frame(&buf, 0),
            Frame::Valid {
                body: b"",
                frame_len: FRAME_HEADER_LEN
            }
        );
    }

    #[test]
    fn zero_tail_is_not_corruption() {
        let mut buf = frame_of(b"hello");
        let end = buf.len();
        buf.extend_from_slice(&[0u8; 40]);
        assert_eq!(read_frame(&buf, end), Frame::ZeroTail);
        assert_eq!(read_frame(&buf[..end + 5], end), Frame::ZeroTail);
    }

    proptest! {
        #[test]
        fn frames_round_trip(bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..8)) {
            let mut buf = Vec::new();
            for body in &bodies {
                append_frame(&mut buf, |b| b.extend_from_slice(body));
            }
            let mut at = 0;
            for body in &bodies {
                match read_frame(&buf, at) {
                    Frame::Valid { body: got, frame_len } => {
                        prop_assert_eq!(got, &body[..]);
                        at += frame_len;
                    }
                    other => prop_assert!(false, "expected a valid frame, got {:?}", other),
                }
            }
            prop_assert_eq!(at, buf.len());
        }

        #[test]
        fn every_prefix_is_truncated(body in proptest::collection::vec(1u8..=255, 1..200), cut in 1usize..10_000) {
            let buf = frame_of(&body);
            let cut = cut % buf.len();
            prop_assume!(cut > 0);
            prop_assert_eq!(read_frame(&buf[..cut], 0), Frame::Truncated);
        }

        #[test]
        fn any_flipped_byte_is_detected(body in proptest::collection::vec(any::<u8>(), 0..200), at in any::<usize>(), bit in 0u8..8) {
            let mut buf = frame_of(&body);
            let at = at % buf.len();
            buf[at] ^= 1 << bit;
            match read_frame(&buf, 0) {
                Frame::BadLength | Frame::BadChecksum { .. } => {}
                other => prop_assert!(false, "flip at {} not detected: {:?}", at, other),
            }
        }

        /// From any offset, `resync` lands on the first offset at or after
        /// it where a valid frame starts: the frame there is valid, and no
        /// offset before it (from where the search began) holds one.
        #[test]
        fn resync_finds_the_next_frame(
            garbage in proptest::collection::vec(any::<u8>(), 0..64),
            bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..4),
            from in any::<proptest::sample::Index>(),
        ) {
            let mut buf = garbage.clone();
            let start = buf.len();
            for body in &bodies {
                append_frame(&mut buf, |b| b.extend_from_slice(body));
            }
            // Anywhere: in the garbage, at a frame, inside one.
            let from = from.index(buf.len());
            let first_valid = (from..buf.len()).find(|at| matches!(read_frame(&buf, *at), Frame::Valid { .. }));
            // Random garbage holding a valid frame would take two 32-bit
            // checksum collisions: from inside it, the first frame is next.
            prop_assert!(from > start || first_valid == Some(start), "the frame at {} is not found from {}", start, from);
            let found = resync(&buf, from);
            prop_assert_eq!(found, first_valid, "from {}", from);
        }
    }
}
