//! Following one business flow through `annals serve` (a real process,
//! JSON logs): a command's correlation id and W3C `traceparent` appear in
//! that request's log lines, in its events' metadata, and in the saga's
//! follow-up events and log lines (the same trace, a fresh parent id);
//! `X-Request-Id` names the request in its log lines and comes back;
//! with a collector named, the request spans are exported over OTLP in
//! the caller's trace.

use std::time::{Duration, Instant};

use event_store::{EventStore, Position, Store, StoreOptions};
use serde_json::{Value, json};

use crate::auth::http;
use crate::process::Proc;

const ORDER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const ORDER_PARENT: &str = "00f067aa0ba902b7";

/// The JSON log lines of `serve` whose span list holds a span called
/// `span` with `field` = `value`.
fn lines_in_span(serve: &Proc, span: &str, field: &str, value: &str) -> Vec<Value> {
    serve
        .stderr_lines()
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| {
            line["spans"].as_array().is_some_and(|spans| {
                spans
                    .iter()
                    .any(|s| s["name"] == span && s[field].as_str() == Some(value))
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_is_followed_by_its_ids_through_logs_events_and_the_saga() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Proc::start_with_env(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[
            (
                "ANNALS_LOG",
                "warn,annals::telemetry=debug,command_api::saga=debug",
            ),
            ("ANNALS_LOG_FORMAT", "json"),
        ],
        "listening on",
    );
    let url = serve.url.clone();
    let http = http();

    let registered = http
        .post(format!("{url}/customers"))
        .header("x-request-id", "register-grace")
        .json(
            &json!({"name": "Grace Hopper", "email": "grace@example.org",
                      "credit_limit": {"amount": 5000, "currency": "EUR"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    assert_eq!(registered.headers()["x-request-id"], "register-grace");
    let customer: Value = registered.json().await.unwrap();
    let customer_id = customer["id"].as_str().unwrap().to_owned();

    let correlation_id = uuid::Uuid::now_v7().to_string();
    let placed = http
        .post(format!("{url}/orders"))
        .header("x-correlation-id", &correlation_id)
        .header("traceparent", format!("00-{ORDER_TRACE}-{ORDER_PARENT}-01"))
        .json(
            &json!({"customer_id": customer_id, "lines": [{"sku": "BOOK-1", "quantity": 2,
                      "unit_price": {"amount": 1500, "currency": "EUR"}}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), 201);
    let request_id = placed.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!request_id.is_empty());
    let order: Value = placed.json().await.unwrap();
    let order_id = order["id"].as_str().unwrap().to_owned();

    // The saga approves the order.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = http
            .get(format!("{url}/orders/{order_id}"))
            .send()
            .await
            .unwrap();
        if answer.status() == 200 {
            let body: Value = answer.json().await.unwrap();
            if body["status"] == "approved" {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the order was not approved");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The request's log line: its id, route, correlation and trace ids.
    let answered = lines_in_span(&serve, "request", "request_id", &request_id);
    let line = answered
        .iter()
        .find(|l| l["fields"]["message"] == "answered")
        .unwrap_or_else(|| panic!("no answered line for {request_id}: {answered:?}"));
    let span = &line["span"];
    assert_eq!(span["route"], "/orders", "{line}");
    assert_eq!(span["correlation_id"], correlation_id.as_str(), "{line}");
    assert_eq!(span["trace_id"], ORDER_TRACE, "{line}");
    let causation_id = span["causation_id"].as_str().unwrap().to_owned();
    assert_eq!(line["fields"]["status"], 201, "{line}");
    assert_eq!(span["status"], 201, "{line}");
    let named = lines_in_span(&serve, "request", "request_id", "register-grace");
    assert!(
        named.iter().any(|l| l["span"]["route"] == "/customers"),
        "{named:?}"
    );
    // The saga's lines for the order's events carry the flow's ids.
    let saga_lines = lines_in_span(&serve, "saga_event", "correlation_id", &correlation_id);
    assert!(
        saga_lines
            .iter()
            .any(|l| l["span"]["trace_id"] == ORDER_TRACE
                && l["fields"]["message"] == "saga step done"),
        "{saga_lines:?}"
    );

    // The events: the order's own, and the saga's follow-ups on the
    // customer and the order, all in the flow; the follow-ups are
    // children of the trace.
    assert!(serve.terminate().success());
    let store = Store::open(dir.path(), StoreOptions::default())
        .await
        .unwrap();
    let events = store.read_all(Position(1), 10_000).await.unwrap();
    store.close().await.unwrap();
    let in_flow: Vec<_> = events
        .iter()
        .filter(|e| {
            e.metadata().unwrap().correlation_id.map(|c| c.to_string())
                == Some(correlation_id.clone())
        })
        .collect();
    let streams: Vec<&str> = in_flow.iter().map(|e| e.stream_id.as_str()).collect();
    assert!(
        streams.contains(&format!("order-{order_id}").as_str()),
        "{streams:?}"
    );
    assert!(
        streams.contains(&format!("customer-{customer_id}").as_str()),
        "the saga's reservation is in the flow: {streams:?}"
    );
    // The order's events name the request's causation id, and the saga
    // lines the event they handle as theirs.
    let placed = in_flow
        .iter()
        .find(|e| e.stream_id.as_str() == format!("order-{order_id}") && e.version == 1)
        .unwrap();
    assert_eq!(
        placed
            .metadata()
            .unwrap()
            .causation_id
            .map(|c| c.to_string()),
        Some(causation_id)
    );
    let handled = saga_lines
        .iter()
        .find(|l| l["span"]["position"] == placed.position.0)
        .unwrap_or_else(|| panic!("no saga line for the order placed: {saga_lines:?}"));
    assert_eq!(
        handled["span"]["causation_id"],
        placed.id.to_string().as_str()
    );
    let mut parents = Vec::new();
    for event in &in_flow {
        let metadata = event.metadata().unwrap();
        let traceparent = metadata.extra["traceparent"].as_str().unwrap();
        let parsed = command_api::TraceParent::parse(traceparent).unwrap();
        assert_eq!(parsed.trace_id(), ORDER_TRACE, "{}", event.event_type);
        parents.push(traceparent[36..52].to_owned());
    }
    assert!(parents.iter().any(|p| p == ORDER_PARENT), "{parents:?}");
    assert!(
        parents.iter().any(|p| p != ORDER_PARENT),
        "the saga's commands are children of the order's trace: {parents:?}"
    );
}

/// A fake OpenTelemetry collector on a free loopback port taking
/// OTLP/HTTP JSON at `/v1/traces`: its base URL and the bodies received.
async fn collector() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let keep = keep.clone();
            async move {
                let parsed: Value = serde_json::from_slice(&body).unwrap();
                keep.lock().unwrap().push(parsed);
                axum::Json(json!({}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

/// Every span the collector received, with its resource's service name.
fn spans(received: &[Value]) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for body in received {
        for resource in body["resourceSpans"].as_array().into_iter().flatten() {
            let service = resource["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["key"] == "service.name")
                .and_then(|a| a["value"]["stringValue"].as_str())
                .unwrap_or_default()
                .to_owned();
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    out.push((service.clone(), span.clone()));
                }
            }
        }
    }
    out
}

fn attribute<'a>(span: &'a Value, key: &str) -> Option<&'a str> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)?["value"]["stringValue"]
        .as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_go_to_an_otlp_collector_in_the_callers_trace() {
    let (collector, received) = collector().await;
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Proc::start_with_env(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[
            ("ANNALS_LOG", "info"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_SERVICE_NAME", "credit-under-test"),
        ],
        "listening on",
    );
    let registered = http()
        .post(format!("{}/customers", serve.url))
        .header("traceparent", format!("00-{ORDER_TRACE}-{ORDER_PARENT}-01"))
        .json(
            &json!({"name": "Grace Hopper", "email": "grace@example.org",
                      "credit_limit": {"amount": 5000, "currency": "EUR"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    let customer: Value = registered.json().await.unwrap();
    let placed = http()
        .post(format!("{}/orders", serve.url))
        .header("traceparent", format!("00-{ORDER_TRACE}-{ORDER_PARENT}-01"))
        .json(
            &json!({"customer_id": customer["id"], "lines": [{"sku": "BOOK-1",
            "quantity": 1, "unit_price": {"amount": 700, "currency": "EUR"}}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), 201);

    // Batches leave every 100 ms: the request's span arrives, a child of
    // the caller's span in its trace, named with its route; the saga's
    // span for the order placed joins the same trace.
    let deadline = Instant::now() + Duration::from_secs(30);
    let span = loop {
        let all = spans(&received.lock().unwrap());
        if let Some((service, span)) = all
            .into_iter()
            .find(|(_, s)| s["name"] == "request" && s["traceId"] == ORDER_TRACE)
        {
            assert_eq!(service, "credit-under-test");
            break span;
        }
        assert!(
            Instant::now() < deadline,
            "no request span exported: {:?}",
            received.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(span["parentSpanId"], ORDER_PARENT, "{span}");
    assert_eq!(attribute(&span, "route"), Some("/customers"), "{span}");
    assert!(attribute(&span, "correlation_id").is_some(), "{span}");
    loop {
        let all = spans(&received.lock().unwrap());
        if all
            .iter()
            .any(|(_, s)| s["name"] == "saga_event" && s["traceId"] == ORDER_TRACE)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no saga span in the trace: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(serve.terminate().success());
}
