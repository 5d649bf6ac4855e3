//! The bloom filter of the streams in a sealed segment (`NNNNNNNNNN.bloom`).
//!
//! ```text
//! offset size field
//!      0    8 magic           "ANNALBLM"
//!      8    2 format_version  u16, 1
//!     10    2 header_len      u16, 40
//!     12    4 hashes          u32, k
//!     16    8 bits            u64, m (a multiple of 64)
//!     24    8 segment number  u64, the segment whose streams it holds
//!     32    4 items           u32, streams inserted (the index's stream count)
//!     36    4 header crc      CRC-32/ISO-HDLC of bytes 0..36
//!     40  m/8 bit array       u64 words, little-endian; bit j is bit (j % 64) of word j / 64
//!    end    4 crc             CRC-32/ISO-HDLC of every preceding byte
//! ```
//!
//! Bit positions for a stream id: `(h1 + i * h2) mod m` for `i in 0..k`, where
//! `h1` and `h2` are the low and high 64 bits of xxh3-128 (seed 0) of the
//! stream id bytes, with `h2` forced odd (Kirsch–Mitzenmacher double hashing,
//! wrapping arithmetic). A lookup may answer "maybe" for a stream that is not
//! there (a wasted index probe), never "no" for one that is.

use bytes::Bytes;

pub const BLOOM_MAGIC: [u8; 8] = *b"ANNALBLM";
const HEADER_LEN: usize = 40;
const FORMAT_VERSION: u16 = 1;

/// A filter being filled, before it is written (or read as a filter).
#[derive(Debug, Clone)]
pub struct BloomBuilder {
    array: Vec<u8>,
    hashes: u32,
    items: u32,
}

impl BloomBuilder {
    /// A filter sized for `items` entries at `bits_per_item` bits each
    /// (10 bits give about 1% false positives).
    pub fn with_capacity(items: usize, bits_per_item: u32) -> Self {
        let bits = (items.max(1) as u64 * u64::from(bits_per_item.max(1))).max(64);
        let words = bits.div_ceil(64) as usize;
        // k = ln 2 × bits per item minimises false positives.
        let hashes = ((f64::from(bits_per_item.max(1)) * std::f64::consts::LN_2).round() as u32)
            .clamp(1, 16);
        Self {
            array: vec![0; words * 8],
            hashes,
            items: 0,
        }
    }

    pub fn insert(&mut self, stream_id: &str) {
        let m = self.array.len() as u64 * 8;
        let (h1, h2) = hash_pair(stream_id);
        for i in 0..u64::from(self.hashes) {
            let bit = h1.wrapping_add(i.wrapping_mul(h2)) % m;
            self.array[(bit / 8) as usize] |= 1 << (bit % 8);
        }
        self.items = self.items.saturating_add(1);
    }

    pub fn finish(self) -> BloomFilter {
        BloomFilter {
            array: Bytes::from(self.array),
            hashes: self.hashes,
            items: self.items,
        }
    }
}

/// A filter to query. Read from a file it is a view of the file's mapped
/// bytes, not a copy: the page cache holds it, not the heap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BloomFilter {
    /// The bit array: bit j is bit j % 8 of byte j / 8 (the same bits as
    /// the file's little-endian u64 words).
    array: Bytes,
    hashes: u32,
    items: u32,
}

impl BloomFilter {
    /// Number of insertions.
    pub fn items(&self) -> u32 {
        self.items
    }

    pub fn may_contain(&self, stream_id: &str) -> bool {
        let m = self.bits();
        let (h1, h2) = hash_pair(stream_id);
        (0..u64::from(self.hashes)).all(|i| {
            let bit = h1.wrapping_add(i.wrapping_mul(h2)) % m;
            self.array[(bit / 8) as usize] & (1 << (bit % 8)) != 0
        })
    }

    fn bits(&self) -> u64 {
        self.array.len() as u64 * 8
    }

    pub fn encode(&self, segment_number: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.array.len() + 4);
        out.extend_from_slice(&BLOOM_MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        out.extend_from_slice(&self.hashes.to_le_bytes());
        out.extend_from_slice(&self.bits().to_le_bytes());
        out.extend_from_slice(&segment_number.to_le_bytes());
        out.extend_from_slice(&self.items.to_le_bytes());
        let crc = crc32fast::hash(&out[0..36]);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&self.array);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes a filter and returns it with the segment number it was
    /// written for. The filter shares `b`'s bytes.
    pub fn decode(b: Bytes) -> Result<(Self, u64), String> {
        if b.len() < HEADER_LEN + 4 {
            return Err(format!("bloom filter of {} bytes is too short", b.len()));
        }
        if b[0..8] != BLOOM_MAGIC {
            return Err("not a bloom filter file (bad magic)".into());
        }
        let crc_at = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        if crc32fast::hash(&b[0..36]) != crc_at(36) {
            return Err("bloom filter header checksum mismatch".into());
        }
        let end = b.len() - 4;
        if crc32fast::hash(&b[..end]) != crc_at(end) {
            return Err("bloom filter checksum mismatch".into());
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        if version != FORMAT_VERSION {
            return Err(format!(
                "bloom format version {version} is not {FORMAT_VERSION}"
            ));
        }
        let hashes = crc_at(12);
        let mut bits_bytes = [0u8; 8];
        bits_bytes.copy_from_slice(&b[16..24]);
        let bits = u64::from_le_bytes(bits_bytes);
        bits_bytes.copy_from_slice(&b[24..32]);
        let segment_number = u64::from_le_bytes(bits_bytes);
        let items = crc_at(32);
        if hashes == 0 || hashes > 64 || bits == 0 || bits % 64 != 0 {
            return Err(format!(
                "bloom filter has impossible parameters k={hashes} m={bits}"
            ));
        }
        if (end - HEADER_LEN) as u64 != bits / 8 {
            return Err("bloom filter size does not match its header".into());
        }
        Ok((
            Self {
                array: b.slice(HEADER_LEN..end),
                hashes,
                items,
            },
            segment_number,
        ))
    }
}

fn hash_pair(stream_id: &str) -> (u64, u64) {
    let h = xxhash_rust::xxh3::xxh3_128(stream_id.as_bytes());
    (h as u64, ((h >> 64) as u64) | 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let mut f = BloomBuilder::with_capacity(10_000, 10);
        for i in 0..10_000 {
            f.insert(&format!("order-{i}"));
        }
        let f = f.finish();
        for i in 0..10_000 {
            assert!(f.may_contain(&format!("order-{i}")));
        }
        let false_positives = (0..10_000)
            .filter(|i| f.may_contain(&format!("customer-{i}")))
            .count();
        // 10 bits per item gives about 1%; allow generous slack.
        assert!(false_positives < 300, "{false_positives} false positives");
    }

    #[test]
    fn bit_j_is_bit_j_mod_64_of_little_endian_word_j_div_64() {
        let mut f = BloomBuilder::with_capacity(50, 10);
        for i in 0..50 {
            f.insert(&format!("s-{i}"));
        }
        let f = f.finish();
        let bytes = f.encode(1);
        let words: Vec<u64> = bytes[HEADER_LEN..bytes.len() - 4]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect();
        let m = words.len() as u64 * 64;
        for i in 0..50 {
            let (h1, h2) = hash_pair(&format!("s-{i}"));
            for k in 0..u64::from(f.hashes) {
                let bit = h1.wrapping_add(k.wrapping_mul(h2)) % m;
                assert_ne!(words[(bit / 64) as usize] & (1 << (bit % 64)), 0);
            }
        }
    }

    #[test]
    fn hash_is_stable() {
        // Persisted filters depend on these exact values never changing.
        assert_eq!(
            crate::format::index::stream_hash("customer-1"),
            xxhash_rust::xxh3::xxh3_64(b"customer-1")
        );
        let (h1, _) = hash_pair("");
        assert_eq!(h1, xxhash_rust::xxh3::xxh3_128(b"") as u64);
    }

    proptest! {
        #[test]
        fn filters_round_trip(items in proptest::collection::vec("[a-z0-9-]{1,20}", 0..100), bits in 1u32..20) {
            let mut f = BloomBuilder::with_capacity(items.len(), bits);
            for i in &items { f.insert(i); }
            let f = f.finish();
            let (decoded, segment) = BloomFilter::decode(Bytes::from(f.encode(42))).map_err(TestCaseError::fail)?;
            prop_assert_eq!(segment, 42);
            prop_assert_eq!(&decoded, &f);
            for i in &items { prop_assert!(decoded.may_contain(i)); }
        }

        #[test]
        fn flipped_bytes_are_detected(at in any::<usize>(), bit in 0u8..8) {
            let mut f = BloomBuilder::with_capacity(10, 10);
            f.insert("a");
            let mut bytes = f.finish().encode(1);
            let at = at % bytes.len();
            bytes[at] ^= 1 << bit;
            prop_assert!(BloomFilter::decode(Bytes::from(bytes)).is_err());
        }
    }
}
