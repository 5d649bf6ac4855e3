//! The top of an annals process: parses the command line, sets up logging,
//! and hands each subcommand to the module that does it.

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{Parse, parse};
use crate::{Action, App, Cli};

/// Parses the command line and runs what it asks for.
pub(crate) fn main(app: App) -> ExitCode {
    // A bug must still end in one line, not a backtrace.
    let name = app.name.clone();
    // Every TLS configuration annals builds names its provider; this is
    // for any dependency that asks for the process default.
    http_edge::tls::install_default_provider();
    std::panic::set_hook(Box::new(move |info| {
        eprintln!("{name}: internal error: {info}");
    }));
    let cli = match parse(&app, std::env::args_os()) {
        Ok(cli) => cli,
        Err(Parse::Usage(e)) => return usage_error(&app.name, e),
        Err(Parse::Declaration(e)) => {
            eprintln!("{}: cannot start: {e}", app.name);
            return ExitCode::FAILURE;
        }
    };
    // Servers log what they do; one-shot commands print their own output
    // and log only trouble.
    let default_level = match cli.command {
        Action::Rebuild(_)
        | Action::Verify(_)
        | Action::Copy(_)
        | Action::Status(_)
        | Action::Dump(_)
        | Action::Backup(_)
        | Action::Restore(_)
        | Action::Skip { .. }
        | Action::Resume(_)
        | Action::Keys(_)
        | Action::Audit(_) => "warn",
        _ => "info",
    };
    if let Err(e) = init_logs(default_level, &app.name) {
        eprintln!("{}: cannot start: {}", app.name, one_line(&e));
        return ExitCode::FAILURE;
    }
    let code = match run(cli, &app) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}: {}", app.name, one_line(&e));
            ExitCode::FAILURE
        }
    };
    crate::otlp::finish();
    code
}

/// Logs to stderr at `ANNALS_LOG` (an `EnvFilter`: `info`,
/// `warn,annals=debug`, ...; `default_level` without it), as text, or as
/// one JSON object per line with `ANNALS_LOG_FORMAT=json` (each with the
/// fields of the spans it is in: a request's id, route and correlation
/// id, a saga event's position); and exports the spans over OTLP when
/// the environment names a collector ([`crate::otlp`]).
fn init_logs(default_level: &str, app: &str) -> anyhow::Result<()> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("ANNALS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let json = std::env::var("ANNALS_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let json_lines = json.then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .json()
            .with_current_span(true)
            .with_span_list(true)
    });
    // Colours only for a person at a terminal: a log file or a collector
    // gets plain text.
    let text_lines = (!json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(json_lines)
        .with(text_lines)
        .with(crate::otlp::layer(app)?)
        .try_init()
        .context("installing the log subscriber")
}

/// Prints a command-line error as one line (help and version go out whole),
/// in the name of the application `name`.
fn usage_error(name: &str, e: clap::Error) -> ExitCode {
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
            // clap spreads one error over several lines (the message, the
            // arguments it names, a usage block); keep what comes before the
            // usage, on one line.
            let rendered = e.render().to_string();
            let message = rendered
                .lines()
                .take_while(|l| !l.starts_with("Usage:"))
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
                .collect::<Vec<_>>()
                .join(" ");
            let message = message.trim_start_matches("error: ");
            let message = if message.is_empty() {
                "invalid arguments"
            } else {
                message
            };
            eprintln!("{name}: {message} (see `{name} --help`)");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli, app: &App) -> anyhow::Result<ExitCode> {
    match cli.command {
        Action::Verify(args) if args.store.is_some() => {
            runtime()?.block_on(crate::verify::verify_postgres(args))
        }
        Action::Verify(args) => crate::verify::verify(args),
        Action::Copy(args) => runtime()?.block_on(crate::copy::copy(args, app)),
        Action::Store(args) => runtime()?
            .block_on(crate::processes::store(args, app))
            .map(|()| ExitCode::SUCCESS),
        Action::Serve(args) => runtime()?
            .block_on(crate::serve::serve(args, app))
            .map(|()| ExitCode::SUCCESS),
        Action::CommandApi(args) => runtime()?
            .block_on(crate::processes::command_api(args, app))
            .map(|()| ExitCode::SUCCESS),
        Action::Projector(args) => runtime()?
            .block_on(crate::processes::projector(args, app))
            .map(|()| ExitCode::SUCCESS),
        Action::QueryApi(args) => runtime()?
            .block_on(crate::processes::query_api(args, app))
            .map(|()| ExitCode::SUCCESS),
        Action::Rebuild(args) => runtime()?.block_on(crate::rebuild::rebuild(args, app)),
        Action::Status(args) => runtime()?.block_on(crate::admin::status(args)),
        Action::Dump(args) => runtime()?.block_on(crate::dump::dump(args, app)),
        Action::Backup(args) => runtime()?.block_on(crate::backup::backup(args, app)),
        Action::Restore(args) => runtime()?.block_on(crate::backup::restore(args, app)),
        Action::Skip { target, position } => {
            runtime()?.block_on(crate::admin::skip(target, position))
        }
        Action::Resume(args) => runtime()?.block_on(crate::admin::resume(args)),
        Action::Keys(action) => crate::auth::keys_command(action, &app.name),
        Action::Audit(args) => crate::auth::audit_command(&args),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("starting the async runtime")
}

/// An error and its causes on one line, each said once: many errors name
/// their cause in their own text already (an I/O error's "context:
/// reason"), and repeating it would print the same reason two or three
/// times.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}
