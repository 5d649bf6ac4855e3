//! Export of the process's spans (a `request` span per HTTP request, a
//! `saga_event` span per event a saga handles, and the spans inside them)
//! to an OpenTelemetry collector over OTLP/HTTP, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
//! is set; off otherwise, at no cost. The standard variables configure it
//! (`OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf` by default or
//! `http/json`; `OTEL_SERVICE_NAME`, the application's name by default;
//! `OTEL_BSP_SCHEDULE_DELAY`, ...). Spans leave in batches from a thread
//! of their own, so a slow collector never holds a request up; a batch it
//! refuses is dropped, and the log says so.
//!
//! A request carrying a valid W3C `traceparent` becomes a child of the
//! caller's span, in the caller's trace, and a saga event's span a child
//! of the span its event's `traceparent` names
//! ([`command_api::trace::adopt`]).

use std::sync::OnceLock;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::trace::SdkTracerProvider;

/// The provider, kept to flush the last batch at exit.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether the environment asks for export.
pub fn wanted() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
}

/// The layer that exports spans, for a process of application `app`;
/// `None` when the environment does not ask for it.
pub fn layer<S>(app: &str) -> anyhow::Result<Option<impl tracing_subscriber::Layer<S>>>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    if !wanted() {
        return Ok(None);
    }
    // The HTTP client's TLS (an https:// collector) needs the process's
    // crypto provider.
    http_edge::tls::install_default_provider();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol()?)
        .build()
        .context("cannot set up the OTLP span export (OTEL_EXPORTER_OTLP_ENDPOINT)")?;
    let service = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| app.to_owned());
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .build();
    let tracer = provider.tracer("annals");
    let _ = PROVIDER.set(provider);
    Ok(Some(tracing_opentelemetry::layer().with_tracer(tracer)))
}

/// The protocol `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` or
/// `OTEL_EXPORTER_OTLP_PROTOCOL` names; protobuf by default (the
/// exporter would pick JSON, the less common one).
fn protocol() -> anyhow::Result<Protocol> {
    let named = [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ]
    .iter()
    .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()));
    match named.as_deref() {
        None | Some("http/protobuf") => Ok(Protocol::HttpBinary),
        Some("http/json") => Ok(Protocol::HttpJson),
        Some(other) => anyhow::bail!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={other:?} is not supported: http/protobuf or http/json"
        ),
    }
}

/// Sends the spans still waiting, before the process exits.
pub fn finish() {
    if let Some(provider) = PROVIDER.get()
        && let Err(e) = provider.shutdown()
    {
        eprintln!("could not send the last spans to the OTLP collector: {e}");
    }
}
