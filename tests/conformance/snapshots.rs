//! Snapshots: the latest one wins, and loading a stream replays only the
//! events after it.

use std::sync::Arc;

use axum::body::Bytes;
use event_store::{Error, EventStore, ExpectedVersion, StoreOptions};

use super::{event, sid, small_segments};

async fn snapshots_load_the_latest_and_the_events_after_it(store: Arc<dyn EventStore>) {
    let s = sid("customer-1");
    for i in 0..10 {
        store
            .append(&s, ExpectedVersion::Exact(i), vec![event(i)])
            .await
            .unwrap();
    }
    assert_eq!(store.load_snapshot(&s).await.unwrap(), None);
    assert!(matches!(
        store
            .save_snapshot(&s, 11, 1, Bytes::from_static(b"future"))
            .await,
        Err(Error::InvalidAppend(_))
    ));
    for v in [3u64, 7, 5] {
        store
            .save_snapshot(&s, v, 2, Bytes::from(format!("state at {v}")))
            .await
            .unwrap();
    }
    for round in 0..40 {
        store
            .save_snapshot(&s, 7, 2, Bytes::from(format!("state at 7 round {round}")))
            .await
            .unwrap();
    }
    let latest = store.load_snapshot(&s).await.unwrap().unwrap();
    assert_eq!((latest.version, latest.schema_version), (7, 2));
    assert_eq!(&latest.state[..], b"state at 7 round 39");

    let loaded = store.load(&s, Some(2)).await.unwrap();
    assert_eq!(loaded.snapshot.as_ref().map(|s| s.version), Some(7));
    assert_eq!(
        loaded.events.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![8, 9, 10]
    );
    assert_eq!(loaded.version, 10);
    // A snapshot of another schema is ignored: everything is replayed.
    let loaded = store.load(&s, Some(3)).await.unwrap();
    assert!(loaded.snapshot.is_none());
    assert_eq!(loaded.events.len(), 10);
    assert_eq!(store.stats().await.unwrap().snapshots, 1);
}

/// Snapshot files roll over often, so that the latest snapshot is found
/// across them.
fn small_snapshot_files() -> StoreOptions {
    StoreOptions {
        snapshot_file_bytes_max: 512,
        ..small_segments()
    }
}

backends! {
    snapshots_load_the_latest_and_the_events_after_it {
        options: small_snapshot_files(),
    },
}
