//! The HTTP edge of every process (`annals serve`, `store`, `command-api`,
//! `projector`, `query-api`), driven over raw sockets on loopback: request
//! heads that cannot be parsed or are too large, unknown routes and
//! oversized bodies are all answered with problem documents; a client that
//! stalls in a request head or body, or sends nothing, does not hold its
//! connection for ever; and one id is spelled one way on the command and
//! the query side alike.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::process::Proc;
use crate::split::{eur, http, query_at};

/// Every kind of process, started on loopback with `env` set; the data
/// directory lives as long as the processes.
struct Fleet {
    procs: Vec<(&'static str, Proc)>,
    _dir: tempfile::TempDir,
}

impl Fleet {
    fn start(env: &[(&str, &str)]) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
        let listen = ["--listen", "127.0.0.1:0"];
        let store = Proc::start_with_env(
            &["store", listen[0], listen[1], "--data-dir", &path("store")],
            env,
            "store listening on",
        );
        let views = format!("sqlite://{}", path("views.sqlite"));
        let command_api = Proc::start_with_env(
            &["command-api", "--store", &store.url, listen[0], listen[1]],
            env,
            "command API listening on",
        );
        let projector = Proc::start_with_env(
            &[
                "projector",
                "--store",
                &store.url,
                "--database",
                &views,
                listen[0],
                listen[1],
            ],
            env,
            "projector listening on",
        );
        let query_api = Proc::start_with_env(
            &["query-api", "--database", &views, listen[0], listen[1]],
            env,
            "query API listening on",
        );
        let serve = Proc::start_with_env(
            &["serve", listen[0], listen[1], "--data-dir", &path("serve")],
            env,
            "annals: listening on",
        );
        Fleet {
            procs: vec![
                ("store", store),
                ("command-api", command_api),
                ("projector", projector),
                ("query-api", query_api),
                ("serve", serve),
            ],
            _dir: dir,
        }
    }

    fn url(&self, role: &str) -> &str {
        &self.procs.iter().find(|(r, _)| *r == role).unwrap().1.url
    }
}

/// A response read off the socket.
#[derive(Debug)]
struct Raw {
    status: u16,
    /// The head, names lowercased.
    head: String,
    body: Value,
    /// Whether the server said it closes the connection after it
    /// (`Connection: close`), and did.
    closed: bool,
}

impl Raw {
    #[track_caller]
    fn assert_problem(&self, status: u16, what: &str) {
        assert_eq!(self.status, status, "{what}: {self:?}");
        assert!(
            self.head
                .contains("\r\ncontent-type: application/problem+json"),
            "{what}: {self:?}"
        );
        assert_eq!(self.body["status"], status, "{what}: {self:?}");
        assert!(
            self.body["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("urn:annals:problem:")),
            "{what}: {self:?}"
        );
        for member in ["title", "detail"] {
            assert!(
                self.body[member].as_str().is_some_and(|t| !t.is_empty()),
                "{what}: {self:?}"
            );
        }
    }
}

async fn connect(url: &str) -> TcpStream {
    TcpStream::connect(url.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads one response, then whether the connection closes right after,
/// all within `limit`; `None` when the server closed without answering.
async fn read_response(stream: &mut (impl AsyncReadExt + Unpin), limit: Duration) -> Option<Raw> {
    tokio::time::timeout(limit, read_one(stream))
        .await
        .expect("the server answers or closes within the limit")
}

/// Reads one response; `None` when the server closed without answering.
async fn read_one(stream: &mut (impl AsyncReadExt + Unpin)) -> Option<Raw> {
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let (end, length) = loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            break (end, length);
        }
        // A reset counts as a close.
        let n = stream.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            assert!(bytes.is_empty(), "a torn response: {bytes:?}");
            return None;
        }
        bytes.extend_from_slice(&buf[..n]);
    };
    while bytes.len() < end + 4 + length {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the body was cut short");
        bytes.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&bytes[..end + 2]).to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    let body = serde_json::from_slice(&bytes[end + 4..end + 4 + length]).unwrap_or(Value::Null);
    // A server that says it closes must then close; one that does not
    // keeps the connection for the next request.
    let closed = head.contains("\r\nconnection: close\r\n")
        && matches!(stream.read(&mut buf).await, Ok(0) | Err(_));
    Some(Raw {
        status,
        head,
        body,
        closed,
    })
}

/// Sends `request` on a new connection while reading the answer (the
/// server may answer and close before the end, so a failed write is no
/// failure).
async fn exchange(url: &str, request: Vec<u8>) -> Raw {
    let start = String::from_utf8_lossy(&request[..request.len().min(60)]).into_owned();
    let (mut reader, mut writer) = connect(url).await.into_split();
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(&request).await;
        writer
    });
    let answer = tokio::time::timeout(Duration::from_secs(60), read_one(&mut reader))
        .await
        .unwrap_or_else(|_| panic!("no answer to {start:?}"))
        .unwrap_or_else(|| panic!("a bare close for {start:?}"));
    drop(writing.await.unwrap());
    answer
}

fn get_with_headers(path: &str, headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nhost: test\r\n{headers}\r\n").into_bytes()
}

/// Heads the HTTP parser refuses, and heads over the limits: each is a
/// problem document with the status that says why, on every process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_request_heads_are_problem_documents_on_every_process() {
    let fleet = Fleet::start(&[]);
    let many_headers: String = (0..200).map(|i| format!("x-h{i}: {i}\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("a garbage request line", b"GARBAGE\r\n\r\n".to_vec(), 400),
        ("no HTTP version", b"GET /health/live\r\n\r\n".to_vec(), 400),
        (
            "two different Content-Lengths",
            get_with_headers("/health/live", "content-length: 5\r\ncontent-length: 6\r\n"),
            400,
        ),
        (
            "a Content-Length over 64 bits",
            get_with_headers(
                "/health/live",
                "content-length: 99999999999999999999999\r\n",
            ),
            400,
        ),
        (
            "a header line without a colon",
            get_with_headers("/health/live", "no colon here\r\n"),
            400,
        ),
        (
            "a long URI",
            get_with_headers(&format!("/{}", "a".repeat(10_000)), ""),
            414,
        ),
        (
            "a URI longer than HTTP/1 parsers take",
            get_with_headers(&format!("/{}", "a".repeat(70_000)), ""),
            414,
        ),
        (
            "200 header fields",
            get_with_headers("/health/live", &many_headers),
            431,
        ),
        (
            "a 500 KB header",
            get_with_headers(
                "/health/live",
                &format!("x-big: {}\r\n", "b".repeat(500_000)),
            ),
            431,
        ),
    ];
    for (role, proc) in &fleet.procs {
        for (what, request, status) in &cases {
            let answer = exchange(&proc.url, request.clone()).await;
            answer.assert_problem(*status, &format!("{role}, {what}"));
            assert!(
                answer.closed,
                "{role}, {what}: the connection is closed after it"
            );
        }
        // The connection layer lets good requests through, pipelined ones
        // included (the second asks to close, so the answers end).
        let two = [
            get_with_headers("/health/live", ""),
            get_with_headers("/health/live", "connection: close\r\n"),
        ]
        .concat();
        let mut stream = connect(&proc.url).await;
        stream.write_all(&two).await.unwrap();
        let mut answers = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answers))
            .await
            .expect("both answers within 30 s")
            .unwrap();
        let answers = String::from_utf8_lossy(&answers);
        assert_eq!(
            answers.matches("HTTP/1.1 200 OK\r\n").count(),
            2,
            "{role}: {answers}"
        );
    }
}

/// `annals store` answers unknown routes, unknown methods and bodies over
/// its limit with problem documents too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_answers_every_refusal_with_a_problem_document() {
    let fleet = Fleet::start(&[]);
    let store = fleet.url("store");
    exchange(store, get_with_headers("/nowhere", ""))
        .await
        .assert_problem(404, "an unknown route");
    exchange(
        store,
        b"DELETE /info HTTP/1.1\r\nhost: test\r\nx-requested-with: test\r\n\r\n".to_vec(),
    )
    .await
    .assert_problem(405, "an unknown method");
    let mut big = b"POST /streams/s-1 HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
                    content-length: 100000000\r\n\r\n"
        .to_vec();
    big.extend(std::iter::repeat_n(b' ', 100_000_000));
    exchange(store, big)
        .await
        .assert_problem(413, "a 100 MB body");
}

/// A head that stalls is `408` after the header-read timeout; a body that
/// stalls is `408` after the idle timeout; a connection that sends nothing
/// is closed after the idle timeout. On every process, never sooner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_idle_connections_are_closed_on_every_process() {
    let header_read = Duration::from_millis(500);
    let idle = Duration::from_millis(1500);
    let fleet = Fleet::start(&[
        ("ANNALS_HEADER_READ_TIMEOUT_MS", "500"),
        ("ANNALS_IDLE_TIMEOUT_MS", "1500"),
    ]);
    let limit = Duration::from_secs(20);
    for (role, proc) in &fleet.procs {
        // Half a request head, then nothing.
        let started = Instant::now();
        let mut stream = connect(&proc.url).await;
        stream
            .write_all(b"GET /health/live HTTP/1.1\r\nhost: te")
            .await
            .unwrap();
        let answer = read_response(&mut stream, limit).await.unwrap();
        assert!(started.elapsed() >= header_read, "{role}: too soon");
        answer.assert_problem(408, &format!("{role}, a stalled head"));
        assert!(answer.closed, "{role}: {answer:?}");

        // Nothing at all, and nothing after an answered request.
        for warm in [false, true] {
            // The server's clock starts after this one: never sooner.
            let started = Instant::now();
            let mut stream = connect(&proc.url).await;
            if warm {
                stream
                    .write_all(&get_with_headers("/health/live", ""))
                    .await
                    .unwrap();
                let answer = read_response(&mut stream, limit).await.unwrap();
                assert_eq!(answer.status, 200, "{role}: {answer:?}");
                assert!(!answer.closed, "{role}: kept alive");
            }
            let answer = read_response(&mut stream, limit).await;
            assert!(
                answer.is_none(),
                "{role}: closed without an answer: {answer:?}"
            );
            assert!(started.elapsed() >= idle, "{role}: too soon");
        }
    }
    // A body that stalls, where a route reads one.
    for (role, path) in [
        ("store", "/streams/s-1"),
        ("command-api", "/customers"),
        ("serve", "/customers"),
    ] {
        let started = Instant::now();
        let mut stream = connect(fleet.url(role)).await;
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
             content-length: 100\r\n\r\n{{\"a\": 1"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let answer = read_response(&mut stream, limit).await.unwrap();
        assert!(started.elapsed() >= idle, "{role}: too soon");
        answer.assert_problem(408, &format!("{role}, a stalled body"));
    }
}

/// One customer through the command and the query API of one process: the
/// canonical id finds it on both; every other spelling, and an id that is
/// no UUID, is the same `400 invalid-id` problem on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_is_spelled_one_way_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Proc::start(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        "annals: listening on",
    );
    let http = http();
    let id = uuid::Uuid::new_v4();
    let registered = http
        .post(format!("{}/customers", serve.url))
        .json(
            &json!({"customer_id": id, "name": "Ada", "email": "ada@example.com",
                      "credit_limit": eur(100)}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    let position = registered.json::<Value>().await.unwrap()["position"]
        .as_u64()
        .unwrap();
    let found = query_at(&http, &format!("{}/customers/{id}", serve.url), position).await;
    assert_eq!(found["id"], id.to_string());

    let canonical = id.to_string();
    for spelling in [
        canonical.to_uppercase(),
        format!("%7B{canonical}%7D"),
        format!("urn:uuid:{canonical}"),
        id.simple().to_string(),
        uuid::Uuid::nil().to_string(),
        "nope".to_owned(),
    ] {
        let command = http
            .post(format!("{}/customers/{spelling}/credit-limit", serve.url))
            .json(&json!({"credit_limit": eur(5)}))
            .send()
            .await
            .unwrap();
        let query = http
            .get(format!("{}/customers/{spelling}", serve.url))
            .send()
            .await
            .unwrap();
        let mut problems = Vec::new();
        for answer in [command, query] {
            assert_eq!(answer.status(), 400, "{spelling}");
            assert_eq!(
                answer.headers()["content-type"],
                "application/problem+json",
                "{spelling}"
            );
            let body: Value = answer.json().await.unwrap();
            assert_eq!(body["type"], "urn:annals:problem:invalid-id", "{body}");
            problems.push(json!([body["title"], body["status"], body["detail"]]));
        }
        assert_eq!(
            problems[0], problems[1],
            "{spelling}: one problem on both sides"
        );
    }
}
