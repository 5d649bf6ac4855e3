//! Process managers (sagas): long-running reactions to events that issue
//! commands through the same [`CommandHandler`](crate::CommandHandler)s the
//! REST API uses.
//!
//! A saga is a type implementing [`Saga`]: which events it reacts to, how
//! they are grouped into lanes, and what it does with one event. The
//! [`SagaRunner`] does everything else, the same way for every saga:
//!
//! - **Delivery.** A push subscription from the store (no polling) from the
//!   saga's checkpoint on. Events of one lane (by default one stream) are
//!   handled one at a time in log order; different lanes run concurrently
//!   (at most [`SagaConfig::concurrency`] at once), so one aggregate's
//!   trouble does not stall the others and the saga's commands share the
//!   store's group commits.
//! - **Exactly-once effect.** Delivery is at least once: after a crash the
//!   events after the last checkpoint come again. Every command carries an
//!   idempotency key made of the saga's name, the triggering event's id and
//!   the step ([`SagaContext::command`]), so a command that already
//!   succeeded is answered from its record instead of running twice.
//! - **Durable state.** The checkpoint is an event in the saga's own stream
//!   (`saga-<name>-checkpoint`) holding the position below which every
//!   event is done and the saga's [`Saga::State`]. It is written every
//!   [`SagaConfig::checkpoint_every_events`] events, at least every
//!   [`SagaConfig::checkpoint_interval`] while there is progress to save,
//!   and at shutdown; at start the saga resumes after it with that state.
//!   Events handled after the checkpoint are handled again after a crash, so
//!   a saga's state changes must be idempotent (insert or remove by key,
//!   never count).
//! - **Failures.** A transient failure (the store unreachable, a conflict
//!   that outlasted the handler's retries) is retried on the same event
//!   with an exponential back-off that a shutdown interrupts; the saga may
//!   give up itself (a deadline) because it sees the attempt number and
//!   the event's commit time. An event no retry can help is logged, counted,
//!   kept as the status's last error and skipped: one bad event must not
//!   stop every later one.
//!
//! - **Time.** A saga that decides by the clock (a deadline) asks
//!   [`SagaContext::now`], the runner's [`Clock`] ([`SagaRunner::with_clock`]),
//!   so a test moves time forward instead of sleeping.
//! - **Read-your-writes.** [`SagaHandle::handled`] waits until the saga is
//!   done with the log up to a position: a test, or a caller that wants to
//!   read what the saga did about its command, waits for that.
//!
//! Run each saga in exactly one process per store: two instances would not
//! break anything (the keys make their commands idempotent), but they would
//! do all the work twice.
//!
//! [`Clock`]: event_store::Clock

mod checkpoint;
mod contract;
mod runner;
mod status;

pub use checkpoint::{CHECKPOINT_EVENT_TYPE, Checkpoint, checkpoint_stream};
pub use contract::{Saga, SagaContext, SagaError, idempotency_key};
pub use runner::{SagaConfig, SagaRunner};
pub use status::{SagaFailure, SagaHandle, SagaState, SagaStatus, SagaStopped};
