//! The bank domain's tests, as a user of annals writes them: the
//! aggregates' rules with the testkit, the upcaster and the personal-data
//! policy on a real data directory, and the transfer saga run by the real
//! saga runner over a real store, through crashes and random histories;
//! the views from events into SQLite and PostgreSQL.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

mod accounts;
mod conservation;
mod gate;
mod saga;
mod stored;
mod transfers;
mod views;
mod world;
