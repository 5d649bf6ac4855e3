//! One command handler per aggregate type, shared by everything in a
//! process that issues commands: the HTTP routes and the sagas.
//!
//! Sharing matters: a handler's per-aggregate locks keep two commands on
//! one aggregate from racing each other's appends, and its cache spares the
//! next command a load. Two handlers of one type would do neither for each
//! other.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use event_store::EventStore;
use parking_lot::Mutex;

use crate::aggregate::Aggregate;
use crate::handler::{CommandHandler, CommandStore, HandlerConfig};

/// The command handlers of an application over one event store. Cheap to
/// clone; clones hand out the same handlers.
///
/// ```
/// # use std::sync::Arc;
/// # use command_api::{Commands, HandlerConfig};
/// # fn demo<A: command_api::Aggregate>(store: Arc<dyn event_store::EventStore>) {
/// let commands = Commands::new(store, HandlerConfig::default());
/// // The first call creates the handler; later calls (from routes, from a
/// // saga) share its locks and cache.
/// let handler = commands.handler::<A>();
/// # let _ = handler;
/// # }
/// ```
#[derive(Clone)]
pub struct Commands {
    store: CommandStore,
    defaults: Arc<HandlerConfig>,
    handlers: Arc<Mutex<HashMap<TypeId, Box<dyn Any + Send + Sync>>>>,
}

impl Commands {
    /// Handlers over `store`, each configured with `defaults` unless
    /// [`Commands::configure`] says otherwise for its aggregate type.
    pub fn new(store: impl Into<CommandStore>, defaults: HandlerConfig) -> Self {
        Self {
            store: store.into(),
            defaults: Arc::new(defaults),
            handlers: Arc::default(),
        }
    }

    /// Configures the handler of aggregate type `A`, replacing the one
    /// made so far (clones of the old one keep working on their own).
    pub fn configure<A: Aggregate>(&self, config: HandlerConfig) -> CommandHandler<A> {
        let handler = CommandHandler::<A>::new(self.store.clone(), config);
        self.handlers
            .lock()
            .insert(TypeId::of::<A>(), Box::new(handler.clone()));
        handler
    }

    /// The handler of aggregate type `A`, created on first use.
    pub fn handler<A: Aggregate>(&self) -> CommandHandler<A> {
        let mut handlers = self.handlers.lock();
        let entry = handlers.entry(TypeId::of::<A>()).or_insert_with(|| {
            Box::new(CommandHandler::<A>::new(
                self.store.clone(),
                (*self.defaults).clone(),
            ))
        });
        match entry.downcast_ref::<CommandHandler<A>>() {
            Some(handler) => handler.clone(),
            // The map is keyed by the type it holds, so this cannot happen;
            // a fresh handler is still a correct answer.
            None => CommandHandler::new(self.store.clone(), (*self.defaults).clone()),
        }
    }

    /// The store the commands run against.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        self.store.events()
    }

    /// The configuration of handlers not configured on their own.
    pub fn defaults(&self) -> &HandlerConfig {
        &self.defaults
    }
}

impl std::fmt::Debug for Commands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commands")
            .field("defaults", &self.defaults)
            .field("handlers", &self.handlers.lock().len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AggregateCommand, DomainError, JsonEvent};
    use serde::{Deserialize, Serialize};
    use uuid::Uuid;

    /// Two aggregate types (`KIND` 0 and 1) that count bumps.
    #[derive(Debug, Default, Serialize, Deserialize)]
    struct Tally<const KIND: u8>;

    #[derive(Debug)]
    struct Bump(Uuid);

    #[derive(Debug, Serialize, Deserialize)]
    enum Bumped {
        Bumped,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("never")]
    struct Never;

    impl<const KIND: u8> Aggregate for Tally<KIND> {
        const TYPE: &'static str = if KIND == 0 { "tally" } else { "other-tally" };
        const SNAPSHOT_SCHEMA: u32 = 1;
        type Command = Bump;
        type Event = Bumped;
        type Error = Never;
        fn handle(&self, _: &Bump) -> Result<Vec<Bumped>, Never> {
            Ok(vec![Bumped::Bumped])
        }
        fn apply(&mut self, _: &Bumped) {}
    }

    impl AggregateCommand for Bump {
        fn aggregate_id(&self) -> Uuid {
            self.0
        }
        fn creates_aggregate(&self) -> bool {
            true
        }
        fn name(&self) -> &'static str {
            "bump"
        }
    }

    impl JsonEvent for Bumped {
        fn event_type(&self) -> &'static str {
            "Bumped"
        }
    }

    impl DomainError for Never {
        fn rule(&self) -> &'static str {
            "never"
        }
    }

    type One = Tally<0>;
    type Other = Tally<1>;

    async fn store() -> (tempfile::TempDir, Arc<dyn EventStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store = event_store::Store::open(dir.path(), Default::default())
            .await
            .unwrap();
        (dir, Arc::new(store))
    }

    #[tokio::test]
    async fn one_handler_per_aggregate_type_shared_by_clones() {
        let (_dir, store) = store().await;
        let commands = Commands::new(store, HandlerConfig::default());
        let a = commands.handler::<One>();
        let b = commands.clone().handler::<One>();
        assert!(a.shares_state_with(&b));
        let other = commands.handler::<Other>();
        assert_eq!(other.config(), &HandlerConfig::default());
    }

    #[tokio::test]
    async fn configure_replaces_the_handler() {
        let (_dir, store) = store().await;
        let commands = Commands::new(store, HandlerConfig::default());
        let before = commands.handler::<One>();
        let config = HandlerConfig {
            conflict_retries_max: 1,
            ..HandlerConfig::default()
        };
        let configured = commands.configure::<One>(config.clone());
        let after = commands.handler::<One>();
        assert!(after.shares_state_with(&configured));
        assert!(!after.shares_state_with(&before));
        assert_eq!(after.config(), &config);
    }
}
