//! `GET /metrics` of real processes over loopback: it parses as the
//! Prometheus text format, line by line, and its counters and gauges move
//! as the test appends, projects and queries; `--no-metrics` turns it off;
//! a store process reports its own log.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::auth::{create_key, http};
use crate::process::Proc;

/// One scrape: every sample by its name as written (`_bucket`, `_sum`
/// and `_count` included) and its labels (sorted `k=v` pairs).
struct Metrics(HashMap<(String, String), f64>);

impl Metrics {
    /// The value of `name` with exactly `labels`; 0 when absent (a
    /// counter not incremented yet is not rendered).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .get(&(name.to_owned(), key(labels)))
            .copied()
            .unwrap_or(0.0)
    }

    /// Whether `name` was rendered with `labels`.
    fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.0.contains_key(&(name.to_owned(), key(labels)))
    }

    /// Whether any sample is called `name`.
    fn names(&self, name: &str) -> bool {
        self.0.keys().any(|(n, _)| n == name)
    }

    /// The buckets of histogram `name` with `labels`: (upper bound, count).
    fn buckets(&self, name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
        let mut buckets: Vec<(f64, f64)> = self
            .0
            .iter()
            .filter(|((n, _), _)| *n == format!("{name}_bucket"))
            .filter_map(|((_, l), count)| {
                let mut rest: Vec<&str> = l.split(',').collect();
                let at = rest.iter().position(|kv| kv.starts_with("le="))?;
                let le = rest.remove(at)["le=".len()..].parse::<f64>().unwrap();
                (rest.join(",") == key(labels)).then_some((le, *count))
            })
            .collect();
        assert!(!buckets.is_empty(), "no histogram {name} {labels:?}");
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        buckets
    }
}

fn key(labels: &[(&str, &str)]) -> String {
    let mut pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    pairs.join(",")
}

/// GETs `/metrics` with `token`, and parses it as the Prometheus text
/// format (strictly: a line that is not is an error), every family typed.
async fn scrape(url: &str, token: Option<&str>) -> Metrics {
    use prom_text_format_parser::{Type, ValueType};
    let mut request = http().get(format!("{url}/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let body = response.text().await.unwrap();
    let parsed = prom_text_format_parser::Scrape::parse(&body)
        .unwrap_or_else(|e| panic!("not the Prometheus text format: {e:?}\n{body}"));
    let mut samples = HashMap::new();
    for family in parsed.metrics {
        assert!(family.name.starts_with("annals_"), "{}", family.name);
        assert_ne!(family.kind, Type::Untyped, "{} has no # TYPE", family.name);
        for sample in family.samples {
            let suffix = match (family.kind, sample.value.value_type) {
                (Type::Histogram, ValueType::Sample) => "_bucket",
                (_, ValueType::Sum) => "_sum",
                (_, ValueType::Count) => "_count",
                _ => "",
            };
            let mut labels: Vec<String> = sample
                .labels
                .iter()
                .map(|l| format!("{}={}", l.key, l.value))
                .collect();
            labels.sort();
            let value = sample.value.value.parse::<f64>().unwrap();
            samples.insert(
                (format!("{}{suffix}", family.name), labels.join(",")),
                value,
            );
        }
    }
    Metrics(samples)
}

async fn register(url: &str, n: usize) -> Value {
    let response = http()
        .post(format!("{url}/customers"))
        .json(&json!({
            "name": format!("Customer {n}"),
            "email": format!("c{n}@example.org"),
            "credit_limit": {"amount": 1000, "currency": "EUR"},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

/// Scrapes until `done` holds (a projection or saga catching up), for up
/// to 30 s.
async fn scrape_until(url: &str, done: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = scrape(url, None).await;
        if done(&metrics) {
            return metrics;
        }
        assert!(Instant::now() < deadline, "the metrics did not get there");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counters_move_as_the_test_appends_projects_and_queries() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Proc::serve(dir.path(), &[]);
    let url = serve.url.clone();
    let created = &[
        ("route", "/customers"),
        ("method", "POST"),
        ("status", "201"),
    ];
    let committed = &[("outcome", "committed")];
    let customers = &[("projection", "customers")];

    let before = scrape(&url, None).await;
    assert!(
        before.value("annals_store_subscriptions", &[]) >= 1.0,
        "the projector and the saga follow the log"
    );
    let mut last = json!(null);
    for n in 0..3 {
        last = register(&url, n).await;
    }
    let position = last["position"].as_f64().unwrap();
    let id = last["id"].as_str().unwrap();

    let after = scrape_until(&url, |m| {
        m.value("annals_projection_position", customers) >= position
    })
    .await;
    assert_eq!(
        after.value("annals_http_requests_total", created)
            - before.value("annals_http_requests_total", created),
        3.0
    );
    assert!(
        after.value("annals_store_appends_total", committed)
            - before.value("annals_store_appends_total", committed)
            >= 3.0
    );
    assert!(
        after.value("annals_store_events_appended_total", &[])
            - before.value("annals_store_events_appended_total", &[])
            >= 3.0
    );
    assert!(after.value("annals_store_head_position", &[]) >= position);
    assert_eq!(after.value("annals_store_read_only", &[]), 0.0);
    assert!(after.value("annals_store_segment_bytes", &[]) > 0.0);
    assert!(
        after.value(
            "annals_projection_events_applied_total",
            &[("projection", "customers"), ("track", "live")]
        ) >= position
    );
    assert_eq!(after.value("annals_projection_failed", customers), 0.0);
    // Histograms, with their buckets: every fsync was at most +Inf.
    let fsyncs = after.buckets("annals_store_fsync_duration_seconds", &[]);
    let inf = fsyncs.iter().find(|(le, _)| le.is_infinite()).unwrap().1;
    assert!(inf >= 3.0, "{fsyncs:?}");
    assert!(after.value("annals_store_fsync_duration_seconds_count", &[]) >= 3.0);
    assert!(
        after.value(
            "annals_http_request_duration_seconds_count",
            &[("route", "/customers"), ("method", "POST")]
        ) >= 3.0
    );

    // A query counts under its route template, never under the id; a
    // path no route has counts as `unmatched`.
    let response = http()
        .get(format!("{url}/customers/{id}"))
        .header("annals-min-position", position.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let missing = http().get(format!("{url}/no-such")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let queried = scrape(&url, None).await;
    assert_eq!(
        queried.value(
            "annals_http_requests_total",
            &[
                ("route", "/customers/{id}"),
                ("method", "GET"),
                ("status", "200")
            ]
        ),
        1.0
    );
    assert_eq!(
        queried.value(
            "annals_http_requests_total",
            &[("route", "unmatched"), ("method", "GET"), ("status", "404")]
        ),
        1.0
    );
    assert!(
        !queried.0.keys().any(|(_, labels)| labels.contains(id)),
        "an id became a label"
    );
    // An order: the saga reserves its credit and approves it.
    let response = http()
        .post(format!("{url}/orders"))
        .json(
            &json!({"customer_id": id, "lines": [{"sku": "BOOK-1", "quantity": 1,
                      "unit_price": {"amount": 100, "currency": "EUR"}}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let placed: Value = response.json().await.unwrap();
    let placed_at = placed["position"].as_f64().unwrap();
    let sagas = &[("saga", "order-fulfilment")];
    let settled = scrape_until(&url, |m| {
        m.value("annals_saga_position", sagas) >= placed_at
            && m.value("annals_saga_events_in_flight", sagas) == 0.0
            && m.value("annals_projection_lag_events", customers) == 0.0
    })
    .await;
    assert!(settled.value("annals_saga_events_handled", sagas) >= 1.0);
    assert_eq!(
        settled.value("annals_projection_lag_seconds", customers),
        0.0
    );

    // Every metric the sample dashboard plots is one the process serves.
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/grafana-dashboard.json"
    ))
    .unwrap();
    let plotted: HashSet<&str> = dashboard
        .match_indices("annals_")
        .map(|(at, _)| {
            let rest = &dashboard[at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .filter(|name| *name != "annals_")
        .collect();
    assert!(plotted.len() >= 10, "{plotted:?}");
    for name in plotted {
        assert!(
            settled.names(name),
            "the dashboard plots {name}, which /metrics lacks"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_metrics_serves_none_and_keys_guard_them() {
    let dir = tempfile::tempdir().unwrap();
    let off = Proc::serve(dir.path(), &["--no-metrics"]);
    let response = http()
        .get(format!("{}/metrics", off.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    drop(off);

    let keys = dir.path().join("keys.json");
    let read = create_key(&keys, "scraper", &["read"]);
    let data = dir.path().join("guarded");
    let guarded = Proc::serve(&data, &["--keys-file", keys.to_str().unwrap()]);
    let refused = http()
        .get(format!("{}/metrics", guarded.url))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let metrics = scrape(&guarded.url, Some(&read)).await;
    assert!(metrics.has("annals_store_head_position", &[]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_process_reports_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = Proc::store(dir.path());
    crate::split::append_noted(&store.url, "metrics-test", 2).await;
    let metrics = scrape(&store.url, None).await;
    assert_eq!(metrics.value("annals_store_head_position", &[]), 2.0);
    assert_eq!(
        metrics.value("annals_store_appends_total", &[("outcome", "committed")]),
        1.0
    );
    assert_eq!(
        metrics.value("annals_store_events_appended_total", &[]),
        2.0
    );
    let groups = metrics.buckets("annals_store_group_commit_events", &[]);
    assert!(
        groups.iter().any(|(le, count)| *le == 2.0 && *count == 1.0),
        "{groups:?}"
    );
}
