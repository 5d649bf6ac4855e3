//! Crash test with a real child process: the child appends with fsync from
//! eight writers and prints every acknowledged append (and, should an append
//! fail, says so and exits); the parent kills it with SIGKILL at a random
//! moment once every writer has been acknowledged, checks that it was still
//! running then, reopens the store and checks that every acknowledged event
//! is present, intact and in order. Repeated over many cycles on one data
//! directory, so recovery runs on top of earlier recoveries and kills land
//! during seals.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use event_store::{EventStore, ExpectedVersion, Position, StoreOptions, StreamId};
use rand::Rng;
use uuid::Uuid;

use crate::common::{open, read_everything};

const CHILD_DIR_ENV: &str = "ANNALS_CRASH_CHILD_DIR";

fn options() -> StoreOptions {
    StoreOptions {
        // Small enough that kills land during seals too.
        segment_bytes_max: 64 * 1024,
        ..StoreOptions::default()
    }
}

const WRITERS: u64 = 8;

/// Not a test on its own: the body of the child process, started by
/// `killed_writers_never_lose_acknowledged_events` through this test binary.
/// Run without the parent's directory it refuses, rather than pass.
#[test]
#[ignore = "run as a child process by the crash test"]
fn crash_child() {
    let dir = std::env::var(CHILD_DIR_ENV).unwrap_or_else(|_| {
        panic!(
            "crash_child is the child process of killed_writers_never_lose_acknowledged_events, \
             which sets {CHILD_DIR_ENV}; it does not run on its own"
        )
    });
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(child(Path::new(&dir)));
}

/// Appends for ever from `WRITERS` tasks, printing `ACK ...` per
/// acknowledged append. When a writer stops (an append failed, or it
/// panicked), prints `FAILED <why>` and exits with status 3, so that the
/// parent cannot mistake a broken child for a killed one.
async fn child(dir: &Path) {
    let store = open(dir, options()).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..WRITERS {
        writers.spawn(write(store.clone(), writer, tx.clone()));
    }
    drop(tx);
    let mut out = std::io::stdout().lock();
    loop {
        tokio::select! {
            line = rx.recv() => {
                let Some(line) = line else { break };
                writeln!(out, "{line}").unwrap();
                out.flush().unwrap();
            }
            Some(ended) = writers.join_next() => {
                let why = match ended {
                    Ok(Ok(())) => "a writer stopped".to_string(),
                    Ok(Err(e)) => e,
                    Err(e) => format!("a writer panicked: {e}"),
                };
                writeln!(out, "FAILED {why}").unwrap();
                out.flush().unwrap();
                std::process::exit(3);
            }
        }
    }
}

/// One writer of the child: appends batches of one to three events to its
/// five streams until an append fails (or nobody prints any more).
async fn write(
    store: event_store::Store,
    writer: u64,
    tx: tokio::sync::mpsc::UnboundedSender<String>,
) -> Result<(), String> {
    let mut n = 0u64;
    loop {
        n += 1;
        let stream = StreamId::new(format!("w{writer}-{}", n % 5)).unwrap();
        let size = 1 + (n % 3) as usize;
        let events: Vec<_> = (0..size)
            .map(|i| {
                event_store::NewEvent::new(
                    "Tick",
                    format!(r#"{{"writer":{writer},"n":{n},"i":{i}}}"#),
                )
            })
            .collect();
        let ids: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
        let r = store
            .append(&stream, ExpectedVersion::Any, events)
            .await
            .map_err(|e| format!("writer {writer}: append {n} failed: {e}"))?;
        let line = format!(
            "ACK {} {} {} {}",
            stream,
            r.first_version,
            r.first_position.0,
            ids.join(",")
        );
        if tx.send(line).is_err() {
            return Ok(());
        }
    }
}

#[derive(Debug)]
struct Ack {
    stream: String,
    first_version: u64,
    first_position: u64,
    ids: Vec<Uuid>,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut parts = line.strip_prefix("ACK ")?.split(' ');
    Some(Ack {
        stream: parts.next()?.to_string(),
        first_version: parts.next()?.parse().ok()?,
        first_position: parts.next()?.parse().ok()?,
        ids: parts
            .next()?
            .split(',')
            .map(|s| s.parse().ok())
            .collect::<Option<Vec<_>>>()?,
    })
}

/// Kills the child process when dropped, so that a failing test leaves no
/// writer running.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A line of the child's output.
enum Line {
    Ack(Ack),
    Failed(String),
}

/// 24 kills; with `ANNALS_TEST_LONG`, 200.
fn cycles() -> usize {
    if std::env::var("ANNALS_TEST_LONG").is_ok_and(|v| !v.is_empty() && v != "0") {
        200
    } else {
        24
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_writers_never_lose_acknowledged_events() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rng();
    let mut acked: Vec<Ack> = Vec::new();
    let cycles = cycles();
    for cycle in 0..cycles {
        let mut child = KillOnDrop(
            Command::new(&exe)
                .args([
                    "--exact",
                    "crash::crash_child",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_DIR_ENV, dir.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let stdout = child.0.stdout.take().unwrap();
        let stderr = child.0.stderr.take().unwrap();
        // Drained all along, so the child never blocks on a full pipe, and
        // kept for the message should it stop on its own.
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                text.push_str(&line);
                text.push('\n');
            }
            text
        });
        let (tx, rx) = std::sync::mpsc::channel::<Line>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let line = match line.strip_prefix("FAILED ") {
                    Some(why) => Line::Failed(why.to_string()),
                    None => match parse_ack(&line) {
                        Some(ack) => Line::Ack(ack),
                        None => continue,
                    },
                };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // The random delay counts from the moment every writer has been
        // acknowledged: the start of the process and the recovery of an
        // ever longer log take a while, longer still on a loaded machine,
        // and a delay counted from the spawn would often kill the child
        // before it wrote.
        let mut new_acks = Vec::new();
        let mut failures = Vec::new();
        let mut writers_acked = std::collections::HashSet::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while writers_acked.len() < WRITERS as usize && failures.is_empty() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match tokio::task::block_in_place(|| rx.recv_timeout(left)) {
                Ok(Line::Ack(ack)) => {
                    writers_acked.insert(ack.stream.split('-').next().unwrap_or("").to_string());
                    new_acks.push(ack);
                }
                Ok(Line::Failed(why)) => failures.push(why),
                Err(e) => panic!(
                    "cycle {cycle}: {} of {WRITERS} writers acknowledged within 60 s ({e})",
                    writers_acked.len()
                ),
            }
        }
        if failures.is_empty() {
            let delay = Duration::from_millis(rng.random_range(30..400));
            tokio::time::sleep(delay).await;
        }
        // A child that stopped by itself (a failed append, a panic) is a
        // failure, never a kill.
        let exited = child.0.try_wait().unwrap();
        if exited.is_none() {
            child.0.kill().unwrap(); // SIGKILL
        }
        let status = child.0.wait().unwrap();
        // The child is gone, so its output ends and the readers return.
        reader.join().unwrap();
        let stderr = stderr.join().unwrap();
        for line in rx.try_iter() {
            match line {
                Line::Ack(ack) => new_acks.push(ack),
                Line::Failed(why) => failures.push(why),
            }
        }
        assert!(
            exited.is_none() && failures.is_empty(),
            "cycle {cycle}: the child stopped before the kill ({status}): {failures:?}\n{stderr}"
        );
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "cycle {cycle}: the child was not ended by the SIGKILL ({status}):\n{stderr}"
        );

        // Everything ever acknowledged is there, intact and in order.
        let store = open(dir.path(), options()).await;
        let log = read_everything(&store).await;
        for (i, e) in log.iter().enumerate() {
            assert_eq!(
                e.position,
                Position(i as u64 + 1),
                "cycle {cycle}: the log has a gap"
            );
        }
        let by_position: HashMap<u64, &event_store::RecordedEvent> =
            log.iter().map(|e| (e.position.0, e)).collect();
        acked.extend(new_acks);
        for ack in &acked {
            for (i, id) in ack.ids.iter().enumerate() {
                let position = ack.first_position + i as u64;
                let e = by_position.get(&position).unwrap_or_else(|| {
                    panic!("cycle {cycle}: acknowledged position {position} is missing")
                });
                assert_eq!(e.id, *id, "cycle {cycle}: wrong event at {position}");
                assert_eq!(e.stream_id.as_str(), ack.stream);
                assert_eq!(e.version, ack.first_version + i as u64);
                let body: serde_json::Value = e.data_as().unwrap();
                assert_eq!(body["i"], i as u64);
            }
        }
        // Per-stream versions are gapless.
        let mut versions: HashMap<&str, u64> = HashMap::new();
        for e in &log {
            let v = versions.entry(e.stream_id.as_str()).or_default();
            assert_eq!(
                e.version,
                *v + 1,
                "cycle {cycle}: version gap in {}",
                e.stream_id
            );
            *v = e.version;
        }
        store.close().await.unwrap();
    }
    // Every writer of every child was acknowledged before its kill (checked
    // above); and the log rolled over several times, so recoveries ran on
    // sealed segments as well as on the active one.
    let store = open(dir.path(), options()).await;
    let stats = store.stats().await.unwrap();
    store.close().await.unwrap();
    assert!(
        stats.sealed_segments >= cycles as u64 / 2,
        "{} acknowledged appends filled only {} sealed segments",
        acked.len(),
        stats.sealed_segments
    );
    let report = event_store::verify(dir.path()).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}
