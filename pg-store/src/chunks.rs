//! Stream chunks: every full hundred of a stream's events (versions
//! 1–100, 101–200, …) also packed into one row of `chunks`, written in
//! the transaction that completes it. A stream's events lie scattered
//! over the heap in the order they were appended, one tuple each; loading
//! a stream reads its chunks (a few rows, stored compressed and together)
//! and only the events after the last one from `events`.
//!
//! `events` stays the record: reads by position, subscriptions and the
//! append rules read it alone, and `annals verify` checks every chunk
//! against the events it packs.

use bytes::{Buf, Bytes};
use event_store::{Error, Position, RecordedEvent, Result, StreamId, Timestamp};
// Every dynamic statement names only the store's schema, checked by
// `schema::check_name` to be a plain identifier.
use sqlx::AssertSqlSafe;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::rows::signed;

/// Events per chunk: chunk `k` (from 1) holds versions
/// `(k - 1) * 100 + 1 ..= k * 100` and is keyed by its last version.
pub(crate) const CHUNK_EVENTS: u64 = 100;

/// One event packed, as SQL over a row of `events` (aggregated in
/// version order with `string_agg(…, ''::bytea ORDER BY version)`):
/// position, version (8 bytes each), id (16), schema version (4), time
/// (8), then type, data and metadata, each as a 4-byte length and its
/// bytes; every number big-endian. [`unpack`] reads it back.
pub(crate) const PACK: &str = "int8send(position) || int8send(version) || uuid_send(event_id) \
    || int4send(schema_version) || int8send(recorded_at) \
    || int4send(octet_length(convert_to(event_type, 'UTF8'))) || convert_to(event_type, 'UTF8') \
    || int4send(octet_length(data)) || data || int4send(octet_length(metadata)) || metadata";

/// SQL for what the chunk of stream `c.stream_id` up to version
/// `c.last_version` holds, packed from `events`: what a chunk is written
/// with and checked against.
pub(crate) fn packed_events(schema: &str) -> String {
    format!(
        "(SELECT string_agg({PACK}, ''::bytea ORDER BY e.version) FROM {schema}.events e
          WHERE e.stream_id = c.stream_id
            AND e.version BETWEEN c.last_version - {span} AND c.last_version)",
        span = CHUNK_EVENTS - 1,
    )
}

/// The chunks `events` complete: for each stream, those whose last
/// version lies among the versions `events` bring it to.
fn completed(events: &[RecordedEvent]) -> (Vec<&str>, Vec<i64>) {
    let mut streams = Vec::new();
    let mut lasts = Vec::new();
    for event in events {
        if event.version % CHUNK_EVENTS == 0 {
            streams.push(event.stream_id.as_str());
            lasts.push(signed(event.version));
        }
    }
    (streams, lasts)
}

/// Writes the chunks `events` (just inserted, in this transaction)
/// complete; nothing when they complete none, which is most appends.
pub(crate) async fn seal(
    tx: &mut Transaction<'_, Postgres>,
    schema: &str,
    events: &[RecordedEvent],
) -> std::result::Result<(), sqlx::Error> {
    let (streams, lasts) = completed(events);
    if streams.is_empty() {
        return Ok(());
    }
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {schema}.chunks (stream_id, last_version, events)
         SELECT c.stream_id, c.last_version, {packed}
         FROM UNNEST($1::text[], $2::bigint[]) AS c(stream_id, last_version)",
        packed = packed_events(schema),
    )))
    .bind(&streams)
    .bind(&lasts)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The events of `stream_id` a chunk holds, from version `after + 1`.
pub(crate) fn unpack(stream_id: &StreamId, chunk: Bytes, after: u64) -> Result<Vec<RecordedEvent>> {
    let mut events = Vec::with_capacity(CHUNK_EVENTS as usize);
    let mut rest = chunk;
    let broken = |what: &str| {
        Error::Remote(format!(
            "PostgreSQL: a chunk of {stream_id} is broken: {what}"
        ))
    };
    while rest.has_remaining() {
        let fixed = 8 + 8 + 16 + 4 + 8;
        if rest.remaining() < fixed {
            return Err(broken("it ends inside an event"));
        }
        let position = rest.get_i64();
        let version = rest.get_i64();
        let id = Uuid::from_u128(rest.get_u128());
        let schema_version = rest.get_i32();
        let recorded_at = rest.get_i64();
        let event_type = field(&mut rest).ok_or_else(|| broken("a type is cut short"))?;
        let event_type = std::str::from_utf8(&event_type)
            .map_err(|_| broken("a type is not UTF-8"))?
            .to_owned();
        let data = field(&mut rest).ok_or_else(|| broken("data is cut short"))?;
        let metadata = field(&mut rest).ok_or_else(|| broken("metadata is cut short"))?;
        let (Ok(position), Ok(version)) = (u64::try_from(position), u64::try_from(version)) else {
            return Err(broken("a negative position or version"));
        };
        if version <= after {
            continue;
        }
        events.push(RecordedEvent {
            position: Position(position),
            stream_id: stream_id.clone(),
            version,
            id,
            event_type,
            schema_version: u32::try_from(schema_version).unwrap_or(0),
            timestamp: Timestamp(recorded_at),
            data,
            metadata,
        });
    }
    Ok(events)
}

/// A 4-byte length and that many bytes, sharing `rest`'s buffer; `None`
/// when `rest` is shorter.
fn field(rest: &mut Bytes) -> Option<Bytes> {
    if rest.remaining() < 4 {
        return None;
    }
    let length = usize::try_from(rest.get_u32()).ok()?;
    if rest.remaining() < length {
        return None;
    }
    Some(rest.split_to(length))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event packed as [`PACK`] does.
    fn packed(version: i64, event_type: &str, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(version + 1000).to_be_bytes());
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&7u128.to_be_bytes());
        out.extend_from_slice(&2i32.to_be_bytes());
        out.extend_from_slice(&5i64.to_be_bytes());
        for field in [event_type.as_bytes(), data, b"{}"] {
            out.extend_from_slice(&(field.len() as u32).to_be_bytes());
            out.extend_from_slice(field);
        }
        out
    }

    fn stream() -> StreamId {
        StreamId::new("s").unwrap()
    }

    #[test]
    fn unpacks_what_pack_writes_from_a_version_on() {
        let mut chunk = packed(1, "A", b"{\"a\":1}");
        chunk.extend(packed(2, "Bé", b""));
        let all = unpack(&stream(), Bytes::from(chunk.clone()), 0).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].position, Position(1001));
        assert_eq!(all[0].id, Uuid::from_u128(7));
        assert_eq!(all[0].schema_version, 2);
        assert_eq!(all[0].timestamp, Timestamp(5));
        assert_eq!(&all[0].data[..], b"{\"a\":1}");
        assert_eq!(all[1].event_type, "Bé");
        assert_eq!(&all[1].metadata[..], b"{}");
        let later = unpack(&stream(), Bytes::from(chunk), 1).unwrap();
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].version, 2);
    }

    #[test]
    fn a_cut_chunk_is_an_error_at_every_length() {
        let chunk = packed(1, "A", b"{\"a\":1}");
        for cut in 1..chunk.len() {
            let e = unpack(&stream(), Bytes::copy_from_slice(&chunk[..cut]), 0).unwrap_err();
            assert!(e.to_string().contains("broken"), "{cut}: {e}");
        }
    }

    #[test]
    fn only_events_at_a_hundred_complete_a_chunk() {
        let event = |version| RecordedEvent {
            position: Position(version),
            stream_id: stream(),
            version,
            id: Uuid::nil(),
            event_type: "A".into(),
            schema_version: 1,
            timestamp: Timestamp(0),
            data: Bytes::new(),
            metadata: Bytes::new(),
        };
        let events: Vec<_> = (95..=205).map(event).collect();
        assert_eq!(completed(&events), (vec!["s", "s"], vec![100, 200]));
    }
}
