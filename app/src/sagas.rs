//! The sagas an application declares ([`App::saga`](crate::App::saga)),
//! built and run by the processes that issue commands: `annals serve`, and
//! `annals command-api --saga`.
//!
//! Each saga runs in a [`SagaRunner`] in a task of its own, over the
//! process's [`Commands`] (the handlers its routes use too, so that they
//! share locks and caches), until the process stops; it then finishes the
//! events it is on and writes its checkpoint.

use std::future::Future;
use std::num::NonZeroU64;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context;
use command_api::{Commands, Saga, SagaConfig, SagaHandle, SagaRunner};

use crate::Settings;
use crate::setup::Stop;

/// What an application's saga is built from in a process: the command
/// handlers to issue its commands through, and the settings given to the
/// process.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// use annals::{App, SagaSetup, Setting, Settings};
/// use command_api::{CommandHandler, Commands, HandlerConfig};
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
/// # use command_api::{Saga, SagaContext, SagaError};
/// # use event_store::{EventFilter, RecordedEvent};
///
/// /// Completes a task it reaches more than `expiry` after the task was added
/// /// (when it was stopped for that long, say).
/// struct Expiry {
///     tasks: CommandHandler<Task>,
///     expiry: Duration,
/// }
/// # #[async_trait::async_trait]
/// # impl Saga for Expiry {
/// #     type State = ();
/// #     fn name(&self) -> &'static str { "expiry" }
/// #     fn filter(&self) -> EventFilter { EventFilter::event_types(["TaskAdded"]) }
/// #     async fn handle(&self, event: &RecordedEvent, context: &SagaContext<()>) -> Result<(), SagaError> {
/// #         let age = context.now().as_micros().saturating_sub(event.timestamp.as_micros());
/// #         if age < i64::try_from(self.expiry.as_micros()).unwrap_or(i64::MAX) {
/// #             return Ok(());
/// #         }
/// #         let id = event.stream_id.as_str().trim_start_matches("task-");
/// #         let id = Uuid::parse_str(id).map_err(|e| SagaError::Permanent(e.to_string()))?;
/// #         let command = context.command("complete", &[id.as_bytes()])?;
/// #         match self.tasks.execute(TaskCommand::Complete { id }, command).await {
/// #             Ok(_) | Err(command_api::CommandError::Rejected(Done)) => Ok(()),
/// #             Err(e) => Err(SagaError::from_command(e)),
/// #         }
/// #     }
/// # }
///
/// fn expiry_setting() -> Setting {
///     Setting::duration(
///         "task-expiry",
///         Duration::from_secs(3600),
///         "A task the expiry saga reaches this long after it was added is completed",
///     )
/// }
///
/// /// How each process that runs the saga builds it: over the process's
/// /// handlers, with the settings of its command line.
/// fn expiry(setup: &SagaSetup) -> anyhow::Result<Expiry> {
///     Ok(Expiry {
///         tasks: setup.commands().handler::<Task>(),
///         expiry: setup.settings().duration("task-expiry")?,
///     })
/// }
///
/// let app = App::new("todo").setting(expiry_setting()).saga(expiry);
/// # let _ = app;
///
/// // What `todo serve` does with it (with no `--task-expiry-ms` given).
/// # let runtime = tokio::runtime::Runtime::new()?;
/// # runtime.block_on(async {
/// # let dir = tempfile::tempdir()?;
/// let store = event_store::Store::open(dir.path(), Default::default()).await?;
/// let commands = Commands::new(Arc::new(store.clone()), HandlerConfig::default());
/// let setup = SagaSetup::new(commands, Settings::defaults(&[expiry_setting()]));
/// assert_eq!(expiry(&setup)?.expiry, Duration::from_secs(3600));
/// # store.close().await?;
/// # Ok::<(), anyhow::Error>(())
/// # })?;
/// # Ok::<(), anyhow::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct SagaSetup {
    commands: Commands,
    settings: Settings,
}

impl SagaSetup {
    pub fn new(commands: Commands, settings: Settings) -> Self {
        Self { commands, settings }
    }

    /// The process's command handlers: `commands().handler::<A>()` is the
    /// handler of aggregate type `A` its routes use.
    pub fn commands(&self) -> &Commands {
        &self.commands
    }

    /// The application's settings, as given to this process.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }
}

/// A saga's run, to be spawned.
type RunFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Builds a declared saga in a process and readies its run until the
/// shutdown future resolves.
pub(crate) type DeclaredSaga = Box<
    dyn Fn(&SagaSetup, SagaConfig, RunFuture) -> anyhow::Result<(SagaHandle, RunFuture)>
        + Send
        + Sync,
>;

/// The type-erased form of `build`, for the application's list.
pub(crate) fn declare<S: Saga>(
    build: impl Fn(&SagaSetup) -> anyhow::Result<S> + Send + Sync + 'static,
) -> DeclaredSaga {
    Box::new(move |setup, config, shutdown| {
        let saga = build(setup)?;
        let runner = SagaRunner::new(saga, setup.commands().store().clone(), config);
        let handle = runner.handle();
        Ok((handle, Box::pin(runner.run(shutdown))))
    })
}

/// The application's sagas, built for a process and not running yet.
pub struct BuiltSagas {
    sagas: Vec<(SagaHandle, RunFuture)>,
}

impl std::fmt::Debug for BuiltSagas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.sagas.iter().map(|(handle, _)| handle.name()))
            .finish()
    }
}

impl BuiltSagas {
    /// Builds every saga `app` declares over `setup`, each to run until
    /// `stop`. Fails when one cannot be built (a setting it asks for is not
    /// declared, say) or two share a name, before anything runs.
    pub fn build(
        app: &crate::App,
        setup: &SagaSetup,
        options: &crate::SagaOptions,
        stop: &Stop,
    ) -> anyhow::Result<Self> {
        let mut sagas = Vec::with_capacity(app.sagas.len());
        let mut names = std::collections::BTreeSet::new();
        for (index, declared) in app.sagas.iter().enumerate() {
            let shutdown: RunFuture = Box::pin(stop.wait());
            let (handle, run) =
                declared(setup, saga_config(options), shutdown).with_context(|| {
                    format!("cannot set up saga number {} of {}", index + 1, app.name)
                })?;
            // One checkpoint stream and one key space per name: two sagas
            // under one name would each skip what the other did.
            anyhow::ensure!(
                names.insert(handle.name()),
                "{} declares two sagas named {:?}",
                app.name,
                handle.name()
            );
            sagas.push((handle, run));
        }
        Ok(Self { sagas })
    }

    /// Runs each saga in a task of its own.
    pub fn spawn(self) -> RunningSagas {
        RunningSagas {
            sagas: self
                .sagas
                .into_iter()
                .map(|(handle, run)| (handle, tokio::spawn(run)))
                .collect(),
        }
    }
}

/// The application's sagas, each running in a task of its own.
#[derive(Debug)]
pub struct RunningSagas {
    sagas: Vec<(SagaHandle, tokio::task::JoinHandle<()>)>,
}

impl RunningSagas {
    /// What readiness looks at: each saga's status, by its name.
    pub fn handles(&self) -> Vec<SagaHandle> {
        self.sagas
            .iter()
            .map(|(handle, _)| handle.clone())
            .collect()
    }

    /// Waits for every task to end (after `stop`).
    pub async fn finish(self) -> anyhow::Result<()> {
        let mut failed = Vec::new();
        for (handle, task) in self.sagas {
            if let Err(e) = task.await {
                failed.push(format!("{}: {e}", handle.name()));
            }
        }
        anyhow::ensure!(
            failed.is_empty(),
            "saga tasks ended abnormally: {}",
            failed.join("; ")
        );
        Ok(())
    }
}

/// How every saga of the process is run.
pub fn saga_config(options: &crate::SagaOptions) -> SagaConfig {
    SagaConfig {
        checkpoint_every_events: NonZeroU64::new(options.saga_checkpoint_every_events)
            .unwrap_or(NonZeroU64::MIN),
        checkpoint_interval: Duration::from_millis(options.saga_checkpoint_interval_ms),
        concurrency: usize::try_from(options.saga_concurrency).unwrap_or(1),
        ..SagaConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use annals_bank::{Account, Transfer, Transfers};

    use super::*;
    use crate::App;

    #[test]
    fn a_saga_asking_for_an_undeclared_setting_stops_the_start_naming_it() {
        let app = App::new("shop").saga(|setup| {
            let _ = setup.settings().duration("nowhere")?;
            Ok(Transfers::new(
                setup.commands().handler::<Account>(),
                setup.commands().handler::<Transfer>(),
            ))
        });
        let line = format!("{:#}", refusal(&app));
        assert!(line.contains("\"nowhere\""), "{line}");
    }

    #[test]
    fn two_sagas_under_one_name_are_refused() {
        let transfers = |setup: &SagaSetup| {
            Ok(Transfers::new(
                setup.commands().handler::<Account>(),
                setup.commands().handler::<Transfer>(),
            ))
        };
        let app = App::new("bank").saga(transfers).saga(transfers);
        let e = refusal(&app);
        assert!(
            e.to_string().contains("two sagas named \"transfers\""),
            "{e}"
        );
    }

    /// Why building `app`'s sagas over an empty store failed.
    fn refusal(app: &App) -> anyhow::Error {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = event_store::Store::open(dir.path(), Default::default())
                .await
                .unwrap();
            let setup = SagaSetup::new(
                Commands::new(Arc::new(store.clone()), Default::default()),
                Settings::default(),
            );
            let options = crate::SagaOptions {
                saga_checkpoint_every_events: 1,
                saga_checkpoint_interval_ms: 1,
                saga_concurrency: 1,
            };
            let e = BuiltSagas::build(app, &setup, &options, &Stop::new()).unwrap_err();
            store.close().await.unwrap();
            e
        })
    }
}

/// `GET /sagas`: the status of each saga the process runs (state,
/// positions, counts, last failure), for operators and the admin UI.
pub fn status_routes(handles: Vec<SagaHandle>) -> axum::Router {
    axum::Router::new().route(
        "/sagas",
        axum::routing::get(move || {
            let handles = handles.clone();
            async move {
                let sagas: Vec<_> = handles.iter().map(SagaHandle::status).collect();
                axum::Json(serde_json::json!({ "sagas": sagas }))
            }
        }),
    )
}

/// The status of every saga the process runs
#[utoipa::path(
    get,
    path = "/sagas",
    tag = "sagas",
    responses((status = 200, description = "`{\"sagas\": [...]}`: per saga its `name`, `state` (starting, running, retrying, stopped), `position` (done up to), `checkpoint`, `events_handled`, `events_skipped`, `events_in_flight`, `events_retrying`, `state_summary` and `last_error`", body = Object))
)]
#[allow(
    dead_code,
    reason = "describes the route for the OpenAPI document; never called"
)]
fn sagas_doc() {}

#[derive(utoipa::OpenApi)]
#[openapi(paths(sagas_doc))]
struct SagasApi;

/// The OpenAPI document of [`status_routes`].
pub fn status_openapi() -> utoipa::openapi::OpenApi {
    <SagasApi as utoipa::OpenApi>::openapi()
}
