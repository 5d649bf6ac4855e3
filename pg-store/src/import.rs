//! Moving a log here: events, snapshots and keys written as another store
//! recorded them (positions, versions, ids, times), for `annals copy`.

use std::collections::HashMap;

use event_store::keys::SubjectKey;
use event_store::{Error, RecordedEvent, Result, Snapshot};
// Every dynamic statement names only the store's schema, checked by
// `schema::check_name` to be a plain identifier.
use sqlx::AssertSqlSafe;

use crate::PgStore;
use crate::rows::unsigned;
use crate::shared::pg_error;

impl PgStore {
    /// Appends events recorded elsewhere, as recorded, in one transaction:
    /// they must continue this log (the first at the head + 1, positions
    /// consecutive, each stream's versions continuing its own).
    pub async fn import(&self, events: &[RecordedEvent]) -> Result<()> {
        let Some(last) = events.last() else {
            return Ok(());
        };
        let s = &self.inner.schema;
        let mut tx = self.inner.pool.begin().await.map_err(pg_error)?;
        let head: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT position FROM {s}.head FOR UPDATE"
        )))
        .fetch_one(&mut *tx)
        .await
        .map_err(pg_error)?;
        for (expected, event) in (unsigned(head) + 1..).zip(events) {
            if event.position.0 != expected {
                return Err(Error::InvalidAppend(format!(
                    "an imported event is at position {} where the log continues at {expected}",
                    event.position.0
                )));
            }
        }
        let mut names: Vec<&str> = events.iter().map(|e| e.stream_id.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let found: Vec<(String, i64)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT stream_id, version FROM {s}.streams WHERE stream_id = ANY($1)"
        )))
        .bind(&names)
        .fetch_all(&mut *tx)
        .await
        .map_err(pg_error)?;
        let mut versions: HashMap<String, u64> = found
            .into_iter()
            .map(|(name, version)| (name, unsigned(version)))
            .collect();
        for event in events {
            let version = versions
                .entry(event.stream_id.as_str().to_owned())
                .or_insert(0);
            if event.version != *version + 1 {
                return Err(Error::InvalidAppend(format!(
                    "an imported event of {} is version {} where the stream continues at {}",
                    event.stream_id,
                    event.version,
                    *version + 1
                )));
            }
            *version += 1;
        }
        crate::batch::write(&mut tx, &self.inner, events, last.position.0)
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        self.inner.head.send_if_modified(|head| {
            let newer = last.position.0 > *head;
            if newer {
                *head = last.position.0;
            }
            newer
        });
        Ok(())
    }

    /// Writes a snapshot recorded elsewhere, with its time, unless a newer
    /// one is here already.
    pub async fn import_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        self.upsert_snapshot(snapshot).await
    }

    /// Writes subjects' keys and erasures kept elsewhere. A subject that
    /// has a row here keeps it, except that an erasure always wins.
    pub async fn import_keys(&self, keys: &[(String, SubjectKey)]) -> Result<()> {
        let table = format!("{}.subject_keys", self.inner.schema);
        let subjects: Vec<&str> = keys.iter().map(|(subject, _)| subject.as_str()).collect();
        let bytes: Vec<Option<Vec<u8>>> = keys
            .iter()
            .map(|(_, key)| match key {
                SubjectKey::Key(key) => Some(key.to_vec()),
                SubjectKey::Erased => None,
            })
            .collect();
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {table} AS k (subject, key, erased_at)
             SELECT subject, key, CASE WHEN key IS NULL THEN now() END
             FROM UNNEST($1::text[], $2::bytea[]) AS u(subject, key)
             ON CONFLICT (subject) DO UPDATE SET key = NULL,
               erased_at = COALESCE(k.erased_at, now())
             WHERE EXCLUDED.key IS NULL"
        )))
        .bind(&subjects)
        .bind(&bytes)
        .execute(&self.inner.pool)
        .await
        .map_err(pg_error)?;
        Ok(())
    }
}
