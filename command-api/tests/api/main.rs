//! The command API end to end: the real router over a real event store in a
//! temporary data directory, in-process (`oneshot`) for the many error cases
//! and over real HTTP on loopback for the flows, restarts and races.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

mod concurrency;
mod errors;
mod flows;
mod handler;
mod harness;
mod idempotency;
mod meddling;
mod personal;
mod saga;
mod shutdown;
mod slow;
mod upcast;
