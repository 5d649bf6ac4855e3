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

/// The signature that starts PostgreSQL's binary `COPY` format.
const COPY_SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// The events of `stream_id` in `copied`, the output of `COPY (SELECT
/// {STREAM_COLUMNS} ...) TO STDOUT (FORMAT binary)`. The events' data and
/// metadata are slices of `copied`, not copies.
pub(crate) fn copied_events(stream_id: &StreamId, copied: Bytes) -> Result<Vec<RecordedEvent>> {
    let mut reader = CopyReader {
        buf: copied,
        at: 0,
        stream_id,
    };
    reader.header()?;
    let mut events = Vec::new();
    loop {
        let fields = reader.int(2)?;
        // The trailer: a field count of -1.
        if fields == 0xffff {
            return Ok(events);
        }
        if fields != 8 {
            return Err(reader.damaged());
        }
        events.push(RecordedEvent {
            position: Position(reader.field_int(8)?),
            stream_id: stream_id.clone(),
            version: reader.field_int(8)?,
            id: uuid::Uuid::from_slice(&reader.field()?).map_err(|_| reader.damaged())?,
            event_type: String::from_utf8(reader.field()?.to_vec())
                .map_err(|_| reader.damaged())?,
            schema_version: u32::try_from(reader.field_int(4)?).unwrap_or(0),
            timestamp: Timestamp(reader.field_int(8)? as i64),
            data: reader.field()?,
            metadata: reader.field()?,
        });
    }
}

/// A cursor over binary `COPY` output.
struct CopyReader<'a> {
    buf: Bytes,
    at: usize,
    stream_id: &'a StreamId,
}

impl CopyReader<'_> {
    fn damaged(&self) -> Error {
        Error::Remote(format!(
            "PostgreSQL: the copied events of {} do not read at byte {}",
            self.stream_id, self.at
        ))
    }

    fn take(&mut self, n: usize) -> Result<Bytes> {
        let end = self.at.checked_add(n).filter(|end| *end <= self.buf.len());
        let end = end.ok_or_else(|| self.damaged())?;
        let part = self.buf.slice(self.at..end);
        self.at = end;
        Ok(part)
    }

    /// A big-endian unsigned integer of `n` (at most 8) bytes.
    fn int(&mut self, n: usize) -> Result<u64> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |value, byte| (value << 8) | u64::from(*byte)))
    }

    /// A field's bytes (its 4-byte length first); NULL is damage here, as
    /// every column is `NOT NULL`.
    fn field(&mut self) -> Result<Bytes> {
        let len = self.int(4)?;
        if len == 0xffff_ffff {
            return Err(self.damaged());
        }
        self.take(len as usize)
    }

    /// A field holding an integer of `n` bytes.
    fn field_int(&mut self, n: usize) -> Result<u64> {
        if self.int(4)? != n as u64 {
            return Err(self.damaged());
        }
        self.int(n)
    }

    /// The signature, the flags and the header extension.
    fn header(&mut self) -> Result<()> {
        if self.take(COPY_SIGNATURE.len())?[..] != *COPY_SIGNATURE {
            return Err(self.damaged());
        }
        let _flags = self.int(4)?;
        let extension = self.int(4)?;
        self.take(extension as usize)?;
        Ok(())
    }
}

/// A `bigint` that is never negative in these tables.
pub(crate) fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A count or position as a `bigint`.
pub(crate) fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One event in binary COPY format, as PostgreSQL writes it.
    fn copied_one() -> Vec<u8> {
        let mut out = COPY_SIGNATURE.to_vec();
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&8u16.to_be_bytes());
        let field = |out: &mut Vec<u8>, bytes: &[u8]| {
            out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            out.extend_from_slice(bytes);
        };
        field(&mut out, &7u64.to_be_bytes());
        field(&mut out, &3u64.to_be_bytes());
        field(&mut out, uuid::Uuid::from_u128(42).as_bytes());
        field(&mut out, b"Happened");
        field(&mut out, &2u32.to_be_bytes());
        field(&mut out, &1_000u64.to_be_bytes());
        field(&mut out, b"{\"n\":1}");
        field(&mut out, b"{}");
        out.extend_from_slice(&0xffffu16.to_be_bytes());
        out
    }

    #[test]
    fn copied_events_read_back_and_every_cut_is_refused() {
        let stream = StreamId::new("order-1").unwrap();
        let whole = copied_one();
        let events = copied_events(&stream, Bytes::from(whole.clone())).unwrap();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(
            (e.position, e.version, e.schema_version),
            (Position(7), 3, 2)
        );
        assert_eq!(e.id, uuid::Uuid::from_u128(42));
        assert_eq!(e.event_type, "Happened");
        assert_eq!(e.timestamp, Timestamp(1_000));
        assert_eq!(
            (&e.data[..], &e.metadata[..]),
            (&b"{\"n\":1}"[..], &b"{}"[..])
        );
        // Output cut anywhere (a dropped connection) is an error, never a
        // panic or a shorter stream.
        for cut in 0..whole.len() {
            let cut = Bytes::from(whole[..cut].to_vec());
            assert!(copied_events(&stream, cut).is_err());
        }
    }
}
