//! The query API of annals: JSON over HTTP, answered from the SQL views the
//! projector maintains. It never reads the event store.
//!
//! An application declares its query routes ([`QueryRoutes`]): each is a
//! path, the view it reads ([`View`]), a SQL query and a row type the user
//! defines ([`FromViewRow`]). [`ItemRoute`] answers one row for the path's
//! id; [`ListRoute`] answers pages, filtered by declared [`Filter`]s and
//! ordered by a [`Key`]. Annals serves every route the same way
//! ([`router`]) and describes it in the OpenAPI document ([`openapi`]).
//!
//! **Positions.** Every answer carries `Annals-Position: <n>`: the log
//! position the view it was read from reflects (the checkpoint of the
//! route's projection, read in the same snapshot as the rows).
//!
//! **Read your writes.** A client that sends the position a command
//! returned, as `min_position=<n>` or `Annals-Min-Position: <n>`, is
//! answered only once the view has reached it. The API waits up to
//! [`QueryConfig::min_position_wait_max`], re-reading the checkpoint with a
//! short backoff (the projector may run in another process), then answers
//! `503` with `Retry-After`. A view stopped by a failed event answers `503`
//! at once.
//!
//! **Items** carry `ETag: "<version>"` when the row type has a version.
//!
//! **Pages** are ordered by the route's key (or a filter's, when given) and
//! paged with an opaque `cursor` (`next_cursor` of the previous page) and
//! `limit` (1 to [`QueryConfig::page_size_max`]). A cursor only continues
//! the query that produced it.
//!
//! **Errors** are RFC 9457 problem documents ([`http_edge::Problem`]):
//! unknown, repeated or invalid parameters, cursors or positions `400`, an
//! id not spelled as annals writes ids (lowercase hyphenated UUID, see
//! [`http_edge::ids`]) `400 invalid-id` as on the command side, unknown ids
//! `404` with the position, a view not there yet or a database that cannot
//! answer `503`.

mod api_doc;
mod consistency;
mod cursor;
mod params;
mod route;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::HeaderName;
use projector::ViewDb;
use projector::http::{Problem, problem_type};

pub use api_doc::openapi;
pub use route::{Filter, FromViewRow, ItemRoute, Key, ListRoute, QueryRoutes, View, ViewRow};

/// Response header: the log position the answer reflects.
pub const POSITION_HEADER: HeaderName = HeaderName::from_static("annals-position");
/// Request header: answer only once the view reflects this position.
pub const MIN_POSITION_HEADER: HeaderName = HeaderName::from_static("annals-min-position");

/// Limits and timings of the query API. Every limit names its unit last.
#[derive(Debug, Clone)]
pub struct QueryConfig {
    /// Items per page when the request gives no `limit`.
    pub page_size_default: usize,
    /// The largest `limit` accepted.
    pub page_size_max: usize,
    /// How long a request with a `min_position` the view has not reached
    /// waits before `503`.
    pub min_position_wait_max: Duration,
    /// First pause between two reads of the checkpoint while waiting;
    /// doubles up to `poll_interval_max`, each pause lengthened by a random
    /// part of up to as much again.
    pub poll_interval_min: Duration,
    pub poll_interval_max: Duration,
    /// `Retry-After` of a `503`, in seconds.
    pub retry_after_seconds: u32,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            page_size_default: 20,
            page_size_max: 200,
            min_position_wait_max: Duration::from_secs(5),
            poll_interval_min: Duration::from_millis(2),
            poll_interval_max: Duration::from_millis(50),
            retry_after_seconds: 1,
        }
    }
}

/// What the handlers share: the view database and the configuration.
#[derive(Debug, Clone)]
pub struct QueryState {
    db: ViewDb,
    config: Arc<QueryConfig>,
}

impl QueryState {
    pub fn new(db: ViewDb, config: QueryConfig) -> Self {
        Self {
            db,
            config: Arc::new(config),
        }
    }

    pub fn db(&self) -> &ViewDb {
        &self.db
    }

    pub fn config(&self) -> &QueryConfig {
        &self.config
    }
}

/// The query API router serving `routes`, answering unknown paths with
/// problem documents.
pub fn router(state: QueryState, routes: &QueryRoutes) -> Router {
    self::routes(state, routes)
        .fallback(projector::http::no_route)
        .method_not_allowed_fallback(projector::http::method_not_allowed)
}

/// The query routes without a fallback, to merge with other APIs in one
/// process (`axum` refuses to merge two routers that both have one).
pub fn routes(state: QueryState, routes: &QueryRoutes) -> Router {
    routes
        .iter()
        .fold(Router::new(), |router, route| {
            router.route(route.path(), route.clone().method_router())
        })
        .with_state(state)
}

/// A database error as an answer: `503 view-not-ready` when the view's
/// tables are not there yet (the projector creates them when it starts),
/// `503 unavailable` when it may pass (connection lost, pool exhausted,
/// database busy), `500` otherwise; logged once either way.
pub(crate) fn view_problem(error: &sqlx::Error, projection: &str) -> Problem {
    if is_missing_table(error) {
        tracing::debug!(%error, projection, "view not created yet");
        Problem::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            problem_type::VIEW_NOT_READY,
            "View not ready",
            format!(
                "the {projection} view is not created yet; the projector creates it when it starts"
            ),
        )
        .with("projection", projection)
        .retry_after(1)
    } else {
        database_problem(error)
    }
}

/// Whether the database refused a statement for naming a table that does
/// not exist.
fn is_missing_table(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(e) => {
            e.code().as_deref() == Some("42P01") || e.message().starts_with("no such table")
        }
        _ => false,
    }
}

/// A database error as an answer: `503` when it may pass (connection lost,
/// pool exhausted, database busy), `500` otherwise; logged once either way.
pub(crate) fn database_problem(error: &sqlx::Error) -> Problem {
    if projector::is_transient_sql(error) {
        tracing::warn!(%error, "view database unavailable");
        Problem::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            problem_type::UNAVAILABLE,
            "View database unavailable",
            "the view database cannot answer right now; try again",
        )
        .retry_after(1)
    } else {
        Problem::internal(error)
    }
}

/// A `200` JSON answer with the position it reflects (and the version of
/// the item, for single items).
pub(crate) fn json_answer<T: serde::Serialize>(
    position: i64,
    etag_version: Option<i64>,
    body: &T,
) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    use axum::response::IntoResponse;
    let mut response = axum::Json(body).into_response();
    let headers = response.headers_mut();
    headers.insert(POSITION_HEADER, HeaderValue::from(position));
    if let Some(version) = etag_version
        && let Ok(etag) = HeaderValue::from_str(&format!("\"{version}\""))
    {
        headers.insert(header::ETAG, etag);
    }
    response
}

/// A `404` for an id, with the position the view was read at: the item may
/// appear once the view reaches a later position.
pub(crate) fn not_found(kind: &str, id: &str, position: i64) -> Problem {
    Problem::not_found(format!(
        "no {kind} with id {id:?} in the view at position {position}"
    ))
    .with("id", id)
    .with("position", position)
    .with_header(POSITION_HEADER, axum::http::HeaderValue::from(position))
}

/// The page size a request asks for, within the limits.
pub(crate) fn page_limit(params: &params::Params, config: &QueryConfig) -> Result<usize, Problem> {
    let max = config.page_size_max.max(1);
    Ok(params
        .integer("limit", 1, max as i64)?
        .map_or(config.page_size_default.min(max), |l| l as usize))
}

/// Runs a page query and reads the view's checkpoint in one read-only
/// transaction, so the position describes exactly the rows returned.
pub(crate) async fn read_page(
    state: &QueryState,
    projection: &'static str,
    sql: String,
    binds: Vec<route::Bind>,
) -> Result<(i64, Vec<sqlx::any::AnyRow>), Problem> {
    let run = async {
        let mut tx = state.db().begin_read().await.map_err(|e| match e {
            projector::Error::Database(e) => e,
            other => sqlx::Error::Protocol(other.to_string()),
        })?;
        let position: Option<i64> = sqlx::query_scalar(
            "SELECT position FROM projection_checkpoints WHERE name = $1 AND track = 'live'",
        )
        .bind(projection)
        .fetch_optional(&mut *tx)
        .await?;
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for bind in binds {
            query = match bind {
                route::Bind::Int(v) => query.bind(v),
                route::Bind::Text(v) => query.bind(v),
            };
        }
        let rows = query.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>((position.unwrap_or(0), rows))
    };
    run.await.map_err(|e| view_problem(&e, projection))
}
