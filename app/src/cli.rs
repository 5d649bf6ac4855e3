//! The command line every annals application gets: one executable for
//! every way of running the system.

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// annals: an event store with the CQRS pieces around it.
///
/// `annals serve` runs everything in one process on the embedded defaults
/// (event log and SQLite views in ./data, one HTTP port). To scale out, run
/// `annals store` once and point `annals command-api`, `annals projector`
/// and `annals query-api` at it; the command and query APIs are stateless
/// and can run as several replicas.
///
/// Every flag can also be set through the environment variable shown with
/// it. Logs go to stderr; set ANNALS_LOG (e.g. `debug`, `annals=debug`) to
/// change how much.
#[derive(Debug, Parser)]
#[command(name = "annals", version, about, long_about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Action,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Action {
    /// Run the whole system in this process: event store, command API,
    /// sagas, projector and query API, on one HTTP port.
    ///
    /// Commands and queries are served on the paths the application
    /// declares (`/openapi.json` lists them), projections are administered
    /// under `/projections`, and
    /// `/health/live`, `/health/ready` and `/openapi.json` describe the
    /// process. Ctrl-C (SIGINT) or SIGTERM stops it gracefully: requests in
    /// flight finish, the projector commits its batch, the store is synced
    /// and closed and the data directory unlocked.
    Serve(ServeArgs),
    /// Run the event store and serve it over HTTP for command-API and
    /// projector processes (`--store http://HOST:PORT` on their side).
    ///
    /// Endpoints: append, read a stream, read all, snapshots, stats and a
    /// push subscription (Server-Sent Events, resumable with Last-Event-ID),
    /// plus /health/live, /health/ready and /openapi.json. The application's
    /// personal data is encrypted here, with the keys kept in the data
    /// directory, and its old events are upcast here.
    Store(StoreArgs),
    /// Run the command API against a store served by `annals store`.
    ///
    /// Stateless: run as many replicas as you like; the store decides every
    /// race (one winner per stream version). With --saga (in one replica
    /// only) it also runs the application's sagas.
    CommandApi(CommandApiArgs),
    /// Run the projector: follow a store served by `annals store` and keep
    /// the view tables of a database (PostgreSQL for shared views) current.
    ///
    /// Serves the admin API (`/projections`, rebuild, skip, resume) and the
    /// health endpoints. Run one projector per view database.
    Projector(ProjectorArgs),
    /// Run the query API over the view tables a projector keeps.
    ///
    /// Stateless: run as many replicas as you like. It never reads the event
    /// store.
    QueryApi(QueryApiArgs),
    /// Rebuild a projection from the event log, showing progress.
    ///
    /// The log is replayed into fresh shadow tables while the current ones
    /// keep serving queries; once caught up, the shadows are swapped in
    /// within one transaction. By default this asks the running process at
    /// --url to do it (its admin API) and follows the progress; with
    /// --offline it runs here, on a data directory no process has open.
    /// An interrupted rebuild resumes where it stopped: the process resumes
    /// it when it starts again, and asking while one is running follows
    /// that one. Progress goes to stdout: a bar on a terminal, a plain
    /// line every 2 seconds otherwise.
    Rebuild(RebuildArgs),
    /// Show each projection's state, checkpoint, lag behind the log, rate
    /// and last error, as the running process at --url sees them (in a
    /// split deployment, the address of `annals projector`).
    ///
    /// Exits with status 1 when a projection is failed.
    Status(StatusArgs),
    /// Print a stream's events, or the log between two positions, as JSON
    /// lines (one event per line, as the store's HTTP API shows it).
    ///
    /// Reads a data directory no process has open (or, with --store, a
    /// running `annals store`), through the application's decryption and
    /// upcasters: what its APIs would serve, erased personal data as
    /// "[erased]".
    Dump(DumpArgs),
    /// Skip the event a failed projection stopped on, and let it go on.
    ///
    /// The skip is recorded; a rebuild skips the same event. Give the
    /// position the status shows (--position) to make sure the event you
    /// looked at is the one skipped.
    Skip {
        #[command(flatten)]
        target: ProjectionArgs,
        /// The position of the failed event, as `annals status` shows it.
        #[arg(long, env = "ANNALS_SKIP_POSITION")]
        position: Option<u64>,
    },
    /// Try the event a failed projection stopped on again (after a fix in
    /// the data it depends on, say).
    Resume(ProjectionArgs),
    /// Create, list and revoke the API keys callers present as
    /// `Authorization: Bearer <token>`.
    ///
    /// Keys live in a file the operator manages (by default
    /// `api-keys.jsonl` in the data directory), hashed; a token is shown
    /// once, when it is created. A running process sees a new or revoked
    /// key within a second, without a restart. Roles: `read` (queries,
    /// store reads, OpenAPI), `write` (commands, store appends), `admin`
    /// (projection admin, personal-data erasure, the audit log). A key
    /// may be limited to stream prefixes on the store (--stream-prefix).
    /// Every change is recorded in the audit log.
    #[command(subcommand)]
    Keys(KeysAction),
    /// Print the audit log's latest records, one JSON line each: who
    /// (the key's name) did which admin action (erasure, rebuild, skip,
    /// resume, key changes), when, and how it ended.
    Audit(AuditArgs),
    /// Copy the store of a data directory into DIR while it runs: sealed
    /// segments, the newest one up to its last whole batch, snapshots and
    /// the personal-data keys, with progress. The copy is then opened (so
    /// recovery makes it whole) and verified: exit status 1 when it does
    /// not verify. DIR must be new or empty, on a filesystem the data
    /// directory's host can write. Views are not copied: a process started
    /// on a restored store rebuilds them from the log.
    Backup(BackupArgs),
    /// Copy a backup into a new or empty data directory, after checking it
    /// (a damaged backup is refused), then verify the result.
    Restore(RestoreArgs),
    /// Check every segment, index, bloom filter and snapshot file of a data
    /// directory and list each problem with its file and offset; or, with
    /// --store postgres://..., the log in PostgreSQL (positions without a
    /// gap, streams matching their events, JSON data, snapshots).
    ///
    /// Exits with status 1 when damage is found, 0 otherwise. Never writes,
    /// so it is safe on a directory a running store has open.
    Verify(VerifyArgs),
    /// Copy the log of a data directory no process has open into
    /// PostgreSQL as it was recorded (positions, versions, ids, times,
    /// metadata, sealed personal data), with its snapshots and the
    /// subjects' keys and erasures, then compare both sides. An interrupted
    /// copy continues where it stopped. Exits with status 1 when the sides
    /// differ.
    Copy(CopyArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct StoreArgs {
    /// Directory holding the event log, snapshots and personal-data keys.
    /// Created if missing; locked while the store runs.
    #[arg(long, env = "ANNALS_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "ANNALS_STORE_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: String,
    #[command(flatten)]
    pub log: LogArgs,
    /// Seal a segment once it would grow past this many bytes.
    #[arg(long, env = "ANNALS_SEGMENT_BYTES_MAX", default_value_t = 256 << 20)]
    pub segment_bytes_max: u64,
    /// Largest request body accepted (an append or a transaction with all
    /// its events, a snapshot), in bytes (413 above).
    #[arg(long, env = "ANNALS_STORE_BODY_BYTES_MAX", default_value_t = 32 << 20,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub body_bytes_max: u32,
    #[command(flatten)]
    pub http: HttpOptions,
    #[command(flatten)]
    pub auth: AuthArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Directory holding the event log, snapshots, personal-data keys and
    /// (unless --database says otherwise) the SQLite views. Created if
    /// missing; locked while annals runs.
    #[arg(long, env = "ANNALS_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "ANNALS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Where the views live: `postgres://...` or `sqlite://...`. Default: the
    /// SQLite file `views.sqlite` in the data directory.
    #[arg(long, env = "ANNALS_DATABASE_URL", hide_env_values = true)]
    pub database: Option<String>,
    #[command(flatten)]
    pub views: ViewDbArgs,
    #[command(flatten)]
    pub log: LogArgs,
    /// Seal a segment once it would grow past this many bytes.
    #[arg(long, env = "ANNALS_SEGMENT_BYTES_MAX", default_value_t = 256 << 20)]
    pub segment_bytes_max: u64,
    #[command(flatten)]
    pub commands: CommandOptions,
    #[command(flatten)]
    pub saga: SagaOptions,
    /// The application's settings (added to the command line at run time).
    #[arg(skip)]
    pub settings: crate::Settings,
    #[command(flatten)]
    pub projector: ProjectorOptions,
    #[command(flatten)]
    pub queries: QueryOptions,
    #[command(flatten)]
    pub http: HttpOptions,
    #[command(flatten)]
    pub auth: AuthArgs,
}

/// Who may call a process: API keys (see `keys`), and whether it may
/// serve anyone without them.
#[derive(Debug, clap::Args)]
pub(crate) struct AuthArgs {
    /// The API keys file callers' bearer tokens are checked against
    /// (`keys create` writes it). Authentication is on when it exists.
    /// Default for `serve` and `store`: api-keys.jsonl in the data
    /// directory; the other processes have none unless given.
    #[arg(long, env = "ANNALS_KEYS_FILE", value_name = "FILE")]
    pub keys_file: Option<PathBuf>,
    /// Require API keys even while the keys file does not exist (every
    /// request but health checks is refused until a key is created).
    #[arg(long, env = "ANNALS_AUTH")]
    pub auth: bool,
    /// Serve a non-loopback address without authentication (refused
    /// otherwise): anyone who can reach it may read, write and erase.
    #[arg(long, env = "ANNALS_INSECURE")]
    pub insecure: bool,
    /// Requests per second each API key may make (429 with Retry-After
    /// above; a key that kept under it may send a second's worth at once);
    /// 0: no limit.
    #[arg(long, env = "ANNALS_RATE_LIMIT_PER_SECOND", default_value_t = 10_000)]
    pub rate_limit_per_second: u32,
    /// Where admin actions are recorded (default: audit.jsonl beside the
    /// keys file, which is in the data directory for `serve` and `store`).
    #[arg(long, env = "ANNALS_AUDIT_LOG", value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// Also accept JWT bearer tokens signed by a key of this JWKS file
    /// (an identity provider's public keys, read again when the file
    /// changes); their `roles` claim holds read, write or admin. Turns
    /// authentication on.
    #[arg(long, env = "ANNALS_JWT_JWKS", value_name = "FILE",
          requires_all = ["jwt_issuer", "jwt_audience", "jwt_algorithm"])]
    pub jwt_jwks: Option<PathBuf>,
    /// The `iss` a JWT must carry.
    #[arg(long, env = "ANNALS_JWT_ISSUER", requires = "jwt_jwks")]
    pub jwt_issuer: Option<String>,
    /// The `aud` a JWT must carry.
    #[arg(long, env = "ANNALS_JWT_AUDIENCE", requires = "jwt_jwks")]
    pub jwt_audience: Option<String>,
    /// An algorithm a JWT may be signed with (RS256, ES256, EdDSA, ...);
    /// repeat for several. Nothing is accepted by default.
    #[arg(
        long,
        env = "ANNALS_JWT_ALGORITHM",
        value_delimiter = ',',
        requires = "jwt_jwks"
    )]
    pub jwt_algorithm: Vec<String>,
    /// The claim that lists a JWT's roles.
    #[arg(long, env = "ANNALS_JWT_ROLES_CLAIM", default_value = "roles")]
    pub jwt_roles_claim: String,
}

/// `keys` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum KeysAction {
    /// Create a key and print its token (on stdout, once).
    Create {
        /// The key's name, unique in the file (who or what uses it).
        #[arg(long)]
        name: String,
        /// A role the key holds; repeat for several.
        #[arg(long, required = true)]
        role: Vec<crate::auth::Role>,
        /// Limit the key to the streams whose ids start with this (on the
        /// store; other processes refuse such a key); repeat for several.
        #[arg(long, value_name = "PREFIX")]
        stream_prefix: Vec<String>,
        #[command(flatten)]
        file: KeysFileArgs,
    },
    /// List the keys: name, roles, creation time (Unix seconds), state.
    List {
        #[command(flatten)]
        file: KeysFileArgs,
    },
    /// Revoke a key: running processes refuse it within a second.
    Revoke {
        /// The key's name.
        name: String,
        #[command(flatten)]
        file: KeysFileArgs,
    },
}

/// Which audit log to read.
#[derive(Debug, clap::Args)]
pub(crate) struct AuditArgs {
    #[command(flatten)]
    pub file: KeysFileArgs,
    /// The audit log itself (default: audit.jsonl beside the keys file).
    #[arg(long, env = "ANNALS_AUDIT_LOG", value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// Only the latest this many records.
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,
}

/// Where the keys file is.
#[derive(Debug, clap::Args)]
pub(crate) struct KeysFileArgs {
    /// The data directory whose keys file (api-keys.jsonl) to use.
    #[arg(long, env = "ANNALS_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// The keys file itself, wherever it is (overrides --data-dir).
    #[arg(long, env = "ANNALS_KEYS_FILE", value_name = "FILE")]
    pub keys_file: Option<PathBuf>,
}

/// Limits and timeouts of the HTTP connections a process serves, and
/// their TLS. A head or body over the limits is answered with a problem
/// document (`400`, `408`, `414`, `431`) and the connection closed.
#[derive(Debug, clap::Args)]
pub(crate) struct HttpOptions {
    /// Serve HTTPS with the certificate chain in this PEM file (the
    /// server's certificate first, then intermediates); needs --tls-key.
    #[arg(
        long,
        env = "ANNALS_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert, in a PEM file (PKCS#8, PKCS#1 or
    /// SEC1); needs --tls-cert.
    #[arg(
        long,
        env = "ANNALS_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// How long a request head (request line and header fields) may take
    /// to arrive, from its first byte, in milliseconds (408 after).
    #[arg(long, env = "ANNALS_HEADER_READ_TIMEOUT_MS",
          default_value_t = http_edge::ServeConfig::HEADER_READ_TIMEOUT_MS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_ms: u64,
    /// How long a connection may send nothing while it is waited for, in
    /// milliseconds: between requests (it is then closed), or inside a
    /// request body (408).
    #[arg(long, env = "ANNALS_IDLE_TIMEOUT_MS",
          default_value_t = http_edge::ServeConfig::IDLE_TIMEOUT_MS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_ms: u64,
    /// The longest request target (path and query) accepted, in bytes
    /// (414 above).
    #[arg(long, env = "ANNALS_URI_BYTES_MAX",
          default_value_t = http_edge::ServeConfig::URI_BYTES_MAX_DEFAULT as u32,
          value_parser = clap::value_parser!(u32).range(16..=(1 << 20)))]
    pub uri_bytes_max: u32,
    /// The largest request head (request line and header fields)
    /// accepted, in bytes (431 above).
    #[arg(long, env = "ANNALS_REQUEST_HEAD_BYTES_MAX",
          default_value_t = http_edge::ServeConfig::REQUEST_HEAD_BYTES_MAX_DEFAULT as u32,
          value_parser = clap::value_parser!(u32).range(64..=(16 << 20)))]
    pub request_head_bytes_max: u32,
    /// The most header fields a request may have (431 above).
    #[arg(long, env = "ANNALS_HEADER_FIELDS_MAX",
          default_value_t = http_edge::ServeConfig::HEADER_FIELDS_MAX_DEFAULT as u32,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub header_fields_max: u32,
    /// How long any request may take before its answer starts, in
    /// milliseconds (503 with Retry-After after; a command has its own,
    /// shorter limit that tells whether it was applied).
    #[arg(long, env = "ANNALS_REQUEST_TIMEOUT_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_ms: u64,
    /// The most connections served at once; more wait in the listen
    /// backlog until one ends (keep it under `ulimit -n`).
    #[arg(long, env = "ANNALS_CONNECTIONS_MAX",
          default_value_t = http_edge::ServeConfig::CONNECTIONS_MAX_DEFAULT as u32,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub connections_max: u32,
    /// Record no metrics and serve no `GET /metrics` (by default every
    /// process serves them, in the Prometheus text format, to the `read`
    /// role).
    #[arg(long, env = "ANNALS_NO_METRICS")]
    pub no_metrics: bool,
}

/// How to use the view database.
#[derive(Debug, clap::Args)]
pub(crate) struct ViewDbArgs {
    /// How long a query, a readiness probe or a projector batch waits for
    /// a view database connection (a free one, or a new one while the
    /// database cannot be reached) before it fails: a query then answers
    /// 503 and readiness says why.
    #[arg(long, env = "ANNALS_DATABASE_ACQUIRE_TIMEOUT_MS",
          default_value_t = projector::ViewDbOptions::ACQUIRE_TIMEOUT_MS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub database_acquire_timeout_ms: u64,
}

/// The PostgreSQL schema of a log kept in PostgreSQL.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct StoreSchema {
    /// With a PostgreSQL store: the schema holding the log's tables
    /// (created if missing).
    #[arg(
        long = "store-schema",
        env = "ANNALS_STORE_SCHEMA",
        default_value = "annals"
    )]
    pub name: String,
}

/// Where `annals serve` and `annals store` keep the event log.
#[derive(Debug, clap::Args)]
pub(crate) struct LogArgs {
    /// Keep the event log, snapshots and personal-data keys in PostgreSQL
    /// (postgres://USER:PASSWORD@HOST:PORT/DATABASE) instead of the data
    /// directory. Several processes may append to one database at once.
    #[arg(
        long = "store",
        env = "ANNALS_STORE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub url: Option<String>,
    #[command(flatten)]
    pub schema: StoreSchema,
}

/// How to reach the store: `annals store` over HTTP, or the log in
/// PostgreSQL.
#[derive(Debug, clap::Args)]
pub(crate) struct RemoteStoreArgs {
    /// URL of the store: `annals store` (http://127.0.0.1:8090, or
    /// https://... when it serves TLS; its certificate is verified), or the
    /// log in PostgreSQL (postgres://...), used directly.
    #[arg(
        long = "store",
        env = "ANNALS_STORE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub url: String,
    #[command(flatten)]
    pub schema: StoreSchema,
    /// A PEM file of CA certificates to trust for an https:// store,
    /// besides the public roots: the private CA that signed its
    /// certificate.
    #[arg(long = "store-ca", env = "ANNALS_STORE_CA", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// The API key (token) to present to the store, when it requires keys
    /// (a key with `read`, and `write` for the command API).
    #[arg(long = "store-key", env = "ANNALS_STORE_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// How long to keep trying to reach the store at start before giving up.
    #[arg(
        long = "store-wait-seconds",
        env = "ANNALS_STORE_WAIT_SECONDS",
        default_value_t = 30
    )]
    pub wait_seconds: u64,
    /// When the answer to an append is lost (the connection dropped after
    /// the request was sent), how long to keep asking the store again
    /// whether it was committed before answering the command with
    /// `503 outcome-unknown`.
    #[arg(
        long = "store-outcome-wait-ms",
        env = "ANNALS_STORE_OUTCOME_WAIT_MS",
        default_value_t = 10_000
    )]
    pub outcome_wait_ms: u64,
}

/// Limits of the command API.
#[derive(Debug, clap::Args)]
pub(crate) struct CommandOptions {
    /// Largest command body accepted (413 above).
    #[arg(long, env = "ANNALS_BODY_BYTES_MAX", default_value_t = 64 << 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub body_bytes_max: u32,
    /// Commands handled at once; more are answered 503 at once.
    #[arg(long, env = "ANNALS_IN_FLIGHT_REQUESTS_MAX", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub in_flight_requests_max: u32,
    /// Snapshot an aggregate every this many events, and after a load that
    /// replayed this many (0: never).
    #[arg(long, env = "ANNALS_SNAPSHOT_EVERY_EVENTS", default_value_t = 100)]
    pub snapshot_every_events: u64,
}

/// How the application's sagas are run (each has its own checkpoint and
/// lanes; these apply to every one).
#[derive(Debug, clap::Args)]
pub(crate) struct SagaOptions {
    /// A saga records its position in the log after this many events
    /// (after a crash, at most about this many are handled again, which
    /// changes nothing).
    #[arg(long, env = "ANNALS_SAGA_CHECKPOINT_EVERY_EVENTS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub saga_checkpoint_every_events: u64,
    /// The saga also records its position at least this often
    /// (milliseconds) while it has progress to record.
    #[arg(long, env = "ANNALS_SAGA_CHECKPOINT_INTERVAL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub saga_checkpoint_interval_ms: u64,
    /// Events each saga handles at once (of different lanes, by default
    /// different streams; the events of one lane are always handled one at
    /// a time, in log order).
    #[arg(long, env = "ANNALS_SAGA_CONCURRENCY", default_value_t = 32,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub saga_concurrency: u64,
}

/// Tuning of the projector.
#[derive(Debug, clap::Args)]
pub(crate) struct ProjectorOptions {
    /// Events applied in one view transaction at most while catching up
    /// (the checkpoint is written in every one).
    #[arg(long, env = "ANNALS_BATCH_EVENTS_MAX",
          default_value_t = projector::ProjectorOptions::default().batch_events_max as u32,
          value_parser = clap::value_parser!(u32).range(1..=projector::ProjectorOptions::BATCH_EVENTS_MAX as i64))]
    pub batch_events_max: u32,
    /// Readiness reports a projection as stuck once it has retried a
    /// failure of the store or the view database (unreachable, disk full)
    /// for this many milliseconds without applying anything.
    #[arg(
        long,
        env = "ANNALS_PROJECTION_STUCK_AFTER_MS",
        default_value_t = 5_000
    )]
    pub projection_stuck_after_ms: u64,
}

/// Limits of the query API.
#[derive(Debug, clap::Args)]
pub(crate) struct QueryOptions {
    /// The largest page a list query may ask for (`limit`).
    #[arg(long, env = "ANNALS_PAGE_SIZE_MAX", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub page_size_max: u32,
    /// How long a query with `min_position` waits for the views to reach it
    /// before answering 503 with Retry-After.
    #[arg(long, env = "ANNALS_MIN_POSITION_WAIT_MS", default_value_t = 5_000)]
    pub min_position_wait_ms: u64,
}

#[derive(Debug, clap::Args)]
pub(crate) struct CommandApiArgs {
    #[command(flatten)]
    pub store: RemoteStoreArgs,
    /// Address to listen on.
    #[arg(
        long,
        env = "ANNALS_COMMAND_API_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    pub listen: String,
    #[command(flatten)]
    pub commands: CommandOptions,
    /// Also run the application's sagas. Run them in exactly one replica:
    /// a second copy changes nothing (every step is idempotent) but does
    /// all the work twice.
    #[arg(long, env = "ANNALS_SAGA")]
    pub saga: bool,
    #[command(flatten)]
    pub saga_options: SagaOptions,
    /// The application's settings (added to the command line at run time).
    #[arg(skip)]
    pub settings: crate::Settings,
    #[command(flatten)]
    pub http: HttpOptions,
    #[command(flatten)]
    pub auth: AuthArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ProjectorArgs {
    #[command(flatten)]
    pub store: RemoteStoreArgs,
    /// The view database: `postgres://...` (shared views) or `sqlite://...`.
    #[arg(long, env = "ANNALS_DATABASE_URL", hide_env_values = true)]
    pub database: String,
    #[command(flatten)]
    pub views: ViewDbArgs,
    /// Address of the admin API and health endpoints.
    #[arg(
        long,
        env = "ANNALS_PROJECTOR_LISTEN",
        default_value = "127.0.0.1:8083"
    )]
    pub listen: String,
    #[command(flatten)]
    pub projector: ProjectorOptions,
    #[command(flatten)]
    pub http: HttpOptions,
    #[command(flatten)]
    pub auth: AuthArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct QueryApiArgs {
    /// The view database the projector writes: `postgres://...` or `sqlite://...`.
    #[arg(long, env = "ANNALS_DATABASE_URL", hide_env_values = true)]
    pub database: String,
    #[command(flatten)]
    pub views: ViewDbArgs,
    /// Address to listen on.
    #[arg(
        long,
        env = "ANNALS_QUERY_API_LISTEN",
        default_value = "127.0.0.1:8082"
    )]
    pub listen: String,
    #[command(flatten)]
    pub queries: QueryOptions,
    #[command(flatten)]
    pub http: HttpOptions,
    #[command(flatten)]
    pub auth: AuthArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RebuildArgs {
    /// The projection to rebuild (`annals status` lists them).
    pub projection: String,
    /// The process whose projector does the rebuild: `annals serve`, or
    /// `annals projector` (its --listen address).
    #[arg(long, env = "ANNALS_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Run the rebuild in this process instead, on --data-dir (which no
    /// other process may have open).
    #[arg(long, env = "ANNALS_REBUILD_OFFLINE")]
    pub offline: bool,
    /// With --offline: the data directory.
    #[arg(long, env = "ANNALS_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// With --offline: the view database (default: the SQLite views of the
    /// data directory).
    #[arg(long, env = "ANNALS_DATABASE_URL", hide_env_values = true)]
    pub database: Option<String>,
    #[command(flatten)]
    pub credentials: AdminCredentials,
}

/// Where the admin API of a running projector is.
#[derive(Debug, clap::Args)]
pub(crate) struct AdminArgs {
    /// The process whose projector to ask: `annals serve`, or
    /// `annals projector` (its --listen address).
    #[arg(long, env = "ANNALS_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    #[command(flatten)]
    pub credentials: AdminCredentials,
}

/// How to present oneself to the admin API of a running projector.
#[derive(Debug, clap::Args)]
pub(crate) struct AdminCredentials {
    /// The API key (token, with `admin`) to present when the process
    /// requires keys.
    #[arg(long, env = "ANNALS_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// A PEM file of CA certificates to trust for an https:// --url,
    /// besides the public roots: the private CA that signed its
    /// certificate.
    #[arg(long = "ca", env = "ANNALS_CA", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ProjectionArgs {
    /// The projection (`annals status` lists them).
    pub projection: String,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct VerifyArgs {
    /// The data directory to check.
    #[arg(long, env = "ANNALS_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Check the log in PostgreSQL at this URL (postgres://...) instead.
    #[arg(long = "store", value_name = "URL", conflicts_with = "data_dir")]
    pub store: Option<String>,
    #[command(flatten)]
    pub store_schema: StoreSchema,
    /// Print the report as one JSON object (`ok`, the counts, `problems`
    /// with `file`, `offset` and `detail`, `notes`) instead of lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct CopyArgs {
    /// The data directory to copy (no process may have it open).
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// The PostgreSQL database to copy into: postgres://...
    #[arg(long, value_name = "URL")]
    pub to: String,
    #[command(flatten)]
    pub schema: StoreSchema,
}

#[derive(Debug, clap::Args)]
pub(crate) struct BackupArgs {
    /// Where to write the copy: a new or empty directory.
    pub dir: PathBuf,
    /// The data directory to copy (a running store's, or one no process
    /// has open).
    #[arg(long, env = "ANNALS_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RestoreArgs {
    /// The backup to restore: a directory `annals backup` wrote.
    pub backup: PathBuf,
    /// The data directory to restore into: new or empty.
    #[arg(long, env = "ANNALS_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub(crate) struct DumpArgs {
    /// The data directory to read.
    #[arg(long, env = "ANNALS_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Read from a running `annals store` at this URL (it decrypts and
    /// upcasts; a key needs `read`), or from the log in PostgreSQL
    /// (postgres://...), instead of a data directory.
    #[arg(long = "store", value_name = "URL", conflicts_with = "data_dir")]
    pub store: Option<String>,
    #[command(flatten)]
    pub store_schema: StoreSchema,
    /// With --store: the API key (token) to present.
    #[arg(long = "store-key", env = "ANNALS_STORE_KEY", hide_env_values = true)]
    pub store_key: Option<String>,
    /// With --store: a PEM file of CA certificates to trust for https://.
    #[arg(long = "store-ca", env = "ANNALS_STORE_CA", value_name = "FILE")]
    pub store_ca: Option<PathBuf>,
    /// Only this stream's events (then --from and --to are versions).
    #[arg(long)]
    pub stream: Option<String>,
    /// The first log position (or stream version) to print; 1 by default.
    #[arg(long)]
    pub from: Option<u64>,
    /// The last log position (or stream version) to print; the last one
    /// by default.
    #[arg(long)]
    pub to: Option<u64>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Print the projector's answer as JSON (`{"projections": [...]}`,
    /// each as the admin API shows it) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Why the command line did not parse.
#[derive(Debug)]
pub(crate) enum Parse {
    /// The user's arguments.
    Usage(clap::Error),
    /// The application's declarations (a setting no flag can carry).
    Declaration(String),
}

/// Parses `args` into annals' own command line plus the application's
/// settings, which clap's builder adds to the subcommands that run sagas.
pub(crate) fn parse<I, T>(app: &crate::App, args: I) -> Result<Cli, Parse>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    // The command is the application's: help, usage and errors name it,
    // whatever the executable's file is called.
    let command = Cli::command()
        .name(app.name.clone())
        .bin_name(app.name.clone());
    let command = crate::settings::add_to(command, &app.settings).map_err(Parse::Declaration)?;
    let matches = command.try_get_matches_from(args).map_err(Parse::Usage)?;
    let mut cli = Cli::from_arg_matches(&matches).map_err(Parse::Usage)?;
    let settings = |name: &str| {
        matches
            .subcommand_matches(name)
            .map(|sub| crate::Settings::from_matches(&app.settings, sub))
            .unwrap_or_else(|| crate::Settings::defaults(&app.settings))
    };
    match &mut cli.command {
        Action::Serve(args) => args.settings = settings("serve"),
        Action::CommandApi(args) => args.settings = settings("command-api"),
        _ => {}
    }
    Ok(cli)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use super::{Parse, parse};

    /// What parsing `args` for an application called `name` says, as clap
    /// renders it.
    fn rendered(name: &str, args: &[&str]) -> String {
        match parse(&crate::App::new(name), args) {
            Err(Parse::Usage(e)) => e.render().to_string(),
            other => panic!("{args:?} parsed: {other:?}"),
        }
    }

    #[test]
    fn help_and_errors_name_the_application_not_the_executable() {
        let help = rendered("shop", &["/usr/bin/shop-server", "--help"]);
        assert!(help.contains("Usage: shop <COMMAND>"), "{help}");
        assert!(!help.contains("shop-server"), "{help}");
        let serve = rendered("shop", &["shop-server", "serve", "--help"]);
        assert!(serve.contains("Usage: shop serve"), "{serve}");
        let error = rendered("shop", &["shop-server", "serve", "--no-such-flag"]);
        assert!(error.contains("Usage: shop serve"), "{error}");
    }
}
