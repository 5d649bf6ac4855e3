//! Appends: versions and positions, what an event keeps, optimistic
//! concurrency, idempotent retries, event ids, multi-stream transactions,
//! limits and bad input.

use std::sync::Arc;

use axum::body::Bytes;
use event_store::{
    Direction, Error, EventStore, ExpectedVersion, Limits, NewEvent, Position, ReadFrom,
    StoreOptions, StreamAppend,
};
use uuid::Uuid;

use super::{event, read_everything, sid};

async fn appends_assign_versions_and_positions(store: Arc<dyn EventStore>) {
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

    let all = read_everything(&*store).await;
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
    assert_eq!(store.head().await.unwrap(), Position(4));
}

async fn stored_events_keep_every_field(store: Arc<dyn EventStore>) {
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

async fn stale_expected_versions_fail_with_the_current_version(store: Arc<dyn EventStore>) {
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

async fn retrying_a_committed_append_writes_nothing(store: Arc<dyn EventStore>) {
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
async fn an_event_id_names_one_event(store: Arc<dyn EventStore>) {
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

async fn multi_stream_appends_commit_whole_or_not_at_all(store: Arc<dyn EventStore>) {
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

/// Limits small enough to test both sides of each boundary.
fn tight_limits() -> StoreOptions {
    StoreOptions {
        limits: Limits {
            event_bytes_max: 100,
            event_type_bytes_max: 10,
            events_per_append_max: 3,
            append_bytes_max: 1 << 20,
            streams_per_append_max: 2,
            stream_id_bytes_max: 8,
            read_count_max: 5,
            snapshot_bytes_max: 16,
        },
        ..StoreOptions::default()
    }
}

async fn limits_are_enforced_on_both_sides_of_the_boundary(store: Arc<dyn EventStore>) {
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

async fn bad_input_is_refused_with_a_clear_error(store: Arc<dyn EventStore>) {
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
    let nothing = store.read_all(Position::START, 0).await;
    assert!(matches!(nothing, Err(Error::InvalidRead(_))), "{nothing:?}");
    assert_eq!(store.stats().await.unwrap().events, 0);
}

backends! {
    appends_assign_versions_and_positions,
    stored_events_keep_every_field,
    stale_expected_versions_fail_with_the_current_version,
    retrying_a_committed_append_writes_nothing,
    an_event_id_names_one_event,
    multi_stream_appends_commit_whole_or_not_at_all,
    limits_are_enforced_on_both_sides_of_the_boundary {
        options: tight_limits(),
    },
    bad_input_is_refused_with_a_clear_error,
}
