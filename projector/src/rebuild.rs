//! What a rebuild reports: its progress after every batch, and how it ended.

use std::time::Duration;

use event_store::Position;
use serde::Serialize;

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
