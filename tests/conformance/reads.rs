//! Reads: a stream forwards and backwards in pages, the log in pages.

use std::sync::Arc;

use event_store::{Direction, EventStore, ExpectedVersion, Position, ReadFrom};

use super::{event, fill, sid, small_segments};

async fn streams_read_forwards_and_backwards_in_pages(store: Arc<dyn EventStore>) {
    for i in 0..60 {
        fill(&*store, "noise", 1, 1).await;
        store
            .append(&sid("target"), ExpectedVersion::Exact(i), vec![event(i)])
            .await
            .unwrap();
    }
    let t = sid("target");

    let all = store
        .read_stream(&t, ReadFrom::Start, Direction::Forward, 100)
        .await
        .unwrap();
    assert_eq!(all.stream_version, 60);
    assert!(all.is_end);
    assert_eq!(
        all.events.iter().map(|e| e.version).collect::<Vec<_>>(),
        (1..=60).collect::<Vec<_>>()
    );
    assert!(all.events.iter().all(|e| e.stream_id == t));

    let page = store
        .read_stream(&t, ReadFrom::Version(10), Direction::Forward, 5)
        .await
        .unwrap();
    assert_eq!(
        page.events.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![10, 11, 12, 13, 14]
    );
    assert!(!page.is_end);

    let back = store
        .read_stream(&t, ReadFrom::End, Direction::Backward, 3)
        .await
        .unwrap();
    assert_eq!(
        back.events.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![60, 59, 58]
    );
    assert!(!back.is_end);
    let back = store
        .read_stream(&t, ReadFrom::Version(2), Direction::Backward, 10)
        .await
        .unwrap();
    assert_eq!(
        back.events.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![2, 1]
    );
    assert!(back.is_end);

    let past_end = store
        .read_stream(&t, ReadFrom::Version(61), Direction::Forward, 10)
        .await
        .unwrap();
    assert!(past_end.events.is_empty() && past_end.is_end);
    let missing = store
        .read_stream(&sid("nobody"), ReadFrom::Start, Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!((missing.events.len(), missing.stream_version), (0, 0));
}

async fn read_all_pages_from_any_position(store: Arc<dyn EventStore>) {
    fill(&*store, "a", 50, 2).await;
    let mut next = Position(37);
    let mut seen = Vec::new();
    loop {
        let page = store.read_all(next, 7).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 7);
        next = page.last().unwrap().position.next();
        seen.extend(page.into_iter().map(|e| e.position.0));
    }
    assert_eq!(seen, (37..=100).collect::<Vec<_>>());
    assert!(store.read_all(Position(101), 10).await.unwrap().is_empty());
    assert_eq!(
        store.read_all(Position::ZERO, 1).await.unwrap()[0].position,
        Position(1)
    );
}

backends! {
    streams_read_forwards_and_backwards_in_pages {
        options: small_segments(),
    },
    read_all_pages_from_any_position {
        options: small_segments(),
    },
}
