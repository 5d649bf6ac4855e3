//! `annals backup` of a running `annals serve` under write load, then
//! `annals restore`: the restored store verifies, holds every event
//! acknowledged before the backup began, and its log is the original's
//! up to where the copy ended; a backup of the same store at rest,
//! restored and served, rebuilds views equal to the original's. A damaged
//! backup is refused, and nothing is ever copied over files.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::auth::http;
use crate::process::{Proc, annals, output_within};

const LIMIT: Duration = Duration::from_secs(120);

/// `annals <args>`: its exit status success, stdout and stderr.
fn run(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let out = output_within(annals().args(args), LIMIT);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

/// `annals backup TO --data-dir FROM` or `annals restore FROM --data-dir
/// TO` (`command`, `dir`, `data_dir`): exit status success, stdout, stderr.
fn copy_with(command: &str, dir: &Path, data_dir: &Path) -> (bool, String, String) {
    run(&[
        os(command),
        dir.as_os_str(),
        os("--data-dir"),
        data_dir.as_os_str(),
    ])
}

/// The log of a data directory no process has open, one JSON value per
/// event, through `annals dump`.
fn dump(data_dir: &Path) -> Vec<Value> {
    let (ok, out, err) = run(&[os("dump"), os("--data-dir"), data_dir.as_os_str()]);
    assert!(ok, "{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn register(n: usize) -> Value {
    json!({
        "name": format!("Customer {n}"),
        "email": format!("c{n}@example.org"),
        "credit_limit": {"amount": 5000, "currency": "EUR"}
    })
}

/// Registers customers and places an order for each from `writers`
/// tasks until `stop`; every answer kept as (stream, position) with the
/// instant it arrived.
fn load(
    url: &str,
    writers: usize,
    stop: Arc<Mutex<bool>>,
) -> Vec<tokio::task::JoinHandle<Vec<(String, u64, Instant)>>> {
    (0..writers)
        .map(|w| {
            let (url, stop) = (url.to_owned(), stop.clone());
            tokio::spawn(async move {
                let http = http();
                let mut acked = Vec::new();
                let mut n = w * 1_000_000;
                while !*stop.lock().unwrap() {
                    n += 1;
                    let created: Value = http
                        .post(format!("{url}/customers"))
                        .json(&register(n))
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    let id = created["id"].as_str().unwrap().to_owned();
                    acked.push((
                        format!("customer-{id}"),
                        created["position"].as_u64().unwrap(),
                        Instant::now(),
                    ));
                    let order = json!({"customer_id": id, "lines": [{"sku": "BOOK-1", "quantity": 1,
                        "unit_price": {"amount": 700, "currency": "EUR"}}]});
                    let placed: Value = http
                        .post(format!("{url}/orders"))
                        .json(&order)
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    let order_id = placed["id"].as_str().unwrap();
                    acked.push((
                        format!("order-{order_id}"),
                        placed["position"].as_u64().unwrap(),
                        Instant::now(),
                    ));
                }
                acked
            })
        })
        .collect()
}

/// Every customer the query API lists, all pages, once the views reflect
/// `position`.
async fn customers(url: &str, position: u64) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut request = http()
            .get(format!("{url}/customers"))
            .query(&[("limit", "100"), ("min_position", &position.to_string())]);
        if let Some(c) = &cursor {
            request = request.query(&[("cursor", c)]);
        }
        let answer = request.send().await.unwrap();
        if answer.status() == 503 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        assert_eq!(answer.status(), 200);
        let page: Value = answer.json().await.unwrap();
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
}

async fn head(url: &str) -> u64 {
    let head: Value = http()
        .get(format!("{url}/store/head"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    head["position"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_every_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Small segments: sealed ones are copied, and sealing happens during
    // the copy.
    let mut serve = Proc::serve(&data, &["--segment-bytes-max", "65536"]);
    let stop = Arc::new(Mutex::new(false));
    let writers = load(&serve.url, 4, stop.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let began = Instant::now();
    let backup = dir.path().join("backup");
    let (ok, out, err) = {
        let (data, backup) = (data.clone(), backup.clone());
        tokio::task::spawn_blocking(move || copy_with("backup", &backup, &data))
            .await
            .unwrap()
    };
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("verified:") && out.contains(": ok"), "{out}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    *stop.lock().unwrap() = true;
    let mut acked = Vec::new();
    for writer in writers {
        acked.extend(writer.await.unwrap());
    }
    let before: Vec<_> = acked.iter().filter(|(_, _, at)| *at < began).collect();
    let after = acked.len() - before.len();
    assert!(
        before.len() > 20 && after > 0,
        "{} before, {after} after",
        before.len()
    );

    // Restored, it verifies and holds every event acknowledged before.
    let restored = dir.path().join("restored");
    let (ok, out, err) = copy_with("restore", &backup, &restored);
    assert!(ok, "{out}\n{err}");
    let (ok, out, err) = run(&[os("verify"), os("--data-dir"), restored.as_os_str()]);
    assert!(ok, "{out}\n{err}");
    let copy = dump(&restored);
    let held: BTreeSet<(String, u64)> = copy
        .iter()
        .map(|e| {
            (
                e["stream_id"].as_str().unwrap().to_owned(),
                e["position"].as_u64().unwrap(),
            )
        })
        .collect();
    for (stream, position, _) in &before {
        assert!(
            held.contains(&(stream.clone(), *position)),
            "{stream} at {position} is not in the backup"
        );
    }

    // And it is the original log up to where the copy ended.
    assert_eq!(serve.terminate().code(), Some(0));
    let original = dump(&data);
    assert!(
        copy.len() < original.len(),
        "{} vs {}",
        copy.len(),
        original.len()
    );
    assert_eq!(copy[..], original[..copy.len()]);

    // Nothing is ever copied over files.
    let (ok, _, err) = copy_with("restore", &backup, &restored);
    assert!(!ok);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("not empty"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_store_rebuilds_the_same_views() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let serve = Proc::serve(&data, &["--segment-bytes-max", "65536"]);
    let stop = Arc::new(Mutex::new(false));
    let writers = load(&serve.url, 2, stop.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    *stop.lock().unwrap() = true;
    for writer in writers {
        writer.await.unwrap();
    }
    // The saga's follow-ups settle (reservations, approvals), and so does
    // its checkpoint, saved up to a second after its last progress: the
    // head must stay still for longer than that.
    let mut position = head(&serve.url).await;
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = head(&serve.url).await;
        if now == position {
            break;
        }
        position = now;
    }
    let original = customers(&serve.url, position).await;
    assert!(original.len() > 5, "{}", original.len());

    // Backed up while it runs, restored, served: views rebuilt from the
    // restored log equal the original's.
    let backup = dir.path().join("backup");
    let (ok, out, err) = copy_with("backup", &backup, &data);
    assert!(ok, "{out}\n{err}");
    let restored = dir.path().join("restored");
    let (ok, out, err) = copy_with("restore", &backup, &restored);
    assert!(ok, "{out}\n{err}");
    let again = Proc::serve(&restored, &[]);
    assert_eq!(head(&again.url).await, position);
    assert_eq!(customers(&again.url, position).await, original);
    drop(serve);

    // A backup damaged afterwards is refused, in one line.
    let segment = backup.join("events/0000000001.seg");
    let mut bytes = std::fs::read(&segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&segment, bytes).unwrap();
    let (ok, _, err) = copy_with("restore", &backup, &dir.path().join("again"));
    assert!(!ok);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("damaged"), "{err}");
}
