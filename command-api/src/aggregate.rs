//! The contract between the command handler and a domain: what an aggregate,
//! its commands, events and errors must provide. A domain implements these
//! traits in its own crate (see `examples/todo/src/task.rs` for a small one,
//! `examples/credit` for the reference domain) and never touches the handler.
//!
//! Business rules live in [`Aggregate::handle`], which only decides; state
//! changes live in [`Aggregate::apply`], which never refuses an event: an
//! event is a fact that was already accepted, possibly by older code.

use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// A consistency boundary: the state rebuilt from one stream's events, and
/// the rules every command on it must pass.
///
/// The state must be serializable: the handler keeps snapshots of it (as
/// JSON) so that loading stays flat as streams grow.
///
/// A task that is added once and completed once, tested the way an
/// application tests its aggregates ([`crate::testkit`]):
///
/// ```
/// use command_api::testkit::given;
/// use command_api::{Aggregate, AggregateCommand, DomainError, JsonEvent};
/// use serde::{Deserialize, Serialize};
/// use uuid::Uuid;
///
/// #[derive(Debug, Default, Serialize, Deserialize)]
/// struct Task {
///     added: bool,
///     done: bool,
/// }
///
/// #[derive(Debug)]
/// enum TaskCommand {
///     Add { id: Uuid, title: String },
///     Complete { id: Uuid },
/// }
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// enum TaskEvent {
///     TaskAdded { title: String },
///     TaskCompleted,
/// }
///
/// #[derive(Debug, PartialEq, thiserror::Error)]
/// enum TaskError {
///     #[error("the task is done already")]
///     Done,
/// }
///
/// impl Aggregate for Task {
///     const TYPE: &'static str = "task";
///     const SNAPSHOT_SCHEMA: u32 = 1;
///     type Command = TaskCommand;
///     type Event = TaskEvent;
///     type Error = TaskError;
///
///     fn handle(&self, command: &TaskCommand) -> Result<Vec<TaskEvent>, TaskError> {
///         match command {
///             // Adding an added task again changes nothing.
///             TaskCommand::Add { .. } if self.added => Ok(vec![]),
///             TaskCommand::Add { title, .. } => Ok(vec![TaskEvent::TaskAdded { title: title.clone() }]),
///             TaskCommand::Complete { .. } if self.done => Err(TaskError::Done),
///             TaskCommand::Complete { .. } => Ok(vec![TaskEvent::TaskCompleted]),
///         }
///     }
///
///     fn apply(&mut self, event: &TaskEvent) {
///         match event {
///             TaskEvent::TaskAdded { .. } => self.added = true,
///             TaskEvent::TaskCompleted => self.done = true,
///         }
///     }
/// }
/// # impl AggregateCommand for TaskCommand {
/// #     fn aggregate_id(&self) -> Uuid {
/// #         match self { Self::Add { id, .. } | Self::Complete { id } => *id }
/// #     }
/// #     fn creates_aggregate(&self) -> bool { matches!(self, Self::Add { .. }) }
/// #     fn name(&self) -> &'static str {
/// #         match self { Self::Add { .. } => "add", Self::Complete { .. } => "complete" }
/// #     }
/// # }
/// # impl JsonEvent for TaskEvent {
/// #     fn event_type(&self) -> &'static str {
/// #         match self { Self::TaskAdded { .. } => "TaskAdded", Self::TaskCompleted => "TaskCompleted" }
/// #     }
/// # }
/// # impl DomainError for TaskError {
/// #     fn rule(&self) -> &'static str { "task-done" }
/// # }
///
/// let id = Uuid::now_v7();
/// let added = || TaskEvent::TaskAdded { title: "milk".into() };
/// given::<Task>([])
///     .when(TaskCommand::Add { id, title: "milk".into() })
///     .then_events([added()]);
/// given::<Task>([added()])
///     .when(TaskCommand::Add { id, title: "milk".into() })
///     .then_nothing();
/// given::<Task>([added()])
///     .when(TaskCommand::Complete { id })
///     .then_events([TaskEvent::TaskCompleted]);
/// given::<Task>([added(), TaskEvent::TaskCompleted])
///     .when(TaskCommand::Complete { id })
///     .then_error(TaskError::Done);
/// ```
pub trait Aggregate:
    Default + Serialize + DeserializeOwned + Send + Sync + std::fmt::Debug + 'static
{
    /// Prefix of this aggregate's streams: instance `id` lives in the stream
    /// `<TYPE>-<id>` (e.g. `customer-7c9e…`). Letters, digits and `-` only.
    const TYPE: &'static str;

    /// Version of the serialized state. Bump it whenever the state's shape
    /// changes: snapshots written under another version are then ignored
    /// and the state is rebuilt from the events.
    const SNAPSHOT_SCHEMA: u32;

    type Command: AggregateCommand;
    type Event: DomainEvent;
    type Error: DomainError;

    /// Decides what happens: the events that record the command's effect
    /// (possibly none, when the command changes nothing), or the rule it
    /// breaks. Pure: no I/O, no clock, no randomness.
    fn handle(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Folds one event into the state. Pure and infallible.
    fn apply(&mut self, event: &Self::Event);
}

/// What the handler needs to know about a command before running it.
pub trait AggregateCommand: Send + Sync + std::fmt::Debug + 'static {
    /// The aggregate instance the command is addressed to.
    fn aggregate_id(&self) -> Uuid;

    /// True for commands that bring a new instance into existence. Any other
    /// command sent to an instance without events is answered "not found"
    /// without running [`Aggregate::handle`].
    fn creates_aggregate(&self) -> bool;

    /// A short name for logs (e.g. `ReserveCredit`).
    fn name(&self) -> &'static str;
}

/// A domain event: a type name and a JSON body, as stored in the event store.
pub trait DomainEvent: Send + Sync + std::fmt::Debug + Sized + 'static {
    /// The stored event type (e.g. `CreditReserved`).
    fn event_type(&self) -> &'static str;

    /// Version of the data's shape, stored with the event so that later code
    /// can upcast old versions when reading.
    fn schema_version(&self) -> u32 {
        1
    }

    /// The event's data as JSON.
    fn encode(&self) -> serde_json::Result<Vec<u8>>;

    /// Rebuilds an event from what the store holds.
    fn decode(event_type: &str, schema_version: u32, data: &[u8]) -> Result<Self, DecodeError>;

    /// Builds an event from the value that the last typed upcaster of its
    /// type returned (`event_store::Upcasters::step_typed`), which
    /// [`upcast_value`] downcasts. The handler loads old events this way
    /// when typed steps alone lead from their version to the current one,
    /// so that they cost no JSON writing and parsing. A value this returns
    /// [`DecodeError::UpcastType`] for (as the default does for all) is
    /// decoded from the JSON the chain writes instead, as on every other
    /// read path: the same event, at the JSON path's cost.
    fn from_upcast(
        event_type: &str,
        _value: event_store::UpcastValue,
    ) -> Result<Self, DecodeError> {
        Err(DecodeError::UpcastType {
            event_type: event_type.to_owned(),
            expected: "nothing (this domain event does not implement `from_upcast`)",
        })
    }
}

/// The value a typed upcaster of `event_type` returned, as the type the
/// domain decodes it at; a helper for [`DomainEvent::from_upcast`].
pub fn upcast_value<T: 'static>(
    event_type: &str,
    value: event_store::UpcastValue,
) -> Result<T, DecodeError> {
    value
        .downcast::<T>()
        .map(|value| *value)
        .map_err(|_| DecodeError::UpcastType {
            event_type: event_type.to_owned(),
            expected: std::any::type_name::<T>(),
        })
}

/// Decodes a stored event as the handler does: through `upcasters`' typed
/// steps where they alone bring it to its current version (see
/// `event_store::TypedLoader`), otherwise from its data.
pub(crate) fn decode_recorded<E: DomainEvent>(
    recorded: &event_store::RecordedEvent,
    upcasters: Option<&event_store::Upcasters>,
) -> Result<E, DecodeError> {
    let Some((upcasters, value)) =
        upcasters.and_then(|upcasters| Some((upcasters, upcasters.upcast_typed(recorded)?)))
    else {
        return E::decode(
            &recorded.event_type,
            recorded.schema_version,
            &recorded.data,
        );
    };
    let value = value.map_err(DecodeError::Upcast)?;
    match E::from_upcast(&recorded.event_type, value) {
        Err(DecodeError::UpcastType { .. }) => {
            let current = upcasters
                .upcast(recorded.clone())
                .map_err(DecodeError::Upcast)?;
            E::decode(&current.event_type, current.schema_version, &current.data)
        }
        decoded => decoded,
    }
}

/// A stored event this code cannot read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error(
        "{event_type} has schema version {found}; this build decodes version {supported} \
         (older versions are upcast by the store layer before decoding)"
    )]
    UnsupportedSchema {
        event_type: String,
        found: u32,
        supported: u32,
    },
    #[error("{event_type} data does not decode: {source}")]
    Data {
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
    /// An upcaster's step failed (the error names the type and the
    /// version).
    #[error(transparent)]
    Upcast(event_store::Error),
    /// The last typed upcaster of `event_type` returned another type than
    /// the domain takes it from ([`DomainEvent::from_upcast`]); the
    /// handler then decodes the event from the JSON the chain writes.
    #[error(
        "the typed upcasters of {event_type} end in a type the domain does not decode it from \
         (it takes {expected})"
    )]
    UpcastType {
        event_type: String,
        expected: &'static str,
    },
}

/// Decodes the JSON data of a schema-1 event; a helper for [`DomainEvent::decode`].
pub fn decode_data<T: DeserializeOwned>(
    event_type: &str,
    schema_version: u32,
    data: &[u8],
) -> Result<T, DecodeError> {
    decode_data_at(1, event_type, schema_version, data)
}

/// Decodes the JSON data of an event whose type is at schema version
/// `current`. Only that version decodes: older ones are brought to it by the
/// domain's upcasters (`event_store::Upcasting`) before they get here, so an
/// older version at this point means a store was read without them, which
/// must fail loudly rather than be guessed at.
pub fn decode_data_at<T: DeserializeOwned>(
    current: u32,
    event_type: &str,
    schema_version: u32,
    data: &[u8],
) -> Result<T, DecodeError> {
    if schema_version != current {
        return Err(DecodeError::UnsupportedSchema {
            event_type: event_type.to_owned(),
            found: schema_version,
            supported: current,
        });
    }
    serde_json::from_slice(data).map_err(|source| DecodeError::Data {
        event_type: event_type.to_owned(),
        source,
    })
}

/// A business rule a command broke.
pub trait DomainError: std::error::Error + Send + Sync + 'static {
    /// A stable, kebab-case name of the rule (e.g. `insufficient-funds`),
    /// for clients to branch on.
    fn rule(&self) -> &'static str;

    /// Facts that explain the refusal (e.g. the limit and what is reserved),
    /// added to the error response.
    fn details(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }
}

/// The state after `events`, starting from nothing. What the handler does
/// after loading, and the "given" of aggregate tests.
pub fn replay<'a, A: Aggregate>(events: impl IntoIterator<Item = &'a A::Event>) -> A {
    let mut state = A::default();
    for event in events {
        state.apply(event);
    }
    state
}
