//! The event store benchmark: `cargo bench -p event-store --bench store`.
//!
//! Prints one table per measurement, each beside a baseline taken in the same
//! run: the disk's raw fdatasync rates (4 KiB write + fdatasync in a loop, in
//! the same directory, appending to a file and overwriting a preallocated
//! one) for appends, and a straight in-memory copy for reads.
//!
//! `ANNALS_BENCH_DIR` chooses where the data goes (default: a temporary
//! directory next to the target dir); `ANNALS_BENCH_EVENTS` the size of the
//! read store (default 1,000,000); `ANNALS_BENCH_SECONDS` the length of each
//! append row (default 4); `ANNALS_BENCH_ONLY=appends` stops after the
//! appends table.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark aborts on failure"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use bench_harness::latency::ms;
use bench_harness::{Baselines, Latencies, Table};
use event_store::{
    Direction, EventFilter, EventStore, ExpectedVersion, NewEvent, Position, ReadFrom, Store,
    StoreOptions, StreamAppend, StreamId,
};

/// Counts live heap bytes, to report what the store keeps in memory.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: delegates to the system allocator; only adds a counter.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn event(n: u64) -> NewEvent {
    NewEvent::new("CreditReserved", bench_harness::payload::json_200(n))
}

/// How the active segment gets its space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Space {
    /// Reserved ahead of the appends (the default).
    Reserved,
    /// Grown by every append (`preallocate_bytes: 0`).
    Growing,
}

/// `writers` concurrent writers appending `batch` events at a time for
/// `run_for`: events per second and the appends' latencies.
async fn append_run(
    dir: &Path,
    writers: usize,
    batch: usize,
    space: Space,
    run_for: Duration,
) -> (f64, Latencies) {
    let options = StoreOptions {
        preallocate_bytes: match space {
            Space::Reserved => StoreOptions::default().preallocate_bytes,
            Space::Growing => 0,
        },
        ..StoreOptions::default()
    };
    let store = Store::open(dir, options).await.unwrap();
    let deadline = Instant::now() + run_for;
    let load = bench_harness::run_clients(writers, |w| {
        let store = store.clone();
        async move {
            let mut tally = bench_harness::Tally::default();
            let mut n = 0u64;
            let stream = StreamId::new(format!("bench-{w}")).unwrap();
            while Instant::now() < deadline {
                let events = (0..batch).map(|i| event(n + i as u64)).collect();
                let t = Instant::now();
                store
                    .append(&stream, ExpectedVersion::Any, events)
                    .await
                    .unwrap();
                tally.record(t, true);
                n += batch as u64;
            }
            tally
        }
    })
    .await;
    store.close().await.unwrap();
    (load.rate() * batch as f64, load.latencies)
}

const SMALL: &str = "customer-small";
const LARGE: &str = "customer-large";

/// Builds the read store: `total` events over many segments. Most streams
/// hold 10 consecutive events. Two long-lived streams come back after a long
/// pause, so loading them walks past segments that do not hold them (what
/// the bloom filters are for): `customer-small` has 5 events near the start
/// of the log and 5 near the end, `customer-large` 500 events in its first
/// tenth and 500 in its last.
async fn build_read_store(dir: &Path, total: u64, options: StoreOptions) {
    let store = Store::open(dir, options).await.unwrap();
    let batch = 1000u64;
    let small_at = [total / 100, total * 97 / 100];
    let large_spans = [
        (total * 5 / 100, total * 10 / 100),
        (total * 90 / 100, total * 95 / 100),
    ];
    let large_every = ((large_spans[0].1 - large_spans[0].0) / 500).max(1);
    let (mut small_written, mut large_written) = (0u64, 0u64);
    let mut n = 0u64;
    while n < total {
        let end = (n + batch).min(total);
        let mut small = Vec::new();
        let mut large = Vec::new();
        let mut by_stream: Vec<(String, Vec<NewEvent>)> = Vec::new();
        while n < end {
            if small_at.iter().any(|s| (*s..*s + 5).contains(&n)) && small_written < 10 {
                small.push(event(n));
                small_written += 1;
            } else if large_spans
                .iter()
                .any(|(a, b)| (*a..*b).contains(&n) && (n - a).is_multiple_of(large_every))
                && large_written < 1000
            {
                large.push(event(n));
                large_written += 1;
            } else {
                let name = format!("customer-{:08}", n / 10);
                match by_stream.last_mut() {
                    Some((s, v)) if *s == name => v.push(event(n)),
                    _ => by_stream.push((name, vec![event(n)])),
                }
            }
            n += 1;
        }
        let mut appends: Vec<StreamAppend> = by_stream
            .into_iter()
            .map(|(s, v)| StreamAppend::new(StreamId::new(s).unwrap(), ExpectedVersion::Any, v))
            .collect();
        for (name, events) in [(SMALL, small), (LARGE, large)] {
            if !events.is_empty() {
                appends.push(StreamAppend::new(
                    StreamId::new(name).unwrap(),
                    ExpectedVersion::Any,
                    events,
                ));
            }
        }
        // The store limits streams per append.
        while !appends.is_empty() {
            let rest = appends.split_off(appends.len().min(60));
            store.append_many(appends).await.unwrap();
            appends = rest;
        }
    }
    assert_eq!(
        (small_written, large_written),
        (10, 1000),
        "the long-lived streams are complete"
    );
    store.close().await.unwrap();
}

/// Loading one stream, `rounds` times.
struct StreamLoads {
    times: Latencies,
    /// Per load: sealed segments the bloom filters ruled out, and indexes
    /// searched.
    skipped: u64,
    searched: u64,
}

async fn load_times(store: &Store, stream: &str, rounds: usize) -> StreamLoads {
    let id = StreamId::new(stream).unwrap();
    let before = store.stats().await.unwrap();
    let mut times = Vec::with_capacity(rounds);
    let mut count = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        let slice = store
            .read_stream(&id, ReadFrom::Start, Direction::Forward, 10_000)
            .await
            .unwrap();
        times.push(t.elapsed());
        count = slice.events.len();
    }
    assert!(count == 10 || count == 1000, "{stream}: {count} events");
    let after = store.stats().await.unwrap();
    StreamLoads {
        times: Latencies::new(times),
        skipped: (after.segments_skipped_by_bloom - before.segments_skipped_by_bloom)
            / rounds as u64,
        searched: (after.segments_searched - before.segments_searched) / rounds as u64,
    }
}

fn main() {
    bench_harness::env::runtime().unwrap().block_on(run());
}

async fn run() {
    let root = bench_harness::env::data_root().unwrap();
    let total: u64 = bench_harness::env::events_or(1_000_000);

    let baselines = Baselines::measure(root.path()).unwrap();
    baselines.print();
    appends(root.path(), &baselines).await;
    if bench_harness::env::only().as_deref() == Some("appends") {
        return;
    }

    let dir = root.path().join("read");
    let t = Instant::now();
    build_read_store(&dir, total, read_options()).await;
    let build = t.elapsed();
    let store = open_measuring_heap(&dir, build).await;

    println!("\nLoading one stream (read_stream from version 1), median of 200");
    let mut table = Table::new()
        .left("stream")
        .right("events")
        .left("bloom filters")
        .right("p50 ms")
        .right("p99 ms")
        .right("sealed segments skipped by bloom")
        .right("indexes searched");
    stream_loads(&store, "on", &mut table).await;
    store.close().await.unwrap();
    let store = Store::open(
        &dir,
        StoreOptions {
            use_bloom_filters: false,
            ..read_options()
        },
    )
    .await
    .unwrap();
    stream_loads(&store, "off", &mut table).await;
    table.print();

    whole_log_reads(&store, &dir).await;
    store.close().await.unwrap();
}

/// The read store's options: segments small enough that the log spans
/// several.
fn read_options() -> StoreOptions {
    StoreOptions {
        segment_bytes_max: 32 << 20,
        ..StoreOptions::default()
    }
}

/// The appends table: every combination of writers and events per append,
/// each in a fresh directory under `root`.
async fn appends(root: &Path, baselines: &Baselines) {
    println!("Appends, fsync on, 200-byte JSON events");
    let mut table = Table::new()
        .right("writers")
        .right("events/append")
        .left("segment space")
        .right("events/s")
        .right("appends/s")
        .right("p50 ms")
        .right("p99 ms")
        .right("events/s ÷ raw fdatasync/s")
        .right("events/s ÷ overwrite fdatasync/s");
    let run_for = bench_harness::env::seconds_or(4);
    // The growing row shows what reserving space ahead saves.
    let rows = [
        (1, 1, Space::Reserved),
        (1, 1, Space::Growing),
        (8, 1, Space::Reserved),
        (64, 1, Space::Reserved),
        (1, 10, Space::Reserved),
        (8, 10, Space::Reserved),
        (64, 10, Space::Reserved),
    ];
    for (writers, batch, space) in rows {
        eprintln!("appends: writers {writers}, events per append {batch}, {space:?}");
        let dir = root.join(format!("append-{writers}-{batch}-{space:?}"));
        let (rate, latencies) = append_run(&dir, writers, batch, space, run_for).await;
        let [growing, overwrite] = baselines.times(rate, 1);
        table.row([
            writers.to_string(),
            batch.to_string(),
            format!("{space:?}").to_lowercase(),
            format!("{rate:.0}"),
            format!("{:.0}", rate / batch as f64),
            ms(latencies.percentile(0.5), 3),
            ms(latencies.percentile(0.99), 3),
            growing,
            overwrite,
        ]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
    table.print();
}

/// Opens the read store in `dir`, printing its size and the heap the open
/// store holds.
async fn open_measuring_heap(dir: &Path, build: Duration) -> Store {
    let heap_before = LIVE.load(Ordering::Relaxed);
    let store = Store::open(dir, read_options()).await.unwrap();
    let heap = LIVE.load(Ordering::Relaxed) - heap_before;
    let stats = store.stats().await.unwrap();
    println!(
        "\nRead store: {} events, {} streams, {} segments ({} sealed), {:.0} MB, built in {:.1} s",
        stats.events,
        stats.streams,
        stats.segments,
        stats.sealed_segments,
        stats.bytes as f64 / 1e6,
        build.as_secs_f64()
    );
    println!(
        "Heap after open: {} bytes = {:.1} bytes per stream ({:.2} bytes per event)",
        heap,
        heap as f64 / stats.streams as f64,
        heap as f64 / stats.events as f64
    );
    store
}

/// A row per long-lived stream, loaded 200 times with the bloom filters
/// `bloom` ("on" or "off").
async fn stream_loads(store: &Store, bloom: &str, table: &mut Table) {
    for (stream, events) in [(SMALL, 10), (LARGE, 1000)] {
        let loads = load_times(store, stream, 200).await;
        table.row([
            stream.to_owned(),
            events.to_string(),
            bloom.to_owned(),
            ms(loads.times.percentile(0.5), 3),
            ms(loads.times.percentile(0.99), 3),
            loads.skipped.to_string(),
            loads.searched.to_string(),
        ]);
    }
}

/// The bytes of the segment files in `dir`, read into memory: the
/// baseline of whole-log reads.
fn segment_copy(dir: &Path) -> (u64, Duration) {
    let mut seg_bytes = 0u64;
    let t = Instant::now();
    for entry in std::fs::read_dir(dir.join("events")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "seg") {
            seg_bytes += std::fs::read(&path).unwrap().len() as u64;
        }
    }
    (seg_bytes, t.elapsed())
}

/// The whole log through `read_all`: events, payload bytes, time taken.
async fn read_all_pages(store: &Store) -> (u64, u64, Duration) {
    let t = Instant::now();
    let mut next = Position::START;
    let mut count = 0u64;
    let mut bytes = 0u64;
    loop {
        let page = store.read_all(next, 10_000).await.unwrap();
        let Some(last) = page.last() else { break };
        next = last.position.next();
        count += page.len() as u64;
        bytes += page
            .iter()
            .map(|e| (e.data.len() + e.metadata.len()) as u64)
            .sum::<u64>();
    }
    (count, bytes, t.elapsed())
}

/// A subscription from the start, until it has delivered `count` events.
async fn subscription_catch_up(store: &Store, count: u64) -> Duration {
    let t = Instant::now();
    let mut sub = store
        .subscribe(Position::START, EventFilter::all())
        .await
        .unwrap();
    let mut seen = 0u64;
    while seen < count {
        sub.next().await.unwrap().unwrap();
        seen += 1;
    }
    t.elapsed()
}

/// The whole-log table: `read_all` and a subscription's catch-up beside a
/// plain copy of the segment bytes.
async fn whole_log_reads(store: &Store, dir: &Path) {
    let (seg_bytes, copy) = segment_copy(dir);
    let (count, bytes, read_all) = read_all_pages(store).await;
    let catch_up = subscription_catch_up(store, count).await;

    println!(
        "\nWhole-log reads ({count} events, {:.0} MB of segments)",
        seg_bytes as f64 / 1e6
    );
    let mut table = Table::new()
        .left("reader")
        .right("events/s")
        .right("MB/s (segment bytes)")
        .right("payload MB/s");
    table.row([
        "baseline: read the segment files into memory".to_owned(),
        "–".to_owned(),
        format!("{:.0}", seg_bytes as f64 / copy.as_secs_f64() / 1e6),
        "–".to_owned(),
    ]);
    for (name, d) in [
        ("read_all, pages of 10,000", read_all),
        ("subscription catch-up", catch_up),
    ] {
        table.row([
            name.to_owned(),
            format!("{:.0}", count as f64 / d.as_secs_f64()),
            format!("{:.0}", seg_bytes as f64 / d.as_secs_f64() / 1e6),
            format!("{:.0}", bytes as f64 / d.as_secs_f64() / 1e6),
        ]);
    }
    table.print();
}
