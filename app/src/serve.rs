//! `annals serve`: the event store, command API, the application's sagas,
//! projector and query API in one process, on one port.
//!
//! Shutdown order: the signal stops the HTTP server from accepting, the
//! requests in flight finish, each saga finishes the events it is on and
//! writes its checkpoint, the projector commits the batch it is on and returns, then
//! the store is synced and closed (which releases the data directory's
//! lock).

use std::sync::Arc;

use anyhow::Context;
use event_store::{EventStore, StoreOptions};
use projector::ViewDb;

use crate::ServeArgs;
use crate::auth::{Access, Role, Rule};
use crate::health::{self, Readiness};
use crate::run::{
    RunningProjector, Stop, bind, command_config, handler_config, local_addr, open_embedded,
    query_config, scheme, serve_config, serve_http, view_db_options,
};
use crate::sagas::{BuiltSagas, SagaSetup};

pub async fn serve(args: ServeArgs, app: &crate::App) -> anyhow::Result<()> {
    serve_until(args, app, &Stop::on_signals()?).await
}

/// `annals serve` until `stop`.
pub(crate) async fn serve_until(
    args: ServeArgs,
    app: &crate::App,
    stop: &Stop,
) -> anyhow::Result<()> {
    let config = serve_config(&args.http)?;
    let access =
        Access::from_args(&args.auth, Some(&args.data_dir))?.with_tls(config.tls.is_some());
    // The address first: a taken port fails before the data is touched.
    let listener = bind(&args.listen).await?;
    access.check_exposure(local_addr(&listener)?, &app.name)?;
    let (store, layered) = open_embedded(
        &args.data_dir,
        StoreOptions {
            segment_bytes_max: args.segment_bytes_max,
            ..StoreOptions::default()
        },
        app,
    )
    .await?;
    let result = run(&args, app, &access, config, listener, layered, stop).await;
    // Whatever happened above, the store is closed cleanly.
    let closed = store.close().await.context("closing the store");
    result.and(closed)?;
    tracing::info!("store closed");
    Ok(())
}

async fn run(
    args: &ServeArgs,
    app: &crate::App,
    access: &Access,
    config: http_edge::ServeConfig,
    listener: tokio::net::TcpListener,
    store: Arc<dyn EventStore>,
    stop: &Stop,
) -> anyhow::Result<()> {
    let options = view_db_options(&args.views);
    let views = match &args.database {
        Some(url) => ViewDb::open_with(url, options).await,
        None => ViewDb::open_in_data_dir_with(&args.data_dir, options).await,
    }
    .context("cannot open the view database")?;
    // The process's command handlers, one per aggregate type, shared by
    // the routes and the sagas.
    let handlers = command_api::Commands::new(store.clone(), handler_config(&args.commands));
    let sagas = BuiltSagas::build(
        app,
        &SagaSetup::new(handlers.clone(), args.settings.clone()),
        &args.saga,
        stop,
    )?;
    let projector =
        RunningProjector::start(app, store.clone(), views.clone(), &args.projector, stop)?;
    let handle = projector.handle.clone();
    let sagas = sagas.spawn();

    let queries = query_api::QueryState::new(views.clone(), query_config(&args.queries));
    let openapi = health::merged(
        &app.name,
        [
            app.commands.openapi(),
            query_api::openapi(&app.queries),
            projector::admin_openapi(),
        ],
    );
    let router = health::with_fallbacks(
        access
            .protect(
                app.commands
                    .routes(&handlers, command_config(&args.commands)),
                Rule::Commands(app.commands.personal_data_erasures().into()),
            )
            .merge(access.protect(
                query_api::routes(queries, &app.queries),
                Rule::Needs(Role::Read),
            ))
            .merge(access.protect(projector::admin_routes(handle), Rule::Needs(Role::Admin)))
            .merge(access.health_routes(
                Readiness {
                    store: Some(store.clone()),
                    views: Some(views.clone()),
                    projector: Some(projector.check.clone()),
                    sagas: Some(sagas.handles()),
                    ..Readiness::default()
                },
                openapi,
            )),
    );
    let addr = listener
        .local_addr()
        .context("reading the listening address")?;
    tracing::info!(%addr, data_dir = %args.data_dir.display(), views = views.description(), "serving");
    eprintln!("{}: listening on {}://{addr}", app.name, scheme(&config));
    let served = serve_http(listener, router, &args.http, config, stop)
        .await
        .context("serving HTTP");
    // The server may have ended on an error rather than the signal: stop
    // the sagas and the projector too.
    stop.trigger();
    let saga = sagas.finish().await;
    let projected = projector.finish().await;
    views.close().await;
    served?;
    saga?;
    projected
}
