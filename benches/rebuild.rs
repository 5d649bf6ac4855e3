//! The rebuild benchmark: `cargo bench --bench rebuild`.
//!
//! A log of customer registrations of the reference domain (one customer
//! stream and one `customers` row each), written twice: once through the
//! crypto-shredding layer as `annals serve` writes it (name and email
//! encrypted under a key per customer), once in clear. Each log's
//! `customers` view is rebuilt by the real binary, offline
//! (`annals rebuild customers --offline`), into SQLite (the data
//! directory's view database) and into PostgreSQL (a database created for
//! the run and dropped afterwards). Printed per rebuild: its events/s, the
//! child process's peak anonymous memory (sampled from `/proc`) and peak
//! resident set, and the baseline measured right after in the same
//! database: a plain bulk insert of the same rows (read back from the
//! rebuilt view) into a table of the same DDL, in multi-row `INSERT`
//! statements of 512 rows and transactions of 50,000 (the projector's
//! batch while catching up).
//!
//! `ANNALS_BENCH_EVENTS` sets the size of each log (default 1,000,000),
//! `ANNALS_BENCH_DIR` where the data goes (default: `target/bench-data`),
//! `ANNALS_BENCH_DATABASE_URL` the PostgreSQL server (default
//! `postgres://postgres@127.0.0.1:5432/postgres`; unreachable, its rows
//! are skipped with a notice, unless `CI=true`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark aborts on failure"
)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use annals_credit::views::events::{self, CustomerRegistered, Money};
use event_store::{
    EventStore, ExpectedVersion, KeyStore, NewEvent, Shredding, Store, StreamAppend, StreamId,
};
use projector::ViewDb;
use sqlx::Row;

use bench_harness::Table;
use bench_harness::fsync::settle;
use bench_harness::pg::PgDatabase;
use bench_harness::ratio::{ratio, times};

/// Rows per statement and per transaction of the baseline.
const ROWS_PER_STATEMENT: usize = 512;
const ROWS_PER_TX: usize = 50_000;

/// Streams per append while the log is written.
const STREAMS_PER_APPEND: usize = 64;

fn main() {
    let root = bench_harness::env::data_root().unwrap();
    let events: usize = bench_harness::env::events_or(1_000_000);
    let admin_url = bench_harness::env::database_url();
    let runtime = bench_harness::env::runtime().unwrap();
    let postgres = runtime.block_on(PgDatabase::reachable(&admin_url));
    if !postgres && bench_harness::env::in_ci() {
        panic!("PostgreSQL at {admin_url} is unreachable, and CI=true");
    }

    let mut rows = Vec::new();
    for personal in [true, false] {
        let dir = root
            .path()
            .join(if personal { "personal" } else { "clear" });
        let written = Instant::now();
        runtime.block_on(write_log(&dir, events, personal));
        eprintln!(
            "wrote {events} registrations ({}) in {:.1} s",
            if personal { "encrypted" } else { "in clear" },
            written.elapsed().as_secs_f64()
        );
        settle();
        rows.push(rebuild_into(&runtime, &dir, None, personal, events));
        settle();
        if postgres {
            let db = runtime.block_on(PgDatabase::create(&admin_url)).unwrap();
            rows.push(rebuild_into(
                &runtime,
                &dir,
                Some(&db.url),
                personal,
                events,
            ));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    println!("\nRebuild of the customers view, offline, {events} registrations (one row each)\n");
    let mut table = Table::new()
        .left("database")
        .left("personal data")
        .right("rebuild s")
        .right("process s")
        .right("events/s")
        .right("peak anonymous MB")
        .right("peak RSS MB")
        .right("baseline: plain INSERT rows/s")
        .right("events/s ÷ baseline");
    for row in &rows {
        table.row([
            row.database.to_owned(),
            (if row.personal { "encrypted" } else { "none" }).to_owned(),
            format!("{:.2}", row.seconds),
            format!("{:.2}", row.wall),
            format!("{:.0}", row.rate()),
            format!("{:.0}", row.peak_anon_mb),
            format!("{:.0}", row.peak_rss_mb),
            format!("{:.0}", row.baseline),
            times(ratio(row.rate(), row.baseline), 2),
        ]);
    }
    table.print();
}

struct Measured {
    database: &'static str,
    personal: bool,
    events: usize,
    /// The rebuild's own time, and the process's from start to exit
    /// (opening the store and its key store included).
    seconds: f64,
    wall: f64,
    peak_anon_mb: f64,
    peak_rss_mb: f64,
    baseline: f64,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.events as f64 / self.seconds
    }
}

/// Appends `count` registrations to a new store in `dir`, through the
/// crypto-shredding layer when `personal`.
async fn write_log(dir: &Path, count: usize, personal: bool) {
    let store = Store::open(dir, Default::default()).await.unwrap();
    let writer: Box<dyn EventStore> = if personal {
        let keys = Arc::new(KeyStore::open(dir.join("keys")).unwrap());
        Box::new(Shredding::new(
            store.clone(),
            keys,
            annals_credit::domain::customer::shredding_policy(),
        ))
    } else {
        Box::new(store.clone())
    };
    let mut written = 0;
    while written < count {
        let appends: Vec<StreamAppend> = (written..count.min(written + STREAMS_PER_APPEND))
            .map(registration)
            .collect();
        written += appends.len();
        writer.append_many(appends).await.unwrap();
    }
    drop(writer);
    store.close().await.unwrap();
}

/// The registration of customer number `n`.
fn registration(n: usize) -> StreamAppend {
    let id = uuid::Uuid::now_v7().to_string();
    let stream = StreamId::new(format!("{}{id}", events::CUSTOMER_STREAM_PREFIX)).unwrap();
    let data = CustomerRegistered {
        customer_id: id,
        name: format!("Customer {n}"),
        email: format!("customer{n}@example.com"),
        credit_limit: Money {
            amount: 100_000 + (n as i64 % 400) * 1_000,
            currency: "EUR".to_owned(),
        },
    };
    let event = NewEvent::json(events::CUSTOMER_REGISTERED, &data)
        .unwrap()
        .with_schema_version(events::schema_version(events::CUSTOMER_REGISTERED));
    StreamAppend::new(stream, ExpectedVersion::NoStream, vec![event])
}

/// Rebuilds the `customers` view of the log in `dir` into `database`
/// (the data directory's SQLite views when `None`), then measures the
/// baseline in the same database.
fn rebuild_into(
    runtime: &tokio::runtime::Runtime,
    dir: &Path,
    database: Option<&str>,
    personal: bool,
    events: usize,
) -> Measured {
    let mut command = Command::new(env!("CARGO_BIN_EXE_annals"));
    command
        .args(["rebuild", "customers", "--offline", "--data-dir"])
        .arg(dir)
        .env("ANNALS_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(url) = database {
        command.args(["--database", url]);
    }
    let started = Instant::now();
    let child = command.spawn().unwrap();
    let sampling = Arc::new(AtomicBool::new(true));
    let peak_anon = Arc::new(AtomicU64::new(0));
    let peak_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (sampling, peak_anon, peak_rss) =
            (sampling.clone(), peak_anon.clone(), peak_rss.clone());
        let pid = child.id();
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                if let Some(kb) = status_kb(pid, "RssAnon:") {
                    peak_anon.fetch_max(kb, Ordering::Relaxed);
                }
                if let Some(kb) = status_kb(pid, "VmHWM:") {
                    peak_rss.fetch_max(kb, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let output = child.wait_with_output().unwrap();
    let seconds = started.elapsed().as_secs_f64();
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the rebuild failed: {stderr}");
    // The rebuild's own report, after the store is open: "... (N events
    // in S s)".
    let reported = stdout
        .rsplit_once(" events in ")
        .and_then(|(_, rest)| rest.split(' ').next())
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no report of the rebuild in its output: {stdout}"));
    let baseline = runtime.block_on(async {
        let db = match database {
            Some(url) => ViewDb::open(url).await.unwrap(),
            None => ViewDb::open_in_data_dir(dir).await.unwrap(),
        };
        let rows = count_rows(&db).await;
        assert_eq!(rows, events, "the rebuilt view has a row per registration");
        let rate = insert_baseline(&db).await;
        db.close().await;
        rate
    });
    Measured {
        database: if database.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        personal,
        events,
        seconds: reported,
        wall: seconds,
        peak_anon_mb: peak_anon.load(Ordering::Relaxed) as f64 / 1024.0,
        peak_rss_mb: peak_rss.load(Ordering::Relaxed) as f64 / 1024.0,
        baseline,
    }
}

/// A `kB` line of `/proc/<pid>/status`.
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

async fn count_rows(db: &ViewDb) -> usize {
    let row = sqlx::query("SELECT COUNT(*) FROM customers")
        .fetch_one(db.pool())
        .await
        .unwrap();
    usize::try_from(row.try_get::<i64, _>(0).unwrap()).unwrap()
}

/// Rows per second of a plain bulk insert of the rows of `customers`
/// into a new table of the same DDL.
async fn insert_baseline(db: &ViewDb) -> f64 {
    let postgres = db.dialect() == projector::Dialect::Postgres;
    let ddl = if postgres {
        include_str!("../examples/credit/src/views/schema/customers.postgres.sql")
    } else {
        include_str!("../examples/credit/src/views/schema/customers.sqlite.sql")
    };
    let ddl = ddl
        .replace("TABLE customers", "TABLE baseline_customers")
        .replace("INDEX customers_", "INDEX baseline_customers_")
        .replace("ON customers ", "ON baseline_customers ");
    sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
        .execute(db.pool())
        .await
        .unwrap();
    let columns = annals_credit::views::CUSTOMER_COLUMNS;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM customers",
        columns.join(", ")
    )))
    .fetch_all(db.pool())
    .await
    .unwrap();
    let statement = |n: usize| {
        let mut sql = format!(
            "INSERT INTO baseline_customers ({}) VALUES ",
            columns.join(", ")
        );
        let mut p = 0;
        for row in 0..n {
            sql.push_str(if row == 0 { "(" } else { ", (" });
            for column in 0..columns.len() {
                if column > 0 {
                    sql.push_str(", ");
                }
                p += 1;
                if postgres {
                    sql.push_str(&format!("${p}"));
                } else {
                    sql.push('?');
                }
            }
            sql.push(')');
        }
        sql
    };
    let full = statement(ROWS_PER_STATEMENT);
    let started = Instant::now();
    for tx_rows in rows.chunks(ROWS_PER_TX) {
        let mut tx = db.pool().begin().await.unwrap();
        for chunk in tx_rows.chunks(ROWS_PER_STATEMENT) {
            let sql = if chunk.len() == ROWS_PER_STATEMENT {
                full.clone()
            } else {
                statement(chunk.len())
            };
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for row in chunk {
                for column in 0..columns.len() {
                    query = if column < 5 {
                        query.bind(row.try_get::<String, _>(column).unwrap())
                    } else {
                        query.bind(row.try_get::<i64, _>(column).unwrap())
                    };
                }
            }
            query.execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    rows.len() as f64 / started.elapsed().as_secs_f64()
}
