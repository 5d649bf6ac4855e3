//! The split deployment as real processes on loopback: `annals store`, two
//! `annals command-api` replicas, `annals projector` on PostgreSQL and
//! `annals query-api`. Commands go to both replicas (including a race for
//! one customer's credit); the query API shows the results. Then the
//! projector is killed with SIGKILL while commands keep coming, restarted,
//! and its views must equal what a rebuild from the log produces (the
//! rebuild runs through `annals rebuild`, the CLI).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::pg::PgDatabase;
use crate::process::{Proc, annals, output_within};

pub fn http() -> reqwest::Client {
    http_edge::tls::install_default_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub fn eur(amount: i64) -> Value {
    json!({"amount": amount, "currency": "EUR"})
}

/// POSTs a command; returns the status and the JSON body.
pub async fn command(http: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    let response = http.post(url).json(body).send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

/// Registers customers `Customer 0` .. (`c0@example.org` ..) with a
/// credit limit of 1,000, through the command APIs at `urls` in turn;
/// their ids.
pub async fn register_customers(
    http: &reqwest::Client,
    urls: &[&str],
    count: usize,
) -> Vec<String> {
    let mut customers = Vec::new();
    for i in 0..count {
        let (status, body) = command(
            http,
            &format!("{}/customers", urls[i % urls.len()]),
            &json!({"name": format!("Customer {i}"), "email": format!("c{i}@example.org"),
                    "credit_limit": eur(1_000)}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        customers.push(body["id"].as_str().unwrap().to_string());
    }
    customers
}

/// `count` reservations of 100 for `customer`, sent at once to the
/// command APIs at `urls` in turn; how many were accepted, and the highest
/// position an accepted one reached. The others must be refused for want
/// of credit (422) or a lost race (409).
pub async fn race_for_credit(
    http: &reqwest::Client,
    urls: &[&str],
    customer: &str,
    count: usize,
) -> (usize, u64) {
    let mut tasks = Vec::new();
    for i in 0..count {
        let http = http.clone();
        let url = format!("{}/customers/{customer}/reservations", urls[i % urls.len()]);
        tasks.push(tokio::spawn(async move {
            command(
                &http,
                &url,
                &json!({"order_id": uuid::Uuid::new_v4().to_string(), "amount": eur(100)}),
            )
            .await
        }));
    }
    let (mut accepted, mut last_position) = (0, 0);
    for task in tasks {
        let (status, body) = task.await.unwrap();
        match status {
            200 => {
                accepted += 1;
                last_position = last_position.max(body["position"].as_u64().unwrap());
            }
            422 | 409 => {}
            other => panic!("unexpected {other}: {body}"),
        }
    }
    (accepted, last_position)
}

/// Appends `Noted` events with data `{"n": 1}` ... `{"n": count}` to the
/// new stream `stream` of the `annals store` at `store_url`, in one
/// append.
pub async fn append_noted(store_url: &str, stream: &str, count: u64) {
    let events: Vec<Value> = (1..=count)
        .map(|n| json!({"id": uuid::Uuid::now_v7(), "type": "Noted", "data": {"n": n}}))
        .collect();
    let response = http()
        .post(format!("{store_url}/streams/{stream}"))
        .json(&json!({"expected_version": "no_stream", "events": events}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
}

/// Waits until `url/health/ready` answers 200.
pub async fn wait_ready(http: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = http.get(format!("{url}/health/ready")).send().await;
        if let Ok(response) = &answer
            && response.status() == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "{url} is not ready: {answer:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// GETs a query until the view has reached `position` (the query API
/// answers 503 while it has not, after waiting a while itself).
pub async fn query_at(http: &reqwest::Client, url: &str, position: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = http
            .get(url)
            .header("annals-min-position", position.to_string())
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            let reflected: u64 = response.headers()["annals-position"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(reflected >= position, "{reflected} < {position}");
            return response.json().await.unwrap();
        }
        assert_eq!(response.status(), 503, "{url}");
        assert!(
            Instant::now() < deadline,
            "{url} did not reach position {position}"
        );
    }
}

async fn store_head(http: &reqwest::Client, store: &str) -> u64 {
    let head: Value = http
        .get(format!("{store}/head"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    head["position"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_processes_serve_commands_and_queries_and_a_killed_projector_matches_a_rebuild() {
    let Some(db) = PgDatabase::create("split").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let store = Proc::start(
        &["store", "--listen", "127.0.0.1:0", "--data-dir", data_dir],
        "store listening on",
    );
    let replica = |_: usize| {
        Proc::start(
            &[
                "command-api",
                "--store",
                &store.url,
                "--listen",
                "127.0.0.1:0",
            ],
            "command API listening on",
        )
    };
    let replicas = [replica(0), replica(1)];
    let start_projector = || {
        Proc::start(
            &[
                "projector",
                "--store",
                &store.url,
                "--database",
                &db.url,
                "--listen",
                "127.0.0.1:0",
                "--batch-events-max",
                "50",
            ],
            "projector listening on",
        )
    };
    let mut projector = start_projector();
    let query = Proc::start(
        &[
            "query-api",
            "--database",
            &db.url,
            "--listen",
            "127.0.0.1:0",
        ],
        "query API listening on",
    );
    let http = http();
    for p in [&store, &replicas[0], &replicas[1], &projector, &query] {
        wait_ready(&http, &p.url).await;
        let doc: Value = http
            .get(format!("{}/openapi.json", p.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            doc["paths"]["/health/ready"].is_object(),
            "{}: {doc}",
            p.url
        );
    }

    // Customers registered through both replicas.
    let urls = [replicas[0].url.as_str(), replicas[1].url.as_str()];
    let customers = register_customers(&http, &urls, 10).await;

    // The race: 40 reservations of 100 for one customer whose limit fits 10,
    // sent to both replicas at once. The store decides each version once.
    let raced = customers[0].clone();
    let (accepted, last_position) = race_for_credit(&http, &urls, &raced, 40).await;
    assert_eq!(
        accepted, 10,
        "exactly the reservations that fit are accepted"
    );

    // Orders through both replicas; the query API shows them once its view
    // reaches the position the command returned.
    let (status, order) = command(
        &http,
        &format!("{}/orders", replicas[1].url),
        &json!({"customer_id": customers[1], "total": eur(250)}),
    )
    .await;
    assert_eq!(status, 201, "{order}");
    let order_id = order["id"].as_str().unwrap();
    let position = order["position"].as_u64().unwrap().max(last_position);
    let seen = query_at(&http, &format!("{}/orders/{order_id}", query.url), position).await;
    assert_eq!(seen["status"], "pending", "{seen}");
    assert_eq!(seen["total"], eur(250));
    let raced_view = query_at(&http, &format!("{}/customers/{raced}", query.url), position).await;
    assert_eq!(raced_view["reserved"], eur(1_000), "{raced_view}");
    assert_eq!(raced_view["available"], eur(0), "{raced_view}");
    let used_up = query_at(
        &http,
        &format!("{}/customers?credit_available=0", query.url),
        position,
    )
    .await;
    let ids: Vec<&str> = used_up["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [raced.as_str()]);

    // Commands keep coming while the projector is killed and restarted.
    let sent = std::sync::Arc::new(AtomicU64::new(0));
    let writer = {
        let http = http.clone();
        let urls: Vec<String> = replicas.iter().map(|r| r.url.clone()).collect();
        let customers = customers.clone();
        let sent = sent.clone();
        tokio::spawn(async move {
            for i in 0..300usize {
                let customer = &customers[1 + i % (customers.len() - 1)];
                let url = &urls[i % 2];
                let order = uuid::Uuid::new_v4().to_string();
                let (status, body) = command(
                    &http,
                    &format!("{url}/customers/{customer}/reservations"),
                    &json!({"order_id": order, "amount": eur(7)}),
                )
                .await;
                assert_eq!(status, 200, "{body}");
                if i % 3 == 0 {
                    let (status, body) = command(
                        &http,
                        &format!("{url}/customers/{customer}/reservations/{order}/release"),
                        &json!({}),
                    )
                    .await;
                    assert_eq!(status, 200, "{body}");
                }
                if i % 5 == 0 {
                    let (status, body) = command(
                        &http,
                        &format!("{url}/orders"),
                        &json!({"customer_id": customer, "total": eur(3)}),
                    )
                    .await;
                    assert_eq!(status, 201, "{body}");
                }
                sent.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    // Waits for the writer to have sent `n` commands; a writer that failed
    // fails the test here instead of leaving it waiting.
    let wait_sent = |n: u64| {
        let sent = sent.clone();
        let writer = &writer;
        async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            while sent.load(Ordering::SeqCst) < n {
                assert!(!writer.is_finished(), "the writer stopped early");
                assert!(Instant::now() < deadline, "the writer is stuck");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    wait_sent(60).await;
    projector.kill();
    wait_sent(120).await;
    let mut projector = start_projector();
    tokio::time::timeout(Duration::from_secs(300), writer)
        .await
        .expect("the writer finishes within 300 s")
        .unwrap();
    let head = store_head(&http, &store.url).await;
    let list = |path: &str| format!("{}/{path}?limit=200", query.url);
    query_at(&http, &list("customers"), head).await;
    query_at(&http, &list("orders"), head).await;
    let before = db.dump(&["customers", "orders"]).await;
    assert_eq!(before[0].len(), 10);

    // Rebuild both views from the log with the CLI; nothing may change.
    for projection in ["customers", "orders"] {
        let out = output_within(
            annals().args(["rebuild", projection, "--url", &projector.url]),
            Duration::from_secs(180),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("swapped in"), "{stdout}");
    }
    assert_eq!(store_head(&http, &store.url).await, head);
    let after = db.dump(&["customers", "orders"]).await;
    assert!(
        before == after,
        "the views after the kill differ from a rebuild:\n{before:?}\n{after:?}"
    );

    // Everything stops gracefully.
    assert!(projector.terminate().success());
    let mut query = query;
    assert!(query.terminate().success());
    let [mut a, mut b] = replicas;
    assert!(a.terminate().success());
    assert!(b.terminate().success());
    let mut store = store;
    assert!(store.terminate().success());
}

/// Appends one raw event through the store's HTTP API.
async fn append_raw(
    http: &reqwest::Client,
    store: &str,
    stream: &str,
    event_type: &str,
    data: Value,
) {
    let response = http
        .post(format!("{store}/streams/{stream}"))
        .json(&json!({
            "expected_version": "any",
            "events": [{"id": uuid::Uuid::new_v4(), "type": event_type, "data": data}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
}

/// Runs `annals <args>` to completion (within a minute).
fn cli(args: &[&str]) -> std::process::Output {
    output_within(annals().args(args), Duration::from_secs(60))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_shows_in_status_and_is_skipped_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let store = Proc::store(&dir.path().join("store"));
    let views = format!("sqlite://{}", dir.path().join("views.sqlite").display());
    let projector = Proc::start(
        &[
            "projector",
            "--store",
            &store.url,
            "--database",
            &views,
            "--listen",
            "127.0.0.1:0",
        ],
        "projector listening on",
    );
    let http = http();
    wait_ready(&http, &projector.url).await;
    let customer = uuid::Uuid::new_v4();
    // A credit reservation for a customer who never registered: the
    // customers view cannot apply it.
    append_raw(
        &http,
        &store.url,
        &format!("customer-{customer}"),
        "CreditReserved",
        json!({"customer_id": customer, "order_id": uuid::Uuid::new_v4(), "amount": eur(5)}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let out = cli(&["status", "--url", &projector.url]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        // The orders view does not care about that event and goes on;
        // the two projections run independently, so the customers view
        // can report its failure before orders has caught up.
        let orders_live = text
            .lines()
            .any(|l| l.starts_with("orders") && l.contains("live"));
        if text.contains("failed") {
            assert_eq!(out.status.code(), Some(1), "{text}");
            if orders_live {
                break text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the customers projection never failed while orders went live: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.contains("error at 1"), "{status}");

    // Readiness names the failed projection, where it stopped and why.
    let ready = http
        .get(format!("{}/health/ready", projector.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    let check = body["checks"]["projector"].as_str().unwrap_or_default();
    assert!(
        check.contains("customers") && check.contains("position 1"),
        "{body}"
    );
    assert_eq!(body["projections"][0]["name"], "customers", "{body}");
    assert_eq!(body["projections"][0]["state"], "failed", "{body}");
    assert_eq!(body["projections"][0]["position"], 0, "{body}");
    assert_eq!(body["projections"][0]["error_position"], 1, "{body}");
    assert!(
        body["projections"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("not registered")),
        "{body}"
    );
    assert_eq!(body["projections"].as_array().map(Vec::len), Some(1));

    // A wrong position is refused; the right one skips.
    let out = cli(&[
        "skip",
        "customers",
        "--position",
        "7",
        "--url",
        &projector.url,
    ]);
    assert!(!out.status.success());
    let out = cli(&[
        "skip",
        "customers",
        "--position",
        "1",
        "--url",
        &projector.url,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = cli(&["status", "--url", &projector.url]);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_ready(&http, &projector.url).await;
}

/// The split deployment's first start on a server where the view database
/// was never created: whichever of the query API and the projector starts
/// first creates it, and the views work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_split_processes_create_a_missing_view_database_on_first_start() {
    let Some(db) = PgDatabase::reserve("first_start").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Proc::store(dir.path());
    let commands = Proc::start(
        &[
            "command-api",
            "--store",
            &store.url,
            "--listen",
            "127.0.0.1:0",
        ],
        "command API listening on",
    );
    let query = Proc::start(
        &[
            "query-api",
            "--database",
            &db.url,
            "--listen",
            "127.0.0.1:0",
        ],
        "query API listening on",
    );
    let projector = Proc::start(
        &[
            "projector",
            "--store",
            &store.url,
            "--database",
            &db.url,
            "--listen",
            "127.0.0.1:0",
        ],
        "projector listening on",
    );
    let http = http();
    for p in [&store, &commands, &query, &projector] {
        wait_ready(&http, &p.url).await;
    }
    let (status, body) = command(
        &http,
        &format!("{}/customers", commands.url),
        &json!({"name": "First", "email": "first@example.org", "credit_limit": eur(100)}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap();
    let seen = query_at(
        &http,
        &format!("{}/customers/{id}", query.url),
        body["position"].as_u64().unwrap(),
    )
    .await;
    assert_eq!(seen["name"], "First");
}

/// A view database that does not exist and that the user may not create
/// is one line, saying so once and how to create it.
#[test]
fn a_view_database_that_cannot_be_created_is_one_line_saying_so_once() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(PgDatabase::reserve("not_created")) else {
        return;
    };
    let role = rt.block_on(db.role_without_createdb());
    let out = output_within(
        annals()
            .args([
                "query-api",
                "--database",
                &db.url_as(&role),
                "--listen",
                "127.0.0.1:0",
            ])
            .env("ANNALS_LOG", "off"),
        Duration::from_secs(60),
    );
    let line = crate::cli::one_line_failure(&out);
    assert_eq!(line.matches("does not exist").count(), 1, "{line}");
    assert!(line.contains(db.name()), "{line}");
    assert!(line.contains("createdb"), "{line}");
    assert!(line.contains("permission denied"), "{line}");
    drop(db);
}
