//! The bank as a service: accounts, transfers carried out by a saga, their
//! views and queries, over HTTP, with annals' whole command line
//! (`annals-bank serve`, `store`, `command-api`, `projector`, `query-api`,
//! `rebuild`, `status`, ...).

use std::process::ExitCode;

use annals_bank::{routes, view};

fn main() -> ExitCode {
    annals::App::new("bank")
        .aggregate(routes::accounts())
        .aggregate(routes::transfers())
        .upcasters(annals_bank::upcasters())
        .personal_data(annals_bank::personal_data())
        .projection(view::AccountsView)
        .projection(view::TransfersView)
        .run()
}
