//! What only the segment store has: reads across sealed segments and
//! their bloom filters, snapshot files, reopening, the lock on the data
//! directory, closing, the format version and the stream cache. What every
//! backend of `EventStore` shares (appends, retries, reads, snapshots,
//! limits) is tested once for all of them in the workspace's
//! `tests/conformance`.

use bytes::Bytes;
use event_store::{
    Direction, Error, EventStore, ExpectedVersion, Position, ReadFrom, RecordedEvent, Store,
    StoreOptions,
};

use crate::common::{event, fill, open, read_everything, sid, small_segments};

/// The lent scan visits what `read_all` returns, across sealed segments
/// and the active one, from any position, and stops where asked.
#[tokio::test]
async fn a_scan_lends_what_read_all_returns() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_segments()).await;
    for round in 0..80 {
        fill(&store, &format!("s-{}", round % 4), 1, 1 + round % 3).await;
    }
    assert!(store.stats().await.unwrap().sealed_segments >= 3);
    let everything = read_everything(&store).await;
    let head = everything.len() as u64;
    for from in [1, 2, head / 2, head, head + 1] {
        let mut seen = Vec::new();
        let next = store
            .scan(Position(from), |e| {
                seen.push(RecordedEvent {
                    id: e.id,
                    stream_id: sid(e.stream_id),
                    version: e.version,
                    position: e.position,
                    event_type: e.event_type.to_owned(),
                    schema_version: e.schema_version,
                    timestamp: e.timestamp,
                    data: Bytes::copy_from_slice(e.data),
                    metadata: Bytes::copy_from_slice(e.metadata),
                });
                std::ops::ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(next, Position(head.max(from - 1) + 1), "from {from}");
        let expected: Vec<_> = everything.iter().skip(from as usize - 1).cloned().collect();
        assert_eq!(seen, expected, "from {from}");
    }
    // Breaking at the fifth event: the scan goes on after it.
    let mut count = 0;
    let next = store
        .scan(Position(3), |_| {
            count += 1;
            if count == 5 {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!((count, next), (5, Position(8)));
    store.close().await.unwrap();
}

/// A stream spread over many sealed segments reads whole both ways, and
/// pages of the log that start and end inside segments miss nothing.
#[tokio::test]
async fn reads_cross_sealed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_segments()).await;
    let t = sid("target");
    for i in 0..60 {
        fill(&store, "noise", 1, 1).await;
        store
            .append(&t, ExpectedVersion::Exact(i), vec![event(i)])
            .await
            .unwrap();
    }
    let stats = store.stats().await.unwrap();
    assert!(stats.sealed_segments >= 4, "{stats:?}");

    let forward = store
        .read_stream(&t, ReadFrom::Start, Direction::Forward, 100)
        .await
        .unwrap();
    assert!(forward.is_end);
    assert_eq!(
        forward.events.iter().map(|e| e.version).collect::<Vec<_>>(),
        (1..=60).collect::<Vec<_>>()
    );
    let backward = store
        .read_stream(&t, ReadFrom::End, Direction::Backward, 100)
        .await
        .unwrap();
    assert!(backward.is_end);
    assert_eq!(
        backward
            .events
            .iter()
            .map(|e| e.version)
            .collect::<Vec<_>>(),
        (1..=60).rev().collect::<Vec<_>>()
    );

    let mut next = Position(37);
    let mut seen = Vec::new();
    loop {
        let page = store.read_all(next, 7).await.unwrap();
        let Some(last) = page.last() else { break };
        next = last.position.next();
        seen.extend(page.into_iter().map(|e| e.position.0));
    }
    assert_eq!(seen, (37..=120).collect::<Vec<_>>());
}

#[tokio::test]
async fn bloom_filters_skip_segments_without_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_segments()).await;
    let rare = sid("rare");
    store
        .append(&rare, ExpectedVersion::NoStream, vec![event(0)])
        .await
        .unwrap();
    fill(&store, "noise", 100, 2).await;
    store
        .append(&rare, ExpectedVersion::Exact(1), vec![event(1)])
        .await
        .unwrap();
    fill(&store, "noise", 40, 2).await;
    let before = store.stats().await.unwrap();
    assert!(before.sealed_segments >= 8, "{before:?}");

    let slice = store
        .read_stream(&rare, ReadFrom::Start, Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(slice.events.len(), 2);
    let after = store.stats().await.unwrap();
    let skipped = after.segments_skipped_by_bloom - before.segments_skipped_by_bloom;
    let searched = after.segments_searched - before.segments_searched;
    // Only the two segments holding "rare" need their index searched; a
    // false positive may add one.
    assert!(searched <= 3, "searched {searched} segment indexes");
    assert!(
        skipped + searched >= before.sealed_segments / 2,
        "skipped {skipped}"
    );
}

#[tokio::test]
async fn reads_across_many_segments_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_segments()).await;
    for s in 0..10 {
        fill(&store, &format!("s-{s}"), 10, 3).await;
    }
    let before = read_everything(&store).await;
    assert_eq!(before.len(), 300);
    let sealed = store.stats().await.unwrap().sealed_segments;
    assert!(sealed >= 10, "only {sealed} sealed segments");
    store.close().await.unwrap();

    let store = open(dir.path(), small_segments()).await;
    assert_eq!(read_everything(&store).await, before);
    for s in 0..10 {
        let slice = store
            .read_stream(
                &sid(&format!("s-{s}")),
                ReadFrom::Start,
                Direction::Forward,
                100,
            )
            .await
            .unwrap();
        assert_eq!(slice.events.len(), 30);
        assert!(
            slice
                .events
                .windows(2)
                .all(|w| w[1].version == w[0].version + 1)
        );
    }
    // Appends continue where the log left off.
    let r = store
        .append(&sid("s-0"), ExpectedVersion::Exact(30), vec![event(0)])
        .await
        .unwrap();
    assert_eq!((r.first_version, r.first_position), (31, Position(301)));
}

/// Snapshot files roll over and superseded ones are deleted; the latest
/// snapshot is found again after a reopen.
#[tokio::test]
async fn snapshot_files_roll_over_and_the_latest_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let options = || StoreOptions {
        snapshot_file_bytes_max: 512,
        ..small_segments()
    };
    let store = open(dir.path(), options()).await;
    let s = sid("customer-1");
    store
        .append(&s, ExpectedVersion::NoStream, (0..10).map(event).collect())
        .await
        .unwrap();
    for v in [3u64, 7, 5] {
        store
            .save_snapshot(&s, v, 2, Bytes::from(format!("state at {v}")))
            .await
            .unwrap();
    }
    for round in 0..40 {
        store
            .save_snapshot(&s, 7, 2, Bytes::from(format!("state at 7 round {round}")))
            .await
            .unwrap();
    }
    let files_before = std::fs::read_dir(dir.path().join("snapshots"))
        .unwrap()
        .count();
    assert!(files_before <= 3, "{files_before} snapshot files kept");
    store.close().await.unwrap();

    let store = open(dir.path(), options()).await;
    let latest = store.load_snapshot(&s).await.unwrap().unwrap();
    assert_eq!((latest.version, latest.schema_version), (7, 2));
    assert_eq!(&latest.state[..], b"state at 7 round 39");
    assert_eq!(store.stats().await.unwrap().snapshots, 1);
}

#[tokio::test]
async fn a_data_directory_is_locked_by_one_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), StoreOptions::default()).await;
    match Store::open(dir.path(), StoreOptions::default()).await {
        Err(Error::Locked { path }) => assert_eq!(path, dir.path()),
        other => panic!("expected the directory to be locked, got {other:?}"),
    }
    store.close().await.unwrap();
    let again = open(dir.path(), StoreOptions::default()).await;
    again.close().await.unwrap();
}

#[tokio::test]
async fn closing_refuses_further_appends() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), StoreOptions::default()).await;
    fill(&store, "a", 1, 1).await;
    store.close().await.unwrap();
    assert!(matches!(
        store
            .append(&sid("a"), ExpectedVersion::Any, vec![event(1)])
            .await,
        Err(Error::Closed)
    ));
    assert!(store.health().is_err());
}

#[tokio::test]
async fn a_newer_format_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("FORMAT"), "annals-data-format 99\n").unwrap();
    match Store::open(dir.path(), StoreOptions::default()).await {
        Err(Error::UnsupportedFormat {
            found, supported, ..
        }) => {
            assert_eq!((found, supported), (99, event_store::DATA_FORMAT_VERSION));
        }
        other => panic!("expected UnsupportedFormat, got {other:?}"),
    }
}

/// A stream looked up in the sealed segments, then appended to until its
/// segment is sealed too, reads its latest version: what the cache learned
/// before the seal is not taken for the truth after it.
#[tokio::test]
async fn a_stream_looked_up_before_a_seal_reads_its_latest_version_after() {
    let dir = tempfile::tempdir().unwrap();
    for cache in [1, 65_536] {
        let options = || StoreOptions {
            stream_cache_entries: cache,
            ..small_segments()
        };
        let path = dir.path().join(format!("cache-{cache}"));
        let store = open(&path, options()).await;
        for s in 0..20 {
            fill(&store, &format!("s-{s}"), 3, 2).await;
        }
        store.close().await.unwrap();
        // Reopened, every stream is known through the sealed segments only.
        let store = open(&path, options()).await;
        let before = store.stats().await.unwrap();
        assert!(before.sealed_segments >= 3, "{before:?}");
        assert_eq!(before.streams, 20);
        for round in 0..3u64 {
            for s in 0..20 {
                let id = sid(&format!("s-{s}"));
                let version = 6 + round * 2;
                let slice = store
                    .read_stream(&id, ReadFrom::End, Direction::Backward, 1)
                    .await
                    .unwrap();
                assert_eq!(slice.stream_version, version, "cache {cache}, {id}");
                store
                    .append(
                        &id,
                        ExpectedVersion::Exact(version),
                        vec![event(1), event(2)],
                    )
                    .await
                    .unwrap();
            }
        }
        let after = store.stats().await.unwrap();
        assert!(after.sealed_segments > before.sealed_segments, "{after:?}");
        store.close().await.unwrap();
        let store = open(&path, options()).await;
        for s in 0..20 {
            let id = sid(&format!("s-{s}"));
            let slice = store
                .read_stream(&id, ReadFrom::Start, Direction::Forward, 100)
                .await
                .unwrap();
            let versions: Vec<u64> = slice.events.iter().map(|e| e.version).collect();
            assert_eq!(
                versions,
                (1..=12).collect::<Vec<_>>(),
                "cache {cache}, {id}"
            );
            let stale = store
                .append(&id, ExpectedVersion::Exact(6), vec![event(0)])
                .await;
            assert!(
                matches!(stale, Err(Error::WrongExpectedVersion { current: 12, .. })),
                "{stale:?}"
            );
        }
        assert_eq!(store.stats().await.unwrap().streams, 20);
        store.close().await.unwrap();
    }
}
