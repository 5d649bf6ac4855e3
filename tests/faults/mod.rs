//! The fault suite: what a client or the disk can do to a running system,
//! each case against real processes and real files, with what must hold
//! afterwards. A new case goes into the file of its kind, or a new file
//! here:
//!
//! - `edge`: what a client can send at the connection layer: heads that
//!   do not parse, oversized ones, slow or stalled heads and bodies, on
//!   every process.
//! - `kill`: `annals serve` killed with SIGKILL under HTTP load, every
//!   acknowledged command checked after the restart.
//! - `damage`: bit flips in segment bodies and headers, sealed and active;
//!   the process starts, intact data is served, appends are refused with
//!   the reason, readiness says why, `annals verify` names only what is
//!   damaged.
//! - `disk_full`: a tmpfs that fills up under `annals serve`: the event
//!   log's disk (commands refused with the cause), the views' disk (the
//!   projector stuck and said so, then going on by itself), and a restart
//!   on a full disk (one line, at once).
//! - `outage`: the view database cut off under the split deployment.
//! - `shutdown`: stopping on SIGTERM with clients still attached.
//! - `split`: the split deployment on PostgreSQL under load, each process
//!   killed in turn and the view database cut off for a while.
//! - `rewind`: a log that goes backwards under the views (a lost tail, a
//!   restored older copy).
//! - `lost_answers`: the split deployment when the store's answer to an
//!   append is lost on the way (through `proxy`, a TCP proxy that cuts
//!   connections on cue).

mod damage;
mod disk_full;
mod edge;
mod kill;
mod lost_answers;
mod outage;
mod proxy;
mod rewind;
mod shutdown;
mod split;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::cli::start;
use crate::process::Proc;
use crate::split::{http, query_at};

/// A registered customer and where its registration sits in the log.
#[derive(Debug, Clone)]
pub struct Registered {
    pub id: String,
    pub position: u64,
}

/// Starts `annals serve` on `dir` with small segments (so that a few
/// dozen events fill several), on a port of its own.
pub fn serve(dir: &Path) -> Proc {
    start(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--segment-bytes-max",
            "4096",
        ],
        dir,
        "listening on",
    )
}

/// Registers `n` customers through `url`, and waits until the views show
/// the last one.
pub async fn register(url: &str, n: usize) -> Vec<Registered> {
    let http = http();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let response = http
            .post(format!("{url}/customers"))
            .json(&json!({
                "name": format!("Customer {i}"),
                "email": format!("c{i}@example.org"),
                "credit_limit": {"amount": 5000, "currency": "EUR"},
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        out.push(Registered {
            id: body["id"].as_str().unwrap().to_owned(),
            position: body["position"].as_u64().unwrap(),
        });
    }
    let last = out.last().unwrap();
    query_at(
        &http,
        &format!("{url}/customers/{}", last.id),
        last.position,
    )
    .await;
    out
}

/// The segment files of a data directory, in order.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("events"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    files
}

/// Flips one bit of the byte at `offset`.
pub fn flip(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    assert!(
        offset < bytes.len(),
        "{} has {} bytes",
        path.display(),
        bytes.len()
    );
    bytes[offset] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

/// The customer ids whose streams have records in a segment file (stream
/// ids are stored in clear), in file order.
pub fn customers_in(segment: &Path) -> Vec<String> {
    let bytes = std::fs::read(segment).unwrap();
    let needle = b"customer-";
    let mut out = Vec::new();
    let mut i = 0;
    while i + needle.len() + 36 <= bytes.len() {
        if &bytes[i..i + needle.len()] == needle {
            let id = &bytes[i + needle.len()..i + needle.len() + 36];
            if let Ok(id) = std::str::from_utf8(id)
                && !out.iter().any(|o| o == id)
            {
                out.push(id.to_owned());
            }
            i += needle.len() + 36;
        } else {
            i += 1;
        }
    }
    out
}

/// GETs `url`; the status and the body as JSON (`Null` when it is not).
pub async fn get(url: &str) -> (u16, Value) {
    let response = http().get(url).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// POSTs `body` to `url`; the status, the content type and the JSON body.
pub async fn post(url: &str, body: &Value) -> (u16, String, Value) {
    let response = http().post(url).json(body).send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (
        status,
        content_type,
        response.json().await.unwrap_or(Value::Null),
    )
}

/// `/health/ready` once it stops answering 200 (or after 10 s, whatever
/// it answers then): the readiness of a process expected to be unready.
pub async fn unready(url: &str) -> (u16, Value) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = get(&format!("{url}/health/ready")).await;
        if answer.0 != 200 || std::time::Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A tmpfs of a few MiB mounted on a fresh directory for one test (and
/// unmounted when dropped), to run out of space for real. Mounting needs
/// root: without it the test is skipped with a notice, except when `CI` is
/// set (to anything but `false` or `0`), where that is a failure.
pub struct Tmpfs {
    _parent: tempfile::TempDir,
    path: PathBuf,
}

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

impl Tmpfs {
    /// `None` (skip) when it cannot be mounted and this is not CI.
    pub fn mount(bytes: u64) -> Option<Tmpfs> {
        let parent = tempfile::tempdir().unwrap();
        let path = parent.path().join("fs");
        std::fs::create_dir(&path).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&path)
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(Tmpfs {
                _parent: parent,
                path,
            }),
            other => {
                let why = match other {
                    Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                    Err(e) => e.to_string(),
                };
                assert!(!under_ci(), "mounting a tmpfs is required under CI: {why}");
                eprintln!("notice: skipping a full-disk test, cannot mount a tmpfs: {why}");
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fills the filesystem with a file until a write fails for want of
    /// space; returns the file, whose removal gives the space back.
    pub fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        for chunk in [64 << 10, 4 << 10, 512, 1] {
            let bytes = vec![0xa5_u8; chunk];
            loop {
                match file.write_all(&bytes) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                    Err(e) => panic!("filling {}: {e}", filler.display()),
                }
            }
        }
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a process a failed test left behind may still hold files.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}
