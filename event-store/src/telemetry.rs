//! What the store (the log and the key store) tells the process's
//! metrics recorder, through the `metrics` facade: nothing is recorded
//! until a process installs a recorder (`annals` does, and serves it at
//! `/metrics`). The metrics of every append and group commit are taken
//! from the recorder at the process's first append, so a recorder must be
//! installed before a store is opened; the rarer ones are looked up by
//! name. Names follow Prometheus conventions (unit suffixes, `_total`
//! counters, no unbounded labels).
//!
//! The figures a scrape can read from the store itself (head, segments,
//! bytes) are not recorded here: the process reads them from
//! [`crate::EventStore::stats`] when scraped.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics::{Counter, Histogram};

use crate::{AppendResult, Error, Result};

/// Appends by outcome: `committed`, `replayed` (found whole where a retry
/// would have put it), `conflict` (expected version or event id),
/// `refused` (invalid, over a limit, read-only) or `failed` (the writer
/// failed or the store closed).
pub const APPENDS: &str = "annals_store_appends_total";
/// From the call to the answer, every outcome.
pub const APPEND_DURATION: &str = "annals_store_append_duration_seconds";
pub const EVENTS_APPENDED: &str = "annals_store_events_appended_total";
pub const FSYNC_DURATION: &str = "annals_store_fsync_duration_seconds";
/// Events made durable by one `fdatasync`.
pub const GROUP_COMMIT_EVENTS: &str = "annals_store_group_commit_events";
pub const SUBSCRIPTIONS: &str = "annals_store_subscriptions";

/// The outcomes of [`APPENDS`], in the order of [`Handles::outcomes`].
const OUTCOMES: [&str; 5] = ["committed", "replayed", "conflict", "refused", "failed"];

/// The handles of the metrics recorded on every append or group commit,
/// taken from the recorder once (at the first append of the process),
/// not looked up by name each time: a process installs its recorder
/// before it opens a store (`annals` does).
struct Handles {
    outcomes: [Counter; 5],
    append_duration: Histogram,
    events: Counter,
    group_events: Histogram,
    fsync: Histogram,
}

fn handles() -> &'static Handles {
    static HANDLES: OnceLock<Handles> = OnceLock::new();
    HANDLES.get_or_init(|| Handles {
        outcomes: OUTCOMES.map(|outcome| metrics::counter!(APPENDS, "outcome" => outcome)),
        append_duration: metrics::histogram!(APPEND_DURATION),
        events: metrics::counter!(EVENTS_APPENDED),
        group_events: metrics::histogram!(GROUP_COMMIT_EVENTS),
        fsync: metrics::histogram!(FSYNC_DURATION),
    })
}

/// Records one append's outcome and how long it took.
pub(crate) fn appended(outcome: &Result<Vec<AppendResult>>, started: Instant) {
    let handles = handles();
    handles.append_duration.record(started.elapsed());
    let index = match outcome {
        Ok(results) if results.iter().all(|r| r.already_committed) => 1,
        Ok(_) => 0,
        Err(Error::WrongExpectedVersion { .. } | Error::EventIdConflict(_)) => 2,
        Err(
            Error::Poisoned(_)
            | Error::Indeterminate(_)
            | Error::Closed
            | Error::Io { .. }
            | Error::KeyStore(_)
            | Error::Remote(_),
        ) => 4,
        Err(_) => 3,
    };
    handles.outcomes[index].increment(1);
}

/// Records one group commit: its events, and its `fdatasync`.
pub(crate) fn group_committed(events: usize, fsync: Duration) {
    let handles = handles();
    handles.events.increment(events as u64);
    handles.group_events.record(events as f64);
    handles.fsync.record(fsync);
}

/// Counts a subscription of the log while it is alive.
#[derive(Debug)]
pub(crate) struct SubscriptionGauge(());

impl SubscriptionGauge {
    pub(crate) fn open() -> Self {
        metrics::gauge!(SUBSCRIPTIONS).increment(1.0);
        Self(())
    }
}

impl Drop for SubscriptionGauge {
    fn drop(&mut self) {
        metrics::gauge!(SUBSCRIPTIONS).decrement(1.0);
    }
}

/// Data subjects given a key (their first personal data).
pub const SUBJECTS_KEYED: &str = "annals_keystore_subjects_keyed_total";
/// Erasures made durable (a repeated erasure of a subject counts again).
pub const ERASURES: &str = "annals_keystore_erasures_total";

pub(crate) fn subjects_keyed(count: usize) {
    metrics::counter!(SUBJECTS_KEYED).increment(count as u64);
}

pub(crate) fn erased() {
    metrics::counter!(ERASURES).increment(1);
}
