//! Read-your-writes: `min_position` (parameter or header) waits for the view,
//! bounded, then `503` with `Retry-After`; a stopped view answers `503` at
//! once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use annals_credit::generator::Generator;
use axum::http::StatusCode;
use event_store::{EventStore, ExpectedVersion, NewEvent, StreamId};
use query_api::QueryConfig;

use crate::common::{
    Running, TestDb, app, assert_problem, generate, get, get_with, joined, open_store, project_all,
};

fn quick() -> QueryConfig {
    QueryConfig {
        min_position_wait_max: Duration::from_millis(300),
        ..QueryConfig::default()
    }
}

#[tokio::test]
async fn min_position_waits_for_the_view_then_gives_up_with_503() {
    for test_db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path()).await;
        let mut generator = Generator::new(201);
        let head = generate(&store, &mut generator, 300).await;
        let db = test_db.open().await;
        project_all(&store, &db).await;
        let app = app(&db, quick());
        let id = generator.customers()[0].id.clone();

        // Reached already: answered at once, as parameter or header.
        let answer = get(&app, &format!("/customers/{id}?min_position={}", head.0)).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.position(), head.0);
        let answer = get_with(
            &app,
            &format!("/customers/{id}"),
            &[("annals-min-position", &head.0.to_string())],
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK);

        // Beyond the view, nothing projects it: 503 after the bound.
        let wanted = head.0 + 1;
        let started = Instant::now();
        let answer = get(&app, &format!("/customers?min_position={wanted}")).await;
        let waited = started.elapsed();
        assert_problem(&answer, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.headers["retry-after"], "1");
        assert_eq!(answer.position(), head.0);
        assert_eq!(answer.body["min_position"], wanted);
        assert_eq!(answer.body["projection"], "customers");
        assert_eq!(
            answer.body["type"],
            "urn:annals:problem:position-not-yet-visible"
        );
        assert!(waited >= Duration::from_millis(300), "{waited:?}");
        assert!(waited < Duration::from_secs(20), "{waited:?}");

        // A write made after the request started is waited for and seen:
        // the request is known to have reached the API (a layer in front
        // says so) before the write, and the projector starts only after
        // the write, so no answer can show it without waiting.
        let arrived = Arc::new(tokio::sync::Notify::new());
        let signal = arrived.clone();
        let slow_app = crate::common::app(
            &db,
            QueryConfig {
                min_position_wait_max: Duration::from_secs(20),
                ..QueryConfig::default()
            },
        )
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let signal = signal.clone();
                async move {
                    signal.notify_one();
                    next.run(request).await
                }
            },
        ));
        let request = {
            let id = id.clone();
            tokio::spawn(async move {
                get_with(
                    &slow_app,
                    &format!("/customers/{id}"),
                    &[("annals-min-position", &wanted.to_string())],
                )
                .await
            })
        };
        tokio::time::timeout(Duration::from_secs(60), arrived.notified())
            .await
            .expect("the request reaches the API within 60 s");
        let currency = generator.customers()[0].currency.clone();
        let stream = StreamId::new(format!("customer-{id}")).unwrap();
        let written = store
            .append(
                &stream,
                ExpectedVersion::Any,
                vec![NewEvent::new(
                    "CreditLimitChanged",
                    format!(
                        r#"{{"customer_id":"{id}","credit_limit":{{"amount":123400,"currency":"{currency}"}}}}"#
                    ),
                )],
            )
            .await
            .unwrap()
            .last_position;
        assert_eq!(written.0, wanted);
        let running = Running::start(&store, &db);
        let answer = joined(request, Duration::from_secs(60)).await;
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        assert!(answer.position() >= wanted);
        assert_eq!(answer.body["credit_limit"]["amount"], 123_400);
        running.stop().await;

        // Parameter and header must agree; the header must be a number.
        let answer = get_with(
            &app,
            &format!("/customers/{id}?min_position=1"),
            &[("annals-min-position", "2")],
        )
        .await;
        assert_problem(&answer, StatusCode::BAD_REQUEST);
        let answer = get_with(&app, "/orders", &[("annals-min-position", "soon")]).await;
        assert_problem(&answer, StatusCode::BAD_REQUEST);
        db.close().await;
    }
}

#[tokio::test]
async fn a_view_stopped_by_a_failed_event_answers_503_at_once() {
    let test_db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    let mut generator = Generator::new(202);
    generate(&store, &mut generator, 200).await;
    let poison = store
        .append(
            &StreamId::new("customer-ghost").unwrap(),
            ExpectedVersion::Any,
            vec![NewEvent::new("CustomerRegistered", "{\"customer_id\":1}")],
        )
        .await
        .unwrap()
        .last_position;
    let db = test_db.open().await;
    let running = Running::start(&store, &db);
    let deadline = Instant::now() + Duration::from_secs(30);
    while running
        .handle
        .status()
        .await
        .unwrap()
        .iter()
        .all(|s| s.error_position.is_none())
    {
        assert!(
            Instant::now() < deadline,
            "the event the view cannot apply did not stop it within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let app = app(
        &db,
        QueryConfig {
            min_position_wait_max: Duration::from_secs(30),
            ..QueryConfig::default()
        },
    );
    let started = Instant::now();
    let answer = get(&app, &format!("/customers?min_position={}", poison.0)).await;
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(20),
        "a failed view must not be waited for: {waited:?}"
    );
    assert_problem(&answer, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.body["type"], "urn:annals:problem:projection-failed");
    assert_eq!(answer.position(), poison.0 - 1);
    assert!(answer.headers.contains_key("retry-after"));
    // The orders view was not stopped: it answers.
    let answer = get(&app, &format!("/orders?min_position={}", poison.0)).await;
    assert_eq!(answer.status, StatusCode::OK);
    running.stop().await;
    db.close().await;
}
