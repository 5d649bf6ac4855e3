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

/// The ids an event's metadata carries to follow one business flow across
/// processes: its correlation id and the trace id of its W3C
/// `traceparent`, for log lines.
#[derive(Debug, Default)]
pub(crate) struct Flow {
    pub correlation_id: Option<String>,
    pub trace_id: Option<String>,
}

impl Flow {
    pub fn of(event: &event_store::RecordedEvent) -> Self {
        let Ok(metadata) = event.metadata() else {
            return Self::default();
        };
        let trace_id = event_store::trace::of_event(&metadata).map(|t| t.trace_id());
        Self {
            correlation_id: metadata.correlation_id.map(|id| id.to_string()),
            trace_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use event_store::{Position, RecordedEvent, StreamId, Timestamp};

    use super::Flow;

    fn with_metadata(metadata: &'static str) -> RecordedEvent {
        RecordedEvent {
            id: uuid::Uuid::nil(),
            stream_id: StreamId::new("s-1").unwrap(),
            version: 1,
            position: Position(1),
            event_type: "E".into(),
            schema_version: 1,
            timestamp: Timestamp(0),
            data: Bytes::from_static(b"{}"),
            metadata: Bytes::from_static(metadata.as_bytes()),
        }
    }

    #[test]
    fn a_flow_reads_the_correlation_and_trace_ids_of_an_event() {
        let flow = Flow::of(&with_metadata(
            r#"{"correlation_id":"01a24c11-40a0-778b-bb83-6f6b11f83d09",
               "traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}"#,
        ));
        assert_eq!(
            flow.correlation_id.as_deref(),
            Some("01a24c11-40a0-778b-bb83-6f6b11f83d09")
        );
        assert_eq!(
            flow.trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        let none = Flow::of(&with_metadata(r#"{"traceparent":"garbage"}"#));
        assert_eq!((none.correlation_id, none.trace_id), (None, None));
        let unreadable = Flow::of(&with_metadata("not json"));
        assert_eq!(unreadable.trace_id, None);
    }
}
