//! Helpers shared by the projector tests: a real store in a temporary
//! directory, view databases on SQLite files and in PostgreSQL schemas,
//! running a projector to a position, and dumping tables for comparison.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use annals_credit::generator::{Generator, append_events};
use event_store::{EventStore, NewEvent, Position, Store, StoreOptions, StreamId};
use projector::{Projector, ProjectorHandle, ProjectorOptions, ViewDb, ViewDbOptions};
use sqlx::Row;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The database the tests make their schemas in: `postgres` on the server
/// at `ANNALS_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432`).
pub fn postgres_url() -> String {
    let server = std::env::var("ANNALS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    format!("{}/postgres", server.trim_end_matches('/'))
}

/// Under CI (`CI` set to anything), a PostgreSQL test must not skip.
fn postgres_required() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// Options that make tests quick: small batches (many transactions), fast
/// retries and polls.
pub fn test_options() -> ProjectorOptions {
    ProjectorOptions {
        batch_events_max: 200,
        retry_backoff_min: Duration::from_millis(5),
        retry_backoff_max: Duration::from_millis(50),
        failed_poll_interval: Duration::from_millis(50),
        ..ProjectorOptions::default()
    }
}

pub async fn open_store(dir: &Path) -> Store {
    Store::open(dir.join("store"), StoreOptions::default())
        .await
        .expect("open store")
}

pub fn sid(s: &str) -> StreamId {
    StreamId::new(s).unwrap()
}

/// Appends `events` generated events; returns the head.
pub async fn generate(store: &Store, generator: &mut Generator, events: u64) -> Position {
    append_events(store, generator, events).await.unwrap()
}

/// Appends one raw event to a stream (any version).
pub async fn append_raw(store: &Store, stream: &str, event_type: &str, data: &str) -> Position {
    store
        .append(
            &sid(stream),
            event_store::ExpectedVersion::Any,
            vec![NewEvent::new(event_type, data.to_owned())],
        )
        .await
        .unwrap()
        .last_position
}

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A view database for one test: a SQLite file in its own directory, or a
/// PostgreSQL schema of its own, dropped when the value is dropped.
#[derive(Debug)]
pub struct TestDb {
    pub backend: Backend,
    url: String,
    options: ViewDbOptions,
    _dir: Option<tempfile::TempDir>,
    schema: Option<String>,
}

static SCHEMA_SEQ: AtomicU64 = AtomicU64::new(0);

impl TestDb {
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = projector_sqlite_url(&dir.path().join("views.sqlite"));
        TestDb {
            backend: Backend::Sqlite,
            url,
            options: ViewDbOptions::default(),
            _dir: Some(dir),
            schema: None,
        }
    }

    /// A fresh schema on the test server; `None` (after a notice) when the
    /// server is unreachable, except under CI (`CI` set), where that fails.
    pub async fn postgres() -> Option<TestDb> {
        let url = postgres_url();
        sqlx::any::install_default_drivers();
        let reachable = tokio::time::timeout(
            Duration::from_secs(5),
            <sqlx::AnyConnection as sqlx::Connection>::connect(&url),
        )
        .await;
        match reachable {
            Ok(Ok(conn)) => {
                let _ = sqlx::Connection::close(conn).await;
            }
            outcome => {
                let reason = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".into(),
                };
                if postgres_required() {
                    panic!("PostgreSQL at {url} is required under CI: {reason}");
                }
                eprintln!("notice: PostgreSQL at {url} unreachable ({reason}); skipping");
                return None;
            }
        }
        let schema = format!(
            "annals_test_{}_{}_{}",
            std::process::id(),
            SCHEMA_SEQ.fetch_add(1, Ordering::SeqCst),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        Some(TestDb {
            backend: Backend::Postgres,
            url,
            options: ViewDbOptions {
                postgres_schema: Some(schema.clone()),
                max_connections: 6,
                ..ViewDbOptions::default()
            },
            _dir: None,
            schema: Some(schema),
        })
    }

    /// Every backend available: SQLite always, PostgreSQL when reachable.
    pub async fn all() -> Vec<TestDb> {
        let mut dbs = vec![TestDb::sqlite()];
        if let Some(pg) = TestDb::postgres().await {
            dbs.push(pg);
        }
        dbs
    }

    /// Opens (or reopens) the database, applying the migrations.
    pub async fn open(&self) -> ViewDb {
        ViewDb::open_with(&self.url, self.options.clone())
            .await
            .expect("open view database")
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(schema) = self.schema.take() else {
            return;
        };
        let url = self.url.clone();
        // Drop runs outside any runtime's reach: use a thread of its own.
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

pub fn projector_sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

/// A projector running in a task, stopped on demand.
pub struct Running {
    pub handle: ProjectorHandle,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<projector::Result<()>>,
}

impl Running {
    pub fn start(projector: Projector) -> Running {
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

    /// Waits until every projection's checkpoint reaches `position`.
    pub async fn wait_for(&self, position: Position) {
        wait_for_status(&self.handle, Duration::from_secs(120), |s| {
            s.iter()
                .all(|p| p.position >= position.0 && p.rebuild.is_none())
        })
        .await;
    }

    /// Stops gracefully and returns what `run` returned.
    pub async fn stop(mut self) -> projector::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(60), &mut self.task)
            .await
            .expect("the projector stops within 60 s")
            .expect("projector task")
    }
}

/// A projector on a runtime of its own, on a thread of its own, to be
/// killed as a crash would kill it.
///
/// Aborting the task of [`Projector::run`] would not do: `run` spawns a
/// task per projection (and per rebuild), which an abort of `run` leaves
/// running. Dropping the whole runtime instead drops every one of those
/// tasks at the point where it waits, in the middle of a batch included:
/// nothing is committed on the way out, and the transactions in progress
/// are rolled back by the database when their connections close. That is a
/// crash of the projector; it is not a crash of the machine (what reached
/// the database before the kill stays there, as after a process kill).
pub struct Crashable {
    kill: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Crashable {
    /// Starts the reference projections over a view database of its own
    /// (its connections must live on the runtime that is killed); returns
    /// once the database is open and the projector starting.
    pub async fn start(store: &Store, test_db: &TestDb, options: ProjectorOptions) -> Crashable {
        let store = store.clone();
        let url = test_db.url.clone();
        let db_options = test_db.options.clone();
        let (kill, killed) = oneshot::channel::<()>();
        let (started, starting) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let db = ViewDb::open_with(&url, db_options)
                    .await
                    .expect("open view database");
                let projector = reference_projector(&store, &db, options);
                let _ = started.send(());
                tokio::select! {
                    result = projector.run(std::future::pending()) => {
                        panic!("the projector returned before the kill: {result:?}")
                    }
                    _ = killed => {}
                }
            });
            // Every task the projector spawned is dropped here, where it
            // stands.
            drop(runtime);
        });
        let crashable = Crashable {
            kill: Some(kill),
            thread: Some(thread),
        };
        // A panic on the thread (the database would not open) drops the
        // sender: `crash` then reports it.
        if tokio::time::timeout(Duration::from_secs(60), starting)
            .await
            .expect("the projector starts within 60 s")
            .is_err()
        {
            crashable.crash().await;
            unreachable!("the projector thread ended before starting");
        }
        crashable
    }

    /// Kills the projector and waits until none of its tasks is left.
    pub async fn crash(mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        let thread = self.thread.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !thread.is_finished() {
            assert!(
                Instant::now() < deadline,
                "the killed projector's runtime did not shut down within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if let Err(panic) = thread.join() {
            std::panic::resume_unwind(panic);
        }
    }
}

/// What a spawned task returned; fails the test when the task has not
/// finished within `limit`, or panicked.
pub async fn joined<T>(task: JoinHandle<T>, limit: Duration) -> T {
    tokio::time::timeout(limit, task)
        .await
        .unwrap_or_else(|_| panic!("the task did not finish within {limit:?}"))
        .expect("the task did not panic")
}

/// Polls the status until `done` holds; panics with the last status after
/// `timeout`.
pub async fn wait_for_status(
    handle: &ProjectorHandle,
    timeout: Duration,
    done: impl Fn(&[projector::ProjectionStatus]) -> bool,
) -> Vec<projector::ProjectionStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        let status = handle.status().await.unwrap();
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting; last status: {status:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn reference_projector(store: &Store, db: &ViewDb, options: ProjectorOptions) -> Projector {
    Projector::builder(Arc::new(store.clone()), db.clone())
        .options(options)
        .projections(annals_credit::views::projections())
        .build()
        .unwrap()
}

/// Projects the whole log into `db` with the reference projections and
/// stops.
pub async fn project_all(store: &Store, db: &ViewDb) {
    let head = store.head().await.unwrap();
    let running = Running::start(reference_projector(store, db, test_options()));
    running.wait_for(head).await;
    running.stop().await.unwrap();
}

/// Every row of a table, ordered by id, each value rendered as text.
pub async fn dump(db: &ViewDb, table: &str, columns: &[&str]) -> Vec<Vec<String>> {
    let sql = format!("SELECT {} FROM {table} ORDER BY id", columns.join(", "));
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(db.pool())
        .await
        .unwrap();
    rows.iter()
        .map(|row| (0..columns.len()).map(|i| cell(row, i)).collect())
        .collect()
}

fn cell(row: &sqlx::any::AnyRow, i: usize) -> String {
    if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
        return v.map_or_else(|| "NULL".into(), |v| v.to_string());
    }
    match row.try_get::<Option<String>, _>(i) {
        Ok(v) => v.unwrap_or_else(|| "NULL".into()),
        Err(e) => panic!("column {i}: {e}"),
    }
}

/// Both reference views, dumped.
pub async fn dump_views(db: &ViewDb) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    (
        dump(db, "customers", &annals_credit::views::CUSTOMER_COLUMNS).await,
        dump(db, "orders", &annals_credit::views::ORDER_COLUMNS).await,
    )
}

/// The live checkpoint of a projection.
pub async fn checkpoint(db: &ViewDb, name: &str) -> Option<projector::Checkpoint> {
    db.checkpoint(name, projector::Track::Live).await.unwrap()
}
