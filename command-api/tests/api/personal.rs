//! The command API over the crypto-shredding layer, with the policy the
//! customer domain declares: names and e-mail addresses never reach the data
//! directory in clear, and a forgotten customer still takes commands (no
//! rule needs the erased fields).

use std::path::Path;
use std::sync::Arc;

use annals_credit::domain::customer::shredding_policy;
use event_store::{EventStore, KeyStore, Shredding, Store, StoreOptions, StreamId};
use serde_json::{Value, json};
use uuid::Uuid;

use axum::body::Body;
use axum::http::Request;

use crate::harness::{App, Fixture, eur, register_body, stream_events};

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
    let config = crate::harness::Config {
        customers: command_api::HandlerConfig {
            snapshot_every_events: std::num::NonZeroU64::new(2),
            ..command_api::HandlerConfig::default()
        },
        ..crate::harness::Config::default()
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

/// `DELETE /customers/{id}/personal-data`: erases once, answers the same
/// again without recording anything, keeps the older `POST .../forget`
/// working, and refuses what it cannot do.
#[tokio::test]
async fn deleting_personal_data_is_idempotent_and_refuses_the_unknown() {
    let keys_dir = tempfile::tempdir().unwrap();
    let keys = Arc::new(KeyStore::open(keys_dir.path()).unwrap());
    let fx = Fixture::with_store(command_api::ApiConfig::default(), |store| {
        Arc::new(Shredding::new(store, keys, shredding_policy()))
    })
    .await;
    let id = fx.post("/customers", &register_body(100), &[]).await.id();
    let delete = |path: String| Request::delete(path).body(Body::empty()).unwrap();

    let erased = fx
        .send(delete(format!("/customers/{id}/personal-data")))
        .await;
    assert_eq!(erased.status, 200, "{}", erased.text);
    assert_eq!(erased.version(), 2);
    assert_eq!(erased.header("etag"), Some("\"2\""));
    let events = stream_events(&fx.store, &format!("customer-{id}")).await;
    assert_eq!(events.last().unwrap().event_type, "CustomerForgotten");

    // Again, with an empty JSON object, and through the older route: the
    // same answer, nothing new recorded.
    let again = fx
        .send(
            Request::delete(format!("/customers/{id}/personal-data"))
                .header("content-type", "application/json")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.version(), 2);
    let alias = fx
        .post(&format!("/customers/{id}/forget"), &json!({}), &[])
        .await;
    assert_eq!(alias.status, 200, "{}", alias.text);
    assert_eq!(alias.version(), 2);
    assert_eq!(
        stream_events(&fx.store, &format!("customer-{id}"))
            .await
            .len(),
        2
    );

    fx.send(delete(format!(
        "/customers/{}/personal-data",
        Uuid::new_v4()
    )))
    .await
    .assert_problem(404, "not-found");
    fx.send(delete("/customers/not-a-uuid/personal-data".into()))
        .await
        .assert_problem(400, "invalid-id");
    fx.send(
        Request::delete(format!("/customers/{id}/personal-data"))
            .header("content-type", "application/json")
            .body(Body::from(r#"{"reason": "asked"}"#))
            .unwrap(),
    )
    .await
    .assert_problem(400, "malformed-request");

    // A store that keeps no keys cannot forget anyone.
    let plain = Fixture::new().await;
    let id = plain
        .post("/customers", &register_body(100), &[])
        .await
        .id();
    plain
        .send(delete(format!("/customers/{id}/personal-data")))
        .await
        .assert_problem(501, "not-implemented");
}

/// A key that is damaged or gone is reported as such: the command is
/// refused with its own problem type, never decided on "[erased]" data.
#[tokio::test]
async fn a_damaged_or_missing_key_refuses_commands_instead_of_erasing() {
    let keys_dir = tempfile::tempdir().unwrap();
    let keys_path = keys_dir.path().to_path_buf();
    let keys = Arc::new(KeyStore::open(&keys_path).unwrap());
    let mut first = Fixture::with_store(command_api::ApiConfig::default(), |store| {
        Arc::new(Shredding::new(store, keys, shredding_policy()))
    })
    .await;
    let id = first
        .post("/customers", &register_body(100), &[])
        .await
        .id();
    // A second customer, so that the first one's key record is not in the
    // key log's last batch (where damage cannot be told from a torn write).
    first
        .post("/customers", &register_body(100), &[])
        .await
        .id();
    // The key store belongs to one instance at a time: let go of this one.
    first.router = axum::Router::new();
    let log = keys_path.join(event_store::keys::LOG_FILE);
    let mut bytes = std::fs::read(&log).unwrap();
    // Inside the first customer's key: the spare (kind 5, made at start-up)
    // its assignment (kind 6) names. Header 64 bytes, records 80, the key
    // at 48..80.
    let slot = assigned_slot(&bytes, &format!("customer-{id}")).unwrap();
    let record = 64 + slot as usize * 80;
    assert_eq!(bytes[record], 5);
    bytes[record + 60] ^= 1;
    std::fs::write(&log, bytes).unwrap();

    // A fresh key store (as after a restart) reads the damaged record.
    let reopened = Arc::new(KeyStore::open(&keys_path).unwrap());
    let store = first.store.clone();
    let mut fx = Fixture::with_store(command_api::ApiConfig::default(), move |_| {
        Arc::new(Shredding::new(store, reopened, shredding_policy()))
    })
    .await;
    let reserve = json!({"order_id": Uuid::new_v4().to_string(), "amount": eur(10)});
    let path = format!("/customers/{id}/reservations");
    fx.post(&path, &reserve, &[])
        .await
        .assert_problem(500, "personal-data-unreadable");
    fx.router = axum::Router::new();

    std::fs::remove_file(&log).unwrap();
    let reopened = Arc::new(KeyStore::open(&keys_path).unwrap());
    let store = first.store.clone();
    let fx = Fixture::with_store(command_api::ApiConfig::default(), move |_| {
        Arc::new(Shredding::new(store, reopened, shredding_policy()))
    })
    .await;
    fx.post(&path, &reserve, &[])
        .await
        .assert_problem(500, "personal-data-unreadable");
}

/// Where the key log's assignment record (kind 6) of `stream`'s subject
/// is, and the spare slot it names: its subject hash at 16..48, the slot at
/// 48..56.
fn assignment_of(log: &[u8], stream: &str) -> Option<(usize, u64)> {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(stream.as_bytes());
    (64..log.len())
        .step_by(80)
        .find(|at| log[*at] == 6 && log[at + 16..at + 48] == hash[..])
        .map(|at| {
            let slot = u64::from_le_bytes(log[at + 48..at + 56].try_into().unwrap());
            (at, slot)
        })
}

fn assigned_slot(log: &[u8], stream: &str) -> Option<u64> {
    assignment_of(log, stream).map(|(_, slot)| slot)
}

/// A spare key's assignment that a crash kept from the key log is found
/// again in the event log: the customer reads, takes commands and can be
/// forgotten, and its spare is destroyed.
#[tokio::test]
async fn a_customer_whose_spare_key_assignment_was_lost_reads_and_is_forgotten() {
    let keys_dir = tempfile::tempdir().unwrap();
    let keys_path = keys_dir.path().to_path_buf();
    let keys = Arc::new(KeyStore::open(&keys_path).unwrap());
    let spare_keys = keys.clone();
    let mut first = Fixture::with_store(command_api::ApiConfig::default(), |store| {
        Arc::new(Shredding::new(store, keys, shredding_policy()))
    })
    .await;
    // Spares are made before the first command (at recovery), so every new
    // subject takes one.
    first
        .post("/customers", &register_body(100), &[])
        .await
        .id();
    assert!(spare_keys.spare_keys() > 0);
    let body = json!({"name": "Grace Hopper", "email": "grace@example.org",
                      "credit_limit": eur(100)});
    let id = first.post("/customers", &body, &[]).await.id();
    drop(spare_keys);
    first.router = axum::Router::new();
    // Sealed fields name the spare's slot.
    let stream = StreamId::new(format!("customer-{id}")).unwrap();
    let raw = first
        .store
        .read_stream(
            &stream,
            event_store::ReadFrom::Start,
            event_store::Direction::Forward,
            1,
        )
        .await
        .unwrap();
    let data: Value = serde_json::from_slice(&raw.events[0].data).unwrap();
    assert!(
        data["name"]
            .as_str()
            .unwrap()
            .strip_prefix("annals:a256g1:")
            .and_then(|rest| rest.split_once(':'))
            .is_some_and(|(slot, _)| slot.parse::<u64>().is_ok()),
        "{data}"
    );
    // Grace's assignment (kind 6) was in the key log's last batch, the one
    // the stop wrote; a crash tore it.
    let log = keys_path.join(event_store::keys::LOG_FILE);
    let mut bytes = std::fs::read(&log).unwrap();
    let (at, _) = assignment_of(&bytes, stream.as_str()).unwrap();
    assert!(
        (at + 80..bytes.len())
            .step_by(80)
            .all(|later| bytes[later] == 0 || bytes[later] == 6),
        "only assignments after it"
    );
    bytes[at..at + 80].fill(0);
    std::fs::write(&log, bytes).unwrap();

    let reopened = Arc::new(KeyStore::open(&keys_path).unwrap());
    assert_eq!(reopened.lookup(stream.as_str()).unwrap(), None);
    let shredding = Arc::new(Shredding::new(
        first.store.clone(),
        reopened,
        shredding_policy(),
    ));
    let layered = shredding.clone();
    let fx = Fixture::with_store(command_api::ApiConfig::default(), move |_| layered).await;
    let name = || async {
        let read = shredding
            .read_stream(
                &stream,
                event_store::ReadFrom::Start,
                event_store::Direction::Forward,
                1,
            )
            .await
            .unwrap();
        serde_json::from_slice::<Value>(&read.events[0].data).unwrap()["name"].clone()
    };
    let path = format!("/customers/{id}/reservations");
    let reserve = json!({"order_id": Uuid::new_v4().to_string(), "amount": eur(10)});
    let reply = fx.post(&path, &reserve, &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(name().await, "Grace Hopper");
    let reply = fx
        .send(
            Request::delete(format!("/customers/{id}/personal-data"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert!(reply.status < 300, "{} {}", reply.status, reply.text);
    assert_eq!(name().await, event_store::ERASED);
    // Its spare key record is destroyed (kind 3) in place; the assignment
    // reconciliation wrote again names it.
    let bytes = std::fs::read(&log).unwrap();
    let slot = assigned_slot(&bytes, stream.as_str()).unwrap();
    assert_eq!(bytes[64 + 80 * slot as usize], 3);
}

/// A key log that cannot be written (here every write fails, as on a full
/// disk) makes registrations fail as an unavailable store, with the cause,
/// never as personal data whose key is missing or damaged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_log_that_cannot_be_written_is_an_unavailable_store_not_a_lost_key() {
    let keys_dir = tempfile::tempdir().unwrap();
    let fs = event_store::fs::FaultyFs::new();
    let keys = Arc::new(KeyStore::open_with(keys_dir.path(), Arc::new(fs.clone())).unwrap());
    fs.fail_after(0);
    let app = Fixture::with_store(command_api::ApiConfig::default(), move |store| {
        crate::harness::upcasting(Shredding::new(store, keys, shredding_policy()))
    })
    .await;
    for _ in 0..2 {
        let reply = app.post("/customers", &register_body(100), &[]).await;
        reply.assert_problem(503, "store-unavailable");
        let detail = reply.body["detail"].as_str().unwrap();
        assert!(detail.contains("key log"), "{detail}");
        assert!(detail.contains("injected I/O failure"), "{detail}");
    }
}

/// `POST /customers/{id}/forget` says it is deprecated (RFC 9745
/// `Deprecation`, with the date it was) and names its successor in `Link`,
/// on every answer, refusals included; its successor says neither.
#[tokio::test]
async fn the_deprecated_forget_route_says_so_and_names_its_successor() {
    let keys_dir = tempfile::tempdir().unwrap();
    let keys = Arc::new(KeyStore::open(keys_dir.path()).unwrap());
    let fx = Fixture::with_store(command_api::ApiConfig::default(), |store| {
        Arc::new(Shredding::new(store, keys, shredding_policy()))
    })
    .await;
    let id = fx.post("/customers", &register_body(100), &[]).await.id();
    let unknown = Uuid::new_v4();
    for (customer, status) in [(id.to_string(), 200), (unknown.to_string(), 404)] {
        let reply = fx
            .post(&format!("/customers/{customer}/forget"), &json!({}), &[])
            .await;
        assert_eq!(reply.status, status, "{}", reply.text);
        let deprecation = reply.header("deprecation").unwrap_or_default();
        assert!(
            deprecation.starts_with('@') && deprecation[1..].parse::<u64>().is_ok(),
            "a structured-field date: {deprecation:?}"
        );
        assert_eq!(
            reply.header("link"),
            Some(&*format!(
                "</customers/{customer}/personal-data>; rel=\"successor-version\""
            ))
        );
    }
    let successor = fx
        .send(
            Request::delete(format!("/customers/{id}/personal-data"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(successor.status, 200, "{}", successor.text);
    assert_eq!(successor.header("deprecation"), None);
    assert_eq!(successor.header("link"), None);
}
