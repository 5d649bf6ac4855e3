//! `annals serve` killed with SIGKILL under HTTP load, again and again:
//! clients register customers and place orders at full speed, the process
//! dies mid-flight, restarts on the same data directory, and every command
//! it acknowledged (201) must be there afterwards, in the log and in the
//! views, with every acknowledged order decided by the saga.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{get, serve};
use crate::split::{http, query_at};

const CLIENTS: usize = 8;
const CYCLES: usize = 3;

/// What the clients were told was done.
#[derive(Debug, Default)]
struct Acked {
    customers: Vec<String>,
    orders: Vec<String>,
    /// The highest position an acknowledgement named.
    position: u64,
}

/// One client: registers a customer and places an order for it, until the
/// server stops answering or `stop` is set.
async fn client(url: String, stop: Arc<AtomicBool>) -> Acked {
    let http = http();
    let mut acked = Acked::default();
    while !stop.load(Ordering::SeqCst) {
        let registered = http
            .post(format!("{url}/customers"))
            .json(&json!({"name": "Load", "email": "load@example.org",
                          "credit_limit": {"amount": 10_000, "currency": "EUR"}}))
            .send()
            .await;
        let Ok(response) = registered else { break };
        if response.status() != 201 {
            continue;
        }
        let Ok(body) = response.json::<Value>().await else {
            break;
        };
        let customer = body["id"].as_str().unwrap().to_owned();
        acked.position = acked.position.max(body["position"].as_u64().unwrap());
        acked.customers.push(customer.clone());
        let placed = http
            .post(format!("{url}/orders"))
            .json(&json!({"customer_id": customer,
                          "total": {"amount": 1_000, "currency": "EUR"}}))
            .send()
            .await;
        let Ok(response) = placed else { break };
        if response.status() != 201 {
            continue;
        }
        let Ok(body) = response.json::<Value>().await else {
            break;
        };
        acked.position = acked.position.max(body["position"].as_u64().unwrap());
        acked.orders.push(body["id"].as_str().unwrap().to_owned());
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_command_survives_sigkill_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut all = Acked::default();
    for cycle in 0..CYCLES {
        let mut serving = serve(dir.path());
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| tokio::spawn(client(serving.url.clone(), stop.clone())))
            .collect();
        // Let the load build up, then kill mid-flight.
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(800 + 300 * cycle as u64) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        serving.kill();
        stop.store(true, Ordering::SeqCst);
        for c in clients {
            let acked = c.await.unwrap();
            all.customers.extend(acked.customers);
            all.orders.extend(acked.orders);
            all.position = all.position.max(acked.position);
        }
        assert!(
            !all.orders.is_empty(),
            "cycle {cycle}: the load acknowledged nothing"
        );
    }

    let serving = serve(dir.path());
    let url = &serving.url;
    let http = http();
    // The views reach every acknowledged position...
    query_at(&http, &format!("{url}/customers?limit=1"), all.position).await;
    for id in &all.customers {
        let (status, body) = get(&format!("{url}/customers/{id}")).await;
        assert_eq!(status, 200, "acknowledged customer {id} lost: {body}");
    }
    // ...and the saga decides every acknowledged order.
    let deadline = Instant::now() + Duration::from_secs(90);
    for id in &all.orders {
        loop {
            let (status, body) = get(&format!("{url}/orders/{id}")).await;
            assert_eq!(status, 200, "acknowledged order {id} lost: {body}");
            if body["status"] != "pending" {
                assert_eq!(body["status"], "approved", "{body}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "order {id} never decided: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
