//! What field encryption (crypto-shredding) costs the command side:
//! `cargo bench -p command-api --bench encryption`.
//!
//! The same commands run through `CommandHandler::execute` (no HTTP, so
//! the difference is not diluted) over the embedded store (fsync on every
//! commit), once over the plain `Store` and once over `Shredding<Store>`
//! with the customer domain's policy, in the same process, on the same
//! disk, alternating in rounds so that a change in the machine's load hits
//! both:
//!
//! 1. register customers (64 concurrent clients): with encryption each new
//!    customer's key is also appended to the key log and synced (one
//!    fsync shared by the keys created concurrently) before its event;
//! 2. reserve + release credit on random customers, the state cache on
//!    (the default: loads are rare, snapshots every 100 events are sealed);
//! 3. the same with the state cache off: every command loads the customer
//!    and decrypts its registration (or opens its sealed snapshot).
//!
//! Then the CPU cost alone: sealing registrations, and opening them on a
//! first read (decrypted: cold) and a second one (from the decrypted-event
//! cache: warm).
//!
//! `ANNALS_BENCH_DIR` chooses where the data goes (default: next to the
//! target dir); `ANNALS_BENCH_SECONDS` the length of each timed workload
//! (default 4); `ANNALS_BENCH_ROUNDS` the rounds (default 2);
//! `ANNALS_BENCH_CUSTOMERS` the customers registered per run (default
//! 2,000); `ANNALS_BENCH_ONLY=plain` (or `encrypted`) runs one variant
//! alone, for a profiler. The default run takes about a minute.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark aborts on failure"
)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use annals_credit::domain::customer::{
    Customer, CustomerCommand, CustomerName, Email, PersonalData, shredding_policy,
};
use annals_credit::domain::money::{Currency, Money};
use bench_harness::Table;
use bench_harness::env::{env_or, runs};
use bench_harness::ratio::{Spread, cost_percent, ratio};
use bytes::Bytes;
use command_api::{CommandContext, CommandHandler, HandlerConfig};
use event_store::{
    Direction, EventStore, ExpectedVersion, KeyStore, NewEvent, ReadFrom, Shredding, Store,
    StoreOptions, StreamId,
};
use rand::Rng;
use uuid::Uuid;

const CLIENTS: usize = 64;

fn eur(amount: i64) -> Money {
    Money::new(amount, Currency::parse("EUR").unwrap()).unwrap()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Plain,
    Encrypted,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Plain => "plain",
            Variant::Encrypted => "encrypted",
        }
    }
}

/// Which rate of [`Rates`] a summary row shows.
type Pick = fn(&Rates) -> f64;

/// Commands per second of each workload, for one variant in one round.
#[derive(Default, Clone, Copy)]
struct Rates {
    register: f64,
    cached: f64,
    uncached: f64,
}

/// The store for `variant` in a fresh directory, and the embedded store
/// underneath (to close it).
async fn open(dir: &Path, variant: Variant) -> (Arc<dyn EventStore>, Store) {
    let store = Store::open(dir, StoreOptions::default()).await.unwrap();
    let front: Arc<dyn EventStore> = match variant {
        Variant::Plain => Arc::new(store.clone()),
        Variant::Encrypted => {
            let keys = Arc::new(KeyStore::open(dir.join("keys")).unwrap());
            let shredding = Shredding::new(store.clone(), keys, shredding_policy());
            // As `annals serve` does at start-up: the key log reconciled
            // and the first spare keys made before any command.
            shredding.recover().await.unwrap();
            Arc::new(shredding)
        }
    };
    (front, store)
}

fn handler(store: &Arc<dyn EventStore>, cached_aggregates_max: usize) -> CommandHandler<Customer> {
    CommandHandler::new(
        store.clone(),
        HandlerConfig {
            cached_aggregates_max,
            ..HandlerConfig::default()
        },
    )
}

/// Registers `total` customers from `CLIENTS` concurrent clients; returns
/// their ids and the rate.
async fn register(handler: &CommandHandler<Customer>, total: usize) -> (Vec<Uuid>, f64) {
    let issued = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let handler = handler.clone();
            let issued = issued.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                while issued.fetch_add(1, Ordering::Relaxed) < total {
                    let customer_id = Uuid::now_v7();
                    let command = CustomerCommand::Register {
                        customer_id,
                        personal: PersonalData {
                            name: CustomerName::parse("Bench Customer").unwrap(),
                            email: Email::parse("bench.customer@example.com").unwrap(),
                        },
                        credit_limit: eur(1_000_000),
                    };
                    handler
                        .execute(command, CommandContext::new())
                        .await
                        .unwrap();
                    ids.push(customer_id);
                }
                ids
            })
        })
        .collect();
    let mut ids = Vec::with_capacity(total);
    for task in tasks {
        ids.extend(task.await.unwrap());
    }
    let rate = ids.len() as f64 / started.elapsed().as_secs_f64();
    (ids, rate)
}

/// Reserve + release on random customers for `duration`; the rate of
/// commands.
async fn reserve_release(
    handler: &CommandHandler<Customer>,
    customers: &Arc<Vec<Uuid>>,
    duration: Duration,
) -> f64 {
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let handler = handler.clone();
            let customers = customers.clone();
            tokio::spawn(async move {
                let mut done = 0usize;
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
                        handler
                            .execute(command, CommandContext::new())
                            .await
                            .unwrap();
                        done += 1;
                    }
                }
                done
            })
        })
        .collect();
    let mut done = 0;
    for task in tasks {
        done += task.await.unwrap();
    }
    done as f64 / started.elapsed().as_secs_f64()
}

async fn run(dir: &Path, variant: Variant, customers: usize, duration: Duration) -> Rates {
    let (store, embedded) = open(dir, variant).await;
    let cached = handler(&store, HandlerConfig::default().cached_aggregates_max);
    let (ids, register) = register(&cached, customers).await;
    let ids = Arc::new(ids);
    let cached_rate = reserve_release(&cached, &ids, duration).await;
    let uncached = handler(&store, 0);
    let uncached_rate = reserve_release(&uncached, &ids, duration).await;
    drop((cached, uncached, store));
    embedded.close().await.unwrap();
    Rates {
        register,
        cached: cached_rate,
        uncached: uncached_rate,
    }
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0u32), |(s, n), v| (s + v, n + 1));
    if n == 0 { 0.0 } else { sum / f64::from(n) }
}

/// Sealing and opening registrations, nearly on the CPU alone: large
/// batches make the fsyncs few, and the keys exist before the timing.
async fn cpu_cost(dir: &Path) {
    const EVENTS: u32 = 20_000;
    let (shredding, embedded) = open(dir, Variant::Encrypted).await;
    let plain: Arc<dyn EventStore> = Arc::new(embedded.clone());
    let data = Bytes::from(
        serde_json::json!({
            "customer_id": Uuid::nil(),
            "name": "Bench Customer",
            "email": "bench.customer@example.com",
            "credit_limit": {"amount": 1_000_000, "currency": "EUR"},
        })
        .to_string(),
    );
    let stream = |i: u32| StreamId::new(format!("customer-{i:08}")).unwrap();
    // Keys exist first, so their creation (key log + fsync) is not timed.
    for i in 0..100 {
        shredding
            .append(
                &stream(i),
                ExpectedVersion::Any,
                vec![NewEvent::new("CustomerRegistered", data.clone())],
            )
            .await
            .unwrap();
    }
    let mut timings = Vec::new();
    for (name, store) in [("plain", &plain), ("encrypted", &shredding)] {
        let started = Instant::now();
        for i in 0..100 {
            let events = (0..EVENTS / 100)
                .map(|_| NewEvent::new("CustomerRegistered", data.clone()))
                .collect();
            store
                .append(&stream(i), ExpectedVersion::Any, events)
                .await
                .unwrap();
        }
        let append = started.elapsed();
        // Twice: the first read of an event decrypts it (cold), a second
        // read finds it in the decrypted-event cache (warm).
        let mut reads = [Duration::ZERO; 2];
        let mut read = 0usize;
        for pass in &mut reads {
            let started = Instant::now();
            read = 0;
            for i in 0..100 {
                read += store
                    .read_stream(&stream(i), ReadFrom::Start, Direction::Forward, 10_000)
                    .await
                    .unwrap()
                    .events
                    .len();
            }
            *pass = started.elapsed();
        }
        timings.push((name, append, reads, read));
    }
    println!(
        "\nCPU: appending {EVENTS} registrations (100 streams, {} per append), then reading them back twice",
        EVENTS / 100
    );
    let mut table = Table::new()
        .left("store")
        .right("append µs/event")
        .right("first read µs/event (cold)")
        .right("second read µs/event (warm)");
    for (name, append, [cold, warm], read) in timings {
        table.row([
            name.to_owned(),
            format!("{:.2}", append.as_secs_f64() * 1e6 / f64::from(EVENTS)),
            format!("{:.2}", cold.as_secs_f64() * 1e6 / read as f64),
            format!("{:.2}", warm.as_secs_f64() * 1e6 / read as f64),
        ]);
    }
    table.print();
    drop((shredding, plain));
    embedded.close().await.unwrap();
}

/// Each round's rates by variant (plain, encrypted); `None` where a
/// variant did not run.
type PerRound = Vec<[Option<Rates>; 2]>;

/// Runs both variants in `rounds` rounds, printing each run's rates.
async fn run_rounds(root: &Path, rounds: usize, customers: usize, duration: Duration) -> PerRound {
    let only = bench_harness::env::only();
    let mut table = Table::new()
        .right("round")
        .left("store")
        .right("register customer/s")
        .right("reserve+release/s (cache on)")
        .right("reserve+release/s (cache off)");
    let mut per_round: PerRound = Vec::new();
    for round in 1..=rounds {
        // Alternate which goes first, so neither always runs on a
        // warmer (or busier) machine.
        let order = if round % 2 == 1 {
            [Variant::Plain, Variant::Encrypted]
        } else {
            [Variant::Encrypted, Variant::Plain]
        };
        for variant in order {
            if !runs(only.as_deref(), variant.name()) {
                continue;
            }
            eprintln!("round {round}: {}", variant.name());
            let dir = root.join(format!("{round}-{}", variant.name()));
            let rates = run(&dir, variant, customers, duration).await;
            table.row([
                round.to_string(),
                variant.name().to_owned(),
                format!("{:.0}", rates.register),
                format!("{:.0}", rates.cached),
                format!("{:.0}", rates.uncached),
            ]);
            per_round.resize(round, [None, None]);
            per_round[round - 1][usize::from(variant == Variant::Encrypted)] = Some(rates);
            // Free the disk for the next run.
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
    table.print();
    per_round
}

/// The means over the rounds, and the spread of the per-round ratios.
fn summary(per_round: &PerRound) {
    let of = |variant: Variant, pick: Pick| {
        let i = usize::from(variant == Variant::Encrypted);
        mean(per_round.iter().filter_map(|r| r[i].as_ref()).map(pick))
    };
    println!("\nMeans over the rounds (target: encryption costs under 15% of throughput)");
    let mut table = Table::new()
        .left("workload")
        .right("plain/s")
        .right("encrypted/s")
        .right("encrypted ÷ plain")
        .right("cost")
        .right("per-round ratios: median (min–max)");
    let workloads: [(&str, Pick); 3] = [
        ("register customer", |r| r.register),
        ("reserve + release, cache on", |r| r.cached),
        ("reserve + release, cache off", |r| r.uncached),
    ];
    for (name, pick) in workloads {
        let plain = of(Variant::Plain, pick);
        let encrypted = of(Variant::Encrypted, pick);
        if plain <= 0.0 || encrypted <= 0.0 {
            // Not run (`ANNALS_BENCH_SECONDS=0`, or one variant only).
            continue;
        }
        let overall = ratio(encrypted, plain);
        // The machine's load moves both variants of a round together:
        // the ratio within each round is the steadier figure.
        let ratios: Vec<f64> = per_round
            .iter()
            .filter_map(|[p, e]| Some(ratio(pick(&(*e)?), pick(&(*p)?))))
            .collect();
        let spread = Spread::of(&ratios).map_or("–".to_owned(), |s| s.to_string());
        table.row([
            name.to_owned(),
            format!("{plain:.0}"),
            format!("{encrypted:.0}"),
            format!("{overall:.3}"),
            format!("{:.1}%", cost_percent(overall)),
            spread,
        ]);
    }
    table.print();
}

fn main() {
    let runtime = bench_harness::env::runtime().unwrap();
    runtime.block_on(async {
        let root = bench_harness::env::data_root().unwrap();
        let duration = bench_harness::env::seconds_or(4);
        let rounds: usize = env_or("ANNALS_BENCH_ROUNDS", 2);
        let customers: usize = env_or("ANNALS_BENCH_CUSTOMERS", 2_000);

        println!(
            "Command throughput with and without field encryption: CommandHandler::execute, \
             {CLIENTS} concurrent clients, embedded store with fsync on every commit, \
             {customers} customers, {} s per timed workload, {rounds} rounds alternating\n",
            duration.as_secs()
        );
        let per_round = run_rounds(root.path(), rounds, customers, duration).await;
        summary(&per_round);

        cpu_cost(&root.path().join("cpu")).await;
    });
}
