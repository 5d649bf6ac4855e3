//! The admin API of the projector:
//!
//! | method | path | does |
//! |---|---|---|
//! | GET | `/projections` | status of every projection |
//! | GET | `/projections/{name}` | status of one |
//! | POST | `/projections/{name}/rebuild` | start (or resume) a rebuild: `202` |
//! | POST | `/projections/{name}/skip[?position=N]` | skip the event a failed projection stopped on |
//! | POST | `/projections/{name}/resume` | try that event again |
//!
//! Errors are RFC 9457 problem documents: unknown projection `404`, an
//! operation that does not fit the state (not failed, already rebuilding,
//! wrong position) `409`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use event_store::Position;
use serde::Deserialize;

use crate::error::Error;
use crate::http::{Problem, problem_type};
use crate::projector::ProjectorHandle;

/// The admin router over a running projector, answering unknown paths
/// with problem documents.
pub fn router(handle: ProjectorHandle) -> Router {
    routes(handle).fallback(crate::http::no_route)
}

/// The admin routes without a fallback, to merge with other APIs in one
/// process.
pub fn routes(handle: ProjectorHandle) -> Router {
    Router::new()
        .route("/projections", get(list))
        .route("/projections/{name}", get(one))
        .route("/projections/{name}/rebuild", post(rebuild))
        .route("/projections/{name}/skip", post(skip))
        .route("/projections/{name}/resume", post(resume))
        .with_state(handle)
}

fn problem(error: Error) -> Problem {
    match error {
        Error::UnknownProjection(name) => {
            Problem::not_found(format!("no projection named {name:?}")).with("projection", name)
        }
        Error::Conflict { projection, detail } => Problem::new(
            StatusCode::CONFLICT,
            problem_type::CONFLICT,
            "Conflict with the projection's state",
            format!("projection {projection}: {detail}"),
        )
        .with("projection", projection),
        Error::ShutDown => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            problem_type::UNAVAILABLE,
            "Shutting down",
            "the projector is shutting down",
        ),
        e if e.is_transient() => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            problem_type::UNAVAILABLE,
            "Temporarily unavailable",
            "the view database or the event store cannot be reached; try again",
        ),
        e => Problem::internal(&e),
    }
}

async fn list(State(handle): State<ProjectorHandle>) -> Result<Response, Problem> {
    let status = handle.status().await.map_err(problem)?;
    Ok(Json(serde_json::json!({ "projections": status })).into_response())
}

async fn one(
    State(handle): State<ProjectorHandle>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    let status = handle.projection_status(&name).await.map_err(problem)?;
    Ok(Json(status).into_response())
}

async fn rebuild(
    State(handle): State<ProjectorHandle>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    let status = handle.start_rebuild(&name).await.map_err(problem)?;
    Ok((StatusCode::ACCEPTED, Json(status)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SkipParams {
    /// The position the operator expects the projection to be failed at.
    position: Option<u64>,
}

async fn skip(
    State(handle): State<ProjectorHandle>,
    Path(name): Path<String>,
    params: Result<Query<SkipParams>, QueryRejection>,
) -> Result<Response, Problem> {
    let Query(params) = params.map_err(|e| Problem::bad_request(e.body_text()))?;
    let status = handle
        .skip(&name, params.position.map(Position))
        .await
        .map_err(problem)?;
    Ok(Json(status).into_response())
}

async fn resume(
    State(handle): State<ProjectorHandle>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    let status = handle.resume(&name).await.map_err(problem)?;
    Ok(Json(status).into_response())
}
