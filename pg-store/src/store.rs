//! [`PgStore`]: connecting, reads, snapshots and stats; appends go through
//! the process's group commit (`batch`), subscriptions through `subscribe`.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use event_store::{
    AppendResult, Direction, Error, EventFilter, EventStore, Limits, LoadedStream, Position,
    ReadFrom, RecordedEvent, Result, Snapshot, Stats, StreamAppend, StreamId, StreamSlice,
    Subscription, Timestamp, rules,
};
// Every dynamic statement names only the store's schema, checked by
// `schema::check_name` to be a plain identifier.
use sqlx::AssertSqlSafe;
use sqlx::PgPool;
use sqlx::Row;
use tokio::sync::{mpsc, oneshot, watch};

use crate::batch::{self, Request};
use crate::chunks;
use crate::rows::{self, STREAM_COLUMNS, signed, unsigned};
use crate::schema;
use crate::shared::{Inner, pg_error};

/// How a [`PgStore`] is set up.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// The PostgreSQL schema holding the store's tables (created if
    /// missing): lowercase letters, digits and `_`.
    pub schema: String,
    /// The same limits as the segment store's.
    pub limits: Limits,
    /// Connections in the pool (reads, subscriptions, the appends'
    /// transaction).
    pub connections_max: u32,
    /// For tests of visibility: each appending transaction waits up to
    /// this long (a different time each) after writing and before it
    /// commits, holding its positions; none in production.
    pub hold_transaction: Option<std::time::Duration>,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            schema: "annals".into(),
            limits: Limits::default(),
            connections_max: 16,
            hold_transaction: None,
        }
    }
}

/// The event store on PostgreSQL. Cheap to clone; several stores (in one
/// process or many) may append to the same schema at once.
#[derive(Clone)]
pub struct PgStore {
    pub(crate) inner: Arc<Inner>,
    appends: mpsc::Sender<Request>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("schema", &self.inner.schema)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to the database at `url` and brings the store's schema up
    /// to date.
    pub async fn connect(url: &str, options: PgOptions) -> Result<Self> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(options.connections_max.max(2))
            .connect(url)
            .await
            .map_err(pg_error)?;
        Self::with_pool(pool, options).await
    }

    /// A store over `pool`'s database.
    pub async fn with_pool(pool: PgPool, options: PgOptions) -> Result<Self> {
        schema::check_name(&options.schema)?;
        schema::migrate(&pool, &options.schema).await?;
        let head: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT position FROM {}.head",
            options.schema
        )))
        .fetch_one(&pool)
        .await
        .map_err(pg_error)?;
        let (appends, queue) = mpsc::channel(4096);
        let inner = Arc::new(Inner {
            pool,
            channel: format!("annals_{}", options.schema),
            keys_channel: format!("annals_{}_keys", options.schema),
            keys: crate::keys::KeyCache::default(),
            schema: options.schema,
            limits: options.limits,
            hold_transaction: options.hold_transaction,
            head: watch::channel(unsigned(head)).0,
        });
        batch::spawn(inner.clone(), queue);
        crate::subscribe::follow_notifications(&inner);
        Ok(Self { inner, appends })
    }

    /// Writes `snapshot` unless a newer one of its stream is stored: an
    /// older snapshot never replaces a newer one (as in the segment store,
    /// the latest version wins, a tie the last save).
    pub(crate) async fn upsert_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {table} (stream_id, version, schema_version, recorded_at, state)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version,
               schema_version = EXCLUDED.schema_version, recorded_at = EXCLUDED.recorded_at,
               state = EXCLUDED.state
             WHERE {table}.version <= EXCLUDED.version",
            table = self.table("snapshots")
        )))
        .bind(snapshot.stream_id.as_str())
        .bind(signed(snapshot.version))
        .bind(i32::try_from(snapshot.schema_version).unwrap_or(i32::MAX))
        .bind(snapshot.timestamp.0)
        .bind(snapshot.state.as_ref())
        .execute(&self.inner.pool)
        .await
        .map_err(pg_error)?;
        Ok(())
    }

    /// The personal-data keys kept in the store's schema, for
    /// [`event_store::Shredding`] over this store.
    pub fn keys(&self) -> crate::PgKeys {
        crate::PgKeys::new(self.inner.clone())
    }

    /// Closes the pool: appends and reads answer [`Error::Closed`] or a
    /// connection error from then on.
    pub async fn close(&self) {
        self.inner.pool.close().await;
    }

    fn table(&self, name: &str) -> String {
        format!("{}.{name}", self.inner.schema)
    }

    async fn stream_version(&self, stream_id: &StreamId) -> Result<u64> {
        let version: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT version FROM {} WHERE stream_id = $1",
            self.table("streams")
        )))
        .bind(stream_id.as_str())
        .fetch_optional(&self.inner.pool)
        .await
        .map_err(pg_error)?;
        Ok(version.map_or(0, unsigned))
    }
}

#[async_trait]
impl EventStore for PgStore {
    async fn append_many(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        rules::validate(&appends, &self.inner.limits)?;
        let (reply, answer) = oneshot::channel();
        self.appends
            .send(Request { appends, reply })
            .await
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }

    async fn read_stream(
        &self,
        stream_id: &StreamId,
        from: ReadFrom,
        direction: Direction,
        max_count: usize,
    ) -> Result<StreamSlice> {
        rules::check_read_count(max_count, &self.inner.limits)?;
        // The version first: events appended after it are left for the
        // next read, so the slice is as of one moment.
        let version = self.stream_version(stream_id).await?;
        let Some((lo, hi)) = rules::stream_read_range(version, from, direction, max_count) else {
            return Ok(StreamSlice {
                stream_id: stream_id.clone(),
                events: Vec::new(),
                stream_version: version,
                is_end: true,
            });
        };
        let order = match direction {
            Direction::Forward => "ASC",
            Direction::Backward => "DESC",
        };
        let found = sqlx::query(AssertSqlSafe(format!(
            "SELECT {STREAM_COLUMNS} FROM {} WHERE stream_id = $1 AND version BETWEEN $2 AND $3 ORDER BY version {order}",
            self.table("events")
        )))
        .bind(stream_id.as_str())
        .bind(signed(lo))
        .bind(signed(hi))
        .fetch_all(&self.inner.pool)
        .await
        .map_err(pg_error)?;
        let events = found
            .iter()
            .map(|row| rows::stream_event(stream_id, row))
            .collect::<Result<Vec<_>>>()?;
        if events.len() as u64 != hi - lo + 1 {
            return Err(Error::Remote(format!(
                "PostgreSQL: stream {stream_id} is at version {version} but holds {} of its versions {lo} to {hi}",
                events.len()
            )));
        }
        let is_end = match direction {
            Direction::Forward => hi == version,
            Direction::Backward => lo == 1,
        };
        Ok(StreamSlice {
            stream_id: stream_id.clone(),
            events,
            stream_version: version,
            is_end,
        })
    }

    async fn read_all(&self, from: Position, max_count: usize) -> Result<Vec<RecordedEvent>> {
        self.inner.read_all(from, max_count).await
    }

    async fn subscribe(&self, from: Position, filter: EventFilter) -> Result<Subscription> {
        Ok(crate::subscribe::spawn(self.inner.clone(), from, filter))
    }

    async fn save_snapshot(
        &self,
        stream_id: &StreamId,
        version: u64,
        schema_version: u32,
        state: Bytes,
    ) -> Result<()> {
        rules::check_snapshot_size(state.len(), &self.inner.limits)?;
        let current = self.stream_version(stream_id).await?;
        if version == 0 || version > current {
            return Err(Error::InvalidAppend(format!(
                "cannot snapshot stream {stream_id} at version {version}: it is at version {current}"
            )));
        }
        self.upsert_snapshot(&Snapshot {
            stream_id: stream_id.clone(),
            version,
            schema_version,
            timestamp: Timestamp::now(),
            state,
        })
        .await
    }

    async fn load_snapshot(&self, stream_id: &StreamId) -> Result<Option<Snapshot>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT version, schema_version, recorded_at, state FROM {} WHERE stream_id = $1",
            self.table("snapshots")
        )))
        .bind(stream_id.as_str())
        .fetch_optional(&self.inner.pool)
        .await
        .map_err(pg_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let read =
            |e: sqlx::Error| Error::Remote(format!("PostgreSQL: a snapshot does not read: {e}"));
        Ok(Some(Snapshot {
            stream_id: stream_id.clone(),
            version: unsigned(row.try_get(0).map_err(read)?),
            schema_version: u32::try_from(row.try_get::<i32, _>(1).map_err(read)?).unwrap_or(0),
            timestamp: Timestamp(row.try_get(2).map_err(read)?),
            state: Bytes::from(row.try_get::<Vec<u8>, _>(3).map_err(read)?),
        }))
    }

    async fn stats(&self) -> Result<Stats> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT (SELECT position FROM {h}),
                    (SELECT count(*) FROM {st}),
                    (SELECT count(*) FROM {sn}),
                    (SELECT coalesce(sum(length(state)), 0)::bigint FROM {sn}),
                    pg_total_relation_size('{ev}') + pg_total_relation_size('{ch}')",
            h = self.table("head"),
            ch = self.table("chunks"),
            st = self.table("streams"),
            sn = self.table("snapshots"),
            ev = self.table("events"),
        )))
        .fetch_one(&self.inner.pool)
        .await
        .map_err(pg_error)?;
        let get = |i: usize| -> Result<u64> {
            row.try_get::<i64, _>(i)
                .map(unsigned)
                .map_err(|e| Error::Remote(format!("PostgreSQL: stats do not read: {e}")))
        };
        let head = get(0)?;
        Ok(Stats {
            events: head,
            streams: get(1)?,
            segments: 0,
            sealed_segments: 0,
            bytes: get(4)?,
            head: Position(head),
            snapshots: get(2)?,
            snapshot_bytes: get(3)?,
            segments_skipped_by_bloom: 0,
            segments_searched: 0,
            read_only_reason: None,
        })
    }

    async fn head(&self) -> Result<Position> {
        let head: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT position FROM {}",
            self.table("head")
        )))
        .fetch_one(&self.inner.pool)
        .await
        .map_err(pg_error)?;
        Ok(Position(unsigned(head)))
    }

    async fn ready(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.inner.pool)
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    fn read_page_max(&self) -> usize {
        self.inner.limits.read_count_max
    }

    /// The snapshot (when asked for) and every later event, the events in
    /// one query: one statement sees the stream as of one moment, so its
    /// version is that of its last event.
    async fn load(
        &self,
        stream_id: &StreamId,
        snapshot_schema: Option<u32>,
    ) -> Result<LoadedStream> {
        let snapshot = match snapshot_schema {
            Some(schema) => self
                .load_snapshot(stream_id)
                .await?
                .filter(|s| s.schema_version == schema),
            None => None,
        };
        let after = snapshot.as_ref().map_or(0, |s| s.version);
        // One statement, so one snapshot of the tables: the stream's
        // chunks past `after`, then its events past the last chunk.
        let found = sqlx::query(AssertSqlSafe(format!(
            "SELECT NULL::bigint, last_version, NULL::uuid, NULL::text, NULL::integer,
                    NULL::bigint, events, NULL::bytea
             FROM {s}.chunks WHERE stream_id = $1 AND last_version > $2
             UNION ALL
             SELECT {STREAM_COLUMNS} FROM {s}.events
             WHERE stream_id = $1 AND version > greatest($2,
                 (SELECT coalesce(max(last_version), 0) FROM {s}.chunks WHERE stream_id = $1))",
            s = self.inner.schema,
        )))
        .bind(stream_id.as_str())
        .bind(signed(after))
        .fetch_all(&self.inner.pool)
        .await
        .map_err(pg_error)?;
        let mut events = Vec::with_capacity(found.len());
        for row in &found {
            match rows::chunk(row)? {
                Some(chunk) => events.extend(chunks::unpack(stream_id, chunk, after)?),
                None => events.push(rows::stream_event(stream_id, row)?),
            }
        }
        // Ordered here rather than by the server, whose sort of the wide
        // rows cost as much as finding them; they mostly come in version
        // order already (the heap's, which is the order of appends).
        if !events.is_sorted_by_key(|e| e.version) {
            events.sort_unstable_by_key(|e| e.version);
        }
        for (expected, event) in (after + 1..).zip(&events) {
            if event.version != expected {
                return Err(Error::Remote(format!(
                    "PostgreSQL: stream {stream_id} lacks its version {expected}"
                )));
            }
        }
        let version = events.last().map_or(after, |e| e.version);
        Ok(LoadedStream {
            snapshot,
            events,
            version,
        })
    }
}
