//! The command API over a log holding events of an older schema: a
//! customer registered by the single-currency release (a bare integer
//! credit limit, schema version 1) loads in the new shape and takes
//! commands; a customer with an event no upcaster can read answers a 500
//! problem and nothing is written.

use event_store::{EventStore, ExpectedVersion, NewEvent, StreamId};
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
