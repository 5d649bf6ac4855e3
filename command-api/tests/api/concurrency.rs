//! Concurrent commands on one aggregate: the classic race for credit (on
//! one API instance and across two), and the conflict paths — a writer
//! slipping in between load and append is retried up to the bound and then
//! answered 409; with If-Match it is 412 at once.

use std::sync::Arc;

use command_api::HandlerConfig;
use event_store::{Store, StoreOptions, StreamId};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{App, Reply, eur, register_body};
use crate::meddling::{Intrusion, Meddling};

/// Fires `count` reservations of `amount` at once, spread over `apps`.
async fn race(apps: &[&App], customer: Uuid, count: usize, amount: i64) -> Vec<Reply> {
    let path = format!("/customers/{customer}/reservations");
    let requests = (0..count).map(|i| {
        let app = apps[i % apps.len()];
        let body = json!({"order_id": Uuid::new_v4().to_string(), "amount": eur(amount)});
        let path = path.clone();
        async move { app.post(&path, &body).await }
    });
    futures_util::future::join_all(requests).await
}

/// What the stream says was reserved, by replaying its events.
async fn reserved_in_stream(store: &Store, customer: Uuid) -> (i64, usize) {
    let events = crate::harness::stream_events(store, &format!("customer-{customer}")).await;
    let reservations: Vec<Value> = events
        .iter()
        .filter(|e| e.event_type == "CreditReserved")
        .map(|e| serde_json::from_slice(&e.data).unwrap())
        .collect();
    let sum = reservations
        .iter()
        .map(|r| r["amount"]["amount"].as_i64().unwrap())
        .sum();
    (sum, reservations.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_reservations_race_for_credit_that_fits_thirty() {
    let app = App::start().await;
    // 30 reservations of 7 fit in 215; the 31st would need 217.
    let customer = app.post("/customers", &register_body(215)).await.id();
    let replies = race(&[&app], customer, 100, 7).await;

    let accepted = replies.iter().filter(|r| r.status == 200).count();
    for reply in replies.iter().filter(|r| r.status != 200) {
        reply.assert_problem(422, "business-rule-violated");
        assert_eq!(reply.body["rule"], "credit-limit-exceeded");
    }
    // Every command saw the state its predecessors left: the credit fills
    // up exactly, and the rest are refused by the rule, not by conflicts.
    assert_eq!(accepted, 30);
    let (sum, count) = reserved_in_stream(&app.store, customer).await;
    assert_eq!((sum, count), (210, 30));
    let mut versions: Vec<u64> = replies
        .iter()
        .filter(|r| r.status == 200)
        .map(Reply::version)
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, (2..=31).collect::<Vec<u64>>());
    let state = app
        .commands
        .handler::<annals_credit::domain::customer::Customer>()
        .load(customer)
        .await
        .unwrap();
    assert_eq!(state.state.reserved().map(|m| m.amount()), Some(210));
    app.stop().await;
}

/// Two API instances over one store do not share their in-process locks:
/// their commands really conflict in the store, are reloaded and retried,
/// and the invariant still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_race_across_two_replicas_keeps_the_invariant() {
    let config = crate::harness::Config {
        customers: HandlerConfig {
            conflict_retries_max: 200,
            ..HandlerConfig::default()
        },
        ..crate::harness::Config::default()
    };
    let a = App::start_with(config.clone()).await;
    let b = App::serve_store(
        a.dir.clone(),
        a.store.clone(),
        Arc::new(a.store.clone()),
        config,
    )
    .await;
    let customer = a.post("/customers", &register_body(215)).await.id();
    let replies = race(&[&a, &b], customer, 100, 7).await;
    let accepted = replies.iter().filter(|r| r.status == 200).count();
    for reply in replies.iter().filter(|r| r.status != 200) {
        reply.assert_problem(422, "business-rule-violated");
    }
    assert_eq!(accepted, 30);
    assert_eq!(reserved_in_stream(&a.store, customer).await, (210, 30));
}

/// Without retries, many commands of a cross-replica race give up with 409
/// (typically a quarter of them); whatever the mix of answers, the accepted
/// ones are exactly the stream's reservations and never exceed the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_replica_race_without_retries_never_overbooks() {
    let config = crate::harness::Config {
        customers: HandlerConfig {
            conflict_retries_max: 0,
            ..HandlerConfig::default()
        },
        ..crate::harness::Config::default()
    };
    let a = App::start_with(config.clone()).await;
    let b = App::serve_store(
        a.dir.clone(),
        a.store.clone(),
        Arc::new(a.store.clone()),
        config,
    )
    .await;
    let customer = a.post("/customers", &register_body(215)).await.id();
    let replies = race(&[&a, &b], customer, 100, 7).await;
    let mut accepted_sum = 0;
    let mut conflicts = 0;
    for reply in &replies {
        match reply.status {
            200 => accepted_sum += 7,
            409 => {
                reply.assert_problem(409, "concurrency-conflict");
                assert_eq!(reply.body["attempts"], 1);
                conflicts += 1;
            }
            _ => reply.assert_problem(422, "business-rule-violated"),
        }
    }
    // Each replica decides on the state it last saw, so while the other one
    // appends, its decisions go stale: some lose in the store. None losing
    // would mean the replicas never raced, and the invariant was not put
    // to the test.
    assert!(
        conflicts > 0,
        "no request lost the race; statuses: {:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let (sum, _) = reserved_in_stream(&a.store, customer).await;
    assert_eq!(sum, accepted_sum);
    assert!(sum <= 215);
}

async fn meddled_app(retries: u32) -> (App, Arc<Meddling>) {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let store = Store::open(dir.path(), StoreOptions::default())
        .await
        .unwrap();
    let meddling = Meddling::new(store.clone());
    let config = crate::harness::Config {
        customers: HandlerConfig {
            conflict_retries_max: retries,
            ..HandlerConfig::default()
        },
        ..crate::harness::Config::default()
    };
    let app = App::serve_store(dir, store, meddling.clone(), config).await;
    (app, meddling)
}

fn limit_change(customer: Uuid, amount: i64) -> Intrusion {
    Intrusion {
        stream: StreamId::new(format!("customer-{customer}")).unwrap(),
        event_type: "CreditLimitChanged",
        data: json!({"customer_id": customer.to_string(), "credit_limit": eur(amount)}).to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_is_reloaded_and_decided_again_on_the_new_state() {
    let (app, meddling) = meddled_app(3).await;
    let customer = app.post("/customers", &register_body(100)).await.id();
    // Before each of the first three appends, someone lowers the limit to 40.
    meddling.intrude(limit_change(customer, 40), 3);
    let path = format!("/customers/{customer}/reservations");
    let fits = json!({"order_id": Uuid::new_v4().to_string(), "amount": eur(40)});
    let reply = app.post(&path, &fits).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    // Three intruding events, then ours on the fourth attempt.
    assert_eq!(reply.version(), 5);
    assert_eq!(meddling.intrusions_left(), 0);

    // The retry decides on the reloaded state: a reservation that fitted
    // when first decided no longer does once someone lowered the limit.
    let other = app.post("/customers", &register_body(100)).await.id();
    meddling.intrude(limit_change(other, 50), 1);
    let sixty = json!({"order_id": Uuid::new_v4().to_string(), "amount": eur(60)});
    let refused = app
        .post(&format!("/customers/{other}/reservations"), &sixty)
        .await;
    refused.assert_problem(422, "business-rule-violated");
    assert_eq!(refused.body["rule"], "credit-limit-exceeded");
    assert_eq!(refused.body["credit_limit"], eur(50));
    assert_eq!(meddling.intrusions_left(), 0);
    assert_eq!(reserved_in_stream(&app.store, other).await, (0, 0));
    assert_eq!(reserved_in_stream(&app.store, customer).await, (40, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_past_the_retry_bound_are_409_and_write_nothing_of_ours() {
    let (app, meddling) = meddled_app(2).await;
    let customer = app.post("/customers", &register_body(100)).await.id();
    meddling.intrude(limit_change(customer, 100), 3);
    let path = format!("/customers/{customer}/reservations");
    let body = json!({"order_id": Uuid::new_v4().to_string(), "amount": eur(10)});
    let reply = app.post(&path, &body).await;
    reply.assert_problem(409, "concurrency-conflict");
    assert_eq!(reply.body["attempts"], 3);
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(reserved_in_stream(&app.store, customer).await, (0, 0));
    // The same command succeeds once the interference stops.
    assert_eq!(app.post(&path, &body).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_is_never_retried() {
    let (app, meddling) = meddled_app(5).await;
    let customer = app.post("/customers", &register_body(100)).await.id();
    meddling.intrude(limit_change(customer, 90), 1);
    let path = format!("/customers/{customer}/reservations");
    let body = json!({"order_id": Uuid::new_v4().to_string(), "amount": eur(10)});
    // Version 1 is current when the command loads; the intruder moves it to
    // 2 before the append.
    let reply = app.post_with(&path, &body, &[("if-match", "\"1\"")]).await;
    reply.assert_problem(412, "precondition-failed");
    assert_eq!(reply.body["expected_version"], 1);
    assert_eq!(reply.body["current_version"], 2);
    assert_eq!(reserved_in_stream(&app.store, customer).await, (0, 0));
    let current = app.post_with(&path, &body, &[("if-match", "\"2\"")]).await;
    assert_eq!(current.status, 200, "{}", current.text);
}
