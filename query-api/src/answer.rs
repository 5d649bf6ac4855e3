//! How the routes answer: the position headers, JSON answers, the
//! problems of a view or its database, and reading a page together with
//! the position it reflects.

use axum::http::HeaderName;
use projector::http::{Problem, problem_type};

use crate::params;
use crate::route;
use crate::state::{QueryConfig, QueryState};

/// Response header: the log position the answer reflects.
pub const POSITION_HEADER: HeaderName = HeaderName::from_static("annals-position");
/// Request header: answer only once the view reflects this position.
pub const MIN_POSITION_HEADER: HeaderName = HeaderName::from_static("annals-min-position");

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
