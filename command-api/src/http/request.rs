//! Turning an HTTP request into a command context: the body (size, content
//! type, JSON), the conditional and idempotency headers, the ids in the
//! path. Every refusal is a [`Problem`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::http::problem::{self, Problem, kind};
use crate::idempotency::{Fingerprint, Idempotency, IdempotencyKey};

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
pub const CORRELATION_ID: &str = "x-correlation-id";
pub const COMMAND_ID: &str = "x-command-id";
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// A command request with its body read (within the body limit).
#[derive(Debug)]
pub struct CommandRequest {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for CommandRequest {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let headers = request.headers().clone();
        let received = request.extensions().get::<BodyReceived>().cloned();
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    Problem::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        kind::BODY_TOO_LARGE,
                        "Body too large",
                        "the request body is over the size limit",
                    )
                } else if http_edge::timed_out(&rejection) {
                    // The connection's idle timeout cut a body that stalled.
                    body_timeout("the request body stopped arriving; nothing was applied")
                } else {
                    problem::bad_request(
                        kind::MALFORMED_REQUEST,
                        format!("the request body could not be read: {rejection}"),
                    )
                }
            })?;
        if let Some(received) = received {
            received.set();
        }
        Ok(CommandRequest {
            method,
            path,
            headers,
            body,
        })
    }
}

/// Set once a command's body has been read in full, so that a request
/// that runs out of time can tell "not even read" (`408`) from "may have
/// been applied" (`503`).
#[derive(Debug, Clone, Default)]
pub(super) struct BodyReceived(Arc<AtomicBool>);

impl BodyReceived {
    fn set(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub(super) fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// `408`: the request did not arrive in time, so nothing was done.
pub(super) fn body_timeout(detail: impl Into<String>) -> Problem {
    Problem::new(
        StatusCode::REQUEST_TIMEOUT,
        kind::REQUEST_TIMEOUT,
        "Request timeout",
        detail,
    )
    .with_header(header::CONNECTION, HeaderValue::from_static("close"))
}

/// Whether an endpoint needs a body, or takes an empty one as `{}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRule {
    Required,
    Optional,
}

impl CommandRequest {
    /// The JSON body as `T`: `415` for a body that is not declared JSON,
    /// `400` for one that does not parse into `T`.
    pub fn json<T: DeserializeOwned>(&self, rule: BodyRule) -> Result<T, Problem> {
        let content_type = self.headers.get(header::CONTENT_TYPE);
        if self.body.is_empty() && content_type.is_none() {
            return match rule {
                BodyRule::Optional => parse_json(b"{}"),
                BodyRule::Required => Err(problem::bad_request(
                    kind::MALFORMED_REQUEST,
                    "the request needs a JSON body",
                )),
            };
        }
        let is_json = content_type
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json_media_type);
        if !is_json {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                kind::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported media type",
                "the request body must be JSON, sent with Content-Type: application/json",
            ));
        }
        if self.body.is_empty() && rule == BodyRule::Optional {
            return parse_json(b"{}");
        }
        parse_json(&self.body)
    }

    /// The fingerprint an idempotency record keeps: method, path and body.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&[
            self.method.as_str().as_bytes(),
            self.path.as_bytes(),
            &self.body,
        ])
    }

    /// `Idempotency-Key`, when present.
    pub fn idempotency(&self) -> Result<Option<Idempotency>, Problem> {
        let Some(value) = self.headers.get(IDEMPOTENCY_KEY) else {
            return Ok(None);
        };
        let key = value
            .to_str()
            .map_err(|_| invalid_header("Idempotency-Key", "it is not visible ASCII".into()))
            .and_then(|v| {
                IdempotencyKey::parse(v)
                    .map_err(|e| invalid_header("Idempotency-Key", e.to_string()))
            })?;
        Ok(Some(Idempotency {
            key,
            fingerprint: self.fingerprint(),
        }))
    }

    /// `If-Match: "<version>"`, when present. Only one strong entity tag is
    /// meaningful for a command: the version the client decided on.
    pub fn if_match(&self) -> Result<Option<u64>, Problem> {
        let Some(value) = self.headers.get(header::IF_MATCH) else {
            return Ok(None);
        };
        let malformed = || {
            invalid_header(
                "If-Match",
                "expected one entity tag with a version, as sent in ETag, e.g. \"3\"".into(),
            )
        };
        let text = value.to_str().map_err(|_| malformed())?.trim();
        let version = text
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse::<u64>().ok())
            .ok_or_else(malformed)?;
        Ok(Some(version))
    }

    /// `traceparent`, when present and valid (an invalid one is ignored,
    /// as W3C Trace Context asks).
    pub fn traceparent(&self) -> Option<crate::TraceParent> {
        let value = self.headers.get(crate::trace::TRACEPARENT)?.to_str().ok()?;
        crate::TraceParent::parse(value)
    }

    /// `X-Correlation-Id`, when present (a UUID).
    pub fn correlation_id(&self) -> Result<Option<Uuid>, Problem> {
        let Some(value) = self.headers.get(CORRELATION_ID) else {
            return Ok(None);
        };
        value
            .to_str()
            .ok()
            .and_then(|v| Uuid::parse_str(v.trim()).ok())
            .map(Some)
            .ok_or_else(|| invalid_header("X-Correlation-Id", "it must be a UUID".into()))
    }
}

fn invalid_header(name: &'static str, why: String) -> Problem {
    problem::bad_request(
        kind::INVALID_HEADER,
        format!("invalid {name} header: {why}"),
    )
    .with("header", name)
}

/// `application/json` or any `application/<x>+json`, with parameters.
fn is_json_media_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json")
            || subtype.len() > 5
                && subtype
                    .get(subtype.len() - 5..)
                    .is_some_and(|s| s.eq_ignore_ascii_case("+json")))
}

/// Decodes a body; every struct is read from a JSON object only, as the
/// OpenAPI document says (serde alone would also read an array).
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    http_edge::json::from_slice(bytes).map_err(|e| {
        problem::bad_request(
            kind::MALFORMED_REQUEST,
            format!("the body is not the expected JSON: {e}"),
        )
        .with("line", e.line())
        .with("column", e.column())
    })
}

/// A path segment that must be an id (see [`http_edge::ids`]); the detail
/// is the id's own, the same on every route and in the query API.
pub fn path_id(name: &str, raw: &str) -> Result<Uuid, Problem> {
    http_edge::ids::parse_id(raw)
        .map_err(|e| problem::bad_request(kind::INVALID_ID, e.to_string()).with("parameter", name))
}

/// Path parameters that did not even decode (e.g. bad percent-encoding).
pub fn path_rejection(rejection: PathRejection) -> Problem {
    problem::bad_request(kind::INVALID_ID, format!("invalid path: {rejection}"))
}

/// The body of commands that take no fields: empty (where the route's body
/// is optional), or `{}`.
#[derive(Debug, Clone, Copy, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoFields {}

/// What is wrong with a request's fields, each under the JSON pointer of
/// the field: every field is checked and all errors are reported at once
/// (`400 invalid-fields`, with `errors: [{pointer, detail}]`).
///
/// ```
/// # use command_api::FieldErrors;
/// fn parse(name: &str, age: i64) -> Result<(String, u8), FieldErrors> {
///     let mut errors = FieldErrors::new();
///     let name = errors.check("/name", if name.is_empty() { Err("empty") } else { Ok(name.to_owned()) });
///     let age = errors.check("/age", u8::try_from(age));
///     errors.finish(|| Some((name?, age?)))
/// }
/// assert!(parse("Ada", 36).is_ok());
///
/// // Both fields are wrong: both are reported, as a route answers them.
/// let problem = parse("", 300).unwrap_err().into_problem();
/// assert_eq!(problem.status(), 400);
/// assert_eq!(problem.slug(), "invalid-fields");
/// let errors = problem.extension("errors").cloned().unwrap_or_default();
/// assert_eq!(errors[0]["pointer"], "/name");
/// assert_eq!(errors[1]["pointer"], "/age");
/// ```
#[derive(Debug, Default)]
pub struct FieldErrors(Vec<(String, String)>);

impl FieldErrors {
    pub fn new() -> Self {
        Self::default()
    }

    /// The value built from the checked fields, or every error recorded.
    /// `value` may only return `None` when a field it needs failed its
    /// check; otherwise the request is reported as incomplete.
    pub fn finish<T>(self, value: impl FnOnce() -> Option<T>) -> Result<T, FieldErrors> {
        if !self.is_empty() {
            return Err(self);
        }
        value().ok_or_else(|| {
            let mut errors = FieldErrors::new();
            errors.add("", "the request is incomplete");
            errors
        })
    }

    pub fn add(&mut self, pointer: impl Into<String>, detail: impl Into<String>) {
        self.0.push((pointer.into(), detail.into()));
    }

    /// Keeps the value, or records the error under `pointer`.
    pub fn check<T, E: std::fmt::Display>(
        &mut self,
        pointer: &str,
        result: Result<T, E>,
    ) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.add(pointer, e.to_string());
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_problem(self) -> Problem {
        let detail = match self.0.as_slice() {
            [(pointer, detail)] => format!("{pointer}: {detail}"),
            all => format!("{} fields are invalid", all.len()),
        };
        let errors: Vec<serde_json::Value> = self
            .0
            .into_iter()
            .map(|(pointer, detail)| serde_json::json!({"pointer": pointer, "detail": detail}))
            .collect();
        problem::bad_request(kind::INVALID_FIELDS, detail).with("errors", errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_media_types() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/merge-patch+json",
        ] {
            assert!(is_json_media_type(ok), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/xml",
            "application/+json",
            "json",
            "",
            "text/json",
        ] {
            assert!(!is_json_media_type(bad), "{bad}");
        }
    }
}
