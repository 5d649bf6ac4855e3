//! The PostgreSQL store against a real server (`ANNALS_TEST_POSTGRES`,
//! default `postgres://postgres@127.0.0.1:5432`), each test in a schema
//! of its own, dropped after. Without a server a test is skipped with a
//! notice, except under CI, where that is a failure.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use event_store::{
    Direction, Error, EventFilter, EventStore, ExpectedVersion, NewEvent, Position, ReadFrom,
    RecordedEvent, StreamAppend, StreamId,
};
use pg_store::{PgOptions, PgStore};
use sqlx::AssertSqlSafe;

use bench_harness::pg::{drop_schema, fresh_schema, skip_without_server, test_server as server};

/// A fresh schema, dropped when the guard goes.
struct Schema {
    name: String,
    admin: sqlx::PgPool,
}

impl Schema {
    async fn new(tag: &str) -> Option<Schema> {
        let admin = match sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&server())
            .await
        {
            Ok(pool) => pool,
            Err(e) => {
                skip_without_server(&e);
                return None;
            }
        };
        Some(Schema {
            name: fresh_schema(tag),
            admin,
        })
    }

    async fn store(&self, options: PgOptions) -> PgStore {
        PgStore::connect(
            &server(),
            PgOptions {
                schema: self.name.clone(),
                ..options
            },
        )
        .await
        .unwrap()
    }

    async fn drop_it(self) {
        self.admin.close().await;
        drop_schema(&self.name).await.unwrap();
    }
}

fn sid(s: &str) -> StreamId {
    StreamId::new(s).unwrap()
}

fn event(n: u64) -> NewEvent {
    NewEvent::json(
        "Happened",
        &serde_json::json!({ "n": n, "pad": "x".repeat(150) }),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_and_reads_follow_the_segment_stores_rules() {
    let Some(schema) = Schema::new("basics").await else {
        return;
    };
    let store = schema.store(PgOptions::default()).await;
    let a = sid("order-1");
    let first = store
        .append(&a, ExpectedVersion::NoStream, vec![event(1), event(2)])
        .await
        .unwrap();
    assert_eq!((first.first_version, first.last_version), (1, 2));
    assert_eq!(first.last_position, Position(2));
    // A stale expected version is refused, naming the current one.
    let stale = store
        .append(&a, ExpectedVersion::Exact(1), vec![event(3)])
        .await
        .unwrap_err();
    assert!(
        matches!(stale, Error::WrongExpectedVersion { current: 2, .. }),
        "{stale}"
    );
    // A multi-stream append commits whole or not at all.
    let b = sid("order-2");
    let refused = store
        .append_many(vec![
            StreamAppend::new(b.clone(), ExpectedVersion::NoStream, vec![event(4)]),
            StreamAppend::new(a.clone(), ExpectedVersion::NoStream, vec![event(5)]),
        ])
        .await;
    assert!(refused.is_err());
    assert_eq!(store.head().await.unwrap(), Position(2));
    // A retry with the same ids and content is answered as committed.
    let retry = vec![event(6)];
    let once = store
        .append(&b, ExpectedVersion::NoStream, retry.clone())
        .await
        .unwrap();
    let again = store
        .append(&b, ExpectedVersion::NoStream, retry.clone())
        .await
        .unwrap();
    assert!(!once.already_committed && again.already_committed);
    assert_eq!(again.last_position, once.last_position);
    // The same id with other content is a conflict.
    let mut other = retry[0].clone();
    other.data = bytes::Bytes::from_static(b"{\"n\":99}");
    let conflict = store
        .append(&b, ExpectedVersion::NoStream, vec![other])
        .await
        .unwrap_err();
    assert!(matches!(conflict, Error::EventIdConflict(_)), "{conflict}");

    let forward = store
        .read_stream(&a, ReadFrom::Start, Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(forward.stream_version, 2);
    assert!(forward.is_end);
    assert_eq!(forward.events.len(), 2);
    let backward = store
        .read_stream(&a, ReadFrom::End, Direction::Backward, 1)
        .await
        .unwrap();
    assert_eq!(backward.events[0].version, 2);
    assert!(!backward.is_end);
    let all = store.read_all(Position(1), 100).await.unwrap();
    let positions: Vec<u64> = all.iter().map(|e| e.position.0).collect();
    assert_eq!(positions, [1, 2, 3]);
    assert_eq!(all[2].stream_id, b);

    store
        .save_snapshot(&a, 2, 1, bytes::Bytes::from_static(b"state"))
        .await
        .unwrap();
    assert!(
        store
            .save_snapshot(&a, 3, 1, bytes::Bytes::from_static(b"x"))
            .await
            .is_err()
    );
    let snapshot = store.load_snapshot(&a).await.unwrap().unwrap();
    assert_eq!((snapshot.version, &snapshot.state[..]), (2, &b"state"[..]));
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.events, stats.streams, stats.snapshots), (3, 2, 1));
    store.close().await;
    schema.drop_it().await;
}

/// Follows the whole log from position 1 until it has `total` events.
async fn follow(store: PgStore, total: u64) -> Vec<RecordedEvent> {
    let mut subscription = store
        .subscribe(Position(1), EventFilter::all())
        .await
        .unwrap();
    let mut seen = Vec::new();
    while (seen.len() as u64) < total {
        let next = tokio::time::timeout(Duration::from_secs(60), subscription.next())
            .await
            .expect("an event within 60 s")
            .expect("the subscription goes on")
            .unwrap();
        seen.push(next);
    }
    seen
}

/// 16 writers in 4 stores (4 pools, as 4 processes would have), each
/// transaction held open a random while after taking its positions, and
/// 4 subscribers following the log: each subscriber sees exactly the
/// final log, with no gap and no duplicate. With `kill`, transactions
/// holding the lock are killed meanwhile, and their writers retry.
async fn skip_test(tag: &str, events: u64, kill: bool) {
    let Some(schema) = Schema::new(tag).await else {
        return;
    };
    let options = PgOptions {
        hold_transaction: Some(Duration::from_millis(3)),
        connections_max: 4,
        ..PgOptions::default()
    };
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(schema.store(options.clone()).await);
    }
    let subscribers: Vec<_> = (0..4)
        .map(|i| tokio::spawn(follow(stores[i].clone(), events)))
        .collect();
    let per_writer = events / 16;
    let done = Arc::new(AtomicBool::new(false));
    let killer = kill.then(|| {
        let (admin, done) = (schema.admin.clone(), done.clone());
        tokio::spawn(async move {
            let mut killed = 0u64;
            while !done.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE state = 'idle in transaction' AND pid <> pg_backend_pid() LIMIT 1) t",
                )
                .fetch_one(&admin)
                .await
                .unwrap();
                killed += n as u64;
            }
            killed
        })
    });
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let store = stores[w % 4].clone();
            tokio::spawn(async move {
                let stream = sid(&format!("writer-{w}"));
                let mut written = 0;
                while written < per_writer {
                    let batch: Vec<NewEvent> = (0..10).map(|i| event(written + i)).collect();
                    // Retried with the same ids until it lands (a killed
                    // transaction leaves it undone, or its outcome unknown).
                    loop {
                        match store
                            .append(&stream, ExpectedVersion::Exact(written), batch.clone())
                            .await
                        {
                            Ok(_) => break,
                            Err(Error::Remote(_) | Error::Indeterminate(_)) => {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            Err(e) => panic!("writer {w}: {e}"),
                        }
                    }
                    written += 10;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let total = per_writer * 16;
    let mut log = Vec::new();
    let mut next = Position(1);
    loop {
        let page = stores[0].read_all(next, 1000).await.unwrap();
        let Some(last) = page.last() else { break };
        next = last.position.next();
        log.extend(page);
    }
    assert_eq!(log.len() as u64, total);
    let positions: Vec<u64> = log.iter().map(|e| e.position.0).collect();
    assert!(positions.iter().copied().eq(1..=total), "the log has a gap");
    let ids: HashSet<_> = log.iter().map(|e| e.id).collect();
    assert_eq!(ids.len() as u64, total, "an event is in the log twice");
    for subscriber in subscribers {
        let seen = tokio::time::timeout(Duration::from_secs(120), subscriber)
            .await
            .unwrap()
            .unwrap();
        assert!(
            seen.iter().map(|e| e.id).eq(log.iter().map(|e| e.id)),
            "a subscriber saw another order than the log"
        );
    }
    if let Some(killer) = killer {
        let killed = killer.await.unwrap();
        assert!(killed > 0, "no transaction was killed");
    }
    for store in &stores {
        store.close().await;
    }
    schema.drop_it().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_never_skip_an_event_of_concurrent_writers() {
    skip_test("skip", 100_000, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_never_skip_an_event_when_a_writer_is_killed() {
    skip_test("kill", 100_000, true).await;
}

/// The whole stream as a forward read gives it.
async fn read_whole(store: &PgStore, stream: &StreamId) -> Vec<RecordedEvent> {
    store
        .read_stream(stream, ReadFrom::Start, Direction::Forward, 10_000)
        .await
        .unwrap()
        .events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_read_chunks_and_the_events_after_them() {
    let Some(schema) = Schema::new("chunks").await else {
        return;
    };
    let store = schema.store(PgOptions::default()).await;
    let (a, b) = (sid("order-a"), sid("order-b"));
    let mut n = 0;
    // Sizes that end short of, on and across hundreds, one append with two
    // streams at once.
    for size in [1, 98, 1, 7, 93, 150, 43, 1] {
        let events = |n: &mut u64| {
            (0..size)
                .map(|_| {
                    *n += 1;
                    event(*n)
                })
                .collect::<Vec<_>>()
        };
        store
            .append_many(vec![
                StreamAppend::new(a.clone(), ExpectedVersion::Any, events(&mut n)),
                StreamAppend::new(b.clone(), ExpectedVersion::Any, events(&mut n)),
            ])
            .await
            .unwrap();
        for stream in [&a, &b] {
            let loaded = store.load(stream, None).await.unwrap();
            assert_eq!(loaded.events, read_whole(&store, stream).await);
            assert_eq!(loaded.version, loaded.events.len() as u64);
        }
    }
    assert_eq!(store.load(&a, None).await.unwrap().version, 394);
    // After a snapshot inside a chunk, the load starts after it.
    store
        .save_snapshot(&a, 150, 1, bytes::Bytes::from_static(b"{}"))
        .await
        .unwrap();
    let loaded = store.load(&a, Some(1)).await.unwrap();
    assert_eq!(loaded.snapshot.unwrap().version, 150);
    assert_eq!(loaded.events, read_whole(&store, &a).await[150..]);
    let check = store.check().await.unwrap();
    assert!(check.is_ok(), "{:?}", check.problems);

    // A damaged chunk is reported by the check and refused by the load.
    let table = format!("{}.chunks", schema.name);
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE {table} SET events = events || '\\x00'::bytea WHERE stream_id = 'order-a' AND last_version = 200"
    )))
    .execute(&schema.admin)
    .await
    .unwrap();
    let check = store.check().await.unwrap();
    assert!(
        check.problems.iter().any(|p| p.contains("order-a")
            && p.contains("up to version 200")
            && p.contains("does not match")),
        "{:?}",
        check.problems
    );
    let broken = store.load(&a, None).await.unwrap_err();
    assert!(broken.to_string().contains("broken"), "{broken}");
    // A missing chunk too: named by the check, a gap to the load.
    sqlx::query(AssertSqlSafe(format!(
        "DELETE FROM {table} WHERE stream_id = 'order-a' AND last_version = 200"
    )))
    .execute(&schema.admin)
    .await
    .unwrap();
    let check = store.check().await.unwrap();
    assert!(
        check
            .problems
            .iter()
            .any(|p| p.contains("order-a") && p.contains("2 chunks")),
        "{:?}",
        check.problems
    );
    let gap = store.load(&a, None).await.unwrap_err();
    assert!(gap.to_string().contains("lacks its version 101"), "{gap}");
    store.close().await;

    // A schema from before chunks gets them when a store connects.
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP TABLE {table}; DELETE FROM {}.migrations WHERE step = 3",
        schema.name
    )))
    .execute(&schema.admin)
    .await
    .unwrap();
    let store = schema.store(PgOptions::default()).await;
    let check = store.check().await.unwrap();
    assert!(check.is_ok(), "{:?}", check.problems);
    for stream in [&a, &b] {
        let loaded = store.load(stream, None).await.unwrap();
        assert_eq!(loaded.events, read_whole(&store, stream).await);
    }
    let chunks: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(&schema.admin)
        .await
        .unwrap();
    assert_eq!(chunks, 6);
    store.close().await;
    schema.drop_it().await;
}
