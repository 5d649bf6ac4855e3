//! One client workload against one event store server over loopback,
//! printed as one JSON line.
//!
//! `--mode append` (default): `--writers N` concurrent writers, each with a
//! stream of its own (annals: the stream `w<N>-<i>`; tephra and UmaDB: the
//! tag of that name), append one 200-byte JSON event at a time for
//! `--seconds S`, every append guarded so that it fails if anyone else
//! appended to the writer's stream since the writer's last append:
//!
//! - annals: `ExpectedVersion::Exact(v)` (`NoStream` first), through
//!   `event_store_http::RemoteStore`, the client annals's own processes
//!   use (HTTP/1.1 + JSON, one pooled connection per writer in flight);
//! - tephra: `AppendCondition` on the writer's tag `after` the position of
//!   its last append, one blocking `tephra_client::Client` (one TCP
//!   connection) per writer thread;
//! - UmaDB: `DcbAppendCondition` on the writer's tag `after` its last
//!   position, one `AsyncUmaDbClient` (one gRPC/HTTP/2 connection) per
//!   writer.
//!
//! `--mode read`: one client reads the whole log from its start, in the
//! server's own paging (annals: `GET /all` pages of the server's page
//! maximum in binary, each asked for while the one before is consumed, by
//! `RemoteStore::read_all_ahead`; tephra and UmaDB: one streamed read of
//! everything).
//!
//! A guard that fails, or any other error, ends the run with an error:
//! each writer owns its stream, so a conflict would mean a broken client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use event_store::{EventStore, ExpectedVersion, NewEvent, Position, StreamId};
use event_store_http::{RemoteOptions, RemoteStore};
use futures_util::StreamExt;
use umadb_dcb::DcbEventStoreAsync;

/// A type no domain of annals knows: `annals store` upcasts the reference
/// domain's types on read, and this payload is none of theirs.
const EVENT_TYPE: &str = "NetworkBenchEvent";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    Annals,
    Tephra,
    Umadb,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Append,
    Read,
}

#[derive(Debug)]
struct Args {
    system: System,
    url: String,
    mode: Mode,
    writers: usize,
    seconds: f64,
    prefix: String,
}

fn usage() -> anyhow::Error {
    anyhow!(
        "usage: bench-peers-network --system annals|tephra|umadb --url URL \
         [--mode append|read] [--writers N] [--seconds S] [--prefix P]"
    )
}

fn parse_args() -> Result<Args> {
    let mut system = None;
    let mut url = None;
    let mut mode = Mode::Append;
    let mut writers = 1;
    let mut seconds: f64 = 5.0;
    let mut prefix = String::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(usage);
        match flag.as_str() {
            "--system" => {
                system = Some(match value()?.as_str() {
                    "annals" => System::Annals,
                    "tephra" => System::Tephra,
                    "umadb" => System::Umadb,
                    _ => return Err(usage()),
                })
            }
            "--url" => url = Some(value()?),
            "--mode" => {
                mode = match value()?.as_str() {
                    "append" => Mode::Append,
                    "read" => Mode::Read,
                    _ => return Err(usage()),
                }
            }
            "--writers" => writers = value()?.parse().context("--writers")?,
            "--seconds" => seconds = value()?.parse().context("--seconds")?,
            "--prefix" => prefix = value()?,
            _ => return Err(usage()),
        }
    }
    if writers == 0 || !seconds.is_finite() || seconds <= 0.0 {
        return Err(usage());
    }
    Ok(Args {
        system: system.ok_or_else(usage)?,
        url: url.ok_or_else(usage)?,
        mode,
        writers,
        seconds,
        prefix,
    })
}

/// What one writer did: its appends' latencies in microseconds.
type Latencies = Vec<u32>;

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// The stream (or tag) of each writer of a row of `writers`: distinct
/// per row, so that the rows of one server never share a stream, and
/// after `prefix` (`--prefix`), so that a warm-up or a slice of a row
/// takes streams of its own.
fn stream_names(prefix: &str, writers: usize) -> Vec<String> {
    (0..writers)
        .map(|i| format!("{prefix}w{writers}-{i}"))
        .collect()
}

/// Event numbers: distinct across writers so that payloads differ.
fn event_number(writer: usize, n: u64) -> u64 {
    ((writer as u64) << 40) | n
}

async fn annals_writer(
    store: Arc<RemoteStore>,
    stream: StreamId,
    writer: usize,
    deadline: Instant,
) -> Result<Latencies> {
    let mut latencies = Vec::new();
    let mut version = 0;
    while Instant::now() < deadline {
        let expected = if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(version)
        };
        let event = NewEvent::new(
            EVENT_TYPE,
            bench_harness::payload::json_200(event_number(writer, version)),
        );
        let started = Instant::now();
        let result = store.append(&stream, expected, vec![event]).await?;
        latencies.push(micros(started.elapsed()));
        version = result.last_version;
    }
    Ok(latencies)
}

async fn annals_append(url: &str, streams: &[String], deadline: Instant) -> Result<Vec<Latencies>> {
    let store = Arc::new(RemoteStore::connect(url, RemoteOptions::default()).await?);
    let mut tasks = Vec::new();
    for (i, name) in streams.iter().enumerate() {
        let stream = StreamId::new(name.as_str())?;
        tasks.push(tokio::spawn(annals_writer(
            store.clone(),
            stream,
            i,
            deadline,
        )));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.push(task.await??);
    }
    Ok(all)
}

async fn annals_read(url: &str) -> Result<u64> {
    let store = RemoteStore::connect(url, RemoteOptions::default()).await?;
    let page = store.read_page_max();
    let mut pages = std::pin::pin!(store.read_all_ahead(Position(1), page));
    let mut count = 0;
    while let Some(events) = pages.next().await {
        for event in events? {
            // Touch the payload as a consumer would.
            std::hint::black_box(event.data.len());
            count += 1;
        }
    }
    Ok(count)
}

fn tephra_writer(addr: &str, tag: &str, writer: usize, deadline: Instant) -> Result<Latencies> {
    use tephra_client::{AppendCondition, Client, Event, Position, Query, QueryItem, Tag, Tags};
    let mut client = Client::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    let guard = Query::item(QueryItem::with_tags(Tags::new([Tag::new(tag)?])?));
    let mut latencies = Vec::new();
    let mut last = Position::ZERO;
    let mut n = 0;
    while Instant::now() < deadline {
        let payload = bench_harness::payload::json_200(event_number(writer, n));
        let event = Event::new(EVENT_TYPE, [tag], payload.into_bytes())?;
        let condition = AppendCondition::new(guard.clone()).after(last);
        let started = Instant::now();
        let result = client.append([event], Some(condition))?;
        latencies.push(micros(started.elapsed()));
        last = result.last;
        n += 1;
    }
    Ok(latencies)
}

fn tephra_append(addr: &str, streams: &[String], deadline: Instant) -> Result<Vec<Latencies>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = streams
            .iter()
            .enumerate()
            .map(|(i, tag)| scope.spawn(move || tephra_writer(addr, tag, i, deadline)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow!("a tephra writer panicked"))?)
            .collect()
    })
}

fn tephra_read(addr: &str) -> Result<u64> {
    use tephra_client::{Client, Position, Query};
    let mut client = Client::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    let mut count = 0;
    for event in client.read(Query::all(), Position::ZERO, None)? {
        // Touch the payload as a consumer would.
        std::hint::black_box(event?.event().payload().len());
        count += 1;
    }
    Ok(count)
}

async fn umadb_connect(url: &str) -> Result<umadb_client::AsyncUmaDbClient> {
    umadb_client::UmaDbClient::new(url.to_owned())
        .connect_async()
        .await
        .map_err(|e| anyhow!("connecting to UmaDB at {url}: {e:?}"))
}

async fn umadb_writer(
    url: String,
    tag: String,
    writer: usize,
    deadline: Instant,
) -> Result<Latencies> {
    use umadb_dcb::{DcbAppendCondition, DcbEvent, DcbQuery, DcbQueryItem};
    let client = umadb_connect(&url).await?;
    let guard = DcbQuery::new().item(DcbQueryItem::new().tags([tag.clone()]));
    let mut latencies = Vec::new();
    let mut last: Option<u64> = None;
    let mut n = 0;
    while Instant::now() < deadline {
        let payload = bench_harness::payload::json_200(event_number(writer, n));
        let event = DcbEvent::new()
            .event_type(EVENT_TYPE)
            .tags([tag.clone()])
            .data(payload.into_bytes());
        let condition = DcbAppendCondition::new(guard.clone()).after(last);
        let started = Instant::now();
        let position = client
            .append(vec![event], Some(condition), None)
            .await
            .map_err(|e| anyhow!("UmaDB append: {e:?}"))?;
        latencies.push(micros(started.elapsed()));
        last = Some(position);
        n += 1;
    }
    Ok(latencies)
}

async fn umadb_append(url: &str, streams: &[String], deadline: Instant) -> Result<Vec<Latencies>> {
    let mut tasks = Vec::new();
    for (i, name) in streams.iter().enumerate() {
        tasks.push(tokio::spawn(umadb_writer(
            url.to_owned(),
            name.clone(),
            i,
            deadline,
        )));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.push(task.await??);
    }
    Ok(all)
}

async fn umadb_read(url: &str) -> Result<u64> {
    let client = umadb_connect(url).await?;
    let mut events = client
        .read(None, None, false, None)
        .await
        .map_err(|e| anyhow!("UmaDB read: {e:?}"))?;
    let mut count = 0;
    while let Some(event) = events.next().await {
        let event = event.map_err(|e| anyhow!("UmaDB read: {e:?}"))?;
        std::hint::black_box(event.event.data.len());
        count += 1;
    }
    Ok(count)
}

/// The `q` quantile of sorted `values`, in milliseconds.
fn quantile_ms(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() - 1) as f64 * q).round() as usize;
    f64::from(sorted[at]) / 1000.0
}

/// This process's CPU time so far (user + system), in seconds, from
/// `/proc/self/stat`: how much of the machine the client itself took, so
/// that a client-bound figure shows as one. NaN where there is no procfs.
fn own_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // The fields after the command name (which is in parentheses and may
    // hold spaces): utime and stime are the 14th and 15th of the line.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return f64::NAN;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        // Linux reports in USER_HZ, 100 on every architecture it runs on.
        (Some(user), Some(system)) => (user + system) / 100.0,
        _ => f64::NAN,
    }
}

fn system_name(system: System) -> &'static str {
    match system {
        System::Annals => "annals",
        System::Tephra => "tephra",
        System::Umadb => "umadb",
    }
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let name = system_name(args.system);
    let line = match args.mode {
        Mode::Append => {
            let seconds = Duration::from_secs_f64(args.seconds);
            let started = Instant::now();
            let deadline = started + seconds;
            let streams = stream_names(&args.prefix, args.writers);
            let per_writer = match args.system {
                System::Annals => runtime.block_on(annals_append(&args.url, &streams, deadline)),
                System::Tephra => tephra_append(&args.url, &streams, deadline),
                System::Umadb => runtime.block_on(umadb_append(&args.url, &streams, deadline)),
            }?;
            // Every writer's last append ends after the deadline: the rate
            // is over the time until the last one came back.
            let elapsed = started.elapsed().as_secs_f64();
            let mut latencies: Vec<u32> = per_writer.into_iter().flatten().collect();
            latencies.sort_unstable();
            let events = latencies.len() as u64;
            serde_json::json!({
                "system": name,
                "mode": "append",
                "writers": args.writers,
                "seconds": elapsed,
                "events": events,
                "events_per_s": events as f64 / elapsed,
                "p50_ms": quantile_ms(&latencies, 0.5),
                "p99_ms": quantile_ms(&latencies, 0.99),
                "client_cpu_s": own_cpu_seconds(),
            })
        }
        Mode::Read => {
            let started = Instant::now();
            let events = match args.system {
                System::Annals => runtime.block_on(annals_read(&args.url)),
                System::Tephra => tephra_read(&args.url),
                System::Umadb => runtime.block_on(umadb_read(&args.url)),
            }?;
            let elapsed = started.elapsed().as_secs_f64();
            if events == 0 {
                bail!("{name}: the log is empty");
            }
            serde_json::json!({
                "system": name,
                "mode": "read",
                "seconds": elapsed,
                "events": events,
                "events_per_s": events as f64 / elapsed,
                "client_cpu_s": own_cpu_seconds(),
            })
        }
    };
    println!("{line}");
    Ok(())
}
