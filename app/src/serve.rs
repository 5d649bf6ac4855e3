//! `annals serve`: the event store, command API, the application's sagas,
//! projector and query API in one process, on one port.
//!
//! Shutdown order: the signal stops the HTTP server from accepting, the
//! requests in flight finish, each saga finishes the events it is on and
//! writes its checkpoint, the projector commits the batch it is on and returns, then
//! the store is synced and closed (which releases the data directory's
//! lock).

use anyhow::Context;
use command_api::CommandStore;
use event_store::StoreOptions;
use projector::ViewDb;

use crate::ServeArgs;
use crate::auth::{Access, Role, Rule};
use crate::health::{self, Readiness};
use crate::sagas::{BuiltSagas, SagaSetup};
use crate::setup::{
    RunningProjector, Stop, bind, command_config, handler_config, local_addr, open_log,
    query_config, scheme, serve_config, serve_http, view_db_options,
};
use crate::telemetry::Scrape;
use crate::ui::{Process, UiConfig};

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
    let result = run(&args, app, &access, config, listener, layered, stop).await;
    // Whatever happened above, the store is closed cleanly.
    let closed = store.close().await;
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
    store: CommandStore,
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
    let projector = RunningProjector::start(
        app,
        store.events().clone(),
        views.clone(),
        &args.projector,
        stop,
    )?;
    let handle = projector.handle.clone();
    let sagas = sagas.spawn();

    let queries = query_api::QueryState::new(views.clone(), query_config(&args.queries));
    let openapi = health::merged(
        &app.name,
        [
            app.commands.openapi(),
            query_api::openapi(&app.queries),
            projector::admin_openapi(),
            crate::ui::store_openapi(),
            crate::sagas::status_openapi(),
        ],
    );
    let ui = UiConfig {
        store: Some(crate::ui::STORE_PREFIX),
        projections: true,
        sagas: true,
        ..UiConfig::new(&app.name, Process::Serve)
    };
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
            .merge(access.store_routes(store.events().clone(), stop))
            .merge(access.saga_routes(sagas.handles()))
            .merge(crate::ui::routes(ui))
            .merge(access.metrics_routes(Scrape {
                store: Some(store.events().clone()),
                log: Some(store.events().clone()),
                projector: Some(projector.handle.clone()),
                sagas: Some(sagas.handles()),
            }))
            .merge(access.health_routes(
                Readiness {
                    store: Some(store.events().clone()),
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

#[cfg(test)]
mod tests {
    //! `annals serve` for an application that is not the reference one
    //! (the bank example, declared as its team would): its saga runs,
    //! readiness names it, its setting reaches it, and a stop ends it.

    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use annals_bank::account::{AccountCommand, HolderName};
    use annals_bank::transfer::{TransferCommand, TransferStatus};
    use annals_bank::{Account, Amount, Currency, Money, Transfer, Transfers, TransfersConfig};
    use command_api::CommandContext;
    use uuid::Uuid;

    use super::*;
    use crate::{Action, App, Setting};

    const WAIT_MAX: Duration = Duration::from_secs(60);

    fn bank(seen: Arc<Mutex<Option<SagaSetup>>>) -> App {
        App::new("bank")
            .upcasters(annals_bank::upcasters())
            .personal_data(annals_bank::personal_data())
            .setting(Setting::duration(
                "transfer-expiry",
                Duration::from_secs(15 * 60),
                "A transfer whose source was not debited this long after the request fails.",
            ))
            .saga(move |setup| {
                *seen.lock().unwrap() = Some(setup.clone());
                Ok(Transfers::new(
                    setup.commands().handler::<Account>(),
                    setup.commands().handler::<Transfer>(),
                )
                .with_config(TransfersConfig {
                    expiry: setup.settings().duration("transfer-expiry")?,
                }))
            })
    }

    async fn open(setup: &SagaSetup, balance: i64) -> Uuid {
        let accounts = setup.commands().handler::<Account>();
        let account_id = Uuid::now_v7();
        let open = AccountCommand::Open {
            account_id,
            holder: HolderName::parse("Ada Lovelace").unwrap(),
            currency: Currency::Eur,
            overdraft_limit: Amount::new(0).unwrap(),
        };
        accounts.execute(open, CommandContext::new()).await.unwrap();
        if balance == 0 {
            return account_id;
        }
        let deposit = AccountCommand::Deposit {
            account_id,
            amount: Money::new(balance, Currency::Eur).unwrap(),
        };
        accounts
            .execute(deposit, CommandContext::new())
            .await
            .unwrap();
        account_id
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn annals_serve_runs_the_saga_an_application_declares() {
        let dir = tempfile::tempdir().unwrap();
        let listen = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().to_string()
        };
        let seen = Arc::new(Mutex::new(None));
        let app = bank(seen.clone());
        let data_dir = dir.path().to_str().unwrap();
        let args = [
            "annals",
            "serve",
            "--listen",
            &listen,
            "--data-dir",
            data_dir,
            "--transfer-expiry-ms",
            "60000",
        ];
        let Ok(cli) = crate::cli::parse(&app, args) else {
            panic!("the command line parses");
        };
        let Action::Serve(args) = cli.command else {
            panic!("{:?}", cli.command);
        };
        let stop = Stop::new();
        let server = tokio::spawn({
            let stop = stop.clone();
            async move { serve_until(args, &app, &stop).await }
        });

        // Ready, with the saga named.
        http_edge::tls::install_default_provider();
        let http = reqwest::Client::new();
        let deadline = Instant::now() + WAIT_MAX;
        let ready = loop {
            assert!(Instant::now() < deadline, "not ready within {WAIT_MAX:?}");
            assert!(!server.is_finished(), "annals serve ended early");
            let answer = http
                .get(format!("http://{listen}/health/ready"))
                .send()
                .await;
            if let Ok(answer) = answer
                && answer.status() == 200
            {
                break answer.json::<serde_json::Value>().await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(ready["checks"]["saga"], "ok", "{ready}");
        assert_eq!(ready["sagas"], serde_json::json!({"transfers": "ok"}));

        // The saga was built with the setting given, over the process's
        // handlers: a transfer requested through them goes through.
        let setup = seen.lock().unwrap().clone().unwrap();
        assert_eq!(
            setup.settings().duration("transfer-expiry"),
            Ok(Duration::from_secs(60))
        );
        let (from, to) = (open(&setup, 1_000).await, open(&setup, 0).await);
        let transfer_id = Uuid::now_v7();
        let request = TransferCommand::Request {
            transfer_id,
            from_account: from,
            to_account: to,
            amount: Money::new(400, Currency::Eur).unwrap(),
        };
        let transfers = setup.commands().handler::<Transfer>();
        transfers
            .execute(request, CommandContext::new())
            .await
            .unwrap();
        loop {
            let state = transfers.load(transfer_id).await.unwrap().state;
            if state.is_finished() {
                assert_eq!(state.status(), Some(TransferStatus::Completed));
                break;
            }
            assert!(Instant::now() < deadline, "the transfer did not finish");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let accounts = setup.commands().handler::<Account>();
        let balance = accounts.load(to).await.unwrap().state.balance();
        assert_eq!(balance, Some(400));

        stop.trigger();
        tokio::time::timeout(WAIT_MAX, server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
