//! annals as an application: the command line (`serve`, `store`,
//! `command-api`, `projector`, `query-api`, `rebuild`, `status`, `skip`,
//! `resume`, `verify`), health and OpenAPI on every process, and graceful
//! shutdown, around a domain.

mod admin;
mod cli;
mod health;
mod processes;
mod rebuild;
mod run;
mod sagas;
mod serve;
mod settings;
pub mod testkit;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

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

    /// The reference credit domain (customers, orders, the order-fulfilment
    /// saga and their views).
    pub fn reference() -> Self {
        let mut app = Self::new("annals")
            .aggregate(command_api::domain::routes::customers())
            .aggregate(command_api::domain::routes::orders())
            .upcasters(command_api::domain::upcasters())
            .personal_data(command_api::domain::customer::shredding_policy())
            .setting(Setting::duration(
                ORDER_DECISION_TIMEOUT,
                Duration::from_secs(30),
                "An order whose credit check has not finished this many milliseconds after it was \
                 placed is rejected (reason `timeout: ...`) and any credit reserved for it released.",
            ))
            .saga(|setup: &SagaSetup| {
                use command_api::domain::{customer::Customer, order::Order};
                Ok(command_api::OrderFulfilment::new(
                    setup.commands().handler::<Customer>(),
                    setup.commands().handler::<Order>(),
                    command_api::OrderFulfilmentConfig {
                        decision_timeout: setup.settings().duration(ORDER_DECISION_TIMEOUT)?,
                    },
                ))
            })
            .queries(query_api::reference::routes());
        for projection in projector::reference::projections() {
            app.projections.push(projection);
        }
        app
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
        cli::main(self)
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

/// The reference domain's setting: how long an order may wait for its
/// credit check (`--order-decision-timeout-ms`).
const ORDER_DECISION_TIMEOUT: &str = "order-decision-timeout";

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
