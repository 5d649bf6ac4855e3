//! Personal-data keys in PostgreSQL: `Shredding` over `PgStore` with its
//! key table, across two stores (two pools, as two processes would have)
//! on one schema. Against a real server, a schema per test.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use event_store::keys::SubjectKey;
use event_store::{
    ERASED, Error, EventStore, ExpectedVersion, NewEvent, PersonalData, Shredding, StreamId,
    SubjectKeys,
};
use pg_store::{PgOptions, PgStore};

use bench_harness::pg::{drop_schema, fresh_schema, skip_without_server, test_server as server};

fn policy() -> PersonalData {
    PersonalData::new()
        .subject_streams("customer-")
        .fields("Registered", ["name"])
}

fn registered(name: &str) -> NewEvent {
    NewEvent::json(
        "Registered",
        &serde_json::json!({ "name": name, "tier": 1 }),
    )
    .unwrap()
}

async fn store(schema: &str) -> Option<PgStore> {
    let options = PgOptions {
        schema: schema.to_owned(),
        connections_max: 4,
        ..PgOptions::default()
    };
    match PgStore::connect(&server(), options).await {
        Ok(store) => Some(store),
        Err(e) => {
            skip_without_server(&e);
            None
        }
    }
}

fn shredding(store: &PgStore) -> Shredding<PgStore> {
    Shredding::new(store.clone(), Arc::new(store.keys()), policy())
}

async fn name_of(store: &impl EventStore, stream: &StreamId) -> serde_json::Value {
    let loaded = store.load(stream, None).await.unwrap();
    let data: serde_json::Value = serde_json::from_slice(&loaded.events[0].data).unwrap();
    data["name"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_live_in_a_table_and_erasure_reaches_every_process() {
    let schema = fresh_schema("keys");
    let Some(one) = store(&schema).await else {
        return;
    };
    let two = store(&schema).await.unwrap();
    let (a, b) = (shredding(&one), shredding(&two));
    let ada = StreamId::new("customer-ada").unwrap();

    a.append(&ada, ExpectedVersion::NoStream, vec![registered("Ada")])
        .await
        .unwrap();
    // Sealed in the log, readable through either process.
    let raw = one.load(&ada, None).await.unwrap();
    assert!(!String::from_utf8_lossy(&raw.events[0].data).contains("Ada"));
    assert_eq!(name_of(&a, &ada).await, "Ada");
    assert_eq!(name_of(&b, &ada).await, "Ada");
    // Snapshots are sealed under the same key.
    b.save_snapshot(&ada, 1, 1, bytes::Bytes::from_static(b"{\"name\":\"Ada\"}"))
        .await
        .unwrap();
    let snapshot = a.load_snapshot(&ada).await.unwrap().unwrap();
    assert_eq!(&snapshot.state[..], b"{\"name\":\"Ada\"}");

    // Forgotten through one process: the key's bytes leave the table and
    // the other process, which cached the key, reads the data as erased
    // once the notification arrives.
    a.forget_subject(&ada).await.unwrap();
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&server())
        .await
        .unwrap();
    let key: Option<Vec<u8>> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT key FROM {schema}.subject_keys WHERE subject = 'customer-ada'"
    )))
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(key, None);
    assert_eq!(name_of(&a, &ada).await, ERASED);
    let deadline = Instant::now() + Duration::from_secs(5);
    while name_of(&b, &ada).await != ERASED {
        assert!(
            Instant::now() < deadline,
            "the other process still decrypts"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(b.load_snapshot(&ada).await.unwrap().is_none());
    // No personal data is stored for a forgotten subject again, by either.
    let refused = b
        .append(&ada, ExpectedVersion::Any, vec![registered("Ada again")])
        .await
        .unwrap_err();
    assert!(
        matches!(refused, Error::KeyStore(ref m) if m.contains("forgotten")),
        "{refused}"
    );

    admin.close().await;
    one.close().await;
    two.close().await;
    drop_schema(&schema).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_making_a_subjects_key_at_once_agree_on_one() {
    let schema = fresh_schema("keyrace");
    let Some(one) = store(&schema).await else {
        return;
    };
    let two = store(&schema).await.unwrap();
    let (k1, k2) = (one.keys(), two.keys());
    let subjects: Vec<String> = (0..200).map(|i| format!("customer-{i}")).collect();
    let names: Vec<&str> = subjects.iter().map(String::as_str).collect();
    let (left, right) = tokio::join!(k1.sealing_keys(&names), k2.sealing_keys(&names));
    let (left, right) = (left.unwrap(), right.unwrap());
    assert_eq!(left, right);
    // Every key is the subject's own (no spares in a table) and distinct.
    assert!(left.iter().all(|(_, spare)| spare.is_none()));
    let distinct: std::collections::HashSet<_> = left.iter().map(|(key, _)| *key).collect();
    assert_eq!(distinct.len(), subjects.len());
    // A subject never given a key is the key table's loss, not an erasure.
    let unknown = k1.keys_of(&["customer-none"]).await.unwrap();
    assert!(matches!(&unknown[0], Err(why) if why.contains("no key")));
    let known = k2.keys_of(&["customer-7"]).await.unwrap();
    assert_eq!(known[0], Ok(SubjectKey::Key(left[7].0)));

    one.close().await;
    two.close().await;
    drop_schema(&schema).await.unwrap();
}
