//! What the annals benchmarks share, so that every benchmark measures its
//! baselines, summarises latencies and prints its tables the same way.
//!
//! - [`fsync`]: the disk's raw fdatasync rates, the baselines appends and
//!   commands are compared with (a growing file, and overwrites of a
//!   preallocated one), and [`fsync::settle`] between measurements;
//! - [`latency`]: percentiles over sorted latencies, and concurrent clients
//!   whose requests are timed ([`latency::run_clients`]);
//! - [`payload`]: the 200-byte JSON event the store benchmarks append;
//! - [`table`]: markdown tables with aligned columns;
//! - [`ratio`]: figures as ratios of a baseline measured in the same run,
//!   medians and spreads of per-round ratios;
//! - [`env`](mod@env): the `ANNALS_BENCH_*` settings (quick modes, data directory)
//!   and the runtime every benchmark runs on;
//! - `pg` (feature `postgres`): a PostgreSQL database for one run.

pub mod env;
pub mod fsync;
pub mod latency;
pub mod payload;
#[cfg(feature = "postgres")]
pub mod pg;
pub mod ratio;
pub mod table;

pub use fsync::Baselines;
pub use latency::{Latencies, Load, Tally, run_clients};
pub use table::{Align, Table};
