//! What both views do around folding their own events: decode the batch's
//! events they follow, load the rows those events touch, stamp each row an
//! event changes, and write every changed row back once in multi-row
//! upserts.

use projector::sqlx;
use std::collections::HashMap;

use event_store::RecordedEvent;
use sqlx::any::{Any, AnyArguments, AnyRow};
use sqlx::query::Query;

use super::sql;
use projector::{ApplyError, ViewTx};

/// A statement with its values bound so far.
pub(super) type AnyQuery = Query<'static, Any, AnyArguments>;

/// Where a row stands in the log: the version of its own stream, and the
/// time and position of the last event that changed it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Stamp {
    pub version: i64,
    pub updated_at: i64,
    pub position: i64,
}

impl Stamp {
    /// Marks the row as changed by `event`. Events of other streams (an
    /// order's, on a customer row) change the row but not its version.
    pub fn touched_by(&mut self, event: &RecordedEvent, own_stream_prefix: &str) {
        if event.stream_id.as_str().starts_with(own_stream_prefix) {
            self.version = event.version as i64;
        }
        self.updated_at = event.timestamp.0;
        self.position = event.position.0 as i64;
    }
}

/// A row of a view, folded in memory over a batch.
pub(super) trait ViewRow: Sized {
    /// What a row is, in errors ("customer", "order").
    const KIND: &'static str;
    /// The columns, in the order rows are read and written.
    const COLUMNS: &'static [&'static str];
    /// Columns the upsert leaves as the insert set them.
    const FIXED_COLUMNS: &'static [&'static str];

    fn id(&self) -> &str;

    /// The row as read with [`Self::COLUMNS`].
    fn from_row(row: &AnyRow) -> Result<Self, ApplyError>;

    /// Binds the row's values, in [`Self::COLUMNS`] order.
    fn bind(&self, query: AnyQuery) -> AnyQuery;
}

/// The events of `batch` that the view follows, each with its change.
pub(super) fn decode_batch<C>(
    batch: &[RecordedEvent],
    decode: impl Fn(&RecordedEvent) -> Result<Option<C>, ApplyError>,
) -> Result<Vec<(&RecordedEvent, C)>, ApplyError> {
    let mut changes = Vec::with_capacity(batch.len());
    for event in batch {
        if let Some(change) = decode(event)? {
            changes.push((event, change));
        }
    }
    Ok(changes)
}

/// Each id once, in order.
pub(super) fn distinct<T: Ord>(mut ids: Vec<T>) -> Vec<T> {
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The rows with these ids that exist, by id.
pub(super) async fn load<R: ViewRow>(
    tx: &mut ViewTx<'_>,
    table: &str,
    ids: &[&str],
) -> Result<HashMap<String, R>, ApplyError> {
    let dialect = tx.dialect();
    let mut rows = HashMap::with_capacity(ids.len());
    for row in sql::load_by_ids(tx.conn(), dialect, table, R::COLUMNS, ids).await? {
        let row = R::from_row(&row)?;
        rows.insert(row.id().to_owned(), row);
    }
    Ok(rows)
}

/// Writes the rows of the `changed` ids (sorted, each once), a few
/// hundred per statement.
pub(super) async fn write<R: ViewRow>(
    tx: &mut ViewTx<'_>,
    table: &str,
    changed: &[String],
    rows: &HashMap<String, R>,
) -> Result<(), ApplyError> {
    let mut rest: &[String] = changed;
    for size in sql::chunk_sizes(changed.len(), sql::ROWS_PER_STATEMENT_MAX) {
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        let statement = sql::upsert(tx.dialect(), table, R::COLUMNS, R::FIXED_COLUMNS, size);
        let mut query: AnyQuery = sqlx::query(sqlx::AssertSqlSafe(statement));
        for id in chunk {
            // Every changed id is one the fold found or created a row for.
            let row = rows.get(id).ok_or_else(|| {
                ApplyError::Handler(format!("{} {id} vanished from the batch", R::KIND))
            })?;
            query = row.bind(query);
        }
        query.execute(tx.conn()).await?;
    }
    Ok(())
}
