//! The store over loopback HTTP beside the same store in process, in one
//! run: `cargo bench -p event-store-http --bench loopback`.
//!
//! Appends: 1, 8 and 64 writers, each appending one 200-byte JSON event at
//! a time to a stream of its own, guarded by its expected version, for
//! `ANNALS_BENCH_SECONDS` (default 5) each, through `RemoteStore` to a
//! server on loopback and straight to the store, in one-second turns.
//!
//! Reads: fills a store with `ANNALS_BENCH_EVENTS` events (default 1,000,000) of
//! 200-byte JSON in 1,000 streams, serves it on loopback (on a runtime of
//! its own, as `annals store` would be a process of its own), and reads
//! everything from the start in the server's page size, three ways: pages
//! in JSON (what curl gets), pages in binary (`application/vnd.annals.events`,
//! what `RemoteStore::read_all` asks for), and binary pages asked for one
//! ahead of the consumer (`RemoteStore::read_all_ahead`). The store read in
//! process, in the same pages, is the baseline. Each row is the best of
//! three passes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark aborts on failure"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bench_harness::Table;
use event_store::{
    EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent, Store, StoreOptions,
    StreamAppend, StreamId,
};
use event_store_http::wire::{self, WireEvents};
use event_store_http::{RemoteOptions, RemoteStore, ServerConfig, router};
use futures_util::StreamExt;

const STREAMS: u64 = 1000;
/// Streams per append (the default limit is 64), ten events each.
const APPEND_STREAMS: u64 = 50;

fn main() {
    let events: u64 = bench_harness::env::events_or(1_000_000);
    let root = bench_harness::env::data_root().unwrap();
    let server_rt = bench_harness::env::runtime().unwrap();
    let (store, addr) = server_rt.block_on(async {
        let store = Store::open(root.path(), StoreOptions::default())
            .await
            .unwrap();
        fill(&store, events).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(Arc::new(store.clone()), ServerConfig::default());
        // As `annals store` serves it (Nagle off, limits, graceful stop).
        tokio::spawn(http_edge::serve(
            listener,
            app,
            http_edge::ServeConfig::default(),
            std::future::pending(),
        ));
        (store, addr)
    });
    let url = format!("http://{addr}");
    let rt = bench_harness::env::runtime().unwrap();
    let mut appends = Table::new()
        .left("guarded appends, 1 event each")
        .right("in process, events/s")
        .right("over loopback, events/s")
        .right("loopback ÷ in process");
    let seconds = bench_harness::env::seconds_or(5);
    rt.block_on(async {
        let remote = RemoteStore::connect(&url, RemoteOptions::default())
            .await
            .unwrap();
        for writers in [1usize, 8, 64] {
            let local: Arc<dyn EventStore> = Arc::new(store.clone());
            let over_http: Arc<dyn EventStore> = Arc::new(remote.clone());
            let (mut here, mut there) = (0u64, 0u64);
            let turns = seconds.as_secs().max(1);
            for turn in 0..turns {
                let tag = format!("w{writers}-t{turn}");
                here += append_for(&local, &format!("{tag}-local"), writers).await;
                there += append_for(&over_http, &format!("{tag}-http"), writers).await;
            }
            let rate = |n: u64| n as f64 / turns as f64;
            appends.row([
                format!("{writers} writer{}", if writers == 1 { "" } else { "s" }),
                format!("{:.0}", rate(here)),
                format!("{:.0}", rate(there)),
                format!("{:.2}×", rate(there) / rate(here)),
            ]);
        }
    });
    println!("\nAppends over loopback HTTP beside the same store in process");
    appends.print();

    let mut table = Table::new()
        .left("read all from the start")
        .right("events/s")
        .right("÷ JSON pages");
    // Everything in the log: the fill and the appends above.
    let events = server_rt.block_on(store.head()).unwrap().0;
    rt.block_on(async {
        let remote = RemoteStore::connect(&url, RemoteOptions::default())
            .await
            .unwrap();
        let page = remote.read_page_max();
        let local = best(|| in_process(&store, page), events).await;
        let json = best(|| json_pages(&url, page), events).await;
        let binary = best(|| binary_pages(&remote, page), events).await;
        let ahead = best(|| pages_ahead(&remote, page), events).await;
        let rate = |d: Duration| events as f64 / d.as_secs_f64();
        for (name, took) in [
            (format!("in process, pages of {page} (baseline)"), local),
            (format!("JSON pages of {page}"), json),
            (format!("binary pages of {page}"), binary),
            (format!("binary pages of {page}, one asked ahead"), ahead),
        ] {
            table.row([
                name,
                format!("{:.0}", rate(took)),
                format!("{:.2}×", rate(took) / rate(json)),
            ]);
        }
    });
    println!("\nRead all over loopback HTTP ({events} events, most of 200-byte JSON)");
    table.print();
    drop(rt);
    server_rt.block_on(async { store.close().await.unwrap() });
}

/// Events appended in one second by `writers` writers, each to a stream
/// of its own, one guarded event at a time.
async fn append_for(store: &Arc<dyn EventStore>, tag: &str, writers: usize) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let store = store.clone();
        let stream = StreamId::new(format!("{tag}-{w}")).unwrap();
        tasks.spawn(async move {
            let mut version = 0;
            while Instant::now() < deadline {
                let expected = if version == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(version)
                };
                let event = NewEvent::new("Appended", bench_harness::payload::json_200(version));
                store.append(&stream, expected, vec![event]).await.unwrap();
                version += 1;
            }
            version
        });
    }
    let mut total = 0;
    while let Some(done) = tasks.join_next().await {
        total += done.unwrap();
    }
    total
}

/// Appends of ten events to each of 50 streams until `events` are in.
async fn fill(store: &Store, events: u64) {
    let mut n = 0;
    while n < events {
        let appends: Vec<StreamAppend> = (0..APPEND_STREAMS)
            .map(|s| StreamAppend {
                stream_id: StreamId::new(format!("bench-{}", (n / 10 + s) % STREAMS)).unwrap(),
                expected: ExpectedVersion::Any,
                events: (0..10)
                    .map(|i| {
                        NewEvent::new("Read", bench_harness::payload::json_200(n + s * 10 + i))
                    })
                    .collect(),
            })
            .collect();
        store.append_many(appends).await.unwrap();
        n += 10 * APPEND_STREAMS;
    }
}

/// The fastest of three passes, each checked to read every event.
async fn best<F, Fut>(pass: F, events: u64) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    let mut fastest = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let read = pass().await;
        fastest = fastest.min(started.elapsed());
        assert_eq!(read, events, "every event read");
    }
    fastest
}

/// Touches what a consumer would: the position and the data.
fn consume(events: &[RecordedEvent]) {
    for e in events {
        std::hint::black_box((e.position.0, e.data.len()));
    }
}

/// Reads every page from the start, each asked for once the one before
/// was consumed, and counts the events.
async fn read_pages<F, Fut>(mut page_from: F) -> u64
where
    F: FnMut(Position) -> Fut,
    Fut: std::future::Future<Output = Vec<RecordedEvent>>,
{
    let mut from = Position(1);
    let mut count = 0;
    loop {
        let events = page_from(from).await;
        let Some(last) = events.last() else {
            return count;
        };
        consume(&events);
        from = Position(last.position.0 + 1);
        count += events.len() as u64;
    }
}

async fn in_process(store: &Store, page: usize) -> u64 {
    read_pages(|from| async move { store.read_all(from, page).await.unwrap() }).await
}

async fn json_pages(url: &str, page: usize) -> u64 {
    http_edge::tls::install_default_provider();
    let http = reqwest::Client::new();
    read_pages(|from| {
        let request = http
            .get(format!("{url}/all"))
            .query(&[("from", from.0), ("max_count", page as u64)]);
        async move {
            let body: WireEvents = request.send().await.unwrap().json().await.unwrap();
            body.events
                .into_iter()
                .map(wire::event_from_wire)
                .collect::<Result<_, _>>()
                .unwrap()
        }
    })
    .await
}

async fn binary_pages(remote: &RemoteStore, page: usize) -> u64 {
    read_pages(|from| async move { remote.read_all(from, page).await.unwrap() }).await
}

async fn pages_ahead(remote: &RemoteStore, page: usize) -> u64 {
    let mut pages = std::pin::pin!(remote.read_all_ahead(Position(1), page));
    let mut count = 0;
    while let Some(events) = pages.next().await {
        let events = events.unwrap();
        consume(&events);
        count += events.len() as u64;
    }
    count
}
