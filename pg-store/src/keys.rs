//! The data subjects' personal-data keys in the store's schema, table
//! `subject_keys`: one row per subject, its 32-byte key, or, once the
//! subject is forgotten, no key and the time of the erasure (the row
//! stays, so that no key is ever made for the subject again).
//!
//! Every process keeps the keys it used in a bounded cache. An erasure is
//! announced on the schema's key channel in its own transaction; every
//! process's listener marks the subject erased in its cache as the
//! notification arrives, and empties the cache whenever it reconnects
//! (notifications sent while it was away are lost).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use event_store::keys::SubjectKey;
use event_store::subjects::{KeyOf, SealKey};
use event_store::{Error, Result, SubjectKeys};
use parking_lot::Mutex;
use rand::RngCore;
// Every dynamic statement names only the store's schema, checked by
// `schema::check_name` to be a plain identifier.
use sqlx::AssertSqlSafe;

use crate::shared::{Inner, pg_error};

/// At most this many subjects' keys are cached per process; the cache is
/// emptied when it would grow past it.
const CACHED_MAX: usize = 100_000;

/// The keys this process has read or made, and the erasures it heard of.
#[derive(Default)]
pub(crate) struct KeyCache {
    keys: Mutex<HashMap<String, SubjectKey>>,
}

impl KeyCache {
    fn get(&self, subject: &str) -> Option<SubjectKey> {
        self.keys.lock().get(subject).cloned()
    }

    /// Keys read from the table. An erasure is final: a key read before it
    /// and cached after it never replaces it.
    fn put(&self, found: impl IntoIterator<Item = (String, SubjectKey)>) {
        let mut keys = self.keys.lock();
        for (subject, key) in found {
            if keys.len() >= CACHED_MAX {
                keys.clear();
            }
            match keys.get_mut(&subject) {
                Some(SubjectKey::Erased) => {}
                Some(cached) => *cached = key,
                None => {
                    keys.insert(subject, key);
                }
            }
        }
    }

    /// A process (this one or another) forgot the subject.
    pub(crate) fn erased(&self, subject: &str) {
        self.put([(subject.to_owned(), SubjectKey::Erased)]);
    }

    /// Erasures may have been missed.
    pub(crate) fn clear(&self) {
        self.keys.lock().clear();
    }
}

/// The personal-data keys of a [`PgStore`](crate::PgStore)'s schema; for
/// [`event_store::Shredding`].
#[derive(Clone)]
pub struct PgKeys {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PgKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgKeys")
            .field("schema", &self.inner.schema)
            .finish_non_exhaustive()
    }
}

impl PgKeys {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    fn table(&self) -> String {
        format!("{}.subject_keys", self.inner.schema)
    }

    /// The rows of `subjects` that exist (a `None` key: erased).
    async fn rows(&self, subjects: &[&str]) -> Result<HashMap<String, Option<Vec<u8>>>> {
        let rows: Vec<(String, Option<Vec<u8>>)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT subject, key FROM {} WHERE subject = ANY($1)",
            self.table()
        )))
        .bind(subjects)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(pg_error)?;
        Ok(rows.into_iter().collect())
    }

    /// Each subject's key or erasure from the cache or, for the others, the
    /// table; with `create`, the subjects without a row get a key first.
    async fn find(&self, subjects: &[&str], create: bool) -> Result<Vec<KeyOf>> {
        let mut found: Vec<Option<KeyOf>> = subjects
            .iter()
            .map(|subject| self.inner.keys.get(subject).map(Ok))
            .collect();
        let mut missing: Vec<&str> = subjects
            .iter()
            .zip(&found)
            .filter(|(_, key)| key.is_none())
            .map(|(subject, _)| *subject)
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            return Ok(found.into_iter().flatten().collect());
        }
        if create {
            self.create(&missing).await?;
        }
        let rows = self.rows(&missing).await?;
        let mut fresh = Vec::with_capacity(rows.len());
        for (subject, key) in subjects.iter().zip(found.iter_mut()) {
            if key.is_some() {
                continue;
            }
            *key = Some(match rows.get(*subject) {
                Some(Some(bytes)) => match <[u8; 32]>::try_from(bytes.as_slice()) {
                    Ok(bytes) => {
                        fresh.push((subject.to_string(), SubjectKey::Key(bytes)));
                        Ok(SubjectKey::Key(bytes))
                    }
                    Err(_) => Err(format!(
                        "the key of data subject {subject:?} in {} is {} bytes, not 32",
                        self.table(),
                        bytes.len()
                    )),
                },
                Some(None) => {
                    fresh.push((subject.to_string(), SubjectKey::Erased));
                    Ok(SubjectKey::Erased)
                }
                None => Err(format!(
                    "no key and no erasure record for data subject {subject:?} in {}: the key table is incomplete or was replaced",
                    self.table()
                )),
            });
        }
        self.inner.keys.put(fresh);
        Ok(found.into_iter().flatten().collect())
    }

    /// Gives each subject without a row a new key; a row another process
    /// made first (or an erasure) wins. Durable once it returns.
    async fn create(&self, subjects: &[&str]) -> Result<()> {
        let keys: Vec<Vec<u8>> = subjects
            .iter()
            .map(|_| {
                let mut key = vec![0u8; 32];
                rand::rng().fill_bytes(&mut key);
                key
            })
            .collect();
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {} (subject, key)
             SELECT * FROM UNNEST($1::text[], $2::bytea[])
             ON CONFLICT (subject) DO NOTHING",
            self.table()
        )))
        .bind(subjects)
        .bind(&keys)
        .execute(&self.inner.pool)
        .await
        .map_err(pg_error)?;
        Ok(())
    }
}

fn forgotten(subject: &str) -> Error {
    Error::KeyStore(format!(
        "data subject {subject:?} was forgotten; no personal data can be stored for it"
    ))
}

#[async_trait]
impl SubjectKeys for PgKeys {
    async fn keys_of(&self, subjects: &[&str]) -> Result<Vec<KeyOf>> {
        self.find(subjects, false).await
    }

    async fn sealing_keys(&self, subjects: &[&str]) -> Result<Vec<SealKey>> {
        let found = self.find(subjects, true).await?;
        subjects
            .iter()
            .zip(found)
            .map(|(subject, key)| match key {
                Ok(SubjectKey::Key(key)) => Ok((key, None)),
                Ok(SubjectKey::Erased) => Err(forgotten(subject)),
                Err(why) => Err(Error::KeyStore(why)),
            })
            .collect()
    }

    async fn snapshot_key(&self, subject: &str) -> Result<Option<[u8; 32]>> {
        match self.find(&[subject], true).await?.pop() {
            Some(Ok(SubjectKey::Key(key))) => Ok(Some(key)),
            Some(Ok(SubjectKey::Erased)) => Ok(None),
            Some(Err(why)) => Err(Error::KeyStore(why)),
            None => Err(Error::KeyStore(format!(
                "no key for data subject {subject:?} after it was created"
            ))),
        }
    }

    async fn forget_subject(&self, subject: &str) -> Result<()> {
        let mut tx = self.inner.pool.begin().await.map_err(pg_error)?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {0} AS k (subject, key, erased_at) VALUES ($1, NULL, now())
             ON CONFLICT (subject) DO UPDATE
             SET key = NULL, erased_at = COALESCE(k.erased_at, now())",
            self.table()
        )))
        .bind(subject)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        // Delivered to every listener once the erasure commits.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&self.inner.keys_channel)
            .bind(subject)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        self.inner.keys.erased(subject);
        Ok(())
    }

    fn known(&self, subject: &str) -> Option<SubjectKey> {
        self.inner.keys.get(subject)
    }
}
