//! The annals event store on PostgreSQL: [`PgStore`] implements
//! [`event_store::EventStore`] over tables in a schema of its own, with
//! the segment store's semantics (the same [`event_store::rules`] decide
//! every append), for several processes appending to one database at
//! once.
//!
//! **Positions are gap-free and readers see them in commit order.** Every
//! appending transaction first locks the one row of `head` (`SELECT ...
//! FOR UPDATE`), takes the positions after it, and advances it as it
//! commits. The lock serialises appends across every process and pool:
//! a transaction that takes position `n + 1` cannot start before the one
//! that took `n` has committed (PostgreSQL makes a commit visible before
//! it releases the transaction's locks), so no reader can ever see `n + 1`
//! without `n`, and a rolled-back or killed transaction leaves no hole
//! (its positions are taken again by the next). A subscriber that has read
//! up to `n` thus never passes an event that commits later with a smaller
//! position. To keep the lock from costing one commit per append, each
//! process gathers the appends waiting for it into one transaction (group
//! commit, `batch.rs`).
//!
//! **A stream loads from a few rows.** Each full hundred of a stream's
//! events is also packed into one row of `chunks` by the transaction that
//! completes it (`chunks.rs`), so loading a 1,000-event stream reads ten
//! compressed rows and the events after the last, not a thousand tuples
//! scattered over the heap. `events` stays the record every other read
//! uses, and `annals verify` checks each chunk against it.
//!
//! Subscriptions read by position and wait at the head for a
//! `LISTEN`/`NOTIFY` wake-up (with a poll as a fallback), so they see
//! appends of every process.
//!
//! The personal-data keys of [`event_store::Shredding`] live in the same
//! schema ([`PgKeys`], from [`PgStore::keys`]); [`PgStore::import`] and
//! its siblings write a log recorded elsewhere as it was recorded (for
//! `annals copy`), and [`PgStore::check`] finds what breaks the log's
//! rules (for `annals verify`).

mod batch;
mod check;
mod chunks;
mod import;
mod keys;
mod rows;
mod schema;
mod shared;
mod store;
mod subscribe;

pub use check::PgCheck;
pub use keys::PgKeys;
pub use store::{PgOptions, PgStore};
