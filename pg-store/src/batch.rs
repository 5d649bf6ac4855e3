//! Group commit: one task per process takes every append waiting and
//! decides and writes them in one transaction, under the lock on `head`
//! that orders every process's commits (see the crate's documentation).
//! Each append is decided by [`event_store::rules::plan`], against the
//! committed tables plus the appends decided before it in the same
//! transaction, exactly as the segment store's writer does.

use std::collections::HashMap;
use std::sync::Arc;

use event_store::rules::{self, Lookup, Plan};
use event_store::{
    AppendResult, Error, Position, RecordedEvent, Result, StreamAppend, StreamId, Timestamp,
};
// Every dynamic statement names only the store's schema, checked by
// `schema::check_name` to be a plain identifier.
use sqlx::AssertSqlSafe;
use sqlx::{PgConnection, Postgres, Transaction};
use tokio::sync::{mpsc, oneshot};

use crate::rows::{self, COLUMNS, signed, unsigned};
use crate::shared::{Inner, pg_error};

/// At most this many appends share one transaction.
const REQUESTS_MAX: usize = 512;

pub(crate) struct Request {
    pub appends: Vec<StreamAppend>,
    pub reply: oneshot::Sender<Result<Vec<AppendResult>>>,
}

pub(crate) fn spawn(inner: Arc<Inner>, mut queue: mpsc::Receiver<Request>) {
    tokio::spawn(async move {
        while let Some(first) = queue.recv().await {
            let mut requests = vec![first];
            while requests.len() < REQUESTS_MAX {
                match queue.try_recv() {
                    Ok(next) => requests.push(next),
                    Err(_) => break,
                }
            }
            commit(&inner, requests).await;
        }
    });
}

/// How a transaction ended before it committed: nothing of it was
/// written.
struct RolledBack(Error);

async fn commit(inner: &Inner, requests: Vec<Request>) {
    let (replies, appends): (Vec<_>, Vec<_>) =
        requests.into_iter().map(|r| (r.reply, r.appends)).unzip();
    let outcomes = match decide_and_write(inner, &appends).await {
        Ok(outcomes) => outcomes,
        Err(RolledBack(e)) => appends.iter().map(|_| Err(clone_error(&e))).collect(),
    };
    for (reply, outcome) in replies.into_iter().zip(outcomes) {
        let _ = reply.send(outcome);
    }
}

fn clone_error(e: &Error) -> Error {
    Error::Remote(e.to_string())
}

/// Decides every append, writes the accepted ones and commits; the
/// outcome of each. A failed commit leaves the accepted ones
/// [`Error::Indeterminate`] (the commit may have happened).
async fn decide_and_write(
    inner: &Inner,
    appends: &[Vec<StreamAppend>],
) -> std::result::Result<Vec<Result<Vec<AppendResult>>>, RolledBack> {
    let rolled_back = |e: sqlx::Error| RolledBack(pg_error(e));
    let s = &inner.schema;
    // The lock on the head is taken in the round trip that begins the
    // transaction; the head and every stream's version are read in the
    // next statement, whose snapshot therefore holds every commit made
    // before the lock was granted.
    let mut tx = inner
        .pool
        .begin_with(AssertSqlSafe(format!(
            "BEGIN; SELECT position FROM {s}.head FOR UPDATE"
        )))
        .await
        .map_err(rolled_back)?;
    let streams: Vec<&str> = appends
        .iter()
        .flatten()
        .map(|a| a.stream_id.as_str())
        .collect();
    let rows: Vec<(i64, Option<String>, Option<i64>)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT h.position, s.stream_id, s.version
         FROM {s}.head h LEFT JOIN {s}.streams s ON s.stream_id = ANY($1)"
    )))
    .bind(&streams)
    .fetch_all(&mut *tx)
    .await
    .map_err(rolled_back)?;
    let Some(&(head, _, _)) = rows.first() else {
        return Err(RolledBack(Error::Remote(format!(
            "PostgreSQL: the table {s}.head has no row"
        ))));
    };
    let mut group = Group::new(unsigned(head));
    let found: HashMap<&str, i64> = rows
        .iter()
        .filter_map(|(_, name, version)| Some((name.as_deref()?, (*version)?)))
        .collect();
    for append in appends.iter().flatten() {
        let version = found
            .get(append.stream_id.as_str())
            .copied()
            .map_or(0, unsigned);
        group.versions.insert(append.stream_id.clone(), version);
    }
    let timestamp = Timestamp::now().0;
    let mut outcomes = Vec::with_capacity(appends.len());
    for append in appends {
        let known = Known::fetch(&mut tx, s, append, &mut group)
            .await
            .map_err(RolledBack)?;
        let plan = rules::plan(append, &known);
        drop(known);
        outcomes.push(match plan {
            Ok(Plan::Write(currents)) => Ok(group.write(append, &currents, timestamp)),
            Ok(Plan::AlreadyCommitted(results)) => Ok(results),
            Err(e) => Err(e),
        });
    }
    if group.events.is_empty() {
        // Nothing to write: replays and refusals only.
        tx.rollback().await.map_err(rolled_back)?;
        return Ok(outcomes);
    }
    write(&mut tx, inner, &group.events, group.next_position - 1)
        .await
        .map_err(rolled_back)?;
    if let Some(hold) = inner.hold_transaction {
        // A different wait for each transaction, from its first position.
        let spread = group.next_position.wrapping_mul(0x9E37_79B9_7F4A_7C15) % 1000;
        tokio::time::sleep(hold.mul_f64(spread as f64 / 1000.0)).await;
    }
    if let Err(e) = tx.commit().await {
        let why = format!("PostgreSQL: the commit failed: {e}");
        return Ok(outcomes
            .into_iter()
            .map(|o| o.and_then(|_| Err(Error::Indeterminate(why.clone()))))
            .collect());
    }
    inner.head.send_replace(group.next_position - 1);
    Ok(outcomes)
}

/// One transaction's accepted appends.
struct Group {
    next_position: u64,
    /// Stream versions including this transaction's accepted appends.
    versions: HashMap<StreamId, u64>,
    events: Vec<RecordedEvent>,
}

impl Group {
    fn new(head: u64) -> Self {
        Self {
            next_position: head + 1,
            versions: HashMap::new(),
            events: Vec::new(),
        }
    }

    /// Reads the committed versions of those of `streams` it does not
    /// know yet (0 for a stream without events).
    async fn load_versions(
        &mut self,
        tx: &mut PgConnection,
        s: &str,
        streams: &[&StreamId],
    ) -> Result<()> {
        let unknown: Vec<&str> = streams
            .iter()
            .filter(|id| !self.versions.contains_key(**id))
            .map(|id| id.as_str())
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let found: Vec<(String, i64)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT stream_id, version FROM {s}.streams WHERE stream_id = ANY($1)"
        )))
        .bind(&unknown)
        .fetch_all(tx)
        .await
        .map_err(pg_error)?;
        let found: HashMap<String, i64> = found.into_iter().collect();
        for id in streams {
            if !self.versions.contains_key(*id) {
                let version = found.get(id.as_str()).copied().map_or(0, unsigned);
                self.versions.insert((*id).clone(), version);
            }
        }
        Ok(())
    }

    fn write(
        &mut self,
        appends: &[StreamAppend],
        currents: &[u64],
        timestamp: i64,
    ) -> Vec<AppendResult> {
        let mut results = Vec::with_capacity(appends.len());
        for (append, &current) in appends.iter().zip(currents) {
            let first_position = self.next_position;
            for (i, event) in append.events.iter().enumerate() {
                self.events.push(RecordedEvent {
                    id: event.id,
                    stream_id: append.stream_id.clone(),
                    version: current + i as u64 + 1,
                    position: Position(self.next_position),
                    event_type: event.event_type.clone(),
                    schema_version: event.schema_version,
                    timestamp: event_store::Timestamp(timestamp),
                    data: event.data.clone(),
                    metadata: event.metadata.clone(),
                });
                self.next_position += 1;
            }
            let count = append.events.len() as u64;
            self.versions
                .insert(append.stream_id.clone(), current + count);
            results.push(AppendResult {
                stream_id: append.stream_id.clone(),
                first_version: current + 1,
                last_version: current + count,
                first_position: Position(first_position),
                last_position: Position(self.next_position - 1),
                already_committed: false,
            });
        }
        results
    }
}

/// What the rules may ask about the streams of one append: their
/// versions, and their events where a retry of the append would be, as
/// committed plus as this transaction has them so far.
struct Known<'a> {
    group: &'a Group,
    stored: HashMap<StreamId, Vec<RecordedEvent>>,
}

impl<'a> Known<'a> {
    async fn fetch(
        tx: &mut Transaction<'_, Postgres>,
        s: &str,
        appends: &[StreamAppend],
        group: &'a mut Group,
    ) -> Result<Known<'a>> {
        let streams: Vec<&StreamId> = appends.iter().map(|a| &a.stream_id).collect();
        group.load_versions(tx, s, &streams).await?;
        let mut stored = HashMap::new();
        for append in appends {
            let current = group.versions.get(&append.stream_id).copied().unwrap_or(0);
            let (first, last) = rules::retry_range(append, current);
            if first > last {
                continue;
            }
            let mut events = committed(tx, s, &append.stream_id, first, last).await?;
            events.extend(
                group
                    .events
                    .iter()
                    .filter(|e| {
                        e.stream_id == append.stream_id && e.version >= first && e.version <= last
                    })
                    .cloned(),
            );
            stored.insert(append.stream_id.clone(), events);
        }
        Ok(Known { group, stored })
    }
}

/// The committed events of a stream at versions `first ..= last`.
async fn committed(
    tx: &mut PgConnection,
    s: &str,
    stream_id: &StreamId,
    first: u64,
    last: u64,
) -> Result<Vec<RecordedEvent>> {
    let found = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM {s}.events WHERE stream_id = $1 AND version BETWEEN $2 AND $3 ORDER BY version"
    )))
    .bind(stream_id.as_str())
    .bind(signed(first))
    .bind(signed(last))
    .fetch_all(tx)
    .await
    .map_err(pg_error)?;
    found.iter().map(rows::event).collect()
}

impl Lookup for Known<'_> {
    fn current_version(&self, stream_id: &StreamId) -> Result<u64> {
        Ok(self.group.versions.get(stream_id).copied().unwrap_or(0))
    }

    fn stored(&self, stream_id: &StreamId, first: u64, last: u64) -> Result<Vec<RecordedEvent>> {
        Ok(self
            .stored
            .get(stream_id)
            .map(|events| {
                events
                    .iter()
                    .filter(|e| e.version >= first && e.version <= last)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }
}

/// Inserts `events`, packs the chunks they complete, moves their
/// streams' versions and the head to `head`, and wakes every subscriber (the notification leaves at commit).
pub(crate) async fn write(
    tx: &mut Transaction<'_, Postgres>,
    inner: &Inner,
    events: &[RecordedEvent],
    head: u64,
) -> std::result::Result<(), sqlx::Error> {
    let s = &inner.schema;
    let positions: Vec<i64> = events.iter().map(|e| signed(e.position.0)).collect();
    let streams: Vec<&str> = events.iter().map(|e| e.stream_id.as_str()).collect();
    let versions: Vec<i64> = events.iter().map(|e| signed(e.version)).collect();
    let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.id).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let schemas: Vec<i32> = events
        .iter()
        .map(|e| i32::try_from(e.schema_version).unwrap_or(i32::MAX))
        .collect();
    let times: Vec<i64> = events.iter().map(|e| e.timestamp.0).collect();
    let data: Vec<&[u8]> = events.iter().map(|e| e.data.as_ref()).collect();
    let metadata: Vec<&[u8]> = events.iter().map(|e| e.metadata.as_ref()).collect();
    let mut last: HashMap<&str, (i64, i64)> = HashMap::new();
    for e in events {
        last.insert(
            e.stream_id.as_str(),
            (signed(e.version), signed(e.position.0)),
        );
    }
    let (names, ends): (Vec<&str>, Vec<(i64, i64)>) = last.into_iter().unzip();
    let (stream_versions, stream_positions): (Vec<i64>, Vec<i64>) = ends.into_iter().unzip();
    let head = signed(head);
    // One statement, one round trip: the events, their streams' versions,
    // the head, and the wake-up (sent at commit).
    sqlx::query(AssertSqlSafe(format!(
        "WITH events AS (
           INSERT INTO {s}.events ({COLUMNS})
           SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::uuid[], $5::text[],
                                $6::integer[], $7::bigint[], $8::bytea[], $9::bytea[])
         ), streams AS (
           INSERT INTO {s}.streams (stream_id, version, last_position)
           SELECT * FROM UNNEST($10::text[], $11::bigint[], $12::bigint[])
           ON CONFLICT (stream_id) DO UPDATE
             SET version = EXCLUDED.version, last_position = EXCLUDED.last_position
         ), head AS (
           UPDATE {s}.head SET position = $13
         )
         SELECT pg_notify($14, $15)"
    )))
    .bind(&positions)
    .bind(&streams)
    .bind(&versions)
    .bind(&ids)
    .bind(&types)
    .bind(&schemas)
    .bind(&times)
    .bind(&data)
    .bind(&metadata)
    .bind(&names)
    .bind(&stream_versions)
    .bind(&stream_positions)
    .bind(head)
    .bind(&inner.channel)
    .bind(head.to_string())
    .execute(&mut **tx)
    .await?;
    crate::chunks::seal(tx, s, events).await
}
