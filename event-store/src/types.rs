//! The vocabulary of the store: streams, versions, positions and events.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Characters a stream id may contain besides ASCII letters and digits.
///
/// The set excludes `/`, `%`, `?`, `#` and whitespace so that a stream id can be
/// used verbatim in a URL path segment and in log lines.
pub const STREAM_ID_PUNCTUATION: &str = "-_.:@+=~";

/// A string that is not a valid [`StreamId`], and why. Converts into
/// [`crate::Error::InvalidStreamId`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid stream id {id:?}: {reason}")]
pub struct InvalidStreamId {
    pub id: String,
    pub reason: String,
}

/// The name of one stream (usually one aggregate instance, e.g. `customer-7c9e…`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(Arc<str>);

impl StreamId {
    /// Parses a stream id: 1 to 65,535 bytes of ASCII letters, digits and
    /// [`STREAM_ID_PUNCTUATION`]. The store applies its own, usually smaller,
    /// `stream_id_bytes_max` limit on append.
    pub fn new(id: impl AsRef<str>) -> Result<Self, InvalidStreamId> {
        let id = id.as_ref();
        if id.is_empty() {
            return Err(InvalidStreamId {
                id: id.to_owned(),
                reason: "a stream id must not be empty".into(),
            });
        }
        if id.len() > u16::MAX as usize {
            return Err(InvalidStreamId {
                id: id.chars().take(64).collect(),
                reason: format!("a stream id is at most {} bytes", u16::MAX),
            });
        }
        if let Some(bad) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || STREAM_ID_PUNCTUATION.contains(*c)))
        {
            return Err(InvalidStreamId {
                id: id.to_owned(),
                reason: format!(
                    "character {bad:?} is not allowed; use ASCII letters, digits and {STREAM_ID_PUNCTUATION}"
                ),
            });
        }
        Ok(Self(Arc::from(id)))
    }

    /// Builds a stream id from bytes the store itself wrote and checksummed.
    pub(crate) fn from_stored(id: &str) -> Self {
        Self(Arc::from(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for StreamId {
    type Err = InvalidStreamId;
    fn from_str(s: &str) -> Result<Self, InvalidStreamId> {
        Self::new(s)
    }
}

// Lets maps keyed by `StreamId` be queried with a `&str`; `Hash` and `Eq`
// of the wrapper agree with those of `str`.
impl std::borrow::Borrow<str> for StreamId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for StreamId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for StreamId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for StreamId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(s).map_err(serde::de::Error::custom)
    }
}

/// The place of an event in the global log. The first event ever appended is at
/// position 1; [`Position::ZERO`] means "before the first event" and is what a
/// consumer that has processed nothing stores as its checkpoint.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Position(pub u64);

impl Position {
    pub const ZERO: Position = Position(0);
    /// The position of the first event of the log.
    pub const START: Position = Position(1);

    pub fn next(self) -> Position {
        Position(self.0.saturating_add(1))
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "@{}", self.0)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What the writer believes about a stream's version when it appends.
///
/// Versions count events: the first event of a stream has version 1, so a
/// stream's current version is its number of events and 0 means "no stream".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "version")]
pub enum ExpectedVersion {
    /// Append whatever the stream's state.
    Any,
    /// The stream must not exist yet (version 0).
    NoStream,
    /// The stream must have at least one event.
    StreamExists,
    /// The stream's last event must have exactly this version (0 = no stream).
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream at `current` satisfies this expectation.
    pub fn admits(self, current: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current == 0,
            ExpectedVersion::StreamExists => current > 0,
            ExpectedVersion::Exact(v) => current == v,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("stream exists"),
            ExpectedVersion::Exact(v) => write!(f, "{v}"),
        }
    }
}

/// Microseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        Timestamp(micros)
    }

    pub fn as_micros(self) -> i64 {
        self.0
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}µs", self.0)
    }
}

/// The source of commit timestamps; injected so tests can be deterministic.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// Well-known metadata carried by events. Stored as a JSON object; fields the
/// store does not know are kept in `extra`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// An event to append. `data` and `metadata` are JSON text; the store checks
/// that they parse (metadata must be an object) before anything is written.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    pub data: Bytes,
    pub metadata: Bytes,
}

impl NewEvent {
    /// An event with raw JSON data, a fresh time-ordered id, schema version 1
    /// and empty metadata.
    pub fn new(event_type: impl Into<String>, data: impl Into<Bytes>) -> Self {
        Self {
            id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version: 1,
            data: data.into(),
            metadata: Bytes::from_static(b"{}"),
        }
    }

    /// An event whose data is `value` serialized as JSON.
    pub fn json<T: Serialize + ?Sized>(
        event_type: impl Into<String>,
        value: &T,
    ) -> serde_json::Result<Self> {
        Ok(Self::new(event_type, serde_json::to_vec(value)?))
    }

    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = id;
        self
    }

    pub fn with_schema_version(mut self, schema_version: u32) -> Self {
        self.schema_version = schema_version;
        self
    }

    pub fn with_metadata(mut self, metadata: &Metadata) -> serde_json::Result<Self> {
        self.metadata = serde_json::to_vec(metadata)?.into();
        Ok(self)
    }
}

/// An event as stored: what a read or a subscription returns.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedEvent {
    pub id: Uuid,
    pub stream_id: StreamId,
    /// 1-based version of this event within its stream.
    pub version: u64,
    pub position: Position,
    pub event_type: String,
    pub schema_version: u32,
    pub timestamp: Timestamp,
    pub data: Bytes,
    pub metadata: Bytes,
}

impl RecordedEvent {
    /// Deserializes the event's JSON data.
    pub fn data_as<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_slice(&self.data)
    }

    /// Deserializes the event's JSON metadata into the well-known fields.
    pub fn metadata(&self) -> serde_json::Result<Metadata> {
        serde_json::from_slice(&self.metadata)
    }
}

/// An event as it lies in the log, lent by [`crate::Store::scan`] for one
/// call of its visitor: a read of the whole log that allocates nothing per
/// event. As stored: before upcasting, its personal data still sealed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EventView<'a> {
    pub id: Uuid,
    pub stream_id: &'a str,
    pub version: u64,
    pub position: Position,
    pub event_type: &'a str,
    pub schema_version: u32,
    pub timestamp: Timestamp,
    pub data: &'a [u8],
    pub metadata: &'a [u8],
}

/// One stream's part of an append.
#[derive(Clone, Debug)]
pub struct StreamAppend {
    pub stream_id: StreamId,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
}

impl StreamAppend {
    pub fn new(stream_id: StreamId, expected: ExpectedVersion, events: Vec<NewEvent>) -> Self {
        Self {
            stream_id,
            expected,
            events,
        }
    }
}

/// Where an append landed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendResult {
    pub stream_id: StreamId,
    /// Version of the first appended event.
    pub first_version: u64,
    /// Version of the last appended event: the stream's version after the append.
    pub last_version: u64,
    pub first_position: Position,
    pub last_position: Position,
    /// True when the events had already been committed by an earlier call
    /// (an idempotent retry) and nothing was written this time.
    pub already_committed: bool,
}

/// Direction of a stream read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    #[default]
    Forward,
    Backward,
}

/// Which version a stream read starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "version")]
pub enum ReadFrom {
    /// Version 1 forwards, or the last event backwards.
    Start,
    /// The last event (useful backwards: "the newest N events").
    End,
    /// This version, inclusive.
    Version(u64),
}

/// A page of one stream.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamSlice {
    pub stream_id: StreamId,
    pub events: Vec<RecordedEvent>,
    /// The stream's current version when the read started (0 = no stream).
    pub stream_version: u64,
    /// True when the page reaches the end of the stream in the read direction.
    pub is_end: bool,
}

/// Which events a subscription delivers. Empty lists mean "all".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventFilter {
    /// Deliver only events whose stream id starts with one of these.
    #[serde(default)]
    pub stream_prefixes: Vec<String>,
    /// Deliver only events of these types.
    #[serde(default)]
    pub event_types: Vec<String>,
}

impl EventFilter {
    pub fn all() -> Self {
        Self::default()
    }

    pub fn stream_prefix(prefix: impl Into<String>) -> Self {
        Self {
            stream_prefixes: vec![prefix.into()],
            event_types: Vec::new(),
        }
    }

    pub fn event_types<I, S>(types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            stream_prefixes: Vec::new(),
            event_types: types.into_iter().map(Into::into).collect(),
        }
    }

    pub fn is_all(&self) -> bool {
        self.stream_prefixes.is_empty() && self.event_types.is_empty()
    }

    pub fn matches(&self, stream_id: &str, event_type: &str) -> bool {
        (self.stream_prefixes.is_empty()
            || self
                .stream_prefixes
                .iter()
                .any(|p| stream_id.starts_with(p.as_str())))
            && (self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type))
    }
}

/// A snapshot of an aggregate's state at a stream version.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub stream_id: StreamId,
    /// The stream version the state reflects: load events after it.
    pub version: u64,
    /// The version of the state's own encoding, so that an aggregate whose
    /// state shape changed can ignore snapshots written by older code.
    pub schema_version: u32,
    pub timestamp: Timestamp,
    pub state: Bytes,
}

/// Counters describing the store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Number of committed events.
    pub events: u64,
    /// Number of streams with at least one event.
    pub streams: u64,
    /// Number of segment files (sealed plus the active one).
    pub segments: u64,
    /// Sealed segments among them.
    pub sealed_segments: u64,
    /// Bytes of all segment files.
    pub bytes: u64,
    /// Position of the last committed event (0 = empty store).
    pub head: Position,
    /// Number of streams with a snapshot.
    pub snapshots: u64,
    /// Bytes of all snapshot files.
    pub snapshot_bytes: u64,
    /// Stream reads that consulted a sealed segment's bloom filter and skipped it.
    pub segments_skipped_by_bloom: u64,
    /// Stream reads that had to open a sealed segment's index.
    pub segments_searched: u64,
    /// Set when the store no longer accepts appends, with the reason.
    pub read_only_reason: Option<String>,
}

/// Which streams to list: those whose ids start with `prefix`, in id
/// order after `after`, at most `limit` of them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamListing {
    pub prefix: String,
    /// The last stream id of the previous page (`StreamPage::next_after`).
    pub after: Option<String>,
    pub limit: usize,
}

/// One listed stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamSummary {
    pub stream_id: String,
    /// Its version: the number of its events.
    pub version: u64,
    /// The position of its last event.
    pub last_position: u64,
}

/// A page of streams.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPage {
    pub streams: Vec<StreamSummary>,
    /// How many streams start with the prefix in all (every page).
    pub matching: u64,
    /// Set when more streams follow: pass it as the next `after`.
    pub next_after: Option<String>,
}

/// The streams of one category (a stream id up to its first `-`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoryCount {
    pub category: String,
    pub streams: u64,
    pub events: u64,
}

/// Categories by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoryPage {
    pub categories: Vec<CategoryCount>,
    /// Set when there were more categories than asked for (the first ones
    /// by name are given).
    pub truncated: bool,
}
