//! Rebuilds: replayed into shadow tables while the live ones serve and keep
//! following the log, swapped in atomically; an interrupted rebuild resumes
//! with the live view intact; a new projection version rebuilds at start.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use annals_credit::generator::Generator;
use annals_credit::views::{CustomersProjection, OrdersProjection};
use async_trait::async_trait;
use event_store::{EventStore, Position, RecordedEvent, Store};
use projector::{
    ApplyError, Projection, Projector, RebuildPhase, Track, TrackState, ViewDb, ViewTx,
};
use sqlx::Row;

use crate::common::{
    Running, TestDb, dump_views, generate, joined, open_store, project_all, reference_projector,
    test_options, wait_for_status,
};

/// Customers registered at or before each position of the log.
async fn registrations(store: &Store) -> BTreeMap<u64, i64> {
    let mut out = BTreeMap::new();
    let mut count = 0;
    let mut next = Position::START;
    loop {
        let page = store.read_all(next, 5_000).await.unwrap();
        let Some(last) = page.last() else { break };
        next = last.position.next();
        for e in &page {
            if e.event_type == "CustomerRegistered" {
                count += 1;
            }
            out.insert(e.position.0, count);
        }
    }
    out
}

#[tokio::test]
async fn a_rebuild_under_reads_and_writes_swaps_in_a_view_equal_to_a_fresh_one() {
    for test_db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path()).await;
        let mut generator = Generator::new(21);
        let head = generate(&store, &mut generator, 15_000).await;
        let db = test_db.open().await;
        let running = Running::start(reference_projector(&store, &db, test_options()));
        running.wait_for(head).await;

        // A reader: the customer count and the checkpoint in one statement,
        // over and over. Every answer must be the count at that position.
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let db = db.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut failures = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let read = sqlx::query(
                        "SELECT cp.position, (SELECT COUNT(*) FROM customers) \
                         FROM projection_checkpoints cp WHERE cp.name = 'customers' AND cp.track = 'live'",
                    )
                    .fetch_one(db.pool())
                    .await;
                    match read {
                        Ok(row) => seen.push((row.get::<i64, _>(0), row.get::<i64, _>(1))),
                        Err(e) => failures.push(e.to_string()),
                    }
                    tokio::task::yield_now().await;
                }
                (seen, failures)
            })
        };
        // A writer: the log keeps growing during the rebuild.
        let writer = {
            let store = store.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    generate(&store, &mut generator, 50).await;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                generator
            })
        };

        let rebuilder = reference_projector(&store, &db, test_options());
        let mut phases = Vec::new();
        // A rebuild that cannot finish while the log grows is a bug to
        // report, not a test run to wait out.
        let report = tokio::time::timeout(
            Duration::from_secs(180),
            rebuilder.rebuild("customers", |p| {
                if phases.last() != Some(&p.phase) {
                    phases.push(p.phase);
                }
            }),
        )
        .await
        .expect("the rebuild swaps in within 180 s while the log grows")
        .unwrap();
        assert_eq!(
            phases,
            [
                RebuildPhase::Replaying,
                RebuildPhase::Swapping,
                RebuildPhase::Done
            ]
        );
        assert_eq!(report.resumed_from, Position::ZERO);
        assert!(report.position >= head);

        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.store(true, Ordering::SeqCst);
        let (seen, failures) = joined(reader, Duration::from_secs(60)).await;
        let _generator = joined(writer, Duration::from_secs(60)).await;
        assert!(
            failures.is_empty(),
            "{:?}: failed reads: {failures:?}",
            test_db.backend
        );
        assert!(seen.len() > 10, "too few reads: {}", seen.len());
        let truth = registrations(&store).await;
        for (position, count) in &seen {
            assert_eq!(
                truth.get(&(*position as u64)),
                Some(count),
                "{:?}: a read at position {position} saw {count} customers",
                test_db.backend
            );
        }

        let final_head = store.head().await.unwrap();
        running.wait_for(final_head).await;
        running.stop().await.unwrap();
        assert!(
            db.checkpoint("customers", Track::Rebuild)
                .await
                .unwrap()
                .is_none(),
            "the rebuild checkpoint is gone after the swap"
        );
        let fresh = TestDb::sqlite();
        let fresh_db = fresh.open().await;
        project_all(&store, &fresh_db).await;
        assert!(
            dump_views(&db).await == dump_views(&fresh_db).await,
            "{:?}: rebuilt views differ from a fresh projection",
            test_db.backend
        );
        db.close().await;
    }
}

#[tokio::test]
async fn an_interrupted_rebuild_leaves_the_live_view_intact_and_resumes() {
    for test_db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path()).await;
        let mut generator = Generator::new(22);
        let head = generate(&store, &mut generator, 12_000).await;
        let db = test_db.open().await;
        project_all(&store, &db).await;
        let before = dump_views(&db).await;

        // Interrupt the rebuild after a few batches by dropping it.
        let projector = reference_projector(&store, &db, test_options());
        let mut batches = 0;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut tx = Some(tx);
        let interrupted = tokio::time::timeout(Duration::from_secs(120), async {
            tokio::select! {
                result = projector.rebuild("orders", |_| {
                    batches += 1;
                    if batches == 5 && let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }) => panic!("the rebuild finished before the interruption: {result:?}"),
                _ = rx => {}
            }
        })
        .await;
        interrupted.expect("the rebuild commits 5 batches within 120 s");
        let shadow = db
            .checkpoint("orders", Track::Rebuild)
            .await
            .unwrap()
            .expect("the rebuild checkpoint stays");
        assert!(shadow.position > Position::ZERO && shadow.position < head);
        assert_eq!(shadow.state, TrackState::Rebuilding);
        assert_eq!(dump_views(&db).await, before, "the live view changed");
        // The orders view builds its secondary indexes after the load: the
        // shadow has none yet.
        let declared = ["orders_by_customer", "orders_by_status"];
        assert_eq!(indexes_on(&db, "orders").await, declared);
        let shadow_table = format!("orders{}", projector::SHADOW_SUFFIX);
        assert!(indexes_on(&db, &shadow_table).await.is_empty());

        // The status shows it; the next rebuild resumes where it stopped.
        let running = Running::start(reference_projector(&store, &db, test_options()));
        // (`run` resumes it by itself; wait for it to finish.)
        wait_for_status(&running.handle, Duration::from_secs(120), |s| {
            s.iter()
                .all(|p| p.rebuild.is_none() && p.position == head.0)
        })
        .await;
        running.stop().await.unwrap();
        assert_eq!(dump_views(&db).await, before);
        assert_eq!(
            indexes_on(&db, "orders").await,
            declared,
            "the swapped-in view has its indexes"
        );

        // And an explicit resume reports where it started.
        let projector = reference_projector(&store, &db, test_options());
        let mut seen = 0;
        let deadline = Instant::now() + Duration::from_secs(120);
        let interrupted = tokio::time::timeout(Duration::from_secs(120), async {
            tokio::select! {
                _ = projector.rebuild("customers", |_| seen += 1) => panic!("finished too early"),
                () = async {
                    while db.checkpoint("customers", Track::Rebuild).await.unwrap().is_none_or(|c| c.position.0 < 2_000) {
                        assert!(
                            Instant::now() < deadline,
                            "the rebuild did not pass position 2000 within 120 s"
                        );
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                } => {}
            }
        })
        .await;
        interrupted.expect("the rebuild passes position 2000 within 120 s");
        let projector = reference_projector(&store, &db, test_options());
        let report = tokio::time::timeout(
            Duration::from_secs(120),
            projector.rebuild("customers", |_| {}),
        )
        .await
        .expect("the resumed rebuild swaps in within 120 s")
        .unwrap();
        assert!(report.resumed_from.0 >= 2_000, "{report:?}");
        assert_eq!(report.position, head);
        assert_eq!(dump_views(&db).await, before);
        db.close().await;
    }
}

/// The indexes on `table` that its DDL declares (not the primary key's),
/// by their declared names (a rebuilt table's may carry the shadow
/// suffix: index names alternate from one rebuild to the next).
async fn indexes_on(db: &ViewDb, table: &str) -> Vec<String> {
    let sql = match db.dialect() {
        projector::Dialect::Sqlite => {
            "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = $1 AND sql IS NOT NULL"
        }
        projector::Dialect::Postgres => {
            "SELECT indexname::text FROM pg_indexes \
             WHERE tablename = $1 AND schemaname = current_schema() AND indexname NOT LIKE '%_pkey'"
        }
    };
    let mut names: Vec<String> = sqlx::query_scalar(sql)
        .bind(table)
        .fetch_all(db.pool())
        .await
        .unwrap();
    for name in &mut names {
        if let Some(declared) = name.strip_suffix(projector::SHADOW_SUFFIX) {
            *name = declared.to_owned();
        }
    }
    names.sort();
    names
}

/// Version 2 of the customers view: emails shown with a marker, so that a
/// row built by version 1 is told apart.
#[derive(Debug)]
struct CustomersV2;

#[async_trait]
impl Projection for CustomersV2 {
    fn name(&self) -> &'static str {
        CustomersProjection.name()
    }
    fn version(&self) -> u32 {
        2
    }
    fn tables(&self) -> &'static [&'static str] {
        CustomersProjection.tables()
    }

    fn schema(&self) -> projector::Schema {
        CustomersProjection.schema()
    }
    fn event_types(&self) -> &'static [&'static str] {
        CustomersProjection.event_types()
    }
    async fn apply(&self, tx: &mut ViewTx<'_>, events: &[RecordedEvent]) -> Result<(), ApplyError> {
        CustomersProjection.apply(tx, events).await?;
        let table = tx.table("customers")?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET email = 'v2:' || email WHERE email NOT LIKE 'v2:%'"
        )))
        .execute(tx.conn())
        .await?;
        Ok(())
    }
}

async fn emails(db: &ViewDb) -> Vec<String> {
    sqlx::query_scalar("SELECT email FROM customers ORDER BY id")
        .fetch_all(db.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_new_projection_version_is_rebuilt_at_start() {
    for test_db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path()).await;
        let mut generator = Generator::new(23);
        let head = generate(&store, &mut generator, 8_000).await;
        let db = test_db.open().await;
        project_all(&store, &db).await;
        assert!(emails(&db).await.iter().all(|e| !e.starts_with("v2:")));

        let projector = Projector::builder(Arc::new(store.clone()), db.clone())
            .options(test_options())
            .projection(CustomersV2)
            .projection(OrdersProjection)
            .build()
            .unwrap();
        let running = Running::start(projector);
        let status = wait_for_status(&running.handle, Duration::from_secs(120), |s| {
            s.iter().all(|p| {
                p.rebuild.is_none() && p.tables_version == p.version && p.position == head.0
            })
        })
        .await;
        assert_eq!(status[0].version, 2);
        let all = emails(&db).await;
        assert_eq!(all.len(), generator.customers().len());
        assert!(all.iter().all(|e| e.starts_with("v2:")), "{all:?}");
        running.stop().await.unwrap();

        // Starting again with the same version does not rebuild.
        let projector = Projector::builder(Arc::new(store.clone()), db.clone())
            .options(test_options())
            .projection(CustomersV2)
            .projection(OrdersProjection)
            .build()
            .unwrap();
        let running = Running::start(projector);
        let status = running.handle.status().await.unwrap();
        assert!(
            status
                .iter()
                .all(|p| p.rebuild.is_none() && p.state != TrackState::Rebuilding)
        );
        running.stop().await.unwrap();
        db.close().await;
    }
}

/// Version 3 of the customers view: a new shape (a column with a default
/// and an index on it), declared in its DDL.
#[derive(Debug)]
struct CustomersV3;

impl CustomersV3 {
    fn ddl(dialect: projector::Dialect, integer: &str) -> &'static str {
        let old = CustomersProjection.schema().ddl(dialect);
        let column = format!("    position         {integer} NOT NULL");
        assert!(old.contains(&column));
        let new = old.replace(
            &column,
            &format!("{column},\n    note TEXT NOT NULL DEFAULT 'v3'"),
        ) + ";\nCREATE INDEX customers_by_note ON customers (note, id);";
        Box::leak(new.into_boxed_str())
    }
}

#[async_trait]
impl Projection for CustomersV3 {
    fn name(&self) -> &'static str {
        CustomersProjection.name()
    }
    fn version(&self) -> u32 {
        3
    }
    fn tables(&self) -> &'static [&'static str] {
        CustomersProjection.tables()
    }
    fn schema(&self) -> projector::Schema {
        projector::Schema::new(
            Self::ddl(projector::Dialect::Sqlite, "INTEGER"),
            Self::ddl(projector::Dialect::Postgres, "BIGINT"),
        )
    }
    fn event_types(&self) -> &'static [&'static str] {
        CustomersProjection.event_types()
    }
    async fn apply(&self, tx: &mut ViewTx<'_>, events: &[RecordedEvent]) -> Result<(), ApplyError> {
        CustomersProjection.apply(tx, events).await
    }
}

async fn notes(db: &ViewDb) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT note FROM customers ORDER BY id")
        .fetch_all(db.pool())
        .await
}

/// A version whose DDL changed: the old tables keep their shape and serve
/// until the rebuild, which creates the new shape in the shadows from the
/// DDL; the swap puts it in place. Rebuilding again works with the index
/// names the first rebuild took.
#[tokio::test]
async fn a_new_version_with_a_new_shape_is_rebuilt_into_it() {
    for test_db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path()).await;
        let mut generator = Generator::new(31);
        let head = generate(&store, &mut generator, 3_000).await;
        let db = test_db.open().await;
        project_all(&store, &db).await;
        assert!(notes(&db).await.is_err(), "version 1 has no note column");

        let projector = Projector::builder(Arc::new(store.clone()), db.clone())
            .options(test_options())
            .projection(CustomersV3)
            .projection(OrdersProjection)
            .build()
            .unwrap();
        let running = Running::start(projector);
        wait_for_status(&running.handle, Duration::from_secs(120), |s| {
            s.iter().all(|p| {
                p.rebuild.is_none() && p.tables_version == p.version && p.position == head.0
            })
        })
        .await;
        running.stop().await.unwrap();
        let all = notes(&db).await.unwrap();
        assert_eq!(all.len(), generator.customers().len());
        assert!(all.iter().all(|n| n == "v3"));

        let before = dump_views(&db).await;
        let projector = Projector::builder(Arc::new(store.clone()), db.clone())
            .options(test_options())
            .projection(CustomersV3)
            .projection(OrdersProjection)
            .build()
            .unwrap();
        tokio::time::timeout(
            Duration::from_secs(120),
            projector.rebuild("customers", |_| {}),
        )
        .await
        .expect("the second rebuild swaps in within 120 s")
        .unwrap();
        assert_eq!(dump_views(&db).await, before);
        assert_eq!(notes(&db).await.unwrap().len(), all.len());
        db.close().await;
    }
}

/// The actual names of the declared indexes on a SQLite table.
async fn indexes_on_named(db: &ViewDb, table: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = $1 AND sql IS NOT NULL",
    )
    .bind(table)
    .fetch_all(db.pool())
    .await
    .unwrap()
}

/// Tables of the view database whose names end with `suffix`.
async fn tables_ending(db: &ViewDb, suffix: &str) -> Vec<String> {
    let sql = match db.dialect() {
        projector::Dialect::Sqlite => "SELECT name FROM sqlite_schema WHERE type = 'table'",
        projector::Dialect::Postgres => {
            "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema()"
        }
    };
    let names: Vec<String> = sqlx::query_scalar(sql).fetch_all(db.pool()).await.unwrap();
    names.into_iter().filter(|n| n.ends_with(suffix)).collect()
}

#[tokio::test]
async fn a_swap_leaves_no_replaced_table_behind_even_after_a_crash() {
    for test_db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path()).await;
        let mut generator = Generator::new(23);
        let head = generate(&store, &mut generator, 3_000).await;
        let db = test_db.open().await;
        project_all(&store, &db).await;
        let before = dump_views(&db).await;

        let projector = reference_projector(&store, &db, test_options());
        let report = projector.rebuild("orders", |_| {}).await.unwrap();
        assert_eq!(report.position, head);
        assert_eq!(dump_views(&db).await, before);
        assert!(tables_ending(&db, "__retired").await.is_empty());

        // A process that stopped between a swap and the drop of the table
        // it replaced (SQLite drops it after the swap's commit) leaves it
        // behind, with index names the next shadows may need. PostgreSQL
        // drops it inside the swap.
        if db.dialect() == projector::Dialect::Sqlite {
            // With the index names the live table does not use, which the
            // next shadows take.
            let live = indexes_on_named(&db, "orders").await;
            sqlx::query("CREATE TABLE orders__retired (id TEXT PRIMARY KEY, customer TEXT)")
                .execute(db.pool())
                .await
                .unwrap();
            for name in live {
                let other = match name.strip_suffix(projector::SHADOW_SUFFIX) {
                    Some(declared) => declared.to_owned(),
                    None => format!("{name}{}", projector::SHADOW_SUFFIX),
                };
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "CREATE INDEX {other} ON orders__retired (customer)"
                )))
                .execute(db.pool())
                .await
                .unwrap();
            }
            // A rebuild drops it before making shadows.
            let report = projector.rebuild("orders", |_| {}).await.unwrap();
            assert_eq!(report.position, head);
            assert_eq!(dump_views(&db).await, before);
            assert!(tables_ending(&db, "__retired").await.is_empty());
            // And a process starting drops one too.
            sqlx::query("CREATE TABLE orders__retired (id TEXT PRIMARY KEY)")
                .execute(db.pool())
                .await
                .unwrap();
            let running = Running::start(reference_projector(&store, &db, test_options()));
            running.wait_for(head).await;
            running.stop().await.unwrap();
            assert!(tables_ending(&db, "__retired").await.is_empty());
        }
        db.close().await;
    }
}
