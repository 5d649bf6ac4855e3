//! Crypto-shredding and upcasting on a real store: personal data never
//! reaches the segment files in clear, reads decrypt it on every path,
//! forgetting a subject makes it read as erased everywhere (and leaves the
//! key nowhere on disk), and a lost key store is an error, not an erasure.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use event_store::{
    Direction, ERASED, Error, EventFilter, EventStore, ExpectedVersion, KeyStore, NewEvent,
    PersonalData, Position, ReadFrom, Shredding, Store, StoreOptions, Upcasters, Upcasting,
};
use serde_json::{Value, json};

use crate::common::{next_within, open, sid};

fn policy() -> PersonalData {
    PersonalData::new()
        .subject_streams("customer-")
        .fields("CustomerRegistered", ["name", "email"])
}

async fn shredding(dir: &Path) -> Shredding<Store> {
    let store = open(dir, StoreOptions::default()).await;
    let keys = Arc::new(KeyStore::open(dir.join("keys")).unwrap());
    Shredding::new(store, keys, policy())
}

fn registered(name: &str, email: &str) -> NewEvent {
    NewEvent::json(
        "CustomerRegistered",
        &json!({"customer_id": "c1", "name": name, "email": email, "credit_limit": {"amount": 5000, "currency": "EUR"}}),
    )
    .unwrap()
}

fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
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

#[tokio::test]
async fn personal_data_is_encrypted_at_rest_and_erased_on_forget() {
    let dir = tempfile::tempdir().unwrap();
    let store = shredding(dir.path()).await;
    let ada = sid("customer-ada");
    let bob = sid("customer-bob");
    store
        .append(
            &ada,
            ExpectedVersion::NoStream,
            vec![registered("Ada Lovelace", "ada@example.org")],
        )
        .await
        .unwrap();
    store
        .append(
            &bob,
            ExpectedVersion::NoStream,
            vec![registered("Bob Babbage", "bob@example.org")],
        )
        .await
        .unwrap();
    store
        .append(
            &ada,
            ExpectedVersion::Exact(1),
            vec![NewEvent::new("CreditLimitChanged", r#"{"amount":9}"#)],
        )
        .await
        .unwrap();
    store
        .save_snapshot(
            &ada,
            2,
            1,
            Bytes::from_static(b"{\"name\":\"Ada Lovelace\"}"),
        )
        .await
        .unwrap();

    // Nothing personal in clear in the log or the snapshots.
    for secret in ["Ada Lovelace", "ada@example.org", "Bob Babbage"] {
        let hits = files_containing(dir.path(), secret.as_bytes());
        assert!(hits.is_empty(), "{secret:?} found in {hits:?}");
    }

    // Every read path decrypts.
    let read = |events: &[event_store::RecordedEvent]| -> Value {
        serde_json::from_slice(&events[0].data).unwrap()
    };
    let slice = store
        .read_stream(&ada, ReadFrom::Start, Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(read(&slice.events)["name"], "Ada Lovelace");
    assert_eq!(
        read(&store.read_all(Position::START, 10).await.unwrap())["email"],
        "ada@example.org"
    );
    let mut sub = store
        .subscribe(Position::START, EventFilter::all())
        .await
        .unwrap();
    let first = next_within(&mut sub).await.unwrap().unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&first.data).unwrap()["name"],
        "Ada Lovelace"
    );
    let loaded = store.load(&ada, Some(1)).await.unwrap();
    assert_eq!(
        &loaded.snapshot.unwrap().state[..],
        b"{\"name\":\"Ada Lovelace\"}"
    );

    // Forget Ada; keep her key to look for it afterwards. Before the
    // erasure its raw bytes are on disk (in the key log), so the scan
    // below can find them.
    let Ok(event_store::keys::SubjectKey::Key(ada_key)) =
        store.keys().keys_of(&["customer-ada"]).await.unwrap()[0].clone()
    else {
        panic!("Ada has a key");
    };
    assert_eq!(
        files_containing(dir.path(), &ada_key),
        vec![
            dir.path()
                .join("keys")
                .join(event_store::keys::LOG_FILE)
                .display()
                .to_string()
        ]
    );
    store.forget_subject(&ada).await.unwrap();
    let slice = store
        .read_stream(&ada, ReadFrom::Start, Direction::Forward, 10)
        .await
        .unwrap();
    let data = read(&slice.events);
    assert_eq!(
        (data["name"].as_str(), data["email"].as_str()),
        (Some(ERASED), Some(ERASED))
    );
    // The rest of the history is intact, and so is Bob.
    assert_eq!(data["credit_limit"]["amount"], 5000);
    assert_eq!(slice.events.len(), 2);
    let all = store.read_all(Position::START, 10).await.unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&all[1].data).unwrap()["name"],
        "Bob Babbage"
    );
    // The snapshot is gone with the key: the stream loads from its events.
    let loaded = store.load(&ada, Some(1)).await.unwrap();
    assert!(loaded.snapshot.is_none());
    assert_eq!(loaded.events.len(), 2);
    // New events without personal data are still accepted.
    store
        .append(
            &ada,
            ExpectedVersion::Exact(2),
            vec![NewEvent::new("CreditLimitChanged", r#"{"amount":1}"#)],
        )
        .await
        .unwrap();
    // Nobody can recover the key from the data directory.
    let hits = files_containing(dir.path(), &ada_key);
    assert!(hits.is_empty(), "the forgotten key survived in {hits:?}");

    // After a reopen, the same (the key store belongs to one instance at a
    // time; the subscription holds this one).
    store.inner().close().await.unwrap();
    drop((store, sub));
    let store = shredding(dir.path()).await;
    let slice = store
        .read_stream(&ada, ReadFrom::Start, Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(read(&slice.events)["name"], ERASED);
}

#[tokio::test]
async fn a_lost_key_store_is_an_error_not_an_erasure() {
    let dir = tempfile::tempdir().unwrap();
    let store = shredding(dir.path()).await;
    let ada = sid("customer-ada");
    store
        .append(
            &ada,
            ExpectedVersion::NoStream,
            vec![registered("Ada", "ada@example.org")],
        )
        .await
        .unwrap();
    store.inner().close().await.unwrap();
    drop(store);
    std::fs::remove_dir_all(dir.path().join("keys")).unwrap();
    let store = shredding(dir.path()).await;
    match store
        .read_stream(&ada, ReadFrom::Start, Direction::Forward, 10)
        .await
    {
        Err(Error::KeyStore(why)) => assert!(why.contains("customer-ada"), "{why}"),
        other => panic!("expected a key store error, got {other:?}"),
    }
}

#[tokio::test]
async fn upcasting_runs_after_decryption_on_every_read_path() {
    let dir = tempfile::tempdir().unwrap();
    let store = shredding(dir.path()).await;
    let ada = sid("customer-ada");
    // Version 1 of the event had no currency on its limit.
    store
        .append(
            &ada,
            ExpectedVersion::NoStream,
            vec![
                NewEvent::json(
                    "CustomerRegistered",
                    &json!({"name": "Ada", "email": "a@b.c", "credit_limit": 100}),
                )
                .unwrap(),
            ],
        )
        .await
        .unwrap();
    let upcasters =
        Upcasters::new()
            .current("CustomerRegistered", 2)
            .step("CustomerRegistered", 1, |mut v| {
                let amount = v["credit_limit"].take();
                v["credit_limit"] = json!({"amount": amount, "currency": "EUR"});
                Ok(v)
            });
    let store = Upcasting::new(store, upcasters).unwrap();
    let check = |data: &[u8]| {
        let v: Value = serde_json::from_slice(data).unwrap();
        assert_eq!(v["credit_limit"], json!({"amount": 100, "currency": "EUR"}));
        assert_eq!(v["name"], "Ada");
    };
    let slice = store
        .read_stream(&ada, ReadFrom::Start, Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(slice.events[0].schema_version, 2);
    check(&slice.events[0].data);
    check(&store.read_all(Position::START, 10).await.unwrap()[0].data);
    check(&store.load(&ada, None).await.unwrap().events[0].data);
    let mut sub = store
        .subscribe(Position::START, EventFilter::all())
        .await
        .unwrap();
    check(&next_within(&mut sub).await.unwrap().unwrap().data);
    // Erasure goes through the upcasting layer too.
    store.forget_subject(&ada).await.unwrap();
    let slice = store
        .read_stream(&ada, ReadFrom::Start, Direction::Forward, 10)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&slice.events[0].data).unwrap();
    assert_eq!(v["name"], ERASED);
    assert_eq!(v["credit_limit"]["currency"], "EUR");
}

/// Upcast events are cached for loads and stream reads; an erasure that
/// goes around the upcasting layer (to the shredding layer beneath it) must
/// still never let the cached plaintext be served.
#[tokio::test]
async fn cached_upcasts_are_never_served_after_an_erasure_beneath_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = shredding(dir.path()).await;
    let ada = sid("customer-ada");
    store
        .append(
            &ada,
            ExpectedVersion::NoStream,
            vec![
                NewEvent::json(
                    "CustomerRegistered",
                    &json!({"name": "Ada Lovelace", "email": "a@b.c", "credit_limit": 100}),
                )
                .unwrap(),
            ],
        )
        .await
        .unwrap();
    let steps = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = steps.clone();
    let upcasters = Upcasters::new()
        .current("CustomerRegistered", 2)
        .step_object("CustomerRegistered", 1, move |data| {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let amount: i64 = data.get("credit_limit")?.ok_or("no limit")?;
            data.set("credit_limit", json!({"amount": amount, "currency": "EUR"}))
        });
    let store = Upcasting::new(store, upcasters).unwrap();
    let name = |data: &[u8]| serde_json::from_slice::<Value>(data).unwrap()["name"].clone();
    for _ in 0..3 {
        let loaded = store.load(&ada, None).await.unwrap();
        assert_eq!(name(&loaded.events[0].data), "Ada Lovelace");
        assert_eq!(loaded.events[0].schema_version, 2);
    }
    // Upcast once, then served from the cache.
    assert_eq!(steps.load(std::sync::atomic::Ordering::Relaxed), 1);
    store.inner().forget_subject(&ada).await.unwrap();
    let loaded = store.load(&ada, None).await.unwrap();
    assert_eq!(name(&loaded.events[0].data), ERASED);
    let v: Value = serde_json::from_slice(&loaded.events[0].data).unwrap();
    assert_eq!(v["credit_limit"], json!({"amount": 100, "currency": "EUR"}));
    let slice = store
        .read_stream(&ada, ReadFrom::Start, Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(name(&slice.events[0].data), ERASED);
    assert_eq!(steps.load(std::sync::atomic::Ordering::Relaxed), 2);
}

/// `verify` reads the key log too: its subjects, and a record that fails
/// its checksum as damage (a key that may be lost), never writing.
#[tokio::test]
async fn verify_counts_the_key_log_and_reports_its_damage() {
    let dir = tempfile::tempdir().unwrap();
    let store = shredding(dir.path()).await;
    for who in ["ada", "bob", "cy"] {
        store
            .append(
                &sid(&format!("customer-{who}")),
                ExpectedVersion::NoStream,
                vec![registered(who, &format!("{who}@example.com"))],
            )
            .await
            .unwrap();
    }
    store.forget_subject(&sid("customer-bob")).await.unwrap();
    drop(store);
    let report = event_store::verify(dir.path()).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!((report.key_subjects, report.erased_subjects), (2, 1));

    let log = dir.path().join("keys").join(event_store::keys::LOG_FILE);
    let mut bytes = std::fs::read(&log).unwrap();
    // The first record: always in an earlier batch than the erasure's.
    let header = 64;
    bytes[header + 60] ^= 1;
    std::fs::write(&log, &bytes).unwrap();
    let report = event_store::verify(dir.path()).unwrap();
    assert!(!report.is_ok());
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.file == log && p.offset == header as u64),
        "{:?}",
        report.problems
    );
    // Read only: the bytes are as left.
    assert_eq!(std::fs::read(&log).unwrap(), bytes);
}

/// Sealing uses a fresh nonce, so a retried append of personal data reaches
/// the log as other bytes: it is still a retry when it means the same, and
/// a conflict when it does not.
#[tokio::test]
async fn a_retried_append_of_personal_data_is_recognised() {
    let dir = tempfile::tempdir().unwrap();
    let store = shredding(dir.path()).await;
    let s = sid("customer-c1");
    let first = registered("Ada Lovelace", "ada@example.org");
    let written = store
        .append(&s, ExpectedVersion::NoStream, vec![first.clone()])
        .await
        .unwrap();
    let again = store
        .append(&s, ExpectedVersion::NoStream, vec![first.clone()])
        .await
        .unwrap();
    assert!(again.already_committed);
    assert_eq!(again.first_position, written.first_position);

    let mut other = registered("Grace Hopper", "grace@example.org");
    other.id = first.id;
    match store
        .append(&s, ExpectedVersion::NoStream, vec![other])
        .await
    {
        Err(Error::EventIdConflict(c)) => assert_eq!(c.event_id, first.id),
        other => panic!("expected an id conflict, got {other:?}"),
    }
    assert_eq!(store.head().await.unwrap(), written.last_position);
}
