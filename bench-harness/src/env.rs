//! The `ANNALS_BENCH_*` settings every benchmark reads, and the runtime it
//! runs on.
//!
//! CI runs the benchmarks in quick modes through these variables
//! (`ANNALS_BENCH_SECONDS=2`, `ANNALS_BENCH_EVENTS=20000`, ...), so each is
//! read the same way everywhere: a value that does not parse means the
//! default.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Where run directories go unless `ANNALS_BENCH_DIR` says otherwise: the
/// workspace's `target/bench-data`, on the same disk as the build.
const DEFAULT_DATA_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench-data");

/// `value` parsed, or `default` when it is absent or does not parse.
pub fn parse_or<T: FromStr>(value: Option<&str>, default: T) -> T {
    value.and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

/// The value of the environment variable `name`, or `default`.
pub fn env_or<T: FromStr>(name: &str, default: T) -> T {
    parse_or(std::env::var(name).ok().as_deref(), default)
}

/// `ANNALS_BENCH_SECONDS`: the length of each timed workload.
pub fn seconds_or(default: u64) -> Duration {
    Duration::from_secs(env_or("ANNALS_BENCH_SECONDS", default))
}

/// `ANNALS_BENCH_EVENTS`: the size of the log a benchmark builds.
pub fn events_or<T: FromStr>(default: T) -> T {
    env_or("ANNALS_BENCH_EVENTS", default)
}

/// `ANNALS_BENCH_ONLY`: the one part or variant to run, for a profiler
/// (empty: all of them).
pub fn only() -> Option<String> {
    std::env::var("ANNALS_BENCH_ONLY")
        .ok()
        .filter(|v| !v.is_empty())
}

/// Whether `part` runs under `only`: every part runs when `only` is unset.
pub fn runs(only: Option<&str>, part: &str) -> bool {
    only.is_none_or(|only| only == part)
}

/// `ANNALS_BENCH_DATABASE_URL`: the PostgreSQL server benchmarks create
/// their databases on.
pub fn database_url() -> String {
    std::env::var("ANNALS_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Whether the run is CI's, where a skipped part is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A directory for one run's data, removed with the value: under
/// `ANNALS_BENCH_DIR`, or the workspace's `target/bench-data` by default.
pub fn data_root() -> std::io::Result<tempfile::TempDir> {
    let base = std::env::var_os("ANNALS_BENCH_DIR")
        .map_or_else(|| PathBuf::from(DEFAULT_DATA_DIR), PathBuf::from);
    std::fs::create_dir_all(&base)?;
    tempfile::tempdir_in(&base)
}

/// The runtime every benchmark runs on: two workers, as the machine the
/// published figures come from has two cores.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_or_takes_the_value_when_it_parses() {
        assert_eq!(parse_or(Some("2"), 10u64), 2);
        assert_eq!(parse_or(Some(" 20000 "), 1_000_000u64), 20_000);
    }

    #[test]
    fn parse_or_falls_back_to_the_default() {
        assert_eq!(parse_or(None, 10u64), 10);
        assert_eq!(parse_or(Some(""), 10u64), 10);
        assert_eq!(parse_or(Some("ten"), 10u64), 10);
        assert_eq!(parse_or(Some("-1"), 10usize), 10);
    }

    #[test]
    fn every_part_runs_without_only() {
        assert!(runs(None, "http"));
        assert!(runs(Some("http"), "http"));
        assert!(!runs(Some("load"), "http"));
    }
}
