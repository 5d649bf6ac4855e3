//! Cross-crate and end-to-end tests of the `annals` binary and its crates.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

mod auth;
mod backup;
mod cli;
mod conformance;
mod faults;
mod forget;
mod metrics;
mod pg;
mod pg_log;
mod process;
mod projections;
mod saga;
mod security;
mod split;
mod tls;
mod traces;
mod ui;
mod upcast;
mod walkthrough;
