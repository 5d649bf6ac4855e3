//! The projector: runs every registered projection against the store, and
//! the operations on them (status, rebuild, skip, resume).
//!
//! Each projection has its own subscription and task. A projection that
//! fails, rebuilds or catches up after a long stop therefore never holds up
//! another, and a store subscription is cheap (a task reading the log in
//! pages); the price is that each projection decodes the events it wants
//! itself.

use std::future::Future;
use std::sync::{Arc, Mutex};

use event_store::{EventStore, Position};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::checkpoint::{self, Checkpoint, Track, TrackState};
use crate::db::ViewDb;
use crate::error::{Error, Result};
use crate::options::ProjectorOptions;
use crate::projection::Projection;
use crate::rebuild::{RebuildProgress, RebuildReport};
use crate::registry::{Registered, Shared};
use crate::retry::Retries;
use crate::runner::TrackRunner;
use crate::status::{ProjectionStatus, status_of};

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
            let rebuild = prepare_start_retrying(&shared, reg, &mut shutdown).await?;
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

/// [`prepare_start`], waiting for a view database that cannot answer at
/// start (lost connection, busy) as a batch would; other errors end the
/// run. `None` when `shutdown` came first.
async fn prepare_start_retrying(
    shared: &Shared,
    reg: &Registered,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Result<Option<bool>> {
    let mut retries = Retries::new(&shared.options);
    loop {
        match prepare_start(shared, reg).await {
            Ok(rebuild) => return Ok(Some(rebuild)),
            Err(e) if e.is_transient() => {
                tracing::warn!(projection = reg.name, error = %e, "cannot start the projection yet; retrying");
                tokio::select! {
                    () = &mut *shutdown => return Ok(None),
                    () = tokio::time::sleep(retries.next_delay()) => {}
                }
            }
            Err(e) => return Err(e),
        }
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
