//! The read paths: one stream (through bloom filters and indexes) and the
//! whole log in position order. Both copy what they need from the shared
//! state under a read lock, then decode from memory maps without any lock.
//! Every decoded record is checksum-verified and checked against what the
//! index promised; a mismatch is corruption, never a skipped event.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::format::event::EventRecord;
use crate::format::frame::FRAME_HEADER_LEN;
use crate::log::segment::{SealedSegment, decode_event_at, decode_record_at};
use crate::log::shared::Inner;
use crate::rules;
use crate::types::{
    Direction, EventView, Position, ReadFrom, RecordedEvent, StreamId, StreamSlice,
};

/// The active segment's part of a read, copied out under the lock.
struct ActivePart {
    map: Bytes,
    durable_len: usize,
    path: PathBuf,
    /// Version of the first offset in `offsets`.
    first_version: u64,
    offsets: Vec<u32>,
}

/// Reads up to `max_count` events of one stream. Damage found on the way
/// makes the store read-only (see [`Inner::note_damage`]).
pub(crate) fn read_stream(
    inner: &Inner,
    stream_id: &StreamId,
    from: ReadFrom,
    direction: Direction,
    max_count: usize,
) -> Result<StreamSlice> {
    inner.note_damage(stream_slice(inner, stream_id, from, direction, max_count))
}

fn stream_slice(
    inner: &Inner,
    stream_id: &StreamId,
    from: ReadFrom,
    direction: Direction,
    max_count: usize,
) -> Result<StreamSlice> {
    check_read_count(inner, max_count)?;
    let plan = match plan_read(inner, stream_id, from, direction, max_count)? {
        Planned::Nothing { stream_version } => {
            return Ok(StreamSlice {
                stream_id: stream_id.clone(),
                events: Vec::new(),
                stream_version,
                is_end: true,
            });
        }
        Planned::Read(plan) => plan,
    };
    let (lo, hi) = (plan.lo, plan.hi);
    let mut events = Vec::with_capacity((hi - lo + 1) as usize);
    let sealed_hi = plan.active.as_ref().map_or(hi, |a| a.first_version - 1);
    if sealed_hi >= lo {
        read_sealed(inner, stream_id, &plan.segments, lo, sealed_hi, &mut events)?;
    }
    if let Some(part) = &plan.active {
        read_active(part, stream_id, lo, hi, &mut events)?;
    }
    check_every_version(inner, stream_id, lo, hi, &events)?;

    let is_end = match direction {
        Direction::Forward => hi == plan.version,
        Direction::Backward => {
            events.reverse();
            lo == 1
        }
    };
    Ok(StreamSlice {
        stream_id: stream_id.clone(),
        events,
        stream_version: plan.version,
        is_end,
    })
}

/// What a stream read will read, decided under the state lock.
enum Planned {
    /// Nothing to read: the stream is empty or the range lies past it.
    Nothing {
        stream_version: u64,
    },
    Read(ReadPlan),
}

/// Versions `lo..=hi` of a stream at `version`, and copies of what locates
/// them, so that decoding runs without the lock.
struct ReadPlan {
    lo: u64,
    hi: u64,
    version: u64,
    active: Option<ActivePart>,
    segments: Vec<Arc<SealedSegment>>,
}

fn plan_read(
    inner: &Inner,
    stream_id: &StreamId,
    from: ReadFrom,
    direction: Direction,
    max_count: usize,
) -> Result<Planned> {
    let st = inner.state.read();
    let Some(stream) = st.stream(stream_id.as_str())? else {
        st.check_tail()?;
        return Ok(Planned::Nothing { stream_version: 0 });
    };
    let version = stream.version;
    let Some((lo, hi)) = rules::stream_read_range(version, from, direction, max_count) else {
        return Ok(Planned::Nothing {
            stream_version: version,
        });
    };
    let damaged = st.read_only.is_some();
    let reaches_end = match direction {
        Direction::Forward => hi == version,
        Direction::Backward => start_is_end(from, version),
    };
    if reaches_end {
        st.check_tail()?;
    }
    let active = st.active.streams.get(stream_id.as_str()).and_then(|a| {
        let first = lo.max(a.first_version);
        // In a damaged segment versions may be missing, so offsets cannot
        // be found by arithmetic: take them all and filter after decoding.
        let (first_version, offsets) = if damaged {
            (a.first_version, a.offsets.clone())
        } else if first <= hi {
            let range = (first - a.first_version) as usize..=(hi - a.first_version) as usize;
            (first, a.offsets[range].to_vec())
        } else {
            return None;
        };
        Some(ActivePart {
            map: st.active.map.clone(),
            durable_len: st.active.durable_len as usize,
            path: st.active.path.clone(),
            first_version,
            offsets,
        })
    });
    let sealed_hi = active.as_ref().map_or(hi, |a| a.first_version - 1);
    let segments: Vec<Arc<SealedSegment>> = if sealed_hi >= lo {
        st.sealed
            .iter()
            .take_while(|s| s.base <= stream.last_position)
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    Ok(Planned::Read(ReadPlan {
        lo,
        hi,
        version,
        active,
        segments,
    }))
}

/// Versions `lo..=need_hi` of a stream from sealed segments, appended to
/// `events` in version order.
fn read_sealed(
    inner: &Inner,
    stream_id: &StreamId,
    segments: &[Arc<SealedSegment>],
    lo: u64,
    mut need_hi: u64,
    events: &mut Vec<RecordedEvent>,
) -> Result<()> {
    // Newest segment first: each one found covers the versions just below
    // what the previous one covered, so the walk stops as soon as `lo` is
    // reached (loading after a snapshot touches few segments).
    let mut pieces: Vec<Vec<RecordedEvent>> = Vec::new();
    for segment in segments.iter().rev() {
        if need_hi < lo {
            break;
        }
        if inner.options.use_bloom_filters
            && segment
                .bloom()
                .is_some_and(|b| !b.may_contain(stream_id.as_str()))
        {
            inner.bloom_skips.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        inner.index_probes.fetch_add(1, Ordering::Relaxed);
        let Some((index, entry)) = segment.find(stream_id.as_str())? else {
            continue;
        };
        if entry.first_version > need_hi {
            continue;
        }
        let a = lo.max(entry.first_version);
        let b = need_hi.min(entry.last_version());
        let mut piece = Vec::with_capacity((b + 1).saturating_sub(a) as usize);
        for v in a..=b {
            let Some(offset) = index.version_offset(&entry, (v - entry.first_version) as u32)
            else {
                return Err(Error::corruption(
                    segment.index_path(),
                    0,
                    format!("the index entry of stream {stream_id} points outside the index"),
                ));
            };
            let (event, _) = decode_event_at(
                &segment.data,
                segment.data.len(),
                offset as usize,
                &segment.path,
            )?;
            if event.stream_id != *stream_id || event.version != v {
                return Err(Error::corruption(
                    &segment.path,
                    u64::from(offset),
                    format!(
                        "index promised {stream_id} version {v}, found {} version {}",
                        event.stream_id, event.version
                    ),
                ));
            }
            piece.push(event);
        }
        pieces.push(piece);
        need_hi = entry.first_version.saturating_sub(1);
    }
    for piece in pieces.into_iter().rev() {
        events.extend(piece);
    }
    Ok(())
}

/// The stream's events in the active segment within `lo..=hi`, appended to
/// `events`.
fn read_active(
    part: &ActivePart,
    stream_id: &StreamId,
    lo: u64,
    hi: u64,
    events: &mut Vec<RecordedEvent>,
) -> Result<()> {
    for offset in &part.offsets {
        let (event, _) =
            decode_event_at(&part.map, part.durable_len, *offset as usize, &part.path)?;
        if event.stream_id != *stream_id {
            return Err(Error::corruption(
                &part.path,
                u64::from(*offset),
                format!(
                    "index promised an event of {stream_id}, found one of {}",
                    event.stream_id
                ),
            ));
        }
        if (lo..=hi).contains(&event.version) {
            events.push(event);
        }
    }
    Ok(())
}

/// Every version from `lo` to `hi` must be there; a hole means records
/// were lost to damage, which is reported where it is.
fn check_every_version(
    inner: &Inner,
    stream_id: &StreamId,
    lo: u64,
    hi: u64,
    events: &[RecordedEvent],
) -> Result<()> {
    for i in 0..=(hi - lo) as usize {
        let expected = lo + i as u64;
        if events.get(i).map(|e| e.version) != Some(expected) {
            let after = i
                .checked_sub(1)
                .map_or(Position::ZERO, |p| events[p].position);
            let before = events.get(i).map(|e| e.position);
            return Err(locate_damage(inner, stream_id, expected, after, before));
        }
    }
    Ok(())
}

/// A read asks for at least one event and at most `read_count_max`.
fn check_read_count(inner: &Inner, max_count: usize) -> Result<()> {
    rules::check_read_count(max_count, &inner.options.limits)
}

fn start_is_end(from: ReadFrom, version: u64) -> bool {
    match from {
        ReadFrom::Start | ReadFrom::End => true,
        ReadFrom::Version(v) => v >= version,
    }
}

/// The error for a version of a stream that no index leads to: reading the
/// positions where it must have been surfaces the damaged record there.
fn locate_damage(
    inner: &Inner,
    stream_id: &StreamId,
    version: u64,
    after: Position,
    before: Option<Position>,
) -> Error {
    let end = before.map_or(u64::MAX, |p| p.0);
    let mut next = after.0 + 1;
    while next < end {
        match read_all(inner, Position(next), inner.options.limits.read_count_max) {
            Err(e) => return e,
            Ok(page) => match page.last() {
                Some(last) => next = last.position.0 + 1,
                None => break,
            },
        }
    }
    Error::corruption(
        inner.events_dir.clone(),
        0,
        format!("version {version} of stream {stream_id} is in no segment"),
    )
}

/// Events from `from` (inclusive) in position order, at most `max_count`.
/// Damage found on the way makes the store read-only.
pub(crate) fn read_all(
    inner: &Inner,
    from: Position,
    max_count: usize,
) -> Result<Vec<RecordedEvent>> {
    inner.note_damage(events_from(inner, from, max_count))
}

fn events_from(inner: &Inner, from: Position, max_count: usize) -> Result<Vec<RecordedEvent>> {
    check_read_count(inner, max_count)?;
    let mut out = Vec::new();
    walk(inner, from, max_count, |record, owner, body_start| {
        out.push(record.to_recorded(owner, body_start));
        ControlFlow::Continue(())
    })?;
    Ok(out)
}

/// Events from `from` (inclusive) in position order, lent to `visit` one
/// at a time until it breaks or the head (as of the call) is reached; the
/// position after the last event visited. Damage found on the way makes
/// the store read-only.
pub(crate) fn scan(
    inner: &Inner,
    from: Position,
    mut visit: impl FnMut(EventView<'_>) -> ControlFlow<()>,
) -> Result<Position> {
    let from = from.max(Position::START);
    let mut broke = false;
    let visited = inner.note_damage(walk(inner, from, usize::MAX, |record, _, _| {
        let flow = visit(record.view());
        broke = flow.is_break();
        flow
    }))?;
    let next = Position(from.0 + visited);
    if !broke {
        // Past the head, as a read from there would: damage found after
        // the last intact record (kept out of the log at open) is an error.
        let past_tail = {
            let st = inner.state.read();
            if next.0 > st.head {
                st.check_tail()
            } else {
                Ok(())
            }
        };
        inner.note_damage(past_tail)?;
    }
    Ok(next)
}

/// Decodes events from `from` in position order, up to `max_count` or the
/// head as of the call, and hands each record to `visit` with the bytes it
/// lies in and where its body starts; the number visited (the one that
/// broke included).
fn walk(
    inner: &Inner,
    from: Position,
    max_count: usize,
    mut visit: impl FnMut(EventRecord<'_>, &Bytes, usize) -> ControlFlow<()>,
) -> Result<u64> {
    let from = from.0.max(1);

    let (head, segments, active_start) = {
        let st = inner.state.read();
        if from > st.head {
            st.check_tail()?;
            return Ok(0);
        }
        let first = st.sealed.partition_point(|s| s.last_position() < from);
        let segments: Vec<Arc<SealedSegment>> = st.sealed[first..].to_vec();
        let active = &st.active;
        let start = from.max(active.base);
        let active_start = (start <= st.head).then(|| {
            (
                active.map.clone(),
                active.durable_len as usize,
                active.path.clone(),
                start,
                active.positions[(start - active.base) as usize],
            )
        });
        (st.head, segments, active_start)
    };

    let wanted = (head - from + 1).min(max_count as u64);
    let mut next = from;
    // The frame's length, and whether `visit` broke.
    let mut take =
        |bytes: &Bytes, limit: usize, offset: usize, path: &std::path::Path, expected| {
            let (record, frame_len) = decode_record_at(bytes, limit, offset, path)?;
            check_position(record.position, expected, path, offset)?;
            let flow = visit(record, bytes, offset + FRAME_HEADER_LEN);
            Ok::<_, Error>((frame_len, flow.is_break()))
        };
    for segment in &segments {
        if next - from == wanted {
            return Ok(next - from);
        }
        let Some(offset) = segment.index()?.position_offset(next - segment.base) else {
            return Err(Error::corruption(
                &segment.path,
                0,
                format!("position {next} is missing from the segment index"),
            ));
        };
        let mut offset = offset as usize;
        while next <= segment.last_position() && next - from < wanted {
            let (frame_len, stop) = take(
                &segment.data,
                segment.data.len(),
                offset,
                &segment.path,
                next,
            )?;
            next += 1;
            if stop {
                return Ok(next - from);
            }
            offset += frame_len;
        }
    }
    if let Some((map, durable_len, path, start, offset)) = active_start {
        if next - from < wanted && next != start {
            return Err(Error::corruption(
                path,
                0,
                format!("the log continues at position {start}, expected {next}"),
            ));
        }
        let mut offset = offset as usize;
        while next - from < wanted {
            let (frame_len, stop) = take(&map, durable_len, offset, &path, next)?;
            next += 1;
            if stop {
                break;
            }
            offset += frame_len;
        }
    }
    Ok(next - from)
}

fn check_position(found: u64, expected: u64, path: &std::path::Path, offset: usize) -> Result<()> {
    if found != expected {
        return Err(Error::corruption(
            path,
            offset as u64,
            format!("record holds position {found} where position {expected} belongs"),
        ));
    }
    Ok(())
}
