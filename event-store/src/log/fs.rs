//! The filesystem, behind a small trait so that tests can inject I/O errors
//! and simulate power loss (unsynced writes dropped) without luck.
//!
//! The store only ever appends to files (into space it reserved ahead for
//! segments), writes whole new files under a temporary name and renames
//! them, truncates a torn tail during recovery, and removes leftovers. That
//! is all the trait offers.

use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rustix::fs::FallocateFlags;
use rustix::io::Errno;

/// The operations the store performs on directories.
pub trait Fs: Send + Sync + fmt::Debug + 'static {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Paths of the regular files in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// Creates a new file for reading and writing; fails if it exists.
    fn create(&self, path: &Path) -> io::Result<Arc<dyn FsFile>>;
    fn open(&self, path: &Path, writable: bool) -> io::Result<Arc<dyn FsFile>>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (created, renamed, removed files) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The operations the store performs on an open file.
pub trait FsFile: Send + Sync + fmt::Debug {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// `fdatasync`: the written bytes (and the length) are durable.
    fn sync_data(&self) -> io::Result<()>;
    fn len(&self) -> io::Result<u64>;
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// The whole file (key logs, bloom filters: small files read once).
    fn read_all(&self) -> io::Result<Vec<u8>> {
        let len = usize::try_from(self.len()?)
            .map_err(|_| io::Error::new(io::ErrorKind::OutOfMemory, "file larger than memory"))?;
        let mut bytes = vec![0u8; len];
        self.read_exact_at(&mut bytes, 0)?;
        Ok(bytes)
    }
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes the file at least `len` bytes long with its blocks reserved
    /// and reading as zeros, so that later writes below `len` overwrite
    /// allocated space: their `fdatasync` then writes the data alone, not
    /// a new length and new extents as well. Where the filesystem reserves
    /// nothing (`EOPNOTSUPP`), the file is only lengthened.
    fn allocate(&self, len: u64) -> io::Result<()>;
    /// The underlying file, for memory-mapping sealed files.
    fn std_file(&self) -> &File;
}

/// The real filesystem.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

#[derive(Debug)]
struct RealFile(File);

impl Fs for RealFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                out.push(entry.path());
            }
        }
        out.sort();
        Ok(out)
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Arc::new(RealFile(file)))
    }

    fn open(&self, path: &Path, writable: bool) -> io::Result<Arc<dyn FsFile>> {
        let file = OpenOptions::new().read(true).write(writable).open(path)?;
        Ok(Arc::new(RealFile(file)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

impl FsFile for RealFile {
    fn allocate(&self, len: u64) -> io::Result<()> {
        let current = self.len()?;
        if len <= current {
            return Ok(());
        }
        match rustix::fs::fallocate(&self.0, FallocateFlags::empty(), current, len - current) {
            Ok(()) => Ok(()),
            Err(e) if e == Errno::OPNOTSUPP || e == Errno::NOSYS => self.0.set_len(len),
            Err(e) => Err(e.into()),
        }
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn std_file(&self) -> &File {
        &self.0
    }
}

/// A real filesystem that can fail on command and forget what was never
/// synced, as a power cut would.
///
/// Every write, allocation, sync, create, rename and remove counts as one
/// operation. After [`FaultyFs::fail_after`]`(n)`, the first `n` operations
/// succeed and every later one fails with an I/O error until
/// [`FaultyFs::heal`]. [`FaultyFs::crash`] then brings every file back to
/// what its last `sync_data` made durable (keeping a chosen prefix of what
/// was written since, to produce torn writes): its length as synced, and
/// zeros where unsynced writes went into space reserved before; files whose
/// directory entry was never synced are removed.
///
/// [`FaultyFs::fail_next_sync`] fails one `sync_data` the way Linux does
/// after a failed writeback: the bytes it was to make durable are marked
/// clean and never reach the disk, though reads still see them and the
/// next sync succeeds; a crash turns them into zeros.
#[derive(Debug, Clone, Default)]
pub struct FaultyFs {
    state: Arc<Mutex<FaultState>>,
}

#[derive(Debug, Default)]
struct FaultState {
    ops_left: Option<u64>,
    fail_next_sync: bool,
    files: HashMap<PathBuf, Track>,
}

#[derive(Debug, Default, Clone)]
struct Track {
    /// The file's length as its last sync left it.
    durable_len: u64,
    /// Bytes written since the last sync: `from..to`.
    unsynced: Option<(u64, u64)>,
    /// Bytes a failed sync lost: they never reach the disk.
    lost: Vec<(u64, u64)>,
    entry_synced: bool,
}

impl Track {
    fn new(durable_len: u64, entry_synced: bool) -> Self {
        Self {
            durable_len,
            unsynced: None,
            lost: Vec::new(),
            entry_synced,
        }
    }
}

impl FaultyFs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets `ops` more operations succeed, then fails every one after.
    pub fn fail_after(&self, ops: u64) {
        self.state.lock().ops_left = Some(ops);
    }

    /// Stops failing.
    pub fn heal(&self) {
        self.state.lock().ops_left = None;
    }

    /// Fails the next `sync_data` of any file, losing what it was to make
    /// durable; everything else goes on working.
    pub fn fail_next_sync(&self) {
        self.state.lock().fail_next_sync = true;
    }

    /// Simulates a power cut. For every file written through this value,
    /// the bytes written since the last sync are lost except for the first
    /// `keep(path, unsynced_len)` of them: past the synced length they are
    /// cut off, inside it (space reserved before) they read as zeros again.
    /// Files created or renamed since their directory was last synced
    /// disappear. Call it once the store using this filesystem is gone.
    pub fn crash(&self, mut keep: impl FnMut(&Path, u64) -> u64) -> io::Result<()> {
        let mut state = self.state.lock();
        for (path, track) in state.files.drain() {
            if !track.entry_synced {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                continue;
            }
            let Ok(file) = OpenOptions::new().write(true).open(&path) else {
                continue;
            };
            let (lost_from, lost_to) = match track.unsynced {
                Some((from, to)) => (from + keep(&path, to - from).min(to - from), to),
                None => (track.durable_len, track.durable_len),
            };
            let len = track.durable_len.max(lost_from);
            if file.metadata()?.len() > len {
                file.set_len(len)?;
            }
            let zeroed = track.lost.iter().copied().chain([(lost_from, lost_to)]);
            for (from, to) in zeroed {
                if from < to.min(len) {
                    let zeros = vec![0u8; (to.min(len) - from) as usize];
                    file.write_all_at(&zeros, from)?;
                }
            }
        }
        state.ops_left = None;
        state.fail_next_sync = false;
        Ok(())
    }

    fn op(&self) -> io::Result<()> {
        let mut state = self.state.lock();
        match &mut state.ops_left {
            Some(0) => Err(io::Error::other("injected I/O failure")),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn track(&self, path: &Path, f: impl FnOnce(&mut Track)) {
        let mut state = self.state.lock();
        f(state
            .files
            .entry(path.to_path_buf())
            .or_insert(Track::new(0, true)));
    }
}

#[derive(Debug)]
struct FaultyFile {
    inner: Arc<dyn FsFile>,
    path: PathBuf,
    fs: FaultyFs,
    /// Held by writes and syncs: a write from one thread while another
    /// syncs lands wholly before or after the sync, so what is tracked as
    /// synced is exactly what the sync covered.
    io: Mutex<()>,
}

impl Fs for FaultyFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        RealFs.create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        RealFs.list(dir)
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        self.op()?;
        let inner = RealFs.create(path)?;
        self.state
            .lock()
            .files
            .insert(path.to_path_buf(), Track::new(0, false));
        Ok(Arc::new(FaultyFile {
            inner,
            path: path.to_path_buf(),
            fs: self.clone(),
            io: Mutex::new(()),
        }))
    }

    fn open(&self, path: &Path, writable: bool) -> io::Result<Arc<dyn FsFile>> {
        let inner = RealFs.open(path, writable)?;
        // A file first seen here is durable as it stands; one already tracked
        // (opened again while being written) keeps its unsynced bytes.
        let len = inner.len()?;
        self.state
            .lock()
            .files
            .entry(path.to_path_buf())
            .or_insert(Track::new(len, true));
        Ok(Arc::new(FaultyFile {
            inner,
            path: path.to_path_buf(),
            fs: self.clone(),
            io: Mutex::new(()),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.op()?;
        RealFs.rename(from, to)?;
        let mut state = self.state.lock();
        let mut track = state.files.remove(from).unwrap_or_default();
        track.entry_synced = false;
        state.files.insert(to.to_path_buf(), track);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.op()?;
        RealFs.remove(path)?;
        self.state.lock().files.remove(path);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.op()?;
        RealFs.sync_dir(dir)?;
        let mut state = self.state.lock();
        for (path, track) in state.files.iter_mut() {
            if path.parent() == Some(dir) {
                track.entry_synced = true;
            }
        }
        Ok(())
    }
}

impl FsFile for FaultyFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let _io = self.io.lock();
        self.fs.op()?;
        self.inner.write_all_at(buf, offset)?;
        let end = offset + buf.len() as u64;
        self.fs.track(&self.path, |t| {
            t.unsynced = Some(match t.unsynced {
                Some((from, to)) => (from.min(offset), to.max(end)),
                None => (offset, end),
            });
        });
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let _io = self.io.lock();
        self.fs.op()?;
        if std::mem::take(&mut self.fs.state.lock().fail_next_sync) {
            self.fs
                .track(&self.path, |t| t.lost.extend(t.unsynced.take()));
            return Err(io::Error::other("injected sync failure (writeback lost)"));
        }
        self.inner.sync_data()?;
        let len = self.inner.len()?;
        self.fs.track(&self.path, |t| {
            t.durable_len = len;
            t.unsynced = None;
        });
        Ok(())
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        self.fs.op()?;
        self.inner.allocate(len)
    }

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.fs.op()?;
        self.inner.set_len(len)?;
        self.fs.track(&self.path, |t| {
            t.durable_len = t.durable_len.min(len);
            t.unsynced = t
                .unsynced
                .map(|(from, to)| (from.min(len), to.min(len)))
                .filter(|(from, to)| from < to);
            t.lost.retain_mut(|(from, to)| {
                *to = (*to).min(len);
                from < to
            });
        });
        Ok(())
    }

    fn std_file(&self) -> &File {
        self.inner.std_file()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// File `a` in `dir`, holding `bytes`, synced with its directory entry.
    fn durable_file(fs: &FaultyFs, dir: &Path, bytes: &[u8]) -> (PathBuf, Arc<dyn FsFile>) {
        let path = dir.join("a");
        let file = fs.create(&path).unwrap();
        file.write_all_at(bytes, 0).unwrap();
        file.sync_data().unwrap();
        fs.sync_dir(dir).unwrap();
        (path, file)
    }

    #[test]
    fn crash_drops_unsynced_bytes_and_unsynced_entries() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultyFs::new();
        let (a, f) = durable_file(&fs, dir.path(), b"hello");
        f.write_all_at(b" world", 5).unwrap();
        let b = dir.path().join("b");
        let g = fs.create(&b).unwrap();
        g.write_all_at(b"gone", 0).unwrap();
        g.sync_data().unwrap();
        drop((f, g));
        fs.crash(|_, unsynced| unsynced / 2).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"hello wo");
        assert!(!b.exists());
    }

    #[test]
    fn allocated_space_reads_as_zeros_and_a_crash_zeroes_unsynced_writes_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultyFs::new();
        let a = dir.path().join("a");
        let f = fs.create(&a).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.allocate(64).unwrap();
        f.allocate(16).unwrap();
        assert_eq!(f.len().unwrap(), 64, "never shrinks");
        f.sync_data().unwrap();
        fs.sync_dir(dir.path()).unwrap();
        assert_eq!(f.read_all().unwrap()[4..], [0u8; 60]);
        f.write_all_at(b"abcdef", 10).unwrap();
        drop(f);
        fs.crash(|_, unsynced| {
            assert_eq!(unsynced, 6);
            2
        })
        .unwrap();
        let bytes = std::fs::read(&a).unwrap();
        assert_eq!(bytes.len(), 64, "the reserved length was synced");
        assert_eq!(&bytes[..16], b"head\0\0\0\0\0\0ab\0\0\0\0");
    }

    #[test]
    fn an_unsynced_allocation_is_lost_in_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultyFs::new();
        let (a, f) = durable_file(&fs, dir.path(), b"head");
        f.allocate(4096).unwrap();
        drop(f);
        fs.crash(|_, _| 0).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"head");
    }

    #[test]
    fn a_failed_sync_loses_its_bytes_though_the_next_sync_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultyFs::new();
        let (a, f) = durable_file(&fs, dir.path(), b"head");
        f.write_all_at(b"lost", 4).unwrap();
        fs.fail_next_sync();
        assert!(f.sync_data().is_err());
        assert_eq!(f.read_all().unwrap(), b"headlost", "still read back");
        f.write_all_at(b"kept", 8).unwrap();
        f.sync_data().unwrap();
        drop(f);
        fs.crash(|_, _| 0).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"head\0\0\0\0kept");
    }

    #[test]
    fn fail_after_counts_operations() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultyFs::new();
        let f = fs.create(&dir.path().join("a")).unwrap();
        fs.fail_after(1);
        f.write_all_at(b"x", 0).unwrap();
        assert!(f.sync_data().is_err());
        assert!(f.write_all_at(b"y", 1).is_err());
        fs.heal();
        f.sync_data().unwrap();
    }
}
