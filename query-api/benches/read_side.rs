//! The read-side benchmark: `cargo bench -p query-api --bench read_side`.
//!
//! 1. Projection catch-up: a log of reference-domain events (generated once
//!    into an embedded store) projected by the reference projections from an
//!    empty view database until every projection's checkpoint is at the head,
//!    into SQLite and into PostgreSQL. Every batch commits its view rows and
//!    its checkpoint in one transaction, as in production.
//! 2. The query API over the last view built on each backend, served on
//!    loopback and driven by 64 concurrent clients in the same process:
//!    `GET /customers/{id}` for random existing customers, and one list
//!    query. PostgreSQL gets the `VACUUM ANALYZE` autovacuum would soon run
//!    after a bulk load, so that it does not run during the measurement.
//!
//! Printed beside baselines measured in the same run, so that the figures
//! can be read as ratios on a loaded machine: the store's `read_all` rate
//! over the same log, and per backend the rate of a plain multi-row INSERT
//! of as many rows as there are events, in transactions of the batch size.
//!
//! `ANNALS_BENCH_EVENTS` sets the size of the log (default 1,000,000);
//! `ANNALS_BENCH_BATCH` the projector's events per transaction, or a
//! comma-separated list of them, each projected into a fresh database
//! (default: the projector's default); `ANNALS_BENCH_SECONDS` the length of
//! each query workload (default 10); `ANNALS_BENCH_DIR` where the data goes
//! (default: next to the target dir); `ANNALS_BENCH_DATABASE_URL` the
//! PostgreSQL server (default `postgres://postgres@127.0.0.1:5432/postgres`),
//! on which a database is created for each view and dropped afterwards. An
//! unreachable server skips the PostgreSQL rows with a notice.
//! `ANNALS_BENCH_ONLY=sqlite` or `=postgres` runs one backend;
//! `ANNALS_BENCH_IDS=random` generates random (version 4) aggregate ids
//! instead of the time-ordered (version 7) ones the command API assigns.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark aborts on failure"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use annals_credit::generator::{Generator, Ids, append_events};
use event_store::{EventStore, Position, Store, StoreOptions};
use projector::{Dialect, Projector, ProjectorOptions, TrackState, ViewDb, ViewDbOptions};
use query_api::{QueryConfig, QueryState};

use bench_harness::env::runs;
use bench_harness::pg::PgDatabase;
use bench_harness::ratio::{ratio, times};
use bench_harness::{Load, Table, Tally, run_clients};

const CLIENTS: usize = 64;
/// Rows per INSERT statement in the baseline, as the projections' upserts.
const BASELINE_ROWS_PER_STATEMENT: usize = 512;

/// `1234567` as `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The 1-minute load average, to judge how busy the machine was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// SplitMix64, so that every client draws its own ids without a lock.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Rows of the plain INSERT baseline per second: `rows` rows of a random
/// text key and an integer, in multi-row statements, `per_tx` rows per
/// write transaction (the projector's batch size).
async fn insert_baseline(db: &ViewDb, rows: u64, per_tx: usize) -> f64 {
    sqlx::query("CREATE TABLE bench_baseline (id TEXT NOT NULL PRIMARY KEY, n BIGINT NOT NULL)")
        .execute(db.pool())
        .await
        .unwrap();
    // Placeholders as the projections write them (see their `sql` module).
    let statement = |n: usize| {
        let values: Vec<String> = (0..n)
            .map(|i| match db.dialect() {
                Dialect::Sqlite => "(?, ?)".to_owned(),
                Dialect::Postgres => format!("(${}, ${})", 2 * i + 1, 2 * i + 2),
            })
            .collect();
        format!(
            "INSERT INTO bench_baseline (id, n) VALUES {}",
            values.join(", ")
        )
    };
    let mut rng = Rng(7);
    let started = Instant::now();
    let mut done = 0u64;
    while done < rows {
        let in_tx = (rows - done).min(per_tx as u64) as usize;
        let mut tx = db.begin_write().await.unwrap();
        let mut left = in_tx;
        while left > 0 {
            let n = left.min(BASELINE_ROWS_PER_STATEMENT);
            let mut query = sqlx::query(sqlx::AssertSqlSafe(statement(n)));
            for _ in 0..n {
                // Random keys land all over the index, as customer ids do.
                query = query
                    .bind(format!("{:016x}{:016x}", rng.next(), rng.next()))
                    .bind(done as i64);
                done += 1;
            }
            query.execute(tx.conn()).await.unwrap();
            left -= n;
        }
        tx.commit().await.unwrap();
    }
    let rate = rows as f64 / started.elapsed().as_secs_f64();
    sqlx::query("DROP TABLE bench_baseline")
        .execute(db.pool())
        .await
        .unwrap();
    rate
}

struct CatchUp {
    elapsed: Duration,
    customers: i64,
    orders: i64,
}

/// Runs the reference projections from an empty view database until every
/// checkpoint is at `head`.
async fn catch_up(store: &Store, db: &ViewDb, head: Position, batch: usize) -> CatchUp {
    let projector = Projector::builder(Arc::new(store.clone()), db.clone())
        .options(ProjectorOptions {
            batch_events_max: batch,
            ..ProjectorOptions::default()
        })
        .projections(annals_credit::views::projections())
        .build()
        .unwrap();
    let handle = projector.handle();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let task = tokio::spawn(projector.run(async move {
        let _ = stopped.await;
    }));
    loop {
        let status = handle.status().await.unwrap();
        if status
            .iter()
            .all(|p| p.position >= head.0 && p.rebuild.is_none())
        {
            break;
        }
        if let Some(p) = status.iter().find(|p| p.state == TrackState::Failed) {
            panic!("projection {} failed: {:?}", p.name, p.last_error);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    let count = |table: &str| {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
            .fetch_one(db.pool())
    };
    CatchUp {
        elapsed,
        customers: count("customers").await.unwrap(),
        orders: count("orders").await.unwrap(),
    }
}

/// `CLIENTS` clients, each sending one request at a time for `duration`;
/// `path` picks the request from a random number.
async fn drive(
    base: &str,
    duration: Duration,
    path: Arc<dyn Fn(u64) -> String + Send + Sync>,
) -> Load {
    http_edge::tls::install_default_provider();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .unwrap();
    let started = Instant::now();
    run_clients(CLIENTS, |c| {
        let client = client.clone();
        let base = base.to_owned();
        let path = path.clone();
        async move {
            let mut rng = Rng(c as u64 + 1);
            let mut tally = Tally::default();
            while started.elapsed() < duration {
                let url = format!("{base}{}", path(rng.next()));
                let sent = Instant::now();
                let ok = match client.get(url).send().await {
                    Ok(response) => {
                        let ok = response.status().is_success();
                        ok & response.bytes().await.is_ok()
                    }
                    Err(_) => false,
                };
                tally.record(sent, ok);
            }
            tally
        }
    })
    .await
}

/// Serves the query API over `db` and runs both query workloads.
async fn query_runs(
    db: &ViewDb,
    ids: &Arc<Vec<String>>,
    duration: Duration,
) -> Vec<(String, Load)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = query_api::router(
        QueryState::new(db.clone(), QueryConfig::default()),
        &annals_credit::queries::routes(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    let mut out = Vec::new();
    let by_id = {
        let ids = ids.clone();
        Arc::new(move |r: u64| format!("/customers/{}", ids[(r % ids.len() as u64) as usize]))
    };
    out.push((
        "`GET /customers/{id}`, random existing id".to_owned(),
        drive(&base, duration, by_id).await,
    ));
    let list = Arc::new(|_| "/customers?credit_available=0&limit=20".to_owned());
    out.push((
        "`GET /customers?credit_available=0&limit=20`".to_owned(),
        drive(&base, duration, list).await,
    ));
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

/// What keeps a fresh view database alive: its directory or its database
/// on the server, removed on drop.
enum Fresh {
    Sqlite(#[allow(dead_code, reason = "held for its Drop")] tempfile::TempDir),
    Postgres(#[allow(dead_code, reason = "held for its Drop")] PgDatabase),
}

/// A new, empty view database with the schema applied.
async fn fresh_db(backend: Backend, root: &std::path::Path, admin_url: &str) -> (ViewDb, Fresh) {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir_in(root).unwrap();
            let db = ViewDb::open_in_data_dir(dir.path()).await.unwrap();
            (db, Fresh::Sqlite(dir))
        }
        Backend::Postgres => {
            let pg = PgDatabase::create(admin_url).await.unwrap();
            let db = ViewDb::open_with(&pg.url, ViewDbOptions::default())
                .await
                .unwrap();
            (db, Fresh::Postgres(pg))
        }
    }
}

struct CatchUpRow {
    backend: Backend,
    batch: usize,
    baseline: f64,
    catch_up: CatchUp,
}

/// What the run is told by the environment.
struct Settings {
    events: u64,
    batches: Vec<usize>,
    duration: Duration,
    admin_url: String,
    random_ids: bool,
    only: Option<String>,
}

impl Settings {
    fn from_env() -> Settings {
        let batches = match std::env::var("ANNALS_BENCH_BATCH") {
            Ok(list) => list.split(',').map(|b| b.trim().parse().unwrap()).collect(),
            Err(_) => vec![ProjectorOptions::default().batch_events_max],
        };
        Settings {
            events: bench_harness::env::events_or(1_000_000),
            batches,
            duration: bench_harness::env::seconds_or(10),
            admin_url: bench_harness::env::database_url(),
            // Time-ordered ids are what the command API assigns; clients that
            // bring their own random ids scatter the views' writes over more
            // pages.
            random_ids: std::env::var("ANNALS_BENCH_IDS").as_deref() == Ok("random"),
            only: bench_harness::env::only(),
        }
    }
}

/// The generated log every backend projects.
struct Log {
    store: Store,
    head: Position,
    ids: Arc<Vec<String>>,
    orders: usize,
    generated: Duration,
    /// The store's `read_all` rate over it: the baseline of catch-up.
    read_all_rate: f64,
}

/// What every backend measured.
#[derive(Default)]
struct Results {
    catch_ups: Vec<CatchUpRow>,
    queries: Vec<(Backend, String, Load)>,
}

fn main() {
    bench_harness::env::runtime().unwrap().block_on(run());
}

async fn run() {
    let root = bench_harness::env::data_root().unwrap();
    let settings = Settings::from_env();
    let load_before = load_average();
    let log = generate_log(root.path(), &settings).await;
    let mut results = Results::default();
    for backend in backends(&settings).await {
        measure_backend(backend, root.path(), &settings, &log, &mut results).await;
    }
    log.store.close().await.unwrap();

    print_setting(&settings, &log, &load_before);
    print_catch_ups(&log, &results.catch_ups);
    print_queries(&settings, &results.queries);
}

/// Generates the log into a store under `root`, and reads it back whole.
async fn generate_log(root: &std::path::Path, settings: &Settings) -> Log {
    eprintln!("generating {} events", settings.events);
    let store = Store::open(root.join("store"), StoreOptions::default())
        .await
        .unwrap();
    let ids = if settings.random_ids {
        Ids::Random
    } else {
        Ids::TimeOrdered
    };
    let mut generator = Generator::with_ids(42, ids);
    let started = Instant::now();
    let head = append_events(&store, &mut generator, settings.events)
        .await
        .unwrap();
    let generated = started.elapsed();
    let ids: Arc<Vec<String>> =
        Arc::new(generator.customers().iter().map(|c| c.id.clone()).collect());
    let orders = generator.orders().count();
    let read_all_rate = read_all_rate(&store, head).await;
    Log {
        store,
        head,
        ids,
        orders,
        generated,
        read_all_rate,
    }
}

/// Events per second of the store's `read_all` over the log up to `head`.
async fn read_all_rate(store: &Store, head: Position) -> f64 {
    let started = Instant::now();
    let mut next = Position::START;
    let mut read = 0u64;
    loop {
        let page = store.read_all(next, 10_000).await.unwrap();
        let Some(last) = page.last() else { break };
        next = last.position.next();
        read += page.len() as u64;
    }
    assert_eq!(read, head.0, "read_all returns the whole log");
    read as f64 / started.elapsed().as_secs_f64()
}

/// The backends to measure: those `ANNALS_BENCH_ONLY` names, PostgreSQL
/// only if its server answers.
async fn backends(settings: &Settings) -> Vec<Backend> {
    let only = settings.only.as_deref();
    let mut backends = Vec::new();
    if runs(only, "sqlite") {
        backends.push(Backend::Sqlite);
    }
    if runs(only, "postgres") && PgDatabase::reachable(&settings.admin_url).await {
        backends.push(Backend::Postgres);
    }
    backends
}

/// Projects the log into a fresh database of `backend` once per batch
/// size, each beside its INSERT baseline, then runs the query workloads
/// over the last view built.
async fn measure_backend(
    backend: Backend,
    root: &std::path::Path,
    settings: &Settings,
    log: &Log,
    results: &mut Results,
) {
    let name = backend.name();
    for (i, &batch) in settings.batches.iter().enumerate() {
        let (db, fresh) = fresh_db(backend, root, &settings.admin_url).await;
        eprintln!("{name}, batch {batch}: plain INSERT baseline");
        let baseline = insert_baseline(&db, log.head.0, batch).await;
        eprintln!("{name}, batch {batch}: projection catch-up");
        let catch_up = catch_up(&log.store, &db, log.head, batch).await;
        eprintln!(
            "{name}, batch {batch}: caught up in {:.1} s",
            catch_up.elapsed.as_secs_f64()
        );
        results.catch_ups.push(CatchUpRow {
            backend,
            batch,
            baseline,
            catch_up,
        });
        if i + 1 == settings.batches.len() {
            if backend == Backend::Postgres {
                // What autovacuum does soon after a bulk load anyway; done
                // here so that it does not run during the measurement.
                sqlx::raw_sql("VACUUM ANALYZE customers, orders")
                    .execute(db.pool())
                    .await
                    .unwrap();
            }
            eprintln!("{name}: query workloads");
            for (request, load) in query_runs(&db, &log.ids, settings.duration).await {
                results.queries.push((backend, request, load));
            }
        }
        db.close().await;
        drop(fresh);
    }
}

/// The machine, the log and the `read_all` baseline.
fn print_setting(settings: &Settings, log: &Log, load_before: &str) {
    println!(
        "\nMachine: {} CPUs; load average (1 min) {} at the start, {} at the end",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_before,
        load_average()
    );
    println!(
        "\nEvent log: {} reference-domain events ({} customers, {} orders, {} ids), generated in {:.1} s",
        grouped(log.head.0),
        grouped(log.ids.len() as u64),
        grouped(log.orders as u64),
        if settings.random_ids {
            "random (v4)"
        } else {
            "time-ordered (v7)"
        },
        log.generated.as_secs_f64()
    );
    println!(
        "Baseline: the store's `read_all` (pages of 10,000) over the same log: {} events/s\n",
        grouped(log.read_all_rate as u64)
    );
}

fn print_catch_ups(log: &Log, rows: &[CatchUpRow]) {
    println!(
        "Projection catch-up from an empty view database (customers + orders, checkpoint in every batch transaction)"
    );
    let mut table = Table::new()
        .left("backend")
        .right("events")
        .right("batch (events/tx)")
        .right("seconds")
        .right("events/s")
        .right("baseline: plain INSERT rows/s")
        .right("events/s ÷ baseline rows/s");
    for r in rows {
        let rate = log.head.0 as f64 / r.catch_up.elapsed.as_secs_f64();
        assert_eq!(
            r.catch_up.customers as usize,
            log.ids.len(),
            "every customer projected"
        );
        assert_eq!(
            r.catch_up.orders as usize, log.orders,
            "every order projected"
        );
        table.row([
            r.backend.name().to_owned(),
            grouped(log.head.0),
            grouped(r.batch as u64),
            format!("{:.2}", r.catch_up.elapsed.as_secs_f64()),
            grouped(rate as u64),
            grouped(r.baseline as u64),
            times(ratio(rate, r.baseline), 2),
        ]);
    }
    table.print();
}

fn print_queries(settings: &Settings, queries: &[(Backend, String, Load)]) {
    println!(
        "\nQuery API over the last view built: {CLIENTS} concurrent clients (keep-alive) in the same process as the server, {} s per row (PostgreSQL after VACUUM ANALYZE)",
        settings.duration.as_secs()
    );
    let mut table = Table::new()
        .left("backend")
        .left("request")
        .right("requests")
        .right("failed")
        .right("requests/s")
        .right("p50 ms")
        .right("p99 ms")
        .right("p99.9 ms")
        .right("max ms");
    for (backend, request, load) in queries {
        let [p50, p99, p999, max] = load.latencies.summary_ms(2);
        table.row([
            backend.name().to_owned(),
            request.clone(),
            grouped(load.requests() as u64),
            load.failures.to_string(),
            grouped(load.rate() as u64),
            p50,
            p99,
            p999,
            max,
        ]);
    }
    table.print();
}
