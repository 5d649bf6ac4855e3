//! Read-your-writes: wait until a view reflects a position.

use std::time::Instant;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use backon::BackoffBuilder;
use event_store::Position;
use projector::http::{Problem, problem_type};
use projector::{Track, TrackState};

use crate::answer::{MIN_POSITION_HEADER, POSITION_HEADER};
use crate::params::Params;
use crate::state::QueryState;

/// The largest position accepted (positions are stored as SQL BIGINT).
const POSITION_MAX: i64 = i64::MAX;

/// The position the client asked for, from `min_position` or the
/// `Annals-Min-Position` header (both may be given if they agree).
pub fn requested(params: &Params, headers: &HeaderMap) -> Result<Option<Position>, Problem> {
    let from_query = params.integer("min_position", 0, POSITION_MAX)?;
    let from_header = match headers.get(&MIN_POSITION_HEADER) {
        None => None,
        Some(value) => {
            let parsed = value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .filter(|v| (0..=POSITION_MAX).contains(v));
            match parsed {
                Some(v) => Some(v),
                None => {
                    return Err(crate::params::invalid_request(format!(
                        "{MIN_POSITION_HEADER} must be an integer from 0 to {POSITION_MAX}"
                    ))
                    .with("header", MIN_POSITION_HEADER.as_str()));
                }
            }
        }
    };
    match (from_query, from_header) {
        (Some(q), Some(h)) if q != h => Err(crate::params::invalid_request(format!(
            "min_position={q} and {MIN_POSITION_HEADER}: {h} disagree"
        ))),
        (q, h) => Ok(q.or(h).map(|p| Position(p as u64))),
    }
}

/// Waits until the live checkpoint of `projection` reaches `min`; `503`
/// with `Retry-After` after the configured time, or at once if the view is
/// stopped by a failed event.
pub async fn wait_for(state: &QueryState, projection: &str, min: Position) -> Result<(), Problem> {
    let config = state.config();
    let deadline = Instant::now() + config.min_position_wait_max;
    // Jittered, so that requests waiting for one position do not all read
    // the checkpoint at once; the doubling stops at half the maximum, which
    // the jitter can double.
    let mut pauses =
        event_store::pauses::jittered(config.poll_interval_min, config.poll_interval_max).build();
    loop {
        let checkpoint = state
            .db()
            .checkpoint(projection, Track::Live)
            .await
            .map_err(|e| match e {
                projector::Error::Database(e) => crate::answer::database_problem(&e),
                other => Problem::internal(&other),
            })?;
        let (position, failed) = match &checkpoint {
            Some(cp) => (cp.position, cp.state == TrackState::Failed),
            None => (Position::ZERO, false),
        };
        if position >= min {
            return Ok(());
        }
        let retry_after = HeaderValue::from(config.retry_after_seconds);
        if failed {
            return Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                problem_type::PROJECTION_FAILED,
                "View stopped",
                format!(
                    "the {projection} view is stopped at position {position} by an event it cannot apply; it will not reach {min} until an operator resumes or skips it"
                ),
            )
            .with("position", position.0)
            .with("min_position", min.0)
            .with("projection", projection)
            .with_header(header::RETRY_AFTER, retry_after)
            .with_header(POSITION_HEADER, HeaderValue::from(position.0)));
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                problem_type::NOT_YET_VISIBLE,
                "Position not visible yet",
                format!(
                    "the {projection} view is at position {position} and did not reach {min} within {} ms",
                    config.min_position_wait_max.as_millis()
                ),
            )
            .with("position", position.0)
            .with("min_position", min.0)
            .with("projection", projection)
            .with_header(header::RETRY_AFTER, retry_after)
            .with_header(POSITION_HEADER, HeaderValue::from(position.0)));
        }
        let pause = pauses.next().map_or(config.poll_interval_max, |p| {
            p.min(config.poll_interval_max)
        });
        tokio::time::sleep(pause.min(deadline - now)).await;
    }
}
