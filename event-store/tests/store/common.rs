//! Helpers shared by the store tests.

use std::path::Path;
use std::time::Duration;

use event_store::{
    EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent, Store, StoreOptions, StreamId,
    Subscription,
};

/// Options with tiny segments so that tests roll over often.
pub fn small_segments() -> StoreOptions {
    StoreOptions {
        segment_bytes_max: 4096,
        ..StoreOptions::default()
    }
}

pub fn sid(s: &str) -> StreamId {
    StreamId::new(s).expect("valid stream id")
}

pub fn event(n: u64) -> NewEvent {
    NewEvent::new(
        "Happened",
        format!(r#"{{"n":{n},"pad":"{}"}}"#, "x".repeat(40)),
    )
}

pub async fn open(dir: &Path, options: StoreOptions) -> Store {
    Store::open(dir, options).await.expect("open store")
}

/// The next item of a subscription; fails the test when nothing arrives
/// within 30 s instead of waiting for ever.
pub async fn next_within(sub: &mut Subscription) -> Option<event_store::Result<RecordedEvent>> {
    tokio::time::timeout(Duration::from_secs(30), sub.next())
        .await
        .expect("an event arrives within 30 s")
}

/// Every event of the log.
pub async fn read_everything(store: &Store) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    let mut next = Position::START;
    loop {
        let page = store.read_all(next, 1000).await.expect("read_all");
        let Some(last) = page.last() else { break };
        next = last.position.next();
        out.extend(page);
    }
    out
}

/// Appends `batches` batches of `size` events to `stream`, one after another.
pub async fn fill(store: &Store, stream: &str, batches: u64, size: u64) {
    let id = sid(stream);
    for b in 0..batches {
        let events = (0..size).map(|i| event(b * size + i)).collect();
        store
            .append(&id, ExpectedVersion::Any, events)
            .await
            .expect("append");
    }
}

/// Copies a data directory (files only, two levels) for destructive tests.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// 64 concurrent writers of `store`, each appending 20 events to a stream
/// of its own with the expected version of each append, except that writer
/// 0 names a wrong one on its last: each append must be committed or
/// refused on its own, whatever the store sends together. Returns when
/// every writer is done; the store then holds 64 × 20 − 1 events.
pub async fn sixty_four_writers<S: EventStore + Clone + 'static>(store: S) {
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..64u64 {
        let store = store.clone();
        tasks.spawn(async move {
            let stream = sid(&format!("w-{w}"));
            for n in 0..20u64 {
                let expected = if w == 0 && n == 19 {
                    ExpectedVersion::Exact(3)
                } else if n == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(n)
                };
                match store.append(&stream, expected, vec![event(n)]).await {
                    Ok(result) => assert_eq!(result.first_version, n + 1),
                    Err(event_store::Error::WrongExpectedVersion { current, .. }) => {
                        assert_eq!((w, n, current), (0, 19, 19));
                    }
                    Err(other) => panic!("writer {w}, append {n}: {other:?}"),
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a writer panicked");
    }
}
