//! The admin web UI every process serves at `/ui`: one page and its
//! script and style sheet, compiled into the binary (no CDN, works
//! offline), and `/ui/config.json` telling the page which of the
//! process's APIs exist, so that it asks for nothing that is not there.
//!
//! The assets hold no data and are served without a key; everything the
//! page shows comes from the process's APIs (`/store/...` for the store
//! it uses, `/projections`, `/sagas`, `/health/ready`), each behind its
//! role, with the API key the operator gives the page (kept in the tab's
//! session storage, sent as a bearer token). A strict content security
//! policy allows the page's own script and styles alone.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Serialize;

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");

const POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
     script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'none'";

/// The kind of process serving the page.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Process {
    Serve,
    Store,
    CommandApi,
    Projector,
    QueryApi,
}

/// What the page may ask of this process (`/ui/config.json`).
#[derive(Debug, Clone, Serialize)]
pub struct UiConfig {
    /// The application's name.
    pub app: String,
    pub process: Process,
    /// The path the store's read API is served under (`""` in the store
    /// itself), absent when the process has no store.
    pub store: Option<&'static str>,
    /// Whether `/projections` (the projector's admin API) is served.
    pub projections: bool,
    /// Whether `/sagas` is served.
    pub sagas: bool,
}

/// The prefix the processes other than the store serve its read API at.
pub const STORE_PREFIX: &str = "/store";

impl UiConfig {
    pub fn new(app: &str, process: Process) -> Self {
        Self {
            app: app.to_owned(),
            process,
            store: None,
            projections: false,
            sagas: false,
        }
    }
}

/// The OpenAPI document of the store's read routes as a process other
/// than the store serves them (under [`STORE_PREFIX`]).
pub fn store_openapi() -> utoipa::openapi::OpenApi {
    utoipa::openapi::OpenApiBuilder::new()
        .build()
        .nest(STORE_PREFIX, event_store_http::server::read_openapi())
}

/// `/ui` and its assets; open to all (they carry no data).
pub fn routes(config: UiConfig) -> Router {
    let config = serde_json::to_string(&config).unwrap_or_else(|_| "{}".to_owned());
    Router::new()
        .route(
            "/ui",
            get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
        )
        .route("/ui/", get(|| async { Redirect::permanent("/ui") }))
        .route(
            "/ui/app.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
        .route(
            "/ui/config.json",
            get(move || async move { asset(config, "application/json") }),
        )
}

/// `body` as `content_type`, with the headers every asset carries.
fn asset(body: impl IntoResponse, content_type: &'static str) -> Response {
    with_headers(body.into_response(), content_type)
}

fn with_headers(mut response: Response, content_type: &'static str) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // A new binary may bring a new page: always ask.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
