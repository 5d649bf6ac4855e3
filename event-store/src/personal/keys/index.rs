//! Reading and writing the subject index (`keys/subjects.idx`, see the
//! module docs of `keys` and [`crate::format::keyindex`]).

use super::recovery::{Base, Recovered};
use super::*;
use crate::format::keyindex::{self, Summary};
use crate::log::mmap::map_whole_file;

/// The subject index in `dir` if there is one and it fits the log; one
/// that does not is logged and set aside (the log is then read whole).
pub(super) fn load_index(fs: &dyn Fs, dir: &Path, records: &dyn Records) -> Option<Base> {
    let path = dir.join(INDEX_FILE);
    let file = match fs.open(&path, false) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(file = %path.display(), "key store: the subject index cannot be opened ({e}); reading the key log whole");
            return None;
        }
    };
    let fitting = map_whole_file(file.std_file())
        .map_err(|e| format!("mapping it: {e}"))
        .and_then(|bytes| base_of(bytes, records));
    match fitting {
        Ok(base) => Some(base),
        Err(why) => {
            tracing::warn!(file = %path.display(), "key store: the subject index is set aside ({why}); reading the key log whole");
            None
        }
    }
}

/// The index in `bytes`, if it fits the log.
pub(super) fn base_of(
    bytes: bytes::Bytes,
    records: &dyn Records,
) -> std::result::Result<Base, String> {
    let (summary, index) = keyindex::decode(bytes)?;
    fits(&summary, records)?;
    Ok(Base {
        summary,
        index: Arc::new(index),
    })
}

/// Where a recovery through the index decides otherwise than one reading
/// the whole log (damage messages aside): `verify` reports it, as the
/// next open would trust the index. Empty when they agree.
pub(super) fn disagreements(whole: &Recovered, indexed: &Recovered) -> Vec<String> {
    let mut out = Vec::new();
    let subjects = match (whole.subjects.subjects(), indexed.subjects.subjects()) {
        (Ok(a), Ok(b)) => a.into_iter().chain(b).collect::<HashSet<_>>(),
        (_, Err(why)) | (Err(why), _) => return vec![why],
    };
    let mut differing = 0usize;
    for hash in &subjects {
        let same = match (whole.subjects.get(hash), indexed.subjects.get(hash)) {
            (None, None) | (Some(Entry::Erased), Some(Entry::Erased)) => true,
            // Damage done to the covered slots after the index was written
            // leaves a subject unknown to one and damaged to the other.
            (None | Some(Entry::Damaged(_)), Some(Entry::Damaged(_)))
            | (Some(Entry::Damaged(_)), None) => true,
            (
                Some(Entry::Key {
                    key: a,
                    slot: s,
                    spare: p,
                }),
                Some(Entry::Key {
                    key: b,
                    slot: t,
                    spare: q,
                }),
            ) => a == b && s == t && p == q,
            _ => false,
        };
        if !same {
            differing += 1;
        }
    }
    if differing > 0 {
        out.push(format!("{differing} subjects read otherwise through it"));
    }
    let slots = |spares: &[(u64, [u8; 32])]| {
        let mut slots: Vec<u64> = spares.iter().map(|(slot, _)| *slot).collect();
        slots.sort_unstable();
        slots
    };
    if slots(&whole.free_spares) != slots(&indexed.free_spares) {
        out.push("it counts other spare keys as free".into());
    }
    // Only after the covered slots: damage done to them after the index was
    // written is found by lookups, not by opening.
    let damaged = |r: &Recovered| {
        let mut slots: Vec<u64> = r
            .damage
            .iter()
            .map(|(slot, _)| *slot)
            .filter(|slot| *slot >= indexed.from)
            .collect();
        slots.sort_unstable();
        slots.dedup();
        slots
    };
    if damaged(whole) != damaged(indexed) {
        out.push("it names other damaged slots".into());
    }
    let rewrites = |r: &Recovered| {
        let mut all: Vec<(u64, [u8; RECORD_LEN])> = r
            .rewrites
            .iter()
            .map(|(slot, rec)| (*slot, rec.encode()))
            .collect();
        all.sort_unstable();
        all
    };
    if rewrites(whole) != rewrites(indexed) {
        out.push("it repairs other slots".into());
    }
    if (whole.floor, whole.next_slot, whole.next_batch)
        != (indexed.floor, indexed.next_slot, indexed.next_batch)
    {
        out.push("its floor or end differs".into());
    }
    out
}

/// Whether the index was written for this log: the log holds every slot
/// it covers, and the last of them reads as it did.
fn fits(summary: &Summary, records: &dyn Records) -> std::result::Result<(), String> {
    let last = summary.covered.checked_sub(1).ok_or("it covers no slot")?;
    let raw = records.slot(last).ok_or_else(|| {
        format!(
            "it covers {} slots; the key log holds fewer",
            summary.covered
        )
    })?;
    if crc32fast::hash(&raw) != summary.last_slot_crc {
        return Err(format!(
            "the last slot it covers (offset {}) no longer reads as it did: the key log was changed or replaced",
            keylog::offset_of(last)
        ));
    }
    Ok(())
}

/// Writes the index of what recovery found; it covers every slot
/// recovery read. Refused while recovery's repairs are not written (the
/// index would describe a log that is not on disk yet).
pub(super) fn write_index(
    fs: &dyn Fs,
    dir: &Path,
    recovered: &Recovered,
    records: &dyn Records,
) -> std::result::Result<(), String> {
    if !recovered.rewrites.is_empty() {
        return Err("the key log has repairs to write first".into());
    }
    let covered = recovered.next_slot;
    if covered == 0 {
        return Err("the key log is empty".into());
    }
    if covered > u64::from(u32::MAX) + 1 {
        return Err("the key log is past 2^32 records".into());
    }
    let last = records
        .slot(covered - 1)
        .ok_or("the key log is shorter than what was read")?;
    let (entries, damaged_subjects) = recovered.subjects.index_contents()?;
    let summary = Summary {
        covered,
        last_slot_crc: crc32fast::hash(&last),
        last_batch: recovered.next_batch - 1,
        last_batch_len: u32::try_from(covered.saturating_sub(recovered.final_start))
            .map_err(|_| "the last batch is longer than a batch can be")?,
        floor: recovered.floor,
        free_spares: recovered
            .free_spares
            .iter()
            .map(|(slot, _)| *slot)
            .collect(),
        damaged_slots: recovered.damage.clone(),
        damaged_subjects,
    };
    let bytes = keyindex::encode(&summary, &entries);
    write_file_durably(fs, dir, INDEX_FILE, &bytes).map_err(|e| e.to_string())?;
    tracing::info!(
        dir = %dir.display(),
        subjects = entries.len(),
        covered,
        "key store: subject index written"
    );
    Ok(())
}
