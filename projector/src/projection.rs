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
