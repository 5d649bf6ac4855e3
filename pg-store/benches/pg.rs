//! The event store on PostgreSQL beside the segment store, same workloads,
//! one run: `cargo bench -p pg-store --bench pg`.
//!
//! Appends: 1, 8 and 64 writers, each appending batches of 1 or 10
//! 200-byte JSON events to a stream of its own, guarded by its expected
//! version, for `ANNALS_BENCH_SECONDS` (default 5) each. Then a store of
//! `ANNALS_BENCH_EVENTS` (default 1,000,000) events in streams of 1,000:
//! loading one stream whole (median of 50 loads of different streams)
//! and reading the whole log in pages of 1,000. PostgreSQL at
//! `ANNALS_BENCH_DATABASE_URL`, in a database of its own dropped after.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark aborts on failure"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bench_harness::Table;
use event_store::{
    EventStore, ExpectedVersion, NewEvent, Position, Store, StoreOptions, StreamAppend, StreamId,
};
use pg_store::{PgOptions, PgStore};

const STREAM_EVENTS: u64 = 1000;

fn main() {
    let seconds = bench_harness::env::seconds_or(5);
    let events: u64 = bench_harness::env::events_or(1_000_000);
    let root = bench_harness::env::data_root().unwrap();
    let runtime = bench_harness::env::runtime().unwrap();
    runtime.block_on(async {
        let url = bench_harness::env::database_url();
        if !bench_harness::pg::PgDatabase::reachable(&url).await {
            assert!(
                !bench_harness::env::in_ci(),
                "PostgreSQL at {url} is required under CI"
            );
            return;
        }
        // A database of the run's own, dropped with the value.
        let database = bench_harness::pg::PgDatabase::create(&url).await.unwrap();
        let options = PgOptions {
            connections_max: 32,
            ..PgOptions::default()
        };
        let pg = PgStore::connect(&database.url, options).await.unwrap();
        let segments = Store::open(root.path(), StoreOptions::default())
            .await
            .unwrap();
        appends(&segments, &pg, seconds).await;
        reads(&segments, &pg, events).await;
        segments.close().await.unwrap();
        pg.close().await;
    });
}

fn event(n: u64) -> NewEvent {
    NewEvent::new("Happened", bench_harness::payload::json_200(n))
}

/// Events appended per second by `writers` writers of `batch` events each
/// for `time`, each to its own stream (named after `run`).
async fn append_rate(
    store: Arc<dyn EventStore>,
    run: &str,
    writers: usize,
    batch: u64,
    time: Duration,
) -> f64 {
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            let stream = StreamId::new(format!("{run}-{w}")).unwrap();
            tokio::spawn(async move {
                let mut version = 0;
                while started.elapsed() < time {
                    let events = (0..batch).map(|i| event(version + i)).collect();
                    store
                        .append(&stream, ExpectedVersion::Exact(version), events)
                        .await
                        .unwrap();
                    version += batch;
                }
                version
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    total as f64 / started.elapsed().as_secs_f64()
}

async fn appends(segments: &Store, pg: &PgStore, time: Duration) {
    let mut table = Table::new()
        .left("appends (200-byte events, expected version)")
        .right("segment store events/s")
        .right("PostgreSQL events/s")
        .right("PostgreSQL ÷ segment");
    for batch in [1, 10] {
        for writers in [1, 8, 64] {
            let run = format!("w{writers}b{batch}");
            let on_segments =
                append_rate(Arc::new(segments.clone()), &run, writers, batch, time).await;
            let on_pg = append_rate(Arc::new(pg.clone()), &run, writers, batch, time).await;
            table.row([
                format!("{writers} writers × {batch}"),
                format!("{on_segments:.0}"),
                format!("{on_pg:.0}"),
                format!("{:.2}", on_pg / on_segments),
            ]);
        }
    }
    table.print();
    println!();
}

/// Fills `store` with `events` events in streams of [`STREAM_EVENTS`].
async fn fill(store: &dyn EventStore, events: u64) {
    let streams = events / STREAM_EVENTS;
    // 50 streams × 10 events per append.
    for round in 0..STREAM_EVENTS / 10 {
        for first in (0..streams).step_by(50) {
            let appends = (first..(first + 50).min(streams))
                .map(|s| {
                    StreamAppend::new(
                        StreamId::new(format!("fill-{s}")).unwrap(),
                        ExpectedVersion::Exact(round * 10),
                        (0..10).map(|i| event(round * 10 + i)).collect(),
                    )
                })
                .collect();
            store.append_many(appends).await.unwrap();
        }
    }
}

/// Median time to load a whole stream, over 50 streams.
async fn load_time(store: &dyn EventStore, streams: u64) -> Duration {
    let mut times = Vec::new();
    for i in 0..50 {
        let stream = StreamId::new(format!("fill-{}", (i * 7919) % streams)).unwrap();
        let started = Instant::now();
        let loaded = store.load(&stream, None).await.unwrap();
        times.push(started.elapsed());
        assert_eq!(loaded.events.len() as u64, STREAM_EVENTS);
    }
    times.sort();
    times[times.len() / 2]
}

/// Events read per second, reading the whole log in pages of 1,000.
async fn read_all_rate(store: &dyn EventStore) -> f64 {
    let started = Instant::now();
    let mut next = Position(1);
    let mut read = 0u64;
    loop {
        let page = store.read_all(next, 1000).await.unwrap();
        let Some(last) = page.last() else { break };
        next = last.position.next();
        read += page.len() as u64;
    }
    read as f64 / started.elapsed().as_secs_f64()
}

async fn reads(segments: &Store, pg: &PgStore, events: u64) {
    let events = events.max(STREAM_EVENTS);
    let streams = events / STREAM_EVENTS;
    // A fresh schema's worth of events beside the appends above.
    let filled = Instant::now();
    fill(segments, events).await;
    let segments_fill = filled.elapsed();
    let filled = Instant::now();
    fill(pg, events).await;
    let pg_fill = filled.elapsed();
    let mut table = Table::new()
        .left("reads")
        .right("segment store")
        .right("PostgreSQL")
        .right("PostgreSQL ÷ segment");
    let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64();
    table.row([
        format!("fill {events} events, events/s"),
        format!("{:.0}", rate(events, segments_fill)),
        format!("{:.0}", rate(events, pg_fill)),
        format!("{:.2}", rate(events, pg_fill) / rate(events, segments_fill)),
    ]);
    let (on_segments, on_pg) = (
        load_time(segments, streams).await,
        load_time(pg, streams).await,
    );
    table.row([
        format!("load one {STREAM_EVENTS}-event stream, p50 ms"),
        format!("{:.2}", on_segments.as_secs_f64() * 1e3),
        format!("{:.2}", on_pg.as_secs_f64() * 1e3),
        format!("{:.2}", on_pg.as_secs_f64() / on_segments.as_secs_f64()),
    ]);
    let (on_segments, on_pg) = (read_all_rate(segments).await, read_all_rate(pg).await);
    table.row([
        "read all, events/s".to_owned(),
        format!("{on_segments:.0}"),
        format!("{on_pg:.0}"),
        format!("{:.2}", on_pg / on_segments),
    ]);
    table.print();
}
