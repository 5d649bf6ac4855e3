//! What the projector tells the process's metrics recorder (the `metrics`
//! facade; nothing is recorded until a process installs one). Labels are
//! the projection's name and the track (`live`, `rebuild`): both bounded
//! by the application's code.
//!
//! Checkpoints and lag are read from the projections' status when the
//! process is scraped, not recorded here.

use crate::checkpoint::Track;

pub const BATCH_EVENTS: &str = "annals_projection_batch_events";
pub const EVENTS_APPLIED: &str = "annals_projection_events_applied_total";
pub const FAILURES: &str = "annals_projection_failures_total";
pub const RETRIES: &str = "annals_projection_retries_total";

/// A batch committed with its checkpoint: `positions` log positions
/// (wanted or not) moved past.
pub(crate) fn batch_committed(projection: &'static str, track: Track, positions: u64) {
    let track = track.as_str();
    metrics::histogram!(BATCH_EVENTS, "projection" => projection, "track" => track)
        .record(positions as f64);
    metrics::counter!(EVENTS_APPLIED, "projection" => projection, "track" => track)
        .increment(positions);
}

/// The track stopped on an event it cannot apply.
pub(crate) fn failed(projection: &'static str, track: Track) {
    metrics::counter!(FAILURES, "projection" => projection, "track" => track.as_str()).increment(1);
}

/// A failure of the store or the view database, to be retried.
pub(crate) fn retrying(projection: &'static str, track: Track) {
    metrics::counter!(RETRIES, "projection" => projection, "track" => track.as_str()).increment(1);
}
