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
mod serve;

use std::process::ExitCode;
use std::sync::Arc;

use event_store::{EventStore, PersonalData, Upcasters};
use projector::{Projection, ProjectorBuilder, ViewDb};
use query_api::QueryRoutes;

use cli::*;

/// An annals application: the domain it runs, and the command line that
/// runs it.
pub struct App {
    name: String,
    upcasters: Upcasters,
    personal_data: PersonalData,
    projections: Vec<Arc<dyn Projection>>,
    queries: QueryRoutes,
}

impl App {
    /// An application with nothing declared yet; `name` is how logs and
    /// documents call it.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            upcasters: command_api::with_own_events(Upcasters::default()),
            personal_data: PersonalData::default(),
            projections: Vec::new(),
            queries: QueryRoutes::new(),
        }
    }

    /// The reference credit domain (customers, orders, the order-fulfilment
    /// saga and their views).
    pub fn reference() -> Self {
        let mut app = Self::new("annals")
            .upcasters(command_api::domain::upcasters())
            .personal_data(command_api::domain::customer::shredding_policy())
            .queries(query_api::reference::routes());
        for projection in projector::reference::projections() {
            app.projections.push(projection);
        }
        app
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
            .field("queries", &self.queries.paths())
            .finish_non_exhaustive()
    }
}
