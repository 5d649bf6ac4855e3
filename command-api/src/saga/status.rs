//! Where a running saga stands ([`SagaStatus`]), and the [`SagaHandle`]
//! that shows it and waits for the saga to reach a position.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use event_store::{EventFilter, EventStore, Position};
use serde::Serialize;
use tokio::sync::watch;

/// Where a saga stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaState {
    /// Reading its checkpoint.
    Starting,
    /// Following the log (some events may be waiting to be retried; see
    /// [`SagaStatus::events_retrying`]).
    Running,
    /// Cannot follow the log (cannot read its checkpoint or subscribe);
    /// trying again.
    Retrying,
    /// Returned (after a shutdown), or its task is gone.
    Stopped,
}

/// Something that went wrong, for diagnostics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SagaFailure {
    /// The event it happened on, when it was about one.
    pub position: Option<u64>,
    pub event_type: Option<String>,
    pub error: String,
    /// True when the event was given up on and skipped.
    pub skipped: bool,
}

/// What a saga has done so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SagaStatus {
    pub name: &'static str,
    pub state: SagaState,
    /// The position the saga resumed after when it started.
    pub started_after: u64,
    /// Every event up to this position is done (or skipped).
    pub position: u64,
    /// The position of the last checkpoint written (or read at start).
    pub checkpoint: u64,
    /// Events done since the start, skipped ones included.
    pub events_handled: u64,
    /// Events given up on since the start.
    pub events_skipped: u64,
    /// Events received and not done yet (being handled, queued behind
    /// their lane, or waiting to be retried).
    pub events_in_flight: u64,
    /// Events waiting to be retried after a transient failure.
    pub events_retrying: u64,
    /// The saga's state, as saved with checkpoints.
    pub state_summary: BTreeMap<String, serde_json::Value>,
    /// The last failure, transient or not.
    pub last_error: Option<SagaFailure>,
}

/// A view of a running saga's status; cheap to clone.
#[derive(Clone)]
pub struct SagaHandle {
    status: Arc<watch::Sender<SagaStatus>>,
    /// Where [`SagaHandle::handled`] looks for events the saga has not
    /// been given yet.
    log: Option<(Arc<dyn EventStore>, EventFilter)>,
}

impl fmt::Debug for SagaHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SagaHandle")
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

/// The saga stopped before it handled the log up to the position waited
/// for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the saga {name} stopped at position {position}, before position {waited_for}")]
pub struct SagaStopped {
    pub name: &'static str,
    /// Every event up to here was done.
    pub position: u64,
    pub waited_for: u64,
}

impl SagaHandle {
    pub(crate) fn new(name: &'static str, log: Option<(Arc<dyn EventStore>, EventFilter)>) -> Self {
        let status = SagaStatus {
            name,
            state: SagaState::Starting,
            started_after: 0,
            position: 0,
            checkpoint: 0,
            events_handled: 0,
            events_skipped: 0,
            events_in_flight: 0,
            events_retrying: 0,
            state_summary: BTreeMap::new(),
            last_error: None,
        };
        Self {
            status: Arc::new(watch::Sender::new(status)),
            log,
        }
    }

    pub fn status(&self) -> SagaStatus {
        self.status.borrow().clone()
    }

    /// The saga's name.
    pub fn name(&self) -> &'static str {
        self.status.borrow().name
    }

    /// Resolves once the saga is done (handled or skipped) with every
    /// event of the log up to `position`: pass the position an append
    /// returned to read what the saga did about it. Events the saga's
    /// filter passes over count as done, so any position of the log works;
    /// one the log has not reached yet is waited for. An event being
    /// retried keeps it waiting: put a timeout around it.
    ///
    /// Fails when the saga stops first.
    pub async fn handled(&self, position: Position) -> Result<(), SagaStopped> {
        /// How often the log is looked at again while it has not reached
        /// `position`, or cannot be read: nothing else says when.
        const LOOK_AGAIN: std::time::Duration = std::time::Duration::from_millis(20);
        let mut changes = self.status.subscribe();
        // The first event after the saga's position that the saga is given,
        // as a scan of the log found it: until the saga passes it there is
        // no need to look again.
        let mut next_for_saga: Option<u64> = None;
        loop {
            let status = changes.borrow_and_update().clone();
            if status.position >= position.0 {
                return Ok(());
            }
            if status.state == SagaState::Stopped {
                return Err(SagaStopped {
                    name: status.name,
                    position: status.position,
                    waited_for: position.0,
                });
            }
            // Nothing received and not done: the saga is at the last event
            // its filter passed. Whether any of the later ones up to
            // `position` are the saga's is in the log.
            let idle = status.state == SagaState::Running && status.events_in_flight == 0;
            let scan_from = status.position + 1;
            let mut look_again = false;
            if idle && next_for_saga.is_none_or(|next| next < scan_from) {
                match self.scan(scan_from, position).await {
                    Scan::NotTheSagas => return Ok(()),
                    Scan::SagasAt(next) => next_for_saga = Some(next),
                    Scan::LogEndsBefore => look_again = true,
                    Scan::Failed(e) => {
                        tracing::debug!(saga = status.name, error = %e,
                            "cannot read the log to see whether the saga has anything to do");
                        look_again = true;
                    }
                    Scan::Unknown => {}
                }
            }
            let changed = if look_again {
                tokio::select! {
                    changed = changes.changed() => changed,
                    () = tokio::time::sleep(LOOK_AGAIN) => Ok(()),
                }
            } else {
                changes.changed().await
            };
            // This handle holds the sender, so the channel cannot close;
            // were it to, the status would be final.
            if changed.is_err() {
                let status = self.status();
                return if status.position >= position.0 {
                    Ok(())
                } else {
                    Err(SagaStopped {
                        name: status.name,
                        position: status.position,
                        waited_for: position.0,
                    })
                };
            }
        }
    }

    /// What the log holds in `from..=to` for the saga.
    async fn scan(&self, from: u64, to: Position) -> Scan {
        /// Read a page at a time: the gap may be long, memory is bounded.
        const PAGE_EVENTS: usize = 512;
        let Some((store, filter)) = self.log.as_ref() else {
            return Scan::Unknown;
        };
        let mut next = from;
        while next <= to.0 {
            let page = match store.read_all(Position(next), PAGE_EVENTS).await {
                Ok(page) => page,
                Err(e) => return Scan::Failed(e),
            };
            let Some(last) = page.last().map(|e| e.position.0) else {
                return Scan::LogEndsBefore;
            };
            if let Some(event) = page
                .iter()
                .take_while(|e| e.position <= to)
                .find(|e| filter.matches(e.stream_id.as_str(), &e.event_type))
            {
                return Scan::SagasAt(event.position.0);
            }
            next = last + 1;
        }
        Scan::NotTheSagas
    }

    pub(crate) fn update(&self, change: impl FnOnce(&mut SagaStatus)) {
        self.status.send_modify(change);
    }
}

/// What [`SagaHandle::handled`] found in the log past the saga's position.
enum Scan {
    /// No event up to the position waited for is the saga's.
    NotTheSagas,
    /// The first event there that is the saga's.
    SagasAt(u64),
    /// The log does not reach the position yet.
    LogEndsBefore,
    Failed(event_store::Error),
    /// The handle does not know the saga's log.
    Unknown,
}

/// Marks the status stopped however the run ends (returned, or its task
/// aborted), so readiness never reports a saga that is gone as running.
pub(crate) struct MarkStopped(pub(crate) SagaHandle);

impl Drop for MarkStopped {
    fn drop(&mut self) {
        self.0.update(|s| s.state = SagaState::Stopped);
    }
}
