//! What each subcommand does.

use std::num::NonZeroU64;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use event_store::{EventStore, KeyStore, Shredding, Store, StoreOptions, Upcasting};
use event_store_http::{RemoteOptions, RemoteStore};

use crate::auth::{Access, Rule};
use crate::{Action, App, Cli, StoreArgs, VerifyArgs};

/// Prints a command-line error as one line (help and version go out whole),
/// in the name of the application `name`.
pub fn usage_error(name: &str, e: clap::Error) -> ExitCode {
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

pub fn run(cli: Cli, app: &App) -> anyhow::Result<ExitCode> {
    match cli.command {
        Action::Verify(args) => verify(args),
        Action::Store(args) => runtime()?
            .block_on(store(args, app))
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

impl Default for Stop {
    fn default() -> Self {
        Self::new()
    }
}

/// The process-wide request to stop: set by SIGINT or SIGTERM, or by a part
/// of the process that cannot go on. Every server and task waits on it.
#[derive(Debug, Clone)]
pub struct Stop(Arc<tokio::sync::watch::Sender<bool>>);

impl Stop {
    /// Installs the signal handlers before returning, so a signal that
    /// arrives early is not lost.
    pub fn on_signals() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt =
            signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let mut terminate =
            signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let stop = Self::new();
        let trigger = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            tracing::info!("shutting down");
            trigger.trigger();
        });
        Ok(stop)
    }

    /// A stop only [`Stop::trigger`] asks for.
    pub fn new() -> Self {
        Self(Arc::new(tokio::sync::watch::channel(false).0))
    }

    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    /// Becomes `true` once stopping was asked for.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<bool> {
        self.0.subscribe()
    }

    /// Resolves once stopping was asked for.
    pub fn wait(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut receiver = self.0.subscribe();
        async move {
            // An error means every sender is gone: nothing can ask to stop
            // any more, so stopping now is the only sensible answer.
            let _ = receiver.wait_for(|stop| *stop).await;
        }
    }
}

/// Opens the embedded store of a data directory, with the application's
/// personal data encrypted under keys kept beside the log and its old
/// events upcast: `Upcasting(Shredding(Store))`, so a read decrypts first
/// and upcasts the plaintext. Returns the store (to close it) and the
/// layered store to use.
pub async fn open_embedded(
    data_dir: &std::path::Path,
    options: StoreOptions,
    app: &App,
) -> anyhow::Result<(Store, Arc<dyn EventStore>)> {
    let store = Store::open(data_dir, options)
        .await
        .with_context(|| format!("cannot open the data directory {}", data_dir.display()))?;
    let keys = match KeyStore::open(data_dir.join("keys")) {
        Ok(keys) => Arc::new(keys),
        Err(e) => {
            let _ = store.close().await;
            return Err(anyhow::Error::new(e).context(format!(
                "cannot open the key store of {}",
                data_dir.display()
            )));
        }
    };
    let shredding = Shredding::new(store.clone(), keys, app.personal_data.clone());
    // Every read and write would do it first; here its errors stop the
    // start-up with their cause.
    if let Err(e) = shredding.recover().await {
        let _ = store.close().await;
        return Err(anyhow::Error::new(e).context(format!(
            "cannot recover the key store of {}",
            data_dir.display()
        )));
    }
    let layered = match upcasting(shredding, app) {
        Ok(layered) => layered,
        Err(e) => {
            let _ = store.close().await;
            return Err(e);
        }
    };
    Ok((store, layered))
}

/// `inner` with the application's upcasters on every read path.
pub fn upcasting<S: EventStore>(inner: S, app: &App) -> anyhow::Result<Arc<dyn EventStore>> {
    let layered = Upcasting::new(inner, app.upcasters.clone())
        .with_context(|| format!("the upcasters of {} are incomplete", app.name))?;
    Ok(Arc::new(layered))
}

/// Connects to `annals store`, retrying while it starts. The store serves
/// upcast events already; upcasting again here is a no-op for those and
/// keeps this process correct against a store that does not.
pub async fn connect_store(
    app: &App,
    args: &crate::RemoteStoreArgs,
    stop: &Stop,
) -> anyhow::Result<Arc<dyn EventStore>> {
    let options = RemoteOptions {
        token: args.key.clone(),
        ca_file: args.ca_file.clone(),
        outcome_wait: Duration::from_millis(args.outcome_wait_ms),
        ..RemoteOptions::default()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(args.wait_seconds);
    let mut pause = Duration::from_millis(50);
    loop {
        match RemoteStore::connect(&args.url, options.clone()).await {
            Ok(store) => return upcasting(store, app),
            // A malformed URL will not get better.
            Err(e @ event_store::Error::InvalidOptions(_)) => {
                return Err(
                    anyhow::Error::new(e).context(format!("cannot use the store at {}", args.url))
                );
            }
            Err(e) if std::time::Instant::now() >= deadline => {
                return Err(anyhow::Error::new(e).context(format!(
                    "cannot reach the store at {} within {} s",
                    args.url, args.wait_seconds
                )));
            }
            Err(e) => {
                tracing::info!(url = %args.url, error = %e, "waiting for the store");
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = stop.wait() => anyhow::bail!("stopped while waiting for the store"),
                }
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Serves `app` on `listener` until `stop`, within the connection limits
/// and timeouts of `config`, with its TLS (see [`http_edge::serve()`]), and
/// the request deadline of `http` ([`http_edge::deadline`]), refusing
/// state-changing requests a cross-site form could send
/// ([`http_edge::cross_site`]).
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    http: &crate::HttpOptions,
    config: http_edge::ServeConfig,
    stop: &Stop,
) -> std::io::Result<()> {
    let app =
        http_edge::deadline::answer_within(app, Duration::from_millis(http.request_timeout_ms))
            .layer(axum::middleware::from_fn(
                http_edge::cross_site::refuse_cross_site,
            ));
    http_edge::serve(listener, app, config, stop.wait()).await
}

/// How a process serves HTTP: the limits of `http`, and TLS from its
/// certificate and key files when given (read here, so a missing or
/// invalid file stops the start with one line naming it).
pub fn serve_config(http: &crate::HttpOptions) -> anyhow::Result<http_edge::ServeConfig> {
    let tls = match (&http.tls_cert, &http.tls_key) {
        (Some(cert), Some(key)) => Some(http_edge::tls::server_config(cert, key)?),
        (None, None) => None,
        // The command line requires both or neither; a caller building
        // the options by hand gets the same answer.
        _ => anyhow::bail!("--tls-cert and --tls-key go together: give both or neither"),
    };
    Ok(http_edge::ServeConfig {
        header_read_timeout: Duration::from_millis(http.header_read_timeout_ms),
        idle_timeout: Duration::from_millis(http.idle_timeout_ms),
        uri_bytes_max: http.uri_bytes_max as usize,
        request_head_bytes_max: http.request_head_bytes_max as usize,
        header_fields_max: http.header_fields_max as usize,
        tls,
        connections_max: http.connections_max as usize,
    })
}

/// The URL scheme a process served with `config` answers on.
pub fn scheme(config: &http_edge::ServeConfig) -> &'static str {
    if config.tls.is_some() {
        "https"
    } else {
        "http"
    }
}

/// The projector running in a task of its own.
pub struct RunningProjector {
    pub handle: projector::ProjectorHandle,
    /// What readiness looks at.
    pub check: crate::health::ProjectorCheck,
    task: tokio::task::JoinHandle<projector::Result<()>>,
}

impl RunningProjector {
    /// Builds the application's projections over `store` and `views` and
    /// runs them until `stop`. A projector that fails stops the whole process:
    /// without it the process would serve stale views for ever, and a
    /// supervisor should notice.
    pub fn start(
        app: &App,
        store: Arc<dyn EventStore>,
        views: projector::ViewDb,
        options: &crate::ProjectorOptions,
        stop: &Stop,
    ) -> anyhow::Result<Self> {
        let projector = app
            .projector(store, views)
            .options(projector_options(options))
            .build()
            .context("cannot set up the projector")?;
        let handle = projector.handle();
        let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let task = {
            let running = running.clone();
            let stopped = stop.wait();
            let stop = stop.clone();
            tokio::spawn(async move {
                let result = projector.run(stopped).await;
                running.store(false, std::sync::atomic::Ordering::SeqCst);
                if let Err(e) = &result {
                    tracing::error!(error = %e, "the projector stopped");
                    stop.trigger();
                }
                result
            })
        };
        Ok(Self {
            check: crate::health::ProjectorCheck {
                running,
                handle: handle.clone(),
                stuck_after: Duration::from_millis(options.projection_stuck_after_ms),
            },
            handle,
            task,
        })
    }

    /// Waits for the task to end (after `stop`), with its outcome.
    pub async fn finish(self) -> anyhow::Result<()> {
        match self.task.await {
            Ok(result) => result.context("the projector failed"),
            Err(e) => Err(anyhow::anyhow!("the projector task ended abnormally: {e}")),
        }
    }
}

pub fn local_addr(listener: &tokio::net::TcpListener) -> anyhow::Result<std::net::SocketAddr> {
    listener
        .local_addr()
        .context("reading the listening address")
}

pub async fn bind(listen: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))
}

/// How the process's command handlers work (routes and sagas alike).
pub fn handler_config(options: &crate::CommandOptions) -> command_api::HandlerConfig {
    command_api::HandlerConfig {
        snapshot_every_events: NonZeroU64::new(options.snapshot_every_events),
        ..command_api::HandlerConfig::default()
    }
}

/// How the command routes behave.
pub fn command_config(options: &crate::CommandOptions) -> command_api::ApiConfig {
    command_api::ApiConfig {
        body_bytes_max: options.body_bytes_max as usize,
        in_flight_requests_max: options.in_flight_requests_max as usize,
        ..command_api::ApiConfig::default()
    }
}

pub fn projector_options(options: &crate::ProjectorOptions) -> projector::ProjectorOptions {
    projector::ProjectorOptions {
        batch_events_max: options.batch_events_max as usize,
        ..projector::ProjectorOptions::default()
    }
}

pub fn view_db_options(args: &crate::ViewDbArgs) -> projector::ViewDbOptions {
    projector::ViewDbOptions {
        acquire_timeout: Duration::from_millis(args.database_acquire_timeout_ms),
        ..projector::ViewDbOptions::default()
    }
}

pub fn query_config(options: &crate::QueryOptions) -> query_api::QueryConfig {
    query_api::QueryConfig {
        page_size_max: options.page_size_max as usize,
        min_position_wait_max: Duration::from_millis(options.min_position_wait_ms),
        ..query_api::QueryConfig::default()
    }
}

async fn store(args: StoreArgs, app: &App) -> anyhow::Result<()> {
    let stop = Stop::on_signals()?;
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
    let served = async {
        let router = access
            .protect(
                event_store_http::router(
                    layered,
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
            .merge(access.protect(access.audit_routes(), Rule::Store));
        let addr = listener
            .local_addr()
            .context("reading the listening address")?;
        tracing::info!(%addr, data_dir = %args.data_dir.display(), "store serving");
        eprintln!(
            "{}: store listening on {}://{addr}",
            app.name,
            scheme(&config)
        );
        serve_http(listener, router, &args.http, config, &stop)
            .await
            .context("serving the store API")
    }
    .await;
    let closed = store.close().await.context("closing the store");
    served.and(closed)?;
    tracing::info!("store closed");
    Ok(())
}

fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let report = event_store::verify(&args.data_dir).context("cannot verify the data directory")?;
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
        "{} segments, {} events, {} streams, {} snapshot files, {} snapshots, {} live subject keys, {} erased, {} spare keys: {}",
        report.segments,
        report.events,
        report.streams,
        report.snapshot_files,
        report.snapshots,
        report.key_subjects,
        report.erased_subjects,
        report.spare_keys,
        if report.is_ok() { "ok" } else { "DAMAGED" }
    );
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
