//! Subscriptions of the segment store when it closes. What every backend
//! of `EventStore` shares (catch-up then live, filters, slow consumers) is
//! tested once for all of them in the workspace's `tests/conformance`.

use std::time::Duration;

use event_store::{Error, EventFilter, EventStore, Position, StoreOptions};

use crate::common::{fill, next_within, open};

#[tokio::test]
async fn closing_the_store_ends_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), StoreOptions::default()).await;
    fill(&store, "a", 1, 1).await;
    let mut sub = store
        .subscribe(Position::START, EventFilter::all())
        .await
        .unwrap();
    assert_eq!(
        next_within(&mut sub).await.unwrap().unwrap().position,
        Position(1)
    );
    store.close().await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(30), sub.next())
        .await
        .expect("the subscription ends within 30 s");
    assert!(matches!(end, Some(Err(Error::Closed))), "{end:?}");
    assert!(matches!(
        store.subscribe(Position::START, EventFilter::all()).await,
        Err(Error::Closed)
    ));
}
