//! Stopping when asked: `annals store` with a subscriber attached (a
//! projector or saga holds a Server-Sent Events stream open for ever)
//! must still stop on SIGTERM within a bounded time, ending the stream so
//! that its client reconnects elsewhere or later.

use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::cli::start;
use crate::split::http;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_stops_on_sigterm_while_a_subscriber_is_attached() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = start(
        &["store", "--listen", "127.0.0.1:0"],
        dir.path(),
        "store listening on",
    );
    let response = http()
        .get(format!("{}/subscriptions?from=1", store.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();

    let asked = Instant::now();
    let status = store.terminate();
    let took = asked.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");
    // The stream ended (rather than hanging on a dead peer).
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(chunk) = body.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the subscription did not end");
}
