//! What the tasks of a projector share: the registered projections, each
//! with its tables and in-memory state (rates, passing problems, the
//! progress of a rebuild run here), and the store, database and options
//! around them.

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use event_store::{EventStore, RecordedEvent};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::checkpoint::Track;
use crate::db::ViewDb;
use crate::error::{Error, Result};
use crate::options::ProjectorOptions;
use crate::projection::Projection;
use crate::rate::RateMeter;
use crate::rebuild::{LastRebuild, RebuildProgress, RebuildReport};
use crate::tables::{self, TableNames};
use crate::time::rfc3339;

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
    pub fn find(&self, name: &str) -> Result<&Arc<Registered>> {
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
pub(crate) struct Runtime {
    pub live_rate: RateMeter,
    pub rebuild_rate: RateMeter,
    pub live_problem: Option<String>,
    /// Since when the live track has been failing without applying
    /// anything: set by the first problem after progress, kept by the
    /// next ones, cleared by progress or by reaching the head.
    pub live_problem_since: Option<std::time::Instant>,
    pub rebuild_problem: Option<String>,
    pub rebuild_progress: Option<RebuildProgress>,
    /// When the rebuild this process runs started (its checkpoint says so
    /// too, once its first transaction committed).
    pub rebuild_started_at: Option<event_store::Timestamp>,
    pub last_rebuild: Option<LastRebuild>,
}

impl Registered {
    pub fn new(projection: Arc<dyn Projection>) -> Result<Self> {
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

    pub fn runtime(&self) -> std::sync::MutexGuard<'_, Runtime> {
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

/// The set of event types a projection wants.
fn wanted_types(types: &[&'static str]) -> HashSet<&'static str> {
    types.iter().copied().collect()
}
