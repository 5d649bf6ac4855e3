//! The append channel (`POST /appends`): NDJSON lines in and out over one
//! request, against the real server on loopback; the client's appends
//! going out on it, settled one by one, falling back where the server has
//! none, and settled per append when the channel is lost.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::Request;
use axum::response::IntoResponse;
use event_store::{Error, EventStore, ExpectedVersion, Position, Store, StoreOptions};
use event_store_http::wire::{WireChannelAppend, append_from_wire};
use event_store_http::{RemoteOptions, RemoteStore, RequestRate, ServerConfig, router};
use futures_util::StreamExt;
use tokio::net::TcpListener;
use tower::ServiceExt;

#[allow(dead_code, reason = "these tests use a part of the helpers")]
#[path = "../../event-store/tests/store/common.rs"]
mod common;

use common::{event, open, sid};

struct Served {
    store: Store,
    addr: SocketAddr,
    /// Requests by path: `/appends` and `/batch`.
    channels: Arc<AtomicUsize>,
    batches: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
}

#[derive(Clone, Copy, PartialEq)]
enum Route {
    /// The real router.
    Served,
    /// No `/appends`, as in an earlier release.
    NoChannel,
    /// `/appends` commits the first line, then the connection is cut
    /// before its answer.
    AnswerLost,
    /// Each caller may send two transactions, then is over its rate.
    TwoPerCaller,
}

async fn serve(route: Route) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), StoreOptions::default()).await;
    let inner = router(Arc::new(store.clone()), ServerConfig::default());
    let channels = Arc::new(AtomicUsize::new(0));
    let batches = Arc::new(AtomicUsize::new(0));
    let (seen_channels, seen_batches) = (channels.clone(), batches.clone());
    let committer = store.clone();
    let app = axum::Router::new().fallback(move |mut request: Request| {
        let inner = inner.clone();
        let (channels, batches) = (seen_channels.clone(), seen_batches.clone());
        let store = committer.clone();
        async move {
            match request.uri().path() {
                "/batch" => {
                    batches.fetch_add(1, Ordering::SeqCst);
                }
                "/appends" => {
                    channels.fetch_add(1, Ordering::SeqCst);
                    match route {
                        Route::NoChannel => {
                            // The client's first line is read before the
                            // 404 and the rest of the body after it: a
                            // connection closed with a line unread can
                            // reset before the client reads the 404 (a
                            // race of the client's, not what this test is
                            // about).
                            let mut body = request.into_body().into_data_stream();
                            let _first = body.next().await;
                            tokio::spawn(async move { while body.next().await.is_some() {} });
                            return axum::http::StatusCode::NOT_FOUND.into_response();
                        }
                        Route::AnswerLost => return commit_first_then_cut(store, request).await,
                        Route::TwoPerCaller => {
                            let left = Arc::new(AtomicUsize::new(2));
                            request.extensions_mut().insert(RequestRate::new(move || {
                                match left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                    n.checked_sub(1)
                                }) {
                                    Ok(_) => Ok(()),
                                    Err(_) => Err(Duration::from_millis(1500)),
                                }
                            }));
                        }
                        Route::Served => {}
                    }
                }
                _ => {}
            }
            inner.oneshot(request).await.unwrap()
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Served {
        store,
        addr,
        channels,
        batches,
        _dir: dir,
    }
}

/// Takes the channel (a success head at once, as the real server
/// answers), commits the transaction of its first line, then fails the
/// answer's body: the connection is lost after the commit.
async fn commit_first_then_cut(store: Store, request: Request) -> axum::response::Response {
    let mut body = request.into_body().into_data_stream();
    let cut = futures_util::stream::once(async move {
        let mut read = Vec::new();
        while !read.contains(&b'\n') {
            read.extend_from_slice(&body.next().await.unwrap().unwrap());
        }
        let end = read.iter().position(|b| *b == b'\n').unwrap();
        let line: WireChannelAppend = serde_json::from_slice(&read[..end]).unwrap();
        let appends = line
            .appends
            .into_iter()
            .map(|a| append_from_wire(a).unwrap())
            .collect();
        store.append_many(appends).await.unwrap();
        Err::<axum::body::Bytes, _>(std::io::Error::other("cut"))
    });
    axum::response::Response::new(axum::body::Body::from_stream(cut))
}

async fn client(addr: SocketAddr) -> RemoteStore {
    RemoteStore::connect(&format!("http://{addr}"), RemoteOptions::default())
        .await
        .unwrap()
}

/// Posts NDJSON `lines` to `/appends` and returns the answer's lines.
async fn exchange(addr: SocketAddr, lines: &str) -> Vec<serde_json::Value> {
    http_edge::tls::install_default_provider();
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/appends"))
        .header("content-type", "application/x-ndjson")
        .body(lines.to_owned())
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/x-ndjson",
        "{response:?}"
    );
    let text = response.text().await.unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn line(id: u64, stream: &str, expected: &str) -> String {
    format!(
        r#"{{"id":{id},"appends":[{{"stream_id":"{stream}","expected_version":{expected},"events":[{{"id":"{}","type":"Happened","data":{{"n":{id}}}}}]}}]}}"#,
        uuid::Uuid::new_v4()
    )
}

/// Each line is settled on its own under its id; a line that does not
/// parse is answered with its line number and the channel goes on; a
/// blank line is nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_line_is_answered_under_its_id_and_a_bad_line_by_its_number() {
    let served = serve(Route::Served).await;
    let lines = [
        line(7, "a", "\"no_stream\""),
        "{not json".to_owned(),
        String::new(),
        line(9, "a", "\"no_stream\""),
        line(11, "b", "\"any\""),
    ]
    .join("\n");
    let mut outcomes = exchange(served.addr, &lines).await;
    outcomes.sort_by_key(|o| o["id"].as_u64().unwrap_or(0));
    assert_eq!(outcomes.len(), 4, "{outcomes:?}");
    let bad = &outcomes[0];
    assert_eq!(bad["line"], 2, "{bad}");
    assert_eq!(bad["problem"]["status"], 400, "{bad}");
    let (first, wrong, other) = (&outcomes[1], &outcomes[2], &outcomes[3]);
    assert_eq!(first["id"], 7);
    assert_eq!(first["results"][0]["last_version"], 1, "{first}");
    assert_eq!(wrong["id"], 9);
    assert_eq!(wrong["problem"]["status"], 409, "{wrong}");
    assert_eq!(other["id"], 11);
    assert_eq!(other["results"][0]["last_version"], 1, "{other}");
    assert_eq!(served.store.head().await.unwrap(), Position(2));
}

/// A caller over its rate gets `429` for each line past it, and the
/// channel goes on answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_line_counts_against_the_callers_rate() {
    let served = serve(Route::TwoPerCaller).await;
    let lines = [
        line(1, "a", "\"any\""),
        line(2, "a", "\"any\""),
        line(3, "a", "\"any\""),
    ]
    .join("\n");
    let outcomes = exchange(served.addr, &lines).await;
    let limited: Vec<_> = outcomes
        .iter()
        .filter(|o| o["problem"]["status"] == 429)
        .collect();
    assert_eq!(limited.len(), 1, "{outcomes:?}");
    assert_eq!(limited[0]["id"], 3);
    assert_eq!(served.store.head().await.unwrap(), Position(2));
}

/// Concurrent appends of one client go out on channels, never as requests
/// of their own, and each is committed or refused alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_channels_and_succeed_or_fail_alone() {
    let served = serve(Route::Served).await;
    let remote = client(served.addr).await;
    common::sixty_four_writers(remote).await;
    assert_eq!(served.store.head().await.unwrap(), Position(64 * 20 - 1));
    let channels = served.channels.load(Ordering::SeqCst);
    assert!((1..=8).contains(&channels), "{channels} channels");
    assert_eq!(served.batches.load(Ordering::SeqCst), 0);
}

/// A server without `/appends` (an earlier release) takes the appends as
/// requests, and the client stops asking for a channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_channels_takes_appends_as_requests() {
    let served = serve(Route::NoChannel).await;
    let remote = client(served.addr).await;
    for n in 0..3 {
        let expected = match n {
            0 => ExpectedVersion::NoStream,
            n => ExpectedVersion::Exact(n),
        };
        remote
            .append(&sid("c"), expected, vec![event(n)])
            .await
            .unwrap();
    }
    assert_eq!(served.store.head().await.unwrap(), Position(3));
    assert_eq!(served.channels.load(Ordering::SeqCst), 1);
    assert_eq!(served.batches.load(Ordering::SeqCst), 2);
}

/// A channel lost after its line was committed: an append anchored by
/// its expected version is asked again alone and found committed; one
/// that is not is indeterminate, never sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_channel_is_settled_per_append() {
    let served = serve(Route::AnswerLost).await;
    let remote = client(served.addr).await;
    let anchored = remote
        .append(&sid("a"), ExpectedVersion::NoStream, vec![event(1)])
        .await
        .unwrap();
    assert!(anchored.already_committed, "{anchored:?}");
    let unanchored = remote
        .append(&sid("b"), ExpectedVersion::Any, vec![event(2)])
        .await;
    assert!(
        matches!(unanchored, Err(Error::Indeterminate(_))),
        "{unanchored:?}"
    );
    // Each was committed once.
    assert_eq!(served.store.head().await.unwrap(), Position(2));
}
