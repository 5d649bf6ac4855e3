//! The annals event store over HTTP: the server router `annals store` runs,
//! the client [`RemoteStore`] that implements [`event_store::EventStore`]
//! against it, and the JSON between them.
//!
//! A crate of its own so that embedding the store pulls in no HTTP stack.

mod batch;
mod client;
mod conn;
mod scope;
pub mod server;
pub mod wire;

pub use client::{RemoteOptions, RemoteStore};
pub use scope::StreamScope;
pub use server::{ServerConfig, read_router, router};
