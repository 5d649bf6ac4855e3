//! Crypto-shredding: personal data is encrypted with its data subject's key
//! before it reaches the log, and forgetting the subject destroys the key.
//!
//! [`Shredding`] wraps an [`EventStore`]. A [`PersonalData`] policy says
//! which streams belong to a data subject (the stream id is the subject) and
//! which top-level fields of which event types are personal. On append those
//! fields are replaced by `"annals:a256g1:[<slot>:]<base64url(nonce ‖
//! ciphertext ‖ tag)>"` (AES-256-GCM, 96-bit random nonce, the stream id,
//! event type and field name as associated data; the slot names the spare
//! key it was sealed under, see `keys`). A subject's key seals a few fields
//! per event of one stream, far below the 2^32 messages per key up to which
//! random 96-bit nonces are safe. Fields sealed by earlier versions,
//! `"annals:xc20p1:<base64url(nonce ‖ ciphertext)>"` (XChaCha20-Poly1305,
//! 192-bit nonce), are read as before. AES-GCM replaced it because its
//! per-message set-up is a fraction of XChaCha20-Poly1305's, which
//! dominated sealing short fields. On every read path they are decrypted, or,
//! once the subject is forgotten, replaced by [`ERASED`]. Snapshots of a
//! subject's stream are encrypted whole. A ciphertext whose key is missing
//! (not erased) or fails to authenticate is an error: a lost key store is
//! never mistaken for erasure.
//!
//! Reading patches the sealed fields' values in the event's raw JSON (see
//! `rawjson`): the rest of the event is neither decoded nor re-encoded.
//! Decrypted event data is kept in a bounded in-memory cache by position
//! (`plaincache`), so that an event read again — a customer's registration,
//! loaded by every command when the handler caches no state — costs no
//! decryption; [`Shredding::forget_subject`] drops the subject's entries,
//! and a hit is served only while the key store still holds the key.

use std::collections::HashMap;
use std::sync::Arc;

use aes_gcm::Aes256Gcm;
use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use futures_util::StreamExt;
use rand::RngCore;

use crate::api::{EventStore, LoadedStream};
use crate::error::{Error, Result};
use crate::personal::keys::SubjectKey;
use crate::personal::plaincache::PlainCache;
use crate::personal::subjects::{KeyRing, SealKey, SubjectKeys};
use crate::rawjson;
use crate::subscription::Subscription;
use crate::types::{
    AppendResult, Direction, EventFilter, NewEvent, Position, ReadFrom, RecordedEvent, Snapshot,
    Stats, StreamAppend, StreamId, StreamSlice,
};

/// What a personal field reads as once its subject was forgotten.
pub const ERASED: &str = "[erased]";

/// A sealed field: `annals:a256g1:[<slot>:]<base64url>`. The slot of a
/// spare key lets recovery find an assignment a crash lost (see `keys`);
/// base64url has no `:`.
const FIELD_PREFIX: &str = "annals:a256g1:";
/// A field sealed by earlier versions (XChaCha20-Poly1305), read only.
const XCHACHA_FIELD_PREFIX: &str = "annals:xc20p1:";

/// How a field was sealed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cipher {
    AesGcm,
    XChaCha,
}

/// The cipher, spare slot (if any) and base64 text of a sealed field's
/// value; `None` for a value that is not sealed.
fn sealed_parts(text: &str) -> Option<(Cipher, Option<u64>, &str)> {
    if let Some(encoded) = text.strip_prefix(XCHACHA_FIELD_PREFIX) {
        return Some((Cipher::XChaCha, None, encoded));
    }
    let rest = text.strip_prefix(FIELD_PREFIX)?;
    Some(match rest.split_once(':') {
        Some((slot, encoded)) => (Cipher::AesGcm, Some(slot.parse().ok()?), encoded),
        None => (Cipher::AesGcm, None, rest),
    })
}
/// A sealed snapshot state: magic ‖ nonce ‖ ciphertext ‖ tag (AES-256-GCM).
const SNAPSHOT_MAGIC: &[u8; 8] = b"ANNALGCM";
/// A snapshot sealed by earlier versions (XChaCha20-Poly1305), read only.
const XCHACHA_SNAPSHOT_MAGIC: &[u8; 8] = b"ANNALENC";

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
    vault: Arc<Vault<dyn SubjectKeys>>,
}

/// The keys and the policy: everything that encrypts and decrypts, shared
/// with the subscriptions it decrypts for.
#[derive(Debug)]
struct Vault<K: ?Sized> {
    keys: Arc<K>,
    policy: PersonalData,
    /// Decrypted event data by position, dropped per subject on erasure.
    cache: PlainCache,
    /// Set once the spares a crash may have left unassigned were looked
    /// for in the log ([`Shredding::recover`]).
    recovered: tokio::sync::OnceCell<()>,
}

/// The default bound of the decrypted-event cache: about 100,000 small
/// customer events.
pub const PLAINTEXT_CACHE_BYTES_DEFAULT: usize = 16 << 20;

/// About what sealing adds to a short field (quotes, prefix, slot, nonce,
/// tag, base64), to size an event's output once.
const SEALED_OVERHEAD_ESTIMATE: usize = 64;

fn aad(stream_id: &str, event_type: &str, field: &str) -> Vec<u8> {
    let mut out = Vec::new();
    aad_into(&mut out, stream_id, event_type, field);
    out
}

/// [`aad`] into a buffer the caller reuses.
fn aad_into(out: &mut Vec<u8>, stream_id: &str, event_type: &str, field: &str) {
    out.clear();
    for part in [
        stream_id.as_bytes(),
        b"\0",
        event_type.as_bytes(),
        b"\0",
        field.as_bytes(),
    ] {
        out.extend_from_slice(part);
    }
}

fn xchacha(key: &[u8; 32]) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(&Key::from(*key))
}

const GCM_NONCE_LEN: usize = 12;
const GCM_TAG_LEN: usize = 16;

/// `nonce ‖ ciphertext ‖ tag` of `plaintext` under a fresh random nonce
/// (the thread's CSPRNG, seeded by the operating system).
fn seal(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(GCM_NONCE_LEN + plaintext.len() + GCM_TAG_LEN);
    seal_into(&mut out, &Aes256Gcm::new(key.into()), aad, plaintext)?;
    Ok(out)
}

/// [`seal`] into a buffer the caller reuses, with the key's cipher made
/// once for several messages (its key schedule is most of the cost of
/// sealing a short field).
fn seal_into(out: &mut Vec<u8>, cipher: &Aes256Gcm, aad: &[u8], plaintext: &[u8]) -> Result<()> {
    out.clear();
    let mut nonce = [0u8; GCM_NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = cipher
        .encrypt_in_place_detached((&nonce).into(), aad, &mut out[GCM_NONCE_LEN..])
        .map_err(|_| Error::KeyStore("encryption failed".into()))?;
    out.extend_from_slice(&tag);
    Ok(())
}

/// The plaintext of what [`seal`] (or, for [`Cipher::XChaCha`], an
/// earlier version) sealed; `None` if it does not authenticate.
fn open(cipher: Cipher, key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    match cipher {
        Cipher::AesGcm => {
            if sealed.len() < GCM_NONCE_LEN + GCM_TAG_LEN {
                return None;
            }
            let (nonce, rest) = sealed.split_at(GCM_NONCE_LEN);
            let (body, tag) = rest.split_at(rest.len() - GCM_TAG_LEN);
            let nonce: [u8; GCM_NONCE_LEN] = nonce.try_into().ok()?;
            let tag: [u8; GCM_TAG_LEN] = tag.try_into().ok()?;
            let mut plaintext = body.to_vec();
            Aes256Gcm::new(key.into())
                .decrypt_in_place_detached((&nonce).into(), aad, &mut plaintext, (&tag).into())
                .ok()?;
            Some(plaintext)
        }
        Cipher::XChaCha => {
            if sealed.len() < 24 + 16 {
                return None;
            }
            let (nonce, body) = sealed.split_at(24);
            let nonce: [u8; 24] = nonce.try_into().ok()?;
            xchacha(key)
                .decrypt(&XNonce::from(nonce), Payload { msg: body, aad })
                .ok()
        }
    }
}

/// A sealed field's value, `annals:a256g1:[<slot>:]<base64>`, in JSON
/// quotes (`quoted`, for patching raw JSON; none of its characters needs
/// escaping) or bare (for a `Value`).
fn sealed_field(sealed: &[u8], spare: Option<u64>, quoted: bool) -> String {
    let mut text = String::with_capacity(FIELD_PREFIX.len() + 24 + sealed.len() * 4 / 3 + 4);
    sealed_field_into(&mut text, sealed, spare, quoted);
    text
}

/// [`sealed_field`] appended to `text`.
fn sealed_field_into(text: &mut String, sealed: &[u8], spare: Option<u64>, quoted: bool) {
    use std::fmt::Write;
    if quoted {
        text.push('"');
    }
    text.push_str(FIELD_PREFIX);
    if let Some(slot) = spare {
        let _ = write!(text, "{slot}:");
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(sealed, text);
    if quoted {
        text.push('"');
    }
}

/// An event with personal fields reached sealing without its subject's key.
fn no_key(stream_id: &StreamId) -> Error {
    Error::KeyStore(format!("data subject {stream_id} has no key to seal under"))
}

/// `"[erased]"` as JSON text.
const ERASED_JSON: &[u8] = b"\"[erased]\"";

/// What reading an event's personal fields came to.
enum Opened {
    /// No personal field was encrypted.
    Unchanged,
    /// Decrypted with the subject's live key (so it may be cached).
    Decrypted(Bytes),
    /// The subject was forgotten: the fields read as erased.
    Erased(Bytes),
}

fn damaged(event: &RecordedEvent, field: &str, why: &str) -> Error {
    Error::KeyStore(format!(
        "personal field {field} of the event at position {} ({}) {why}",
        event.position, event.event_type
    ))
}

/// The plaintext JSON of one sealed field (`encoded` without its prefix).
fn open_field(
    cipher: Cipher,
    key: &[u8; 32],
    event: &RecordedEvent,
    field: &str,
    encoded: &str,
) -> Result<Vec<u8>> {
    let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| damaged(event, field, "is not valid ciphertext"))?;
    open(
        cipher,
        key,
        &aad(event.stream_id.as_str(), &event.event_type, field),
        &sealed,
    )
    .ok_or_else(|| {
        damaged(
            event,
            field,
            "does not decrypt with the subject's key (wrong key or damaged data)",
        )
    })
}

/// The spare slots named by the sealed personal fields of an event's data.
fn spare_slots(data: &[u8], fields: &[String]) -> Vec<u64> {
    let Ok(serde_json::Value::Object(object)) = serde_json::from_slice(data) else {
        return Vec::new();
    };
    fields
        .iter()
        .filter_map(|f| object.get(f.as_str())?.as_str())
        .filter_map(|text| sealed_parts(text)?.1)
        .collect()
}

impl<S: EventStore> Shredding<S> {
    /// With a decrypted-event cache of [`PLAINTEXT_CACHE_BYTES_DEFAULT`].
    pub fn new(inner: S, keys: Arc<dyn SubjectKeys>, policy: PersonalData) -> Self {
        Self::with_plaintext_cache(inner, keys, policy, PLAINTEXT_CACHE_BYTES_DEFAULT)
    }

    /// With a decrypted-event cache of at most `plaintext_cache_bytes_max`
    /// bytes (0: none), in memory only; see the module docs.
    pub fn with_plaintext_cache(
        inner: S,
        keys: Arc<dyn SubjectKeys>,
        policy: PersonalData,
        plaintext_cache_bytes_max: usize,
    ) -> Self {
        Self {
            inner,
            vault: Arc::new(Vault {
                keys,
                policy,
                cache: PlainCache::new(plaintext_cache_bytes_max),
                recovered: tokio::sync::OnceCell::new(),
            }),
        }
    }

    /// Finds the spare keys that events were sealed under while their
    /// assignment had not reached the key log when the last run stopped,
    /// reading the log above the key store's floor, and hands them back to
    /// the key store; then has spares made if the pool is low, so that the
    /// first new subjects find one (waiting for them if there were none). Every other method does it first; call
    /// it at startup to see its errors there.
    pub async fn recover(&self) -> Result<()> {
        self.vault
            .recovered
            .get_or_try_init(|| async {
                self.reconcile().await?;
                self.vault.keys.prepare().await
            })
            .await
            .map(|_| ())
    }

    async fn reconcile(&self) -> Result<()> {
        let keys = &self.vault.keys;
        let Some((floor, slots)) = keys.unreconciled() else {
            return Ok(());
        };
        let head = self.inner.head().await?;
        let mut used: HashMap<u64, String> = HashMap::new();
        let mut from = Position(floor).next();
        let page = self.inner.read_page_max().max(1);
        let mut read = 0u64;
        let mut damaged: Vec<Position> = Vec::new();
        while from <= head {
            let events = match self.inner.read_all(from, page).await {
                Ok(events) => events,
                // Damage in the log must not keep the intact rest from being
                // served: read around it one event at a time.
                Err(Error::Corruption { .. }) => match self.inner.read_all(from, 1).await {
                    Ok(events) => events,
                    Err(e @ Error::Corruption { .. }) => {
                        tracing::error!(position = from.0, error = %e, "key store: an event above the floor is damaged; its spare key, if any, stays held back");
                        damaged.push(from);
                        from = from.next();
                        continue;
                    }
                    Err(e) => return Err(e),
                },
                Err(e) => return Err(e),
            };
            let Some(last) = events.last() else {
                break;
            };
            from = last.position.next();
            for event in events.iter().filter(|e| e.position <= head) {
                read += 1;
                let Some(fields) = self
                    .vault
                    .policy
                    .personal_fields(event.stream_id.as_str(), &event.event_type)
                else {
                    continue;
                };
                for slot in spare_slots(&event.data, fields) {
                    if !slots.contains(&slot) {
                        continue;
                    }
                    let subject = event.stream_id.as_str();
                    match used.get(&slot) {
                        Some(owner) if owner != subject => {
                            return Err(Error::KeyStore(format!(
                                "spare key slot {slot} seals events of two data subjects ({owner} and {subject})"
                            )));
                        }
                        Some(_) => {}
                        None => {
                            used.insert(slot, subject.to_owned());
                        }
                    }
                }
            }
        }
        tracing::info!(
            events = read,
            found = used.len(),
            "key store: looked for spare keys a crash left unassigned above log position {floor}"
        );
        if !damaged.is_empty() {
            // A damaged event may have been sealed under one of the spares:
            // handing them out again could give its key to another subject.
            // They stay held back (new subjects get keys of their own) until
            // the log reads whole again.
            tracing::error!(
                damaged = damaged.len(),
                "key store: spare keys stay held back because the event log is damaged above position {floor}"
            );
            return Ok(());
        }
        keys.reconcile(
            used.into_iter()
                .map(|(slot, subject)| (subject, slot))
                .collect(),
            head.0,
        )
        .await
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Whether the events committed where `committed` says are `plain`,
    /// read back and decrypted: the same types, schema versions and
    /// metadata, and data that decodes to the same JSON.
    async fn means_the_same(
        &self,
        plain: &[StreamAppend],
        committed: &[AppendResult],
    ) -> Result<bool> {
        for (append, at) in plain.iter().zip(committed) {
            let count = append.events.len();
            let slice = self
                .inner
                .read_stream(
                    &at.stream_id,
                    ReadFrom::Version(at.first_version),
                    Direction::Forward,
                    count,
                )
                .await?;
            let stored = self.vault.decrypt_all(slice.events).await?;
            if stored.len() != count {
                return Ok(false);
            }
            for (stored, new) in stored.iter().zip(&append.events) {
                let data = |bytes: &[u8]| serde_json::from_slice::<serde_json::Value>(bytes).ok();
                if stored.id != new.id
                    || stored.event_type != new.event_type
                    || stored.schema_version != new.schema_version
                    || stored.metadata != new.metadata
                    || data(&stored.data).is_none()
                    || data(&stored.data) != data(&new.data)
                {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Every event of the stream, decrypted, without a snapshot.
    async fn load_events(&self, stream_id: &StreamId) -> Result<LoadedStream> {
        let mut loaded = self.inner.load(stream_id, None).await?;
        loaded.events = self.vault.decrypt_all(loaded.events).await?;
        Ok(loaded)
    }

    pub fn keys(&self) -> &Arc<dyn SubjectKeys> {
        &self.vault.keys
    }
}

impl<K: SubjectKeys + ?Sized> Vault<K> {
    /// Whether any event of the appends has personal fields to seal.
    fn has_personal_data(&self, appends: &[StreamAppend]) -> bool {
        appends.iter().any(|a| {
            a.events.iter().any(|e| {
                self.policy
                    .personal_fields(a.stream_id.as_str(), &e.event_type)
                    .is_some()
            })
        })
    }

    /// For each append, the key its personal data is sealed under (`None`
    /// for an append without any), made where the subject has none yet.
    async fn prepare_keys(&self, appends: &[StreamAppend]) -> Result<Vec<Option<SealKey>>> {
        // The policy first: it answers most appends (other streams, events
        // without personal fields) without the key store.
        let personal: Vec<bool> = appends
            .iter()
            .map(|a| {
                a.events.iter().any(|e| {
                    self.policy
                        .personal_fields(a.stream_id.as_str(), &e.event_type)
                        .is_some()
                })
            })
            .collect();
        let subjects: Vec<&str> = appends
            .iter()
            .zip(&personal)
            .filter(|(_, personal)| **personal)
            .map(|(a, _)| a.stream_id.as_str())
            .collect();
        if subjects.is_empty() {
            return Ok(vec![None; appends.len()]);
        }
        let mut keys = self.keys.sealing_keys(&subjects).await?.into_iter();
        personal
            .into_iter()
            .map(|personal| match personal {
                false => Ok(None),
                true => keys.next().map(Some).ok_or_else(|| {
                    Error::KeyStore(
                        "the key store answered for fewer data subjects than asked".into(),
                    )
                }),
            })
            .collect()
    }

    fn encrypt_appends(
        &self,
        appends: Vec<StreamAppend>,
        keys: Vec<Option<SealKey>>,
    ) -> Result<Vec<StreamAppend>> {
        appends
            .into_iter()
            .zip(keys)
            .map(|(mut a, key)| {
                a.events = std::mem::take(&mut a.events)
                    .into_iter()
                    .map(|e| self.encrypt_event(&a.stream_id, e, key))
                    .collect::<Result<_>>()?;
                Ok(a)
            })
            .collect()
    }

    /// Seals the event's personal fields, under `key` if given, else under
    /// the key the key store has for the subject by now.
    fn encrypt_event(
        &self,
        stream_id: &StreamId,
        mut event: NewEvent,
        key: Option<SealKey>,
    ) -> Result<NewEvent> {
        let Some(fields) = self
            .policy
            .personal_fields(stream_id.as_str(), &event.event_type)
        else {
            return Ok(event);
        };
        let data = event.data.clone();
        // The fast scanner first; what it refuses, `serde_json` reads.
        let mut members: Vec<(std::borrow::Cow<'_, str>, &str)> = Vec::with_capacity(8);
        if !rawjson::scan_object(&data, &mut members) {
            members = match rawjson::object_members(&data) {
                Some(found) => found.into_iter().map(|m| (m.name, m.value.get())).collect(),
                None => return self.encrypt_value(stream_id, event, fields, key),
            };
        }
        if rawjson::has_duplicate_names(&members, |m| &m.0) {
            // The `Value` path decides, as it always has.
            return self.encrypt_value(stream_id, event, fields, key);
        }
        let base = data.as_ptr() as usize;
        let mut sealer: Option<(Aes256Gcm, Option<u64>)> = None;
        // The output is written as the members are met (they come in
        // order), and the buffers are shared by the event's fields: a
        // registration allocates a handful of times, not per field.
        let mut out: Vec<u8> = Vec::new();
        let mut copied = 0;
        let (mut aad, mut sealed, mut text) = (Vec::new(), Vec::new(), String::new());
        for (name, value) in &members {
            let Some(field) = fields.iter().find(|f| **f == *name) else {
                continue;
            };
            // The member's JSON text is the plaintext: nothing is decoded
            // or re-encoded.
            if *value == "null" {
                continue;
            }
            let Some(start) = (value.as_ptr() as usize).checked_sub(base) else {
                return self.encrypt_value(stream_id, event, fields, key);
            };
            let (cipher, spare) = match &sealer {
                Some(s) => s,
                None => {
                    let (key, spare) = match key {
                        Some(k) => k,
                        None => return Err(no_key(stream_id)),
                    };
                    // Sized once the event turns out to have a field to seal.
                    out.reserve(data.len() + 2 * SEALED_OVERHEAD_ESTIMATE);
                    aad.reserve(128);
                    sealed.reserve(128);
                    text.reserve(192);
                    sealer.insert((Aes256Gcm::new((&key).into()), spare))
                }
            };
            aad_into(&mut aad, stream_id.as_str(), &event.event_type, field);
            seal_into(&mut sealed, cipher, &aad, value.as_bytes())?;
            text.clear();
            sealed_field_into(&mut text, &sealed, *spare, true);
            out.extend_from_slice(&data[copied..start]);
            out.extend_from_slice(text.as_bytes());
            copied = start + value.len();
        }
        if sealer.is_some() {
            out.extend_from_slice(&data[copied..]);
            event.data = Bytes::from(out);
        }
        Ok(event)
    }

    /// Sealing through a `serde_json::Value` of the whole data: for data
    /// that is not an object with distinct member names.
    fn encrypt_value(
        &self,
        stream_id: &StreamId,
        mut event: NewEvent,
        fields: &[String],
        key: Option<SealKey>,
    ) -> Result<NewEvent> {
        let mut data: serde_json::Value = serde_json::from_slice(&event.data)
            .map_err(|e| Error::InvalidAppend(format!("event data is not JSON: {e}")))?;
        let Some(object) = data.as_object_mut() else {
            return Err(Error::InvalidAppend(format!(
                "{} carries personal data, so its data must be a JSON object",
                event.event_type
            )));
        };
        for field in fields {
            let Some(value) = object.get_mut(field.as_str()) else {
                continue;
            };
            if value.is_null() {
                continue;
            }
            let (key, spare) = key.ok_or_else(|| no_key(stream_id))?;
            let plaintext = serde_json::to_vec(value)
                .map_err(|e| Error::InvalidAppend(format!("personal field {field}: {e}")))?;
            let sealed = seal(
                &key,
                &aad(stream_id.as_str(), &event.event_type, field),
                &plaintext,
            )?;
            *value = serde_json::Value::String(sealed_field(&sealed, spare, false));
        }
        event.data = Bytes::from(
            serde_json::to_vec(&data).map_err(|e| Error::InvalidAppend(e.to_string()))?,
        );
        Ok(event)
    }

    /// The keys of the subjects whose personal data `events` may hold.
    async fn ring_for(&self, events: &[RecordedEvent]) -> Result<KeyRing> {
        let subjects = events
            .iter()
            .filter(|e| {
                self.policy
                    .personal_fields(e.stream_id.as_str(), &e.event_type)
                    .is_some()
            })
            .map(|e| e.stream_id.clone())
            .collect();
        KeyRing::of(&*self.keys, subjects).await
    }

    fn decrypt_event(&self, ring: &KeyRing, mut event: RecordedEvent) -> Result<RecordedEvent> {
        let Some(fields) = self
            .policy
            .personal_fields(event.stream_id.as_str(), &event.event_type)
        else {
            return Ok(event);
        };
        let subject = event.stream_id.as_str();
        if let Some(data) = self.cache.get(event.position.0, subject) {
            // Served only while the key is live: an erasure made around
            // this layer must not be hidden by the cache.
            if ring.is_live(subject) {
                event.data = data;
                return Ok(event);
            }
        }
        let opened = match rawjson::object_members(&event.data) {
            Some(members) if !rawjson::has_duplicate_names(&members, |m| &m.name) => {
                self.open_members(ring, &event, fields, &members)?
            }
            // Not an object, or one whose duplicate names the patch could
            // not treat as a `Value` does (the last one wins): the slow path
            // decides, exactly as it always has.
            _ => self.open_value(ring, &event, fields)?,
        };
        match opened {
            Opened::Unchanged => {}
            Opened::Erased(data) => event.data = data,
            Opened::Decrypted(data) => {
                if self.cache.is_enabled() {
                    self.cache
                        .insert_if(event.position.0, subject, data.clone(), || {
                            matches!(self.keys.known(subject), Some(SubjectKey::Key(_)))
                        });
                }
                event.data = data;
            }
        }
        Ok(event)
    }

    /// Decrypts the personal members of an event's data object by patching
    /// their values in the raw JSON: the other members are neither decoded
    /// nor re-encoded.
    fn open_members(
        &self,
        ring: &KeyRing,
        event: &RecordedEvent,
        fields: &[String],
        members: &[rawjson::Member<'_>],
    ) -> Result<Opened> {
        let subject = event.stream_id.as_str();
        let mut key: Option<SubjectKey> = None;
        let mut patches = Vec::new();
        for member in members {
            let Some(field) = fields.iter().find(|f| **f == member.name) else {
                continue;
            };
            let Some(text) = rawjson::as_str(member.value) else {
                continue;
            };
            let Some((cipher, _, encoded)) = sealed_parts(&text) else {
                continue;
            };
            // One key lookup per event, not per field.
            let key = match &key {
                Some(key) => key,
                None => key.insert(ring.require(subject)?),
            };
            let replacement = match key {
                SubjectKey::Erased => ERASED_JSON.to_vec(),
                SubjectKey::Key(key) => {
                    let plaintext = open_field(cipher, key, event, field, encoded)?;
                    // Validated as JSON (as the `Value` path would parse
                    // it), and spliced in as the text it is.
                    serde_json::from_slice::<&serde_json::value::RawValue>(&plaintext)
                        .map_err(|_| {
                            damaged(event, field, "decrypts to something that is not JSON")
                        })?
                        .get()
                        .as_bytes()
                        .to_vec()
                }
            };
            patches.push((member.range.clone(), replacement));
        }
        Ok(match key {
            None => Opened::Unchanged,
            Some(key) => {
                let data = Bytes::from(rawjson::splice(&event.data, &patches));
                match key {
                    SubjectKey::Erased => Opened::Erased(data),
                    SubjectKey::Key(_) => Opened::Decrypted(data),
                }
            }
        })
    }

    /// The original path, through a `serde_json::Value` of the whole data:
    /// for data that is not an object with distinct member names, and the
    /// reference the patching path is tested against.
    fn open_value(
        &self,
        ring: &KeyRing,
        event: &RecordedEvent,
        fields: &[String],
    ) -> Result<Opened> {
        let mut data: serde_json::Value = match serde_json::from_slice(&event.data) {
            Ok(data) => data,
            Err(_) => return Ok(Opened::Unchanged),
        };
        let Some(object) = data.as_object_mut() else {
            return Ok(Opened::Unchanged);
        };
        let mut erased = false;
        let mut changed = false;
        for field in fields {
            let Some(value) = object.get_mut(field.as_str()) else {
                continue;
            };
            let Some((cipher, _, encoded)) = value.as_str().and_then(sealed_parts) else {
                continue;
            };
            *value = match ring.require(event.stream_id.as_str())? {
                SubjectKey::Erased => {
                    erased = true;
                    serde_json::Value::String(ERASED.into())
                }
                SubjectKey::Key(key) => {
                    let plaintext = open_field(cipher, &key, event, field, encoded)?;
                    serde_json::from_slice(&plaintext).map_err(|_| {
                        damaged(event, field, "decrypts to something that is not JSON")
                    })?
                }
            };
            changed = true;
        }
        if !changed {
            return Ok(Opened::Unchanged);
        }
        let data =
            Bytes::from(serde_json::to_vec(&data).map_err(|e| Error::KeyStore(e.to_string()))?);
        Ok(if erased {
            Opened::Erased(data)
        } else {
            Opened::Decrypted(data)
        })
    }

    async fn decrypt_all(&self, events: Vec<RecordedEvent>) -> Result<Vec<RecordedEvent>> {
        let ring = self.ring_for(&events).await?;
        events
            .into_iter()
            .map(|e| self.decrypt_event(&ring, e))
            .collect()
    }

    async fn open_snapshot(&self, snapshot: Option<Snapshot>) -> Result<Option<Snapshot>> {
        let Some(mut snapshot) = snapshot else {
            return Ok(None);
        };
        let (cipher, sealed) =
            if let Some(sealed) = snapshot.state.strip_prefix(&SNAPSHOT_MAGIC[..]) {
                (Cipher::AesGcm, sealed)
            } else if let Some(sealed) = snapshot.state.strip_prefix(&XCHACHA_SNAPSHOT_MAGIC[..]) {
                (Cipher::XChaCha, sealed)
            } else {
                return Ok(Some(snapshot));
            };
        let ring = KeyRing::of(&*self.keys, vec![snapshot.stream_id.clone()]).await?;
        match ring.require(snapshot.stream_id.as_str())? {
            // The state of a forgotten subject is rebuilt from its events,
            // which now read as erased.
            SubjectKey::Erased => Ok(None),
            SubjectKey::Key(key) => {
                let aad = [
                    snapshot.stream_id.as_str().as_bytes(),
                    &snapshot.version.to_le_bytes(),
                ]
                .concat();
                let state = open(cipher, &key, &aad, sealed).ok_or_else(|| {
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
        // event sealed with it can be acknowledged: a spare (synced ahead of
        // need) or, when none is left, one made now in the key log's group
        // commit (shared with every concurrent new subject).
        self.recover().await?;
        let keys = self.vault.prepare_keys(&appends).await?;
        // Sealing uses a fresh nonce, so a retry of a committed append
        // reaches the store as other bytes: what it means is compared here.
        let plain = self
            .vault
            .has_personal_data(&appends)
            .then(|| appends.clone());
        let appends = self.vault.encrypt_appends(appends, keys)?;
        let results = match self.inner.append_many(appends).await {
            Err(Error::EventIdConflict(conflict)) => {
                let retried = match (&plain, &conflict.committed) {
                    (Some(plain), Some(committed)) => self.means_the_same(plain, committed).await?,
                    _ => false,
                };
                match conflict.committed.as_ref().filter(|_| retried) {
                    Some(committed) => committed.clone(),
                    None => return Err(Error::EventIdConflict(conflict)),
                }
            }
            other => other?,
        };
        if let Some(last) = results.iter().map(|r| r.last_position).max() {
            self.vault.keys.note_appended(last.0);
        }
        Ok(results)
    }

    async fn read_stream(
        &self,
        stream_id: &StreamId,
        from: ReadFrom,
        direction: Direction,
        max_count: usize,
    ) -> Result<StreamSlice> {
        self.recover().await?;
        let mut slice = self
            .inner
            .read_stream(stream_id, from, direction, max_count)
            .await?;
        slice.events = self.vault.decrypt_all(slice.events).await?;
        Ok(slice)
    }

    async fn read_all(&self, from: Position, max_count: usize) -> Result<Vec<RecordedEvent>> {
        self.recover().await?;
        let events = self.inner.read_all(from, max_count).await?;
        self.vault.decrypt_all(events).await
    }

    async fn subscribe(&self, from: Position, filter: EventFilter) -> Result<Subscription> {
        self.recover().await?;
        let vault = self.vault.clone();
        let inner = self.inner.subscribe(from, filter).await?;
        Ok(Subscription::from_stream(inner.then(move |event| {
            let vault = vault.clone();
            async move {
                let event = event?;
                let ring = vault.ring_for(std::slice::from_ref(&event)).await?;
                vault.decrypt_event(&ring, event)
            }
        })))
    }

    async fn save_snapshot(
        &self,
        stream_id: &StreamId,
        version: u64,
        schema_version: u32,
        state: Bytes,
    ) -> Result<()> {
        self.recover().await?;
        if !self.vault.policy.is_subject_stream(stream_id.as_str()) {
            return self
                .inner
                .save_snapshot(stream_id, version, schema_version, state)
                .await;
        }
        let key = match self.vault.keys.snapshot_key(stream_id.as_str()).await? {
            Some(key) => key,
            // A forgotten subject's state may have been loaded before the
            // erasure; no snapshot of it is ever written again.
            None => return Ok(()),
        };
        let aad = [stream_id.as_str().as_bytes(), &version.to_le_bytes()].concat();
        let sealed = seal(&key, &aad, &state)?;
        let state = Bytes::from([&SNAPSHOT_MAGIC[..], &sealed].concat());
        self.inner
            .save_snapshot(stream_id, version, schema_version, state)
            .await
    }

    async fn load_snapshot(&self, stream_id: &StreamId) -> Result<Option<Snapshot>> {
        self.recover().await?;
        let snapshot = self.inner.load_snapshot(stream_id).await?;
        self.vault.open_snapshot(snapshot).await
    }

    async fn stats(&self) -> Result<Stats> {
        self.inner.stats().await
    }

    async fn head(&self) -> Result<Position> {
        self.inner.head().await
    }

    async fn list_streams(&self, listing: crate::StreamListing) -> Result<crate::StreamPage> {
        self.inner.list_streams(listing).await
    }

    async fn list_categories(&self, limit: usize) -> Result<crate::CategoryPage> {
        self.inner.list_categories(limit).await
    }

    async fn ready(&self) -> Result<()> {
        self.inner.ready().await
    }

    async fn load(
        &self,
        stream_id: &StreamId,
        snapshot_schema: Option<u32>,
    ) -> Result<LoadedStream> {
        self.recover().await?;
        // One load of the inner store (one trip to its blocking pool, as
        // without this layer); its snapshot is opened here.
        let mut loaded = self.inner.load(stream_id, snapshot_schema).await?;
        if loaded.snapshot.is_some() {
            loaded.snapshot = self.vault.open_snapshot(loaded.snapshot.take()).await?;
            if loaded.snapshot.is_none() {
                // The subject was forgotten: its snapshot is ignored and its
                // state rebuilt from all its events, which read as erased.
                return self.load_events(stream_id).await;
            }
        }
        loaded.events = self.vault.decrypt_all(loaded.events).await?;
        Ok(loaded)
    }

    async fn forget_subject(&self, stream_id: &StreamId) -> Result<()> {
        self.recover().await?;
        if !self.vault.policy.is_subject_stream(stream_id.as_str()) {
            return Err(Error::InvalidAppend(format!(
                "stream {stream_id} does not belong to a data subject"
            )));
        }
        let subject = stream_id.as_str();
        // Whatever the outcome: once the erasure may be recorded, no
        // plaintext of the subject stays cached. Entries inserted after
        // this cannot exist, as insertion checks the key under the cache's
        // lock and the key store marks the subject erased before it
        // destroys the key record.
        let forgotten = self.vault.keys.forget_subject(subject).await;
        self.vault.cache.forget(subject);
        forgotten
    }

    fn read_page_max(&self) -> usize {
        self.inner.read_page_max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::personal::keys::{KeyStore, SealingKey};
    use crate::types::Timestamp;
    use futures_util::FutureExt;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    const FIELDS: [&str; 3] = ["name", "email", "phone"];

    fn vault(dir: &std::path::Path, cache_bytes: usize) -> Vault<KeyStore> {
        let keys = KeyStore::open(dir).unwrap();
        // Appends create keys before they encrypt; these tests encrypt
        // directly.
        keys.key_for_write("customer-1").unwrap();
        Vault {
            keys: Arc::new(keys),
            policy: PersonalData::new()
                .subject_streams("customer-")
                .fields("CustomerRegistered", FIELDS),
            cache: PlainCache::new(cache_bytes),
            recovered: tokio::sync::OnceCell::new(),
        }
    }

    /// The subject's own key, as sealing finds it.
    fn own(vault: &Vault<KeyStore>) -> Option<SealKey> {
        vault.keys.key_for_sealing("customer-1").unwrap()
    }

    /// The keys reading `event` looks up (the file key store answers at
    /// once).
    fn ring_now(vault: &Vault<KeyStore>, event: &RecordedEvent) -> KeyRing {
        let ring = vault.ring_for(std::slice::from_ref(event));
        ring.now_or_never().unwrap().unwrap()
    }

    impl Vault<KeyStore> {
        fn open_now(&self, event: RecordedEvent) -> Result<RecordedEvent> {
            self.decrypt_event(&ring_now(self, &event), event)
        }
    }

    fn recorded(stream: &StreamId, position: u64, event: NewEvent) -> RecordedEvent {
        RecordedEvent {
            id: uuid::Uuid::nil(),
            stream_id: stream.clone(),
            version: 1,
            position: Position(position),
            event_type: event.event_type,
            schema_version: event.schema_version,
            timestamp: Timestamp(0),
            data: event.data,
            metadata: Bytes::from_static(b"{}"),
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            ".{0,12}".prop_map(Value::String),
            // Strings that look sealed but are not valid ciphertext are
            // only errors in personal fields; elsewhere they pass through.
            Just(Value::String(format!("{FIELD_PREFIX}x"))),
        ];
        leaf.prop_recursive(2, 12, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{0,4}", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Member names: the personal ones, and others.
    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(FIELDS.to_vec()).prop_map(String::from),
            "[a-z_]{1,8}",
        ]
    }

    fn outcome(opened: Result<Opened>) -> std::result::Result<Option<(Value, bool)>, String> {
        match opened {
            Ok(Opened::Unchanged) => Ok(None),
            Ok(Opened::Decrypted(d)) => Ok(Some((serde_json::from_slice(&d).unwrap(), false))),
            Ok(Opened::Erased(d)) => Ok(Some((serde_json::from_slice(&d).unwrap(), true))),
            Err(e) => Err(e.to_string()),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// For any object, sealed by the append path, then perhaps tampered
        /// with (a personal field replaced by a plain or fake-sealed value)
        /// and perhaps with its subject forgotten, patching the raw JSON reads
        /// exactly as the `Value` path: the same document, the same
        /// erased-or-not, the same error.
        #[test]
        fn patching_raw_json_reads_as_the_value_path(
            members in prop::collection::btree_map(name(), json_value(), 0..6),
            tamper in prop::option::of((prop::sample::select(FIELDS.to_vec()), json_value())),
            forget in any::<bool>(),
            pretty in any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let vault = vault(dir.path(), 0);
            let stream = StreamId::new("customer-1").unwrap();
            let object = Value::Object(members.into_iter().collect());
            let sealed = vault
                .encrypt_event(&stream, NewEvent::json("CustomerRegistered", &object).unwrap(), own(&vault))
                .unwrap();
            let mut data: Value = serde_json::from_slice(&sealed.data).unwrap();
            let untampered = tamper.is_none();
            if let Some((field, value)) = tamper {
                data[field] = value;
            }
            let bytes = if pretty {
                serde_json::to_vec_pretty(&data).unwrap()
            } else {
                serde_json::to_vec(&data).unwrap()
            };
            let event = recorded(
                &stream,
                1,
                NewEvent::new("CustomerRegistered", Bytes::from(bytes)),
            );
            if forget {
                vault.keys.forget("customer-1").unwrap();
            }
            let fields: Vec<String> = FIELDS.iter().map(|f| f.to_string()).collect();
            let members = rawjson::object_members(&event.data).unwrap();
            prop_assert!(!rawjson::has_duplicate_names(&members, |m| &m.name));
            let patched = outcome(vault.open_members(&ring_now(&vault, &event), &event, &fields, &members));
            let reference = outcome(vault.open_value(&ring_now(&vault, &event), &event, &fields));
            prop_assert_eq!(&patched, &reference);
            // And an untampered event of a live subject reads as written.
            if untampered && !forget {
                match patched {
                    Ok(None) => {}
                    Ok(Some((read, false))) => prop_assert_eq!(read, object),
                    other => prop_assert!(false, "unexpected {:?}", other),
                }
            }
        }
    }

    proptest! {
        /// Sealing patches the raw JSON (whatever its layout) and reads
        /// back as the document written; the `Value` path agrees.
        #[test]
        fn sealing_raw_json_reads_back_as_written(
            members in prop::collection::btree_map(name(), json_value(), 0..6),
            pretty in any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let vault = vault(dir.path(), 0);
            let stream = StreamId::new("customer-1").unwrap();
            let object = Value::Object(members.into_iter().collect());
            let bytes = if pretty {
                serde_json::to_vec_pretty(&object).unwrap()
            } else {
                serde_json::to_vec(&object).unwrap()
            };
            let event = NewEvent::new("CustomerRegistered", Bytes::from(bytes));
            let fields: Vec<String> = FIELDS.iter().map(|f| f.to_string()).collect();
            // The key as the append path prepares it, and as looked up.
            let SealingKey::Ready(key, spare) = vault.keys.key_or_spare("customer-1").unwrap() else {
                panic!("customer-1 has a key");
            };
            let prepared = Some((key, spare));
            for sealed in [
                vault.encrypt_event(&stream, event.clone(), prepared).unwrap(),
                vault.encrypt_event(&stream, event.clone(), own(&vault)).unwrap(),
                vault.encrypt_value(&stream, event, &fields, prepared).unwrap(),
            ] {
                let stored: Value = serde_json::from_slice(&sealed.data).unwrap();
                for field in FIELDS {
                    if let Some(value) = stored.get(field).filter(|v| !v.is_null()) {
                        prop_assert!(value.as_str().is_some_and(|t| t.starts_with(FIELD_PREFIX)), "{}", value);
                    }
                }
                let read = vault.open_now(recorded(&stream, 1, sealed)).unwrap();
                prop_assert_eq!(serde_json::from_slice::<Value>(&read.data).unwrap(), object.clone());
            }
        }
    }

    #[test]
    fn fields_and_snapshots_sealed_by_earlier_versions_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let vault = vault(dir.path(), 0);
        let Some(SubjectKey::Key(key)) = vault.keys.lookup("customer-1").unwrap() else {
            panic!("no key");
        };
        let xchacha_seal = |aad: &[u8], plaintext: &[u8]| {
            let nonce = [7u8; 24];
            let body = xchacha(&key)
                .encrypt(
                    &XNonce::from(nonce),
                    Payload {
                        msg: plaintext,
                        aad,
                    },
                )
                .unwrap();
            [&nonce[..], &body].concat()
        };
        let stream = StreamId::new("customer-1").unwrap();
        let sealed = xchacha_seal(&aad("customer-1", "CustomerRegistered", "name"), b"\"Ada\"");
        let text = format!(
            "{XCHACHA_FIELD_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed)
        );
        let event = recorded(
            &stream,
            1,
            NewEvent::json("CustomerRegistered", &json!({"name": text, "n": 1})).unwrap(),
        );
        let read = vault.open_now(event).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&read.data).unwrap(),
            json!({"name": "Ada", "n": 1})
        );
        let state = xchacha_seal(
            &[b"customer-1".as_slice(), &9u64.to_le_bytes()].concat(),
            b"state",
        );
        let snapshot = Snapshot {
            stream_id: stream.clone(),
            version: 9,
            schema_version: 1,
            timestamp: Timestamp(0),
            state: Bytes::from([&XCHACHA_SNAPSHOT_MAGIC[..], &state].concat()),
        };
        let opened = vault
            .open_snapshot(Some(snapshot))
            .now_or_never()
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(&opened.state[..], b"state");
    }

    #[test]
    fn duplicate_names_and_non_objects_take_the_value_path() {
        let dir = tempfile::tempdir().unwrap();
        let vault = vault(dir.path(), 1 << 20);
        let stream = StreamId::new("customer-1").unwrap();
        let sealed = vault
            .encrypt_event(
                &stream,
                NewEvent::json("CustomerRegistered", &json!({"name": "Ada"})).unwrap(),
                own(&vault),
            )
            .unwrap();
        let sealed_name: Value = serde_json::from_slice(&sealed.data).unwrap();
        // The last of two `name` members wins, as in a `Value`.
        let twice = format!(r#"{{"name":"Bob","name":{}}}"#, sealed_name["name"]);
        let event = recorded(
            &stream,
            1,
            NewEvent::new("CustomerRegistered", Bytes::from(twice)),
        );
        let read = vault.open_now(event).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&read.data).unwrap(),
            json!({"name": "Ada"})
        );
        for odd in ["[1,2]", "\"x\"", "not json"] {
            let event = recorded(&stream, 2, NewEvent::new("CustomerRegistered", odd));
            assert_eq!(&vault.open_now(event).unwrap().data[..], odd.as_bytes());
        }
    }

    #[test]
    fn cached_plaintext_is_never_served_once_the_subject_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let vault = vault(dir.path(), 1 << 20);
        let stream = StreamId::new("customer-1").unwrap();
        let sealed = vault
            .encrypt_event(
                &stream,
                NewEvent::json("CustomerRegistered", &json!({"name": "Ada", "n": 1})).unwrap(),
                own(&vault),
            )
            .unwrap();
        let event = recorded(&stream, 7, sealed);
        let first = vault.open_now(event.clone()).unwrap();
        assert_eq!(vault.cache.usage().0, 1);
        // Warm: served from the cache, the same bytes.
        assert_eq!(vault.open_now(event.clone()).unwrap().data, first.data);
        // An erasure made on the key store directly, around this layer,
        // still wins over the cache.
        vault.keys.forget("customer-1").unwrap();
        let erased = vault.open_now(event.clone()).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&erased.data).unwrap(),
            json!({"name": ERASED, "n": 1})
        );
        // Erased data is not cached, and dropping the subject empties it.
        vault.cache.forget("customer-1");
        vault.open_now(event).unwrap();
        assert_eq!(vault.cache.usage().0, 0);
    }
}
