//! Appends, optimistic concurrency, idempotent retries, multi-stream
//! transactions, reads in both directions, limits, snapshots, reopening.

use bytes::Bytes;
use event_store::{
    Direction, Error, EventStore, ExpectedVersion, Limits, NewEvent, Position, ReadFrom, Store,
    StoreOptions, StreamAppend,
};
use uuid::Uuid;

use crate::common::{event, fill, joined, open, read_everything, sid, small_segments};

#[tokio::test]
async fn appends_assign_versions_and_positions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), StoreOptions::default()).await;
    let a = sid("order-1");
    let b = sid("order-2");

    let r1 = store
        .append(&a, ExpectedVersion::NoStream, vec![event(1), event(2)])
        .await
        .unwrap();
    assert_eq!((r1.first_version, r1.last_version), (1, 2));
    assert_eq!(
        (r1.first_position, r1.last_position),
        (Position(1), Position(2))
    );
    assert!(!r1.already_committed);

    let r2 = store
        .append(&b, ExpectedVersion::Any, vec![event(3)])
        .await
        .unwrap();
    assert_eq!((r2.first_version, r2.last_version), (1, 1));
    assert_eq!(r2.first_position, Position(3));

    let r3 = store
        .append(&a, ExpectedVersion::Exact(2), vec![event(4)])
        .await
        .unwrap();
    assert_eq!((r3.first_version, r3.last_position), (3, Position(4)));

    let all = read_everything(&store).await;
    let order: Vec<(String, u64, u64)> = all
        .iter()
        .map(|e| (e.stream_id.to_string(), e.version, e.position.0))
        .collect();
    assert_eq!(
        order,
        vec![
            ("order-1".into(), 1, 1),
            ("order-1".into(), 2, 2),
            ("order-2".into(), 1, 3),
            ("order-1".into(), 3, 4),
        ]
    );
    let stats = store.stats().await.unwrap();
    assert_eq!(
        (stats.events, stats.streams, stats.head),
        (4, 2, Position(4))
    );
}

#[tokio::test]
async fn stored_events_keep_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), StoreOptions::default()).await;
    let id = Uuid::new_v4();
    let correlation = Uuid::new_v4();
    let metadata = event_store::Metadata {
        correlation_id: Some(correlation),
        causation_id: None,
        extra: serde_json::from_str(r#"{"user":"ada"}"#).unwrap(),
    };
    let new = NewEvent::new("CustomerRegistered", r#"{"name":"Ada"}"#)
        .with_id(id)
        .with_schema_version(3)
        .with_metadata(&metadata)
        .unwrap();
    store
        .append(&sid("customer-9"), ExpectedVersion::NoStream, vec![new])
        .await
        .unwrap();
    let e = &store.read_all(Position::START, 10).await.unwrap()[0];
    assert_eq!(e.id, id);
    assert_eq!(e.stream_id.as_str(), "customer-9");
    assert_eq!(e.event_type, "CustomerRegistered");
    assert_eq!(e.schema_version, 3);
    assert_eq!(&e.data[..], br#"{"name":"Ada"}"#);
    assert_eq!(e.metadata().unwrap(), metadata);
    assert!(e.timestamp.as_micros() > 0);
}

#[tokio::test]
async fn stale_expected_versions_fail_with_the_current_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), StoreOptions::default()).await;
    let s = sid("account-1");
    store
        .append(&s, ExpectedVersion::NoStream, vec![event(1), event(2)])
        .await
        .unwrap();

    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(1),
        ExpectedVersion::Exact(3),
    ] {
        match store.append(&s, expected, vec![event(9)]).await {
            Err(Error::WrongExpectedVersion {
                stream,
                expected: e,
                current,
            }) => {
                assert_eq!(stream, s);
                assert_eq!(e, expected);
                assert_eq!(current, 2);
            }
            other => panic!("{expected:?}: expected a conflict, got {other:?}"),
        }
    }
    match store
        .append(
            &sid("account-2"),
            ExpectedVersion::StreamExists,
            vec![event(1)],
        )
        .await
    {
        Err(Error::WrongExpectedVersion { current: 0, .. }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    store
        .append(&s, ExpectedVersion::StreamExists, vec![event(3)])
        .await
        .unwrap();
    assert_eq!(store.stats().await.unwrap().events, 3);
}

#[tokio::test]
async fn retrying_a_committed_append_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), StoreOptions::default()).await;
    let s = sid("cart-1");
    let batch = vec![event(1), event(2)];
    let first = store
        .append(&s, ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    let next = vec![event(3)];
    let second = store
        .append(&s, ExpectedVersion::Exact(2), next.clone())
        .await
        .unwrap();

    // The same batches at the same expected versions: answered, not written.
    let again = store
        .append(&s, ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    assert!(again.already_committed);
    assert_eq!(
        (
            again.first_position,
            again.last_position,
            again.last_version
        ),
        (first.first_position, first.last_position, 2)
    );
    let again = store
        .append(&s, ExpectedVersion::Exact(2), next.clone())
        .await
        .unwrap();
    assert!(again.already_committed);
    assert_eq!(again.first_position, second.first_position);
    // With `Any`, a retry is recognised while its events are the latest.
    let again = store
        .append(&s, ExpectedVersion::Any, next.clone())
        .await
        .unwrap();
    assert!(again.already_committed);
    assert_eq!(store.stats().await.unwrap().events, 3);

    // A different batch at a stale version is still a conflict.
    assert!(matches!(
        store
            .append(&s, ExpectedVersion::Exact(2), vec![event(4)])
            .await,
        Err(Error::WrongExpectedVersion { current: 3, .. })
    ));
    // A batch that only starts like the committed one repeats an event id
    // without being a retry: a conflict naming the id.
    let mut longer = batch.clone();
    longer.push(event(5));
    match store.append(&s, ExpectedVersion::NoStream, longer).await {
        Err(Error::EventIdConflict(c)) => assert_eq!(c.event_id, batch[0].id),
        other => panic!("expected an id conflict, got {other:?}"),
    }
    assert_eq!(store.stats().await.unwrap().events, 3);
}

/// An event id names one event: the same id with other content, an append
/// that repeats part of a committed one, or the same id twice in one
/// append are refused, and nothing is written.
#[tokio::test]
async fn an_event_id_names_one_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), StoreOptions::default()).await;
    let s = sid("ids-1");
    let a = event(1);
    store
        .append(&s, ExpectedVersion::NoStream, vec![a.clone()])
        .await
        .unwrap();

    // The same id, other data: not a retry.
    let mut other = event(2);
    other.id = a.id;
    for expected in [ExpectedVersion::NoStream, ExpectedVersion::Any] {
        match store.append(&s, expected, vec![other.clone()]).await {
            Err(Error::EventIdConflict(c)) => {
                assert_eq!((c.event_id, &c.stream), (a.id, &s));
                assert!(c.committed.is_some(), "{c}");
            }
            other => panic!("{expected:?}: expected an id conflict, got {other:?}"),
        }
    }
    // A committed event followed by a new one: only partly a retry.
    let b = event(3);
    match store
        .append(&s, ExpectedVersion::Any, vec![a.clone(), b.clone()])
        .await
    {
        Err(Error::EventIdConflict(c)) => {
            assert_eq!(c.event_id, a.id);
            assert!(c.committed.is_none());
        }
        other => panic!("expected an id conflict, got {other:?}"),
    }
    // One id twice in one append, in one stream or across two.
    match store
        .append(&s, ExpectedVersion::Exact(1), vec![b.clone(), b.clone()])
        .await
    {
        Err(Error::InvalidAppend(why)) => assert!(why.contains("appears twice"), "{why}"),
        other => panic!("expected an invalid append, got {other:?}"),
    }
    assert!(matches!(
        store
            .append_many(vec![
                StreamAppend::new(s.clone(), ExpectedVersion::Exact(1), vec![b.clone()]),
                StreamAppend::new(sid("ids-2"), ExpectedVersion::NoStream, vec![b.clone()]),
            ])
            .await,
        Err(Error::InvalidAppend(_))
    ));
    // A multi-stream append of which one stream's part is committed and the
    // other's is not.
    match store
        .append_many(vec![
            StreamAppend::new(s.clone(), ExpectedVersion::NoStream, vec![a.clone()]),
            StreamAppend::new(sid("ids-3"), ExpectedVersion::NoStream, vec![b.clone()]),
        ])
        .await
    {
        Err(Error::EventIdConflict(c)) => assert_eq!((c.event_id, &c.stream), (a.id, &s)),
        other => panic!("expected an id conflict, got {other:?}"),
    }
    assert_eq!(store.stats().await.unwrap().events, 1, "nothing written");
    // The same event again is a retry.
    let again = store
        .append(&s, ExpectedVersion::NoStream, vec![a])
        .await
        .unwrap();
    assert!(again.already_committed);
}

#[tokio::test]
async fn concurrent_retries_in_one_group_commit_write_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), StoreOptions::default()).await;
    let s = sid("retry-1");
    let batch = vec![event(1)];
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            let s = s.clone();
            let batch = batch.clone();
            tokio::spawn(async move { store.append(&s, ExpectedVersion::NoStream, batch).await })
        })
        .collect();
    let mut written = 0;
    for t in tasks {
        let r = joined(t).await.unwrap();
        assert_eq!(r.first_position, Position(1));
        written += usize::from(!r.already_committed);
    }
    assert_eq!(written, 1);
    assert_eq!(store.stats().await.unwrap().events, 1);
}

#[tokio::test]
async fn multi_stream_appends_commit_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), StoreOptions::default()).await;
    let from = sid("account-a");
    let to = sid("account-b");
    store
        .append(&from, ExpectedVersion::NoStream, vec![event(0)])
        .await
        .unwrap();

    let transfer = |expected_from| {
        vec![
            StreamAppend::new(from.clone(), expected_from, vec![event(1)]),
            StreamAppend::new(to.clone(), ExpectedVersion::NoStream, vec![event(2)]),
        ]
    };
    // One stale stream: nothing of the transaction is written.
    match store.append_many(transfer(ExpectedVersion::Exact(7))).await {
        Err(Error::WrongExpectedVersion {
            stream, current, ..
        }) => {
            assert_eq!(stream, from);
            assert_eq!(current, 1);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(store.stats().await.unwrap().events, 1);
    let b = store
        .read_stream(&to, ReadFrom::Start, Direction::Forward, 10)
        .await
        .unwrap();
    assert!(b.events.is_empty());

    let ok = transfer(ExpectedVersion::Exact(1));
    let results = store.append_many(ok.clone()).await.unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].first_position, Position(2));
    assert_eq!(results[1].first_position, Position(3));
    // Retrying the whole transaction is idempotent.
    let again = store.append_many(ok).await.unwrap();
    assert!(again.iter().all(|r| r.already_committed));
    assert_eq!(store.stats().await.unwrap().events, 3);

    assert!(matches!(
        store
            .append_many(vec![
                StreamAppend::new(to.clone(), ExpectedVersion::Any, vec![event(1)]),
                StreamAppend::new(to.clone(), ExpectedVersion::Any, vec![event(2)]),
            ])
            .await,
        Err(Error::InvalidAppend(_))
    ));
}

#[tokio::test]
async fn streams_read_forwards_and_backwards_in_pages() {
    let dir = tempfile::tempdir().unwrap();
    // Small segments: the stream is spread over many sealed segments.
    let store = open(dir.path(), small_segments()).await;
    for i in 0..60 {
        fill(&store, "noise", 1, 1).await;
        store
            .append(&sid("target"), ExpectedVersion::Exact(i), vec![event(i)])
            .await
            .unwrap();
    }
    let stats = store.stats().await.unwrap();
    assert!(stats.sealed_segments >= 4, "{stats:?}");
    let t = sid("target");

    let all = store
        .read_stream(&t, ReadFrom::Start, Direction::Forward, 100)
        .await
        .unwrap();
    assert_eq!(all.stream_version, 60);
    assert!(all.is_end);
    assert_eq!(
        all.events.iter().map(|e| e.version).collect::<Vec<_>>(),
        (1..=60).collect::<Vec<_>>()
    );

    let page = store
        .read_stream(&t, ReadFrom::Version(10), Direction::Forward, 5)
        .await
        .unwrap();
    assert_eq!(
        page.events.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![10, 11, 12, 13, 14]
    );
    assert!(!page.is_end);

    let back = store
        .read_stream(&t, ReadFrom::End, Direction::Backward, 3)
        .await
        .unwrap();
    assert_eq!(
        back.events.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![60, 59, 58]
    );
    assert!(!back.is_end);
    let back = store
        .read_stream(&t, ReadFrom::Version(2), Direction::Backward, 10)
        .await
        .unwrap();
    assert_eq!(
        back.events.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![2, 1]
    );
    assert!(back.is_end);

    let past_end = store
        .read_stream(&t, ReadFrom::Version(61), Direction::Forward, 10)
        .await
        .unwrap();
    assert!(past_end.events.is_empty() && past_end.is_end);
    let missing = store
        .read_stream(&sid("nobody"), ReadFrom::Start, Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!((missing.events.len(), missing.stream_version), (0, 0));
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

#[tokio::test]
async fn read_all_pages_through_segments() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_segments()).await;
    fill(&store, "a", 50, 2).await;
    let mut next = Position(37);
    let mut seen = Vec::new();
    loop {
        let page = store.read_all(next, 7).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 7);
        next = page.last().unwrap().position.next();
        seen.extend(page.into_iter().map(|e| e.position.0));
    }
    assert_eq!(seen, (37..=100).collect::<Vec<_>>());
    assert!(store.read_all(Position(101), 10).await.unwrap().is_empty());
    assert_eq!(
        store.read_all(Position::ZERO, 1).await.unwrap()[0].position,
        Position(1)
    );
}

#[tokio::test]
async fn limits_are_enforced_on_both_sides_of_the_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        event_bytes_max: 100,
        event_type_bytes_max: 10,
        events_per_append_max: 3,
        append_bytes_max: 1 << 20,
        streams_per_append_max: 2,
        stream_id_bytes_max: 8,
        read_count_max: 5,
        snapshot_bytes_max: 16,
    };
    let store = open(
        dir.path(),
        StoreOptions {
            limits,
            ..StoreOptions::default()
        },
    )
    .await;
    let ok = sid("12345678");
    let long = sid("123456789");
    let data = |n: usize| NewEvent::new("T", format!("\"{}\"", "x".repeat(n - 2)));
    fn limit_of<T: std::fmt::Debug>(r: Result<T, Error>) -> &'static str {
        match r {
            Err(Error::LimitExceeded { limit, .. }) => limit,
            other => panic!("expected a limit error, got {other:?}"),
        }
    }

    // event_bytes_max counts data plus metadata ("{}" = 2 bytes).
    store
        .append(&ok, ExpectedVersion::Any, vec![data(98)])
        .await
        .unwrap();
    assert_eq!(
        limit_of(
            store
                .append(&ok, ExpectedVersion::Any, vec![data(99)])
                .await
        ),
        "event_bytes_max"
    );
    store
        .append(
            &ok,
            ExpectedVersion::Any,
            vec![NewEvent::new("T".repeat(10), "1")],
        )
        .await
        .unwrap();
    assert_eq!(
        limit_of(
            store
                .append(
                    &ok,
                    ExpectedVersion::Any,
                    vec![NewEvent::new("T".repeat(11), "1")]
                )
                .await
        ),
        "event_type_bytes_max"
    );
    store
        .append(
            &ok,
            ExpectedVersion::Any,
            vec![data(10), data(10), data(10)],
        )
        .await
        .unwrap();
    assert_eq!(
        limit_of(
            store
                .append(
                    &ok,
                    ExpectedVersion::Any,
                    vec![data(10), data(10), data(10), data(10)]
                )
                .await
        ),
        "events_per_append_max"
    );
    assert_eq!(
        limit_of(
            store
                .append(&long, ExpectedVersion::Any, vec![data(10)])
                .await
        ),
        "stream_id_bytes_max"
    );
    let three: Vec<StreamAppend> = ["a", "b", "c"]
        .iter()
        .map(|s| StreamAppend::new(sid(s), ExpectedVersion::Any, vec![data(10)]))
        .collect();
    assert_eq!(
        limit_of(store.append_many(three).await),
        "streams_per_append_max"
    );

    store.read_all(Position::START, 5).await.unwrap();
    assert_eq!(
        limit_of(store.read_all(Position::START, 6).await),
        "read_count_max"
    );
    assert_eq!(
        limit_of(
            store
                .read_stream(&ok, ReadFrom::Start, Direction::Forward, 6)
                .await
        ),
        "read_count_max"
    );
    store
        .save_snapshot(&ok, 1, 1, Bytes::from(vec![0u8; 16]))
        .await
        .unwrap();
    assert_eq!(
        limit_of(
            store
                .save_snapshot(&ok, 1, 1, Bytes::from(vec![0u8; 17]))
                .await
        ),
        "snapshot_bytes_max"
    );
    // Nothing over a limit was written.
    assert_eq!(store.stats().await.unwrap().events, 5);
}

#[tokio::test]
async fn bad_input_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), StoreOptions::default()).await;
    for bad in ["", "has space", "slash/inside", "ümlaut", "new\nline"] {
        assert!(
            matches!(
                event_store::StreamId::new(bad).map_err(Error::from),
                Err(Error::InvalidStreamId { .. })
            ),
            "{bad:?} accepted"
        );
    }
    let s = sid("ok");
    for (event, what) in [
        (NewEvent::new("T", "{not json"), "bad data"),
        (NewEvent::new("", "{}"), "empty type"),
        (NewEvent::new("T\u{7}", "{}"), "control character"),
        (
            NewEvent {
                metadata: Bytes::from_static(b"[1,2]"),
                ..NewEvent::new("T", "{}")
            },
            "metadata not an object",
        ),
    ] {
        assert!(
            matches!(
                store.append(&s, ExpectedVersion::Any, vec![event]).await,
                Err(Error::InvalidAppend(_))
            ),
            "{what} accepted"
        );
    }
    assert!(matches!(
        store.append(&s, ExpectedVersion::Any, vec![]).await,
        Err(Error::InvalidAppend(_))
    ));
    assert!(matches!(
        store.read_all(Position::START, 0).await,
        Err(Error::InvalidRead(_))
    ));
    assert_eq!(store.stats().await.unwrap().events, 0);
}

#[tokio::test]
async fn snapshots_load_the_latest_and_the_events_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let options = || StoreOptions {
        snapshot_file_bytes_max: 512,
        ..small_segments()
    };
    let store = open(dir.path(), options()).await;
    let s = sid("customer-1");
    for i in 0..10 {
        store
            .append(&s, ExpectedVersion::Exact(i), vec![event(i)])
            .await
            .unwrap();
    }
    assert_eq!(store.load_snapshot(&s).await.unwrap(), None);
    assert!(matches!(
        store
            .save_snapshot(&s, 11, 1, Bytes::from_static(b"future"))
            .await,
        Err(Error::InvalidAppend(_))
    ));
    for v in [3u64, 7, 5] {
        store
            .save_snapshot(&s, v, 2, Bytes::from(format!("state at {v}")))
            .await
            .unwrap();
    }
    // Many more saves roll snapshot files over and delete superseded ones.
    for round in 0..40 {
        store
            .save_snapshot(&s, 7, 2, Bytes::from(format!("state at 7 round {round}")))
            .await
            .unwrap();
    }
    let latest = store.load_snapshot(&s).await.unwrap().unwrap();
    assert_eq!((latest.version, latest.schema_version), (7, 2));
    assert_eq!(&latest.state[..], b"state at 7 round 39");

    let loaded = store.load(&s, Some(2)).await.unwrap();
    assert_eq!(loaded.snapshot.as_ref().map(|s| s.version), Some(7));
    assert_eq!(
        loaded.events.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![8, 9, 10]
    );
    assert_eq!(loaded.version, 10);
    // A snapshot of another schema is ignored: everything is replayed.
    let loaded = store.load(&s, Some(3)).await.unwrap();
    assert!(loaded.snapshot.is_none());
    assert_eq!(loaded.events.len(), 10);

    let files_before = std::fs::read_dir(dir.path().join("snapshots"))
        .unwrap()
        .count();
    assert!(files_before <= 3, "{files_before} snapshot files kept");
    store.close().await.unwrap();
    let store = open(dir.path(), options()).await;
    let latest = store.load_snapshot(&s).await.unwrap().unwrap();
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
