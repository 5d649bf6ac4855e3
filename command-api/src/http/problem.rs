//! Error responses: RFC 9457 problem documents (`application/problem+json`).
//!
//! Every problem has a `type` URI `urn:annals:problem:<slug>` naming the
//! kind of error (clients branch on it), a `title` fixed per type, the
//! HTTP `status`, a `detail` about this occurrence, and extension members
//! with the facts a client needs (the rule broken, the versions compared,
//! the fields at fault). Internal failures are logged here, once, and the
//! response says only that nothing was written.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};

use crate::aggregate::DomainError;
use crate::error::CommandError;

pub use http_edge::{PROBLEM_CONTENT_TYPE, Problem};

/// The problem `type` slugs this API uses.
pub mod kind {
    pub const MALFORMED_REQUEST: &str = "malformed-request";
    pub const INVALID_FIELDS: &str = "invalid-fields";
    pub const INVALID_HEADER: &str = "invalid-header";
    pub const INVALID_ID: &str = "invalid-id";
    pub const BODY_TOO_LARGE: &str = "body-too-large";
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported-media-type";
    pub const NOT_FOUND: &str = "not-found";
    pub const ROUTE_NOT_FOUND: &str = "route-not-found";
    pub const METHOD_NOT_ALLOWED: &str = "method-not-allowed";
    pub const BUSINESS_RULE_VIOLATED: &str = "business-rule-violated";
    pub const PRECONDITION_FAILED: &str = "precondition-failed";
    pub const CONCURRENCY_CONFLICT: &str = "concurrency-conflict";
    pub const IDEMPOTENCY_KEY_REUSED: &str = "idempotency-key-reused";
    pub const IDEMPOTENCY_KEY_IN_FLIGHT: &str = "idempotency-key-in-flight";
    pub const STORE_UNAVAILABLE: &str = "store-unavailable";
    pub const OUTCOME_UNKNOWN: &str = "outcome-unknown";
    pub const DATA_DAMAGED: &str = "data-damaged";
    pub const NOT_IMPLEMENTED: &str = "not-implemented";
    pub const OVERLOADED: &str = "overloaded";
    pub const TIMEOUT: &str = "timeout";
    pub const REQUEST_TIMEOUT: &str = "request-timeout";
    pub const INTERNAL: &str = "internal";
    pub const PERSONAL_DATA_UNREADABLE: &str = "personal-data-unreadable";
    pub const UPCAST: &str = "upcast";
}

/// A `400` with the title of its kind.
pub fn bad_request(slug: &'static str, detail: impl Into<String>) -> Problem {
    let title = match slug {
        kind::INVALID_FIELDS => "Invalid fields",
        kind::INVALID_HEADER => "Invalid header",
        kind::INVALID_ID => "Invalid id",
        _ => "Malformed request",
    };
    Problem::new(StatusCode::BAD_REQUEST, slug, title, detail)
}

/// A failure of the server itself, logged with its cause; the client
/// learns only that nothing was written.
pub fn internal(cause: &dyn std::fmt::Display) -> Problem {
    tracing::error!(error = %cause, "command failed on an internal error");
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        kind::INTERNAL,
        "Internal error",
        "the server could not complete the command; nothing was written",
    )
}

fn retry_after(seconds: u32) -> (HeaderName, HeaderValue) {
    (header::RETRY_AFTER, HeaderValue::from(seconds))
}

/// The entity tag of a stream version, as sent in `ETag` and expected in
/// `If-Match`.
pub fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

impl<E: DomainError> From<CommandError<E>> for Problem {
    fn from(err: CommandError<E>) -> Problem {
        match err {
            CommandError::Rejected(e) => {
                let mut p = Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    kind::BUSINESS_RULE_VIOLATED,
                    "Business rule violated",
                    e.to_string(),
                )
                .with("rule", e.rule());
                for (k, v) in e.details() {
                    p = p.with(&k, v);
                }
                p
            }
            CommandError::NotFound { stream } => Problem::new(
                StatusCode::NOT_FOUND,
                kind::NOT_FOUND,
                "Not found",
                format!("{stream} does not exist"),
            ),
            CommandError::VersionMismatch {
                stream,
                expected,
                current,
            } => Problem::new(
                StatusCode::PRECONDITION_FAILED,
                kind::PRECONDITION_FAILED,
                "Precondition failed",
                format!(
                    "If-Match expected version {expected} of {stream}, which is at version \
                     {current}; reload it and decide again"
                ),
            )
            .with("expected_version", expected)
            .with("current_version", current)
            .with_header(header::ETAG, etag(current)),
            CommandError::Conflict { stream, attempts } => Problem::new(
                StatusCode::CONFLICT,
                kind::CONCURRENCY_CONFLICT,
                "Concurrency conflict",
                format!(
                    "{stream} was changed concurrently on each of {attempts} attempts; \
                     nothing was written, the command can be retried"
                ),
            )
            .with("attempts", attempts)
            .with_header(retry_after(1).0, retry_after(1).1),
            CommandError::IdempotencyKeyReused { key } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                kind::IDEMPOTENCY_KEY_REUSED,
                "Idempotency key reused",
                "this Idempotency-Key was already used for a different request \
                 (another method, path or body); use a new key for a new request",
            )
            .with("idempotency_key", key),
            CommandError::IdempotencyKeyInFlight { key } => Problem::new(
                StatusCode::CONFLICT,
                kind::IDEMPOTENCY_KEY_IN_FLIGHT,
                "Request in progress",
                "a request with this Idempotency-Key is still being processed; retry later",
            )
            .with("idempotency_key", key)
            .with_header(retry_after(1).0, retry_after(1).1),
            CommandError::Store(event_store::Error::KeyStore(detail)) => {
                // A missing or damaged key is never an erasure: refuse the
                // command and say so, rather than decide on data that reads
                // as "[erased]" by accident.
                tracing::error!(
                    error = %detail,
                    "command failed: the personal-data key store is damaged or incomplete"
                );
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    kind::PERSONAL_DATA_UNREADABLE,
                    "Personal data unreadable",
                    "the aggregate's personal data cannot be decrypted: its key is missing or \
                     damaged (it was not erased); nothing was written, and the key store must \
                     be restored",
                )
            }
            CommandError::Store(event_store::Error::Upcast {
                event_type,
                version,
                detail,
            }) => {
                // The code is behind the data (a missing upcaster, a step
                // that fails on it): say which event, so that an operator
                // knows what to add or fix.
                tracing::error!(
                    event_type = %event_type,
                    version,
                    error = %detail,
                    "command failed: an event of the aggregate cannot be upcast"
                );
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    kind::UPCAST,
                    "Event cannot be upcast",
                    format!(
                        "the aggregate's history holds a {event_type} event at schema version \
                         {version} that this build cannot bring to its current version \
                         ({detail}); nothing was written"
                    ),
                )
                .with("event_type", event_type)
                .with("version", version)
            }
            CommandError::Store(e) => store_failure(e),
            other => internal(&other),
        }
    }
}

/// A store that refuses appends, and why: nothing was written.
fn refused(state: &str, reason: &str) -> Problem {
    tracing::error!(error = %reason, "command failed: the store refuses appends");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        kind::STORE_UNAVAILABLE,
        "Store unavailable",
        format!("the event store {state}: {reason}; nothing was written"),
    )
    .with_header(retry_after(1).0, retry_after(1).1)
}

/// A command the store could not serve: why, and whether anything may have
/// been written, which decides how a client may retry.
fn store_failure(e: event_store::Error) -> Problem {
    use event_store::Error as E;
    match e {
        E::Indeterminate(reason) => {
            tracing::error!(error = %reason, "command outcome unknown: the store failed while committing it");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                kind::OUTCOME_UNKNOWN,
                "Outcome unknown",
                format!(
                    "the event store failed while committing this command ({reason}); it may \
                     or may not have been applied. Retry it with the same Idempotency-Key \
                     (a retry then answers with the first outcome), or read the aggregate \
                     before deciding to send it again"
                ),
            )
            .with_header(retry_after(1).0, retry_after(1).1)
        }
        E::Corruption {
            file,
            offset,
            detail,
        } => {
            tracing::error!(file = %file.display(), offset, error = %detail, "command failed: stored data is damaged");
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                kind::DATA_DAMAGED,
                "Stored data is damaged",
                format!(
                    "the aggregate's events cannot be read: the event log is damaged in {} at \
                     offset {offset} ({detail}); nothing was written, and the store accepts no \
                     appends until an operator has checked it (`annals verify`)",
                    file.display()
                ),
            )
            .with("file", file.display().to_string())
            .with("offset", offset)
        }
        E::ReadOnly(reason) => refused("is read-only", &reason),
        E::Poisoned(reason) => refused("stopped accepting appends", &reason),
        // A disk that fails a read: the cause is the operator's to see.
        e @ E::Io { .. } => refused("cannot read its files", &e.to_string()),
        // Closed, unreachable: nothing a client can act on beyond a retry.
        e if e.is_store_failure() => {
            tracing::error!(error = %e, "command failed: the store is unavailable");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                kind::STORE_UNAVAILABLE,
                "Store unavailable",
                "the event store cannot take commands right now; nothing was written",
            )
            .with_header(retry_after(1).0, retry_after(1).1)
        }
        other => internal(&other),
    }
}
