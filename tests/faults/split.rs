//! The split deployment under load while each process is killed with
//! SIGKILL in turn (projector, a command-API replica, the replica that
//! runs the saga, the query API, the store itself) and the view database
//! goes away for a while (a TCP proxy in front of PostgreSQL stops
//! passing connections). Afterwards:
//! - every command answered 201 is in the log;
//! - no command answered "nothing was written" (`store-unavailable`) is
//!   in the log (registrations carry their own ids, so this is checked);
//! - every acknowledged order is decided by the saga;
//! - the views equal what a rebuild from the log makes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use urls::Urls;

use super::get;
use super::proxy::Proxy;
use crate::pg::PgDatabase;
use crate::process::{Proc, annals, output_within};
use crate::split::{http, query_at, wait_ready};

/// The replicas' current addresses (a restarted one listens elsewhere).
mod urls {
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    pub struct Urls(Arc<Mutex<Vec<String>>>);

    impl Urls {
        pub fn set(&self, i: usize, url: String) {
            let mut urls = self.0.lock().unwrap();
            if urls.len() <= i {
                urls.resize(i + 1, String::new());
            }
            urls[i] = url;
        }

        pub fn get(&self, i: usize) -> String {
            let urls = self.0.lock().unwrap();
            urls[i % urls.len()].clone()
        }
    }
}

/// How each registration was answered, by customer id.
#[derive(Debug, Default)]
struct Answers {
    /// 201: must be in the log.
    registered: Vec<String>,
    /// 503 store-unavailable, "nothing was written": must not be.
    refused: Vec<String>,
    /// Orders answered 201: must be decided.
    orders: Vec<String>,
    answered: u64,
}

async fn load(urls: Urls, stop: Arc<AtomicBool>, progress: Arc<AtomicU64>) -> Answers {
    let http = http();
    let mut answers = Answers::default();
    let mut i = 0usize;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let url = urls.get(i);
        let id = uuid::Uuid::now_v7().to_string();
        let sent = http
            .post(format!("{url}/customers"))
            .json(
                &json!({"customer_id": id, "name": "Split", "email": "split@example.org",
                          "credit_limit": {"amount": 10_000, "currency": "EUR"}}),
            )
            .send()
            .await;
        let Ok(response) = sent else {
            // The replica was killed under the request: its outcome is
            // not known to this client.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        answers.answered += 1;
        progress.fetch_add(1, Ordering::SeqCst);
        match status {
            201 => answers.registered.push(id.clone()),
            503 if body["type"] == "urn:annals:problem:store-unavailable" => {
                answers.refused.push(id);
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            503 => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            other => panic!("registration answered {other}: {body}"),
        }
        let placed = http
            .post(format!("{url}/orders"))
            .json(&json!({"customer_id": id, "total": {"amount": 100, "currency": "EUR"}}))
            .send()
            .await;
        if let Ok(response) = placed
            && response.status() == 201
        {
            let body: Value = response.json().await.unwrap_or(Value::Null);
            answers.orders.push(body["id"].as_str().unwrap().to_owned());
        }
    }
    answers
}

/// A free port on loopback, for a process that must come back on it.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Deployment {
    store_listen: String,
    store_dir: String,
    store_url: String,
    db: String,
}

impl Deployment {
    fn store(&self) -> Proc {
        Proc::start(
            &[
                "store",
                "--listen",
                &self.store_listen,
                "--data-dir",
                &self.store_dir,
            ],
            "store listening on",
        )
    }

    fn replica(&self, saga: bool) -> Proc {
        let mut args = vec![
            "command-api",
            "--store",
            &self.store_url,
            "--listen",
            "127.0.0.1:0",
        ];
        if saga {
            args.push("--saga");
        }
        Proc::start(&args, "command API listening on")
    }

    fn projector(&self) -> Proc {
        Proc::start(
            &[
                "projector",
                "--store",
                &self.store_url,
                "--database",
                &self.db,
                "--listen",
                "127.0.0.1:0",
            ],
            "projector listening on",
        )
    }

    fn query(&self) -> Proc {
        Proc::start(
            &[
                "query-api",
                "--database",
                &self.db,
                "--listen",
                "127.0.0.1:0",
            ],
            "query API listening on",
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_split_deployment_survives_each_process_killed_in_turn() {
    let Some(pg) = PgDatabase::create("faults_split").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The view database behind a proxy, so that it can go away.
    let db_proxy = Proxy::start(&pg.server_addr()).await;
    let db = pg.url_through(db_proxy.url.trim_start_matches("http://"));
    let port = free_port();
    let d = Deployment {
        store_listen: format!("127.0.0.1:{port}"),
        store_dir: dir.path().to_str().unwrap().to_owned(),
        store_url: format!("http://127.0.0.1:{port}"),
        db,
    };
    let mut store = d.store();
    let mut replicas = [d.replica(true), d.replica(false)];
    let mut projector = d.projector();
    let mut query = d.query();
    let http = http();
    for p in [&store, &replicas[0], &replicas[1], &projector, &query] {
        wait_ready(&http, &p.url).await;
    }
    let urls = Urls::default();
    urls.set(0, replicas[0].url.clone());
    urls.set(1, replicas[1].url.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| tokio::spawn(load(urls.clone(), stop.clone(), progress.clone())))
        .collect();
    let advanced = |by: u64| {
        let progress = progress.clone();
        async move {
            let target = progress.load(Ordering::SeqCst) + by;
            let deadline = Instant::now() + Duration::from_secs(60);
            while progress.load(Ordering::SeqCst) < target {
                assert!(Instant::now() < deadline, "the load stalled");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };

    advanced(30).await;
    projector.kill();
    advanced(30).await;
    projector = d.projector();

    advanced(30).await;
    replicas[1].kill();
    replicas[1] = d.replica(false);
    urls.set(1, replicas[1].url.clone());

    advanced(30).await;
    replicas[0].kill();
    replicas[0] = d.replica(true);
    urls.set(0, replicas[0].url.clone());

    advanced(30).await;
    query.kill();
    query = d.query();

    // The view database goes away for two seconds.
    advanced(30).await;
    db_proxy.refuse_connections(true);
    db_proxy.sever_all();
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(2) {
        // Queries and readiness answer at once meanwhile.
        let asked = Instant::now();
        let (status, _) = get(&format!("{}/health/ready", query.url)).await;
        assert_eq!(status, 503);
        assert!(
            asked.elapsed() < Duration::from_secs(3),
            "{:?}",
            asked.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    db_proxy.refuse_connections(false);

    advanced(30).await;
    store.kill();
    store = d.store();

    advanced(60).await;
    stop.store(true, Ordering::SeqCst);
    let mut answers = Answers::default();
    for c in clients {
        let a = c.await.unwrap();
        answers.registered.extend(a.registered);
        answers.refused.extend(a.refused);
        answers.orders.extend(a.orders);
        answers.answered += a.answered;
    }
    for p in [&store, &replicas[0], &replicas[1], &projector, &query] {
        wait_ready(&http, &p.url).await;
    }

    // The log holds every acknowledged registration and none refused as
    // "nothing was written".
    let in_log = |id: String| {
        let store = d.store_url.clone();
        async move {
            let (status, body) = get(&format!("{store}/streams/customer-{id}")).await;
            assert_eq!(status, 200, "{body}");
            !body["events"].as_array().unwrap().is_empty()
        }
    };
    for id in &answers.registered {
        assert!(
            in_log(id.clone()).await,
            "acknowledged customer {id} is not in the log"
        );
    }
    for id in &answers.refused {
        assert!(
            !in_log(id.clone()).await,
            "customer {id} was refused as not written, yet is in the log"
        );
    }
    // Every acknowledged order is decided, and the views reach the head.
    let head: Value = http
        .get(format!("{}/head", d.store_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let head = head["position"].as_u64().unwrap();
    query_at(&http, &format!("{}/orders?limit=1", query.url), head).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut decided: HashMap<&str, Value> = HashMap::new();
    for id in &answers.orders {
        loop {
            let (status, body) = get(&format!("{}/orders/{id}", query.url)).await;
            if status == 200 && body["status"] != "pending" {
                decided.insert(id, body);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "order {id} was never decided: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(!answers.registered.is_empty() && !decided.is_empty());

    // The views equal a rebuild from the log.
    let head: Value = http
        .get(format!("{}/head", d.store_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let head = head["position"].as_u64().unwrap();
    query_at(&http, &format!("{}/customers?limit=1", query.url), head).await;
    query_at(&http, &format!("{}/orders?limit=1", query.url), head).await;
    let before = pg.dump(&["customers", "orders"]).await;
    for projection in ["customers", "orders"] {
        let out = output_within(
            annals().args(["rebuild", projection, "--url", &projector.url]),
            Duration::from_secs(180),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let after = pg.dump(&["customers", "orders"]).await;
    assert!(before == after, "the views differ from a rebuild");
}
