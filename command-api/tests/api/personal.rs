//! The command API over the crypto-shredding layer, with the policy the
//! customer domain declares: names and e-mail addresses never reach the data
//! directory in clear, and a forgotten customer still takes commands (no
//! rule needs the erased fields).

use std::path::Path;
use std::sync::Arc;

use command_api::domain::customer::shredding_policy;
use event_store::{EventStore, KeyStore, Shredding, Store, StoreOptions, StreamId};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{App, eur};

fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read(&path)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
            {
                hits.push(path.display().to_string());
            }
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_is_encrypted_and_a_forgotten_customer_still_works() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let store = Store::open(dir.path(), StoreOptions::default())
        .await
        .unwrap();
    let keys = Arc::new(KeyStore::open(dir.path().join("keys")).unwrap());
    let shredding = Arc::new(Shredding::new(store.clone(), keys, shredding_policy()));
    let layered = crate::harness::upcasting(Shredding::clone(&shredding));
    let config = command_api::ApiConfig {
        customers: command_api::HandlerConfig {
            snapshot_every_events: std::num::NonZeroU64::new(2),
            ..command_api::HandlerConfig::default()
        },
        ..command_api::ApiConfig::default()
    };
    let app = App::serve_store(dir.clone(), store, layered, config).await;

    let body = json!({"name": "Hedy Lamarr", "email": "hedy.lamarr@example.org",
                      "credit_limit": eur(100)});
    let customer = app.post("/customers", &body).await.id();
    let path = format!("/customers/{customer}/reservations");
    let reserve = |amount| json!({"order_id": Uuid::new_v4().to_string(), "amount": eur(amount)});
    assert_eq!(app.post(&path, &reserve(10)).await.status, 200);
    assert!(files_containing(dir.path(), b"Hedy Lamarr").is_empty());
    assert!(files_containing(dir.path(), b"hedy.lamarr@example.org").is_empty());

    let stream = StreamId::new(format!("customer-{customer}")).unwrap();
    shredding.forget_subject(&stream).await.unwrap();

    // The snapshot (encrypted with the forgotten key) is ignored and the
    // events replayed, with the personal fields erased.
    let reply = app.post(&path, &reserve(90)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    app.post(&path, &reserve(1))
        .await
        .assert_problem(422, "business-rule-violated");
    let registered = shredding
        .read_stream(
            &stream,
            event_store::ReadFrom::Start,
            event_store::Direction::Forward,
            1,
        )
        .await
        .unwrap();
    let data: Value = serde_json::from_slice(&registered.events[0].data).unwrap();
    assert_eq!(data["name"], event_store::ERASED);
    app.stop().await;
}
