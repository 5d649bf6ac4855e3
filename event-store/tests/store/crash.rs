//! Crash test with a real child process: the child appends with fsync and
//! prints every acknowledged append; the parent kills it with SIGKILL at a
//! random moment after its first acknowledged append, reopens the store and
//! checks that every acknowledged event is present, intact and in order.
//! Repeated over many cycles on one data directory, so recovery runs on top
//! of earlier recoveries.

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

/// Not a test on its own: the body of the child process, started by
/// `killed_writers_never_lose_acknowledged_events` through this test binary.
#[test]
#[ignore = "run as a child process by the crash test"]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(child(Path::new(&dir)));
}

async fn child(dir: &Path) {
    let store = open(dir, options()).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    for writer in 0..8u64 {
        let store = store.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
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
                match store.append(&stream, ExpectedVersion::Any, events).await {
                    Ok(r) => {
                        let line = format!(
                            "ACK {} {} {} {}",
                            stream,
                            r.first_version,
                            r.first_position.0,
                            ids.join(",")
                        );
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                    Err(e) => panic!("append failed: {e}"),
                }
            }
        });
    }
    drop(tx);
    let mut out = std::io::stdout().lock();
    while let Some(line) = rx.recv().await {
        writeln!(out, "{line}").unwrap();
        out.flush().unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_writers_never_lose_acknowledged_events() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rng();
    let mut acked: Vec<Ack> = Vec::new();
    let cycles = 24;
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
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let stdout = child.0.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<Ack>();
        let reader = std::thread::spawn(move || {
            for ack in BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| parse_ack(&l))
            {
                if tx.send(ack).is_err() {
                    break;
                }
            }
        });
        // The random delay counts from the first acknowledged append: the
        // start of the process and the recovery of an ever longer log take
        // a while, longer still on a loaded machine, and a delay counted
        // from the spawn would often kill the child before it wrote.
        let first = tokio::task::block_in_place(|| rx.recv_timeout(Duration::from_secs(60)))
            .unwrap_or_else(|e| {
                panic!("cycle {cycle}: the child acknowledged no append within 60 s: {e}")
            });
        let delay = Duration::from_millis(rng.random_range(30..400));
        tokio::time::sleep(delay).await;
        child.0.kill().unwrap(); // SIGKILL
        child.0.wait().unwrap();
        // The child is gone, so its output ends and the reader returns.
        reader.join().unwrap();
        let new_acks: Vec<Ack> = std::iter::once(first).chain(rx.try_iter()).collect();

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
    assert!(
        acked.len() > cycles,
        "the children acknowledged only {} appends",
        acked.len()
    );
    let report = event_store::verify(dir.path()).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}
