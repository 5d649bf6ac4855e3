//! Damage in the event log, as a flipped bit in a segment file while no
//! process runs: in a record and in a header, in a sealed segment and in
//! the active one. Every time `annals serve` must still start and serve
//! the intact data and views, refuse appends with the reason, say why in
//! readiness, answer commands on a damaged stream with a problem naming
//! the damage, and `annals verify` must name the damaged segment alone.

use std::path::Path;

use serde_json::{Value, json};

use super::{Registered, customers_in, flip, get, post, register, segments, serve, unready};
use crate::process::{annals, output_within};

/// A data directory of several segments of registrations, no process on it.
async fn filled(dir: &Path) -> Vec<Registered> {
    let mut serving = serve(dir);
    let customers = register(&serving.url, 40).await;
    assert!(serving.terminate().success());
    assert!(segments(dir).len() >= 4, "{:?}", segments(dir));
    customers
}

/// `annals verify`: its exit code and the files of its DAMAGE lines.
fn verify(dir: &Path) -> (Option<i32>, Vec<String>) {
    let out = output_within(
        annals().args(["verify", "--data-dir"]).arg(dir),
        std::time::Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let damaged = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("DAMAGE "))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect();
    (out.status.code(), damaged)
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_str().unwrap().to_owned()
}

/// What every damaged store must do once restarted: serve the views,
/// refuse a new registration with the reason, and say so in readiness.
async fn serves_reads_and_refuses_appends(url: &str, customers: &[Registered], damaged: &str) {
    for c in customers {
        let (status, body) = get(&format!("{url}/customers/{}", c.id)).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, content_type, body) = post(
        &format!("{url}/customers"),
        &json!({"name": "New", "email": "new@example.org",
                "credit_limit": {"amount": 1, "currency": "EUR"}}),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(
        body["type"], "urn:annals:problem:store-unavailable",
        "{body}"
    );
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("read-only") && detail.contains(damaged),
        "{detail}"
    );

    let (status, ready) = unready(url).await;
    assert_eq!(status, 503, "{ready}");
    let store = ready["checks"]["store"].as_str().unwrap_or_default();
    assert!(
        store.contains("corruption") && store.contains(damaged),
        "{ready}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_bit_in_a_sealed_record_leaves_the_intact_data_served() {
    let dir = tempfile::tempdir().unwrap();
    let customers = filled(dir.path()).await;
    let segment = segments(dir.path())[1].clone();
    let victim = customers_in(&segment)[0].clone();
    // Inside the first record's body, past its 12-byte frame header.
    flip(&segment, 64 + 12 + 70);

    let (code, damaged) = verify(dir.path());
    assert_eq!(code, Some(1));
    assert_eq!(damaged, vec![segment.display().to_string()]);

    let serving = serve(dir.path());
    let url = &serving.url;
    // A command on the damaged customer names the damage.
    let (status, content_type, body) = post(
        &format!("{url}/customers/{victim}/credit-limit"),
        &json!({"credit_limit": {"amount": 100, "currency": "EUR"}}),
    )
    .await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(body["type"], "urn:annals:problem:data-damaged", "{body}");
    assert!(
        body["file"]
            .as_str()
            .unwrap()
            .ends_with(&file_name(&segment)),
        "{body}"
    );
    assert!(body["offset"].as_u64().unwrap() >= 64, "{body}");
    // A command on an intact customer loads it, and then meets the
    // read-only store.
    let intact = customers.iter().find(|c| c.id != victim).unwrap();
    let (status, _, body) = post(
        &format!("{url}/customers/{}/credit-limit", intact.id),
        &json!({"credit_limit": {"amount": 100, "currency": "EUR"}}),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    serves_reads_and_refuses_appends(url, &customers, &file_name(&segment)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_bit_in_a_sealed_header_leaves_the_intact_data_served() {
    let dir = tempfile::tempdir().unwrap();
    let customers = filled(dir.path()).await;
    let segment = segments(dir.path())[1].clone();
    let inside = customers_in(&segment)[0].clone();
    // The base position field of the header.
    flip(&segment, 24);

    let (code, damaged) = verify(dir.path());
    assert_eq!(code, Some(1));
    assert_eq!(
        damaged,
        vec![segment.display().to_string()],
        "only the damaged segment"
    );

    let serving = serve(dir.path());
    let url = &serving.url;
    // The records of that segment still read: the command loads the
    // customer and is refused only for the read-only store.
    let (status, _, body) = post(
        &format!("{url}/customers/{inside}/credit-limit"),
        &json!({"credit_limit": {"amount": 100, "currency": "EUR"}}),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["type"], "urn:annals:problem:store-unavailable",
        "{body}"
    );
    serves_reads_and_refuses_appends(url, &customers, &file_name(&segment)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_bit_in_the_active_segment_leaves_the_intact_data_served() {
    for (what, offset) in [("record", None), ("header", Some(24))] {
        let dir = tempfile::tempdir().unwrap();
        let customers = filled(dir.path()).await;
        let segment = segments(dir.path()).last().unwrap().clone();
        let offset = offset.unwrap_or_else(|| {
            // Inside the first record's body, with later records intact.
            assert!(std::fs::metadata(&segment).unwrap().len() > 600, "{what}");
            64 + 12 + 70
        });
        flip(&segment, offset);

        let (code, damaged) = verify(dir.path());
        assert_eq!(code, Some(1), "{what}");
        assert_eq!(damaged, vec![segment.display().to_string()], "{what}");

        let serving = serve(dir.path());
        serves_reads_and_refuses_appends(&serving.url, &customers, &file_name(&segment)).await;
        let status: Value = get(&format!("{}/health/ready", serving.url)).await.1;
        assert!(status["checks"]["views"] == "ok", "{what}: {status}");
    }
}

#[test]
fn verify_refuses_a_missing_or_empty_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    for path in [dir.path().join("no-such-dir"), dir.path().to_path_buf()] {
        let out = output_within(
            annals().args(["verify", "--data-dir"]).arg(&path),
            std::time::Duration::from_secs(60),
        );
        assert!(!out.status.success(), "{path:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("is not an annals data directory"),
            "{stderr}"
        );
    }
}
