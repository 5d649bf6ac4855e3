//! The customers and orders views from the domain's events alone, with
//! `annals::testkit`: folded by the real projector into SQLite and
//! PostgreSQL, read as rows and through the domain's query routes.

// Test helpers fail the test on what they were given wrong.
#![allow(clippy::unwrap_used)]

use annals::testkit::ProjectionTest;
use annals_credit::domain::customer::{
    CreditLimitChanged, CreditReserved, Customer, CustomerEvent, CustomerForgotten, CustomerName,
    CustomerRegistered, Email, PersonalData,
};
use annals_credit::domain::money::{Currency, Money};
use annals_credit::domain::order::{Order, OrderApproved, OrderEvent, OrderPlaced};
use annals_credit::queries::routes;
use annals_credit::views::{CustomersProjection, OrdersProjection};
use serde_json::json;
use uuid::Uuid;

fn eur(amount: i64) -> Money {
    Money::new(amount, Currency::parse("EUR").unwrap()).unwrap()
}

fn registered(customer_id: Uuid, name: &str, limit: i64) -> CustomerEvent {
    CustomerEvent::Registered(CustomerRegistered {
        customer_id,
        personal: PersonalData {
            name: CustomerName::parse(name).unwrap(),
            email: Email::parse("someone@example.org").unwrap(),
        },
        credit_limit: eur(limit),
    })
}

/// Grace orders 12.00 on a 50.00 line, which is reserved and approved;
/// Alan's line is cut to 0 and he is forgotten.
struct Story {
    grace: Uuid,
    alan: Uuid,
    order: Uuid,
}

impl Story {
    fn new() -> Story {
        Story {
            grace: Uuid::now_v7(),
            alan: Uuid::now_v7(),
            order: Uuid::now_v7(),
        }
    }

    async fn customers(&self, view: &ProjectionTest) {
        let (grace, alan, order) = (self.grace, self.alan, self.order);
        view.given::<Customer>(
            grace,
            [
                registered(grace, "Grace Hopper", 5_000),
                CustomerEvent::CreditReserved(CreditReserved {
                    customer_id: grace,
                    order_id: order,
                    amount: eur(1_200),
                }),
            ],
        )
        .await;
        view.given::<Customer>(
            alan,
            [
                registered(alan, "Alan Turing", 3_000),
                CustomerEvent::CreditLimitChanged(CreditLimitChanged {
                    customer_id: alan,
                    credit_limit: eur(0),
                }),
                CustomerEvent::Forgotten(CustomerForgotten { customer_id: alan }),
            ],
        )
        .await;
    }

    async fn orders(&self, view: &ProjectionTest) {
        let (grace, order) = (self.grace, self.order);
        view.given::<Order>(
            order,
            [
                OrderEvent::Placed(OrderPlaced {
                    order_id: order,
                    customer_id: grace,
                    lines: Vec::new(),
                    total: eur(1_200),
                }),
                OrderEvent::Approved(OrderApproved {
                    order_id: order,
                    customer_id: grace,
                }),
            ],
        )
        .await;
    }
}

async fn customers_show_their_credit(view: ProjectionTest) {
    let story = Story::new();
    story.customers(&view).await;

    let rows = view
        .rows(
            "SELECT id, name, email, credit_limit, reserved, available, version \
             FROM customers ORDER BY id",
        )
        .await;
    assert_eq!(
        rows,
        [
            json!({"id": story.grace.to_string(), "name": "Grace Hopper",
                   "email": "someone@example.org", "credit_limit": 5_000, "reserved": 1_200,
                   "available": 3_800, "version": 2}),
            json!({"id": story.alan.to_string(), "name": event_store::ERASED,
                   "email": event_store::ERASED, "credit_limit": 0, "reserved": 0,
                   "available": 0, "version": 3}),
        ]
    );

    let routes = routes();
    let grace = view
        .get(&routes, &format!("/customers/{}", story.grace))
        .await;
    assert_eq!(grace.status, 200, "{}", grace.body);
    assert_eq!(grace.header("etag"), Some("\"2\""));
    assert_eq!(grace.body["name"], "Grace Hopper");
    let used_up = view.get(&routes, "/customers?credit_available=0").await;
    assert_eq!(used_up.status, 200, "{}", used_up.body);
    let ids: Vec<_> = used_up.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].clone())
        .collect();
    assert_eq!(ids, [json!(story.alan.to_string())], "{}", used_up.body);
    let unknown = view
        .get(&routes, &format!("/customers/{}", Uuid::now_v7()))
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
}

async fn orders_show_how_far_each_got(view: ProjectionTest) {
    let story = Story::new();
    story.orders(&view).await;

    let rows = view
        .rows("SELECT id, customer_id, total, status, version FROM orders")
        .await;
    assert_eq!(
        rows,
        [
            json!({"id": story.order.to_string(), "customer_id": story.grace.to_string(),
                "total": 1_200, "status": "approved", "version": 2})
        ]
    );

    let routes = routes();
    let approved = view
        .get(
            &routes,
            &format!("/orders?customer_id={}&status=approved", story.grace),
        )
        .await;
    assert_eq!(approved.status, 200, "{}", approved.body);
    assert_eq!(
        approved.body["items"][0]["id"],
        story.order.to_string(),
        "{}",
        approved.body
    );
    let pending = view.get(&routes, "/orders?status=pending").await;
    assert_eq!(pending.body["items"], json!([]), "{}", pending.body);
    let bad = view.get(&routes, "/orders?status=lost").await;
    assert_eq!(bad.status, 400, "{}", bad.body);
}

#[tokio::test]
async fn customers_on_sqlite() {
    customers_show_their_credit(ProjectionTest::sqlite(CustomersProjection).await).await;
}

#[tokio::test]
async fn customers_on_postgres() {
    if let Some(view) = ProjectionTest::postgres(CustomersProjection).await {
        customers_show_their_credit(view).await;
    }
}

#[tokio::test]
async fn orders_on_sqlite() {
    orders_show_how_far_each_got(ProjectionTest::sqlite(OrdersProjection).await).await;
}

#[tokio::test]
async fn orders_on_postgres() {
    if let Some(view) = ProjectionTest::postgres(OrdersProjection).await {
        orders_show_how_far_each_got(view).await;
    }
}
