//! The command side of annals (the write half of CQRS).
//!
//! Commands are decided against the aggregate's state replayed from the
//! event store, never against a read model:
//!
//! - [`aggregate`]: the traits a domain implements ([`Aggregate`], its
//!   commands, events and rule violations);
//! - [`handler`]: [`CommandHandler`] loads an aggregate (snapshot + later
//!   events), runs the command, appends the events with the loaded version as
//!   the expected version, retries on conflict and snapshots every N events;
//! - [`idempotency`]: idempotency records kept in the event store itself,
//!   atomically with the command's events;
//! - [`commands`]: [`Commands`], one shared handler per aggregate type;
//! - [`http`]: the REST command API over any aggregate: routes declared as
//!   [`CommandRoutes`], served by [`CommandApi`];
//! - [`testkit`]: given/when/then for a domain's aggregates, and a manual
//!   clock for sagas' deadlines;
//! - [`saga`]: process managers ([`Saga`], run by [`SagaRunner`]).

pub mod aggregate;
mod cache;
pub mod commands;
pub mod error;
pub mod handler;
pub mod http;
pub mod idempotency;
mod json_event;
pub mod saga;
pub mod testkit;
pub mod trace;

pub use aggregate::{
    Aggregate, AggregateCommand, DecodeError, DomainError, DomainEvent, decode_data,
    decode_data_at, replay, upcast_value,
};
pub use commands::Commands;
pub use error::CommandError;
pub use handler::{
    CommandContext, CommandHandler, CommandOutcome, CommandStore, HandlerConfig, Loaded,
};
pub use http::{
    ApiConfig, CommandApi, CommandRoutes, FieldErrors, NoFields, PathIds, Route, serve,
    with_problem_fallbacks,
};
pub use idempotency::{Fenced, Fingerprint, Idempotency, IdempotencyKey};
pub use json_event::JsonEvent;
pub use saga::{
    Saga, SagaConfig, SagaContext, SagaError, SagaFailure, SagaHandle, SagaRunner, SagaState,
    SagaStatus, SagaStopped,
};
pub use trace::TraceParent;

/// `upcasters` with the events annals itself writes declared at their
/// current schema versions: idempotency records, fences and saga
/// checkpoints. A store read through them then refuses a version of those
/// it does not know, as it does for a domain's own events; an application
/// declares them once for every domain it runs.
pub fn with_own_events(upcasters: event_store::Upcasters) -> event_store::Upcasters {
    upcasters
        .current(idempotency::RECORD_EVENT_TYPE, 1)
        .current(idempotency::FENCE_EVENT_TYPE, 1)
        .current(saga::CHECKPOINT_EVENT_TYPE, 1)
}
