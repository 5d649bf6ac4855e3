//! What a store costs per stream: `cargo bench -p event-store --bench streams`.
//!
//! Builds one store in the shape of the reference domain (every stream one
//! event and one personal-data key, plus one stream of 1000 events written
//! first, so that it lies in the oldest segment), growing it to each size of
//! `ANNALS_BENCH_STREAMS` (default `1000000,10000000`). At each size a fresh
//! process opens the store, then its key store, and reports for each the
//! time from start to ready and the anonymous memory it holds at ready
//! (`RssAnon` after the open minus before it), per stream, and the time to
//! load the 1000-event stream cold: the first read of it since the open.
//! The key store reads only the key-log slots after those its subject
//! index covers (written when the filling process closed it); the column
//! "slots indexed" says how many it read through the index instead.
//! Opening the store scans the active segment (how full it is, printed too,
//! is what its start-up time follows) and reads nothing of the sealed ones
//! but their headers.
//!
//! `ANNALS_BENCH_DIR` chooses where the data goes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark aborts on failure"
)]

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use bench_harness::Table;
use event_store::{
    EventStore, ExpectedVersion, KeyStore, NewEvent, Store, StoreOptions, StreamAppend, StreamId,
};

/// The variable that makes this binary the measuring child.
const CHILD: &str = "ANNALS_BENCH_STREAMS_OPEN";
/// The stream whose cold load is timed.
const COLD: &str = "cold-stream";
const COLD_EVENTS: u64 = 1000;
/// Streams per append (and per key-store batch) while filling.
const FILL_BATCH: u64 = 1000;

fn main() {
    if let Some(dir) = std::env::var_os(CHILD) {
        measure_open(Path::new(&dir));
        return;
    }
    let sizes: Vec<u64> = std::env::var("ANNALS_BENCH_STREAMS")
        .unwrap_or_else(|_| "1000000,10000000".to_owned())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let root = bench_harness::env::data_root().unwrap();
    let dir = root.path().join("store");
    let rt = bench_harness::env::runtime().unwrap();
    let mut table = Table::new()
        .right("streams")
        .right("segments")
        .right("active segment")
        .right("store: ready")
        .right("store: bytes/stream")
        .right("keys: ready")
        .right("keys: bytes/stream")
        .right("keys: slots indexed")
        .right("cold 1000-event load");
    let mut filled = 0;
    for &size in &sizes {
        let started = Instant::now();
        rt.block_on(fill(&dir, filled, size));
        eprintln!(
            "filled {filled}..{size} streams in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        filled = size;
        let open = run_child(&dir);
        table.row([
            format!("{size}"),
            format!("{}", open.segments),
            format!("{:.0} MB", open.active_bytes as f64 / 1e6),
            format!("{:.1} ms", open.store_ms),
            format!("{:.1}", open.store_bytes as f64 / size as f64),
            format!("{:.1} ms", open.keys_ms),
            format!("{:.1}", open.keys_bytes as f64 / size as f64),
            format!("{}", open.keys_indexed),
            format!("{:.2} ms", open.cold_load_ms),
        ]);
    }
    println!("\nBytes per stream and start-up (store and key store, one process per row)");
    table.print();
}

/// Grows the store from `from` to `to` single-event streams, each with a key.
async fn fill(dir: &Path, from: u64, to: u64) {
    let store = Store::open(dir, StoreOptions::default()).await.unwrap();
    let keys = KeyStore::open(dir.join("keys")).unwrap();
    if from == 0 {
        let cold = StreamId::new(COLD).unwrap();
        for chunk in 0..COLD_EVENTS / 100 {
            let events = (chunk * 100..(chunk + 1) * 100)
                .map(|n| NewEvent::new("CreditReserved", bench_harness::payload::json_200(n)))
                .collect();
            store
                .append(&cold, ExpectedVersion::Any, events)
                .await
                .unwrap();
        }
    }
    let mut next = from;
    while next < to {
        let end = (next + FILL_BATCH).min(to);
        let ids: Vec<String> = (next..end).map(|n| format!("customer-{n:09}")).collect();
        keys.ensure_keys(&ids).await.unwrap();
        // Appends of at most 64 streams (the default limit), in flight together.
        let mut tasks = tokio::task::JoinSet::new();
        for (c, chunk) in ids.chunks(64).enumerate() {
            let appends: Vec<StreamAppend> = chunk
                .iter()
                .enumerate()
                .map(|(i, id)| StreamAppend {
                    stream_id: StreamId::new(id.as_str()).unwrap(),
                    expected: ExpectedVersion::NoStream,
                    events: vec![NewEvent::new(
                        "CustomerRegistered",
                        bench_harness::payload::json_200(next + (c * 64 + i) as u64),
                    )],
                })
                .collect();
            let store = store.clone();
            tasks.spawn(async move { store.append_many(appends).await.map(drop) });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap().unwrap();
        }
        next = end;
    }
    store.close().await.unwrap();
}

struct Opened {
    segments: u64,
    active_bytes: u64,
    store_ms: f64,
    store_bytes: u64,
    keys_ms: f64,
    keys_bytes: u64,
    keys_indexed: u64,
    cold_load_ms: f64,
}

fn run_child(dir: &Path) -> Opened {
    let out = Command::new(std::env::current_exe().unwrap())
        .env(CHILD, dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the measuring process failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    Opened {
        segments: fields[0].parse().unwrap(),
        store_ms: fields[1].parse().unwrap(),
        store_bytes: fields[2].parse().unwrap(),
        keys_ms: fields[3].parse().unwrap(),
        keys_bytes: fields[4].parse().unwrap(),
        cold_load_ms: fields[5].parse().unwrap(),
        active_bytes: fields[6].parse().unwrap(),
        keys_indexed: fields[7].parse().unwrap(),
    }
}

/// The child: opens the store, then its keys, and prints
/// `segments store_ms store_bytes keys_ms keys_bytes cold_load_ms
/// active_bytes keys_indexed`.
fn measure_open(dir: &Path) {
    let rt = bench_harness::env::runtime().unwrap();
    rt.block_on(async {
        let before = rss_anon();
        let started = Instant::now();
        let store = Store::open(dir, StoreOptions::default()).await.unwrap();
        store.ready().await.unwrap();
        let store_time = started.elapsed();
        let store_bytes = rss_anon().saturating_sub(before);
        let before = rss_anon();
        let started = Instant::now();
        let keys = KeyStore::open(dir.join("keys")).unwrap();
        let keys_time = started.elapsed();
        let keys_bytes = rss_anon().saturating_sub(before);
        let cold = StreamId::new(COLD).unwrap();
        let started = Instant::now();
        let loaded = store.load(&cold, None).await.unwrap();
        let load = started.elapsed();
        assert_eq!(loaded.events.len() as u64, COLD_EVENTS);
        let stats = store.stats().await.unwrap();
        let active_bytes = stats.bytes - sealed_bytes(&dir.join("events"));
        println!(
            "{} {:.3} {} {:.3} {} {:.3} {active_bytes} {}",
            stats.segments,
            store_time.as_secs_f64() * 1e3,
            store_bytes,
            keys_time.as_secs_f64() * 1e3,
            keys_bytes,
            load.as_secs_f64() * 1e3,
            keys.slots_indexed_at_open()
        );
        drop(keys);
        store.close().await.unwrap();
    });
}

/// The bytes of every segment file but the last (the active one).
fn sealed_bytes(events: &Path) -> u64 {
    let mut segments: Vec<(std::path::PathBuf, u64)> = std::fs::read_dir(events)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .map(|e| (e.path(), e.metadata().unwrap().len()))
        .collect();
    segments.sort();
    segments.pop();
    segments.iter().map(|(_, len)| len).sum()
}

/// The process's resident anonymous memory, from `/proc/self/status`.
fn rss_anon() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
