//! annals's embedded event store beside tephra 0.4.1 on the same workloads,
//! in one run, on the same disk: `cargo bench -p bench-peers --bench tephra`.
//!
//! tephra is a segmented event log with a single write coordinator and
//! group commit: events carry a type and tags instead of belonging to one
//! stream, and an append may carry a condition (a query that must match
//! nothing after a given position). Here a stream of annals is a tag of
//! tephra, and a guarded append is, in annals, `ExpectedVersion::Exact` of
//! the writer's stream and, in tephra, an `AppendCondition` on the writer's
//! tag `after` the last position the writer appended at: both fail if
//! someone else appended to the stream since.
//!
//! Printed: the disk's two raw fdatasync rates (a growing file and a
//! preallocated one, measured first, in the same directory), then one table,
//! a row per workload with both figures and annals ÷ tephra, then the two
//! rates measured again (the disk's rate moves with the machine's load):
//!
//! 1. to 6. guarded appends of 1 and 10 events by 1, 8 and 64 concurrent
//!    writers, each to its own stream, for `ANNALS_BENCH_SECONDS` each
//!    (default 5), each system in a fresh directory: events/s and
//!    appends/s. Row 1 also shows appends/s ÷ the overwrite fdatasync rate
//!    (annals's bar is 0.9×), measured in one-second slices of its own
//!    taking turns with the systems' slices, ÷ the same overwrites handed
//!    one at a time to a thread that writes, syncs and answers (the most a
//!    sequential caller of a log with a writer thread can reach; both
//!    systems have one), and ÷ the overwrite rate measured before the
//!    rows;
//! 7. a fill of `ANNALS_BENCH_EVENTS` events (default 1,000,000) by 20
//!    concurrent appenders, unguarded, 10 events per append, each append to
//!    a stream of its own (`customer-<n>`) but one in each hundredth of the
//!    log, which goes to `customer-large`: 1,000 events spread over the
//!    whole log;
//! 8. reading the whole filled log from the start, each event lent: annals
//!    `Store::scan`, tephra `read(Query::All, ..)` (the note adds annals's
//!    `read_all` in pages of the store's largest page, owned events);
//! 9. loading `customer-large` (annals `EventStore::load`, tephra `read` by
//!    its tag collected into owned events), p50 of 200 loads;
//! 10. reopening the filled log, from open to ready to append (annals
//!     `Store::open`, tephra `SegmentSet::open` + `WriteCoordinator::start`),
//!     median of 3, page cache warm.
//!
//! For the last two (times, lower is better) the note says how many times
//! faster annals is (tephra ÷ annals).
//!
//! The disk's fdatasync rate moves with whatever else the machine does, by
//! ten times and more within seconds on a shared one, so the two systems
//! take turns: each append row runs in one-second slices and the fill in
//! ten parts, alternating between the systems (the same store of each
//! system carrying on from one slice to its next), and the reads and
//! reopens alternate too; which system starts alternates from row to row.
//! Before each slice, part or measurement the disk is synced and left a
//! second (`bench_harness::fsync::settle`), so neither pays for the other's
//! write-back.
//!
//! Settings: `ANNALS_BENCH_SECONDS` (default 5), `ANNALS_BENCH_EVENTS`
//! (default 1,000,000; CI runs `ANNALS_BENCH_EVENTS=20000
//! ANNALS_BENCH_SECONDS=1`), `ANNALS_BENCH_DIR` (where the data goes,
//! default `target/bench-data`), `ANNALS_BENCH_ONLY=annals` or `=tephra`
//! (one system alone, to trace or profile it; the other's cells show a
//! dash), `ANNALS_BENCH_ROWS=1,4` (those append rows only).
//!
//! Both systems run in one process, on the allocator the `annals` binary
//! ships with (mimalloc); the system allocator cost annals's callers a
//! sixth of their time in row 6, much of it waiting on its arena locks
//! for events freed by the writer thread.
//!
//! How each side is configured, and why that is fair:
//!
//! - annals: `StoreOptions::default()` (256 MiB segments). Every append is
//!   acknowledged after the `fdatasync` of its group commit.
//! - tephra: `SegmentConfig::new(256 MiB)` as in its README's example, and
//!   `WriterConfig::default()` (its paranoid `verify_tips` and
//!   `condition_force_scan` off). The writer config has no durability
//!   setting: every group commit (up to 2,048 requests or 8 MiB) ends in
//!   seglog's `Writer::commit`, which writes the batch's commit marker and
//!   calls `sync_data` (fdatasync) before the writer thread replies to any
//!   request of the batch; only its indexes go unsynced (they are rebuilt
//!   from the log). Traced with strace, each system makes one fdatasync per
//!   group commit, and about as many requests share one on either side.
//! - tephra creates each segment file at full size with `fallocate` and
//!   syncs it (and the directory) when the log is opened or rolls over,
//!   outside the timed loops here; its appends then write inside the
//!   file's allocated size (into unwritten extents, whose conversion is
//!   committed when a write first reaches a block). annals reserves its
//!   active segment a step at a time the same way and also writes zeros a
//!   slice ahead of its records, so its appends overwrite written blocks
//!   (see docs/format.md, "Reserved space"). The two baselines are the
//!   plainest growing and overwriting shapes.
//! - The same 200-byte JSON payload bytes, event type `CreditReserved`, and
//!   stream ids equal to tag names. An annals record also holds an id (a
//!   UUID generated per event), a timestamp, `{}` metadata, its stream and
//!   version; a tephra record holds the type, its tag and the payload.
//! - annals's writers are tasks on the benchmarks' two-worker runtime (its
//!   API is async); tephra's are threads (its handle blocks), as each is
//!   meant to be called. tephra's reads lend each event from its buffer,
//!   as annals's `scan` does (its `read_all` returns owned events); a load
//!   collects owned events on both sides.
//! - On open, tephra scans every segment (it keeps no offsets on disk) and
//!   replays its active segment into its tag index, which it persists only
//!   when a segment is sealed; a fill of 1,000,000 events (about 250 MB)
//!   still fits its first segment, so row 10 replays all of it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark aborts on failure"
)]

use std::hint::black_box;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bench_harness::fsync::settle;
use bench_harness::latency::ms;
use bench_harness::ratio::{median, ratio, times};
use bench_harness::{Baselines, Latencies, Table, Tally};
use event_store::{EventStore, ExpectedVersion, NewEvent, Store, StoreOptions, StreamId};
use tephra::{
    AppendCondition, Event, EventType, Position, Query, QueryItem, SegmentConfig, SegmentSet, Tag,
    Tags, WriteCoordinator, WriteHandle, WriterConfig,
};
use tokio::runtime::Runtime;

/// The allocator the `annals` binary runs with, for both systems here.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// tephra's segment size, as in its README's example (and annals's
/// default).
const TEPHRA_SEGMENT_BYTES: usize = 256 << 20;

const EVENT_TYPE: &str = "CreditReserved";

/// Rows 1 to 6: (writers, events per append).
const APPEND_ROWS: [(usize, usize); 6] = [(1, 1), (8, 1), (64, 1), (1, 10), (8, 10), (64, 10)];

/// The fill's concurrent appenders and events per append.
const FILL_APPENDERS: usize = 20;
const FILL_BATCH: u64 = 10;

/// The parts the fill is timed in, alternating between the systems.
const FILL_PARTS: u64 = 10;

/// The stream loaded in row 9, and its length.
const LARGE_STREAM: &str = "customer-large";
const LARGE_EVENTS: u64 = 1_000;

/// Loads timed in row 9, reopens in row 10.
const LOADS: usize = 200;
const REOPENS: usize = 3;

fn annals_event(n: u64) -> NewEvent {
    NewEvent::new(EVENT_TYPE, bench_harness::payload::json_200(n))
}

fn tephra_event(ty: &EventType, tags: &Tags, n: u64) -> Event {
    Event::new(ty, tags, bench_harness::payload::json_200(n).as_bytes()).unwrap()
}

fn tephra_type() -> EventType {
    EventType::new(EVENT_TYPE).unwrap()
}

/// The tag set naming one stream.
fn tephra_tags(stream: &str) -> Tags {
    Tags::new([Tag::new(stream).unwrap()]).unwrap()
}

/// The system a measurement runs on; also the index of its figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Peer {
    Annals = 0,
    Tephra = 1,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Annals => "annals",
            Peer::Tephra => "tephra",
        }
    }

    /// Whether this system runs: both do unless `ANNALS_BENCH_ONLY` names
    /// one (to trace or profile it alone).
    fn runs(self) -> bool {
        bench_harness::env::runs(bench_harness::env::only().as_deref(), self.name())
    }
}

/// A figure with `decimals` decimals, or a dash for one not measured.
fn figure(value: f64, decimals: usize) -> String {
    if value.is_finite() {
        format!("{value:.decimals$}")
    } else {
        "–".to_owned()
    }
}

/// `value ÷ of` as `1.23×`, or a dash when either was not measured.
fn times_of(value: f64, of: f64) -> String {
    let r = ratio(value, of);
    if r.is_finite() {
        times(r, 2)
    } else {
        "–".to_owned()
    }
}

/// A time in milliseconds with `decimals` decimals, or a dash for one not
/// measured.
fn millis_of(d: Option<Duration>, decimals: usize) -> String {
    d.map_or_else(|| "–".to_owned(), |d| ms(d, decimals))
}

/// Which system runs first in row `row`: annals in odd rows, tephra in
/// even ones, so that neither always inherits a disk the other just wrote.
fn order(row: usize) -> [Peer; 2] {
    if row % 2 == 1 {
        [Peer::Annals, Peer::Tephra]
    } else {
        [Peer::Tephra, Peer::Annals]
    }
}

/// An open tephra log: its coordinator (the writer thread) and a handle.
struct Tephra {
    coordinator: WriteCoordinator,
    handle: WriteHandle,
}

impl Tephra {
    fn open(dir: &Path) -> Tephra {
        let set = SegmentSet::open(dir, SegmentConfig::new(TEPHRA_SEGMENT_BYTES)).unwrap();
        let (coordinator, handle) = WriteCoordinator::start(set, WriterConfig::default()).unwrap();
        Tephra {
            coordinator,
            handle,
        }
    }

    /// Stops the writer and releases the directory.
    fn close(self) {
        drop(self.handle);
        drop(self.coordinator.shutdown());
    }
}

fn main() {
    let runtime = bench_harness::env::runtime().unwrap();
    let root = bench_harness::env::data_root().unwrap();
    let run_for = bench_harness::env::seconds_or(5).max(Duration::from_secs(1));
    let total: u64 = bench_harness::env::events_or(1_000_000);
    // The large stream takes one append in each hundredth of the fill, and
    // streams of their own take the rest.
    assert!(
        total >= 100 * FILL_BATCH * 2,
        "ANNALS_BENCH_EVENTS must be at least {}",
        100 * FILL_BATCH * 2
    );
    let total = total - total % FILL_BATCH;

    let baselines = Baselines::measure(root.path()).unwrap();
    baselines.print();

    let mut table = Table::new()
        .right("#")
        .left("workload")
        .left("unit")
        .right("annals")
        .right("tephra")
        .right("annals ÷ tephra")
        .right("annals appends/s")
        .right("tephra appends/s")
        .left("note");
    appends(&runtime, root.path(), run_for, &baselines, &mut table);
    filled(&runtime, root.path(), total, &mut table);

    println!(
        "annals ÷ tephra, fsync on, 200-byte JSON events, same disk and run \
         ({} s of each system per append row in one-second slices, \
         fill of {total} events in {FILL_PARTS} parts)",
        run_for.as_secs()
    );
    table.print();

    // The disk's rate moves with the machine's other work; measured again,
    // the baselines show how far it moved while the rows ran.
    let after = Baselines::measure(root.path()).unwrap();
    println!(
        "\nRaw fdatasync rates measured again after the rows: {:.0}/s (growing file), {:.0}/s (overwrite)",
        after.growing, after.overwrite
    );
}

/// Whether append row `row` runs: every row, or those `ANNALS_BENCH_ROWS`
/// lists (`1,4`), for profiling one workload. The fill and what follows
/// it always run.
fn chosen(row: usize) -> bool {
    std::env::var("ANNALS_BENCH_ROWS").map_or(true, |rows| {
        rows.split(',').any(|r| r.trim().parse() == Ok(row))
    })
}

/// Rows 1 to 6: guarded appends, each system in a fresh directory, timed
/// in slices that alternate between the systems.
fn appends(
    runtime: &Runtime,
    root: &Path,
    run_for: Duration,
    baselines: &Baselines,
    table: &mut Table,
) {
    let slices = run_for.as_secs().max(1);
    let slice = run_for / slices as u32;
    for (i, (writers, batch)) in APPEND_ROWS.into_iter().enumerate() {
        let row = i + 1;
        if !chosen(row) {
            continue;
        }
        eprintln!("row {row}: {writers} writers × {batch} events per append");
        let annals_dir = root.join(format!("row{row}-annals"));
        let tephra_dir = root.join(format!("row{row}-tephra"));
        let store = Peer::Annals.runs().then(|| {
            runtime
                .block_on(Store::open(&annals_dir, StoreOptions::default()))
                .unwrap()
        });
        let log = Peer::Tephra.runs().then(|| Tephra::open(&tephra_dir));
        let versions: Arc<Vec<AtomicU64>> = Arc::new((0..writers).map(|_| 0.into()).collect());
        let mut tephra_writers = vec![
            TephraWriter {
                last: Position::ZERO,
                written: 0,
            };
            writers
        ];
        let mut appended = [0u64; 2];
        let mut took = [Duration::ZERO; 2];
        // Row 1's bar is the overwrite rate, which moves within seconds:
        // it is measured in slices of its own between the systems' slices.
        let (mut overwrites, mut handed) = (Vec::new(), Vec::new());
        for s in 0..slices as usize {
            if row == 1 {
                settle();
                overwrites.push(bench_harness::fsync::overwrite_rate(root, slice).unwrap());
                settle();
                handed.push(bench_harness::fsync::handed_overwrite_rate(root, slice).unwrap());
            }
            for peer in order(row + s).into_iter().filter(|p| p.runs()) {
                settle();
                let (n, d) = match peer {
                    Peer::Annals => runtime.block_on(annals_slice(
                        store.as_ref().unwrap(),
                        &versions,
                        batch,
                        slice,
                    )),
                    Peer::Tephra => tephra_slice(
                        &log.as_ref().unwrap().handle,
                        &mut tephra_writers,
                        batch,
                        slice,
                    ),
                };
                appended[peer as usize] += n;
                took[peer as usize] += d;
            }
        }
        if let Some(store) = store {
            runtime.block_on(store.close()).unwrap();
            std::fs::remove_dir_all(&annals_dir).unwrap();
        }
        if let Some(log) = log {
            log.close();
            std::fs::remove_dir_all(&tephra_dir).unwrap();
        }

        let [annals, tephra] = [0, 1].map(|p| appended[p] as f64 / took[p].as_secs_f64());
        let note = if row == 1 {
            // Equal slices: the mean of their rates is the rate over all.
            let mean = |rates: &[f64]| rates.iter().sum::<f64>() / rates.len() as f64;
            let (overwrite, handed) = (mean(&overwrites), mean(&handed));
            format!(
                "appends/s ÷ overwrite fdatasync/s in slices between the rows' ({overwrite:.0}/s): \
                 annals {} (bar 0.9×), tephra {}; ÷ the same handed to a thread ({handed:.0}/s): \
                 annals {}, tephra {}; ÷ the overwrite rate before the rows: annals {}, tephra {}",
                times_of(annals, overwrite),
                times_of(tephra, overwrite),
                times_of(annals, handed),
                times_of(tephra, handed),
                times_of(annals, baselines.overwrite),
                times_of(tephra, baselines.overwrite)
            )
        } else {
            String::new()
        };
        let events = batch as f64;
        table.row([
            row.to_string(),
            format!(
                "{writers} writer{} × {batch} event{}/append, guarded",
                if writers == 1 { "" } else { "s" },
                if batch == 1 { "" } else { "s" }
            ),
            "events/s".to_owned(),
            figure(annals * events, 0),
            figure(tephra * events, 0),
            times_of(annals, tephra),
            figure(annals, 0),
            figure(tephra, 0),
            note,
        ]);
    }
}

/// One slice of `run_for` on annals: a task per writer, each appending
/// `batch` events at a time to its own stream, expecting the version it
/// last wrote (`versions`, kept from slice to slice): appends made and the
/// time taken.
async fn annals_slice(
    store: &Store,
    versions: &Arc<Vec<AtomicU64>>,
    batch: usize,
    run_for: Duration,
) -> (u64, Duration) {
    let deadline = Instant::now() + run_for;
    let load = bench_harness::run_clients(versions.len(), |w| {
        let store = store.clone();
        let versions = versions.clone();
        async move {
            let stream = StreamId::new(format!("writer-{w}")).unwrap();
            let mut version = versions[w].load(Ordering::Relaxed);
            let mut tally = Tally::default();
            while Instant::now() < deadline {
                let events = (0..batch as u64)
                    .map(|i| annals_event(version + i))
                    .collect();
                let sent = Instant::now();
                version = store
                    .append(&stream, ExpectedVersion::Exact(version), events)
                    .await
                    .unwrap()
                    .last_version;
                tally.record(sent, true);
            }
            versions[w].store(version, Ordering::Relaxed);
            tally
        }
    })
    .await;
    (load.requests() as u64, load.elapsed)
}

/// What a tephra writer carries from slice to slice: the last position it
/// appended at (its guard's `after`), and the events it wrote.
#[derive(Clone, Copy)]
struct TephraWriter {
    last: Position,
    written: u64,
}

/// One slice of `run_for` on tephra: a thread per writer, each appending
/// `batch` events at a time under its own tag, on condition that no event
/// of that tag follows the last one it wrote: appends made and the time
/// taken.
fn tephra_slice(
    handle: &WriteHandle,
    writers: &mut [TephraWriter],
    batch: usize,
    run_for: Duration,
) -> (u64, Duration) {
    let started = Instant::now();
    let deadline = started + run_for;
    let appends = std::thread::scope(|s| {
        let threads: Vec<_> = writers
            .iter_mut()
            .enumerate()
            .map(|(w, state)| {
                let handle = handle.clone();
                s.spawn(move || {
                    let ty = tephra_type();
                    let tags = tephra_tags(&format!("writer-{w}"));
                    let guard = Query::item(QueryItem::with_tags(tags.clone()));
                    let mut appends = 0u64;
                    while Instant::now() < deadline {
                        let events = (0..batch as u64)
                            .map(|i| tephra_event(&ty, &tags, state.written + i))
                            .collect();
                        let condition = AppendCondition::new(guard.clone()).after(state.last);
                        state.last = handle.append(events, Some(condition)).unwrap().last;
                        state.written += batch as u64;
                        appends += 1;
                    }
                    appends
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).sum()
    });
    (appends, started.elapsed())
}

/// The stream of the fill's append `k` of `appends`: `customer-large` for
/// one append in each hundredth of the log (the middle one), a stream of
/// its own for the others.
fn fill_stream(k: u64, appends: u64) -> String {
    let stride = appends / (LARGE_EVENTS / FILL_BATCH);
    if k % stride == stride / 2 && k / stride < LARGE_EVENTS / FILL_BATCH {
        LARGE_STREAM.to_owned()
    } else {
        format!("customer-{k:08}")
    }
}

/// Rows 7 to 10 over one filled log per system.
fn filled(runtime: &Runtime, root: &Path, total: u64, table: &mut Table) {
    let annals_dir = root.join("fill-annals");
    let tephra_dir = root.join("fill-tephra");
    let store = Peer::Annals.runs().then(|| {
        runtime
            .block_on(Store::open(&annals_dir, StoreOptions::default()))
            .unwrap()
    });
    let log = Peer::Tephra.runs().then(|| Tephra::open(&tephra_dir));
    let peers = |row: usize| order(row).into_iter().filter(|p| p.runs());

    // 7: the fill, in parts that alternate between the systems.
    let appends = total / FILL_BATCH;
    let mut fill = [None; 2];
    for part in 0..FILL_PARTS {
        let range = appends * part / FILL_PARTS..appends * (part + 1) / FILL_PARTS;
        for peer in peers(7 + part as usize) {
            eprintln!(
                "row 7: {}, fill part {} of {FILL_PARTS}",
                peer.name(),
                part + 1
            );
            settle();
            let took = match peer {
                Peer::Annals => {
                    runtime.block_on(annals_fill(store.as_ref().unwrap(), range.clone(), appends))
                }
                Peer::Tephra => tephra_fill(&log.as_ref().unwrap().handle, range.clone(), appends),
            };
            *fill[peer as usize].get_or_insert(Duration::ZERO) += took;
        }
    }
    let [annals, tephra] = fill.map(|d| d.map_or(f64::NAN, |d| total as f64 / d.as_secs_f64()));
    let seconds =
        fill.map(|d| d.map_or_else(|| "–".to_owned(), |d| format!("{:.1}", d.as_secs_f64())));
    table.row([
        "7".to_owned(),
        format!("fill: {FILL_APPENDERS} writers × {FILL_BATCH} events/append, unguarded"),
        "events/s".to_owned(),
        figure(annals, 0),
        figure(tephra, 0),
        times_of(annals, tephra),
        figure(annals / FILL_BATCH as f64, 0),
        figure(tephra / FILL_BATCH as f64, 0),
        format!("{total} events in {} s and {} s", seconds[0], seconds[1]),
    ]);

    // 8: the whole log from the start.
    let mut read = [f64::NAN; 2];
    let mut owned = f64::NAN;
    for peer in peers(8) {
        eprintln!("row 8: {}, read all", peer.name());
        settle();
        let (count, took) = match peer {
            Peer::Annals => {
                let (count, took) = runtime.block_on(annals_read_all(store.as_ref().unwrap()));
                assert_eq!(count, total, "annals read the whole log");
                owned = total as f64 / took.as_secs_f64();
                settle();
                annals_scan(store.as_ref().unwrap())
            }
            Peer::Tephra => tephra_read_all(&log.as_ref().unwrap().handle),
        };
        assert_eq!(count, total, "{} read the whole log", peer.name());
        read[peer as usize] = total as f64 / took.as_secs_f64();
    }
    let [annals, tephra] = read;
    table.row([
        "8".to_owned(),
        "read all from the start".to_owned(),
        "events/s".to_owned(),
        figure(annals, 0),
        figure(tephra, 0),
        times_of(annals, tephra),
        String::new(),
        String::new(),
        format!(
            "annals: scan, lent (read_all in pages of {}, owned: {} events/s); tephra: Query::All, lent",
            StoreOptions::default().limits.read_count_max,
            figure(owned, 0)
        ),
    ]);

    // 9: loading the large stream.
    let mut loads = [None, None];
    for peer in peers(9) {
        eprintln!("row 9: {}, {LOADS} loads of {LARGE_STREAM}", peer.name());
        settle();
        loads[peer as usize] = Some(match peer {
            Peer::Annals => runtime.block_on(annals_loads(store.as_ref().unwrap())),
            Peer::Tephra => tephra_loads(&log.as_ref().unwrap().handle),
        });
    }
    let at = |p: f64| {
        loads
            .each_ref()
            .map(|l| l.as_ref().map(|l| l.percentile(p)))
    };
    let ([annals, tephra], [annals_p99, tephra_p99]) = (at(0.5), at(0.99));
    table.row([
        "9".to_owned(),
        format!("load one {LARGE_EVENTS}-event stream, p50 of {LOADS}"),
        "ms".to_owned(),
        millis_of(annals, 3),
        millis_of(tephra, 3),
        times_of(secs(annals), secs(tephra)),
        String::new(),
        String::new(),
        format!(
            "{}; p99 {} and {} ms",
            faster(annals, tephra),
            millis_of(annals_p99, 3),
            millis_of(tephra_p99, 3)
        ),
    ]);

    // 10: reopening.
    if let Some(store) = store {
        runtime.block_on(store.close()).unwrap();
    }
    if let Some(log) = log {
        log.close();
    }
    let mut opens = [Vec::new(), Vec::new()];
    for round in 0..REOPENS {
        for peer in peers(10 + round) {
            eprintln!("row 10: {}, reopen {}", peer.name(), round + 1);
            settle();
            opens[peer as usize].push(match peer {
                Peer::Annals => runtime.block_on(annals_reopen(&annals_dir)),
                Peer::Tephra => tephra_reopen(&tephra_dir),
            });
        }
    }
    let [annals, tephra] = opens.map(|o| {
        let secs: Vec<f64> = o.iter().map(Duration::as_secs_f64).collect();
        median(&secs).map(Duration::from_secs_f64)
    });
    table.row([
        "10".to_owned(),
        format!("reopen after the fill, open to ready, median of {REOPENS}"),
        "ms".to_owned(),
        millis_of(annals, 1),
        millis_of(tephra, 1),
        times_of(secs(annals), secs(tephra)),
        String::new(),
        String::new(),
        faster(annals, tephra),
    ]);
}

/// Seconds, not a number when not measured.
fn secs(d: Option<Duration>) -> f64 {
    d.map_or(f64::NAN, |d| d.as_secs_f64())
}

/// How many times faster annals was than tephra (tephra's time ÷
/// annals's), said the other way round when annals was slower.
fn faster(annals: Option<Duration>, tephra: Option<Duration>) -> String {
    let n = ratio(secs(tephra), secs(annals));
    if !n.is_finite() {
        "–".to_owned()
    } else if n >= 1.0 {
        format!("annals is {} faster", times(n, 2))
    } else {
        format!("tephra is {} faster", times(1.0 / n, 2))
    }
}

/// Row 7 on annals: the fill's appends `range` (of `appends`), taken in
/// turn by the appenders: the time taken.
async fn annals_fill(store: &Store, range: Range<u64>, appends: u64) -> Duration {
    let next = Arc::new(AtomicU64::new(range.start));
    let started = Instant::now();
    bench_harness::run_clients(FILL_APPENDERS, |_| {
        let store = store.clone();
        let next = next.clone();
        async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= range.end {
                    break;
                }
                let stream = StreamId::new(fill_stream(k, appends)).unwrap();
                let events = (0..FILL_BATCH)
                    .map(|i| annals_event(k * FILL_BATCH + i))
                    .collect();
                store
                    .append(&stream, ExpectedVersion::Any, events)
                    .await
                    .unwrap();
            }
            Tally::default()
        }
    })
    .await;
    started.elapsed()
}

/// Row 7 on tephra: the same appends, by as many threads.
fn tephra_fill(handle: &WriteHandle, range: Range<u64>, appends: u64) -> Duration {
    let next = AtomicU64::new(range.start);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..FILL_APPENDERS {
            let handle = handle.clone();
            let (next, end) = (&next, range.end);
            s.spawn(move || {
                let ty = tephra_type();
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= end {
                        break;
                    }
                    let tags = tephra_tags(&fill_stream(k, appends));
                    let events = (0..FILL_BATCH)
                        .map(|i| tephra_event(&ty, &tags, k * FILL_BATCH + i))
                        .collect();
                    handle.append(events, None).unwrap();
                }
            });
        }
    });
    started.elapsed()
}

/// Row 8 on annals: `read_all` from the start in the largest pages: events
/// read and the time taken.
async fn annals_read_all(store: &Store) -> (u64, Duration) {
    let page = store.read_page_max();
    let started = Instant::now();
    let mut next = event_store::Position::START;
    let mut count = 0u64;
    let mut bytes = 0usize;
    loop {
        let events = store.read_all(next, page).await.unwrap();
        let Some(last) = events.last() else { break };
        next = last.position.next();
        count += events.len() as u64;
        bytes += events.iter().map(|e| e.data.len()).sum::<usize>();
    }
    black_box(bytes);
    (count, started.elapsed())
}

/// Row 8 on annals: the whole log lent by `Store::scan`, each event's
/// payload touched as tephra's are.
fn annals_scan(store: &Store) -> (u64, Duration) {
    let started = Instant::now();
    let mut count = 0u64;
    let mut bytes = 0usize;
    store
        .scan(event_store::Position::START, |event| {
            bytes += event.data.len();
            count += 1;
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
    black_box(bytes);
    (count, started.elapsed())
}

/// Row 8 on tephra: its full-log read, each event's payload touched as
/// annals's are.
fn tephra_read_all(handle: &WriteHandle) -> (u64, Duration) {
    let started = Instant::now();
    let mut reads = handle.read(&Query::All, Position::ZERO, None);
    let mut count = 0u64;
    let mut bytes = 0usize;
    while let Some(item) = reads.next() {
        bytes += item.unwrap().event.data().len();
        count += 1;
    }
    black_box(bytes);
    (count, started.elapsed())
}

/// Row 9 on annals: [`LOADS`] loads of the large stream.
async fn annals_loads(store: &Store) -> Latencies {
    let stream = StreamId::new(LARGE_STREAM).unwrap();
    let mut times = Vec::with_capacity(LOADS);
    for _ in 0..LOADS {
        let started = Instant::now();
        let loaded = store.load(&stream, None).await.unwrap();
        times.push(started.elapsed());
        assert_eq!(loaded.events.len() as u64, LARGE_EVENTS);
    }
    Latencies::new(times)
}

/// Row 9 on tephra: as many reads of the large stream's tag, collected.
fn tephra_loads(handle: &WriteHandle) -> Latencies {
    let query = Query::item(QueryItem::with_tags(tephra_tags(LARGE_STREAM)));
    let mut times = Vec::with_capacity(LOADS);
    for _ in 0..LOADS {
        let started = Instant::now();
        let events = handle
            .read(&query, Position::ZERO, None)
            .collect_owned()
            .unwrap();
        times.push(started.elapsed());
        assert_eq!(events.len() as u64, LARGE_EVENTS);
    }
    Latencies::new(times)
}

/// Row 10 on annals: from open to accepting appends.
async fn annals_reopen(dir: &Path) -> Duration {
    let started = Instant::now();
    let store = Store::open(dir, StoreOptions::default()).await.unwrap();
    store.ready().await.unwrap();
    let took = started.elapsed();
    store.close().await.unwrap();
    took
}

/// Row 10 on tephra: from opening the segments to a running writer.
fn tephra_reopen(dir: &Path) -> Duration {
    let started = Instant::now();
    let log = Tephra::open(dir);
    let took = started.elapsed();
    log.close();
    took
}
