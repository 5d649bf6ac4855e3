//! The one error answer of every annals HTTP surface: an RFC 9457 problem
//! document, `application/problem+json`.
//!
//! A problem has a `type` URI `urn:annals:problem:<slug>` naming the kind
//! of error (clients branch on it), a `title` fixed per type, the HTTP
//! `status`, a `detail` about this occurrence, and extension members with
//! the facts a client needs (the rule broken, the versions compared, the
//! parameter or position at fault). Commands, queries, projection admin,
//! the store and the connection edge all answer with this type, so a
//! client reads one shape everywhere and an OpenAPI document merging
//! several APIs holds one `Problem` schema.
//!
//! ```
//! use axum::http::StatusCode;
//! use http_edge::Problem;
//!
//! let problem = Problem::new(StatusCode::CONFLICT, "insufficient-funds", "Insufficient funds",
//!     "the account holds 10.00 EUR")
//!     .with("balance", 1000);
//! assert_eq!(problem.type_uri(), "urn:annals:problem:insufficient-funds");
//! assert_eq!(problem.to_json()["balance"], 1000);
//! ```

use std::borrow::Cow;

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::{Ref, RefOr};

/// The media type of problem documents.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// What every problem `type` URI starts with; the slug follows.
pub const TYPE_PREFIX: &str = "urn:annals:problem:";

/// An RFC 9457 problem document, with the response headers it goes with
/// (`Retry-After`, `ETag`, ...).
///
/// Boxed, so that a `Result<T, Problem>` stays small on the happy path.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem(Box<Document>);

#[derive(Debug, Clone, PartialEq)]
struct Document {
    status: StatusCode,
    slug: Cow<'static, str>,
    title: Cow<'static, str>,
    detail: String,
    extensions: Map<String, Value>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Problem {
    /// A problem of type `urn:annals:problem:<slug>`.
    pub fn new(
        status: StatusCode,
        slug: impl Into<Cow<'static, str>>,
        title: impl Into<Cow<'static, str>>,
        detail: impl Into<String>,
    ) -> Self {
        Self(Box::new(Document {
            status,
            slug: slug.into(),
            title: title.into(),
            detail: detail.into(),
            extensions: Map::new(),
            headers: Vec::new(),
        }))
    }

    /// A problem from a document another annals process sent (a store
    /// answer passed on): its members as they were, its status, and no
    /// headers. `None` when it is not a problem document.
    pub fn from_document(document: &Value) -> Option<Self> {
        let Value::Object(members) = document else {
            return None;
        };
        let slug = members.get("type")?.as_str()?.strip_prefix(TYPE_PREFIX)?;
        let status = members
            .get("status")?
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .and_then(|s| StatusCode::from_u16(s).ok())?;
        let title = members.get("title")?.as_str()?;
        let detail = members.get("detail").and_then(Value::as_str).unwrap_or("");
        let mut problem = Self::new(status, slug.to_owned(), title.to_owned(), detail);
        for (name, value) in members {
            if !matches!(name.as_str(), "type" | "title" | "status" | "detail") {
                problem.0.extensions.insert(name.clone(), value.clone());
            }
        }
        Some(problem)
    }

    /// `400`: a request that can never succeed as sent.
    pub fn bad_request(slug: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, slug, "Invalid request", detail)
    }

    /// `404 not-found`.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    /// `500 internal`: a failure of the server, logged here, once, with its
    /// cause; the client learns only that it happened.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed on an internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the server could not answer; the error is in its log",
        )
    }

    /// Adds an extension member (a standard member's name is ignored).
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.0.extensions.insert(name.to_owned(), value.into());
        self
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.0.headers.push((name, value));
        self
    }

    /// Adds `Retry-After: <seconds>`.
    pub fn retry_after(self, seconds: u32) -> Self {
        self.with_header(header::RETRY_AFTER, HeaderValue::from(seconds))
    }

    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    pub fn slug(&self) -> &str {
        &self.0.slug
    }

    pub fn title(&self) -> &str {
        &self.0.title
    }

    pub fn detail(&self) -> &str {
        &self.0.detail
    }

    /// The full `type` URI.
    pub fn type_uri(&self) -> String {
        format!("{TYPE_PREFIX}{}", self.0.slug)
    }

    pub fn extension(&self, name: &str) -> Option<&Value> {
        self.0.extensions.get(name)
    }

    /// The document, as sent.
    pub fn to_json(&self) -> Value {
        let mut body = Map::with_capacity(4 + self.0.extensions.len());
        body.insert("type".into(), self.type_uri().into());
        body.insert("title".into(), self.0.title.as_ref().into());
        body.insert("status".into(), self.0.status.as_u16().into());
        body.insert("detail".into(), self.0.detail.clone().into());
        for (name, value) in &self.0.extensions {
            body.entry(name.clone()).or_insert_with(|| value.clone());
        }
        Value::Object(body)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.to_json()).unwrap_or_default();
        let mut response = (self.0.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
        );
        for (name, value) in self.0.headers {
            headers.insert(name, value);
        }
        response
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.0.status.as_u16(),
            self.0.slug,
            self.0.detail
        )
    }
}

/// The schema of a problem document, the same in every annals API.
pub fn schema() -> RefOr<Schema> {
    fn text(description: &str) -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(description))
    }
    ObjectBuilder::new()
        .description(Some(
            "An RFC 9457 problem document. Clients branch on `type`; \
             the extension members next to the standard ones carry the facts \
             of the occurrence (the parameter, position or projection at fault).",
        ))
        .property(
            "type",
            text("The kind of error: `urn:annals:problem:<slug>`.")
                .format(Some(SchemaFormat::Custom("uri".into()))),
        )
        .required("type")
        .property("title", text("A short summary, fixed for each `type`."))
        .required("title")
        .property(
            "status",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(400))
                .maximum(Some(599))
                .description(Some("The HTTP status code of the response.")),
        )
        .required("status")
        .property("detail", text("What went wrong in this occurrence."))
        .required("detail")
        .additional_properties(Some(AdditionalProperties::FreeForm(true)))
        .build()
        .into()
}

impl utoipa::PartialSchema for Problem {
    fn schema() -> RefOr<Schema> {
        schema()
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
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("Problem")))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_problem_renders_as_its_document_with_its_headers() {
        let problem = Problem::new(StatusCode::CONFLICT, "clash", "Clash", "two at once")
            .with("type", "ignored: a standard member")
            .with("stream", "account-1")
            .retry_after(2);
        let response = problem.clone().into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            PROBLEM_CONTENT_TYPE
        );
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        assert_eq!(
            body,
            serde_json::json!({
                "type": "urn:annals:problem:clash", "title": "Clash", "status": 409,
                "detail": "two at once", "stream": "account-1",
            })
        );
        assert_eq!(body, problem.to_json());
    }
}
