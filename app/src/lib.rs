//! annals as an application: the command line (`serve`, `store`,
//! `command-api`, `projector`, `query-api`, `rebuild`, `status`, `skip`,
//! `resume`, `verify`), health and OpenAPI on every process, and graceful
//! shutdown, around a domain.
//!
//! An application declares its domain on an [`App`] and hands it the
//! process: a to-do list with one aggregate, one view and one query is a
//! whole service (`examples/todo` is this service with the hidden parts
//! written out). `todo serve --data-dir data` then serves
//! `POST /tasks`, `POST /tasks/{id}/complete` and `GET /tasks?done=1`,
//! with health and OpenAPI documents, in one process.
//!
//! ```no_run
//! use annals::App;
//! use command_api::{CommandRoutes, NoFields, Route};
//! use query_api::{Filter, FromViewRow, Key, ListRoute, QueryRoutes, View, ViewRow};
//! # use command_api::{Aggregate, AggregateCommand, DomainError, JsonEvent};
//! # use uuid::Uuid;
//! # #[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
//! # struct Task { done: bool }
//! # #[derive(Debug)]
//! # enum TaskCommand { Add { id: Uuid, title: String }, Complete { id: Uuid } }
//! # #[derive(Debug, serde::Serialize, serde::Deserialize)]
//! # enum TaskEvent { TaskAdded { title: String }, TaskCompleted }
//! # #[derive(Debug, thiserror::Error)]
//! # #[error("the task is done already")]
//! # struct Done;
//! # impl DomainError for Done { fn rule(&self) -> &'static str { "task-done" } }
//! # impl JsonEvent for TaskEvent {
//! #     fn event_type(&self) -> &'static str {
//! #         match self { Self::TaskAdded { .. } => "TaskAdded", Self::TaskCompleted => "TaskCompleted" }
//! #     }
//! # }
//! # impl AggregateCommand for TaskCommand {
//! #     fn aggregate_id(&self) -> Uuid { match self { Self::Add { id, .. } | Self::Complete { id } => *id } }
//! #     fn creates_aggregate(&self) -> bool { matches!(self, Self::Add { .. }) }
//! #     fn name(&self) -> &'static str { match self { Self::Add { .. } => "add", Self::Complete { .. } => "complete" } }
//! # }
//! # impl Aggregate for Task {
//! #     const TYPE: &'static str = "task";
//! #     const SNAPSHOT_SCHEMA: u32 = 1;
//! #     type Command = TaskCommand;
//! #     type Event = TaskEvent;
//! #     type Error = Done;
//! #     fn handle(&self, command: &TaskCommand) -> Result<Vec<TaskEvent>, Done> {
//! #         match command {
//! #             TaskCommand::Add { title, .. } => Ok(vec![TaskEvent::TaskAdded { title: title.clone() }]),
//! #             TaskCommand::Complete { .. } if self.done => Err(Done),
//! #             TaskCommand::Complete { .. } => Ok(vec![TaskEvent::TaskCompleted]),
//! #         }
//! #     }
//! #     fn apply(&mut self, event: &TaskEvent) {
//! #         if let TaskEvent::TaskCompleted = event { self.done = true }
//! #     }
//! # }
//! # #[derive(Debug)]
//! # struct Tasks;
//! # #[async_trait::async_trait]
//! # impl projector::Projection for Tasks {
//! #     fn name(&self) -> &'static str { "tasks" }
//! #     fn version(&self) -> u32 { 1 }
//! #     fn tables(&self) -> &'static [&'static str] { &["tasks"] }
//! #     fn event_types(&self) -> &'static [&'static str] { &["TaskAdded", "TaskCompleted"] }
//! #     fn schema(&self) -> projector::Schema {
//! #         let ddl = "CREATE TABLE tasks (id TEXT PRIMARY KEY, title TEXT NOT NULL, done BIGINT NOT NULL)";
//! #         projector::Schema::new(ddl, ddl)
//! #     }
//! #     async fn apply(&self, tx: &mut projector::ViewTx<'_>, events: &[event_store::RecordedEvent]) -> Result<(), projector::ApplyError> {
//! #         use command_api::DomainEvent;
//! #         let table = tx.table("tasks")?;
//! #         for event in events {
//! #             let id = event.stream_id.as_str().trim_start_matches("task-").to_owned();
//! #             let query = match TaskEvent::decode(&event.event_type, event.schema_version, &event.data)
//! #                 .map_err(|e| projector::ApplyError::event(event, e.to_string()))?
//! #             {
//! #                 TaskEvent::TaskAdded { title } => sqlx::query(sqlx::AssertSqlSafe(format!(
//! #                     "INSERT INTO {table} (id, title, done) VALUES ($1, $2, 0)"
//! #                 ))).bind(id).bind(title),
//! #                 TaskEvent::TaskCompleted => sqlx::query(sqlx::AssertSqlSafe(format!(
//! #                     "UPDATE {table} SET done = 1 WHERE id = $1"
//! #                 ))).bind(id),
//! #             };
//! #             query.execute(tx.conn()).await?;
//! #         }
//! #         Ok(())
//! #     }
//! # }
//!
//! /// `POST /tasks` with `{"title": "..."}`.
//! #[derive(serde::Deserialize, utoipa::ToSchema)]
//! struct AddTask {
//!     title: String,
//! }
//!
//! /// A task as `GET /tasks` shows it.
//! #[derive(serde::Serialize, utoipa::ToSchema)]
//! struct TaskRow {
//!     id: String,
//!     title: String,
//!     done: bool,
//! }
//!
//! impl FromViewRow for TaskRow {
//!     fn from_row(row: &ViewRow<'_>) -> Result<Self, sqlx::Error> {
//!         Ok(TaskRow { id: row.get("id")?, title: row.get("title")?, done: row.get::<i64>("done")? == 1 })
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     let tasks = CommandRoutes::<Task>::new("/tasks")
//!         .create(Route::post("/tasks", "Add a task"), |id, body: AddTask| {
//!             Ok(TaskCommand::Add { id, title: body.title })
//!         })
//!         .command(
//!             Route::post("/tasks/{id}/complete", "Complete a task").optional_body(),
//!             |id, NoFields {}| Ok(TaskCommand::Complete { id }),
//!         );
//!     let list = ListRoute::<TaskRow>::new("/tasks", View::new("tasks"), "SELECT id, title, done FROM tasks")
//!         .key(Key::text("id"))
//!         .filter(Filter::integer("done", 0, 1).eq("done"));
//!     App::new("todo")
//!         .aggregate(tasks)
//!         // `Tasks` is the `tasks` view's projection (see `projector::Projection`).
//!         .projection(Tasks)
//!         .queries(QueryRoutes::new().list(list))
//!         .run()
//! }
//! ```

mod admin;
mod auth;
mod backup;
mod cli;
mod copy;
mod dump;
mod health;
mod otlp;
mod processes;
mod rebuild;
mod run;
mod sagas;
mod serve;
mod settings;
mod setup;
mod telemetry;
pub mod testkit;
mod ui;
mod verify;

use std::process::ExitCode;
use std::sync::Arc;

use command_api::{Aggregate, CommandApi, CommandRoutes};
use event_store::{EventStore, PersonalData, Upcasters};
use projector::{Projection, ProjectorBuilder, ViewDb};
use query_api::QueryRoutes;

use cli::*;
pub use sagas::SagaSetup;
pub use settings::{Setting, SettingError, Settings};

/// An annals application: the domain it runs, and the command line that
/// runs it.
pub struct App {
    name: String,
    commands: CommandApi,
    upcasters: Upcasters,
    personal_data: PersonalData,
    projections: Vec<Arc<dyn Projection>>,
    sagas: Vec<sagas::DeclaredSaga>,
    settings: Vec<Setting>,
    queries: QueryRoutes,
}

impl App {
    /// An application with nothing declared yet; `name` is how logs and
    /// documents call it.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        Self {
            commands: CommandApi::new(format!("{name} command API")),
            name,
            upcasters: command_api::with_own_events(Upcasters::default()),
            personal_data: PersonalData::default(),
            projections: Vec::new(),
            sagas: Vec::new(),
            settings: Vec::new(),
            queries: QueryRoutes::new(),
        }
    }

    /// An aggregate type and its command routes: the command API serves
    /// them, and sagas reach its handler through
    /// [`command_api::Commands::handler`].
    pub fn aggregate<A: Aggregate>(mut self, routes: CommandRoutes<A>) -> Self {
        self.commands = self.commands.aggregate(routes);
        self
    }

    /// How stored events of older schema versions are read: every process
    /// reads the store through them.
    pub fn upcasters(mut self, upcasters: Upcasters) -> Self {
        // The events annals writes for the application are declared too.
        self.upcasters = command_api::with_own_events(upcasters);
        self
    }

    /// Which fields of which events are personal data, encrypted per data
    /// subject so that erasing the subject's key erases them
    /// (crypto-shredding). Applied by the process that holds the store.
    pub fn personal_data(mut self, policy: PersonalData) -> Self {
        self.personal_data = policy;
        self
    }

    /// A view the projector keeps, rebuilt from the log on demand.
    pub fn projection(mut self, projection: impl Projection) -> Self {
        self.projections.push(Arc::new(projection));
        self
    }

    /// A saga the processes that issue commands run (`annals serve`, and
    /// `annals command-api --saga`): `build` makes it from the process's
    /// command handlers and settings ([`SagaSetup`]). Each saga runs in a
    /// task of its own and readiness reports it by its name; names must
    /// differ (each is the saga's checkpoint stream and key space).
    pub fn saga<S: command_api::Saga>(
        mut self,
        build: impl Fn(&SagaSetup) -> anyhow::Result<S> + Send + Sync + 'static,
    ) -> Self {
        self.sagas.push(sagas::declare(build));
        self
    }

    /// A value the application's sagas are built with, set on the command
    /// line of the processes that run them (a flag and an environment
    /// variable, with a default: see [`Setting`]) and read with
    /// [`SagaSetup::settings`].
    pub fn setting(mut self, setting: Setting) -> Self {
        self.settings.push(setting);
        self
    }

    /// The query routes the query API serves (over the views of the
    /// application's projections).
    pub fn queries(mut self, routes: QueryRoutes) -> Self {
        self.queries = routes;
        self
    }

    /// Parses the command line and runs what it asks for; the exit code
    /// to end the process with.
    pub fn run(self) -> ExitCode {
        run::main(self)
    }

    /// A projector over `store` and `views` with this application's
    /// projections.
    fn projector(&self, store: Arc<dyn EventStore>, views: ViewDb) -> ProjectorBuilder {
        self.projections.iter().fold(
            projector::Projector::builder(store, views),
            |builder, projection| builder.projection_arc(projection.clone()),
        )
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("name", &self.name)
            .field(
                "projections",
                &self
                    .projections
                    .iter()
                    .map(|p| p.name())
                    .collect::<Vec<_>>(),
            )
            .field("sagas", &self.sagas.len())
            .field("settings", &self.settings)
            .field("queries", &self.queries.paths())
            .finish_non_exhaustive()
    }
}
