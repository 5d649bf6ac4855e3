//! The subject table: what the key log says about each subject, in a few
//! bytes per subject.
//!
//! A subject is kept as the slot of the record that names it (its key, its
//! erasure or destroyed key, or the assignment of its spare) and a fragment
//! of its hash. Subjects named before the slots the subject index covers
//! (`keys/subjects.idx`, written at close) are found in that mapped file;
//! those named after it, read at open, in a hash table of 8 bytes each.
//! Looking one up reads that record back from the mapped log (two for an
//! assigned spare) and checks the full hash. What was learned since open,
//! and what no intact record names (damage), is kept whole in a map beside
//! them, which is read first.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use hashbrown::HashTable;

use super::{Entry, Hash};
use crate::format::keyindex::{self, SubjectIndex};
use crate::format::keylog::{self, Kind, RECORD_LEN, Slot};
use crate::log::mmap::VolatileMap;

/// Where the table reads records back.
pub(super) trait Records: Send + Sync {
    /// The record slot `slot`, or `None` past the end.
    fn slot(&self, slot: u64) -> Option<[u8; RECORD_LEN]>;
    /// How many whole slots there are.
    fn slot_count(&self) -> u64;
}

/// The key log as mapped at open.
pub(super) struct MappedLog(pub VolatileMap);

impl Records for MappedLog {
    fn slot(&self, slot: u64) -> Option<[u8; RECORD_LEN]> {
        let offset = usize::try_from(keylog::offset_of(slot)).ok()?;
        self.0.copy(offset)
    }

    fn slot_count(&self) -> u64 {
        (self.0.mapped_len().saturating_sub(keylog::HEADER_LEN) / RECORD_LEN) as u64
    }
}

/// Slots in memory (a read-only check of a log another process may be
/// writing, and tests).
impl Records for Vec<[u8; RECORD_LEN]> {
    fn slot(&self, slot: u64) -> Option<[u8; RECORD_LEN]> {
        self.get(usize::try_from(slot).ok()?).copied()
    }

    fn slot_count(&self) -> u64 {
        self.len() as u64
    }
}

/// An entry of `opened` and of the index: the high 32 bits are a fragment
/// of the subject's hash (enough to find the bucket again when the table
/// grows), the low 32 the slot of the record that names the subject.
type Packed = u64;

fn fragment(hash: &Hash) -> u32 {
    u32::from_le_bytes([hash[0], hash[1], hash[2], hash[3]])
}

/// The table's hash of a fragment, spread over 64 bits (the table takes
/// its control bits from the top ones).
fn spread(fragment: u32) -> u64 {
    u64::from(fragment).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn hash_of(packed: Packed) -> u64 {
    spread((packed >> 32) as u32)
}

/// An index's entries, sorted, and its damaged subjects with why.
pub(super) type IndexContents = (Vec<u64>, Vec<(Hash, String)>);

pub(super) struct SubjectTable {
    records: Arc<dyn Records>,
    /// Subjects named in the slots the index covers; read last.
    index: Option<Arc<SubjectIndex>>,
    /// Subjects named in the slots after those, read at open.
    opened: HashTable<Packed>,
    /// Read first.
    changed: HashMap<Hash, Entry>,
    /// A block of the index failed its checksum on a lookup.
    index_failed: std::sync::atomic::AtomicBool,
}

impl SubjectTable {
    pub fn new(
        records: Arc<dyn Records>,
        index: Option<Arc<SubjectIndex>>,
        capacity: usize,
    ) -> Self {
        Self {
            records,
            index,
            opened: HashTable::with_capacity(capacity),
            changed: HashMap::new(),
            index_failed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether a lookup found a block of the index damaged.
    pub fn index_failed(&self) -> bool {
        self.index_failed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// What the log says about the subject.
    pub fn get(&self, hash: &Hash) -> Option<Entry> {
        if let Some(entry) = self.changed.get(hash) {
            return Some(entry.clone());
        }
        if let Some(packed) = self.find(hash) {
            return Some(self.resolve(keyindex::slot_of(packed), hash));
        }
        match self.indexed(hash)? {
            Ok(slot) => Some(self.resolve(slot, hash)),
            Err(why) => Some(Entry::Damaged(why)),
        }
    }

    pub fn contains_key(&self, hash: &Hash) -> bool {
        self.changed.contains_key(hash) || self.find(hash).is_some() || self.indexed(hash).is_some()
    }

    /// The slot of the record the index names the subject by, or why the
    /// index cannot say (a damaged block may have held the subject).
    fn indexed(&self, hash: &Hash) -> Option<Result<u64, String>> {
        let index = self.index.as_ref()?;
        match index.slots(fragment(hash)) {
            Ok(slots) => slots
                .into_iter()
                .find(|slot| names(self.records.as_ref(), *slot, hash))
                .map(Ok),
            Err(why) => {
                self.index_failed
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                Some(Err(format!(
                    "the subject index (keys/{}) cannot be read: {why}; remove the file and the next open rebuilds it from the key log",
                    super::INDEX_FILE
                )))
            }
        }
    }

    /// The slot of the key the index names for the subject (its own key
    /// record, or the spare its assignment names), unless it names an
    /// erasure: what an erasure after the indexed slots must destroy.
    pub fn indexed_key_slot(&self, hash: &Hash) -> Option<u64> {
        let slot = self.indexed(hash)?.ok()?;
        match keylog::decode(&self.records.slot(slot)?) {
            Slot::Record(r) => match r.kind {
                Kind::Key(_) => Some(slot),
                Kind::Assign(spare) => Some(spare),
                _ => None,
            },
            // Named by its bytes (`names`), whatever its checksum says.
            Slot::Bad(_) => Some(slot),
            Slot::Empty => None,
        }
    }

    /// Records what was learned after the log was read.
    pub fn insert(&mut self, hash: Hash, entry: Entry) {
        self.changed.insert(hash, entry);
    }

    pub fn extend(&mut self, entries: impl IntoIterator<Item = (Hash, Entry)>) {
        self.changed.extend(entries);
    }

    /// While the log is read: the record at `slot` now says what the log
    /// knows of the subject it names, replacing anything said before.
    pub fn insert_record(&mut self, hash: Hash, slot: u64) {
        let Ok(slot32) = u32::try_from(slot) else {
            // Beyond four billion records: kept whole.
            let entry = self.resolve(slot, &hash);
            self.changed.insert(hash, entry);
            return;
        };
        self.changed.remove(&hash);
        let packed = keyindex::entry(fragment(&hash), slot32);
        let records = self.records.clone();
        match self.opened.entry(
            spread(fragment(&hash)),
            |p| named(records.as_ref(), *p, &hash),
            |p| hash_of(*p),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut found) => *found.get_mut() = packed,
            hashbrown::hash_table::Entry::Vacant(vacant) => {
                vacant.insert(packed);
            }
        }
    }

    /// Subjects the table knows (reads every index entry's record: for
    /// tests only).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        let in_memory = self.learned();
        let indexed = self.index.as_ref().map_or(0, |index| {
            let entries = index.all().unwrap_or_default();
            let shadowed = in_memory
                .iter()
                .filter(|hash| self.indexed(hash).is_some())
                .count();
            entries.len() - shadowed
        });
        in_memory.len() + indexed
    }

    /// What the log says about every subject learned since the index was
    /// written (every subject when there is none), in no order.
    pub fn values(&self) -> impl Iterator<Item = Entry> + '_ {
        let opened = self.opened.iter().filter_map(|packed| {
            let slot = keyindex::slot_of(*packed);
            let hash = self.subject_at(slot)?;
            (!self.changed.contains_key(&hash)).then(|| self.resolve(slot, &hash))
        });
        opened.chain(self.changed.values().cloned())
    }

    /// Every subject the table knows, reading every index entry's record;
    /// an error if an index block fails its checksum.
    pub fn subjects(&self) -> Result<HashSet<Hash>, String> {
        let mut out = self.learned();
        if let Some(index) = &self.index {
            for e in index.all()? {
                out.extend(self.named_at(keyindex::slot_of(e)));
            }
        }
        Ok(out)
    }

    /// Subjects kept in memory: read at open, or learned since.
    fn learned(&self) -> HashSet<Hash> {
        let mut out: HashSet<Hash> = self.changed.keys().copied().collect();
        out.extend(
            self.opened
                .iter()
                .filter_map(|p| self.named_at(keyindex::slot_of(*p))),
        );
        out
    }

    /// What an index of this table holds: its entries sorted, and the
    /// subjects whose records cannot be trusted (with why). The entries
    /// are the index's own, less those of subjects learned since, and the
    /// ones learned since. An error says why no index can say it: an index
    /// block fails its checksum, or an entry is beyond what an index holds.
    pub fn index_contents(&self) -> Result<IndexContents, String> {
        let learned = self.learned();
        let fragments: HashSet<u32> = learned.iter().map(fragment).collect();
        let mut entries = Vec::new();
        if let Some(index) = &self.index {
            for e in index.all()? {
                let shadowed = fragments.contains(&keyindex::fragment_of(e))
                    && self
                        .named_at(keyindex::slot_of(e))
                        .is_some_and(|hash| learned.contains(&hash));
                if !shadowed {
                    entries.push(e);
                }
            }
        }
        entries.extend(self.opened.iter().copied());
        entries.sort_unstable();
        let mut damaged = Vec::new();
        for (hash, entry) in &self.changed {
            match entry {
                Entry::Damaged(why) => damaged.push((*hash, why.clone())),
                _ => return Err("a subject's record is beyond slot 2^32".into()),
            }
        }
        Ok((entries, damaged))
    }

    fn find(&self, hash: &Hash) -> Option<Packed> {
        self.opened
            .find(spread(fragment(hash)), |p| {
                named(self.records.as_ref(), *p, hash)
            })
            .copied()
    }

    /// The subject the record at `slot` names.
    fn subject_at(&self, slot: u64) -> Option<Hash> {
        match keylog::decode(&self.records.slot(slot)?) {
            Slot::Record(r) => Some(r.subject),
            _ => None,
        }
    }

    /// The subject bytes of the record at `slot`, whatever its checksum.
    fn named_at(&self, slot: u64) -> Option<Hash> {
        let raw = self.records.slot(slot)?;
        raw[16..48].try_into().ok()
    }

    /// What the record at `slot`, which named the subject when it was put
    /// in the table, says about it now.
    fn resolve(&self, slot: u64, hash: &Hash) -> Entry {
        let offset = keylog::offset_of(slot);
        let record = match self.records.slot(slot).map(|raw| keylog::decode(&raw)) {
            Some(Slot::Record(r)) if r.subject == *hash => r,
            _ => {
                return Entry::Damaged(format!(
                    "its record at offset {offset} of the key log no longer reads"
                ));
            }
        };
        match record.kind {
            Kind::Key(key) => Entry::Key {
                key,
                slot,
                spare: false,
            },
            Kind::Erasure | Kind::Destroyed => Entry::Erased,
            Kind::Assign(spare) => match self.records.slot(spare).map(|raw| keylog::decode(&raw)) {
                Some(Slot::Record(r)) => match r.kind {
                    Kind::Spare(key) => Entry::Key {
                        key,
                        slot: spare,
                        spare: true,
                    },
                    Kind::Destroyed => Entry::Erased,
                    _ => Entry::Damaged(format!(
                        "its spare key at offset {} is not a spare key",
                        keylog::offset_of(spare)
                    )),
                },
                _ => Entry::Damaged(format!(
                    "its spare key at offset {} of the key log no longer reads",
                    keylog::offset_of(spare)
                )),
            },
            Kind::Spare(_) | Kind::Void | Kind::Floor(_) => Entry::Damaged(format!(
                "its record at offset {offset} of the key log names no key"
            )),
        }
    }
}

/// Whether the packed entry's record names the subject.
fn named(records: &dyn Records, packed: Packed, hash: &Hash) -> bool {
    keyindex::fragment_of(packed) == fragment(hash)
        && names(records, keyindex::slot_of(packed), hash)
}

/// Whether the record at `slot` names the subject.
fn names(records: &dyn Records, slot: u64, hash: &Hash) -> bool {
    // The subject sits at bytes 16..48 of every record, whatever its kind;
    // a record that fails its checksum since open still names it there,
    // and `resolve` reports it as damaged.
    records
        .slot(slot)
        .is_some_and(|raw| raw[16..48] == hash[..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::keylog::Record;

    /// A subject hash whose first four bytes (the table's fragment) are
    /// `fragment`.
    fn subject(fragment: u32, rest: u8) -> Hash {
        let mut hash = [rest; 32];
        hash[..4].copy_from_slice(&fragment.to_le_bytes());
        hash
    }

    fn record(kind: Kind, subject: Hash) -> [u8; RECORD_LEN] {
        Record {
            kind,
            index: 0,
            batch: 1,
            subject,
        }
        .encode()
    }

    #[test]
    fn subjects_sharing_a_hash_fragment_are_told_apart_by_their_records() {
        let (a, b, c, d) = (subject(7, 1), subject(7, 2), subject(7, 3), subject(9, 4));
        let records: Vec<[u8; RECORD_LEN]> = vec![
            record(Kind::Key([0xa; 32]), a),
            record(Kind::Key([0xb; 32]), b),
            record(Kind::Spare([0xd; 32]), [0; 32]),
            record(Kind::Assign(2), d),
            record(Kind::Erasure, c),
        ];
        let mut table = SubjectTable::new(Arc::new(records), None, 0);
        table.insert_record(a, 0);
        table.insert_record(b, 1);
        table.insert_record(d, 3);
        table.insert_record(c, 4);
        let key = |e: Option<Entry>| match e {
            Some(Entry::Key { key, slot, spare }) => Some((key[0], slot, spare)),
            _ => None,
        };
        assert_eq!(key(table.get(&a)), Some((0xa, 0, false)));
        assert_eq!(key(table.get(&b)), Some((0xb, 1, false)));
        // An assigned spare: the key and slot are the spare's.
        assert_eq!(key(table.get(&d)), Some((0xd, 2, true)));
        assert!(matches!(table.get(&c), Some(Entry::Erased)));
        assert!(table.get(&subject(7, 5)).is_none());
        assert_eq!(table.len(), 4);

        // What is learned later reads first, and is counted once.
        table.insert(a, Entry::Erased);
        assert!(matches!(table.get(&a), Some(Entry::Erased)));
        assert_eq!(table.len(), 4);
        let erased = table
            .values()
            .filter(|e| matches!(e, Entry::Erased))
            .count();
        assert_eq!(erased, 2);
        // A record re-read during recovery replaces what was said before.
        table.insert_record(a, 0);
        assert_eq!(key(table.get(&a)), Some((0xa, 0, false)));
    }

    #[test]
    fn a_record_damaged_after_open_reads_as_damage_not_as_a_key() {
        let a = subject(1, 1);
        let mut damaged = record(Kind::Key([0xa; 32]), a);
        damaged[60] ^= 1;
        let mut table = SubjectTable::new(Arc::new(vec![damaged]), None, 1);
        table.insert_record(a, 0);
        assert!(matches!(table.get(&a), Some(Entry::Damaged(_))));
    }
}
