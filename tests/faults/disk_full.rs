//! A full disk under `annals serve`, on a real size-limited filesystem (a
//! tmpfs mounted for the test) that a filler file fills up:
//! - the event log's disk: commands are answered `503 store-unavailable`
//!   naming the cause (never as damaged or missing personal data),
//!   readiness says why, and once space is back a restart serves
//!   everything acknowledged and takes commands again;
//! - the views' disk: readiness reports the stuck projection (its name,
//!   position and error), and once space is freed the projector goes on by
//!   itself;
//! - a restart on a disk that is still full ends at once with one line
//!   saying so and a failure status.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Tmpfs, get, post, register, serve, unready};
use crate::process::{Proc, annals, output_within};
use crate::split::{command, eur, http, query_at, wait_ready};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_as_such_and_nothing_acknowledged_is_lost() {
    let Some(disk) = Tmpfs::mount(24 << 20) else {
        return;
    };
    let data = disk.path().join("data");
    let mut serving = serve(&data);
    let url = serving.url.clone();
    let before = register(&url, 5).await;

    let filler = disk.fill();
    let mut refused = 0;
    for i in 0..50 {
        let (status, content_type, body) = post(
            &format!("{url}/customers"),
            &json!({"name": format!("Late {i}"), "email": format!("late{i}@example.org"),
                    "credit_limit": {"amount": 100, "currency": "EUR"}}),
        )
        .await;
        if status == 201 {
            continue;
        }
        assert_eq!(status, 503, "{body}");
        assert_eq!(content_type, "application/problem+json");
        assert!(
            body["type"] == "urn:annals:problem:store-unavailable"
                || body["type"] == "urn:annals:problem:outcome-unknown",
            "{body}"
        );
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains("No space left on device"), "{detail}");
        refused += 1;
    }
    assert!(refused > 0, "a full disk must refuse commands");
    let (status, ready) = unready(&url).await;
    assert_eq!(status, 503, "{ready}");
    assert!(
        ready.to_string().contains("No space left on device"),
        "{ready}"
    );

    // Space comes back; a restart recovers and takes commands again.
    // It stops (whether its last sync succeeds on the full disk or not).
    let _ = serving.terminate();
    std::fs::remove_file(&filler).unwrap();
    let serving = serve(&data);
    let url = serving.url.clone();
    for c in &before {
        let (status, body) = get(&format!("{url}/customers/{}", c.id)).await;
        assert_eq!(status, 200, "{body}");
    }
    register(&url, 2).await;
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

async fn register_named(http: &reqwest::Client, url: &str, name: &str) -> (String, u64) {
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
    let (first, position) = register_named(&http, &url, "Before The Flood").await;
    query_at(&http, &format!("{url}/customers/{first}"), position).await;

    let filler = fs.fill();
    // The store is on another disk: commands go on, the views cannot.
    let mut last = (String::new(), 0);
    for i in 0..20 {
        last = register_named(&http, &url, &format!("During The Flood {i}")).await;
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
