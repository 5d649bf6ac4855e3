//! The store a handler runs against, as the handler needs to see it.

use std::sync::Arc;

use event_store::{EventStore, LoadedStream, StreamId, TypedLoader, Upcasters, Upcasting};

/// The event store command handlers run against and, when it is an
/// upcasting layer ([`Upcasting`]), the same layer as a [`TypedLoader`]:
/// loads then leave the events that typed steps alone bring up to date to
/// the handler, which decodes them without JSON being written in between.
///
/// Built from any `Arc<dyn EventStore>` (plain loads) or from an
/// `Upcasting` layer (typed loads), so handlers and [`crate::Commands`]
/// accept either.
#[derive(Clone)]
pub struct CommandStore {
    events: Arc<dyn EventStore>,
    typed: Option<Arc<dyn TypedLoader>>,
}

impl CommandStore {
    /// Loads through `events` as they are.
    pub fn new(events: Arc<dyn EventStore>) -> Self {
        Self {
            events,
            typed: None,
        }
    }

    /// Loads through `layer`, leaving typed steps to the handler.
    pub fn upcasting<S: EventStore>(layer: Arc<Upcasting<S>>) -> Self {
        Self {
            typed: Some(layer.clone()),
            events: layer,
        }
    }

    /// The store, for everything but loads.
    pub fn events(&self) -> &Arc<dyn EventStore> {
        &self.events
    }

    /// The stream as an aggregate loads it, and the upcasters to run on the
    /// events left for typed steps, if any were.
    pub async fn load(
        &self,
        stream: &StreamId,
        snapshot_schema: Option<u32>,
    ) -> event_store::Result<(LoadedStream, Option<Arc<Upcasters>>)> {
        match &self.typed {
            Some(typed) => typed.load_leaving_typed(stream, snapshot_schema).await,
            None => Ok((self.events.load(stream, snapshot_schema).await?, None)),
        }
    }
}

impl std::fmt::Debug for CommandStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandStore")
            .field("events", &self.events)
            .field("typed_loads", &self.typed.is_some())
            .finish()
    }
}

impl From<Arc<dyn EventStore>> for CommandStore {
    fn from(events: Arc<dyn EventStore>) -> Self {
        Self::new(events)
    }
}

impl<S: EventStore> From<Arc<Upcasting<S>>> for CommandStore {
    fn from(layer: Arc<Upcasting<S>>) -> Self {
        Self::upcasting(layer)
    }
}

impl<S: EventStore> From<Upcasting<S>> for CommandStore {
    fn from(layer: Upcasting<S>) -> Self {
        Self::upcasting(Arc::new(layer))
    }
}

impl From<Arc<event_store::Store>> for CommandStore {
    fn from(store: Arc<event_store::Store>) -> Self {
        Self::new(store)
    }
}

impl From<event_store::Store> for CommandStore {
    fn from(store: event_store::Store) -> Self {
        Self::new(Arc::new(store))
    }
}
