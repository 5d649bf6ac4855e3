//! The limits every command request runs within, as tower layers: how many
//! run at once (past that, `503 overloaded` at once rather than a queue
//! without bound) and how long each may take (`408` while its body has not
//! arrived, `503 timeout` once it may have been applied).

use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{Extension, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::{BoxError, Router};
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::load_shed::error::Overloaded;
use tower::timeout::TimeoutLayer;
use tower::timeout::error::Elapsed;

use super::request::{self, BodyReceived};
use super::{ApiConfig, Problem, kind, problem};

/// `router` with every route within `config`'s in-flight and time limits.
/// One count of requests in flight covers every route.
pub(super) fn within_limits(router: Router, config: &ApiConfig) -> Router {
    let in_flight_max = config.in_flight_requests_max;
    let timeout = config.request_timeout;
    let answer = move |Extension(received): Extension<BodyReceived>, error: BoxError| async move {
        over_limit(&error, &received, in_flight_max, timeout)
    };
    router.layer(
        ServiceBuilder::new()
            .layer(middleware::map_request(with_body_flag))
            .layer(HandleErrorLayer::new(answer))
            // A request past the limit is refused, not queued.
            .layer(LoadShedLayer::new())
            .layer(GlobalConcurrencyLimitLayer::new(in_flight_max))
            .layer(TimeoutLayer::new(timeout)),
    )
}

/// Gives the request the flag its body's extractor sets, which the answer
/// to a timeout reads.
async fn with_body_flag(mut request: Request) -> Request {
    request.extensions_mut().insert(BodyReceived::default());
    request
}

/// The problem document for a request a limit stopped.
fn over_limit(
    error: &BoxError,
    received: &BodyReceived,
    in_flight_max: usize,
    timeout: Duration,
) -> Response {
    if error.is::<Overloaded>() {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            kind::OVERLOADED,
            "Overloaded",
            format!("{in_flight_max} requests are already in progress; retry shortly"),
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
        .into_response();
    }
    if !error.is::<Elapsed>() {
        // The routes never fail, and the layers above fail only as above.
        return problem::internal(error).into_response();
    }
    // Nothing can have been applied to a command that was not even read.
    if !received.get() {
        tracing::info!(timeout = ?timeout, "a command's body did not arrive in time");
        return request::body_timeout(format!(
            "the request body did not arrive within {} ms; nothing was applied",
            timeout.as_millis()
        ))
        .into_response();
    }
    tracing::warn!(timeout = ?timeout, "a command request timed out");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        kind::TIMEOUT,
        "Timed out",
        "the command did not finish in time and may or may not have been applied; \
         retry with the same Idempotency-Key to find out",
    )
    .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
    .into_response()
}
