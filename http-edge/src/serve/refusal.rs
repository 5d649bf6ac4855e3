//! Problem documents from the edge: the answers the connection layer
//! writes itself, and the last resort that turns any other error answer
//! without one into a problem document.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

pub use crate::problem::PROBLEM_CONTENT_TYPE;
use crate::problem::Problem;

/// The longest body of an error answer the last resort copies into the
/// problem's `detail`, in bytes; a longer one is replaced by the status's
/// description.
const DETAIL_BYTES_MAX: usize = 1024;

/// A problem the edge answers on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refusal {
    pub(super) status: StatusCode,
    slug: &'static str,
    title: &'static str,
    pub(super) detail: String,
}

impl Refusal {
    fn new(status: StatusCode, detail: impl Into<String>) -> Refusal {
        let (slug, title) = kind_of(status);
        Refusal {
            status,
            slug,
            title,
            detail: detail.into(),
        }
    }

    pub(super) fn plain_http_on_tls() -> Refusal {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "this port speaks HTTPS: send the request to https://, not http://",
        )
    }

    pub(super) fn malformed(detail: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, detail)
    }

    pub(super) fn uri_too_long(bytes_max: usize) -> Refusal {
        Refusal::new(
            StatusCode::URI_TOO_LONG,
            format!("the request target is longer than {bytes_max} bytes"),
        )
    }

    pub(super) fn head_too_large(bytes_max: usize) -> Refusal {
        Refusal::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("the request line and header fields take more than {bytes_max} bytes"),
        )
    }

    pub(super) fn too_many_fields(fields_max: usize) -> Refusal {
        Refusal::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("the request has more than {fields_max} header fields"),
        )
    }

    pub(super) fn head_timeout(timeout: Duration) -> Refusal {
        Refusal::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request head did not arrive within {} ms; nothing was done",
                timeout.as_millis()
            ),
        )
    }

    pub(super) fn body_timeout(timeout: Duration) -> Refusal {
        Refusal::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body sent nothing for {} ms; the request was not acted on",
                timeout.as_millis()
            ),
        )
    }

    fn body(&self) -> Vec<u8> {
        let problem = Problem::new(self.status, self.slug, self.title, self.detail.clone());
        serde_json::to_vec(&problem.to_json()).unwrap_or_default()
    }

    /// The whole answer as it goes on the wire, closing the connection.
    pub(super) fn to_bytes(&self) -> Vec<u8> {
        let body = self.body();
        let mut bytes = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: {PROBLEM_CONTENT_TYPE}\r\ncontent-length: {}\r\n\
             connection: close\r\ndate: {}\r\n\r\n",
            self.status.as_u16(),
            self.status.canonical_reason().unwrap_or("Error"),
            body.len(),
            httpdate::fmt_http_date(std::time::SystemTime::now()),
        )
        .into_bytes();
        bytes.extend_from_slice(&body);
        bytes
    }

    /// The answer as a response, keeping `headers` of the one it replaces.
    fn into_response(self, headers: &axum::http::HeaderMap) -> Response {
        let mut response = Response::new(Body::from(self.body()));
        *response.status_mut() = self.status;
        for (name, value) in headers {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                response.headers_mut().append(name, value.clone());
            }
        }
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
        );
        response
    }
}

/// The problem type's slug and title of an error status the edge answers
/// for the application.
fn kind_of(status: StatusCode) -> (&'static str, &'static str) {
    match status.as_u16() {
        400 => ("malformed-request", "Malformed request"),
        401 => ("unauthorized", "Unauthorized"),
        403 => ("forbidden", "Forbidden"),
        404 => ("not-found", "Not found"),
        405 => ("method-not-allowed", "Method not allowed"),
        406 => ("not-acceptable", "Not acceptable"),
        408 => ("request-timeout", "Request timeout"),
        409 => ("conflict", "Conflict"),
        411 => ("length-required", "Length required"),
        413 => ("body-too-large", "Body too large"),
        414 => ("uri-too-long", "URI too long"),
        415 => ("unsupported-media-type", "Unsupported media type"),
        422 => ("unprocessable", "Unprocessable request"),
        429 => ("too-many-requests", "Too many requests"),
        431 => ("header-fields-too-large", "Request header fields too large"),
        501 => ("not-implemented", "Not implemented"),
        503 => ("unavailable", "Unavailable"),
        s if s >= 500 => ("internal", "Internal error"),
        _ => ("invalid-request", "Invalid request"),
    }
}

/// The last resort: an error answer (status 400 or more) that is not a
/// problem document becomes one, with the same status and headers. A
/// short plain-text body (axum's rejections say what was wrong in one)
/// becomes the `detail` of a client error; a server error's body stays in
/// the log. `body_timed_out` says that the request body was cut by the idle
/// timeout: whatever the application made of the failed read, the answer
/// is `408`.
pub(super) async fn ensure_problem(
    response: Response,
    body_timed_out: Option<Duration>,
) -> Response {
    let status = response.status();
    if let Some(timeout) = body_timed_out
        && status.as_u16() >= 400
        && !(status == StatusCode::REQUEST_TIMEOUT && is_problem(&response))
    {
        return Refusal::body_timeout(timeout).into_response(response.headers());
    }
    if status.as_u16() < 400 || is_problem(&response) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, DETAIL_BYTES_MAX)
        .await
        .ok()
        .and_then(|bytes| String::from_utf8(bytes.to_vec()).ok())
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty());
    let detail = match text {
        Some(text) if status.is_client_error() => text,
        Some(text) => {
            tracing::error!(status = status.as_u16(), body = %text, "an error answer without a problem document");
            "the server could not answer; the error is in its log".to_owned()
        }
        None => format!(
            "the request was refused: {}",
            status.canonical_reason().unwrap_or("error")
        ),
    };
    Refusal::new(status, detail).into_response(&parts.headers)
}

fn is_problem(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(PROBLEM_CONTENT_TYPE))
}
