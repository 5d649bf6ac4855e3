//! End to end over loopback HTTP with a real client: a write appended to the
//! store is read back with `min_position`, and a rebuild under a stream of
//! queries fails none of them and never shows a half-built view.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use annals_credit::generator::Generator;
use event_store::{EventStore, ExpectedVersion, NewEvent, StreamId};
use query_api::QueryConfig;

use crate::common::{
    Running, TestDb, dump_views, generate, http_client, joined, open_store, project_all, serve,
};

#[tokio::test]
async fn a_write_is_read_back_over_http_with_min_position() {
    let test_db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    let mut generator = Generator::new(301);
    let head = generate(&store, &mut generator, 200).await;
    let db = test_db.open().await;
    let running = Running::start(&store, &db);
    running.wait_for(head).await;
    // A loaded machine may take a while to project one event: the wait
    // for it is the server's, so give it room.
    let config = QueryConfig {
        min_position_wait_max: Duration::from_secs(30),
        ..QueryConfig::default()
    };
    let (base, server) = serve(&db, config).await;
    let client = http_client();

    let id = "5b7c1d0e-1111-4222-8333-944455566677";
    let written = store
        .append(
            &StreamId::new(format!("customer-{id}")).unwrap(),
            ExpectedVersion::NoStream,
            vec![NewEvent::new(
                "CustomerRegistered",
                format!(
                    r#"{{"customer_id":"{id}","name":"Ada Lovelace","email":"ada@example.com","credit_limit":{{"amount":50000,"currency":"GBP"}}}}"#
                ),
            )],
        )
        .await
        .unwrap()
        .last_position;
    let response = client
        .get(format!("{base}/customers/{id}?min_position={}", written.0))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let position: u64 = response.headers()["annals-position"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(position >= written.0);
    assert_eq!(response.headers()["etag"], "\"1\"");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["name"], "Ada Lovelace");
    assert_eq!(body["available"]["amount"], 50_000);
    assert_eq!(body["available"]["currency"], "GBP");

    // The same through the header, on a list.
    let response = client
        .get(format!("{base}/customers?name_prefix=ada%20l"))
        .header("Annals-Min-Position", written.0.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["items"][0]["id"], id);

    let response = client
        .get(format!("{base}/orders/{}", uuid::Uuid::new_v4()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    server.abort();
    running.stop().await;
    db.close().await;
}

#[tokio::test]
async fn a_rebuild_under_http_load_fails_no_query() {
    for test_db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path()).await;
        let mut generator = Generator::new(302);
        let head = generate(&store, &mut generator, 15_000).await;
        let ids: Vec<String> = generator.customers().iter().map(|c| c.id.clone()).collect();
        let db = test_db.open().await;
        let running = Running::start(&store, &db);
        running.wait_for(head).await;
        let (base, server) = serve(&db, QueryConfig::default()).await;

        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        for client_no in 0..4usize {
            let base = base.clone();
            let ids = ids.clone();
            let stop = stop.clone();
            clients.push(tokio::spawn(async move {
                let client = http_client();
                // The last position seen per view: customers (one and
                // lists), orders.
                let mut last_position = [0u64; 2];
                let mut answered = 0u64;
                let mut failures = Vec::new();
                let mut i = client_no;
                while !stop.load(Ordering::SeqCst) {
                    i += 4;
                    let uri = match i % 3 {
                        0 => format!("{base}/customers/{}", ids[i % ids.len()]),
                        1 => format!("{base}/customers?credit_available=0&limit=20"),
                        _ => format!("{base}/orders?status=approved&limit=20"),
                    };
                    let response = match client.get(&uri).send().await {
                        Ok(r) => r,
                        Err(e) => {
                            failures.push(format!("{uri}: {e}"));
                            continue;
                        }
                    };
                    let status = response.status();
                    let position = response
                        .headers()
                        .get("annals-position")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok());
                    let body: serde_json::Value = response.json().await.unwrap_or_default();
                    if status != 200 {
                        failures.push(format!("{uri}: {status} {body}"));
                        continue;
                    }
                    // Every answer says which position it reflects.
                    let Some(position) = position else {
                        failures.push(format!("{uri}: no readable Annals-Position"));
                        continue;
                    };
                    // Each view only moves forward.
                    let view = usize::from(i % 3 == 2);
                    if position < last_position[view] {
                        failures.push(format!(
                            "{uri}: position went back from {} to {position}",
                            last_position[view]
                        ));
                    }
                    last_position[view] = position;
                    if i % 3 == 0 && body["position"].as_u64().unwrap_or(u64::MAX) > position {
                        failures.push(format!("{uri}: row newer than its view: {body}"));
                    }
                    answered += 1;
                }
                (answered, failures, last_position)
            }));
        }
        let writer = {
            let store = store.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    generate(&store, &mut generator, 40).await;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };

        let rebuilder = projector::Projector::builder(Arc::new(store.clone()), db.clone())
            .options(crate::common::projector_options())
            .projections(annals_credit::views::projections())
            .build()
            .unwrap();
        // A rebuild that cannot finish while the log grows is a bug to
        // report, not a test run to wait out.
        for name in ["customers", "orders"] {
            tokio::time::timeout(Duration::from_secs(180), rebuilder.rebuild(name, |_| {}))
                .await
                .expect("the rebuild swaps in within 180 s while the log grows")
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.store(true, Ordering::SeqCst);
        joined(writer, Duration::from_secs(60)).await;
        let mut total = 0;
        let mut reached = [0u64; 2];
        for client in clients {
            let (answered, failures, last) = joined(client, Duration::from_secs(60)).await;
            assert!(
                failures.is_empty(),
                "{}: {} failed queries, first: {:?}",
                test_db.name,
                failures.len(),
                &failures[..failures.len().min(5)]
            );
            total += answered;
            reached = [reached[0].max(last[0]), reached[1].max(last[1])];
        }
        assert!(
            total > 50,
            "{}: only {total} queries answered",
            test_db.name
        );
        // The writer kept the log growing, so both views were seen moving:
        // "never goes back" was checked against positions that went forward.
        assert!(
            reached.iter().all(|p| *p > head.0),
            "{}: the views were seen at {reached:?}, never past {head:?}",
            test_db.name
        );

        let final_head = store.head().await.unwrap();
        running.wait_for(final_head).await;
        running.stop().await;
        server.abort();
        let fresh = TestDb::sqlite();
        let fresh_db = fresh.open().await;
        project_all(&store, &fresh_db).await;
        assert!(
            dump_views(&db).await == dump_views(&fresh_db).await,
            "{}: rebuilt views differ from a fresh projection",
            test_db.name
        );
        db.close().await;
    }
}
