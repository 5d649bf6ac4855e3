//! The rules every store applies to an append, whatever keeps its
//! events: what a well-formed append is ([`validate`]), and how expected
//! versions and event ids decide between writing, answering a retry with
//! the events it committed before, and refusing ([`plan`]). The segment
//! store's writer and the PostgreSQL store both decide through here, so
//! that they cannot differ.

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::options::{Limits, check_limit};
use crate::types::{
    AppendResult, Direction, ExpectedVersion, NewEvent, ReadFrom, RecordedEvent, StreamAppend,
    StreamId,
};

/// What a store knows of a stream while it decides an append: its durable
/// events plus those of appends decided before in the same commit.
pub trait Lookup {
    /// The stream's version (0 when it has no events).
    fn current_version(&self, stream_id: &StreamId) -> Result<u64>;

    /// The ids of the stream's events at versions `first ..= last` when
    /// they are cheap to tell (without decoding the events); `None` sends
    /// the check to [`Lookup::stored`].
    fn ids(&self, stream_id: &StreamId, first: u64, last: u64) -> Option<Vec<Uuid>> {
        let _ = (stream_id, first, last);
        None
    }

    /// The stream's events at versions `first ..= last` (those it has).
    fn stored(&self, stream_id: &StreamId, first: u64, last: u64) -> Result<Vec<RecordedEvent>>;
}

/// What to do with an append.
#[derive(Debug)]
pub enum Plan {
    /// New events, each stream's after the version given (in append order).
    Write(Vec<u64>),
    /// Every event was committed before: answer with where they are.
    AlreadyCommitted(Vec<AppendResult>),
}

/// One stream's part of an append, against what the stream holds.
enum Check {
    /// New events after the stream's current version.
    Write(u64),
    /// Its events are committed, ids and content alike.
    Replay(AppendResult),
    /// Its ids are committed, with other content (the first such id).
    OtherContent(AppendResult, Uuid),
}

/// The same event, byte for byte: what a retry sends again.
fn same_content(stored: &RecordedEvent, new: &NewEvent) -> bool {
    stored.event_type == new.event_type
        && stored.schema_version == new.schema_version
        && stored.data == new.data
        && stored.metadata == new.metadata
}

fn id_conflict(
    append: &StreamAppend,
    event_id: Uuid,
    detail: String,
    committed: Option<Vec<AppendResult>>,
) -> Error {
    Error::EventIdConflict(Box::new(crate::error::IdConflict {
        stream: append.stream_id.clone(),
        event_id,
        detail,
        committed,
    }))
}

/// Checks every stream's expected version against what `lookup` says the
/// stream holds (its durable events and those of appends decided before
/// in the same commit), and the append's event ids against the events
/// where a retry of it would be.
pub fn plan(appends: &[StreamAppend], lookup: &impl Lookup) -> Result<Plan> {
    let mut outcomes = Vec::with_capacity(appends.len());
    for append in appends {
        outcomes.push(check(append, lookup)?);
    }
    let committed = || {
        outcomes
            .iter()
            .filter_map(|o| match o {
                Check::Replay(r) | Check::OtherContent(r, _) => Some(r.clone()),
                Check::Write(_) => None,
            })
            .collect::<Vec<_>>()
    };
    let differing = outcomes.iter().zip(appends).find_map(|(o, a)| match o {
        Check::OtherContent(r, id) => Some((a, r.first_version, *id)),
        _ => None,
    });
    let writes = outcomes
        .iter()
        .filter(|o| matches!(o, Check::Write(_)))
        .count();
    if writes == 0 {
        return match differing {
            None => Ok(Plan::AlreadyCommitted(committed())),
            Some((append, version, id)) => Err(id_conflict(
                append,
                id,
                format!(
                    "the stream holds this id at version {version} or after, with other content"
                ),
                Some(committed()),
            )),
        };
    }
    if writes < appends.len() {
        // Part of a multi-stream append is already committed and part is
        // not: this cannot be a retry of one atomic append, and writing it
        // would duplicate the committed part.
        let (append, _) = appends
            .iter()
            .zip(&outcomes)
            .find(|(_, o)| !matches!(o, Check::Write(_)))
            .ok_or_else(|| Error::InvalidAppend("no committed part".into()))?;
        let id = append.events.first().map(|e| e.id).unwrap_or_default();
        return Err(id_conflict(
            append,
            id,
            "this stream's part of a multi-stream append is already committed and another \
             part is not, so it is no retry of one atomic append"
                .into(),
            None,
        ));
    }
    let currents = outcomes
        .iter()
        .map(|o| match o {
            Check::Write(current) => *current,
            Check::Replay(_) | Check::OtherContent(..) => 0,
        })
        .collect();
    Ok(Plan::Write(currents))
}

/// The versions `first ..= last` a retry of `append` would have taken in
/// a stream now at `current` (none when `first > last`): those its
/// expected version names, or, with none to anchor on, the stream's
/// latest. An admitted exact version names versions not yet written.
/// [`plan`] asks the [`Lookup`] about these versions only.
pub fn retry_range(append: &StreamAppend, current: u64) -> (u64, u64) {
    let count = append.events.len() as u64;
    match append.expected {
        ExpectedVersion::Exact(v) if !append.expected.admits(current) => {
            (v + 1, (v + count).min(current))
        }
        ExpectedVersion::NoStream if current > 0 => (1, count.min(current)),
        ExpectedVersion::Any | ExpectedVersion::StreamExists if current > 0 => {
            (current.saturating_sub(count) + 1, current)
        }
        _ => (1, 0),
    }
}

/// Where one stream's events of an append stand: a retry of events
/// committed before (with the same content or not), or new events.
fn check(append: &StreamAppend, lookup: &impl Lookup) -> Result<Check> {
    let current = lookup.current_version(&append.stream_id)?;
    let admitted = append.expected.admits(current);
    let wrong_version = || Error::WrongExpectedVersion {
        stream: append.stream_id.clone(),
        expected: append.expected,
        current,
    };
    let (first, last) = retry_range(append, current);
    if first > last {
        return if admitted {
            Ok(Check::Write(current))
        } else {
            Err(wrong_version())
        };
    }
    // Most appends reuse none of the ids where a retry of theirs would
    // be: told from the ids alone, without decoding those events.
    if let Some(ids) = lookup.ids(&append.stream_id, first, last)
        && !append.events.iter().any(|e| ids.contains(&e.id))
    {
        return if admitted {
            Ok(Check::Write(current))
        } else {
            Err(wrong_version())
        };
    }
    let stored = lookup.stored(&append.stream_id, first, last)?;
    let whole = stored.len() == append.events.len()
        && stored.iter().zip(&append.events).all(|(s, e)| s.id == e.id);
    if whole {
        let result = AppendResult {
            stream_id: append.stream_id.clone(),
            first_version: stored[0].version,
            last_version: stored[stored.len() - 1].version,
            first_position: stored[0].position,
            last_position: stored[stored.len() - 1].position,
            already_committed: true,
        };
        return Ok(
            match stored
                .iter()
                .zip(&append.events)
                .find(|(s, e)| !same_content(s, e))
            {
                None => Check::Replay(result),
                Some((_, e)) => Check::OtherContent(result, e.id),
            },
        );
    }
    if let Some((event, s)) = append
        .events
        .iter()
        .find_map(|e| stored.iter().find(|s| s.id == e.id).map(|s| (e, s)))
    {
        return Err(id_conflict(
            append,
            event.id,
            format!(
                "the stream holds this id at version {}, and the append is no retry of the \
                 events there",
                s.version
            ),
            None,
        ));
    }
    if admitted {
        Ok(Check::Write(current))
    } else {
        Err(wrong_version())
    }
}

/// Checks everything about an append that does not depend on the
/// streams' state (shape, sizes, limits, JSON, unique ids), so that a
/// store only has to check versions; returns the bytes it takes in the
/// log's record format, which `append_bytes_max` bounds on every store.
pub fn validate(appends: &[StreamAppend], limits: &Limits) -> Result<usize> {
    if appends.is_empty() {
        return Err(Error::InvalidAppend("no streams to append to".into()));
    }
    check_limit(
        "streams_per_append_max",
        appends.len(),
        limits.streams_per_append_max,
    )?;
    let mut total = 0usize;
    for (i, append) in appends.iter().enumerate() {
        if appends[..i].iter().any(|a| a.stream_id == append.stream_id) {
            return Err(Error::InvalidAppend(format!(
                "stream {} appears twice in one append",
                append.stream_id
            )));
        }
        check_limit(
            "stream_id_bytes_max",
            append.stream_id.as_str().len(),
            limits.stream_id_bytes_max,
        )?;
        if append.events.is_empty() {
            return Err(Error::InvalidAppend(format!(
                "no events for stream {}",
                append.stream_id
            )));
        }
        total += append.events.len();
        for event in &append.events {
            validate_event(event, limits)?;
        }
    }
    check_limit("events_per_append_max", total, limits.events_per_append_max)?;
    check_unique_ids(appends)?;
    let bytes = crate::format::event::appends_len(appends);
    check_limit("append_bytes_max", bytes, limits.append_bytes_max)?;
    Ok(bytes)
}

/// An event id names one event: the same id twice in one append is a
/// mistake of the caller, refused before anything is written.
fn check_unique_ids(appends: &[StreamAppend]) -> Result<()> {
    let mut ids: Vec<(uuid::Uuid, &StreamId)> = appends
        .iter()
        .flat_map(|a| a.events.iter().map(move |e| (e.id, &a.stream_id)))
        .collect();
    if ids.len() < 2 {
        return Ok(());
    }
    ids.sort_unstable_by_key(|(id, _)| *id);
    match ids.windows(2).find(|w| w[0].0 == w[1].0) {
        Some(w) => Err(Error::InvalidAppend(format!(
            "event id {} appears twice in one append (streams {} and {})",
            w[0].0, w[0].1, w[1].1
        ))),
        None => Ok(()),
    }
}

fn validate_event(event: &NewEvent, limits: &Limits) -> Result<()> {
    if event.event_type.is_empty() {
        return Err(Error::InvalidAppend(
            "an event type must not be empty".into(),
        ));
    }
    check_limit(
        "event_type_bytes_max",
        event.event_type.len(),
        limits.event_type_bytes_max,
    )?;
    if event.event_type.chars().any(char::is_control) {
        return Err(Error::InvalidAppend(format!(
            "event type {:?} contains control characters",
            event.event_type
        )));
    }
    check_limit(
        "event_bytes_max",
        event.data.len() + event.metadata.len(),
        limits.event_bytes_max,
    )?;
    if serde_json::from_slice::<serde::de::IgnoredAny>(&event.data).is_err() {
        return Err(Error::InvalidAppend(format!(
            "data of event {} ({}) is not valid JSON",
            event.id, event.event_type
        )));
    }
    if !event.metadata.is_empty()
        && serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&event.metadata)
            .is_err()
    {
        return Err(Error::InvalidAppend(format!(
            "metadata of event {} ({}) is not a JSON object",
            event.id, event.event_type
        )));
    }
    Ok(())
}

/// The versions `lo ..= hi` a read of a stream at `version` returns, or
/// `None` when it returns nothing. Every store reads a stream this way.
pub fn stream_read_range(
    version: u64,
    from: ReadFrom,
    direction: Direction,
    max_count: usize,
) -> Option<(u64, u64)> {
    let span = max_count as u64 - 1;
    match direction {
        Direction::Forward => {
            let start = match from {
                ReadFrom::Start => 1,
                ReadFrom::End => version,
                ReadFrom::Version(v) => v.max(1),
            };
            (start <= version).then(|| (start, version.min(start.saturating_add(span))))
        }
        Direction::Backward => {
            let start = match from {
                ReadFrom::Start | ReadFrom::End => version,
                ReadFrom::Version(v) => v.min(version),
            };
            (start != 0).then(|| (start.saturating_sub(span).max(1), start))
        }
    }
}

/// A read's `max_count`: at least 1, at most `read_count_max`.
pub fn check_read_count(max_count: usize, limits: &Limits) -> Result<()> {
    if max_count == 0 {
        return Err(Error::InvalidRead("max_count must be at least 1".into()));
    }
    check_limit("read_count_max", max_count, limits.read_count_max)
}

/// A snapshot's state: at most `snapshot_bytes_max` bytes.
pub fn check_snapshot_size(state_len: usize, limits: &Limits) -> Result<()> {
    check_limit("snapshot_bytes_max", state_len, limits.snapshot_bytes_max)
}
