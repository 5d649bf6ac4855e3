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
use crate::run::Stop;

/// What an application's saga is built from in a process: the command
/// handlers to issue its commands through, and the settings given to the
/// process.
///
/// ```no_run
/// # use std::time::Duration;
/// use annals::{App, Setting};
/// use command_api::domain::customer::Customer;
/// use command_api::domain::order::Order;
/// use command_api::{OrderFulfilment, OrderFulfilmentConfig};
///
/// App::new("shop")
///     .setting(Setting::duration(
///         "order-decision-timeout",
///         Duration::from_secs(30),
///         "How long an order may wait for its credit check",
///     ))
///     .saga(|setup| {
///         Ok(OrderFulfilment::new(
///             setup.commands().handler::<Customer>(),
///             setup.commands().handler::<Order>(),
///             OrderFulfilmentConfig {
///                 decision_timeout: setup.settings().duration("order-decision-timeout")?,
///             },
///         ))
///     })
///     .run();
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
        let stop = crate::run::Stop::new();
        let server = tokio::spawn({
            let stop = stop.clone();
            async move { crate::serve::serve_until(args, &app, &stop).await }
        });

        // Ready, with the saga named.
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

    #[test]
    fn a_saga_asking_for_an_undeclared_setting_stops_the_start_naming_it() {
        let app = App::new("shop").saga(|setup| {
            let _ = setup.settings().duration("nowhere")?;
            Ok(Transfers::new(
                setup.commands().handler::<Account>(),
                setup.commands().handler::<Transfer>(),
            ))
        });
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
            let e = BuiltSagas::build(&app, &setup, &options, &Stop::new()).unwrap_err();
            let line = format!("{e:#}");
            assert!(line.contains("\"nowhere\""), "{line}");
            store.close().await.unwrap();
        });
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
            let e = BuiltSagas::build(&app, &setup, &options, &Stop::new()).unwrap_err();
            assert!(
                e.to_string().contains("two sagas named \"transfers\""),
                "{e}"
            );
            store.close().await.unwrap();
        });
    }
}
