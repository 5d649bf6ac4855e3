//! What [`Shredding`] needs from wherever data subjects' keys live: the
//! [`KeyStore`] beside a data directory, or a table of the database the
//! log is in (the `pg-store` crate). A key store answers for many subjects
//! at once, because a page of events or a group of appends names many and
//! a database answers them in one round trip.
//!
//! [`Shredding`]: crate::Shredding

use std::collections::HashSet;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::personal::keys::{KeyStore, SealingKey, SubjectKey};
use crate::types::StreamId;

/// A key to seal new personal data under, and the slot it names in the
/// sealed field when it is a spare handed out ahead of its assignment
/// being durable (see `keys`); `None` for a key that is the subject's for
/// good.
pub type SealKey = ([u8; 32], Option<u64>);

/// Where the data subjects' keys live.
#[async_trait]
pub trait SubjectKeys: Send + Sync + std::fmt::Debug {
    /// Each subject's key or erasure as it stands now, in the order asked;
    /// `Err` with the reason for a subject whose key cannot be had (none
    /// was ever made, or its record is damaged). Data sealed for a subject
    /// exists wherever this is asked, so a missing key is the key store's
    /// loss, never an erasure.
    async fn keys_of(&self, subjects: &[&str]) -> Result<Vec<KeyOf>>;

    /// The key each subject's new personal data is sealed under, in the
    /// order asked, made (durably) where the subject has none. A forgotten
    /// subject is refused: no personal data is stored for it again.
    async fn sealing_keys(&self, subjects: &[&str]) -> Result<Vec<SealKey>>;

    /// The subject's own key (never a spare) to seal a snapshot of its
    /// stream under, made if missing; `None` once the subject is forgotten.
    async fn snapshot_key(&self, subject: &str) -> Result<Option<[u8; 32]>>;

    /// Destroys the subject's key; returns once that is durable. Idempotent.
    async fn forget_subject(&self, subject: &str) -> Result<()>;

    /// The subject's key as this process knows it this instant, without
    /// waiting for anything (`None` when it does not know): the
    /// decrypted-event cache keeps plaintext only while this says the key
    /// is live.
    fn known(&self, subject: &str) -> Option<SubjectKey>;

    /// Spare keys events may have been sealed under without their
    /// assignment being durable, and the log position above which to look
    /// for them; `None` when there is nothing to look for (always, for a
    /// key store without spares).
    fn unreconciled(&self) -> Option<(u64, HashSet<u64>)> {
        None
    }

    /// Which of [`SubjectKeys::unreconciled`]'s spares the log above the
    /// floor was found to use (subject, slot), read up to `read_to`.
    async fn reconcile(&self, _used: Vec<(String, u64)>, _read_to: u64) -> Result<()> {
        Ok(())
    }

    /// Gets ready for the first new subjects (once, after reconciling).
    async fn prepare(&self) -> Result<()> {
        Ok(())
    }

    /// The event log holds everything up to `position`.
    fn note_appended(&self, _position: u64) {}
}

/// One subject's key or erasure, or why it cannot be had.
pub type KeyOf = std::result::Result<SubjectKey, String>;

/// The keys of the subjects one read names, asked for together, in
/// stream id order (a page of a read may name a thousand subjects:
/// sorting and searching keep that `n log n`, and the ids are shared, not
/// copied).
#[derive(Debug, Default)]
pub(crate) struct KeyRing {
    keys: Vec<(StreamId, KeyOf)>,
}

impl KeyRing {
    /// The keys of `subjects` (repeats allowed) from `store`.
    pub(crate) async fn of<K: SubjectKeys + ?Sized>(
        store: &K,
        mut subjects: Vec<StreamId>,
    ) -> Result<Self> {
        if subjects.is_empty() {
            return Ok(Self::default());
        }
        subjects.sort_unstable();
        subjects.dedup();
        let names: Vec<&str> = subjects.iter().map(StreamId::as_str).collect();
        let found = store.keys_of(&names).await?;
        if found.len() != subjects.len() {
            return Err(Error::KeyStore(format!(
                "the key store answered for {} of {} data subjects",
                found.len(),
                subjects.len()
            )));
        }
        Ok(Self {
            keys: subjects.into_iter().zip(found).collect(),
        })
    }

    fn get(&self, subject: &str) -> Option<&KeyOf> {
        self.keys
            .binary_search_by(|(id, _)| id.as_str().cmp(subject))
            .ok()
            .map(|i| &self.keys[i].1)
    }

    /// The subject's key or erasure; an error where data sealed for it
    /// cannot be opened.
    pub(crate) fn require(&self, subject: &str) -> Result<SubjectKey> {
        match self.get(subject) {
            Some(Ok(key)) => Ok(key.clone()),
            Some(Err(why)) => Err(Error::KeyStore(why.clone())),
            None => Err(Error::KeyStore(format!(
                "the key of data subject {subject:?} was not looked up"
            ))),
        }
    }

    /// Whether the ring holds the subject's live key.
    pub(crate) fn is_live(&self, subject: &str) -> bool {
        matches!(self.get(subject), Some(Ok(SubjectKey::Key(_))))
    }
}

#[async_trait]
impl SubjectKeys for KeyStore {
    async fn keys_of(&self, subjects: &[&str]) -> Result<Vec<KeyOf>> {
        Ok(subjects
            .iter()
            .map(|subject| match self.require(subject) {
                Ok(key) => Ok(key),
                Err(Error::KeyStore(why)) => Err(why),
                Err(other) => Err(other.to_string()),
            })
            .collect())
    }

    async fn sealing_keys(&self, subjects: &[&str]) -> Result<Vec<SealKey>> {
        // A key or a spare at once for most; the others are made in the
        // key log's group commit (shared with every concurrent new subject).
        let mut keys = Vec::with_capacity(subjects.len());
        let mut missing = Vec::new();
        for subject in subjects {
            keys.push(match self.key_or_spare(subject)? {
                SealingKey::Ready(key, spare) => Some((key, spare)),
                SealingKey::Missing => {
                    missing.push(*subject);
                    None
                }
                // Looked at again below, which refuses with the reason.
                SealingKey::Unusable => None,
            });
        }
        if !missing.is_empty() {
            self.assign_keys(&missing).await?;
        }
        subjects
            .iter()
            .zip(keys)
            .map(|(subject, key)| match key {
                Some(key) => Ok(key),
                None => self.key_for_sealing(subject)?.ok_or_else(|| {
                    Error::KeyStore(format!(
                        "data subject {subject:?} has no key after it was created"
                    ))
                }),
            })
            .collect()
    }

    async fn snapshot_key(&self, subject: &str) -> Result<Option<[u8; 32]>> {
        match self.lookup(subject)? {
            Some(SubjectKey::Key(key)) => return Ok(Some(key)),
            Some(SubjectKey::Erased) => return Ok(None),
            None => {}
        }
        self.ensure_keys([subject]).await?;
        match self.existing_key_for_write(subject)? {
            Some(key) => Ok(Some(key)),
            None => Err(Error::KeyStore(format!(
                "data subject {subject:?} has no key after it was created"
            ))),
        }
    }

    async fn forget_subject(&self, subject: &str) -> Result<()> {
        KeyStore::forget_subject(self, subject).await
    }

    fn known(&self, subject: &str) -> Option<SubjectKey> {
        self.lookup(subject).ok().flatten()
    }

    fn unreconciled(&self) -> Option<(u64, HashSet<u64>)> {
        KeyStore::unreconciled(self)
    }

    async fn reconcile(&self, used: Vec<(String, u64)>, read_to: u64) -> Result<()> {
        KeyStore::reconcile(self, used, read_to).await
    }

    async fn prepare(&self) -> Result<()> {
        self.prepare_spares().await
    }

    fn note_appended(&self, position: u64) {
        KeyStore::note_appended(self, position);
    }
}
