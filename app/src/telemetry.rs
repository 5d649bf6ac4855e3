//! `GET /metrics` on every process, in the Prometheus text format.
//!
//! The libraries record through the `metrics` facade (the store's appends,
//! group commits and subscriptions, the key store's keys and erasures, the
//! projector's batches, failures and retries); this module installs the
//! process's recorder, counts every HTTP request by route template, method
//! and status, and at each scrape reads what the process's parts already
//! know (the store's head and segments, each projection's checkpoint and
//! lag, each saga's progress) into gauges. Without a recorder (`--no-metrics`)
//! every update is a no-op and `/metrics` is not served.
//!
//! Names follow Prometheus conventions: `annals_` prefix, units as
//! suffixes, `_total` counters; labels take only bounded values (route
//! templates, projection and saga names), never ids.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use event_store::EventStore;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const HTTP_REQUESTS: &str = "annals_http_requests_total";
const HTTP_DURATION: &str = "annals_http_request_duration_seconds";

/// Bucket bounds of the latency histograms, in seconds.
const SECONDS_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Bucket bounds of the histograms that count events.
const EVENTS_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
];
/// How often histograms are drained into their buckets when nobody
/// scrapes (the exporter keeps samples until then).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The process's recorder, installed by the first caller.
static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's metrics recorder (once; later calls return the
/// same handle) and starts its upkeep. `None` when another recorder was
/// installed first, which is logged.
pub fn install() -> Option<PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let handle = match recorder() {
                Ok(handle) => handle,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics are off: no recorder could be installed");
                    return None;
                }
            };
            describe();
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_EVERY);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "metrics upkeep thread not started; histograms drain at scrapes only");
            }
            Some(handle)
        })
        .clone()
}

fn recorder() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let mut builder = PrometheusBuilder::new();
    for name in [
        HTTP_DURATION,
        event_store::telemetry::APPEND_DURATION,
        event_store::telemetry::FSYNC_DURATION,
    ] {
        builder = builder.set_buckets_for_metric(Matcher::Full(name.into()), SECONDS_BUCKETS)?;
    }
    for name in [
        event_store::telemetry::GROUP_COMMIT_EVENTS,
        projector::telemetry::BATCH_EVENTS,
    ] {
        builder = builder.set_buckets_for_metric(Matcher::Full(name.into()), EVENTS_BUCKETS)?;
    }
    builder.install_recorder()
}

/// The `# HELP` lines.
fn describe() {
    use event_store::telemetry as store;
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    use projector::telemetry as projection;
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route template, method and status"
    );
    describe_histogram!(
        HTTP_DURATION,
        "Time from a request's head to its answer's head, by route template and method"
    );
    describe_counter!(
        store::APPENDS,
        "Appends to the store by outcome (committed, replayed, conflict, refused, failed)"
    );
    describe_histogram!(
        store::APPEND_DURATION,
        "Time from an append's call to its answer, every outcome"
    );
    describe_counter!(store::EVENTS_APPENDED, "Events made durable");
    describe_histogram!(
        store::FSYNC_DURATION,
        "Duration of each group commit's fdatasync"
    );
    describe_histogram!(
        store::GROUP_COMMIT_EVENTS,
        "Events made durable by one fdatasync"
    );
    describe_gauge!(store::SUBSCRIPTIONS, "Push subscriptions of the log open");
    describe_counter!(store::SUBJECTS_KEYED, "Data subjects given a key");
    describe_counter!(store::ERASURES, "Erasures of a data subject's key");
    describe_histogram!(
        projection::BATCH_EVENTS,
        "Log positions one view transaction moved a projection past"
    );
    describe_counter!(
        projection::EVENTS_APPLIED,
        "Log positions projections moved past, by projection and track"
    );
    describe_counter!(
        projection::FAILURES,
        "Projections stopped on an event they cannot apply"
    );
    describe_counter!(
        projection::RETRIES,
        "Failures of the store or the view database a projection retries"
    );
    for (name, help) in SCRAPED {
        describe_gauge!(*name, *help);
    }
}

/// The gauges read at each scrape, with their help.
const SCRAPED: &[(&str, &str)] = &[
    (
        "annals_store_head_position",
        "Position of the last committed event",
    ),
    (
        "annals_store_segments",
        "Segment files, the active one included",
    ),
    ("annals_store_sealed_segments", "Sealed segment files"),
    ("annals_store_segment_bytes", "Bytes of all segment files"),
    ("annals_store_snapshots", "Streams with a snapshot"),
    ("annals_store_snapshot_bytes", "Bytes of all snapshot files"),
    (
        "annals_store_read_only",
        "1 while the store refuses appends (damage found, or a failed write)",
    ),
    (
        "annals_projection_position",
        "Last log position a projection's live tables reflect",
    ),
    (
        "annals_projection_lag_events",
        "Events a projection's live tables are behind the head",
    ),
    (
        "annals_projection_lag_seconds",
        "How long the oldest event a projection has not applied has been in the log",
    ),
    (
        "annals_projection_failed",
        "1 while a projection is stopped on an event it cannot apply",
    ),
    (
        "annals_projection_rebuild_position",
        "Last log position a rebuild's shadow tables reflect",
    ),
    (
        "annals_projection_rebuild_lag_events",
        "Events a rebuild's shadow tables are behind the head",
    ),
    (
        "annals_saga_position",
        "Every event up to this position is done by the saga",
    ),
    (
        "annals_saga_events_in_flight",
        "Events a saga received and has not done yet",
    ),
    (
        "annals_saga_events_retrying",
        "Events a saga waits to retry after a transient failure",
    ),
    (
        "annals_saga_events_handled",
        "Events a saga did since the process started",
    ),
    (
        "annals_saga_events_skipped",
        "Events a saga gave up on since the process started",
    ),
];

/// The header a request may name itself with, echoed on the answer (a
/// fresh id when absent or not a plain token of at most 128 characters).
pub const REQUEST_ID: &str = "x-request-id";

/// Runs each request in a `request` span (its id, method, route template;
/// the command routes add the correlation and causation ids), so that every line logged
/// while it runs names them, logs its answer at debug level, echoes
/// `X-Request-Id`, and, while the process records metrics, counts it by route template
/// (`unmatched` for paths no route has), method and status and times it
/// to its answer's head.
pub async fn observe(request: Request, next: Next) -> Response {
    use tracing::Instrument;
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(request.method());
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| plain_token(v))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    let traceparent = request
        .headers()
        .get(command_api::trace::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(command_api::TraceParent::parse);
    let trace_id = traceparent.map(|t| t.trace_id());
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method,
        route = %route,
        trace_id = trace_id.as_deref(),
        correlation_id = tracing::field::Empty,
        causation_id = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    if let Some(traceparent) = &traceparent {
        command_api::trace::adopt(traceparent, &span);
    }
    let started = std::time::Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    span.record("status", status);
    span.in_scope(|| {
        tracing::debug!(status, elapsed_ms = elapsed.as_secs_f64() * 1e3, "answered");
    });
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    if recording() {
        metrics::histogram!(HTTP_DURATION, "route" => route.clone(), "method" => method)
            .record(elapsed);
        metrics::counter!(
            HTTP_REQUESTS,
            "route" => route,
            "method" => method,
            "status" => status.to_string()
        )
        .increment(1);
    }
    response
}

/// A request id a client may choose: 1 to 128 letters, digits and
/// `-_.:` (so that it is safe in a log line and a header).
fn plain_token(value: &str) -> bool {
    (1..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A method as a label: the standard ones by name, any other as `other`
/// (a client can send any token).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// What a process reads into gauges when it is scraped.
#[derive(Clone, Default)]
pub struct Scrape {
    /// The store this process holds (not one it reaches over HTTP: that
    /// process reports its own).
    pub store: Option<Arc<dyn EventStore>>,
    /// The store the projector reads, for the lag in seconds.
    pub log: Option<Arc<dyn EventStore>>,
    pub projector: Option<projector::ProjectorHandle>,
    pub sagas: Option<Vec<command_api::SagaHandle>>,
}

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrape")
            .field("store", &self.store.is_some())
            .field("projector", &self.projector.is_some())
            .field("sagas", &self.sagas.as_ref().map(Vec::len))
            .finish()
    }
}

/// Whether this process installed its recorder (no `--no-metrics`).
fn recording() -> bool {
    RECORDER.get().is_some_and(Option::is_some)
}

/// `GET /metrics` when the process has a recorder; no route otherwise.
pub fn routes(scrape: Scrape) -> Router {
    let Some(handle) = RECORDER.get().cloned().flatten() else {
        return Router::new();
    };
    Router::new()
        .route("/metrics", axum::routing::get(metrics_route))
        .with_state(Arc::new((handle, scrape)))
}

/// The path of `/metrics` for a process's OpenAPI document, when it
/// serves it.
pub fn openapi() -> Option<utoipa::openapi::OpenApi> {
    use utoipa::OpenApi;
    recording().then(MetricsApi::openapi)
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(metrics_route))]
struct MetricsApi;

#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "The process's metrics in the Prometheus text format \
        (version 0.0.4): the store's appends, group commits and log, HTTP requests by route \
        template, method and status, each projection's checkpoint, lag and batches, each \
        saga's progress", content_type = "text/plain")))]
async fn metrics_route(State(state): State<Arc<(PrometheusHandle, Scrape)>>) -> Response {
    let (handle, scrape) = state.as_ref();
    scrape.read().await;
    let mut response = handle.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

impl Scrape {
    /// Sets the gauges from the process's parts. What cannot be read now
    /// (a store that fails, a projector stopping) keeps its last value and
    /// is logged; the scrape still answers.
    async fn read(&self) {
        if let Some(store) = &self.store {
            match store.stats().await {
                Ok(stats) => store_gauges(&stats),
                Err(e) => tracing::warn!(error = %e, "metrics: cannot read the store's stats"),
            }
        }
        if let Some(projector) = &self.projector {
            match projector.status().await {
                Ok(statuses) => {
                    for status in &statuses {
                        self.projection_gauges(status).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: cannot read the projections' status");
                }
            }
        }
        for saga in self.sagas.iter().flatten() {
            saga_gauges(&saga.status());
        }
    }

    async fn projection_gauges(&self, status: &projector::ProjectionStatus) {
        let name = status.name.clone();
        let gauge = |metric: &'static str, value: f64| {
            metrics::gauge!(metric, "projection" => name.clone()).set(value);
        };
        // Counted only when they happen: shown at 0 until then, so that a
        // rate over them has a series from the start.
        for counter in [
            projector::telemetry::FAILURES,
            projector::telemetry::RETRIES,
        ] {
            metrics::counter!(counter, "projection" => name.clone(), "track" => "live")
                .increment(0);
        }
        gauge("annals_projection_position", status.position as f64);
        gauge("annals_projection_lag_events", status.lag as f64);
        gauge(
            "annals_projection_failed",
            f64::from(u8::from(status.state == projector::TrackState::Failed)),
        );
        let (position, lag) = status
            .rebuild
            .as_ref()
            .map_or((0.0, 0.0), |r| (r.position as f64, r.lag as f64));
        gauge("annals_projection_rebuild_position", position);
        gauge("annals_projection_rebuild_lag_events", lag);
        if let Some(seconds) = self.lag_seconds(status).await {
            gauge("annals_projection_lag_seconds", seconds);
        }
    }

    /// How long the first event the projection has not applied has been
    /// in the log (0 when it is at the head).
    async fn lag_seconds(&self, status: &projector::ProjectionStatus) -> Option<f64> {
        if status.lag == 0 {
            return Some(0.0);
        }
        let log = self.log.as_ref()?;
        let next = event_store::Position(status.position + 1);
        let events = match log.read_all(next, 1).await {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: cannot read the event a projection waits on");
                return None;
            }
        };
        let committed = events.first()?.timestamp.as_micros();
        let now = event_store::Timestamp::now().as_micros();
        Some(now.saturating_sub(committed).max(0) as f64 / 1e6)
    }
}

fn store_gauges(stats: &event_store::Stats) {
    let set = |metric: &'static str, value: u64| metrics::gauge!(metric).set(value as f64);
    set("annals_store_head_position", stats.head.0);
    set("annals_store_segments", stats.segments);
    set("annals_store_sealed_segments", stats.sealed_segments);
    set("annals_store_segment_bytes", stats.bytes);
    set("annals_store_snapshots", stats.snapshots);
    set("annals_store_snapshot_bytes", stats.snapshot_bytes);
    set(
        "annals_store_read_only",
        u64::from(stats.read_only_reason.is_some()),
    );
}

fn saga_gauges(status: &command_api::SagaStatus) {
    let name = status.name;
    let set = |metric: &'static str, value: u64| {
        metrics::gauge!(metric, "saga" => name).set(value as f64);
    };
    set("annals_saga_position", status.position);
    set("annals_saga_events_in_flight", status.events_in_flight);
    set("annals_saga_events_retrying", status.events_retrying);
    set("annals_saga_events_handled", status.events_handled);
    set("annals_saga_events_skipped", status.events_skipped);
}
