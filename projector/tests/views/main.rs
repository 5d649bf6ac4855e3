//! Integration tests of the projector against a real event store in a
//! temporary directory and real view databases: SQLite files, and schemas on
//! the PostgreSQL server (skipped with a notice when it is unreachable,
//! failing with `CI=true`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

mod admin;
mod common;
mod crash;
mod poison;
mod rebuild;
mod schema;
mod views;
