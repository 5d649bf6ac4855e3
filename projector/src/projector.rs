//! The projector: runs every registered projection against the store, and
//! the operations on them (status, rebuild, skip, resume).
//!
//! Each projection has its own subscription and task. A projection that
//! fails, rebuilds or catches up after a long stop therefore never holds up
//! another, and a store subscription is cheap (a task reading the log in
//! pages); the price is that each projection decodes the events it wants
//! itself.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_store::{EventStore, Position, RecordedEvent};
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::checkpoint::{self, Checkpoint, Track, TrackState};
use crate::db::ViewDb;
use crate::error::{Error, Result};
use crate::projection::Projection;
use crate::rate::RateMeter;
use crate::runner::{TrackRunner, wanted_types};
use crate::tables::{self, TableNames};
use crate::time::rfc3339;

/// Tuning of the projector. Every limit names its unit last.
#[derive(Debug, Clone)]
pub struct ProjectorOptions {
    /// Events applied in one transaction at most. Bigger batches amortize
    /// the commit and the reads of the rows they change; smaller ones hold
    /// the write lock for less time. Only catching up fills a batch: a live
    /// projection applies whatever has arrived. 50,000 events of the
    /// reference domain (tens of MB in memory) doubled SQLite catch-up against
    /// 2,000 (README, read-side benchmark).
    pub batch_events_max: usize,
    /// Events a swap may still apply inside its transaction when the live
    /// tables got ahead of the shadows; more, and the rebuild catches up
    /// outside the swap first, so the swap never holds locks for long.
    pub swap_catch_up_events_max: usize,
    /// First wait before retrying after a transient failure; doubles up to
    /// `retry_backoff_max`.
    pub retry_backoff_min: Duration,
    pub retry_backoff_max: Duration,
    /// How often a stopped projection (failed, or waiting for a rebuild)
    /// re-reads its checkpoint, for changes made by another process.
    pub failed_poll_interval: Duration,
    /// Rebuild at start a projection whose tables were built by another
    /// version of its code.
    pub rebuild_on_version_change: bool,
}

impl Default for ProjectorOptions {
    fn default() -> Self {
        Self {
            // Catching up, rows hit by a batch are scattered over the
            // tables, so each commit writes about one page per row changed;
            // the more events per batch, the more of them share a page (in
            // the read-side benchmark, a million reference events went into
            // SQLite 1.5 to 1.8 times as fast as with 2,000).
            batch_events_max: 50_000,
            swap_catch_up_events_max: 20_000,
            retry_backoff_min: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(5),
            failed_poll_interval: Duration::from_secs(2),
            rebuild_on_version_change: true,
        }
    }
}

impl ProjectorOptions {
    /// Largest accepted `batch_events_max`.
    pub const BATCH_EVENTS_MAX: usize = 100_000;

    fn validate(&self) -> Result<()> {
        if self.batch_events_max == 0 || self.batch_events_max > Self::BATCH_EVENTS_MAX {
            return Err(Error::InvalidOptions(format!(
                "batch_events_max must be between 1 and {}",
                Self::BATCH_EVENTS_MAX
            )));
        }
        if self.retry_backoff_min.is_zero() || self.retry_backoff_max < self.retry_backoff_min {
            return Err(Error::InvalidOptions(
                "retry_backoff_min must be positive and at most retry_backoff_max".into(),
            ));
        }
        if self.failed_poll_interval.is_zero() {
            return Err(Error::InvalidOptions(
                "failed_poll_interval must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// What every task of a projector shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub store: Arc<dyn EventStore>,
    pub db: ViewDb,
    pub options: ProjectorOptions,
    pub projections: Vec<Arc<Registered>>,
    /// Set to true to stop every task at its next batch boundary.
    pub stop: watch::Sender<bool>,
    /// Rebuilds started through the handle, awaited at shutdown.
    pub background: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn find(&self, name: &str) -> Result<&Arc<Registered>> {
        self.projections
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| Error::UnknownProjection(name.to_owned()))
    }
}

/// A registered projection and its in-memory state.
#[derive(Debug)]
pub(crate) struct Registered {
    pub projection: Arc<dyn Projection>,
    pub name: &'static str,
    pub version: u32,
    pub wanted: HashSet<&'static str>,
    pub live: TableNames,
    pub shadow: TableNames,
    pub schema: crate::schema::Parsed,
    pub wake_live: Notify,
    pub wake_rebuild: Notify,
    pub rebuild_running: AtomicBool,
    runtime: Mutex<Runtime>,
}

#[derive(Debug, Default)]
struct Runtime {
    live_rate: RateMeter,
    rebuild_rate: RateMeter,
    live_problem: Option<String>,
    /// Since when the live track has been failing without applying
    /// anything: set by the first problem after progress, kept by the
    /// next ones, cleared by progress or by reaching the head.
    live_problem_since: Option<std::time::Instant>,
    rebuild_problem: Option<String>,
    rebuild_progress: Option<RebuildProgress>,
    /// When the rebuild this process runs started (its checkpoint says so
    /// too, once its first transaction committed).
    rebuild_started_at: Option<event_store::Timestamp>,
    last_rebuild: Option<LastRebuild>,
}

impl Registered {
    fn new(projection: Arc<dyn Projection>) -> Result<Self> {
        let name = projection.name();
        let invalid = |reason: String| Error::InvalidProjection {
            name: name.to_owned(),
            reason,
        };
        crate::db::checked_identifier(name).map_err(|e| invalid(e.to_string()))?;
        if projection.tables().is_empty() {
            return Err(invalid("a projection owns at least one table".into()));
        }
        for table in projection.tables() {
            tables::check_table_name(table).map_err(invalid)?;
        }
        let schema = crate::schema::Parsed::new(projection.schema(), projection.tables())
            .map_err(invalid)?;
        Ok(Self {
            schema,
            name,
            version: projection.version(),
            wanted: wanted_types(projection.event_types()),
            live: TableNames::live(projection.tables()),
            shadow: TableNames::shadow(projection.tables()),
            projection,
            wake_live: Notify::new(),
            wake_rebuild: Notify::new(),
            rebuild_running: AtomicBool::new(false),
            runtime: Mutex::new(Runtime::default()),
        })
    }

    pub fn wants(&self, event: &RecordedEvent) -> bool {
        self.wants_type(&event.event_type)
    }

    pub fn wants_type(&self, event_type: &str) -> bool {
        self.wanted.contains(event_type)
    }

    fn runtime(&self) -> std::sync::MutexGuard<'_, Runtime> {
        // A panic while holding this lock leaves only counters behind.
        self.runtime
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn record_progress(&self, track: Track, events: u64) {
        let mut rt = self.runtime();
        match track {
            Track::Live => {
                rt.live_rate.record(events);
                rt.live_problem = None;
                rt.live_problem_since = None;
            }
            Track::Rebuild => {
                rt.rebuild_rate.record(events);
                rt.rebuild_problem = None;
            }
        }
    }

    pub fn note_problem(&self, track: Track, problem: &str) {
        let mut rt = self.runtime();
        match track {
            Track::Live => {
                rt.live_problem = Some(problem.to_owned());
                rt.live_problem_since
                    .get_or_insert_with(std::time::Instant::now);
            }
            Track::Rebuild => rt.rebuild_problem = Some(problem.to_owned()),
        }
    }

    /// Forgets the live track's problem: it follows the log again and has
    /// nothing left to apply, so whatever failed before is over.
    pub fn clear_live_problem(&self) {
        let mut rt = self.runtime();
        rt.live_problem = None;
        rt.live_problem_since = None;
    }

    /// Notes that this process started running a rebuild now.
    pub fn start_rebuild(&self) {
        let mut rt = self.runtime();
        rt.rebuild_started_at = Some(event_store::Timestamp::now());
        rt.rebuild_progress = None;
    }

    pub fn set_rebuild_progress(&self, progress: Option<RebuildProgress>) {
        self.runtime().rebuild_progress = progress;
    }

    pub fn rebuild_rate(&self) -> f64 {
        self.runtime().rebuild_rate.per_second()
    }

    /// Records how a rebuild run by this process ended.
    pub fn finish_rebuild(&self, outcome: &Result<RebuildReport>) {
        let mut rt = self.runtime();
        let number = rt.last_rebuild.as_ref().map_or(1, |l| l.number + 1);
        rt.last_rebuild = Some(LastRebuild {
            number,
            finished_at: rfc3339(event_store::Timestamp::now()),
            position: outcome.as_ref().ok().map(|r| r.position.0),
            error: outcome.as_ref().err().map(ToString::to_string),
        });
    }
}

/// Registers projections and builds a [`Projector`].
#[derive(Debug)]
pub struct ProjectorBuilder {
    store: Arc<dyn EventStore>,
    db: ViewDb,
    options: ProjectorOptions,
    projections: Vec<Arc<dyn Projection>>,
}

impl ProjectorBuilder {
    pub fn options(mut self, options: ProjectorOptions) -> Self {
        self.options = options;
        self
    }

    pub fn projection(mut self, projection: impl Projection) -> Self {
        self.projections.push(Arc::new(projection));
        self
    }

    pub fn projection_arc(mut self, projection: Arc<dyn Projection>) -> Self {
        self.projections.push(projection);
        self
    }

    /// Registers every projection of `projections` (an application's set).
    pub fn projections(
        mut self,
        projections: impl IntoIterator<Item = Arc<dyn Projection>>,
    ) -> Self {
        self.projections.extend(projections);
        self
    }

    pub fn build(self) -> Result<Projector> {
        self.options.validate()?;
        let mut registered: Vec<Arc<Registered>> = Vec::new();
        let mut table_owner: Vec<(&'static str, &'static str)> = Vec::new();
        for projection in self.projections {
            let reg = Registered::new(projection)?;
            if registered.iter().any(|r| r.name == reg.name) {
                return Err(Error::InvalidProjection {
                    name: reg.name.into(),
                    reason: "two projections have this name".into(),
                });
            }
            for (table, _) in reg.live.iter() {
                if let Some((_, owner)) = table_owner.iter().find(|(t, _)| *t == table) {
                    return Err(Error::InvalidProjection {
                        name: reg.name.into(),
                        reason: format!("table {table} already belongs to projection {owner}"),
                    });
                }
                table_owner.push((table, reg.name));
            }
            registered.push(Arc::new(reg));
        }
        let (stop, _) = watch::channel(false);
        Ok(Projector {
            shared: Arc::new(Shared {
                store: self.store,
                db: self.db,
                options: self.options,
                projections: registered,
                stop,
                background: Mutex::new(Vec::new()),
            }),
        })
    }
}

/// Runs projections: see the crate documentation.
#[derive(Debug)]
pub struct Projector {
    shared: Arc<Shared>,
}

impl Projector {
    pub fn builder(store: Arc<dyn EventStore>, db: ViewDb) -> ProjectorBuilder {
        ProjectorBuilder {
            store,
            db,
            options: ProjectorOptions::default(),
            projections: Vec::new(),
        }
    }

    /// A handle for status and operations (what the admin API uses).
    pub fn handle(&self) -> ProjectorHandle {
        ProjectorHandle {
            shared: self.shared.clone(),
        }
    }

    /// Runs every projection until `shutdown` resolves, then lets each
    /// finish the batch it is committing and returns.
    ///
    /// At start, a projection whose tables were built by another version of
    /// its code is rebuilt (the old tables serve queries meanwhile), an
    /// interrupted rebuild is resumed, and a projection left failed is tried
    /// again (its code may have been fixed).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let shared = self.shared.clone();
        let mut tasks: Vec<JoinHandle<()>> = Vec::new();
        let mut shutdown = std::pin::pin!(shutdown);
        let mut stopped_early = false;
        for reg in &shared.projections {
            // A view database that cannot answer at start (lost connection,
            // busy) is waited for, as during a batch; other errors end the run.
            let mut pause = shared.options.retry_backoff_min;
            let rebuild = loop {
                match prepare_start(&shared, reg).await {
                    Ok(rebuild) => break Some(rebuild),
                    Err(e) if e.is_transient() => {
                        tracing::warn!(projection = reg.name, error = %e, "cannot start the projection yet; retrying");
                        tokio::select! {
                            () = &mut shutdown => break None,
                            () = tokio::time::sleep(pause) => {}
                        }
                        pause = (pause * 2).min(shared.options.retry_backoff_max);
                    }
                    Err(e) => return Err(e),
                }
            };
            let Some(rebuild) = rebuild else {
                stopped_early = true;
                break;
            };
            if rebuild {
                spawn_rebuild(&shared, reg.clone());
            }
            let shared = shared.clone();
            let reg = reg.clone();
            tasks.push(tokio::spawn(async move {
                let mut stop = shared.stop.subscribe();
                let runner = TrackRunner {
                    shared: &shared,
                    reg: &reg,
                    track: Track::Live,
                };
                match runner.follow(&mut stop, None, &mut |_| {}).await {
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(projection = reg.name, error = %e, "projection task ended")
                    }
                }
            }));
        }
        if !stopped_early {
            shutdown.await;
        }
        tracing::info!("projector stopping after the batches in progress");
        shared.stop.send_replace(true);
        for task in tasks {
            let _ = task.await;
        }
        let background: Vec<JoinHandle<()>> = std::mem::take(
            &mut *shared
                .background
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for task in background {
            let _ = task.await;
        }
        Ok(())
    }

    /// Creates the tables of every projection that do not exist yet, from
    /// their DDL ([`Projection::schema`]); [`Projector::run`] does it at
    /// start. For tools and tests that read or seed the views without
    /// running the projector.
    pub async fn create_tables(&self) -> Result<()> {
        let mut tx = self.shared.db.begin_write().await?;
        for reg in &self.shared.projections {
            crate::schema::create_missing(tx.conn(), self.shared.db.dialect(), &reg.schema).await?;
        }
        tx.commit().await
    }

    /// Rebuilds one projection from the whole log and swaps the result in,
    /// reporting progress after every batch. Resumes an interrupted rebuild
    /// of the same version.
    ///
    /// Dropping the future is safe: the batch in progress rolls back, and
    /// the next rebuild (or the next [`Projector::run`]) resumes from the
    /// last committed one. The live tables are untouched until the swap.
    pub async fn rebuild(
        &self,
        name: &str,
        mut progress: impl FnMut(&RebuildProgress) + Send,
    ) -> Result<RebuildReport> {
        let reg = self.shared.find(name)?.clone();
        crate::swap::rebuild(&self.shared, &reg, &mut progress).await
    }
}

/// Looks at a projection's checkpoints before it starts; true when it needs
/// a rebuild task.
async fn prepare_start(shared: &Shared, reg: &Registered) -> Result<bool> {
    // Tables a swap replaced, left by a process that stopped before it
    // dropped them: they may hold rows of subjects erased since, and index
    // names the next shadows need.
    shared
        .db
        .drop_retired(&crate::tables::retired(&reg.live))
        .await?;
    let mut tx = shared.db.begin_write().await?;
    crate::schema::create_missing(tx.conn(), shared.db.dialect(), &reg.schema).await?;
    checkpoint::insert_if_missing(
        tx.conn(),
        reg.name,
        Track::Live,
        reg.version,
        TrackState::CatchingUp,
    )
    .await?;
    let live = checkpoint::load(tx.conn(), reg.name, Track::Live)
        .await?
        .ok_or_else(|| Error::Schema(format!("checkpoint of {} vanished", reg.name)))?;
    if live.state == TrackState::Failed {
        tracing::warn!(
            projection = reg.name,
            position = live.error_position.map(|p| p.0),
            "projection was failed; trying the event again"
        );
        checkpoint::resume(tx.conn(), reg.name, Track::Live, TrackState::CatchingUp).await?;
    }
    let mut rebuild = checkpoint::load(tx.conn(), reg.name, Track::Rebuild)
        .await?
        .is_some();
    if live.version != reg.version {
        if live.position == Position::ZERO {
            // Nothing was ever applied: the tables are empty whatever the code.
            sqlx::query(
                "UPDATE projection_checkpoints SET version = $1 WHERE name = $2 AND track = 'live'",
            )
            .bind(i64::from(reg.version))
            .bind(reg.name)
            .execute(tx.conn())
            .await?;
        } else if shared.options.rebuild_on_version_change {
            tracing::info!(
                projection = reg.name,
                from = live.version,
                to = reg.version,
                "projection version changed; rebuilding (the old tables serve queries meanwhile)"
            );
            rebuild = true;
        } else {
            tracing::warn!(
                projection = reg.name,
                tables = live.version,
                code = reg.version,
                "projection version changed and automatic rebuilds are off; it waits for a rebuild"
            );
        }
    }
    tx.commit().await?;
    Ok(rebuild)
}

fn spawn_rebuild(shared: &Arc<Shared>, reg: Arc<Registered>) {
    let task_shared = shared.clone();
    let task = tokio::spawn(async move {
        match crate::swap::rebuild(&task_shared, &reg, &mut |_| {}).await {
            Ok(_) | Err(Error::ShutDown) => {}
            Err(e) => {
                reg.note_problem(Track::Rebuild, &e.to_string());
                tracing::error!(projection = reg.name, error = %e, "rebuild stopped");
            }
        }
    });
    let mut background = shared
        .background
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    background.retain(|t| !t.is_finished());
    background.push(task);
}

/// Operations on a running projector. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ProjectorHandle {
    shared: Arc<Shared>,
}

impl ProjectorHandle {
    /// The names of the registered projections.
    pub fn projection_names(&self) -> Vec<&'static str> {
        self.shared.projections.iter().map(|r| r.name).collect()
    }

    /// The status of every projection.
    pub async fn status(&self) -> Result<Vec<ProjectionStatus>> {
        let checkpoints = {
            let mut conn = self.shared.db.pool().acquire().await?;
            checkpoint::load_all(&mut conn).await?
        };
        let head = self.shared.store.head().await?;
        Ok(self
            .shared
            .projections
            .iter()
            .map(|reg| status_of(reg, &checkpoints, head))
            .collect())
    }

    pub async fn projection_status(&self, name: &str) -> Result<ProjectionStatus> {
        let reg = self.shared.find(name)?;
        let checkpoints = {
            let mut conn = self.shared.db.pool().acquire().await?;
            checkpoint::load_all(&mut conn).await?
        };
        let head = self.shared.store.head().await?;
        Ok(status_of(reg, &checkpoints, head))
    }

    /// Starts a rebuild in the background (or resumes an interrupted one);
    /// its progress shows in the status.
    pub async fn start_rebuild(&self, name: &str) -> Result<ProjectionStatus> {
        let reg = self.shared.find(name)?.clone();
        if reg
            .rebuild_running
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(Error::Conflict {
                projection: name.into(),
                detail: "a rebuild is already running".into(),
            });
        }
        if *self.shared.stop.borrow() {
            return Err(Error::ShutDown);
        }
        spawn_rebuild(&self.shared, reg);
        // Let the task take its guard before reporting.
        tokio::task::yield_now().await;
        self.projection_status(name).await
    }

    /// Skips the event a failed projection stopped on (`expected`, when
    /// given, must be that event's position), records the skip and lets the
    /// projection go on. A failed rebuild is skipped past and restarted.
    pub async fn skip(&self, name: &str, expected: Option<Position>) -> Result<ProjectionStatus> {
        let reg = self.shared.find(name)?.clone();
        let mut tx = self.shared.db.begin_write().await?;
        let failed = failed_track(tx.conn(), &reg).await?;
        let Some(cp) = failed else {
            return Err(Error::Conflict {
                projection: name.into(),
                detail:
                    "it is not failed; only the event a failed projection stopped on can be skipped"
                        .into(),
            });
        };
        if let (Some(expected), Some(actual)) = (expected, cp.error_position)
            && expected != actual
        {
            return Err(Error::Conflict {
                projection: name.into(),
                detail: format!(
                    "it is failed at position {actual}, not {expected}; nothing was skipped"
                ),
            });
        }
        let state = match cp.track {
            Track::Live => TrackState::CatchingUp,
            Track::Rebuild => TrackState::Rebuilding,
        };
        if !checkpoint::skip_failed(tx.conn(), &cp, state).await? {
            return Err(Error::Conflict {
                projection: name.into(),
                detail: "its checkpoint moved meanwhile; nothing was skipped".into(),
            });
        }
        tx.commit().await?;
        tracing::warn!(
            projection = name,
            track = cp.track.as_str(),
            position = cp.error_position.map(|p| p.0),
            "event skipped by an operator"
        );
        self.restart(&reg, cp.track);
        self.projection_status(name).await
    }

    /// Tries the event a failed projection stopped on again (after a fix).
    pub async fn resume(&self, name: &str) -> Result<ProjectionStatus> {
        let reg = self.shared.find(name)?.clone();
        let mut tx = self.shared.db.begin_write().await?;
        let Some(cp) = failed_track(tx.conn(), &reg).await? else {
            return Err(Error::Conflict {
                projection: name.into(),
                detail: "it is not failed".into(),
            });
        };
        let state = match cp.track {
            Track::Live => TrackState::CatchingUp,
            Track::Rebuild => TrackState::Rebuilding,
        };
        checkpoint::resume(tx.conn(), name, cp.track, state).await?;
        tx.commit().await?;
        self.restart(&reg, cp.track);
        self.projection_status(name).await
    }

    fn restart(&self, reg: &Arc<Registered>, track: Track) {
        match track {
            Track::Live => reg.wake_live.notify_one(),
            Track::Rebuild => {
                if !reg
                    .rebuild_running
                    .load(std::sync::atomic::Ordering::SeqCst)
                {
                    spawn_rebuild(&self.shared, reg.clone());
                }
            }
        }
    }
}

async fn failed_track(
    conn: &mut sqlx::AnyConnection,
    reg: &Registered,
) -> Result<Option<Checkpoint>> {
    for track in [Track::Live, Track::Rebuild] {
        if let Some(cp) = checkpoint::load(conn, reg.name, track).await?
            && cp.state == TrackState::Failed
        {
            return Ok(Some(cp));
        }
    }
    Ok(None)
}

fn status_of(reg: &Registered, checkpoints: &[Checkpoint], head: Position) -> ProjectionStatus {
    let find = |track: Track| {
        checkpoints
            .iter()
            .find(|c| c.projection == reg.name && c.track == track)
    };
    let live = find(Track::Live);
    let rebuild = find(Track::Rebuild);
    let rt = reg.runtime();
    let position = live.map_or(Position::ZERO, |c| c.position);
    let lag = head.0.saturating_sub(position.0);
    let stored_version = live.map_or(reg.version, |c| c.version);
    let state = match live.map(|c| c.state) {
        Some(TrackState::Failed) => TrackState::Failed,
        _ if rebuild.is_some() || stored_version != reg.version => TrackState::Rebuilding,
        _ if lag == 0 => TrackState::Live,
        Some(TrackState::Live) => TrackState::Live,
        _ => TrackState::CatchingUp,
    };
    let running_here = reg
        .rebuild_running
        .load(std::sync::atomic::Ordering::SeqCst);
    let rebuild = match rebuild {
        Some(cp) => {
            let rate = rt.rebuild_rate.per_second();
            let remaining = head.0.saturating_sub(cp.position.0);
            Some(RebuildStatus {
                state: cp.state,
                version: cp.version,
                position: cp.position.0,
                lag: remaining,
                events_per_second: round(rate),
                eta_seconds: (rate > 0.0 && cp.state != TrackState::Failed)
                    .then(|| round(remaining as f64 / rate)),
                last_error: cp.last_error.clone().or_else(|| rt.rebuild_problem.clone()),
                error_position: cp.error_position.map(|p| p.0),
                started_at: rfc3339(cp.started_at),
                running_here,
            })
        }
        // Started here and not yet past its first transaction (waiting for
        // the database, say): it runs all the same, and whoever asks for
        // another must learn that.
        None if running_here => Some(RebuildStatus {
            state: TrackState::Rebuilding,
            version: reg.version,
            position: 0,
            lag: head.0,
            events_per_second: 0.0,
            eta_seconds: None,
            last_error: rt.rebuild_problem.clone(),
            error_position: None,
            started_at: rfc3339(
                rt.rebuild_started_at
                    .unwrap_or_else(event_store::Timestamp::now),
            ),
            running_here,
        }),
        None => None,
    };
    ProjectionStatus {
        name: reg.name.to_owned(),
        version: reg.version,
        tables_version: stored_version,
        state,
        position: position.0,
        head: head.0,
        lag,
        events_per_second: round(rt.live_rate.per_second()),
        last_error: live
            .and_then(|c| c.last_error.clone())
            .or_else(|| rt.live_problem.clone()),
        retrying_for_ms: rt
            .live_problem_since
            .map(|since| u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)),
        error_position: live.and_then(|c| c.error_position).map(|p| p.0),
        updated_at: live.map(|c| rfc3339(c.updated_at)),
        rebuild,
        last_rebuild: rt.last_rebuild.clone(),
    }
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// A projection's status, as the admin API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ProjectionStatus {
    /// The projection's name, as used in the admin paths.
    #[schema(example = "customers")]
    pub name: String,
    /// The version of the running code.
    pub version: u32,
    /// The version of the code that built the live tables (differs from
    /// `version` until the rebuild it triggers is swapped in).
    pub tables_version: u32,
    pub state: TrackState,
    /// Checkpoint: the last log position the live tables reflect.
    pub position: u64,
    /// The head of the log.
    pub head: u64,
    /// Events the live tables are behind the head.
    pub lag: u64,
    /// Log positions applied per second over the last seconds, by this
    /// process.
    pub events_per_second: f64,
    /// The error that stopped the projection, or a passing one (store or
    /// database unreachable) until the next batch goes through.
    #[schema(required)]
    pub last_error: Option<String>,
    /// The event the projection stopped on, while failed.
    #[schema(required)]
    pub error_position: Option<u64>,
    /// For how long (milliseconds) the live tables have been retrying a
    /// failure of the event store or the view database (unreachable, disk
    /// full) without applying anything; null while they make progress or
    /// wait at the head of the log. Readiness reports a projection whose
    /// retries last too long as stuck.
    #[schema(required)]
    pub retrying_for_ms: Option<u64>,
    /// When the live checkpoint last changed (RFC 3339); null before the
    /// first batch.
    #[schema(format = DateTime, required)]
    pub updated_at: Option<String>,
    /// The rebuild in progress (or failed), if any; one this process runs
    /// shows from its start, before its first batch.
    #[schema(required)]
    pub rebuild: Option<RebuildStatus>,
    /// How the last rebuild this process ran ended (none since it started:
    /// absent). A client that started a rebuild waits for `number` to change.
    pub last_rebuild: Option<LastRebuild>,
}

/// The end of a rebuild run by this process.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct LastRebuild {
    /// Counts the rebuilds of this projection this process finished, from 1.
    pub number: u64,
    pub finished_at: String,
    /// Where the rebuilt tables were swapped in; absent when it failed.
    pub position: Option<u64>,
    /// Why it stopped without swapping (failed event, shutdown, ...).
    pub error: Option<String>,
}

/// A rebuild in progress (or failed).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct RebuildStatus {
    /// `rebuilding` or `failed`.
    pub state: TrackState,
    /// The version of the code filling the shadow tables.
    pub version: u32,
    /// Last log position applied to the shadow tables.
    pub position: u64,
    /// Events the shadow tables are behind the head.
    pub lag: u64,
    /// Log positions applied to the shadow tables per second, by this
    /// process.
    pub events_per_second: f64,
    /// Estimated seconds until the shadow tables catch up; null while
    /// unknown or failed.
    #[schema(required)]
    pub eta_seconds: Option<f64>,
    /// The error that stopped the rebuild, or a passing one until its next
    /// batch goes through.
    #[schema(required)]
    pub last_error: Option<String>,
    /// The event the rebuild stopped on, while failed.
    #[schema(required)]
    pub error_position: Option<u64>,
    /// When the rebuild started (RFC 3339).
    #[schema(format = DateTime)]
    pub started_at: String,
    /// Whether this process is running it (otherwise it waits to be resumed,
    /// or another process runs it).
    pub running_here: bool,
}

/// Where a rebuild is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RebuildPhase {
    /// Applying the log to the shadow tables.
    Replaying,
    /// Caught up; swapping the shadows in.
    Swapping,
    /// Swapped in: the live tables are the rebuilt ones.
    Done,
}

/// Progress of a rebuild, reported after every batch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RebuildProgress {
    pub projection: String,
    pub phase: RebuildPhase,
    /// Where this run started (0, or the checkpoint of an interrupted one).
    pub resumed_from: Position,
    /// Last position applied to the shadows.
    pub position: Position,
    /// The head of the log as last seen: the target.
    pub head: Position,
    pub events_per_second: f64,
    /// Time left at the current rate, once there is a rate.
    pub eta: Option<Duration>,
    pub elapsed: Duration,
}

/// What a finished rebuild did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildReport {
    pub projection: String,
    pub version: u32,
    pub resumed_from: Position,
    /// The live tables' checkpoint right after the swap.
    pub position: Position,
    /// Log positions replayed by this run.
    pub events: u64,
    pub elapsed: Duration,
}
