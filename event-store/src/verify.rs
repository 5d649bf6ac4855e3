//! `verify`: a read-only scan of every file of a data directory that reports
//! every problem it finds, with file and offset, instead of stopping at the
//! first one. It never writes: what it reports as "repaired on open" is left
//! for the next open to repair.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::bloom::BloomFilter;
use crate::format::header::{FileHeader, HeaderError, SEGMENT_MAGIC, SNAPSHOT_MAGIC};
use crate::format::index::IndexView;
use crate::log::recovery::index_from_scan;
use crate::log::scan::scan_segment;
use crate::log::segment::{bloom_file_name, index_file_name, segment_file_name};
use crate::log::snapshots::scan_snapshots;
use crate::log::store::DATA_FORMAT_VERSION;

/// Damage: data that cannot be served as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub file: PathBuf,
    pub offset: u64,
    pub detail: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub segments: u64,
    pub events: u64,
    pub streams: u64,
    pub snapshot_files: u64,
    pub snapshots: u64,
    /// The key store's subjects with a live key, with a destroyed key, and
    /// its spare keys (all 0 without a key store).
    pub key_subjects: u64,
    pub erased_subjects: u64,
    pub spare_keys: u64,
    pub problems: Vec<Problem>,
    /// Findings that lose nothing and that the next open repairs by itself
    /// (a torn unacknowledged tail, a missing index).
    pub notes: Vec<String>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, file: PathBuf, offset: u64, detail: impl Into<String>) {
        self.problems.push(Problem {
            file,
            offset,
            detail: detail.into(),
        });
    }
}

fn read_file(path: &Path) -> std::io::Result<bytes::Bytes> {
    let file = std::fs::File::open(path)?;
    crate::log::mmap::map_whole_file(&file)
}

fn numbered_files(dir: &Path, suffix: &str) -> Result<Vec<u64>> {
    let mut numbers = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(numbers),
        Err(e) => return Err(Error::io(format!("listing {}", dir.display()), e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        let name = entry.file_name();
        if let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_suffix(suffix))
            .and_then(|n| n.parse::<u64>().ok())
        {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// A directory that does not exist, or holds neither a `FORMAT` file nor
/// any segment, is not a data directory: checking it would report a
/// healthy store of nothing, which hides a mistyped path.
fn check_is_data_dir(dir: &Path) -> Result<()> {
    let not_data = |why: &str| Error::NotDataDirectory {
        path: dir.to_path_buf(),
        reason: why.to_owned(),
    };
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(not_data("it is not a directory")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(not_data("it does not exist"));
        }
        Err(e) => return Err(Error::io(format!("reading {}", dir.display()), e)),
    }
    let has_format = dir.join("FORMAT").exists();
    let has_segments = !numbered_files(&dir.join("events"), ".seg")?.is_empty();
    if has_format || has_segments {
        Ok(())
    } else {
        Err(not_data("it holds no FORMAT file and no event segments"))
    }
}

/// Checks every segment, index, bloom filter and snapshot file in `dir`,
/// and the key log of its key store (`keys/`).
pub fn verify(dir: &Path) -> Result<VerifyReport> {
    check_is_data_dir(dir)?;
    let mut report = VerifyReport::default();
    verify_format_file(&mut report, dir)?;
    verify_segments(&mut report, dir)?;
    verify_snapshots(&mut report, dir)?;
    verify_keys(&mut report, &dir.join("keys"));
    Ok(report)
}

/// The `FORMAT` file: a newer layout than this build reads is an error,
/// an unreadable line a problem.
fn verify_format_file(report: &mut VerifyReport, dir: &Path) -> Result<()> {
    let format_path = dir.join("FORMAT");
    if let Ok(text) = std::fs::read_to_string(&format_path) {
        match text
            .trim()
            .strip_prefix("annals-data-format ")
            .and_then(|v| v.parse::<u32>().ok())
        {
            Some(v) if v > DATA_FORMAT_VERSION => {
                return Err(Error::UnsupportedFormat {
                    path: format_path,
                    found: v,
                    supported: DATA_FORMAT_VERSION,
                });
            }
            Some(_) => {}
            None => report.problem(
                format_path,
                0,
                format!("unrecognised format line {:?}", text.trim()),
            ),
        }
    }
    Ok(())
}

/// Every segment in order: headers, records, stream versions, and the
/// index and bloom filter of each sealed one.
fn verify_segments(report: &mut VerifyReport, dir: &Path) -> Result<()> {
    let events_dir = dir.join("events");
    let numbers = numbered_files(&events_dir, ".seg")?;
    let mut expected_base = 1u64;
    let mut versions: HashMap<String, u64> = HashMap::new();
    for (i, &number) in numbers.iter().enumerate() {
        if i > 0 && number != numbers[i - 1] + 1 {
            report.problem(
                events_dir.join(segment_file_name(numbers[i - 1] + 1)),
                0,
                "segment file is missing from the sequence",
            );
        }
        let is_last = i + 1 == numbers.len();
        verify_segment(
            report,
            &events_dir,
            number,
            is_last,
            &mut expected_base,
            &mut versions,
        );
    }
    report.streams = versions.len() as u64;
    Ok(())
}

/// One segment, found where `expected_base` says the log has come to;
/// moves it past the segment's records.
fn verify_segment(
    report: &mut VerifyReport,
    events_dir: &Path,
    number: u64,
    is_last: bool,
    expected_base: &mut u64,
    versions: &mut HashMap<String, u64>,
) {
    let path = events_dir.join(segment_file_name(number));
    report.segments += 1;
    let data = match read_file(&path) {
        Ok(data) => data,
        Err(e) => {
            report.problem(path, 0, format!("cannot read: {e}"));
            return;
        }
    };
    match FileHeader::decode(&data, SEGMENT_MAGIC) {
        Ok(header) => {
            if header.base_position != *expected_base || header.number != number {
                report.problem(path.clone(), 0, format!(
                        "header says segment {} at position {}, expected segment {number} at position {expected_base}",
                        header.number, header.base_position
                    ));
                *expected_base = header.base_position;
            }
        }
        Err(HeaderError::Incomplete) if is_last => {
            report.notes.push(format!(
                "{}: creation did not complete; it is re-created on open",
                path.display()
            ));
            return;
        }
        Err(e) => {
            // The records after a damaged header are still checked, at
            // the positions the previous segment leads to, so that the
            // damage is reported once and the segments after it are
            // judged by what they hold.
            report.problem(path.clone(), 0, format!("segment header: {e:?}"));
        }
    }

    let scan = scan_segment(&data, *expected_base);
    for d in &scan.damage {
        report.problem(path.clone(), d.offset, d.detail.clone());
    }
    if let Some(torn) = &scan.torn {
        if is_last {
            report.notes.push(format!(
                "{}: torn tail of {} bytes ({} records of an unacknowledged batch) at offset {}; dropped on open",
                path.display(),
                torn.bytes,
                torn.records,
                torn.offset
            ));
        } else {
            report.problem(
                path.clone(),
                torn.offset,
                "a sealed segment ends inside a batch",
            );
        }
    }
    for e in &scan.events {
        let previous = versions.get(&e.stream_id).copied().unwrap_or(0);
        if e.version != previous + 1 {
            report.problem(
                path.clone(),
                u64::from(e.offset),
                format!(
                    "stream {} has version {} after version {previous}",
                    e.stream_id, e.version
                ),
            );
        }
        versions.insert(e.stream_id.clone(), e.version);
    }
    report.events += scan.events.len() as u64;

    let index_path = events_dir.join(index_file_name(number));
    let bloom_path = events_dir.join(bloom_file_name(number));
    if is_last {
        if index_path.exists() || bloom_path.exists() {
            report.notes.push(format!(
                "{}: index files beside the active segment are leftovers of an interrupted seal",
                path.display()
            ));
        }
    } else {
        verify_index(
            report,
            &index_path,
            &bloom_path,
            number,
            *expected_base,
            &data,
            &scan,
        );
    }
    *expected_base = scan.next_position;
}

/// The snapshot files: headers and records; a torn write is expected only
/// at the end of the last one.
fn verify_snapshots(report: &mut VerifyReport, dir: &Path) -> Result<()> {
    let snapshot_dir = dir.join("snapshots");
    let snapshot_numbers = numbered_files(&snapshot_dir, ".snap")?;
    for (i, number) in snapshot_numbers.iter().enumerate() {
        let path = snapshot_dir.join(crate::log::snapshots::snapshot_file_name(*number));
        report.snapshot_files += 1;
        let data = match read_file(&path) {
            Ok(data) => data,
            Err(e) => {
                report.problem(path, 0, format!("cannot read: {e}"));
                continue;
            }
        };
        if let Err(e) = FileHeader::decode(&data, SNAPSHOT_MAGIC) {
            report.problem(path, 0, format!("snapshot file header: {e:?}"));
            continue;
        }
        let (found, torn, damage) = scan_snapshots(&data, &path);
        report.snapshots += found.len() as u64;
        for d in damage {
            report.problem(d.file, d.offset, d.detail);
        }
        if let Some(offset) = torn {
            if i + 1 == snapshot_numbers.len() {
                report.notes.push(format!(
                    "{}: torn snapshot write at offset {offset}; dropped on open",
                    path.display()
                ));
            } else {
                report.problems.push(Problem {
                    file: path,
                    offset,
                    detail: "snapshot file ends inside a record".into(),
                });
            }
        }
    }
    Ok(())
}

/// The key log: a record that fails its checksum may be a lost key, which
/// would turn a subject's personal data into garbage rather than an
/// erasure, so it is damage like a bad event.
fn verify_keys(report: &mut VerifyReport, keys_dir: &Path) {
    let file = keys_dir.join(crate::personal::keys::LOG_FILE);
    match crate::personal::keys::check_log(keys_dir) {
        Ok(None) => {}
        Ok(Some(check)) => {
            report.key_subjects = check.live;
            report.erased_subjects = check.erased;
            report.spare_keys = check.spares;
            // Offset 0 is the log's header, never a record: such findings
            // are about the directory (its per-subject key files).
            for (offset, detail) in check.damage {
                report.problems.push(Problem {
                    file: if offset == 0 {
                        keys_dir.to_path_buf()
                    } else {
                        file.clone()
                    },
                    offset,
                    detail,
                });
            }
            for (offset, what) in check.repairs {
                report.notes.push(if offset == 0 {
                    format!("{}: {what} on open", keys_dir.display())
                } else {
                    format!("{} at offset {offset}: {what} on open", file.display())
                });
            }
        }
        Err(e) => report.problems.push(Problem {
            file,
            offset: 0,
            detail: e.to_string(),
        }),
    }
}

fn verify_index(
    report: &mut VerifyReport,
    index_path: &Path,
    bloom_path: &Path,
    number: u64,
    base: u64,
    data: &[u8],
    scan: &crate::log::scan::SegmentScan,
) {
    match read_file(index_path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => report.notes.push(format!(
            "{}: missing; rebuilt from the segment on open",
            index_path.display()
        )),
        Err(e) => report.problem(index_path.to_path_buf(), 0, format!("cannot read: {e}")),
        Ok(bytes) => match IndexView::parse(bytes.clone()) {
            Err(detail) => report.problem(
                index_path.to_path_buf(),
                0,
                format!("{detail}; rebuilt from the segment on open (or, past its header, when first used)"),
            ),
            Ok(_) if scan.damage.is_empty() && scan.torn.is_none() => {
                let expected = index_from_scan(number, base, data.len() as u64, scan);
                if expected[..] != bytes[..] {
                    report.problem(
                        index_path.to_path_buf(),
                        0,
                        "index does not match the segment's records",
                    );
                }
            }
            Ok(_) => {}
        },
    }
    match std::fs::read(bloom_path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => report.notes.push(format!(
            "{}: missing; rebuilt from the index when first used",
            bloom_path.display()
        )),
        Err(e) => report.problem(bloom_path.to_path_buf(), 0, format!("cannot read: {e}")),
        Ok(bytes) => match BloomFilter::decode(bytes::Bytes::from(bytes)) {
            Err(detail) => report.problem(
                bloom_path.to_path_buf(),
                0,
                format!("{detail}; rebuilt when first used"),
            ),
            Ok((bloom, segment)) => {
                if segment != number {
                    report.problem(
                        bloom_path.to_path_buf(),
                        0,
                        format!("bloom filter belongs to segment {segment}"),
                    );
                }
                if let Some(missing) = scan
                    .events
                    .iter()
                    .find(|e| !bloom.may_contain(&e.stream_id))
                {
                    report.problem(
                        bloom_path.to_path_buf(),
                        0,
                        format!("bloom filter misses stream {}", missing.stream_id),
                    );
                }
            }
        },
    }
}
