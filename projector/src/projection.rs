//! What a projection is: a name, a version, the tables it owns, the event
//! types it wants and a handler that folds batches of them into its tables.

use async_trait::async_trait;
use event_store::{Position, RecordedEvent};
use sqlx::AnyConnection;

use crate::db::Dialect;
use crate::schema::Schema;
use crate::tables::TableNames;

/// A read model built from the event log.
///
/// The projector calls [`Projection::apply`] with batches of the events the
/// projection wants, in log order, inside a transaction that also moves the
/// projection's checkpoint: either both commit or neither does, so every
/// event takes effect exactly once even though the store delivers it at
/// least once.
///
/// The projection declares its tables' DDL ([`Projection::schema`]); the
/// projector creates the tables that do not exist at start, and the shadow
/// tables of a rebuild from the same DDL. Handlers write them through
/// [`ViewTx::table`], which names the live table or, during a rebuild, its
/// shadow.
///
/// ```
/// use std::sync::Arc;
///
/// use async_trait::async_trait;
/// use event_store::{EventStore, ExpectedVersion, NewEvent, RecordedEvent, Store, StreamId};
/// use projector::{ApplyError, Projection, Projector, Schema, ViewDb, ViewTx};
/// use sqlx::AssertSqlSafe;
///
/// /// The `tasks` view: one row per task stream, with whether it is done.
/// #[derive(Debug)]
/// struct Tasks;
///
/// /// The data of a `TaskAdded` event.
/// #[derive(serde::Deserialize)]
/// struct TaskAdded {
///     title: String,
/// }
///
/// #[async_trait]
/// impl Projection for Tasks {
///     fn name(&self) -> &'static str {
///         "tasks"
///     }
///     fn version(&self) -> u32 {
///         1
///     }
///     fn tables(&self) -> &'static [&'static str] {
///         &["tasks"]
///     }
///     fn schema(&self) -> Schema {
///         let ddl = "CREATE TABLE tasks (id TEXT PRIMARY KEY, title TEXT NOT NULL, done BIGINT NOT NULL)";
///         Schema::new(ddl, ddl)
///     }
///     fn event_types(&self) -> &'static [&'static str] {
///         &["TaskAdded", "TaskCompleted"]
///     }
///     async fn apply(&self, tx: &mut ViewTx<'_>, events: &[RecordedEvent]) -> Result<(), ApplyError> {
///         // The live table, or its shadow during a rebuild.
///         let table = tx.table("tasks")?;
///         for event in events {
///             let id = event.stream_id.as_str().to_owned();
///             let query = if event.event_type == "TaskAdded" {
///                 let added: TaskAdded = serde_json::from_slice(&event.data)
///                     .map_err(|e| ApplyError::event(event, e.to_string()))?;
///                 sqlx::query(AssertSqlSafe(format!(
///                     "INSERT INTO {table} (id, title, done) VALUES ($1, $2, 0)"
///                 )))
///                 .bind(id)
///                 .bind(added.title)
///             } else {
///                 sqlx::query(AssertSqlSafe(format!("UPDATE {table} SET done = 1 WHERE id = $1")))
///                     .bind(id)
///             };
///             query.execute(tx.conn()).await?;
///         }
///         Ok(())
///     }
/// }
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// let store = Store::open(dir.path().join("store"), Default::default()).await?;
/// let events = vec![
///     NewEvent::new("TaskAdded", r#"{"title": "milk"}"#),
///     NewEvent::new("TaskCompleted", "{}"),
/// ];
/// let task = StreamId::new("task-1")?;
/// let appended = store.append(&task, ExpectedVersion::NoStream, events).await?;
///
/// let views = ViewDb::open_in_data_dir(dir.path()).await?;
/// let projector = Projector::builder(Arc::new(store.clone()), views.clone())
///     .projection(Tasks)
///     .build()?;
/// let handle = projector.handle();
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let running = tokio::spawn(projector.run(async move {
///     let _ = stopped.await;
/// }));
/// // The projector creates the table and follows the log; wait until the
/// // view's checkpoint reaches the append.
/// let caught_up = async {
///     while handle.projection_status("tasks").await?.position < appended.last_position.0 {
///         tokio::time::sleep(std::time::Duration::from_millis(5)).await;
///     }
///     Ok::<_, projector::Error>(())
/// };
/// tokio::time::timeout(std::time::Duration::from_secs(60), caught_up).await??;
///
/// let (title, done): (String, i64) = sqlx::query_as("SELECT title, done FROM tasks WHERE id = 'task-1'")
///     .fetch_one(views.pool())
///     .await?;
/// assert_eq!((title.as_str(), done), ("milk", 1));
/// let _ = stop.send(());
/// running.await??;
/// # views.close().await;
/// # store.close().await?;
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait Projection: Send + Sync + std::fmt::Debug + 'static {
    /// A stable name: the key of the checkpoint and how operators address
    /// the projection (`rebuild <name>`). Lowercase letters, digits and `_`.
    fn name(&self) -> &'static str;

    /// The version of what the handler produces. Changing the code in a way
    /// that changes the tables' contents must bump it: at start, a
    /// projection whose tables were built by another version is rebuilt.
    fn version(&self) -> u32;

    /// The tables the projection owns (and nobody else writes).
    fn tables(&self) -> &'static [&'static str];

    /// The DDL of [`Projection::tables`] (and their indexes), in each
    /// dialect: see [`Schema`]. A table that exists is not altered; a new
    /// shape comes with a new [`Projection::version`], whose rebuild
    /// creates it in the shadow tables and swaps it in.
    fn schema(&self) -> Schema;

    /// The event types the handler wants. Other events only move the
    /// checkpoint.
    fn event_types(&self) -> &'static [&'static str];

    /// Applies a batch of events (each of a wanted type, in log order) to
    /// the tables, through `tx`. An error rolls back the whole batch; see
    /// [`ApplyError`] for what happens next.
    async fn apply(&self, tx: &mut ViewTx<'_>, events: &[RecordedEvent]) -> Result<(), ApplyError>;
}

/// Why a handler could not apply a batch.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// This event cannot be applied (it does not decode, or contradicts the
    /// view). The events before it are committed, the projection stops on
    /// it and reports it until an operator resumes or skips it.
    #[error("event at position {position}: {reason}")]
    Event { position: Position, reason: String },

    /// The database refused a statement. Errors of the connection (lost,
    /// busy, serialization) are retried with backoff; others stop the
    /// projection on the first event of the batch that fails on its own.
    #[error(transparent)]
    Database(#[from] sqlx::Error),

    /// The handler failed for a reason of its own (a bug, usually).
    #[error("{0}")]
    Handler(String),

    /// The handler asked for a table it did not declare.
    #[error("table {0:?} is not one of the projection's tables")]
    UndeclaredTable(String),
}

impl ApplyError {
    /// An error about one event.
    pub fn event(event: &RecordedEvent, reason: impl Into<String>) -> Self {
        ApplyError::Event {
            position: event.position,
            reason: reason.into(),
        }
    }
}

/// The transaction a handler writes in, with the names of its tables.
#[derive(Debug)]
pub struct ViewTx<'a> {
    conn: &'a mut AnyConnection,
    dialect: Dialect,
    tables: &'a TableNames,
    erased: bool,
}

impl<'a> ViewTx<'a> {
    pub(crate) fn new(
        conn: &'a mut AnyConnection,
        dialect: Dialect,
        tables: &'a TableNames,
    ) -> Self {
        Self {
            conn,
            dialect,
            tables,
            erased: false,
        }
    }

    /// Declares that this batch overwrote or deleted personal data (an
    /// erasure). Once the transaction commits, the view database purges
    /// the copies of the old bytes it keeps outside the live rows (on
    /// SQLite, the WAL); see [`crate::WriteTx::erased_personal_data`].
    pub fn erased_personal_data(&mut self) {
        self.erased = true;
    }

    /// Whether the handler declared an erasure.
    pub(crate) fn erased(&self) -> bool {
        self.erased
    }

    /// The connection, inside the batch's transaction.
    pub fn conn(&mut self) -> &mut AnyConnection {
        self.conn
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The table to write for a declared table name: the live table, or its
    /// shadow during a rebuild. Safe to put into SQL text: declared names
    /// are checked plain identifiers.
    pub fn table(&self, declared: &str) -> Result<&'a str, ApplyError> {
        self.tables
            .get(declared)
            .ok_or_else(|| ApplyError::UndeclaredTable(declared.to_owned()))
    }
}
