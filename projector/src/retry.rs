//! Waiting between retries of a transient failure (the event store or the
//! view database unreachable, a full disk), cut short by the stop signal.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::sync::watch;

use crate::options::ProjectorOptions;

/// Exponential waits from `retry_backoff_min`, doubling. Each wait is
/// stretched at random by up to as much again, so that tracks (and
/// processes) that failed together do not retry in step; the doubling stops
/// at half of `retry_backoff_max`, so waits at the top spread over its
/// upper half and none is longer than it.
#[derive(Debug)]
pub(crate) struct Retries {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
    max: Duration,
}

impl Retries {
    pub fn new(options: &ProjectorOptions) -> Self {
        let builder =
            event_store::pauses::jittered(options.retry_backoff_min, options.retry_backoff_max);
        Self {
            builder,
            delays: builder.build(),
            max: options.retry_backoff_max,
        }
    }

    /// Starts again from the shortest wait (after a success).
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
    }

    /// The next wait.
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().map_or(self.max, |d| d.min(self.max))
    }

    /// Sleeps the next wait; true when the stop signal fired instead.
    pub async fn wait(&mut self, stop: &mut watch::Receiver<bool>) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            _ = stop.wait_for(|s| *s) => true,
            () = tokio::time::sleep(delay) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_from_the_minimum_and_never_pass_the_maximum() {
        let options = ProjectorOptions {
            retry_backoff_min: Duration::from_millis(100),
            retry_backoff_max: Duration::from_millis(1_000),
            ..ProjectorOptions::default()
        };
        let mut retries = Retries::new(&options);
        let first = retries.next_delay();
        assert!(first >= options.retry_backoff_min, "{first:?}");
        assert!(first < 2 * options.retry_backoff_min, "{first:?}");
        for _ in 0..50 {
            assert!(retries.next_delay() <= options.retry_backoff_max);
        }
        retries.reset();
        assert!(retries.next_delay() < 2 * options.retry_backoff_min);
    }
}
