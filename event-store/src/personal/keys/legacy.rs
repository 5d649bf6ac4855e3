//! The one-file-per-subject format of earlier key stores, and its
//! migration into the key log.

use super::writer::{Group, LogWriter};
use super::*;

/// A key or erasure file of the one-file-per-subject format: its path, the
/// subject its name says, and what it decodes to.
pub(super) type LegacyFile = (PathBuf, Hash, std::result::Result<Legacy, String>);

/// The key and erasure files of the one-file-per-subject format in `dir`,
/// decoded, and the leftovers of creations interrupted in that format;
/// `None` if `dir` does not exist.
pub(super) fn legacy_files(
    fs: &dyn Fs,
    dir: &Path,
) -> Result<Option<(Vec<LegacyFile>, Vec<PathBuf>)>> {
    let files = match fs.list(dir) {
        Ok(files) => files,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("listing {}", dir.display()), e)),
    };
    let mut found = Vec::new();
    let mut leftovers = Vec::new();
    for path in files {
        let (Some(stem), Some(ext)) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|s| s.to_str()),
        ) else {
            continue;
        };
        let Some(hash) = parse_hex_hash(stem) else {
            continue;
        };
        match ext {
            "key" | "erased" => {
                let bytes = fs
                    .open(&path, false)
                    .map_err(|e| Error::io(format!("opening {}", path.display()), e))?
                    .read_all()
                    .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
                found.push((path, hash, decode_legacy(&bytes, &hash)));
            }
            // A key file whose creation was interrupted: never acknowledged.
            "tmp" => leftovers.push(path),
            _ => {}
        }
    }
    Ok(Some((found, leftovers)))
}

/// A key or erasure file of the one-file-per-subject format.
pub(super) enum Legacy {
    Key([u8; 32]),
    Erased,
}

/// Decodes an old key (`ANNALKEY`) or erasure (`ANNALERA`) file and checks
/// that it belongs to the subject its name says.
pub(super) fn decode_legacy(bytes: &[u8], hash: &Hash) -> std::result::Result<Legacy, String> {
    if bytes.len() < 48 {
        return Err(format!("{} bytes is too short", bytes.len()));
    }
    let end = bytes.len() - 4;
    let crc = u32::from_le_bytes([bytes[end], bytes[end + 1], bytes[end + 2], bytes[end + 3]]);
    if crc32fast::hash(&bytes[..end]) != crc {
        return Err("checksum mismatch".into());
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != 1 {
        return Err(format!("version {version} is not 1"));
    }
    let len = usize::from(u16::from_le_bytes([bytes[10], bytes[11]]));
    if 44 + len != end || Hash::from(Sha256::digest(&bytes[44..end])) != *hash {
        return Err("the file belongs to another subject".into());
    }
    match &bytes[0..8] {
        b"ANNALKEY" => {
            let mut key = [0u8; 32];
            key.copy_from_slice(&bytes[12..44]);
            Ok(Legacy::Key(key))
        }
        b"ANNALERA" => Ok(Legacy::Erased),
        _ => Err("wrong magic".into()),
    }
}

pub(super) fn parse_hex_hash(stem: &str) -> Option<Hash> {
    if stem.len() != 64 {
        return None;
    }
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(stem.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(hash)
}

/// Overwrites a file with zeros, syncs it and unlinks it, so that its bytes
/// do not survive in blocks the filesystem merely frees.
pub(super) fn shred_file(fs: &dyn Fs, path: &Path) -> Result<()> {
    let ctx = |what: &str| format!("{what} {}", path.display());
    let file = fs
        .open(path, true)
        .map_err(|e| Error::io(ctx("opening"), e))?;
    let len = file.len().map_err(|e| Error::io(ctx("reading"), e))?;
    file.write_all_at(&vec![0u8; len as usize], 0)
        .and_then(|()| file.sync_data())
        .map_err(|e| Error::io(ctx("overwriting"), e))?;
    drop(file);
    fs.remove(path).map_err(|e| Error::io(ctx("removing"), e))
}

/// Moves the files of the one-file-per-subject format into the log: their
/// records are appended and synced first, and only then are the old files
/// overwritten and removed, so a crash at any point leaves every key in at
/// least one place (and an interrupted migration runs again).
pub(super) fn migrate_legacy_files(fs: &dyn Fs, dir: &Path, writer: &mut LogWriter) -> Result<()> {
    let Some((found, leftovers)) = legacy_files(fs, dir)? else {
        return Ok(());
    };
    if found.is_empty() && leftovers.is_empty() {
        return Ok(());
    }
    let legacy_erased: HashSet<Hash> = found
        .iter()
        .filter(|(_, _, l)| matches!(l, Ok(Legacy::Erased)))
        .map(|(_, h, _)| *h)
        .collect();
    let mut group = Group::default();
    let mut shred = Vec::new();
    for (path, hash, legacy) in found {
        let current = writer.current(&group, &hash);
        match (legacy, current) {
            (_, Some(Entry::Damaged(_))) => continue,
            (Err(why), None) => {
                writer.mark_damaged(hash, format!("{} is damaged: {why}", path.display()));
                continue;
            }
            // The log has the subject already (an earlier migration that
            // was interrupted): the file is a leftover.
            (Err(_), Some(_)) => {}
            (Ok(Legacy::Erased), Some(Entry::Erased)) => {}
            (Ok(Legacy::Erased), found) => writer.add_erasure(&mut group, hash, found),
            (Ok(Legacy::Key(_)), _) if legacy_erased.contains(&hash) => {}
            (Ok(Legacy::Key(_)), Some(Entry::Erased)) => {}
            (Ok(Legacy::Key(key)), Some(Entry::Key { key: logged, .. })) => {
                if key != logged {
                    let why = format!("{} and the key log hold different keys", path.display());
                    writer.mark_damaged(hash, why);
                    continue;
                }
            }
            (Ok(Legacy::Key(key)), None) => writer.add_key(&mut group, hash, key),
        }
        shred.push(path);
    }
    let log = writer.shared.log_path.clone();
    if !group.records.is_empty() {
        writer
            .append(&group.records)
            .map_err(|e| Error::io(format!("migrating old key files into {}", log.display()), e))?;
        writer.next_slot += group.records.len() as u64;
        writer.next_batch += 1;
        writer
            .shared
            .state
            .write()
            .subjects
            .extend(group.pending.drain());
    }
    if !group.destroy.is_empty() {
        writer
            .destroy(&group.destroy)
            .map_err(|e| Error::io(format!("erasing keys in {}", log.display()), e))?;
    }
    tracing::info!(
        files = shred.len() + leftovers.len(),
        "migrated the old key files of {} into {}",
        dir.display(),
        log.display()
    );
    for path in shred.iter().chain(&leftovers) {
        shred_file(fs, path)?;
    }
    fs.sync_dir(dir)
        .map_err(|e| Error::io(format!("syncing {}", dir.display()), e))
}
