//! The command API over a log holding events of an older schema: a
//! customer registered by the single-currency release (a bare integer
//! credit limit, schema version 1) loads in the new shape and takes
//! commands; a customer with an event no upcaster can read answers a 500
//! problem and nothing is written. The handler loads old events through
//! typed upcasters as through the domain's object steps.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use annals_credit::domain::customer::{CreditReserved, Customer, CustomerCommand};
use annals_credit::domain::money::{Currency, Money};
use command_api::{CommandContext, CommandError, CommandHandler, CommandStore, HandlerConfig};
use event_store::{
    Direction, EventStore, ExpectedVersion, NewEvent, ReadFrom, Store, StoreOptions, StreamId,
    TypedLoader, Upcasters, Upcasting,
};
use serde_json::json;
use uuid::Uuid;

use crate::harness::{Fixture, eur};

async fn append_v1(fixture: &Fixture, customer: Uuid, event_type: &str, data: serde_json::Value) {
    fixture
        .store
        .append(
            &StreamId::new(format!("customer-{customer}")).unwrap(),
            ExpectedVersion::Any,
            vec![NewEvent::json(event_type, &data).unwrap()],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn an_old_customer_takes_commands_and_an_unreadable_one_is_a_500_problem() {
    let fixture = Fixture::new().await;
    let old = Uuid::new_v4();
    append_v1(
        &fixture,
        old,
        "CustomerRegistered",
        json!({"customer_id": old, "name": "Ada", "email": "ada@example.com", "credit_limit": 500}),
    )
    .await;
    let reserve = |amount| json!({"order_id": Uuid::new_v4(), "amount": eur(amount)});
    let path = format!("/customers/{old}/reservations");
    let over = fixture.post(&path, &reserve(501), &[]).await;
    assert_eq!(over.status, 422, "{}", over.text);
    assert_eq!(over.body["credit_limit"], eur(500));
    let ok = fixture.post(&path, &reserve(500), &[]).await;
    assert_eq!(ok.status, 200, "{}", ok.text);

    let broken = Uuid::new_v4();
    append_v1(
        &fixture,
        broken,
        "CustomerRegistered",
        json!({"customer_id": broken, "name": "B", "email": "b@example.com", "credit_limit": "5"}),
    )
    .await;
    let head = fixture.head().await;
    let reply = fixture
        .post(
            &format!("/customers/{broken}/reservations"),
            &reserve(1),
            &[],
        )
        .await;
    assert_eq!(reply.status, 500, "{}", reply.text);
    assert_eq!(
        reply.headers["content-type"], "application/problem+json",
        "{}",
        reply.text
    );
    assert_eq!(reply.body["status"], 500);
    assert_eq!(reply.body["type"], "urn:annals:problem:upcast");
    assert_eq!(reply.body["event_type"], "CustomerRegistered");
    assert_eq!(reply.body["version"], 1);
    assert_eq!(fixture.head().await, head);
}

/// A reservation at schema version 1, as the single-currency release wrote
/// it: the amount in euro cents.
#[derive(serde::Deserialize)]
struct ReservedV1 {
    customer_id: Uuid,
    order_id: Uuid,
    amount: i64,
}

/// The domain's upcasters, with reservations brought from version 1 by a
/// typed step of the test's that counts its calls.
fn typed_reservations(
    calls: &Arc<AtomicUsize>,
    step: fn(ReservedV1) -> Result<CreditReserved, String>,
) -> Upcasters {
    let calls = calls.clone();
    annals_credit::domain::upcasters().step_typed("CreditReserved", 1, move |v1: ReservedV1| {
        calls.fetch_add(1, Ordering::Relaxed);
        step(v1)
    })
}

fn in_euros(v1: ReservedV1) -> Result<CreditReserved, String> {
    Ok(CreditReserved {
        customer_id: v1.customer_id,
        order_id: v1.order_id,
        amount: Money::new(
            v1.amount,
            Currency::parse("EUR").map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?,
    })
}

/// A store holding a customer registered with a limit of 1,000 and `n`
/// reservations of 7, all at version 1.
async fn old_customer(n: usize) -> (tempfile::TempDir, Store, Uuid) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default())
        .await
        .unwrap();
    let customer = Uuid::new_v4();
    let mut events = vec![
        NewEvent::json(
            "CustomerRegistered",
            &json!({"customer_id": customer, "name": "Ada", "email": "ada@example.com",
                    "credit_limit": 1000}),
        )
        .unwrap(),
    ];
    for _ in 0..n {
        events.push(
            NewEvent::json(
                "CreditReserved",
                &json!({"customer_id": customer, "order_id": Uuid::new_v4(), "amount": 7}),
            )
            .unwrap(),
        );
    }
    store
        .append(
            &StreamId::new(format!("customer-{customer}")).unwrap(),
            ExpectedVersion::NoStream,
            events,
        )
        .await
        .unwrap();
    (dir, store, customer)
}

fn eur_money(amount: i64) -> Money {
    Money::new(amount, Currency::parse("EUR").unwrap()).unwrap()
}

fn handler_over(store: &Store, upcasters: Upcasters) -> CommandHandler<Customer> {
    CommandHandler::new(
        Arc::new(Upcasting::new(store.clone(), upcasters).unwrap()),
        HandlerConfig {
            snapshot_every_events: None,
            ..HandlerConfig::default()
        },
    )
}

#[tokio::test]
async fn the_handler_loads_old_events_through_typed_steps_as_through_object_steps() {
    let (_dir, store, customer) = old_customer(20).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let typed = handler_over(&store, typed_reservations(&calls, in_euros));
    let object = handler_over(
        &store,
        annals_credit::domain::upcasters().step_object("CreditReserved", 1, |data| {
            let cents: i64 = data.get("amount")?.ok_or("no amount")?;
            data.set("amount", json!({"amount": cents, "currency": "EUR"}))
        }),
    );
    let loaded = typed.load(customer).await.unwrap();
    assert_eq!(loaded.state, object.load(customer).await.unwrap().state);
    assert_eq!(loaded.state.reserved(), Some(eur_money(140)));
    assert_eq!(loaded.version, 21);
    // Each old reservation went through the counting step once.
    assert_eq!(calls.load(Ordering::Relaxed), 20);

    // A command decided on that state appends at the current version.
    let outcome = typed
        .execute(
            CustomerCommand::ReserveCredit {
                customer_id: customer,
                order_id: Uuid::new_v4(),
                amount: eur_money(860),
            },
            CommandContext::new(),
        )
        .await
        .unwrap();
    assert_eq!(outcome.version, 22);
    let over = typed
        .execute(
            CustomerCommand::ReserveCredit {
                customer_id: customer,
                order_id: Uuid::new_v4(),
                amount: eur_money(1),
            },
            CommandContext::new(),
        )
        .await;
    assert!(matches!(over, Err(CommandError::Rejected(_))), "{over:?}");

    // The JSON read paths get what the typed step's output writes: the
    // same data as the object step's.
    let stream = StreamId::new(format!("customer-{customer}")).unwrap();
    let read = |handler: &CommandHandler<Customer>| {
        let store = handler.store().clone();
        let stream = stream.clone();
        async move {
            store
                .read_stream(&stream, ReadFrom::Start, Direction::Forward, 100)
                .await
                .unwrap()
                .events
        }
    };
    let (typed_events, object_events) = (read(&typed).await, read(&object).await);
    // The layer hands its upcasters to the handler only for a load with
    // events left for typed steps.
    let layered = Upcasting::new(store.clone(), annals_credit::domain::upcasters()).unwrap();
    let (loaded, upcasters) = layered.load_leaving_typed(&stream, None).await.unwrap();
    assert!(upcasters.is_some());
    assert_eq!(loaded.events[0].schema_version, 1, "left as stored");
    let current = StreamId::new(format!("customer-{}", Uuid::new_v4())).unwrap();
    let mut changed = NewEvent::json(
        "CreditLimitChanged",
        &json!({"customer_id": customer, "credit_limit": {"amount": 5, "currency": "EUR"}}),
    )
    .unwrap();
    changed.schema_version = 2;
    store
        .append(&current, ExpectedVersion::NoStream, vec![changed])
        .await
        .unwrap();
    let (loaded, upcasters) = layered.load_leaving_typed(&current, None).await.unwrap();
    assert!(upcasters.is_none());
    assert_eq!(loaded.events.len(), 1);
    assert_eq!(typed_events.len(), 22);
    for (t, o) in typed_events.iter().zip(&object_events) {
        assert_eq!(t.schema_version, o.schema_version);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&t.data).unwrap(),
            serde_json::from_slice::<serde_json::Value>(&o.data).unwrap()
        );
    }
}

#[tokio::test]
async fn a_typed_step_that_fails_fails_the_command_and_a_mistyped_chain_reads_through_json() {
    let (_dir, store, customer) = old_customer(3).await;
    let head = store.head().await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let refusing = handler_over(
        &store,
        typed_reservations(&calls, |_| Err("no currency known".into())),
    );
    let command = || CustomerCommand::ReserveCredit {
        customer_id: customer,
        order_id: Uuid::new_v4(),
        amount: eur_money(1),
    };
    match refusing.execute(command(), CommandContext::new()).await {
        Err(CommandError::Store(event_store::Error::Upcast {
            event_type,
            version,
            detail,
        })) => {
            assert_eq!((event_type.as_str(), version), ("CreditReserved", 1));
            assert!(detail.contains("no currency known"), "{detail}");
        }
        other => panic!("expected an upcast error, got {other:?}"),
    }
    assert_eq!(store.head().await.unwrap(), head, "nothing was written");

    // A chain whose last step returns a type the domain does not take the
    // event from: the handler reads the JSON it writes, as every other
    // read path does, and gets the same state.
    let mistyped = handler_over(
        &store,
        annals_credit::domain::upcasters().step_typed("CreditReserved", 1, |v1: ReservedV1| {
            Ok(
                json!({"customer_id": v1.customer_id, "order_id": v1.order_id,
                      "amount": {"amount": v1.amount, "currency": "EUR"}}),
            )
        }),
    );
    let typed = handler_over(&store, typed_reservations(&calls, in_euros));
    assert_eq!(
        mistyped.load(customer).await.unwrap().state,
        typed.load(customer).await.unwrap().state
    );
    let outcome = mistyped
        .execute(command(), CommandContext::new())
        .await
        .unwrap();
    assert_eq!(outcome.version, 5);
}

/// A handler given the upcasting layer itself decodes the events that typed
/// steps alone bring up to date in Rust; given the layer as a plain store,
/// it loads them as upcast JSON. Both are correct; the first skips writing
/// JSON no one reads.
#[tokio::test]
async fn the_layer_itself_leaves_typed_steps_to_the_handler_and_a_plain_store_does_not() {
    let (_dir, store, customer) = old_customer(2).await;
    let stream = StreamId::new(format!("customer-{customer}")).unwrap();
    let upcasters = annals_credit::domain::upcasters();
    let layer = Arc::new(Upcasting::new(store.clone(), upcasters.clone()).unwrap());

    let typed = CommandStore::from(layer.clone());
    let (loaded, left) = typed.load(&stream, None).await.unwrap();
    assert!(left.is_some(), "the handler gets the upcasters to run");
    assert_eq!(loaded.events[0].schema_version, 1, "left as stored");

    let plain = CommandStore::from(layer as Arc<dyn EventStore>);
    let (loaded, left) = plain.load(&stream, None).await.unwrap();
    assert!(left.is_none());
    let event = &loaded.events[0];
    assert_eq!(
        Some(event.schema_version),
        upcasters.current_version(&event.event_type),
        "upcast on the JSON path"
    );
}
