//! Checkpoints: how far each projection's tables have got in the log.
//!
//! One row per projection and [`Track`] in `projection_checkpoints`. Every
//! change of a row is conditional on the position (and version) the writer
//! last saw: a writer that lost a race (another process, a swap, a skip)
//! updates nothing, rolls back and reloads, so two writers can never apply
//! the same event twice.

use event_store::{Position, Timestamp};
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::{Error, Result};

/// Which set of tables a checkpoint describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Track {
    /// The tables queries read.
    Live,
    /// The shadow tables a rebuild is filling.
    Rebuild,
}

impl Track {
    pub fn as_str(self) -> &'static str {
        match self {
            Track::Live => "live",
            Track::Rebuild => "rebuild",
        }
    }
}

/// What a projection (or its rebuild) is doing: `catching_up` (behind the
/// head of the log), `live` (at the head), `rebuilding` (being rebuilt into
/// shadow tables) or `failed` (stopped on an event it could not apply, until
/// an operator resumes it or skips the event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TrackState {
    /// Behind the head of the log, applying full batches.
    CatchingUp,
    /// At the head of the log, applying events as they commit.
    Live,
    /// Being rebuilt from the whole log into shadow tables.
    Rebuilding,
    /// Stopped on an event its handler could not apply, until resumed or
    /// the event is skipped.
    Failed,
}

impl TrackState {
    pub fn as_str(self) -> &'static str {
        match self {
            TrackState::CatchingUp => "catching_up",
            TrackState::Live => "live",
            TrackState::Rebuilding => "rebuilding",
            TrackState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "catching_up" => TrackState::CatchingUp,
            "live" => TrackState::Live,
            "rebuilding" => TrackState::Rebuilding,
            "failed" => TrackState::Failed,
            other => return Err(Error::Schema(format!("unknown projection state {other:?}"))),
        })
    }
}

/// A stored checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub projection: String,
    pub track: Track,
    /// The projection version whose code built the track's tables.
    pub version: u32,
    /// The last log position applied (0 = none).
    pub position: Position,
    pub state: TrackState,
    pub last_error: Option<String>,
    /// The event that failed, while `state` is [`TrackState::Failed`].
    pub error_position: Option<Position>,
    pub started_at: Timestamp,
    pub updated_at: Timestamp,
    /// The id of the event at `position`, when it was read: the log must
    /// still hold it there before the track goes on.
    pub event_id: Option<uuid::Uuid>,
}

const COLUMNS: &str = "name, track, version, position, state, last_error, error_position, \
                       started_at, updated_at, event_id";

pub(crate) fn to_sql(position: Position) -> Result<i64> {
    i64::try_from(position.0)
        .map_err(|_| Error::Schema(format!("position {position} does not fit in SQL")))
}

pub(crate) fn from_sql(value: i64) -> Result<Position> {
    u64::try_from(value)
        .map(Position)
        .map_err(|_| Error::Schema(format!("negative position {value} in a checkpoint")))
}

fn decode(row: &AnyRow) -> Result<Checkpoint> {
    let track: String = row.try_get(1)?;
    let version: i64 = row.try_get(2)?;
    let error_position: Option<i64> = row.try_get(6)?;
    Ok(Checkpoint {
        projection: row.try_get(0)?,
        track: match track.as_str() {
            "live" => Track::Live,
            "rebuild" => Track::Rebuild,
            other => return Err(Error::Schema(format!("unknown checkpoint track {other:?}"))),
        },
        version: u32::try_from(version)
            .map_err(|_| Error::Schema(format!("projection version {version} out of range")))?,
        position: from_sql(row.try_get(3)?)?,
        state: TrackState::parse(&row.try_get::<String, _>(4)?)?,
        last_error: row.try_get(5)?,
        error_position: error_position.map(from_sql).transpose()?,
        started_at: Timestamp(row.try_get(7)?),
        updated_at: Timestamp(row.try_get(8)?),
        event_id: row
            .try_get::<Option<String>, _>(9)?
            .map(|id| {
                uuid::Uuid::parse_str(&id)
                    .map_err(|e| Error::Schema(format!("checkpoint event id {id:?}: {e}")))
            })
            .transpose()?,
    })
}

pub(crate) async fn load(
    conn: &mut AnyConnection,
    name: &str,
    track: Track,
) -> Result<Option<Checkpoint>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM projection_checkpoints WHERE name = $1 AND track = $2"
    )))
    .bind(name)
    .bind(track.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(decode).transpose()
}

/// Every checkpoint of the database, for status pages.
pub(crate) async fn load_all(conn: &mut AnyConnection) -> Result<Vec<Checkpoint>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM projection_checkpoints ORDER BY name, track"
    )))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(decode).collect()
}

/// Writes a fresh checkpoint at position 0 unless the track has one.
pub(crate) async fn insert_if_missing(
    conn: &mut AnyConnection,
    name: &str,
    track: Track,
    version: u32,
    state: TrackState,
) -> Result<()> {
    let now = Timestamp::now().0;
    sqlx::query(
        "INSERT INTO projection_checkpoints \
         (name, track, version, position, state, started_at, updated_at) \
         VALUES ($1, $2, $3, 0, $4, $5, $5) ON CONFLICT (name, track) DO NOTHING",
    )
    .bind(name)
    .bind(track.as_str())
    .bind(i64::from(version))
    .bind(state.as_str())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Replaces a track's checkpoint by a fresh one at position 0.
pub(crate) async fn reset(
    conn: &mut AnyConnection,
    name: &str,
    track: Track,
    version: u32,
    state: TrackState,
) -> Result<()> {
    sqlx::query("DELETE FROM projection_checkpoints WHERE name = $1 AND track = $2")
        .bind(name)
        .bind(track.as_str())
        .execute(&mut *conn)
        .await?;
    insert_if_missing(conn, name, track, version, state).await
}

pub(crate) async fn delete(conn: &mut AnyConnection, name: &str, track: Track) -> Result<()> {
    sqlx::query("DELETE FROM projection_checkpoints WHERE name = $1 AND track = $2")
        .bind(name)
        .bind(track.as_str())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Moves a checkpoint from `from` to `to` (the event there has `to_id`,
/// when it was read) if it is still at `from`, built by `version` and not
/// failed. Runs first in a batch's transaction: on PostgreSQL it locks the
/// row, on SQLite the transaction already holds the write lock, so no other
/// writer can move the checkpoint until the batch commits. Returns false
/// when the checkpoint had moved (nothing written).
#[expect(
    clippy::too_many_arguments,
    reason = "the row's key, the compare-and-set pair and the new values, each a column"
)]
pub(crate) async fn advance(
    conn: &mut AnyConnection,
    name: &str,
    track: Track,
    version: u32,
    from: Position,
    to: Position,
    to_id: Option<uuid::Uuid>,
    state: TrackState,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE projection_checkpoints \
         SET position = $1, state = $2, last_error = NULL, error_position = NULL, updated_at = $3, \
             event_id = $8 \
         WHERE name = $4 AND track = $5 AND position = $6 AND version = $7 AND state <> 'failed'",
    )
    .bind(to_sql(to)?)
    .bind(state.as_str())
    .bind(Timestamp::now().0)
    .bind(name)
    .bind(track.as_str())
    .bind(to_sql(from)?)
    .bind(i64::from(version))
    .bind(to_id.map(|id| id.to_string()))
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Marks a track failed on the event at `failed`, the one after its
/// checkpoint `at`. Returns false when the checkpoint had moved.
pub(crate) async fn record_failure(
    conn: &mut AnyConnection,
    name: &str,
    track: Track,
    at: Position,
    failed: Position,
    error: &str,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE projection_checkpoints \
         SET state = 'failed', last_error = $1, error_position = $2, updated_at = $3 \
         WHERE name = $4 AND track = $5 AND position = $6",
    )
    .bind(error)
    .bind(to_sql(failed)?)
    .bind(Timestamp::now().0)
    .bind(name)
    .bind(track.as_str())
    .bind(to_sql(at)?)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Notes a transient problem (store unreachable, gap, database busy) in the
/// status without changing the state.
pub(crate) async fn note_error(
    conn: &mut AnyConnection,
    name: &str,
    track: Track,
    error: &str,
) -> Result<()> {
    sqlx::query(
        "UPDATE projection_checkpoints SET last_error = $1, updated_at = $2 \
         WHERE name = $3 AND track = $4",
    )
    .bind(error)
    .bind(Timestamp::now().0)
    .bind(name)
    .bind(track.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Sets the state of a failed track back to running, keeping its position:
/// the failed event is tried again.
pub(crate) async fn resume(
    conn: &mut AnyConnection,
    name: &str,
    track: Track,
    state: TrackState,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE projection_checkpoints SET state = $1, error_position = NULL, updated_at = $2 \
         WHERE name = $3 AND track = $4 AND state = 'failed'",
    )
    .bind(state.as_str())
    .bind(Timestamp::now().0)
    .bind(name)
    .bind(track.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Moves a failed track past its failed event and records the skip, so that
/// rebuilds of the same version skip it too.
pub(crate) async fn skip_failed(
    conn: &mut AnyConnection,
    checkpoint: &Checkpoint,
    state: TrackState,
) -> Result<bool> {
    // Only the event right after the checkpoint can be skipped: everything
    // before it is applied, nothing after it is.
    let Some(failed) = checkpoint.error_position else {
        return Ok(false);
    };
    if failed.0 != checkpoint.position.0 + 1 {
        return Ok(false);
    }
    let now = Timestamp::now().0;
    let done = sqlx::query(
        "UPDATE projection_checkpoints \
         SET position = $1, state = $2, last_error = NULL, error_position = NULL, updated_at = $3, \
             event_id = NULL \
         WHERE name = $4 AND track = $5 AND position = $6 AND state = 'failed' AND error_position = $1",
    )
    .bind(to_sql(failed)?)
    .bind(state.as_str())
    .bind(now)
    .bind(&checkpoint.projection)
    .bind(checkpoint.track.as_str())
    .bind(to_sql(checkpoint.position)?)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO projection_skipped_events (name, version, position, error, skipped_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name, version, position) DO NOTHING",
    )
    .bind(&checkpoint.projection)
    .bind(i64::from(checkpoint.version))
    .bind(to_sql(failed)?)
    .bind(checkpoint.last_error.as_deref().unwrap_or(""))
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// Positions an operator skipped for this projection version.
pub(crate) async fn skipped_positions(
    conn: &mut AnyConnection,
    name: &str,
    version: u32,
) -> Result<std::collections::BTreeSet<u64>> {
    let rows = sqlx::query_scalar::<_, i64>(
        "SELECT position FROM projection_skipped_events WHERE name = $1 AND version = $2",
    )
    .bind(name)
    .bind(i64::from(version))
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter().map(|p| from_sql(p).map(|p| p.0)).collect()
}
