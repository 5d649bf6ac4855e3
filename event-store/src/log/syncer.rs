//! The second half of group commit: making written groups durable,
//! publishing them to readers and answering their callers, in the order
//! the writer wrote them.
//!
//! The writer hands each group it has written to the syncer thread and
//! goes on to decide and write the next while the syncer's `fdatasync`
//! runs; one `fdatasync` then covers every group written in the meantime.
//! Without it, the writer sat idle through each sync and encoded nothing,
//! and the appends queued meanwhile waited for a whole write and sync of
//! their own after it.
//!
//! A failed sync leaves the outcome of its groups to the next open, and of
//! every group written after them too (their bytes may reach the disk as
//! well, and they were decided against the failed ones): all of them are
//! answered "indeterminate", and the writer refuses appends from then on.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::log::fs::FsFile;
use crate::log::segment::ActiveStream;
use crate::log::shared::Inner;
use crate::types::{AppendResult, StreamId};

pub(crate) type Reply = tokio::sync::oneshot::Sender<Result<Vec<AppendResult>>>;

/// A group whose bytes are written to the active segment (or that wrote
/// none: its answers still wait for the groups before it).
pub(crate) struct Written {
    /// Numbered from 1 in the order written.
    pub seq: u64,
    pub file: Arc<dyn FsFile>,
    pub path: PathBuf,
    /// The segment's length with this group's bytes.
    pub end: u64,
    pub bytes: usize,
    pub events: Vec<PendingEvent>,
    /// Answered once the group is durable and published: its successes,
    /// replays and refusals alike, as any of them may rest on an earlier
    /// append of this group or of one before it.
    pub waiting: Vec<(Reply, Result<Vec<AppendResult>>)>,
}

pub(crate) struct PendingEvent {
    pub stream_id: StreamId,
    pub version: u64,
    pub position: u64,
    pub offset: u32,
}

/// How far the groups handed over have been answered.
#[derive(Default)]
pub(crate) struct Progress {
    state: Mutex<Answered>,
    changed: Condvar,
    /// Held across every sync of the active segment (see `sync`).
    syncs: Mutex<()>,
}

#[derive(Default)]
struct Answered {
    /// The last group answered.
    seq: u64,
    /// Why a sync failed, once one has: every later group is answered
    /// with it.
    failed: Option<String>,
    /// Whether the active segment was cut back after the failure.
    cut: bool,
}

impl Progress {
    pub(crate) fn answered(&self) -> u64 {
        self.state.lock().seq
    }

    /// Answers every group from now on with `reason`.
    pub(crate) fn fail(&self, reason: String) {
        self.state.lock().failed.get_or_insert(reason);
    }

    /// Syncs the active segment, from either thread: one sync at a time,
    /// none once one has failed, and a failure recorded (with `describe`
    /// of the error) before the next may start. A failed writeback loses
    /// the bytes it held whichever sync it is reported to, and Linux
    /// reports it to one sync of the file only: a later sync's success
    /// says nothing of those bytes.
    pub(crate) fn sync(
        &self,
        file: &dyn FsFile,
        describe: impl FnOnce(&std::io::Error) -> String,
    ) -> std::result::Result<(), String> {
        let _one = self.syncs.lock();
        if let Some(reason) = self.state.lock().failed.clone() {
            return Err(reason);
        }
        file.sync_data().map_err(|e| {
            let reason = describe(&e);
            self.fail(reason.clone());
            reason
        })
    }

    /// Waits until group `seq` and every one before it are answered.
    pub(crate) fn wait_for(&self, seq: u64) {
        let mut state = self.state.lock();
        while state.seq < seq {
            self.changed.wait(&mut state);
        }
    }
}

/// Starts the thread that syncs, publishes and answers what it is sent.
pub(crate) fn spawn(
    inner: Arc<Inner>,
    progress: Arc<Progress>,
) -> std::io::Result<(mpsc::Sender<Written>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<Written>();
    let handle = std::thread::Builder::new()
        .name("annals-syncer".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut groups = vec![first];
                groups.extend(rx.try_iter());
                complete(&inner, &progress, groups);
            }
        })?;
    Ok((tx, handle))
}

/// Makes `groups` durable with one sync per file, publishes their events
/// in order and answers their callers. Called by the syncer thread, or by
/// the writer itself when nothing else is in flight.
pub(crate) fn complete(inner: &Inner, progress: &Progress, mut groups: Vec<Written>) {
    let Some(last_seq) = groups.last().map(|g| g.seq) else {
        return;
    };
    let earlier_failure = progress.state.lock().failed.clone();
    let outcome = match earlier_failure {
        Some(reason) => Err(reason),
        None => sync(progress, &groups),
    };
    match outcome {
        Ok(took) => {
            let events: usize = groups.iter().map(|g| g.events.len()).sum();
            if events > 0 {
                crate::telemetry::group_committed(events, took);
            }
            publish(inner, &groups);
            for group in &mut groups {
                for (reply, result) in group.waiting.drain(..) {
                    let _ = reply.send(result);
                }
            }
            progress.state.lock().seq = last_seq;
        }
        Err(reason) => {
            poison(inner, &reason);
            let first_failure = !std::mem::replace(&mut progress.state.lock().cut, true);
            if first_failure && let Some(first) = groups.first() {
                cut_back(inner, first);
            }
            for group in &mut groups {
                for (reply, _) in group.waiting.drain(..) {
                    let _ = reply.send(Err(Error::Indeterminate(reason.clone())));
                }
            }
            let mut state = progress.state.lock();
            state.seq = last_seq;
            state.failed.get_or_insert(reason);
        }
    }
    progress.changed.notify_all();
}

/// Syncs each file the groups wrote to, once, in order; how long the
/// syncs took, or why one failed.
fn sync(
    progress: &Progress,
    groups: &[Written],
) -> std::result::Result<std::time::Duration, String> {
    let started = Instant::now();
    let mut i = 0;
    while i < groups.len() {
        let file = &groups[i].file;
        let mut last = i;
        while last + 1 < groups.len() && Arc::ptr_eq(&groups[last + 1].file, file) {
            last += 1;
        }
        let bytes: usize = groups[i..=last].iter().map(|g| g.bytes).sum();
        if bytes > 0 {
            let group = &groups[last];
            progress.sync(file.as_ref(), |e| {
                format!(
                    "syncing {bytes} bytes to {} ending at offset {} failed: {e}; the store refuses appends until it is reopened",
                    group.path.display(),
                    group.end
                )
            })?;
        }
        i = last + 1;
    }
    Ok(started.elapsed())
}

/// Cuts the active segment back to its durable records after a failed
/// sync. The bytes that sync was to make durable may never reach the disk
/// (Linux marks them clean after a failed writeback, and a later sync
/// succeeds without them), while groups written after them would reach it
/// by the kernel's own writeback: the next open would find them behind a
/// hole. Holds the writer's gate, past which the writer writes nothing
/// once the store is poisoned. A failed cut is logged: the next open then
/// reports what it finds.
fn cut_back(inner: &Inner, group: &Written) {
    let _writes = inner.writes.lock();
    let durable_len = {
        let st = inner.state.read();
        (st.active.path == group.path).then_some(st.active.durable_len)
    };
    let Some(len) = durable_len else {
        return;
    };
    if let Err(e) = group
        .file
        .set_len(len)
        .and_then(|()| group.file.sync_data())
    {
        tracing::error!(segment = %group.path.display(), error = %e, "cutting the segment back to its durable records failed");
    }
}

pub(crate) fn poison(inner: &Inner, reason: &str) {
    tracing::error!(%reason, "the writer stopped accepting appends");
    inner
        .failure
        .lock()
        .get_or_insert_with(|| reason.to_owned());
}

/// Makes the groups' events visible to readers and subscribers.
fn publish(inner: &Inner, groups: &[Written]) {
    let Some(head) = groups
        .iter()
        .rev()
        .find_map(|g| g.events.last().map(|e| e.position))
    else {
        return;
    };
    {
        let mut st = inner.state.write();
        for group in groups {
            for e in &group.events {
                st.active.positions.push(e.offset);
                // Looked up before inserting: a stream seen before (most
                // are) costs no copy of its id.
                match st.active.streams.get_mut(&e.stream_id) {
                    Some(stream) => {
                        stream.offsets.push(e.offset);
                        stream.version = e.version;
                        stream.last_position = e.position;
                    }
                    None => {
                        let stream = ActiveStream {
                            first_version: e.version,
                            version: e.version,
                            offsets: vec![e.offset],
                            last_position: e.position,
                        };
                        st.active.streams.insert(e.stream_id.clone(), stream);
                    }
                }
            }
            if group.bytes > 0 {
                st.active.durable_len = group.end;
            }
        }
        st.head = head;
    }
    inner.head.send_modify(|h| h.position = head);
}
