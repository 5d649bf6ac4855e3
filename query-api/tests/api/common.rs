//! Helpers: a store in a temporary directory, view databases (SQLite files,
//! PostgreSQL schemas), a projector to run, and requests through the router.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use annals_credit::generator::{Generator, append_events};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use event_store::{EventStore, Position, Store, StoreOptions};
use projector::{Projector, ProjectorHandle, ProjectorOptions, ViewDb, ViewDbOptions};
use query_api::{QueryConfig, QueryState};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::ServiceExt;

pub async fn open_store(dir: &std::path::Path) -> Store {
    Store::open(dir.join("store"), StoreOptions::default())
        .await
        .unwrap()
}

pub async fn generate(store: &Store, generator: &mut Generator, events: u64) -> Position {
    append_events(store, generator, events).await.unwrap()
}

pub fn projector_options() -> ProjectorOptions {
    ProjectorOptions {
        batch_events_max: 300,
        retry_backoff_min: Duration::from_millis(5),
        retry_backoff_max: Duration::from_millis(50),
        failed_poll_interval: Duration::from_millis(50),
        ..ProjectorOptions::default()
    }
}

/// A view database of its own: a SQLite file, or a PostgreSQL schema
/// dropped afterwards.
#[derive(Debug)]
pub struct TestDb {
    pub name: &'static str,
    url: String,
    options: ViewDbOptions,
    _dir: Option<tempfile::TempDir>,
    schema: Option<String>,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

impl TestDb {
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        TestDb {
            name: "sqlite",
            url: format!("sqlite://{}", dir.path().join("views.sqlite").display()),
            options: ViewDbOptions::default(),
            _dir: Some(dir),
            schema: None,
        }
    }

    /// A schema of its own in database `postgres` on the server at
    /// `ANNALS_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432`);
    /// `None` with a notice when the server is unreachable, a failure under
    /// CI (`CI` set to anything).
    pub async fn postgres() -> Option<TestDb> {
        let server = std::env::var("ANNALS_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let url = format!("{}/postgres", server.trim_end_matches('/'));
        sqlx::any::install_default_drivers();
        let connected = tokio::time::timeout(
            Duration::from_secs(5),
            <sqlx::AnyConnection as sqlx::Connection>::connect(&url),
        )
        .await;
        match connected {
            Ok(Ok(conn)) => {
                let _ = sqlx::Connection::close(conn).await;
            }
            other => {
                let reason = match other {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".into(),
                };
                if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
                    panic!("PostgreSQL at {url} is required under CI: {reason}");
                }
                eprintln!("notice: PostgreSQL at {url} unreachable ({reason}); skipping");
                return None;
            }
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let schema = format!(
            "annals_qtest_{}_{}_{nanos}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        Some(TestDb {
            name: "postgres",
            url,
            options: ViewDbOptions {
                postgres_schema: Some(schema.clone()),
                max_connections: 8,
                ..ViewDbOptions::default()
            },
            _dir: None,
            schema: Some(schema),
        })
    }

    pub async fn all() -> Vec<TestDb> {
        let mut all = vec![TestDb::sqlite()];
        all.extend(TestDb::postgres().await);
        all
    }

    pub async fn open(&self) -> ViewDb {
        ViewDb::open_with(&self.url, self.options.clone())
            .await
            .unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(schema) = self.schema.take() else {
            return;
        };
        let url = self.url.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(drop_schema(&url, &schema));
        })
        .join();
    }
}

/// Drops a test schema, bounded: a projector task left in an open
/// transaction holds locks the `DROP` would wait for without end. On
/// failure the schema stays behind, with a notice.
async fn drop_schema(url: &str, schema: &str) {
    let dropped = tokio::time::timeout(Duration::from_secs(30), async {
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(url).await?;
        for setting in ["SET lock_timeout = '5s'", "SET statement_timeout = '30s'"] {
            sqlx::query(setting).execute(&mut conn).await?;
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
        )))
        .execute(&mut conn)
        .await?;
        sqlx::Connection::close(conn).await
    })
    .await;
    match dropped {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("notice: test schema {schema} left behind: {e}"),
        Err(_) => eprintln!("notice: test schema {schema} left behind: no drop within 30 s"),
    }
}

/// A projector running in a task.
pub struct Running {
    pub handle: ProjectorHandle,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<projector::Result<()>>,
}

impl Running {
    pub fn start(store: &Store, db: &ViewDb) -> Running {
        let projector = Projector::builder(Arc::new(store.clone()), db.clone())
            .options(projector_options())
            .projections(annals_credit::views::projections())
            .build()
            .unwrap();
        let handle = projector.handle();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(projector.run(async move {
            let _ = stopped.await;
        }));
        Running {
            handle,
            stop: Some(stop),
            task,
        }
    }

    pub async fn wait_for(&self, position: Position) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let status = self.handle.status().await.unwrap();
            if status
                .iter()
                .all(|s| s.position >= position.0 && s.rebuild.is_none())
            {
                return;
            }
            assert!(Instant::now() < deadline, "timed out: {status:#?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(60), &mut self.task)
            .await
            .expect("the projector stops within 60 s")
            .unwrap()
            .unwrap();
    }
}

/// Projects the whole log and stops.
pub async fn project_all(store: &Store, db: &ViewDb) {
    let head = store.head().await.unwrap();
    let running = Running::start(store, db);
    running.wait_for(head).await;
    running.stop().await;
}

pub fn app(db: &ViewDb, config: QueryConfig) -> axum::Router {
    query_api::router(
        QueryState::new(db.clone(), config),
        &annals_credit::queries::routes(),
    )
}

/// An answer: status, headers (lowercase names) and JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HashMap<String, String>,
    pub body: Value,
}

impl Answer {
    pub fn position(&self) -> u64 {
        self.headers["annals-position"].parse().unwrap()
    }
}

pub async fn get(app: &axum::Router, uri: &str) -> Answer {
    get_with(app, uri, &[]).await
}

pub async fn get_with(app: &axum::Router, uri: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = Request::builder().uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

/// Checks that an answer is a problem document with this status.
pub fn assert_problem(answer: &Answer, status: StatusCode) {
    assert_eq!(answer.status, status, "{answer:?}");
    assert_eq!(
        answer.headers.get("content-type").map(String::as_str),
        Some("application/problem+json"),
        "{answer:?}"
    );
    assert_eq!(answer.body["status"], status.as_u16());
    for member in ["type", "title", "detail"] {
        assert!(
            answer.body[member].is_string(),
            "{member} missing: {answer:?}"
        );
    }
}

/// Both reference views, every row ordered by id, values as text.
pub async fn dump_views(db: &ViewDb) -> Vec<Vec<String>> {
    use sqlx::Row;
    let mut out = Vec::new();
    for (table, columns) in [
        ("customers", &annals_credit::views::CUSTOMER_COLUMNS[..]),
        ("orders", &annals_credit::views::ORDER_COLUMNS[..]),
    ] {
        let sql = format!("SELECT {} FROM {table} ORDER BY id", columns.join(", "));
        for row in sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(db.pool())
            .await
            .unwrap()
        {
            out.push(
                (0..columns.len())
                    .map(|i| match row.try_get::<Option<i64>, _>(i) {
                        Ok(v) => format!("{v:?}"),
                        Err(_) => format!("{:?}", row.try_get::<Option<String>, _>(i).unwrap()),
                    })
                    .collect(),
            );
        }
    }
    out
}

/// What a spawned task returned; fails the test when the task has not
/// finished within `limit`, or panicked.
pub async fn joined<T>(task: JoinHandle<T>, limit: Duration) -> T {
    tokio::time::timeout(limit, task)
        .await
        .unwrap_or_else(|_| panic!("the task did not finish within {limit:?}"))
        .expect("the task did not panic")
}

/// A plain HTTP client whose requests fail after 30 s rather than hang.
pub fn http_client() -> reqwest::Client {
    http_edge::tls::install_default_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Serves the query API on a loopback port; returns its base URL.
pub async fn serve(db: &ViewDb, config: QueryConfig) -> (String, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app(db, config);
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    (format!("http://{addr}"), task)
}
