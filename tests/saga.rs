//! The order-fulfilment saga in the real binary: in `annals serve` placing
//! an order is enough for it to be approved (credit reserved) or rejected,
//! across a restart; `annals command-api --saga` does the same against
//! `annals store`, and only the replica asked to runs it.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::process::Proc;
use crate::split::{command, eur, http, query_at, wait_ready};

/// GETs `url` until it answers 200 with a body `done` accepts (60 s at most).
async fn poll_until(http: &reqwest::Client, url: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = http.get(url).send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status == 200 && done(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{url} did not get there within 60 s; last answer {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The checks of `/health/ready`, once it answers 200.
async fn ready_checks(http: &reqwest::Client, url: &str) -> Value {
    wait_ready(http, url).await;
    let body: Value = http
        .get(format!("{url}/health/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["checks"].clone()
}

fn serve(data_dir: &str) -> Proc {
    Proc::start(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data_dir,
            "--saga-checkpoint-interval-ms",
            "50",
        ],
        "listening on",
    )
}

/// Places an order for `total` and waits until the saga has decided it.
async fn decided_order(http: &reqwest::Client, url: &str, customer: &str, total: i64) -> Value {
    let (status, body) = command(
        http,
        &format!("{url}/orders"),
        &json!({"customer_id": customer, "total": eur(total)}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap();
    // Read-your-writes for the placement, then wait for the saga's decision.
    let placed = query_at(
        http,
        &format!("{url}/orders/{id}"),
        body["position"].as_u64().unwrap(),
    )
    .await;
    assert_eq!(placed["id"], id);
    poll_until(http, &format!("{url}/orders/{id}"), |o| {
        o["status"] != "pending"
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_annals_serve_placing_an_order_is_enough_to_get_it_approved_or_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let mut process = serve(data_dir);
    let url = process.url.clone();
    let http = http();
    assert_eq!(ready_checks(&http, &url).await["saga"], "ok");

    let (status, body) = command(
        &http,
        &format!("{url}/customers"),
        &json!({"name": "Grace Hopper", "email": "grace@example.org",
                "credit_limit": eur(1_000)}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let customer = body["id"].as_str().unwrap().to_string();
    let customer_url = format!("{url}/customers/{customer}");

    let approved = decided_order(&http, &url, &customer, 600).await;
    assert_eq!(approved["status"], "approved", "{approved}");
    let seen = query_at(&http, &customer_url, approved["position"].as_u64().unwrap()).await;
    assert_eq!(seen["reserved"], eur(600), "{seen}");

    let rejected = decided_order(&http, &url, &customer, 600).await;
    assert_eq!(rejected["status"], "rejected", "{rejected}");
    let reason = rejected["reason"].as_str().unwrap();
    assert!(reason.starts_with("credit-limit-exceeded: "), "{reason}");

    // Cancelling the approved order gives its credit back.
    let (status, body) = command(
        &http,
        &format!("{url}/orders/{}/cancel", approved["id"].as_str().unwrap()),
        &json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let seen = poll_until(&http, &customer_url, |c| c["reserved"] == eur(0)).await;
    assert_eq!(seen["available"], eur(1_000), "{seen}");

    // After a restart the saga resumes and goes on deciding.
    assert!(process.terminate().success());
    let process = serve(data_dir);
    let url = process.url.clone();
    assert_eq!(ready_checks(&http, &url).await["saga"], "ok");
    let approved = decided_order(&http, &url, &customer, 1_000).await;
    assert_eq!(approved["status"], "approved", "{approved}");
    let seen = query_at(
        &http,
        &format!("{url}/customers/{customer}"),
        approved["position"].as_u64().unwrap(),
    )
    .await;
    // The orders decided before the restart were not decided again.
    assert_eq!(seen["reserved"], eur(1_000), "{seen}");
    let orders = poll_until(
        &http,
        &format!("{url}/orders?customer_id={customer}"),
        |page| page["items"].as_array().is_some_and(|i| i.len() == 3),
    )
    .await;
    let mut statuses: Vec<&str> = orders["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["status"].as_str().unwrap())
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, ["approved", "cancelled", "rejected"], "{orders}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annals_command_api_runs_the_saga_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let store = Proc::store(dir.path());
    let replica = |saga: bool| {
        let mut args = vec![
            "command-api",
            "--store",
            &store.url,
            "--listen",
            "127.0.0.1:0",
        ];
        if saga {
            args.push("--saga");
        }
        Proc::start(&args, "command API listening on")
    };
    let plain = replica(false);
    let with_saga = replica(true);
    let http = http();
    assert_eq!(ready_checks(&http, &plain.url).await.get("saga"), None);
    assert_eq!(ready_checks(&http, &with_saga.url).await["saga"], "ok");

    let (status, body) = command(
        &http,
        &format!("{}/customers", plain.url),
        &json!({"name": "Ada Lovelace", "email": "ada@example.org",
                "credit_limit": eur(100)}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let customer = body["id"].as_str().unwrap().to_string();
    let (status, body) = command(
        &http,
        &format!("{}/orders", plain.url),
        &json!({"customer_id": customer, "total": eur(100)}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let order = body["id"].as_str().unwrap();

    // The saga (in the other replica, over the remote store's subscription)
    // reserves and approves.
    let stream = poll_until(
        &http,
        &format!("{}/streams/order-{order}", store.url),
        |slice| slice["events"].as_array().is_some_and(|e| e.len() == 2),
    )
    .await;
    assert_eq!(stream["events"][1]["type"], "OrderApproved", "{stream}");
    let customer_stream: Value = http
        .get(format!("{}/streams/customer-{customer}", store.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let types: Vec<&str> = customer_stream["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["CustomerRegistered", "CreditReserved"]);
}

/// The application's setting `order-decision-timeout` reaches the saga
/// from its flag, from its environment variable, or as its default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_decision_timeout_comes_from_its_flag_its_variable_or_its_default() {
    let dir = tempfile::tempdir().unwrap();
    let store = Proc::store(dir.path());
    let base = [
        "command-api",
        "--store",
        &store.url,
        "--listen",
        "127.0.0.1:0",
    ];
    let plain = Proc::start(&base, "command API listening on");
    let http = http();
    let (status, body) = command(
        &http,
        &format!("{}/customers", plain.url),
        &json!({"name": "Ada Lovelace", "email": "ada@example.org",
                "credit_limit": eur(1_000)}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let customer = body["id"].as_str().unwrap().to_string();
    // Places an order while no saga runs, lets it age past 20 ms, then
    // runs the saga with `flags` and `env` until it decides the order.
    let decide = async |flags: &[&str], env: &[(&str, &str)]| -> Value {
        let (status, body) = command(
            &http,
            &format!("{}/orders", plain.url),
            &json!({"customer_id": customer, "total": eur(10)}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let order = body["id"].as_str().unwrap().to_string();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut args = base.to_vec();
        args.push("--saga");
        args.extend_from_slice(flags);
        let _saga = Proc::start_with_env(&args, env, "command API listening on");
        let stream = poll_until(
            &http,
            &format!("{}/streams/order-{order}", store.url),
            |slice| slice["events"].as_array().is_some_and(|e| e.len() == 2),
        )
        .await;
        stream["events"][1].clone()
    };

    let by_flag = decide(&["--order-decision-timeout-ms", "20"], &[]).await;
    assert_eq!(by_flag["type"], "OrderRejected", "{by_flag}");
    let reason = by_flag["data"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("timeout: ") && reason.contains("within 20 ms"),
        "{by_flag}"
    );

    let by_env = decide(&[], &[("ANNALS_ORDER_DECISION_TIMEOUT_MS", "25")]).await;
    assert_eq!(by_env["type"], "OrderRejected", "{by_env}");
    let reason = by_env["data"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("within 25 ms"), "{by_env}");

    // The default (30 s) leaves an order 50 ms old to the credit check.
    let by_default = decide(&[], &[]).await;
    assert_eq!(by_default["type"], "OrderApproved", "{by_default}");
}

/// A small deterministic generator (the seed is printed, so a failing run
/// can be repeated).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Every event of the log, read through the store's HTTP API (which
/// decrypts personal data as every client sees it).
async fn whole_log(store_url: &str) -> Vec<event_store::RecordedEvent> {
    use event_store::EventStore;
    let store = event_store_http::RemoteStore::connect(
        store_url,
        event_store_http::RemoteOptions::default(),
    )
    .await
    .unwrap();
    let mut events = Vec::new();
    let mut from = event_store::Position::START;
    loop {
        let page = store.read_all(from, 1_000).await.unwrap();
        let Some(last) = page.last() else {
            return events;
        };
        from = event_store::Position(last.position.0 + 1);
        events.extend(page);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_process_killed_again_and_again_decides_every_order_exactly_once() {
    const CUSTOMERS: usize = 50;
    const ORDERS: usize = 1_000;
    const KILLS_MIN: usize = 10;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("seed {seed}");
    let dir = tempfile::tempdir().unwrap();
    let store = Proc::store(dir.path());
    let store_url = store.url.clone();
    // Clients go through a replica that is never killed; the saga runs in
    // another one, which is.
    let front = Proc::start(
        &[
            "command-api",
            "--store",
            &store_url,
            "--listen",
            "127.0.0.1:0",
        ],
        "command API listening on",
    );
    let saga_args = [
        "command-api",
        "--store",
        &store_url,
        "--listen",
        "127.0.0.1:0",
        "--saga",
        "--saga-checkpoint-every-events",
        "25",
        "--saga-checkpoint-interval-ms",
        "20",
    ];
    let http = http();
    let url = front.url.clone();
    wait_ready(&http, &url).await;

    let mut customers = Vec::new();
    for i in 0..CUSTOMERS {
        let (status, body) = command(
            &http,
            &format!("{url}/customers"),
            &json!({"name": format!("Customer {i}"), "email": format!("c{i}@example.org"),
                    "credit_limit": eur(3_000)}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        customers.push(body["id"].as_str().unwrap().to_string());
    }

    // 8 clients place the orders (about 20 per customer, together about
    // twice the credit there is) and cancel some of them at once.
    let placed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = Vec::new();
    for client in 0..8_u64 {
        let http = http.clone();
        let url = url.clone();
        let customers = customers.clone();
        let placed = placed.clone();
        let mut rng = Rng(seed ^ (client + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        clients.push(tokio::spawn(async move {
            while placed.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < ORDERS {
                let customer = &customers[rng.below(CUSTOMERS as u64) as usize];
                let total = 1 + rng.below(600) as i64;
                let (status, body) = command(
                    &http,
                    &format!("{url}/orders"),
                    &json!({"customer_id": customer, "total": eur(total)}),
                )
                .await;
                assert_eq!(status, 201, "{body}");
                if rng.below(8) == 0 {
                    let id = body["id"].as_str().unwrap();
                    let (status, body) = command(
                        &http,
                        &format!("{url}/orders/{id}/cancel"),
                        &json!({"reason": "changed my mind"}),
                    )
                    .await;
                    // Already rejected by the saga: refused for that reason,
                    // and no other.
                    if status != 200 {
                        assert_eq!(status, 422, "{body}");
                        assert_eq!(
                            body["type"], "urn:annals:problem:business-rule-violated",
                            "{body}"
                        );
                        assert_eq!(body["rule"], "invalid-order-transition", "{body}");
                        assert_eq!(body["order_status"], "rejected", "{body}");
                        assert_eq!(body["action"], "cancel", "{body}");
                    }
                }
            }
        }));
    }

    // Meanwhile the saga's process dies at random moments (SIGKILL: no
    // last checkpoint, commands cut off mid-way) and comes back.
    let mut rng = Rng(seed);
    let mut saga = Proc::start(&saga_args, "command API listening on");
    let mut kills = 0;
    while kills < KILLS_MIN || clients.iter().any(|c| !c.is_finished()) {
        tokio::time::sleep(Duration::from_millis(20 + rng.below(250))).await;
        saga.kill(); // fails if the saga's process had exited by itself
        kills += 1;
        saga = Proc::start(&saga_args, "command API listening on");
    }
    for client in clients {
        client.await.unwrap();
    }

    // The last saga finishes the work; then the whole history is audited.
    // Every order decided is not enough to stop waiting: the release of a
    // cancelled order's credit (or of a reservation a killed run left
    // behind) is a later step of the saga, so the audit is taken again
    // until it is clean or the deadline passes. A violation that waiting
    // cannot mend (a double decision, a limit exceeded) stays in the log
    // and fails below.
    let deadline = Instant::now() + Duration::from_secs(120);
    let audit = loop {
        let log = whole_log(&store_url).await;
        let audit = annals_credit::domain::audit::audit_credit(&log, true);
        if audit.violations.is_empty() || Instant::now() > deadline {
            break audit;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    drop(saga);
    println!("{kills} kills; {audit:?}");
    assert!(kills >= KILLS_MIN);
    assert_eq!(audit.orders, ORDERS);
    assert_eq!(audit.customers, CUSTOMERS);
    assert_eq!(audit.violations, Vec::<String>::new(), "seed {seed}");
    assert_eq!(audit.pending, 0, "seed {seed}");
    // Both outcomes occurred, so the history exercised both paths.
    assert!(audit.approved > 0 && audit.rejected > 0, "{audit:?}");
}
