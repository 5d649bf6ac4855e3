//! `annals verify` on PostgreSQL: what the store's tables hold, and every
//! place where they break the log's rules (the tables' constraints keep
//! most out; this finds what a hand edit, a partial restore or a bug could
//! leave).

use event_store::{Position, Result};
// Every dynamic statement names only the store's schema, checked by
// `schema::check_name` to be a plain identifier.
use sqlx::AssertSqlSafe;

use crate::PgStore;
use crate::chunks::{CHUNK_EVENTS, packed_events};
use crate::rows::unsigned;
use crate::shared::pg_error;

/// What [`PgStore::check`] found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PgCheck {
    pub events: u64,
    pub streams: u64,
    pub snapshots: u64,
    pub live_subject_keys: u64,
    pub erased_subjects: u64,
    /// One line per place that breaks a rule; empty when the log is whole.
    pub problems: Vec<String>,
}

impl PgCheck {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// At most this many places of one kind are named.
const NAMED_MAX: i64 = 20;

impl PgStore {
    /// Reads every event once (in pages) and checks that positions run
    /// from 1 without a gap up to the head, that data and metadata are
    /// JSON, that each stream's row matches its events, that its chunks
    /// are there and hold its events, and that no snapshot is ahead of its
    /// stream.
    pub async fn check(&self) -> Result<PgCheck> {
        let mut check = PgCheck::default();
        let s = &self.inner.schema;
        let head: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT position FROM {s}.head")))
            .fetch_one(&self.inner.pool)
            .await
            .map_err(pg_error)?;
        let head = unsigned(head);
        let mut next = 1u64;
        let page = self.inner.limits.read_count_max.clamp(1, 10_000);
        loop {
            let events = self.inner.read_all(Position(next), page).await?;
            let Some(last) = events.last() else {
                break;
            };
            let last = last.position.0;
            for event in &events {
                if event.position.0 != next {
                    check.problems.push(format!(
                        "positions {next} to {} are missing",
                        event.position.0 - 1
                    ));
                }
                next = event.position.0 + 1;
                check.events += 1;
                for (what, bytes) in [("data", &event.data), ("metadata", &event.metadata)] {
                    if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err() {
                        check.problems.push(format!(
                            "the {what} of the event at position {} ({} version {}) is not JSON",
                            event.position.0, event.stream_id, event.version
                        ));
                    }
                }
            }
            next = last + 1;
        }
        if next - 1 != head {
            check.problems.push(format!(
                "the head says {head} but the last event is at position {}",
                next - 1
            ));
        }
        let streams: Vec<(String,)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT coalesce(s.stream_id, e.stream_id)
             FROM {s}.streams s
             FULL JOIN (SELECT stream_id, count(*) AS n, max(version) AS v, min(version) AS f,
                               max(position) AS p
                        FROM {s}.events GROUP BY stream_id) e USING (stream_id)
             WHERE e.n IS DISTINCT FROM s.version OR e.v IS DISTINCT FROM s.version
                OR e.f IS DISTINCT FROM 1 OR e.p IS DISTINCT FROM s.last_position
             LIMIT {NAMED_MAX}"
        )))
        .fetch_all(&self.inner.pool)
        .await
        .map_err(pg_error)?;
        for (stream,) in streams {
            check.problems.push(format!(
                "stream {stream}: its row does not match its events (versions from 1 without a gap, the last position)"
            ));
        }
        check.problems.extend(self.check_chunks().await?);
        let ahead: Vec<(String, i64)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT n.stream_id, n.version FROM {s}.snapshots n
             LEFT JOIN {s}.streams s USING (stream_id)
             WHERE s.version IS NULL OR n.version > s.version
             LIMIT {NAMED_MAX}"
        )))
        .fetch_all(&self.inner.pool)
        .await
        .map_err(pg_error)?;
        for (stream, version) in ahead {
            check.problems.push(format!(
                "the snapshot of {stream} is at version {version}, past its stream"
            ));
        }
        let (streams, snapshots, live, erased): (i64, i64, i64, i64) =
            sqlx::query_as(AssertSqlSafe(format!(
                "SELECT (SELECT count(*) FROM {s}.streams), (SELECT count(*) FROM {s}.snapshots),
                        (SELECT count(*) FROM {s}.subject_keys WHERE key IS NOT NULL),
                        (SELECT count(*) FROM {s}.subject_keys WHERE key IS NULL)"
            )))
            .fetch_one(&self.inner.pool)
            .await
            .map_err(pg_error)?;
        check.streams = unsigned(streams);
        check.snapshots = unsigned(snapshots);
        check.live_subject_keys = unsigned(live);
        check.erased_subjects = unsigned(erased);
        Ok(check)
    }

    /// Chunks that do not hold exactly the events they stand for, and
    /// streams without every chunk their version calls for.
    async fn check_chunks(&self) -> Result<Vec<String>> {
        let s = &self.inner.schema;
        let size = CHUNK_EVENTS;
        let packed = packed_events(s);
        let wrong: Vec<(String, i64)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT c.stream_id, c.last_version FROM {s}.chunks c
             WHERE c.last_version % {size} <> 0
                OR c.events IS DISTINCT FROM {packed}
             LIMIT {NAMED_MAX}"
        )))
        .fetch_all(&self.inner.pool)
        .await
        .map_err(pg_error)?;
        let mut problems: Vec<String> = wrong
            .into_iter()
            .map(|(stream, last)| {
                format!("stream {stream}: its chunk up to version {last} does not match its events")
            })
            .collect();
        let short: Vec<(String, i64, i64)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT s.stream_id, s.version, coalesce(c.n, 0) FROM {s}.streams s
             LEFT JOIN (SELECT stream_id, count(*) AS n FROM {s}.chunks GROUP BY stream_id) c
               USING (stream_id)
             WHERE coalesce(c.n, 0) <> s.version / {size}
             LIMIT {NAMED_MAX}"
        )))
        .fetch_all(&self.inner.pool)
        .await
        .map_err(pg_error)?;
        problems.extend(short.into_iter().map(|(stream, version, chunks)| {
            format!(
                "stream {stream}: at version {version} it has {chunks} chunks of {size} events where it needs {}",
                unsigned(version) / size
            )
        }));
        Ok(problems)
    }
}
