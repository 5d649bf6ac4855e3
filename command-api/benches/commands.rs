//! The command-side benchmark: `cargo bench -p command-api --bench commands`.
//!
//! 1. HTTP end to end: the command API served on loopback over the embedded
//!    store (fsync on every commit), driven by 64 concurrent clients over
//!    10,000 customers; commands/s and latency percentiles per workload.
//! 2. Loading one customer whose stream holds N events, with snapshots every
//!    100 events and without.
//!
//! Printed beside baselines measured in the same run and directory: the
//! disk's raw fdatasync rates (4 KiB write + fdatasync in a loop, appending
//! to a file and overwriting a preallocated one).
//!
//! `ANNALS_BENCH_DIR` chooses where the data goes (default: next to the
//! target dir); `ANNALS_BENCH_SECONDS` the length of each HTTP workload
//! (default 10); `ANNALS_BENCH_ONLY=http` or `=load` runs one part.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark aborts on failure"
)]

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
use bench_harness::env::runs;
use bench_harness::latency::ms;
use bench_harness::{Baselines, Latencies, Load, Table, Tally, run_clients};
use command_api::handler::stream_id;
use command_api::{
    ApiConfig, CommandContext, CommandHandler, Commands, DomainEvent, HandlerConfig, serve,
};
use event_store::{EventStore, ExpectedVersion, NewEvent, Store, StoreOptions};
use rand::Rng;
use uuid::Uuid;

const CLIENTS: usize = 64;
const CUSTOMERS: usize = 10_000;

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

/// One HTTP request: its path, JSON body (none when empty) and
/// idempotency key.
struct Request {
    path: String,
    body: String,
    key: Option<String>,
}

impl Workload {
    /// The requests of one round of the workload: a registration, or a
    /// reservation on a random customer and its release (so that credit
    /// never runs out).
    fn requests(self, customers: &[Uuid]) -> Vec<Request> {
        let key =
            || (self == Workload::ReserveReleaseIdempotent).then(|| Uuid::new_v4().to_string());
        if self == Workload::Register {
            let body = serde_json::json!({
                "name": "Bench Customer",
                "email": "bench@example.com",
                "credit_limit": {"amount": 1_000_000, "currency": "EUR"},
            });
            return vec![Request {
                path: "/customers".to_owned(),
                body: body.to_string(),
                key: None,
            }];
        }
        let customer = customers[rand::rng().random_range(0..customers.len())];
        let order = Uuid::new_v4();
        let path = format!("/customers/{customer}/reservations");
        let body = serde_json::json!({
            "order_id": order.to_string(),
            "amount": {"amount": 1_000, "currency": "EUR"},
        });
        vec![
            Request {
                path: path.clone(),
                body: body.to_string(),
                key: key(),
            },
            Request {
                path: format!("{path}/{order}/release"),
                body: String::new(),
                key: key(),
            },
        ]
    }
}

/// Sends `request`: whether it succeeded, and the id of the customer a
/// registration created.
async fn send(client: &reqwest::Client, base: &str, request: Request) -> (bool, Option<Uuid>) {
    let mut builder = client.post(format!("{base}{}", request.path));
    if !request.body.is_empty() {
        builder = builder
            .header("content-type", "application/json")
            .body(request.body);
    }
    if let Some(key) = request.key {
        builder = builder.header("idempotency-key", key);
    }
    let Ok(response) = builder.send().await else {
        return (false, None);
    };
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let created = (status.as_u16() == 201)
        .then(|| serde_json::from_str::<serde_json::Value>(&text).ok())
        .flatten()
        .and_then(|v| Uuid::parse_str(v["id"].as_str()?).ok());
    (status.is_success(), created)
}

/// `CLIENTS` clients each sending one request at a time until `total`
/// requests were sent (registrations, whose customers end up in
/// `REGISTERED`) or `duration` elapsed.
async fn drive(
    base: &str,
    customers: &Arc<Vec<Uuid>>,
    workload: Workload,
    duration: Duration,
    total: usize,
) -> Load {
    http_edge::tls::install_default_provider();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .unwrap();
    let issued = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let more = move || match workload {
        Workload::Register => issued.fetch_add(1, Ordering::Relaxed) < total,
        _ => started.elapsed() < duration,
    };
    run_clients(CLIENTS, |_| {
        let (client, base, customers, more) = (
            client.clone(),
            base.to_owned(),
            customers.clone(),
            more.clone(),
        );
        async move {
            let mut tally = Tally::default();
            let mut registered = Vec::new();
            while more() {
                for request in workload.requests(&customers) {
                    let sent = Instant::now();
                    let (ok, created) = send(&client, &base, request).await;
                    tally.record(sent, ok);
                    registered.extend(created);
                }
            }
            REGISTERED.lock().unwrap().extend(registered);
            tally
        }
    })
    .await
}

/// The reserve + release workload issued in-process, to show what HTTP costs.
async fn drive_handler(
    handler: &CommandHandler<Customer>,
    customers: &Arc<Vec<Uuid>>,
    duration: Duration,
) -> Load {
    let started = Instant::now();
    run_clients(CLIENTS, |_| {
        let handler = handler.clone();
        let customers = customers.clone();
        async move {
            let mut tally = Tally::default();
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
                    let ok = handler
                        .execute(command, CommandContext::new())
                        .await
                        .is_ok();
                    tally.record(sent, ok);
                }
            }
            tally
        }
    })
    .await
}

static REGISTERED: std::sync::Mutex<Vec<Uuid>> = std::sync::Mutex::new(Vec::new());

fn add_run(table: &mut Table, name: &str, run: &Load, baselines: &Baselines) {
    let [p50, p99, p999, max] = run.latencies.summary_ms(2);
    let [growing, overwrite] = baselines.times(run.rate(), 1);
    table.row([
        name.to_owned(),
        run.requests().to_string(),
        run.failures.to_string(),
        format!("{:.0}", run.rate()),
        p50,
        p99,
        p999,
        max,
        growing,
        overwrite,
    ]);
}

async fn http_runs(dir: &Path, baselines: &Baselines, duration: Duration) {
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
    let mut table = Table::new()
        .left("workload")
        .right("requests")
        .right("failed")
        .right("commands/s")
        .right("p50 ms")
        .right("p99 ms")
        .right("p99.9 ms")
        .right("max ms")
        .right("commands/s ÷ raw fdatasync/s")
        .right("commands/s ÷ overwrite fdatasync/s");
    let none = Arc::new(Vec::new());
    let run = drive(&base, &none, Workload::Register, Duration::MAX, CUSTOMERS).await;
    add_run(
        &mut table,
        "register customer (`POST /customers`)",
        &run,
        baselines,
    );
    let customers = Arc::new(std::mem::take(&mut *REGISTERED.lock().unwrap()));
    assert_eq!(customers.len(), CUSTOMERS, "every registration succeeded");

    let run = drive(&base, &customers, Workload::ReserveRelease, duration, 0).await;
    add_run(
        &mut table,
        "reserve + release credit, random customer",
        &run,
        baselines,
    );
    let run = drive(
        &base,
        &customers,
        Workload::ReserveReleaseIdempotent,
        duration,
        0,
    )
    .await;
    add_run(
        &mut table,
        "same, each with an `Idempotency-Key`",
        &run,
        baselines,
    );

    let run = drive_handler(&handlers, &customers, duration).await;
    add_run(
        &mut table,
        "same as row 2 without HTTP (`CommandHandler::execute`)",
        &run,
        baselines,
    );
    table.print();

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
    let mut table = Table::new()
        .right("events in the stream")
        .left("snapshots")
        .right("snapshot at")
        .right("events replayed")
        .right("p50 ms")
        .right("p99 ms");
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
            let times = Latencies::new(times);
            let loaded = last.unwrap();
            assert_eq!(loaded.version, length);
            table.row([
                length.to_string(),
                label.to_owned(),
                loaded
                    .snapshot_version
                    .map_or("–".to_owned(), |v| v.to_string()),
                loaded.events_applied.to_string(),
                ms(times.percentile(0.50), 2),
                ms(times.percentile(0.99), 2),
            ]);
        }
    }
    table.print();
    store.close().await.unwrap();
}

fn main() {
    let runtime = bench_harness::env::runtime().unwrap();
    runtime.block_on(async {
        let root = bench_harness::env::data_root().unwrap();
        let duration = bench_harness::env::seconds_or(10);

        let baselines = Baselines::measure(root.path()).unwrap();
        baselines.print();
        let only = bench_harness::env::only();
        if runs(only.as_deref(), "http") {
            http_runs(&root.path().join("http"), &baselines, duration).await;
        }
        if runs(only.as_deref(), "load") {
            load_runs(&root.path().join("load")).await;
        }
    });
}
