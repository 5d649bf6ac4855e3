//! The admin API through its router, without a socket: status, errors as
//! problem documents, a rebuild started over HTTP, skip and resume.

use std::time::Duration;

use annals_credit::generator::Generator;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

use crate::common::{
    Running, TestDb, append_raw, generate, open_store, reference_projector, test_options,
    wait_for_status,
};

async fn call(app: &axum::Router, method: &str, uri: &str) -> (StatusCode, String, Value) {
    let response = app
        .clone()
        .oneshot(
            Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, content_type, json)
}

#[tokio::test]
async fn the_admin_api_reports_status_and_runs_operations() {
    let test_db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    let mut generator = Generator::new(31);
    generate(&store, &mut generator, 2_000).await;
    // Only the customers view wants this, and cannot apply it.
    let poison = append_raw(
        &store,
        "customer-nobody",
        "CreditReserved",
        r#"{"customer_id":"nobody","order_id":"x","amount":{"amount":1,"currency":"EUR"}}"#,
    )
    .await;
    let head = generate(&store, &mut generator, 100).await;
    let db = test_db.open().await;
    let running = Running::start(reference_projector(&store, &db, test_options()));
    let app = projector::admin_router(running.handle.clone());

    wait_for_status(&running.handle, Duration::from_secs(60), |s| {
        s.iter()
            .any(|p| p.name == "customers" && p.error_position.is_some())
            && s.iter().any(|p| p.name == "orders" && p.position == head.0)
    })
    .await;

    let (status, content_type, body) = call(&app, "GET", "/projections").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "application/json");
    let list = body["projections"].as_array().unwrap();
    let customers = list.iter().find(|p| p["name"] == "customers").unwrap();
    assert_eq!(customers["state"], "failed");
    assert_eq!(customers["position"], poison.0 - 1);
    assert_eq!(customers["error_position"], poison.0);
    assert_eq!(customers["head"], head.0);
    assert_eq!(customers["lag"], head.0 - poison.0 + 1);
    assert!(
        customers["last_error"]
            .as_str()
            .unwrap()
            .contains("not registered")
    );
    let orders = list.iter().find(|p| p["name"] == "orders").unwrap();
    assert_eq!(orders["state"], "live");
    assert_eq!(orders["lag"], 0);
    assert!(orders["events_per_second"].as_f64().unwrap() >= 0.0);

    // Errors are problem documents with the right status.
    let (status, content_type, body) = call(&app, "GET", "/projections/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(body["status"], 404);
    assert_eq!(body["type"], "urn:annals:problem:not-found");
    assert!(body["title"].is_string() && body["detail"].is_string());
    let (status, _, body) = call(&app, "POST", "/projections/orders/skip").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["projection"], "orders");
    let (status, _, _) = call(&app, "POST", "/projections/orders/resume").await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _, body) = call(&app, "POST", "/projections/customers/skip?position=abc").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _, _) = call(&app, "POST", "/projections/customers/skip?colour=red").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = call(&app, "GET", "/nowhere").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A name that does not decode, and a method the path does not serve.
    let (status, content_type, body) = call(&app, "GET", "/projections/%FF").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(content_type, "application/problem+json");
    let (status, content_type, _) = call(&app, "DELETE", "/projections").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(content_type, "application/problem+json");
    let wrong = format!("/projections/customers/skip?position={}", poison.0 + 7);
    let (status, _, _) = call(&app, "POST", &wrong).await;
    assert_eq!(status, StatusCode::CONFLICT);

    // Skip the poison event over HTTP; the projection catches up.
    let skip = format!("/projections/customers/skip?position={}", poison.0);
    let (status, _, body) = call(&app, "POST", &skip).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["error_position"].is_null());
    running.wait_for(head).await;

    // A rebuild over HTTP: accepted, runs in the background, swaps in.
    let (status, _, body) = call(&app, "POST", "/projections/orders/rebuild").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["name"], "orders");
    let done = wait_for_status(&running.handle, Duration::from_secs(60), |s| {
        s.iter()
            .all(|p| p.rebuild.is_none() && p.position == head.0)
    })
    .await;
    assert!(done.iter().all(|p| p.state == projector::TrackState::Live));
    let (status, _, body) = call(&app, "GET", "/projections/orders").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["tables_version"], 1);
    running.stop().await.unwrap();
}
