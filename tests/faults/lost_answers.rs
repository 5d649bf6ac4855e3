//! The split deployment when the store's answer to an append is lost: the
//! append was committed (the store answered after its fsync), but the
//! connection dropped before the command API heard it, as when `annals
//! store` is killed at that moment. The command API must never answer
//! "nothing was written" then: it asks the store again with the same event
//! ids and answers with the real outcome, or, when the store cannot be
//! asked in time, answers `503 outcome-unknown`.

use serde_json::{Value, json};

use super::proxy::Proxy;
use super::{get, post};
use crate::cli::start;
use crate::process::Proc;

fn command_api(store: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["command-api", "--store", store, "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Proc::start(&args, "command API listening on")
}

fn registration(id: &str) -> Value {
    json!({"customer_id": id, "name": "Ada Lovelace", "email": "ada@example.org",
           "credit_limit": {"amount": 5000, "currency": "EUR"}})
}

/// The events of the customer's stream, as the store has them.
async fn stream(store: &str, id: &str) -> Vec<Value> {
    let (status, body) = get(&format!("{store}/streams/customer-{id}")).await;
    assert_eq!(status, 200, "{body}");
    body["events"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_to_an_append_is_resolved_or_reported_as_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let store = start(
        &["store", "--listen", "127.0.0.1:0"],
        dir.path(),
        "store listening on",
    );
    let proxy = Proxy::start(&store.url).await;
    let api = command_api(&proxy.url, &[]);

    // The answer is lost once; asking again finds the append committed.
    let first = uuid::Uuid::now_v7().to_string();
    proxy.cut_next_post_answer();
    let (status, _, body) = post(&format!("{}/customers", api.url), &registration(&first)).await;
    assert_eq!(proxy.cuts(), 1, "the answer must have been lost");
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["id"], first.as_str());
    assert_eq!(stream(&store.url, &first).await.len(), 1, "registered once");

    // The answer is lost and the store cannot be reached again in time:
    // the outcome is unknown, and said so.
    let impatient = command_api(&proxy.url, &["--store-outcome-wait-ms", "500"]);
    let second = uuid::Uuid::now_v7().to_string();
    proxy.cut_next_post_answer();
    proxy.refuse_connections(true);
    let (status, content_type, body) = post(
        &format!("{}/customers", impatient.url),
        &registration(&second),
    )
    .await;
    proxy.refuse_connections(false);
    assert_eq!(proxy.cuts(), 2, "the answer must have been lost");
    assert_eq!(status, 503, "{body}");
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(body["type"], "urn:annals:problem:outcome-unknown", "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(!detail.contains("nothing was written"), "{detail}");
    // And it was in fact committed: "nothing was written" would have lied.
    assert_eq!(stream(&store.url, &second).await.len(), 1);
}
