//! The split processes: `annals store`, and around it the command API (with
//! the application's sagas when asked), the projector and the query API,
//! each with its health endpoints and OpenAPI document.

use anyhow::Context;
use event_store::StoreOptions;
use projector::ViewDb;

use crate::auth::{Access, Role, Rule};
use crate::health::{self, Readiness};
use crate::sagas::{BuiltSagas, RunningSagas, SagaSetup};
use crate::setup::{
    RunningProjector, Stop, bind, command_config, connect_store, handler_config, local_addr,
    open_log, query_config, scheme, serve_config, view_db_options,
};
use crate::telemetry::Scrape;
use crate::ui::{Process, UiConfig};
use crate::{CommandApiArgs, ProjectorArgs, QueryApiArgs, StoreArgs};

/// The HTTP side every split process but the store sets up first, before
/// it reaches anything else: its configuration (the TLS files are read
/// here) and who may call it, refused at once when `listen` would expose
/// it without authentication.
struct Edge<'a> {
    name: &'a str,
    listen: &'a str,
    http: &'a crate::HttpOptions,
    config: http_edge::ServeConfig,
    access: Access,
}

impl<'a> Edge<'a> {
    async fn start(
        name: &'a str,
        listen: &'a str,
        http: &'a crate::HttpOptions,
        auth: &crate::AuthArgs,
    ) -> anyhow::Result<Self> {
        let config = serve_config(http)?;
        let access = Access::from_args(auth, None)?.with_tls(config.tls.is_some());
        access.check_listen(listen, name).await?;
        Ok(Self {
            name,
            listen,
            http,
            config,
            access,
        })
    }

    /// Serves `app` until `stop`, announcing the address on stderr as
    /// `<name>: <role> listening on http://...` (`https://` with TLS;
    /// `name` is the application's).
    async fn serve(self, role: &str, app: axum::Router, stop: &Stop) -> anyhow::Result<()> {
        let listener = bind(self.listen).await?;
        let addr = local_addr(&listener)?;
        self.access.check_exposure(addr, self.name)?;
        tracing::info!(%addr, role, "serving");
        eprintln!(
            "{}: {role} listening on {}://{addr}",
            self.name,
            scheme(&self.config)
        );
        crate::setup::serve_http(listener, app, self.http, self.config, stop)
            .await
            .with_context(|| format!("serving the {role}"))
    }
}

pub async fn store(args: StoreArgs, app: &crate::App) -> anyhow::Result<()> {
    let stop = Stop::on_signals()?;
    let config = serve_config(&args.http)?;
    let access =
        Access::from_args(&args.auth, Some(&args.data_dir))?.with_tls(config.tls.is_some());
    // The address first: a taken port fails before the data is touched.
    let listener = bind(&args.listen).await?;
    access.check_exposure(local_addr(&listener)?, &app.name)?;
    let (store, layered) = open_log(
        &args.data_dir,
        &args.log,
        StoreOptions {
            segment_bytes_max: args.segment_bytes_max,
            ..StoreOptions::default()
        },
        app,
    )
    .await?;
    let served = async {
        let router = access
            .protect(
                event_store_http::router(
                    layered.events().clone(),
                    event_store_http::ServerConfig {
                        stopping: Some(stop.watch()),
                        body_bytes_max: args.body_bytes_max as usize,
                        warnings: access
                            .is_insecure()
                            .then(|| crate::health::INSECURE_WARNING.to_owned())
                            .into_iter()
                            .collect(),
                        ..Default::default()
                    },
                ),
                Rule::Store,
            )
            .merge(access.protect(access.audit_routes(), Rule::Store))
            .merge(crate::ui::routes(UiConfig {
                store: Some(""),
                ..UiConfig::new(&app.name, Process::Store)
            }))
            .merge(access.metrics_routes(Scrape {
                store: Some(layered.events().clone()),
                ..Scrape::default()
            }));
        let addr = listener
            .local_addr()
            .context("reading the listening address")?;
        tracing::info!(%addr, data_dir = %args.data_dir.display(), "store serving");
        eprintln!(
            "{}: store listening on {}://{addr}",
            app.name,
            scheme(&config)
        );
        crate::setup::serve_http(listener, router, &args.http, config, &stop)
            .await
            .context("serving the store API")
    }
    .await;
    let closed = store.close().await;
    served.and(closed)?;
    tracing::info!("store closed");
    Ok(())
}

pub async fn command_api(args: CommandApiArgs, app: &crate::App) -> anyhow::Result<()> {
    let stop = Stop::on_signals()?;
    let edge = Edge::start(&app.name, &args.listen, &args.http, &args.auth).await?;
    let access = &edge.access;
    let store = connect_store(app, &args.store, &stop).await?;
    // The process's command handlers, one per aggregate type, shared by
    // the routes and the sagas.
    let handlers = command_api::Commands::new(store.clone(), handler_config(&args.commands));
    let sagas = if args.saga {
        let setup = SagaSetup::new(handlers.clone(), args.settings.clone());
        Some(BuiltSagas::build(app, &setup, &args.saga_options, &stop)?.spawn())
    } else {
        None
    };
    let routes = access.protect(
        app.commands
            .routes(&handlers, command_config(&args.commands)),
        Rule::Commands(app.commands.personal_data_erasures().into()),
    );
    let document = health::merged(
        &format!("{} command API", app.name),
        [app.commands.openapi(), crate::ui::store_openapi()]
            .into_iter()
            .chain(sagas.is_some().then(crate::sagas::status_openapi)),
    );
    let ui = UiConfig {
        store: Some(crate::ui::STORE_PREFIX),
        sagas: sagas.is_some(),
        ..UiConfig::new(&app.name, Process::CommandApi)
    };
    let metrics = access.metrics_routes(Scrape {
        sagas: sagas.as_ref().map(RunningSagas::handles),
        ..Scrape::default()
    });
    let router = health::with_fallbacks(
        routes
            .merge(access.health_routes(
                Readiness {
                    store: Some(store.events().clone()),
                    sagas: sagas.as_ref().map(RunningSagas::handles),
                    ..Readiness::default()
                },
                document,
            ))
            .merge(metrics)
            .merge(access.store_routes(store.events().clone(), &stop))
            .merge(match &sagas {
                Some(sagas) => access.saga_routes(sagas.handles()),
                None => axum::Router::new(),
            })
            .merge(crate::ui::routes(ui)),
    );
    let served = edge.serve("command API", router, &stop).await;
    stop.trigger();
    let finished = match sagas {
        Some(sagas) => sagas.finish().await,
        None => Ok(()),
    };
    served.and(finished)
}

pub async fn query_api(args: QueryApiArgs, app: &crate::App) -> anyhow::Result<()> {
    let stop = Stop::on_signals()?;
    let edge = Edge::start(&app.name, &args.listen, &args.http, &args.auth).await?;
    let access = &edge.access;
    let views = ViewDb::open_with(&args.database, view_db_options(&args.views))
        .await
        .context("cannot open the view database")?;
    let state = query_api::QueryState::new(views.clone(), query_config(&args.queries));
    let router = health::with_fallbacks(
        access
            .protect(
                query_api::routes(state, &app.queries),
                Rule::Needs(Role::Read),
            )
            .merge(access.health_routes(
                Readiness {
                    views: Some(views.clone()),
                    ..Readiness::default()
                },
                health::merged(
                    &format!("{} query API", app.name),
                    [query_api::openapi(&app.queries)],
                ),
            ))
            .merge(access.metrics_routes(Scrape::default()))
            .merge(crate::ui::routes(UiConfig::new(
                &app.name,
                Process::QueryApi,
            ))),
    );
    let served = edge.serve("query API", router, &stop).await;
    views.close().await;
    served
}

pub async fn projector(args: ProjectorArgs, app: &crate::App) -> anyhow::Result<()> {
    let stop = Stop::on_signals()?;
    let edge = Edge::start(&app.name, &args.listen, &args.http, &args.auth).await?;
    let access = &edge.access;
    let store = connect_store(app, &args.store, &stop).await?;
    let views = ViewDb::open_with(&args.database, view_db_options(&args.views))
        .await
        .context("cannot open the view database")?;
    let running = RunningProjector::start(
        app,
        store.events().clone(),
        views.clone(),
        &args.projector,
        &stop,
    )?;
    let router = health::with_fallbacks(
        access
            .protect(
                projector::admin_routes(running.handle.clone()),
                Rule::Needs(Role::Admin),
            )
            .merge(access.health_routes(
                Readiness {
                    store: Some(store.events().clone()),
                    views: Some(views.clone()),
                    projector: Some(running.check.clone()),
                    ..Readiness::default()
                },
                health::merged(
                    &format!("{} projector admin API", app.name),
                    [projector::admin_openapi(), crate::ui::store_openapi()],
                ),
            ))
            .merge(access.metrics_routes(Scrape {
                log: Some(store.events().clone()),
                projector: Some(running.handle.clone()),
                ..Scrape::default()
            }))
            .merge(access.store_routes(store.events().clone(), &stop))
            .merge(crate::ui::routes(UiConfig {
                store: Some(crate::ui::STORE_PREFIX),
                projections: true,
                ..UiConfig::new(&app.name, Process::Projector)
            })),
    );
    let served = edge.serve("projector", router, &stop).await;
    stop.trigger();
    let projected = running.finish().await;
    views.close().await;
    served?;
    projected
}
