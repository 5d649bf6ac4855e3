//! Opening the log: recognising sealed segments, rebuilding lost indexes and
//! bloom filters, and recovering the active segment (torn tail truncated,
//! damage reported).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::header::{FORMAT_VERSION, FileHeader, HEADER_LEN, HeaderError, SEGMENT_MAGIC};
use crate::format::index::{self, IndexView, StreamInput};
use crate::log::fs::{Fs, FsFile};
use crate::log::mmap;
use crate::log::scan::{SegmentScan, scan_segment};
use crate::log::segment::{
    ActiveSegment, ActiveStream, Damage, SealedSegment, StreamMap, Upkeep, bloom_file_name,
    index_file_name, segment_file_name,
};
use crate::log::state::State;
use crate::options::StoreOptions;
use crate::types::StreamId;

/// What opening the log found and did, for logs and `verify`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub sealed_segments: usize,
    /// Indexes found missing or with a damaged header, rebuilt from their
    /// segment's records. (An index damaged past its header is found, and
    /// rebuilt, by the first lookup that needs it; bloom filters are read,
    /// and rebuilt if need be, on first use too.)
    pub indexes_rebuilt: Vec<PathBuf>,
    /// Bytes cut from the end of the active segment (an unacknowledged batch).
    pub torn_bytes_dropped: u64,
    pub torn_records_dropped: usize,
    /// Set when damage was found in the active segment: the store then
    /// serves reads but refuses appends.
    pub read_only_reason: Option<String>,
}

pub(crate) struct Recovered {
    pub state: State,
    pub writer_file: Arc<dyn FsFile>,
    pub report: RecoveryReport,
}

/// Writes a whole new file durably: temporary name, fsync, rename, fsync of
/// the directory. Readers never see a partial file under the final name.
pub(crate) fn write_file_durably(fs: &dyn Fs, dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let ctx = |what: &str| format!("{what} {}", path.display());
    match fs.remove(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(ctx("removing a leftover temporary file for"), e)),
    }
    let file = fs.create(&tmp).map_err(|e| Error::io(ctx("creating"), e))?;
    file.write_all_at(bytes, 0)
        .map_err(|e| Error::io(ctx("writing"), e))?;
    file.sync_data().map_err(|e| Error::io(ctx("syncing"), e))?;
    drop(file);
    fs.rename(&tmp, &path)
        .map_err(|e| Error::io(ctx("renaming into place"), e))?;
    fs.sync_dir(dir)
        .map_err(|e| Error::io(ctx("syncing the directory of"), e))?;
    Ok(())
}

/// Creates a new, empty segment file and makes it durable.
pub(crate) fn create_segment(
    fs: &dyn Fs,
    dir: &Path,
    number: u64,
    base: u64,
    created: i64,
) -> Result<(PathBuf, Arc<dyn FsFile>)> {
    let path = dir.join(segment_file_name(number));
    let ctx = |what: &str| format!("{what} segment {}", path.display());
    let file = fs
        .create(&path)
        .map_err(|e| Error::io(ctx("creating"), e))?;
    let header = FileHeader {
        magic: SEGMENT_MAGIC,
        format_version: FORMAT_VERSION,
        number,
        base_position: base,
        created,
    };
    file.write_all_at(&header.encode(), 0)
        .map_err(|e| Error::io(ctx("writing the header of"), e))?;
    file.sync_data().map_err(|e| Error::io(ctx("syncing"), e))?;
    fs.sync_dir(dir)
        .map_err(|e| Error::io(ctx("syncing the directory of"), e))?;
    Ok((path, file))
}

fn header_error(path: &Path, err: HeaderError) -> Error {
    match err {
        HeaderError::NewerFormat(found) => Error::UnsupportedFormat {
            path: path.to_path_buf(),
            found: u32::from(found),
            supported: u32::from(FORMAT_VERSION),
        },
        HeaderError::Incomplete => Error::corruption(path, 0, "segment header is incomplete"),
        HeaderError::Damaged(detail) => Error::corruption(path, 0, detail),
    }
}

/// Lists the segment numbers in `dir`, removing leftover temporary files.
fn segment_numbers(fs: &dyn Fs, dir: &Path) -> Result<Vec<u64>> {
    let files = fs
        .list(dir)
        .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    let mut numbers = Vec::new();
    for path in files {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(".tmp") {
            fs.remove(&path)
                .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
            continue;
        }
        if let Some(stem) = name.strip_suffix(".seg") {
            let number = stem.parse::<u64>().map_err(|_| {
                Error::corruption(&path, 0, "segment file name is not a segment number")
            })?;
            numbers.push(number);
        }
    }
    numbers.sort_unstable();
    for pair in numbers.windows(2) {
        if pair[1] != pair[0] + 1 {
            return Err(Error::corruption(
                dir.join(segment_file_name(pair[0] + 1)),
                0,
                "segment file is missing from the sequence",
            ));
        }
    }
    Ok(numbers)
}

/// Why a store opened with [`StoreOptions::log_only`] refuses appends.
const LOG_ONLY: &str = "opened to read the log in order only";

pub(crate) fn recover(dir: &Path, options: &StoreOptions) -> Result<Recovered> {
    let fs = options.fs.as_ref();
    fs.create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let numbers = segment_numbers(fs, dir)?;
    let mut report = RecoveryReport::default();

    let mut sealed = Vec::new();
    let mut next_base = 1u64;
    let mut sealed_bytes = 0u64;
    let Some((&last, earlier)) = numbers.split_last() else {
        if options.log_only {
            // Read for what it holds, a directory without a log is a
            // mistake (a wrong path), not a store to start.
            return Err(Error::InvalidOptions(format!(
                "{} holds no event log to read",
                dir.display()
            )));
        }
        let (path, file) = create_segment(fs, dir, 1, 1, options.clock.now().0)?;
        let active = empty_active(1, 1, path, &file, options)?;
        return Ok(Recovered {
            state: State::new(Vec::new(), active, 0, 0, options),
            writer_file: file,
            report,
        });
    };
    let mut sealed_damage: Option<String> = None;
    for &number in earlier {
        let OpenedSealed { segment, damage } =
            open_sealed(fs, dir, number, next_base, options, &mut report)?;
        if sealed_damage.is_none() {
            sealed_damage = damage;
        }
        next_base = segment.base + segment.count;
        sealed_bytes += segment.data.len() as u64;
        sealed.push(Arc::new(segment));
    }
    report.sealed_segments = sealed.len();

    let (active, writer_file, active_damage, damaged_tail) = open_active(
        fs,
        dir,
        last,
        next_base,
        options,
        &mut report,
        // Opened to read, nothing is cut: a torn tail is left for the
        // next ordinary open to truncate.
        sealed_damage.is_some() || options.log_only,
    )?;
    let read_only = sealed_damage
        .or(active_damage)
        .or_else(|| options.log_only.then(|| LOG_ONLY.to_owned()));
    report.read_only_reason = read_only.clone();
    let head = active.base + active.positions.len() as u64 - 1;
    let mut state = State::new(sealed, active, head, sealed_bytes, options);
    state.read_only = read_only;
    state.damaged_tail = damaged_tail;
    state.log_only = options.log_only;
    Ok(Recovered {
        state,
        writer_file,
        report,
    })
}

fn empty_active(
    number: u64,
    base: u64,
    path: PathBuf,
    file: &Arc<dyn FsFile>,
    options: &StoreOptions,
) -> Result<ActiveSegment> {
    let reserve = options.segment_bytes_max + options.limits.append_bytes_max as u64;
    let map = mmap::map_growing_file(file.std_file(), reserve)
        .map_err(|e| Error::io(format!("mapping {}", path.display()), e))?;
    Ok(ActiveSegment {
        number,
        base,
        path,
        map,
        durable_len: HEADER_LEN as u64,
        positions: Vec::new(),
        streams: StreamMap::default(),
    })
}

/// A sealed segment as opening found it, with the damage that makes the
/// store read-only, if any.
struct OpenedSealed {
    segment: SealedSegment,
    damage: Option<String>,
}

/// What a segment's header says, checked against where the segment sits:
/// `Ok(None)` when it is intact and in place, `Ok(Some(why))` when it is
/// damaged (or names another place), so that the segment is read by its
/// index or records instead; an error only for a newer format.
fn check_header(
    path: &Path,
    data: &[u8],
    number: u64,
    expected_base: u64,
) -> Result<Option<String>> {
    match FileHeader::decode(data, SEGMENT_MAGIC) {
        Ok(header) if header.number == number && header.base_position == expected_base => Ok(None),
        Ok(header) => Ok(Some(format!(
            "header says segment {} at position {}, expected segment {number} at position {expected_base}",
            header.number, header.base_position
        ))),
        Err(e @ HeaderError::NewerFormat(_)) => Err(header_error(path, e)),
        Err(HeaderError::Incomplete) => Ok(Some("segment header is incomplete".into())),
        Err(HeaderError::Damaged(detail)) => Ok(Some(format!("segment header: {detail}"))),
    }
}

fn open_sealed(
    fs: &dyn Fs,
    dir: &Path,
    number: u64,
    expected_base: u64,
    options: &StoreOptions,
    report: &mut RecoveryReport,
) -> Result<OpenedSealed> {
    let path = dir.join(segment_file_name(number));
    let file = fs
        .open(&path, false)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let data = mmap::map_whole_file(file.std_file())
        .map_err(|e| Error::io(format!("mapping {}", path.display()), e))?;
    let header_damage = check_header(&path, &data, number, expected_base)?.map(|why| {
        let reason = format!(
            "corruption in {} at offset 0: {why} (run `annals verify`)",
            path.display()
        );
        tracing::error!(%reason, "the store opens read-only");
        reason
    });

    let index_path = dir.join(index_file_name(number));
    let index = match load_index(fs, &index_path, number, expected_base, data.len() as u64) {
        Ok(view) => view,
        // With a damaged header nothing is written: the records (each with
        // its own checksum) are indexed in memory, and the segment is read
        // through that index while the store stays read-only.
        Err(why) if header_damage.is_some() => {
            tracing::warn!(index = %index_path.display(), %why, "indexing a segment with a damaged header in memory");
            index_in_memory(&path, &data, number, expected_base)?
        }
        Err(why) => {
            tracing::warn!(index = %index_path.display(), %why, "rebuilding segment index from the segment data");
            let view = rebuild_index(fs, dir, &path, &data, number, expected_base)?;
            report.indexes_rebuilt.push(index_path.clone());
            // A bloom filter written beside an index we could not trust is not trusted either.
            let _ = fs.remove(&dir.join(bloom_file_name(number)));
            view
        }
    };
    if index.meta().event_count == 0 {
        return Err(Error::corruption(
            &path,
            0,
            "a sealed segment holds no events",
        ));
    }

    let upkeep = Upkeep {
        fs: options.fs.clone(),
        dir: dir.to_path_buf(),
        number,
        bloom_bits_per_stream: options.bloom_bits_per_stream,
        writable: !options.log_only && header_damage.is_none(),
    };
    Ok(OpenedSealed {
        segment: SealedSegment::new(path, expected_base, data, index, upkeep),
        damage: header_damage,
    })
}

fn load_index(
    fs: &dyn Fs,
    path: &Path,
    number: u64,
    base: u64,
    segment_len: u64,
) -> std::result::Result<IndexView, String> {
    let file = fs.open(path, false).map_err(|e| e.to_string())?;
    let bytes = mmap::map_whole_file(file.std_file()).map_err(|e| e.to_string())?;
    let view = IndexView::open(bytes)?;
    let meta = view.meta();
    if meta.segment_number != number
        || meta.base_position != base
        || meta.segment_len != segment_len
    {
        return Err(format!(
            "index describes segment {} at {} of {} bytes, not segment {number} at {base} of {segment_len} bytes",
            meta.segment_number, meta.base_position, meta.segment_len
        ));
    }
    Ok(view)
}

/// Builds index bytes from scanned events.
pub(crate) fn index_from_scan(
    number: u64,
    base: u64,
    segment_len: u64,
    scan: &SegmentScan,
) -> Vec<u8> {
    let positions: Vec<u32> = scan.events.iter().map(|e| e.offset).collect();
    let mut per_stream: HashMap<&str, (u64, Vec<u32>, u32)> = HashMap::new();
    for e in &scan.events {
        let entry = per_stream
            .entry(e.stream_id.as_str())
            .or_insert_with(|| (e.version, Vec::new(), 0));
        entry.1.push(e.offset);
        entry.2 = (e.position - base) as u32;
    }
    let inputs: Vec<StreamInput<'_>> = per_stream
        .iter()
        .map(|(name, (first_version, offsets, last_rel))| StreamInput {
            stream_id: name,
            first_version: *first_version,
            offsets,
            last_rel: *last_rel,
        })
        .collect();
    index::encode(number, base, segment_len, &positions, &inputs)
}

/// The index of a sealed segment, built from its records and kept in
/// memory only.
pub(crate) fn index_in_memory(
    path: &Path,
    data: &[u8],
    number: u64,
    base: u64,
) -> Result<IndexView> {
    let bytes = index_bytes_from_records(path, data, number, base)?;
    IndexView::parse(bytes::Bytes::from(bytes))
        .map_err(|detail| Error::corruption(path, 0, format!("rebuilt index: {detail}")))
}

fn rebuild_index(
    fs: &dyn Fs,
    dir: &Path,
    path: &Path,
    data: &bytes::Bytes,
    number: u64,
    base: u64,
) -> Result<IndexView> {
    let view = index_in_memory(path, data, number, base)?;
    write_file_durably(fs, dir, &index_file_name(number), view.as_bytes())?;
    Ok(view)
}

/// Scans a sealed segment's records into index bytes; a segment whose
/// records are damaged (or end inside a batch) cannot be indexed.
fn index_bytes_from_records(path: &Path, data: &[u8], number: u64, base: u64) -> Result<Vec<u8>> {
    let scan = scan_segment(data, base);
    if let Some(damage) = scan.damage.first() {
        return Err(Error::corruption(
            path,
            damage.offset,
            format!("{}; the segment's index cannot be rebuilt", damage.detail),
        ));
    }
    if let Some(torn) = &scan.torn {
        return Err(Error::corruption(
            path,
            torn.offset,
            "a sealed segment ends inside a batch",
        ));
    }
    check_stream_versions(path, &scan)?;
    Ok(index_from_scan(number, base, data.len() as u64, &scan))
}

/// Within one segment, each stream's versions must be consecutive.
fn check_stream_versions(path: &Path, scan: &SegmentScan) -> Result<()> {
    let mut last: HashMap<&str, u64> = HashMap::new();
    for e in &scan.events {
        if let Some(previous) = last.insert(e.stream_id.as_str(), e.version)
            && e.version != previous + 1
        {
            return Err(Error::corruption(
                path,
                u64::from(e.offset),
                format!(
                    "stream {} has version {} after version {previous}",
                    e.stream_id, e.version
                ),
            ));
        }
    }
    Ok(())
}

/// The active segment as recovery left it: its handle, its file, why the
/// store must stay read-only (if it must) and damage at the end of the log.
type OpenedActive = (
    ActiveSegment,
    Arc<dyn FsFile>,
    Option<String>,
    Option<Damage>,
);

/// Opens the last segment for appending: a torn tail is cut off, damage
/// makes the store read-only. `read_only` says the store is read-only
/// already (damage in a sealed segment): then nothing is written here
/// either, and a torn tail is only left out of what is served.
fn open_active(
    fs: &dyn Fs,
    dir: &Path,
    number: u64,
    expected_base: u64,
    options: &StoreOptions,
    report: &mut RecoveryReport,
    read_only: bool,
) -> Result<OpenedActive> {
    let path = dir.join(segment_file_name(number));
    let file = fs
        .open(&path, true)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let len = file
        .len()
        .map_err(|e| Error::io(format!("reading the length of {}", path.display()), e))?;

    let data = mmap::map_whole_file(file.std_file())
        .map_err(|e| Error::io(format!("mapping {}", path.display()), e))?;
    let header_damage = match FileHeader::decode(&data, SEGMENT_MAGIC) {
        Err(HeaderError::Incomplete) if data.iter().all(|b| *b == 0) || len < HEADER_LEN as u64 => {
            drop(data);
            drop(file);
            return recreate_unfinished(fs, dir, &path, number, expected_base, options);
        }
        // The records keep their own checksums: a damaged header makes the
        // store read-only, and the records are still read at the positions
        // the sealed segments lead to.
        _ => check_header(&path, &data, number, expected_base)?,
    };

    let scan = scan_segment(&data, expected_base);
    drop(data);

    let damage = judge_scan(
        &path,
        file.as_ref(),
        &scan,
        header_damage,
        read_only,
        report,
    )?;
    // Damaged records hide versions, so gaps are expected there (and
    // already reported); appends are refused, so nothing builds on them.
    let damaged = damage.is_some() || !scan.damage.is_empty();
    if !damaged {
        check_stream_versions(&path, &scan)?;
    }
    let (positions, active_streams) = index_active(&scan, expected_base, options);

    // The end of the last whole batch: zeros after it are reserved space,
    // and a torn tail after it was cut off above.
    let durable_len = scan.valid_end;
    let reserve =
        (options.segment_bytes_max.max(durable_len)) + options.limits.append_bytes_max as u64;
    let map = mmap::map_growing_file(file.std_file(), reserve)
        .map_err(|e| Error::io(format!("mapping {}", path.display()), e))?;
    let damaged_tail = damaged_tail(&path, &scan);
    let active = ActiveSegment {
        number,
        base: expected_base,
        path,
        map,
        durable_len,
        positions,
        streams: active_streams,
    };
    Ok((active, file, damage, damaged_tail))
}

/// The crash came while this segment was being created: nothing was ever
/// appended to it. Start it again.
fn recreate_unfinished(
    fs: &dyn Fs,
    dir: &Path,
    path: &Path,
    number: u64,
    expected_base: u64,
    options: &StoreOptions,
) -> Result<OpenedActive> {
    tracing::warn!(segment = %path.display(), "re-creating a segment whose creation did not complete");
    fs.remove(path)
        .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
    let (path, file) = create_segment(fs, dir, number, expected_base, options.clock.now().0)?;
    let active = empty_active(number, expected_base, path, &file, options)?;
    Ok((active, file, None, None))
}

/// Why the active segment makes the store read-only, if it does; a torn
/// tail (an append never acknowledged) is truncated instead, unless the
/// store opens read-only or is damaged already.
fn judge_scan(
    path: &Path,
    file: &dyn FsFile,
    scan: &SegmentScan,
    header_damage: Option<String>,
    read_only: bool,
    report: &mut RecoveryReport,
) -> Result<Option<String>> {
    let mut damage = header_damage.map(|why| {
        let reason = format!(
            "corruption in {} at offset 0: {why} (run `annals verify`)",
            path.display()
        );
        tracing::error!(%reason, "the store opens read-only");
        reason
    });
    if let Some(first) = scan.damage.first().filter(|_| damage.is_none()) {
        let reason = format!(
            "corruption in {} at offset {}: {} ({} damaged region(s); run `annals verify`)",
            path.display(),
            first.offset,
            first.detail,
            scan.damage.len()
        );
        tracing::error!(%reason, "the store opens read-only");
        damage = Some(reason);
    } else if let Some(torn) = scan
        .torn
        .as_ref()
        .filter(|_| !read_only && damage.is_none())
    {
        tracing::warn!(
            segment = %path.display(),
            offset = torn.offset,
            bytes = torn.bytes,
            records = torn.records,
            "truncating a torn tail: an append that was never acknowledged"
        );
        file.set_len(torn.offset)
            .map_err(|e| Error::io(format!("truncating {}", path.display()), e))?;
        file.sync_data()
            .map_err(|e| Error::io(format!("syncing {}", path.display()), e))?;
        report.torn_bytes_dropped = torn.bytes;
        report.torn_records_dropped = torn.records;
    }
    Ok(damage)
}

/// The active segment's in-memory index: the offset of every position and
/// each stream's offsets. Positions lost to damage point at the damaged
/// record so that reading them reports the corruption. That each stream
/// continues here where the sealed segments left it is checked by the
/// reads that cross from one segment to the next, and by `verify`: checking
/// it here would look up every stream of the segment in the sealed ones.
fn index_active(
    scan: &SegmentScan,
    expected_base: u64,
    options: &StoreOptions,
) -> (Vec<u32>, StreamMap<ActiveStream>) {
    let mut positions: Vec<u32> = Vec::with_capacity(scan.events.len());
    let mut active_streams = StreamMap::default();
    let mut next_damage = 0;
    let mut last_damage: Option<u32> = None;
    for e in &scan.events {
        while next_damage < scan.damage.len()
            && scan.damage[next_damage].offset < u64::from(e.offset)
        {
            last_damage = Some(scan.damage[next_damage].offset as u32);
            next_damage += 1;
        }
        while (positions.len() as u64) < e.position - expected_base {
            positions.push(last_damage.unwrap_or(e.offset));
        }
        positions.push(e.offset);
        // Without stream lookups nothing reads a stream by itself, so the
        // active segment's streams are not indexed either: that index
        // grows with the segment, up to hundreds of MB for a full one.
        if options.log_only {
            continue;
        }
        let stream = active_streams
            .entry(StreamId::from_stored(&e.stream_id))
            .or_insert_with(|| ActiveStream {
                first_version: e.version,
                version: e.version,
                offsets: Vec::new(),
                last_position: e.position,
            });
        stream.offsets.push(e.offset);
        stream.version = e.version;
        stream.last_position = e.position;
    }
    (positions, active_streams)
}

/// Damage after the last intact record: records there are lost, and an
/// append must not build on them.
fn damaged_tail(path: &Path, scan: &SegmentScan) -> Option<Damage> {
    let last_intact = scan.events.last().map_or(0, |e| u64::from(e.offset));
    scan.damage
        .iter()
        .find(|d| d.offset > last_intact)
        .map(|d| Damage {
            file: path.to_path_buf(),
            offset: d.offset,
            detail: format!("{}; records after the last intact one are lost", d.detail),
        })
}
