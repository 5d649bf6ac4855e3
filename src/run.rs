//! What each subcommand does.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use event_store::{Store, StoreOptions};

use crate::{Cli, Command, ServeArgs, StoreArgs, VerifyArgs};

/// Prints a command-line error as one line (help and version go out whole).
pub fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            let rendered = e.render().to_string();
            let first = rendered
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ");
            eprintln!("annals: {first} (see `annals --help`)");
            ExitCode::from(2)
        }
    }
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Verify(args) => verify(args),
        Command::Store(args) => runtime()?.block_on(store(args)),
        Command::Serve(args) => runtime()?.block_on(serve(args)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("starting the async runtime")
}

/// A future that resolves when the process is asked to stop (SIGINT or
/// SIGTERM). The handlers are installed before this returns, so a signal
/// that arrives before the future is first polled is not lost.
pub fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down");
    })
}

async fn open_store(data_dir: &std::path::Path, options: StoreOptions) -> anyhow::Result<Store> {
    Store::open(data_dir, options)
        .await
        .with_context(|| format!("cannot open the data directory {}", data_dir.display()))
}

async fn bind(listen: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))
}

async fn store(args: StoreArgs) -> anyhow::Result<ExitCode> {
    let shutdown = shutdown_signal()?;
    let store = open_store(
        &args.data_dir,
        StoreOptions {
            segment_bytes_max: args.segment_bytes_max,
            ..StoreOptions::default()
        },
    )
    .await?;
    let listener = bind(&args.listen).await?;
    let app = event_store::remote::router(
        Arc::new(store.clone()),
        event_store::remote::ServerConfig {
            token: args.token,
            ..Default::default()
        },
    );
    let addr = listener
        .local_addr()
        .context("reading the listening address")?;
    tracing::info!(%addr, data_dir = %args.data_dir.display(), "store serving");
    eprintln!("annals: store listening on http://{addr}");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving the store API")?;
    store.close().await.context("closing the store")?;
    tracing::info!("store closed");
    Ok(ExitCode::SUCCESS)
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    store(StoreArgs {
        data_dir: args.data_dir,
        listen: args.listen,
        token: None,
        segment_bytes_max: StoreOptions::default().segment_bytes_max,
    })
    .await
}

fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let report = event_store::verify(&args.data_dir)
        .with_context(|| format!("cannot verify {}", args.data_dir.display()))?;
    for note in &report.notes {
        println!("note: {note}");
    }
    for p in &report.problems {
        println!(
            "DAMAGE {} at offset {}: {}",
            p.file.display(),
            p.offset,
            p.detail
        );
    }
    println!(
        "{} segments, {} events, {} streams, {} snapshot files, {} snapshots: {}",
        report.segments,
        report.events,
        report.streams,
        report.snapshot_files,
        report.snapshots,
        if report.is_ok() { "ok" } else { "DAMAGED" }
    );
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
