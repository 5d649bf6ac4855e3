//! The key store for crypto-shredding: one 256-bit key per data subject, in
//! its own small file, never in the log.
//!
//! ```text
//! keys/<sha256 of the subject, hex>.key      a live key
//! keys/<sha256 of the subject, hex>.erased   the record that the subject was forgotten
//! ```
//!
//! Key file (all integers little-endian):
//!
//! ```text
//! offset size field
//!      0    8 magic         "ANNALKEY"
//!      8    2 version       1
//!     10    2 subject_len   n
//!     12   32 key
//!     44    n subject id (UTF-8)
//!   44+n    4 CRC-32/ISO-HDLC of every preceding byte
//! ```
//!
//! An erasure file has the same layout with magic `ANNALERA` and 32 zero
//! bytes in place of the key.
//!
//! Forgetting a subject first makes its erasure record durable, then
//! overwrites the key file with zeros, syncs it, and only then unlinks it, so
//! that the key bytes do not survive in the freed blocks. A subject with
//! neither a key nor an erasure record is a *lost* key (a damaged or
//! incomplete key store), reported as an error, never mistaken for erasure.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use parking_lot::{Mutex, RwLock};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

const KEY_MAGIC: &[u8; 8] = b"ANNALKEY";
const ERASED_MAGIC: &[u8; 8] = b"ANNALERA";
const VERSION: u16 = 1;

/// A subject's key, or the fact that it was destroyed.
#[derive(Clone, PartialEq, Eq)]
pub enum SubjectKey {
    Key([u8; 32]),
    Erased,
}

impl std::fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Never print key material.
            SubjectKey::Key(_) => f.write_str("Key(..)"),
            SubjectKey::Erased => f.write_str("Erased"),
        }
    }
}

/// Per-subject keys in a directory of their own.
#[derive(Debug)]
pub struct KeyStore {
    dir: PathBuf,
    cache: RwLock<HashMap<String, SubjectKey>>,
    /// Serialise creation and erasure per subject (by stripe) so two
    /// callers never race on one file, while keys of different subjects
    /// are written, and their fsyncs overlap, in parallel.
    writes: Vec<Mutex<()>>,
}

/// Lock stripes for key writes.
const WRITE_STRIPES: usize = 64;

fn file_stem(subject: &str) -> String {
    let digest = Sha256::digest(subject.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn encode(magic: &[u8; 8], key: &[u8; 32], subject: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + subject.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(subject.len() as u16).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(subject.as_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn decode(bytes: &[u8], magic: &[u8; 8], subject: &str) -> std::result::Result<[u8; 32], String> {
    if bytes.len() < 48 {
        return Err(format!("{} bytes is too short", bytes.len()));
    }
    let end = bytes.len() - 4;
    let crc = u32::from_le_bytes([bytes[end], bytes[end + 1], bytes[end + 2], bytes[end + 3]]);
    if crc32fast::hash(&bytes[..end]) != crc {
        return Err("checksum mismatch".into());
    }
    if &bytes[0..8] != magic {
        return Err("wrong magic".into());
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != VERSION {
        return Err(format!("version {version} is not {VERSION}"));
    }
    let len = u16::from_le_bytes([bytes[10], bytes[11]]) as usize;
    if 44 + len != end || &bytes[44..end] != subject.as_bytes() {
        return Err("the file belongs to another subject".into());
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&bytes[12..44]);
    Ok(key)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl KeyStore {
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating the key store {}", dir.display()), e))?;
        Ok(Self {
            dir,
            cache: RwLock::new(HashMap::new()),
            writes: (0..WRITE_STRIPES).map(|_| Mutex::new(())).collect(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn write_lock(&self, subject: &str) -> parking_lot::MutexGuard<'_, ()> {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let hash = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .hash_one(subject);
        self.writes[(hash % WRITE_STRIPES as u64) as usize].lock()
    }

    /// Whether the subject's key or erasure is known without touching the
    /// disk.
    pub fn is_cached(&self, subject: &str) -> bool {
        self.cache.read().contains_key(subject)
    }

    fn paths(&self, subject: &str) -> (PathBuf, PathBuf) {
        let stem = file_stem(subject);
        (
            self.dir.join(format!("{stem}.key")),
            self.dir.join(format!("{stem}.erased")),
        )
    }

    /// The subject's key or its erasure. A subject never seen is
    /// `Ok(None)`; use [`KeyStore::require`] where a key must exist.
    pub fn lookup(&self, subject: &str) -> Result<Option<SubjectKey>> {
        if let Some(found) = self.cache.read().get(subject) {
            return Ok(Some(found.clone()));
        }
        let (key_path, erased_path) = self.paths(subject);
        let found = match std::fs::read(&erased_path) {
            Ok(bytes) => {
                decode(&bytes, ERASED_MAGIC, subject).map_err(|detail| {
                    Error::KeyStore(format!(
                        "erasure record {} is damaged: {detail}",
                        erased_path.display()
                    ))
                })?;
                Some(SubjectKey::Erased)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::read(&key_path) {
                Ok(bytes) => Some(SubjectKey::Key(
                    decode(&bytes, KEY_MAGIC, subject).map_err(|detail| {
                        Error::KeyStore(format!(
                            "key file {} is damaged: {detail}",
                            key_path.display()
                        ))
                    })?,
                )),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(Error::io(format!("reading {}", key_path.display()), e)),
            },
            Err(e) => return Err(Error::io(format!("reading {}", erased_path.display()), e)),
        };
        if let Some(found) = &found {
            self.cache.write().insert(subject.to_owned(), found.clone());
        }
        Ok(found)
    }

    /// The subject's key or erasure, where data encrypted for it exists: a
    /// missing key then means the key store lost it.
    pub fn require(&self, subject: &str) -> Result<SubjectKey> {
        self.lookup(subject)?.ok_or_else(|| {
            Error::KeyStore(format!(
                "no key and no erasure record for data subject {subject:?} in {}: the key store is incomplete or was replaced",
                self.dir.display()
            ))
        })
    }

    /// The subject's key, created (durably) if it has none. A forgotten
    /// subject gets no new key: writing personal data for it is refused.
    pub fn key_for_write(&self, subject: &str) -> Result<[u8; 32]> {
        if let Some(SubjectKey::Key(key)) = self.lookup(subject)? {
            return Ok(key);
        }
        let _guard = self.write_lock(subject);
        match self.lookup(subject)? {
            Some(SubjectKey::Key(key)) => return Ok(key),
            Some(SubjectKey::Erased) => {
                return Err(Error::KeyStore(format!(
                    "data subject {subject:?} was forgotten; no personal data can be stored for it"
                )));
            }
            None => {}
        }
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)
            .map_err(|e| Error::KeyStore(format!("no randomness for a new key: {e}")))?;
        let (key_path, _) = self.paths(subject);
        self.write_durably(&key_path, &encode(KEY_MAGIC, &key, subject))?;
        self.cache
            .write()
            .insert(subject.to_owned(), SubjectKey::Key(key));
        Ok(key)
    }

    /// Destroys the subject's key. Idempotent.
    pub fn forget(&self, subject: &str) -> Result<()> {
        let _guard = self.write_lock(subject);
        let (key_path, erased_path) = self.paths(subject);
        if !erased_path.exists() {
            self.write_durably(&erased_path, &encode(ERASED_MAGIC, &[0u8; 32], subject))?;
        }
        self.cache
            .write()
            .insert(subject.to_owned(), SubjectKey::Erased);
        match OpenOptions::new().write(true).open(&key_path) {
            Ok(file) => {
                let ctx = |what: &str| format!("{what} {}", key_path.display());
                let len = file
                    .metadata()
                    .map_err(|e| Error::io(ctx("reading"), e))?
                    .len();
                // Overwrite in place before unlinking, so the key bytes are
                // not left behind in blocks the filesystem merely frees.
                file.write_all_at(&vec![0u8; len as usize], 0)
                    .and_then(|()| file.sync_data())
                    .map_err(|e| Error::io(ctx("overwriting"), e))?;
                drop(file);
                std::fs::remove_file(&key_path).map_err(|e| Error::io(ctx("removing"), e))?;
                sync_dir(&self.dir).map_err(|e| Error::io(ctx("syncing the directory of"), e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("opening {}", key_path.display()), e)),
        }
        Ok(())
    }

    fn write_durably(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let tmp = path.with_extension("tmp");
        let ctx = |what: &str| format!("{what} {}", path.display());
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| Error::io(ctx("creating"), e))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_data())
            .map_err(|e| Error::io(ctx("writing"), e))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(|e| Error::io(ctx("renaming into place"), e))?;
        sync_dir(&self.dir).map_err(|e| Error::io(ctx("syncing the directory of"), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_created_once_found_again_and_forgotten_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyStore::open(dir.path()).unwrap();
        assert_eq!(keys.lookup("c-1").unwrap(), None);
        assert!(matches!(keys.require("c-1"), Err(Error::KeyStore(_))));
        let key = keys.key_for_write("c-1").unwrap();
        assert_eq!(keys.key_for_write("c-1").unwrap(), key);
        let reopened = KeyStore::open(dir.path()).unwrap();
        assert_eq!(reopened.require("c-1").unwrap(), SubjectKey::Key(key));

        reopened.forget("c-1").unwrap();
        reopened.forget("c-1").unwrap();
        assert_eq!(reopened.require("c-1").unwrap(), SubjectKey::Erased);
        assert!(matches!(
            reopened.key_for_write("c-1"),
            Err(Error::KeyStore(_))
        ));
        let fresh = KeyStore::open(dir.path()).unwrap();
        assert_eq!(fresh.require("c-1").unwrap(), SubjectKey::Erased);
        // The key bytes are nowhere in the directory any more.
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(
                !bytes.windows(32).any(|w| w == key),
                "key bytes left on disk"
            );
        }
    }

    #[test]
    fn a_damaged_or_missing_key_is_an_error_not_an_erasure() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyStore::open(dir.path()).unwrap();
        keys.key_for_write("c-1").unwrap();
        let (key_path, _) = keys.paths("c-1");
        let mut bytes = std::fs::read(&key_path).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&key_path, bytes).unwrap();
        let fresh = KeyStore::open(dir.path()).unwrap();
        assert!(matches!(fresh.require("c-1"), Err(Error::KeyStore(m)) if m.contains("damaged")));
        std::fs::remove_file(&key_path).unwrap();
        let fresh = KeyStore::open(dir.path()).unwrap();
        assert!(
            matches!(fresh.require("c-1"), Err(Error::KeyStore(m)) if m.contains("incomplete"))
        );
    }
}
