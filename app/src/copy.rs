//! `annals copy --from DIR --to postgres://…`: moves the log of a data
//! directory no process has open into PostgreSQL as it was recorded
//! (positions, versions, ids, times, metadata, sealed personal data as
//! sealed), with the snapshots and the subjects' keys and erasures, then
//! reads both sides back and compares them.
//!
//! An interrupted copy is taken up where it stopped: a target holding the
//! source's first events (and nothing else) is continued.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use event_store::{
    EventStore, KeyStore, Position, RecordedEvent, Shredding, Store, StoreOptions, StreamListing,
    SubjectKeys,
};
use pg_store::{PgOptions, PgStore};

use crate::CopyArgs;
use crate::rebuild::Progress;
use crate::setup::{is_postgres, redacted};

/// Events per read and per target transaction.
const PAGE: usize = 2_000;
/// Streams per listing page (snapshots and keys are copied per page).
const STREAMS_PAGE: usize = 1_000;
/// At most this many differences are named.
const NAMED_MAX: usize = 20;

pub async fn copy(args: CopyArgs, app: &crate::App) -> anyhow::Result<ExitCode> {
    if !is_postgres(&args.to) {
        bail!(
            "--to {} is not a PostgreSQL URL (postgres://...)",
            redacted(&args.to)
        );
    }
    let source = Store::open(&args.from, StoreOptions::default())
        .await
        .with_context(|| format!("cannot open the data directory {}", args.from.display()))?;
    let copied = async {
        let keys =
            Arc::new(KeyStore::open(args.from.join("keys")).with_context(|| {
                format!("cannot open the key store of {}", args.from.display())
            })?);
        // Spares a crash left unassigned are found and assigned first, so
        // that every sealed event's key is a subject's key.
        Shredding::new(source.clone(), keys.clone(), app.personal_data.clone())
            .recover()
            .await
            .context("cannot recover the key store")?;
        let target = PgStore::connect(
            &args.to,
            PgOptions {
                schema: args.schema.name.clone(),
                ..PgOptions::default()
            },
        )
        .await
        .with_context(|| format!("cannot use the store at {}", redacted(&args.to)))?;
        let result = run(&source, &keys, &target, app).await;
        target.close().await;
        result
    }
    .await;
    let closed = source.close().await.context("closing the data directory");
    let code = copied?;
    closed?;
    Ok(code)
}

async fn run(
    source: &Store,
    keys: &KeyStore,
    target: &PgStore,
    app: &crate::App,
) -> anyhow::Result<ExitCode> {
    let head = source.head().await?.0;
    let from = resume_at(source, target, head).await?;
    let mut progress = Progress::new();
    if from > 1 {
        progress.say(&format!(
            "the target holds the first {} events already; continuing",
            from - 1
        ));
    }
    let events = copy_events(source, target, from, head, &mut progress).await?;
    let (snapshots, subjects) = copy_streams(source, keys, target, app).await?;
    progress.say(&format!(
        "copied {events} events, {snapshots} snapshots, {subjects} subjects' keys and erasures; verifying"
    ));
    let differences = compare(source, keys, target, app).await?;
    if differences.is_empty() {
        println!("verified: the target holds the same {head} events, snapshots and keys");
        return Ok(ExitCode::SUCCESS);
    }
    for difference in &differences {
        println!("DIFFERENT {difference}");
    }
    println!("the copy does not match its source");
    Ok(ExitCode::from(1))
}

/// Where to continue: after the target's events if they are the source's
/// first ones, else the target must be empty.
async fn resume_at(source: &Store, target: &PgStore, head: u64) -> anyhow::Result<u64> {
    let there = target.head().await?.0;
    if there == 0 {
        return Ok(1);
    }
    if there > head {
        bail!(
            "the target holds {there} events, more than the source's {head}: it holds another log"
        );
    }
    let mine = source.read_all(Position(there), 1).await?;
    let theirs = target.read_all(Position(there), 1).await?;
    if mine.first().map(fingerprint) != theirs.first().map(fingerprint) {
        bail!("the target's event at position {there} is not the source's: it holds another log");
    }
    Ok(there + 1)
}

async fn copy_events(
    source: &Store,
    target: &PgStore,
    from: u64,
    head: u64,
    progress: &mut Progress,
) -> anyhow::Result<u64> {
    let started = Instant::now();
    let mut next = from;
    let mut copied = 0u64;
    while next <= head {
        let events = source.read_all(Position(next), PAGE).await?;
        let events: Vec<RecordedEvent> = events
            .into_iter()
            .filter(|e| e.position.0 <= head)
            .collect();
        let Some(last) = events.last() else {
            break;
        };
        next = last.position.0 + 1;
        target.import(&events).await.with_context(|| {
            format!(
                "cannot write events {} to {} to the target",
                events[0].position.0,
                next - 1
            )
        })?;
        copied += events.len() as u64;
        let per_second = copied as f64 / started.elapsed().as_secs_f64().max(1e-3);
        let left = head.saturating_sub(next - 1) as f64;
        progress.show(next - 1, head, per_second, Some(left / per_second.max(1.0)));
    }
    progress.clear();
    Ok(copied)
}

/// The source's streams, a page at a time.
#[derive(Default)]
struct StreamPages {
    after: Option<String>,
    done: bool,
}

impl StreamPages {
    async fn next(&mut self, source: &Store) -> anyhow::Result<Option<Vec<String>>> {
        if self.done {
            return Ok(None);
        }
        let listed = source
            .list_streams(StreamListing {
                prefix: String::new(),
                after: self.after.take(),
                limit: STREAMS_PAGE,
            })
            .await?;
        self.after = listed.next_after;
        self.done = self.after.is_none();
        Ok(Some(
            listed.streams.into_iter().map(|s| s.stream_id).collect(),
        ))
    }
}

/// Copies every stream's snapshot (sealed as it is) and every data
/// subject's key or erasure. The file key store is indexed by a hash of
/// the subject, so subjects are found through their streams: an erasure
/// of a subject that never had a stream is not carried over.
async fn copy_streams(
    source: &Store,
    keys: &KeyStore,
    target: &PgStore,
    app: &crate::App,
) -> anyhow::Result<(u64, u64)> {
    let (mut snapshots, mut subjects) = (0u64, 0u64);
    let mut pages = StreamPages::default();
    while let Some(streams) = pages.next(source).await? {
        let mut found = Vec::new();
        for stream in &streams {
            let id = event_store::StreamId::new(stream)?;
            if let Some(snapshot) = source.load_snapshot(&id).await? {
                target.import_snapshot(&snapshot).await?;
                snapshots += 1;
            }
            if app.personal_data.is_subject_stream(stream)
                && let Some(key) = keys.lookup(stream)?
            {
                found.push((stream.clone(), key));
            }
        }
        subjects += found.len() as u64;
        target.import_keys(&found).await?;
    }
    Ok((snapshots, subjects))
}

/// Every difference between the source and the target, up to
/// [`NAMED_MAX`]: events field by field, snapshots and keys per stream.
async fn compare(
    source: &Store,
    keys: &KeyStore,
    target: &PgStore,
    app: &crate::App,
) -> anyhow::Result<Vec<String>> {
    let mut differences = Vec::new();
    let (head, there) = (source.head().await?.0, target.head().await?.0);
    if head != there {
        differences.push(format!(
            "head: the source's is {head}, the target's {there}"
        ));
    }
    let mut next = 1;
    while next <= head && differences.len() < NAMED_MAX {
        let mine = source.read_all(Position(next), PAGE).await?;
        let theirs = target.read_all(Position(next), PAGE).await?;
        let Some(last) = mine.last() else {
            break;
        };
        for (i, event) in mine.iter().enumerate() {
            if theirs.get(i).map(fingerprint) != Some(fingerprint(event)) {
                differences.push(format!("event at position {}", event.position.0));
            }
        }
        next = last.position.0 + 1;
    }
    let target_keys = target.keys();
    let mut pages = StreamPages::default();
    while differences.len() < NAMED_MAX
        && let Some(streams) = pages.next(source).await?
    {
        for stream in &streams {
            let id = event_store::StreamId::new(stream)?;
            let (mine, theirs) = (
                source.load_snapshot(&id).await?,
                target.load_snapshot(&id).await?,
            );
            let same = match (&mine, &theirs) {
                (Some(a), Some(b)) => {
                    (a.version, a.schema_version, a.timestamp, &a.state)
                        == (b.version, b.schema_version, b.timestamp, &b.state)
                }
                (None, None) => true,
                _ => false,
            };
            if !same {
                differences.push(format!("snapshot of {stream}"));
            }
            if app.personal_data.is_subject_stream(stream)
                && let Some(key) = keys.lookup(stream)?
            {
                let found = target_keys.keys_of(&[stream.as_str()]).await?;
                if found.first() != Some(&Ok(key)) {
                    differences.push(format!("key of data subject {stream}"));
                }
            }
        }
    }
    differences.truncate(NAMED_MAX);
    Ok(differences)
}

/// Everything an event was recorded with.
fn fingerprint(e: &RecordedEvent) -> impl PartialEq + '_ {
    (
        e.position,
        &e.id,
        &e.stream_id,
        e.version,
        &e.event_type,
        e.schema_version,
        e.timestamp,
        &e.data,
        &e.metadata,
    )
}
