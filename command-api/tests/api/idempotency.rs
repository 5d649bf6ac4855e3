//! Idempotency keys: a retry gets the first answer and appends nothing,
//! also after a restart and when the duplicates race; a key reused for
//! another request is refused; a refused command is not recorded.

use std::sync::Arc;

use event_store::{Direction, EventStore, ReadFrom};
use serde_json::json;
use uuid::Uuid;

use crate::harness::{App, Reply, eur, register_body};

#[track_caller]
fn assert_same_answer(first: &Reply, retry: &Reply) {
    assert_eq!(retry.status, first.status, "{}", retry.text);
    assert_eq!(retry.text, first.text, "the body is byte for byte the same");
    for header in ["etag", "location", "x-command-id", "content-type"] {
        assert_eq!(retry.header(header), first.header(header), "{header}");
    }
    assert!(first.header("idempotent-replayed").is_none());
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_answered_from_the_record_even_after_a_restart() {
    let app = App::start().await;
    let key = [("idempotency-key", "register-ada-1")];
    let body = register_body(100);
    let first = app.post_with("/customers", &body, &key).await;
    assert_eq!(first.status, 201, "{}", first.text);
    let head = app.head().await;

    let retry = app.post_with("/customers", &body, &key).await;
    assert_same_answer(&first, &retry);
    assert_eq!(app.head().await, head, "the retry appended nothing");

    // The record is in the data directory, not in memory.
    let dir = app.stop().await;
    let app = App::start_in(dir, command_api::ApiConfig::default()).await;
    let after_restart = app.post_with("/customers", &body, &key).await;
    assert_same_answer(&first, &after_restart);
    assert_eq!(app.head().await, head);

    // Same key, different request: refused, nothing written.
    let other = app.post_with("/customers", &register_body(999), &key).await;
    other.assert_problem(422, "idempotency-key-reused");
    assert_eq!(other.body["idempotency_key"], "register-ada-1");
    let other_path = app
        .post_with(
            &format!("/customers/{}/credit-limit", first.id()),
            &json!({"credit_limit": eur(100)}),
            &key,
        )
        .await;
    other_path.assert_problem(422, "idempotency-key-reused");
    assert_eq!(app.head().await, head);

    // Exactly one customer was registered, carrying the key in its metadata.
    let events = app.events(&format!("customer-{}", first.id())).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].metadata().unwrap().extra["idempotency_key"],
        "register-ada-1"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_is_committed_with_the_events() {
    let app = App::start().await;
    let customer = app.post("/customers", &register_body(100)).await.id();
    let key = "reserve-1";
    let reply = app
        .post_with(
            &format!("/customers/{customer}/reservations"),
            &json!({"order_id": Uuid::new_v4().to_string(), "amount": eur(5)}),
            &[("idempotency-key", key)],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let record_stream = command_api::IdempotencyKey::parse(key)
        .unwrap()
        .record_stream()
        .unwrap();
    let record = app
        .store
        .read_stream(&record_stream, ReadFrom::Start, Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(record.events.len(), 1);
    let event = &record.events[0];
    assert_eq!(event.event_type, "CommandCompleted");
    let data: serde_json::Value = event.data_as().unwrap();
    assert_eq!(data["idempotency_key"], key);
    assert_eq!(data["version"], 2);
    assert_eq!(data["events"], 1);
    assert_eq!(data["stream_id"], format!("customer-{customer}"));
    // One batch: the record directly precedes the command's event.
    let position = reply.body["position"].as_u64().unwrap();
    assert_eq!(event.position.get() + 1, position);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_command_is_not_recorded_and_can_be_retried() {
    let app = App::start().await;
    let customer = app.post("/customers", &register_body(10)).await.id();
    let path = format!("/customers/{customer}/reservations");
    let body = json!({"order_id": Uuid::new_v4().to_string(), "amount": eur(50)});
    let key = [("idempotency-key", "reserve-50")];
    let refused = app.post_with(&path, &body, &key).await;
    refused.assert_problem(422, "business-rule-violated");
    let limit = app
        .post(
            &format!("/customers/{customer}/credit-limit"),
            &json!({"credit_limit": eur(50)}),
        )
        .await;
    assert_eq!(limit.status, 200);
    let accepted = app.post_with(&path, &body, &key).await;
    assert_eq!(accepted.status, 200, "{}", accepted.text);
    assert!(accepted.header("idempotent-replayed").is_none());
    assert_same_answer(&accepted, &app.post_with(&path, &body, &key).await);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_duplicates_append_once_and_all_get_the_same_answer() {
    let app = Arc::new(App::start().await);
    let customer = app.post("/customers", &register_body(1_000)).await.id();
    let head = app.head().await;
    let body = json!({"order_id": Uuid::new_v4().to_string(), "amount": eur(7)});
    let path = format!("/customers/{customer}/reservations");
    let replies = futures_util::future::join_all((0..16).map(|_| {
        let app = app.clone();
        let body = body.clone();
        let path = path.clone();
        async move {
            app.post_with(&path, &body, &[("idempotency-key", "dup-race")])
                .await
        }
    }))
    .await;
    let originals = replies
        .iter()
        .filter(|r| r.header("idempotent-replayed").is_none())
        .count();
    assert_eq!(originals, 1, "exactly one request did the work");
    for reply in &replies {
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.text, replies[0].text);
    }
    // One reservation and one record.
    assert_eq!(app.head().await.get(), head.get() + 2);
    assert_eq!(app.events(&format!("customer-{customer}")).await.len(), 2);
}

/// Duplicates served by two API instances (replicas with their own
/// in-process locks) over one store: the store decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_across_replicas_append_once() {
    let a = App::start().await;
    let b = App::serve_store(
        a.dir.clone(),
        a.store.clone(),
        Arc::new(a.store.clone()),
        command_api::ApiConfig::default(),
    )
    .await;
    let body = register_body(5);
    let requests = (0..8).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        app.post_with("/customers", &body, &[("idempotency-key", "replicas")])
    });
    let replies = futures_util::future::join_all(requests).await;
    let ids: std::collections::HashSet<Uuid> = replies.iter().map(|r| r.id()).collect();
    assert_eq!(ids.len(), 1, "one customer, whoever answered");
    assert!(replies.iter().all(|r| r.status == 201));
    assert_eq!(a.head().await.get(), 2, "one event and one record");
}
