//! Graceful shutdown: once asked to stop, the server accepts no new
//! connections, lets the command in flight finish and commit, and returns;
//! the store then closes cleanly and the command is there after a restart.

use std::sync::Arc;
use std::time::Duration;

use event_store::{Store, StoreOptions};

use crate::harness::{App, register_body};
use crate::meddling::Meddling;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_commands_finish_before_the_server_returns() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let store = Store::open(dir.path(), StoreOptions::default())
        .await
        .unwrap();
    let slow = Meddling::new(store.clone());
    slow.delay_appends(Duration::from_secs(2));
    let app = App::serve_store(dir, store, slow.clone(), command_api::ApiConfig::default()).await;

    let (client, url) = (app.client.clone(), app.url("/customers"));
    let in_flight = tokio::spawn(async move {
        client
            .post(url)
            .header("content-type", "application/json")
            .body(register_body(100).to_string())
            .send()
            .await
    });
    // Once the command is held up in its append, ask the server to stop.
    slow.appends_started(1).await;
    let addr = app.addr;
    let dir = app.stop().await;
    // The command was held up for 2 s from before the stop; a server that
    // did not wait for it would return while it is still held, before its
    // append reached the real store.
    assert_eq!(
        slow.appends_queued(),
        1,
        "the server returned before the command in flight had appended"
    );

    let response = tokio::time::timeout(Duration::from_secs(60), in_flight)
        .await
        .expect("the command in flight is answered within 60 s")
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 201);
    let id = response.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no new connections after shutdown"
    );

    let app = App::start_in(dir, command_api::ApiConfig::default()).await;
    let events = app.events(&format!("customer-{id}")).await;
    assert_eq!(events.len(), 1);
    app.stop().await;
}
