//! Given/when/then for aggregates: the events that happened, the command
//! that arrives, and the events it records (or the rule it breaks). Pure:
//! no store, no runtime.
//!
//! And a [`ManualClock`] for sagas that decide by the time: it stands
//! still until the test moves it.
//!
//! Given/when/then: Every event the command records is also encoded
//! and decoded as the store would keep it, so a test fails when an event
//! does not survive its own serialization.
//!
//! ```
//! use command_api::testkit::given;
//! use command_api::{Aggregate, AggregateCommand, DecodeError, DomainError, DomainEvent};
//! use serde::{Deserialize, Serialize};
//! use uuid::Uuid;
//!
//! #[derive(Debug, Default, Serialize, Deserialize)]
//! struct Counter { value: i64 }
//!
//! #[derive(Debug)]
//! enum CounterCommand { Add { id: Uuid, by: i64 } }
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! struct Added { by: i64 }
//!
//! #[derive(Debug, PartialEq, thiserror::Error)]
//! #[error("a counter adds positive amounts only")]
//! struct NotPositive;
//!
//! impl AggregateCommand for CounterCommand {
//!     fn aggregate_id(&self) -> Uuid { match self { CounterCommand::Add { id, .. } => *id } }
//!     fn creates_aggregate(&self) -> bool { true }
//!     fn name(&self) -> &'static str { "Add" }
//! }
//! impl DomainEvent for Added {
//!     fn event_type(&self) -> &'static str { "Added" }
//!     fn encode(&self) -> serde_json::Result<Vec<u8>> { serde_json::to_vec(self) }
//!     fn decode(t: &str, v: u32, data: &[u8]) -> Result<Self, DecodeError> {
//!         command_api::aggregate::decode_data(t, v, data)
//!     }
//! }
//! impl DomainError for NotPositive {
//!     fn rule(&self) -> &'static str { "not-positive" }
//! }
//! impl Aggregate for Counter {
//!     const TYPE: &'static str = "counter";
//!     const SNAPSHOT_SCHEMA: u32 = 1;
//!     type Command = CounterCommand;
//!     type Event = Added;
//!     type Error = NotPositive;
//!     fn handle(&self, CounterCommand::Add { by, .. }: &CounterCommand) -> Result<Vec<Added>, NotPositive> {
//!         if *by > 0 { Ok(vec![Added { by: *by }]) } else { Err(NotPositive) }
//!     }
//!     fn apply(&mut self, event: &Added) { self.value += event.by; }
//! }
//!
//! let id = Uuid::now_v7();
//! given::<Counter>([Added { by: 2 }])
//!     .when(CounterCommand::Add { id, by: 3 })
//!     .then_events([Added { by: 3 }]);
//! given::<Counter>([])
//!     .when(CounterCommand::Add { id, by: -1 })
//!     .then_rule("not-positive");
//! ```

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use event_store::{Clock, Timestamp};

use crate::aggregate::{Aggregate, DomainError, DomainEvent, replay};

/// The state after some events, waiting for a command.
#[derive(Debug)]
pub struct Given<A: Aggregate> {
    state: A,
}

/// The aggregate after `events` (none: a new one).
pub fn given<A: Aggregate>(events: impl IntoIterator<Item = A::Event>) -> Given<A> {
    let events: Vec<A::Event> = events.into_iter().collect();
    Given {
        state: replay::<A>(&events),
    }
}

impl<A: Aggregate> Given<A> {
    /// The state the events led to, for assertions on it.
    pub fn state(&self) -> &A {
        &self.state
    }

    /// Decides `command` against the state.
    pub fn when(&self, command: A::Command) -> Then<A> {
        Then {
            outcome: self.state.handle(&command),
            command: format!("{command:?}"),
        }
    }
}

/// What a command decided.
#[derive(Debug)]
pub struct Then<A: Aggregate> {
    outcome: Result<Vec<A::Event>, A::Error>,
    command: String,
}

impl<A: Aggregate> Then<A> {
    /// The decision itself, for assertions of one's own.
    pub fn outcome(&self) -> &Result<Vec<A::Event>, A::Error> {
        &self.outcome
    }

    /// Checks that the command recorded exactly `expected`, in order, and
    /// that each event reads back as itself from its stored form.
    #[track_caller]
    pub fn then_events(self, expected: impl IntoIterator<Item = A::Event>)
    where
        A::Event: PartialEq,
    {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        match &self.outcome {
            Ok(events) => {
                assert_eq!(events, &expected, "the events {} recorded", self.command);
                for event in events {
                    assert_round_trip(event);
                }
            }
            Err(e) => panic!(
                "{} was refused ({}: {e}) where events were expected: {expected:?}",
                self.command,
                e.rule()
            ),
        }
    }

    /// Checks that the command was accepted and changed nothing.
    #[track_caller]
    pub fn then_nothing(self)
    where
        A::Event: PartialEq,
    {
        self.then_events([]);
    }

    /// Checks that the command broke the rule named `rule`.
    #[track_caller]
    pub fn then_rule(self, rule: &str) {
        match &self.outcome {
            Err(e) => assert_eq!(e.rule(), rule, "{} was refused: {e}", self.command),
            Ok(events) => panic!(
                "{} was accepted with {events:?} where rule {rule:?} should refuse it",
                self.command
            ),
        }
    }

    /// Checks that the command was refused with exactly `expected`.
    #[track_caller]
    pub fn then_error(self, expected: A::Error)
    where
        A::Error: PartialEq + Debug,
    {
        match self.outcome {
            Err(e) => assert_eq!(e, expected, "the refusal of {}", self.command),
            Ok(events) => panic!(
                "{} was accepted with {events:?} where {expected:?} was expected",
                self.command
            ),
        }
    }
}

/// An event decodes from what it encodes to, as the store keeps it.
#[track_caller]
fn assert_round_trip<E: DomainEvent + PartialEq>(event: &E) {
    let data = event
        .encode()
        .unwrap_or_else(|e| panic!("{event:?} does not encode: {e}"));
    let decoded = E::decode(event.event_type(), event.schema_version(), &data)
        .unwrap_or_else(|e| panic!("{event:?} does not decode from its own data: {e}"));
    assert_eq!(
        &decoded, event,
        "the event as stored reads back differently"
    );
}

/// A clock that moves only when told to: give it to a
/// [`SagaRunner`](crate::SagaRunner) ([`with_clock`](crate::SagaRunner::with_clock))
/// and a saga's deadline passes when the test says so, without sleeping.
/// Clones share the time.
///
/// ```
/// use std::time::Duration;
/// use command_api::testkit::ManualClock;
/// use event_store::{Clock, Timestamp};
///
/// let clock = ManualClock::at(Timestamp(1_000));
/// clock.advance(Duration::from_millis(2));
/// assert_eq!(clock.now(), Timestamp(3_000));
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    micros: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock standing at `time`.
    pub fn at(time: Timestamp) -> Self {
        Self {
            micros: Arc::new(AtomicI64::new(time.as_micros())),
        }
    }

    /// A clock standing at the wall clock's time now.
    pub fn starting_now() -> Self {
        Self::at(Timestamp::now())
    }

    /// Moves the time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        // Saturating: a test that moves a clock past the end of time gets
        // the end of time, not a time before it.
        let _ = self
            .micros
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
                Some(now.saturating_add(by))
            });
    }

    /// Sets the time to `time` (backwards too).
    pub fn set(&self, time: Timestamp) {
        self.micros.store(time.as_micros(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.micros.load(Ordering::SeqCst))
    }
}
