//! A client that stalls over a real socket: it sends part of a command's
//! body and then nothing. The answer says that nothing was applied (`408`),
//! since the command could not even be read, rather than "may or may not
//! have been applied".

use std::time::Duration;

use command_api::ApiConfig;
use event_store::Position;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::App;

/// Reads one response (head and a `Content-Length` body) within `limit`.
pub async fn read_response(stream: &mut TcpStream, limit: Duration) -> (u16, String, Value) {
    let read = async {
        let mut bytes = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            bytes.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let head = text[..end].to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if bytes.len() >= end + 4 + length || n == 0 {
                    let status = text[9..12].parse().unwrap();
                    let body = serde_json::from_slice(&bytes[end + 4..]).unwrap_or(Value::Null);
                    return (status, head, body);
                }
            }
            assert!(n > 0, "the connection closed before a response: {text:?}");
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .expect("a response within the limit")
}

#[tokio::test]
async fn a_body_that_stalls_is_408_and_nothing_was_applied() {
    let app = App::start_with(ApiConfig {
        request_timeout: Duration::from_millis(300),
        ..ApiConfig::default()
    })
    .await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let head = "POST /customers HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
                content-length: 100\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(br#"{"name": "#).await.unwrap();
    let (status, head, body) = read_response(&mut stream, Duration::from_secs(30)).await;
    assert_eq!(status, 408, "{head}\n{body}");
    assert!(
        head.contains("content-type: application/problem+json"),
        "{head}"
    );
    assert_eq!(body["type"], "urn:annals:problem:request-timeout", "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("nothing was applied"), "{detail}");
    assert!(!detail.contains("may or may not"), "{detail}");
    assert_eq!(app.head().await, Position::ZERO);
    app.stop().await;
}
