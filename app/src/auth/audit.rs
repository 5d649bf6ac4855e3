//! The audit log: who did which admin action when, and how it ended.
//!
//! Every request that needs the `admin` role and changes something
//! (personal-data erasure, a subject's key erased on the store,
//! projection rebuild, skip and resume) and every change of the keys file
//! by `annals keys` is one JSON line of `audit.jsonl`:
//! `{"at": "2026-12-05T10:00:00.123Z", "who": "operator", "action": "POST /projections/customers/rebuild", "status": 202}`.
//! `who` is the key's name (`anonymous` while authentication is off, the
//! operating-system user for `annals keys`). The file sits beside the keys
//! file (in the data directory by default) unless `--audit-log` names
//! another; several processes may share it: each line is written with one
//! `write` to a file opened for appending, and synced before the answer
//! goes out. Admins read it with `annals audit` or `GET /audit`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The file name of the audit log beside the keys file.
pub const AUDIT_FILE_NAME: &str = "audit.jsonl";

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// RFC 3339, UTC, milliseconds.
    pub at: String,
    pub who: String,
    /// `METHOD /path` of a request, or `keys create <name>` and the like.
    pub action: String,
    /// The answer's status; none for a command-line action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

impl AuditRecord {
    pub fn now(who: &str, action: String, status: Option<u16>) -> Self {
        Self {
            at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            who: who.to_owned(),
            action,
            status,
        }
    }
}

/// Where a process records its admin actions.
#[derive(Debug, Clone)]
pub struct AuditLog {
    path: PathBuf,
}

impl AuditLog {
    pub fn at(path: PathBuf) -> Self {
        Self { path }
    }

    /// Appends `record` and syncs it.
    pub fn append(&self, record: &AuditRecord) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(record).context("encoding an audit record")?;
        line.push(b'\n');
        let write = || -> std::io::Result<()> {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(&self.path)?;
            // One write: lines of processes sharing the file never mix.
            file.write_all(&line)?;
            file.sync_data()
        };
        write().with_context(|| format!("cannot write the audit log {}", self.path.display()))
    }

    /// Appends `record` from async code, off the runtime's threads; a
    /// failure is logged (the action it records has happened already).
    pub async fn record(&self, record: AuditRecord) {
        tracing::info!(who = %record.who, action = %record.action, status = ?record.status, "admin action");
        let log = self.clone();
        let written = tokio::task::spawn_blocking(move || log.append(&record)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(
                error = format!("{e:#}"),
                "an admin action is not in the audit log"
            ),
            Err(e) => tracing::error!(error = %e, "an admin action is not in the audit log"),
        }
    }

    /// The last `limit` records (all with `None`), oldest first.
    pub fn read(&self, limit: Option<usize>) -> anyhow::Result<Vec<AuditRecord>> {
        read(&self.path, limit)
    }
}

/// The last `limit` records of the audit log at `path` (none when it does
/// not exist yet), oldest first. A line that does not parse is an error
/// naming it: an audit log is not to be read around damage.
pub fn read(path: &Path, limit: Option<usize>) -> anyhow::Result<Vec<AuditRecord>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let records = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("{} line {}: not an audit record", path.display(), n + 1))
        })
        .collect::<anyhow::Result<Vec<AuditRecord>>>()?;
    let skip = limit.map_or(0, |limit| records.len().saturating_sub(limit));
    Ok(records.into_iter().skip(skip).collect())
}

/// Who runs a command-line action: the operating-system user.
pub fn operator() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {}", rustix::process::getuid().as_raw()));
    format!("cli:{user}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use super::*;

    #[test]
    fn records_written_at_once_are_all_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::at(dir.path().join(AUDIT_FILE_NAME));
        std::thread::scope(|scope| {
            for n in 0..8 {
                let log = &log;
                scope.spawn(move || {
                    for m in 0..20 {
                        log.append(&AuditRecord::now(
                            &format!("key-{n}"),
                            format!("POST /projections/p{m}/rebuild"),
                            Some(202),
                        ))
                        .unwrap();
                    }
                });
            }
        });
        assert_eq!(log.read(None).unwrap().len(), 160);
        let last = log.read(Some(3)).unwrap();
        assert_eq!(last.len(), 3);
        assert!(last[0].at.ends_with('Z'), "{}", last[0].at);
    }

    #[test]
    fn a_damaged_line_is_reported_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUDIT_FILE_NAME);
        std::fs::write(
            &path,
            b"{\"at\":\"x\",\"who\":\"a\",\"action\":\"b\"}\n{broken\n",
        )
        .unwrap();
        let e = read(&path, None).unwrap_err();
        assert!(format!("{e:#}").contains("line 2"), "{e:#}");
    }
}
