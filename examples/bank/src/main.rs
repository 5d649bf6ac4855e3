//! The bank as a service: accounts, transfers carried out by a saga, their
//! views and queries, over HTTP, with annals' whole command line
//! (`annals-bank serve`, `store`, `command-api`, `projector`, `query-api`,
//! `rebuild`, `status`, ...).

use std::process::ExitCode;

use annals::{App, SagaSetup, Setting};
use annals_bank::{Account, Transfer, Transfers, TransfersConfig, routes, view};

/// `--transfer-expiry-ms`: how long a transfer may wait for its debit.
const TRANSFER_EXPIRY: &str = "transfer-expiry";

fn main() -> ExitCode {
    App::new("bank")
        .aggregate(routes::accounts())
        .aggregate(routes::transfers())
        .upcasters(annals_bank::upcasters())
        .personal_data(annals_bank::personal_data())
        .setting(Setting::duration(
            TRANSFER_EXPIRY,
            TransfersConfig::default().expiry,
            "A transfer whose source was not debited this long after it was requested fails \
             as `expired`.",
        ))
        .saga(|setup: &SagaSetup| {
            let config = TransfersConfig {
                expiry: setup.settings().duration(TRANSFER_EXPIRY)?,
            };
            let commands = setup.commands();
            Ok(Transfers::new(
                commands.handler::<Account>(),
                commands.handler::<Transfer>(),
            )
            .with_config(config))
        })
        .projection(view::AccountsView)
        .projection(view::TransfersView)
        .queries(view::queries())
        .run()
}
