//! The store over HTTP: the server router `annals store` runs, the client
//! that implements [`crate::EventStore`] against it, and the JSON between them.

mod client;
pub mod server;
pub mod wire;

pub use client::{RemoteOptions, RemoteStore};
pub use server::{ServerConfig, router};
