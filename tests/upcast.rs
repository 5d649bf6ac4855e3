//! A data directory written by the single-currency release, opened by this
//! build. The committed fixture `tests/data/store-v1` holds what that
//! release wrote: customer events whose credit limits and amounts are bare
//! integers of euro cents at schema version 1, order events, the saga's
//! checkpoint, and the customers' personal fields encrypted under the keys
//! in its `keys/` directory. `write_store_v1` below regenerates it.
//!
//! Each test works on a copy (opening a data directory takes its lock and
//! may run recovery) and checks that the old events come out at version 2
//! everywhere: aggregates load and take commands, `annals serve` projects
//! them, a rebuild (online and offline) yields the same rows, and the store
//! over HTTP serves version 2 data. An event no upcaster can read stops
//! only the views that read its type, with the error in their status.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use event_store::{Clock, ExpectedVersion, NewEvent, StoreOptions, StreamId, Timestamp};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::process::{Proc, annals, output_within};
use crate::split::{command, eur, http, query_at, wait_ready};

const ADA: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00a1);
const GRACE: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00a2);
const HEDY: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00a3);
const APPROVED: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00b1);
const REJECTED: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00b2);
const CANCELLED: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00b3);

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/store-v1")
}

/// A copy of the fixture in a fresh temporary directory.
pub fn copy_of_fixture() -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy(&fixture(), dir.path());
    dir
}

/// The single-currency release's log, in commit order: stream, event type,
/// data (with the version 1 shapes).
fn history() -> Vec<(String, &'static str, Value)> {
    let customer = |id: Uuid| format!("customer-{id}");
    let order = |id: Uuid| format!("order-{id}");
    let placed = |id: Uuid, customer: Uuid, total: i64, lines: Value| json!({"order_id": id, "customer_id": customer, "lines": lines, "total": eur(total)});
    vec![
        (
            customer(ADA),
            "CustomerRegistered",
            json!({"customer_id": ADA, "name": "Ada Lovelace", "email": "ada@example.com",
                   "credit_limit": 100_000}),
        ),
        (
            customer(GRACE),
            "CustomerRegistered",
            json!({"customer_id": GRACE, "name": "Grace Hopper", "email": "grace@example.com",
                   "credit_limit": 50_000}),
        ),
        (
            customer(HEDY),
            "CustomerRegistered",
            json!({"customer_id": HEDY, "name": "Hedy Lamarr", "email": "hedy@example.org",
                   "credit_limit": 20_000}),
        ),
        (
            customer(GRACE),
            "CreditLimitChanged",
            json!({"customer_id": GRACE, "credit_limit": 30_000}),
        ),
        (
            order(APPROVED),
            "OrderPlaced",
            placed(
                APPROVED,
                ADA,
                3_000,
                json!([{"sku": "BOOK-1843", "quantity": 2, "unit_price": eur(1_500)}]),
            ),
        ),
        (
            customer(ADA),
            "CreditReserved",
            json!({"customer_id": ADA, "order_id": APPROVED, "amount": 3_000}),
        ),
        (
            order(APPROVED),
            "OrderApproved",
            json!({"order_id": APPROVED, "customer_id": ADA}),
        ),
        (
            order(REJECTED),
            "OrderPlaced",
            placed(REJECTED, HEDY, 25_000, json!([])),
        ),
        (
            order(REJECTED),
            "OrderRejected",
            json!({"order_id": REJECTED, "customer_id": HEDY,
                   "reason": "credit-limit-exceeded: reserving 250.00 would exceed the credit limit of 200.00"}),
        ),
        (
            order(CANCELLED),
            "OrderPlaced",
            placed(CANCELLED, GRACE, 10_000, json!([])),
        ),
        (
            customer(GRACE),
            "CreditReserved",
            json!({"customer_id": GRACE, "order_id": CANCELLED, "amount": 10_000}),
        ),
        (
            order(CANCELLED),
            "OrderApproved",
            json!({"order_id": CANCELLED, "customer_id": GRACE}),
        ),
        (
            order(CANCELLED),
            "OrderCancelled",
            json!({"order_id": CANCELLED, "customer_id": GRACE, "reason": "ordered twice"}),
        ),
        (
            customer(GRACE),
            "CreditReleased",
            json!({"customer_id": GRACE, "order_id": CANCELLED, "amount": 10_000}),
        ),
    ]
}

/// A clock stuck at 2024-03-01T00:00:00Z, moving a second per reading, so
/// the fixture's times do not depend on when it was written.
#[derive(Debug, Default)]
struct FixtureClock(std::sync::atomic::AtomicI64);

impl Clock for FixtureClock {
    fn now(&self) -> Timestamp {
        let tick = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Timestamp(1_709_251_200_000_000 + tick * 1_000_000)
    }
}

/// Rewrites `tests/data/store-v1` the way the single-currency release wrote
/// its data: through the real store and the crypto-shredding layer (so the
/// personal fields are encrypted and `keys/` holds the keys), every event at
/// schema version 1, and the saga's checkpoint at the head as that
/// release's `annals serve` left it. Run by hand:
///
/// `cargo test --release --test integration upcast::write_store_v1 -- --ignored`
#[tokio::test]
#[ignore = "rewrites the committed fixture; run by hand to regenerate it"]
async fn write_store_v1() {
    use event_store::EventStore;
    let dir = fixture();
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    let store = event_store::Store::open(
        &dir,
        StoreOptions {
            clock: Arc::new(FixtureClock::default()),
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    let keys = Arc::new(event_store::KeyStore::open(dir.join("keys")).unwrap());
    let layered = event_store::Shredding::new(
        store.clone(),
        keys,
        annals_credit::domain::customer::shredding_policy(),
    );
    for (stream, event_type, data) in history() {
        layered
            .append(
                &StreamId::new(&stream).unwrap(),
                ExpectedVersion::Any,
                vec![NewEvent::json(event_type, &data).unwrap()],
            )
            .await
            .unwrap();
    }
    let head = layered.head().await.unwrap();
    layered
        .append(
            &StreamId::new(annals_credit::saga::CHECKPOINT_STREAM).unwrap(),
            ExpectedVersion::Any,
            vec![
                NewEvent::json(
                    command_api::saga::CHECKPOINT_EVENT_TYPE,
                    &json!({"position": head.0}),
                )
                .unwrap(),
            ],
        )
        .await
        .unwrap();
    store.close().await.unwrap();
    // The lock file is the writer's, not data.
    let _ = std::fs::remove_file(dir.join("LOCK"));
}

/// Waits until `url/projections` reports every projection live at `head`
/// or later.
async fn wait_projected(http: &reqwest::Client, url: &str, head: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status: Value = http
            .get(format!("{url}/projections"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let caught_up = status["projections"].as_array().is_some_and(|all| {
            all.iter()
                .all(|p| p["position"].as_u64().is_some_and(|p| p >= head))
        });
        if caught_up {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not projected to {head}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let response = http.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The customers and orders views, as the query API lists them.
async fn rows(http: &reqwest::Client, url: &str, position: u64) -> (Value, Value) {
    let customers = query_at(http, &format!("{url}/customers?limit=100"), position).await;
    let orders = query_at(http, &format!("{url}/orders?limit=100"), position).await;
    (customers["items"].clone(), orders["items"].clone())
}

fn serve(dir: &Path) -> Proc {
    Proc::start(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.to_str().unwrap(),
        ],
        "listening on",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_written_by_the_single_currency_release_serves_money_in_euros() {
    let dir = copy_of_fixture();
    let mut serve = serve(dir.path());
    let url = serve.url.clone();
    let http = http();
    wait_ready(&http, &url).await;
    let fixture_head = history().len() as u64 + 1;

    // The views were built from the version 1 events.
    let ada = query_at(&http, &format!("{url}/customers/{ADA}"), fixture_head).await;
    assert_eq!(ada["name"], "Ada Lovelace", "{ada}");
    assert_eq!(ada["credit_limit"], eur(100_000), "{ada}");
    assert_eq!(ada["reserved"], eur(3_000), "{ada}");
    let grace = query_at(&http, &format!("{url}/customers/{GRACE}"), fixture_head).await;
    assert_eq!(grace["credit_limit"], eur(30_000), "{grace}");
    assert_eq!(grace["reserved"], eur(0), "{grace}");
    let cancelled = query_at(&http, &format!("{url}/orders/{CANCELLED}"), fixture_head).await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");

    // The old aggregates load in the new shape and take commands: Ada's
    // limit of 1000.00 EUR with 30.00 reserved leaves exactly 970.00.
    let reservations = format!("{url}/customers/{ADA}/reservations");
    let reserve = |amount: Value| json!({"order_id": Uuid::new_v4(), "amount": amount});
    let (status, body) = command(&http, &reservations, &reserve(eur(97_001))).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["credit_limit"], eur(100_000), "{body}");
    let usd = json!({"amount": 1, "currency": "USD"});
    let (status, body) = command(&http, &reservations, &reserve(usd)).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["expected_currency"], "EUR", "{body}");
    let (status, body) = command(&http, &reservations, &reserve(eur(97_000))).await;
    assert_eq!(status, 200, "{body}");
    let position = body["position"].as_u64().unwrap();
    let ada = query_at(&http, &format!("{url}/customers/{ADA}"), position).await;
    assert_eq!(ada["available"], eur(0), "{ada}");
    assert_eq!(ada["version"], 3, "{ada}");
    // Grace's history holds every money event type at version 1 (a limit
    // change, a reservation and its release): her limit of 300.00 EUR is
    // all available.
    let reservations = format!("{url}/customers/{GRACE}/reservations");
    let (status, body) = command(&http, &reservations, &reserve(eur(30_001))).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["credit_limit"], eur(30_000), "{body}");
    let (status, body) = command(&http, &reservations, &reserve(eur(30_000))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 5, "{body}");
    let position = body["position"].as_u64().unwrap();

    // An online rebuild from the old log yields the same rows.
    wait_projected(&http, &url, position).await;
    let before = rows(&http, &url, position).await;
    for projection in ["customers", "orders"] {
        let out = output_within(
            annals().args(["rebuild", projection, "--url", &url]),
            Duration::from_secs(120),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(rows(&http, &url, position).await, before);

    // So does an offline one, with the server stopped.
    assert!(serve.terminate().success());
    let out = output_within(
        annals().args([
            "rebuild",
            "customers",
            "--offline",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ]),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let serve = self::serve(dir.path());
    wait_ready(&http, &serve.url).await;
    assert_eq!(rows(&http, &serve.url, position).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_over_http_serves_old_events_at_the_current_version() {
    let dir = copy_of_fixture();
    let store = Proc::store(dir.path());
    let http = http();
    let (status, all) = get(&http, &format!("{}/all?from=1&max_count=100", store.url)).await;
    assert_eq!(status, 200, "{all}");
    let events = all["events"].as_array().unwrap();
    assert_eq!(events.len(), history().len() + 1);
    let registered = &events[0];
    assert_eq!(registered["type"], "CustomerRegistered", "{registered}");
    assert_eq!(registered["schema_version"], 2, "{registered}");
    // Decrypted, then upcast.
    assert_eq!(registered["data"]["name"], "Ada Lovelace", "{registered}");
    assert_eq!(
        registered["data"]["credit_limit"],
        eur(100_000),
        "{registered}"
    );
    let (status, stream) = get(
        &http,
        &format!("{}/streams/customer-{GRACE}?from=1", store.url),
    )
    .await;
    assert_eq!(status, 200, "{stream}");
    let amounts: Vec<(&Value, &Value)> = stream["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (&e["schema_version"], &e["data"]))
        .collect();
    assert!(amounts.iter().all(|(v, _)| **v == 2), "{stream}");
    assert_eq!(amounts[3].1["amount"], eur(10_000), "{stream}");
    let (status, loaded) = get(
        &http,
        &format!("{}/streams/customer-{HEDY}/load", store.url),
    )
    .await;
    assert_eq!(status, 200, "{loaded}");
    assert_eq!(
        loaded["events"][0]["data"]["credit_limit"],
        eur(20_000),
        "{loaded}"
    );

    // A version no upcaster leads from is a problem naming type and version.
    let appended = http
        .post(format!("{}/streams/customer-{HEDY}", store.url))
        .json(&json!({
            "expected_version": "any",
            "events": [{"id": Uuid::new_v4(), "type": "CreditLimitChanged", "schema_version": 3,
                        "data": {"customer_id": HEDY, "credit_limit": eur(1)}}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(appended.status(), 200);
    let (status, problem) = get(
        &http,
        &format!("{}/streams/customer-{HEDY}?from=1", store.url),
    )
    .await;
    assert_eq!(status, 500, "{problem}");
    assert_eq!(problem["event_type"], "CreditLimitChanged", "{problem}");
    assert_eq!(problem["version"], 3, "{problem}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_no_upcaster_reads_stops_only_the_views_of_its_type() {
    let dir = copy_of_fixture();
    // Written behind the domain's back: a reservation whose amount is
    // neither an integer nor money. Appends do not upcast, so it goes in;
    // every read of it fails.
    let (store, layered) = open_layered(dir.path()).await;
    layered
        .append(
            &StreamId::new(format!("customer-{HEDY}")).unwrap(),
            ExpectedVersion::Any,
            vec![
                NewEvent::json(
                    "CreditReserved",
                    &json!({"customer_id": HEDY, "order_id": Uuid::new_v4(), "amount": "12.00"}),
                )
                .unwrap(),
            ],
        )
        .await
        .unwrap();
    store.close().await.unwrap();
    // The key store is locked until its last user lets go.
    drop(layered);
    let unreadable = history().len() as u64 + 2;

    let serve = serve(dir.path());
    let url = &serve.url;
    let http = http();
    let deadline = Instant::now() + Duration::from_secs(60);
    let customers = loop {
        let (_, status) = get(&http, &format!("{url}/projections")).await;
        let find = |name: &str| {
            status["projections"]
                .as_array()
                .and_then(|all| all.iter().find(|p| p["name"] == name).cloned())
                .unwrap_or(Value::Null)
        };
        let (customers, orders) = (find("customers"), find("orders"));
        if customers["state"] == "failed" && orders["position"].as_u64() >= Some(unreadable) {
            break customers;
        }
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(customers["error_position"], unreadable, "{customers}");
    let error = customers["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("CreditReserved") && error.contains("schema version 1"),
        "{customers}"
    );

    // The command API cannot load that customer: a 500 problem, nothing
    // written. Other customers are unaffected.
    let reserve = || json!({"order_id": Uuid::new_v4(), "amount": eur(1)});
    let (status, body) = command(
        &http,
        &format!("{url}/customers/{HEDY}/reservations"),
        &reserve(),
    )
    .await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["status"], 500, "{body}");
    let (status, body) = command(
        &http,
        &format!("{url}/customers/{ADA}/reservations"),
        &reserve(),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Skipping the event lets the view go on.
    let out = output_within(
        annals().args([
            "skip",
            "customers",
            "--url",
            url,
            "--position",
            &unreadable.to_string(),
        ]),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let position = body["position"].as_u64().unwrap();
    let ada = query_at(&http, &format!("{url}/customers/{ADA}"), position).await;
    assert_eq!(ada["reserved"], eur(3_001), "{ada}");
}

/// The embedded store of `dir` with the production layers.
async fn open_layered(dir: &Path) -> (event_store::Store, Arc<dyn event_store::EventStore>) {
    let store = event_store::Store::open(dir, StoreOptions::default())
        .await
        .unwrap();
    let keys = Arc::new(event_store::KeyStore::open(dir.join("keys")).unwrap());
    let layered = event_store::Shredding::new(
        store.clone(),
        keys,
        annals_credit::domain::customer::shredding_policy(),
    );
    (store, Arc::new(layered))
}
