//! Recovery: torn tails are cut back to the last whole batch, damage inside
//! committed data is reported at its offset (by `verify` and by reads) and
//! never served, lost indexes and bloom filters are rebuilt.

use std::path::{Path, PathBuf};

use event_store::format::event::EventRecord;
use event_store::format::frame::{Frame, read_frame};
use event_store::format::header::HEADER_LEN;
use event_store::{
    Direction, Error, EventStore, ExpectedVersion, Position, ReadFrom, RecordedEvent, Store,
    StoreOptions, verify,
};

use crate::common::{copy_dir, event, fill, open, read_everything, sid, small_segments};

/// A record of a segment file: where it starts and ends, its stream, and
/// whether it closes its batch.
#[derive(Debug, Clone)]
struct Rec {
    start: usize,
    end: usize,
    stream: String,
    end_of_batch: bool,
}

fn records(path: &Path) -> Vec<Rec> {
    let bytes = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut at = HEADER_LEN;
    while at < bytes.len() {
        let frame = read_frame(&bytes, at);
        if frame == Frame::ZeroTail {
            break; // space reserved ahead of appends
        }
        let Frame::Valid { body, frame_len } = frame else {
            panic!("{}: bad frame at {at}", path.display());
        };
        let record = EventRecord::decode(body).unwrap();
        out.push(Rec {
            start: at,
            end: at + frame_len,
            stream: record.stream_id.to_string(),
            end_of_batch: record.is_end_of_batch(),
        });
        at += frame_len;
    }
    out
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir.join("events"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    segs
}

/// Reads the whole log until the first error.
async fn read_until_error(store: &Store) -> Result<Vec<RecordedEvent>, Error> {
    let mut out = Vec::new();
    let mut next = Position::START;
    loop {
        let page = store.read_all(next, 50).await?;
        let Some(last) = page.last() else {
            return Ok(out);
        };
        next = last.position.next();
        out.extend(page);
    }
}

#[tokio::test]
async fn every_cut_inside_the_last_batch_keeps_exactly_the_whole_batches() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_segments()).await;
    fill(&store, "early", 40, 2).await; // several sealed segments
    let s = sid("late");
    for (i, size) in [1u64, 2, 3].iter().enumerate() {
        store
            .append(
                &s,
                ExpectedVersion::Any,
                (0..*size).map(|n| event(i as u64 * 10 + n)).collect(),
            )
            .await
            .unwrap();
    }
    let everything = read_everything(&store).await;
    store.close().await.unwrap();

    let active = segments(dir.path()).pop().unwrap();
    let recs = records(&active);
    let last_batch_start = recs[recs.len() - 3].start;
    assert!(recs[recs.len() - 1].end_of_batch);
    assert!(recs.len() == 3 || recs[recs.len() - 4].end_of_batch);
    let records_end = recs[recs.len() - 1].end;
    assert!(
        std::fs::metadata(&active).unwrap().len() as usize > records_end,
        "space is reserved after the records"
    );
    let kept = everything.len() - 3;

    // A crash leaves the file cut where the write stopped (a file that
    // grows with its appends) or zeros from there on (reserved space).
    for (cut, reserved) in (last_batch_start..records_end).flat_map(|c| [(c, false), (c, true)]) {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), copy.path());
        let seg = copy.path().join("events").join(active.file_name().unwrap());
        let file = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        if reserved {
            let zeros = vec![0u8; records_end - cut];
            std::os::unix::fs::FileExt::write_all_at(&file, &zeros, cut as u64).unwrap();
        } else {
            file.set_len(cut as u64).unwrap();
        }
        drop(file);

        let store = open(copy.path(), small_segments()).await;
        let report = store.recovery_report().clone();
        let cut_off = (cut - last_batch_start) as u64;
        if reserved {
            // Zeros the write left at its very end look like the space after it.
            assert!(report.torn_bytes_dropped <= cut_off, "cut at {cut}");
        } else {
            assert_eq!(report.torn_bytes_dropped, cut_off, "cut at {cut}");
        }
        let len = std::fs::metadata(&seg).unwrap().len() as usize;
        if reserved && cut == last_batch_start {
            // Nothing of the batch reached the disk: the zeros are free
            // space, left reserved.
            assert_eq!(report.torn_bytes_dropped, 0, "cut at {cut}");
            assert!(len > records_end, "cut at {cut}");
        } else {
            assert_eq!(
                len, last_batch_start,
                "cut at {cut}: the torn tail is truncated"
            );
        }
        let events = read_everything(&store).await;
        assert_eq!(events, everything[..kept], "cut at {cut}");
        // The store accepts appends again, right after the kept batches.
        let r = store
            .append(&s, ExpectedVersion::Exact(3), vec![event(99)])
            .await
            .unwrap();
        assert_eq!(r.first_position, Position(kept as u64 + 1), "cut at {cut}");
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn every_flipped_byte_of_a_committed_record_is_reported_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_segments()).await;
    for round in 0..12 {
        for s in ["a", "b", "c"] {
            fill(&store, &format!("{s}-{}", round % 2), 1, 2).await;
        }
    }
    let everything = read_everything(&store).await;
    store.close().await.unwrap();

    let segs = segments(dir.path());
    assert!(segs.len() >= 3, "need sealed segments and an active one");
    let sealed = segs[1].clone();
    let active = segs[segs.len() - 1].clone();
    let sealed_recs = records(&sealed);
    let active_recs = records(&active);
    assert!(active_recs.len() >= 2, "the active segment needs records");
    let targets = [
        (
            sealed.clone(),
            sealed_recs[sealed_recs.len() / 2].clone(),
            false,
        ),
        (active.clone(), active_recs[0].clone(), true),
        (
            active.clone(),
            active_recs[active_recs.len() - 1].clone(),
            true,
        ),
    ];

    for (file, rec, in_active) in targets {
        for at in rec.start..rec.end {
            let copy = tempfile::tempdir().unwrap();
            copy_dir(dir.path(), copy.path());
            let path = copy.path().join("events").join(file.file_name().unwrap());
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[at] ^= 0x55;
            std::fs::write(&path, &bytes).unwrap();
            let ctx = format!(
                "{} byte {at} (record {}..{})",
                file.display(),
                rec.start,
                rec.end
            );

            let report = verify(copy.path()).unwrap();
            assert!(
                report
                    .problems
                    .iter()
                    .any(|p| p.file == path && p.offset == rec.start as u64),
                "{ctx}: verify reported {:?}",
                report.problems
            );

            let store = open(copy.path(), small_segments()).await;
            match read_until_error(&store).await {
                Err(Error::Corruption { file, offset, .. }) => {
                    assert_eq!((file, offset), (path.clone(), rec.start as u64), "{ctx}");
                }
                Ok(events) => panic!("{ctx}: read {} events without error", events.len()),
                Err(other) => panic!("{ctx}: unexpected error {other}"),
            }
            // The lent scan stops at the same record.
            match store.scan(Position::START, |_| std::ops::ControlFlow::Continue(())) {
                Err(Error::Corruption { file, offset, .. }) => {
                    assert_eq!((file, offset), (path.clone(), rec.start as u64), "{ctx}");
                }
                other => panic!("{ctx}: the scan gave {other:?}"),
            }
            match store
                .read_stream(&sid(&rec.stream), ReadFrom::Start, Direction::Forward, 1000)
                .await
            {
                Err(Error::Corruption { offset, .. }) => {
                    assert_eq!(offset, rec.start as u64, "{ctx}")
                }
                other => panic!("{ctx}: stream read gave {other:?}"),
            }
            if in_active {
                assert!(
                    matches!(
                        store
                            .append(&sid("new"), ExpectedVersion::Any, vec![event(1)])
                            .await,
                        Err(Error::ReadOnly(_))
                    ),
                    "{ctx}: a damaged active segment must refuse appends"
                );
                // A stream the log does not know is loaded without reading
                // the log, and reads as a read of it does: an error where
                // the damage is in the tail (it may have held the stream),
                // empty otherwise.
                let unknown = sid("never-written");
                let read = store
                    .read_stream(&unknown, ReadFrom::Start, Direction::Forward, 10)
                    .await;
                let loaded = store.load(&unknown, Some(1)).await;
                let tail = rec.end == active_recs[active_recs.len() - 1].end;
                match (read, loaded) {
                    (Ok(slice), Ok(loaded)) if !tail => {
                        assert!(
                            slice.events.is_empty() && slice.stream_version == 0,
                            "{ctx}"
                        );
                        assert_eq!((loaded.events.len(), loaded.version), (0, 0), "{ctx}");
                        assert!(loaded.snapshot.is_none(), "{ctx}");
                    }
                    (
                        Err(Error::Corruption { offset: a, .. }),
                        Err(Error::Corruption { offset: b, .. }),
                    ) if tail => {
                        assert_eq!((a, b), (rec.start as u64, rec.start as u64), "{ctx}");
                    }
                    other => panic!("{ctx}: reading and loading an unknown stream gave {other:?}"),
                }
            }
            store.close().await.unwrap();
        }
    }
    assert!(!everything.is_empty());
}

/// Six streams of 20 events over several small segments, closed; returns
/// every event in position order.
async fn six_streams_over_segments(dir: &std::path::Path) -> Vec<event_store::RecordedEvent> {
    let store = open(dir, small_segments()).await;
    for s in 0..6 {
        fill(&store, &format!("s-{s}"), 10, 2).await;
    }
    let everything = read_everything(&store).await;
    store.close().await.unwrap();
    everything
}

#[tokio::test]
async fn lost_or_damaged_indexes_and_bloom_filters_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let everything = six_streams_over_segments(dir.path()).await;
    let events_dir = dir.path().join("events");
    std::fs::remove_file(events_dir.join("0000000001.idx")).unwrap();
    let intact_idx = std::fs::read(events_dir.join("0000000002.idx")).unwrap();
    let intact_bloom = std::fs::read(events_dir.join("0000000003.bloom")).unwrap();
    let mut idx = intact_idx.clone();
    let mid = idx.len() / 2;
    idx[mid] ^= 1;
    std::fs::write(events_dir.join("0000000002.idx"), idx).unwrap();
    std::fs::write(events_dir.join("0000000003.bloom"), b"garbage").unwrap();
    std::fs::remove_file(events_dir.join("0000000004.bloom")).unwrap();
    std::fs::write(events_dir.join("0000000004.idx.tmp"), b"leftover").unwrap();

    let store = open(dir.path(), small_segments()).await;
    // Opening reads headers only: it rebuilds the missing index; the one
    // damaged past its header and the bloom filters are checked, and
    // rebuilt, by the first reads that use them.
    let report = store.recovery_report().clone();
    assert_eq!(
        report.indexes_rebuilt,
        vec![events_dir.join("0000000001.idx")],
        "{report:?}"
    );
    assert_eq!(read_everything(&store).await, everything);
    for s in 0..6 {
        let slice = store
            .read_stream(
                &sid(&format!("s-{s}")),
                ReadFrom::Start,
                Direction::Forward,
                100,
            )
            .await
            .unwrap();
        assert_eq!(slice.events.len(), 20);
    }
    store.close().await.unwrap();
    assert!(!events_dir.join("0000000004.idx.tmp").exists());
    assert_eq!(
        std::fs::read(events_dir.join("0000000002.idx")).unwrap(),
        intact_idx
    );
    assert_eq!(
        std::fs::read(events_dir.join("0000000003.bloom")).unwrap(),
        intact_bloom
    );
    let report = verify(dir.path()).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert!(report.notes.is_empty(), "{report:?}");
}

#[tokio::test]
async fn a_segment_whose_creation_was_interrupted_is_started_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_segments()).await;
    fill(&store, "a", 30, 2).await;
    let everything = read_everything(&store).await;
    store.close().await.unwrap();
    let next = segments(dir.path()).len() + 1;
    // The crash came after the file was created, before its header was durable.
    std::fs::write(
        dir.path().join("events").join(format!("{next:010}.seg")),
        [0u8; 20],
    )
    .unwrap();
    // Under the previous segment is an index from an interrupted seal.
    let store = open(dir.path(), small_segments()).await;
    assert_eq!(read_everything(&store).await, everything);
    let r = store
        .append(&sid("a"), ExpectedVersion::Exact(60), vec![event(1)])
        .await
        .unwrap();
    assert_eq!(r.first_position, Position(61));
    store.close().await.unwrap();
    assert!(verify(dir.path()).unwrap().is_ok());
}

#[tokio::test]
async fn a_missing_segment_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_segments()).await;
    fill(&store, "a", 40, 2).await;
    store.close().await.unwrap();
    std::fs::remove_file(dir.path().join("events/0000000002.seg")).unwrap();
    match Store::open(dir.path(), small_segments()).await {
        Err(Error::Corruption { file, .. }) => {
            assert!(file.ends_with("0000000002.seg"), "{}", file.display());
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    let report = verify(dir.path()).unwrap();
    assert!(!report.is_ok());
}

#[tokio::test]
async fn a_torn_snapshot_write_falls_back_to_the_previous_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), StoreOptions::default()).await;
    let s = sid("c-1");
    fill(&store, "c-1", 5, 1).await;
    store
        .save_snapshot(&s, 2, 1, bytes::Bytes::from_static(b"two"))
        .await
        .unwrap();
    store
        .save_snapshot(&s, 4, 1, bytes::Bytes::from_static(b"four"))
        .await
        .unwrap();
    store.close().await.unwrap();
    let snap = dir.path().join("snapshots/0000000001.snap");
    let len = std::fs::metadata(&snap).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&snap)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    assert!(verify(dir.path()).unwrap().is_ok());

    let store = open(dir.path(), StoreOptions::default()).await;
    let latest = store.load_snapshot(&s).await.unwrap().unwrap();
    assert_eq!((latest.version, &latest.state[..]), (2, &b"two"[..]));
    store
        .save_snapshot(&s, 5, 1, bytes::Bytes::from_static(b"five"))
        .await
        .unwrap();
    store.close().await.unwrap();
    let store = open(dir.path(), StoreOptions::default()).await;
    assert_eq!(store.load_snapshot(&s).await.unwrap().unwrap().version, 5);
}

#[tokio::test]
async fn a_damaged_snapshot_is_reported_and_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), StoreOptions::default()).await;
    let s = sid("c-1");
    fill(&store, "c-1", 5, 1).await;
    store
        .save_snapshot(&s, 4, 1, bytes::Bytes::from_static(b"four"))
        .await
        .unwrap();
    store.close().await.unwrap();
    let snap = dir.path().join("snapshots/0000000001.snap");
    let mut bytes = std::fs::read(&snap).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0xff;
    std::fs::write(&snap, bytes).unwrap();
    let report = verify(dir.path()).unwrap();
    assert_eq!(report.problems.len(), 1, "{report:?}");

    let store = open(dir.path(), StoreOptions::default()).await;
    assert_eq!(store.damaged_snapshots(), 1);
    // The stream still loads, from its events.
    let loaded = store.load(&s, Some(1)).await.unwrap();
    assert!(loaded.snapshot.is_none());
    assert_eq!(loaded.events.len(), 5);
}

#[tokio::test]
async fn a_store_opened_log_only_reads_the_log_and_refuses_per_stream_work() {
    let dir = tempfile::tempdir().unwrap();
    let everything = six_streams_over_segments(dir.path()).await;

    let log_only = StoreOptions {
        log_only: true,
        ..small_segments()
    };
    let store = open(dir.path(), log_only).await;
    assert!(store.recovery_report().sealed_segments > 1);
    // The whole log, sealed segments and the active one, in order.
    assert_eq!(read_everything(&store).await, everything);
    // "Unknown" must never read as "empty": a stream is refused, not empty.
    let stream = store
        .read_stream(&sid("s-0"), ReadFrom::Start, Direction::Forward, 100)
        .await;
    assert!(matches!(stream, Err(Error::Unsupported(_))), "{stream:?}");
    let loaded = store.load(&sid("s-5"), None).await;
    assert!(matches!(loaded, Err(Error::Unsupported(_))), "{loaded:?}");
    let appended = store
        .append(&sid("s-0"), ExpectedVersion::Any, vec![event(1)])
        .await;
    assert!(matches!(appended, Err(Error::ReadOnly(_))), "{appended:?}");
    store.close().await.unwrap();

    // Nothing was written: a normal open sees every stream as before.
    let store = open(dir.path(), small_segments()).await;
    assert_eq!(read_everything(&store).await, everything);
    let slice = store
        .read_stream(&sid("s-5"), ReadFrom::Start, Direction::Forward, 100)
        .await
        .unwrap();
    assert_eq!(slice.events.len(), 20);
    store.close().await.unwrap();
}

/// Opening checks an index's header only; a lookup confirms what an entry
/// says by the record it leads to, so an entry damaged past the header is
/// caught there (the index is then checked whole and rebuilt), never
/// served as the stream's version.
#[tokio::test]
async fn an_index_entry_damaged_past_the_header_is_caught_by_the_lookup() {
    let dir = tempfile::tempdir().unwrap();
    let everything = six_streams_over_segments(dir.path()).await;
    let idx_path = dir.path().join("events").join("0000000001.idx");
    let intact = std::fs::read(&idx_path).unwrap();
    let events = u64::from_le_bytes(intact[32..40].try_into().unwrap()) as usize;
    let streams = u64::from_le_bytes(intact[40..48].try_into().unwrap()) as usize;
    let mut damaged = intact.clone();
    for i in 0..streams {
        // Each entry's first_version, low byte: every stream's last
        // version here now reads one off (or more).
        damaged[64 + events * 4 + i * 40 + 8] ^= 0x01;
    }
    std::fs::write(&idx_path, &damaged).unwrap();

    let store = open(dir.path(), small_segments()).await;
    assert!(store.recovery_report().indexes_rebuilt.is_empty());
    for s in 0..6 {
        let id = sid(&format!("s-{s}"));
        let slice = store
            .read_stream(&id, ReadFrom::Start, Direction::Forward, 100)
            .await
            .unwrap();
        assert_eq!(slice.events.len(), 20, "{id}");
        assert_eq!(slice.stream_version, 20, "{id}");
    }
    assert_eq!(read_everything(&store).await, everything);
    store.close().await.unwrap();
    assert_eq!(std::fs::read(&idx_path).unwrap(), intact);
}
