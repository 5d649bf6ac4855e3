//! The key log (`keys/keys.log`): every data subject's key for
//! crypto-shredding, as fixed-size records after a file header.
//!
//! File header (64 bytes):
//!
//! ```text
//! offset size field
//!      0    8 magic           "ANNALKYL"
//!      8    2 format_version  u16, currently 1
//!     10    2 record_len      u16, 80
//!     12   48 reserved        0
//!     60    4 crc             CRC-32/ISO-HDLC of bytes 0..60
//! ```
//!
//! Record (80 bytes, the n-th at offset 64 + 80·n):
//!
//! ```text
//! offset size field
//!      0    1 kind            1 key, 2 erasure, 3 destroyed key, 4 void,
//!                             5 spare key, 6 assignment, 7 floor
//!      1    1 reserved        0
//!      2    2 index           u16, the record's place in its batch (0 = first)
//!      4    4 crc             CRC-32/ISO-HDLC of bytes 0..4 followed by bytes 8..80
//!      8    8 batch           u64, the group commit that appended it (first = 1)
//!     16   32 subject         SHA-256 of the subject id (the stream id); zero
//!                             for spare keys and floors
//!     48   32 key             the key (kinds 1 and 5); for an assignment the
//!                             spare's slot, for a floor a log position (u64
//!                             in bytes 48..56, the rest zero); zero otherwise
//! ```
//!
//! - *key*: the subject's XChaCha20-Poly1305 key.
//! - *spare key*: a key made (and synced) ahead of need, for no subject yet,
//!   so that a new subject's first event waits for no key-log fsync.
//! - *assignment*: the spare key in slot n belongs to the subject. Written
//!   after the spare was handed out, without anyone waiting for it: the
//!   events sealed under a spare name its slot, so an assignment a crash
//!   lost is found again in the event log (see `keys`).
//! - *floor*: every event at or below this log position that was sealed
//!   under a spare key has its assignment in the log before this record.
//!   Recovery reads the event log only above the highest floor.
//! - *erasure*: the subject was forgotten. Appended (and synced) before its
//!   key record is overwritten, so that a crash in between, or a torn
//!   overwrite, is finished at the next open rather than read as damage.
//! - *destroyed key*: a key record overwritten in place by its erasure; it
//!   keeps its kind-independent fields (index, batch, subject), so the
//!   overwrite changes bytes 0..8 and 48..80 only.
//! - *void*: a slot recovery found torn (never acknowledged) and cleared.
//!
//! An all-zero record is a slot not written yet (a new file has a chunk of
//! them; past it the file grows by appends, and a record cut short at the
//! end of the file is ignored, as torn). The subject id itself is not stored:
//! it is in the log already, and the key log holds no personal data.

pub const HEADER_LEN: usize = 64;
pub const RECORD_LEN: usize = 80;
pub const FORMAT_VERSION: u16 = 1;
pub const MAGIC: [u8; 8] = *b"ANNALKYL";

const KIND_KEY: u8 = 1;
const KIND_ERASURE: u8 = 2;
const KIND_DESTROYED: u8 = 3;
const KIND_VOID: u8 = 4;
const KIND_SPARE: u8 = 5;
const KIND_ASSIGN: u8 = 6;
const KIND_FLOOR: u8 = 7;

pub fn encode_header() -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[0..8].copy_from_slice(&MAGIC);
    b[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    b[10..12].copy_from_slice(&(RECORD_LEN as u16).to_le_bytes());
    let crc = crc32fast::hash(&b[0..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Checks a key log header; the error says what is wrong with it.
pub fn decode_header(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!(
            "the file is {} bytes, shorter than its header",
            bytes.len()
        ));
    }
    let b = &bytes[..HEADER_LEN];
    let crc = u32::from_le_bytes([b[60], b[61], b[62], b[63]]);
    if crc32fast::hash(&b[0..60]) != crc {
        return Err("the header fails its checksum".into());
    }
    if b[0..8] != MAGIC {
        return Err("the header has the wrong magic".into());
    }
    let version = u16::from_le_bytes([b[8], b[9]]);
    if version != FORMAT_VERSION {
        return Err(format!(
            "format version {version}; this build reads version {FORMAT_VERSION}"
        ));
    }
    let record_len = u16::from_le_bytes([b[10], b[11]]);
    if usize::from(record_len) != RECORD_LEN {
        return Err(format!("record length {record_len} is not {RECORD_LEN}"));
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Key([u8; 32]),
    Erasure,
    Destroyed,
    Void,
    Spare([u8; 32]),
    /// The slot of the spare key assigned to the record's subject.
    Assign(u64),
    /// A log position (see the module docs).
    Floor(u64),
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Never print key material.
            Kind::Key(_) => f.write_str("Key(..)"),
            Kind::Erasure => f.write_str("Erasure"),
            Kind::Destroyed => f.write_str("Destroyed"),
            Kind::Void => f.write_str("Void"),
            Kind::Spare(_) => f.write_str("Spare(..)"),
            Kind::Assign(slot) => write!(f, "Assign({slot})"),
            Kind::Floor(position) => write!(f, "Floor({position})"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub kind: Kind,
    pub index: u16,
    pub batch: u64,
    pub subject: [u8; 32],
}

/// What a record slot holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// Never written.
    Empty,
    Record(Record),
    /// Not all zero, and not a record: torn or damaged (recovery decides).
    Bad(String),
}

fn crc(b: &[u8; RECORD_LEN]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&b[0..4]);
    hasher.update(&b[8..RECORD_LEN]);
    hasher.finalize()
}

impl Record {
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut b = [0u8; RECORD_LEN];
        b[0] = match self.kind {
            Kind::Key(_) => KIND_KEY,
            Kind::Erasure => KIND_ERASURE,
            Kind::Destroyed => KIND_DESTROYED,
            Kind::Void => KIND_VOID,
            Kind::Spare(_) => KIND_SPARE,
            Kind::Assign(_) => KIND_ASSIGN,
            Kind::Floor(_) => KIND_FLOOR,
        };
        b[2..4].copy_from_slice(&self.index.to_le_bytes());
        b[8..16].copy_from_slice(&self.batch.to_le_bytes());
        b[16..48].copy_from_slice(&self.subject);
        match &self.kind {
            Kind::Key(key) | Kind::Spare(key) => b[48..80].copy_from_slice(key),
            Kind::Assign(n) | Kind::Floor(n) => b[48..56].copy_from_slice(&n.to_le_bytes()),
            Kind::Erasure | Kind::Destroyed | Kind::Void => {}
        }
        let crc = crc(&b);
        b[4..8].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// The subject hash of a slot that failed to decode, as it stands: the
    /// overwrite of a key by its erasure never changes these bytes, so a
    /// torn overwrite still names its subject (recovery checks that an
    /// erasure of that subject exists before trusting it).
    pub fn subject_of_bad(b: &[u8; RECORD_LEN]) -> [u8; 32] {
        let mut subject = [0u8; 32];
        subject.copy_from_slice(&b[16..48]);
        subject
    }

    /// The batch number and index of a slot that failed to decode, as they
    /// stand (see [`Record::subject_of_bad`]).
    pub fn place_of_bad(b: &[u8; RECORD_LEN]) -> (u64, u16) {
        let mut batch = [0u8; 8];
        batch.copy_from_slice(&b[8..16]);
        (u64::from_le_bytes(batch), u16::from_le_bytes([b[2], b[3]]))
    }
}

pub fn decode(b: &[u8; RECORD_LEN]) -> Slot {
    if b.iter().all(|x| *x == 0) {
        return Slot::Empty;
    }
    let stored = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    if crc(b) != stored {
        return Slot::Bad("the record fails its checksum".into());
    }
    let mut subject = [0u8; 32];
    subject.copy_from_slice(&b[16..48]);
    let mut key = [0u8; 32];
    key.copy_from_slice(&b[48..80]);
    let mut number = [0u8; 8];
    number.copy_from_slice(&b[48..56]);
    let number = u64::from_le_bytes(number);
    let kind = match b[0] {
        KIND_KEY => Kind::Key(key),
        KIND_ERASURE => Kind::Erasure,
        KIND_DESTROYED => Kind::Destroyed,
        KIND_VOID => Kind::Void,
        KIND_SPARE => Kind::Spare(key),
        KIND_ASSIGN => Kind::Assign(number),
        KIND_FLOOR => Kind::Floor(number),
        other => return Slot::Bad(format!("unknown record kind {other}")),
    };
    let unused = match kind {
        Kind::Key(_) | Kind::Spare(_) => &b[80..],
        Kind::Assign(_) | Kind::Floor(_) => &b[56..],
        Kind::Erasure | Kind::Destroyed | Kind::Void => &b[48..],
    };
    if unused.iter().any(|x| *x != 0) {
        return Slot::Bad("a record carries bytes its kind does not use".into());
    }
    let mut batch = [0u8; 8];
    batch.copy_from_slice(&b[8..16]);
    Slot::Record(Record {
        kind,
        index: u16::from_le_bytes([b[2], b[3]]),
        batch: u64::from_le_bytes(batch),
        subject,
    })
}

/// Byte offset of record slot `n`.
pub fn offset_of(n: u64) -> u64 {
    HEADER_LEN as u64 + n * RECORD_LEN as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            any::<[u8; 32]>().prop_map(Kind::Key),
            Just(Kind::Erasure),
            Just(Kind::Destroyed),
            Just(Kind::Void),
            any::<[u8; 32]>().prop_map(Kind::Spare),
            any::<u64>().prop_map(Kind::Assign),
            any::<u64>().prop_map(Kind::Floor),
        ]
    }

    proptest! {
        #[test]
        fn records_round_trip(kind in kind(), index in any::<u16>(), batch in any::<u64>(), subject in any::<[u8; 32]>()) {
            let r = Record { kind, index, batch, subject };
            prop_assert_eq!(decode(&r.encode()), Slot::Record(r));
        }

        #[test]
        fn a_flipped_bit_is_never_a_record(kind in kind(), batch in 1u64.., at in 0usize..RECORD_LEN, bit in 0u8..8) {
            let r = Record { kind, index: 3, batch, subject: [7; 32] };
            let mut b = r.encode();
            b[at] ^= 1 << bit;
            prop_assert!(matches!(decode(&b), Slot::Bad(_)));
        }

        #[test]
        fn a_torn_record_is_never_a_record(kind in kind(), batch in 1u64.., cut in 1usize..RECORD_LEN, zeros_first in any::<bool>()) {
            // A write cut short leaves zeros (the preallocated space) on one
            // side of the cut.
            let r = Record { kind, index: 0, batch, subject: [9; 32] };
            let whole = r.encode();
            let mut b = whole;
            if zeros_first { b[..cut].fill(0) } else { b[cut..].fill(0) }
            // Cutting off zeros the record has anyway loses nothing.
            prop_assume!(b != whole);
            prop_assert!(!matches!(decode(&b), Slot::Record(_)));
        }

        #[test]
        fn destroying_changes_neither_place_nor_subject(key in any::<[u8; 32]>(), spare in any::<bool>(), index in any::<u16>(), batch in any::<u64>(), subject in any::<[u8; 32]>()) {
            let kind = if spare { Kind::Spare(key) } else { Kind::Key(key) };
            let key_record = Record { kind, index, batch, subject }.encode();
            let destroyed = Record { kind: Kind::Destroyed, index, batch, subject }.encode();
            prop_assert_eq!(&key_record[1..4], &destroyed[1..4]);
            prop_assert_eq!(&key_record[8..48], &destroyed[8..48]);
            prop_assert_eq!(&destroyed[48..80], &[0u8; 32][..]);
        }
    }

    #[test]
    fn zeros_are_an_empty_slot_and_the_header_checks_out() {
        assert_eq!(decode(&[0; RECORD_LEN]), Slot::Empty);
        assert_eq!(decode_header(&encode_header()), Ok(()));
        let mut h = encode_header();
        h[9] ^= 1;
        assert!(decode_header(&h).is_err());
    }
}
