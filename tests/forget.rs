//! The right to be forgotten through `annals serve`: after
//! `POST /customers/{id}/forget` the customer's name and email are gone from
//! the event log and from the views, the credit line keeps working, and
//! asking again is harmless.

use std::time::Duration;

use serde_json::json;

use crate::process::Proc;
use crate::split::{command, eur, http, query_at, wait_ready};

/// Files under `dir` whose bytes contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            hits.extend(files_containing(&path, needle));
        } else if std::fs::read(&path)
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle)
        {
            hits.push(path);
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_customer_is_erased_from_log_and_views_and_keeps_its_credit_line() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Proc::start(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--snapshot-every-events",
            "2",
        ],
        "listening on",
    );
    let url = &serve.url;
    let http = http();
    wait_ready(&http, url).await;

    let (status, body) = command(
        &http,
        &format!("{url}/customers"),
        &json!({"name": "Hedy Lamarr", "email": "hedy.lamarr@example.org",
                "credit_limit": eur(1_000)}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let reserve =
        |amount| json!({"order_id": uuid::Uuid::new_v4().to_string(), "amount": eur(amount)});
    let reservations = format!("{url}/customers/{id}/reservations");
    for amount in [100, 200] {
        let (status, body) = command(&http, &reservations, &reserve(amount)).await;
        assert_eq!(status, 200, "{body}");
    }
    // The log and snapshots hold the personal data encrypted only.
    let events = dir.path().join("events");
    let snapshots = dir.path().join("snapshots");
    for needle in [&b"Hedy Lamarr"[..], b"hedy.lamarr@example.org"] {
        assert!(files_containing(&events, needle).is_empty());
        assert!(files_containing(&snapshots, needle).is_empty());
    }
    let (_, body) = command(&http, &reservations, &reserve(1)).await;
    let seen = query_at(
        &http,
        &format!("{url}/customers/{id}"),
        body["position"].as_u64().unwrap(),
    )
    .await;
    assert_eq!(seen["name"], "Hedy Lamarr");

    let forget = format!("{url}/customers/{id}/forget");
    let (status, body) = command(&http, &forget, &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let position = body["position"].as_u64().unwrap();
    let seen = query_at(&http, &format!("{url}/customers/{id}"), position).await;
    assert_eq!(seen["name"], "[erased]", "{seen}");
    assert_eq!(seen["email"], "[erased]", "{seen}");
    assert_eq!(seen["reserved"], eur(301), "{seen}");
    let found = query_at(
        &http,
        &format!("{url}/customers?name_prefix=hedy"),
        position,
    )
    .await;
    assert_eq!(found["items"], json!([]), "{found}");

    // Again: nothing new to record, still a success.
    let (status, again) = command(&http, &forget, &json!({})).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["version"], body["version"]);

    // The credit line still works, decided on the erased state.
    let (status, body) = command(&http, &reservations, &reserve(699)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = command(&http, &reservations, &reserve(1)).await;
    assert_eq!(status, 422, "{body}");

    // Unknown customers are 404.
    let (status, body) = command(
        &http,
        &format!("{url}/customers/{}/forget", uuid::Uuid::new_v4()),
        &json!({}),
    )
    .await;
    assert_eq!(status, 404, "{body}");

    // A rebuild from the log brings no personal data back.
    let out = crate::process::output_within(
        crate::process::annals().args(["rebuild", "customers", "--url", url]),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = query_at(&http, &format!("{url}/customers/{id}"), position).await;
    assert_eq!(seen["name"], "[erased]", "{seen}");
}
