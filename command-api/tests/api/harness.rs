//! The test harness: the real router over a real store in a temporary data
//! directory, either called in-process (`oneshot`) or served on an
//! ephemeral loopback port and driven by a real HTTP client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use annals_credit::domain::customer::Customer;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request};
use command_api::{ApiConfig, Commands, HandlerConfig, serve};
use event_store::{
    Direction, EventStore, Position, ReadFrom, RecordedEvent, Store, StoreOptions, StreamId,
};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::ServiceExt;
use uuid::Uuid;

/// How a test's API behaves: the routes' limits, and the customers'
/// handler (other handlers keep their defaults).
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub api: ApiConfig,
    pub customers: HandlerConfig,
}

impl From<ApiConfig> for Config {
    fn from(api: ApiConfig) -> Self {
        Config {
            api,
            ..Config::default()
        }
    }
}

/// The reference domain's routes over `store`, as `annals serve` has them.
pub fn router(store: Arc<dyn EventStore>, config: impl Into<Config>) -> (Commands, Router) {
    let config = config.into();
    let commands = Commands::new(store, HandlerConfig::default());
    commands.configure::<Customer>(config.customers);
    let router = annals_credit::routes::api().router(&commands, config.api);
    (commands, router)
}

/// Whether `ANNALS_TEST_LONG` asks for the long run (any value but empty
/// or `0`): property tests then try many more and longer cases.
pub fn long_run() -> bool {
    std::env::var("ANNALS_TEST_LONG").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `store` with the reference domain's upcasters, as every process reads it.
pub fn upcasting(store: impl EventStore) -> Arc<dyn EventStore> {
    Arc::new(event_store::Upcasting::new(store, annals_credit::domain::upcasters()).unwrap())
}

/// A response, whichever way it came.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The id of the aggregate a success names.
    pub fn id(&self) -> Uuid {
        self.body["id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .unwrap_or_else(|| panic!("no id in {}", self.text))
    }

    pub fn version(&self) -> u64 {
        self.body["version"].as_u64().unwrap()
    }

    /// Checks that this is a problem document of `status` and type `slug`.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, slug: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{}",
            self.text
        );
        assert_eq!(
            self.body["type"],
            format!("urn:annals:problem:{slug}"),
            "{}",
            self.text
        );
        assert_eq!(self.body["status"], status, "{}", self.text);
        assert!(self.body["title"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(self.body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
}

fn reply(status: u16, headers: HeaderMap, bytes: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let body = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        text,
        body,
    }
}

/// The store and router, without a socket.
pub struct Fixture {
    _dir: tempfile::TempDir,
    pub store: Store,
    pub router: Router,
}

impl Fixture {
    pub async fn new() -> Fixture {
        Fixture::with_config(ApiConfig::default()).await
    }

    pub async fn with_config(config: impl Into<Config>) -> Fixture {
        Fixture::with_store(config, upcasting).await
    }

    /// The API over `front(store)`: the store itself or something in front
    /// of it.
    pub async fn with_store(
        config: impl Into<Config>,
        front: impl FnOnce(Store) -> Arc<dyn EventStore>,
    ) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default())
            .await
            .unwrap();
        let (_, router) = router(front(store.clone()), config);
        Fixture {
            _dir: dir,
            store,
            router,
        }
    }

    /// Sends one request through the router.
    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        reply(status, headers, &bytes)
    }

    /// POSTs `body` as JSON with extra headers.
    pub async fn post(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
        self.post_raw(path, "application/json", body.to_string(), headers)
            .await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<Body>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = Request::post(path);
        if !content_type.is_empty() {
            request = request.header("content-type", content_type);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request.body(body.into()).unwrap()).await
    }

    pub async fn head(&self) -> Position {
        self.store.head().await.unwrap()
    }
}

/// The command API served on 127.0.0.1 over a store in a data directory
/// that outlives restarts.
pub struct App {
    pub dir: Arc<tempfile::TempDir>,
    pub store: Store,
    pub commands: Commands,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl App {
    pub async fn start() -> App {
        App::start_with(ApiConfig::default()).await
    }

    pub async fn start_with(config: impl Into<Config>) -> App {
        App::start_in(Arc::new(tempfile::tempdir().unwrap()), config).await
    }

    pub async fn start_in(dir: Arc<tempfile::TempDir>, config: impl Into<Config>) -> App {
        let store = Store::open(dir.path(), StoreOptions::default())
            .await
            .unwrap();
        App::serve_store(dir, store.clone(), upcasting(store), config).await
    }

    /// Serves the API over `api_store` (the store itself, or something in
    /// front of it); `store` is the embedded store underneath, for checks.
    pub async fn serve_store(
        dir: Arc<tempfile::TempDir>,
        store: Store,
        api_store: Arc<dyn EventStore>,
        config: impl Into<Config>,
    ) -> App {
        let (commands, router) = router(api_store, config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown, stop) = oneshot::channel::<()>();
        http_edge::tls::install_default_provider();
        let server = tokio::spawn(serve(listener, router, async move {
            let _ = stop.await;
        }));
        App {
            dir,
            store,
            commands,
            addr,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            shutdown: Some(shutdown),
            server: Some(server),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.post_with(path, body, &[]).await
    }

    pub async fn post_with(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
        self.post_raw(path, "application/json", body.to_string(), headers)
            .await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = self.client.post(self.url(path)).body(body);
        if !content_type.is_empty() {
            request = request.header("content-type", content_type);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        reply(status, headers, &bytes)
    }

    /// Graceful shutdown: the server stops and the store closes; the data
    /// directory stays for [`App::start_in`].
    pub async fn stop(mut self) -> Arc<tempfile::TempDir> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(60), server)
                .await
                .expect("the server shuts down within 60 s")
                .unwrap()
                .unwrap();
        }
        self.store.close().await.unwrap();
        self.dir.clone()
    }

    pub async fn head(&self) -> Position {
        self.store.head().await.unwrap()
    }

    pub async fn events(&self, stream: &str) -> Vec<RecordedEvent> {
        stream_events(&self.store, stream).await
    }
}

/// Every event of a stream.
pub async fn stream_events(store: &Store, stream: &str) -> Vec<RecordedEvent> {
    store
        .read_stream(
            &StreamId::new(stream).unwrap(),
            ReadFrom::Start,
            Direction::Forward,
            10_000,
        )
        .await
        .unwrap()
        .events
}

pub fn eur(amount: i64) -> Value {
    serde_json::json!({"amount": amount, "currency": "EUR"})
}

pub fn register_body(limit: i64) -> Value {
    serde_json::json!({
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "credit_limit": eur(limit),
    })
}
