//! The 64-byte header at the start of segment (`.seg`) and snapshot (`.snap`) files.
//!
//! ```text
//! offset size field
//!      0    8 magic           "ANNALSEG" or "ANNALSNP"
//!      8    2 format_version  u16, currently 1
//!     10    2 header_len      u16, 64
//!     12    4 reserved        0
//!     16    8 number          u64, the file's sequence number (also in its name)
//!     24    8 base_position   u64, position of the segment's first event (0 in snapshot files)
//!     32    8 created         i64, microseconds since the Unix epoch
//!     40   20 reserved        0
//!     60    4 crc             CRC-32/ISO-HDLC of bytes 0..60
//! ```

pub const HEADER_LEN: usize = 64;
pub const FORMAT_VERSION: u16 = 1;
pub const SEGMENT_MAGIC: [u8; 8] = *b"ANNALSEG";
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"ANNALSNP";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    pub magic: [u8; 8],
    pub format_version: u16,
    pub number: u64,
    pub base_position: u64,
    pub created: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer than 64 bytes, or all zero: a file whose creation did not complete.
    Incomplete,
    /// Written by a newer version of the format.
    NewerFormat(u16),
    /// Anything else: wrong magic, checksum mismatch, impossible fields.
    Damaged(String),
}

impl FileHeader {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&self.magic);
        b[8..10].copy_from_slice(&self.format_version.to_le_bytes());
        b[10..12].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        b[16..24].copy_from_slice(&self.number.to_le_bytes());
        b[24..32].copy_from_slice(&self.base_position.to_le_bytes());
        b[32..40].copy_from_slice(&self.created.to_le_bytes());
        let crc = crc32fast::hash(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(bytes: &[u8], magic: [u8; 8]) -> Result<Self, HeaderError> {
        if bytes.len() < HEADER_LEN {
            return Err(HeaderError::Incomplete);
        }
        let b = &bytes[..HEADER_LEN];
        if b.iter().all(|x| *x == 0) {
            return Err(HeaderError::Incomplete);
        }
        let crc = u32::from_le_bytes([b[60], b[61], b[62], b[63]]);
        if crc32fast::hash(&b[0..60]) != crc {
            return Err(HeaderError::Damaged("header checksum mismatch".into()));
        }
        if b[0..8] != magic {
            return Err(HeaderError::Damaged(format!(
                "magic {:?} is not {:?}",
                String::from_utf8_lossy(&b[0..8]),
                String::from_utf8_lossy(&magic)
            )));
        }
        let format_version = u16::from_le_bytes([b[8], b[9]]);
        if format_version > FORMAT_VERSION {
            return Err(HeaderError::NewerFormat(format_version));
        }
        let header_len = u16::from_le_bytes([b[10], b[11]]);
        if header_len as usize != HEADER_LEN {
            return Err(HeaderError::Damaged(format!(
                "header length {header_len}, expected {HEADER_LEN}"
            )));
        }
        let u64_at = |at: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(x)
        };
        Ok(FileHeader {
            magic,
            format_version,
            number: u64_at(16),
            base_position: u64_at(24),
            created: u64_at(32) as i64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn headers_round_trip(number in any::<u64>(), base in any::<u64>(), created in any::<i64>()) {
            let h = FileHeader { magic: SEGMENT_MAGIC, format_version: FORMAT_VERSION, number, base_position: base, created };
            prop_assert_eq!(FileHeader::decode(&h.encode(), SEGMENT_MAGIC), Ok(h));
        }

        #[test]
        fn flipped_header_bytes_are_detected(at in 0usize..HEADER_LEN, bit in 0u8..8) {
            let h = FileHeader { magic: SEGMENT_MAGIC, format_version: FORMAT_VERSION, number: 3, base_position: 7, created: 1 };
            let mut b = h.encode();
            b[at] ^= 1 << bit;
            prop_assert!(FileHeader::decode(&b, SEGMENT_MAGIC).is_err());
        }
    }

    #[test]
    fn newer_format_is_named() {
        let h = FileHeader {
            magic: SEGMENT_MAGIC,
            format_version: FORMAT_VERSION + 1,
            number: 1,
            base_position: 1,
            created: 0,
        };
        assert_eq!(
            FileHeader::decode(&h.encode(), SEGMENT_MAGIC),
            Err(HeaderError::NewerFormat(FORMAT_VERSION + 1))
        );
    }

    #[test]
    fn wrong_magic_is_damage() {
        let h = FileHeader {
            magic: SNAPSHOT_MAGIC,
            format_version: FORMAT_VERSION,
            number: 1,
            base_position: 0,
            created: 0,
        };
        assert!(matches!(
            FileHeader::decode(&h.encode(), SEGMENT_MAGIC),
            Err(HeaderError::Damaged(_))
        ));
    }
}
