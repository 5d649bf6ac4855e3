//! The pauses between tries, one shape for every retry in annals: from a
//! minimum, doubling, never exhausted (callers stop on their own deadline
//! or on shutdown).

use std::time::Duration;

use backon::ExponentialBuilder;

/// Pauses from `min`, doubling up to `max`.
pub fn doubling(min: Duration, max: Duration) -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_factor(2.0)
        .without_max_times()
}

/// Pauses from `min`, doubling up to half of `max`, each with a random
/// part of up to as much again: callers that fail together (every saga on
/// one store outage, every subscriber of a restarted store, commands
/// waiting on one batch) do not try again in lockstep, and no pause is
/// longer than `max`.
pub fn jittered(min: Duration, max: Duration) -> ExponentialBuilder {
    doubling(min, max / 2).with_jitter()
}

#[cfg(test)]
mod tests {
    use backon::BackoffBuilder;

    use super::*;

    #[test]
    fn jittered_pauses_grow_from_the_minimum_and_never_pass_the_maximum() {
        let (min, max) = (Duration::from_millis(10), Duration::from_millis(300));
        let pauses: Vec<Duration> = jittered(min, max).build().take(200).collect();
        assert_eq!(pauses.len(), 200, "never exhausted");
        assert!(pauses.iter().all(|p| *p >= min && *p <= max), "{pauses:?}");
        // Past the doubling, pauses sit between half the maximum and it.
        assert!(pauses[10..].iter().all(|p| *p >= max / 2), "{pauses:?}");
        assert!(pauses.iter().any(|p| *p != pauses[199]), "jittered");
    }

    #[test]
    fn doubling_pauses_double_up_to_the_maximum() {
        let pauses: Vec<Duration> = doubling(Duration::from_millis(50), Duration::from_secs(1))
            .build()
            .take(7)
            .collect();
        let millis: Vec<u128> = pauses.iter().map(Duration::as_millis).collect();
        assert_eq!(millis, [50, 100, 200, 400, 800, 1000, 1000]);
    }
}
