//! The right to be forgotten through `annals serve`, checked on the bytes of
//! the data directory. A customer's name and email never reach the event
//! log or the snapshots in clear; after `DELETE
//! /customers/{id}/personal-data` they are in no file of the data directory
//! at all (log, snapshots, keys, the SQLite views with their WAL and
//! shared-memory files), neither while `serve` runs nor after it stopped.
//! The query API and a rebuilt view show `[erased]`, the credit line keeps
//! working, and asking again is harmless. A damaged or missing key is an
//! error, never an erasure.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use event_store::format::keylog::{self, Kind, Record, Slot};
use serde_json::{Value, json};

use crate::process::Proc;
use crate::split::{command, eur, http, query_at, wait_ready};

/// Every file under `dir`, with its bytes. `dir` itself must be a
/// directory that reads: a scan of nothing finds nothing, and proves
/// nothing. Files and directories that vanish while the walk goes on (a
/// running process renames and removes temporary files) are skipped; any
/// other error fails the test.
fn files_with_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        let entries = match std::fs::read_dir(&at) {
            Ok(entries) => entries,
            Err(e) if at != dir && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("reading the directory {}: {e}", at.display()),
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            match std::fs::read(&path) {
                Ok(bytes) => files.push((path, bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("reading {}: {e}", path.display()),
            }
        }
    }
    files
}

fn holds(bytes: &[u8], needle: &[u8]) -> bool {
    bytes.windows(needle.len()).any(|w| w == needle)
}

/// Files under `dir` whose raw bytes contain any of `needles`, with the
/// needle found.
fn files_containing(dir: &Path, needles: &[&str]) -> Vec<(PathBuf, String)> {
    let mut hits = Vec::new();
    for (path, bytes) in files_with_bytes(dir) {
        for needle in needles {
            if holds(&bytes, needle.as_bytes()) {
                hits.push((path.clone(), (*needle).to_owned()));
            }
        }
    }
    hits
}

/// Waits (bounded) until no file under `dir` holds any of `needles`: the
/// view database drops its old page images right after the batch that
/// erased them commits, which is a moment after the query API shows it.
async fn wait_until_gone(dir: &Path, needles: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let hits = files_containing(dir, needles);
        if hits.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "personal data still on disk 20 s after the erasure: {hits:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn delete(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let response = http
        .delete(url)
        .header("x-requested-with", "test")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn serve(dir: &Path) -> Proc {
    Proc::start(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.to_str().unwrap(),
            "--snapshot-every-events",
            "2",
        ],
        "listening on",
    )
}

/// Rebuilds the customers view of the `serve` at `url` through the CLI.
fn rebuild(url: &str) {
    let out = crate::process::output_within(
        crate::process::annals().args(["rebuild", "customers", "--url", url]),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const NAME: &str = "Hedy Lamarr";
const EMAIL: &str = "hedy.lamarr@example.org";
/// How the customers view keeps the name for case-insensitive search.
const NAME_FOLDED: &str = "hedy lamarr";
const NEEDLES: [&str; 3] = [NAME, EMAIL, NAME_FOLDED];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_personal_data_leaves_no_plaintext_in_any_file_and_keeps_the_credit_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let mut serve = serve(data);
    let url = serve.url.clone();
    let http = http();
    wait_ready(&http, &url).await;

    // Registered with an idempotency key, so its record is on disk too.
    let response = http
        .post(format!("{url}/customers"))
        .header("idempotency-key", "register-hedy")
        .json(&json!({"name": NAME, "email": EMAIL, "credit_limit": eur(1_000)}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    let id = body["id"].as_str().unwrap().to_string();
    // Another customer, never forgotten: the scan must find their name in
    // the views, or it proves nothing.
    let (status, other) = command(
        &http,
        &format!("{url}/customers"),
        &json!({"name": "Grace Hopper", "email": "grace.hopper@example.org",
                "credit_limit": eur(1_000)}),
    )
    .await;
    assert_eq!(status, 201, "{other}");

    let reserve =
        |amount| json!({"order_id": uuid::Uuid::new_v4().to_string(), "amount": eur(amount)});
    let reservations = format!("{url}/customers/{id}/reservations");
    let mut position = 0;
    for amount in [100, 200, 1] {
        let (status, body) = command(&http, &reservations, &reserve(amount)).await;
        assert_eq!(status, 200, "{body}");
        position = body["position"].as_u64().unwrap();
    }
    // The log, the snapshots and the keys hold the personal data encrypted
    // only. Each part holds data (the log the customer's events, under its
    // stream id in clear), so the scan reads what it means to.
    for part in ["events", "snapshots", "keys"] {
        let files = files_with_bytes(&data.join(part));
        assert!(
            files.iter().any(|(_, bytes)| !bytes.is_empty()),
            "{part}: no data to scan: {:?}",
            files
                .iter()
                .map(|(path, bytes)| (path, bytes.len()))
                .collect::<Vec<_>>()
        );
        let hits = files_containing(&data.join(part), &NEEDLES);
        assert!(hits.is_empty(), "{hits:?}");
    }
    assert!(
        !files_containing(&data.join("events"), &[id.as_str()]).is_empty(),
        "the scan of the log does not see the customer's events"
    );
    let seen = query_at(&http, &format!("{url}/customers/{id}"), position).await;
    assert_eq!(seen["name"], NAME);
    assert!(
        !files_containing(data, &["Grace Hopper"]).is_empty(),
        "the views hold a name in clear before anyone is forgotten"
    );

    // A rebuild before the erasure drops the old table, whose pages (with
    // the name in clear) go to SQLite's free list: they must not survive
    // the erasure either.
    rebuild(&url);

    // The customer's raw key: in the key log (and nowhere else) until the
    // erasure, in no file at all after it.
    let key = wait_for_raw_key(data, &id).await;
    let holding_key = |data: &Path| files_holding_bytes(data, &key);
    assert_eq!(holding_key(data), vec![key_log_path(data)]);

    let erase = format!("{url}/customers/{id}/personal-data");
    let (status, body) = delete(&http, &erase).await;
    assert_eq!(status, 200, "{body}");
    let position = body["position"].as_u64().unwrap();
    let seen = query_at(&http, &format!("{url}/customers/{id}"), position).await;
    assert_eq!(seen["name"], "[erased]", "{seen}");
    assert_eq!(seen["email"], "[erased]", "{seen}");
    assert_eq!(seen["reserved"], eur(301), "{seen}");
    let found = query_at(
        &http,
        &format!("{url}/customers?name_prefix=hedy"),
        position,
    )
    .await;
    assert_eq!(found["items"], json!([]), "{found}");

    // Nothing on disk any more, while serve runs (views.sqlite, its -wal
    // and -shm, segments, snapshots, keys, idempotency records).
    wait_until_gone(data, &NEEDLES).await;
    assert!(holding_key(data).is_empty(), "{:?}", holding_key(data));
    assert!(
        !files_containing(data, &["Grace Hopper"]).is_empty(),
        "only the forgotten customer is erased"
    );

    // Again, and through the older route: nothing new, still a success.
    let (status, again) = delete(&http, &erase).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["version"], body["version"]);
    let (status, alias) = command(&http, &format!("{url}/customers/{id}/forget"), &json!({})).await;
    assert_eq!(status, 200, "{alias}");
    assert_eq!(alias["version"], body["version"]);

    // The credit line still works, decided on the erased state (the
    // snapshots written before the erasure can no longer be read).
    let (status, body) = command(&http, &reservations, &reserve(699)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = command(&http, &reservations, &reserve(1)).await;
    assert_eq!(status, 422, "{body}");

    // Unknown customers are 404.
    let (status, body) = delete(
        &http,
        &format!("{url}/customers/{}/personal-data", uuid::Uuid::new_v4()),
    )
    .await;
    assert_eq!(status, 404, "{body}");

    // A rebuild from the log brings no personal data back.
    rebuild(&url);
    let seen = query_at(&http, &format!("{url}/customers/{id}"), position).await;
    assert_eq!(seen["name"], "[erased]", "{seen}");
    assert_eq!(seen["email"], "[erased]", "{seen}");
    let other = query_at(
        &http,
        &format!("{url}/customers/{}", other["id"].as_str().unwrap()),
        position,
    )
    .await;
    assert_eq!(other["name"], "Grace Hopper", "{other}");
    wait_until_gone(data, &NEEDLES).await;

    // And after a graceful stop.
    assert!(serve.terminate().success());
    let hits = files_containing(data, &NEEDLES);
    assert!(hits.is_empty(), "{hits:?}");
    assert!(holding_key(data).is_empty(), "{:?}", holding_key(data));
}

/// The records of the key log in `data` (`data/keys/keys.log`), by slot.
fn key_log(data: &Path) -> Vec<Record> {
    let bytes = std::fs::read(key_log_path(data)).unwrap();
    let mut records = Vec::new();
    for raw in bytes[keylog::HEADER_LEN..].chunks_exact(keylog::RECORD_LEN) {
        match keylog::decode(raw.try_into().unwrap()) {
            Slot::Record(r) => records.push(r),
            Slot::Empty => break,
            Slot::Bad(why) => panic!("key log record: {why}"),
        }
    }
    records
}

fn key_log_path(data: &Path) -> PathBuf {
    data.join("keys").join(event_store::keys::LOG_FILE)
}

/// The raw key of a customer, read from the key log.
fn raw_key(data: &Path, customer_id: &str) -> [u8; 32] {
    find_raw_key(data, customer_id).expect("the customer has a key record")
}

/// The customer's key in the key log, if it is there yet.
fn find_raw_key(data: &Path, customer_id: &str) -> Option<[u8; 32]> {
    use sha2::Digest;
    let subject: [u8; 32] = sha2::Sha256::digest(format!("customer-{customer_id}")).into();
    let records = key_log(data);
    records.iter().find_map(|r| match r.kind {
        Kind::Key(key) if r.subject == subject => Some(key),
        // A spare key, and its assignment to the customer.
        Kind::Assign(slot) if r.subject == subject => match records.get(slot as usize)?.kind {
            Kind::Spare(key) => Some(key),
            _ => None,
        },
        _ => None,
    })
}

/// [`raw_key`] while the server runs: a spare's assignment record is
/// written in the background, so it may not be in the key log yet.
async fn wait_for_raw_key(data: &Path, customer_id: &str) -> [u8; 32] {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(key) = find_raw_key(data, customer_id) {
            return key;
        }
        assert!(
            Instant::now() < deadline,
            "the customer's key never reached the key log"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_missing_key_file_is_reported_not_taken_for_an_erasure() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let http = http();
    let mut first = serve(data);
    wait_ready(&http, &first.url).await;
    let (status, body) = command(
        &http,
        &format!("{}/customers", first.url),
        &json!({"name": NAME, "email": EMAIL, "credit_limit": eur(1_000)}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let position = body["position"].as_u64().unwrap();
    // The view has the customer before the key is damaged (a projector that
    // had still to read the event would stop on it and report why).
    let seen = query_at(&http, &format!("{}/customers/{id}", first.url), position).await;
    assert_eq!(seen["name"], NAME);
    // A second customer, so that the first one's key record is not in the
    // key log's last batch (where damage looks like a torn write and reads
    // as a lost key: an error too, but not the case this test is about).
    let (status, body) = command(
        &http,
        &format!("{}/customers", first.url),
        &json!({"name": "Grace Hopper", "email": "grace.hopper@example.org",
                "credit_limit": eur(1_000)}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert!(first.terminate().success());

    let key = key_log_path(data);
    let records = key_log(data);
    let slot = records
        .iter()
        .position(|r| matches!(r.kind, Kind::Key(k) | Kind::Spare(k) if k == raw_key(data, &id)))
        .unwrap();
    assert!(slot + 1 < records.len() && records[slot].batch < records[records.len() - 1].batch);
    let mut bytes = std::fs::read(&key).unwrap();
    bytes[keylog::HEADER_LEN + slot * keylog::RECORD_LEN + 60] ^= 0x40;
    std::fs::write(&key, &bytes).unwrap();

    let reserve = json!({"order_id": uuid::Uuid::new_v4().to_string(), "amount": eur(1)});
    for damage in ["damaged", "missing"] {
        if damage == "missing" {
            std::fs::remove_file(&key).unwrap();
        }
        let mut serve = serve(data);
        let url = serve.url.clone();
        wait_ready(&http, &url).await;
        // Commands on the customer load its events, which no longer
        // decrypt: refused, with a problem that says why.
        for (status, body) in [
            command(
                &http,
                &format!("{url}/customers/{id}/reservations"),
                &reserve,
            )
            .await,
            delete(&http, &format!("{url}/customers/{id}/personal-data")).await,
        ] {
            assert_eq!(status, 500, "{damage}: {body}");
            assert_eq!(
                body["type"], "urn:annals:problem:personal-data-unreadable",
                "{damage}: {body}"
            );
        }
        // Nothing was recorded as an erasure: the view still has the data.
        let seen = query_at(&http, &format!("{url}/customers/{id}"), position).await;
        assert_eq!(seen["name"], NAME, "{damage}: {seen}");
        if damage == "damaged" {
            let bytes = std::fs::read(&key).unwrap();
            let erasures = bytes[keylog::HEADER_LEN..]
                .chunks_exact(keylog::RECORD_LEN)
                .filter(|raw| {
                    matches!(keylog::decode((*raw).try_into().unwrap()),
                        Slot::Record(r) if matches!(r.kind, Kind::Erasure | Kind::Destroyed))
                })
                .count();
            assert_eq!(erasures, 0, "{damage}: no erasure record was written");
        } else {
            assert!(
                key_log(data)
                    .iter()
                    .all(|r| !matches!(r.kind, Kind::Erasure | Kind::Destroyed)),
                "{damage}: no erasure record was written"
            );
        }
        assert!(serve.terminate().success());
    }
}

/// Registrations acknowledged just before a SIGKILL took spare keys whose
/// assignments the key log may not hold yet (they are written in the
/// background): after a restart every customer reads its own name, and
/// one of them can still be forgotten for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_registered_just_before_a_kill_keep_their_names_and_can_be_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let http = http();
    let mut first = serve(data);
    wait_ready(&http, &first.url).await;
    // The first new subject makes its key durably, and the spares with it.
    let (status, body) = command(
        &http,
        &format!("{}/customers", first.url),
        &json!({"name": "First Customer", "email": "first@example.org",
                "credit_limit": eur(1_000)}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let registrations = (0..32).map(|i| {
        let http = http.clone();
        let url = format!("{}/customers", first.url);
        async move {
            let name = format!("Customer Number {i}");
            let (status, body) = command(
                &http,
                &url,
                &json!({"name": name, "email": format!("customer.{i}@example.org"),
                        "credit_limit": eur(1_000)}),
            )
            .await;
            assert_eq!(status, 201, "{body}");
            (
                body["id"].as_str().unwrap().to_string(),
                name,
                body["position"].as_u64().unwrap(),
            )
        }
    });
    let mut registered = Vec::new();
    for task in registrations.map(tokio::spawn).collect::<Vec<_>>() {
        registered.push(task.await.unwrap());
    }
    first.kill();
    let assigned = key_log(data)
        .iter()
        .filter(|r| matches!(r.kind, Kind::Assign(_)))
        .count();
    eprintln!(
        "{assigned} of {} spare-key assignments reached the key log before the kill",
        registered.len()
    );

    let second = serve(data);
    wait_ready(&http, &second.url).await;
    for (id, name, position) in &registered {
        let seen = query_at(&http, &format!("{}/customers/{id}", second.url), *position).await;
        assert_eq!(seen["name"], name.as_str(), "{seen}");
    }
    // Every assignment is in the key log now.
    let assigned = key_log(data)
        .iter()
        .filter(|r| matches!(r.kind, Kind::Assign(_)))
        .count();
    assert!(assigned >= registered.len(), "{assigned} assignments");
    let (id, name, _) = &registered[registered.len() - 1];
    let key = raw_key(data, id);
    let (status, body) = delete(
        &http,
        &format!("{}/customers/{id}/personal-data", second.url),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let position = body["position"].as_u64().unwrap();
    let seen = query_at(&http, &format!("{}/customers/{id}", second.url), position).await;
    assert_eq!(seen["name"], "[erased]", "{seen}");
    wait_until_gone(data, &[name.as_str()]).await;
    let holding = files_holding_bytes(data, &key);
    assert!(holding.is_empty(), "{holding:?}");
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_holding_bytes(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files_with_bytes(dir)
        .into_iter()
        .filter(|(_, bytes)| holds(bytes, needle))
        .map(|(path, _)| path)
        .collect()
}
