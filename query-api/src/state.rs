//! What the handlers share: the view database and the configuration.

use std::sync::Arc;
use std::time::Duration;

use projector::ViewDb;

/// Limits and timings of the query API. Every limit names its unit last.
#[derive(Debug, Clone)]
pub struct QueryConfig {
    /// Items per page when the request gives no `limit`.
    pub page_size_default: usize,
    /// The largest `limit` accepted.
    pub page_size_max: usize,
    /// How long a request with a `min_position` the view has not reached
    /// waits before `503`.
    pub min_position_wait_max: Duration,
    /// First pause between two reads of the checkpoint while waiting; it
    /// doubles, each pause lengthened by a random part of up to as much
    /// again, and none longer than `poll_interval_max`.
    pub poll_interval_min: Duration,
    pub poll_interval_max: Duration,
    /// `Retry-After` of a `503`, in seconds.
    pub retry_after_seconds: u32,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            page_size_default: 20,
            page_size_max: 200,
            min_position_wait_max: Duration::from_secs(5),
            poll_interval_min: Duration::from_millis(2),
            poll_interval_max: Duration::from_millis(50),
            retry_after_seconds: 1,
        }
    }
}

/// What the handlers share: the view database and the configuration.
#[derive(Debug, Clone)]
pub struct QueryState {
    db: ViewDb,
    config: Arc<QueryConfig>,
}

impl QueryState {
    pub fn new(db: ViewDb, config: QueryConfig) -> Self {
        Self {
            db,
            config: Arc::new(config),
        }
    }

    pub fn db(&self) -> &ViewDb {
        &self.db
    }

    pub fn config(&self) -> &QueryConfig {
        &self.config
    }
}
