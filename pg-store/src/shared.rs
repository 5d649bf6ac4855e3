//! What a store's handle, its group commit and its subscriptions share.

use event_store::{Error, Limits, Position, RecordedEvent, Result, rules};
// Every dynamic statement names only the store's schema, checked by
// `schema::check_name` to be a plain identifier.
use sqlx::AssertSqlSafe;
use sqlx::PgPool;
use tokio::sync::watch;

use crate::rows::{self, COLUMNS, signed};

pub(crate) struct Inner {
    pub pool: PgPool,
    pub schema: String,
    pub limits: Limits,
    pub hold_transaction: Option<std::time::Duration>,
    /// The `NOTIFY` channel appends of every process wake subscribers on.
    pub channel: String,
    /// The head this process knows of: advanced by its own commits at
    /// once, and by the others' through `channel`.
    pub head: watch::Sender<u64>,
    /// The channel erasures of personal-data keys are announced on.
    pub keys_channel: String,
    /// The personal-data keys this process knows.
    pub keys: crate::keys::KeyCache,
}

impl Inner {
    /// Up to `max_count` events of the log from `from` (inclusive).
    pub async fn read_all(&self, from: Position, max_count: usize) -> Result<Vec<RecordedEvent>> {
        rules::check_read_count(max_count, &self.limits)?;
        let found = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM {}.events WHERE position >= $1 ORDER BY position LIMIT $2",
            self.schema
        )))
        .bind(signed(from.0.max(1)))
        .bind(signed(max_count as u64))
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?;
        found.iter().map(rows::event).collect()
    }
}

/// A PostgreSQL error as the store's.
pub(crate) fn pg_error(e: sqlx::Error) -> Error {
    Error::Remote(format!("PostgreSQL: {e}"))
}
