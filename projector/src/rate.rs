//! Events per second over a sliding window, for status pages and ETAs.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How far back the rate looks.
const WINDOW: Duration = Duration::from_secs(10);
/// Samples kept at most (one per batch), whatever the batch rate.
const SAMPLES_MAX: usize = 4_096;

#[derive(Debug, Default)]
pub(crate) struct RateMeter {
    samples: VecDeque<(Instant, u64)>,
}

impl RateMeter {
    /// Records that `events` log positions were passed just now.
    pub fn record(&mut self, events: u64) {
        self.record_at(Instant::now(), events);
    }

    fn record_at(&mut self, now: Instant, events: u64) {
        self.samples.push_back((now, events));
        while self.samples.len() > SAMPLES_MAX
            || self
                .samples
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// Events per second over the window, 0 without recent samples.
    pub fn per_second(&self) -> f64 {
        self.per_second_at(Instant::now())
    }

    fn per_second_at(&self, now: Instant) -> f64 {
        let recent: Vec<_> = self
            .samples
            .iter()
            .filter(|(t, _)| now.duration_since(*t) <= WINDOW)
            .collect();
        let (Some(first), Some(_)) = (recent.first(), recent.last()) else {
            return 0.0;
        };
        let events: u64 = recent.iter().map(|(_, n)| n).sum();
        // The span starts at the first sample of the window: a meter that
        // has run for 2 s is not averaged over 10.
        let span = now.duration_since(first.0).max(Duration::from_millis(100));
        events as f64 / span.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_over_the_window_forgets_old_samples() {
        let start = Instant::now();
        let mut meter = RateMeter::default();
        meter.record_at(start, 1_000);
        meter.record_at(start + Duration::from_secs(1), 1_000);
        let rate = meter.per_second_at(start + Duration::from_secs(2));
        assert!((rate - 1_000.0).abs() < 1.0, "{rate}");
        // Long after, nothing recent: 0.
        assert_eq!(meter.per_second_at(start + Duration::from_secs(60)), 0.0);
        meter.record_at(start + Duration::from_secs(60), 500);
        assert_eq!(meter.samples.len(), 1);
    }
}
