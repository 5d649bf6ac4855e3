//! Given events, a projection's view: the real store, the real projector
//! and a real view database, read back as rows or through query routes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use command_api::{Aggregate, DomainEvent};
use event_store::{
    EventStore, ExpectedVersion, Metadata, NewEvent, Position, Store, StoreOptions, StreamId,
};
use projector::{
    Projection, ProjectionStatus, Projector, ProjectorHandle, ProjectorOptions, TrackState, ViewDb,
};
use query_api::{QueryConfig, QueryRoutes, QueryState};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::{Column, Row, ValueRef};
use tower::ServiceExt;
use uuid::Uuid;

use super::{Answer, TestDatabase, WAIT_MAX};

/// One projection over a store of its own and a view database of its own.
///
/// Events go in with [`given`](Self::given) (an aggregate's) or
/// [`given_stream`](Self::given_stream) (any stream's), appended to the
/// store as a command would append them: typed domain events, encoded by
/// their own code, with fresh ids and command metadata. Every read
/// ([`rows`](Self::rows), [`get`](Self::get)) first runs the real projector
/// until the projection has caught up with the store's head, and fails the
/// test if the projection stopped on an event instead.
///
/// ```no_run
/// # use annals::testkit::ProjectionTest;
/// # async fn example(view: ProjectionTest, routes: query_api::QueryRoutes) {
/// let rows = view.rows("SELECT id, balance FROM accounts ORDER BY id").await;
/// let page = view.get(&routes, "/accounts?status=open").await;
/// assert_eq!(page.status, 200, "{}", page.body);
/// # }
/// ```
pub struct ProjectionTest {
    projection: Arc<dyn Projection>,
    store: Store,
    views: ViewDb,
    // Dropped after the view database's pool above.
    _database: Option<TestDatabase>,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for ProjectionTest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionTest")
            .field("projection", &self.projection.name())
            .field("views", &self.views.description())
            .finish_non_exhaustive()
    }
}

impl ProjectionTest {
    /// `projection` with its view in a SQLite file of a temporary
    /// directory.
    pub async fn sqlite(projection: impl Projection) -> ProjectionTest {
        let dir = temp_dir();
        let views = ViewDb::open_in_data_dir(dir.path())
            .await
            .unwrap_or_else(|e| panic!("opening the SQLite view database: {e}"));
        ProjectionTest::new(Arc::new(projection), views, None, dir).await
    }

    /// `projection` with its view in a PostgreSQL database of its own
    /// ([`TestDatabase`]); `None`, so that the test skips, when no server
    /// answers and this is not CI.
    pub async fn postgres(projection: impl Projection) -> Option<ProjectionTest> {
        let database = TestDatabase::create(projection.name()).await?;
        let views = ViewDb::open(database.url())
            .await
            .unwrap_or_else(|e| panic!("opening the view database {}: {e}", database.name()));
        Some(ProjectionTest::new(Arc::new(projection), views, Some(database), temp_dir()).await)
    }

    async fn new(
        projection: Arc<dyn Projection>,
        views: ViewDb,
        database: Option<TestDatabase>,
        dir: tempfile::TempDir,
    ) -> ProjectionTest {
        let store = Store::open(dir.path().join("store"), StoreOptions::default())
            .await
            .unwrap_or_else(|e| panic!("opening the event store: {e}"));
        ProjectionTest {
            projection,
            store,
            views,
            _database: database,
            _dir: dir,
        }
    }

    /// Appends `events` to the stream of the aggregate `A` with id `id`
    /// (`<A::TYPE>-<id>`), after the events already there; the position of
    /// the last one.
    pub async fn given<A: Aggregate>(
        &self,
        id: Uuid,
        events: impl IntoIterator<Item = A::Event>,
    ) -> Position {
        let stream = command_api::handler::stream_id::<A>(id)
            .unwrap_or_else(|e| panic!("the stream of {} {id}: {e}", A::TYPE));
        self.append(&stream, events.into_iter().map(encode).collect())
            .await
    }

    /// Appends `events` to `stream`, after the events already there; the
    /// position of the last one.
    pub async fn given_stream<E: DomainEvent>(
        &self,
        stream: &str,
        events: impl IntoIterator<Item = E>,
    ) -> Position {
        let events = events.into_iter().map(encode).collect();
        self.given_raw(stream, events).await
    }

    /// Appends events as they are, for what typed events do not say: an
    /// older schema version, metadata of a test's choice, a type the
    /// projection ignores.
    pub async fn given_raw(&self, stream: &str, events: Vec<NewEvent>) -> Position {
        let stream =
            StreamId::new(stream).unwrap_or_else(|e| panic!("the stream id {stream:?}: {e}"));
        self.append(&stream, events).await
    }

    /// Appends `events` with the metadata one command gives all of its
    /// events (command, correlation and causation id), unless they carry
    /// metadata of their own.
    async fn append(&self, stream: &StreamId, events: Vec<NewEvent>) -> Position {
        let command = Uuid::now_v7();
        let mut extra = serde_json::Map::new();
        extra.insert("command_id".into(), command.to_string().into());
        let metadata = Metadata {
            correlation_id: Some(command),
            causation_id: Some(command),
            extra,
        };
        let events = events
            .into_iter()
            .map(|event| {
                if event.metadata.as_ref() == b"{}" {
                    event
                        .with_metadata(&metadata)
                        .unwrap_or_else(|e| panic!("encoding metadata: {e}"))
                } else {
                    event
                }
            })
            .collect();
        self.store
            .append(stream, ExpectedVersion::Any, events)
            .await
            .unwrap_or_else(|e| panic!("appending to {stream}: {e}"))
            .last_position
    }

    /// The store the events go to, for what the methods above do not do.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The view database, for what the methods below do not do (call
    /// [`catch_up`](Self::catch_up) first).
    pub fn views(&self) -> &ViewDb {
        &self.views
    }

    /// Runs the projector until the projection has caught up with the
    /// store's head (creating its tables on the first run), then stops it;
    /// fails the test if the projection stopped on an event, or did not
    /// catch up within [`WAIT_MAX`].
    pub async fn catch_up(&self) {
        let head = self
            .store
            .head()
            .await
            .unwrap_or_else(|e| panic!("reading the store's head: {e}"));
        let projector = Projector::builder(Arc::new(self.store.clone()), self.views.clone())
            .options(ProjectorOptions {
                retry_backoff_min: Duration::from_millis(5),
                retry_backoff_max: Duration::from_millis(100),
                failed_poll_interval: Duration::from_millis(20),
                ..ProjectorOptions::default()
            })
            .projection_arc(self.projection.clone())
            .build()
            .unwrap_or_else(|e| panic!("building the projector: {e}"));
        // The tables exist even when there is nothing to project.
        projector
            .create_tables()
            .await
            .unwrap_or_else(|e| panic!("creating the view's tables: {e}"));
        let handle = projector.handle();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(projector.run(async move {
            let _ = stopped.await;
        }));
        let waited = wait_for(&handle, head).await;
        let _ = stop.send(());
        match tokio::time::timeout(WAIT_MAX, running).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => panic!("the projector ended with an error: {e}"),
            Ok(Err(e)) => panic!("the projector's task failed: {e}"),
            Err(_) => panic!("the projector did not stop within {WAIT_MAX:?}"),
        }
        if let Err(problem) = waited {
            panic!("{problem}");
        }
    }

    /// The rows `sql` selects once the view has caught up, each a JSON
    /// object of its columns: integers and floats as numbers, text as
    /// strings, booleans, `null`, blobs as arrays of bytes.
    pub async fn rows(&self, sql: &str) -> Vec<Value> {
        self.catch_up().await;
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_all(self.views.pool())
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.iter().map(row_json).collect()
    }

    /// [`rows`](Self::rows), each read as a `T`.
    pub async fn rows_as<T: DeserializeOwned>(&self, sql: &str) -> Vec<T> {
        self.rows(sql)
            .await
            .into_iter()
            .map(|row| {
                serde_json::from_value(row.clone())
                    .unwrap_or_else(|e| panic!("the row {row} as the type asked for: {e}"))
            })
            .collect()
    }

    /// `GET path` through the query API serving `routes` over this view,
    /// once the view has caught up.
    pub async fn get(&self, routes: &QueryRoutes, path: &str) -> Answer {
        self.catch_up().await;
        let router = query_api::router(
            QueryState::new(self.views.clone(), QueryConfig::default()),
            routes,
        );
        let request = Request::get(path)
            .body(Body::empty())
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let response = match router.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_else(|e| panic!("reading the answer to GET {path}: {e}"));
        Answer::new(parts.status, parts.headers, &bytes)
    }
}

/// Polls the projector's status until every projection has reached `head`
/// with no rebuild in progress; why not, if one stopped on an event or
/// [`WAIT_MAX`] passed.
async fn wait_for(handle: &ProjectorHandle, head: Position) -> Result<(), String> {
    let deadline = Instant::now() + WAIT_MAX;
    let mut last: Vec<ProjectionStatus>;
    loop {
        last = handle
            .status()
            .await
            .map_err(|e| format!("reading the projector's status: {e}"))?;
        if let Some(failed) = last.iter().find(|p| p.state == TrackState::Failed) {
            return Err(format!(
                "the projection {} stopped on the event at position {}: {}",
                failed.name,
                failed.error_position.unwrap_or_default(),
                failed.last_error.as_deref().unwrap_or("no error recorded")
            ));
        }
        if last
            .iter()
            .all(|p| p.position >= head.0 && p.rebuild.is_none())
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the projection did not reach position {} within {WAIT_MAX:?}: {last:?}",
                head.0
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An event as its own code encodes it, with a fresh id and no metadata.
fn encode<E: DomainEvent>(event: E) -> NewEvent {
    let data = event
        .encode()
        .unwrap_or_else(|e| panic!("encoding {event:?}: {e}"));
    NewEvent::new(event.event_type(), data).with_schema_version(event.schema_version())
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("creating a temporary directory: {e}"))
}

/// A row as a JSON object of its columns.
fn row_json(row: &sqlx::any::AnyRow) -> Value {
    let mut object = serde_json::Map::new();
    for (i, column) in row.columns().iter().enumerate() {
        object.insert(column.name().to_owned(), value_json(row, i));
    }
    Value::Object(object)
}

/// The value of column `i` as JSON, by the type the database gave it.
fn value_json(row: &sqlx::any::AnyRow, i: usize) -> Value {
    use sqlx::any::AnyTypeInfoKind as Kind;
    let raw = row
        .try_get_raw(i)
        .unwrap_or_else(|e| panic!("reading column {i}: {e}"));
    if raw.is_null() {
        return Value::Null;
    }
    let kind = raw.type_info().kind();
    let fail = |e: sqlx::Error| -> Value { panic!("reading column {i} ({kind:?}): {e}") };
    match kind {
        Kind::Null => Value::Null,
        Kind::Bool => row.try_get::<bool, _>(i).map_or_else(fail, Value::from),
        Kind::SmallInt | Kind::Integer | Kind::BigInt => {
            row.try_get::<i64, _>(i).map_or_else(fail, Value::from)
        }
        Kind::Real | Kind::Double => row.try_get::<f64, _>(i).map_or_else(fail, Value::from),
        Kind::Text => row.try_get::<String, _>(i).map_or_else(fail, Value::from),
        Kind::Blob => row.try_get::<Vec<u8>, _>(i).map_or_else(fail, Value::from),
    }
}
