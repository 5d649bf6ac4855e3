//! The API keys file and the key ring a running process checks requests
//! against.
//!
//! The file is JSON lines, one key a line:
//! `{"name": "ci", "roles": ["read", "write"], "hash": "<hex>", "created_at": <unix seconds>, "revoked": false}`,
//! and `"streams": ["tenant-a-"]` for a key limited to the streams whose
//! ids start with one of these (on the store; elsewhere it is refused).
//! `hash` is the SHA-256 of the token. A plain hash is enough here (no
//! salt, no slow key derivation): tokens are 32 random bytes, so there is
//! no dictionary to try, and a stolen file gives nothing a search could
//! invert. The file is only ever replaced whole (written under a
//! temporary name, synced, renamed), so a process re-reading it never sees
//! half of a change.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Role;
use super::watched::Watched;

/// The file name of the keys file in a data directory.
pub const KEYS_FILE_NAME: &str = "api-keys.jsonl";

/// Bytes of randomness in a token.
const TOKEN_BYTES: usize = 32;

/// One line of the keys file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyRecord {
    pub name: String,
    pub roles: Vec<Role>,
    /// SHA-256 of the token, in hex.
    pub hash: String,
    /// Unix seconds.
    pub created_at: u64,
    #[serde(default)]
    pub revoked: bool,
    /// Stream-id prefixes the key is limited to; none: every stream.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<String>,
}

/// A key as the ring checks it.
#[derive(Debug, Clone)]
pub struct Key {
    pub name: String,
    pub roles: Vec<Role>,
    /// Stream-id prefixes the key is limited to; empty: every stream.
    pub streams: Vec<String>,
    hash: [u8; 32],
    revoked: bool,
}

/// The SHA-256 of a token.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Reads every record of the keys file at `path` (none when it does not
/// exist).
pub fn read_records(path: &Path) -> anyhow::Result<Vec<KeyRecord>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("{} line {}: not a key record", path.display(), n + 1))
        })
        .collect()
}

/// Replaces the keys file at `path` with `records`: a temporary file,
/// synced, renamed over the old one, and the directory synced, so a
/// reader sees the old file or the new one, never a mix.
pub fn write_records(path: &Path, records: &[KeyRecord]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let temporary = path.with_extension("jsonl.new");
    let mut text = String::new();
    for record in records {
        text.push_str(&serde_json::to_string(record).context("encoding a key record")?);
        text.push('\n');
    }
    let write = || -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        // Hashes only, but still nobody else's business.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}

/// A new token (64 hex digits of fresh randomness) and its record.
pub fn new_key(
    name: &str,
    roles: Vec<Role>,
    streams: Vec<String>,
) -> anyhow::Result<(String, KeyRecord)> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("cannot draw random bytes: {e}"))?;
    let token = hex::encode(bytes);
    let created_at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let record = KeyRecord {
        name: name.to_owned(),
        roles,
        hash: hex::encode(token_hash(&token)),
        created_at,
        revoked: false,
        streams,
    };
    Ok((token, record))
}

/// The keys of a keys file, read again whenever the file changes (see
/// [`Watched`]), so a key created or revoked with `annals keys` counts
/// without a restart.
#[derive(Debug)]
pub struct KeyRing {
    keys: Watched<Arc<[Key]>>,
}

impl KeyRing {
    /// The ring of the keys file at `path`, which need not exist yet (then
    /// no key is accepted until one is created).
    pub fn open(path: PathBuf) -> Self {
        let keys = load(&path);
        Self {
            keys: Watched::new(path, load, keys),
        }
    }

    pub fn path(&self) -> &Path {
        self.keys.path()
    }

    /// The key whose token is `token`, if the file holds it, revoked or
    /// not. Every key's hash is compared, each in constant time.
    pub fn find(&self, token: &str) -> Option<Key> {
        let presented = token_hash(token);
        let keys = self.keys.current();
        let mut found = None;
        for key in keys.iter() {
            if bool::from(key.hash.ct_eq(&presented)) {
                found = Some(key);
            }
        }
        found.cloned()
    }
}

impl Key {
    /// A caller a verified token names (a JWT's subject): not in the
    /// keys file, never revoked there, not limited to streams.
    pub fn from_token(name: String, roles: Vec<Role>) -> Self {
        Self {
            name,
            roles,
            streams: Vec::new(),
            hash: [0; 32],
            revoked: false,
        }
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked
    }

    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// The keys of the file at `path`. A file that cannot be read or parsed
/// accepts no key at all (and says so in the log): refusing everyone until
/// the operator fixes it is safer than guessing which keys still count.
fn load(path: &Path) -> Arc<[Key]> {
    let parsed = read_records(path).and_then(|records| {
        records
            .into_iter()
            .map(|r| {
                let mut hash = [0u8; 32];
                hex::decode_to_slice(&r.hash, &mut hash)
                    .with_context(|| format!("the key {:?} has a malformed hash", r.name))?;
                Ok(Key {
                    name: r.name,
                    roles: r.roles,
                    streams: r.streams,
                    hash,
                    revoked: r.revoked,
                })
            })
            .collect::<anyhow::Result<Vec<Key>>>()
    });
    match parsed {
        Ok(keys) => keys.into(),
        Err(e) => {
            tracing::error!(file = %path.display(), error = format!("{e:#}"), "the keys file is unusable: every key is refused until it is fixed");
            Arc::from(Vec::new())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use super::*;

    #[test]
    fn a_key_written_is_found_by_its_token_only_and_a_revocation_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEYS_FILE_NAME);
        let (token, record) = new_key("ci", vec![Role::Read], Vec::new()).unwrap();
        assert_eq!(token.len(), 64);
        assert!(!record.hash.contains(&token));
        write_records(&path, std::slice::from_ref(&record)).unwrap();
        let ring = KeyRing::open(path.clone());
        let key = ring.find(&token).unwrap();
        assert!(key.has(Role::Read) && !key.has(Role::Admin) && !key.is_revoked());
        assert!(ring.find("not-the-token").is_none());

        let revoked = KeyRecord {
            revoked: true,
            ..record
        };
        write_records(&path, &[revoked]).unwrap();
        std::thread::sleep(
            super::super::watched::RECHECK_INTERVAL + std::time::Duration::from_millis(20),
        );
        assert!(ring.find(&token).unwrap().is_revoked());
    }

    #[test]
    fn an_unparsable_file_accepts_no_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEYS_FILE_NAME);
        let (token, record) = new_key("ci", vec![Role::Read], Vec::new()).unwrap();
        write_records(&path, &[record]).unwrap();
        std::fs::write(&path, b"{not json\n").unwrap();
        assert!(KeyRing::open(path).find(&token).is_none());
    }
}
