//! The command handler without HTTP: commands issued by code (as a saga
//! would), snapshots every N events, and loading that survives snapshots it
//! cannot use.

use std::num::NonZeroU64;
use std::sync::Arc;

use annals_credit::domain::customer::{
    Customer, CustomerCommand, CustomerEvent, CustomerName, Email, PersonalData,
};
use annals_credit::domain::money::{Currency, Money};
use bytes::Bytes;
use command_api::aggregate::replay;
use command_api::handler::stream_id;
use command_api::{
    Aggregate, CommandContext, CommandError, CommandHandler, DomainEvent, Fingerprint,
    HandlerConfig, Idempotency, IdempotencyKey,
};
use event_store::{EventStore, Store, StoreOptions};
use uuid::Uuid;

use crate::harness::stream_events;

fn eur(amount: i64) -> Money {
    Money::new(amount, Currency::parse("EUR").unwrap()).unwrap()
}

fn register(customer_id: Uuid, limit: i64) -> CustomerCommand {
    CustomerCommand::Register {
        customer_id,
        personal: PersonalData {
            name: CustomerName::parse("Grace Hopper").unwrap(),
            email: Email::parse("grace@example.com").unwrap(),
        },
        credit_limit: eur(limit),
    }
}

fn reserve(customer_id: Uuid, amount: i64) -> CustomerCommand {
    CustomerCommand::ReserveCredit {
        customer_id,
        order_id: Uuid::new_v4(),
        amount: eur(amount),
    }
}

async fn handler(
    snapshot_every: Option<u64>,
) -> (tempfile::TempDir, Store, CommandHandler<Customer>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default())
        .await
        .unwrap();
    let handler = handler_over(&store, snapshot_every);
    (dir, store, handler)
}

fn handler_over(store: &Store, snapshot_every: Option<u64>) -> CommandHandler<Customer> {
    CommandHandler::new(
        Arc::new(store.clone()),
        HandlerConfig {
            snapshot_every_events: snapshot_every.and_then(NonZeroU64::new),
            ..HandlerConfig::default()
        },
    )
}

/// The state from replaying every stored event, snapshots aside.
async fn replayed(store: &Store, customer: Uuid) -> Customer {
    let events: Vec<CustomerEvent> = stream_events(store, &format!("customer-{customer}"))
        .await
        .iter()
        .map(|e| CustomerEvent::decode(&e.event_type, e.schema_version, &e.data).unwrap())
        .collect();
    replay::<Customer>(&events)
}

/// Registers `customer` (limit 1,000) and reserves `amount` `times` over.
async fn history(customers: &CommandHandler<Customer>, customer: Uuid, times: usize, amount: i64) {
    customers
        .execute(register(customer, 1_000), CommandContext::new())
        .await
        .unwrap();
    for _ in 0..times {
        customers
            .execute(reserve(customer, amount), CommandContext::new())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn snapshots_are_taken_every_n_events_and_loading_starts_from_the_latest() {
    let (_dir, store, customers) = handler(Some(10)).await;
    let customer = Uuid::new_v4();
    history(&customers, customer, 24, 3).await;
    let loaded = customers.load(customer).await.unwrap();
    assert_eq!(loaded.version, 25);
    assert_eq!(loaded.snapshot_version, Some(20));
    assert_eq!(loaded.events_applied, 5);
    assert_eq!(loaded.state, replayed(&store, customer).await);
    assert_eq!(loaded.state.reserved(), Some(eur(72)));
    let snapshot = store
        .load_snapshot(&stream_id::<Customer>(customer).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (snapshot.version, snapshot.schema_version),
        (20, Customer::SNAPSHOT_SCHEMA)
    );
    assert_eq!(store.stats().await.unwrap().snapshots, 1);
}

#[tokio::test]
async fn a_command_whose_load_replays_a_long_history_snapshots_it_once() {
    // 25 events written with snapshots off, as an older release or another
    // writer might have left them.
    let (_dir, store, unsnapshotted) = handler(None).await;
    let customer = Uuid::new_v4();
    history(&unsnapshotted, customer, 24, 3).await;
    let stream = stream_id::<Customer>(customer).unwrap();
    // And a snapshot this build's state schema cannot use.
    store
        .save_snapshot(
            &stream,
            20,
            Customer::SNAPSHOT_SCHEMA + 1,
            Bytes::from_static(b"{}"),
        )
        .await
        .unwrap();
    let customers = handler_over(&store, Some(10));
    // The first command replays all 25 events and leaves a snapshot at
    // the version it loaded, although its own event crosses no multiple
    // of 10; the next load starts from it.
    customers
        .execute(reserve(customer, 3), CommandContext::new())
        .await
        .unwrap();
    let snapshot = store.load_snapshot(&stream).await.unwrap().unwrap();
    assert_eq!(
        (snapshot.version, snapshot.schema_version),
        (25, Customer::SNAPSHOT_SCHEMA)
    );
    let loaded = customers.load(customer).await.unwrap();
    assert_eq!(
        (
            loaded.version,
            loaded.snapshot_version,
            loaded.events_applied
        ),
        (26, Some(25), 1)
    );
    assert_eq!(loaded.state, replayed(&store, customer).await);
    assert_eq!(loaded.state.reserved(), Some(eur(75)));

    // A load that replays fewer events than the interval saves nothing.
    let fresh = handler_over(&store, Some(10));
    fresh
        .execute(reserve(customer, 1), CommandContext::new())
        .await
        .unwrap();
    let snapshot = store.load_snapshot(&stream).await.unwrap().unwrap();
    assert_eq!(snapshot.version, 25);
}

#[tokio::test]
async fn without_a_snapshot_interval_nothing_is_snapshotted() {
    let (_dir, store, customers) = handler(None).await;
    let customer = Uuid::new_v4();
    history(&customers, customer, 30, 1).await;
    let loaded = customers.load(customer).await.unwrap();
    assert_eq!((loaded.snapshot_version, loaded.events_applied), (None, 31));
    assert_eq!(store.stats().await.unwrap().snapshots, 0);
}

#[tokio::test]
async fn unusable_snapshots_are_ignored_and_the_events_replayed() {
    let (_dir, store, customers) = handler(None).await;
    let customer = Uuid::new_v4();
    customers
        .execute(register(customer, 100), CommandContext::new())
        .await
        .unwrap();
    customers
        .execute(reserve(customer, 30), CommandContext::new())
        .await
        .unwrap();
    let stream = stream_id::<Customer>(customer).unwrap();
    let truth = replayed(&store, customer).await;

    // Written under another state schema: the store does not hand it out.
    store
        .save_snapshot(
            &stream,
            2,
            Customer::SNAPSHOT_SCHEMA + 1,
            Bytes::from_static(b"{}"),
        )
        .await
        .unwrap();
    let loaded = customers.load(customer).await.unwrap();
    assert_eq!((loaded.snapshot_version, loaded.events_applied), (None, 2));
    assert_eq!(loaded.state, truth);

    // The right schema but bytes that do not decode (or decode to another
    // shape): logged and ignored.
    for bad in [&b"not json"[..], br#"{"registered": null, "extra": 1}"#] {
        store
            .save_snapshot(
                &stream,
                2,
                Customer::SNAPSHOT_SCHEMA,
                Bytes::from(bad.to_vec()),
            )
            .await
            .unwrap();
        let loaded = customers.load(customer).await.unwrap();
        assert_eq!((loaded.snapshot_version, loaded.events_applied), (None, 2));
        assert_eq!(loaded.state, truth);
    }
    // Commands still decide on the true state.
    let over = customers
        .execute(reserve(customer, 71), CommandContext::new())
        .await;
    assert!(matches!(over, Err(CommandError::Rejected(_))), "{over:?}");
}

#[tokio::test]
async fn a_command_that_changes_nothing_appends_nothing() {
    let (_dir, store, customers) = handler(Some(10)).await;
    let customer = Uuid::new_v4();
    let registered = customers
        .execute(register(customer, 100), CommandContext::new())
        .await
        .unwrap();
    let same = CustomerCommand::ChangeCreditLimit {
        customer_id: customer,
        credit_limit: eur(100),
    };
    let head = store.head().await.unwrap();
    let outcome = customers
        .execute(same.clone(), CommandContext::new())
        .await
        .unwrap();
    assert_eq!(
        (
            outcome.version,
            outcome.position,
            outcome.events.len(),
            outcome.created
        ),
        (1, registered.position, 0, false)
    );
    assert_eq!(store.head().await.unwrap(), head);

    // With a key, the (empty) outcome is still recorded and replayed.
    let context = || {
        CommandContext::new().with_idempotency(Idempotency {
            key: IdempotencyKey::parse("same-limit").unwrap(),
            fingerprint: Fingerprint::of(&[b"same-limit"]),
        })
    };
    let first = customers.execute(same.clone(), context()).await.unwrap();
    assert_eq!(
        store.head().await.unwrap().get(),
        head.get() + 1,
        "the record only"
    );
    let retry = customers.execute(same, context()).await.unwrap();
    assert!(retry.replayed);
    assert_eq!(
        (retry.version, retry.position),
        (first.version, first.position)
    );
}

/// The handler used without HTTP, as a saga would: its own correlation and
/// causation ids and idempotency key end up in the events.
#[tokio::test]
async fn programmatic_commands_carry_their_context() {
    let (_dir, store, customers) = handler(Some(100)).await;
    let customer = Uuid::new_v4();
    customers
        .execute(register(customer, 100), CommandContext::new())
        .await
        .unwrap();
    let (correlation, causation) = (Uuid::new_v4(), Uuid::new_v4());
    let order = Uuid::new_v4();
    let command = || CustomerCommand::ReserveCredit {
        customer_id: customer,
        order_id: order,
        amount: eur(30),
    };
    let context = || {
        CommandContext::new()
            .caused_by(correlation, causation)
            .with_idempotency(Idempotency {
                key: IdempotencyKey::parse(&format!("saga-{order}-reserve")).unwrap(),
                fingerprint: Fingerprint::of(&[b"reserve", order.as_bytes(), b"30 EUR"]),
            })
    };
    let first = customers.execute(command(), context()).await.unwrap();
    assert!(!first.replayed);
    assert_eq!(first.events.len(), 1);
    let again = customers.execute(command(), context()).await.unwrap();
    assert!(again.replayed);
    assert_eq!(
        (
            again.version,
            again.position,
            &again.events,
            again.command_id
        ),
        (
            first.version,
            first.position,
            &first.events,
            first.command_id
        )
    );
    let events = stream_events(&store, &format!("customer-{customer}")).await;
    assert_eq!(events.len(), 2);
    let metadata = events[1].metadata().unwrap();
    assert_eq!(metadata.correlation_id, Some(correlation));
    assert_eq!(metadata.causation_id, Some(causation));
    assert_eq!(metadata.extra["command_id"], first.command_id.to_string());
    assert_eq!(
        metadata.extra["idempotency_key"],
        format!("saga-{order}-reserve")
    );

    // A different command under the same key is refused.
    let other = customers
        .execute(
            reserve(customer, 1),
            CommandContext::new().with_idempotency(Idempotency {
                key: IdempotencyKey::parse(&format!("saga-{order}-reserve")).unwrap(),
                fingerprint: Fingerprint::of(&[b"something else"]),
            }),
        )
        .await;
    assert!(
        matches!(other, Err(CommandError::IdempotencyKeyReused { .. })),
        "{other:?}"
    );
}

/// Two handlers over one store, as two replicas: each caches the states it
/// has seen, and the other makes them stale. A stale state may only decide
/// a command that appends (the store checks the version); a refusal, a
/// no-op or a version precondition is decided again on a fresh load.
#[tokio::test]
async fn a_stale_cached_state_never_decides_an_answer() {
    let (_dir, store, a) = handler(None).await;
    let b = CommandHandler::<Customer>::new(Arc::new(store.clone()), HandlerConfig::default());
    let customer = Uuid::new_v4();
    a.execute(register(customer, 100), CommandContext::new())
        .await
        .unwrap();
    let limit = |amount| CustomerCommand::ChangeCreditLimit {
        customer_id: customer,
        credit_limit: eur(amount),
    };
    // a has cached the customer at version 1 with a limit of 100.
    b.execute(limit(200), CommandContext::new()).await.unwrap();

    // A refusal on a's stale state (150 > 100) would be wrong: 150 fits.
    let reserved = a
        .execute(reserve(customer, 150), CommandContext::new())
        .await
        .unwrap();
    assert_eq!(reserved.version, 3);

    // Stale again; "set the limit to 200" looks like a no-op to a, but b
    // has lowered it meanwhile.
    b.execute(limit(150), CommandContext::new()).await.unwrap();
    let changed = a.execute(limit(200), CommandContext::new()).await.unwrap();
    assert_eq!((changed.version, changed.events.len()), (5, 1));

    // If-Match names the real current version, which a's cache does not know.
    b.execute(limit(300), CommandContext::new()).await.unwrap();
    let matched = a
        .execute(
            reserve(customer, 10),
            CommandContext::new().expecting_version(6),
        )
        .await
        .unwrap();
    assert_eq!(matched.version, 7);

    let state = replayed(&store, customer).await;
    assert_eq!(state.credit_limit(), Some(eur(300)));
    assert_eq!(state.reserved(), Some(eur(160)));
}

/// With the cache off, every command loads the aggregate from the store:
/// the store in front counts the loads, and no decision is ever made on a
/// remembered state (which would show as an append the store refuses).
#[tokio::test]
async fn the_cache_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default())
        .await
        .unwrap();
    let counting = crate::meddling::Meddling::new(store.clone());
    let uncached = CommandHandler::<Customer>::new(
        counting.clone() as Arc<dyn EventStore>,
        HandlerConfig {
            cached_aggregates_max: 0,
            ..HandlerConfig::default()
        },
    );
    let other = CommandHandler::<Customer>::new(Arc::new(store.clone()), HandlerConfig::default());
    let customer = Uuid::new_v4();
    uncached
        .execute(register(customer, 100), CommandContext::new())
        .await
        .unwrap();
    assert_eq!((counting.loads(), counting.appends()), (1, 1));
    other
        .execute(reserve(customer, 60), CommandContext::new())
        .await
        .unwrap();
    // Decided on the store's state (60 reserved), not a remembered one: a
    // cached state would have accepted 50 and tried to append it.
    let over = uncached
        .execute(reserve(customer, 50), CommandContext::new())
        .await;
    assert!(matches!(over, Err(CommandError::Rejected(_))), "{over:?}");
    assert_eq!(
        (counting.loads(), counting.appends()),
        (2, 1),
        "(loads, appends) after the refusal"
    );
    // Nothing changed in between, and still the next command loads.
    uncached
        .execute(reserve(customer, 40), CommandContext::new())
        .await
        .unwrap();
    assert_eq!(
        (counting.loads(), counting.appends()),
        (3, 2),
        "(loads, appends) after a command right after another"
    );
}
