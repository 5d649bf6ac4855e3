//! Command routes declared for any aggregate: a method, a path, a body type
//! and the function that turns the body into a command. Everything else a
//! command route does (conditional requests, idempotency, retries,
//! problems, correlation ids, limits, the OpenAPI operation) is the same
//! for every route and lives here and in [`super`].

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::commands::Commands;
use crate::error::CommandError;
use crate::handler::{CommandContext, CommandOutcome};
use crate::http::problem::{Problem, etag, kind};
use crate::http::request::{
    BodyRule, COMMAND_ID, CORRELATION_ID, CommandRequest, FieldErrors, IDEMPOTENT_REPLAYED,
    path_id, path_rejection,
};

/// How one command route is reached and described: its method, its path
/// (with `{id}` for the aggregate's id, and any other ids it names), a
/// one-line summary for the OpenAPI document, and what is special about it.
///
/// ```
/// use command_api::{CommandApi, CommandRoutes, NoFields, Route};
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
///
/// let complete = |id, NoFields {}| Ok(TaskCommand::Complete { id });
/// let routes = CommandRoutes::<Task>::new("/tasks")
///     .command(
///         Route::post("/tasks/{id}/complete", "Complete a task")
///             .describe("Completing a completed task is refused (rule `task-done`).")
///             // `POST /tasks/{id}/complete` with no body at all reads as `{}`.
///             .optional_body(),
///         complete,
///     )
///     // The path of an earlier release, kept for its clients.
///     .command(
///         Route::post("/tasks/{id}/done", "Complete a task")
///             .optional_body()
///             .deprecated(1_767_225_600, "/tasks/{id}/complete"),
///         complete,
///     );
///
/// let document = serde_json::to_value(CommandApi::new("todo").aggregate(routes).openapi())?;
/// let paths = &document["paths"];
/// assert_eq!(paths["/tasks/{id}/complete"]["post"]["requestBody"]["required"], false);
/// assert_eq!(paths["/tasks/{id}/done"]["post"]["deprecated"], true);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Route {
    pub(crate) method: Method,
    pub(crate) path: &'static str,
    pub(crate) summary: &'static str,
    pub(crate) description: Option<&'static str>,
    pub(crate) body: BodyRule,
    pub(crate) erases_personal_data: bool,
    pub(crate) deprecation: Option<Deprecation>,
}

/// A route kept for existing clients, with its successor.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deprecation {
    /// Unix seconds, for the `Deprecation` header (RFC 9745).
    pub since: u64,
    /// The path that replaces it, with the same `{…}` parameters.
    pub successor: &'static str,
}

impl Route {
    fn new(method: Method, path: &'static str, summary: &'static str) -> Self {
        Self {
            method,
            path,
            summary,
            description: None,
            body: BodyRule::Required,
            erases_personal_data: false,
            deprecation: None,
        }
    }

    /// A `POST` route.
    pub fn post(path: &'static str, summary: &'static str) -> Self {
        Self::new(Method::POST, path, summary)
    }

    /// A `PUT` route.
    pub fn put(path: &'static str, summary: &'static str) -> Self {
        Self::new(Method::PUT, path, summary)
    }

    /// A `PATCH` route.
    pub fn patch(path: &'static str, summary: &'static str) -> Self {
        Self::new(Method::PATCH, path, summary)
    }

    /// A `DELETE` route; its body is optional.
    pub fn delete(path: &'static str, summary: &'static str) -> Self {
        Self::new(Method::DELETE, path, summary).optional_body()
    }

    /// More about the route, for the OpenAPI document (Markdown).
    pub fn describe(mut self, description: &'static str) -> Self {
        self.description = Some(description);
        self
    }

    /// The body may be left out: an empty body reads as `{}`.
    pub fn optional_body(mut self) -> Self {
        self.body = BodyRule::Optional;
        self
    }

    /// After the command succeeds, the store destroys the key of the
    /// aggregate's personal data (crypto-shredding): every stored copy
    /// reads as erased from then on. The command runs first, so a failure
    /// in between is finished by sending the request again; the command
    /// must therefore accept being run on an erased aggregate. A store
    /// that keeps no keys answers `501`.
    pub fn erases_personal_data(mut self) -> Self {
        self.erases_personal_data = true;
        self
    }

    /// The route is kept for existing clients only: every answer carries
    /// `Deprecation: @<since>` (Unix seconds, RFC 9745) and a `Link` to
    /// `successor` (a path with the same parameters), and the OpenAPI
    /// operation is marked deprecated.
    pub fn deprecated(mut self, since_unix_seconds: u64, successor: &'static str) -> Self {
        self.deprecation = Some(Deprecation {
            since: since_unix_seconds,
            successor,
        });
        self
    }

    /// The names of the path's parameters, in order.
    pub(crate) fn parameters(&self) -> Vec<&'static str> {
        parameters(self.path)
    }

    pub(crate) fn method_filter(&self) -> MethodFilter {
        match self.method {
            Method::PUT => MethodFilter::PUT,
            Method::PATCH => MethodFilter::PATCH,
            Method::DELETE => MethodFilter::DELETE,
            _ => MethodFilter::POST,
        }
    }
}

fn parameters(path: &'static str) -> Vec<&'static str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

/// The ids in a route's path, each checked to be an id as annals spells
/// them (`400 invalid-id` otherwise) before the body is even read.
#[derive(Debug, Clone, Default)]
pub struct PathIds(Vec<(String, Uuid)>);

impl PathIds {
    /// The id named `name` in the route's path (`{name}`).
    pub fn get(&self, name: &str) -> Option<Uuid> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, id)| *id)
    }

    /// The aggregate's id, `{id}`.
    pub fn id(&self) -> Option<Uuid> {
        self.get("id")
    }
}

/// Turns a request's ids and body into a command, or says which fields are
/// wrong.
type Build<A> = dyn Fn(&PathIds, Uuid, &CommandRequest) -> Result<<A as Aggregate>::Command, Problem>
    + Send
    + Sync;

/// One declared route with what it needs to run.
pub(crate) struct Declared<A: Aggregate> {
    pub route: Route,
    pub creates: bool,
    pub body_schema: BodySchema,
    build: Arc<Build<A>>,
}

/// The body type of a route, for the OpenAPI document.
#[derive(Clone)]
pub(crate) struct BodySchema {
    pub name: String,
    pub schemas: Vec<(
        String,
        utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
    )>,
}

impl BodySchema {
    fn of<B: utoipa::ToSchema>() -> Self {
        let mut schemas = Vec::new();
        B::schemas(&mut schemas);
        schemas.push((B::name().into_owned(), B::schema()));
        Self {
            name: B::name().into_owned(),
            schemas,
        }
    }
}

/// The command routes of one aggregate type.
///
/// ```
/// use command_api::{CommandApi, CommandRoutes, FieldErrors, NoFields, Route};
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
///
/// /// `POST /tasks` with `{"title": "..."}`.
/// #[derive(serde::Deserialize, utoipa::ToSchema)]
/// struct AddTask {
///     title: String,
/// }
///
/// let routes = CommandRoutes::<Task>::new("/tasks")
///     .create(Route::post("/tasks", "Add a task"), |id, body: AddTask| {
///         let mut errors = FieldErrors::new();
///         let title = errors.check("/title", match body.title.trim() {
///             "" => Err("a task needs a title"),
///             title => Ok(title.to_owned()),
///         });
///         errors.finish(|| Some(TaskCommand::Add { id, title: title? }))
///     })
///     .command(
///         Route::post("/tasks/{id}/complete", "Complete a task").optional_body(),
///         |id, NoFields {}| Ok(TaskCommand::Complete { id }),
///     );
/// assert_eq!(routes.collection(), "/tasks");
///
/// // The command API serves them and describes them in its OpenAPI document.
/// let api = CommandApi::new("todo command API").aggregate(routes);
/// let document = serde_json::to_value(api.openapi())?;
/// assert_eq!(document["paths"]["/tasks"]["post"]["summary"], "Add a task");
/// assert!(document["paths"]["/tasks/{id}/complete"]["post"].is_object());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct CommandRoutes<A: Aggregate> {
    collection: &'static str,
    pub(crate) routes: Vec<Declared<A>>,
}

impl<A: Aggregate> CommandRoutes<A> {
    /// Routes for the aggregates under `collection` (`/accounts`): where a
    /// created aggregate is (`Location: /accounts/<id>`), and the tag of
    /// its operations in the OpenAPI document.
    pub fn new(collection: &'static str) -> Self {
        Self {
            collection,
            routes: Vec::new(),
        }
    }

    /// A route that creates an aggregate: `build` gets a new id (a UUIDv7;
    /// the body may name one of its own instead) and the body. Answers
    /// `201` with `Location`.
    pub fn create<B>(
        self,
        route: Route,
        build: impl Fn(Uuid, B) -> Result<A::Command, FieldErrors> + Send + Sync + 'static,
    ) -> Self
    where
        B: DeserializeOwned + utoipa::ToSchema + 'static,
    {
        self.declare::<B>(route, true, move |_, new_id, body| build(new_id, body))
    }

    /// A route on an existing aggregate, whose id is the path's `{id}`:
    /// `build` gets it and the body. Answers `200`.
    pub fn command<B>(
        self,
        route: Route,
        build: impl Fn(Uuid, B) -> Result<A::Command, FieldErrors> + Send + Sync + 'static,
    ) -> Self
    where
        B: DeserializeOwned + utoipa::ToSchema + 'static,
    {
        self.declare::<B>(route, false, move |ids, _, body| {
            // Routes without `{id}` are refused when declared (see
            // `CommandApi::aggregate`), so this is only a fallback.
            let id = ids.id().unwrap_or_default();
            build(id, body)
        })
    }

    /// A route on an existing aggregate whose path names more ids than
    /// `{id}` (`/customers/{id}/reservations/{order_id}/release`): `build`
    /// gets them all.
    pub fn command_with_ids<B>(
        self,
        route: Route,
        build: impl Fn(&PathIds, B) -> Result<A::Command, FieldErrors> + Send + Sync + 'static,
    ) -> Self
    where
        B: DeserializeOwned + utoipa::ToSchema + 'static,
    {
        self.declare::<B>(route, false, move |ids, _, body| build(ids, body))
    }

    fn declare<B>(
        mut self,
        route: Route,
        creates: bool,
        build: impl Fn(&PathIds, Uuid, B) -> Result<A::Command, FieldErrors> + Send + Sync + 'static,
    ) -> Self
    where
        B: DeserializeOwned + utoipa::ToSchema + 'static,
    {
        let rule = route.body;
        let build: Arc<Build<A>> = Arc::new(move |ids, new_id, request| {
            let body: B = request.json(rule)?;
            build(ids, new_id, body).map_err(FieldErrors::into_problem)
        });
        self.routes.push(Declared {
            route,
            creates,
            body_schema: BodySchema::of::<B>(),
            build,
        });
        self
    }

    /// Where the aggregates are, as given to [`CommandRoutes::new`].
    pub fn collection(&self) -> &'static str {
        self.collection
    }
}

impl<A: Aggregate> std::fmt::Debug for CommandRoutes<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandRoutes")
            .field("aggregate", &A::TYPE)
            .field(
                "routes",
                &self
                    .routes
                    .iter()
                    .map(|d| format!("{} {}", d.route.method, d.route.path))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl<A: Aggregate> CommandRoutes<A> {
    /// Adds the routes to `router`, each running its commands through
    /// `commands`' handler of `A`.
    pub(crate) fn mount(&self, mut router: Router, commands: &Commands) -> Router {
        for declared in &self.routes {
            let endpoint = Endpoint::<A> {
                collection: self.collection,
                handler: commands.handler::<A>(),
                route: declared.route.clone(),
                build: declared.build.clone(),
            };
            let endpoint = Arc::new(endpoint);
            let handler = move |uri: Uri,
                                path: Result<Path<Vec<(String, String)>>, PathRejection>,
                                request: CommandRequest| {
                let endpoint = endpoint.clone();
                async move { endpoint.answer(uri, path, request).await }
            };
            router = router.route(
                declared.route.path,
                on(declared.route.method_filter(), handler),
            );
        }
        router
    }
}

/// A declared route bound to its handler.
struct Endpoint<A: Aggregate> {
    collection: &'static str,
    handler: crate::handler::CommandHandler<A>,
    route: Route,
    build: Arc<Build<A>>,
}

type Answer = Result<Response, Problem>;

impl<A: Aggregate> Endpoint<A> {
    async fn answer(
        &self,
        uri: Uri,
        path: Result<Path<Vec<(String, String)>>, PathRejection>,
        request: CommandRequest,
    ) -> Response {
        let mut response = self.run(path, request).await.into_response();
        if let Some(deprecation) = self.route.deprecation {
            deprecated(response.headers_mut(), &uri, &self.route, deprecation);
        }
        response
    }

    async fn run(
        &self,
        path: Result<Path<Vec<(String, String)>>, PathRejection>,
        request: CommandRequest,
    ) -> Answer {
        let ids = path_ids(path)?;
        let context = context(&request)?;
        let command = (self.build)(&ids, Uuid::now_v7(), &request)?;
        let correlation_id = context.correlation_id;
        let outcome = self.handler.execute(command, context).await?;
        if self.route.erases_personal_data {
            let erased = self
                .handler
                .store()
                .forget_subject(&outcome.stream_id)
                .await;
            match erased {
                Ok(()) => {}
                Err(event_store::Error::Unsupported(detail)) => {
                    return Err(Problem::new(
                        StatusCode::NOT_IMPLEMENTED,
                        kind::NOT_IMPLEMENTED,
                        "Not implemented",
                        detail,
                    ));
                }
                Err(e) => return Err(CommandError::<A::Error>::from(e).into()),
            }
        }
        render(&outcome, correlation_id, self.collection)
    }
}

/// Every parameter of the path, each an id.
fn path_ids(path: Result<Path<Vec<(String, String)>>, PathRejection>) -> Result<PathIds, Problem> {
    let Path(raw) = path.map_err(path_rejection)?;
    let mut ids = Vec::with_capacity(raw.len());
    for (name, value) in raw {
        let id = path_id(&name, &value)?;
        ids.push((name, id));
    }
    Ok(PathIds(ids))
}

/// The command context a request asks for through its headers.
fn context(request: &CommandRequest) -> Result<CommandContext, Problem> {
    let mut context = CommandContext::new();
    if let Some(correlation_id) = request.correlation_id()? {
        context.correlation_id = correlation_id;
    }
    context.traceparent = request.traceparent();
    // The request's span (every process opens one) shows the ids in
    // each line logged while the command runs.
    let span = tracing::Span::current();
    span.record(
        "correlation_id",
        tracing::field::display(context.correlation_id),
    );
    span.record(
        "causation_id",
        tracing::field::display(context.causation_id),
    );
    context.expected_version = request.if_match()?;
    context.idempotency = request.idempotency()?;
    Ok(context)
}

/// What every successful command answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct CommandResponse {
    /// The aggregate's id (generated when the request gave none).
    id: Uuid,
    /// The version of the aggregate's stream after the command, also sent
    /// as `ETag`: what to send as `If-Match` next.
    #[schema(example = 3)]
    version: u64,
    /// The log position of the aggregate's latest event: send it as
    /// `min_position` to the query API to read this write.
    #[schema(example = 1042)]
    position: u64,
}

/// A command's outcome as the HTTP answer.
fn render<E>(outcome: &CommandOutcome<E>, correlation_id: Uuid, collection: &str) -> Answer {
    let created = outcome.created;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = serde_json::to_vec(&CommandResponse {
        id: outcome.aggregate_id,
        version: outcome.version,
        position: outcome.position.get(),
    })
    .map_err(|e| crate::http::problem::internal(&e))?;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::ETAG, etag(outcome.version));
    let ids = [
        (CORRELATION_ID, correlation_id),
        (COMMAND_ID, outcome.command_id),
    ];
    for (name, id) in ids {
        if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
            headers.insert(name, value);
        }
    }
    if created
        && let Ok(location) =
            HeaderValue::from_str(&format!("{collection}/{}", outcome.aggregate_id))
    {
        headers.insert(header::LOCATION, location);
    }
    if outcome.replayed {
        headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok((status, headers, body).into_response())
}

/// Marks an answer of a deprecated route, whatever its status (RFC 9745):
/// `Deprecation` with the date, and a `Link` to the route that replaces it,
/// with the parameters as the client sent them.
fn deprecated(headers: &mut HeaderMap, uri: &Uri, route: &Route, deprecation: Deprecation) {
    if let Ok(value) = HeaderValue::from_str(&format!("@{}", deprecation.since)) {
        headers.insert(HeaderName::from_static("deprecation"), value);
    }
    let Some(successor) = successor_path(route.path, deprecation.successor, uri.path()) else {
        return;
    };
    if let Ok(link) = HeaderValue::from_str(&format!("<{successor}>; rel=\"successor-version\"")) {
        headers.insert(header::LINK, link);
    }
}

/// `successor` with the parameters `actual` gave for `template`'s.
fn successor_path(template: &str, successor: &str, actual: &str) -> Option<String> {
    let template: Vec<&str> = template.split('/').collect();
    let actual: Vec<&str> = actual.split('/').collect();
    if template.len() != actual.len() {
        return None;
    }
    let mut path = successor.to_owned();
    for (t, a) in template.iter().zip(&actual) {
        if t.starts_with('{') {
            path = path.replace(t, a);
        }
    }
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_read_off_the_path() {
        assert_eq!(parameters("/a"), Vec::<&str>::new());
        assert_eq!(parameters("/a/{id}/b/{other_id}/c"), ["id", "other_id"]);
    }

    #[test]
    fn the_successor_takes_the_parameters_as_sent() {
        assert_eq!(
            successor_path(
                "/customers/{id}/forget",
                "/customers/{id}/personal-data",
                "/customers/0190f/forget"
            )
            .as_deref(),
            Some("/customers/0190f/personal-data")
        );
        assert_eq!(
            successor_path("/a/{id}", "/b/{id}", "/a/x/extra"),
            None,
            "a path of another shape names no successor"
        );
    }
}
