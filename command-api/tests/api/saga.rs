//! The order-fulfilment saga over a real store in a temporary directory:
//! approval within the credit limit, rejection with the rule's name,
//! release on cancellation, compensation when an order is cancelled between
//! reservation and approval, and the exactly-once effect across a saga
//! killed mid-way, restarted from its checkpoint, and run again over the
//! whole log.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use command_api::domain::customer::{
    Customer, CustomerCommand, CustomerEvent, CustomerName, Email, PersonalData,
};
use command_api::domain::money::{Currency, Money};
use command_api::domain::order::{
    Order, OrderCommand, OrderEvent, OrderItems, OrderStatus, Reason,
};
use command_api::saga::{CHECKPOINT_EVENT_TYPE, CHECKPOINT_STREAM, Checkpoint, idempotency_key};
use command_api::{
    CommandContext, CommandHandler, DomainEvent, HandlerConfig, OrderFulfilment, SagaConfig,
    SagaHandle, SagaState,
};
use event_store::{
    Direction, EventStore, Position, ReadFrom, RecordedEvent, Store, StoreOptions, StreamId,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::harness::stream_events;
use crate::meddling::{Intrusion, Meddling};

/// How long any one wait may take before the test fails (CI is a loaded
/// 2-core machine).
const WAIT_MAX: Duration = Duration::from_secs(60);

fn money(amount: i64, currency: &str) -> Money {
    Money::new(amount, Currency::parse(currency).unwrap()).unwrap()
}

fn eur(amount: i64) -> Money {
    money(amount, "EUR")
}

fn config() -> SagaConfig {
    SagaConfig {
        checkpoint_every_events: NonZeroU64::new(4).unwrap(),
        checkpoint_interval: Duration::from_millis(20),
        retry_backoff_min: Duration::from_millis(10),
        retry_backoff_max: Duration::from_millis(200),
    }
}

/// Polls `check` until it holds, failing after [`WAIT_MAX`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT_MAX;
    while !check().await {
        assert!(Instant::now() < deadline, "not within {WAIT_MAX:?}: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A store with the command handlers of both aggregates over it.
struct World {
    _dir: tempfile::TempDir,
    store: Store,
    customers: CommandHandler<Customer>,
    orders: CommandHandler<Order>,
}

impl World {
    async fn new() -> World {
        World::with_front(crate::harness::upcasting).await
    }

    /// The handlers (and so the saga) over `front(store)`.
    async fn with_front(front: impl FnOnce(Store) -> Arc<dyn EventStore>) -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default())
            .await
            .unwrap();
        let front = front(store.clone());
        World {
            _dir: dir,
            store,
            customers: CommandHandler::new(front.clone(), HandlerConfig::default()),
            orders: CommandHandler::new(front, HandlerConfig::default()),
        }
    }

    fn saga(&self) -> OrderFulfilment {
        OrderFulfilment::new(self.customers.clone(), self.orders.clone(), config())
    }

    async fn customer(&self, limit: i64) -> Uuid {
        let id = Uuid::now_v7();
        let register = CustomerCommand::Register {
            customer_id: id,
            personal: PersonalData {
                name: CustomerName::parse("Grace Hopper").unwrap(),
                email: Email::parse("grace@example.com").unwrap(),
            },
            credit_limit: eur(limit),
        };
        self.customers
            .execute(register, CommandContext::new())
            .await
            .unwrap();
        id
    }

    /// Places an order for `total`; its id and the position of `OrderPlaced`.
    async fn place(&self, customer_id: Uuid, total: Money) -> (Uuid, Position) {
        let id = Uuid::now_v7();
        let place = OrderCommand::Place {
            order_id: id,
            customer_id,
            items: OrderItems::total_only(total).unwrap(),
        };
        let outcome = self
            .orders
            .execute(place, CommandContext::new())
            .await
            .unwrap();
        (id, outcome.position)
    }

    async fn cancel(&self, order_id: Uuid) -> Position {
        let cancel = OrderCommand::Cancel {
            order_id,
            reason: Some(Reason::parse("changed my mind").unwrap()),
        };
        self.orders
            .execute(cancel, CommandContext::new())
            .await
            .unwrap()
            .position
    }

    async fn order(&self, id: Uuid) -> Order {
        self.orders.load(id).await.unwrap().state
    }

    async fn status(&self, id: Uuid) -> OrderStatus {
        self.order(id).await.status().unwrap()
    }

    async fn customer_state(&self, id: Uuid) -> Customer {
        self.customers.load(id).await.unwrap().state
    }

    async fn reserved(&self, id: Uuid) -> i64 {
        self.customer_state(id).await.reserved().unwrap().amount()
    }

    async fn events(&self, stream: &str) -> Vec<RecordedEvent> {
        stream_events(&self.store, stream).await
    }

    async fn customer_events(&self, id: Uuid) -> Vec<(RecordedEvent, CustomerEvent)> {
        self.events(&format!("customer-{id}"))
            .await
            .into_iter()
            .map(|e| {
                let decoded =
                    CustomerEvent::decode(&e.event_type, e.schema_version, &e.data).unwrap();
                (e, decoded)
            })
            .collect()
    }

    async fn order_events(&self, id: Uuid) -> Vec<(RecordedEvent, OrderEvent)> {
        self.events(&format!("order-{id}"))
            .await
            .into_iter()
            .map(|e| {
                let decoded = OrderEvent::decode(&e.event_type, e.schema_version, &e.data).unwrap();
                (e, decoded)
            })
            .collect()
    }

    /// The position in the saga's last checkpoint event.
    async fn checkpoint(&self) -> Option<u64> {
        let slice = self
            .store
            .read_stream(
                &StreamId::new(CHECKPOINT_STREAM).unwrap(),
                ReadFrom::End,
                Direction::Backward,
                1,
            )
            .await
            .unwrap();
        slice.events.first().map(|e| {
            assert_eq!(e.event_type, CHECKPOINT_EVENT_TYPE);
            e.data_as::<Checkpoint>().unwrap().position
        })
    }

    /// The position of the last event the saga reacts to.
    async fn last_trigger(&self) -> Position {
        let filter = OrderFulfilment::filter();
        self.store
            .read_all(Position::START, 10_000)
            .await
            .unwrap()
            .iter()
            .filter(|e| filter.matches(e.stream_id.as_str(), &e.event_type))
            .map(|e| e.position)
            .max()
            .unwrap_or(Position::ZERO)
    }
}

/// A saga running in a task of its own.
struct Running {
    handle: SagaHandle,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Running {
    fn start(saga: OrderFulfilment) -> Running {
        let handle = saga.handle();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(saga.run(async move {
            let _ = stopped.await;
        }));
        Running { handle, stop, task }
    }

    /// Waits until the saga has handled everything up to `position`.
    async fn reach(&self, position: Position) {
        eventually(&format!("the saga reaches position {position}"), || {
            let handle = self.handle.clone();
            async move { handle.status().position >= position.0 }
        })
        .await;
    }

    /// A graceful stop: the saga finishes its event and checkpoints.
    async fn stop(self) -> SagaHandle {
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT_MAX, self.task)
            .await
            .expect("the saga stops within the limit")
            .unwrap();
        assert_eq!(self.handle.status().state, SagaState::Stopped);
        self.handle
    }

    /// A crash: the task is dropped wherever it is.
    async fn kill(self) -> SagaHandle {
        self.task.abort();
        let _ = tokio::time::timeout(WAIT_MAX, self.task)
            .await
            .expect("an aborted saga ends");
        self.handle
    }
}

fn metadata(event: &RecordedEvent) -> serde_json::Value {
    serde_json::from_slice(&event.metadata).unwrap()
}

#[tokio::test]
async fn an_order_within_the_limit_is_approved_and_its_credit_reserved() {
    let world = World::new().await;
    let customer = world.customer(1_000).await;
    let (order, placed_at) = world.place(customer, eur(600)).await;
    let saga = Running::start(world.saga());
    saga.reach(placed_at).await;

    assert_eq!(world.status(order).await, OrderStatus::Approved);
    assert_eq!(world.reserved(customer).await, 600);
    assert_eq!(
        world.customer_state(customer).await.reservation(order),
        Some(eur(600))
    );

    // Every command carries the triggering event as its cause, that
    // event's conversation, and a key derived from both.
    let order_events = world.order_events(order).await;
    let (placed, _) = &order_events[0];
    let placed_correlation = metadata(placed)["correlation_id"].clone();
    let (reserved, _) = world.customer_events(customer).await.pop().unwrap();
    let (approved, event) = order_events.last().unwrap();
    assert!(matches!(event, OrderEvent::Approved(_)), "{event:?}");
    for (event, step) in [(&reserved, "reserve"), (approved, "approve")] {
        let meta = metadata(event);
        assert_eq!(meta["causation_id"], placed.id.to_string(), "{meta}");
        assert_eq!(meta["correlation_id"], placed_correlation, "{meta}");
        assert_eq!(
            meta["idempotency_key"],
            idempotency_key(placed.id, step).unwrap().as_str(),
            "{meta}"
        );
    }

    let handle = saga.stop().await;
    let status = handle.status();
    assert_eq!(status.position, placed_at.0);
    assert_eq!(status.events_handled, 1);
    assert_eq!(status.events_skipped, 0);
    assert_eq!(status.last_error, None);
    // A graceful stop leaves a checkpoint at the last event handled.
    assert_eq!(world.checkpoint().await, Some(placed_at.0));
    assert_eq!(status.checkpoint, placed_at.0);
}

#[tokio::test]
async fn orders_the_credit_check_refuses_are_rejected_naming_the_rule() {
    let world = World::new().await;
    let customer = world.customer(500).await;
    let (over, _) = world.place(customer, eur(501)).await;
    let (dollars, _) = world.place(customer, money(100, "USD")).await;
    let (nobody, last) = world.place(Uuid::now_v7(), eur(10)).await;
    let saga = Running::start(world.saga());
    saga.reach(last).await;

    for (order, rule) in [
        (over, "credit-limit-exceeded"),
        (dollars, "currency-mismatch"),
        (nobody, "customer-not-registered"),
    ] {
        assert_eq!(world.status(order).await, OrderStatus::Rejected);
        let (_, event) = world.order_events(order).await.pop().unwrap();
        let OrderEvent::Rejected(rejected) = event else {
            panic!("{event:?}");
        };
        assert!(
            rejected.reason.as_str().starts_with(&format!("{rule}: ")),
            "{}",
            rejected.reason.as_str()
        );
        assert!(rejected.reason.as_str().len() > rule.len() + 2);
    }
    assert_eq!(world.reserved(customer).await, 0);
    // Nothing was reserved or released: the customer has only registered.
    assert_eq!(world.customer_events(customer).await.len(), 1);
    saga.stop().await;
}

#[tokio::test]
async fn cancelling_an_approved_order_releases_its_credit() {
    let world = World::new().await;
    let customer = world.customer(1_000).await;
    let (kept, _) = world.place(customer, eur(300)).await;
    let (order, placed_at) = world.place(customer, eur(600)).await;
    let saga = Running::start(world.saga());
    saga.reach(placed_at).await;
    assert_eq!(world.status(order).await, OrderStatus::Approved);
    assert_eq!(world.reserved(customer).await, 900);

    let cancelled_at = world.cancel(order).await;
    saga.reach(cancelled_at).await;
    assert_eq!(world.reserved(customer).await, 300);
    let state = world.customer_state(customer).await;
    assert_eq!(state.reservation(order), None);
    assert_eq!(state.reservation(kept), Some(eur(300)));

    let (cancelled, _) = world.order_events(order).await.pop().unwrap();
    let (released, event) = world.customer_events(customer).await.pop().unwrap();
    assert!(
        matches!(event, CustomerEvent::CreditReleased(_)),
        "{event:?}"
    );
    assert_eq!(
        metadata(&released)["causation_id"],
        cancelled.id.to_string()
    );
    assert_eq!(
        metadata(&released)["idempotency_key"],
        idempotency_key(cancelled.id, "release").unwrap().as_str()
    );
    saga.stop().await;
}

#[tokio::test]
async fn an_order_cancelled_before_its_approval_gets_its_credit_released() {
    let mut meddling = None;
    let world = World::with_front(|store| {
        let m = Meddling::new(store);
        meddling = Some(m.clone());
        m
    })
    .await;
    let meddling = meddling.unwrap();
    let customer = world.customer(1_000).await;
    let (order, _) = world.place(customer, eur(700)).await;
    // The client cancels the order right after the saga reserved its
    // credit, just before the saga's approval reaches the store.
    meddling.intrude(
        Intrusion {
            stream: StreamId::new(format!("order-{order}")).unwrap(),
            event_type: "OrderCancelled",
            data: serde_json::json!({"order_id": order, "customer_id": customer,
                                     "reason": "changed my mind"})
            .to_string(),
        },
        1,
    );
    let saga = Running::start(world.saga());
    eventually("the placement and the cancellation are handled", || {
        let handle = saga.handle.clone();
        async move { handle.status().events_handled >= 2 }
    })
    .await;
    assert_eq!(meddling.intrusions_left(), 0);
    assert_eq!(world.status(order).await, OrderStatus::Cancelled);
    assert_eq!(world.reserved(customer).await, 0);
    let kinds: Vec<&str> = world
        .customer_events(customer)
        .await
        .iter()
        .map(|(e, _)| match e.event_type.as_str() {
            "CustomerRegistered" => "registered",
            "CreditReserved" => "reserved",
            "CreditReleased" => "released",
            other => panic!("{other}"),
        })
        .collect();
    assert_eq!(kinds, ["registered", "reserved", "released"]);
    // The release is the compensation of the placement, not the reaction
    // to the cancellation (which found nothing left to release).
    let (placed, _) = &world.order_events(order).await[0];
    let (released, _) = world.customer_events(customer).await.pop().unwrap();
    assert_eq!(metadata(&released)["causation_id"], placed.id.to_string());
    // The order was never approved.
    assert!(
        !world
            .order_events(order)
            .await
            .iter()
            .any(|(_, e)| matches!(e, OrderEvent::Approved(_)))
    );
    saga.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_killed_mid_way_and_run_again_has_every_effect_exactly_once() {
    let mut meddling = None;
    let world = World::with_front(|store| {
        let m = Meddling::new(store);
        meddling = Some(m.clone());
        m
    })
    .await;
    let meddling = meddling.unwrap();
    let mut customers = Vec::new();
    for _ in 0..6 {
        customers.push(world.customer(1_000).await);
    }
    // 60 orders: several per customer exceed its limit together, some
    // are for nobody, some are cancelled before the saga gets to them.
    let mut orders = Vec::new();
    for i in 0..60_i64 {
        let customer = if i % 11 == 10 {
            Uuid::now_v7()
        } else {
            customers[(i % 6) as usize]
        };
        let (order, _) = world.place(customer, eur(50 + (i * 137) % 450)).await;
        orders.push(order);
        if i % 7 == 3 {
            world.cancel(order).await;
        }
    }
    let last = world.last_trigger().await;

    // A first saga dies in the middle of its work. Slow appends make sure
    // that "the middle" comes long before the end.
    meddling.delay_appends(Duration::from_millis(5));
    let first = Running::start(world.saga());
    eventually("the first saga handles 20 events", || {
        let handle = first.handle.clone();
        async move { handle.status().events_handled >= 20 }
    })
    .await;
    let killed = first.kill().await.status();
    meddling.delay_appends(Duration::ZERO);
    assert!(killed.position < last.0, "{killed:?}");
    let checkpoint = world.checkpoint().await.expect("a checkpoint was written");
    assert!(
        checkpoint > 0 && checkpoint <= killed.position,
        "{killed:?}"
    );

    // The next one resumes after the checkpoint, not from the beginning.
    let second = Running::start(world.saga());
    second.reach(last).await;
    assert_eq!(second.handle.status().started_after, checkpoint);
    // Cancelling some approved orders while it runs releases their credit.
    let mut last = last;
    for order in orders.iter().step_by(4) {
        if world.status(*order).await == OrderStatus::Approved {
            last = world.cancel(*order).await;
        }
    }
    second.reach(last).await;
    let second = second.stop().await.status();
    assert_eq!(world.checkpoint().await, Some(second.position));
    assert_eq!(second.events_skipped, 0, "{second:?}");

    // A saga that ignores the checkpoint and goes over the whole log
    // again changes nothing.
    let head_before = world.store.head().await.unwrap();
    let third = Running::start(world.saga().starting_after(Position::ZERO));
    third.reach(last).await;
    let third = third.stop().await.status();
    assert_eq!(third.started_after, 0);
    assert_eq!(third.events_skipped, 0, "{third:?}");
    let filter = OrderFulfilment::filter();
    let new_events: Vec<RecordedEvent> = world
        .store
        .read_all(Position(head_before.0 + 1), 10_000)
        .await
        .unwrap();
    assert!(
        new_events
            .iter()
            .all(|e| e.stream_id.as_str() == CHECKPOINT_STREAM),
        "going over the log again appended {:?}",
        new_events
            .iter()
            .map(|e| (&e.stream_id, &e.event_type))
            .collect::<Vec<_>>()
    );
    assert!(
        new_events
            .iter()
            .all(|e| !filter.matches(e.stream_id.as_str(), &e.event_type))
    );

    // Every order was decided; every customer holds exactly the credit of
    // its approved orders, each reserved once.
    let mut approved_total: HashMap<Uuid, i64> = HashMap::new();
    let mut decided: BTreeMap<&str, usize> = BTreeMap::new();
    for order in &orders {
        let state = world.order(*order).await;
        let status = state.status().unwrap();
        assert_ne!(status, OrderStatus::Pending, "order {order}");
        *decided.entry(status.as_str()).or_default() += 1;
        let events = world.order_events(*order).await;
        let count = |kind: &str| events.iter().filter(|(e, _)| e.event_type == kind).count();
        assert!(count("OrderApproved") <= 1, "order {order}: {events:?}");
        assert!(count("OrderRejected") <= 1, "order {order}: {events:?}");
        let customer = state.customer_id().unwrap();
        if status == OrderStatus::Approved {
            *approved_total.entry(customer).or_default() += state.total().unwrap().amount();
        }
        if customers.contains(&customer) {
            let held = world.customer_state(customer).await.reservation(*order);
            assert_eq!(
                held.is_some(),
                status == OrderStatus::Approved,
                "order {order} is {status:?} and holds {held:?}"
            );
        }
    }
    for status in ["approved", "rejected", "cancelled"] {
        assert!(decided.get(status).is_some_and(|n| *n > 0), "{decided:?}");
    }
    for customer in &customers {
        assert_eq!(
            world.reserved(*customer).await,
            approved_total.get(customer).copied().unwrap_or(0),
            "customer {customer}"
        );
        let mut reservations: HashMap<Uuid, usize> = HashMap::new();
        for (_, event) in world.customer_events(*customer).await {
            if let CustomerEvent::CreditReserved(r) = event {
                *reservations.entry(r.order_id).or_default() += 1;
            }
        }
        assert!(
            reservations.values().all(|n| *n == 1),
            "customer {customer}: {reservations:?}"
        );
    }
}

#[tokio::test]
async fn an_event_the_saga_cannot_read_is_skipped_and_reported() {
    let world = World::new().await;
    let customer = world.customer(1_000).await;
    let bad = world
        .store
        .append(
            &StreamId::new(format!("order-{}", Uuid::now_v7())).unwrap(),
            event_store::ExpectedVersion::NoStream,
            vec![event_store::NewEvent::new(
                "OrderPlaced",
                r#"{"not": "an order"}"#,
            )],
        )
        .await
        .unwrap()
        .last_position;
    let (order, placed_at) = world.place(customer, eur(10)).await;
    let saga = Running::start(world.saga());
    saga.reach(placed_at).await;
    assert_eq!(world.status(order).await, OrderStatus::Approved);
    let status = saga.handle.status();
    assert_eq!(status.events_handled, 2);
    assert_eq!(status.events_skipped, 1);
    let failure = status.last_error.expect("the skip is reported");
    assert_eq!(failure.position, Some(bad.0));
    assert_eq!(failure.event_type.as_deref(), Some("OrderPlaced"));
    assert!(failure.skipped);
    assert!(
        failure.error.contains("does not decode"),
        "{}",
        failure.error
    );
    saga.stop().await;
}

#[tokio::test]
async fn a_failing_store_is_retried_on_the_same_event_and_shutdown_cuts_the_wait() {
    let mut meddling = None;
    let world = World::with_front(|store| {
        let m = Meddling::new(store);
        meddling = Some(m.clone());
        m
    })
    .await;
    let meddling = meddling.unwrap();
    let customer = world.customer(1_000).await;
    let (order, placed_at) = world.place(customer, eur(100)).await;

    // A few failed appends: the saga backs off, tries the same event again
    // and gets it done, skipping nothing.
    meddling.fail_appends(3);
    let saga = Running::start(world.saga());
    saga.reach(placed_at).await;
    assert_eq!(world.status(order).await, OrderStatus::Approved);
    assert_eq!(world.reserved(customer).await, 100);
    let status = saga.handle.status();
    assert_eq!(status.state, SagaState::Running);
    assert_eq!(status.events_skipped, 0);
    let failure = status.last_error.expect("the failures are reported");
    assert!(!failure.skipped);
    assert_eq!(failure.position, Some(placed_at.0));
    assert!(failure.error.contains("unreachable"), "{}", failure.error);
    saga.stop().await;

    // A store that keeps failing: the saga waits between tries, and a
    // shutdown ends the wait at once instead of after the back-off.
    let (order, _) = world.place(customer, eur(100)).await;
    meddling.fail_appends(u32::MAX);
    let patient = OrderFulfilment::new(
        world.customers.clone(),
        world.orders.clone(),
        SagaConfig {
            retry_backoff_min: Duration::from_secs(600),
            retry_backoff_max: Duration::from_secs(600),
            ..config()
        },
    );
    let saga = Running::start(patient);
    eventually("the saga is waiting to retry", || {
        let handle = saga.handle.clone();
        async move { handle.status().state == SagaState::Retrying }
    })
    .await;
    let asked = Instant::now();
    saga.stop().await;
    assert!(
        asked.elapsed() < Duration::from_secs(30),
        "{:?}",
        asked.elapsed()
    );
    meddling.fail_appends(0);
    assert_eq!(world.status(order).await, OrderStatus::Pending);
}
