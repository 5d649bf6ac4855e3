//! `/health/live`, `/health/ready` and `/openapi.json`, the same on every
//! process, plus the problem-document fallbacks of a process's router.
//!
//! Readiness is the sum of what the process depends on: the store accepts
//! appends (embedded, or reachable and ready when remote), the view
//! database answers (its schema was migrated when it was opened), the
//! projector task is running with no projection failed or stuck, and each
//! saga is following the log. A process is live as long as it answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use event_store::EventStore;
use projector::ViewDb;
use projector::http::{Problem, problem_type};
use serde_json::{Map, Value, json};

/// What a process checks before it says it is ready.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    pub store: Option<Arc<dyn EventStore>>,
    pub views: Option<ViewDb>,
    /// The projector, where the process runs it.
    pub projector: Option<ProjectorCheck>,
    /// The application's sagas, where the process runs them.
    pub sagas: Option<Vec<command_api::SagaHandle>>,
    /// Started with `--insecure` and without keys or TLS: every answer
    /// says so.
    pub insecure: bool,
}

/// What readiness adds, ready or not, while `--insecure` is in force.
pub(crate) const INSECURE_WARNING: &str = "--insecure: authentication or TLS is off (the start-up log says \
     which); anyone who can reach this process, or see its traffic, may read, write and erase";

/// How readiness looks at a projector.
#[derive(Debug, Clone)]
pub struct ProjectorCheck {
    /// Set while the projector task runs.
    pub running: Arc<AtomicBool>,
    pub handle: projector::ProjectorHandle,
    /// A projection retrying a failure of the store or the view database
    /// for this long without applying anything is stuck.
    pub stuck_after: Duration,
}

/// A projection readiness reports: failed on an event, or stuck.
struct ProjectionProblem {
    summary: String,
    detail: Value,
}

impl ProjectorCheck {
    /// `Ok` when the task runs and every projection goes on; otherwise a
    /// line for `checks` and the projections at fault.
    async fn check(&self) -> Result<(), (String, Vec<Value>)> {
        if !self.running.load(Ordering::SeqCst) {
            return Err(("the projector is not running".into(), Vec::new()));
        }
        let statuses = self.handle.status().await.map_err(|e| {
            (
                format!("cannot read the projections' status: {e}"),
                Vec::new(),
            )
        })?;
        let problems: Vec<ProjectionProblem> = statuses
            .iter()
            .filter_map(|s| projection_problem(s, self.stuck_after))
            .collect();
        if problems.is_empty() {
            return Ok(());
        }
        let summary = problems
            .iter()
            .map(|p| p.summary.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        Err((summary, problems.into_iter().map(|p| p.detail).collect()))
    }
}

fn projection_problem(
    status: &projector::ProjectionStatus,
    stuck_after: Duration,
) -> Option<ProjectionProblem> {
    let error = status.last_error.clone().unwrap_or_default();
    if status.state == projector::TrackState::Failed {
        let failed_at = status.error_position.unwrap_or(status.position + 1);
        return Some(ProjectionProblem {
            summary: format!(
                "{} failed on the event at position {failed_at} (applied up to {}): {error}",
                status.name, status.position
            ),
            detail: json!({
                "name": status.name,
                "state": "failed",
                "position": status.position,
                "error_position": failed_at,
                "error": error,
            }),
        });
    }
    let retrying_for = Duration::from_millis(status.retrying_for_ms?);
    if retrying_for < stuck_after {
        return None;
    }
    Some(ProjectionProblem {
        summary: format!(
            "{} stuck at position {} for {:.1} s: {error}",
            status.name,
            status.position,
            retrying_for.as_secs_f64()
        ),
        detail: json!({
            "name": status.name,
            "state": "stuck",
            "position": status.position,
            "retrying_for_ms": status.retrying_for_ms,
            "error": error,
        }),
    })
}

impl Readiness {
    /// Each dependency with `"ok"` or why it is not, the projections at
    /// fault, and each saga (by name) with `"ok"` or why it is not. The dependencies are asked at once, so an unreachable one
    /// costs one wait, not one per check that needs it.
    async fn check(
        &self,
    ) -> (
        bool,
        Map<String, Value>,
        Vec<Value>,
        Option<Map<String, Value>>,
    ) {
        let store = async {
            match &self.store {
                Some(store) => Some(store.ready().await.map_err(|e| e.to_string())),
                None => None,
            }
        };
        let views = async {
            let views = self.views.as_ref()?;
            let ping = sqlx::query("SELECT 1").execute(views.pool()).await;
            Some(ping.map(drop).map_err(|e| {
                format!(
                    "the view database does not answer: {}",
                    projector::sql_message(&e)
                )
            }))
        };
        let projector = async {
            match &self.projector {
                Some(projector) => Some(projector.check().await),
                None => None,
            }
        };
        let (store, views, projector) = tokio::join!(store, views, projector);

        let mut ready = true;
        let mut checks = Map::new();
        let mut projections = Vec::new();
        let mut note = |name: &str, outcome: Result<(), String>| {
            let value = match outcome {
                Ok(()) => Value::from("ok"),
                Err(e) => {
                    ready = false;
                    Value::from(e)
                }
            };
            checks.insert(name.to_owned(), value);
        };
        if let Some(outcome) = store {
            note("store", outcome);
        }
        if let Some(outcome) = views {
            note("views", outcome);
        }
        if let Some(outcome) = projector {
            note(
                "projector",
                outcome.map_err(|(summary, at_fault)| {
                    projections = at_fault;
                    summary
                }),
            );
        }
        let mut sagas = None;
        if let Some(handles) = &self.sagas {
            let (summary, each) = sagas_check(handles);
            note("saga", summary);
            sagas = Some(each);
        }
        (ready, checks, projections, sagas)
    }
}

/// All the sagas' checks in one (`Ok` when every one is), and each saga's
/// by its name.
fn sagas_check(handles: &[command_api::SagaHandle]) -> (Result<(), String>, Map<String, Value>) {
    let mut each = Map::new();
    let mut failing = Vec::new();
    for handle in handles {
        let status = handle.status();
        let outcome = saga_check(&status);
        each.insert(
            status.name.to_owned(),
            match &outcome {
                Ok(()) => Value::from("ok"),
                Err(e) => Value::from(e.as_str()),
            },
        );
        if let Err(e) = outcome {
            failing.push(format!("{}: {e}", status.name));
        }
    }
    let summary = if failing.is_empty() {
        Ok(())
    } else {
        Err(failing.join("; "))
    };
    (summary, each)
}

fn saga_check(status: &command_api::SagaStatus) -> Result<(), String> {
    use command_api::SagaState;
    match status.state {
        SagaState::Running => Ok(()),
        SagaState::Starting => Err("the saga is reading its checkpoint".into()),
        SagaState::Retrying => Err(format!(
            "the saga cannot follow the log and is retrying: {}",
            status
                .last_error
                .as_ref()
                .map_or("unknown", |f| f.error.as_str())
        )),
        SagaState::Stopped => Err("the saga is not running".into()),
    }
}

/// The health and OpenAPI routes of a process.
pub fn routes(readiness: Readiness, openapi: utoipa::openapi::OpenApi) -> Router {
    let openapi = Arc::new(with_health_paths(openapi));
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .with_state(Arc::new(readiness))
        .route(
            "/openapi.json",
            get(move || {
                let openapi = openapi.clone();
                async move { axum::Json(openapi.as_ref().clone()).into_response() }
            }),
        )
}

/// Answers unknown paths and methods of a whole process with problem
/// documents (the APIs it merges have none of their own).
pub fn with_fallbacks(router: Router) -> Router {
    router
        .fallback(projector::http::no_route)
        .method_not_allowed_fallback(projector::http::method_not_allowed)
}

#[utoipa::path(get, path = "/health/live", tag = "health",
    responses((status = 200, description = "The process is up")))]
async fn live() -> Response {
    axum::Json(json!({"status": "live"})).into_response()
}

#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses(
        (status = 200, description = "Every dependency is ready: `checks` names each one with `ok`, \
         and `sagas` (where the process runs sagas) each saga; `warnings` says when the process \
         runs with `--insecure`"),
        (status = 503, description = "A dependency is not ready: `checks` says which and why; \
         `projections` lists each projection that is failed (`state`, `position`, `error_position`, \
         `error`) or stuck retrying (`state`, `position`, `retrying_for_ms`, `error`); `sagas` names each \
         saga the process runs with `ok` or why it is not (`checks.saga` sums them up)",
         content_type = "application/problem+json")))]
async fn ready(State(readiness): State<Arc<Readiness>>) -> Response {
    let (ok, checks, projections, sagas) = readiness.check().await;
    if ok {
        let mut body = json!({"status": "ready", "checks": checks});
        if let Some(sagas) = sagas {
            body["sagas"] = Value::Object(sagas);
        }
        if readiness.insecure {
            body["warnings"] = json!([INSECURE_WARNING]);
        }
        axum::Json(body).into_response()
    } else {
        let mut problem = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            problem_type::UNAVAILABLE,
            "Not ready",
            "a dependency of this process is not ready; see checks",
        )
        .with("checks", Value::Object(checks));
        if !projections.is_empty() {
            problem = problem.with("projections", Value::Array(projections));
        }
        if let Some(sagas) = sagas {
            problem = problem.with("sagas", Value::Object(sagas));
        }
        if readiness.insecure {
            problem = problem.with("warnings", json!([INSECURE_WARNING]));
        }
        problem.into_response()
    }
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(live, ready))]
struct HealthApi;

fn with_health_paths(mut openapi: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;
    openapi.merge(HealthApi::openapi());
    if let Some(metrics) = crate::telemetry::openapi() {
        openapi.merge(metrics);
    }
    openapi
}

/// One document for a process that serves several APIs.
pub fn merged(
    title: &str,
    parts: impl IntoIterator<Item = utoipa::openapi::OpenApi>,
) -> utoipa::openapi::OpenApi {
    let mut doc = utoipa::openapi::OpenApiBuilder::new()
        .info(
            utoipa::openapi::InfoBuilder::new()
                .title(title)
                .version(env!("CARGO_PKG_VERSION"))
                .build(),
        )
        .build();
    for part in parts {
        doc.merge(part);
    }
    doc
}
