//! Idempotent commands, recorded in the event store itself.
//!
//! A command carrying an idempotency key appends, in the same atomic batch
//! as its events, one `CommandCompleted` event to the stream
//! `idempotency-<hex SHA-256 of the key>`, expecting that stream not to
//! exist. So:
//!
//! - the record is durable exactly when the events are, and survives
//!   restarts without a second database;
//! - of two concurrent requests with one key (on one replica or several),
//!   the store lets exactly one append; the other finds the record and
//!   answers with the original outcome;
//! - only commands that succeeded are recorded: a refused or failed command
//!   wrote nothing, and retrying it with the same key runs it again;
//! - a retry is recognised when its append fails on the record's stream, or,
//!   before a refusal (a rule broken, another version) is answered, by
//!   finding the record; a command that succeeds pays no lookup.
//!
//! The record holds a fingerprint of the request, so that reusing a key for
//! a different request is detected instead of silently answered with the
//! wrong outcome.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use event_store::StreamId;

/// Prefix of the streams holding idempotency records.
pub const RECORD_STREAM_PREFIX: &str = "idempotency-";

/// Event type of an idempotency record.
pub const RECORD_EVENT_TYPE: &str = "CommandCompleted";

/// A client-chosen key naming one logical request: 1 to
/// [`IdempotencyKey::BYTES_MAX`] visible ASCII characters (what an HTTP
/// header carries safely; UUIDs and ULIDs fit).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("the idempotency key must not be empty")]
    Empty,
    #[error("the idempotency key is {0} bytes long; the maximum is {max}", max = IdempotencyKey::BYTES_MAX)]
    TooLong(usize),
    #[error("the idempotency key may only contain visible ASCII characters")]
    BadCharacter,
}

impl IdempotencyKey {
    pub const BYTES_MAX: usize = 255;

    pub fn parse(key: &str) -> Result<IdempotencyKey, KeyError> {
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        if key.len() > Self::BYTES_MAX {
            return Err(KeyError::TooLong(key.len()));
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(KeyError::BadCharacter);
        }
        Ok(IdempotencyKey(key.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The stream that holds this key's record. Hashing keeps arbitrary
    /// key characters out of stream ids and bounds their length.
    pub fn record_stream(&self) -> Result<StreamId, event_store::Error> {
        let digest = Sha256::digest(self.0.as_bytes());
        StreamId::new(format!("{RECORD_STREAM_PREFIX}{}", hex(&digest))).map_err(Into::into)
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A SHA-256 digest identifying a request's content, so that a key reused
/// for a different request is told apart from a retry.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The digest of `parts`, each prefixed with its length so that moving
    /// bytes from one part to the next changes the fingerprint. For HTTP:
    /// method, path and body.
    pub fn of(parts: &[&[u8]]) -> Fingerprint {
        let mut hasher = Sha256::new();
        for part in parts {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        Fingerprint(hasher.finalize().into())
    }

    pub fn to_hex(self) -> String {
        hex(&self.0)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.to_hex())
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// An idempotency key with the fingerprint of the request it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    pub key: IdempotencyKey,
    pub fingerprint: Fingerprint,
}

/// The record of a completed command: everything needed to answer a retry
/// exactly as the original was answered. The stream position is not known
/// before the append; a retry reads it from the aggregate's stream at
/// `version`, which the same batch wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandCompleted {
    pub idempotency_key: String,
    /// Hex SHA-256 fingerprint of the request.
    pub fingerprint: String,
    pub command_id: Uuid,
    pub stream_id: String,
    pub aggregate_id: Uuid,
    /// The aggregate's version after the command.
    pub version: u64,
    /// Events the command appended to the aggregate (0 when it changed nothing).
    pub events: u64,
    /// Whether the command created the aggregate.
    pub created: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bounded_visible_ascii() {
        assert!(IdempotencyKey::parse("a").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        assert_eq!(
            IdempotencyKey::parse(&"k".repeat(256)),
            Err(KeyError::TooLong(256))
        );
        assert_eq!(IdempotencyKey::parse(""), Err(KeyError::Empty));
        for bad in ["a b", "é", "tab\there", "nl\n"] {
            assert_eq!(IdempotencyKey::parse(bad), Err(KeyError::BadCharacter));
        }
    }

    #[test]
    fn record_streams_are_the_prefixed_sha256_of_the_key() {
        let key = IdempotencyKey::parse("abc").unwrap();
        assert_eq!(
            key.record_stream().unwrap().as_str(),
            "idempotency-ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let other = IdempotencyKey::parse("abd").unwrap();
        assert_ne!(key.record_stream().unwrap(), other.record_stream().unwrap());
    }

    #[test]
    fn fingerprints_separate_their_parts() {
        let a = Fingerprint::of(&[b"POST", b"/x", b"{}"]);
        assert_eq!(a, Fingerprint::of(&[b"POST", b"/x", b"{}"]));
        assert_ne!(a, Fingerprint::of(&[b"POST", b"/x{", b"}"]));
        assert_ne!(a, Fingerprint::of(&[b"POST", b"/x", b"{ }"]));
        assert_eq!(a.to_hex().len(), 64);
    }
}

/// Event type of a fence: a record that stops a key's command from ever
/// running.
pub const FENCE_EVENT_TYPE: &str = "CommandFenced";

/// The data of a fence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandFenced {
    pub idempotency_key: String,
    /// Why the command must not run any more.
    pub reason: String,
}

/// What [`fence`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fenced {
    /// The fence is now in place: the command never ran and never will.
    Now,
    /// An earlier fence stands: the command never ran and never will.
    Before,
    /// The command ran: its record (and so its events) are durable and
    /// visible.
    Ran,
}

/// Why [`fence`] cannot tell.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error(transparent)]
    Store(#[from] event_store::Error),
    /// The store refused the fence as the key's record stream was taken,
    /// yet reads it empty. The embedded store answers a refusal only once
    /// what it rests on is published, so this is a store (a remote one, an
    /// older build) that does not: asking again later answers.
    #[error("the record of idempotency key {key:?} is taken but not readable yet; ask again")]
    NotReadableYet { key: String },
}

/// Makes sure the command of `key` never runs from now on, by taking the
/// key's record stream (`NoStream`) with a fence. A command with this key
/// still in flight somewhere (sent by a process that crashed, delivered
/// late) then fails on that stream instead of taking effect after its
/// sender's successor decided it would not happen.
///
/// When the stream was taken first, reads what took it: the store answers
/// a refusal only after the append it conflicts with is readable (even one
/// committed in the same group as the fence), so a caller told
/// [`Fenced::Ran`] can read the command's events (to release what it
/// reserved, say).
pub async fn fence(
    store: &dyn event_store::EventStore,
    key: &IdempotencyKey,
    reason: &str,
) -> Result<Fenced, FenceError> {
    let stream = key.record_stream()?;
    let event = event_store::NewEvent::json(
        FENCE_EVENT_TYPE,
        &CommandFenced {
            idempotency_key: key.as_str().to_owned(),
            reason: reason.to_owned(),
        },
    )
    .map_err(|e| event_store::Error::InvalidAppend(e.to_string()))?;
    match store
        .append(&stream, event_store::ExpectedVersion::NoStream, vec![event])
        .await
    {
        Ok(_) => Ok(Fenced::Now),
        Err(event_store::Error::WrongExpectedVersion { .. }) => {
            let slice = store
                .read_stream(
                    &stream,
                    event_store::ReadFrom::Start,
                    event_store::Direction::Forward,
                    1,
                )
                .await?;
            match slice.events.first() {
                Some(first) if first.event_type == FENCE_EVENT_TYPE => Ok(Fenced::Before),
                // The store publishes a group at once: the record readable
                // means the command's events are too.
                Some(_) => Ok(Fenced::Ran),
                None => Err(FenceError::NotReadableYet {
                    key: key.as_str().to_owned(),
                }),
            }
        }
        Err(e) => Err(e.into()),
    }
}
