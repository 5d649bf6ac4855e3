//! The JSON the store server and the remote client exchange. Event data and
//! metadata travel as embedded JSON (not strings), so what a client appends
//! is what any HTTP reader sees.

use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use uuid::Uuid;

use event_store::{
    AppendResult, ExpectedVersion, NewEvent, Position, RecordedEvent, Snapshot, StreamAppend,
    StreamId, StreamSlice, Timestamp,
};
use event_store::{Error, Result};

/// The problem `type` URIs the store API uses, one per error kind.
pub mod problem {
    pub const WRONG_EXPECTED_VERSION: &str = "urn:annals:problem:wrong-expected-version";
    pub const LIMIT_EXCEEDED: &str = "urn:annals:problem:limit-exceeded";
    pub const INVALID_STREAM_ID: &str = "urn:annals:problem:invalid-stream-id";
    pub const INVALID_REQUEST: &str = "urn:annals:problem:invalid-request";
    pub const INVALID_READ: &str = "urn:annals:problem:invalid-read";
    pub const NOT_FOUND: &str = "urn:annals:problem:not-found";
    pub const CORRUPTION: &str = "urn:annals:problem:corruption";
    pub const UNAVAILABLE: &str = "urn:annals:problem:store-unavailable";
    pub const READ_ONLY: &str = "urn:annals:problem:store-read-only";
    pub const OUTCOME_UNKNOWN: &str = "urn:annals:problem:outcome-unknown";
    pub const EVENT_ID_CONFLICT: &str = "urn:annals:problem:event-id-conflict";
    pub const DIVERGED: &str = "urn:annals:problem:log-diverged";
    pub const CLOSED: &str = "urn:annals:problem:store-closed";
    pub const UNAUTHORIZED: &str = "urn:annals:problem:unauthorized";
    pub const FORBIDDEN: &str = "urn:annals:problem:forbidden";
    pub const INTERNAL: &str = "urn:annals:problem:internal";
    pub const UPCAST: &str = "urn:annals:problem:upcast";
    pub const KEY_STORE: &str = "urn:annals:problem:key-store";
    pub const UNSUPPORTED: &str = "urn:annals:problem:unsupported";
    pub const METHOD_NOT_ALLOWED: &str = "urn:annals:problem:method-not-allowed";
    pub const REQUEST_TIMEOUT: &str = "urn:annals:problem:request-timeout";
    pub const RATE_LIMITED: &str = "urn:annals:problem:rate-limited";
}

/// An RFC 9457 problem document (`application/problem+json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub expected: Option<WireExpected>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<uuid::Uuid>,
    /// With an event-id conflict where every event of the append is
    /// committed under its id with other bytes: where they are (see
    /// `event_store::IdConflict::committed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<AppendResultSchema>>)]
    pub committed: Option<Vec<AppendResult>>,
}

/// An expected version on the wire: `"any"`, `"no_stream"`,
/// `"stream_exists"` or a version number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireExpected(pub ExpectedVersion);

impl Serialize for WireExpected {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self.0 {
            ExpectedVersion::Any => s.serialize_str("any"),
            ExpectedVersion::NoStream => s.serialize_str("no_stream"),
            ExpectedVersion::StreamExists => s.serialize_str("stream_exists"),
            ExpectedVersion::Exact(v) => s.serialize_u64(v),
        }
    }
}

impl<'de> Deserialize<'de> for WireExpected {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Word(String),
        }
        Ok(WireExpected(match Raw::deserialize(d)? {
            Raw::Number(v) => ExpectedVersion::Exact(v),
            Raw::Word(w) => match w.as_str() {
                "any" => ExpectedVersion::Any,
                "no_stream" => ExpectedVersion::NoStream,
                "stream_exists" => ExpectedVersion::StreamExists,
                other => {
                    return Err(serde::de::Error::custom(format!(
                        "expected_version {other:?} is not \"any\", \"no_stream\", \"stream_exists\" or a number"
                    )));
                }
            },
        }))
    }
}

/// An event to append.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WireNewEvent {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default = "first_schema")]
    pub schema_version: u32,
    #[schema(value_type = Object)]
    pub data: Box<RawValue>,
    /// A JSON object: `correlation_id`, `causation_id` and anything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Box<RawValue>>,
}

fn first_schema() -> u32 {
    1
}

/// One stream's part of an append.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WireAppend {
    /// `"any"`, `"no_stream"`, `"stream_exists"` or the version of the stream's last event.
    #[schema(value_type = serde_json::Value)]
    pub expected_version: WireExpected,
    pub events: Vec<WireNewEvent>,
}

/// A multi-stream append.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WireTransaction {
    pub appends: Vec<WireStreamAppend>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WireStreamAppend {
    pub stream_id: String,
    /// `"any"`, `"no_stream"`, `"stream_exists"` or the version of the stream's last event.
    #[schema(value_type = serde_json::Value)]
    pub expected_version: WireExpected,
    pub events: Vec<WireNewEvent>,
}

/// A stored event.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WireEvent {
    pub id: Uuid,
    pub stream_id: String,
    pub version: u64,
    pub position: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub schema_version: u32,
    /// Commit time, microseconds since the Unix epoch.
    pub timestamp: i64,
    #[schema(value_type = Object)]
    pub data: Box<RawValue>,
    #[schema(value_type = Object)]
    pub metadata: Box<RawValue>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WireSlice {
    pub stream_id: String,
    pub stream_version: u64,
    pub is_end: bool,
    pub events: Vec<WireEvent>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WireEvents {
    pub events: Vec<WireEvent>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WireSnapshot {
    pub version: u64,
    pub schema_version: u32,
    pub timestamp: i64,
    /// The state bytes, base64 (standard alphabet, padded).
    pub state: String,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WireLoaded {
    pub snapshot: Option<WireSnapshot>,
    pub events: Vec<WireEvent>,
    pub version: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WireHead {
    pub position: u64,
}

/// What a client learns about the server when it connects.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServerInfo {
    pub data_format_version: u32,
    pub read_count_max: usize,
}

fn raw(bytes: &[u8], what: &str) -> Result<Box<RawValue>> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| Error::InvalidAppend(format!("{what} is not UTF-8 JSON")))?;
    let text = if text.is_empty() { "{}" } else { text };
    RawValue::from_string(text.to_owned())
        .map_err(|e| Error::InvalidAppend(format!("{what} is not valid JSON: {e}")))
}

pub fn new_event_to_wire(e: &NewEvent) -> Result<WireNewEvent> {
    Ok(WireNewEvent {
        id: e.id,
        event_type: e.event_type.clone(),
        schema_version: e.schema_version,
        data: raw(&e.data, "event data")?,
        metadata: Some(raw(&e.metadata, "event metadata")?),
    })
}

pub fn new_event_from_wire(e: WireNewEvent) -> NewEvent {
    NewEvent {
        id: e.id,
        event_type: e.event_type,
        schema_version: e.schema_version,
        data: Bytes::from(String::from(Box::<str>::from(e.data))),
        metadata: e.metadata.map_or(Bytes::from_static(b"{}"), |m| {
            Bytes::from(String::from(Box::<str>::from(m)))
        }),
    }
}

pub fn event_to_wire(e: &RecordedEvent) -> Result<WireEvent> {
    Ok(WireEvent {
        id: e.id,
        stream_id: e.stream_id.to_string(),
        version: e.version,
        position: e.position.0,
        event_type: e.event_type.clone(),
        schema_version: e.schema_version,
        timestamp: e.timestamp.0,
        data: raw(&e.data, "stored event data")?,
        metadata: raw(&e.metadata, "stored event metadata")?,
    })
}

pub fn event_from_wire(e: WireEvent) -> Result<RecordedEvent> {
    Ok(RecordedEvent {
        id: e.id,
        stream_id: StreamId::new(&e.stream_id)?,
        version: e.version,
        position: Position(e.position),
        event_type: e.event_type,
        schema_version: e.schema_version,
        timestamp: Timestamp(e.timestamp),
        data: Bytes::from(String::from(Box::<str>::from(e.data))),
        metadata: Bytes::from(String::from(Box::<str>::from(e.metadata))),
    })
}

pub fn append_to_wire(a: &StreamAppend) -> Result<WireStreamAppend> {
    Ok(WireStreamAppend {
        stream_id: a.stream_id.to_string(),
        expected_version: WireExpected(a.expected),
        events: a
            .events
            .iter()
            .map(new_event_to_wire)
            .collect::<Result<_>>()?,
    })
}

pub fn append_from_wire(a: WireStreamAppend) -> Result<StreamAppend> {
    Ok(StreamAppend {
        stream_id: StreamId::new(&a.stream_id)?,
        expected: a.expected_version.0,
        events: a.events.into_iter().map(new_event_from_wire).collect(),
    })
}

pub fn slice_to_wire(s: &StreamSlice) -> Result<WireSlice> {
    Ok(WireSlice {
        stream_id: s.stream_id.to_string(),
        stream_version: s.stream_version,
        is_end: s.is_end,
        events: s.events.iter().map(event_to_wire).collect::<Result<_>>()?,
    })
}

pub fn slice_from_wire(s: WireSlice) -> Result<StreamSlice> {
    Ok(StreamSlice {
        stream_id: StreamId::new(&s.stream_id)?,
        stream_version: s.stream_version,
        is_end: s.is_end,
        events: s
            .events
            .into_iter()
            .map(event_from_wire)
            .collect::<Result<_>>()?,
    })
}

pub fn snapshot_to_wire(s: &Snapshot) -> WireSnapshot {
    WireSnapshot {
        version: s.version,
        schema_version: s.schema_version,
        timestamp: s.timestamp.0,
        state: base64::engine::general_purpose::STANDARD.encode(&s.state),
    }
}

pub fn snapshot_from_wire(stream_id: &StreamId, s: WireSnapshot) -> Result<Snapshot> {
    let state = base64::engine::general_purpose::STANDARD
        .decode(s.state.as_bytes())
        .map_err(|e| Error::Remote(format!("snapshot state is not base64: {e}")))?;
    Ok(Snapshot {
        stream_id: stream_id.clone(),
        version: s.version,
        schema_version: s.schema_version,
        timestamp: Timestamp(s.timestamp),
        state: Bytes::from(state),
    })
}

/// Which problem an error becomes, and back.
pub fn problem_of(err: &Error) -> Problem {
    // The detail carries what the variant holds, so the client rebuilds the
    // same error; the title says what kind of error it is.
    let detail = match err {
        Error::InvalidAppend(m)
        | Error::InvalidRead(m)
        | Error::InvalidOptions(m)
        | Error::Poisoned(m)
        | Error::Indeterminate(m)
        | Error::Diverged(m)
        | Error::ReadOnly(m)
        | Error::Remote(m)
        | Error::KeyStore(m)
        | Error::Unsupported(m) => m.clone(),
        Error::InvalidStreamId { reason, .. } => reason.clone(),
        Error::Corruption { detail, .. } | Error::Upcast { detail, .. } => detail.clone(),
        Error::EventIdConflict(c) => c.detail.clone(),
        other => other.to_string(),
    };
    let mut p = Problem {
        detail,
        ..Problem::default()
    };
    let (kind, title, status) = match err {
        Error::WrongExpectedVersion {
            stream,
            expected,
            current,
        } => {
            p.stream = Some(stream.to_string());
            p.expected = Some(WireExpected(*expected));
            p.current = Some(*current);
            (
                problem::WRONG_EXPECTED_VERSION,
                "Wrong expected version",
                409,
            )
        }
        Error::LimitExceeded { limit, actual, max } => {
            p.limit = Some((*limit).to_string());
            p.actual = Some(*actual);
            p.max = Some(*max);
            (problem::LIMIT_EXCEEDED, "Limit exceeded", 400)
        }
        Error::InvalidStreamId { id, .. } => {
            p.stream = Some(id.clone());
            (problem::INVALID_STREAM_ID, "Invalid stream id", 400)
        }
        Error::InvalidAppend(_) | Error::InvalidOptions(_) => {
            (problem::INVALID_REQUEST, "Invalid request", 400)
        }
        Error::InvalidRead(_) => (problem::INVALID_READ, "Invalid read", 400),
        Error::Corruption { file, offset, .. } => {
            p.file = Some(file.display().to_string());
            p.offset = Some(*offset);
            (problem::CORRUPTION, "Stored data is damaged", 500)
        }
        Error::Poisoned(_) => (
            problem::UNAVAILABLE,
            "The store stopped accepting appends",
            503,
        ),
        Error::ReadOnly(_) => (problem::READ_ONLY, "The store is read-only", 503),
        Error::Diverged(_) => (problem::DIVERGED, "The event log diverged", 409),
        Error::EventIdConflict(c) => {
            p.stream = Some(c.stream.to_string());
            p.event_id = Some(c.event_id);
            p.committed.clone_from(&c.committed);
            (
                problem::EVENT_ID_CONFLICT,
                "An event id names another event",
                409,
            )
        }
        Error::Indeterminate(_) => (
            problem::OUTCOME_UNKNOWN,
            "The outcome of the append is unknown",
            503,
        ),
        Error::Closed => (problem::CLOSED, "The store is closed", 503),
        Error::Io { .. }
        | Error::Locked { .. }
        | Error::UnsupportedFormat { .. }
        | Error::NotDataDirectory { .. }
        | Error::Remote(_) => (problem::INTERNAL, "Store error", 500),
        Error::KeyStore(_) => (problem::KEY_STORE, "Personal-data key store error", 500),
        Error::Unsupported(_) => (problem::UNSUPPORTED, "Not supported by this store", 501),
        Error::Upcast {
            event_type,
            version,
            ..
        } => {
            p.event_type = Some(event_type.clone());
            p.version = Some(*version);
            (problem::UPCAST, "An event cannot be upcast", 500)
        }
        // The error enum is open to new variants; one this server does not
        // know yet is an internal error until it is given its own type.
        _ => (problem::INTERNAL, "Store error", 500),
    };
    p.problem_type = kind.to_string();
    p.title = title.to_string();
    p.status = status;
    p
}

/// The names of [`event_store::Limits`] fields, so a limit error keeps its
/// `&'static str` name across the wire.
const LIMIT_NAMES: &[&str] = &[
    "body_bytes_max",
    "event_bytes_max",
    "event_type_bytes_max",
    "events_per_append_max",
    "append_bytes_max",
    "streams_per_append_max",
    "stream_id_bytes_max",
    "read_count_max",
    "snapshot_bytes_max",
];

pub fn error_of(p: Problem) -> Error {
    match p.problem_type.as_str() {
        problem::WRONG_EXPECTED_VERSION => {
            match (
                p.stream.as_deref().map(StreamId::new),
                p.expected,
                p.current,
            ) {
                (Some(Ok(stream)), Some(expected), Some(current)) => Error::WrongExpectedVersion {
                    stream,
                    expected: expected.0,
                    current,
                },
                _ => Error::Remote(p.detail),
            }
        }
        problem::LIMIT_EXCEEDED => {
            let limit = p
                .limit
                .as_deref()
                .and_then(|l| LIMIT_NAMES.iter().find(|n| **n == l))
                .copied()
                .unwrap_or("unknown_limit");
            Error::LimitExceeded {
                limit,
                actual: p.actual.unwrap_or(0),
                max: p.max.unwrap_or(0),
            }
        }
        problem::INVALID_STREAM_ID => Error::InvalidStreamId {
            id: p.stream.unwrap_or_default(),
            reason: p.detail,
        },
        problem::INVALID_REQUEST => Error::InvalidAppend(p.detail),
        problem::INVALID_READ => Error::InvalidRead(p.detail),
        problem::CORRUPTION => Error::Corruption {
            file: p.file.unwrap_or_default().into(),
            offset: p.offset.unwrap_or(0),
            detail: p.detail,
        },
        problem::UPCAST => Error::Upcast {
            event_type: p.event_type.unwrap_or_default(),
            version: p.version.unwrap_or(0),
            detail: p.detail,
        },
        problem::KEY_STORE => Error::KeyStore(p.detail),
        problem::UNSUPPORTED => Error::Unsupported(p.detail),
        problem::UNAVAILABLE => Error::Poisoned(p.detail),
        problem::READ_ONLY => Error::ReadOnly(p.detail),
        problem::OUTCOME_UNKNOWN => Error::Indeterminate(p.detail),
        problem::DIVERGED => Error::Diverged(p.detail),
        problem::EVENT_ID_CONFLICT => match (p.stream.as_deref().map(StreamId::new), p.event_id) {
            (Some(Ok(stream)), Some(event_id)) => {
                Error::EventIdConflict(Box::new(event_store::IdConflict {
                    stream,
                    event_id,
                    detail: p.detail,
                    committed: p.committed,
                }))
            }
            _ => Error::Remote(p.detail),
        },
        problem::CLOSED => Error::Closed,
        _ => Error::Remote(format!("{} ({}): {}", p.title, p.status, p.detail)),
    }
}

/// The result of a multi-stream append.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WireResults {
    #[schema(value_type = Vec<AppendResultSchema>)]
    pub results: Vec<AppendResult>,
}

/// Transactions sent together (`POST /batch`), each committed or refused
/// on its own: one failing leaves the others as they are. A client sends
/// its concurrent appends this way, so that they take one request.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WireBatch {
    pub transactions: Vec<WireTransaction>,
}

/// What became of each transaction of a [`WireBatch`], in its order.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WireBatchResults {
    pub outcomes: Vec<WireOutcome>,
}

/// One transaction's outcome: its results, or the problem that refused it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WireOutcome {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<AppendResultSchema>>)]
    pub results: Option<Vec<AppendResult>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<Problem>,
}

/// One line of an append channel (`POST /appends`, NDJSON): a
/// transaction and the id its caller gave it, which its answer carries.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WireChannelAppend {
    pub id: u64,
    pub appends: Vec<WireStreamAppend>,
}

/// One line of an append channel's answer: a transaction's outcome, under
/// its id (or, for a line that did not parse, its line number, from 1).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WireChannelOutcome {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<AppendResultSchema>>)]
    pub results: Option<Vec<AppendResult>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<Problem>,
}

/// The OpenAPI schema of [`AppendResult`], which the storage crate keeps
/// free of HTTP concerns.
#[derive(Debug, utoipa::ToSchema)]
#[schema(as = AppendResult)]
#[allow(dead_code, reason = "describes the JSON of AppendResult; never built")]
pub struct AppendResultSchema {
    stream_id: String,
    /// Version of the first appended event.
    first_version: u64,
    /// Version of the last appended event: the stream's version after the append.
    last_version: u64,
    first_position: u64,
    last_position: u64,
    /// True when the events had already been committed by an earlier call
    /// (an idempotent retry) and nothing was written this time.
    already_committed: bool,
}

/// The OpenAPI schema of [`event_store::Stats`].
#[derive(Debug, utoipa::ToSchema)]
#[schema(as = Stats)]
#[allow(dead_code, reason = "describes the JSON of Stats; never built")]
pub struct StatsSchema {
    /// Number of committed events.
    events: u64,
    /// Number of streams with at least one event.
    streams: u64,
    /// Number of segment files (sealed plus the active one).
    segments: u64,
    /// Sealed segments among them.
    sealed_segments: u64,
    /// Bytes of all segment files.
    bytes: u64,
    /// Position of the last committed event (0 = empty store).
    head: u64,
    /// Number of streams with a snapshot.
    snapshots: u64,
    /// Bytes of all snapshot files.
    snapshot_bytes: u64,
    /// Stream reads that consulted a sealed segment's bloom filter and skipped it.
    segments_skipped_by_bloom: u64,
    /// Stream reads that had to open a sealed segment's index.
    segments_searched: u64,
    /// Set when the store no longer accepts appends, with the reason.
    read_only_reason: Option<String>,
}

/// One listed stream (`GET /streams`).
#[derive(Debug, utoipa::ToSchema)]
#[schema(as = StreamSummary)]
#[allow(dead_code, reason = "describes the JSON of StreamSummary; never built")]
pub struct StreamSummarySchema {
    stream_id: String,
    /// Its version: the number of its events.
    version: u64,
    /// The position of its last event.
    last_position: u64,
}

/// A page of streams (`GET /streams`).
#[derive(Debug, utoipa::ToSchema)]
#[schema(as = StreamPage)]
#[allow(dead_code, reason = "describes the JSON of StreamPage; never built")]
pub struct StreamPageSchema {
    streams: Vec<StreamSummarySchema>,
    /// How many streams start with the prefix in all.
    matching: u64,
    /// Set when more streams follow: the next page's `after`.
    next_after: Option<String>,
}

/// One category's counts (`GET /categories`).
#[derive(Debug, utoipa::ToSchema)]
#[schema(as = CategoryCount)]
#[allow(dead_code, reason = "describes the JSON of CategoryCount; never built")]
pub struct CategoryCountSchema {
    /// Stream ids up to their first `-`.
    category: String,
    streams: u64,
    events: u64,
}

/// Categories by name (`GET /categories`).
#[derive(Debug, utoipa::ToSchema)]
#[schema(as = CategoryPage)]
#[allow(dead_code, reason = "describes the JSON of CategoryPage; never built")]
pub struct CategoryPageSchema {
    categories: Vec<CategoryCountSchema>,
    /// Set when there were more categories than asked for.
    truncated: bool,
}

/// The media type of a page of events in binary: for each event, its
/// length as a little-endian u32, then its record body as the segment
/// files hold it (`event_store::format::event`: fixed fields, then stream
/// id, type, data and metadata). Pages of `GET /all` come in it when asked
/// for with `Accept`; it costs a fraction of the JSON's encoding and
/// parsing, and the client keeps data and metadata as slices of the
/// answer.
pub const EVENTS_BINARY: &str = "application/vnd.annals.events";

/// Events in [`EVENTS_BINARY`].
pub fn events_to_binary(events: &[RecordedEvent]) -> Result<Vec<u8>> {
    use event_store::format::event::EventRecord;
    let size: usize = events
        .iter()
        .map(|e| {
            64 + e.stream_id.as_str().len() + e.event_type.len() + e.data.len() + e.metadata.len()
        })
        .sum();
    let mut out = Vec::with_capacity(size);
    for e in events {
        let record = EventRecord {
            flags: 0,
            schema_version: e.schema_version,
            position: e.position.0,
            version: e.version,
            timestamp: e.timestamp.0,
            id: *e.id.as_bytes(),
            stream_id: e.stream_id.as_str(),
            event_type: &e.event_type,
            data: &e.data,
            metadata: &e.metadata,
        };
        let too_long = |what: &str| {
            Error::InvalidRead(format!(
                "event {} has a {what} too long for {EVENTS_BINARY}; ask for JSON",
                e.position.0
            ))
        };
        if e.event_type.len() > usize::from(u16::MAX) {
            return Err(too_long("type"));
        }
        let len = u32::try_from(record.body_len()).map_err(|_| too_long("body"))?;
        if u32::try_from(e.data.len()).is_err() || u32::try_from(e.metadata.len()).is_err() {
            return Err(too_long("body"));
        }
        out.extend_from_slice(&len.to_le_bytes());
        record.encode(&mut out);
    }
    Ok(out)
}

/// Events from [`EVENTS_BINARY`]; data and metadata are slices of `body`.
pub fn events_from_binary(body: Bytes) -> Result<Vec<RecordedEvent>> {
    use event_store::format::event::EventRecord;
    let unreadable = |at: usize, why: &str| {
        Error::Remote(format!("unreadable binary events at byte {at}: {why}"))
    };
    let mut events = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let len = body
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| unreadable(at, "a length cut short"))?;
        let start = at + 4;
        let bytes = body
            .get(start..start.saturating_add(len))
            .ok_or_else(|| unreadable(at, "an event cut short"))?;
        let record = EventRecord::decode(bytes).map_err(|why| unreadable(at, &why))?;
        StreamId::new(record.stream_id).map_err(|e| unreadable(at, &e.to_string()))?;
        events.push(record.to_recorded(&body, start));
        at = start + len;
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_versions_round_trip() {
        for e in [
            ExpectedVersion::Any,
            ExpectedVersion::NoStream,
            ExpectedVersion::StreamExists,
            ExpectedVersion::Exact(0),
            ExpectedVersion::Exact(42),
        ] {
            let json = serde_json::to_string(&WireExpected(e)).unwrap();
            let back: WireExpected = serde_json::from_str(&json).unwrap();
            assert_eq!(back.0, e, "{json}");
        }
        assert!(serde_json::from_str::<WireExpected>("\"sometimes\"").is_err());
        assert!(serde_json::from_str::<WireExpected>("-1").is_err());
    }

    #[test]
    fn errors_survive_the_wire() {
        let stream = StreamId::new("order-1").unwrap();
        let errors = [
            Error::WrongExpectedVersion {
                stream: stream.clone(),
                expected: ExpectedVersion::Exact(3),
                current: 5,
            },
            Error::LimitExceeded {
                limit: "event_bytes_max",
                actual: 10,
                max: 5,
            },
            Error::Corruption {
                file: "/data/events/0000000001.seg".into(),
                offset: 77,
                detail: "record checksum mismatch".into(),
            },
            Error::ReadOnly("damaged".into()),
            Error::Closed,
        ];
        for err in errors {
            let p = problem_of(&err);
            let json = serde_json::to_string(&p).unwrap();
            let back = error_of(serde_json::from_str(&json).unwrap());
            assert_eq!(format!("{back:?}"), format!("{err:?}"));
        }
    }

    #[test]
    fn events_round_trip_with_embedded_json() {
        let e = NewEvent::new("Placed", r#"{"total":{"amount":5,"currency":"EUR"}}"#);
        let wire = new_event_to_wire(&e).unwrap();
        let json = serde_json::to_string(&wire).unwrap();
        assert!(json.contains(r#""data":{"total""#), "{json}");
        let back = new_event_from_wire(serde_json::from_str(&json).unwrap());
        assert_eq!(back, e);
    }
    fn recorded(
        n: u64,
        stream: &str,
        event_type: &str,
        data: &str,
        metadata: &str,
    ) -> RecordedEvent {
        RecordedEvent {
            id: Uuid::from_u128(u128::from(n) * 7919),
            stream_id: StreamId::new(stream).unwrap(),
            version: n,
            position: Position(n + 100),
            event_type: event_type.to_owned(),
            schema_version: 3,
            timestamp: Timestamp(1_700_000_000_000_000 + n as i64),
            data: Bytes::from(data.to_owned()),
            metadata: Bytes::from(metadata.to_owned()),
        }
    }

    proptest::proptest! {
        /// Pages round-trip field for field, and a page cut anywhere but
        /// between two events is refused, never read short.
        #[test]
        fn binary_pages_round_trip_and_a_cut_is_refused(
            events in proptest::collection::vec(("[a-z0-9-]{1,20}", "[A-Za-zé]{1,12}", "[ -~é]{0,40}"), 0..12),
            cut in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let events: Vec<RecordedEvent> = events
                .iter()
                .enumerate()
                .map(|(n, (stream, ty, text))| {
                    let data = serde_json::to_string(text).unwrap();
                    recorded(n as u64 + 1, stream, ty, &data, r#"{"correlation_id":"c"}"#)
                })
                .collect();
            let bytes = events_to_binary(&events).unwrap();
            let back = events_from_binary(Bytes::from(bytes.clone())).unwrap();
            proptest::prop_assert_eq!(&back, &events);
            if !bytes.is_empty() {
                let at = cut.index(bytes.len());
                let mut boundaries = vec![0usize];
                for e in &events {
                    let last = *boundaries.last().unwrap();
                    boundaries.push(last + 4 + 60 + e.stream_id.as_str().len() + e.event_type.len() + e.data.len() + e.metadata.len());
                }
                let short = events_from_binary(Bytes::from(bytes[..at].to_vec()));
                if boundaries.contains(&at) {
                    proptest::prop_assert!(short.is_ok());
                } else {
                    proptest::prop_assert!(short.is_err());
                }
            }
        }
    }

    #[test]
    fn a_binary_page_naming_a_bad_stream_is_refused() {
        let mut bytes = events_to_binary(&[recorded(1, "ok", "T", "{}", "{}")]).unwrap();
        // The stream id starts after the length and the fixed fields.
        bytes[4 + 60] = b' ';
        let err = events_from_binary(Bytes::from(bytes)).unwrap_err();
        assert!(err.to_string().contains("byte 0"), "{err}");
    }
}
