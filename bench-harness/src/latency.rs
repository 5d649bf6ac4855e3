//! Latencies: percentiles over a sorted sample, and concurrent clients
//! whose requests are timed.

use std::future::Future;
use std::time::{Duration, Instant};

/// The `p` quantile (0..=1) of `sorted`, the nearest rank rounded; zero for
/// an empty sample.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let last = sorted.len() - 1;
    let i = ((last as f64) * p.clamp(0.0, 1.0)).round() as usize;
    sorted[i.min(last)]
}

/// `d` in milliseconds.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `d` in milliseconds with `decimals` decimals, as tables show it.
pub fn ms(d: Duration, decimals: usize) -> String {
    format!("{:.decimals$}", millis(d))
}

/// A sample of latencies, sorted.
#[derive(Debug, Clone, Default)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
    pub fn new(mut sample: Vec<Duration>) -> Latencies {
        sample.sort_unstable();
        Latencies(sample)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `p` quantile (0..=1); see [`percentile`].
    pub fn percentile(&self, p: f64) -> Duration {
        percentile(&self.0, p)
    }

    /// The longest, zero for an empty sample.
    pub fn max(&self) -> Duration {
        self.0.last().copied().unwrap_or_default()
    }

    /// p50, p99, p99.9 and max in milliseconds with `decimals` decimals:
    /// the latency columns of a table.
    pub fn summary_ms(&self, decimals: usize) -> [String; 4] {
        [
            self.percentile(0.50),
            self.percentile(0.99),
            self.percentile(0.999),
            self.max(),
        ]
        .map(|d| ms(d, decimals))
    }
}

/// What one client measured: the latency of every request it sent, and
/// how many of them failed.
#[derive(Debug, Default)]
pub struct Tally {
    pub latencies: Vec<Duration>,
    pub failures: usize,
}

impl Tally {
    /// A request sent at `sent` that has just been answered (or failed).
    pub fn record(&mut self, sent: Instant, ok: bool) {
        self.latencies.push(sent.elapsed());
        if !ok {
            self.failures += 1;
        }
    }
}

/// What concurrent clients measured together.
#[derive(Debug, Default)]
pub struct Load {
    pub latencies: Latencies,
    pub failures: usize,
    /// From the first client's start to the last one's end.
    pub elapsed: Duration,
}

impl Load {
    /// Requests sent, failed ones included.
    pub fn requests(&self) -> usize {
        self.latencies.len()
    }

    /// Requests per second.
    pub fn rate(&self) -> f64 {
        self.requests() as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `clients` clients concurrently, each the task `client(index)`
/// returns, and merges what they measured. A client that panics panics
/// the caller with its message.
pub async fn run_clients<F, Fut>(clients: usize, mut client: F) -> Load
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Tally> + Send + 'static,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients).map(|c| tokio::spawn(client(c))).collect();
    let mut latencies = Vec::new();
    let mut failures = 0;
    for task in tasks {
        match task.await {
            Ok(tally) => {
                latencies.extend(tally.latencies);
                failures += tally.failures;
            }
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only an aborted task ends cancelled, and nothing aborts these.
            Err(_) => failures += 1,
        }
    }
    Load {
        elapsed: started.elapsed(),
        latencies: Latencies::new(latencies),
        failures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms_sample(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|v| Duration::from_millis(*v)).collect()
    }

    #[test]
    fn percentile_of_an_empty_sample_is_zero() {
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
        assert_eq!(Latencies::default().max(), Duration::ZERO);
    }

    #[test]
    fn percentile_takes_the_nearest_rank() {
        let sorted = ms_sample(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(percentile(&sorted, 0.0), Duration::from_millis(1));
        // (10 - 1) × 0.5 = 4.5, rounded to index 5.
        assert_eq!(percentile(&sorted, 0.5), Duration::from_millis(6));
        assert_eq!(percentile(&sorted, 0.99), Duration::from_millis(10));
        assert_eq!(percentile(&sorted, 1.0), Duration::from_millis(10));
    }

    #[test]
    fn percentile_outside_zero_to_one_is_clamped() {
        let sorted = ms_sample(&[1, 2, 3]);
        assert_eq!(percentile(&sorted, -1.0), Duration::from_millis(1));
        assert_eq!(percentile(&sorted, 2.0), Duration::from_millis(3));
    }

    #[test]
    fn latencies_sort_their_sample() {
        let latencies = Latencies::new(ms_sample(&[30, 10, 20]));
        assert_eq!(latencies.percentile(0.0), Duration::from_millis(10));
        assert_eq!(latencies.percentile(0.5), Duration::from_millis(20));
        assert_eq!(latencies.max(), Duration::from_millis(30));
        assert_eq!(latencies.len(), 3);
    }

    #[test]
    fn summary_shows_milliseconds() {
        let latencies = Latencies::new(vec![Duration::from_micros(1_500); 4]);
        assert_eq!(latencies.summary_ms(2), ["1.50", "1.50", "1.50", "1.50"]);
        assert_eq!(ms(Duration::from_micros(250), 3), "0.250");
    }

    #[test]
    fn tally_counts_failures_and_times_all() {
        let mut tally = Tally::default();
        tally.record(Instant::now(), true);
        tally.record(Instant::now(), false);
        assert_eq!((tally.latencies.len(), tally.failures), (2, 1));
    }

    #[tokio::test]
    async fn run_clients_merges_every_client() {
        let load = run_clients(4, |c| async move {
            let mut tally = Tally::default();
            for _ in 0..c + 1 {
                tally.record(Instant::now(), c != 0);
            }
            tally
        })
        .await;
        assert_eq!(load.requests(), 1 + 2 + 3 + 4);
        assert_eq!(load.failures, 1);
    }
}
