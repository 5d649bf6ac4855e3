//! A full disk under `annals serve`, on a real size-limited filesystem (a
//! tmpfs of a few MiB mounted for the test): while the SQLite views cannot
//! grow, readiness reports the stuck projection (its name, position and
//! error); once space is freed the projector goes on by itself; and a
//! restart on a disk that is still full ends at once with one line saying
//! so and a failure status.
//!
//! Mounting needs root. Without it a test is skipped with a notice, except
//! when `CI` is set, where that is a failure.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::process::{Proc, annals, output_within};
use crate::split::{command, eur, http, query_at, wait_ready};

/// A tmpfs of `bytes` mounted on a fresh directory, unmounted when dropped.
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

/// `GET /health/ready`: the status and the body.
async fn readiness(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let response = http
        .get(format!("{url}/health/ready"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn register(http: &reqwest::Client, url: &str, name: &str) -> (String, u64) {
    let (status, body) = command(
        http,
        &format!("{url}/customers"),
        &json!({"name": name, "email": "someone@example.org", "credit_limit": eur(1_000)}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    (
        body["id"].as_str().unwrap().to_owned(),
        body["position"].as_u64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_view_disk_makes_readiness_report_the_stuck_projection_until_space_is_back() {
    let Some(fs) = Tmpfs::mount(4 << 20) else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let views = format!("sqlite://{}/views.sqlite", fs.path().display());
    let mut serve = Proc::start_with_env(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.path().to_str().unwrap(),
            "--database",
            &views,
        ],
        &[("ANNALS_PROJECTION_STUCK_AFTER_MS", "200")],
        "listening on",
    );
    let url = serve.url.clone();
    let http = http();
    wait_ready(&http, &url).await;
    let (first, position) = register(&http, &url, "Before The Flood").await;
    query_at(&http, &format!("{url}/customers/{first}"), position).await;

    let filler = fs.fill();
    // The store is on another disk: commands go on, the views cannot.
    let mut last = (String::new(), 0);
    for i in 0..20 {
        last = register(&http, &url, &format!("During The Flood {i}")).await;
    }
    let (stuck_id, stuck_position) = last;
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        let (status, body) = readiness(&http, &url).await;
        if status == 503 && body["checks"]["projector"].is_string() {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "readiness still says {status} while the views cannot be written: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let check = body["checks"]["projector"].as_str().unwrap();
    assert!(check.contains("customers"), "{body}");
    assert!(check.contains("full"), "{body}");
    let stuck: Vec<&Value> = body["projections"]
        .as_array()
        .unwrap_or_else(|| panic!("no projections in {body}"))
        .iter()
        .filter(|p| p["name"] == "customers")
        .collect();
    assert_eq!(stuck.len(), 1, "{body}");
    assert_eq!(stuck[0]["state"], "stuck", "{body}");
    assert!(stuck[0]["position"].as_u64().unwrap() >= position, "{body}");
    assert!(
        stuck[0]["position"].as_u64().unwrap() < stuck_position,
        "{body}"
    );
    assert!(
        stuck[0]["error"].as_str().unwrap().contains("full"),
        "{body}"
    );

    // Space comes back: the projector goes on without a restart.
    std::fs::remove_file(&filler).unwrap();
    let seen = query_at(
        &http,
        &format!("{url}/customers/{stuck_id}"),
        stuck_position,
    )
    .await;
    assert_eq!(seen["name"], "During The Flood 19");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = readiness(&http, &url).await;
        if status == 200 {
            assert_eq!(body["checks"]["projector"], "ok", "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "not ready again: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(serve.terminate().success());
}

#[test]
fn serve_on_a_full_disk_says_so_and_fails_at_once() {
    let Some(fs) = Tmpfs::mount(4 << 20) else {
        return;
    };
    let data = fs.path().join("data");
    let data_dir = data.to_str().unwrap();
    // A data directory in use before: the store and the views exist.
    let mut serve = Proc::start(
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir],
        "listening on",
    );
    assert!(serve.terminate().success());

    let _filler = fs.fill();
    let started = Instant::now();
    let out = output_within(
        annals()
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir])
            .env("ANNALS_LOG", "off"),
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert!(!out.status.success(), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("annals: "), "{stderr}");
    assert!(stderr.contains("no space left on device"), "{stderr}");
    assert!(!stderr.contains("timed out"), "{stderr}");
    // An answer, not a wait for a pool's timeout.
    assert!(started.elapsed() < Duration::from_secs(8), "{stderr}");
}
