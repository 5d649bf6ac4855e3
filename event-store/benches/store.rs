//! The event store benchmark: `cargo bench -p event-store --bench store`.
//!
//! Prints one table per measurement, each beside a baseline taken in the same
//! run: the disk's raw fdatasync rate (4 KiB write + fdatasync in a loop, in
//! the same directory) for appends, and a straight in-memory copy for reads.
//!
//! `ANNALS_BENCH_DIR` chooses where the data goes (default: a temporary
//! directory next to the target dir); `ANNALS_BENCH_EVENTS` the size of the
//! read store (default 1,000,000).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark aborts on failure"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

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

fn payload(n: u64) -> String {
    // 200 bytes of JSON.
    let head = format!(
        r#"{{"customer_id":"c-{n:08}","amount":{},"currency":"EUR","note":""#,
        n % 10_000
    );
    let pad = 200 - head.len() - 2;
    format!("{head}{}\"}}", "x".repeat(pad))
}

fn event(n: u64) -> NewEvent {
    NewEvent::new("CreditReserved", payload(n))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

/// fdatasync calls per second for 4 KiB writes in `dir`.
fn raw_fdatasync_rate(dir: &Path) -> f64 {
    let path = dir.join("fdatasync-probe");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![7u8; 4096];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(2) {
        file.write_all(&block).unwrap();
        file.sync_data().unwrap();
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(path).unwrap();
    rate
}

async fn append_run(
    dir: &Path,
    writers: usize,
    batch: usize,
    run_for: Duration,
) -> (f64, Duration, Duration) {
    let store = Store::open(dir, StoreOptions::default()).await.unwrap();
    let deadline = Instant::now() + run_for;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0u64;
            let stream = StreamId::new(format!("bench-{w}")).unwrap();
            while Instant::now() < deadline {
                let events = (0..batch).map(|i| event(n + i as u64)).collect();
                let t = Instant::now();
                store
                    .append(&stream, ExpectedVersion::Any, events)
                    .await
                    .unwrap();
                latencies.push(t.elapsed());
                n += batch as u64;
            }
            latencies
        }));
    }
    let start = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    store.close().await.unwrap();
    all.sort();
    let events = all.len() * batch;
    (
        events as f64 / elapsed.as_secs_f64(),
        percentile(&all, 0.5),
        percentile(&all, 0.99),
    )
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

async fn load_times(store: &Store, stream: &str, rounds: usize) -> (Duration, Duration, u64, u64) {
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
    times.sort();
    (
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        (after.segments_skipped_by_bloom - before.segments_skipped_by_bloom) / rounds as u64,
        (after.segments_searched - before.segments_searched) / rounds as u64,
    )
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let base = std::env::var("ANNALS_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::env::current_dir()
                .unwrap()
                .join("../target/bench-data")
        });
    std::fs::create_dir_all(&base).unwrap();
    let root = tempfile::tempdir_in(&base).unwrap();
    let total: u64 = std::env::var("ANNALS_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);

    let raw = raw_fdatasync_rate(root.path());
    println!("\nBaseline: raw fdatasync rate (4 KiB write + fdatasync, same disk): {raw:.0}/s\n");

    println!("Appends, fsync on, 200-byte JSON events");
    println!(
        "| writers | events/append | events/s | appends/s | p50 ms | p99 ms | events/s ÷ raw fdatasync/s |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for (writers, batch) in [(1, 1), (8, 1), (64, 1), (1, 10), (8, 10), (64, 10)] {
        let dir = root.path().join(format!("append-{writers}-{batch}"));
        let (rate, p50, p99) = append_run(&dir, writers, batch, Duration::from_secs(4)).await;
        println!(
            "| {writers} | {batch} | {rate:.0} | {:.0} | {} | {} | {:.1}× |",
            rate / batch as f64,
            ms(p50),
            ms(p99),
            rate / raw
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    let dir = root.path().join("read");
    let options = || StoreOptions {
        segment_bytes_max: 32 << 20,
        ..StoreOptions::default()
    };
    let t = Instant::now();
    build_read_store(&dir, total, options()).await;
    let build = t.elapsed();

    let heap_before = LIVE.load(Ordering::Relaxed);
    let store = Store::open(&dir, options()).await.unwrap();
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

    println!("\nLoading one stream (read_stream from version 1), median of 200");
    println!(
        "| stream | events | bloom filters | p50 ms | p99 ms | sealed segments skipped by bloom | indexes searched |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|");
    for (stream, events) in [(SMALL, 10), (LARGE, 1000)] {
        let (p50, p99, skipped, searched) = load_times(&store, stream, 200).await;
        println!(
            "| {stream} | {events} | on | {} | {} | {skipped} | {searched} |",
            ms(p50),
            ms(p99)
        );
    }
    store.close().await.unwrap();
    let store = Store::open(
        &dir,
        StoreOptions {
            use_bloom_filters: false,
            ..options()
        },
    )
    .await
    .unwrap();
    for (stream, events) in [(SMALL, 10), (LARGE, 1000)] {
        let (p50, p99, skipped, searched) = load_times(&store, stream, 200).await;
        println!(
            "| {stream} | {events} | off | {} | {} | {skipped} | {searched} |",
            ms(p50),
            ms(p99)
        );
    }

    // Whole-log reads: a plain copy of the segment bytes is the baseline.
    let mut seg_bytes = 0u64;
    let t = Instant::now();
    for entry in std::fs::read_dir(dir.join("events")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "seg") {
            seg_bytes += std::fs::read(&path).unwrap().len() as u64;
        }
    }
    let copy_rate = seg_bytes as f64 / t.elapsed().as_secs_f64();

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
    let read_all = t.elapsed();

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
    let catch_up = t.elapsed();
    drop(sub);

    println!(
        "\nWhole-log reads ({count} events, {:.0} MB of segments)",
        seg_bytes as f64 / 1e6
    );
    println!("| reader | events/s | MB/s (segment bytes) | payload MB/s |");
    println!("|---|---:|---:|---:|");
    println!(
        "| baseline: read the segment files into memory | – | {:.0} | – |",
        copy_rate / 1e6
    );
    for (name, d) in [
        ("read_all, pages of 10,000", read_all),
        ("subscription catch-up", catch_up),
    ] {
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} |",
            count as f64 / d.as_secs_f64(),
            seg_bytes as f64 / d.as_secs_f64() / 1e6,
            bytes as f64 / d.as_secs_f64() / 1e6
        );
    }
    store.close().await.unwrap();
}
