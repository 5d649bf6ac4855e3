//! RFC 9457 problem documents, shared by the admin and query APIs.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};

/// The media type of problem documents.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// The problem `type` URIs of the read side, one per kind of error.
pub mod problem_type {
    pub const INVALID_REQUEST: &str = "urn:annals:problem:invalid-request";
    pub const INVALID_ID: &str = "urn:annals:problem:invalid-id";
    pub const NOT_FOUND: &str = "urn:annals:problem:not-found";
    pub const CONFLICT: &str = "urn:annals:problem:conflict";
    pub const NOT_YET_VISIBLE: &str = "urn:annals:problem:position-not-yet-visible";
    pub const PROJECTION_FAILED: &str = "urn:annals:problem:projection-failed";
    pub const UNAVAILABLE: &str = "urn:annals:problem:unavailable";
    pub const INTERNAL: &str = "urn:annals:problem:internal";
    pub const METHOD_NOT_ALLOWED: &str = "urn:annals:problem:method-not-allowed";
}

/// An RFC 9457 problem document: `type`, `title`, `status`, `detail` and
/// extension members, sent as `application/problem+json`, with optional
/// extra headers (e.g. `Retry-After`).
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub problem_type: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub extensions: Map<String, Value>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    problem_type: &'a str,
    title: &'a str,
    status: u16,
    detail: &'a str,
    #[serde(flatten)]
    extensions: &'a Map<String, Value>,
}

impl Problem {
    pub fn new(
        status: StatusCode,
        problem_type: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            problem_type,
            title,
            detail: detail.into(),
            extensions: Map::new(),
            headers: Vec::new(),
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            problem_type::INVALID_REQUEST,
            "Invalid request",
            detail,
        )
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            problem_type::NOT_FOUND,
            "Not found",
            detail,
        )
    }

    /// A failure of the server, logged here once; the client learns only
    /// that it happened.
    pub fn internal(error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            problem_type::INTERNAL,
            "Internal error",
            "the server could not answer; the error is in its log",
        )
    }

    /// Adds an extension member.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extensions.insert(key.to_owned(), value.into());
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&Body {
            problem_type: self.problem_type,
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
            extensions: &self.extensions,
        })
        .unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
        );
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response
    }
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
    Problem::bad_request(detail.to_string())
}

/// The schema of the body [`Problem`] renders: the one every annals API
/// shares, so that a document merging several stays consistent.
impl utoipa::PartialSchema for Problem {
    fn schema() -> RefOr<Schema> {
        event_store::remote::wire::problem_document_schema()
    }
}

impl utoipa::ToSchema for Problem {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("Problem")
    }
}

/// An OpenAPI response whose body is a [`Problem`] document; headers can
/// be added before it is built.
pub fn problem_response(description: &str) -> ResponseBuilder {
    use utoipa::ToSchema;
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name(Problem::name())))
        .build();
    ResponseBuilder::new()
        .description(description)
        .content(PROBLEM_CONTENT_TYPE, content)
}

/// The `Retry-After` header of a `503`, for OpenAPI documents.
pub fn retry_after_header() -> utoipa::openapi::Header {
    HeaderBuilder::new()
        .schema(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0)),
        )
        .description(Some("Seconds to wait before trying again."))
        .build()
}
