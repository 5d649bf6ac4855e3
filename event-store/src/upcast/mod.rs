//! Schema evolution on read: upcasters turn an event stored at an old schema
//! version into the current one, one version step at a time, every time it
//! is read. Stored bytes are never rewritten.
//!
//! [`Upcasting`] wraps any [`EventStore`](crate::EventStore) so that every read path — stream
//! reads, aggregate loads, reads of the whole log and subscriptions — returns
//! current events; appends pass through untouched. An event whose type has a
//! declared current version but no chain of upcasters leading there is an
//! [`Error::Upcast`](crate::Error::Upcast) naming its type and version, never dropped.
//!
//! A step either takes the whole data as a `serde_json::Value`
//! ([`Upcasters::step`]), changes the members of the data object in place
//! ([`Upcasters::step_object`], see [`EventObject`]), which spares decoding
//! and re-encoding what the step leaves alone, or converts one Rust type
//! into another ([`Upcasters::step_typed`]). Events read together share
//! one buffer for their upcast data ([`Upcasters::upcast_all`]).
//!
//! A chain of typed steps also serves readers that decode into Rust types
//! themselves, as the command handler does: [`Upcasters::upcast_typed`]
//! decodes the stored data once, as the first step's input, and hands each
//! step's output to the next, so no JSON is written or parsed in between
//! ([`TypedLoader`] loads a stream for it).

mod cache;
mod layer;
mod object;
mod registry;

pub use layer::{TypedLoader, Upcasting};
pub use object::EventObject;
pub use registry::{UpcastValue, Upcasters};

/// The default bound of [`Upcasting`]'s cache of upcast events: about
/// 70,000 events of 150 bytes, their upcast data and a fixed overhead each
/// counted.
pub const UPCAST_CACHE_BYTES_DEFAULT: usize = 16 << 20;

#[cfg(test)]
mod tests;
