//! An online copy of a data directory's store: what `annals backup` and
//! `annals restore` do, while the store's process runs on (or not).
//!
//! The copy is what a crash at one instant could have left, so the store's
//! own recovery makes it whole on open:
//!
//! 1. The snapshot files first: a snapshot names a stream version that was
//!    durable when it was saved, so every snapshot copied refers to events
//!    the segments copied next hold.
//! 2. The sealed segments with their indexes and bloom filters: they never
//!    change once sealed.
//! 3. The newest segment, read once (a read never faults on a file being
//!    truncated, as a map could) and cut at the end of the intact records
//!    it had then: every event acknowledged before the copy began is in
//!    that prefix, because an acknowledged append was written before its
//!    acknowledgement. Bytes the writer was writing while they were read
//!    can look torn, or like damage where a page was read before the one
//!    ahead of it was written; the copy stops at the first such place, and
//!    recovery drops the incomplete batch it may leave.
//! 4. The key log last, so that every key an event copied was sealed under
//!    is in it (a key is durable before any event that uses it).
//!
//! Left out: `LOCK` files, the view database (rebuilt from the log), the
//! key store's subject index (a cache rebuilt on open), the audit log.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::header::{FileHeader, HEADER_LEN, SEGMENT_MAGIC};
use crate::log::scan::scan_segment;

/// What a copy holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Copied {
    /// Segment files copied (sealed ones and the newest).
    pub segments: u64,
    pub snapshot_files: u64,
    /// Bytes written to the copy.
    pub bytes: u64,
    /// Events in the copy's newest segment whose records were intact, up to
    /// this position (recovery may still drop an incomplete last batch).
    pub position: u64,
}

/// Files at the top of a data directory that belong with its store.
const TOP_FILES: [&str; 2] = ["FORMAT", "api-keys.jsonl"];
/// Files of the key store that are not copied: its lock, and the subject
/// index (a cache recovery rebuilds).
const KEY_FILES_SKIPPED: [&str; 2] = ["LOCK", "subjects.idx"];

/// About how many bytes [`copy_store`] of `from` reads: for a progress
/// bar (the newest segment counts with the space reserved after its
/// records, which is not copied).
pub fn store_bytes(from: &Path) -> u64 {
    ["events", "snapshots", "keys"]
        .iter()
        .filter_map(|sub| fs::read_dir(from.join(sub)).ok())
        .flatten()
        .filter_map(|entry| entry.ok()?.metadata().ok())
        .filter(|meta| meta.is_file())
        .map(|meta| meta.len())
        .sum()
}

/// Copies the store of data directory `from` into `to`, which must not
/// exist or be empty; every file and directory written is synced.
/// `progress` is called with the bytes read so far.
pub fn copy_store(from: &Path, to: &Path, progress: &mut dyn FnMut(u64)) -> Result<Copied> {
    if !from.join("events").is_dir() {
        return Err(Error::InvalidOptions(format!(
            "{} holds no event log (no events/ directory)",
            from.display()
        )));
    }
    prepare_empty(to)?;
    let mut copy = Copy {
        progress,
        copied: Copied::default(),
        read: 0,
    };
    for name in TOP_FILES {
        let source = from.join(name);
        if source.is_file() {
            copy.file(&source, &to.join(name))?;
        }
    }
    copy.snapshots(&from.join("snapshots"), &to.join("snapshots"))?;
    copy.segments(&from.join("events"), &to.join("events"))?;
    copy.keys(&from.join("keys"), &to.join("keys"))?;
    sync_dir(to)?;
    Ok(copy.copied)
}

struct Copy<'a> {
    progress: &'a mut dyn FnMut(u64),
    copied: Copied,
    read: u64,
}

impl Copy<'_> {
    /// Copies a file whole; `false` when it is gone (a snapshot file the
    /// store deleted meanwhile).
    fn file(&mut self, from: &Path, to: &Path) -> Result<bool> {
        let mut source = match File::open(from) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io(format!("opening {}", from.display()), e)),
        };
        let mut target = create(to)?;
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let n = source
                .read(&mut buffer)
                .map_err(|e| Error::io(format!("reading {}", from.display()), e))?;
            if n == 0 {
                break;
            }
            target
                .write_all(&buffer[..n])
                .map_err(|e| Error::io(format!("writing {}", to.display()), e))?;
            self.advance(n as u64);
        }
        finish(target, to)?;
        Ok(true)
    }

    fn advance(&mut self, read: u64) {
        self.read += read;
        self.copied.bytes += read;
        (self.progress)(self.read);
    }

    fn snapshots(&mut self, from: &Path, to: &Path) -> Result<()> {
        if !from.is_dir() {
            return Ok(());
        }
        create_dir(to)?;
        for source in files_in(from)? {
            if has_extension(&source, "snap") && self.file(&source, &to.join(file_name(&source)))? {
                self.copied.snapshot_files += 1;
            }
        }
        sync_dir(to)
    }

    fn segments(&mut self, from: &Path, to: &Path) -> Result<()> {
        create_dir(to)?;
        let mut numbers: Vec<(u64, PathBuf)> = files_in(from)?
            .into_iter()
            .filter(|path| has_extension(path, "seg"))
            .filter_map(|path| {
                let number = path.file_stem()?.to_str()?.parse().ok()?;
                Some((number, path))
            })
            .collect();
        numbers.sort_unstable();
        let Some(((_, newest), sealed)) = numbers.split_last() else {
            return Err(Error::InvalidOptions(format!(
                "{} holds no segment file",
                from.display()
            )));
        };
        for (_, segment) in sealed {
            self.file(segment, &to.join(file_name(segment)))?;
            for extension in ["idx", "bloom"] {
                let side = segment.with_extension(extension);
                // Missing or damaged, recovery rebuilds it from the segment.
                self.file(&side, &to.join(file_name(&side)))?;
            }
            self.copied.segments += 1;
        }
        self.newest_segment(newest, &to.join(file_name(newest)))?;
        self.copied.segments += 1;
        sync_dir(to)
    }

    /// The newest segment up to the end of its intact records.
    fn newest_segment(&mut self, from: &Path, to: &Path) -> Result<()> {
        let mut bytes = Vec::new();
        File::open(from)
            .and_then(|mut file| file.read_to_end(&mut bytes))
            .map_err(|e| Error::io(format!("reading {}", from.display()), e))?;
        self.read += bytes.len() as u64;
        (self.progress)(self.read);
        let header = FileHeader::decode(&bytes, SEGMENT_MAGIC).map_err(|e| {
            Error::corruption(
                from,
                0,
                format!("the newest segment's header cannot be read ({e:?}); if it was being created, try again"),
            )
        })?;
        let scan = scan_segment(&bytes, header.base_position);
        let first_damage = scan.damage.first().map_or(u64::MAX, |d| d.offset);
        let intact = scan.valid_end.min(first_damage).max(HEADER_LEN as u64) as usize;
        // Scanned again up to there, the end is that of the last whole
        // batch (a cut inside one is a torn tail).
        let whole = scan_segment(&bytes[..intact], header.base_position);
        let end = whole.valid_end as usize;
        self.copied.position = whole.next_position.saturating_sub(1);
        let mut target = create(to)?;
        target
            .write_all(&bytes[..end])
            .map_err(|e| Error::io(format!("writing {}", to.display()), e))?;
        self.copied.bytes += end as u64;
        finish(target, to)
    }

    fn keys(&mut self, from: &Path, to: &Path) -> Result<()> {
        if !from.is_dir() {
            return Ok(());
        }
        create_dir(to)?;
        for source in files_in(from)? {
            let name = file_name(&source);
            if KEY_FILES_SKIPPED.contains(&name) || name.ends_with(".tmp") {
                continue;
            }
            self.file(&source, &to.join(name))?;
        }
        sync_dir(to)
    }
}

/// `to` made ready to receive a copy: created, or found empty.
fn prepare_empty(to: &Path) -> Result<()> {
    match fs::read_dir(to) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::InvalidOptions(format!(
                    "{} is not empty: a copy goes into a new or empty directory, never over files",
                    to.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(to)
                .map_err(|e| Error::io(format!("creating {}", to.display()), e))?;
            if let Some(parent) = to.parent() {
                sync_dir(parent)?;
            }
            Ok(())
        }
        Err(e) => Err(Error::io(format!("reading {}", to.display()), e)),
    }
}

fn files_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
        .map(|entry| entry.path())
        .collect();
    files.sort();
    Ok(files)
}

fn has_extension(path: &Path, extension: &str) -> bool {
    path.extension().is_some_and(|e| e == extension)
}

fn file_name(path: &Path) -> &str {
    path.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
}

fn create(path: &Path) -> Result<File> {
    File::create_new(path).map_err(|e| Error::io(format!("creating {}", path.display()), e))
}

fn create_dir(path: &Path) -> Result<()> {
    fs::create_dir(path).map_err(|e| Error::io(format!("creating {}", path.display()), e))
}

fn finish(file: File, path: &Path) -> Result<()> {
    file.sync_all()
        .map_err(|e| Error::io(format!("syncing {}", path.display()), e))
}

fn sync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| Error::io(format!("syncing {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventStore, ExpectedVersion, NewEvent, Store, StoreOptions, StreamId};

    fn event(i: u64) -> NewEvent {
        NewEvent::json("Noted", &serde_json::json!({ "n": i })).unwrap()
    }

    #[tokio::test]
    async fn a_copy_of_a_running_store_opens_with_every_event() {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            segment_bytes_max: 4096,
            ..StoreOptions::default()
        };
        let store = Store::open(from.path(), options.clone()).await.unwrap();
        let stream = StreamId::new("note-1").unwrap();
        for i in 0..120 {
            store
                .append(&stream, ExpectedVersion::Any, vec![event(i)])
                .await
                .unwrap();
        }
        store
            .save_snapshot(&stream, 120, 1, bytes::Bytes::from_static(b"state"))
            .await
            .unwrap();
        let target = to.path().join("copy");
        let mut seen = 0;
        let copied = copy_store(from.path(), &target, &mut |read| seen = read).unwrap();
        assert!(copied.segments > 1, "{copied:?}");
        assert_eq!(copied.position, 120);
        assert_eq!(copied.snapshot_files, 1);
        assert!(seen > 0);
        store.close().await.unwrap();

        let copy = Store::open(&target, options).await.unwrap();
        let slice = copy
            .read_stream(
                &stream,
                crate::ReadFrom::Start,
                crate::Direction::Forward,
                1000,
            )
            .await
            .unwrap();
        assert_eq!(slice.events.len(), 120);
        assert_eq!(
            copy.load_snapshot(&stream).await.unwrap().unwrap().version,
            120
        );
        copy.close().await.unwrap();
        assert!(crate::verify(&target).unwrap().is_ok());
    }

    #[test]
    fn a_copy_goes_into_an_empty_directory_only() {
        let from = tempfile::tempdir().unwrap();
        fs::create_dir(from.path().join("events")).unwrap();
        let to = tempfile::tempdir().unwrap();
        fs::write(to.path().join("something"), b"x").unwrap();
        let err = copy_store(from.path(), to.path(), &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
        let err = copy_store(to.path(), &to.path().join("new"), &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("no event log"), "{err}");
    }

    #[test]
    fn the_newest_segment_is_cut_where_its_records_stop_being_intact() {
        use crate::log::scan::tests::segment_with_batches;
        let from = tempfile::tempdir().unwrap();
        let events = from.path().join("events");
        fs::create_dir(&events).unwrap();
        let (mut bytes, ends) = segment_with_batches(1, &[1, 2, 1]);
        // The second batch's second record half-written, then zeros (a
        // page read before the writer reached it), then bytes again.
        let torn_at = ends[1] - 10;
        let cut = bytes.len();
        bytes[torn_at..cut].fill(0);
        bytes.extend_from_slice(&[7u8; 100]);
        fs::write(events.join("0000000001.seg"), &bytes).unwrap();
        let to = tempfile::tempdir().unwrap();
        let target = to.path().join("copy");
        let copied = copy_store(from.path(), &target, &mut |_| {}).unwrap();
        let written = fs::read(target.join("events/0000000001.seg")).unwrap();
        assert!(written.len() <= torn_at, "{} > {torn_at}", written.len());
        assert_eq!(copied.position, 1);
    }
}
