//! A full disk under `annals serve`: the data directory on a small tmpfs
//! that a filler file fills up while the process runs. Commands must be
//! answered `503 store-unavailable` naming the cause (never as damaged or
//! missing personal data), readiness must say why, and once space is back
//! a restart serves everything that was acknowledged and takes commands
//! again.

use serde_json::json;

use super::{Tmpfs, get, post, register, serve, unready};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_as_such_and_nothing_acknowledged_is_lost() {
    let Some(disk) = Tmpfs::mount("disk-full", 24 << 20) else {
        return;
    };
    let data = disk.path().join("data");
    let mut serving = serve(&data);
    let url = serving.url.clone();
    let before = register(&url, 5).await;

    disk.fill();
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
    disk.unfill();
    let serving = serve(&data);
    let url = serving.url.clone();
    for c in &before {
        let (status, body) = get(&format!("{url}/customers/{}", c.id)).await;
        assert_eq!(status, 200, "{body}");
    }
    register(&url, 2).await;
}
