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

use std::collections::BTreeMap;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::handler::Handler;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use axum::{Json, Router};
use event_store::Position;
use serde::{Deserialize, Serialize};
use utoipa::IntoResponses;
use utoipa::openapi::{self, RefOr};

use crate::error::Error;
use crate::http::{Problem, problem_type};
use crate::projector::ProjectorHandle;
use crate::status::ProjectionStatus;

/// The admin router over a running projector, answering unknown paths
/// with problem documents.
pub fn router(handle: ProjectorHandle) -> Router {
    routes(handle)
        .fallback(crate::http::no_route)
        .method_not_allowed_fallback(crate::http::method_not_allowed)
}

/// The admin routes without a fallback, to merge with other APIs in one
/// process.
pub fn routes(handle: ProjectorHandle) -> Router {
    endpoints()
        .into_iter()
        .fold(Router::new(), |router, (_, path, handler)| {
            router.route(path, handler)
        })
        .with_state(handle)
}

type Endpoint = (MethodFilter, &'static str, MethodRouter<ProjectorHandle>);

/// Every admin endpoint. The router is built from this table, and a test
/// holds the OpenAPI document to it.
fn endpoints() -> [Endpoint; 5] {
    fn endpoint<H: Handler<T, ProjectorHandle>, T: 'static>(
        method: MethodFilter,
        path: &'static str,
        handler: H,
    ) -> Endpoint {
        (method, path, on(method, handler))
    }
    [
        endpoint(MethodFilter::GET, "/projections", list),
        endpoint(MethodFilter::GET, "/projections/{name}", one),
        endpoint(MethodFilter::POST, "/projections/{name}/rebuild", rebuild),
        endpoint(MethodFilter::POST, "/projections/{name}/skip", skip),
        endpoint(MethodFilter::POST, "/projections/{name}/resume", resume),
    ]
}

/// The OpenAPI description of the admin API.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    info(
        title = "annals projector admin API",
        version = env!("CARGO_PKG_VERSION"),
        description = "Status of the projections that maintain the read side's views, and the operator's levers: rebuild a projection, skip or retry the event a failed one stopped on."
    ),
    paths(list, one, rebuild, skip, resume),
    components(schemas(Problem))
)]
struct AdminApi;

/// The OpenAPI document of the admin API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <AdminApi as utoipa::OpenApi>::openapi()
}

/// The path parameter of every operation on one projection.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[expect(
    dead_code,
    reason = "it describes the parameter only; the handlers read the name as a string"
)]
struct ProjectionPath {
    /// The projection's name
    #[param(example = "customers")]
    name: String,
}

/// The projection named in the path; a path that does not decode (bad
/// percent-encoding, not UTF-8) is a problem document like any other error.
fn projection_name(path: Result<Path<String>, PathRejection>) -> Result<String, Problem> {
    path.map(|Path(name)| name)
        .map_err(|e| Problem::bad_request(problem_type::INVALID_REQUEST, e.body_text()))
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

/// A response of a problem document, `description` saying when.
fn problem_response(description: &str) -> RefOr<openapi::Response> {
    openapi::ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            openapi::ContentBuilder::new()
                .schema(Some(openapi::Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
        .into()
}

/// Problem responses under their statuses.
fn problem_responses(responses: &[(&str, &str)]) -> BTreeMap<String, RefOr<openapi::Response>> {
    responses
        .iter()
        .map(|(status, description)| ((*status).to_owned(), problem_response(description)))
        .collect()
}

/// The failures any admin operation can answer with.
struct ServerFailures;

impl IntoResponses for ServerFailures {
    fn responses() -> BTreeMap<String, RefOr<openapi::Response>> {
        problem_responses(&[
            ("500", "`internal`: the error is in the server's log"),
            (
                "503",
                "`unavailable`: the view database or the event store cannot be reached, or the projector is shutting down",
            ),
        ])
    }
}

/// An operation on a projection named in the path, when no projection has
/// that name.
struct UnknownProjection;

impl IntoResponses for UnknownProjection {
    fn responses() -> BTreeMap<String, RefOr<openapi::Response>> {
        problem_responses(&[("404", "`not-found`: no projection has this name")])
    }
}

/// An operation on a projection named in the path, when the name does not
/// decode ([`projection_name`]).
struct UndecodableName;

impl IntoResponses for UndecodableName {
    fn responses() -> BTreeMap<String, RefOr<openapi::Response>> {
        problem_responses(&[(
            "400",
            "`invalid-request`: the projection name in the path does not decode (bad percent-encoding, not UTF-8)",
        )])
    }
}

/// The status of every projection.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ProjectionList {
    projections: Vec<ProjectionStatus>,
}

/// Status of every projection
#[utoipa::path(
    get,
    path = "/projections",
    operation_id = "list_projections",
    tag = "projections",
    responses(
        (status = 200, description = "Every registered projection", body = ProjectionList),
        ServerFailures,
    )
)]
async fn list(State(handle): State<ProjectorHandle>) -> Result<Response, Problem> {
    let projections = handle.status().await.map_err(problem)?;
    Ok(Json(ProjectionList { projections }).into_response())
}

/// Status of one projection
#[utoipa::path(
    get,
    path = "/projections/{name}",
    operation_id = "get_projection",
    tag = "projections",
    params(ProjectionPath),
    responses(
        (status = 200, description = "The projection's status", body = ProjectionStatus),
        UndecodableName,
        UnknownProjection,
        ServerFailures,
    )
)]
async fn one(
    State(handle): State<ProjectorHandle>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let name = projection_name(name)?;
    let status = handle.projection_status(&name).await.map_err(problem)?;
    Ok(Json(status).into_response())
}

/// Rebuild a projection
///
/// Replays the whole log into shadow tables while the live tables keep
/// serving, then swaps them in. An interrupted rebuild resumes where it
/// stopped. Progress shows in the status's `rebuild`.
#[utoipa::path(
    post,
    path = "/projections/{name}/rebuild",
    operation_id = "rebuild_projection",
    tag = "projections",
    params(ProjectionPath),
    responses(
        (status = 202, description = "The rebuild is running; the status as it started", body = ProjectionStatus),
        (status = 409, description = "`conflict`: a rebuild is already running", body = Problem, content_type = "application/problem+json"),
        UndecodableName,
        UnknownProjection,
        ServerFailures,
    )
)]
async fn rebuild(
    State(handle): State<ProjectorHandle>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let name = projection_name(name)?;
    let status = handle.start_rebuild(&name).await.map_err(problem)?;
    Ok((StatusCode::ACCEPTED, Json(status)).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct SkipParams {
    /// The position the operator expects the projection to be failed at:
    /// nothing is skipped if it is failed elsewhere.
    position: Option<u64>,
}

/// Skip the event a failed projection stopped on
///
/// The skip is recorded and the projection goes on from the next event; a
/// failed rebuild is skipped past the same way.
#[utoipa::path(
    post,
    path = "/projections/{name}/skip",
    operation_id = "skip_failed_event",
    tag = "projections",
    params(ProjectionPath, SkipParams),
    responses(
        (status = 200, description = "Skipped; the projection's status", body = ProjectionStatus),
        (status = 400, description = "`invalid-request`: an unknown or malformed query parameter, or a projection name that does not decode", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`conflict`: the projection is not failed, is failed at another position than `position`, or moved meanwhile; nothing was skipped", body = Problem, content_type = "application/problem+json"),
        UnknownProjection,
        ServerFailures,
    )
)]
async fn skip(
    State(handle): State<ProjectorHandle>,
    name: Result<Path<String>, PathRejection>,
    params: Result<Query<SkipParams>, QueryRejection>,
) -> Result<Response, Problem> {
    let name = projection_name(name)?;
    let Query(params) =
        params.map_err(|e| Problem::bad_request(problem_type::INVALID_REQUEST, e.body_text()))?;
    let status = handle
        .skip(&name, params.position.map(Position))
        .await
        .map_err(problem)?;
    Ok(Json(status).into_response())
}

/// Retry the event a failed projection stopped on
///
/// For after the cause is fixed (a handler deployed anew, a database
/// repaired).
#[utoipa::path(
    post,
    path = "/projections/{name}/resume",
    operation_id = "resume_projection",
    tag = "projections",
    params(ProjectionPath),
    responses(
        (status = 200, description = "Resumed; the projection's status", body = ProjectionStatus),
        (status = 409, description = "`conflict`: the projection is not failed", body = Problem, content_type = "application/problem+json"),
        UndecodableName,
        UnknownProjection,
        ServerFailures,
    )
)]
async fn resume(
    State(handle): State<ProjectorHandle>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let name = projection_name(name)?;
    let status = handle.resume(&name).await.map_err(problem)?;
    Ok(Json(status).into_response())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;

    fn method_name(method: MethodFilter) -> &'static str {
        [
            (MethodFilter::GET, "get"),
            (MethodFilter::POST, "post"),
            (MethodFilter::PUT, "put"),
            (MethodFilter::DELETE, "delete"),
            (MethodFilter::PATCH, "patch"),
        ]
        .into_iter()
        .find(|(m, _)| *m == method)
        .map(|(_, name)| name)
        .expect("a method the table uses")
    }

    fn document() -> Value {
        serde_json::to_value(openapi()).expect("the document serializes")
    }

    /// Every operation of the document, with its response statuses.
    fn operations(doc: &Value) -> http_edge::openapi::Operations {
        http_edge::openapi::operations(doc).expect("an OpenAPI document")
    }

    #[test]
    fn the_document_describes_exactly_the_routes_served() {
        let served: BTreeSet<(String, String)> = endpoints()
            .iter()
            .map(|(method, path, _)| (method_name(*method).to_owned(), (*path).to_owned()))
            .collect();
        let documented: BTreeSet<_> = operations(&document()).into_keys().collect();
        assert_eq!(documented, served);
    }

    #[test]
    fn every_operation_lists_its_statuses_with_problem_documents() {
        let expected: [(&str, &str, &[&str]); 5] = [
            ("get", "/projections", &["200", "500", "503"]),
            (
                "get",
                "/projections/{name}",
                &["200", "400", "404", "500", "503"],
            ),
            (
                "post",
                "/projections/{name}/rebuild",
                &["202", "400", "404", "409", "500", "503"],
            ),
            (
                "post",
                "/projections/{name}/skip",
                &["200", "400", "404", "409", "500", "503"],
            ),
            (
                "post",
                "/projections/{name}/resume",
                &["200", "400", "404", "409", "500", "503"],
            ),
        ];
        let doc = document();
        let operations = operations(&doc);
        for (method, path, statuses) in expected {
            let listed = &operations[&(method.to_owned(), path.to_owned())];
            let statuses: BTreeSet<String> = statuses.iter().map(|s| (*s).to_owned()).collect();
            assert_eq!(listed, &statuses, "{method} {path}");
            for status in statuses.iter().filter(|s| !s.starts_with('2')) {
                let response = &doc["paths"][path][method]["responses"][status];
                assert_eq!(
                    response["content"]["application/problem+json"]["schema"]["$ref"],
                    "#/components/schemas/Problem",
                    "{method} {path} {status}"
                );
            }
        }
    }

    #[test]
    fn every_operation_has_a_summary_and_its_own_id() {
        let doc = document();
        let mut ids = BTreeSet::new();
        for item in doc["paths"].as_object().expect("paths").values() {
            for operation in item.as_object().expect("a path item").values() {
                assert!(operation["summary"].is_string(), "{operation}");
                let id = operation["operationId"].as_str().expect("an operation id");
                assert!(ids.insert(id.to_owned()), "{id} is used twice");
            }
        }
    }

    #[test]
    fn every_schema_referenced_is_defined() {
        let doc = document();
        let schemas = doc["components"]["schemas"]
            .as_object()
            .expect("component schemas");
        let found = http_edge::openapi::refs(&doc);
        assert!(!found.is_empty());
        for r in found {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{r} is not a component schema"));
            assert!(schemas.contains_key(name), "{r} is not defined");
        }
        for name in ["ProjectionStatus", "RebuildStatus", "TrackState", "Problem"] {
            assert!(schemas.contains_key(name), "{name}");
        }
    }

    #[test]
    fn the_document_names_the_api_and_its_version() {
        let doc = document();
        assert_eq!(doc["info"]["title"], "annals projector admin API");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    }
}
