//! Snapshots, in their own append-only files (`snapshots/NNNNNNNNNN.snap`):
//! the same 64-byte header and record framing as segments, with snapshot
//! bodies. Only the latest snapshot of each stream is located in memory.
//! A file none of whose snapshots is the latest of its stream any more is
//! deleted, so disk use follows the number of streams, not of saves.
//!
//! Snapshots are a cache of what the events already say: a damaged snapshot
//! is reported (log, `verify`, a corruption error from `load`) and the caller
//! can fall back to replaying the stream; it never takes events with it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::format::frame::{FRAME_HEADER_LEN, Frame, append_frame, read_frame, resync};
use crate::format::header::{FORMAT_VERSION, FileHeader, HEADER_LEN, HeaderError, SNAPSHOT_MAGIC};
use crate::format::snapshot::SnapshotRecord;
use crate::log::fs::{Fs, FsFile};
use crate::log::mmap;
use crate::types::{Snapshot, StreamId, Timestamp};

pub(crate) fn snapshot_file_name(number: u64) -> String {
    format!("{number:010}.snap")
}

#[derive(Debug)]
pub(crate) struct SnapshotStore {
    dir: PathBuf,
    fs: Arc<dyn Fs>,
    file_bytes_max: u64,
    state: Mutex<SnapState>,
}

#[derive(Debug)]
struct SnapState {
    files: BTreeMap<u64, SnapFile>,
    active: u64,
    latest: HashMap<StreamId, Location>,
    failure: Option<String>,
}

#[derive(Debug)]
struct SnapFile {
    path: PathBuf,
    file: Arc<dyn FsFile>,
    len: u64,
    /// Latest snapshots stored in this file.
    live: u64,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Location {
    file: u64,
    offset: u64,
    frame_len: u64,
    version: u64,
}

/// A problem found in snapshot files while opening them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SnapshotDamage {
    pub file: PathBuf,
    pub offset: u64,
    pub detail: String,
}

impl SnapshotStore {
    pub(crate) fn open(
        dir: &Path,
        fs: Arc<dyn Fs>,
        file_bytes_max: u64,
        now: i64,
    ) -> Result<(Self, Vec<SnapshotDamage>)> {
        fs.create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let numbers = snapshot_file_numbers(fs.as_ref(), dir)?;
        let mut state = SnapState {
            files: BTreeMap::new(),
            active: 0,
            latest: HashMap::new(),
            failure: None,
        };
        let mut damage = Vec::new();
        let last = numbers.last().copied();
        for number in numbers {
            let is_last = Some(number) == last;
            open_file(fs.as_ref(), dir, number, is_last, &mut state, &mut damage)?;
        }
        for location in state.latest.values() {
            if let Some(f) = state.files.get_mut(&location.file) {
                f.live += 1;
            }
        }
        for d in &damage {
            tracing::error!(file = %d.file.display(), offset = d.offset, detail = %d.detail, "damaged snapshot ignored; the stream loads from its events");
        }

        let store = Self {
            dir: dir.to_path_buf(),
            fs,
            file_bytes_max,
            state: Mutex::new(state),
        };
        {
            let mut state = store.state.lock();
            if state.files.is_empty() {
                store.start_file(&mut state, 1, now)?;
            }
        }
        Ok((store, damage))
    }

    fn start_file(&self, state: &mut SnapState, number: u64, now: i64) -> Result<()> {
        let path = self.dir.join(snapshot_file_name(number));
        let ctx = |what: &str| format!("{what} {}", path.display());
        let file = self
            .fs
            .create(&path)
            .map_err(|e| Error::io(ctx("creating"), e))?;
        let header = FileHeader {
            magic: SNAPSHOT_MAGIC,
            format_version: FORMAT_VERSION,
            number,
            base_position: 0,
            created: now,
        };
        file.write_all_at(&header.encode(), 0)
            .and_then(|()| file.sync_data())
            .map_err(|e| Error::io(ctx("writing"), e))?;
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| Error::io(ctx("syncing the directory of"), e))?;
        state.files.insert(
            number,
            SnapFile {
                path,
                file,
                len: HEADER_LEN as u64,
                live: 0,
            },
        );
        state.active = number;
        Ok(())
    }

    /// Appends a snapshot durably and makes it the stream's latest unless a
    /// later version is already stored.
    pub(crate) fn save(
        &self,
        stream_id: &StreamId,
        version: u64,
        schema_version: u32,
        state_bytes: &[u8],
        now: i64,
    ) -> Result<()> {
        let mut buf = Vec::with_capacity(
            FRAME_HEADER_LEN + 32 + stream_id.as_str().len() + state_bytes.len(),
        );
        let record = SnapshotRecord {
            schema_version,
            version,
            timestamp: now,
            stream_id: stream_id.as_str(),
            state: state_bytes,
        };
        append_frame(&mut buf, |b| record.encode(b));

        let mut state = self.state.lock();
        if let Some(reason) = &state.failure {
            return Err(Error::Poisoned(reason.clone()));
        }
        let active_len = state.files.get(&state.active).map_or(0, |f| f.len);
        if active_len > HEADER_LEN as u64 && active_len + buf.len() as u64 > self.file_bytes_max {
            let next = state.active + 1;
            if let Err(e) = self.start_file(&mut state, next, now) {
                state.failure = Some(format!("starting a snapshot file failed: {e}"));
                return Err(e);
            }
        }
        let number = state.active;
        let Some(active) = state.files.get_mut(&number) else {
            return Err(Error::Poisoned("no active snapshot file".into()));
        };
        let offset = active.len;
        if let Err(e) = active
            .file
            .write_all_at(&buf, offset)
            .and_then(|()| active.file.sync_data())
        {
            let reason = format!(
                "writing a snapshot to {} failed: {e}; snapshots are refused until the store is reopened",
                active.path.display()
            );
            state.failure = Some(reason.clone());
            return Err(Error::Poisoned(reason));
        }
        active.len += buf.len() as u64;
        active.live += 1;

        let location = Location {
            file: number,
            offset,
            frame_len: buf.len() as u64,
            version,
        };
        let replaced = match state.latest.get(stream_id.as_str()) {
            Some(old) if old.version > version => Some(number),
            Some(old) => {
                let old_file = old.file;
                state.latest.insert(stream_id.clone(), location);
                Some(old_file)
            }
            None => {
                state.latest.insert(stream_id.clone(), location);
                None
            }
        };
        if let Some(file) = replaced
            && let Some(f) = state.files.get_mut(&file)
        {
            f.live = f.live.saturating_sub(1);
        }
        self.remove_dead_files(&mut state);
        Ok(())
    }

    /// Deletes files (other than the active one) that hold no latest snapshot.
    fn remove_dead_files(&self, state: &mut SnapState) {
        let dead: Vec<u64> = state
            .files
            .iter()
            .filter(|(n, f)| **n != state.active && f.live == 0)
            .map(|(n, _)| *n)
            .collect();
        if dead.is_empty() {
            return;
        }
        for number in dead {
            if let Some(f) = state.files.remove(&number)
                && let Err(e) = self.fs.remove(&f.path)
            {
                {
                    tracing::warn!(file = %f.path.display(), error = %e, "could not delete a superseded snapshot file");
                }
            }
        }
        if let Err(e) = self.fs.sync_dir(&self.dir) {
            tracing::warn!(error = %e, "could not sync the snapshot directory after deleting files");
        }
    }

    pub(crate) fn load(&self, stream_id: &StreamId) -> Result<Option<Snapshot>> {
        let (location, file, path) = {
            let state = self.state.lock();
            let Some(location) = state.latest.get(stream_id.as_str()).copied() else {
                return Ok(None);
            };
            let Some(f) = state.files.get(&location.file) else {
                return Ok(None);
            };
            (location, f.file.clone(), f.path.clone())
        };
        let mut buf = vec![0u8; location.frame_len as usize];
        file.read_exact_at(&mut buf, location.offset)
            .map_err(|e| Error::io(format!("reading a snapshot from {}", path.display()), e))?;
        let body = match read_frame(&buf, 0) {
            Frame::Valid { body, .. } => body,
            _ => {
                return Err(Error::corruption(
                    &path,
                    location.offset,
                    "snapshot record checksum mismatch",
                ));
            }
        };
        let record = SnapshotRecord::decode(body)
            .map_err(|detail| Error::corruption(&path, location.offset, detail))?;
        if record.stream_id != stream_id.as_str() || record.version != location.version {
            return Err(Error::corruption(
                &path,
                location.offset,
                "snapshot record is not the one the index located",
            ));
        }
        let state = Bytes::copy_from_slice(record.state);
        Ok(Some(Snapshot {
            stream_id: stream_id.clone(),
            version: record.version,
            schema_version: record.schema_version,
            timestamp: Timestamp(record.timestamp),
            state,
        }))
    }

    /// (streams with a snapshot, bytes of snapshot files)
    pub(crate) fn stats(&self) -> (u64, u64) {
        let state = self.state.lock();
        (
            state.latest.len() as u64,
            state.files.values().map(|f| f.len).sum(),
        )
    }
}

type Found = Vec<(StreamId, Location)>;

/// Scans a snapshot file: intact snapshots, where a torn tail starts, damage.
pub(crate) fn scan_snapshots(
    bytes: &[u8],
    path: &Path,
) -> (Found, Option<u64>, Vec<SnapshotDamage>) {
    let mut found = Vec::new();
    let mut damage = Vec::new();
    let mut off = HEADER_LEN;
    let mut torn = None;
    while off < bytes.len() {
        match read_frame(bytes, off) {
            Frame::Valid { body, frame_len } => {
                match SnapshotRecord::decode(body) {
                    Ok(record) => match StreamId::new(record.stream_id) {
                        Ok(stream) => found.push((
                            stream,
                            Location {
                                file: 0,
                                offset: off as u64,
                                frame_len: frame_len as u64,
                                version: record.version,
                            },
                        )),
                        Err(e) => damage.push(SnapshotDamage {
                            file: path.to_path_buf(),
                            offset: off as u64,
                            detail: e.to_string(),
                        }),
                    },
                    Err(detail) => damage.push(SnapshotDamage {
                        file: path.to_path_buf(),
                        offset: off as u64,
                        detail,
                    }),
                }
                off += frame_len;
            }
            Frame::BadChecksum { frame_len } => {
                damage.push(SnapshotDamage {
                    file: path.to_path_buf(),
                    offset: off as u64,
                    detail: "snapshot record checksum mismatch".into(),
                });
                off += frame_len;
            }
            Frame::BadLength => {
                damage.push(SnapshotDamage {
                    file: path.to_path_buf(),
                    offset: off as u64,
                    detail: "snapshot record length damaged".into(),
                });
                match resync(bytes, off + 1) {
                    Some(next) => off = next,
                    None => break,
                }
            }
            Frame::Truncated | Frame::ZeroTail => {
                torn = Some(off as u64);
                break;
            }
        }
    }
    (found, torn, damage)
}

/// The numbers of the snapshot files in `dir`, in order.
fn snapshot_file_numbers(fs: &dyn Fs, dir: &Path) -> Result<Vec<u64>> {
    let mut numbers = Vec::new();
    for path in fs
        .list(dir)
        .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?
    {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(stem) = name.strip_suffix(".snap")
            && let Ok(n) = stem.parse::<u64>()
        {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// Opens snapshot file `number`: its snapshots become the latest of their
/// streams unless a later one is known; a torn write at the end of the
/// last file is truncated, other damage is collected in `damage`. The last
/// file, if its creation did not complete, is removed.
fn open_file(
    fs: &dyn Fs,
    dir: &Path,
    number: u64,
    is_last: bool,
    state: &mut SnapState,
    damage: &mut Vec<SnapshotDamage>,
) -> Result<()> {
    let path = dir.join(snapshot_file_name(number));
    let file = fs
        .open(&path, is_last)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let bytes = mmap::map_whole_file(file.std_file())
        .map_err(|e| Error::io(format!("mapping {}", path.display()), e))?;
    match FileHeader::decode(&bytes, SNAPSHOT_MAGIC) {
        Ok(_) => {}
        Err(HeaderError::Incomplete) if is_last => {
            drop(bytes);
            drop(file);
            fs.remove(&path)
                .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
            return Ok(());
        }
        Err(HeaderError::NewerFormat(found)) => {
            return Err(Error::UnsupportedFormat {
                path,
                found: u32::from(found),
                supported: u32::from(FORMAT_VERSION),
            });
        }
        Err(e) => {
            damage.push(SnapshotDamage {
                file: path.clone(),
                offset: 0,
                detail: format!("snapshot file header: {e:?}"),
            });
            return Ok(());
        }
    }
    let (found, torn_at, file_damage) = scan_snapshots(&bytes, &path);
    drop(bytes);
    damage.extend(file_damage);
    let mut len = file
        .len()
        .map_err(|e| Error::io(format!("reading the length of {}", path.display()), e))?;
    if let Some(offset) = torn_at {
        if is_last {
            tracing::warn!(file = %path.display(), offset, "truncating a torn snapshot write");
            file.set_len(offset)
                .and_then(|()| file.sync_data())
                .map_err(|e| Error::io(format!("truncating {}", path.display()), e))?;
            len = offset;
        } else {
            damage.push(SnapshotDamage {
                file: path.clone(),
                offset,
                detail: "snapshot file ends inside a record".into(),
            });
        }
    }
    for (stream, location) in found {
        let location = Location {
            file: number,
            ..location
        };
        match state.latest.get(&stream) {
            Some(old) if old.version > location.version => {}
            _ => {
                state.latest.insert(stream, location);
            }
        }
    }
    state.files.insert(
        number,
        SnapFile {
            path,
            file,
            len,
            live: 0,
        },
    );
    state.active = number;
    Ok(())
}
