//! Injected I/O failures: a failed write or fsync stops the writer for good
//! (it is never retried as if the data were safe), nothing unacknowledged is
//! reported as written, and reopening recovers every acknowledged event.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use event_store::fs::FaultyFs;
use event_store::{
    Error, EventStore, ExpectedVersion, Position, RecordedEvent, Store, StoreOptions, StreamId,
};
use uuid::Uuid;

use crate::common::{event, open, read_everything, sid};

fn faulty(fs: &FaultyFs) -> StoreOptions {
    StoreOptions {
        segment_bytes_max: 4096,
        fs: Arc::new(fs.clone()),
        ..StoreOptions::default()
    }
}

#[tokio::test]
async fn a_failed_fsync_poisons_the_writer_until_reopen() {
    // What the failing append was told, for each point of failure: a
    // failed write leaves nothing committed ("poisoned"), a failed sync
    // leaves the outcome to the next open ("indeterminate").
    let mut answers = Vec::new();
    for ops_before_failure in 0..6 {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultyFs::new();
        let store = open(dir.path(), faulty(&fs)).await;
        let s = sid("acct");
        for i in 0..20 {
            store
                .append(&s, ExpectedVersion::Exact(i), vec![event(i)])
                .await
                .unwrap();
        }
        let acked = read_everything(&store).await;

        fs.fail_after(ops_before_failure);
        let mut failed = 0;
        for i in 20..40 {
            match store.append(&s, ExpectedVersion::Any, vec![event(i)]).await {
                Ok(_) => {}
                Err(Error::Poisoned(reason)) => {
                    assert!(reason.contains("injected I/O failure"), "{reason}");
                    answers.push("poisoned");
                    failed += 1;
                    break;
                }
                Err(Error::Indeterminate(reason)) => {
                    assert!(reason.contains("syncing"), "{reason}");
                    assert!(reason.contains("injected I/O failure"), "{reason}");
                    answers.push("indeterminate");
                    failed += 1;
                    break;
                }
                Err(other) => panic!("unexpected error: {other}"),
            }
        }
        assert_eq!(failed, 1, "the injected failure must surface");
        // Healing the disk does not make the writer trust it again.
        fs.heal();
        assert!(matches!(
            store
                .append(&s, ExpectedVersion::Any, vec![event(99)])
                .await,
            Err(Error::Poisoned(_))
        ));
        assert!(store.health().is_err());
        assert!(store.stats().await.unwrap().read_only_reason.is_some());
        // What was acknowledged is still readable.
        let now = read_everything(&store).await;
        assert_eq!(now[..acked.len()], acked[..]);
        let acked_now = now;
        store.close().await.unwrap();
        drop(store);

        // Power cut: unsynced bytes vanish (half of them survive, torn).
        fs.crash(|_, unsynced| unsynced / 2).unwrap();
        let store = open(dir.path(), faulty(&fs)).await;
        let recovered = read_everything(&store).await;
        assert_eq!(
            recovered, acked_now,
            "ops before failure: {ops_before_failure}"
        );
        let r = store
            .append(&s, ExpectedVersion::Any, vec![event(100)])
            .await
            .unwrap();
        assert_eq!(r.first_position, Position(recovered.len() as u64 + 1));
        store.close().await.unwrap();
    }
    assert!(answers.contains(&"poisoned"), "{answers:?}");
    assert!(answers.contains(&"indeterminate"), "{answers:?}");
}

/// In a segment that grows with its appends, a crash cuts the unsynced
/// bytes off; in one with space reserved ahead, they read as zeros again.
#[tokio::test]
async fn an_unacknowledged_batch_is_all_there_or_not_at_all_after_a_crash() {
    for (keep, reserved) in [0u64, 1, 13, 200, u64::MAX]
        .into_iter()
        .flat_map(|k| [(k, false), (k, true)])
    {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultyFs::new();
        let options = StoreOptions {
            preallocate_bytes: if reserved { 2048 } else { 0 },
            ..faulty(&fs)
        };
        let store = open(dir.path(), options.clone()).await;
        let s = sid("batchy");
        store
            .append(&s, ExpectedVersion::NoStream, vec![event(0)])
            .await
            .unwrap();
        let segment = dir.path().join("events").join("0000000001.seg");
        let written = store.stats().await.unwrap().bytes;
        assert_eq!(
            std::fs::metadata(&segment).unwrap().len() > written,
            reserved,
            "keep {keep}"
        );
        // The write succeeds, the fsync fails: the batch is not acknowledged.
        fs.fail_after(1);
        let batch: Vec<_> = (1..=5).map(event).collect();
        let ids: Vec<_> = batch.iter().map(|e| e.id).collect();
        // It may still be recovered whole (below), so the caller must not
        // be told it was not written.
        let answer = store.append(&s, ExpectedVersion::Exact(1), batch).await;
        assert!(matches!(answer, Err(Error::Indeterminate(_))), "{answer:?}");
        store.close().await.unwrap();
        drop(store);
        fs.crash(|_, unsynced| keep.min(unsynced)).unwrap();

        let store = open(dir.path(), options).await;
        let report = store.recovery_report().clone();
        assert_eq!(report.read_only_reason, None, "keep {keep}");
        let log = read_everything(&store).await;
        match log.len() {
            1 => {}
            6 => assert_eq!(log[1..].iter().map(|e| e.id).collect::<Vec<_>>(), ids),
            n => panic!("keep {keep}: {n} events: a batch was partly recovered"),
        }
        // Appends go on after what was recovered.
        let r = store
            .append(&s, ExpectedVersion::Any, vec![event(9)])
            .await
            .unwrap();
        assert_eq!(r.first_position, Position(log.len() as u64 + 1));
        store.close().await.unwrap();
    }
}

/// Many callers at once: the writer writes the next groups while the
/// syncer syncs earlier ones, and rolls segments between them. Wherever a
/// failure falls, a caller is told "indeterminate" (its group was written,
/// a sync failed) or "poisoned", never that an append it lost succeeded:
/// after a crash every acknowledged event is there, each stream holds a
/// prefix of what its caller sent, and nothing else is in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_across_a_failure_lose_nothing_acknowledged() {
    // Segments of a few groups each, reserved in steps of a few: most
    // operations are the groups' writes and syncs, some seal or reserve.
    let options = |fs: &FaultyFs| StoreOptions {
        segment_bytes_max: 64 * 1024,
        preallocate_bytes: 16 * 1024,
        ..faulty(fs)
    };
    for (ops_before_failure, keep_third) in [0u64, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144]
        .into_iter()
        .flat_map(|ops| [(ops, false), (ops, true)])
    {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultyFs::new();
        let store = Arc::new(open(dir.path(), options(&fs)).await);
        fs.fail_after(ops_before_failure);
        let outcomes = append_until_refused(&store, || {}).await;
        Arc::into_inner(store).unwrap().close().await.unwrap();
        fs.crash(|_, unsynced| if keep_third { unsynced / 3 } else { 0 })
            .unwrap();

        let store = open(dir.path(), options(&fs)).await;
        let log = read_everything(&store).await;
        assert_recovered(&log, &outcomes, &format!("ops {ops_before_failure}"));
        store.close().await.unwrap();
    }
}

/// A sync that fails loses what it was to make durable while the next one
/// succeeds, as Linux does after a failed writeback. Whichever thread's
/// sync it is (a group's, or one reserving space), nothing acknowledged
/// is lost, and groups written after the lost bytes do not reach the disk
/// behind a hole of them, even when the kernel writes back everything
/// else (the crash keeps every unsynced byte).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sync_that_fails_once_loses_nothing_acknowledged_and_leaves_no_hole() {
    let options = |fs: &FaultyFs| StoreOptions {
        segment_bytes_max: 1 << 20,
        preallocate_bytes: 16 * 1024,
        ..faulty(fs)
    };
    for acks_before_failure in [0usize, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144] {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultyFs::new();
        let store = Arc::new(open(dir.path(), options(&fs)).await);
        let acks = Arc::new(AtomicUsize::new(0));
        if acks_before_failure == 0 {
            fs.fail_next_sync();
        }
        let failing = fs.clone();
        let outcomes = append_until_refused(&store, move || {
            if acks.fetch_add(1, Ordering::SeqCst) + 1 == acks_before_failure {
                failing.fail_next_sync();
            }
        })
        .await;
        Arc::into_inner(store).unwrap().close().await.unwrap();
        fs.crash(|_, unsynced| unsynced).unwrap();

        let report = event_store::verify(dir.path()).unwrap();
        assert!(
            report.is_ok(),
            "{acks_before_failure} acks before the failure: {:?}",
            report.problems
        );
        let store = open(dir.path(), options(&fs)).await;
        let log = read_everything(&store).await;
        let context = format!("{acks_before_failure} acks before the failure");
        assert_recovered(&log, &outcomes, &context);
        store.close().await.unwrap();
    }
}

/// What one caller sent, in order, and how many of those events were
/// acknowledged.
struct Outcome {
    stream: StreamId,
    sent: Vec<Uuid>,
    acked: usize,
}

/// 16 callers, each appending batches of two events to a stream of its own
/// until the store refuses (40 at most), calling `after_ack` after each
/// acknowledged append.
async fn append_until_refused(
    store: &Arc<Store>,
    after_ack: impl Fn() + Clone + Send + 'static,
) -> Vec<Outcome> {
    let mut callers = Vec::new();
    for c in 0..16 {
        let (store, after_ack) = (store.clone(), after_ack.clone());
        callers.push(tokio::spawn(async move {
            let stream = sid(&format!("caller-{c}"));
            let mut sent = Vec::new();
            let mut acked = 0;
            for i in 0..40u64 {
                let batch = vec![event(i), event(i + 1000)];
                sent.extend(batch.iter().map(|e| e.id));
                match store
                    .append(&stream, ExpectedVersion::Exact(i * 2), batch)
                    .await
                {
                    Ok(_) => acked = sent.len(),
                    Err(Error::Poisoned(_) | Error::Indeterminate(_)) => break,
                    Err(other) => panic!("unexpected error: {other}"),
                }
                after_ack();
            }
            Outcome {
                stream,
                sent,
                acked,
            }
        }));
    }
    let mut outcomes = Vec::new();
    for caller in callers {
        outcomes.push(caller.await.unwrap());
    }
    outcomes
}

/// Every acknowledged event is in `log`, each stream holds a prefix of
/// what its caller sent, nothing else is there, and some caller was
/// refused (the injected failure surfaced).
fn assert_recovered(log: &[RecordedEvent], outcomes: &[Outcome], context: &str) {
    let mut found = 0;
    for Outcome {
        stream,
        sent,
        acked,
    } in outcomes
    {
        let ids: Vec<_> = log
            .iter()
            .filter(|e| e.stream_id == *stream)
            .map(|e| e.id)
            .collect();
        assert!(
            ids.len() >= *acked && sent.starts_with(&ids),
            "{context}, {stream}: {} recovered of {} sent, {acked} acknowledged",
            ids.len(),
            sent.len()
        );
        found += ids.len();
    }
    assert_eq!(found, log.len(), "{context}: events nobody sent");
    assert!(
        outcomes.iter().any(|o| o.acked < o.sent.len()),
        "{context}: the injected failure must surface"
    );
}
