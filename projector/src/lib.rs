//! The read side of annals: projections fold the event log into SQL view
//! tables, SQLite (embedded default) or PostgreSQL.
//!
//! - A [`Projection`] names the event types it wants and applies batches of
//!   them to its tables inside a transaction it is given ([`ViewTx`]). Adding
//!   one means implementing the trait and registering it with the
//!   [`ProjectorBuilder`]; the projector itself does not change.
//! - The [`Projector`] follows the store ([`event_store::EventStore`], local
//!   or remote) from each projection's [`Checkpoint`] and writes the
//!   checkpoint in the same transaction as the view rows of every batch:
//!   delivery is at least once, the effect exactly once. Positions must be
//!   contiguous; a gap is an error, never skipped over.
//! - A handler that fails on an event (a poison event) stops its projection
//!   only, with the position and error in its status, until an operator
//!   resumes it or skips the event.
//! - A rebuild replays the whole log into shadow tables while the live ones
//!   keep serving, then swaps them in within one transaction. A projection
//!   whose version changed is rebuilt at start.
//! - A projection declares its tables' DDL for SQLite and PostgreSQL
//!   ([`Schema`]); the projector creates missing tables at start, and a
//!   rebuild creates its shadow tables from the same DDL, so a new version
//!   may bring a new shape.
//! - [`ViewDb`] opens the view database and applies annals' own tables
//!   (checkpoints) from `migrations/<backend>/` idempotently.
//!
//! The query API reads the tables; it never reads the event store.

mod admin;
mod checkpoint;
mod db;
mod error;
pub mod http;
mod options;
pub mod personal;
mod projection;
mod projector;
mod rate;
mod read_ahead;
mod rebuild;
mod registry;
mod retry;
mod runner;
mod schema;
mod status;
mod swap;
mod tables;
pub mod telemetry;
pub mod time;

pub use admin::{openapi as admin_openapi, router as admin_router, routes as admin_routes};
pub use checkpoint::{Checkpoint, Track, TrackState};
pub use db::{Dialect, ViewDb, ViewDbOptions, WriteTx};
pub use error::{Error, Result, is_disk_full, is_transient_sql, sql_message};
pub use options::ProjectorOptions;
pub use projection::{ApplyError, Projection, ViewTx};
pub use projector::{Projector, ProjectorBuilder, ProjectorHandle};
pub use rebuild::{LastRebuild, RebuildPhase, RebuildProgress, RebuildReport};
pub use schema::Schema;
pub use status::{ProjectionStatus, RebuildStatus};
pub use tables::SHADOW_SUFFIX;

/// The sqlx this crate is built with: a projection writes its rows with
/// it ([`ViewTx::conn`]) and a query row reads with it, so an application
/// uses this one rather than a version of its own.
pub use sqlx;
