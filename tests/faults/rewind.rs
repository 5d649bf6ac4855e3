//! A log that goes backwards under its readers: the active segment cut
//! inside its last record (acknowledged events lost from the tail), and
//! the event log restored from an older copy while the views are kept.
//! Either way the next append reuses positions the views already contain.
//! The projections must stop with an error that says so (never apply the
//! new event at a position they think they have, which would hide it for
//! ever), `annals status` and readiness must show it, and `annals rebuild`
//! must bring the views back in line with the log.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Registered, get, post, register, segments, serve};
use crate::process::{annals, output_within};

/// Waits (bounded) until the `customers` projection of the process at
/// `url` is failed, and returns its status.
async fn failed_customers(url: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(&format!("{url}/projections/customers")).await;
        assert_eq!(status, 200, "{body}");
        if body["state"] == "failed" {
            return body;
        }
        assert!(Instant::now() < deadline, "never failed: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Registers one customer and returns it (its view may lag).
async fn register_one(url: &str, name: &str) -> Registered {
    let (status, _, body) = post(
        &format!("{url}/customers"),
        &json!({"name": name, "email": "x@example.org",
                "credit_limit": {"amount": 100, "currency": "EUR"}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    Registered {
        id: body["id"].as_str().unwrap().to_owned(),
        position: body["position"].as_u64().unwrap(),
    }
}

/// What must hold once the log went backwards under the views: the
/// projection stopped saying why, an append reused a position, and a
/// rebuild brings the views in line with the log as it is now.
async fn views_stop_and_a_rebuild_recovers(url: &str, lost: &[Registered], kept: &[Registered]) {
    let status = failed_customers(url).await;
    let error = status["last_error"].as_str().unwrap();
    assert!(error.contains("rebuild"), "{error}");
    assert!(
        error.contains("truncated segment") && error.contains("older copy"),
        "{error}"
    );
    // Readiness says which projection stopped and why.
    let (status, ready) = get(&format!("{url}/health/ready")).await;
    assert_eq!(status, 503, "{ready}");
    let customers = ready["projections"]
        .as_array()
        .unwrap_or_else(|| panic!("no projections in {ready}"))
        .iter()
        .find(|p| p["name"] == "customers")
        .unwrap_or_else(|| panic!("customers is not reported: {ready}"));
    assert_eq!(customers["state"], "failed", "{ready}");
    assert!(
        customers["error"].as_str().unwrap().contains("older copy"),
        "{ready}"
    );
    // A new event takes a position the views think they have.
    let new = register_one(url, "Newcomer").await;
    assert!(new.position <= lost.last().unwrap().position, "{new:?}");

    let out = output_within(
        annals().args(["rebuild", "customers", "--url", url]),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for c in kept.iter().chain([&new]) {
        let (status, body) = get(&format!("{url}/customers/{}", c.id)).await;
        assert_eq!(status, 200, "{c:?}: {body}");
    }
    for c in lost {
        let (status, _) = get(&format!("{url}/customers/{}", c.id)).await;
        assert_eq!(status, 404, "{c:?} is not in the log any more");
    }
    let (_, status) = get(&format!("{url}/projections/customers")).await;
    assert_eq!(status["state"], "live", "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_tail_stops_the_views_until_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let mut serving = serve(dir.path());
    let customers = register(&serving.url, 3).await;
    assert!(serving.terminate().success());
    // Cut the active segment inside its last record: recovery drops that
    // batch as torn, though it was acknowledged and projected. The records
    // end at the last byte that is not zero (space is reserved after them).
    let active = segments(dir.path()).last().unwrap().clone();
    let bytes = std::fs::read(&active).unwrap();
    let records_end = bytes.iter().rposition(|b| *b != 0).unwrap() as u64 + 1;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&active)
        .unwrap()
        .set_len(records_end - 10)
        .unwrap();

    let serving = serve(dir.path());
    // The last registration may share the cut batch with a saga event; it
    // is the one lost.
    let (kept, lost) = customers.split_at(customers.len() - 1);
    views_stop_and_a_rebuild_recovers(&serving.url, lost, kept).await;
}

fn copy_log(from: &Path, to: &Path) {
    for dir in ["events", "keys", "snapshots"] {
        let (src, dst) = (from.join(dir), to.join(dir));
        if dst.exists() {
            std::fs::remove_dir_all(&dst).unwrap();
        }
        std::fs::create_dir_all(&dst).unwrap();
        for entry in std::fs::read_dir(&src).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_restored_from_an_older_copy_stops_the_views_until_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let backup = tempfile::tempdir().unwrap();
    let mut serving = serve(dir.path());
    let early = register(&serving.url, 2).await;
    assert!(serving.terminate().success());
    copy_log(dir.path(), backup.path());

    let mut serving = serve(dir.path());
    let late = register(&serving.url, 3).await;
    assert!(serving.terminate().success());
    // The log (and its keys) go back to the copy; the views stay.
    copy_log(backup.path(), dir.path());

    let serving = serve(dir.path());
    views_stop_and_a_rebuild_recovers(&serving.url, &late, &early).await;
}
