//! The status of a projection as the admin API shows it: its checkpoints
//! read together with what this process knows of it.

use event_store::Position;
use serde::Serialize;

use crate::checkpoint::{Checkpoint, Track, TrackState};
use crate::rebuild::LastRebuild;
use crate::registry::Registered;
use crate::time::rfc3339;

pub(crate) fn status_of(
    reg: &Registered,
    checkpoints: &[Checkpoint],
    head: Position,
) -> ProjectionStatus {
    let find = |track: Track| {
        checkpoints
            .iter()
            .find(|c| c.projection == reg.name && c.track == track)
    };
    let live = find(Track::Live);
    let rebuild = find(Track::Rebuild);
    let rt = reg.runtime();
    let position = live.map_or(Position::ZERO, |c| c.position);
    let lag = head.0.saturating_sub(position.0);
    let stored_version = live.map_or(reg.version, |c| c.version);
    let state = match live.map(|c| c.state) {
        Some(TrackState::Failed) => TrackState::Failed,
        _ if rebuild.is_some() || stored_version != reg.version => TrackState::Rebuilding,
        _ if lag == 0 => TrackState::Live,
        Some(TrackState::Live) => TrackState::Live,
        _ => TrackState::CatchingUp,
    };
    let running_here = reg
        .rebuild_running
        .load(std::sync::atomic::Ordering::SeqCst);
    let rebuild = match rebuild {
        Some(cp) => {
            let rate = rt.rebuild_rate.per_second();
            let remaining = head.0.saturating_sub(cp.position.0);
            Some(RebuildStatus {
                state: cp.state,
                version: cp.version,
                position: cp.position.0,
                lag: remaining,
                events_per_second: round(rate),
                eta_seconds: (rate > 0.0 && cp.state != TrackState::Failed)
                    .then(|| round(remaining as f64 / rate)),
                last_error: cp.last_error.clone().or_else(|| rt.rebuild_problem.clone()),
                error_position: cp.error_position.map(|p| p.0),
                started_at: rfc3339(cp.started_at),
                running_here,
            })
        }
        // Started here and not yet past its first transaction (waiting for
        // the database, say): it runs all the same, and whoever asks for
        // another must learn that.
        None if running_here => Some(RebuildStatus {
            state: TrackState::Rebuilding,
            version: reg.version,
            position: 0,
            lag: head.0,
            events_per_second: 0.0,
            eta_seconds: None,
            last_error: rt.rebuild_problem.clone(),
            error_position: None,
            started_at: rfc3339(
                rt.rebuild_started_at
                    .unwrap_or_else(event_store::Timestamp::now),
            ),
            running_here,
        }),
        None => None,
    };
    ProjectionStatus {
        name: reg.name.to_owned(),
        version: reg.version,
        tables_version: stored_version,
        state,
        position: position.0,
        head: head.0,
        lag,
        events_per_second: round(rt.live_rate.per_second()),
        last_error: live
            .and_then(|c| c.last_error.clone())
            .or_else(|| rt.live_problem.clone()),
        retrying_for_ms: rt
            .live_problem_since
            .map(|since| u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)),
        error_position: live.and_then(|c| c.error_position).map(|p| p.0),
        updated_at: live.map(|c| rfc3339(c.updated_at)),
        rebuild,
        last_rebuild: rt.last_rebuild.clone(),
    }
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// A projection's status, as the admin API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ProjectionStatus {
    /// The projection's name, as used in the admin paths.
    #[schema(example = "customers")]
    pub name: String,
    /// The version of the running code.
    pub version: u32,
    /// The version of the code that built the live tables (differs from
    /// `version` until the rebuild it triggers is swapped in).
    pub tables_version: u32,
    pub state: TrackState,
    /// Checkpoint: the last log position the live tables reflect.
    pub position: u64,
    /// The head of the log.
    pub head: u64,
    /// Events the live tables are behind the head.
    pub lag: u64,
    /// Log positions applied per second over the last seconds, by this
    /// process.
    pub events_per_second: f64,
    /// The error that stopped the projection, or a passing one (store or
    /// database unreachable) until the next batch goes through.
    #[schema(required)]
    pub last_error: Option<String>,
    /// The event the projection stopped on, while failed.
    #[schema(required)]
    pub error_position: Option<u64>,
    /// For how long (milliseconds) the live tables have been retrying a
    /// failure of the event store or the view database (unreachable, disk
    /// full) without applying anything; null while they make progress or
    /// wait at the head of the log. Readiness reports a projection whose
    /// retries last too long as stuck.
    #[schema(required)]
    pub retrying_for_ms: Option<u64>,
    /// When the live checkpoint last changed (RFC 3339); null before the
    /// first batch.
    #[schema(format = DateTime, required)]
    pub updated_at: Option<String>,
    /// The rebuild in progress (or failed), if any; one this process runs
    /// shows from its start, before its first batch.
    #[schema(required)]
    pub rebuild: Option<RebuildStatus>,
    /// How the last rebuild this process ran ended (none since it started:
    /// absent). A client that started a rebuild waits for `number` to change.
    pub last_rebuild: Option<LastRebuild>,
}

/// A rebuild in progress (or failed).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct RebuildStatus {
    /// `rebuilding` or `failed`.
    pub state: TrackState,
    /// The version of the code filling the shadow tables.
    pub version: u32,
    /// Last log position applied to the shadow tables.
    pub position: u64,
    /// Events the shadow tables are behind the head.
    pub lag: u64,
    /// Log positions applied to the shadow tables per second, by this
    /// process.
    pub events_per_second: f64,
    /// Estimated seconds until the shadow tables catch up; null while
    /// unknown or failed.
    #[schema(required)]
    pub eta_seconds: Option<f64>,
    /// The error that stopped the rebuild, or a passing one until its next
    /// batch goes through.
    #[schema(required)]
    pub last_error: Option<String>,
    /// The event the rebuild stopped on, while failed.
    #[schema(required)]
    pub error_position: Option<u64>,
    /// When the rebuild started (RFC 3339).
    #[schema(format = DateTime)]
    pub started_at: String,
    /// Whether this process is running it (otherwise it waits to be resumed,
    /// or another process runs it).
    pub running_here: bool,
}
