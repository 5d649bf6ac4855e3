//! Every endpoint over real HTTP: a customer's credit line and an order's
//! life, with the stored events checked against the event contract and the
//! response's position usable for read-your-writes.

use event_store::{EventStore, Position};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{App, Reply, eur, register_body};

#[track_caller]
fn assert_success(reply: &Reply, status: u16, version: u64) {
    assert_eq!(reply.status, status, "{}", reply.text);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.body["version"], version, "{}", reply.text);
    assert_eq!(
        reply.header("etag"),
        Some(format!("\"{version}\"").as_str())
    );
    assert!(reply.body["position"].as_u64().is_some_and(|p| p > 0));
    assert!(reply.header("idempotent-replayed").is_none());
}

/// The stored event at the position a response named is the command's
/// last event: a reader that reached it has seen the command.
async fn assert_position_names_last_event(app: &App, reply: &Reply, stream: &str) {
    let position = Position(reply.body["position"].as_u64().unwrap());
    let at = app.store.read_all(position, 1).await.unwrap();
    assert_eq!(at[0].stream_id.as_str(), stream);
    assert_eq!(at[0].version, reply.body["version"].as_u64().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_credit_line_through_every_customer_endpoint() {
    let app = App::start().await;
    let customer = Uuid::new_v4();
    let correlation = Uuid::new_v4();
    let mut body = register_body(1000);
    body["customer_id"] = json!(customer.to_string());
    let registered = app
        .post_with(
            "/customers",
            &body,
            &[("x-correlation-id", &correlation.to_string())],
        )
        .await;
    assert_success(&registered, 201, 1);
    assert_eq!(registered.id(), customer);
    assert_eq!(
        registered.header("location"),
        Some(format!("/customers/{customer}").as_str())
    );
    assert_eq!(
        registered.header("x-correlation-id"),
        Some(correlation.to_string().as_str())
    );
    let stream = format!("customer-{customer}");
    assert_position_names_last_event(&app, &registered, &stream).await;

    let base = format!("/customers/{customer}");
    let limit = app
        .post(
            &format!("{base}/credit-limit"),
            &json!({"credit_limit": eur(500)}),
        )
        .await;
    assert_success(&limit, 200, 2);
    assert!(limit.header("location").is_none());

    let order = Uuid::new_v4();
    let reserve = app
        .post(
            &format!("{base}/reservations"),
            &json!({"order_id": order.to_string(), "amount": eur(300)}),
        )
        .await;
    assert_success(&reserve, 200, 3);
    assert_position_names_last_event(&app, &reserve, &stream).await;

    let lower = app
        .post(
            &format!("{base}/credit-limit"),
            &json!({"credit_limit": eur(299)}),
        )
        .await;
    lower.assert_problem(422, "business-rule-violated");
    assert_eq!(lower.body["rule"], "credit-limit-below-reserved");

    let release = app
        .post_raw(&format!("{base}/reservations/{order}/release"), "", "", &[])
        .await;
    assert_success(&release, 200, 4);
    let twice = app
        .post_raw(&format!("{base}/reservations/{order}/release"), "", "", &[])
        .await;
    twice.assert_problem(422, "business-rule-violated");
    assert_eq!(twice.body["rule"], "no-credit-reserved");

    // Setting the limit it already has changes nothing and says so.
    let head = app.head().await;
    let same = app
        .post(
            &format!("{base}/credit-limit"),
            &json!({"credit_limit": eur(500)}),
        )
        .await;
    assert_success(&same, 200, 4);
    assert_eq!(same.body["position"], release.body["position"]);
    assert_eq!(app.head().await, head);

    let events = app.events(&stream).await;
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "CustomerRegistered",
            "CreditLimitChanged",
            "CreditReserved",
            "CreditReleased"
        ]
    );
    let data = |i: usize| serde_json::from_slice::<Value>(&events[i].data).unwrap();
    assert_eq!(
        data(0),
        json!({"customer_id": customer.to_string(), "name": "Ada Lovelace",
               "email": "ada@example.com", "credit_limit": eur(1000)})
    );
    assert_eq!(
        data(3),
        json!({"customer_id": customer.to_string(), "order_id": order.to_string(),
               "amount": eur(300)})
    );
    // The events that carry money are written at their current schema
    // version, the money one.
    assert!(events.iter().all(|e| e.schema_version == 2));

    // Metadata: the correlation id sent, the command id answered, which
    // is also the causation id of a command a client issued.
    let metadata = events[0].metadata().unwrap();
    assert_eq!(metadata.correlation_id, Some(correlation));
    let command_id = registered.header("x-command-id").unwrap();
    assert_eq!(metadata.extra["command_id"], command_id);
    assert_eq!(
        metadata.causation_id.map(|c| c.to_string()).as_deref(),
        Some(command_id)
    );
    assert!(!metadata.extra.contains_key("idempotency_key"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_through_every_order_endpoint() {
    let app = App::start().await;
    let customer = Uuid::new_v4();
    let placed = app
        .post(
            "/orders",
            &json!({
                "customer_id": customer.to_string(),
                "lines": [
                    {"sku": "BOOK-1", "quantity": 2, "unit_price": eur(1250)},
                    {"sku": "PEN-7", "quantity": 1, "unit_price": eur(199)},
                ],
            }),
        )
        .await;
    assert_success(&placed, 201, 1);
    let order = placed.id();
    assert_eq!(
        placed.header("location"),
        Some(format!("/orders/{order}").as_str())
    );
    let stream = format!("order-{order}");
    let data: Value = serde_json::from_slice(&app.events(&stream).await[0].data).unwrap();
    assert_eq!(data["total"], eur(2699));
    assert_eq!(data["customer_id"], customer.to_string());
    assert_eq!(data["lines"][1]["sku"], "PEN-7");

    let approved = app
        .post_raw(&format!("/orders/{order}/approve"), "", "", &[])
        .await;
    assert_success(&approved, 200, 2);
    let reject = app
        .post(
            &format!("/orders/{order}/reject"),
            &json!({"reason": "late"}),
        )
        .await;
    reject.assert_problem(422, "business-rule-violated");
    assert_eq!(reject.body["rule"], "invalid-order-transition");
    assert_eq!(reject.body["order_status"], "approved");

    let cancelled = app
        .post(
            &format!("/orders/{order}/cancel"),
            &json!({"reason": "changed my mind"}),
        )
        .await;
    assert_success(&cancelled, 200, 3);
    let twice = app
        .post_raw(&format!("/orders/{order}/cancel"), "", "", &[])
        .await;
    twice.assert_problem(422, "business-rule-violated");
    assert_eq!(twice.body["order_status"], "cancelled");

    // A second order, placed by total and rejected: rejection is final.
    let other = app
        .post(
            "/orders",
            &json!({"customer_id": customer.to_string(), "total": eur(10)}),
        )
        .await;
    assert_success(&other, 201, 1);
    let other_id = other.id();
    let rejected = app
        .post(
            &format!("/orders/{other_id}/reject"),
            &json!({"reason": "credit limit exceeded"}),
        )
        .await;
    assert_success(&rejected, 200, 2);
    let approve_rejected = app
        .post_raw(&format!("/orders/{other_id}/approve"), "", "", &[])
        .await;
    approve_rejected.assert_problem(422, "business-rule-violated");
    let cancel_rejected = app
        .post_raw(&format!("/orders/{other_id}/cancel"), "", "", &[])
        .await;
    cancel_rejected.assert_problem(422, "business-rule-violated");

    let types: Vec<String> = app
        .events(&stream)
        .await
        .iter()
        .map(|e| e.event_type.clone())
        .collect();
    assert_eq!(types, ["OrderPlaced", "OrderApproved", "OrderCancelled"]);
    let cancelled_data: Value = serde_json::from_slice(&app.events(&stream).await[2].data).unwrap();
    assert_eq!(
        cancelled_data,
        json!({"order_id": order.to_string(), "customer_id": customer.to_string(),
               "reason": "changed my mind"})
    );
    let rejected_data: Value =
        serde_json::from_slice(&app.events(&format!("order-{other_id}")).await[1].data).unwrap();
    assert_eq!(rejected_data["reason"], "credit limit exceeded");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_status_over_real_http() {
    let app = App::start_with(command_api::ApiConfig {
        body_bytes_max: 512,
        ..command_api::ApiConfig::default()
    })
    .await;
    app.post_raw("/customers", "application/json", "{", &[])
        .await
        .assert_problem(400, "malformed-request");
    app.post_raw("/customers", "text/csv", "a,b", &[])
        .await
        .assert_problem(415, "unsupported-media-type");
    app.post_raw("/customers", "application/json", " ".repeat(513), &[])
        .await
        .assert_problem(413, "body-too-large");
    app.post_raw(&format!("/orders/{}/approve", Uuid::new_v4()), "", "", &[])
        .await
        .assert_problem(404, "not-found");
    let customer = app.post("/customers", &register_body(10)).await.id();
    let path = format!("/customers/{customer}/reservations");
    let over = json!({"order_id": Uuid::new_v4().to_string(), "amount": eur(11)});
    app.post(&path, &over)
        .await
        .assert_problem(422, "business-rule-violated");
    let fits = json!({"order_id": Uuid::new_v4().to_string(), "amount": eur(1)});
    app.post_with(&path, &fits, &[("if-match", "\"7\"")])
        .await
        .assert_problem(412, "precondition-failed");
    app.stop().await;
}

/// The command API against a store served over HTTP (the deployment with
/// a separate `annals store`): same handler, same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_run_unchanged_against_a_remote_store() {
    use std::sync::Arc;

    let dir = Arc::new(tempfile::tempdir().unwrap());
    let store = event_store::Store::open(dir.path(), event_store::StoreOptions::default())
        .await
        .unwrap();
    let store_api = event_store_http::router(
        Arc::new(store.clone()),
        event_store_http::ServerConfig::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let store_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, store_api).await });
    let remote = event_store_http::RemoteStore::connect(
        &format!("http://{store_addr}"),
        event_store_http::RemoteOptions::default(),
    )
    .await
    .unwrap();
    let app = App::serve_store(
        dir,
        store.clone(),
        Arc::new(remote),
        command_api::ApiConfig::default(),
    )
    .await;

    let customer = app.post("/customers", &register_body(100)).await;
    assert_success(&customer, 201, 1);
    let path = format!("/customers/{}/reservations", customer.id());
    let key = [("idempotency-key", "remote-1")];
    let body = json!({"order_id": Uuid::new_v4().to_string(), "amount": eur(60)});
    let first = app.post_with(&path, &body, &key).await;
    assert_success(&first, 200, 2);
    let retry = app.post_with(&path, &body, &key).await;
    assert_eq!(retry.text, first.text);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    let over = json!({"order_id": Uuid::new_v4().to_string(), "amount": eur(41)});
    app.post(&path, &over)
        .await
        .assert_problem(422, "business-rule-violated");
    app.post_with(&path, &over, &[("if-match", "\"1\"")])
        .await
        .assert_problem(412, "precondition-failed");
    assert_eq!(
        app.events(&format!("customer-{}", customer.id()))
            .await
            .len(),
        2
    );
    app.stop().await;
}
