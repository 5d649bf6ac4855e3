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

use cli::*;

/// An annals application: what it runs, and the command line that runs it.
#[derive(Debug, Default)]
pub struct App {}

impl App {
    /// The reference credit domain (customers, orders, the order-fulfilment
    /// saga and their views).
    pub fn reference() -> Self {
        Self {}
    }

    /// Parses the command line and runs what it asks for; the exit code
    /// to end the process with.
    pub fn run(self) -> ExitCode {
        cli::main()
    }
}
