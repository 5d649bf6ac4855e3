//! Integration tests of the embedded event store against the real filesystem.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

mod basics;
mod callers;
mod common;
mod crash;
mod faults;
mod listing;
mod model;
mod personal;
mod recovery;
mod subscriptions;
