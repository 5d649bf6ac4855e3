//! Poison events stop their projection only, with the position and error in
//! its status, until resumed after a fix or skipped; skips are remembered by
//! rebuilds of the same version. A hole in the positions the store delivers
//! is an error, never skipped over.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use annals_credit::generator::Generator;
use async_trait::async_trait;
use bytes::Bytes;
use event_store::{
    AppendResult, Direction, EventFilter, EventStore, Position, ReadFrom, RecordedEvent, Snapshot,
    Stats, Store, StreamAppend, StreamId, StreamSlice, Subscription,
};
use futures_util::StreamExt;
use projector::{ApplyError, Projection, Projector, TrackState, ViewTx};

use crate::common::{
    Running, TestDb, append_raw, dump_views, generate, open_store, project_all,
    reference_projector, test_options, wait_for_status,
};

fn state_of(status: &[projector::ProjectionStatus], name: &str) -> projector::ProjectionStatus {
    status.iter().find(|s| s.name == name).unwrap().clone()
}

#[tokio::test]
async fn a_poison_event_stops_its_projection_only_until_skipped() {
    for test_db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path()).await;
        let mut generator = Generator::new(9);
        generate(&store, &mut generator, 400).await;
        let poison = append_raw(
            &store,
            "customer-nobody",
            "CreditReserved",
            r#"{"customer_id":"nobody","order_id":"x","amount":{"amount":5,"currency":"EUR"}}"#,
        )
        .await;
        let head = generate(&store, &mut generator, 400).await;

        let db = test_db.open().await;
        let running = Running::start(reference_projector(&store, &db, test_options()));
        let status = wait_for_status(&running.handle, Duration::from_secs(60), |s| {
            state_of(s, "customers").state == TrackState::Failed
                && state_of(s, "orders").position == head.0
        })
        .await;
        let customers = state_of(&status, "customers");
        assert_eq!(customers.position, poison.0 - 1, "{:?}", test_db.backend);
        assert_eq!(customers.error_position, Some(poison.0));
        assert!(
            customers
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("nobody") && e.contains("not registered")),
            "{customers:?}"
        );
        assert_eq!(customers.lag, head.0 - poison.0 + 1);
        // The other projection went on to the head, untouched.
        let orders = state_of(&status, "orders");
        assert_eq!(orders.state, TrackState::Live);
        assert!(orders.last_error.is_none());

        // Skipping needs a failed projection and, when given, its position.
        assert!(matches!(
            running.handle.skip("orders", None).await,
            Err(projector::Error::Conflict { .. })
        ));
        assert!(matches!(
            running
                .handle
                .skip("customers", Some(Position(poison.0 + 1)))
                .await,
            Err(projector::Error::Conflict { .. })
        ));
        assert!(matches!(
            running.handle.skip("nope", None).await,
            Err(projector::Error::UnknownProjection(_))
        ));

        // Resuming tries the event again: it is still poison.
        running.handle.resume("customers").await.unwrap();
        wait_for_status(&running.handle, Duration::from_secs(30), |s| {
            let c = state_of(s, "customers");
            c.state == TrackState::Failed && c.error_position == Some(poison.0)
        })
        .await;

        running
            .handle
            .skip("customers", Some(poison))
            .await
            .unwrap();
        running.wait_for(head).await;
        let status = running.handle.status().await.unwrap();
        assert!(
            status
                .iter()
                .all(|s| s.state == TrackState::Live && s.last_error.is_none())
        );
        running.stop().await.unwrap();

        let skipped: Vec<i64> = sqlx::query_scalar(
            "SELECT position FROM projection_skipped_events WHERE name = 'customers' AND version = 1",
        )
        .fetch_all(db.pool())
        .await
        .unwrap();
        assert_eq!(skipped, vec![poison.0 as i64]);
        assert_eq!(
            crate::common::dump(&db, "customers", &["id"]).await.len(),
            generator.customers().len()
        );

        // A rebuild of the same version skips the event too, and so
        // reproduces the live view.
        let before = dump_views(&db).await;
        let projector = reference_projector(&store, &db, test_options());
        tokio::time::timeout(
            Duration::from_secs(120),
            projector.rebuild("customers", |_| {}),
        )
        .await
        .expect("the rebuild swaps in within 120 s")
        .unwrap();
        assert_eq!(dump_views(&db).await, before);
        db.close().await;
    }
}

/// Counts `Tick` events into its own table; fails on ticks marked poison
/// until fixed, and panics on ticks marked panic.
#[derive(Debug)]
struct Ticks {
    fixed: Arc<AtomicBool>,
}

#[async_trait]
impl Projection for Ticks {
    fn name(&self) -> &'static str {
        "ticks"
    }
    fn version(&self) -> u32 {
        1
    }
    fn tables(&self) -> &'static [&'static str] {
        &["ticks"]
    }

    fn schema(&self) -> projector::Schema {
        projector::Schema::new(
            "CREATE TABLE ticks (position BIGINT PRIMARY KEY)",
            "CREATE TABLE ticks (position BIGINT PRIMARY KEY)",
        )
    }
    fn event_types(&self) -> &'static [&'static str] {
        &["Tick"]
    }
    async fn apply(&self, tx: &mut ViewTx<'_>, events: &[RecordedEvent]) -> Result<(), ApplyError> {
        let table = tx.table("ticks")?;
        for event in events {
            let data: serde_json::Value = serde_json::from_slice(&event.data)
                .map_err(|e| ApplyError::event(event, e.to_string()))?;
            if !self.fixed.load(Ordering::SeqCst) {
                if data["poison"] == true {
                    // Not attributed: the projector must find the event itself.
                    return Err(ApplyError::Handler("cannot handle this tick".into()));
                }
                if data["panic"] == true {
                    panic!("tick handler bug");
                }
            }
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {table} (position) VALUES ($1)"
            )))
            .bind(event.position.0 as i64)
            .execute(tx.conn())
            .await?;
        }
        Ok(())
    }
}

async fn create_ticks_table(db: &projector::ViewDb) {
    sqlx::query("CREATE TABLE ticks (position BIGINT PRIMARY KEY)")
        .execute(db.pool())
        .await
        .unwrap();
}

async fn ticks(db: &projector::ViewDb) -> Vec<i64> {
    sqlx::query_scalar("SELECT position FROM ticks ORDER BY position")
        .fetch_all(db.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_failed_projection_resumes_after_a_fix_and_a_panic_is_contained() {
    for test_db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path()).await;
        let mut expected = Vec::new();
        for i in 0..30 {
            let data = match i {
                12 => r#"{"poison":true}"#,
                20 => r#"{"panic":true}"#,
                _ => "{}",
            };
            let p = append_raw(&store, "ticker", "Tick", data).await;
            expected.push(p.0 as i64);
            append_raw(&store, "other", "Tock", "{}").await;
        }
        let head = store.head().await.unwrap();
        let db = test_db.open().await;
        create_ticks_table(&db).await;
        let fixed = Arc::new(AtomicBool::new(false));
        let projector = Projector::builder(Arc::new(store.clone()), db.clone())
            .options(test_options())
            .projection(Ticks {
                fixed: fixed.clone(),
            })
            .build()
            .unwrap();
        let running = Running::start(projector);
        let status = wait_for_status(&running.handle, Duration::from_secs(30), |s| {
            s[0].state == TrackState::Failed
        })
        .await;
        // The batch held many ticks; the failing one was found one at a
        // time and everything before it committed.
        let poison = expected[12];
        assert_eq!(status[0].error_position, Some(poison as u64));
        assert_eq!(status[0].position, poison as u64 - 1);
        assert_eq!(ticks(&db).await, expected[..12].to_vec());

        // After the fix, resuming retries the event and goes on to the head.
        fixed.store(true, Ordering::SeqCst);
        running.handle.resume("ticks").await.unwrap();
        running.wait_for(head).await;
        assert_eq!(ticks(&db).await, expected);
        running.stop().await.unwrap();

        // A handler that panics is contained: a failure with its message.
        fixed.store(false, Ordering::SeqCst);
        sqlx::query("DELETE FROM ticks")
            .execute(db.pool())
            .await
            .unwrap();
        // Rewound by hand: the event the checkpoint stood on is forgotten
        // too, or the projector would take the rewind for a log that
        // diverged from its tables.
        sqlx::query(
            "UPDATE projection_checkpoints SET position = $1, event_id = NULL WHERE name = 'ticks'",
        )
        .bind(expected[19])
        .execute(db.pool())
        .await
        .unwrap();
        let projector = Projector::builder(Arc::new(store.clone()), db.clone())
            .options(test_options())
            .projection(Ticks {
                fixed: fixed.clone(),
            })
            .build()
            .unwrap();
        let running = Running::start(projector);
        let status = wait_for_status(&running.handle, Duration::from_secs(30), |s| {
            s[0].state == TrackState::Failed
        })
        .await;
        assert_eq!(status[0].error_position, Some(expected[20] as u64));
        assert!(
            status[0]
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("panicked") && e.contains("tick handler bug")),
            "{status:?}"
        );
        running.stop().await.unwrap();
        db.close().await;
    }
}

/// A store that loses one position from its subscriptions while `lossy`,
/// and counts the subscriptions asked of it.
#[derive(Debug)]
struct LossyStore {
    inner: Store,
    lost: u64,
    lossy: Arc<AtomicBool>,
    subscriptions: Arc<AtomicU64>,
}

#[async_trait]
impl EventStore for LossyStore {
    async fn append_many(
        &self,
        appends: Vec<StreamAppend>,
    ) -> event_store::Result<Vec<AppendResult>> {
        self.inner.append_many(appends).await
    }
    async fn read_stream(
        &self,
        stream_id: &StreamId,
        from: ReadFrom,
        direction: Direction,
        max_count: usize,
    ) -> event_store::Result<StreamSlice> {
        self.inner
            .read_stream(stream_id, from, direction, max_count)
            .await
    }
    async fn read_all(
        &self,
        from: Position,
        max_count: usize,
    ) -> event_store::Result<Vec<RecordedEvent>> {
        self.inner.read_all(from, max_count).await
    }
    async fn subscribe(
        &self,
        from: Position,
        filter: EventFilter,
    ) -> event_store::Result<Subscription> {
        self.subscriptions.fetch_add(1, Ordering::SeqCst);
        let inner = self.inner.subscribe(from, filter).await?;
        let lost = self.lost;
        let lossy = self.lossy.clone();
        Ok(Subscription::from_stream(inner.filter(move |e| {
            let keep =
                !(lossy.load(Ordering::SeqCst) && e.as_ref().is_ok_and(|e| e.position.0 == lost));
            async move { keep }
        })))
    }
    async fn save_snapshot(
        &self,
        stream_id: &StreamId,
        version: u64,
        schema_version: u32,
        state: Bytes,
    ) -> event_store::Result<()> {
        self.inner
            .save_snapshot(stream_id, version, schema_version, state)
            .await
    }
    async fn load_snapshot(&self, stream_id: &StreamId) -> event_store::Result<Option<Snapshot>> {
        self.inner.load_snapshot(stream_id).await
    }
    async fn stats(&self) -> event_store::Result<Stats> {
        self.inner.stats().await
    }
    async fn head(&self) -> event_store::Result<Position> {
        self.inner.head().await
    }
    fn read_page_max(&self) -> usize {
        self.inner.read_page_max()
    }
}

#[tokio::test]
async fn a_gap_in_delivered_positions_is_reported_and_never_skipped() {
    let test_db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    let mut generator = Generator::new(3);
    let head = generate(&store, &mut generator, 1_000).await;
    let lossy = Arc::new(AtomicBool::new(true));
    let subscriptions = Arc::new(AtomicU64::new(0));
    let lost = 500;
    let db = test_db.open().await;
    let projector = Projector::builder(
        Arc::new(LossyStore {
            inner: store.clone(),
            lost,
            lossy: lossy.clone(),
            subscriptions: subscriptions.clone(),
        }),
        db.clone(),
    )
    .options(test_options())
    .projections(annals_credit::views::projections())
    .build()
    .unwrap();
    let running = Running::start(projector);
    let status = wait_for_status(&running.handle, Duration::from_secs(30), |s| {
        s.iter().all(|p| {
            p.position == lost - 1
                && p.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("position 501 where 500 was due"))
        })
    })
    .await;
    // It keeps resubscribing from the checkpoint, meets the hole each time
    // and stays put: twenty subscriptions later (both projections retry),
    // it is still where it stopped.
    let seen = subscriptions.load(Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let again = running.handle.status().await.unwrap();
        assert!(
            again.iter().all(|p| p.position == lost - 1
                && p.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("position 501 where 500 was due"))),
            "{again:?}"
        );
        let subscribed = subscriptions.load(Ordering::SeqCst);
        if subscribed >= seen + 20 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} resubscriptions within 30 s",
            subscribed - seen
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_ne!(status[0].state, TrackState::Live);

    // Once the store delivers the event, the projections go on.
    lossy.store(false, Ordering::SeqCst);
    running.wait_for(head).await;
    running.stop().await.unwrap();
    let fresh = TestDb::sqlite();
    let fresh_db = fresh.open().await;
    project_all(&store, &fresh_db).await;
    assert_eq!(dump_views(&db).await, dump_views(&fresh_db).await);
}
