//! Subscriptions: catch-up then live with no gap or duplicate, a start in
//! the future, filters, and slow consumers that hold up nobody.

use std::sync::Arc;
use std::time::Duration;

use event_store::{EventFilter, EventStore, ExpectedVersion, Position, StoreOptions};

use super::{event, fill, joined, next_within, sid, small_segments};

async fn catch_up_then_live_without_gap_or_duplicate(store: Arc<dyn EventStore>) {
    fill(&*store, "a", 30, 2).await;
    let mut sub = store
        .subscribe(Position(11), EventFilter::all())
        .await
        .unwrap();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..40 {
                store
                    .append(&sid("b"), ExpectedVersion::Any, vec![event(i)])
                    .await
                    .unwrap();
            }
        })
    };
    for expected in 11..=100u64 {
        let e = next_within(&mut sub).await.unwrap().unwrap();
        assert_eq!(e.position, Position(expected));
    }
    joined(writer).await;
    // Nothing more is delivered until something is appended.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), sub.next())
            .await
            .is_err()
    );
    store
        .append(&sid("c"), ExpectedVersion::Any, vec![event(0)])
        .await
        .unwrap();
    let e = next_within(&mut sub).await.unwrap().unwrap();
    assert_eq!(e.position, Position(101));
}

async fn a_subscription_from_the_future_waits_for_it(store: Arc<dyn EventStore>) {
    fill(&*store, "a", 3, 1).await;
    let mut sub = store
        .subscribe(Position(6), EventFilter::all())
        .await
        .unwrap();
    fill(&*store, "a", 4, 1).await;
    assert_eq!(
        next_within(&mut sub).await.unwrap().unwrap().position,
        Position(6)
    );
    assert_eq!(
        next_within(&mut sub).await.unwrap().unwrap().position,
        Position(7)
    );
}

async fn filters_select_by_stream_prefix_and_event_type(store: Arc<dyn EventStore>) {
    for i in 0..10 {
        let mut e = event(i);
        e.event_type = if i % 2 == 0 {
            "Placed".into()
        } else {
            "Cancelled".into()
        };
        let stream = if i % 3 == 0 { "order-1" } else { "customer-1" };
        store
            .append(&sid(stream), ExpectedVersion::Any, vec![e])
            .await
            .unwrap();
    }
    let mut orders = store
        .subscribe(Position::START, EventFilter::stream_prefix("order-"))
        .await
        .unwrap();
    for expected in [1u64, 4, 7, 10] {
        assert_eq!(
            next_within(&mut orders).await.unwrap().unwrap().position,
            Position(expected)
        );
    }
    let mut placed = store
        .subscribe(
            Position::START,
            EventFilter {
                stream_prefixes: vec!["customer-".into()],
                event_types: vec!["Placed".into()],
            },
        )
        .await
        .unwrap();
    for expected in [3u64, 5, 9] {
        assert_eq!(
            next_within(&mut placed).await.unwrap().unwrap().position,
            Position(expected)
        );
    }
}

async fn a_slow_subscriber_holds_up_no_append_and_loses_nothing(store: Arc<dyn EventStore>) {
    let mut stalled = store
        .subscribe(Position::START, EventFilter::all())
        .await
        .unwrap();
    // Nobody reads `stalled` while 2,000 events are appended.
    tokio::time::timeout(Duration::from_secs(60), async {
        for i in 0..200 {
            let events = (0..10).map(|n| event(i * 10 + n)).collect();
            store
                .append(&sid("busy"), ExpectedVersion::Any, events)
                .await
                .unwrap();
        }
    })
    .await
    .expect("appends are not held up by a subscriber that does not read");
    for expected in 1..=2000u64 {
        assert_eq!(
            next_within(&mut stalled).await.unwrap().unwrap().position,
            Position(expected)
        );
    }
}

/// A subscriber buffer far smaller than what is appended while nobody
/// reads.
fn tiny_subscription_buffer() -> StoreOptions {
    StoreOptions {
        subscription_buffer: 4,
        ..StoreOptions::default()
    }
}

backends! {
    catch_up_then_live_without_gap_or_duplicate {
        options: small_segments(),
    },
    a_subscription_from_the_future_waits_for_it,
    filters_select_by_stream_prefix_and_event_type,
    a_slow_subscriber_holds_up_no_append_and_loses_nothing {
        options: tiny_subscription_buffer(),
    },
}
