//! Exclusive ownership of a data directory.
//!
//! Two mechanisms, because each covers what the other cannot:
//! - a POSIX record lock (`fcntl(F_SETLK)`) on `LOCK` keeps other processes
//!   out. Unlike `flock`, such a lock belongs to the process and is not
//!   inherited by children, so a process that spawns programs (the test
//!   suites do) cannot leave the directory locked by a child that has not
//!   yet exec'd;
//! - a record lock does not exclude the owning process itself, so a
//!   process-wide registry of open directories refuses a second open from
//!   inside the same process.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use rustix::fs::{FlockOperation, fcntl_lock};

use crate::error::{Error, Result};

static OPEN_DIRS: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// Held while a store owns its directory; dropping it releases the directory.
#[derive(Debug)]
pub(crate) struct DirLock {
    // Kept open: closing any descriptor of the file would drop the record lock.
    _file: File,
    key: PathBuf,
}

impl DirLock {
    pub(crate) fn acquire(dir: &Path) -> Result<Self> {
        let key = std::fs::canonicalize(dir)
            .map_err(|e| Error::io(format!("resolving {}", dir.display()), e))?;
        let locked = || Error::Locked {
            path: dir.to_path_buf(),
        };
        if !OPEN_DIRS.lock().insert(key.clone()) {
            return Err(locked());
        }
        // From here on, failing must take the registry entry back out.
        let release = |e: Error| {
            OPEN_DIRS.lock().remove(&key);
            e
        };
        let path = key.join("LOCK");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| release(Error::io(format!("opening {}", path.display()), e)))?;
        match fcntl_lock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::AGAIN || e == rustix::io::Errno::ACCESS => {
                return Err(release(locked()));
            }
            Err(e) => {
                return Err(release(Error::io(
                    format!("locking {}", path.display()),
                    e.into(),
                )));
            }
        }
        // The pid is for people looking at the directory; the lock is what counts.
        let _ = file
            .set_len(0)
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        Ok(Self { _file: file, key })
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        OPEN_DIRS.lock().remove(&self.key);
    }
}
