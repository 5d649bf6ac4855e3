//! A read-only check of a key store, for `annals verify`: what the next
//! open would find, without writing or locking anything.

use super::legacy::{Legacy, legacy_files};
use super::recovery::{record_slots, recover};
use super::*;

/// What a read-only check of a key log found (see [`check_log`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeyLogCheck {
    /// Subjects with a live key.
    pub live: u64,
    /// Subjects whose key was destroyed.
    pub erased: u64,
    /// Spare keys no assignment names.
    pub spares: u64,
    /// Damage, by file offset: keys that may be lost.
    pub damage: Vec<(u64, String)>,
    /// What the next open repairs by itself, losing nothing, by file
    /// offset.
    pub repairs: Vec<(u64, String)>,
}

/// Reads the key log in `dir` without writing or locking anything and says
/// what it holds, as [`KeyStore::open`] would see it; `Ok(None)` if there is
/// no key log. An error if it cannot be read or is not a key log.
pub fn check_log(dir: &Path) -> Result<Option<KeyLogCheck>> {
    let path = dir.join(LOG_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        // Before the key log: one file per subject, if any.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return check_legacy_files(dir),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    keylog::decode_header(&bytes)
        .map_err(|why| Error::KeyStore(format!("{}: {why}", path.display())))?;
    let slots: Arc<dyn Records> = Arc::new(record_slots(&bytes));
    drop(bytes);
    let recovered = recover(slots.clone(), None);
    let index_damage = check_index(dir, &recovered, slots);
    let mut check = KeyLogCheck {
        spares: recovered.free_spares.len() as u64,
        ..KeyLogCheck::default()
    };
    for entry in recovered.subjects.values() {
        match entry {
            Entry::Key { .. } => check.live += 1,
            Entry::Erased => check.erased += 1,
            // Its record is also in `damage`, which says where.
            Entry::Damaged(_) => {}
        }
    }
    check.damage = recovered
        .damage
        .into_iter()
        .map(|(slot, why)| (keylog::offset_of(slot), why))
        .chain(index_damage)
        .collect();
    check.repairs = recovered
        .rewrites
        .into_iter()
        .map(|(slot, record)| {
            let what = match record.kind {
                Kind::Void => "a torn record of the last batch (never acknowledged) is cleared",
                _ => "an interrupted erasure is finished",
            };
            (keylog::offset_of(slot), what.to_owned())
        })
        .collect();
    Ok(Some(check))
}

/// Whether the subject index, if there is one that fits the log, says what
/// the whole log says: the next open trusts it. Damage to report, at offset
/// 0 (it is not the key log's).
fn check_index(
    dir: &Path,
    whole: &super::recovery::Recovered,
    slots: Arc<dyn Records>,
) -> Vec<(u64, String)> {
    let path = dir.join(INDEX_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => return vec![(0, format!("{} cannot be read: {e}", path.display()))],
    };
    // One that does not fit is set aside at open, and rewritten.
    let Ok(base) = super::index::base_of(bytes::Bytes::from(bytes), slots.as_ref()) else {
        return Vec::new();
    };
    let indexed = recover(slots, Some(base));
    super::index::disagreements(whole, &indexed)
        .into_iter()
        .map(|why| {
            (
                0,
                format!(
                    "the subject index {} disagrees with the key log ({why}); remove it and the next open rebuilds it",
                    path.display()
                ),
            )
        })
        .collect()
}

/// [`check_log`] for a key store of the one-file-per-subject format (which
/// the next open migrates into a key log); `Ok(None)` if there is none.
pub(super) fn check_legacy_files(dir: &Path) -> Result<Option<KeyLogCheck>> {
    let Some((found, _)) = legacy_files(&crate::log::fs::RealFs, dir)? else {
        return Ok(None);
    };
    if found.is_empty() {
        return Ok(None);
    }
    let mut check = KeyLogCheck::default();
    for (path, _, legacy) in found {
        match legacy {
            Ok(Legacy::Erased) => check.erased += 1,
            Ok(_) => check.live += 1,
            Err(why) => check
                .damage
                .push((0, format!("{} is damaged: {why}", path.display()))),
        }
    }
    check.repairs.push((
        0,
        "key files of the one-file-per-subject format are migrated into a key log".into(),
    ));
    Ok(Some(check))
}
