//! The body of a snapshot record (frame kind 2), as written in snapshot files.
//!
//! ```text
//! offset size field
//!      0    1 kind            2 = snapshot
//!      1    1 flags           0
//!      2    2 stream_len      u16
//!      4    4 schema_version  u32, the version of the state's own encoding
//!      8    8 version         u64, the stream version the state reflects
//!     16    8 timestamp       i64, microseconds since the Unix epoch
//!     24    4 state_len       u32
//!     28    4 reserved        0
//!     32    … stream id (UTF-8), state bytes
//! ```

pub const KIND_SNAPSHOT: u8 = 2;
pub const SNAPSHOT_FIXED_LEN: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotRecord<'a> {
    pub schema_version: u32,
    pub version: u64,
    pub timestamp: i64,
    pub stream_id: &'a str,
    pub state: &'a [u8],
}

impl<'a> SnapshotRecord<'a> {
    pub fn encode(&self, buf: &mut Vec<u8>) {
        buf.push(KIND_SNAPSHOT);
        buf.push(0);
        buf.extend_from_slice(&(self.stream_id.len() as u16).to_le_bytes());
        buf.extend_from_slice(&self.schema_version.to_le_bytes());
        buf.extend_from_slice(&self.version.to_le_bytes());
        buf.extend_from_slice(&self.timestamp.to_le_bytes());
        buf.extend_from_slice(&(self.state.len() as u32).to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes());
        buf.extend_from_slice(self.stream_id.as_bytes());
        buf.extend_from_slice(self.state);
    }

    pub fn decode(body: &'a [u8]) -> Result<Self, String> {
        if body.len() < SNAPSHOT_FIXED_LEN {
            return Err(format!(
                "snapshot body of {} bytes is too short",
                body.len()
            ));
        }
        if body[0] != KIND_SNAPSHOT {
            return Err(format!("record kind {} is not a snapshot", body[0]));
        }
        let stream_len = u16::from_le_bytes([body[2], body[3]]) as usize;
        let state_len = u32::from_le_bytes([body[24], body[25], body[26], body[27]]) as usize;
        if SNAPSHOT_FIXED_LEN + stream_len + state_len != body.len() {
            return Err("snapshot field lengths do not match the body".into());
        }
        let mut u64_bytes = [0u8; 8];
        u64_bytes.copy_from_slice(&body[8..16]);
        let version = u64::from_le_bytes(u64_bytes);
        u64_bytes.copy_from_slice(&body[16..24]);
        let timestamp = i64::from_le_bytes(u64_bytes);
        let stream_id =
            std::str::from_utf8(&body[SNAPSHOT_FIXED_LEN..SNAPSHOT_FIXED_LEN + stream_len])
                .map_err(|_| "snapshot stream id is not UTF-8".to_string())?;
        Ok(SnapshotRecord {
            schema_version: u32::from_le_bytes([body[4], body[5], body[6], body[7]]),
            version,
            timestamp,
            stream_id,
            state: &body[SNAPSHOT_FIXED_LEN + stream_len..],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn snapshot_bodies_round_trip(
            schema_version in any::<u32>(), version in any::<u64>(), timestamp in any::<i64>(),
            stream_id in "[a-z0-9-]{1,40}", state in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let r = SnapshotRecord { schema_version, version, timestamp, stream_id: &stream_id, state: &state };
            let mut buf = Vec::new();
            r.encode(&mut buf);
            prop_assert_eq!(SnapshotRecord::decode(&buf), Ok(r));
            for cut in 0..buf.len() {
                prop_assert!(SnapshotRecord::decode(&buf[..cut]).is_err());
            }
        }
    }
}
