//! The body of an event record (frame kind 1), as written in segment files.
//!
//! ```text
//! offset size field
//!      0    1 kind            1 = event
//!      1    1 flags           bit 0: last record of its batch; other bits 0
//!      2    2 reserved        0
//!      4    4 schema_version  u32
//!      8    8 position        u64, global position (first event = 1)
//!     16    8 version         u64, version within the stream (first event = 1)
//!     24    8 timestamp       i64, microseconds since the Unix epoch, UTC
//!     32   16 event id        UUID, RFC 4122 byte order
//!     48    2 stream_len      u16
//!     50    2 type_len        u16
//!     52    4 data_len        u32
//!     56    4 metadata_len    u32
//!     60    … stream id (UTF-8), event type (UTF-8), data (JSON), metadata (JSON)
//! ```

use bytes::Bytes;
use uuid::Uuid;

use crate::types::{EventView, Position, RecordedEvent, StreamId, Timestamp};

pub const KIND_EVENT: u8 = 1;
pub const FLAG_END_OF_BATCH: u8 = 1;
pub const EVENT_FIXED_LEN: usize = 60;

/// Borrowed view of an event record's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRecord<'a> {
    pub flags: u8,
    pub schema_version: u32,
    pub position: u64,
    pub version: u64,
    pub timestamp: i64,
    pub id: [u8; 16],
    pub stream_id: &'a str,
    pub event_type: &'a str,
    pub data: &'a [u8],
    pub metadata: &'a [u8],
}

impl<'a> EventRecord<'a> {
    pub fn is_end_of_batch(&self) -> bool {
        self.flags & FLAG_END_OF_BATCH != 0
    }

    /// Bytes the body takes.
    pub fn body_len(&self) -> usize {
        EVENT_FIXED_LEN
            + self.stream_id.len()
            + self.event_type.len()
            + self.data.len()
            + self.metadata.len()
    }

    /// Writes the body into `buf`.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        buf.reserve(self.body_len());
        buf.push(KIND_EVENT);
        buf.push(self.flags);
        buf.extend_from_slice(&0u16.to_le_bytes());
        buf.extend_from_slice(&self.schema_version.to_le_bytes());
        buf.extend_from_slice(&self.position.to_le_bytes());
        buf.extend_from_slice(&self.version.to_le_bytes());
        buf.extend_from_slice(&self.timestamp.to_le_bytes());
        buf.extend_from_slice(&self.id);
        buf.extend_from_slice(&(self.stream_id.len() as u16).to_le_bytes());
        buf.extend_from_slice(&(self.event_type.len() as u16).to_le_bytes());
        buf.extend_from_slice(&(self.data.len() as u32).to_le_bytes());
        buf.extend_from_slice(&(self.metadata.len() as u32).to_le_bytes());
        buf.extend_from_slice(self.stream_id.as_bytes());
        buf.extend_from_slice(self.event_type.as_bytes());
        buf.extend_from_slice(self.data);
        buf.extend_from_slice(self.metadata);
    }

    /// Decodes a body. Fails with a description when the bytes are not a
    /// well-formed event body (which a valid checksum makes a format bug or
    /// a foreign file, never a torn write).
    pub fn decode(body: &[u8]) -> Result<EventRecord<'_>, String> {
        if body.len() < EVENT_FIXED_LEN {
            return Err(format!("event body of {} bytes is too short", body.len()));
        }
        if body[0] != KIND_EVENT {
            return Err(format!("record kind {} is not an event", body[0]));
        }
        let u16_at = |at: usize| u16::from_le_bytes([body[at], body[at + 1]]) as usize;
        let u32_at =
            |at: usize| u32::from_le_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&body[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let stream_len = u16_at(48);
        let type_len = u16_at(50);
        let data_len = u32_at(52) as usize;
        let metadata_len = u32_at(56) as usize;
        let expected = EVENT_FIXED_LEN + stream_len + type_len + data_len + metadata_len;
        if expected != body.len() {
            return Err(format!(
                "event field lengths add up to {expected} bytes but the body has {}",
                body.len()
            ));
        }
        let mut at = EVENT_FIXED_LEN;
        let mut take = |len: usize| {
            let slice = &body[at..at + len];
            at += len;
            slice
        };
        let stream_id = std::str::from_utf8(take(stream_len))
            .map_err(|_| "stream id is not UTF-8".to_string())?;
        let event_type = std::str::from_utf8(take(type_len))
            .map_err(|_| "event type is not UTF-8".to_string())?;
        let data = take(data_len);
        let metadata = take(metadata_len);
        let mut id = [0u8; 16];
        id.copy_from_slice(&body[32..48]);
        Ok(EventRecord {
            flags: body[1],
            schema_version: u32_at(4),
            position: u64_at(8),
            version: u64_at(16),
            timestamp: u64_at(24) as i64,
            id,
            stream_id,
            event_type,
            data,
            metadata,
        })
    }

    /// Builds the owned event. `owner` holds the body so that data and
    /// metadata can be zero-copy slices of it.
    /// The event this record holds, lent.
    pub fn view(&self) -> EventView<'a> {
        EventView {
            id: Uuid::from_bytes(self.id),
            stream_id: self.stream_id,
            version: self.version,
            position: Position(self.position),
            event_type: self.event_type,
            schema_version: self.schema_version,
            timestamp: Timestamp(self.timestamp),
            data: self.data,
            metadata: self.metadata,
        }
    }

    pub fn to_recorded(&self, owner: &Bytes, body_start: usize) -> RecordedEvent {
        let data_start =
            body_start + EVENT_FIXED_LEN + self.stream_id.len() + self.event_type.len();
        let meta_start = data_start + self.data.len();
        RecordedEvent {
            id: Uuid::from_bytes(self.id),
            stream_id: StreamId::from_stored(self.stream_id),
            version: self.version,
            position: Position(self.position),
            event_type: self.event_type.to_owned(),
            schema_version: self.schema_version,
            timestamp: Timestamp(self.timestamp),
            data: owner.slice(data_start..meta_start),
            metadata: owner.slice(meta_start..meta_start + self.metadata.len()),
        }
    }
}

/// Bytes `appends` take in a segment, frames included: what the
/// `append_bytes_max` limit bounds on every store.
pub fn appends_len(appends: &[crate::types::StreamAppend]) -> usize {
    appends
        .iter()
        .map(|a| {
            a.events
                .iter()
                .map(|e| {
                    crate::format::frame::FRAME_HEADER_LEN
                        + EVENT_FIXED_LEN
                        + a.stream_id.as_str().len()
                        + e.event_type.len()
                        + e.data.len()
                        + e.metadata.len()
                })
                .sum::<usize>()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_ident() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_.:-]{1,40}"
    }

    proptest! {
        #[test]
        fn event_bodies_round_trip(
            flags in 0u8..2,
            schema_version in any::<u32>(),
            position in any::<u64>(),
            version in any::<u64>(),
            timestamp in any::<i64>(),
            id in any::<[u8; 16]>(),
            stream_id in arb_ident(),
            event_type in arb_ident(),
            data in proptest::collection::vec(any::<u8>(), 0..256),
            metadata in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let record = EventRecord {
                flags, schema_version, position, version, timestamp, id,
                stream_id: &stream_id, event_type: &event_type, data: &data, metadata: &metadata,
            };
            let mut buf = Vec::new();
            record.encode(&mut buf);
            prop_assert_eq!(buf.len(), record.body_len());
            prop_assert_eq!(EventRecord::decode(&buf), Ok(record));

            let owner = Bytes::from(buf);
            let recorded = record.to_recorded(&owner, 0);
            prop_assert_eq!(&recorded.data[..], &data[..]);
            prop_assert_eq!(&recorded.metadata[..], &metadata[..]);
            prop_assert_eq!(recorded.stream_id.as_str(), stream_id.as_str());
        }

        /// Every cut, in the fixed part or in any of the four variable
        /// fields, is refused with the reason that applies to it (a decoder
        /// that trusted the lengths would read past the end instead).
        #[test]
        fn truncated_bodies_are_rejected(
            stream_id in arb_ident(),
            event_type in arb_ident(),
            data in proptest::collection::vec(any::<u8>(), 0..64),
            metadata in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let record = EventRecord {
                flags: 0, schema_version: 1, position: 1, version: 1, timestamp: 0, id: [0; 16],
                stream_id: &stream_id, event_type: &event_type, data: &data, metadata: &metadata,
            };
            let mut buf = Vec::new();
            record.encode(&mut buf);
            for cut in 0..buf.len() {
                let reason = if cut < EVENT_FIXED_LEN { "too short" } else { "add up to" };
                match EventRecord::decode(&buf[..cut]) {
                    Err(error) => prop_assert!(error.contains(reason), "cut at {}: {}", cut, error),
                    Ok(decoded) => prop_assert!(false, "cut at {} decodes: {:?}", cut, decoded),
                }
            }
        }
    }
}
