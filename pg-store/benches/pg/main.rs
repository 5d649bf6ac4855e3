//! The event store on PostgreSQL beside its peer postgres-es (the
//! PostgreSQL repository of cqrs-es) and beside the segment store, same
//! workloads, one run: `cargo bench -p pg-store --bench pg`.
//!
//! postgres-es is driven through its repository, as its framework drives
//! it: `persist` of a writer's new events (its primary key on the
//! aggregate and sequence is the expected-version check), `get_events` to
//! load an aggregate, `stream_all_events` to replay, with a pool as large
//! as annals's. It has no global order to keep, so it takes no lock
//! across writers.
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

mod peer;

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
        let peer = peer::Peer::connect(&database.url, 32).await;
        appends(&segments, &pg, &peer, seconds).await;
        reads(&segments, &pg, &peer, events).await;
        segments.close().await.unwrap();
        pg.close().await;
        peer.close().await;
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

async fn appends(segments: &Store, pg: &PgStore, peer: &peer::Peer, time: Duration) {
    let mut table = Table::new()
        .left("appends (200-byte events, expected version)")
        .right("annals on PostgreSQL events/s")
        .right("postgres-es events/s")
        .right("annals ÷ postgres-es")
        .right("segment store events/s")
        .right("PostgreSQL ÷ segment");
    for batch in [1, 10] {
        for writers in [1, 8, 64] {
            let run = format!("w{writers}b{batch}");
            let on_pg = append_rate(Arc::new(pg.clone()), &run, writers, batch, time).await;
            let on_peer = peer.append_rate(&run, writers, batch, time).await;
            let on_segments =
                append_rate(Arc::new(segments.clone()), &run, writers, batch, time).await;
            table.row(compared(
                format!("{writers} writers × {batch}"),
                [on_pg, on_peer, on_segments],
                0,
            ));
        }
    }
    table.print();
    println!();
}

/// A row of the tables: annals on PostgreSQL, postgres-es and the
/// segment store (figures with `digits` decimals), and annals on
/// PostgreSQL divided by each of the other two.
fn compared(label: String, [pg, peer, segments]: [f64; 3], digits: usize) -> [String; 6] {
    [
        label,
        format!("{pg:.digits$}"),
        format!("{peer:.digits$}"),
        format!("{:.2}", pg / peer),
        format!("{segments:.digits$}"),
        format!("{:.2}", pg / segments),
    ]
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

/// Loads before the timed ones: each of the pool's connections prepares
/// the load's statement the first time it runs it, once per connection,
/// which a running service has long done.
pub const WARM_UP_LOADS: u64 = 64;

/// The bench's event data as an application reads it (the shape of
/// `bench_harness::payload::json_200`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Payment {
    pub customer_id: String,
    pub amount: u64,
    pub currency: String,
    pub note: String,
}

/// What a timed load does with the events.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Load {
    /// Nothing: the store's load alone.
    Raw,
    /// Decodes every event's data into a [`Payment`] and folds it into a
    /// state, as loading an aggregate does.
    Aggregate,
}

impl Load {
    /// Which streams the timed loads take (each kind its own, so that no
    /// row finds the pages another row read warm).
    pub fn stream(self, i: u64, streams: u64) -> String {
        let offset = match self {
            Load::Raw => 0,
            Load::Aggregate => streams / 2,
        };
        format!("fill-{}", (i * 7919 + offset) % streams)
    }
}

/// Median time of a load of a whole stream, over 50 streams, after
/// [`WARM_UP_LOADS`] loads of others.
async fn load_time(store: &dyn EventStore, streams: u64, load: Load) -> Duration {
    for i in 0..WARM_UP_LOADS {
        let stream = StreamId::new(format!("fill-{}", (i * 104_729 + 1) % streams)).unwrap();
        store.load(&stream, None).await.unwrap();
    }
    let mut times = Vec::new();
    for i in 0..50 {
        let stream = StreamId::new(load.stream(i, streams)).unwrap();
        let started = Instant::now();
        let loaded = store.load(&stream, None).await.unwrap();
        if load == Load::Aggregate {
            let total: u64 = loaded
                .events
                .iter()
                .map(|e| serde_json::from_slice::<Payment>(&e.data).unwrap().amount)
                .sum();
            std::hint::black_box(total);
        }
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

async fn reads(segments: &Store, pg: &PgStore, peer: &peer::Peer, events: u64) {
    let events = events.max(STREAM_EVENTS);
    let streams = events / STREAM_EVENTS;
    // A fresh schema's worth of events beside the appends above.
    let timed = |started: Instant| started.elapsed();
    let started = Instant::now();
    fill(pg, events).await;
    let pg_fill = timed(started);
    let started = Instant::now();
    peer.fill(events, STREAM_EVENTS).await;
    let peer_fill = timed(started);
    let started = Instant::now();
    fill(segments, events).await;
    let segments_fill = timed(started);
    let mut table = Table::new()
        .left("a store of the appends above and the fill")
        .right("annals on PostgreSQL")
        .right("postgres-es")
        .right("annals ÷ postgres-es")
        .right("segment store")
        .right("PostgreSQL ÷ segment");
    let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64();
    let (pg_rate, peer_rate, segments_rate) = (
        rate(events, pg_fill),
        rate(events, peer_fill),
        rate(events, segments_fill),
    );
    table.row(compared(
        format!("fill {events} events, events/s"),
        [pg_rate, peer_rate, segments_rate],
        0,
    ));
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for (load, what) in [
        (Load::Raw, "load"),
        (Load::Aggregate, "load and decode into typed events"),
    ] {
        let (on_pg, on_peer, on_segments) = (
            load_time(pg, streams, load).await,
            peer.load_time(streams, STREAM_EVENTS, load).await,
            load_time(segments, streams, load).await,
        );
        table.row(compared(
            format!("{what}: one {STREAM_EVENTS}-event stream, p50 ms"),
            [ms(on_pg), ms(on_peer), ms(on_segments)],
            2,
        ));
    }
    let (on_pg, on_peer, on_segments) = (
        read_all_rate(pg).await,
        peer.replay_rate().await,
        read_all_rate(segments).await,
    );
    table.row(compared(
        "read all (postgres-es: replay), events/s".to_owned(),
        [on_pg, on_peer, on_segments],
        0,
    ));
    table.print();
}
