//! The store over HTTP: the router `annals store` serves, for any
//! [`EventStore`] (in practice the embedded one).
//!
//! | method and path | what |
//! |---|---|
//! | `GET /info` | format version and read page limit |
//! | `POST /streams/{id}` | append to one stream (`{expected_version, events}`) |
//! | `POST /transactions` | atomic append to several streams (`{appends: [...]}`) |
//! | `POST /batch` | several transactions, each committed or refused on its own |
//! | `POST /appends` | an append channel: transactions as NDJSON lines, outcomes as lines back, each transaction committed or refused on its own |
//! | `GET /streams?prefix=&after=&limit=` | list streams by prefix, paged (walks every index: for operators) |
//! | `GET /categories?limit=` | stream categories with their streams and events |
//! | `GET /streams/{id}?from=&direction=&max_count=` | read a stream |
//! | `GET /streams/{id}/load?snapshot_schema=` | latest snapshot + events after it |
//! | `GET`/`PUT /streams/{id}/snapshot` | latest snapshot / save one (`?version=&schema_version=`, body = state bytes) |
//! | `GET /all?from=&max_count=` | read the log in position order |
//! | `GET /subscriptions?from=&stream_prefix=&event_type=` | push subscription, Server-Sent Events; resumes after `Last-Event-ID` |
//! | `GET /stats`, `GET /head` | counters, head position |
//! | `GET /health/live`, `GET /health/ready` | liveness; readiness (the store accepts appends) |
//!
//! Errors are RFC 9457 problem documents (`application/problem+json`).
//! With a token configured, every route but `/health/*` needs
//! `Authorization: Bearer <token>` (one shared secret, compared in
//! constant time). For keys with roles, leave it unset and put a layer in
//! front of the router, as `annals store` does; that layer may limit a
//! caller to stream prefixes with a [`StreamScope`] in the request's
//! extensions (`403` outside them, no `GET /all`, subscriptions narrowed).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{
    DefaultBodyLimit, FromRequest, FromRequestParts, Path, RawQuery, Request, State,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::{Stream, StreamExt};

mod channel;

use crate::scope::StreamScope;
use crate::wire::{self, Problem, ServerInfo, WireHead, WireLoaded, WireResults};
use event_store::DATA_FORMAT_VERSION;
use event_store::Error;
use event_store::EventStore;
use event_store::{Direction, EventFilter, Position, ReadFrom, StreamId};

/// How the store server behaves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// When set, requests other than health checks must carry it as a bearer token.
    pub token: Option<String>,
    /// Largest request body accepted.
    pub body_bytes_max: usize,
    /// Interval of keep-alive comments on idle subscriptions.
    pub keep_alive: Duration,
    /// Set to `true` when the server is to stop: every subscription then
    /// ends (its clients reconnect, to this server once it is back or to
    /// another), so that a graceful shutdown does not wait on them for ever.
    pub stopping: Option<tokio::sync::watch::Receiver<bool>>,
    /// Said by every ready answer (`warnings`): what the operator turned
    /// off, such as authentication.
    pub warnings: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            token: None,
            body_bytes_max: 32 << 20,
            keep_alive: Duration::from_secs(15),
            stopping: None,
            warnings: Vec::new(),
        }
    }
}

#[derive(Clone)]
struct AppState {
    store: Arc<dyn EventStore>,
    config: Arc<ServerConfig>,
}

/// An error rendered as a problem document (boxed: problems are large and
/// travel through every handler's `Result`).
struct ApiError(Box<Problem>);

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        if err.is_store_failure() {
            tracing::error!(error = %err, "store request failed");
        }
        ApiError(Box::new(wire::problem_of(&err)))
    }
}

impl ApiError {
    fn bad_request(detail: impl Into<String>) -> Self {
        ApiError(Box::new(Problem {
            problem_type: wire::problem::INVALID_REQUEST.into(),
            title: "Invalid request".into(),
            status: 400,
            detail: detail.into(),
            ..Problem::default()
        }))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        problem_response(&self.0)
    }
}

/// The store's problem documents are built from its errors with the members
/// `RemoteStore` reads back ([`wire::Problem`]); they go out as the
/// problem type every annals surface answers with.
fn problem_response(p: &Problem) -> Response {
    let document = serde_json::to_value(p).unwrap_or_default();
    match http_edge::Problem::from_document(&document) {
        Some(problem) => problem.into_response(),
        None => http_edge::Problem::internal(&format!("an unrenderable problem: {document}"))
            .into_response(),
    }
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(e) => {
            ApiError::from(Error::Remote(format!("encoding the response: {e}"))).into_response()
        }
    }
}

/// The OpenAPI description of the store API, served at `/openapi.json`.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    info(
        title = "annals store API",
        description = "The event store over HTTP: appends with expected versions, reads, snapshots and push subscriptions."
    ),
    paths(
        live,
        ready,
        info,
        list_streams,
        list_categories,
        append,
        transaction,
        read_stream,
        load,
        get_snapshot,
        put_snapshot,
        read_all,
        batch,
        appends,
        stats,
        head,
        subscribe,
        forget_subject
    ),
    components(schemas(wire::Problem, wire::WireEvent, wire::WireNewEvent))
)]
pub struct StoreApi;

/// The OpenAPI description of [`read_router`]'s routes.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        info,
        list_streams,
        list_categories,
        read_stream,
        read_all,
        stats,
        head,
        subscribe
    ),
    components(schemas(wire::Problem, wire::WireEvent))
)]
struct StoreReadApi;

/// The OpenAPI document of [`read_router`], to nest under the prefix a
/// process serves it at.
pub fn read_openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;
    StoreReadApi::openapi()
}

async fn openapi() -> Response {
    use utoipa::OpenApi;
    json(StatusCode::OK, &StoreApi::openapi())
}

/// The store API router.
pub fn router(store: Arc<dyn EventStore>, config: ServerConfig) -> Router {
    let state = AppState {
        store,
        config: Arc::new(config),
    };
    let api = read_routes()
        .route("/streams/{stream}", post(append))
        .route("/streams/{stream}/load", get(load))
        .route(
            "/streams/{stream}/snapshot",
            get(get_snapshot).put(put_snapshot),
        )
        .route("/transactions", post(transaction))
        .route("/batch", post(batch))
        .route("/appends", post(appends))
        .route("/subjects/{stream}", axum::routing::delete(forget_subject))
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/openapi.json", get(openapi))
        .merge(api)
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.body_bytes_max))
        .with_state(state)
}

/// The store's read routes alone (streams and their listing, categories,
/// the log, subscriptions, stats, head), for a process that serves the
/// store it uses to operators under a prefix of its own: `annals serve`
/// and the split processes nest it at `/store` for the admin UI. No
/// fallback (the process has its own) and no token check (its layer in
/// front decides who may read).
pub fn read_router(store: Arc<dyn EventStore>, config: ServerConfig) -> Router {
    read_routes().with_state(AppState {
        store,
        config: Arc::new(config),
    })
}

/// The routes that only read: [`read_router`]'s, and part of [`router`]'s.
fn read_routes() -> Router<AppState> {
    Router::new()
        .route("/info", get(info))
        .route("/streams", get(list_streams))
        .route("/categories", get(list_categories))
        .route("/streams/{stream}", get(read_stream))
        .route("/all", get(read_all))
        .route("/subscriptions", get(subscribe))
        .route("/stats", get(stats))
        .route("/head", get(head))
}

/// An unknown path, as a problem document.
async fn no_route(uri: axum::http::Uri) -> ApiError {
    ApiError(Box::new(Problem {
        problem_type: wire::problem::NOT_FOUND.into(),
        title: "Not found".into(),
        status: 404,
        detail: format!("no resource at {} (see /openapi.json)", uri.path()),
        ..Problem::default()
    }))
}

/// A known path asked with a method it does not serve, as a problem
/// document (axum keeps the `Allow` header).
async fn method_not_allowed(uri: axum::http::Uri) -> ApiError {
    ApiError(Box::new(Problem {
        problem_type: wire::problem::METHOD_NOT_ALLOWED.into(),
        title: "Method not allowed".into(),
        status: 405,
        detail: format!(
            "{} does not accept this method (see /openapi.json)",
            uri.path()
        ),
        ..Problem::default()
    }))
}

/// A request body, read whole within the body limit; every refusal is a
/// problem document: over the limit `413`, stalled past the connection's
/// idle timeout `408`, cut short `400`.
struct Body(Bytes);

impl FromRequest<AppState> for Body {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let max = state.config.body_bytes_max;
        let too_large = || {
            ApiError(Box::new(Problem {
                problem_type: wire::problem::LIMIT_EXCEEDED.into(),
                title: "Body too large".into(),
                status: 413,
                detail: format!("the request body is over {max} bytes"),
                limit: Some("body_bytes_max".into()),
                max: Some(max as u64),
                ..Problem::default()
            }))
        };
        // A declared length over the limit is refused before a byte of the
        // body is read.
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|length| length > max as u64) {
            return Err(too_large());
        }
        match Bytes::from_request(request, state).await {
            Ok(bytes) => Ok(Body(bytes)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(too_large())
            }
            Err(rejection) if http_edge::timed_out(&rejection) => {
                Err(ApiError(Box::new(Problem {
                    problem_type: wire::problem::REQUEST_TIMEOUT.into(),
                    title: "Request timeout".into(),
                    status: 408,
                    detail: "the request body stopped arriving; nothing was done".into(),
                    ..Problem::default()
                })))
            }
            Err(rejection) => Err(ApiError::bad_request(format!(
                "the request body could not be read: {rejection}"
            ))),
        }
    }
}

/// The `{stream}` of a path; a path that does not decode is `400`.
struct StreamPath(String);

impl<S: Send + Sync> FromRequestParts<S> for StreamPath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(stream)) => Ok(StreamPath(stream)),
            Err(rejection) => Err(ApiError::bad_request(format!("invalid path: {rejection}"))),
        }
    }
}

/// The caller's [`StreamScope`], when the layer in front put one in the
/// request's extensions.
struct Scope(Option<StreamScope>);

impl<S: Send + Sync> FromRequestParts<S> for Scope {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Scope(parts.extensions.get::<StreamScope>().cloned()))
    }
}

impl Scope {
    /// `Ok` when the caller may touch `stream`; else a `403` naming the
    /// prefixes it may.
    fn allow(&self, stream: &StreamId) -> Result<(), ApiError> {
        match &self.0 {
            Some(scope) if !scope.allows(stream.as_str()) => Err(forbidden(
                format!(
                    "this key is limited to the streams starting with {:?}; {stream} is not one",
                    scope.prefixes()
                ),
                Some(stream.as_str().to_string()),
            )),
            _ => Ok(()),
        }
    }
}

fn forbidden(detail: String, stream: Option<String>) -> ApiError {
    ApiError(Box::new(Problem {
        problem_type: wire::problem::FORBIDDEN.into(),
        title: "Forbidden".into(),
        status: 403,
        detail,
        stream,
        ..Problem::default()
    }))
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.config.token
        && !presents(request.headers(), token)
    {
        let mut response = problem_response(&Problem {
            problem_type: wire::problem::UNAUTHORIZED.into(),
            title: "Unauthorized".into(),
            status: 401,
            detail: "this store requires `Authorization: Bearer <token>`".into(),
            ..Problem::default()
        });
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"annals\""),
        );
        return response;
    }
    next.run(request).await
}

/// Whether `headers` carry `Authorization: Bearer <token>` (the scheme in
/// any case). The SHA-256 digests of the two are compared in constant
/// time, so neither the time taken nor the digests' lengths tell how much
/// of a guess was right.
fn presents(headers: &HeaderMap, token: &str) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    let Some((scheme, presented)) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
    else {
        return false;
    };
    let presented: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
    let expected: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    scheme.eq_ignore_ascii_case("bearer") && bool::from(presented.ct_eq(&expected))
}

#[utoipa::path(get, path = "/health/live", tag = "health", responses((status = 200, description = "The process is up")))]
async fn live() -> Response {
    json(StatusCode::OK, &serde_json::json!({"status": "live"}))
}

#[utoipa::path(get, path = "/health/ready", tag = "health", responses((status = 200, description = "The store accepts appends; `warnings` says when it runs with `--insecure`"), (status = 503, description = "It does not, and why", body = wire::Problem, content_type = "application/problem+json")))]
async fn ready(State(state): State<AppState>) -> Response {
    match state.store.ready().await {
        Ok(()) if state.config.warnings.is_empty() => {
            json(StatusCode::OK, &serde_json::json!({"status": "ready"}))
        }
        Ok(()) => json(
            StatusCode::OK,
            &serde_json::json!({"status": "ready", "warnings": state.config.warnings}),
        ),
        Err(e) => {
            let mut p = wire::problem_of(&e);
            p.status = 503;
            problem_response(&p)
        }
    }
}

#[utoipa::path(get, path = "/info", tag = "store", responses((status = 200, body = ServerInfo)))]
async fn info(State(state): State<AppState>) -> Response {
    json(
        StatusCode::OK,
        &ServerInfo {
            data_format_version: DATA_FORMAT_VERSION,
            read_count_max: state.store.read_page_max(),
        },
    )
}

fn stream_id(raw: &str) -> Result<StreamId, ApiError> {
    StreamId::new(raw).map_err(|e| ApiError::from(Error::from(e)))
}

/// Decodes a JSON body; every struct is read from a JSON object only, as
/// the OpenAPI document says (serde alone would also read an array).
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    http_edge::json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))
}

/// Query pairs, allowing repeated keys (`stream_prefix=a&stream_prefix=b`).
fn query_pairs(raw: Option<String>) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str(raw.as_deref().unwrap_or_default())
        .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))
}

fn param<T: std::str::FromStr>(
    pairs: &[(String, String)],
    name: &str,
) -> Result<Option<T>, ApiError> {
    match pairs.iter().rev().find(|(k, _)| k == name) {
        None => Ok(None),
        Some((_, v)) => v.parse().map(Some).map_err(|_| {
            ApiError::bad_request(format!("query parameter {name}={v:?} is not valid"))
        }),
    }
}

#[utoipa::path(post, path = "/streams/{stream}", tag = "store", params(("stream" = String, Path, description = "Stream id: ASCII letters, digits and -_.:@+=~")), request_body = wire::WireAppend, responses((status = 200, description = "Committed (or already committed by an earlier identical append)", body = wire::AppendResultSchema), (status = 400, body = wire::Problem, content_type = "application/problem+json"), (status = 409, description = "Wrong expected version; `current` holds the stream's version", body = wire::Problem, content_type = "application/problem+json")))]
async fn append(
    State(state): State<AppState>,
    scope: Scope,
    StreamPath(stream): StreamPath,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let stream = stream_id(&stream)?;
    scope.allow(&stream)?;
    let request: wire::WireAppend = parse_body(&body)?;
    let events = request
        .events
        .into_iter()
        .map(wire::new_event_from_wire)
        .collect();
    let result = state
        .store
        .append(&stream, request.expected_version.0, events)
        .await?;
    Ok(json(StatusCode::OK, &result))
}

#[utoipa::path(post, path = "/transactions", tag = "store", request_body = wire::WireTransaction, responses((status = 200, description = "Every stream's events committed together", body = WireResults), (status = 409, description = "One stream's expected version was wrong; nothing was written", body = wire::Problem, content_type = "application/problem+json")))]
async fn transaction(
    State(state): State<AppState>,
    scope: Scope,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let request: wire::WireTransaction = parse_body(&body)?;
    let results = commit_one(&state, &scope, request).await?;
    Ok(json(StatusCode::OK, &WireResults { results }))
}

/// At most this many transactions in one batch.
pub const BATCH_TRANSACTIONS_MAX: usize = 256;

#[utoipa::path(post, path = "/batch", tag = "store", request_body = wire::WireBatch, responses((status = 200, description = "Each transaction's results or problem, in order; each committed or refused on its own", body = wire::WireBatchResults), (status = 400, description = "The batch itself is malformed or too large", body = wire::Problem, content_type = "application/problem+json")))]
async fn batch(
    State(state): State<AppState>,
    scope: Scope,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let request: wire::WireBatch = parse_body(&body)?;
    if request.transactions.len() > BATCH_TRANSACTIONS_MAX {
        return Err(ApiError::bad_request(format!(
            "{} transactions in one batch; at most {BATCH_TRANSACTIONS_MAX}",
            request.transactions.len()
        )));
    }
    // Submitted together, so that the store's writer commits them in as
    // few group commits as it can.
    let outcomes = futures_util::future::join_all(
        request
            .transactions
            .into_iter()
            .map(|t| commit_one(&state, &scope, t)),
    )
    .await;
    let outcomes = outcomes
        .into_iter()
        .map(|outcome| match outcome {
            Ok(results) => wire::WireOutcome {
                results: Some(results),
                problem: None,
            },
            Err(ApiError(problem)) => wire::WireOutcome {
                results: None,
                problem: Some(*problem),
            },
        })
        .collect();
    Ok(json(StatusCode::OK, &wire::WireBatchResults { outcomes }))
}

#[utoipa::path(post, path = "/appends", tag = "store", request_body(content = wire::WireChannelAppend, content_type = "application/x-ndjson", description = "One transaction a line, each with an id of the caller's, for as long as the channel stays open"), responses((status = 200, description = "One outcome a line (results or a problem, under the transaction's id), as each is settled; each transaction committed or refused on its own", body = wire::WireChannelOutcome, content_type = "application/x-ndjson")))]
async fn appends(State(state): State<AppState>, scope: Scope, request: Request) -> Response {
    let rate = request.extensions().get::<crate::RequestRate>().cloned();
    channel::open(state, scope, rate, request.into_body())
}

/// One transaction (alone, or one of a batch).
async fn commit_one(
    state: &AppState,
    scope: &Scope,
    transaction: wire::WireTransaction,
) -> Result<Vec<event_store::AppendResult>, ApiError> {
    let appends = transaction
        .appends
        .into_iter()
        .map(wire::append_from_wire)
        .collect::<Result<Vec<_>, Error>>()?;
    for append in &appends {
        scope.allow(&append.stream_id)?;
    }
    Ok(state.store.append_many(appends).await?)
}

#[utoipa::path(get, path = "/streams/{stream}", tag = "store", params(("stream" = String, Path, description = "Stream id: ASCII letters, digits and -_.:@+=~"), ("from" = Option<String>, Query, description = "start, end or a version (inclusive)"), ("direction" = Option<String>, Query, description = "forward (default) or backward"), ("max_count" = Option<usize>, Query, description = "At most this many events")), responses((status = 200, body = wire::WireSlice), (status = 400, body = wire::Problem, content_type = "application/problem+json")))]
async fn read_stream(
    State(state): State<AppState>,
    scope: Scope,
    StreamPath(stream): StreamPath,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let stream = stream_id(&stream)?;
    scope.allow(&stream)?;
    let pairs = query_pairs(query)?;
    let from = match pairs
        .iter()
        .rev()
        .find(|(k, _)| k == "from")
        .map(|(_, v)| v.as_str())
    {
        None | Some("start") => ReadFrom::Start,
        Some("end") => ReadFrom::End,
        Some(v) => ReadFrom::Version(v.parse().map_err(|_| {
            ApiError::bad_request(format!("from={v:?} is not start, end or a version"))
        })?),
    };
    let direction = match pairs
        .iter()
        .rev()
        .find(|(k, _)| k == "direction")
        .map(|(_, v)| v.as_str())
    {
        None | Some("forward") => Direction::Forward,
        Some("backward") => Direction::Backward,
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "direction={v:?} is not forward or backward"
            )));
        }
    };
    let max_count =
        param::<usize>(&pairs, "max_count")?.unwrap_or(state.store.read_page_max().min(1000));
    let slice = state
        .store
        .read_stream(&stream, from, direction, max_count)
        .await?;
    Ok(json(StatusCode::OK, &wire::slice_to_wire(&slice)?))
}

/// The most a listing returns in one page.
pub const LIST_LIMIT_MAX: usize = 1000;
const LIST_LIMIT_DEFAULT: usize = 100;

/// A listing's `limit` parameter: 1 to [`LIST_LIMIT_MAX`].
fn list_limit(pairs: &[(String, String)]) -> Result<usize, ApiError> {
    match param::<usize>(pairs, "limit")? {
        None => Ok(LIST_LIMIT_DEFAULT),
        Some(n) if (1..=LIST_LIMIT_MAX).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!(
            "limit={n} is out of range: 1 to {LIST_LIMIT_MAX}"
        ))),
    }
}

#[utoipa::path(get, path = "/streams", tag = "store", params(("prefix" = Option<String>, Query, description = "Only streams whose ids start with this (default: all)"), ("after" = Option<String>, Query, description = "The previous page's `next_after`"), ("limit" = Option<usize>, Query, description = "At most this many streams, 1 to 1000 (default 100)")), responses((status = 200, description = "Streams in id order with their version and last position, how many match in all, and `next_after` when more follow. Walks every segment's index: for operators, not hot paths", body = wire::StreamPageSchema), (status = 400, body = wire::Problem, content_type = "application/problem+json")))]
async fn list_streams(
    State(state): State<AppState>,
    scope: Scope,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let pairs = query_pairs(query)?;
    let prefix = param::<String>(&pairs, "prefix")?.unwrap_or_default();
    if let Scope(Some(scope)) = &scope
        && !scope.allows(&prefix)
    {
        return Err(forbidden(
            format!(
                "this key is limited to the streams starting with {:?}; list with one of them as the prefix",
                scope.prefixes()
            ),
            None,
        ));
    }
    let listing = event_store::StreamListing {
        prefix,
        after: param::<String>(&pairs, "after")?,
        limit: list_limit(&pairs)?,
    };
    Ok(json(
        StatusCode::OK,
        &state.store.list_streams(listing).await?,
    ))
}

#[utoipa::path(get, path = "/categories", tag = "store", params(("limit" = Option<usize>, Query, description = "At most this many categories, the first by name, 1 to 1000 (default 100)")), responses((status = 200, description = "Stream categories (a stream id up to its first `-`) with their streams and events; `truncated` when there are more", body = wire::CategoryPageSchema), (status = 400, body = wire::Problem, content_type = "application/problem+json")))]
async fn list_categories(
    State(state): State<AppState>,
    scope: Scope,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    if let Scope(Some(scope)) = &scope {
        return Err(forbidden(
            format!(
                "this key is limited to the streams starting with {:?} and cannot count every category",
                scope.prefixes()
            ),
            None,
        ));
    }
    let pairs = query_pairs(query)?;
    let limit = list_limit(&pairs)?;
    Ok(json(
        StatusCode::OK,
        &state.store.list_categories(limit).await?,
    ))
}

#[utoipa::path(get, path = "/streams/{stream}/load", tag = "store", params(("stream" = String, Path, description = "Stream id: ASCII letters, digits and -_.:@+=~"), ("snapshot_schema" = Option<u32>, Query, description = "Use the latest snapshot when it has this schema version")), responses((status = 200, description = "Latest snapshot and every event after it", body = WireLoaded)))]
async fn load(
    State(state): State<AppState>,
    scope: Scope,
    StreamPath(stream): StreamPath,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let stream = stream_id(&stream)?;
    scope.allow(&stream)?;
    let pairs = query_pairs(query)?;
    let schema = param::<u32>(&pairs, "snapshot_schema")?;
    let loaded = state.store.load(&stream, schema).await?;
    let body = WireLoaded {
        snapshot: loaded.snapshot.as_ref().map(wire::snapshot_to_wire),
        events: loaded
            .events
            .iter()
            .map(wire::event_to_wire)
            .collect::<Result<_, Error>>()?,
        version: loaded.version,
    };
    Ok(json(StatusCode::OK, &body))
}

#[utoipa::path(get, path = "/streams/{stream}/snapshot", tag = "store", params(("stream" = String, Path, description = "Stream id: ASCII letters, digits and -_.:@+=~")), responses((status = 200, body = wire::WireSnapshot), (status = 404, description = "No snapshot", body = wire::Problem, content_type = "application/problem+json")))]
async fn get_snapshot(
    State(state): State<AppState>,
    scope: Scope,
    StreamPath(stream): StreamPath,
) -> Result<Response, ApiError> {
    let stream = stream_id(&stream)?;
    scope.allow(&stream)?;
    match state.store.load_snapshot(&stream).await? {
        Some(snapshot) => Ok(json(StatusCode::OK, &wire::snapshot_to_wire(&snapshot))),
        None => Err(ApiError(Box::new(Problem {
            problem_type: wire::problem::NOT_FOUND.into(),
            title: "No snapshot".into(),
            status: 404,
            detail: format!("stream {stream} has no snapshot"),
            ..Problem::default()
        }))),
    }
}

#[utoipa::path(put, path = "/streams/{stream}/snapshot", tag = "store", params(("stream" = String, Path, description = "Stream id: ASCII letters, digits and -_.:@+=~"), ("version" = u64, Query, description = "The stream version the state reflects"), ("schema_version" = Option<u32>, Query, description = "Version of the state's encoding")), request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The state bytes"), responses((status = 204, description = "Saved durably")))]
async fn put_snapshot(
    State(state): State<AppState>,
    scope: Scope,
    StreamPath(stream): StreamPath,
    RawQuery(query): RawQuery,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let stream = stream_id(&stream)?;
    scope.allow(&stream)?;
    let pairs = query_pairs(query)?;
    let version = param::<u64>(&pairs, "version")?
        .ok_or_else(|| ApiError::bad_request("version is required"))?;
    let schema = param::<u32>(&pairs, "schema_version")?.unwrap_or(1);
    state
        .store
        .save_snapshot(&stream, version, schema, body)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(get, path = "/all", tag = "store", params(("from" = Option<u64>, Query, description = "First position (inclusive, default 1)"), ("max_count" = Option<usize>, Query)), responses((status = 200, description = "The events; with `Accept: application/vnd.annals.events`, in binary: per event a little-endian u32 length and its record body as in the segment files (docs/format.md)", content((wire::WireEvents = "application/json"), (Vec<u8> = "application/vnd.annals.events")))))]
async fn read_all(
    State(state): State<AppState>,
    scope: Scope,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    if let Scope(Some(scope)) = &scope {
        return Err(forbidden(
            format!(
                "this key is limited to the streams starting with {:?} and cannot read the whole log; \
                 subscribe with stream_prefix instead",
                scope.prefixes()
            ),
            None,
        ));
    }
    let pairs = query_pairs(query)?;
    let from = param::<u64>(&pairs, "from")?.unwrap_or(1);
    let max_count =
        param::<usize>(&pairs, "max_count")?.unwrap_or(state.store.read_page_max().min(1000));
    let events = state.store.read_all(Position(from), max_count).await?;
    if accepts(&headers, wire::EVENTS_BINARY) {
        let body = wire::events_to_binary(&events)?;
        return Ok(([(header::CONTENT_TYPE, wire::EVENTS_BINARY)], body).into_response());
    }
    let events = events
        .iter()
        .map(wire::event_to_wire)
        .collect::<Result<_, Error>>()?;
    Ok(json(StatusCode::OK, &wire::WireEvents { events }))
}

/// Whether the request's `Accept` names the media type.
fn accepts(headers: &HeaderMap, media_type: &str) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case(media_type))
        })
}

#[utoipa::path(get, path = "/stats", tag = "store", responses((status = 200, body = wire::StatsSchema)))]
async fn stats(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(json(StatusCode::OK, &state.store.stats().await?))
}

#[utoipa::path(get, path = "/head", tag = "store", responses((status = 200, body = WireHead)))]
async fn head(State(state): State<AppState>) -> Result<Response, ApiError> {
    let position = state.store.head().await?;
    Ok(json(
        StatusCode::OK,
        &WireHead {
            position: position.0,
        },
    ))
}

#[utoipa::path(delete, path = "/subjects/{stream}", tag = "store", params(("stream" = String, Path, description = "The data subject's stream")), responses((status = 204, description = "The subject's key is destroyed: its personal data reads as erased from now on"), (status = 501, description = "This store keeps no personal-data keys", body = wire::Problem, content_type = "application/problem+json")))]
async fn forget_subject(
    State(state): State<AppState>,
    scope: Scope,
    StreamPath(stream): StreamPath,
) -> Result<Response, ApiError> {
    let stream = stream_id(&stream)?;
    scope.allow(&stream)?;
    state.store.forget_subject(&stream).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The stream prefixes a subscription asked for, within the caller's
/// scope: all of the scope's when it asked for none, `403` when it asked
/// for one outside.
fn scoped_prefixes(scope: &Scope, asked: Vec<String>) -> Result<Vec<String>, ApiError> {
    let Scope(Some(scope)) = scope else {
        return Ok(asked);
    };
    if asked.is_empty() {
        return Ok(scope.prefixes().to_vec());
    }
    match asked.iter().find(|prefix| !scope.allows(prefix)) {
        Some(outside) => Err(forbidden(
            format!(
                "this key is limited to the streams starting with {:?}; stream_prefix={outside:?} reaches beyond them",
                scope.prefixes()
            ),
            None,
        )),
        None => Ok(asked),
    }
}

#[utoipa::path(get, path = "/subscriptions", tag = "store", params(("from" = Option<u64>, Query, description = "First position (inclusive, default 1)"), ("stream_prefix" = Option<Vec<String>>, Query, description = "Only streams starting with one of these (repeatable)"), ("event_type" = Option<Vec<String>>, Query, description = "Only these event types (repeatable)"), ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this position")), responses((status = 200, description = "text/event-stream: `event: event` messages whose `id` is the position and `data` a stored event; an `event: error` message carries a problem document and ends the stream", content_type = "text/event-stream")))]
async fn subscribe(
    State(state): State<AppState>,
    scope: Scope,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let pairs = query_pairs(query)?;
    // A reconnecting client names the last event it received.
    let resume = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_request("Last-Event-ID is not a position"))
        })
        .transpose()?;
    let from = match resume {
        Some(last) => last + 1,
        None => param::<u64>(&pairs, "from")?.unwrap_or(1),
    };
    let filter = EventFilter {
        stream_prefixes: scoped_prefixes(
            &scope,
            pairs
                .iter()
                .filter(|(k, _)| k == "stream_prefix")
                .map(|(_, v)| v.clone())
                .collect(),
        )?,
        event_types: pairs
            .iter()
            .filter(|(k, _)| k == "event_type")
            .map(|(_, v)| v.clone())
            .collect(),
    };
    let subscription = state.store.subscribe(Position(from), filter).await?;
    let events = futures_util::stream::unfold(Some(subscription), |subscription| async move {
        let mut subscription = subscription?;
        let next = subscription.next().await?;
        let encoded = next.and_then(|e| {
            let wire_event = wire::event_to_wire(&e)?;
            serde_json::to_string(&wire_event)
                .map(|data| {
                    Event::default()
                        .id(e.position.0.to_string())
                        .event("event")
                        .data(data)
                })
                .map_err(|err| Error::Remote(format!("encoding an event: {err}")))
        });
        match encoded {
            Ok(event) => Some((Ok(event), Some(subscription))),
            // The error ends the stream: the client reports it instead of reconnecting.
            Err(err) => {
                let problem = serde_json::to_string(&wire::problem_of(&err)).unwrap_or_default();
                Some((Ok(Event::default().event("error").data(problem)), None))
            }
        }
    });
    let stopping = state.config.stopping.clone();
    let stopped = async move {
        match stopping {
            // An error means the sender is gone: nothing will ask to stop.
            Some(mut stopping) => {
                if stopping.wait_for(|stop| *stop).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending().await,
        }
    };
    Ok(Sse::new(events.take_until(stopped).boxed())
        .keep_alive(KeepAlive::new().interval(state.config.keep_alive)))
}
