//! W3C Trace Context on the command side: [`TraceParent`] (kept in
//! `event_store::trace`, since the projector reads it from events too) and
//! joining a span to the trace a `traceparent` names, for the processes
//! that export spans over OpenTelemetry.
//!
//! A header that is not a valid `traceparent` is ignored, as the
//! specification asks (the request then starts no trace); it is never a
//! reason to refuse a command.

pub use event_store::trace::{TRACEPARENT, TraceParent, of_event};

/// Makes `span` a child of the span `traceparent` names, among the spans
/// the process exports over OpenTelemetry; a no-op when it exports
/// none.
pub fn adopt(traceparent: &TraceParent, span: &tracing::Span) {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let caller = SpanContext::new(
        TraceId::from_bytes(traceparent.trace_id_bytes()),
        SpanId::from_bytes(traceparent.parent_id_bytes()),
        TraceFlags::new(traceparent.flags()),
        true,
        TraceState::default(),
    );
    // Without the export layer there is nothing to join.
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(caller));
}
