//! What the read side's HTTP surfaces (the admin and query APIs) share:
//! the one problem type of every annals surface, [`http_edge::Problem`],
//! the slugs of the read side's problems, and the fallbacks that answer
//! unknown routes with problem documents.

use axum::http::StatusCode;

pub use http_edge::Problem;
pub use http_edge::problem::{PROBLEM_CONTENT_TYPE, problem_response, retry_after_header};

/// The problem slugs of the read side (`type` is
/// `urn:annals:problem:<slug>`), one per kind of error.
pub mod problem_type {
    pub const INVALID_REQUEST: &str = "invalid-request";
    pub const INVALID_ID: &str = "invalid-id";
    pub const NOT_FOUND: &str = "not-found";
    pub const CONFLICT: &str = "conflict";
    pub const NOT_YET_VISIBLE: &str = "position-not-yet-visible";
    pub const PROJECTION_FAILED: &str = "projection-failed";
    pub const UNAVAILABLE: &str = "unavailable";
    pub const VIEW_NOT_READY: &str = "view-not-ready";
    pub const INTERNAL: &str = "internal";
    pub const METHOD_NOT_ALLOWED: &str = "method-not-allowed";
}

/// Answers every unknown route with a problem document instead of an empty
/// 404.
pub async fn no_route(uri: axum::http::Uri) -> Problem {
    Problem::not_found(format!("no resource at {}", uri.path()))
}

/// Answers a known path asked with a method it does not serve.
pub async fn method_not_allowed(uri: axum::http::Uri) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        problem_type::METHOD_NOT_ALLOWED,
        "Method not allowed",
        format!(
            "{} does not accept this method (see /openapi.json)",
            uri.path()
        ),
    )
}

/// Turns axum's rejections of a malformed path or query into problem
/// documents.
pub fn rejection(detail: impl std::fmt::Display) -> Problem {
    Problem::bad_request(problem_type::INVALID_REQUEST, detail.to_string())
}
