//! One suite for every backend of [`EventStore`]: each test is written once
//! against the trait and runs on the segment store, on a segment store
//! served over HTTP (`RemoteStore` on loopback), and on PostgreSQL, so a
//! behaviour cannot differ between backends without a failing test.
//!
//! Test names end in their backend: `conformance::<topic>::segments::<test>`,
//! `…::remote::<test>` and `…::postgres::<test>`.
//!
//! The PostgreSQL cases use the server at `ANNALS_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432`, database `postgres`), each in a
//! schema of its own that is dropped afterwards. Without a server they are
//! skipped with a notice, except under CI (`CI` set non-empty), where that
//! is a failure.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bench_harness::pg::{drop_schema, fresh_schema, skip_without_server, test_server as server};
use event_store::{
    EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent, Store, StoreOptions, StreamId,
    Subscription,
};
use event_store_http::{RemoteOptions, RemoteStore};
use pg_store::{PgOptions, PgStore};
use tokio::task::JoinHandle;

/// Declares the tests of a topic file, one per backend, from functions
/// `async fn name(store: Arc<dyn EventStore>)` of that file:
///
/// ```text
/// backends! {
///     a_test,
///     another_test {
///         options: StoreOptions { subscription_buffer: 4, ..StoreOptions::default() },
///         postgres: #[ignore = "why"],
///     },
/// }
/// ```
///
/// `options` (default `StoreOptions::default()`) are the segment store's,
/// served or not; the remote client takes their `subscription_buffer`,
/// PostgreSQL their `limits`. `segments:`, `remote:` and `postgres:` (in
/// that order, each optional) add an attribute to that backend's test only.
macro_rules! backends {
    (@options) => {
        event_store::StoreOptions::default()
    };
    // The expression is written in the topic file, so it names what that
    // file has in scope.
    (@options $options:expr) => {{
        use super::*;
        $options
    }};
    ($(
        $name:ident $({
            $(options: $options:expr,)?
            $(segments: #[$segments:meta],)?
            $(remote: #[$remote:meta],)?
            $(postgres: #[$postgres:meta],)?
        })?
    ),* $(,)?) => {
        mod segments {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                $($(#[$segments])?)?
                async fn $name() {
                    $crate::conformance::run(
                        $crate::conformance::Backend::Segments,
                        backends!(@options $($($options)?)?),
                        super::$name,
                    )
                    .await;
                }
            )*
        }
        mod remote {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                $($(#[$remote])?)?
                async fn $name() {
                    $crate::conformance::run(
                        $crate::conformance::Backend::Remote,
                        backends!(@options $($($options)?)?),
                        super::$name,
                    )
                    .await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                $($(#[$postgres])?)?
                async fn $name() {
                    $crate::conformance::run(
                        $crate::conformance::Backend::Postgres,
                        backends!(@options $($($options)?)?),
                        super::$name,
                    )
                    .await;
                }
            )*
        }
    };
}

mod appends;
mod concurrency;
mod reads;
mod snapshots;
mod subscriptions;

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    /// The embedded segment store in a temporary directory.
    Segments,
    /// A segment store in a temporary directory behind the store server on
    /// a loopback port, reached with `RemoteStore`.
    Remote,
    /// `PgStore` in a fresh schema of the test server.
    Postgres,
}

/// Runs `test` against a fresh store of `backend`, then closes the store
/// and removes what it left (directory, schema) whether the test passed or
/// not. The test runs in a task of its own so that its panic is caught,
/// the cleanup done, and the panic passed on.
pub async fn run<F, Fut>(backend: Backend, options: StoreOptions, test: F)
where
    F: FnOnce(Arc<dyn EventStore>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(fixture) = Fixture::open(backend, options).await else {
        return;
    };
    let outcome = tokio::spawn(test(fixture.store.clone())).await;
    let closed = fixture.close().await;
    match outcome {
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("the {backend:?} test did not finish: {e}"),
        Ok(()) => {}
    }
    if let Err(e) = closed {
        panic!("the {backend:?} store does not close: {e}");
    }
}

/// A store under test and what has to be cleaned up after it.
struct Fixture {
    store: Arc<dyn EventStore>,
    held: Held,
}

enum Held {
    Segments {
        store: Store,
        _dir: tempfile::TempDir,
    },
    Remote {
        served: Store,
        server: JoinHandle<std::io::Result<()>>,
        _dir: tempfile::TempDir,
    },
    Postgres {
        store: PgStore,
        schema: String,
    },
}

impl Fixture {
    /// A fresh, empty store; `None` when the backend is PostgreSQL and no
    /// server runs outside CI (the test is skipped).
    async fn open(backend: Backend, options: StoreOptions) -> Option<Fixture> {
        match backend {
            Backend::Segments => {
                let dir = tempfile::tempdir().unwrap();
                let store = Store::open(dir.path(), options).await.unwrap();
                Some(Fixture {
                    store: Arc::new(store.clone()),
                    held: Held::Segments { store, _dir: dir },
                })
            }
            Backend::Remote => {
                let dir = tempfile::tempdir().unwrap();
                let (served, server, client) = remote_store(dir.path(), options).await;
                Some(Fixture {
                    store: Arc::new(client),
                    held: Held::Remote {
                        served,
                        server,
                        _dir: dir,
                    },
                })
            }
            Backend::Postgres => {
                let schema = fresh_schema("conformance");
                let pg_options = PgOptions {
                    schema: schema.clone(),
                    limits: options.limits,
                    ..PgOptions::default()
                };
                match PgStore::connect(&server(), pg_options).await {
                    Ok(store) => Some(Fixture {
                        store: Arc::new(store.clone()),
                        held: Held::Postgres { store, schema },
                    }),
                    Err(e) => {
                        skip_without_server(&e);
                        None
                    }
                }
            }
        }
    }

    async fn close(self) -> event_store::Result<()> {
        drop(self.store);
        match self.held {
            Held::Segments { store, _dir } => store.close().await,
            Held::Remote {
                served,
                server,
                _dir,
            } => {
                server.abort();
                served.close().await
            }
            Held::Postgres { store, schema } => {
                store.close().await;
                drop_schema(&schema)
                    .await
                    .map_err(|e| event_store::Error::Remote(format!("dropping {schema}: {e}")))
            }
        }
    }
}

/// A segment store in `dir` served over HTTP on a loopback port, the
/// server's task, and a client of it.
async fn remote_store(
    dir: &Path,
    options: StoreOptions,
) -> (Store, JoinHandle<std::io::Result<()>>, RemoteStore) {
    http_edge::tls::install_default_provider();
    let subscription_buffer = options.subscription_buffer;
    let store = Store::open(dir, options).await.unwrap();
    let app = event_store_http::router(
        Arc::new(store.clone()),
        event_store_http::ServerConfig::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = RemoteStore::connect(
        &format!("http://{addr}"),
        RemoteOptions {
            subscription_buffer,
            ..RemoteOptions::default()
        },
    )
    .await
    .unwrap();
    (store, server, client)
}

/// Options with tiny segments so that the segment store rolls over often.
pub fn small_segments() -> StoreOptions {
    StoreOptions {
        segment_bytes_max: 4096,
        ..StoreOptions::default()
    }
}

pub fn sid(s: &str) -> StreamId {
    StreamId::new(s).expect("valid stream id")
}

pub fn event(n: u64) -> NewEvent {
    NewEvent::new(
        "Happened",
        format!(r#"{{"n":{n},"pad":"{}"}}"#, "x".repeat(40)),
    )
}

/// The next item of a subscription; fails the test when nothing arrives
/// within 30 s instead of waiting for ever.
pub async fn next_within(sub: &mut Subscription) -> Option<event_store::Result<RecordedEvent>> {
    tokio::time::timeout(Duration::from_secs(30), sub.next())
        .await
        .expect("an event arrives within 30 s")
}

/// What a spawned task returned; fails the test when the task has not
/// finished within 120 s, or panicked.
pub async fn joined<T>(task: JoinHandle<T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), task)
        .await
        .expect("the task finishes within 120 s")
        .expect("the task did not panic")
}

/// Every event of the log.
pub async fn read_everything(store: &dyn EventStore) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    let mut next = Position::START;
    loop {
        let page = store.read_all(next, 1000).await.expect("read_all");
        let Some(last) = page.last() else { break };
        next = last.position.next();
        out.extend(page);
    }
    out
}

/// Appends `batches` batches of `size` events to `stream`, one after another.
pub async fn fill(store: &dyn EventStore, stream: &str, batches: u64, size: u64) {
    let id = sid(stream);
    for b in 0..batches {
        let events = (0..size).map(|i| event(b * size + i)).collect();
        store
            .append(&id, ExpectedVersion::Any, events)
            .await
            .expect("append");
    }
}
