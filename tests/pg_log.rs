//! The event log in PostgreSQL, through the binary: the reference domain
//! on two command-API replicas and a projector that use the database
//! directly (no `annals store`), `annals copy` of a data directory, and
//! `annals verify` of the result.

use std::sync::Arc;
use std::time::Duration;

use event_store::{EventStore, KeyStore, Shredding, Store, StoreOptions, StreamId, StreamListing};
use sqlx::Connection;

use crate::pg::PgDatabase;
use crate::process::{Proc, annals, output_within};
use crate::split::{eur, http, query_at, race_for_credit, register_customers, wait_ready};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_domain_runs_on_the_log_in_postgresql() {
    let Some(db) = PgDatabase::create("pglog").await else {
        return;
    };
    let replica = || {
        Proc::start(
            &["command-api", "--store", &db.url, "--listen", "127.0.0.1:0"],
            "command API listening on",
        )
    };
    let replicas = [replica(), replica()];
    let projector = Proc::start(
        &[
            "projector",
            "--store",
            &db.url,
            "--database",
            &db.url,
            "--listen",
            "127.0.0.1:0",
        ],
        "projector listening on",
    );
    let query = Proc::start(
        &[
            "query-api",
            "--database",
            &db.url,
            "--listen",
            "127.0.0.1:0",
        ],
        "query API listening on",
    );
    let http = http();
    for p in [&replicas[0], &replicas[1], &projector, &query] {
        wait_ready(&http, &p.url).await;
    }
    let urls = [replicas[0].url.as_str(), replicas[1].url.as_str()];
    let customers = register_customers(&http, &urls, 6).await;
    // Both replicas race for one customer's credit: the database decides
    // each version once, so exactly the reservations that fit are taken.
    let raced = customers[0].clone();
    let (accepted, position) = race_for_credit(&http, &urls, &raced, 30).await;
    assert_eq!(accepted, 10);
    let view = query_at(&http, &format!("{}/customers/{raced}", query.url), position).await;
    assert_eq!(view["available"], eur(0), "{view}");
    assert_eq!(view["name"], "Customer 0", "{view}");

    // Personal data is sealed in the table, and erased through a replica.
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let plain: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM annals.events WHERE position(convert_to('c1@example.org', 'UTF8') in data) > 0",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(plain, 0, "an email is stored in the clear");
    let erased = &customers[1];
    let response = http
        .delete(format!(
            "{}/customers/{erased}/personal-data",
            replicas[0].url
        ))
        .header("x-requested-with", "test")
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{:?}",
        response.text().await
    );
    let key: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT key FROM annals.subject_keys WHERE subject = $1")
            .bind(format!("customer-{erased}"))
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(key, None, "the key's bytes are gone");
    let head: i64 = sqlx::query_scalar("SELECT position FROM annals.head")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let view = query_at(
        &http,
        &format!("{}/customers/{erased}", query.url),
        head as u64,
    )
    .await;
    assert_eq!(view["name"], "[erased]", "{view}");
    conn.close().await.unwrap();

    // `annals store` in front of the same database is stateless: it
    // serves the log the replicas wrote.
    let dir = tempfile::tempdir().unwrap();
    let store = Proc::start(
        &[
            "store",
            "--store",
            &db.url,
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        "store listening on",
    );
    wait_ready(&http, &store.url).await;
    let served: serde_json::Value = http
        .get(format!("{}/head", store.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served["position"].as_i64(), Some(head), "{served}");

    let out = output_within(
        annals().args(["verify", "--store", &db.url]),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains(": ok"), "{stdout}");
}

/// A copy of the committed single-currency store (old event versions,
/// sealed personal data), with one customer forgotten and a snapshot.
async fn prepared_data_dir() -> tempfile::TempDir {
    let dir = crate::upcast::copy_of_fixture();
    let store = Store::open(dir.path(), StoreOptions::default())
        .await
        .unwrap();
    let keys = Arc::new(KeyStore::open(dir.path().join("keys")).unwrap());
    let layered = Shredding::new(
        store.clone(),
        keys,
        annals_credit::domain::customer::shredding_policy(),
    );
    let customers = store
        .list_streams(StreamListing {
            prefix: "customer-".into(),
            after: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert!(customers.streams.len() >= 2, "{customers:?}");
    let forgotten = StreamId::new(&customers.streams[0].stream_id).unwrap();
    layered.forget_subject(&forgotten).await.unwrap();
    let kept = StreamId::new(&customers.streams[1].stream_id).unwrap();
    layered
        .save_snapshot(&kept, 1, 1, b"{\"state\":1}".to_vec().into())
        .await
        .unwrap();
    store.close().await.unwrap();
    dir
}

fn run(args: &[&str]) -> (bool, String) {
    let out = output_within(annals().args(args), Duration::from_secs(120));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annals_copy_moves_a_data_directory_into_postgresql_as_recorded() {
    let Some(db) = PgDatabase::create("pgcopy").await else {
        return;
    };
    let dir = prepared_data_dir().await;
    let from = dir.path().to_str().unwrap();
    let (ok, out) = run(&["copy", "--from", from, "--to", &db.url]);
    assert!(ok, "{out}");
    assert!(out.contains("verified"), "{out}");
    // Again: nothing left to copy, and still the same.
    let (ok, again) = run(&["copy", "--from", from, "--to", &db.url]);
    assert!(
        ok && again.contains("continuing") && again.contains("verified"),
        "{again}"
    );

    // Read through the application (decrypted, upcast), both logs print
    // the same lines: the forgotten customer erased on both sides.
    let (ok, there) = run(&["dump", "--store", &db.url]);
    assert!(ok, "{there}");
    let (ok, here) = run(&["dump", "--data-dir", from]);
    assert!(ok, "{here}");
    assert_eq!(here, there);
    assert!(here.contains("[erased]"), "{here}");
    // Stored as recorded: the old schema versions stay in the table.
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let old: i64 =
        sqlx::query_scalar("SELECT count(*) FROM annals.events WHERE schema_version = 1")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(old > 0);

    // `annals serve` on the copied log projects the same customers as on
    // the data directory it came from.
    let views = tempfile::tempdir().unwrap();
    let served = Proc::serve(views.path(), &["--store", &db.url]);
    let original = Proc::serve(dir.path(), &[]);
    let http = http();
    let head: i64 = sqlx::query_scalar("SELECT position FROM annals.head")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let customers = |url: &str| format!("{url}/customers?limit=200");
    let there = query_at(&http, &customers(&served.url), head as u64).await;
    let here = query_at(&http, &customers(&original.url), head as u64).await;
    assert!(!here["items"].as_array().unwrap().is_empty(), "{here}");
    assert_eq!(here["items"], there["items"]);
    drop((served, original));

    // verify finds a missing event and names it.
    let (ok, out) = run(&["verify", "--store", &db.url]);
    assert!(ok && out.contains(": ok"), "{out}");
    sqlx::query("DELETE FROM annals.events WHERE position = 3")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let (ok, out) = run(&["verify", "--store", &db.url]);
    assert!(!ok, "{out}");
    assert!(out.contains("DAMAGE positions 3 to 3 are missing"), "{out}");
    // A target holding another log is refused.
    let other = tempfile::tempdir().unwrap();
    let (ok, out) = run(&[
        "copy",
        "--from",
        other.path().to_str().unwrap(),
        "--to",
        &db.url,
    ]);
    assert!(!ok, "{out}");
    assert!(out.contains("another log"), "{out}");
}
