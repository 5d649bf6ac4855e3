//! `serve` with TLS, over real sockets on loopback, with a CA and a server
//! certificate generated here: a request through TLS is answered; the
//! guard's checks and clocks apply inside TLS; a handshake that stalls is
//! cut off within the header-read timeout; plain HTTP on the TLS port and
//! a client that does not trust the CA get no answer; certificate and
//! key files that are missing or not PEM are refused naming the file.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::testkit::TestCa;
use axum::Router;
use axum::routing::get;
use http_edge::tls::{TlsError, client_config, server_config};
use http_edge::{ServeConfig, serve};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// A server on loopback with TLS from a new test CA's certificate and
/// `header_read_timeout`; dropping the sender stops it.
async fn server(header_read_timeout: Duration) -> (SocketAddr, oneshot::Sender<()>, TestCa) {
    let ca = TestCa::new();
    let (cert, key) = (ca.cert_file(), ca.key_file());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ServeConfig {
        header_read_timeout,
        tls: Some(server_config(&cert, &key).unwrap()),
        ..ServeConfig::default()
    };
    let app = Router::new().route("/hello", get(|| async { "hello" }));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(listener, app, config, async move {
        let _ = stopped.await;
    }));
    (addr, stop, ca)
}

/// A TLS connection to `addr` trusting `ca` (or only the public roots).
async fn connect(
    addr: SocketAddr,
    ca: Option<&Path>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(ca).unwrap()));
    let tcp = TcpStream::connect(addr).await?;
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// Everything `stream` sends until it closes (or fails), within 10 s.
async fn read_all(mut stream: impl AsyncRead + Unpin) -> String {
    let mut bytes = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut bytes))
        .await
        .expect("the server closed the connection within 10 s");
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test]
async fn a_request_through_tls_is_answered_over_http_1_1() {
    let (addr, _stop, ca) = server(Duration::from_secs(10)).await;
    let mut tls = connect(addr, Some(&ca.ca_file())).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    tls.write_all(b"GET /hello HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_all(tls).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("hello"), "{answer}");
}

#[tokio::test]
async fn the_guard_checks_heads_inside_tls() {
    let (addr, _stop, ca) = server(Duration::from_millis(500)).await;
    // A head over the limit: 431 as a problem document.
    let mut tls = connect(addr, Some(&ca.ca_file())).await.unwrap();
    let big = format!(
        "GET /hello HTTP/1.1\r\nhost: localhost\r\nx-big: {}\r\n\r\n",
        "a".repeat(64 << 10)
    );
    tls.write_all(big.as_bytes()).await.unwrap();
    let answer = read_all(tls).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    // A head that stalls after the handshake: 408 within the timeout.
    let mut tls = connect(addr, Some(&ca.ca_file())).await.unwrap();
    tls.write_all(b"GET /hello HTTP/1.1\r\nhost: loc")
        .await
        .unwrap();
    let started = Instant::now();
    let answer = read_all(tls).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_handshake_that_stalls_is_cut_off_within_the_header_read_timeout() {
    let timeout = Duration::from_millis(300);
    let (addr, _stop, _ca) = server(timeout).await;
    // Nothing at all, then the first bytes of a TLS record only.
    for sent in [&b""[..], &[0x16, 0x03, 0x01, 0x00, 0xff, 0x01][..]] {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(sent).await.unwrap();
        let started = Instant::now();
        let answer = read_all(tcp).await;
        let took = started.elapsed();
        assert!(answer.is_empty(), "{answer:?}");
        assert!(took >= timeout - Duration::from_millis(50), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }
}

#[tokio::test]
async fn plain_http_is_told_to_use_https_and_an_untrusting_client_gets_nothing() {
    let (addr, _stop, _ca) = server(Duration::from_secs(10)).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /hello HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    // Not the application's answer: a plain-text refusal that says why.
    let answer = read_all(tcp).await;
    assert!(!answer.contains("hello"), "{answer:?}");
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer:?}");
    assert!(answer.contains("application/problem+json"), "{answer:?}");
    assert!(answer.contains("https://"), "{answer:?}");
    // The public roots alone do not vouch for the test CA.
    let refused = connect(addr, None).await.unwrap_err();
    let why = http_edge::tls::refused_certificate(&refused);
    assert!(
        why.as_deref().is_some_and(|w| w.contains("UnknownIssuer")),
        "{refused}: {why:?}"
    );
}

#[test]
fn missing_or_invalid_files_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let test_ca = TestCa::new();
    let (ca, cert, key) = (test_ca.ca_file(), test_ca.cert_file(), test_ca.key_file());
    let missing = dir.path().join("missing.pem");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a PEM file\n").unwrap();
    let cases: [(&Path, &Path, &Path); 4] = [
        (&missing, &key, &missing),
        (&cert, &missing, &missing),
        (&garbage, &key, &garbage),
        (&cert, &garbage, &garbage),
    ];
    for (cert, key, named) in cases {
        let e = server_config(cert, key).unwrap_err();
        let text = e.to_string();
        assert!(text.contains(&named.display().to_string()), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }
    // A key that is not the certificate's.
    let other = TestCa::new();
    let other_key = other.key_file();
    let e = server_config(&cert, &other_key).unwrap_err();
    assert!(matches!(e, TlsError::Server { .. }), "{e}");
    // A CA file that is not PEM, for a client.
    let e = client_config(Some(&garbage)).unwrap_err();
    assert!(e.to_string().contains("garbage.pem"), "{e}");
    assert!(client_config(Some(&ca)).is_ok());
}
