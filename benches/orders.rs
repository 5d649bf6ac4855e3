//! The order-decision benchmark: `cargo bench --bench orders`.
//!
//! `annals serve` (store, command API, order-fulfilment saga, projector and
//! query API in one process, fsync on every commit) on a fresh data
//! directory; 64 concurrent HTTP clients each place an order
//! (`POST /orders`), then read it from the query API (`GET /orders/{id}`)
//! until it shows approved or rejected, and place the next. Measured: orders
//! decided per second, and the time from sending the placement to reading
//! the decision (p50, p99, max). One order in eight is over its customer's
//! remaining credit, so both outcomes are exercised.
//!
//! A client first looks 10 ms after the placement answered, then every
//! 5 ms: the latencies carry up to 5 ms of polling granularity, and the
//! reads are part of the load (their count is printed).
//!
//! Printed with the disk's raw fdatasync rates measured in the same run and
//! directory (appending to a file and overwriting a preallocated one). `ANNALS_BENCH_DIR` chooses where the data goes (default:
//! target/bench-data); `ANNALS_BENCH_SECONDS` the measured time (default
//! 10, after 2 s of warm-up).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark aborts on failure"
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bench_harness::latency::{millis, percentile};
use bench_harness::ratio::ratio;
use bench_harness::{Baselines, Table};
use common::{Server, eur, wait_ready};
use serde_json::{Value, json};

const CLIENTS: usize = 64;
const CUSTOMERS: usize = 1_000;
const CREDIT_LIMIT: i64 = 1_000_000;

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    approved: usize,
    rejected: usize,
    reads: usize,
}

async fn post(http: &reqwest::Client, url: &str, body: &Value) -> Value {
    let response = http.post(url).json(body).send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{url}: {status} {body}");
    body
}

/// Places orders until `stop`, each read back until decided. Only orders
/// placed while `measuring` count.
async fn client(
    http: reqwest::Client,
    url: String,
    customers: Arc<Vec<String>>,
    seed: usize,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> Tally {
    let mut tally = Tally::default();
    let mut n = seed;
    while !stop.load(Ordering::Relaxed) {
        n = n.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let customer = &customers[(n >> 33) % customers.len()];
        // One in eight asks for more than the whole limit: rejected.
        let total = if (n >> 20).is_multiple_of(8) {
            CREDIT_LIMIT + 1
        } else {
            1 + ((n >> 40) % 100) as i64
        };
        let counted = measuring.load(Ordering::Relaxed);
        let sent = Instant::now();
        let placed = post(
            &http,
            &format!("{url}/orders"),
            &json!({"customer_id": customer, "total": eur(total)}),
        )
        .await;
        let id = placed["id"].as_str().unwrap().to_owned();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let status = loop {
            tally.reads += usize::from(counted);
            let response = http.get(format!("{url}/orders/{id}")).send().await.unwrap();
            if response.status() == 200 {
                let order: Value = response.json().await.unwrap();
                let status = order["status"].as_str().unwrap().to_owned();
                if status != "pending" {
                    break status;
                }
            }
            assert!(
                sent.elapsed() < Duration::from_secs(60),
                "order {id} undecided after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        if counted {
            tally.latencies.push(sent.elapsed());
            match status.as_str() {
                "approved" => tally.approved += 1,
                "rejected" => tally.rejected += 1,
                other => panic!("order {id} ended {other}"),
            }
        }
    }
    tally
}

async fn register(http: &reqwest::Client, url: &str) -> Vec<String> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let http = http.clone();
        let url = url.to_owned();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= CUSTOMERS {
                    return ids;
                }
                let body = post(
                    &http,
                    &format!("{url}/customers"),
                    &json!({"name": format!("Customer {i}"),
                            "email": format!("customer{i}@example.org"),
                            "credit_limit": eur(CREDIT_LIMIT)}),
                )
                .await;
                ids.push(body["id"].as_str().unwrap().to_owned());
            }
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.extend(task.await.unwrap());
    }
    ids
}

async fn measure(url: &str, duration: Duration) -> (Tally, Duration) {
    http_edge::tls::install_default_provider();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    wait_ready(&http, url).await;
    let customers = Arc::new(register(&http, url).await);
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for seed in 0..CLIENTS {
        tasks.push(tokio::spawn(client(
            http.clone(),
            url.to_owned(),
            customers.clone(),
            seed * 7_919 + 1,
            measuring.clone(),
            stop.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut total = Tally::default();
    for task in tasks {
        let tally = task.await.unwrap();
        total.latencies.extend(tally.latencies);
        total.approved += tally.approved;
        total.rejected += tally.rejected;
        total.reads += tally.reads;
    }
    total.latencies.sort();
    (total, elapsed)
}

fn main() {
    let root = bench_harness::env::data_root().unwrap();
    let duration = bench_harness::env::seconds_or(10);
    let runtime = bench_harness::env::runtime().unwrap();

    let baselines = Baselines::measure(root.path()).unwrap();
    baselines.print();

    let dir = root.path().join("serve");
    let server = Server::start(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.to_str().unwrap(),
        ],
        "listening on",
    );
    let (tally, elapsed) = runtime.block_on(measure(&server.url, duration));
    drop(server);

    let decided = tally.latencies.len();
    let rate = decided as f64 / elapsed.as_secs_f64();
    println!(
        "{CLIENTS} clients, {CUSTOMERS} customers, {} s measured: place over HTTP -> decision read from the query API",
        duration.as_secs()
    );
    println!();
    let mut table = Table::new()
        .right("orders decided/s")
        .right("p50 ms")
        .right("p99 ms")
        .right("max ms")
        .right("approved")
        .right("rejected")
        .right("reads/order")
        .right("decided/s per raw fdatasync/s")
        .right("decided/s per overwrite fdatasync/s");
    let ms = |p: f64| format!("{:.1}", millis(percentile(&tally.latencies, p)));
    let per = |baseline: f64| format!("{:.3}", ratio(rate, baseline));
    table.row([
        format!("{rate:.0}"),
        ms(0.50),
        ms(0.99),
        ms(1.0),
        tally.approved.to_string(),
        tally.rejected.to_string(),
        format!("{:.1}", tally.reads as f64 / decided.max(1) as f64),
        per(baselines.growing),
        per(baselines.overwrite),
    ]);
    table.print();
    println!("\nTarget: at least 1,000 orders/s decided with p99 under 200 ms.");
}
