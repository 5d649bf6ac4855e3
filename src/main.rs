//! The `annals` binary: one executable for every way of running the system.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod run;

/// annals: an event store with the CQRS pieces around it.
///
/// `annals serve` runs everything in one process on the embedded defaults.
/// To scale out, run `annals store` once and point `annals command-api`,
/// `annals projector` and `annals query-api` at it. Every flag can also be
/// set through the environment variable shown with it.
#[derive(Debug, Parser)]
#[command(name = "annals", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole system in this process on the embedded defaults: data
    /// in ./data, one HTTP port.
    Serve(ServeArgs),
    /// Run the event store and serve it over HTTP for command-API and
    /// projector processes (`--store http://HOST:PORT` on their side).
    ///
    /// Endpoints: append, read a stream, read all, snapshots, stats and a
    /// push subscription (Server-Sent Events, resumable with Last-Event-ID),
    /// plus /health/live, /health/ready and /openapi.json.
    Store(StoreArgs),
    /// Check every segment, index, bloom filter and snapshot file of a data
    /// directory and list each problem with its file and offset.
    ///
    /// Exits with status 1 when damage is found, 0 otherwise. Never writes,
    /// so it is safe on a directory a running store has open.
    Verify(VerifyArgs),
}

#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// Directory holding the event log and snapshots. Created if missing;
    /// locked while the store runs.
    #[arg(long, env = "ANNALS_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "ANNALS_STORE_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: String,
    /// Require `Authorization: Bearer <TOKEN>` on every request but health checks.
    #[arg(long, env = "ANNALS_STORE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Seal a segment once it would grow past this many bytes.
    #[arg(long, env = "ANNALS_SEGMENT_BYTES_MAX", default_value_t = 256 << 20)]
    pub segment_bytes_max: u64,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Directory holding the event log, snapshots and views. Created if
    /// missing; locked while annals runs.
    #[arg(long, env = "ANNALS_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "ANNALS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The data directory to check.
    #[arg(long, env = "ANNALS_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

fn main() -> ExitCode {
    // A bug must still end in one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("annals: internal error: {info}");
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return run::usage_error(e),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ANNALS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("annals: {e:#}");
            ExitCode::FAILURE
        }
    }
}
