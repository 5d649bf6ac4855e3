//! What the store (the log and the key store) tells the process's metrics recorder, through the
//! `metrics` facade: nothing is recorded until a process installs a
//! recorder (`annals` does, and serves it at `/metrics`), and then an
//! update is a lookup and an atomic add. Names follow Prometheus
//! conventions (unit suffixes, `_total` counters, no unbounded labels).
//!
//! The figures a scrape can read from the store itself (head, segments,
//! bytes) are not recorded here: the process reads them from
//! [`crate::EventStore::stats`] when scraped.

use std::time::{Duration, Instant};

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

/// Records one append's outcome and how long it took.
pub(crate) fn appended(outcome: &Result<Vec<AppendResult>>, started: Instant) {
    metrics::histogram!(APPEND_DURATION).record(started.elapsed());
    let label = match outcome {
        Ok(results) if results.iter().all(|r| r.already_committed) => "replayed",
        Ok(_) => "committed",
        Err(Error::WrongExpectedVersion { .. } | Error::EventIdConflict(_)) => "conflict",
        Err(
            Error::Poisoned(_)
            | Error::Indeterminate(_)
            | Error::Closed
            | Error::Io { .. }
            | Error::KeyStore(_)
            | Error::Remote(_),
        ) => "failed",
        Err(_) => "refused",
    };
    metrics::counter!(APPENDS, "outcome" => label).increment(1);
}

/// Records one group commit: its events, and its `fdatasync`.
pub(crate) fn group_committed(events: usize, fsync: Duration) {
    metrics::counter!(EVENTS_APPENDED).increment(events as u64);
    metrics::histogram!(GROUP_COMMIT_EVENTS).record(events as f64);
    metrics::histogram!(FSYNC_DURATION).record(fsync);
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
