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
//! 3. `annals serve` with API keys and TLS (a certificate of a CA generated
//!    here, which the clients trust): what a deployment on a network runs;
//! 4. `annals command-api` talking to `annals store` over loopback;
//! 5. `annals serve --no-metrics` logging warnings only: the all-in-one
//!    without metrics and spans, beside it with both (every HTTP request,
//!    append, group commit and projector batch recorded, every request and
//!    saga event in a span at the default `info` level), for their cost
//!    (target: on at least 97% of off).
//!
//! And appends alone: `CLIENTS` `RemoteStore` clients appending one event
//! each to their own stream through `annals store`, with metrics and spans
//! and without (same target).
//!
//! Printed with the disk's raw fdatasync rates measured in the same run and
//! directory (appending to a file and overwriting a preallocated one), and
//! each deployment's throughput as a share of the
//! all-in-one's (the target for keys and TLS: 85% or more). The load generator runs in this process, on the same two
//! cores as the servers.
//!
//! Each comparison (keys and TLS, metrics off, store appends with metrics
//! off) runs in `ANNALS_BENCH_ROUNDS` rounds (default 3) of alternating
//! order; the table shows the round whose share is the median.
//!
//! `ANNALS_BENCH_ONLY=metrics` runs the metrics comparisons alone.
//! `ANNALS_BENCH_DIR` chooses where the data goes (default: next to the
//! target dir); `ANNALS_BENCH_SECONDS` the length of each timed workload
//! (default 10); `ANNALS_BENCH_CUSTOMERS` the number of customers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark aborts on failure"
)]

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bench_harness::ratio::{median_index, percent, ratio};
use bench_harness::{Baselines, Load, Table, Tally, run_clients};
use serde_json::{Value, json};

mod common;

use common::{Server, cpu_seconds, eur, wait_ready};

const CLIENTS: usize = 64;

/// Registers `count` customers with `CLIENTS` clients; returns their ids.
async fn register(http: &reqwest::Client, url: &str, count: usize) -> (Load, Vec<String>) {
    let next = Arc::new(AtomicUsize::new(0));
    let ids = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let run = run_clients(CLIENTS, |_| {
        let http = http.clone();
        let url = format!("{url}/customers");
        let (next, ids) = (next.clone(), ids.clone());
        async move {
            let mut tally = Tally::default();
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let sent = Instant::now();
                let body = json!({"name": "Bench Customer", "email": "bench@example.org",
                                  "credit_limit": eur(1_000_000)});
                match http.post(&url).json(&body).send().await {
                    Ok(r) if r.status() == 201 => {
                        let v: Value = r.json().await.unwrap();
                        ids.lock()
                            .unwrap()
                            .push(v["id"].as_str().unwrap().to_owned());
                        tally.latencies.push(sent.elapsed());
                    }
                    _ => tally.failures += 1,
                }
            }
            tally
        }
    })
    .await;
    let ids = std::mem::take(&mut *ids.lock().unwrap());
    (run, ids)
}

/// Reserve then release credit on random customers for `duration`.
async fn reserve_release(
    http: &reqwest::Client,
    url: &str,
    customers: &Arc<Vec<String>>,
    duration: Duration,
) -> Load {
    let started = Instant::now();
    run_clients(CLIENTS, |client| {
        let http = http.clone();
        let url = url.to_owned();
        let customers = customers.clone();
        async move {
            // A cheap deterministic spread of customers per client.
            let mut pick = client.wrapping_mul(2_654_435_761) % customers.len();
            let mut tally = Tally::default();
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
                    Ok(r) if r.status() == 200 => tally.latencies.push(sent.elapsed()),
                    _ => {
                        tally.failures += 1;
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
                    Ok(r) if r.status() == 200 => tally.latencies.push(sent.elapsed()),
                    _ => tally.failures += 1,
                }
            }
            tally
        }
    })
    .await
}

struct Measured {
    register: Load,
    commands: Load,
    /// CPU time per command in the timed part, in microseconds: the
    /// servers' processes, and this one's (the load generator).
    server_cpu_us: f64,
    client_cpu_us: f64,
}

/// `key`: the API key's token every request presents, if any; `ca`: the
/// CA an `https://` server's certificate is checked against.
async fn measure(
    url: &str,
    servers: &[u32],
    customers: usize,
    duration: Duration,
    key: Option<&str>,
    ca: Option<&Path>,
) -> Measured {
    let mut headers = reqwest::header::HeaderMap::new();
    // The release command has no body: the marker says a program, not a
    // cross-site form, sends it.
    headers.insert(
        http_edge::cross_site::REQUESTED_WITH,
        reqwest::header::HeaderValue::from_static("annals-bench"),
    );
    if let Some(key) = key {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {key}").parse().unwrap(),
        );
    }
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(http_edge::tls::client_config(ca).unwrap())
        .default_headers(headers)
        .pool_max_idle_per_host(CLIENTS)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    wait_ready(&http, url).await;
    let (register, ids) = register(&http, url, customers).await;
    assert_eq!(ids.len(), customers, "every registration succeeded");
    let ids = Arc::new(ids);
    let cpu = || {
        let servers: f64 = servers.iter().map(|pid| cpu_seconds(Some(*pid))).sum();
        (servers, cpu_seconds(None))
    };
    let (server_before, client_before) = cpu();
    let commands = reserve_release(&http, url, &ids, duration).await;
    let (server_after, client_after) = cpu();
    let per_command = |seconds: f64| 1e6 * seconds / commands.requests().max(1) as f64;
    Measured {
        server_cpu_us: per_command(server_after - server_before),
        client_cpu_us: per_command(client_after - client_before),
        register,
        commands,
    }
}

/// Removes a finished deployment's data and lets the disk write back what
/// it left dirty, so that the next deployment does not pay for it.
fn settle(dir: &Path) {
    std::fs::remove_dir_all(dir).unwrap();
    bench_harness::fsync::settle();
}

/// Creates a key with `read` and `write` in the keys file of `data_dir`;
/// its token.
fn create_key(data_dir: &Path) -> String {
    let created = std::process::Command::new(env!("CARGO_BIN_EXE_annals"))
        .args([
            "keys", "create", "--name", "bench", "--role", "read", "--role", "write",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    String::from_utf8(created.stdout).unwrap().trim().to_owned()
}

fn main() {
    let root = bench_harness::env::data_root().unwrap();
    let duration = bench_harness::env::seconds_or(10);
    let customers: usize = bench_harness::env::env_or("ANNALS_BENCH_CUSTOMERS", 10_000);
    let rounds: usize = bench_harness::env::env_or("ANNALS_BENCH_ROUNDS", 3).max(1);
    let runtime = bench_harness::env::runtime().unwrap();

    let baselines = Baselines::measure(root.path()).unwrap();
    baselines.print();

    let ca = annals::testkit::TestCa::new();
    let run = |deployment: Deployment, name: &str| {
        let dir = root.path().join(name);
        let measured = runtime.block_on(deployment.measure(&dir, &ca, customers, duration));
        settle(&dir);
        measured
    };
    if std::env::var("ANNALS_BENCH_ONLY").as_deref() == Ok("metrics") {
        metrics_only(rounds, &run, &baselines, |d, name| {
            let dir = root.path().join(name);
            let measured = runtime.block_on(d.measure_appends(&dir, duration));
            settle(&dir);
            measured
        });
        return;
    }
    let secured = paired_rounds(rounds, [Deployment::Serve, Deployment::ServeKeysTls], &run);
    let metrics = paired_rounds(
        rounds,
        [Deployment::ServeNoMetrics, Deployment::Serve],
        &run,
    );
    let authenticated = run(Deployment::ServeKeys, "keys");
    let remote = run(Deployment::Remote, "remote");
    let appends = paired_rounds(
        rounds,
        [Deployment::StoreNoMetrics, Deployment::Store],
        &|d, name| {
            let dir = root.path().join(name);
            let measured = runtime.block_on(d.measure_appends(&dir, duration));
            settle(&dir);
            measured
        },
    );

    println!(
        "Commands over HTTP: {CLIENTS} concurrent clients, {customers} customers, fsync on every commit, \
         {} s of reserve + release on random customers",
        duration.as_secs()
    );
    let deployments = [
        ("all in one (`annals serve`)", &secured.first),
        ("all in one with API keys", &authenticated),
        ("all in one with API keys and TLS", &secured.second),
        ("command API → `annals store` over loopback", &remote),
        ("all in one, `--no-metrics`, no spans", &metrics.first),
    ];
    print_table(&deployments, &baselines);
    // A refused or failed command is rot (a rule the workload no longer
    // follows), not a figure: the run fails, in CI's quick mode too.
    for (name, m) in deployments {
        assert_eq!(
            m.register.failures + m.commands.failures,
            0,
            "{name}: commands failed"
        );
    }
    secured.print_shares("API keys and TLS ÷ plain, commands/s", 85);
    metrics.print_shares("metrics and spans on ÷ off, commands/s", 97);
    println!(
        "\nAppends through `annals store`: {CLIENTS} RemoteStore clients, one event per append, \
         each its own stream, {} s",
        duration.as_secs()
    );
    print_appends(&appends, &baselines);
    for m in [&appends.first, &appends.second] {
        assert_eq!(m.load.failures, 0, "appends failed");
    }
    appends.print_shares("metrics and spans on ÷ off, appends/s", 97);
}

/// `ANNALS_BENCH_ONLY=metrics`: the two comparisons of metrics and spans
/// on and off alone.
fn metrics_only(
    rounds: usize,
    run: &impl Fn(Deployment, &str) -> Measured,
    baselines: &Baselines,
    append: impl Fn(Deployment, &str) -> Appended,
) {
    let metrics = paired_rounds(rounds, [Deployment::ServeNoMetrics, Deployment::Serve], run);
    print_table(
        &[
            ("all in one, `--no-metrics`, no spans", &metrics.first),
            ("all in one (`annals serve`)", &metrics.second),
        ],
        baselines,
    );
    metrics.print_shares("metrics and spans on ÷ off, commands/s", 97);
    let appends = paired_rounds(
        rounds,
        [Deployment::StoreNoMetrics, Deployment::Store],
        &append,
    );
    print_appends(&appends, baselines);
    appends.print_shares("metrics and spans on ÷ off, appends/s", 97);
}

/// Two deployments measured over rounds: `first` is what `second` is
/// compared with.
struct Rounds<T> {
    /// The median round's measurements.
    first: T,
    second: T,
    /// Each round's share: second ÷ first.
    shares: Vec<f64>,
    median: usize,
}

/// What a comparison of rounds compares: operations per second.
trait Rated {
    fn rate(&self) -> f64;
}

impl Rated for Measured {
    fn rate(&self) -> f64 {
        self.commands.rate()
    }
}

impl<T> Rounds<T> {
    /// One line: each round's share and the median, beside the target.
    fn print_shares(&self, what: &str, target_percent: u32) {
        println!(
            "\n{what}, per round ({}, order alternating): {}; median {} (target: {target_percent}% or more)",
            self.shares.len(),
            self.shares
                .iter()
                .map(|share| percent(*share, 0))
                .collect::<Vec<_>>()
                .join(", "),
            percent(self.shares[self.median], 0),
        );
    }
}

/// `pair` measured in `rounds` rounds whose order alternates, so that a
/// drift of the disk or the machine during the run weighs on both alike;
/// the share is the median of the rounds'.
fn paired_rounds<T: Rated>(
    rounds: usize,
    pair: [Deployment; 2],
    run: &impl Fn(Deployment, &str) -> T,
) -> Rounds<T> {
    let mut firsts = Vec::new();
    let mut seconds = Vec::new();
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [(0, pair[0]), (1, pair[1])]
        } else {
            [(1, pair[1]), (0, pair[0])]
        };
        for (which, deployment) in order {
            let measured = run(deployment, &format!("{deployment:?}-{round}"));
            if which == 0 {
                firsts.push(measured);
            } else {
                seconds.push(measured);
            }
        }
    }
    let shares: Vec<f64> = firsts
        .iter()
        .zip(&seconds)
        .map(|(first, second)| ratio(second.rate(), first.rate()))
        .collect();
    let median = median_index(&shares).unwrap();
    Rounds {
        first: firsts.swap_remove(median),
        second: seconds.swap_remove(median),
        shares,
        median,
    }
}

/// A row per deployment; the first is the all-in-one the others' shares
/// are of.
fn print_table(deployments: &[(&str, &Measured)], baselines: &Baselines) {
    let mut table = Table::new()
        .left("deployment")
        .right("registrations/s")
        .right("commands/s")
        .right("failed")
        .right("p50 ms")
        .right("p99 ms")
        .right("p99.9 ms")
        .right("CPU µs/command server + client")
        .right("commands/s ÷ raw fdatasync/s")
        .right("commands/s ÷ overwrite fdatasync/s")
        .right("share of all-in-one");
    let all_in_one = deployments[0].1.commands.rate();
    for (name, m) in deployments {
        let [p50, p99, p999, _] = m.commands.latencies.summary_ms(2);
        let [growing, overwrite] = baselines.times(m.commands.rate(), 1);
        table.row([
            (*name).to_owned(),
            format!("{:.0}", m.register.rate()),
            format!("{:.0}", m.commands.rate()),
            (m.register.failures + m.commands.failures).to_string(),
            p50,
            p99,
            p999,
            format!("{:.0} + {:.0}", m.server_cpu_us, m.client_cpu_us),
            growing,
            overwrite,
            percent(ratio(m.commands.rate(), all_in_one), 0),
        ]);
    }
    table.print();
}

/// What is measured, each over a fresh data directory.
#[derive(Debug, Clone, Copy)]
enum Deployment {
    /// `annals serve`, plain HTTP, no keys.
    Serve,
    /// `annals serve`, every command with a bearer token.
    ServeKeys,
    /// `annals serve` with keys and TLS (the clients trust the CA).
    ServeKeysTls,
    /// `annals command-api` in front of `annals store` over loopback.
    Remote,
    /// `annals serve --no-metrics`.
    ServeNoMetrics,
    /// `annals store`, for appends alone.
    Store,
    /// `annals store --no-metrics`, for appends alone.
    StoreNoMetrics,
}

impl Deployment {
    async fn measure(
        self,
        dir: &Path,
        ca: &annals::testkit::TestCa,
        customers: usize,
        duration: Duration,
    ) -> Measured {
        let data = dir.to_str().unwrap();
        // The key's own rate limit would cap what is measured.
        let serve = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data,
            "--rate-limit-per-second",
            "0",
        ];
        match self {
            Deployment::Serve | Deployment::ServeNoMetrics => {
                let mut args = serve.to_vec();
                // Off: no metrics, and no spans (only warnings logged);
                // on: metrics, and every request in a span (`info`).
                let level = if matches!(self, Deployment::ServeNoMetrics) {
                    args.push("--no-metrics");
                    "warn"
                } else {
                    "info"
                };
                let server = Server::start_logging(&args, "listening on", level);
                measure(
                    &server.url,
                    &[server.pid()],
                    customers,
                    duration,
                    None,
                    None,
                )
                .await
            }
            Deployment::ServeKeys => {
                let token = create_key(dir);
                let server = Server::start(&serve, "listening on");
                measure(
                    &server.url,
                    &[server.pid()],
                    customers,
                    duration,
                    Some(&token),
                    None,
                )
                .await
            }
            Deployment::ServeKeysTls => {
                let token = create_key(dir);
                let tls = ca.serve_flags();
                let mut args = serve.to_vec();
                args.extend(tls.iter().map(String::as_str));
                let server = Server::start(&args, "listening on");
                assert!(server.url.starts_with("https://"), "{}", server.url);
                let ca_file = ca.ca_file();
                measure(
                    &server.url,
                    &[server.pid()],
                    customers,
                    duration,
                    Some(&token),
                    Some(&ca_file),
                )
                .await
            }
            Deployment::Remote => {
                let store = Server::start(
                    &["store", "--listen", "127.0.0.1:0", "--data-dir", data],
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
                let measured = measure(
                    &api.url,
                    &[store.pid(), api.pid()],
                    customers,
                    duration,
                    None,
                    None,
                )
                .await;
                drop(api);
                measured
            }
            Deployment::Store | Deployment::StoreNoMetrics => {
                unreachable!("{self:?} measures appends alone")
            }
        }
    }

    /// Appends alone through `annals store` (with or without metrics):
    /// `CLIENTS` clients, each appending one 200-byte event at a time to
    /// its own stream with the expected version it knows.
    async fn measure_appends(self, dir: &Path, duration: Duration) -> Appended {
        let data = dir.to_str().unwrap();
        let mut args = vec!["store", "--listen", "127.0.0.1:0", "--data-dir", data];
        let level = if matches!(self, Deployment::StoreNoMetrics) {
            args.push("--no-metrics");
            "warn"
        } else {
            "info"
        };
        let store = Server::start_logging(&args, "store listening on", level);
        let remote = event_store_http::RemoteStore::connect(
            &store.url,
            event_store_http::RemoteOptions::default(),
        )
        .await
        .unwrap();
        let remote = Arc::new(remote);
        let cpu_before = cpu_seconds(Some(store.pid()));
        let started = Instant::now();
        let load = run_clients(CLIENTS, |client| {
            let remote = remote.clone();
            async move {
                use event_store::{EventStore, ExpectedVersion, NewEvent, StreamId};
                let stream = StreamId::new(format!("bench-{client}")).unwrap();
                let mut tally = Tally::default();
                let mut expected = ExpectedVersion::NoStream;
                let mut n = 0;
                while started.elapsed() < duration {
                    n += 1;
                    let event = NewEvent::new("Appended", bench_harness::payload::json_200(n));
                    let sent = Instant::now();
                    match remote.append(&stream, expected, vec![event]).await {
                        Ok(result) => {
                            tally.latencies.push(sent.elapsed());
                            expected = ExpectedVersion::Exact(result.last_version);
                        }
                        Err(_) => tally.failures += 1,
                    }
                }
                tally
            }
        })
        .await;
        let server_cpu_us =
            1e6 * (cpu_seconds(Some(store.pid())) - cpu_before) / load.requests().max(1) as f64;
        Appended {
            load,
            server_cpu_us,
        }
    }
}

/// Appends alone, as measured through `annals store`.
struct Appended {
    load: Load,
    /// The store process's CPU time per append, in microseconds.
    server_cpu_us: f64,
}

impl Rated for Appended {
    fn rate(&self) -> f64 {
        self.load.rate()
    }
}

/// The appends rows: with metrics off, then on.
fn print_appends(rounds: &Rounds<Appended>, baselines: &Baselines) {
    let mut table = Table::new()
        .left("`annals store`")
        .right("appends/s")
        .right("p50 ms")
        .right("p99 ms")
        .right("CPU µs/append (store)")
        .right("appends/s ÷ raw fdatasync/s")
        .right("share of off");
    let off = rounds.first.rate();
    for (name, m) in [
        ("`--no-metrics`, no spans", &rounds.first),
        ("metrics and spans", &rounds.second),
    ] {
        let [p50, p99, _, _] = m.load.latencies.summary_ms(2);
        let [growing, _] = baselines.times(m.rate(), 1);
        table.row([
            name.to_owned(),
            format!("{:.0}", m.rate()),
            p50,
            p99,
            format!("{:.0}", m.server_cpu_us),
            growing,
            percent(ratio(m.rate(), off), 0),
        ]);
    }
    table.print();
}
