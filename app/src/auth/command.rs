//! `annals keys create|list|revoke`: the operator's side of the keys file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use super::Role;
use super::audit::{self, AuditLog, AuditRecord};
use super::keys::{self, KeyRecord};

/// The longest key name, in bytes.
const NAME_BYTES_MAX: usize = 64;

pub(crate) fn keys_command(action: crate::KeysAction, name: &str) -> anyhow::Result<ExitCode> {
    match action {
        crate::KeysAction::Create {
            name: key,
            role,
            stream_prefix,
            file,
        } => create(&file.path(), &key, role, stream_prefix, name),
        crate::KeysAction::List { file } => list(&file.path()),
        crate::KeysAction::Revoke { name: key, file } => revoke(&file.path(), &key, name),
    }
    .map(|()| ExitCode::SUCCESS)
}

/// `annals audit`: the last records of the audit log, one JSON line each.
pub(crate) fn audit_command(args: &crate::AuditArgs) -> anyhow::Result<ExitCode> {
    for record in audit::read(&args.path(), args.last)? {
        println!(
            "{}",
            serde_json::to_string(&record).context("encoding an audit record")?
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Records a change of the keys file at `path` in the audit log beside it.
fn record_change(path: &Path, action: String) -> anyhow::Result<()> {
    AuditLog::at(super::audit_beside(path)).append(&AuditRecord::now(
        &audit::operator(),
        action,
        None,
    ))
}

/// Adds a key and prints its token: on stdout alone, so a script can
/// take it (`TOKEN=$(annals keys create ...)`), and never again.
fn create(
    path: &Path,
    key: &str,
    mut roles: Vec<Role>,
    streams: Vec<String>,
    name: &str,
) -> anyhow::Result<()> {
    check_name(key)?;
    for prefix in &streams {
        check_stream_prefix(prefix)?;
    }
    roles.sort();
    roles.dedup();
    let token = change(path, |records| {
        if records.iter().any(|r| r.name == key) {
            anyhow::bail!("a key named {key:?} exists already in {}", path.display());
        }
        let (token, record) = keys::new_key(key, roles.clone(), streams.clone())?;
        records.push(record);
        Ok(token)
    })?;
    let scope = if streams.is_empty() {
        String::new()
    } else {
        format!(", streams starting with {}", streams.join(" or "))
    };
    record_change(
        path,
        format!("keys create {key} ({}{scope})", role_list(&roles, ",")),
    )?;
    eprintln!(
        "{name}: created the key {key:?} ({}{scope}) in {}; its token is shown only now:",
        role_list(&roles, ", "),
        path.display()
    );
    println!("{token}");
    Ok(())
}

/// One line per key: name, roles, creation time, state, streams
/// (tab-separated).
fn list(path: &Path) -> anyhow::Result<()> {
    for r in keys::read_records(path)? {
        let streams = if r.streams.is_empty() {
            "streams=*".to_owned()
        } else {
            format!("streams={}", r.streams.join(","))
        };
        println!(
            "{}\t{}\tcreated_at={}\t{}\t{streams}",
            r.name,
            role_list(&r.roles, ","),
            r.created_at,
            if r.revoked { "revoked" } else { "active" }
        );
    }
    Ok(())
}

/// Marks a key revoked; it stays in the file so that `list` shows it.
fn revoke(path: &Path, key: &str, name: &str) -> anyhow::Result<()> {
    change(path, |records| {
        let record = records
            .iter_mut()
            .find(|r| r.name == key)
            .with_context(|| format!("no key named {key:?} in {}", path.display()))?;
        record.revoked = true;
        Ok(())
    })?;
    record_change(path, format!("keys revoke {key}"))?;
    eprintln!("{name}: revoked the key {key:?}");
    Ok(())
}

/// Reads the keys file, applies `edit` and writes the result, holding an
/// exclusive lock on a file beside it so that two `annals keys` at once
/// cannot lose each other's change.
fn change<T>(
    path: &Path,
    edit: impl FnOnce(&mut Vec<KeyRecord>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let lock_path = lock_path(path);
    if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    let mut records = keys::read_records(path)?;
    let outcome = edit(&mut records)?;
    keys::write_records(path, &records)?;
    // Closing the file releases the lock.
    drop(lock);
    Ok(outcome)
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    path.with_file_name(name)
}

/// Names are printed tab-separated and quoted in problem documents: keep
/// them short and plain.
fn check_name(key: &str) -> anyhow::Result<()> {
    let plain = key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
    if key.is_empty() || key.len() > NAME_BYTES_MAX || !plain {
        anyhow::bail!(
            "a key name is 1 to {NAME_BYTES_MAX} letters, digits, `-`, `_`, `.` or `@`: {key:?} is not"
        );
    }
    Ok(())
}

/// A stream prefix is the start of a stream id: the same characters.
fn check_stream_prefix(prefix: &str) -> anyhow::Result<()> {
    event_store::StreamId::new(prefix)
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("--stream-prefix {prefix:?}: {e}"))
}

fn role_list(roles: &[Role], separator: &str) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(separator)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use super::*;

    #[test]
    fn changes_made_at_once_are_all_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(keys::KEYS_FILE_NAME);
        std::thread::scope(|scope| {
            for n in 0..8 {
                let path = &path;
                scope.spawn(move || {
                    change(path, |records| {
                        let (_, record) =
                            keys::new_key(&format!("key-{n}"), vec![Role::Read], Vec::new())?;
                        records.push(record);
                        Ok(())
                    })
                    .unwrap();
                });
            }
        });
        let mut names: Vec<String> = keys::read_records(&path)
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        names.sort();
        assert_eq!(
            names,
            (0..8).map(|n| format!("key-{n}")).collect::<Vec<_>>()
        );
    }

    #[test]
    fn key_names_are_short_and_plain() {
        assert!(check_name("ci-deploy_2.prod@eu").is_ok());
        assert!(check_name(&"a".repeat(NAME_BYTES_MAX)).is_ok());
        assert!(check_name(&"a".repeat(NAME_BYTES_MAX + 1)).is_err());
        for bad in ["", "two words", "tab\there", "quote\"", "ünï"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
