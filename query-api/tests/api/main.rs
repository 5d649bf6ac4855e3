//! Tests of the query API: the router driven without a socket
//! (`tower::ServiceExt::oneshot`) on SQLite and PostgreSQL, and end-to-end
//! over loopback HTTP with a real client. Events are appended to a real
//! event store and projected by the real projector.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

mod books;
mod common;
mod consistency;
mod e2e;
mod queries;
