//! Which thread commits an append: a caller that is alone, on a runtime
//! with other workers, writes and syncs its own append; other callers hand
//! theirs to the writer thread.
//! Either way every append is committed once, in order, with the versions
//! it expected.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use event_store::fs::{Fs, FsFile, RealFs};
use event_store::{EventStore, ExpectedVersion, Store, StoreOptions};
use parking_lot::Mutex;

use crate::common::{event, open, read_everything, sid};

/// The real filesystem, recording the name of every thread that syncs a
/// file while `recording` is on, and panicking in a write while `panic`
/// is (a bug's stand-in: no path of the store panics on purpose).
#[derive(Debug, Clone, Default)]
struct SyncThreads {
    recording: Arc<AtomicBool>,
    names: Arc<Mutex<Vec<String>>>,
    panic: Arc<AtomicBool>,
}

#[derive(Debug)]
struct Recorded {
    file: Arc<dyn FsFile>,
    threads: SyncThreads,
}

impl SyncThreads {
    fn wrap(&self, file: Arc<dyn FsFile>) -> Arc<dyn FsFile> {
        Arc::new(Recorded {
            file,
            threads: self.clone(),
        })
    }

    fn start(&self) {
        self.recording.store(true, Ordering::SeqCst);
    }

    fn names(&self) -> Vec<String> {
        self.names.lock().clone()
    }
}

impl Fs for SyncThreads {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        RealFs.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        RealFs.list(dir)
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        Ok(self.wrap(RealFs.create(path)?))
    }
    fn open(&self, path: &Path, writable: bool) -> io::Result<Arc<dyn FsFile>> {
        Ok(self.wrap(RealFs.open(path, writable)?))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        RealFs.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        RealFs.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        RealFs.sync_dir(dir)
    }
}

impl FsFile for Recorded {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        assert!(
            !self.threads.panic.load(Ordering::SeqCst),
            "the injected panic"
        );
        self.file.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        if self.threads.recording.load(Ordering::SeqCst) {
            let name = std::thread::current()
                .name()
                .unwrap_or("unnamed")
                .to_owned();
            self.threads.names.lock().push(name);
        }
        self.file.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
    fn allocate(&self, len: u64) -> io::Result<()> {
        self.file.allocate(len)
    }
    fn std_file(&self) -> &File {
        self.file.std_file()
    }
}

fn recorded(threads: &SyncThreads, commit_on_caller: bool) -> StoreOptions {
    StoreOptions {
        fs: Arc::new(threads.clone()),
        commit_on_caller,
        ..StoreOptions::default()
    }
}

/// Appends `count` single events to `stream` one after another, from
/// version `from`.
async fn append_in_turn(store: &Store, stream: &str, from: u64, count: u64) {
    let id = sid(stream);
    for v in from..from + count {
        let written = store
            .append(&id, ExpectedVersion::Exact(v), vec![event(v)])
            .await
            .unwrap();
        assert_eq!(written.last_version, v + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_caller_syncs_its_own_appends_on_its_own_thread() {
    let dir = tempfile::tempdir().unwrap();
    let threads = SyncThreads::default();
    let store = open(dir.path(), recorded(&threads, true)).await;
    threads.start();
    append_in_turn(&store, "acct", 0, 20).await;

    let caller = std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .to_owned();
    let names = threads.names();
    assert!(names.len() >= 20, "one sync per append at least: {names:?}");
    assert!(
        names.iter().all(|n| *n == caller),
        "every sync on the caller's thread {caller:?}: {names:?}"
    );
    assert_eq!(read_everything(&store).await.len(), 20);
    store.close().await.unwrap();

    // And nothing of it is lost on reopening.
    let store = open(dir.path(), StoreOptions::default()).await;
    assert_eq!(read_everything(&store).await.len(), 20);
}

/// Twenty appends in turn, on a store with `commit_on_caller`: every
/// sync was on the store's own threads.
async fn synced_by_the_store(commit_on_caller: bool) {
    let dir = tempfile::tempdir().unwrap();
    let threads = SyncThreads::default();
    let store = open(dir.path(), recorded(&threads, commit_on_caller)).await;
    threads.start();
    append_in_turn(&store, "acct", 0, 20).await;

    let names = threads.names();
    assert!(names.len() >= 20, "one sync per append at least: {names:?}");
    assert!(
        names.iter().all(|n| n.starts_with("annals-")),
        "every sync on the store's own threads: {names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_commit_on_caller_off_the_writer_thread_syncs() {
    synced_by_the_store(false).await;
}

/// A current-thread runtime has no other worker to go on while its one
/// thread syncs: there the writer thread syncs, whatever the option.
#[tokio::test(flavor = "current_thread")]
async fn on_a_current_thread_runtime_the_writer_thread_syncs() {
    synced_by_the_store(true).await;
}

#[test]
fn callers_that_take_turns_or_overlap_each_commit_once_in_order() {
    // Two and then eight callers on a runtime of two workers: the lone
    // caller's path and the writer's hand over to each other as callers
    // come and go, and every append lands once with the version it
    // expected.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), StoreOptions::default()).await;
        append_in_turn(&store, "alone", 0, 10).await;
        for (round, callers) in [(0u64, 2usize), (1, 8), (2, 1), (3, 3)] {
            let tasks: Vec<_> = (0..callers)
                .map(|c| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        append_in_turn(&store, &format!("caller-{c}"), round * 25, 25).await;
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
            // Padding the rounds: streams of callers absent from a round
            // catch up so that the next round's expected versions hold.
            for c in callers..8 {
                append_in_turn(&store, &format!("caller-{c}"), round * 25, 25).await;
            }
        }
        let events = read_everything(&store).await;
        assert_eq!(events.len(), 10 + 4 * 8 * 25);
        for (i, e) in events.iter().enumerate() {
            assert_eq!(
                e.position.0,
                i as u64 + 1,
                "positions are dense and ordered"
            );
        }
        store.close().await.unwrap();
        let store = open(dir.path(), StoreOptions::default()).await;
        assert_eq!(read_everything(&store).await.len(), events.len());
    });
}

/// The next append to `acct` (at version 3) is refused: the store is
/// poisoned.
async fn assert_refused_as_poisoned(store: &Store) {
    let refused = store
        .append(&sid("acct"), ExpectedVersion::Exact(3), vec![event(3)])
        .await;
    assert!(
        matches!(refused, Err(event_store::Error::Poisoned(_))),
        "appends are refused after the panic: {refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_callers_commit_stops_appends_until_reopen() {
    // The caller's task dies half-way through a group, as the writer
    // thread would: the store must not go on from a half-updated writer.
    let dir = tempfile::tempdir().unwrap();
    let threads = SyncThreads::default();
    let store = open(dir.path(), recorded(&threads, true)).await;
    append_in_turn(&store, "acct", 0, 3).await;
    threads.panic.store(true, Ordering::SeqCst);
    let doomed = store.clone();
    let died = tokio::spawn(async move { append_in_turn(&doomed, "acct", 3, 1).await }).await;
    assert!(
        died.is_err_and(|e| e.is_panic()),
        "the injected panic ends the task"
    );
    threads.panic.store(false, Ordering::SeqCst);

    assert_refused_as_poisoned(&store).await;
    assert!(store.health().is_err());
    store.close().await.unwrap();

    let store = open(dir.path(), StoreOptions::default()).await;
    assert_eq!(read_everything(&store).await.len(), 3);
    append_in_turn(&store, "acct", 3, 1).await;
}

/// Appends to `stream` from a current-thread runtime of its own, so
/// through the writer thread: what the store answered.
fn append_through_the_writer(
    store: &Store,
    stream: &str,
    version: u64,
) -> event_store::Result<event_store::AppendResult> {
    let store = store.clone();
    let stream = sid(stream);
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(store.append(
            &stream,
            ExpectedVersion::Exact(version),
            vec![event(version)],
        ))
    })
    .join()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_writer_thread_panics_no_caller_commits_alone() {
    let dir = tempfile::tempdir().unwrap();
    let threads = SyncThreads::default();
    let store = open(dir.path(), recorded(&threads, true)).await;
    for v in 0..3 {
        append_through_the_writer(&store, "acct", v).unwrap();
    }
    // The injected panic ends the writer thread half-way through a group.
    threads.panic.store(true, Ordering::SeqCst);
    let lost = append_through_the_writer(&store, "acct", 3);
    assert!(lost.is_err(), "the append the writer died on: {lost:?}");
    threads.panic.store(false, Ordering::SeqCst);
    // The writer thread's unwinding ends after its callers are answered.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while store.health().is_ok() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }

    // A lone caller on this runtime would commit on its own thread: it
    // must not build on what the dead writer left.
    assert_refused_as_poisoned(&store).await;
    assert_eq!(read_everything(&store).await.len(), 3);
}

/// 64 concurrent writers, each append guarded by its expected version:
/// whatever groups the writer makes of them, each is committed or refused
/// on its own (the same check runs against the store over HTTP).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_guarded_appends_succeed_or_fail_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), StoreOptions::default()).await;
    crate::common::sixty_four_writers(store.clone()).await;
    assert_eq!(
        store.head().await.unwrap(),
        event_store::Position(64 * 20 - 1)
    );
}
