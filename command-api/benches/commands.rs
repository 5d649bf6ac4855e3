//! The command-side benchmark: `cargo bench -p command-api --bench commands`.
//!
//! 1. HTTP end to end: the command API served on loopback over the embedded
//!    store (fsync on every commit), driven by 64 concurrent clients over
//!    10,000 customers; commands/s and latency percentiles per workload.
//! 2. Loading one customer whose stream holds N events, with snapshots every
//!    100 events and without.
//!
//! Printed beside a baseline measured in the same run and directory: the
//! disk's raw fdatasync rate (4 KiB write + fdatasync in a loop).
//!
//! `ANNALS_BENCH_DIR` chooses where the data goes (default: next to the
//! target dir); `ANNALS_BENCH_SECONDS` the length of each HTTP workload
//! (default 10); `ANNALS_BENCH_ONLY=http` or `=load` runs one part.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark aborts on failure"
)]

use std::io::Write;
use std::num::NonZeroU64;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use annals_credit::domain::customer::{
    CreditReleased, CreditReserved, Customer, CustomerCommand, CustomerEvent, CustomerName,
    CustomerRegistered, Email, PersonalData,
};
use annals_credit::domain::money::{Currency, Money};
use command_api::handler::stream_id;
use command_api::{
    ApiConfig, CommandContext, CommandHandler, Commands, DomainEvent, HandlerConfig, serve,
};
use event_store::{EventStore, ExpectedVersion, NewEvent, Store, StoreOptions};
use rand::Rng;
use uuid::Uuid;

const CLIENTS: usize = 64;
const CUSTOMERS: usize = 10_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn raw_fdatasync_rate(dir: &Path) -> f64 {
    let path = dir.join("fdatasync-probe");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = [7u8; 4096];
    let started = Instant::now();
    let mut n = 0u32;
    while started.elapsed() < Duration::from_secs(2) {
        file.write_all(&block).unwrap();
        file.sync_data().unwrap();
        n += 1;
    }
    let rate = f64::from(n) / started.elapsed().as_secs_f64();
    std::fs::remove_file(&path).unwrap();
    rate
}

fn eur(amount: i64) -> Money {
    Money::new(amount, Currency::parse("EUR").unwrap()).unwrap()
}

/// What one client request looks like.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    Register,
    ReserveRelease,
    ReserveReleaseIdempotent,
}

struct Run {
    commands: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    failures: usize,
}

/// `CLIENTS` clients each sending one request at a time until `total`
/// requests were sent (registrations) or `duration` elapsed.
async fn drive(
    base: &str,
    customers: &Arc<Vec<Uuid>>,
    workload: Workload,
    duration: Duration,
    total: usize,
) -> Run {
    http_edge::tls::install_default_provider();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .unwrap();
    let issued = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let client = client.clone();
            let base = base.to_owned();
            let customers = customers.clone();
            let issued = issued.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failures = 0;
                let mut registered = Vec::new();
                loop {
                    if workload == Workload::Register {
                        if issued.fetch_add(1, Ordering::Relaxed) >= total {
                            break;
                        }
                    } else if started.elapsed() >= duration {
                        break;
                    }
                    let (path, body, key) = match workload {
                        Workload::Register => (
                            "/customers".to_owned(),
                            serde_json::json!({
                                "name": "Bench Customer",
                                "email": "bench@example.com",
                                "credit_limit": {"amount": 1_000_000, "currency": "EUR"},
                            }),
                            None,
                        ),
                        Workload::ReserveRelease | Workload::ReserveReleaseIdempotent => {
                            let customer = customers[rand::rng().random_range(0..customers.len())];
                            let order = Uuid::new_v4();
                            (
                                format!("/customers/{customer}/reservations"),
                                serde_json::json!({
                                    "order_id": order.to_string(),
                                    "amount": {"amount": 1_000, "currency": "EUR"},
                                }),
                                (workload == Workload::ReserveReleaseIdempotent)
                                    .then(|| Uuid::new_v4().to_string()),
                            )
                        }
                    };
                    let mut requests = vec![(path.clone(), body.to_string(), key)];
                    if workload != Workload::Register {
                        // Release what was just reserved, so credit never runs out.
                        let order = body["order_id"].as_str().unwrap().to_owned();
                        requests.push((
                            format!("{path}/{order}/release"),
                            String::new(),
                            (workload == Workload::ReserveReleaseIdempotent)
                                .then(|| Uuid::new_v4().to_string()),
                        ));
                    }
                    for (path, body, key) in requests {
                        let mut request = client.post(format!("{base}{path}"));
                        if !body.is_empty() {
                            request = request
                                .header("content-type", "application/json")
                                .body(body);
                        }
                        if let Some(key) = key {
                            request = request.header("idempotency-key", key);
                        }
                        let sent = Instant::now();
                        let response = request.send().await;
                        let ok = match response {
                            Ok(response) => {
                                let status = response.status();
                                let text = response.text().await.unwrap_or_default();
                                if workload == Workload::Register && status.as_u16() == 201 {
                                    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                                    registered
                                        .push(Uuid::parse_str(v["id"].as_str().unwrap()).unwrap());
                                }
                                status.is_success()
                            }
                            Err(_) => false,
                        };
                        latencies.push(sent.elapsed());
                        if !ok {
                            failures += 1;
                        }
                    }
                }
                (latencies, failures, registered)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failures = 0;
    let mut registered = Vec::new();
    for task in tasks {
        let (l, f, r) = task.await.unwrap();
        latencies.extend(l);
        failures += f;
        registered.extend(r);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    if workload == Workload::Register {
        REGISTERED.lock().unwrap().extend(registered);
    }
    Run {
        commands: latencies.len(),
        elapsed,
        latencies,
        failures,
    }
}

/// The reserve + release workload issued in-process, to show what HTTP costs.
async fn drive_handler(
    handler: &CommandHandler<Customer>,
    customers: &Arc<Vec<Uuid>>,
    duration: Duration,
) -> Run {
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let handler = handler.clone();
            let customers = customers.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failures = 0;
                while started.elapsed() < duration {
                    let customer_id = customers[rand::rng().random_range(0..customers.len())];
                    let order_id = Uuid::new_v4();
                    let commands = [
                        CustomerCommand::ReserveCredit {
                            customer_id,
                            order_id,
                            amount: eur(1_000),
                        },
                        CustomerCommand::ReleaseCredit {
                            customer_id,
                            order_id,
                        },
                    ];
                    for command in commands {
                        let sent = Instant::now();
                        if handler
                            .execute(command, CommandContext::new())
                            .await
                            .is_err()
                        {
                            failures += 1;
                        }
                        latencies.push(sent.elapsed());
                    }
                }
                (latencies, failures)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failures = 0;
    for task in tasks {
        let (l, f) = task.await.unwrap();
        latencies.extend(l);
        failures += f;
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Run {
        commands: latencies.len(),
        elapsed,
        latencies,
        failures,
    }
}

static REGISTERED: std::sync::Mutex<Vec<Uuid>> = std::sync::Mutex::new(Vec::new());

fn print_run(name: &str, run: &Run, raw: f64) {
    let rate = run.commands as f64 / run.elapsed.as_secs_f64();
    println!(
        "| {name} | {} | {} | {:.0} | {} | {} | {} | {} | {:.1}× |",
        run.commands,
        run.failures,
        rate,
        ms(percentile(&run.latencies, 0.50)),
        ms(percentile(&run.latencies, 0.99)),
        ms(percentile(&run.latencies, 0.999)),
        ms(run.latencies.last().copied().unwrap_or_default()),
        rate / raw
    );
}

async fn http_runs(dir: &Path, raw: f64, seconds: u64) {
    let store = Store::open(dir, StoreOptions::default()).await.unwrap();
    let commands = Commands::new(Arc::new(store.clone()), HandlerConfig::default());
    let handlers = commands.handler::<annals_credit::domain::customer::Customer>();
    let router = annals_credit::routes::api().router(&commands, ApiConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, router, async move {
        let _ = stopped.await;
    }));

    println!(
        "HTTP commands end to end: {CLIENTS} concurrent clients (keep-alive), {CUSTOMERS} customers, \
         fsync on every commit, client and server in one process on this machine"
    );
    println!(
        "| workload | requests | failed | commands/s | p50 ms | p99 ms | p99.9 ms | max ms | commands/s ÷ raw fdatasync/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let none = Arc::new(Vec::new());
    let run = drive(&base, &none, Workload::Register, Duration::MAX, CUSTOMERS).await;
    print_run("register customer (`POST /customers`)", &run, raw);
    let customers = Arc::new(std::mem::take(&mut *REGISTERED.lock().unwrap()));
    assert_eq!(customers.len(), CUSTOMERS, "every registration succeeded");

    let duration = Duration::from_secs(seconds);
    let run = drive(&base, &customers, Workload::ReserveRelease, duration, 0).await;
    print_run("reserve + release credit, random customer", &run, raw);
    let run = drive(
        &base,
        &customers,
        Workload::ReserveReleaseIdempotent,
        duration,
        0,
    )
    .await;
    print_run("same, each with an `Idempotency-Key`", &run, raw);

    let run = drive_handler(&handlers, &customers, duration).await;
    print_run(
        "same as row 2 without HTTP (`CommandHandler::execute`)",
        &run,
        raw,
    );

    let _ = stop.send(());
    server.await.unwrap().unwrap();
    let stats = store.stats().await.unwrap();
    println!(
        "\n({} events, {} streams, {} snapshots in the store afterwards)\n",
        stats.events, stats.streams, stats.snapshots
    );
    store.close().await.unwrap();
}

/// A customer stream of `length` events: registration, then alternating
/// reservations and releases appended in bulk, then the last 100 through the
/// handler (so that its snapshot policy applies as it would in production).
async fn build_customer(store: &Store, handler: &CommandHandler<Customer>, length: u64) -> Uuid {
    let customer = Uuid::new_v4();
    let stream = stream_id::<Customer>(customer).unwrap();
    let registered = CustomerEvent::Registered(CustomerRegistered {
        customer_id: customer,
        personal: PersonalData {
            name: CustomerName::parse("Bench").unwrap(),
            email: Email::parse("bench@example.com").unwrap(),
        },
        credit_limit: eur(1_000_000),
    });
    let encode = |e: &CustomerEvent| {
        NewEvent::new(e.event_type(), e.encode().unwrap()).with_schema_version(e.schema_version())
    };
    let mut batch = vec![encode(&registered)];
    let bulk = length - 100;
    let mut version = 0;
    let mut order = Uuid::new_v4();
    for v in 2..=bulk {
        let event = if v % 2 == 0 {
            order = Uuid::new_v4();
            CustomerEvent::CreditReserved(CreditReserved {
                customer_id: customer,
                order_id: order,
                amount: eur(10),
            })
        } else {
            CustomerEvent::CreditReleased(CreditReleased {
                customer_id: customer,
                order_id: order,
                amount: eur(10),
            })
        };
        batch.push(encode(&event));
        if batch.len() == 1_000 || v == bulk {
            let n = batch.len() as u64;
            store
                .append(
                    &stream,
                    ExpectedVersion::Exact(version),
                    std::mem::take(&mut batch),
                )
                .await
                .unwrap();
            version += n;
        }
    }
    // Close any reservation left open, then alternate through the handler.
    let mut open = version % 2 == 0;
    while version < length {
        let command = if open {
            CustomerCommand::ReleaseCredit {
                customer_id: customer,
                order_id: order,
            }
        } else {
            order = Uuid::new_v4();
            CustomerCommand::ReserveCredit {
                customer_id: customer,
                order_id: order,
                amount: eur(10),
            }
        };
        version = handler
            .execute(command, CommandContext::new())
            .await
            .unwrap()
            .version;
        open = !open;
    }
    customer
}

async fn load_runs(dir: &Path) {
    let store = Store::open(dir, StoreOptions::default()).await.unwrap();
    let config = |every| HandlerConfig {
        snapshot_every_events: every,
        ..HandlerConfig::default()
    };
    let with =
        CommandHandler::<Customer>::new(Arc::new(store.clone()), config(NonZeroU64::new(100)));
    let without = CommandHandler::<Customer>::new(Arc::new(store.clone()), config(None));

    println!("Loading one customer (latest snapshot + later events, decoded and applied)");
    println!(
        "| events in the stream | snapshots | snapshot at | events replayed | p50 ms | p99 ms |"
    );
    println!("|---:|---|---:|---:|---:|---:|");
    for length in [1_050u64, 10_050, 100_050] {
        for (label, handler) in [("every 100 events", &with), ("off", &without)] {
            let customer = build_customer(&store, handler, length).await;
            let rounds = if length > 50_000 && handler.config().snapshot_every_events.is_none() {
                20
            } else {
                200
            };
            let mut times = Vec::with_capacity(rounds);
            let mut last = None;
            for _ in 0..rounds {
                let started = Instant::now();
                let loaded = handler.load(customer).await.unwrap();
                times.push(started.elapsed());
                last = Some(loaded);
            }
            times.sort_unstable();
            let loaded = last.unwrap();
            assert_eq!(loaded.version, length);
            println!(
                "| {length} | {label} | {} | {} | {} | {} |",
                loaded
                    .snapshot_version
                    .map_or("–".to_owned(), |v| v.to_string()),
                loaded.events_applied,
                ms(percentile(&times, 0.50)),
                ms(percentile(&times, 0.99)),
            );
        }
    }
    store.close().await.unwrap();
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let base = std::env::var("ANNALS_BENCH_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| {
                std::env::current_dir()
                    .unwrap()
                    .join("../target/bench-data")
            });
        std::fs::create_dir_all(&base).unwrap();
        let root = tempfile::tempdir_in(&base).unwrap();
        let seconds = std::env::var("ANNALS_BENCH_SECONDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10);

        let raw = raw_fdatasync_rate(root.path());
        println!(
            "\nBaseline: raw fdatasync rate (4 KiB write + fdatasync, same disk): {raw:.0}/s\n"
        );
        let only = std::env::var("ANNALS_BENCH_ONLY").unwrap_or_default();
        if only != "load" {
            http_runs(&root.path().join("http"), raw, seconds).await;
        }
        if only != "http" {
            load_runs(&root.path().join("load")).await;
        }
    });
}
