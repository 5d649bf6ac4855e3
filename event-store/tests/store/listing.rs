//! Listing streams and categories on a store whose streams span sealed
//! segments and the active one: every page together is the model's set
//! of streams in id order, each once with its version, across reopens.

use std::collections::BTreeMap;

use event_store::{EventStore, ExpectedVersion, StreamListing};
use proptest::prelude::*;

use crate::common::{event, open, sid, small_segments};

/// Every stream starting with `prefix`, page by page of `limit`.
async fn list_all(
    store: &impl EventStore,
    prefix: &str,
    limit: usize,
) -> (Vec<(String, u64)>, u64) {
    let mut out = Vec::new();
    let mut after = None;
    let mut matching = None;
    loop {
        let page = store
            .list_streams(StreamListing {
                prefix: prefix.into(),
                after: after.clone(),
                limit,
            })
            .await
            .unwrap();
        assert!(page.streams.len() <= limit);
        assert_eq!(*matching.get_or_insert(page.matching), page.matching);
        out.extend(
            page.streams
                .iter()
                .map(|s| (s.stream_id.clone(), s.version)),
        );
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    (out, matching.unwrap_or(0))
}

async fn check(appends: Vec<(u8, u8)>, limit: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut model: BTreeMap<String, u64> = BTreeMap::new();
    {
        let store = open(dir.path(), small_segments()).await;
        for (category, n) in &appends {
            let stream = format!("{}-{n}", ["a", "ab", "b"][usize::from(*category % 3)]);
            store
                .append(&sid(&stream), ExpectedVersion::Any, vec![event(1)])
                .await
                .unwrap();
            *model.entry(stream).or_default() += 1;
        }
        // Listed from the live store, then after a reopen (every stream
        // then in sealed indexes or the recovered active segment).
        assert_listing(&store, &model, limit).await;
        store.close().await.unwrap();
    }
    let store = open(dir.path(), small_segments()).await;
    assert_listing(&store, &model, limit).await;
    store.close().await.unwrap();
}

async fn assert_listing(store: &impl EventStore, model: &BTreeMap<String, u64>, limit: usize) {
    for prefix in ["", "a", "ab-", "b-", "c"] {
        let expected: Vec<(String, u64)> = model
            .iter()
            .filter(|(id, _)| id.starts_with(prefix))
            .map(|(id, v)| (id.clone(), *v))
            .collect();
        let (listed, matching) = list_all(store, prefix, limit).await;
        assert_eq!(listed, expected, "prefix {prefix:?}");
        assert_eq!(matching, expected.len() as u64, "prefix {prefix:?}");
    }
    let categories = store.list_categories(10).await.unwrap();
    assert!(!categories.truncated);
    for count in &categories.categories {
        let streams: Vec<_> = model
            .iter()
            .filter(|(id, _)| id.split_once('-').unwrap().0 == count.category)
            .collect();
        assert_eq!(count.streams, streams.len() as u64, "{count:?}");
        assert_eq!(count.events, streams.iter().map(|(_, v)| **v).sum::<u64>());
    }
    let total: u64 = categories.categories.iter().map(|c| c.streams).sum();
    assert_eq!(total, model.len() as u64);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn pages_list_every_stream_once_in_id_order(
        appends in proptest::collection::vec((any::<u8>(), 0u8..40), 1..200),
        limit in 1usize..12,
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(check(appends, limit));
    }
}

#[tokio::test]
async fn a_store_opened_to_read_the_log_only_says_it_cannot_list() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_segments()).await;
    store
        .append(&sid("a-1"), ExpectedVersion::Any, vec![event(1)])
        .await
        .unwrap();
    store.close().await.unwrap();
    let options = event_store::StoreOptions {
        log_only: true,
        ..small_segments()
    };
    let store = open(dir.path(), options).await;
    let err = store
        .list_streams(StreamListing {
            limit: 10,
            ..StreamListing::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, event_store::Error::Unsupported(_)), "{err}");
    store.close().await.unwrap();
}
