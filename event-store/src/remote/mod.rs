//! The store over HTTP: the server router `annals store` runs, the client
//! that implements [`crate::EventStore`] against it, and the JSON between them.

mod client;
mod scope;
pub mod server;
pub mod wire;

pub use client::{RemoteOptions, RemoteStore};
pub use scope::StreamScope;
pub use server::{ServerConfig, router};
