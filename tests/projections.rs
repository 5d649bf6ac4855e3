//! Every event the command side can legally produce folds into the
//! reference views. Random sequences of commands (registrations, limit
//! changes, reservations and releases, orders placed for customers who
//! exist and who do not, approvals, rejections and cancellations of orders
//! that exist and that do not, erasures) go through the real command
//! handlers over a real embedded store in a temporary directory, while the
//! order-fulfilment saga decides the orders and the real projector folds
//! the log into SQLite. No projection may fail, and the views must say
//! what the aggregates say.
//!
//! `ANNALS_PROPTEST_CASES` sets the number of cases (default 32, for CI
//! time); failing cases are kept in `tests/proptest-regressions/`.

use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals_credit::domain::customer::{
    Customer, CustomerCommand, CustomerError, CustomerName, Email, PersonalData,
};
use annals_credit::domain::money::{Currency, Money};
use annals_credit::domain::order::{Order, OrderCommand, OrderItems, Reason};
use annals_credit::{OrderFulfilment, OrderFulfilmentConfig};
use command_api::{
    CommandContext, CommandError, CommandHandler, DomainError, HandlerConfig, SagaConfig,
    SagaHandle, SagaRunner, SagaState,
};
use event_store::{EventStore, KeyStore, Position, RecordedEvent, Shredding, Store, Upcasting};
use projector::{ProjectionStatus, Projector, ProjectorHandle, ProjectorOptions, TrackState};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use sqlx::Row;
use tokio::sync::oneshot;
use uuid::Uuid;

/// Customer and order ids a case draws from: small pools, so that commands
/// meet the same aggregates often, before and after they exist.
const CUSTOMERS: usize = 4;
const ORDERS: usize = 6;

/// How long any one wait may take before the case fails.
const WAIT_MAX: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
enum Cur {
    Eur,
    Usd,
}

impl Cur {
    fn money(self, amount: i64) -> Money {
        let code = match self {
            Cur::Eur => "EUR",
            Cur::Usd => "USD",
        };
        Money::new(amount, Currency::parse(code).unwrap()).unwrap()
    }
}

/// One command of a random history. Indices pick from the id pools.
#[derive(Debug, Clone)]
enum Op {
    Register {
        customer: usize,
        limit: i64,
        currency: Cur,
    },
    ChangeLimit {
        customer: usize,
        limit: i64,
        currency: Cur,
    },
    Reserve {
        customer: usize,
        order: usize,
        amount: i64,
        currency: Cur,
    },
    Release {
        customer: usize,
        order: usize,
    },
    Place {
        order: usize,
        customer: usize,
        total: i64,
        currency: Cur,
    },
    Approve {
        order: usize,
    },
    Reject {
        order: usize,
    },
    Cancel {
        order: usize,
        reason: bool,
    },
    Forget {
        customer: usize,
    },
    /// Let the saga and the projector catch up a little.
    Pause,
}

fn currency() -> impl Strategy<Value = Cur> {
    prop_oneof![4 => Just(Cur::Eur), 1 => Just(Cur::Usd)]
}

fn op() -> impl Strategy<Value = Op> {
    let customer = 0..CUSTOMERS;
    let order = 0..ORDERS;
    prop_oneof![
        3 => (customer.clone(), 0..2_000_i64, currency())
            .prop_map(|(customer, limit, currency)| Op::Register { customer, limit, currency }),
        1 => (customer.clone(), 0..2_000_i64, currency())
            .prop_map(|(customer, limit, currency)| Op::ChangeLimit { customer, limit, currency }),
        1 => (customer.clone(), order.clone(), 1..800_i64, currency())
            .prop_map(|(customer, order, amount, currency)| Op::Reserve { customer, order, amount, currency }),
        1 => (customer.clone(), order.clone())
            .prop_map(|(customer, order)| Op::Release { customer, order }),
        4 => (order.clone(), customer.clone(), 1..800_i64, currency())
            .prop_map(|(order, customer, total, currency)| Op::Place { order, customer, total, currency }),
        1 => order.clone().prop_map(|order| Op::Approve { order }),
        1 => order.clone().prop_map(|order| Op::Reject { order }),
        2 => (order, any::<bool>()).prop_map(|(order, reason)| Op::Cancel { order, reason }),
        1 => customer.prop_map(|customer| Op::Forget { customer }),
        1 => Just(Op::Pause),
    ]
}

/// A refusal the command side answers with (a rule, a missing aggregate,
/// a race lost through every retry) is part of the game; anything else is
/// a broken test.
fn refused_or_done<T, E: DomainError>(result: Result<T, CommandError<E>>) {
    match result {
        Ok(_)
        | Err(
            CommandError::Rejected(_)
            | CommandError::NotFound { .. }
            | CommandError::Conflict { .. },
        ) => {}
        Err(e) => panic!("a command failed for another reason than a refusal: {e}"),
    }
}

/// The embedded store as `annals serve` layers it: personal data encrypted
/// under keys beside the log, old events upcast.
struct World {
    dir: tempfile::TempDir,
    store: Store,
    layered: Arc<dyn EventStore>,
    customers: CommandHandler<Customer>,
    orders: CommandHandler<Order>,
    customer_ids: Vec<Uuid>,
    order_ids: Vec<Uuid>,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), event_store::StoreOptions::default())
            .await
            .unwrap();
        let keys = Arc::new(KeyStore::open(dir.path().join("keys")).unwrap());
        let shredding = Shredding::new(
            store.clone(),
            keys,
            annals_credit::domain::customer::shredding_policy(),
        );
        shredding.recover().await.unwrap();
        let layered: Arc<dyn EventStore> =
            Arc::new(Upcasting::new(shredding, annals_credit::domain::upcasters()).unwrap());
        World {
            customers: CommandHandler::new(layered.clone(), HandlerConfig::default()),
            orders: CommandHandler::new(layered.clone(), HandlerConfig::default()),
            customer_ids: (0..CUSTOMERS).map(|_| Uuid::now_v7()).collect(),
            order_ids: (0..ORDERS).map(|_| Uuid::now_v7()).collect(),
            dir,
            store,
            layered,
        }
    }

    async fn run(&self, op: Op) {
        let customer = |i: usize| self.customer_ids[i];
        let order = |i: usize| self.order_ids[i];
        let context = CommandContext::new;
        match op {
            Op::Register {
                customer: c,
                limit,
                currency,
            } => {
                let register = CustomerCommand::Register {
                    customer_id: customer(c),
                    personal: PersonalData {
                        name: CustomerName::parse(&format!("Customer {c}")).unwrap(),
                        email: Email::parse(&format!("c{c}@example.org")).unwrap(),
                    },
                    credit_limit: currency.money(limit),
                };
                refused_or_done(self.customers.execute(register, context()).await);
            }
            Op::ChangeLimit {
                customer: c,
                limit,
                currency,
            } => {
                let change = CustomerCommand::ChangeCreditLimit {
                    customer_id: customer(c),
                    credit_limit: currency.money(limit),
                };
                refused_or_done(self.customers.execute(change, context()).await);
            }
            Op::Reserve {
                customer: c,
                order: o,
                amount,
                currency,
            } => {
                let reserve = CustomerCommand::ReserveCredit {
                    customer_id: customer(c),
                    order_id: order(o),
                    amount: currency.money(amount),
                };
                refused_or_done(self.customers.execute(reserve, context()).await);
            }
            Op::Release {
                customer: c,
                order: o,
            } => {
                let release = CustomerCommand::ReleaseCredit {
                    customer_id: customer(c),
                    order_id: order(o),
                };
                refused_or_done(self.customers.execute(release, context()).await);
            }
            Op::Place {
                order: o,
                customer: c,
                total,
                currency,
            } => {
                let place = OrderCommand::Place {
                    order_id: order(o),
                    customer_id: customer(c),
                    items: OrderItems::total_only(currency.money(total)).unwrap(),
                };
                refused_or_done(self.orders.execute(place, context()).await);
            }
            Op::Approve { order: o } => {
                let approve = OrderCommand::Approve { order_id: order(o) };
                refused_or_done(self.orders.execute(approve, context()).await);
            }
            Op::Reject { order: o } => {
                let reject = OrderCommand::Reject {
                    order_id: order(o),
                    reason: Reason::parse("refused by hand").unwrap(),
                };
                refused_or_done(self.orders.execute(reject, context()).await);
            }
            Op::Cancel { order: o, reason } => {
                let cancel = OrderCommand::Cancel {
                    order_id: order(o),
                    reason: reason.then(|| Reason::parse("changed my mind").unwrap()),
                };
                refused_or_done(self.orders.execute(cancel, context()).await);
            }
            Op::Forget { customer: c } => {
                let forgotten =
                    annals_credit::forget_customer(&self.customers, customer(c), context()).await;
                refused_or_done::<_, CustomerError>(forgotten);
            }
            Op::Pause => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }

    async fn log(&self) -> Vec<RecordedEvent> {
        let mut events = Vec::new();
        loop {
            let from = events
                .last()
                .map_or(Position::START, |e: &RecordedEvent| e.position.next());
            let page = self.layered.read_all(from, 1_000).await.unwrap();
            if page.is_empty() {
                return events;
            }
            events.extend(page);
        }
    }
}

/// Polls `check` until it gives a value, failing after [`WAIT_MAX`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "not within {WAIT_MAX:?}: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Panics on a failed projection, naming it, its position and error.
fn assert_not_failed(statuses: &[ProjectionStatus]) {
    for s in statuses {
        assert!(
            s.state != TrackState::Failed,
            "projection {} failed at position {:?}: {:?}",
            s.name,
            s.error_position,
            s.last_error
        );
    }
}

/// Waits until every projection has applied the log up to `head`, failing
/// as soon as one is failed.
async fn projected_to(handle: &ProjectorHandle, head: Position) {
    eventually(&format!("the views reach position {head}"), || async {
        let statuses = handle.status().await.ok()?;
        assert_not_failed(&statuses);
        statuses.iter().all(|s| s.position >= head.0).then_some(())
    })
    .await;
}

/// Waits until the saga has handled every event it reacts to.
async fn saga_settled(saga: &SagaHandle, log: &[RecordedEvent]) {
    let filter = OrderFulfilment::filter();
    let last = log
        .iter()
        .filter(|e| filter.matches(e.stream_id.as_str(), &e.event_type))
        .map(|e| e.position.0)
        .max()
        .unwrap_or(0);
    eventually(&format!("the saga handles position {last}"), || async {
        let status = saga.status();
        (status.position >= last && status.events_in_flight == 0).then_some(())
    })
    .await;
}

/// How many order events of each kind name `customer` after the customer
/// registered: what the customers view counts (an order placed for an id
/// nobody had registered yet is the orders view's business only).
fn order_counts(log: &[RecordedEvent], customer: Uuid) -> [i64; 4] {
    let customer = customer.to_string();
    let registered = log.iter().position(|e| {
        e.event_type == "CustomerRegistered"
            && e.data_as::<serde_json::Value>().unwrap()["customer_id"] == customer.as_str()
    });
    let Some(registered) = registered else {
        return [0; 4];
    };
    let mut counts = [0; 4];
    for event in &log[registered + 1..] {
        let kind = match event.event_type.as_str() {
            "OrderPlaced" => 0,
            "OrderApproved" => 1,
            "OrderRejected" => 2,
            "OrderCancelled" => 3,
            _ => continue,
        };
        if event.data_as::<serde_json::Value>().unwrap()["customer_id"] == customer.as_str() {
            counts[kind] += 1;
        }
    }
    counts
}

/// Compares every customer and order row with the aggregate the command
/// side loads.
async fn assert_views_match_aggregates(world: &World, views: &projector::ViewDb) {
    let log = world.log().await;
    let customer_rows: HashMap<String, sqlx::any::AnyRow> = sqlx::query(
        "SELECT id, name, email, currency, credit_limit, reserved, available, orders_placed, \
         orders_approved, orders_rejected, orders_cancelled, version FROM customers",
    )
    .fetch_all(views.pool())
    .await
    .unwrap()
    .into_iter()
    .map(|row| (row.get::<String, _>(0), row))
    .collect();
    for (i, id) in world.customer_ids.iter().enumerate() {
        let loaded = world.customers.load(*id).await.unwrap();
        let row = customer_rows.get(&id.to_string());
        let customer = &loaded.state;
        let Some(row) = row else {
            assert!(
                !customer.is_registered(),
                "customer {i} is registered but has no row"
            );
            continue;
        };
        assert!(customer.is_registered(), "customer {i} has a row");
        let limit = customer.credit_limit().unwrap();
        let reserved = customer.reserved().unwrap();
        let name: String = row.get(1);
        let email: String = row.get(2);
        if customer.is_forgotten() {
            assert_eq!(
                (name.as_str(), email.as_str()),
                (event_store::ERASED, event_store::ERASED)
            );
        } else {
            assert_eq!(name, format!("Customer {i}"));
            assert_eq!(email, format!("c{i}@example.org"));
        }
        assert_eq!(
            row.get::<String, _>(3),
            limit.currency().to_string(),
            "customer {i}"
        );
        assert_eq!(row.get::<i64, _>(4), limit.amount(), "customer {i} limit");
        assert_eq!(
            row.get::<i64, _>(5),
            reserved.amount(),
            "customer {i} reserved"
        );
        assert_eq!(
            row.get::<i64, _>(6),
            (limit.amount() - reserved.amount()).max(0),
            "customer {i} available"
        );
        let counts: [i64; 4] = [row.get(7), row.get(8), row.get(9), row.get(10)];
        assert_eq!(counts, order_counts(&log, *id), "customer {i} order counts");
        assert_eq!(
            row.get::<i64, _>(11),
            loaded.version as i64,
            "customer {i} version"
        );
    }

    let order_rows: HashMap<String, sqlx::any::AnyRow> =
        sqlx::query("SELECT id, customer_id, currency, total, status, version FROM orders")
            .fetch_all(views.pool())
            .await
            .unwrap()
            .into_iter()
            .map(|row| (row.get::<String, _>(0), row))
            .collect();
    assert!(order_rows.len() <= world.order_ids.len());
    for (i, id) in world.order_ids.iter().enumerate() {
        let loaded = world.orders.load(*id).await.unwrap();
        let order = &loaded.state;
        let Some(row) = order_rows.get(&id.to_string()) else {
            assert!(
                order.status().is_none(),
                "order {i} is placed but has no row"
            );
            continue;
        };
        let status = order.status().expect("an order with a row is placed");
        let total = order.total().unwrap();
        assert_eq!(
            row.get::<String, _>(1),
            order.customer_id().unwrap().to_string(),
            "order {i}"
        );
        assert_eq!(
            row.get::<String, _>(2),
            total.currency().to_string(),
            "order {i}"
        );
        assert_eq!(row.get::<i64, _>(3), total.amount(), "order {i} total");
        assert_eq!(row.get::<String, _>(4), status.as_str(), "order {i} status");
        assert_eq!(
            row.get::<i64, _>(5),
            loaded.version as i64,
            "order {i} version"
        );
    }
}

/// Runs `ops` while the saga decides orders and the projector follows the
/// log, then checks the views.
async fn random_history(ops: Vec<Op>) {
    let world = World::new().await;
    let views = projector::ViewDb::open_in_data_dir(world.dir.path())
        .await
        .unwrap();
    // Small batches, so that the events of one history fall into several.
    let projector = Projector::builder(world.layered.clone(), views.clone())
        .options(ProjectorOptions {
            batch_events_max: 7,
            retry_backoff_min: Duration::from_millis(10),
            retry_backoff_max: Duration::from_millis(200),
            ..ProjectorOptions::default()
        })
        .projections(annals_credit::views::projections())
        .build()
        .unwrap();
    // The projector creates its tables when it starts; a history that
    // appends nothing must not read them before that.
    projector.create_tables().await.unwrap();
    let handle = projector.handle();
    let (stop_projector, projector_stopped) = oneshot::channel::<()>();
    let projecting = tokio::spawn(projector.run(async move {
        let _ = projector_stopped.await;
    }));

    let saga = SagaRunner::new(
        OrderFulfilment::new(
            world.customers.clone(),
            world.orders.clone(),
            OrderFulfilmentConfig::default(),
        ),
        world.layered.clone(),
        SagaConfig {
            checkpoint_every_events: NonZeroU64::new(8).unwrap(),
            checkpoint_interval: Duration::from_millis(20),
            retry_backoff_min: Duration::from_millis(10),
            retry_backoff_max: Duration::from_millis(200),
            ..SagaConfig::default()
        },
    );
    let saga_handle = saga.handle();
    let (stop_saga, saga_stopped) = oneshot::channel::<()>();
    let deciding = tokio::spawn(saga.run(async move {
        let _ = saga_stopped.await;
    }));

    for op in ops {
        world.run(op).await;
        // A failure shows as soon as it happens, with the op that caused it
        // nearby in the shrunk case.
        assert_not_failed(&handle.status().await.unwrap());
    }
    saga_settled(&saga_handle, &world.log().await).await;
    let _ = stop_saga.send(());
    tokio::time::timeout(WAIT_MAX, deciding)
        .await
        .expect("the saga stops")
        .unwrap();
    assert_eq!(saga_handle.status().state, SagaState::Stopped);

    let head = world.layered.head().await.unwrap();
    projected_to(&handle, head).await;
    assert_views_match_aggregates(&world, &views).await;

    let _ = stop_projector.send(());
    tokio::time::timeout(WAIT_MAX, projecting)
        .await
        .expect("the projector stops")
        .unwrap()
        .unwrap();
    views.close().await;
    world.store.close().await.unwrap();
}

fn cases() -> u32 {
    std::env::var("ANNALS_PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(32)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/proptest-regressions/projections.txt",
        ))),
        ..ProptestConfig::default()
    })]

    /// Whatever the commands, including those naming customers and orders
    /// that do not exist: no projection fails, and the views show what the
    /// aggregates hold.
    #[test]
    fn every_legal_history_projects_without_failure(ops in proptest::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(random_history(ops));
    }
}

/// The report that started this test: an order for a customer id nobody
/// registered is accepted and rejected by the saga, and the customers view
/// must go on.
#[test]
fn an_order_for_an_unknown_customer_leaves_the_customers_view_running() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(random_history(vec![
        Op::Register {
            customer: 0,
            limit: 1_000,
            currency: Cur::Eur,
        },
        Op::Place {
            order: 0,
            customer: 1,
            total: 100,
            currency: Cur::Eur,
        },
        Op::Pause,
        // Registered after its order was placed (and perhaps rejected).
        Op::Register {
            customer: 1,
            limit: 500,
            currency: Cur::Eur,
        },
        Op::Place {
            order: 1,
            customer: 1,
            total: 100,
            currency: Cur::Eur,
        },
        Op::Cancel {
            order: 1,
            reason: false,
        },
    ]));
}
