//! Tuning of the projector.

use std::time::Duration;

use crate::error::{Error, Result};

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
    /// `retry_backoff_max`. Each wait is stretched at random by up to as
    /// much again (never past `retry_backoff_max`), so that projections
    /// failing together do not retry in step.
    pub retry_backoff_min: Duration,
    /// The longest wait between retries.
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

    pub(crate) fn validate(&self) -> Result<()> {
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
