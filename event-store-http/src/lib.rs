//! The annals event store over HTTP: the server router `annals store` runs,
//! the client [`RemoteStore`] that implements [`event_store::EventStore`]
//! against it, and the JSON between them.
//!
//! A crate of its own so that embedding the store pulls in no HTTP stack.

mod batch;
mod channel;
mod client;
mod conn;
mod scope;
pub mod server;
pub mod wire;

pub use client::{RemoteOptions, RemoteStore};
pub use scope::{RequestRate, StreamScope};
pub use server::{ServerConfig, read_router, router};

/// The media type of an append channel's lines, both ways.
pub(crate) const NDJSON: &str = "application/x-ndjson";
