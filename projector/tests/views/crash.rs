//! Exactly-once effect across crashes: transactions aborted after the
//! handler wrote its rows, the projector task killed in the middle of
//! batches, and a projector process killed with SIGKILL. Each time the views
//! after a restart must equal a from-scratch projection of the same log.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use annals_credit::generator::Generator;
use annals_credit::views::{CustomersProjection, OrdersProjection};
use async_trait::async_trait;
use event_store::RecordedEvent;
use projector::{ApplyError, Projection, Projector, ProjectorOptions, ViewDbOptions, ViewTx};

use crate::common::{
    Crashable, Running, TestDb, dump_views, generate, open_store, project_all, reference_projector,
    test_options,
};

/// Wraps a projection: every `every`-th batch is applied in full and then
/// fails with a lost connection, so the transaction (rows and checkpoint)
/// rolls back and the batch is retried.
#[derive(Debug)]
struct Flaky<P> {
    inner: P,
    every: u64,
    calls: Arc<AtomicU64>,
    faults: Arc<AtomicU64>,
}

#[async_trait]
impl<P: Projection> Projection for Flaky<P> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn version(&self) -> u32 {
        self.inner.version()
    }
    fn tables(&self) -> &'static [&'static str] {
        self.inner.tables()
    }

    fn schema(&self) -> projector::Schema {
        self.inner.schema()
    }
    fn event_types(&self) -> &'static [&'static str] {
        self.inner.event_types()
    }
    async fn apply(&self, tx: &mut ViewTx<'_>, events: &[RecordedEvent]) -> Result<(), ApplyError> {
        self.inner.apply(tx, events).await?;
        if self.calls.fetch_add(1, Ordering::SeqCst) % self.every == self.every - 1 {
            self.faults.fetch_add(1, Ordering::SeqCst);
            return Err(ApplyError::Database(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "injected: connection reset after the rows were written",
            ))));
        }
        Ok(())
    }
}

#[tokio::test]
async fn batches_aborted_after_writing_leave_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    let mut generator = Generator::new(11);
    let head = generate(&store, &mut generator, 5_000).await;
    for test_db in TestDb::all().await {
        let db = test_db.open().await;
        let calls = Arc::new(AtomicU64::new(0));
        let faults = Arc::new(AtomicU64::new(0));
        let projector = Projector::builder(Arc::new(store.clone()), db.clone())
            .options(test_options())
            .projection(Flaky {
                inner: CustomersProjection,
                every: 3,
                calls: calls.clone(),
                faults: faults.clone(),
            })
            .projection(Flaky {
                inner: OrdersProjection,
                every: 4,
                calls: Arc::new(AtomicU64::new(0)),
                faults: faults.clone(),
            })
            .build()
            .unwrap();
        let running = Running::start(projector);
        running.wait_for(head).await;
        running.stop().await.unwrap();
        assert!(
            faults.load(Ordering::SeqCst) >= 5,
            "too few injected faults"
        );

        let fresh = TestDb::sqlite();
        let fresh_db = fresh.open().await;
        project_all(&store, &fresh_db).await;
        assert!(
            dump_views(&db).await == dump_views(&fresh_db).await,
            "{:?}: views differ from a fresh projection",
            test_db.backend
        );
        db.close().await;
    }
}

#[tokio::test]
async fn a_projector_task_killed_mid_batch_resumes_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    let mut generator = Generator::new(12);
    let head = generate(&store, &mut generator, 20_000).await;
    for test_db in TestDb::all().await {
        let db = test_db.open().await;
        let options = ProjectorOptions {
            batch_events_max: 150,
            ..test_options()
        };
        // A kill counts when the run it ended had committed a batch and
        // had not caught up: it came in the middle of the catch-up, where
        // batches follow one another.
        let mut interrupted = 0;
        for delay_ms in [40u64, 90, 25, 130, 60, 15] {
            let before = live_positions(&db).await;
            let crashable = Crashable::start(&store, &test_db, options.clone()).await;
            // The delay counts from this run's first commit (or from the
            // end of the catch-up): starting takes a while on a loaded
            // machine, and a kill before the first commit tests nothing.
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let now = live_positions(&db).await;
                if now != before || now.iter().all(|p| *p >= head.0) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the projector committed nothing within 60 s: {now:?}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            crashable.crash().await;
            let after = live_positions(&db).await;
            let advanced = after.iter().zip(&before).any(|(a, b)| a > b);
            if advanced && after.iter().any(|p| *p > 0 && *p < head.0) {
                interrupted += 1;
            }
        }
        assert!(
            interrupted > 0,
            "no kill of six came after a commit and before the end of the catch-up"
        );
        let running = Running::start(reference_projector(&store, &db, options.clone()));
        running.wait_for(head).await;
        running.stop().await.unwrap();

        let fresh = TestDb::sqlite();
        let fresh_db = fresh.open().await;
        project_all(&store, &fresh_db).await;
        assert!(
            dump_views(&db).await == dump_views(&fresh_db).await,
            "{:?}: views differ from a fresh projection",
            test_db.backend
        );
        db.close().await;
    }
}

/// The live checkpoints of both reference projections (0: none yet).
async fn live_positions(db: &projector::ViewDb) -> Vec<u64> {
    let mut positions = Vec::new();
    for name in ["customers", "orders"] {
        let checkpoint = crate::common::checkpoint(db, name).await;
        positions.push(checkpoint.map_or(0, |c| c.position.0));
    }
    positions
}

const CHILD_DIR_ENV: &str = "ANNALS_PROJECTOR_CRASH_DIR";
const CHILD_DB_ENV: &str = "ANNALS_PROJECTOR_CRASH_DB";
const CHILD_SCHEMA_ENV: &str = "ANNALS_PROJECTOR_CRASH_SCHEMA";

/// Not a test on its own: the body of the child process started by
/// `a_killed_projector_process_restarts_exactly_once` through this binary.
/// Run without the parent's settings it refuses, rather than pass.
#[test]
#[ignore = "run as a child process by the crash test"]
fn crash_child() {
    let (Ok(dir), Ok(url)) = (std::env::var(CHILD_DIR_ENV), std::env::var(CHILD_DB_ENV)) else {
        panic!(
            "crash_child is the child process of a_killed_projector_process_restarts_exactly_once, \
             which sets {CHILD_DIR_ENV} and {CHILD_DB_ENV}; it does not run on its own"
        );
    };
    let schema = std::env::var(CHILD_SCHEMA_ENV).ok();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let store = open_store(Path::new(&dir)).await;
        let db = projector::ViewDb::open_with(
            &url,
            ViewDbOptions {
                postgres_schema: schema,
                ..ViewDbOptions::default()
            },
        )
        .await
        .unwrap();
        let options = ProjectorOptions {
            batch_events_max: 100,
            ..test_options()
        };
        let running = Running::start(reference_projector(&store, &db, options));
        // Tell the parent we are projecting, then report progress until
        // killed.
        loop {
            let status = running.handle.status().await.unwrap();
            let positions: Vec<String> = status.iter().map(|s| s.position.to_string()).collect();
            println!("progress {}", positions.join(" "));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
}

/// Kills the child process when dropped, so that a failing test leaves no
/// projector running.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_killed_projector_process_restarts_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let head = {
        let store = open_store(dir.path()).await;
        let mut generator = Generator::new(13);
        let head = generate(&store, &mut generator, 30_000).await;
        store.close().await.unwrap();
        head
    };
    for test_db in TestDb::all().await {
        // Create the schema (and apply migrations) before the child runs.
        test_db.open().await.close().await;
        let mut killed_mid_way = 0;
        for delay_ms in [150u64, 60, 220, 100, 35] {
            let mut child = KillOnDrop(
                Command::new(std::env::current_exe().unwrap())
                    .args(["--ignored", "--exact", "crash::crash_child", "--nocapture"])
                    .env(CHILD_DIR_ENV, dir.path())
                    .env(CHILD_DB_ENV, test_db.url())
                    .env(CHILD_SCHEMA_ENV, test_db.schema().unwrap_or(""))
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
            let stdout = child.0.stdout.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel::<Vec<u64>>();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let Some(progress) = line.strip_prefix("progress ") else {
                        continue;
                    };
                    let positions = progress.split(' ').filter_map(|n| n.parse().ok()).collect();
                    if tx.send(positions).is_err() {
                        break;
                    }
                }
            });
            // Wait until it has committed a batch (starting the process and
            // opening the store take longer on a loaded machine than the
            // delays below), let it run a little, then SIGKILL.
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut last = loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let positions = rx.recv_timeout(left).unwrap_or_else(|e| {
                    panic!("the child reported no committed batch within 60 s: {e}")
                });
                if positions.iter().any(|p| *p > 0) {
                    break positions;
                }
            };
            std::thread::sleep(Duration::from_millis(delay_ms));
            // A child that ended by itself (a panic, a failed open) is a
            // failure, never a kill.
            let exited = child.0.try_wait().unwrap();
            assert!(
                exited.is_none(),
                "the child exited before the kill: {exited:?}"
            );
            child.0.kill().unwrap();
            let status = child.0.wait().unwrap();
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(9),
                "the child was not ended by the SIGKILL: {status}"
            );
            if let Some(positions) = rx.try_iter().last() {
                last = positions;
            }
            if last.iter().any(|p| *p > 0 && *p < head.0) {
                killed_mid_way += 1;
            }
        }
        assert!(killed_mid_way > 0, "no kill landed during the catch-up");

        let store = open_store(dir.path()).await;
        let db = test_db.open().await;
        let running = Running::start(reference_projector(&store, &db, test_options()));
        running.wait_for(head).await;
        running.stop().await.unwrap();
        let fresh = TestDb::sqlite();
        let fresh_db = fresh.open().await;
        project_all(&store, &fresh_db).await;
        assert!(
            dump_views(&db).await == dump_views(&fresh_db).await,
            "{:?}: views after the kills differ from a fresh projection",
            test_db.backend
        );
        db.close().await;
        store.close().await.unwrap();
    }
}
