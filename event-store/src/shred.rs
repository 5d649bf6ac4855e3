//! Crypto-shredding: personal data is encrypted with its data subject's key
//! before it reaches the log, and forgetting the subject destroys the key.
//!
//! [`Shredding`] wraps an [`EventStore`]. A [`PersonalData`] policy says
//! which streams belong to a data subject (the stream id is the subject) and
//! which top-level fields of which event types are personal. On append those
//! fields are replaced by `"annals:xc20p1:<base64url(nonce ‖ ciphertext)>"`
//! (XChaCha20-Poly1305, 192-bit random nonce, the stream id, event type and
//! field name as associated data). On every read path they are decrypted, or,
//! once the subject is forgotten, replaced by [`ERASED`]. Snapshots of a
//! subject's stream are encrypted whole. A ciphertext whose key is missing
//! (not erased) or fails to authenticate is an error: a lost key store is
//! never mistaken for erasure.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use futures_util::StreamExt;

use crate::api::{EventStore, LoadedStream};
use crate::error::{Error, Result};
use crate::keys::{KeyStore, SubjectKey};
use crate::subscription::Subscription;
use crate::types::{
    AppendResult, Direction, EventFilter, NewEvent, Position, ReadFrom, RecordedEvent, Snapshot,
    Stats, StreamAppend, StreamId, StreamSlice,
};

/// What a personal field reads as once its subject was forgotten.
pub const ERASED: &str = "[erased]";

const FIELD_PREFIX: &str = "annals:xc20p1:";
const SNAPSHOT_MAGIC: &[u8; 8] = b"ANNALENC";

/// Which data is personal.
#[derive(Debug, Clone, Default)]
pub struct PersonalData {
    subject_prefixes: Vec<String>,
    fields: HashMap<String, Vec<String>>,
}

impl PersonalData {
    pub fn new() -> Self {
        Self::default()
    }

    /// Streams whose id starts with `prefix` each belong to one data subject,
    /// identified by the stream id.
    pub fn subject_streams(mut self, prefix: impl Into<String>) -> Self {
        self.subject_prefixes.push(prefix.into());
        self
    }

    /// In events of `event_type`, these top-level fields are personal.
    pub fn fields<I, S>(mut self, event_type: impl Into<String>, fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.fields
            .entry(event_type.into())
            .or_default()
            .extend(fields.into_iter().map(Into::into));
        self
    }

    pub fn is_subject_stream(&self, stream_id: &str) -> bool {
        self.subject_prefixes
            .iter()
            .any(|p| stream_id.starts_with(p.as_str()))
    }

    fn personal_fields(&self, stream_id: &str, event_type: &str) -> Option<&[String]> {
        if !self.is_subject_stream(stream_id) {
            return None;
        }
        self.fields.get(event_type).map(Vec::as_slice)
    }
}

/// An [`EventStore`] that encrypts personal data on the way in and decrypts
/// (or marks erased) on the way out.
#[derive(Debug, Clone)]
pub struct Shredding<S> {
    inner: S,
    vault: Arc<Vault>,
}

/// The keys and the policy: everything that encrypts and decrypts, shared
/// with the subscriptions it decrypts for.
#[derive(Debug)]
struct Vault {
    keys: Arc<KeyStore>,
    policy: PersonalData,
}

fn aad(stream_id: &str, event_type: &str, field: &str) -> Vec<u8> {
    [
        stream_id.as_bytes(),
        b"\0",
        event_type.as_bytes(),
        b"\0",
        field.as_bytes(),
    ]
    .concat()
}

fn cipher(key: &[u8; 32]) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(&Key::from(*key))
}

fn seal(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let mut nonce = [0u8; 24];
    getrandom::fill(&mut nonce)
        .map_err(|e| Error::KeyStore(format!("no randomness for a nonce: {e}")))?;
    let sealed = cipher(key)
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| Error::KeyStore("encryption failed".into()))?;
    Ok([&nonce[..], &sealed].concat())
}

fn open(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < 24 + 16 {
        return None;
    }
    let (nonce, body) = sealed.split_at(24);
    let nonce: [u8; 24] = nonce.try_into().ok()?;
    cipher(key)
        .decrypt(&XNonce::from(nonce), Payload { msg: body, aad })
        .ok()
}

impl<S: EventStore> Shredding<S> {
    pub fn new(inner: S, keys: Arc<KeyStore>, policy: PersonalData) -> Self {
        Self {
            inner,
            vault: Arc::new(Vault { keys, policy }),
        }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    pub fn keys(&self) -> &Arc<KeyStore> {
        &self.vault.keys
    }
}

impl Vault {
    /// The subjects whose keys encrypting `appends` needs and the key store
    /// does not hold yet (empty for most appends).
    fn subjects_without_key(&self, appends: &[StreamAppend]) -> Vec<String> {
        // The policy first: it answers most appends (other streams, events
        // without personal fields) without touching the key store's lock.
        appends
            .iter()
            .filter(|a| {
                a.events.iter().any(|e| {
                    self.policy
                        .personal_fields(a.stream_id.as_str(), &e.event_type)
                        .is_some()
                }) && !self.keys.is_cached(a.stream_id.as_str())
            })
            .map(|a| a.stream_id.as_str().to_owned())
            .collect()
    }

    fn encrypt_appends(&self, appends: Vec<StreamAppend>) -> Result<Vec<StreamAppend>> {
        appends
            .into_iter()
            .map(|mut a| {
                a.events = std::mem::take(&mut a.events)
                    .into_iter()
                    .map(|e| self.encrypt_event(&a.stream_id, e))
                    .collect::<Result<_>>()?;
                Ok(a)
            })
            .collect()
    }

    fn encrypt_event(&self, stream_id: &StreamId, mut event: NewEvent) -> Result<NewEvent> {
        let Some(fields) = self
            .policy
            .personal_fields(stream_id.as_str(), &event.event_type)
        else {
            return Ok(event);
        };
        let mut data: serde_json::Value = serde_json::from_slice(&event.data)
            .map_err(|e| Error::InvalidAppend(format!("event data is not JSON: {e}")))?;
        let Some(object) = data.as_object_mut() else {
            return Err(Error::InvalidAppend(format!(
                "{} carries personal data, so its data must be a JSON object",
                event.event_type
            )));
        };
        let mut key = None;
        for field in fields {
            let Some(value) = object.get_mut(field.as_str()) else {
                continue;
            };
            if value.is_null() {
                continue;
            }
            let key = match key {
                Some(k) => k,
                None => *key.insert(
                    // `append_many` created the missing keys before; a key
                    // still missing here was lost in between.
                    self.keys
                        .existing_key_for_write(stream_id.as_str())?
                        .ok_or_else(|| {
                            Error::KeyStore(format!(
                                "data subject {stream_id} has no key after it was created"
                            ))
                        })?,
                ),
            };
            let plaintext = serde_json::to_vec(value)
                .map_err(|e| Error::InvalidAppend(format!("personal field {field}: {e}")))?;
            let sealed = seal(
                &key,
                &aad(stream_id.as_str(), &event.event_type, field),
                &plaintext,
            )?;
            *value = serde_json::Value::String(format!(
                "{FIELD_PREFIX}{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed)
            ));
        }
        event.data = Bytes::from(
            serde_json::to_vec(&data).map_err(|e| Error::InvalidAppend(e.to_string()))?,
        );
        Ok(event)
    }

    fn decrypt_event(&self, mut event: RecordedEvent) -> Result<RecordedEvent> {
        let Some(fields) = self
            .policy
            .personal_fields(event.stream_id.as_str(), &event.event_type)
        else {
            return Ok(event);
        };
        let mut data: serde_json::Value = match serde_json::from_slice(&event.data) {
            Ok(data) => data,
            Err(_) => return Ok(event),
        };
        let Some(object) = data.as_object_mut() else {
            return Ok(event);
        };
        let mut changed = false;
        for field in fields {
            let Some(value) = object.get_mut(field.as_str()) else {
                continue;
            };
            let Some(encoded) = value.as_str().and_then(|s| s.strip_prefix(FIELD_PREFIX)) else {
                continue;
            };
            let damaged = |why: &str| {
                Error::KeyStore(format!(
                    "personal field {field} of the event at position {} ({}) {why}",
                    event.position, event.event_type
                ))
            };
            *value = match self.keys.require(event.stream_id.as_str())? {
                SubjectKey::Erased => serde_json::Value::String(ERASED.into()),
                SubjectKey::Key(key) => {
                    let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(encoded)
                        .map_err(|_| damaged("is not valid ciphertext"))?;
                    let plaintext = open(
                        &key,
                        &aad(event.stream_id.as_str(), &event.event_type, field),
                        &sealed,
                    )
                    .ok_or_else(|| {
                        damaged(
                            "does not decrypt with the subject's key (wrong key or damaged data)",
                        )
                    })?;
                    serde_json::from_slice(&plaintext)
                        .map_err(|_| damaged("decrypts to something that is not JSON"))?
                }
            };
            changed = true;
        }
        if changed {
            event.data =
                Bytes::from(serde_json::to_vec(&data).map_err(|e| Error::KeyStore(e.to_string()))?);
        }
        Ok(event)
    }

    fn decrypt_all(&self, events: Vec<RecordedEvent>) -> Result<Vec<RecordedEvent>> {
        events.into_iter().map(|e| self.decrypt_event(e)).collect()
    }

    fn open_snapshot(&self, snapshot: Option<Snapshot>) -> Result<Option<Snapshot>> {
        let Some(mut snapshot) = snapshot else {
            return Ok(None);
        };
        let Some(sealed) = snapshot.state.strip_prefix(&SNAPSHOT_MAGIC[..]) else {
            return Ok(Some(snapshot));
        };
        match self.keys.require(snapshot.stream_id.as_str())? {
            // The state of a forgotten subject is rebuilt from its events,
            // which now read as erased.
            SubjectKey::Erased => Ok(None),
            SubjectKey::Key(key) => {
                let aad = [
                    snapshot.stream_id.as_str().as_bytes(),
                    &snapshot.version.to_le_bytes(),
                ]
                .concat();
                let state = open(&key, &aad, sealed).ok_or_else(|| {
                    Error::KeyStore(format!(
                        "the snapshot of {} does not decrypt with the subject's key",
                        snapshot.stream_id
                    ))
                })?;
                snapshot.state = Bytes::from(state);
                Ok(Some(snapshot))
            }
        }
    }
}

#[async_trait]
impl<S: EventStore> EventStore for Shredding<S> {
    async fn append_many(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        // A subject's first personal data needs its key, durable before any
        // event encrypted with it can be acknowledged: wait for the key
        // log's group commit (shared with every concurrent new subject).
        let new_subjects = self.vault.subjects_without_key(&appends);
        if !new_subjects.is_empty() {
            self.vault.keys.ensure_keys(&new_subjects).await?;
        }
        let appends = self.vault.encrypt_appends(appends)?;
        self.inner.append_many(appends).await
    }

    async fn read_stream(
        &self,
        stream_id: &StreamId,
        from: ReadFrom,
        direction: Direction,
        max_count: usize,
    ) -> Result<StreamSlice> {
        let mut slice = self
            .inner
            .read_stream(stream_id, from, direction, max_count)
            .await?;
        slice.events = self.vault.decrypt_all(slice.events)?;
        Ok(slice)
    }

    async fn read_all(&self, from: Position, max_count: usize) -> Result<Vec<RecordedEvent>> {
        let events = self.inner.read_all(from, max_count).await?;
        self.vault.decrypt_all(events)
    }

    async fn subscribe(&self, from: Position, filter: EventFilter) -> Result<Subscription> {
        let vault = self.vault.clone();
        let inner = self.inner.subscribe(from, filter).await?;
        Ok(Subscription::from_stream(inner.map(move |event| {
            event.and_then(|e| vault.decrypt_event(e))
        })))
    }

    async fn save_snapshot(
        &self,
        stream_id: &StreamId,
        version: u64,
        schema_version: u32,
        state: Bytes,
    ) -> Result<()> {
        if !self.vault.policy.is_subject_stream(stream_id.as_str()) {
            return self
                .inner
                .save_snapshot(stream_id, version, schema_version, state)
                .await;
        }
        let key = match self.vault.keys.lookup(stream_id.as_str())? {
            Some(SubjectKey::Key(key)) => key,
            // A forgotten subject's state may have been loaded before the
            // erasure; no snapshot of it is ever written again.
            Some(SubjectKey::Erased) => return Ok(()),
            None => {
                self.vault.keys.ensure_keys([stream_id.as_str()]).await?;
                self.vault
                    .keys
                    .existing_key_for_write(stream_id.as_str())?
                    .ok_or_else(|| {
                        Error::KeyStore(format!(
                            "data subject {stream_id} has no key after it was created"
                        ))
                    })?
            }
        };
        let aad = [stream_id.as_str().as_bytes(), &version.to_le_bytes()].concat();
        let sealed = seal(&key, &aad, &state)?;
        let state = Bytes::from([&SNAPSHOT_MAGIC[..], &sealed].concat());
        self.inner
            .save_snapshot(stream_id, version, schema_version, state)
            .await
    }

    async fn load_snapshot(&self, stream_id: &StreamId) -> Result<Option<Snapshot>> {
        let snapshot = self.inner.load_snapshot(stream_id).await?;
        self.vault.open_snapshot(snapshot)
    }

    async fn stats(&self) -> Result<Stats> {
        self.inner.stats().await
    }

    async fn head(&self) -> Result<Position> {
        self.inner.head().await
    }

    async fn ready(&self) -> Result<()> {
        self.inner.ready().await
    }

    async fn load(
        &self,
        stream_id: &StreamId,
        snapshot_schema: Option<u32>,
    ) -> Result<LoadedStream> {
        // The inner load would accept an encrypted snapshot it cannot read;
        // load the snapshot through this layer and the events after it.
        let snapshot = match snapshot_schema {
            Some(schema) => self
                .load_snapshot(stream_id)
                .await?
                .filter(|s| s.schema_version == schema),
            None => None,
        };
        let mut next = snapshot.as_ref().map_or(1, |s| s.version + 1);
        let mut events = Vec::new();
        let page = self.read_page_max();
        let version = loop {
            let slice = self
                .read_stream(stream_id, ReadFrom::Version(next), Direction::Forward, page)
                .await?;
            next += slice.events.len() as u64;
            events.extend(slice.events);
            if slice.is_end {
                break slice.stream_version;
            }
        };
        Ok(LoadedStream {
            snapshot,
            events,
            version,
        })
    }

    async fn forget_subject(&self, stream_id: &StreamId) -> Result<()> {
        if !self.vault.policy.is_subject_stream(stream_id.as_str()) {
            return Err(Error::InvalidAppend(format!(
                "stream {stream_id} does not belong to a data subject"
            )));
        }
        self.vault.keys.forget_subject(stream_id.as_str()).await
    }

    fn read_page_max(&self) -> usize {
        self.inner.read_page_max()
    }
}
