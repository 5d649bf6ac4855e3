//! Concurrency: retries that race, optimistic concurrency under contention,
//! and many writers with subscribers and readers running at the same time.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use event_store::{
    Direction, Error, EventFilter, EventStore, ExpectedVersion, Position, ReadFrom, StoreOptions,
};

use super::{event, joined, next_within, read_everything, sid, small_segments};

async fn concurrent_retries_in_one_group_commit_write_once(store: Arc<dyn EventStore>) {
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

async fn exactly_one_writer_wins_each_version(store: Arc<dyn EventStore>) {
    let s = sid("contended");
    let per_task = 10u64;
    let tasks: Vec<_> = (0..32u64)
        .map(|task| {
            let store = store.clone();
            let s = s.clone();
            tokio::spawn(async move {
                let mut won = Vec::new();
                let mut conflicts = 0u64;
                while (won.len() as u64) < per_task {
                    let current = store
                        .read_stream(&s, ReadFrom::End, Direction::Backward, 1)
                        .await
                        .unwrap()
                        .stream_version;
                    let e = event(task * 1000 + won.len() as u64);
                    match store
                        .append(&s, ExpectedVersion::Exact(current), vec![e.clone()])
                        .await
                    {
                        Ok(r) => {
                            assert_eq!(r.first_version, current + 1);
                            won.push((r.first_version, e.id));
                        }
                        Err(Error::WrongExpectedVersion { current: now, .. }) => {
                            assert!(now > current, "a conflict must report a newer version");
                            conflicts += 1;
                        }
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
                (won, conflicts)
            })
        })
        .collect();
    let mut winners: HashMap<u64, uuid::Uuid> = HashMap::new();
    let mut conflicts = 0;
    for t in tasks {
        let (won, c) = joined(t).await;
        conflicts += c;
        for (version, id) in won {
            assert!(
                winners.insert(version, id).is_none(),
                "version {version} won twice"
            );
        }
    }
    let total = 32 * per_task;
    assert_eq!(winners.len() as u64, total);
    assert_eq!(
        winners.keys().copied().collect::<BTreeSet<_>>(),
        (1..=total).collect::<BTreeSet<_>>()
    );
    assert!(
        conflicts > 0,
        "32 writers on one stream should have collided"
    );
    let slice = store
        .read_stream(&s, ReadFrom::Start, Direction::Forward, 1000)
        .await
        .unwrap();
    assert_eq!(slice.events.len() as u64, total);
    for e in &slice.events {
        assert_eq!(
            winners[&e.version], e.id,
            "the stored event is not the winner's"
        );
    }
}

async fn subscribers_see_every_event_once_in_order_while_writers_and_readers_run(
    store: Arc<dyn EventStore>,
) {
    // Some history first, so subscribers catch up before going live.
    for i in 0..50 {
        store
            .append(
                &sid(&format!("order-{}", i % 7)),
                ExpectedVersion::Any,
                vec![event(i)],
            )
            .await
            .unwrap();
    }
    let writers = 16u64;
    let per_writer = 40u64;
    let total = 50 + writers * per_writer;

    let half = writers / 2 * per_writer;
    let mut subscribers = Vec::new();
    for (from, filter, count) in [
        (Position::START, EventFilter::all(), total),
        (Position(20), EventFilter::all(), total - 19),
        (
            Position::START,
            EventFilter::stream_prefix("order-"),
            50 + half,
        ),
        (Position::START, EventFilter::event_types(["Other"]), half),
    ] {
        let mut sub = store.subscribe(from, filter.clone()).await.unwrap();
        subscribers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while (seen.len() as u64) < count {
                let e = next_within(&mut sub).await.unwrap().unwrap();
                seen.push(e);
            }
            (from, filter, seen)
        }));
    }

    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_writer {
                let (stream, kind) = if w % 2 == 0 {
                    (format!("order-w{w}"), "Happened")
                } else {
                    (format!("customer-w{w}"), "Other")
                };
                let mut e = event(i);
                e.event_type = kind.into();
                store
                    .append(&sid(&stream), ExpectedVersion::Exact(i), vec![e])
                    .await
                    .unwrap();
            }
        }));
    }
    // Readers run alongside.
    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            for _ in 0..50 {
                let all = read_everything(&*store).await;
                assert!(
                    all.windows(2)
                        .all(|w| w[1].position.0 == w[0].position.0 + 1)
                );
                let s = store
                    .read_stream(&sid("order-w0"), ReadFrom::Start, Direction::Forward, 1000)
                    .await
                    .unwrap();
                assert!(
                    s.events
                        .windows(2)
                        .all(|w| w[1].version == w[0].version + 1)
                );
            }
        })
    };
    for t in tasks {
        joined(t).await;
    }
    joined(reader).await;

    let log = read_everything(&*store).await;
    assert_eq!(log.len() as u64, total);
    for sub in subscribers {
        let (from, filter, seen) = joined(sub).await;
        let expected: Vec<_> = log
            .iter()
            .filter(|e| e.position >= from && filter.matches(e.stream_id.as_str(), &e.event_type))
            .map(|e| e.position)
            .collect();
        let got: Vec<_> = seen.iter().map(|e| e.position).collect();
        assert_eq!(got, expected, "subscription from {from:?} with {filter:?}");
    }
}

/// Subscribers that fall behind the writers and read ahead from the log
/// again, while segments roll over under them.
fn lagging_subscribers() -> StoreOptions {
    StoreOptions {
        subscription_buffer: 16,
        ..small_segments()
    }
}

backends! {
    concurrent_retries_in_one_group_commit_write_once,
    exactly_one_writer_wins_each_version,
    subscribers_see_every_event_once_in_order_while_writers_and_readers_run {
        options: lagging_subscribers(),
    },
}
