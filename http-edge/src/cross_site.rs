//! Requests a browser could be made to send from another site are not
//! let through to anything that changes state.
//!
//! A page on any site can make its visitor's browser send a `POST` to
//! `http://127.0.0.1:8080/...` (a form, or `fetch` in `no-cors` mode),
//! with the browser's credentials and no preflight, as long as the body is
//! a form (`application/x-www-form-urlencoded`, `multipart/form-data`) or
//! `text/plain` and no custom header is set. Any other content type or
//! header makes the browser ask the server first (a CORS preflight),
//! which annals never grants. So a request with a method that changes
//! state (anything but `GET`, `HEAD`, `OPTIONS` and `TRACE`) must carry a
//! JSON body (`application/json`, `application/*+json`, or NDJSON as
//! `application/x-ndjson`, as the store's append channel takes) or the header
//! [`REQUESTED_WITH`]; a form or a bodiless request without the header is
//! refused before any route sees it.
//!
//! Only `POST` can be sent cross-site without a preflight, but the rule
//! covers every unsafe method: it is one rule to state and to follow.

use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::Problem;

/// The header that marks a request as sent by a program rather than a
/// browser form (any value): `X-Requested-With`.
pub const REQUESTED_WITH: &str = "x-requested-with";

/// Middleware: refuses a state-changing request that a cross-site form
/// could have sent (`415` for a body of another type, `400` for a
/// bodiless one), and passes every other request on.
pub async fn refuse_cross_site(request: Request, next: Next) -> Response {
    match verdict(request.method(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(problem) => problem.into_response(),
    }
}

/// Whether a request with `method` and `headers` may change state.
fn verdict(method: &Method, headers: &HeaderMap) -> Result<(), Problem> {
    if is_safe(method) || headers.contains_key(REQUESTED_WITH) {
        return Ok(());
    }
    match headers.get(header::CONTENT_TYPE) {
        Some(value) if is_json_or_ndjson(value.to_str().unwrap_or_default()) => Ok(()),
        Some(value) => Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            format!(
                "a {method} request needs a JSON body (Content-Type: application/json), not {:?}, \
                 or the header X-Requested-With: a form from another site must not change state",
                value.to_str().unwrap_or("a non-ASCII type")
            ),
        )),
        None => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "cross-site-request",
            "Missing request marker",
            format!(
                "a {method} request without a JSON body needs the header X-Requested-With \
                 (any value): a form from another site must not change state"
            ),
        )),
    }
}

/// Whether `method` only reads (RFC 9110 section 9.2.1's safe methods):
/// `GET`, `HEAD`, `OPTIONS`, `TRACE`.
pub fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// `application/json`, `application/<anything>+json` or
/// `application/x-ndjson`, with any parameters, in any case: none of them
/// can be sent cross-site without a preflight.
fn is_json_or_ndjson(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence == "application/x-ndjson"
        || essence
            .strip_prefix("application/")
            .is_some_and(|subtype| subtype.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    axum::http::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn what_a_cross_site_form_can_send_is_refused() {
        for content_type in [
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "text/plain",
            "text/plain;charset=UTF-8",
        ] {
            let refused = verdict(&Method::POST, &headers(&[("content-type", content_type)]))
                .expect_err(content_type);
            assert_eq!(refused.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        }
        let bodiless = verdict(&Method::POST, &HeaderMap::new()).expect_err("no body");
        assert_eq!(bodiless.status(), StatusCode::BAD_REQUEST);
        assert!(verdict(&Method::DELETE, &HeaderMap::new()).is_err());
    }

    #[test]
    fn json_bodies_the_marker_and_safe_methods_pass() {
        for content_type in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/merge-patch+json",
            "application/x-ndjson",
        ] {
            verdict(&Method::POST, &headers(&[("content-type", content_type)]))
                .expect(content_type);
        }
        verdict(
            &Method::POST,
            &headers(&[
                ("x-requested-with", "annals"),
                ("content-type", "text/plain"),
            ]),
        )
        .expect("marker");
        verdict(&Method::PUT, &headers(&[("x-requested-with", "x")])).expect("marker");
        verdict(&Method::GET, &HeaderMap::new()).expect("safe");
        assert!(!is_json_or_ndjson("application/jsonx"));
        assert!(!is_json_or_ndjson("text/json+x"));
    }
}
