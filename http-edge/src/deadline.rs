//! A deadline on every request: an answer that has not started by then
//! is `503` with `Retry-After`, so a handler stuck on a slow database
//! cannot hold a client (and a connection) for ever. A streamed answer
//! (a subscription) has started once its head is out and runs on.

use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::timeout::TimeoutLayer;

use crate::Problem;

/// `router` with every request's answer due within `limit`.
pub fn answer_within(router: Router, limit: Duration) -> Router {
    let timed_out = move |_: tower::BoxError| async move { timed_out(limit) };
    router.layer(
        tower::ServiceBuilder::new()
            .layer(HandleErrorLayer::new(timed_out))
            .layer(TimeoutLayer::new(limit)),
    )
}

fn timed_out(limit: Duration) -> Response {
    tracing::warn!(?limit, "a request was not answered in time");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "timeout",
        "Timed out",
        format!(
            "the request was not answered within {} ms; retry shortly",
            limit.as_millis()
        ),
    )
    .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
    .into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn a_request_over_the_deadline_is_a_503_problem_and_others_pass() {
        let router = answer_within(
            Router::new()
                .route(
                    "/slow",
                    get(|| async {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        "late"
                    }),
                )
                .route("/quick", get(|| async { "ok" })),
            Duration::from_millis(50),
        );
        let slow = router
            .clone()
            .oneshot(Request::get("/slow").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(slow.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(slow.headers()[header::RETRY_AFTER], "1");
        assert_eq!(
            slow.headers()[header::CONTENT_TYPE],
            crate::PROBLEM_CONTENT_TYPE
        );
        let quick = router
            .oneshot(Request::get("/quick").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(quick.status(), StatusCode::OK);
    }
}
