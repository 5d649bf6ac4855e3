//! Events as rows of `events`, and back.

use bytes::Bytes;
use event_store::{Error, Position, RecordedEvent, Result, StreamId, Timestamp};
use sqlx::Row;
use sqlx::postgres::PgRow;

/// The columns every event read selects, in [`event`]'s order.
pub(crate) const COLUMNS: &str = "position, stream_id, version, event_id, event_type, schema_version, recorded_at, data, metadata";

/// The event a row of [`COLUMNS`] holds.
pub(crate) fn event(row: &PgRow) -> Result<RecordedEvent> {
    let read =
        |e: sqlx::Error| Error::Remote(format!("PostgreSQL: an event row does not read: {e}"));
    let stream: String = row.try_get(1).map_err(read)?;
    let stream_id = StreamId::new(&stream).map_err(|e| {
        Error::Remote(format!(
            "PostgreSQL: stored stream id {stream:?} is invalid: {e}"
        ))
    })?;
    Ok(RecordedEvent {
        position: Position(unsigned(row.try_get(0).map_err(read)?)),
        stream_id,
        version: unsigned(row.try_get(2).map_err(read)?),
        id: row.try_get(3).map_err(read)?,
        event_type: row.try_get(4).map_err(read)?,
        schema_version: u32::try_from(row.try_get::<i32, _>(5).map_err(read)?).unwrap_or(0),
        timestamp: Timestamp(row.try_get(6).map_err(read)?),
        data: Bytes::from(row.try_get::<Vec<u8>, _>(7).map_err(read)?),
        metadata: Bytes::from(row.try_get::<Vec<u8>, _>(8).map_err(read)?),
    })
}

/// The columns a stream's events are read with when the stream is known:
/// [`COLUMNS`] without `stream_id`, in [`stream_event`]'s order.
pub(crate) const STREAM_COLUMNS: &str =
    "position, version, event_id, event_type, schema_version, recorded_at, data, metadata";

/// The event of `stream_id` a row of [`STREAM_COLUMNS`] holds.
pub(crate) fn stream_event(stream_id: &StreamId, row: &PgRow) -> Result<RecordedEvent> {
    let read =
        |e: sqlx::Error| Error::Remote(format!("PostgreSQL: an event row does not read: {e}"));
    Ok(RecordedEvent {
        position: Position(unsigned(row.try_get(0).map_err(read)?)),
        stream_id: stream_id.clone(),
        version: unsigned(row.try_get(1).map_err(read)?),
        id: row.try_get(2).map_err(read)?,
        event_type: row.try_get(3).map_err(read)?,
        schema_version: u32::try_from(row.try_get::<i32, _>(4).map_err(read)?).unwrap_or(0),
        timestamp: Timestamp(row.try_get(5).map_err(read)?),
        data: Bytes::copy_from_slice(row.try_get::<&[u8], _>(6).map_err(read)?),
        metadata: Bytes::copy_from_slice(row.try_get::<&[u8], _>(7).map_err(read)?),
    })
}

/// The packed events of a row of a stream's load when it is a chunk (no
/// position; the events in the column of `data`), `None` for an event.
pub(crate) fn chunk(row: &PgRow) -> Result<Option<Bytes>> {
    let read = |e: sqlx::Error| Error::Remote(format!("PostgreSQL: a chunk does not read: {e}"));
    if row.try_get::<Option<i64>, _>(0).map_err(read)?.is_some() {
        return Ok(None);
    }
    let packed: &[u8] = row.try_get(6).map_err(read)?;
    Ok(Some(Bytes::copy_from_slice(packed)))
}

/// A `bigint` that is never negative in these tables.
pub(crate) fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A count or position as a `bigint`.
pub(crate) fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
