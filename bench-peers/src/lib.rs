//! Benchmarks of annals's embedded event store beside other embedded event
//! logs: the same workloads, on the same disk, in the same run, printed as
//! ratios.
//!
//! The crate holds no code; its benchmarks are in `benches/`:
//!
//! - `tephra`: the store beside [tephra](https://crates.io/crates/tephra)
//!   0.4.1, a segmented event log with a single write coordinator and group
//!   commit (`cargo bench -p bench-peers --bench tephra`).
