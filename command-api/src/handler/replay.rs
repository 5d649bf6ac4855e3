//! Idempotency on the handler's side: the record of an earlier command with
//! the same key, waited for when a duplicate won the race, and replayed as
//! this command's outcome.

use std::time::Instant;

use event_store::{Direction, Position, ReadFrom, StreamId};

use super::context::{CommandContext, CommandOutcome};
use super::load::{VISIBILITY_PAUSE_MAX, visibility_pauses};
use super::{CommandHandler, Result};
use crate::aggregate::{Aggregate, DomainEvent};
use crate::error::CommandError;
use crate::idempotency::{CommandCompleted, Idempotency};

impl<A: Aggregate> CommandHandler<A> {
    /// The answer to a command whose record append lost to a request with
    /// the same key: an earlier try (its record is readable), or a
    /// concurrent duplicate (its record is readable once its batch is
    /// durable).
    pub(super) async fn replay_winner(
        &self,
        context: &CommandContext,
        record_stream: Option<&StreamId>,
    ) -> Result<CommandOutcome<A::Event>, A> {
        let (Some(idempotency), Some(record_stream)) = (&context.idempotency, record_stream) else {
            return Err(CommandError::Store(event_store::Error::InvalidAppend(
                "conflict on an idempotency record without a key".into(),
            )));
        };
        let record = self.await_record(record_stream, idempotency).await?;
        self.replay(idempotency, record_stream, record).await
    }

    pub(super) async fn find_record(
        &self,
        record_stream: &StreamId,
    ) -> Result<Option<CommandCompleted>, A> {
        let slice = self
            .store
            .events()
            .read_stream(record_stream, ReadFrom::Start, Direction::Forward, 1)
            .await?;
        let Some(event) = slice.events.first() else {
            return Ok(None);
        };
        if event.event_type == crate::idempotency::FENCE_EVENT_TYPE {
            let reason = event
                .data_as::<crate::idempotency::CommandFenced>()
                .map_or_else(|e| format!("(unreadable: {e})"), |f| f.reason);
            return Err(CommandError::Fenced {
                stream: record_stream.clone(),
                reason,
            });
        }
        event
            .data_as::<CommandCompleted>()
            .map(Some)
            .map_err(|e| CommandError::BadRecord {
                stream: record_stream.clone(),
                detail: e.to_string(),
            })
    }

    async fn await_record(
        &self,
        record_stream: &StreamId,
        idempotency: &Idempotency,
    ) -> Result<CommandCompleted, A> {
        let deadline = Instant::now() + self.config.visibility_wait;
        let mut pauses = visibility_pauses();
        loop {
            if let Some(record) = self.find_record(record_stream).await? {
                return Ok(record);
            }
            if Instant::now() >= deadline {
                return Err(CommandError::IdempotencyKeyInFlight {
                    key: idempotency.key.as_str().to_owned(),
                });
            }
            tokio::time::sleep(pauses.next().unwrap_or(VISIBILITY_PAUSE_MAX)).await;
        }
    }

    /// The outcome of the recorded command, if this request is the same one.
    pub(super) async fn replay(
        &self,
        idempotency: &Idempotency,
        record_stream: &StreamId,
        record: CommandCompleted,
    ) -> Result<CommandOutcome<A::Event>, A> {
        let reused = || CommandError::IdempotencyKeyReused {
            key: idempotency.key.as_str().to_owned(),
        };
        if record.fingerprint != idempotency.fingerprint.to_hex() {
            return Err(reused());
        }
        // The same request, but not necessarily the same stream: an id the
        // server generated differs on every try, and the record's is the one
        // that counts.
        let Some(stream) = StreamId::new(&record.stream_id).ok().filter(|s| {
            s.as_str()
                .strip_prefix(A::TYPE)
                .is_some_and(|rest| rest.starts_with('-'))
        }) else {
            return Err(reused());
        };
        let (events, position) = self
            .recorded_events(&stream, record_stream, &record)
            .await?;
        Ok(CommandOutcome {
            aggregate_id: record.aggregate_id,
            stream_id: stream,
            version: record.version,
            position,
            events,
            created: record.created,
            command_id: record.command_id,
            replayed: true,
        })
    }

    /// The events the record names and the position of the last one (the
    /// stream's position at the record's version when it names none).
    async fn recorded_events(
        &self,
        stream: &StreamId,
        record_stream: &StreamId,
        record: &CommandCompleted,
    ) -> Result<(Vec<A::Event>, Position), A> {
        let bad = |detail: String| CommandError::BadRecord {
            stream: record_stream.clone(),
            detail,
        };
        if record.events > record.version {
            return Err(bad(format!(
                "it claims {} events up to version {}",
                record.events, record.version
            )));
        }
        if record.events == 0 {
            return Ok((Vec::new(), self.position_at(stream, record.version).await?));
        }
        let first = record.version - record.events + 1;
        let count = usize::try_from(record.events).unwrap_or(usize::MAX);
        let slice = self
            .store
            .events()
            .read_stream(stream, ReadFrom::Version(first), Direction::Forward, count)
            .await?;
        if slice.events.len() as u64 != record.events {
            return Err(bad(format!(
                "{} holds {} of the {} events it names",
                stream,
                slice.events.len(),
                record.events
            )));
        }
        let mut events = Vec::with_capacity(slice.events.len());
        for recorded in &slice.events {
            events.push(
                A::Event::decode(
                    &recorded.event_type,
                    recorded.schema_version,
                    &recorded.data,
                )
                .map_err(|source| CommandError::Decode {
                    stream: stream.clone(),
                    version: recorded.version,
                    source,
                })?,
            );
        }
        let position = slice.events.last().map_or(Position::ZERO, |e| e.position);
        Ok((events, position))
    }
}
