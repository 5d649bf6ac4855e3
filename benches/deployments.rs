//! The deployment benchmark: `cargo bench --bench deployments`.
//!
//! The command workload of the command-side benchmark (64 concurrent HTTP
//! clients, 10,000 customers, reserve + release credit on random customers,
//! fsync on every commit), run against two deployments of the real binary:
//!
//! 1. `annals serve`: everything in one process (its projector keeps the
//!    SQLite views current meanwhile, as it would in production);
//! 2. `annals serve` with API keys: every command carries a bearer token
//!    the process checks (hash, constant-time comparison, role);
//! 3. `annals command-api` talking to `annals store` over loopback.
//!
//! Printed with the disk's raw fdatasync rate measured in the same run and
//! directory, and the remote deployment's throughput as a share of the
//! all-in-one's. The load generator runs in this process, on the same two
//! cores as the servers.
//!
//! `ANNALS_BENCH_DIR` chooses where the data goes (default: next to the
//! target dir); `ANNALS_BENCH_SECONDS` the length of each timed workload
//! (default 10); `ANNALS_BENCH_CUSTOMERS` the number of customers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark aborts on failure"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::{Server, eur, raw_fdatasync_rate, wait_ready};

const CLIENTS: usize = 64;

struct Run {
    commands: usize,
    failures: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.commands as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        common::percentile_ms(&self.latencies, p)
    }
}

/// Registers `count` customers with `CLIENTS` clients; returns their ids.
async fn register(http: &reqwest::Client, url: &str, count: usize) -> (Run, Vec<String>) {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let http = http.clone();
            let url = format!("{url}/customers");
            let next = next.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                let mut latencies = Vec::new();
                let mut failures = 0;
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    let sent = Instant::now();
                    let body = json!({"name": "Bench Customer", "email": "bench@example.org",
                                      "credit_limit": eur(1_000_000)});
                    match http.post(&url).json(&body).send().await {
                        Ok(r) if r.status() == 201 => {
                            let v: Value = r.json().await.unwrap();
                            ids.push(v["id"].as_str().unwrap().to_owned());
                            latencies.push(sent.elapsed());
                        }
                        _ => failures += 1,
                    }
                }
                (ids, latencies, failures)
            })
        })
        .collect();
    let mut run = Run {
        commands: 0,
        failures: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    let mut ids = Vec::new();
    for task in tasks {
        let (mut i, l, f) = task.await.unwrap();
        ids.append(&mut i);
        run.latencies.extend(l);
        run.failures += f;
    }
    run.elapsed = started.elapsed();
    run.commands = run.latencies.len();
    run.latencies.sort();
    (run, ids)
}

/// Reserve then release credit on random customers for `duration`.
async fn reserve_release(
    http: &reqwest::Client,
    url: &str,
    customers: &Arc<Vec<String>>,
    duration: Duration,
) -> Run {
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let http = http.clone();
            let url = url.to_owned();
            let customers = customers.clone();
            tokio::spawn(async move {
                // A cheap deterministic spread of customers per client.
                let mut pick = client.wrapping_mul(2_654_435_761) % customers.len();
                let mut latencies = Vec::new();
                let mut failures = 0;
                while started.elapsed() < duration {
                    pick = (pick + 7_919) % customers.len();
                    let customer = &customers[pick];
                    let order = uuid::Uuid::new_v4().to_string();
                    let sent = Instant::now();
                    let reserved = http
                        .post(format!("{url}/customers/{customer}/reservations"))
                        .json(&json!({"order_id": order, "amount": eur(100)}))
                        .send()
                        .await;
                    match reserved {
                        Ok(r) if r.status() == 200 => latencies.push(sent.elapsed()),
                        _ => {
                            failures += 1;
                            continue;
                        }
                    }
                    let sent = Instant::now();
                    let released = http
                        .post(format!(
                            "{url}/customers/{customer}/reservations/{order}/release"
                        ))
                        .send()
                        .await;
                    match released {
                        Ok(r) if r.status() == 200 => latencies.push(sent.elapsed()),
                        _ => failures += 1,
                    }
                }
                (latencies, failures)
            })
        })
        .collect();
    let mut run = Run {
        commands: 0,
        failures: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for task in tasks {
        let (l, f) = task.await.unwrap();
        run.latencies.extend(l);
        run.failures += f;
    }
    run.elapsed = started.elapsed();
    run.commands = run.latencies.len();
    run.latencies.sort();
    run
}

struct Measured {
    register: Run,
    commands: Run,
}

/// `key`: the API key's token every request presents, if any.
async fn measure(url: &str, customers: usize, duration: Duration, key: Option<&str>) -> Measured {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = key {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {key}").parse().unwrap(),
        );
    }
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(CLIENTS)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    wait_ready(&http, url).await;
    let (register, ids) = register(&http, url, customers).await;
    assert_eq!(ids.len(), customers, "every registration succeeded");
    let ids = Arc::new(ids);
    let commands = reserve_release(&http, url, &ids, duration).await;
    Measured { register, commands }
}

fn main() {
    let base = std::env::var("ANNALS_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::env::current_dir().unwrap().join("target/bench-data"));
    std::fs::create_dir_all(&base).unwrap();
    let root = tempfile::tempdir_in(&base).unwrap();
    let seconds: u64 = std::env::var("ANNALS_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let customers: usize = std::env::var("ANNALS_BENCH_CUSTOMERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let duration = Duration::from_secs(seconds);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let raw = raw_fdatasync_rate(root.path());
    println!("\nBaseline: raw fdatasync rate (4 KiB write + fdatasync, same disk): {raw:.0}/s\n");

    let embedded = {
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
        runtime.block_on(measure(&server.url, customers, duration, None))
    };
    let authenticated = {
        let dir = root.path().join("serve-keys");
        let created = std::process::Command::new(env!("CARGO_BIN_EXE_annals"))
            .args([
                "keys", "create", "--name", "bench", "--role", "read", "--role", "write",
            ])
            .arg("--data-dir")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(created.status.success(), "{created:?}");
        let token = String::from_utf8(created.stdout).unwrap().trim().to_owned();
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
        runtime.block_on(measure(&server.url, customers, duration, Some(&token)))
    };
    let remote = {
        let dir = root.path().join("store");
        let store = Server::start(
            &[
                "store",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                dir.to_str().unwrap(),
            ],
            "store listening on",
        );
        let api = Server::start(
            &[
                "command-api",
                "--store",
                &store.url,
                "--listen",
                "127.0.0.1:0",
            ],
            "command API listening on",
        );
        let measured = runtime.block_on(measure(&api.url, customers, duration, None));
        drop(api);
        drop(store);
        measured
    };

    println!(
        "Commands over HTTP: {CLIENTS} concurrent clients, {customers} customers, fsync on every commit, \
         {seconds} s of reserve + release on random customers"
    );
    println!(
        "| deployment | registrations/s | commands/s | failed | p50 ms | p99 ms | p99.9 ms | commands/s ÷ raw fdatasync/s | share of all-in-one |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, m) in [
        ("all in one (`annals serve`)", &embedded),
        ("all in one with API keys", &authenticated),
        ("command API → `annals store` over loopback", &remote),
    ] {
        println!(
            "| {name} | {:.0} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {:.1}× | {:.0}% |",
            m.register.rate(),
            m.commands.rate(),
            m.register.failures + m.commands.failures,
            m.commands.percentile_ms(0.50),
            m.commands.percentile_ms(0.99),
            m.commands.percentile_ms(0.999),
            m.commands.rate() / raw,
            100.0 * m.commands.rate() / embedded.commands.rate(),
        );
    }
}
