//! The cap on connections served at once, over real sockets.

#![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use http_edge::{ServeConfig, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Sends one request on `tcp` and reads the answer's status line, within
/// `limit` (`None` when nothing came).
async fn status_within(tcp: &mut TcpStream, limit: Duration) -> Option<String> {
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(limit, tcp.read(&mut buf))
        .await
        .ok()?
        .unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .map(str::to_owned)
}

#[tokio::test]
async fn a_connection_over_the_cap_waits_until_one_ends() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ServeConfig {
        connections_max: 2,
        ..ServeConfig::default()
    };
    let app = Router::new().route("/", get(|| async { "ok" }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, app, config, async {
        let _ = stopped.await;
    }));

    let mut first = TcpStream::connect(addr).await.unwrap();
    let mut second = TcpStream::connect(addr).await.unwrap();
    let long = Duration::from_secs(5);
    assert_eq!(
        status_within(&mut first, long).await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    assert_eq!(
        status_within(&mut second, long).await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    // Both are kept alive: a third is connected by the kernel but not served.
    let mut third = TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        status_within(&mut third, Duration::from_millis(500)).await,
        None
    );
    // Once one ends, the third is taken (and its waiting request answered).
    drop(first);
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(long, third.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200 OK"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    stop.send(()).unwrap();
    drop((second, third));
    server.await.unwrap().unwrap();
}
