//! The PostgreSQL store, the segment store, and a segment store over HTTP
//! (`RemoteStore` against the store server) given the same operations
//! answer the same: appends with every kind of expected version, retries
//! of earlier appends (whole, partial, with other content), multi-stream
//! appends, stream reads both ways and reads of the log, snapshots, and
//! subscriptions (whole and filtered) over what the operations left. Any
//! difference fails with the operations that led to it. Runs against a
//! real server like `pg.rs` (skipped without one, except under CI).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use event_store::{
    AppendResult, Direction, Error, EventFilter, EventStore, ExpectedVersion, NewEvent, Position,
    ReadFrom, RecordedEvent, Result, Store, StoreOptions, StreamAppend, StreamId,
};
use pg_store::{PgOptions, PgStore};

use bench_harness::pg::{drop_schema, fresh_schema, skip_without_server, test_server as server};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append {
        stream: u8,
        expected: Expect,
        size: usize,
    },
    /// An earlier append sent again: whole, its first event only, or with
    /// its first event's data changed.
    Retry {
        which: usize,
        how: u8,
    },
    Transfer {
        a: u8,
        b: u8,
        stale: bool,
    },
    ReadStream {
        stream: u8,
        from: u64,
        backward: bool,
        max: usize,
    },
    ReadAll {
        from: u64,
        max: usize,
    },
    Snapshot {
        stream: u8,
        back: u64,
    },
}

#[derive(Debug, Clone, Copy)]
enum Expect {
    Any,
    NoStream,
    Exists,
    Exact(i8),
}

fn op() -> impl Strategy<Value = Op> {
    let expect = prop_oneof![
        Just(Expect::Any),
        Just(Expect::NoStream),
        Just(Expect::Exists),
        (-1i8..=1).prop_map(Expect::Exact),
    ];
    prop_oneof![
        6 => (0u8..4, expect, 1usize..4).prop_map(|(stream, expected, size)| Op::Append { stream, expected, size }),
        3 => (any::<usize>(), 0u8..3).prop_map(|(which, how)| Op::Retry { which, how }),
        1 => (0u8..4, 0u8..4, any::<bool>()).prop_map(|(a, b, stale)| Op::Transfer { a, b, stale }),
        2 => (0u8..4, 0u64..8, any::<bool>(), 1usize..6).prop_map(|(stream, from, backward, max)| Op::ReadStream { stream, from, backward, max }),
        2 => (0u64..40, 1usize..20).prop_map(|(from, max)| Op::ReadAll { from, max }),
        1 => (0u8..4, 0u64..3).prop_map(|(stream, back)| Op::Snapshot { stream, back }),
    ]
}

fn stream_id(s: u8) -> StreamId {
    StreamId::new(format!("stream-{s}")).unwrap()
}

fn events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| NewEvent::new("E", format!(r#"{{"i":{i}}}"#)))
        .collect()
}

/// What an answer says, without what may differ between stores (commit
/// times, error wording).
#[derive(Debug, PartialEq)]
enum Said {
    Appended(Vec<AppendResult>),
    Refused(String),
    Events(Vec<(String, u64, u64, uuid::Uuid, Vec<u8>)>),
    Slice(u64, bool, Vec<(String, u64, u64, uuid::Uuid, Vec<u8>)>),
}

fn refused(e: &Error) -> Said {
    Said::Refused(match e {
        Error::WrongExpectedVersion { current, .. } => {
            format!("wrong expected version, at {current}")
        }
        Error::EventIdConflict(c) => format!("id conflict on {} ({})", c.event_id, c.stream),
        Error::InvalidAppend(_) => "invalid append".into(),
        other => format!("{other}"),
    })
}

fn said_events(events: &[RecordedEvent]) -> Vec<(String, u64, u64, uuid::Uuid, Vec<u8>)> {
    events
        .iter()
        .map(|e| {
            (
                e.stream_id.as_str().to_owned(),
                e.version,
                e.position.0,
                e.id,
                e.data.to_vec(),
            )
        })
        .collect()
}

fn said<T>(answer: Result<T>, ok: impl FnOnce(T) -> Said) -> Said {
    match answer {
        Ok(value) => ok(value),
        Err(e) => refused(&e),
    }
}

async fn apply(
    store: &dyn EventStore,
    op: &Op,
    sent: &mut Vec<Vec<StreamAppend>>,
    fresh: &[StreamAppend],
) -> Said {
    match op {
        Op::Append { .. } | Op::Transfer { .. } => {
            sent.push(fresh.to_vec());
            said(store.append_many(fresh.to_vec()).await, Said::Appended)
        }
        Op::Retry { .. } => said(store.append_many(fresh.to_vec()).await, Said::Appended),
        Op::ReadStream {
            stream,
            from,
            backward,
            max,
        } => {
            let direction = if *backward {
                Direction::Backward
            } else {
                Direction::Forward
            };
            let from = if *from == 0 {
                ReadFrom::Start
            } else {
                ReadFrom::Version(*from)
            };
            said(
                store
                    .read_stream(&stream_id(*stream), from, direction, *max)
                    .await,
                |s| Said::Slice(s.stream_version, s.is_end, said_events(&s.events)),
            )
        }
        Op::ReadAll { from, max } => said(store.read_all(Position(*from), *max).await, |e| {
            Said::Events(said_events(&e))
        }),
        Op::Snapshot { stream, back } => {
            let id = stream_id(*stream);
            let version = match store
                .read_stream(&id, ReadFrom::End, Direction::Backward, 1)
                .await
            {
                Ok(slice) => slice.stream_version.saturating_sub(*back),
                Err(e) => return refused(&e),
            };
            let saved = store
                .save_snapshot(&id, version, 1, bytes::Bytes::from(format!("v{version}")))
                .await;
            if let Err(e) = saved {
                return refused(&e);
            }
            said(store.load_snapshot(&id).await, |s| {
                Said::Events(
                    s.map(|s| {
                        vec![(
                            String::new(),
                            s.version,
                            0,
                            uuid::Uuid::nil(),
                            s.state.to_vec(),
                        )]
                    })
                    .unwrap_or_default(),
                )
            })
        }
    }
}

/// The appends an operation sends (the same to both stores).
async fn appends_of(op: &Op, reference: &Store, sent: &[Vec<StreamAppend>]) -> Vec<StreamAppend> {
    let version = |s: u8| async move {
        reference
            .read_stream(&stream_id(s), ReadFrom::End, Direction::Backward, 1)
            .await
            .map_or(0, |slice| slice.stream_version)
    };
    match op {
        Op::Append {
            stream,
            expected,
            size,
        } => {
            let current = version(*stream).await;
            let expected = match expected {
                Expect::Any => ExpectedVersion::Any,
                Expect::NoStream => ExpectedVersion::NoStream,
                Expect::Exists => ExpectedVersion::StreamExists,
                Expect::Exact(d) => {
                    ExpectedVersion::Exact(current.saturating_add_signed(i64::from(*d)))
                }
            };
            vec![StreamAppend::new(
                stream_id(*stream),
                expected,
                events(*size),
            )]
        }
        Op::Transfer { a, b, stale } => {
            let (va, vb) = (version(*a).await, version(*b).await);
            let b = if a == b { (b + 1) % 4 } else { *b };
            vec![
                StreamAppend::new(
                    stream_id(*a),
                    ExpectedVersion::Exact(va + u64::from(*stale)),
                    events(1),
                ),
                StreamAppend::new(stream_id(b), ExpectedVersion::Exact(vb), events(1)),
            ]
        }
        Op::Retry { which, how } => {
            let Some(earlier) = (!sent.is_empty()).then(|| sent[which % sent.len()].clone()) else {
                return vec![StreamAppend::new(
                    stream_id(0),
                    ExpectedVersion::Any,
                    events(1),
                )];
            };
            match how {
                0 => earlier,
                1 => earlier
                    .into_iter()
                    .map(|mut a| {
                        a.events.truncate(1);
                        a
                    })
                    .collect(),
                _ => earlier
                    .into_iter()
                    .map(|mut a| {
                        a.events[0].data = bytes::Bytes::from_static(b"{\"other\":true}");
                        a
                    })
                    .collect(),
            }
        }
        _ => Vec::new(),
    }
}

/// What a subscription from position 1 with `filter` delivers up to the
/// head, as (stream, version, position, id).
async fn delivered(
    store: &dyn EventStore,
    filter: EventFilter,
) -> Vec<(String, u64, u64, uuid::Uuid)> {
    let head = store.head().await.unwrap();
    let matching = store
        .read_all(Position(1), 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| filter.matches(e.stream_id.as_str(), &e.event_type))
        .count();
    let mut subscription = store.subscribe(Position(1), filter).await.unwrap();
    let mut out = Vec::new();
    while out.len() < matching {
        let event = tokio::time::timeout(std::time::Duration::from_secs(30), subscription.next())
            .await
            .expect("an event within 30 s")
            .expect("the subscription goes on")
            .unwrap();
        assert!(event.position <= head, "delivered past the head");
        out.push((
            event.stream_id.as_str().to_owned(),
            event.version,
            event.position.0,
            event.id,
        ));
    }
    out
}

/// Subscriptions of every backend deliver the same events, whole and
/// filtered by stream prefix and by event type.
async fn same_subscriptions(
    segments: &Store,
    pg: &PgStore,
    remote: &event_store_http::RemoteStore,
) -> std::result::Result<(), TestCaseError> {
    let filters = [
        EventFilter::all(),
        EventFilter::stream_prefix("stream-1"),
        EventFilter {
            stream_prefixes: vec!["stream-2".into(), "stream-3".into()],
            event_types: vec!["E".into()],
        },
    ];
    for filter in filters {
        let expected = delivered(segments, filter.clone()).await;
        let on_pg = delivered(pg, filter.clone()).await;
        let on_remote = delivered(remote, filter.clone()).await;
        if expected != on_pg || expected != on_remote {
            return Err(TestCaseError::fail(format!(
                "subscription {filter:?}: the segment store delivered {expected:?}, PostgreSQL \
                 {on_pg:?}, the remote store {on_remote:?}"
            )));
        }
    }
    Ok(())
}

/// A segment store in `dir` served over HTTP on a loopback port, and a
/// client of it.
async fn remote_store(dir: &std::path::Path) -> (Store, event_store_http::RemoteStore) {
    http_edge::tls::install_default_provider();
    let store = Store::open(
        dir,
        StoreOptions {
            segment_bytes_max: 4096,
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    let app = event_store_http::router(
        std::sync::Arc::new(store.clone()),
        event_store_http::ServerConfig::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = event_store_http::RemoteStore::connect(
        &format!("http://{addr}"),
        event_store_http::RemoteOptions::default(),
    )
    .await
    .unwrap();
    (store, client)
}

async fn run(ops: Vec<Op>) -> std::result::Result<(), TestCaseError> {
    let schema = fresh_schema("same");
    let options = PgOptions {
        schema: schema.clone(),
        ..PgOptions::default()
    };
    let pg = match PgStore::connect(&server(), options).await {
        Ok(store) => store,
        Err(e) => {
            skip_without_server(&e);
            return Ok(());
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let segments = Store::open(
        dir.path(),
        StoreOptions {
            segment_bytes_max: 4096,
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    let served_dir = tempfile::tempdir().unwrap();
    let (served, remote) = remote_store(served_dir.path()).await;
    let mut sent_pg = Vec::new();
    let mut sent_segments = Vec::new();
    let mut sent_remote = Vec::new();
    let mut outcome = Ok(());
    for (i, op) in ops.iter().enumerate() {
        let fresh = appends_of(op, &segments, &sent_segments).await;
        let on_segments = apply(&segments, op, &mut sent_segments, &fresh).await;
        let on_pg = apply(&pg, op, &mut sent_pg, &fresh).await;
        let on_remote = apply(&remote, op, &mut sent_remote, &fresh).await;
        if on_segments != on_pg || on_segments != on_remote {
            outcome = Err(TestCaseError::fail(format!(
                "operation {i} {op:?}: the segment store said {on_segments:?}, PostgreSQL said \
                 {on_pg:?}, the remote store said {on_remote:?}"
            )));
            break;
        }
    }
    if outcome.is_ok() {
        outcome = same_subscriptions(&segments, &pg, &remote).await;
    }
    served.close().await.unwrap();
    segments.close().await.unwrap();
    pg.close().await;
    drop_schema(&schema).await.unwrap();
    outcome
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn every_backend_answers_as_the_segment_store_does(ops in proptest::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(run(ops))?;
    }
}
