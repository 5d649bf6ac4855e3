//! The REST command API, for any aggregate: an application declares each
//! aggregate's routes ([`CommandRoutes`]: a [`Route`] and a function from the
//! request body to a command) and [`CommandApi`] serves them.
//!
//! A success answers `{"id", "version", "position"}` with `ETag: "<version>"`;
//! `position` is the global position of the aggregate's latest event, which
//! the query side reports once it has caught up (read-your-writes).
//!
//! Headers: `If-Match: "<version>"` runs the command only on that version
//! (else `412`); `Idempotency-Key` makes retries return the first answer
//! (`Idempotent-Replayed: true`) without appending again, also after a
//! restart, and a key reused with another request is `422`. Only successes
//! are recorded, so a refused command can be retried with its key.
//! `X-Correlation-Id` (a UUID) is stored in the events' metadata and echoed.
//!
//! Ids, in the path and in bodies, are UUIDs in their one spelling
//! ([`http_edge::ids`]); bodies are JSON objects, and so is every object in
//! them ([`http_edge::json`]).
//!
//! Errors are RFC 9457 problem documents ([`Problem`]), `type`
//! `urn:annals:problem:<slug>` with the slugs in [`kind`].

mod api_doc;
mod limits;
mod problem;
mod request;
mod route;

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;

use crate::aggregate::Aggregate;
use crate::commands::Commands;

pub use problem::{PROBLEM_CONTENT_TYPE, Problem, etag, kind};
pub use request::{
    COMMAND_ID, CORRELATION_ID, FieldErrors, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, NoFields,
};
pub use route::{CommandRoutes, PathIds, Route};

/// Limits and behaviour of the command API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Largest request body accepted (`413` above).
    pub body_bytes_max: usize,
    /// Requests handled at once; more are answered `503` at once instead of
    /// queueing without bound.
    pub in_flight_requests_max: usize,
    /// Longest a request may take. One whose body has not fully arrived by
    /// then is `408` (nothing was applied); one that was read and is still
    /// being handled is `503`, and the command may still commit: retrying
    /// with the same idempotency key tells.
    pub request_timeout: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            body_bytes_max: 64 << 10,
            in_flight_requests_max: 1024,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// The aggregates' routes of one type, with their types erased.
trait Declarations: Send + Sync {
    fn mount(&self, router: Router, commands: &Commands) -> Router;
    fn described(&self) -> Vec<api_doc::Described>;
}

impl<A: Aggregate> Declarations for CommandRoutes<A> {
    fn mount(&self, router: Router, commands: &Commands) -> Router {
        CommandRoutes::mount(self, router, commands)
    }

    fn described(&self) -> Vec<api_doc::Described> {
        self.routes
            .iter()
            .map(|declared| api_doc::Described {
                route: declared.route.clone(),
                collection: self.collection(),
                creates: declared.creates,
                body: declared.body_schema.clone(),
            })
            .collect()
    }
}

/// The command API of an application: the routes of each of its
/// aggregates.
///
/// ```
/// use std::sync::Arc;
///
/// use axum::body::{Body, to_bytes};
/// use axum::http::{Request, StatusCode};
/// use command_api::{ApiConfig, CommandApi, CommandRoutes, Commands, FieldErrors, HandlerConfig, Route};
/// use tower::ServiceExt;
/// # use command_api::{Aggregate, AggregateCommand, DomainError, JsonEvent};
/// # use uuid::Uuid;
/// # #[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
/// # struct Task { done: bool }
/// # #[derive(Debug)]
/// # enum TaskCommand { Add { id: Uuid, title: String }, Complete { id: Uuid } }
/// # #[derive(Debug, serde::Serialize, serde::Deserialize)]
/// # enum TaskEvent { TaskAdded { title: String }, TaskCompleted }
/// # #[derive(Debug, thiserror::Error)]
/// # #[error("the task is done already")]
/// # struct Done;
/// # impl DomainError for Done { fn rule(&self) -> &'static str { "task-done" } }
/// # impl JsonEvent for TaskEvent {
/// #     fn event_type(&self) -> &'static str {
/// #         match self { Self::TaskAdded { .. } => "TaskAdded", Self::TaskCompleted => "TaskCompleted" }
/// #     }
/// # }
/// # impl AggregateCommand for TaskCommand {
/// #     fn aggregate_id(&self) -> Uuid { match self { Self::Add { id, .. } | Self::Complete { id } => *id } }
/// #     fn creates_aggregate(&self) -> bool { matches!(self, Self::Add { .. }) }
/// #     fn name(&self) -> &'static str { match self { Self::Add { .. } => "add", Self::Complete { .. } => "complete" } }
/// # }
/// # impl Aggregate for Task {
/// #     const TYPE: &'static str = "task";
/// #     const SNAPSHOT_SCHEMA: u32 = 1;
/// #     type Command = TaskCommand;
/// #     type Event = TaskEvent;
/// #     type Error = Done;
/// #     fn handle(&self, command: &TaskCommand) -> Result<Vec<TaskEvent>, Done> {
/// #         match command {
/// #             TaskCommand::Add { title, .. } => Ok(vec![TaskEvent::TaskAdded { title: title.clone() }]),
/// #             TaskCommand::Complete { .. } if self.done => Err(Done),
/// #             TaskCommand::Complete { .. } => Ok(vec![TaskEvent::TaskCompleted]),
/// #         }
/// #     }
/// #     fn apply(&mut self, event: &TaskEvent) {
/// #         if let TaskEvent::TaskCompleted = event { self.done = true }
/// #     }
/// # }
/// # #[derive(serde::Deserialize, utoipa::ToSchema)]
/// # struct AddTask { title: String }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let tasks = CommandRoutes::<Task>::new("/tasks").create(
///     Route::post("/tasks", "Add a task"),
///     |id, body: AddTask| {
///         let mut errors = FieldErrors::new();
///         let title = errors.check("/title", match body.title.trim() {
///             "" => Err("a task needs a title"),
///             title => Ok(title.to_owned()),
///         });
///         errors.finish(|| Some(TaskCommand::Add { id, title: title? }))
///     },
/// );
/// let api = CommandApi::new("todo command API").aggregate(tasks);
///
/// // Served over a store, through the handlers sagas of the process share.
/// # let dir = tempfile::tempdir()?;
/// let store = event_store::Store::open(dir.path(), Default::default()).await?;
/// let commands = Commands::new(Arc::new(store.clone()), HandlerConfig::default());
/// let router = api.router(&commands, ApiConfig::default());
///
/// let post = |body: &'static str| {
///     Request::post("/tasks")
///         .header("content-type", "application/json")
///         .body(Body::from(body))
/// };
/// let created = router.clone().oneshot(post(r#"{"title": "milk"}"#)?).await?;
/// assert_eq!(created.status(), StatusCode::CREATED);
/// assert!(created.headers()["location"].to_str()?.starts_with("/tasks/"));
///
/// // A field that does not check out is a problem document naming it.
/// let refused = router.oneshot(post(r#"{"title": " "}"#)?).await?;
/// assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
/// let problem: serde_json::Value = serde_json::from_slice(&to_bytes(refused.into_body(), 1 << 16).await?)?;
/// assert_eq!(problem["type"], "urn:annals:problem:invalid-fields");
/// assert_eq!(problem["errors"][0]["pointer"], "/title");
/// # store.close().await?;
/// # Ok(())
/// # }
/// ```
pub struct CommandApi {
    title: String,
    aggregates: Vec<Box<dyn Declarations>>,
}

impl CommandApi {
    /// An API with no routes yet; `title` names it in the OpenAPI document.
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            aggregates: Vec::new(),
        }
    }

    /// Serves the routes of an aggregate type.
    pub fn aggregate<A: Aggregate>(mut self, routes: CommandRoutes<A>) -> Self {
        self.aggregates.push(Box::new(routes));
        self
    }

    /// The API as a standalone application: [`CommandApi::routes`] plus
    /// problem-document answers for unknown paths (`404`) and methods
    /// (`405`).
    pub fn router(&self, commands: &Commands, config: ApiConfig) -> Router {
        with_problem_fallbacks(self.routes(commands, config))
    }

    /// The routes without fallbacks, to merge with other APIs (`axum`
    /// refuses to merge two routers that both have one); add
    /// [`with_problem_fallbacks`] once to the merged router. Commands run
    /// through `commands`' handlers, which sagas of the same process share.
    pub fn routes(&self, commands: &Commands, config: ApiConfig) -> Router {
        let routes = self
            .aggregates
            .iter()
            .fold(Router::new(), |router, routes| {
                routes.mount(router, commands)
            })
            .layer(DefaultBodyLimit::max(config.body_bytes_max));
        limits::within_limits(routes, &config).layer(CatchPanicLayer::custom(panic_response))
    }

    /// The method and path template (`/customers/{id}/personal-data`) of
    /// every route declared with [`Route::erases_personal_data`], so that
    /// a process can ask more of their callers than of other commands.
    pub fn personal_data_erasures(&self) -> Vec<(axum::http::Method, &'static str)> {
        self.aggregates
            .iter()
            .flat_map(|routes| routes.described())
            .filter(|d| d.route.erases_personal_data)
            .map(|d| (d.route.method.clone(), d.route.path))
            .collect()
    }

    /// The OpenAPI document of the declared routes.
    pub fn openapi(&self) -> utoipa::openapi::OpenApi {
        let described: Vec<_> = self
            .aggregates
            .iter()
            .flat_map(|routes| routes.described())
            .collect();
        api_doc::document(&self.title, &described)
    }
}

impl std::fmt::Debug for CommandApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandApi")
            .field("title", &self.title)
            .field("aggregates", &self.aggregates.len())
            .finish()
    }
}

/// Answers unknown paths and unsupported methods with problem documents.
pub fn with_problem_fallbacks(router: Router) -> Router {
    router
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops
/// accepting connections, lets the requests in flight finish and returns,
/// with the default connection limits and timeouts of
/// [`http_edge::serve()`]. The caller closes the store afterwards.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    http_edge::serve(
        listener,
        router,
        http_edge::ServeConfig::default(),
        shutdown,
    )
    .await
}

async fn route_not_found(uri: Uri) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        kind::ROUTE_NOT_FOUND,
        "Not found",
        format!("no command endpoint at {}", uri.path()),
    )
}

async fn method_not_allowed(uri: Uri) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        kind::METHOD_NOT_ALLOWED,
        "Method not allowed",
        format!("{} does not accept this method", uri.path()),
    )
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(panic = message, "a command request handler panicked");
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        kind::INTERNAL,
        "Internal error",
        "an internal error interrupted the command; retry with the same Idempotency-Key \
         to learn whether it was applied",
    )
    .into_response()
}
