//! A file a running process reads again when it changes: the keys file,
//! the JWKS file. Its metadata is looked at no more often than
//! [`RECHECK_INTERVAL`], so a change counts within that long (plus one
//! request), without a restart.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::RwLock;

/// How often a running process looks at a watched file's metadata at
/// most.
pub const RECHECK_INTERVAL: Duration = Duration::from_millis(250);

/// What tells one version of a file from the next: a rename makes a new
/// inode, an edit in place a new modification time or length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    inode: u64,
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        inode: meta.ino(),
        modified: meta.modified().ok(),
        len: meta.len(),
    })
}

/// What `load` made of the file at `path`, made again when the file
/// changes.
pub struct Watched<T> {
    path: PathBuf,
    load: fn(&Path) -> T,
    loaded: RwLock<Loaded<T>>,
}

struct Loaded<T> {
    checked: Instant,
    stamp: Option<Stamp>,
    value: T,
}

impl<T: Clone> Watched<T> {
    /// Watches `path` (which need not exist) with `value` as what `load`
    /// makes of it now.
    pub fn new(path: PathBuf, load: fn(&Path) -> T, value: T) -> Self {
        let stamp = stamp(&path);
        Self {
            path,
            load,
            loaded: RwLock::new(Loaded {
                checked: Instant::now(),
                stamp,
                value,
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the file holds now, within [`RECHECK_INTERVAL`].
    pub fn current(&self) -> T {
        {
            let loaded = self.loaded.read();
            if loaded.checked.elapsed() < RECHECK_INTERVAL {
                return loaded.value.clone();
            }
        }
        let mut loaded = self.loaded.write();
        if loaded.checked.elapsed() >= RECHECK_INTERVAL {
            let now = stamp(&self.path);
            if now != loaded.stamp {
                loaded.value = (self.load)(&self.path);
                loaded.stamp = now;
            }
            loaded.checked = Instant::now();
        }
        loaded.value.clone()
    }
}

impl<T> std::fmt::Debug for Watched<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched").field("path", &self.path).finish()
    }
}
