//! The key log on a real directory: creation, group commit, erasure that
//! leaves no key bytes on disk, torn tails, damage, interrupted erasures,
//! migration of the one-file-per-subject format, and failed writes.

use super::*;
use crate::log::fs::FaultyFs;
use proptest::prelude::*;

fn log_bytes(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join(LOG_FILE)).unwrap()
}

fn slot_bytes(dir: &Path, slot: u64) -> [u8; RECORD_LEN] {
    let bytes = log_bytes(dir);
    let at = keylog::offset_of(slot) as usize;
    let mut out = [0u8; RECORD_LEN];
    // Past the end of the file: a slot not written yet.
    if let Some(record) = bytes.get(at..at + RECORD_LEN) {
        out.copy_from_slice(record);
    }
    out
}

fn write_slot(dir: &Path, slot: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(LOG_FILE))
        .unwrap();
    file.write_all_at(bytes, keylog::offset_of(slot)).unwrap();
}

fn record_at(dir: &Path, slot: u64) -> Slot {
    keylog::decode(&slot_bytes(dir, slot))
}

/// Every file under `dir` that holds `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        if bytes.windows(needle.len()).any(|w| w == needle) {
            hits.push(path);
        }
    }
    hits
}

#[test]
fn keys_are_created_once_found_again_and_forgotten_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let keys = KeyStore::open(dir.path()).unwrap();
    assert_eq!(keys.lookup("c-1").unwrap(), None);
    assert!(matches!(keys.require("c-1"), Err(Error::KeyStore(_))));
    let key = keys.key_for_write("c-1").unwrap();
    assert_eq!(keys.key_for_write("c-1").unwrap(), key);
    // The directory is the open key store's.
    assert!(matches!(
        KeyStore::open(dir.path()),
        Err(Error::Locked { .. })
    ));
    drop(keys);
    let reopened = KeyStore::open(dir.path()).unwrap();
    assert_eq!(reopened.require("c-1").unwrap(), SubjectKey::Key(key));
    // The raw key is in the log before the erasure...
    assert_eq!(
        files_holding(dir.path(), &key),
        vec![dir.path().join(LOG_FILE)]
    );

    reopened.forget("c-1").unwrap();
    reopened.forget("c-1").unwrap();
    assert_eq!(reopened.require("c-1").unwrap(), SubjectKey::Erased);
    assert!(matches!(
        reopened.key_for_write("c-1"),
        Err(Error::KeyStore(_))
    ));
    // ...and in no file after it: the record was overwritten in place and
    // an erasure record follows it.
    assert!(files_holding(dir.path(), &key).is_empty());
    assert!(matches!(record_at(dir.path(), 0), Slot::Record(r) if r.kind == Kind::Destroyed));
    assert!(matches!(record_at(dir.path(), 1), Slot::Record(r) if r.kind == Kind::Erasure));
    drop(reopened);
    let fresh = KeyStore::open(dir.path()).unwrap();
    assert_eq!(fresh.require("c-1").unwrap(), SubjectKey::Erased);
    // A subject never seen can be forgotten too (it reads as erased).
    fresh.forget("c-2").unwrap();
    assert_eq!(fresh.require("c-2").unwrap(), SubjectKey::Erased);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creations_share_batches_and_all_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Arc::new(KeyStore::open(dir.path()).unwrap());
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let keys = keys.clone();
            tokio::spawn(async move {
                let subject = format!("c-{i}");
                // Twice at once: one key, never two.
                let (a, b) = tokio::join!(
                    keys.ensure_keys([subject.as_str()]),
                    keys.ensure_keys([subject.as_str(), "shared"])
                );
                a.unwrap();
                b.unwrap();
                (subject.clone(), keys.require(&subject).unwrap())
            })
        })
        .collect();
    let mut found = Vec::new();
    for task in tasks {
        found.push(task.await.unwrap());
    }
    let shared = keys.require("shared").unwrap();
    drop(keys);
    let reopened = KeyStore::open(dir.path()).unwrap();
    for (subject, key) in &found {
        assert_eq!(&reopened.require(subject).unwrap(), key);
    }
    assert_eq!(reopened.require("shared").unwrap(), shared);
    // 201 keys, one record each, in fewer batches than keys.
    let mut batches = HashSet::new();
    let mut count = 0;
    for slot in 0.. {
        match record_at(dir.path(), slot) {
            Slot::Record(r) => {
                count += 1;
                batches.insert(r.batch);
            }
            Slot::Empty => break,
            Slot::Bad(why) => panic!("slot {slot}: {why}"),
        }
    }
    assert_eq!(count, 201);
    assert!(batches.len() < 201, "{} batches", batches.len());
}

/// Waits until the background refill has made spares.
async fn spares_ready(keys: &KeyStore) {
    // 16,384 records and a fsync: generous, for a loaded machine.
    for _ in 0..6000 {
        if keys.spare_keys() > 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("no spare keys were made");
}

/// The slots holding records of a kind.
fn slots_of(dir: &Path, kind: impl Fn(&Kind) -> bool) -> Vec<u64> {
    (0..)
        .map_while(|slot| match record_at(dir, slot) {
            Slot::Empty => None,
            other => Some((slot, other)),
        })
        .filter_map(|(slot, s)| matches!(s, Slot::Record(r) if kind(&r.kind)).then_some(slot))
        .collect()
}

#[tokio::test]
async fn prepared_spares_serve_the_first_new_subjects_without_a_durable_creation() {
    let dir = tempfile::tempdir().unwrap();
    let keys = KeyStore::open(dir.path()).unwrap();
    assert_eq!(keys.spare_keys(), 0);
    // The pool was empty: made and durable when it returns.
    keys.prepare_spares().await.unwrap();
    let spares = keys.spare_keys();
    assert_eq!(spares, SPARES_TARGET);
    // Already full: asking again makes none.
    keys.prepare_spares().await.unwrap();
    keys.assign_keys(["c-1"]).await.unwrap();
    assert!(matches!(
        keys.key_for_sealing("c-1"),
        Ok(Some((_, Some(_))))
    ));
    drop(keys);
    assert_eq!(
        slots_of(dir.path(), |k| matches!(k, Kind::Spare(_))).len(),
        spares
    );
    assert!(slots_of(dir.path(), |k| matches!(k, Kind::Key(_))).is_empty());
    // Reopened, the spares are held back until reconciled, and count
    // towards the pool: no second batch is made.
    let keys = KeyStore::open(dir.path()).unwrap();
    keys.prepare_spares().await.unwrap();
    drop(keys);
    assert_eq!(
        slots_of(dir.path(), |k| matches!(k, Kind::Spare(_))).len(),
        spares
    );
}

#[tokio::test]
async fn spares_are_handed_out_at_once_and_their_assignments_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let keys = KeyStore::open(dir.path()).unwrap();
    // No spare yet: a key made durably, and a refill queued.
    keys.assign_keys(["c-1"]).await.unwrap();
    assert!(matches!(keys.key_for_sealing("c-1"), Ok(Some((_, None)))));
    spares_ready(&keys).await;
    let spares = keys.spare_keys();
    keys.assign_keys(["c-2", "c-3", "c-2"]).await.unwrap();
    assert_eq!(keys.spare_keys(), spares - 2);
    let Ok(Some((key2, Some(slot2)))) = keys.key_for_sealing("c-2") else {
        panic!("c-2 has no spare key");
    };
    let Ok(Some((_, Some(slot3)))) = keys.key_for_sealing("c-3") else {
        panic!("c-3 has no spare key");
    };
    assert_ne!(slot2, slot3);
    // Again: the same keys, nothing handed out.
    keys.assign_keys(["c-2"]).await.unwrap();
    assert_eq!(keys.spare_keys(), spares - 2);
    drop(keys);

    // The writer wrote the assignments before it stopped.
    assert_eq!(
        slots_of(dir.path(), |k| matches!(k, Kind::Assign(_))).len(),
        2
    );
    let keys = KeyStore::open(dir.path()).unwrap();
    assert_eq!(keys.require("c-2").unwrap(), SubjectKey::Key(key2));
    assert!(matches!(keys.key_for_sealing("c-3"), Ok(Some((_, Some(s)))) if s == slot3));
    // The other spares wait for the event log to be read before they are
    // handed out again.
    let (floor, free) = keys.unreconciled().unwrap();
    assert_eq!(floor, 0);
    assert_eq!(free.len(), spares - 2);
    assert!(!free.contains(&slot2));
    keys.assign_keys(["c-4"]).await.unwrap();
    assert!(matches!(keys.key_for_sealing("c-4"), Ok(Some((_, None)))));
    keys.reconcile(vec![], 17).await.unwrap();
    assert!(keys.unreconciled().is_none());
    keys.assign_keys(["c-5"]).await.unwrap();
    assert!(matches!(keys.key_for_sealing("c-5"), Ok(Some((_, Some(s)))) if free.contains(&s)));
    drop(keys);
    let keys = KeyStore::open(dir.path()).unwrap();
    assert_eq!(keys.unreconciled().unwrap().0, 17);
}

#[tokio::test]
async fn key_or_spare_hands_out_a_spare_at_once_and_leaves_the_rest_to_the_slow_path() {
    let dir = tempfile::tempdir().unwrap();
    let keys = KeyStore::open(dir.path()).unwrap();
    // With no spare ready, nothing is handed out (a refill is queued).
    assert_eq!(keys.key_or_spare("c-1").unwrap(), SealingKey::Missing);
    assert!(!keys.is_cached("c-1"));
    spares_ready(&keys).await;
    let spares = keys.spare_keys();
    let SealingKey::Ready(key, Some(slot)) = keys.key_or_spare("c-1").unwrap() else {
        panic!("c-1 got no spare");
    };
    assert_eq!(keys.spare_keys(), spares - 1);
    // The same key again, nothing more handed out; the other paths agree.
    assert_eq!(
        keys.key_or_spare("c-1").unwrap(),
        SealingKey::Ready(key, Some(slot))
    );
    assert_eq!(keys.spare_keys(), spares - 1);
    assert_eq!(
        keys.key_for_sealing("c-1").unwrap(),
        Some((key, Some(slot)))
    );
    // A forgotten subject gets nothing here (sealing refuses it later).
    keys.forget_subject("c-1").await.unwrap();
    assert_eq!(keys.key_or_spare("c-1").unwrap(), SealingKey::Unusable);
    assert!(keys.key_for_sealing("c-1").is_err());
    // A subject with a key made durably (not a spare) gets it back.
    keys.ensure_keys(["c-2"]).await.unwrap();
    assert!(matches!(
        keys.key_or_spare("c-2"),
        Ok(SealingKey::Ready(_, None))
    ));
    let SealingKey::Ready(_, Some(slot3)) = keys.key_or_spare("c-3").unwrap() else {
        panic!("c-3 got no spare");
    };
    drop(keys);
    // Its assignment was written like any other.
    let keys = KeyStore::open(dir.path()).unwrap();
    assert!(matches!(keys.key_for_sealing("c-3"), Ok(Some((_, Some(s)))) if s == slot3));
    assert_eq!(keys.require("c-1").unwrap(), SubjectKey::Erased);
}

#[tokio::test]
async fn concurrent_first_appends_of_one_subject_share_one_spare() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Arc::new(KeyStore::open(dir.path()).unwrap());
    keys.prepare_spares().await.unwrap();
    let spares = keys.spare_keys();
    let taken: Vec<_> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let keys = keys.clone();
                scope.spawn(move || {
                    (0..50)
                        .map(|i| match keys.key_or_spare(&format!("c-{i}")).unwrap() {
                            SealingKey::Ready(key, slot) => (key, slot),
                            other => panic!("c-{i} got {other:?}"),
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    // Every thread got the same key and slot for each subject, and each
    // subject took one spare.
    assert!(taken.iter().all(|t| *t == taken[0]));
    assert_eq!(keys.spare_keys(), spares - 50);
    let slots: HashSet<_> = taken[0].iter().map(|(_, slot)| slot.unwrap()).collect();
    assert_eq!(slots.len(), 50);
    drop(keys);
    assert_eq!(
        slots_of(dir.path(), |k| matches!(k, Kind::Assign(_))).len(),
        50
    );
}

#[tokio::test]
async fn an_assignment_a_crash_lost_is_given_back_by_reconciliation_and_erasure_destroys_the_spare()
{
    let dir = tempfile::tempdir().unwrap();
    let keys = KeyStore::open(dir.path()).unwrap();
    keys.assign_keys(["c-1"]).await.unwrap();
    spares_ready(&keys).await;
    keys.assign_keys(["c-2"]).await.unwrap();
    let Ok(Some((key, Some(slot)))) = keys.key_for_sealing("c-2") else {
        panic!("c-2 has no spare key");
    };
    drop(keys);
    // The assignment was the last batch; a crash tore it away.
    let assigned = slots_of(dir.path(), |k| matches!(k, Kind::Assign(_)));
    assert_eq!(assigned.len(), 1);
    write_slot(dir.path(), assigned[0], &[0u8; RECORD_LEN]);

    let keys = KeyStore::open(dir.path()).unwrap();
    assert_eq!(keys.lookup("c-2").unwrap(), None);
    let (_, free) = keys.unreconciled().unwrap();
    assert!(free.contains(&slot));
    // A slot that is no free spare, or a subject sealed under two spares,
    // is refused and changes nothing.
    let other = *free.iter().find(|s| **s != slot).unwrap();
    assert!(
        keys.reconcile(vec![("c-2".into(), 1_000_000)], 9)
            .await
            .is_err()
    );
    assert!(
        keys.reconcile(vec![("c-2".into(), slot), ("c-2".into(), other)], 9)
            .await
            .is_err()
    );
    assert!(keys.unreconciled().is_some());
    keys.reconcile(vec![("c-2".into(), slot)], 9).await.unwrap();
    assert_eq!(keys.require("c-2").unwrap(), SubjectKey::Key(key));

    keys.forget_subject("c-2").await.unwrap();
    assert!(matches!(record_at(dir.path(), slot), Slot::Record(r) if r.kind == Kind::Destroyed));
    assert!(files_holding(dir.path(), &key).is_empty());
    drop(keys);
    let keys = KeyStore::open(dir.path()).unwrap();
    assert_eq!(keys.require("c-2").unwrap(), SubjectKey::Erased);
    assert!(!keys.unreconciled().unwrap().1.contains(&slot));
}

#[tokio::test]
async fn an_interrupted_erasure_of_a_spare_is_finished_at_open() {
    // A crash before the overwrite leaves the spare whole; inside it, half.
    for torn in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyStore::open(dir.path()).unwrap();
        keys.assign_keys(["c-1"]).await.unwrap();
        spares_ready(&keys).await;
        keys.assign_keys(["c-2"]).await.unwrap();
        let Ok(Some((key, Some(slot)))) = keys.key_for_sealing("c-2") else {
            panic!("c-2 has no spare key");
        };
        let live = slot_bytes(dir.path(), slot);
        keys.forget_subject("c-2").await.unwrap();
        drop(keys);
        if torn {
            write_slot(dir.path(), slot, &live[..40]);
        } else {
            write_slot(dir.path(), slot, &live);
        }
        let keys = KeyStore::open(dir.path()).unwrap();
        assert_eq!(
            keys.require("c-2").unwrap(),
            SubjectKey::Erased,
            "torn {torn}"
        );
        assert!(
            matches!(record_at(dir.path(), slot), Slot::Record(r) if r.kind == Kind::Destroyed),
            "torn {torn}"
        );
        assert!(files_holding(dir.path(), &key).is_empty(), "torn {torn}");
    }
}

/// Three keys in three batches, the store closed.
fn three_batches(dir: &Path) -> Vec<[u8; 32]> {
    let keys = KeyStore::open(dir).unwrap();
    let out = ["c-1", "c-2", "c-3"]
        .iter()
        .map(|s| keys.key_for_write(s).unwrap())
        .collect();
    drop(keys);
    out
}

#[test]
fn a_torn_last_batch_is_cleared_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let created = three_batches(dir.path());
    // A fourth batch of three records whose write was cut: its first
    // record half written, its second never reached the disk, its third
    // complete.
    let record = |index, subject| Record {
        kind: Kind::Key([5; 32]),
        index,
        batch: 4,
        subject: subject_hash(subject),
    };
    let mut first = record(0, "t-1").encode();
    first[40..].fill(0);
    write_slot(dir.path(), 3, &first);
    write_slot(dir.path(), 5, &record(2, "t-3").encode());

    let keys = KeyStore::open(dir.path()).unwrap();
    for (subject, key) in ["c-1", "c-2", "c-3"].iter().zip(&created) {
        assert_eq!(keys.require(subject).unwrap(), SubjectKey::Key(*key));
    }
    assert_eq!(keys.lookup("t-1").unwrap(), None);
    // The intact record of the unacknowledged batch is kept: harmless, and
    // a retry finds that key.
    assert_eq!(keys.require("t-3").unwrap(), SubjectKey::Key([5; 32]));
    assert!(matches!(record_at(dir.path(), 3), Slot::Record(r) if r.kind == Kind::Void));
    assert!(matches!(record_at(dir.path(), 4), Slot::Record(r) if r.kind == Kind::Void));
    let next = keys.key_for_write("c-4").unwrap();
    assert!(matches!(record_at(dir.path(), 6), Slot::Record(r) if r.kind == Kind::Key(next)));
    drop(keys);
    // Nothing of it reads as damage later.
    let keys = KeyStore::open(dir.path()).unwrap();
    assert_eq!(keys.require("c-4").unwrap(), SubjectKey::Key(next));
    keys.key_for_write("c-5").unwrap();
}

#[test]
fn a_damaged_or_missing_key_is_an_error_not_an_erasure() {
    let dir = tempfile::tempdir().unwrap();
    let created = three_batches(dir.path());
    let mut bytes = slot_bytes(dir.path(), 0);
    bytes[60] ^= 1;
    write_slot(dir.path(), 0, &bytes);

    let keys = KeyStore::open(dir.path()).unwrap();
    match keys.require("c-1") {
        Err(Error::KeyStore(m)) => {
            assert!(m.contains("damaged") && m.contains("offset 64"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    // Intact records still serve; no new key while a damaged record may
    // have been that subject's.
    assert_eq!(keys.require("c-2").unwrap(), SubjectKey::Key(created[1]));
    assert!(matches!(keys.key_for_write("c-9"), Err(Error::KeyStore(m)) if m.contains("damaged")));
    // Damage is never turned into an erasure.
    assert!(matches!(keys.forget("c-1"), Err(Error::KeyStore(m)) if m.contains("damaged")));
    drop(keys);
    let keys = KeyStore::open(dir.path()).unwrap();
    assert!(matches!(record_at(dir.path(), 0), Slot::Bad(_)));
    assert!(matches!(keys.require("c-2"), Ok(SubjectKey::Key(_))));
    drop(keys);

    std::fs::remove_file(dir.path().join(LOG_FILE)).unwrap();
    let fresh = KeyStore::open(dir.path()).unwrap();
    assert!(matches!(fresh.require("c-1"), Err(Error::KeyStore(m)) if m.contains("incomplete")));
}

#[test]
fn an_interrupted_erasure_is_finished_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let created = three_batches(dir.path());
    // The erasure records of c-1 and c-2 made it to disk; the overwrite of
    // c-1's key did not happen, the one of c-2's was torn.
    let erasure = |index, subject| Record {
        kind: Kind::Erasure,
        index,
        batch: 4,
        subject: subject_hash(subject),
    };
    write_slot(dir.path(), 3, &erasure(0, "c-1").encode());
    write_slot(dir.path(), 4, &erasure(1, "c-2").encode());
    let mut torn = slot_bytes(dir.path(), 1);
    torn[0] = 3;
    torn[48..60].fill(0);
    write_slot(dir.path(), 1, &torn);

    let keys = KeyStore::open(dir.path()).unwrap();
    assert_eq!(keys.require("c-1").unwrap(), SubjectKey::Erased);
    assert_eq!(keys.require("c-2").unwrap(), SubjectKey::Erased);
    assert_eq!(keys.require("c-3").unwrap(), SubjectKey::Key(created[2]));
    for key in &created[..2] {
        assert!(files_holding(dir.path(), key).is_empty());
    }
    assert!(matches!(record_at(dir.path(), 0), Slot::Record(r) if r.kind == Kind::Destroyed));
    assert!(matches!(record_at(dir.path(), 1), Slot::Record(r) if r.kind == Kind::Destroyed));
    keys.key_for_write("c-4").unwrap();
}

/// A key or erasure file as the one-file-per-subject release wrote it.
fn legacy_file(magic: &[u8; 8], key: &[u8; 32], subject: &str) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(magic);
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&(subject.len() as u16).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(subject.as_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn legacy_stem(subject: &str) -> String {
    subject_hash(subject)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn old_key_files_are_migrated_and_then_shredded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let live = [7u8; 32];
    let forgotten = [8u8; 32];
    std::fs::write(
        d.join(format!("{}.key", legacy_stem("c-live"))),
        legacy_file(b"ANNALKEY", &live, "c-live"),
    )
    .unwrap();
    std::fs::write(
        d.join(format!("{}.erased", legacy_stem("c-gone"))),
        legacy_file(b"ANNALERA", &[0; 32], "c-gone"),
    )
    .unwrap();
    // An erasure the old release left half done: the key file is still there.
    std::fs::write(
        d.join(format!("{}.key", legacy_stem("c-gone"))),
        legacy_file(b"ANNALKEY", &forgotten, "c-gone"),
    )
    .unwrap();
    let mut damaged = legacy_file(b"ANNALKEY", &[9; 32], "c-bad");
    damaged[20] ^= 1;
    let damaged_path = d.join(format!("{}.key", legacy_stem("c-bad")));
    std::fs::write(&damaged_path, &damaged).unwrap();
    std::fs::write(
        d.join(format!("{}.tmp", legacy_stem("c-tmp"))),
        legacy_file(b"ANNALKEY", &[6; 32], "c-tmp"),
    )
    .unwrap();

    // What `annals verify` says before the migration (it writes nothing):
    // counted file by file, the damaged one named.
    let check = check_log(d).unwrap().expect("old key files are checked");
    assert_eq!((check.live, check.erased), (2, 1));
    assert_eq!(check.damage.len(), 1);
    assert!(
        check.damage[0].1.contains(&legacy_stem("c-bad")),
        "{check:?}"
    );
    assert_eq!(check.repairs.len(), 1);
    assert!(check_log(&d.join("nowhere")).unwrap().is_none());

    let keys = KeyStore::open(d).unwrap();
    assert_eq!(keys.require("c-live").unwrap(), SubjectKey::Key(live));
    assert_eq!(keys.require("c-gone").unwrap(), SubjectKey::Erased);
    assert!(matches!(keys.require("c-bad"), Err(Error::KeyStore(m)) if m.contains("damaged")));
    assert_eq!(keys.lookup("c-tmp").unwrap(), None);
    let mut left: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    let mut expected = vec![
        format!("{}.key", legacy_stem("c-bad")),
        LOG_FILE.to_owned(),
        "LOCK".to_owned(),
    ];
    expected.sort();
    assert_eq!(left, expected);
    assert!(files_holding(d, &forgotten).is_empty());
    assert!(files_holding(d, &[6; 32]).is_empty());
    drop(keys);
    let keys = KeyStore::open(d).unwrap();
    assert_eq!(keys.require("c-live").unwrap(), SubjectKey::Key(live));
    keys.forget("c-live").unwrap();
    assert!(files_holding(d, &live).is_empty());
}

#[test]
fn a_failed_write_or_fsync_is_never_acknowledged_and_stops_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultyFs::new();
    let keys = KeyStore::open_with(dir.path(), Arc::new(fs.clone())).unwrap();
    let first = keys.key_for_write("c-1").unwrap();
    // The write succeeds, its fsync fails.
    fs.fail_after(1);
    // A key log that cannot be written is a store that cannot take
    // appends, never a missing or damaged key.
    assert!(matches!(keys.key_for_write("c-2"), Err(Error::Poisoned(m)) if m.contains("fsync")));
    assert_eq!(keys.lookup("c-2").unwrap(), None);
    fs.heal();
    // Not retried as if the bytes were safe: refused until reopened.
    assert!(matches!(keys.key_for_write("c-3"), Err(Error::Poisoned(m)) if m.contains("stopped")));
    assert!(keys.forget("c-1").is_err());
    assert_eq!(keys.require("c-1").unwrap(), SubjectKey::Key(first));
    drop(keys);
    let keys = KeyStore::open_with(dir.path(), Arc::new(fs)).unwrap();
    assert_eq!(keys.require("c-1").unwrap(), SubjectKey::Key(first));
    keys.key_for_write("c-3").unwrap();
    // An erasure whose overwrite fails is durable all the same, and the
    // next open finishes it.
    let fs = FaultyFs::new();
    drop(keys);
    let keys = KeyStore::open_with(dir.path(), Arc::new(fs.clone())).unwrap();
    fs.fail_after(2);
    assert!(keys.forget("c-1").is_err());
    drop(keys);
    let keys = KeyStore::open(dir.path()).unwrap();
    assert_eq!(keys.require("c-1").unwrap(), SubjectKey::Erased);
    assert!(files_holding(dir.path(), &first).is_empty());
}

#[tokio::test]
async fn the_file_starts_with_a_chunk_and_grows_by_appends_and_a_cut_record_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let keys = KeyStore::open(dir.path()).unwrap();
    let chunk = keylog::offset_of(CHUNK_SLOTS);
    assert_eq!(log_bytes(dir.path()).len() as u64, chunk);
    let subjects: Vec<String> = (0..CHUNK_SLOTS + 1).map(|i| format!("c-{i}")).collect();
    keys.ensure_keys(&subjects).await.unwrap();
    // Exactly the records written, no zeros ahead.
    assert_eq!(
        log_bytes(dir.path()).len() as u64,
        keylog::offset_of(CHUNK_SLOTS + 1)
    );
    drop(keys);
    // An append cut short at the end of the file: half a record.
    let torn = Record {
        kind: Kind::Key([3; 32]),
        index: 0,
        batch: 99,
        subject: subject_hash("never-acknowledged"),
    }
    .encode();
    write_slot(dir.path(), CHUNK_SLOTS + 1, &torn[..40]);
    let keys = KeyStore::open(dir.path()).unwrap();
    assert!(matches!(keys.require("c-4096"), Ok(SubjectKey::Key(_))));
    assert_eq!(keys.lookup("never-acknowledged").unwrap(), None);
    // The next append writes over the cut record.
    let next = keys.key_for_write("c-next").unwrap();
    drop(keys);
    assert_eq!(
        log_bytes(dir.path()).len() as u64,
        keylog::offset_of(CHUNK_SLOTS + 2)
    );
    let keys = KeyStore::open(dir.path()).unwrap();
    assert_eq!(keys.require("c-next").unwrap(), SubjectKey::Key(next));
    assert!(keys.shared.state.read().damage.is_empty());
}

/// Slots of a log of `sizes.len()` batches of keys.
fn log_of(sizes: &[usize]) -> Vec<[u8; RECORD_LEN]> {
    let mut slots = Vec::new();
    for (b, size) in sizes.iter().enumerate() {
        for index in 0..*size {
            let subject = subject_hash(&format!("{b}-{index}"));
            slots.push(
                Record {
                    kind: Kind::Key(subject),
                    index: index as u16,
                    batch: b as u64 + 1,
                    subject,
                }
                .encode(),
            );
        }
    }
    slots.extend([[0u8; RECORD_LEN]; 8]);
    slots
}

proptest! {
    /// Whatever a crash does to the batch being written (slots unwritten,
    /// records cut short anywhere), recovery finds no damage, keeps every
    /// earlier batch, and leaves a log the next recovery agrees with.
    #[test]
    fn a_torn_last_batch_is_never_damage(
        sizes in proptest::collection::vec(1usize..6, 1..6),
        tears in proptest::collection::vec((0usize..3, 1usize..RECORD_LEN), 1..6),
    ) {
        let mut slots = log_of(&sizes);
        let last = *sizes.last().unwrap_or(&0);
        let start = sizes.iter().sum::<usize>() - last;
        for (i, (how, cut)) in tears.iter().enumerate() {
            let slot = &mut slots[start + i % last];
            match how {
                0 => slot.fill(0),
                1 => slot[*cut..].fill(0),
                _ => slot[..*cut].fill(0),
            }
        }
        let recovered = recover(Arc::new(slots.clone()), None);
        prop_assert!(recovered.damage.is_empty());
        for (b, size) in sizes[..sizes.len() - 1].iter().enumerate() {
            for index in 0..*size {
                let subject = subject_hash(&format!("{b}-{index}"));
                let kept = matches!(recovered.subjects.get(&subject), Some(Entry::Key { key, .. }) if key == subject);
                prop_assert!(kept, "batch {} record {} lost", b, index);
            }
        }
        for (slot, record) in &recovered.rewrites {
            slots[*slot as usize] = record.encode();
        }
        let again = recover(Arc::new(slots.clone()), None);
        prop_assert!(again.damage.is_empty());
        prop_assert!(again.rewrites.is_empty());
        prop_assert_eq!(again.subjects.len(), recovered.subjects.len());
    }

    /// A flipped bit in a batch before the last is damage, never torn and
    /// never an erasure.
    #[test]
    fn a_flipped_bit_before_the_last_batch_is_damage(
        sizes in proptest::collection::vec(1usize..6, 2..6),
        pick in any::<prop::sample::Index>(),
        at in 0usize..RECORD_LEN,
        bit in 0u8..8,
    ) {
        let mut slots = log_of(&sizes);
        let before_last = sizes.iter().sum::<usize>() - sizes[sizes.len() - 1];
        let slot = pick.index(before_last);
        slots[slot][at] ^= 1 << bit;
        let recovered = recover(Arc::new(slots.clone()), None);
        prop_assert_eq!(recovered.damage.len(), 1);
        prop_assert_eq!(recovered.damage[0].0, slot as u64);
        prop_assert!(!recovered.subjects.values().any(|e| matches!(e, Entry::Erased)));
    }
}

// The subject index: what opening reads through it must be what reading
// the whole log decides.

/// Opens with the subject index rewritten whenever at least `tail_min`
/// slots follow it.
fn open_indexing(dir: &Path, tail_min: u64) -> KeyStore {
    KeyStore::open_indexing(dir, Arc::new(crate::log::fs::RealFs), tail_min).unwrap()
}

fn index_path(dir: &Path) -> PathBuf {
    dir.join(INDEX_FILE)
}

/// The slot of the subject's own key record.
fn key_slot(dir: &Path, subject: &str) -> u64 {
    let hash = subject_hash(subject);
    (0..)
        .find(|slot| matches!(record_at(dir, *slot), Slot::Record(r) if matches!(r.kind, Kind::Key(_)) && r.subject == hash))
        .unwrap()
}

/// Recovers `log` whole and through `index`; they must decide alike.
fn agree(log: &[u8], index: Option<&[u8]>) -> std::result::Result<bool, String> {
    let slots: Arc<dyn Records> = Arc::new(recovery::record_slots(log));
    let whole = recover(slots.clone(), None);
    let Some(index) = index else { return Ok(false) };
    let Ok(base) = index::base_of(bytes::Bytes::copy_from_slice(index), slots.as_ref()) else {
        return Ok(false);
    };
    let indexed = recover(slots, Some(base));
    let differ = index::disagreements(&whole, &indexed);
    if !differ.is_empty() {
        return Err(differ.join("; "));
    }
    let subjects = whole.subjects.subjects()?;
    if subjects != indexed.subjects.subjects()? {
        return Err("they know other subjects".into());
    }
    Ok(true)
}

#[derive(Debug, Clone)]
enum Step {
    Key(u8),
    Spare(u8),
    Forget(u8),
    Reopen,
    /// The files as a crash now would leave them.
    Crash,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u8..24).prop_map(Step::Key),
        4 => (0u8..24).prop_map(Step::Spare),
        2 => (0u8..24).prop_map(Step::Forget),
        1 => Just(Step::Reopen),
        1 => Just(Step::Crash),
    ]
}

/// Opens for the workload: spares reconciled (nothing was sealed under
/// one whose assignment is missing: the workload never crashes the store
/// it runs) and ready.
fn open_for_workload(rt: &tokio::runtime::Runtime, dir: &Path) -> KeyStore {
    let keys = open_indexing(dir, 1);
    rt.block_on(async {
        if keys.unreconciled().is_some() {
            keys.reconcile(Vec::new(), 0).await.unwrap();
        }
        keys.prepare_spares().await.unwrap();
    });
    keys
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Keys, spares and erasures over several opens, the index rewritten
    /// at every open and close: at every point a crash could leave the
    /// files, and with its last record torn, reading through the index
    /// decides what reading the whole log decides.
    #[test]
    fn reading_through_the_index_decides_as_reading_the_whole_log(
        steps in proptest::collection::vec(step(), 4..30),
        cut in 1usize..RECORD_LEN,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut keys = Some(open_for_workload(&rt, dir.path()));
        let mut crashes = Vec::new();
        for step in steps {
            let Some(store) = keys.as_ref() else { break };
            match step {
                Step::Key(n) => drop(store.key_for_write(&format!("s-{n}"))),
                Step::Spare(n) => drop(rt.block_on(store.assign_keys([format!("s-{n}")]))),
                Step::Forget(n) => store.forget(&format!("s-{n}")).unwrap(),
                Step::Reopen => {
                    drop(keys.take());
                    keys = Some(open_for_workload(&rt, dir.path()));
                }
                Step::Crash => crashes.push((
                    log_bytes(dir.path()),
                    std::fs::read(index_path(dir.path())).ok(),
                )),
            }
        }
        drop(keys);
        crashes.push((log_bytes(dir.path()), std::fs::read(index_path(dir.path())).ok()));
        let mut indexed = 0;
        for (log, index) in crashes {
            indexed += usize::from(agree(&log, index.as_deref()).map_err(TestCaseError::fail)?);
            // The batch after the last one, cut short by the crash: a
            // record written up to `cut` bytes, behind the last one.
            let mut torn = log.clone();
            let end = torn.iter().rposition(|b| *b != 0).unwrap_or(0);
            let slot = ((end - keylog::HEADER_LEN) / RECORD_LEN + 1) as u64;
            let batch = recovery::record_slots(&log)
                .iter()
                .filter_map(|raw| match keylog::decode(raw) {
                    Slot::Record(r) => Some(r.batch),
                    _ => None,
                })
                .max()
                .unwrap_or(0);
            let record = Record {
                kind: Kind::Key([7; 32]),
                index: 0,
                batch: batch + 1,
                subject: subject_hash("torn"),
            }
            .encode();
            let at = keylog::offset_of(slot) as usize;
            torn.resize(torn.len().max(at + RECORD_LEN), 0);
            torn[at..at + cut].copy_from_slice(&record[..cut]);
            agree(&torn, index.as_deref()).map_err(TestCaseError::fail)?;
        }
        // The final close wrote an index that fits.
        prop_assert!(indexed >= 1);
    }
}

#[test]
fn a_reopen_reads_only_what_follows_the_index_and_damage_stays_with_its_subject() {
    let dir = tempfile::tempdir().unwrap();
    let keys = open_indexing(dir.path(), 1);
    let created: Vec<_> = ["c-1", "c-2", "c-3"]
        .iter()
        .map(|s| keys.key_for_write(s).unwrap())
        .collect();
    assert_eq!(keys.slots_indexed_at_open(), 0);
    drop(keys);
    assert!(index_path(dir.path()).exists());

    let keys = open_indexing(dir.path(), u64::MAX);
    assert_eq!(keys.slots_indexed_at_open(), 3);
    for (subject, key) in ["c-1", "c-2", "c-3"].iter().zip(&created) {
        assert_eq!(keys.require(subject).unwrap(), SubjectKey::Key(*key));
    }
    let fourth = keys.key_for_write("c-4").unwrap();
    drop(keys);

    // A bit flips in c-2's key record, which the index covers.
    let mut bytes = slot_bytes(dir.path(), 1);
    bytes[60] ^= 1;
    write_slot(dir.path(), 1, &bytes);
    let keys = open_indexing(dir.path(), u64::MAX);
    assert_eq!(keys.slots_indexed_at_open(), 3);
    match keys.require("c-2") {
        Err(Error::KeyStore(m)) => {
            assert!(m.contains("damaged") && m.contains("offset 144"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(keys.require("c-1").unwrap(), SubjectKey::Key(created[0]));
    assert_eq!(keys.require("c-4").unwrap(), SubjectKey::Key(fourth));
    // The index says whose the damaged record is: other subjects get keys.
    keys.key_for_write("c-5").unwrap();
    drop(keys);
    let check = check_log(dir.path()).unwrap().unwrap();
    assert_eq!(check.damage.len(), 1, "{check:?}");
    assert_eq!(check.damage[0].0, keylog::offset_of(1));
}

#[tokio::test]
async fn an_erasure_after_the_index_finishes_the_overwrite_of_an_indexed_key() {
    for spare in [false, true] {
        for torn in [false, true] {
            let case = format!("spare {spare}, torn {torn}");
            let dir = tempfile::tempdir().unwrap();
            let keys = open_indexing(dir.path(), 1);
            if spare {
                keys.prepare_spares().await.unwrap();
                keys.assign_keys(["c-1"]).await.unwrap();
            } else {
                keys.key_for_write("c-1").unwrap();
            }
            let second = keys.key_for_write("c-2").unwrap();
            let Ok(Some((key, spare_slot))) = keys.key_for_sealing("c-1") else {
                panic!("c-1 has no key ({case})");
            };
            drop(keys);
            let slot = spare_slot.unwrap_or_else(|| key_slot(dir.path(), "c-1"));

            // The erasure comes after the slots the index covers, and no
            // index is written after it.
            let keys = open_indexing(dir.path(), u64::MAX);
            assert!(keys.slots_indexed_at_open() > slot, "{case}");
            let live = slot_bytes(dir.path(), slot);
            keys.forget_subject("c-1").await.unwrap();
            drop(keys);
            // A crash before the overwrite, or inside it.
            write_slot(dir.path(), slot, if torn { &live[..40] } else { &live[..] });

            let keys = open_indexing(dir.path(), u64::MAX);
            assert!(keys.slots_indexed_at_open() > slot, "{case}");
            assert_eq!(keys.require("c-1").unwrap(), SubjectKey::Erased, "{case}");
            assert_eq!(
                keys.require("c-2").unwrap(),
                SubjectKey::Key(second),
                "{case}"
            );
            assert!(
                matches!(record_at(dir.path(), slot), Slot::Record(r) if r.kind == Kind::Destroyed),
                "{case}"
            );
            assert!(files_holding(dir.path(), &key).is_empty(), "{case}");
        }
    }
}

#[tokio::test]
async fn a_spare_free_when_indexed_and_assigned_after_keeps_its_subject() {
    let dir = tempfile::tempdir().unwrap();
    let keys = open_indexing(dir.path(), 1);
    keys.prepare_spares().await.unwrap();
    drop(keys);
    // The index covers the spares, free; the assignments come after.
    let keys = open_indexing(dir.path(), u64::MAX);
    let covered = keys.slots_indexed_at_open();
    keys.reconcile(Vec::new(), 0).await.unwrap();
    keys.assign_keys(["c-1", "c-2"]).await.unwrap();
    let Ok(Some((key, Some(slot)))) = keys.key_for_sealing("c-2") else {
        panic!("c-2 has no spare key");
    };
    assert!(slot < covered);
    drop(keys);
    // A crash took the assignments: reconciliation gives the spare back.
    for assigned in slots_of(dir.path(), |k| matches!(k, Kind::Assign(_))) {
        write_slot(dir.path(), assigned, &[0u8; RECORD_LEN]);
    }
    let keys = open_indexing(dir.path(), u64::MAX);
    assert_eq!(keys.slots_indexed_at_open(), covered);
    assert_eq!(keys.lookup("c-2").unwrap(), None);
    let (_, free) = keys.unreconciled().unwrap();
    assert!(free.contains(&slot));
    keys.reconcile(vec![("c-2".into(), slot)], 9).await.unwrap();
    assert_eq!(keys.require("c-2").unwrap(), SubjectKey::Key(key));
    drop(keys);
    let keys = open_indexing(dir.path(), u64::MAX);
    assert_eq!(keys.require("c-2").unwrap(), SubjectKey::Key(key));
    assert!(!keys.unreconciled().unwrap().1.contains(&slot));
}

#[test]
fn an_index_that_does_not_fit_the_log_is_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let keys = open_indexing(dir.path(), 1);
    for s in ["c-1", "c-2", "c-3"] {
        keys.key_for_write(s).unwrap();
    }
    drop(keys);
    let index = std::fs::read(index_path(dir.path())).unwrap();

    // Another log of as many slots, and a shorter one.
    for others in [&["o-1", "o-2", "o-3"][..], &["o-1"][..]] {
        let other = tempfile::tempdir().unwrap();
        let keys = open_indexing(other.path(), u64::MAX);
        let made: Vec<_> = others
            .iter()
            .map(|s| keys.key_for_write(s).unwrap())
            .collect();
        drop(keys);
        std::fs::write(index_path(other.path()), &index).unwrap();
        let keys = open_indexing(other.path(), u64::MAX);
        assert_eq!(keys.slots_indexed_at_open(), 0, "{others:?}");
        assert_eq!(keys.lookup("c-1").unwrap(), None);
        assert_eq!(keys.require(others[0]).unwrap(), SubjectKey::Key(made[0]));
    }

    // A flipped bit in its header.
    let mut flipped = index.clone();
    flipped[20] ^= 1;
    std::fs::write(index_path(dir.path()), &flipped).unwrap();
    let keys = open_indexing(dir.path(), u64::MAX);
    assert_eq!(keys.slots_indexed_at_open(), 0);
    assert!(matches!(keys.require("c-3"), Ok(SubjectKey::Key(_))));
}

#[tokio::test]
async fn a_damaged_index_block_is_the_damage_of_its_subjects_and_is_rebuilt_at_close() {
    let dir = tempfile::tempdir().unwrap();
    let subjects: Vec<String> = (0..1500).map(|i| format!("c-{i}")).collect();
    let keys = open_indexing(dir.path(), 1);
    keys.ensure_keys(&subjects).await.unwrap();
    drop(keys);
    let mut index = std::fs::read(index_path(dir.path())).unwrap();
    // The first entry block: past the header and the meta section.
    let blocks = crate::format::keyindex::BLOCK_LEN;
    index[blocks + 16] ^= 1;
    std::fs::write(index_path(dir.path()), &index).unwrap();

    let keys = open_indexing(dir.path(), u64::MAX);
    assert_eq!(keys.slots_indexed_at_open(), 1500);
    let mut damaged = 0;
    for subject in &subjects {
        match keys.require(subject) {
            Ok(SubjectKey::Key(_)) => {}
            Err(Error::KeyStore(m)) if m.contains(INDEX_FILE) && m.contains("remove") => {
                damaged += 1
            }
            other => panic!("{subject}: {other:?}"),
        }
    }
    // Those whose search reads the damaged block (its 511 subjects, and a
    // few whose guess lands on it); the others read on.
    assert!((1..=600).contains(&damaged), "{damaged}");
    // `verify` says so too.
    let check = check_log(dir.path()).unwrap().unwrap();
    assert!(
        check.damage.iter().any(|(_, m)| m.contains(INDEX_FILE)),
        "{check:?}"
    );
    drop(keys);

    // Closing rebuilt it from the key log.
    let keys = open_indexing(dir.path(), u64::MAX);
    assert_eq!(keys.slots_indexed_at_open(), 1500);
    for subject in &subjects {
        assert!(
            matches!(keys.require(subject), Ok(SubjectKey::Key(_))),
            "{subject}"
        );
    }
    drop(keys);
    assert!(check_log(dir.path()).unwrap().unwrap().damage.is_empty());
}

#[test]
fn verify_reports_an_index_that_reads_otherwise_than_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let keys = open_indexing(dir.path(), 1);
    for s in ["c-1", "c-2", "c-3"] {
        keys.key_for_write(s).unwrap();
    }
    drop(keys);
    assert!(check_log(dir.path()).unwrap().unwrap().damage.is_empty());
    // An index, intact and fitting, that lost a subject.
    let bytes = bytes::Bytes::from(std::fs::read(index_path(dir.path())).unwrap());
    let (summary, index) = crate::format::keyindex::decode(bytes).unwrap();
    let mut entries = index.all().unwrap();
    entries.remove(1);
    std::fs::write(
        index_path(dir.path()),
        crate::format::keyindex::encode(&summary, &entries),
    )
    .unwrap();
    let check = check_log(dir.path()).unwrap().unwrap();
    assert!(
        check
            .damage
            .iter()
            .any(|(_, m)| m.contains("disagrees") && m.contains("1 subjects")),
        "{check:?}"
    );
}
