//! The subject index (`keys/subjects.idx`): what recovery of the key log
//! decided about every subject named in the log's first slots, so that
//! opening reads only the slots after them (see `personal::keys`).
//!
//! It is a cache of the key log, never the only copy of anything: it names
//! record slots, and every lookup reads the record back from the log and
//! checks its checksum and its full subject hash. A missing, stale or
//! damaged index is rebuilt from the log. The file is written under a
//! temporary name and renamed into place whole.
//!
//! Header (64 bytes):
//!
//! ```text
//! offset size field
//!      0    8 magic           "ANNALKYI"
//!      8    2 format_version  u16, currently 1
//!     10    2 reserved        0
//!     12    4 last_slot_crc   CRC-32 of the 80 bytes of slot covered-1
//!     16    8 covered         u64, the log slots it covers: 0..covered
//!     24    8 last_batch      u64, the highest batch number among them
//!     32    8 floor           u64, the highest floor among them
//!     40    8 entries         u64, the number of entries
//!     48    4 meta_len        u32, bytes of the meta section
//!     52    4 meta_crc        CRC-32 of the meta section
//!     56    4 last_batch_len  u32, how many of the covered slots, counting back
//!                             from the last, its highest batch spans
//!     60    4 crc             CRC-32 of bytes 0..60
//! ```
//!
//! Meta section (at offset 64, `meta_len` bytes): the spare slots no
//! assignment among the covered slots names (u32 count, then u64 slots);
//! damaged slots (u32 count, then per slot: u64 slot, u16 length, that many
//! bytes of UTF-8 saying why); damaged subjects (u32 count, then per
//! subject: 32-byte hash, u16 length, UTF-8 reason).
//!
//! Entries, from the first multiple of 4096 after the meta section, in
//! 4096-byte blocks: up to 511 entries (u64 each: the first four bytes of
//! the subject's hash as a little-endian u32, shifted left 32, plus the
//! slot of the record that names the subject), sorted; then u32 the number
//! of entries in the block; then u32 CRC-32 of the block's first 4092
//! bytes. Sorted entries spread evenly over the blocks, so a lookup guesses
//! the block from the hash and checks one or two; a block's checksum is
//! checked the first time it is read.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

pub const HEADER_LEN: usize = 64;
pub const BLOCK_LEN: usize = 4096;
pub const BLOCK_ENTRIES: usize = 511;
pub const FORMAT_VERSION: u16 = 1;
pub const MAGIC: [u8; 8] = *b"ANNALKYI";

/// An index entry: a subject-hash fragment and a slot.
pub fn entry(fragment: u32, slot: u32) -> u64 {
    (u64::from(fragment) << 32) | u64::from(slot)
}

pub fn fragment_of(entry: u64) -> u32 {
    (entry >> 32) as u32
}

pub fn slot_of(entry: u64) -> u64 {
    entry & u64::from(u32::MAX)
}

/// What the index says beside its entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub covered: u64,
    pub last_slot_crc: u32,
    pub last_batch: u64,
    /// The slots of `last_batch` among the covered ones (a crash's torn
    /// batch after them is told apart from it by this).
    pub last_batch_len: u32,
    pub floor: u64,
    pub free_spares: Vec<u64>,
    pub damaged_slots: Vec<(u64, String)>,
    pub damaged_subjects: Vec<([u8; 32], String)>,
}

/// The file's bytes for a summary and entries sorted ascending.
pub fn encode(summary: &Summary, entries: &[u64]) -> Vec<u8> {
    let mut meta = Vec::new();
    meta.extend_from_slice(&(summary.free_spares.len() as u32).to_le_bytes());
    for slot in &summary.free_spares {
        meta.extend_from_slice(&slot.to_le_bytes());
    }
    meta.extend_from_slice(&(summary.damaged_slots.len() as u32).to_le_bytes());
    for (slot, why) in &summary.damaged_slots {
        meta.extend_from_slice(&slot.to_le_bytes());
        put_text(&mut meta, why);
    }
    meta.extend_from_slice(&(summary.damaged_subjects.len() as u32).to_le_bytes());
    for (hash, why) in &summary.damaged_subjects {
        meta.extend_from_slice(hash);
        put_text(&mut meta, why);
    }
    let mut out = vec![0u8; HEADER_LEN];
    out[0..8].copy_from_slice(&MAGIC);
    out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[12..16].copy_from_slice(&summary.last_slot_crc.to_le_bytes());
    out[16..24].copy_from_slice(&summary.covered.to_le_bytes());
    out[24..32].copy_from_slice(&summary.last_batch.to_le_bytes());
    out[32..40].copy_from_slice(&summary.floor.to_le_bytes());
    out[40..48].copy_from_slice(&(entries.len() as u64).to_le_bytes());
    out[48..52].copy_from_slice(&(meta.len() as u32).to_le_bytes());
    out[52..56].copy_from_slice(&crc32fast::hash(&meta).to_le_bytes());
    out[56..60].copy_from_slice(&summary.last_batch_len.to_le_bytes());
    let crc = crc32fast::hash(&out[0..60]);
    out[60..64].copy_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&meta);
    out.resize(blocks_start(meta.len()), 0);
    for chunk in entries.chunks(BLOCK_ENTRIES) {
        let mut block = [0u8; BLOCK_LEN];
        for (i, e) in chunk.iter().enumerate() {
            block[i * 8..i * 8 + 8].copy_from_slice(&e.to_le_bytes());
        }
        block[BLOCK_LEN - 8..BLOCK_LEN - 4].copy_from_slice(&(chunk.len() as u32).to_le_bytes());
        let crc = crc32fast::hash(&block[..BLOCK_LEN - 4]);
        block[BLOCK_LEN - 4..].copy_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&block);
    }
    out
}

/// Reasons are cut to what a u16 length holds, at a character boundary.
fn put_text(out: &mut Vec<u8>, text: &str) {
    let mut end = text.len().min(usize::from(u16::MAX));
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_le_bytes());
    out.extend_from_slice(&text.as_bytes()[..end]);
}

fn blocks_start(meta_len: usize) -> usize {
    (HEADER_LEN + meta_len).div_ceil(BLOCK_LEN) * BLOCK_LEN
}

/// An index file as read: its summary, and its entries, whose blocks are
/// checked as they are first read.
pub struct SubjectIndex {
    bytes: Bytes,
    blocks_start: usize,
    blocks: usize,
    entries: u64,
    /// One bit per block: its checksum was found right.
    checked: Vec<AtomicU64>,
}

impl std::fmt::Debug for SubjectIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubjectIndex")
            .field("entries", &self.entries)
            .finish_non_exhaustive()
    }
}

/// Reads the header and the meta section (not the entries); the error says
/// what is wrong.
pub fn decode(bytes: Bytes) -> Result<(Summary, SubjectIndex), String> {
    let header = bytes
        .get(..HEADER_LEN)
        .ok_or_else(|| format!("the file is {} bytes, shorter than its header", bytes.len()))?;
    let u32_at = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&header[at..at + 8]);
        u64::from_le_bytes(b)
    };
    if crc32fast::hash(&header[0..60]) != u32_at(60) {
        return Err("the header fails its checksum".into());
    }
    if header[0..8] != MAGIC {
        return Err("the header has the wrong magic".into());
    }
    let version = u16::from_le_bytes([header[8], header[9]]);
    if version != FORMAT_VERSION {
        return Err(format!(
            "format version {version}; this build reads version {FORMAT_VERSION}"
        ));
    }
    let meta_len = u32_at(48) as usize;
    let meta = bytes
        .get(HEADER_LEN..HEADER_LEN + meta_len)
        .ok_or("the file ends inside its meta section")?;
    if crc32fast::hash(meta) != u32_at(52) {
        return Err("the meta section fails its checksum".into());
    }
    let entries = u64_at(40);
    let blocks = usize::try_from(entries.div_ceil(BLOCK_ENTRIES as u64))
        .map_err(|_| "too many entries".to_owned())?;
    let start = blocks_start(meta_len);
    let expected = blocks
        .checked_mul(BLOCK_LEN)
        .and_then(|b| b.checked_add(start))
        .ok_or("too many entries")?;
    if bytes.len() != expected {
        return Err(format!(
            "the file is {} bytes; {entries} entries make it {expected}",
            bytes.len()
        ));
    }
    let mut summary = Summary {
        covered: u64_at(16),
        last_slot_crc: u32_at(12),
        last_batch: u64_at(24),
        last_batch_len: u32_at(56),
        floor: u64_at(32),
        ..Summary::default()
    };
    let mut meta = Meta(meta);
    for _ in 0..meta.u32()? {
        summary.free_spares.push(meta.u64()?);
    }
    for _ in 0..meta.u32()? {
        let slot = meta.u64()?;
        summary.damaged_slots.push((slot, meta.text()?));
    }
    for _ in 0..meta.u32()? {
        let hash: [u8; 32] = meta.take(32)?.try_into().map_err(|_| "short hash")?;
        summary.damaged_subjects.push((hash, meta.text()?));
    }
    if !meta.0.is_empty() {
        return Err("the meta section has bytes past its lists".into());
    }
    let index = SubjectIndex {
        bytes,
        blocks_start: start,
        blocks,
        entries,
        checked: (0..blocks.div_ceil(64))
            .map(|_| AtomicU64::new(0))
            .collect(),
    };
    Ok((summary, index))
}

/// Reads the meta section's lists.
struct Meta<'a>(&'a [u8]);

impl<'a> Meta<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("the meta section ends inside a list".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    fn text(&mut self) -> Result<String, String> {
        let b = self.take(2)?;
        let len = usize::from(u16::from_le_bytes([b[0], b[1]]));
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| "a reason is not UTF-8".into())
    }
}

impl SubjectIndex {
    pub fn len(&self) -> u64 {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Where the file's blocks start (for messages naming an offset).
    fn block_offset(&self, block: usize) -> usize {
        self.blocks_start + block * BLOCK_LEN
    }

    /// The entries of block `b`, its checksum checked on first read.
    fn block(&self, b: usize) -> Result<&[u8], String> {
        let at = self.block_offset(b);
        let raw = self
            .bytes
            .get(at..at + BLOCK_LEN)
            .ok_or_else(|| format!("block {b} is past the end of the file"))?;
        let (word, bit) = (b / 64, 1u64 << (b % 64));
        if self.checked[word].load(Ordering::Relaxed) & bit == 0 {
            let stored = u32::from_le_bytes([raw[4092], raw[4093], raw[4094], raw[4095]]);
            if crc32fast::hash(&raw[..BLOCK_LEN - 4]) != stored {
                return Err(format!("the block at offset {at} fails its checksum"));
            }
            self.checked[word].fetch_or(bit, Ordering::Relaxed);
        }
        let count = u32::from_le_bytes([raw[4088], raw[4089], raw[4090], raw[4091]]) as usize;
        let expected = if b + 1 == self.blocks {
            (self.entries - (b as u64) * BLOCK_ENTRIES as u64) as usize
        } else {
            BLOCK_ENTRIES
        };
        if count != expected {
            return Err(format!(
                "the block at offset {at} holds {count} entries, not {expected}"
            ));
        }
        Ok(&raw[..count * 8])
    }

    fn entries_of(block: &[u8]) -> impl DoubleEndedIterator<Item = u64> + '_ {
        block.chunks_exact(8).map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            u64::from_le_bytes(b)
        })
    }

    /// The slots of every entry with this fragment, or why the blocks that
    /// would hold them cannot be read.
    pub fn slots(&self, fragment: u32) -> Result<Vec<u64>, String> {
        if self.blocks == 0 {
            return Ok(Vec::new());
        }
        let first = |b: &[u8]| Self::entries_of(b).next().map_or(0, fragment_of);
        let last = |b: &[u8]| Self::entries_of(b).next_back().map_or(0, fragment_of);
        // Sorted entries of evenly spread hashes: the guess is off by a few
        // blocks at most.
        let mut b = ((u64::from(fragment) * self.blocks as u64) >> 32) as usize;
        let (mut went_left, mut went_right) = (false, false);
        loop {
            let block = self.block(b)?;
            if fragment < first(block) {
                if went_right || b == 0 {
                    return Ok(Vec::new());
                }
                went_left = true;
                b -= 1;
            } else if fragment > last(block) {
                if went_left || b + 1 == self.blocks {
                    return Ok(Vec::new());
                }
                went_right = true;
                b += 1;
            } else {
                break;
            }
        }
        // Entries with one fragment may run over into the blocks beside.
        let mut from = b;
        while from > 0 && first(self.block(from)?) == fragment {
            if last(self.block(from - 1)?) != fragment {
                break;
            }
            from -= 1;
        }
        let mut slots = Vec::new();
        for at in from..self.blocks {
            let block = self.block(at)?;
            if first(block) > fragment {
                break;
            }
            slots.extend(
                Self::entries_of(block)
                    .filter(|e| fragment_of(*e) == fragment)
                    .map(slot_of),
            );
            if last(block) > fragment {
                break;
            }
        }
        Ok(slots)
    }

    /// Every entry, in order, every block checked; the error names the
    /// first block that fails.
    pub fn all(&self) -> Result<Vec<u64>, String> {
        let mut out = Vec::with_capacity(usize::try_from(self.entries).unwrap_or(0));
        for b in 0..self.blocks {
            out.extend(Self::entries_of(self.block(b)?));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn summary() -> Summary {
        Summary {
            covered: 12,
            last_slot_crc: 7,
            last_batch: 4,
            last_batch_len: 2,
            floor: 99,
            free_spares: vec![3, 5],
            damaged_slots: vec![(2, "fails its checksum".into())],
            damaged_subjects: vec![([9; 32], "two keys ∅".into())],
        }
    }

    proptest! {
        /// Every entry is found by its fragment, and no fragment finds an
        /// entry of another, however fragments crowd or run over blocks.
        #[test]
        fn every_entry_is_found_by_its_fragment(
            mut entries in proptest::collection::vec((0u32..64, any::<u32>()), 0..3000),
            spread in any::<bool>(),
            probes in proptest::collection::vec(0u32..64, 1..20),
        ) {
            // Few distinct fragments crowd blocks; spread ones cover the range.
            let widen = |f: u32| if spread { f.wrapping_mul(0x0400_0001) } else { f };
            let mut packed: Vec<u64> = entries.drain(..).map(|(f, s)| entry(widen(f), s)).collect();
            packed.sort_unstable();
            packed.dedup();
            let bytes = encode(&summary(), &packed);
            let (read, index) = decode(Bytes::from(bytes)).map_err(TestCaseError::fail)?;
            prop_assert_eq!(read, summary());
            prop_assert_eq!(index.all().map_err(TestCaseError::fail)?, packed.clone());
            for f in probes.into_iter().map(widen).chain(packed.iter().map(|e| fragment_of(*e))) {
                let mut want: Vec<u64> = packed.iter().filter(|e| fragment_of(**e) == f).map(|e| slot_of(*e)).collect();
                let mut got = index.slots(f).map_err(TestCaseError::fail)?;
                want.sort_unstable();
                got.sort_unstable();
                prop_assert_eq!(got, want, "fragment {}", f);
            }
        }

        /// A flipped bit anywhere is caught: by the header or meta checksum
        /// at decode, or by a block's checksum when the block is read.
        #[test]
        fn a_flipped_bit_is_caught(at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let packed: Vec<u64> = (0..1200u32).map(|i| entry(i.wrapping_mul(3_579_545), i)).collect();
            let mut sorted = packed.clone();
            sorted.sort_unstable();
            let mut bytes = encode(&summary(), &sorted);
            let meta_len = u32::from_le_bytes([bytes[48], bytes[49], bytes[50], bytes[51]]) as usize;
            let at = at.index(bytes.len());
            bytes[at] ^= 1 << bit;
            let in_padding = at >= HEADER_LEN + meta_len && at < BLOCK_LEN;
            match decode(Bytes::from(bytes)) {
                Err(_) => {}
                Ok((read, index)) => {
                    prop_assert!(read == summary() || in_padding);
                    prop_assert!(in_padding || index.all().is_err());
                }
            }
        }
    }

    #[test]
    fn an_empty_index_finds_nothing() {
        let bytes = encode(&Summary::default(), &[]);
        assert_eq!(bytes.len(), BLOCK_LEN);
        let (_, index) = decode(Bytes::from(bytes)).unwrap();
        assert!(index.is_empty());
        assert_eq!(index.slots(5).unwrap(), Vec::<u64>::new());
    }

    #[test]
    fn a_cut_file_is_refused() {
        let bytes = encode(&summary(), &[entry(1, 2), entry(3, 4)]);
        for len in [0, 10, HEADER_LEN + 3, bytes.len() - 1] {
            assert!(decode(Bytes::from(bytes[..len].to_vec())).is_err(), "{len}");
        }
    }
}
