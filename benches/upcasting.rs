//! What upcasting costs on the two hot read paths:
//! `cargo bench --bench upcasting`.
//!
//! The four customer event types that carry money get a synthetic chain of
//! three steps, each a real JSON transformation: v1 → v2 renames `customer`
//! and `order` to `customer_id` and `order_id`, v2 → v3 renames `cents` to
//! the money field (`credit_limit` or `amount`), v3 → v4 turns that integer
//! into money in euros. Version 4 is the shape the domain reads. The steps
//! are object steps (`Upcasters::step_object`), which rename and replace
//! top-level fields, or the same chain as typed steps. The same events are
//! written into a log at version 4 (current), a log at version 1 (every
//! such event needs all three steps) and a log in the reference domain's
//! own version 1. The variants of each workload are measured, interleaved
//! in the same run, so the ratios hold on a loaded machine:
//!
//! - `plain`: the current log through the bare store (no upcasting layer);
//! - `no-op`: the current log through `Upcasting` (what production pays for
//!   events already at their current version);
//! - `chain`: the version 1 log through `Upcasting`, three steps per event
//!   (aggregate loads keep what they upcast in `Upcasting`'s cache of
//!   upcast events, so from the second load of a stream on they are served
//!   from it: what production pays for a stream loaded again);
//! - `cold` (aggregate load only): the same with that cache off, so every
//!   load runs the three steps on every event (what the first load of a
//!   stream pays; catch-up never uses the cache, so its `chain` is cold).
//! - `typed`: the version 1 log through `Upcasting` with the same chain
//!   written as typed steps (`Upcasters::step_typed`: version 1, 2 and 3
//!   as Rust types, the last step returning the domain's event type), no
//!   cache. Aggregate loads decode each old event once, as version 1, and
//!   convert it in Rust (`Upcasters::upcast_typed`, as the command handler
//!   does); catch-up gets the JSON the last step's output writes.
//! - `domain`: the same events in the reference domain's own version 1
//!   (money as an integer of cents) through its own upcasters (one typed
//!   step per type), no cache: what the first load of a customer written
//!   by the single-currency release pays, and what projecting its events
//!   does.
//!
//! 1. Aggregate load: one customer stream loaded as the command handler
//!    loads it (the store's `load`, decode, fold), repeatedly.
//! 2. Projection catch-up: the reference projections into a fresh SQLite
//!    view database from an empty checkpoint to the head of a generated
//!    log (customers and orders; the chain applies to its customer events).
//!
//! `ANNALS_BENCH_STREAM_EVENTS` sets the customer stream's length (default
//! 2,000), `ANNALS_BENCH_LOADS` how many loads are timed per round (default
//! 100), `ANNALS_BENCH_EVENTS` the size of the projected log (default
//! 50,000), `ANNALS_BENCH_ROUNDS` the rounds of aggregate loads (default 5,
//! the first variant rotating each round; the median counts), `ANNALS_BENCH_CATCH_UP_ROUNDS` the rounds of
//! catch-up (default 7, the first variant rotating each round; the median
//! counts). `ANNALS_BENCH_ONLY=cold` (or another variant's name) runs one
//! variant alone, for a profiler. The default run takes well under a
//! minute.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark aborts on failure"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use annals_credit::domain::customer::{
    CreditLimitChanged, CreditReleased, CreditReserved, Customer, CustomerEvent, CustomerName,
    CustomerRegistered, Email, PersonalData,
};
use annals_credit::domain::money::{Currency, Money};
use annals_credit::generator::Generator;
use bench_harness::env::{env_or, runs};
use bench_harness::ratio::{cost_percent, median, ratio};
use command_api::{Aggregate, CommandStore, DomainEvent};
use event_store::{
    EventStore, ExpectedVersion, NewEvent, Position, Store, StoreOptions, StreamAppend, StreamId,
    Upcasters, Upcasting,
};
use projector::{Projector, ProjectorOptions, TrackState, ViewDb};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

/// The customer event types that carry money, with that field.
const MONEY_FIELDS: &[(&str, &str)] = &[
    ("CustomerRegistered", "credit_limit"),
    ("CreditLimitChanged", "credit_limit"),
    ("CreditReserved", "amount"),
    ("CreditReleased", "amount"),
];

const CURRENT: u32 = 4;

fn rename(data: &mut Value, from: &str, to: &str) -> Result<(), String> {
    let object = data.as_object_mut().ok_or("not a JSON object")?;
    if let Some(value) = object.remove(from) {
        object.insert(to.to_owned(), value);
    }
    Ok(())
}

fn money_field(event_type: &str) -> Option<&'static str> {
    MONEY_FIELDS
        .iter()
        .find(|(t, _)| *t == event_type)
        .map(|(_, f)| *f)
}

/// Money as the v3 → v4 step writes it.
#[derive(serde::Serialize)]
struct Euros {
    amount: i64,
    currency: &'static str,
}

/// The synthetic chain v1 → v2 → v3 → v4 for the money events, as object
/// steps (they rename and replace top-level fields).
fn chain() -> Upcasters {
    MONEY_FIELDS
        .iter()
        .fold(Upcasters::new(), |upcasters, &(event_type, field)| {
            upcasters
                .current(event_type, CURRENT)
                .step_object(event_type, 1, |data| {
                    data.rename("customer", "customer_id");
                    data.rename("order", "order_id");
                    Ok(())
                })
                .step_object(event_type, 2, move |data| {
                    data.rename("cents", field);
                    Ok(())
                })
                .step_object(event_type, 3, move |data| {
                    let amount = data
                        .get::<i64>(field)
                        .ok()
                        .flatten()
                        .ok_or_else(|| format!("{field} is not an integer"))?;
                    data.set(
                        field,
                        Euros {
                            amount,
                            currency: "EUR",
                        },
                    )
                })
        })
}

/// A money event at version 1, as a Rust type: the customer, the order
/// (reservations and releases), the amount in cents, and the personal data
/// (registrations).
#[derive(Deserialize, Serialize)]
struct MoneyV1 {
    customer: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    order: Option<Uuid>,
    cents: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<CustomerName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email: Option<Email>,
}

/// Version 2: the ids renamed.
#[derive(Deserialize, Serialize)]
struct MoneyV2 {
    customer_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    order_id: Option<Uuid>,
    cents: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<CustomerName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email: Option<Email>,
}

/// Version 3 of the events with a credit limit: `cents` renamed.
#[derive(Deserialize, Serialize)]
struct LimitV3 {
    customer_id: Uuid,
    credit_limit: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<CustomerName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email: Option<Email>,
}

/// Version 3 of reservations and releases: `cents` renamed.
#[derive(Deserialize, Serialize)]
struct AmountV3 {
    customer_id: Uuid,
    order_id: Uuid,
    amount: i64,
}

fn v1_to_v2(v1: MoneyV1) -> Result<MoneyV2, String> {
    Ok(MoneyV2 {
        customer_id: v1.customer,
        order_id: v1.order,
        cents: v1.cents,
        name: v1.name,
        email: v1.email,
    })
}

fn limit_v2_to_v3(v2: MoneyV2) -> Result<LimitV3, String> {
    Ok(LimitV3 {
        customer_id: v2.customer_id,
        credit_limit: v2.cents,
        name: v2.name,
        email: v2.email,
    })
}

fn amount_v2_to_v3(v2: MoneyV2) -> Result<AmountV3, String> {
    Ok(AmountV3 {
        customer_id: v2.customer_id,
        order_id: v2.order_id.ok_or("no order")?,
        amount: v2.cents,
    })
}

fn euros(cents: i64) -> Result<Money, String> {
    let eur = Currency::parse("EUR").map_err(|e| e.to_string())?;
    Money::new(cents, eur).map_err(|e| e.to_string())
}

/// `chain()` as typed steps, ending in the domain's event types.
fn typed_chain() -> Upcasters {
    let limit = |upcasters: Upcasters, event_type: &str| {
        upcasters
            .current(event_type, CURRENT)
            .step_typed(event_type, 1, v1_to_v2)
            .step_typed(event_type, 2, limit_v2_to_v3)
    };
    let amount = |upcasters: Upcasters, event_type: &str| {
        upcasters
            .current(event_type, CURRENT)
            .step_typed(event_type, 1, v1_to_v2)
            .step_typed(event_type, 2, amount_v2_to_v3)
    };
    let upcasters = limit(Upcasters::new(), "CustomerRegistered").step_typed(
        "CustomerRegistered",
        3,
        |v3: LimitV3| {
            Ok(CustomerRegistered {
                customer_id: v3.customer_id,
                personal: PersonalData {
                    name: v3.name.ok_or("no name")?,
                    email: v3.email.ok_or("no email")?,
                },
                credit_limit: euros(v3.credit_limit)?,
            })
        },
    );
    let upcasters = limit(upcasters, "CreditLimitChanged").step_typed(
        "CreditLimitChanged",
        3,
        |v3: LimitV3| {
            Ok(CreditLimitChanged {
                customer_id: v3.customer_id,
                credit_limit: euros(v3.credit_limit)?,
            })
        },
    );
    let upcasters =
        amount(upcasters, "CreditReserved").step_typed("CreditReserved", 3, |v3: AmountV3| {
            Ok(CreditReserved {
                customer_id: v3.customer_id,
                order_id: v3.order_id,
                amount: euros(v3.amount)?,
            })
        });
    amount(upcasters, "CreditReleased").step_typed("CreditReleased", 3, |v3: AmountV3| {
        Ok(CreditReleased {
            customer_id: v3.customer_id,
            order_id: v3.order_id,
            amount: euros(v3.amount)?,
        })
    })
}

/// The shapes a log is written in.
#[derive(Clone, Copy)]
enum Shape {
    /// Version 4 of the chain (the domain's current shape).
    Current,
    /// Version 1 of the chain.
    ChainV1,
    /// Version 1 of the reference domain: the money as an integer of cents.
    DomainV1,
}

/// The event as `shape` writes it (the chain backwards for `ChainV1`).
fn at_version(mut event: NewEvent, shape: Shape) -> NewEvent {
    let Some(field) = money_field(&event.event_type) else {
        return event;
    };
    let mut v: Value = serde_json::from_slice(&event.data).unwrap();
    let cents = v[field]["amount"].as_i64().unwrap();
    match shape {
        Shape::Current => {
            event.schema_version = CURRENT;
            return event;
        }
        Shape::DomainV1 => v[field] = json!(cents),
        Shape::ChainV1 => {
            v[field] = json!(cents);
            rename(&mut v, field, "cents").unwrap();
            rename(&mut v, "customer_id", "customer").unwrap();
            rename(&mut v, "order_id", "order").unwrap();
        }
    }
    event.data = serde_json::to_vec(&v).unwrap().into();
    event.schema_version = 1;
    event
}

/// Writes `appends` into a fresh store under `dir`, in the given version.
async fn write_log(dir: &std::path::Path, appends: &[Vec<StreamAppend>], shape: Shape) -> Store {
    let store = Store::open(dir, StoreOptions::default()).await.unwrap();
    for batch in appends {
        let batch = batch
            .iter()
            .map(|a| {
                StreamAppend::new(
                    a.stream_id.clone(),
                    a.expected,
                    a.events
                        .iter()
                        .map(|e| at_version(e.clone(), shape))
                        .collect(),
                )
            })
            .collect();
        store.append_many(batch).await.unwrap();
    }
    store
}

/// One customer's stream: registered, then reservations and releases, with
/// a limit change now and then.
fn customer_stream(events: usize) -> (StreamId, Vec<Vec<StreamAppend>>) {
    let id = uuid::Uuid::new_v4();
    let stream = StreamId::new(format!("customer-{id}")).unwrap();
    let eur = |amount: i64| json!({"amount": amount, "currency": "EUR"});
    let mut data = vec![(
        "CustomerRegistered",
        json!({"customer_id": id, "name": "Ada Lovelace", "email": "ada@example.com",
               "credit_limit": eur(1_000_000)}),
    )];
    let mut order = uuid::Uuid::new_v4();
    while data.len() < events {
        let i = data.len() as i64;
        data.push(match i % 5 {
            0 => (
                "CreditLimitChanged",
                json!({"customer_id": id, "credit_limit": eur(1_000_000 + i)}),
            ),
            1 | 3 => {
                order = uuid::Uuid::new_v4();
                (
                    "CreditReserved",
                    json!({"customer_id": id, "order_id": order, "amount": eur(100 + i)}),
                )
            }
            _ => (
                "CreditReleased",
                json!({"customer_id": id, "order_id": order, "amount": eur(99 + i)}),
            ),
        });
    }
    let events = data
        .into_iter()
        .map(|(t, v)| NewEvent::json(t, &v).unwrap())
        .collect::<Vec<_>>();
    let appends = events
        .chunks(100)
        .map(|chunk| {
            vec![StreamAppend::new(
                stream.clone(),
                ExpectedVersion::Any,
                chunk.to_vec(),
            )]
        })
        .collect();
    (stream, appends)
}

/// Loads the customer as the command handler does: every event, decoded at
/// the domain's version (the chain's version 4 is the domain's current
/// shape) or, where typed steps alone lead to it, converted in Rust;
/// folded.
async fn load(store: &CommandStore, stream: &StreamId) -> Customer {
    // Built once, as a process builds its upcasters once: not timed.
    static DOMAIN: std::sync::OnceLock<Upcasters> = std::sync::OnceLock::new();
    let domain = DOMAIN.get_or_init(annals_credit::domain::upcasters);
    let (loaded, upcasters) = store.load(stream, None).await.unwrap();
    let mut state = Customer::default();
    for e in &loaded.events {
        let event = match upcasters.as_deref().and_then(|u| u.upcast_typed(e)) {
            Some(value) => CustomerEvent::from_upcast(&e.event_type, value.unwrap()).unwrap(),
            None => {
                let version = domain.current_version(&e.event_type).unwrap_or(1);
                CustomerEvent::decode(&e.event_type, version, &e.data).unwrap()
            }
        };
        state.apply(&event);
    }
    assert!(state.is_registered());
    state
}

/// Events per second over `loads` loads of `stream`.
async fn load_rate(store: &CommandStore, stream: &StreamId, loads: usize, events: usize) -> f64 {
    let started = Instant::now();
    for _ in 0..loads {
        std::hint::black_box(load(store, stream).await);
    }
    (loads * events) as f64 / started.elapsed().as_secs_f64()
}

/// Events per second of the reference projections catching up from an
/// empty SQLite database to `head`.
async fn catch_up_rate(store: Arc<dyn EventStore>, head: Position) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let db = ViewDb::open_in_data_dir(dir.path()).await.unwrap();
    let projector = Projector::builder(store, db.clone())
        .options(ProjectorOptions::default())
        .projections(annals_credit::views::projections())
        .build()
        .unwrap();
    let handle = projector.handle();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let task = tokio::spawn(projector.run(async move {
        let _ = stopped.await;
    }));
    loop {
        let status = handle.status().await.unwrap();
        if let Some(p) = status.iter().find(|p| p.state == TrackState::Failed) {
            panic!("projection {} failed: {:?}", p.name, p.last_error);
        }
        if status.iter().all(|p| p.position >= head.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    db.close().await;
    head.0 as f64 / elapsed.as_secs_f64()
}

struct Variants {
    plain: CommandStore,
    no_op: CommandStore,
    chain: CommandStore,
    cold: CommandStore,
    typed: CommandStore,
    domain: CommandStore,
}

impl Variants {
    async fn new(root: &std::path::Path, name: &str, appends: &[Vec<StreamAppend>]) -> Self {
        let current = write_log(&root.join(format!("{name}-v4")), appends, Shape::Current).await;
        let old = write_log(&root.join(format!("{name}-v1")), appends, Shape::ChainV1).await;
        let domain_v1 = write_log(
            &root.join(format!("{name}-domain-v1")),
            appends,
            Shape::DomainV1,
        )
        .await;
        Self {
            plain: CommandStore::from(current.clone()),
            no_op: Upcasting::new(current, chain()).unwrap().into(),
            chain: Upcasting::new(old.clone(), chain()).unwrap().into(),
            cold: Upcasting::with_cache(old.clone(), chain(), 0)
                .unwrap()
                .into(),
            typed: Upcasting::with_cache(old, typed_chain(), 0).unwrap().into(),
            domain: Upcasting::with_cache(domain_v1, annals_credit::domain::upcasters(), 0)
                .unwrap()
                .into(),
        }
    }

    /// The variants measured for aggregate loads.
    fn all(&self) -> [(&'static str, &CommandStore); 6] {
        [
            ("plain", &self.plain),
            ("no-op", &self.no_op),
            ("chain", &self.chain),
            ("cold", &self.cold),
            ("typed", &self.typed),
            ("domain", &self.domain),
        ]
    }

    /// The variants measured for catch-up, which never uses the cache.
    fn sequential(&self) -> [(&'static str, &CommandStore); 5] {
        [
            ("plain", &self.plain),
            ("no-op", &self.no_op),
            ("chain", &self.chain),
            ("typed", &self.typed),
            ("domain", &self.domain),
        ]
    }
}

fn report(workload: &str, unit: &str, rates: &[(&str, Vec<f64>)]) {
    println!("{workload}");
    // With `ANNALS_BENCH_ONLY`, the variants not run have no rates.
    let plain = median(&rates[0].1).unwrap_or(f64::NAN);
    for (name, runs) in rates {
        let Some(rate) = median(runs) else { continue };
        let share = ratio(rate, plain);
        println!(
            "  {name:<6} {rate:>12.0} {unit}  {share:>6.3} × plain  (cost {:>5.1} %)",
            cost_percent(share)
        );
    }
}

fn main() {
    bench_harness::env::runtime().unwrap().block_on(run());
}

async fn run() {
    let stream_events: usize = env_or("ANNALS_BENCH_STREAM_EVENTS", 2_000);
    let loads: usize = env_or("ANNALS_BENCH_LOADS", 100);
    let log_events: u64 = bench_harness::env::events_or(50_000);
    let rounds: usize = env_or("ANNALS_BENCH_ROUNDS", 5).max(1);
    let only = bench_harness::env::only();
    let root = tempfile::tempdir().unwrap();

    let (stream, appends) = customer_stream(stream_events);
    let stores = Variants::new(root.path(), "aggregate", &appends).await;
    // Warm the page cache and the allocator before timing, and check that
    // every variant reads the same customer.
    let plain = serde_json::to_value(load(&stores.plain, &stream).await).unwrap();
    for (name, store) in stores.all() {
        let state = serde_json::to_value(load(store, &stream).await).unwrap();
        assert_eq!(state, plain, "{name} reads another customer");
    }
    let mut rates: Vec<(&str, Vec<f64>)> = stores.all().iter().map(|(n, _)| (*n, vec![])).collect();
    // Each round starts with a different variant, as for catch-up below.
    for round in 0..rounds {
        let n = rates.len();
        for k in 0..n {
            let i = (round + k) % n;
            let (name, store) = stores.all()[i];
            if !runs(only.as_deref(), name) {
                continue;
            }
            let store = store.clone();
            rates[i]
                .1
                .push(load_rate(&store, &stream, loads, stream_events).await);
        }
    }
    report(
        &format!(
            "Aggregate load: a customer stream of {stream_events} events, {loads} loads per round, median of {rounds} rounds"
        ),
        "events/s",
        &rates,
    );

    // Consecutive appends to distinct streams share one atomic append, as
    // the command side's group commits would (and as the generator's own
    // `append_events` packs them).
    let mut generator = Generator::new(42);
    let mut log: Vec<Vec<StreamAppend>> = vec![Vec::new()];
    let mut upcast = 0u64;
    while generator.events() < log_events {
        let append = generator.next_append().unwrap();
        upcast += append
            .events
            .iter()
            .filter(|e| money_field(&e.event_type).is_some())
            .count() as u64;
        let batch = log.last_mut().unwrap();
        if batch.len() >= 64 || batch.iter().any(|a| a.stream_id == append.stream_id) {
            log.push(vec![append]);
        } else {
            batch.push(append);
        }
    }
    let head = Position(generator.events());
    let stores = Variants::new(root.path(), "log", &log).await;
    let mut rates: Vec<(&str, Vec<f64>)> = stores
        .sequential()
        .iter()
        .map(|(n, _)| (*n, vec![]))
        .collect();
    // Catch-up runs are short and SQLite-bound, so one disturbed run moves a
    // median of three: more rounds, and each round starts with a different
    // variant so that none always runs first (or last) on a busy machine.
    let catch_up_rounds: usize = env_or("ANNALS_BENCH_CATCH_UP_ROUNDS", 7).max(1);
    for round in 0..catch_up_rounds {
        let n = rates.len();
        for k in 0..n {
            let i = (round + k) % n;
            let (name, store) = stores.sequential()[i];
            if !runs(only.as_deref(), name) {
                continue;
            }
            let store = store.events().clone();
            rates[i].1.push(catch_up_rate(store, head).await);
        }
    }
    report(
        &format!(
            "Projection catch-up into SQLite: {} events ({upcast} of them customer money events the chain applies to), median of {catch_up_rounds} rounds, rotating which variant goes first",
            head.0
        ),
        "events/s",
        &rates,
    );
}
