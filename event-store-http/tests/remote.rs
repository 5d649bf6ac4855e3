//! The store over HTTP: the remote client against the real server on
//! loopback behaves like the embedded store, and a subscription survives a
//! dropped connection with no gap and no duplicate.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use event_store::{
    Direction, Error, EventFilter, EventStore, ExpectedVersion, Position, ReadFrom, Store,
    StoreOptions, StreamAppend,
};
use event_store_http::{RemoteOptions, RemoteStore, ServerConfig, router};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

// The embedded store's test helpers: the remote store must behave like it.
#[allow(dead_code, reason = "these tests use a part of the helpers")]
#[path = "../../event-store/tests/store/common.rs"]
mod common;

use common::{event, next_within, open, sid, small_segments};

/// A store served over HTTP on an ephemeral loopback port.
struct Served {
    store: Store,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

async fn serve(options: StoreOptions, config: ServerConfig) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), options).await;
    let app = router(Arc::new(store.clone()), config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Served {
        store,
        addr,
        _dir: dir,
    }
}

/// A plain HTTP client whose requests fail after 30 s rather than hang.
fn http_client() -> reqwest::Client {
    http_edge::tls::install_default_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn client(addr: SocketAddr) -> RemoteStore {
    RemoteStore::connect(&format!("http://{addr}"), RemoteOptions::default())
        .await
        .unwrap()
}

/// A client that sends appends as requests (`POST /batch`), not on an
/// append channel.
async fn batch_client(addr: SocketAddr) -> RemoteStore {
    let options = RemoteOptions {
        append_channel: false,
        ..RemoteOptions::default()
    };
    RemoteStore::connect(&format!("http://{addr}"), options)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remote_client_behaves_like_the_embedded_store() {
    let served = serve(small_segments(), ServerConfig::default()).await;
    let remote = client(served.addr).await;
    let s = sid("order-1");

    let first = remote
        .append(&s, ExpectedVersion::NoStream, vec![event(1), event(2)])
        .await
        .unwrap();
    assert_eq!((first.first_version, first.last_position), (1, Position(2)));
    // Idempotent retry and a real conflict, with the current version.
    let again = remote
        .append(&s, ExpectedVersion::NoStream, vec![event(1)])
        .await;
    match again {
        Err(Error::WrongExpectedVersion {
            stream,
            current,
            expected,
        }) => {
            assert_eq!(
                (stream, current, expected),
                (s.clone(), 2, ExpectedVersion::NoStream)
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let batch = vec![event(3)];
    remote
        .append(&s, ExpectedVersion::Exact(2), batch.clone())
        .await
        .unwrap();
    let replay = remote
        .append(&s, ExpectedVersion::Exact(2), batch)
        .await
        .unwrap();
    assert!(replay.already_committed);

    // Multi-stream appends are atomic over the wire too.
    let stale = remote
        .append_many(vec![
            StreamAppend::new(sid("a"), ExpectedVersion::NoStream, vec![event(1)]),
            StreamAppend::new(s.clone(), ExpectedVersion::Exact(1), vec![event(1)]),
        ])
        .await;
    assert!(matches!(stale, Err(Error::WrongExpectedVersion { .. })));
    let ok = remote
        .append_many(vec![
            StreamAppend::new(sid("a"), ExpectedVersion::NoStream, vec![event(1)]),
            StreamAppend::new(s.clone(), ExpectedVersion::Exact(3), vec![event(4)]),
        ])
        .await
        .unwrap();
    assert_eq!(ok.len(), 2);

    // Reads match the embedded store's, field for field.
    let local = served
        .store
        .read_stream(&s, ReadFrom::End, Direction::Backward, 10)
        .await
        .unwrap();
    let over_http = remote
        .read_stream(&s, ReadFrom::End, Direction::Backward, 10)
        .await
        .unwrap();
    assert_eq!(over_http, local);
    assert_eq!(
        remote.read_all(Position::START, 100).await.unwrap(),
        served.store.read_all(Position::START, 100).await.unwrap()
    );
    assert_eq!(remote.head().await.unwrap(), Position(5));
    assert_eq!(remote.stats().await.unwrap().events, 5);

    // Snapshots and one-round-trip loads.
    assert_eq!(remote.load_snapshot(&s).await.unwrap(), None);
    remote
        .save_snapshot(&s, 2, 7, Bytes::from_static(b"\x00binary\xffstate"))
        .await
        .unwrap();
    let snap = remote.load_snapshot(&s).await.unwrap().unwrap();
    assert_eq!(
        (snap.version, snap.schema_version, &snap.state[..]),
        (2, 7, &b"\x00binary\xffstate"[..])
    );
    let loaded = remote.load(&s, Some(7)).await.unwrap();
    assert_eq!(loaded.snapshot.map(|s| s.version), Some(2));
    assert_eq!(
        loaded.events.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![3, 4]
    );
    assert_eq!(loaded.version, 4);

    // Bad input comes back as the same errors.
    assert!(matches!(
        remote.read_all(Position::START, 1_000_000).await,
        Err(Error::LimitExceeded {
            limit: "read_count_max",
            ..
        })
    ));
    assert!(matches!(
        remote
            .append(
                &s,
                ExpectedVersion::Any,
                vec![event_store::NewEvent::new("T", "{bad")]
            )
            .await,
        Err(Error::InvalidAppend(_))
    ));
    assert!(remote.ready().await.is_ok());
}

#[tokio::test]
async fn a_token_protects_everything_but_health() {
    let served = serve(
        StoreOptions::default(),
        ServerConfig {
            token: Some("s3cret".into()),
            ..ServerConfig::default()
        },
    )
    .await;
    let url = format!("http://{}", served.addr);
    assert!(matches!(
        RemoteStore::connect(&url, RemoteOptions::default()).await,
        Err(Error::Remote(_))
    ));
    let http = http_client();
    let live = http.get(format!("{url}/health/live")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    let denied = http.get(format!("{url}/head")).send().await.unwrap();
    assert_eq!(denied.status(), 401);
    assert_eq!(
        denied.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    assert!(
        denied.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    for wrong in ["Bearer s3cre", "Bearer s3cret2", "Basic s3cret", "s3cret"] {
        let denied = http
            .get(format!("{url}/head"))
            .header("authorization", wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(denied.status(), 401, "{wrong}");
    }
    let lowercase = http
        .get(format!("{url}/head"))
        .header("authorization", "bearer s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(lowercase.status(), 200);
    let remote = RemoteStore::connect(
        &url,
        RemoteOptions {
            token: Some("s3cret".into()),
            ..RemoteOptions::default()
        },
    )
    .await
    .unwrap();
    remote
        .append(&sid("x"), ExpectedVersion::Any, vec![event(1)])
        .await
        .unwrap();
}

/// What a [`cuttable_proxy`] saw.
#[derive(Debug, Default)]
struct ProxyLog {
    /// The `Last-Event-ID` of every subscription request, in order (0
    /// when absent).
    subscriptions: std::sync::Mutex<Vec<u64>>,
    /// Connections carrying a subscription that a cut severed.
    severed_subscriptions: AtomicU64,
}

impl ProxyLog {
    fn subscriptions(&self) -> Vec<u64> {
        self.subscriptions.lock().unwrap().clone()
    }

    /// Reads the request heads in what a client sent so far (`pending`
    /// keeps an unfinished one); true when one was a subscription.
    fn record(&self, pending: &mut String, bytes: &[u8]) -> bool {
        pending.push_str(&String::from_utf8_lossy(bytes));
        let mut subscribed = false;
        while let Some(end) = pending.find("\r\n\r\n") {
            let head: String = pending.drain(..end + 4).collect();
            if head.starts_with("GET /subscriptions") {
                let last_event_id = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("last-event-id")
                            .then(|| value.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                self.subscriptions.lock().unwrap().push(last_event_id);
                subscribed = true;
            }
        }
        subscribed
    }
}

/// A TCP proxy whose connections can be cut, to drop a subscription's
/// connection without stopping the server. It reads the request heads
/// going through it (the clients here send no bodies), so a test can tell
/// that a cut severed a subscription and that the client asked again.
async fn cuttable_proxy(target: SocketAddr) -> (SocketAddr, watch::Sender<u64>, Arc<ProxyLog>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (cut, cuts) = watch::channel(0u64);
    let log = Arc::new(ProxyLog::default());
    let proxy_log = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((inbound, _)) = listener.accept().await else {
                return;
            };
            let mut cuts = cuts.clone();
            cuts.borrow_and_update();
            let log = proxy_log.clone();
            tokio::spawn(async move {
                let Ok(outbound) = TcpStream::connect(target).await else {
                    return;
                };
                let (mut from_client, mut to_client) = inbound.into_split();
                let (mut from_server, mut to_server) = outbound.into_split();
                let subscribed = AtomicBool::new(false);
                let upstream = async {
                    let mut pending = String::new();
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match from_client.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if log.record(&mut pending, &buf[..n]) {
                            subscribed.store(true, Ordering::SeqCst);
                        }
                        if to_server.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                };
                let downstream = tokio::io::copy(&mut from_server, &mut to_client);
                tokio::select! {
                    () = upstream => {}
                    _ = downstream => {}
                    _ = cuts.changed() => {
                        if subscribed.load(Ordering::SeqCst) {
                            log.severed_subscriptions.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            });
        }
    });
    (addr, cut, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_resumes_after_a_dropped_connection_without_gap_or_duplicate() {
    let served = serve(StoreOptions::default(), ServerConfig::default()).await;
    let (proxy, cut, log) = cuttable_proxy(served.addr).await;
    let remote = RemoteStore::connect(
        &format!("http://{proxy}"),
        RemoteOptions {
            subscription_buffer: 8,
            ..RemoteOptions::default()
        },
    )
    .await
    .unwrap();
    for i in 0..100 {
        served
            .store
            .append(
                &sid(&format!("order-{}", i % 3)),
                ExpectedVersion::Any,
                vec![event(i)],
            )
            .await
            .unwrap();
    }
    let mut sub = remote
        .subscribe(Position(5), EventFilter::all())
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 40 {
        seen.push(next_within(&mut sub).await.unwrap().unwrap().position.0);
    }
    assert_eq!(log.subscriptions(), [4], "one subscription, from after 4");
    // Drop every connection, twice, while more events are appended: first
    // with the subscription behind (what it has not delivered yet may sit
    // in socket buffers and still arrive), then caught up and idle.
    for round in 0..2u64 {
        let read_before_cut = *seen.last().unwrap();
        let head_at_cut = served.store.head().await.unwrap().0;
        let subscriptions_before = log.subscriptions().len();
        cut.send_replace(round + 1);
        for i in 0..50 {
            served
                .store
                .append(&sid("order-late"), ExpectedVersion::Any, vec![event(i)])
                .await
                .unwrap();
        }
        // The events appended after the cut can only come over a new
        // connection.
        while *seen.last().unwrap() < head_at_cut + 50 {
            let e = tokio::time::timeout(Duration::from_secs(20), sub.next())
                .await
                .expect("the subscription resumes")
                .unwrap()
                .unwrap();
            seen.push(e.position.0);
        }
        // The cut severed the subscription's connection, and the client
        // asked again from the last event it had delivered: at least what
        // the test had read, at most what was written before the cut.
        assert_eq!(
            log.severed_subscriptions.load(Ordering::SeqCst),
            round + 1,
            "round {round}: subscription connections severed"
        );
        let subscriptions = log.subscriptions();
        let resumed_after = *subscriptions
            .get(subscriptions_before)
            .unwrap_or_else(|| panic!("round {round}: no new subscription: {subscriptions:?}"));
        assert!(
            (read_before_cut..=head_at_cut).contains(&resumed_after),
            "round {round}: resumed after {resumed_after}; read {read_before_cut}, head {head_at_cut}"
        );
    }
    assert_eq!(seen, (5..=200).collect::<Vec<_>>());
}

#[tokio::test]
async fn remote_subscriptions_filter_on_the_server() {
    let served = serve(StoreOptions::default(), ServerConfig::default()).await;
    let remote = client(served.addr).await;
    for i in 0..10 {
        let stream = if i % 2 == 0 { "order-1" } else { "customer-1" };
        remote
            .append(&sid(stream), ExpectedVersion::Any, vec![event(i)])
            .await
            .unwrap();
    }
    let mut sub = remote
        .subscribe(Position::START, EventFilter::stream_prefix("customer-"))
        .await
        .unwrap();
    for expected in [2u64, 4, 6, 8, 10] {
        assert_eq!(
            next_within(&mut sub).await.unwrap().unwrap().position,
            Position(expected)
        );
    }
}

/// `GET /all` answers curl in JSON and the client in binary, with the
/// same events; the client reads ahead page by page to the head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_all_comes_in_binary_to_the_client_and_in_json_to_curl() {
    use futures_util::StreamExt;
    let served = serve(small_segments(), ServerConfig::default()).await;
    for n in 0..50u64 {
        let stream = sid(&format!("cafe-{}", n % 4));
        served
            .store
            .append(&stream, ExpectedVersion::Any, vec![event(n)])
            .await
            .unwrap();
    }
    let all = served.store.read_all(Position::START, 1000).await.unwrap();
    let url = format!("http://{}/all?max_count=1000", served.addr);

    let plain = http_client().get(&url).send().await.unwrap();
    assert_eq!(plain.headers()["content-type"], "application/json");
    let json: serde_json::Value = plain.json().await.unwrap();
    assert_eq!(json["events"].as_array().unwrap().len(), 50);

    let binary = http_client()
        .get(&url)
        .header(
            "accept",
            "application/json;q=0.5, application/vnd.annals.events",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        binary.headers()["content-type"],
        event_store_http::wire::EVENTS_BINARY
    );
    let events = event_store_http::wire::events_from_binary(binary.bytes().await.unwrap()).unwrap();
    assert_eq!(events, all);

    let remote = client(served.addr).await;
    let pages: Vec<_> = remote
        .read_all_ahead(Position::START, 7)
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(pages.len(), 8);
    assert_eq!(pages.concat(), all);
    // An error ends the pages.
    let refused: Vec<_> = remote
        .read_all_ahead(Position::START, 1_000_000)
        .collect()
        .await;
    assert!(
        matches!(refused[..], [Err(Error::LimitExceeded { .. })]),
        "{refused:?}"
    );
}

/// A router in front of the store's that counts the transactions each
/// request to `/batch` carries, and can answer `/batch` in its place.
#[derive(Clone, Copy, PartialEq)]
enum BatchRoute {
    /// Passed on, counted.
    Served,
    /// Committed, then the answer cut short (a connection lost after the
    /// request went through).
    AnswerLost,
    /// As `AnswerLost`, and the first append sent alone afterwards finds
    /// the store unavailable (restarting).
    AnswerLostThenUnavailable,
    /// Unknown, as to a server of an earlier release.
    Missing,
}

async fn serve_batches(route: BatchRoute) -> (Served, Arc<std::sync::Mutex<Vec<usize>>>) {
    use axum::extract::Request;
    use tower::ServiceExt;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), StoreOptions::default()).await;
    let inner = router(Arc::new(store.clone()), ServerConfig::default());
    let batches = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = batches.clone();
    let unavailable_once = Arc::new(AtomicBool::new(
        route == BatchRoute::AnswerLostThenUnavailable,
    ));
    let app = axum::Router::new().fallback(move |request: Request| {
        let inner = inner.clone();
        let seen = seen.clone();
        let unavailable_once = unavailable_once.clone();
        async move {
            if request.uri().path() == "/transactions"
                && unavailable_once.swap(false, Ordering::SeqCst)
            {
                let problem = serde_json::json!({
                    "type": "urn:annals:problem:store-unavailable",
                    "title": "Store unavailable",
                    "status": 503,
                    "detail": "restarting",
                });
                return (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    [("content-type", "application/problem+json")],
                    problem.to_string(),
                )
                    .into_response();
            }
            if request.uri().path() != "/batch" {
                return inner.oneshot(request).await.unwrap();
            }
            if route == BatchRoute::Missing {
                return axum::http::StatusCode::NOT_FOUND.into_response();
            }
            let (parts, body) = request.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            let batch: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            seen.lock()
                .unwrap()
                .push(batch["transactions"].as_array().unwrap().len());
            let request = Request::from_parts(parts, axum::body::Body::from(bytes));
            let answer = inner.oneshot(request).await.unwrap();
            if matches!(
                route,
                BatchRoute::AnswerLost | BatchRoute::AnswerLostThenUnavailable
            ) {
                return (axum::http::StatusCode::OK, "{\"outcomes\": [").into_response();
            }
            answer
        }
    });
    use axum::response::IntoResponse;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (
        Served {
            store,
            addr,
            _dir: dir,
        },
        batches,
    )
}

/// Concurrent appends of one client share requests, and each is still
/// committed or refused on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_requests_and_succeed_or_fail_alone() {
    let (served, batches) = serve_batches(BatchRoute::Served).await;
    let remote = batch_client(served.addr).await;
    common::sixty_four_writers(remote).await;
    assert_eq!(served.store.head().await.unwrap(), Position(64 * 20 - 1));
    let batches = batches.lock().unwrap().clone();
    let carried: usize = batches.iter().sum();
    assert_eq!(carried, 64 * 20);
    assert!(
        batches.len() < carried && batches.iter().any(|n| *n > 1),
        "{} requests for {carried} appends",
        batches.len()
    );
}

/// A batch whose answer is lost after it committed: an append anchored
/// by its expected version is asked again alone and found committed; one
/// that is not is reported as indeterminate, never sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_batch_answer_is_settled_per_append() {
    let (served, _) = serve_batches(BatchRoute::AnswerLost).await;
    let remote = batch_client(served.addr).await;
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

/// After a lost batch answer, a store that cannot answer yet does not make
/// the append "not written": it may be committed, and it is asked again
/// until the store says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_unavailable_after_a_lost_batch_answer_is_asked_again() {
    let (served, _) = serve_batches(BatchRoute::AnswerLostThenUnavailable).await;
    let remote = batch_client(served.addr).await;
    let answer = remote
        .append(&sid("a"), ExpectedVersion::NoStream, vec![event(1)])
        .await
        .unwrap();
    assert!(answer.already_committed, "{answer:?}");
    assert_eq!(served.store.head().await.unwrap(), Position(1));
}

/// A server without `/batch` (an earlier release) takes each append alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_batches_takes_appends_alone() {
    let (served, batches) = serve_batches(BatchRoute::Missing).await;
    let remote = batch_client(served.addr).await;
    for n in 0..3 {
        let expected = if n == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(n)
        };
        remote
            .append(&sid("c"), expected, vec![event(n)])
            .await
            .unwrap();
    }
    assert_eq!(served.store.head().await.unwrap(), Position(3));
    assert!(batches.lock().unwrap().is_empty());
}

/// Appends reuse their connection, and one the server closed while it
/// was idle is noticed before anything is written on it: the next append
/// goes out on a new connection, so even one without an expected version
/// (which a lost answer would leave indeterminate) just commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_the_server_closed_is_not_written_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), StoreOptions::default()).await;
    let app = router(Arc::new(store.clone()), ServerConfig::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = http_edge::ServeConfig {
        idle_timeout: Duration::from_millis(200),
        ..http_edge::ServeConfig::default()
    };
    tokio::spawn(http_edge::serve(
        listener,
        app,
        config,
        std::future::pending(),
    ));
    let remote = client(addr).await;
    let s = sid("idle");
    for n in 0..3 {
        let result = remote
            .append(&s, ExpectedVersion::Any, vec![event(n)])
            .await
            .unwrap();
        assert!(!result.already_committed);
        // Past the server's idle timeout: it closes the connection.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(store.head().await.unwrap(), Position(3));
}

#[tokio::test]
async fn the_api_is_described_at_openapi_json() {
    let served = serve(StoreOptions::default(), ServerConfig::default()).await;
    let doc: serde_json::Value = http_client()
        .get(format!("http://{}/openapi.json", served.addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    for path in [
        "/streams/{stream}",
        "/transactions",
        "/all",
        "/subscriptions",
        "/subjects/{stream}",
        "/health/ready",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from {}",
            doc["paths"]
        );
    }
    assert!(doc["components"]["schemas"].get("Problem").is_some());
}

/// Over HTTP, an event id that names another event is a `409` problem
/// naming it, and one id twice in one append a `400`; a true retry is
/// answered as already committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_id_conflicts_are_problems_naming_the_id() {
    let served = serve(small_segments(), ServerConfig::default()).await;
    let http = http_client();
    let url = format!("http://{}/streams/ids-1", served.addr);
    let id = uuid::Uuid::now_v7();
    let append = |data: serde_json::Value, ids: &[uuid::Uuid]| {
        serde_json::json!({
            "expected_version": "any",
            "events": ids.iter().map(|id| serde_json::json!({
                "id": id, "type": "Happened", "data": data
            })).collect::<Vec<_>>(),
        })
    };
    let post = |body: serde_json::Value| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let response = http.post(&url).json(&body).send().await.unwrap();
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap();
            (status, body)
        }
    };
    let (status, body) = post(append(serde_json::json!({"n": 1}), &[id])).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(append(serde_json::json!({"n": 1}), &[id])).await;
    assert_eq!(
        (status, &body["already_committed"]),
        (200, &serde_json::json!(true)),
        "{body}"
    );

    let (status, body) = post(append(serde_json::json!({"n": 2}), &[id])).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["type"], "urn:annals:problem:event-id-conflict");
    assert_eq!(body["event_id"], id.to_string());
    let (status, body) = post(append(
        serde_json::json!({"n": 1}),
        &[id, uuid::Uuid::now_v7()],
    ))
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["event_id"], id.to_string());
    let twice = uuid::Uuid::now_v7();
    let (status, body) = post(append(serde_json::json!({"n": 3}), &[twice, twice])).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains(&twice.to_string()),
        "{body}"
    );
    assert_eq!(served.store.stats().await.unwrap().events, 1);
}
