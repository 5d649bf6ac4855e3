//! A bounded, in-memory cache of decrypted event data by log position, for
//! [`crate::Shredding`].
//!
//! Opening a personal field costs an XChaCha20-Poly1305 decryption (a few
//! microseconds for a short field, most of it Poly1305 set-up, which is per
//! message and cannot be cached), and a command handler without a state
//! cache reads the same customer's registration on every command. Events are
//! immutable, so the plaintext of the event at a position never changes —
//! until its subject is forgotten, after which every read must show
//! [`crate::ERASED`]. The cache is therefore kept honest in three ways:
//!
//! - `Shredding`'s [`forget_subject`](crate::EventStore::forget_subject) drops the subject's entries right
//!   after the key store has recorded the erasure;
//! - an entry is only inserted while the key store still holds the
//!   subject's live key, checked under the cache's lock, so a read that
//!   decrypted just before a concurrent erasure cannot re-insert plaintext
//!   after the erasure dropped the subject's entries;
//! - a hit is only served after the key store confirms the key is still
//!   live, so an erasure that bypassed this layer (the key store used
//!   directly, or shared with another `Shredding`) is honoured too.
//!
//! It holds plaintext in process memory only; nothing of it is ever written
//! to disk by this code (as with any process memory, keeping it out of swap
//! is the host's business). It is bounded by bytes, counting each entry's
//! data, subject id and a fixed overhead, and evicts in insertion order
//! (FIFO): a hit costs no write to shared state, and a working set that
//! fits is never evicted.

use bytes::Bytes;
use parking_lot::Mutex;

use crate::fifo::{ByteFifo, Cost};

/// What one entry costs beyond its data and subject id: the map slot, the
/// order queue slot, the `Bytes` and `String` headers.
const ENTRY_OVERHEAD_BYTES: usize = 96;

#[derive(Debug)]
pub(crate) struct PlainCache {
    bytes_max: usize,
    inner: Mutex<ByteFifo<Entry>>,
}

#[derive(Debug)]
struct Entry {
    subject: String,
    data: Bytes,
}

impl Cost for Entry {
    fn cost(&self) -> usize {
        self.data.len() + self.subject.len() + ENTRY_OVERHEAD_BYTES
    }
}

impl PlainCache {
    /// A cache of at most `bytes_max` bytes; 0 caches nothing.
    pub(crate) fn new(bytes_max: usize) -> Self {
        Self {
            bytes_max,
            inner: Mutex::new(ByteFifo::default()),
        }
    }

    pub(crate) fn is_enabled(&self) -> bool {
        self.bytes_max > 0
    }

    /// The cached data of the event at `position`, if it belongs to
    /// `subject`. The caller must still check that the subject's key is
    /// live before serving it.
    pub(crate) fn get(&self, position: u64, subject: &str) -> Option<Bytes> {
        if !self.is_enabled() {
            return None;
        }
        let inner = self.inner.lock();
        inner
            .get(position)
            .filter(|e| e.subject == subject)
            .map(|e| e.data.clone())
    }

    /// Caches `data` for the event at `position` if `key_is_live` still
    /// holds when called under the cache's lock (see the module docs for
    /// why it must be checked there).
    pub(crate) fn insert_if(
        &self,
        position: u64,
        subject: &str,
        data: Bytes,
        key_is_live: impl FnOnce() -> bool,
    ) {
        let entry = Entry {
            subject: subject.to_owned(),
            data,
        };
        if entry.cost() > self.bytes_max / 8 {
            return;
        }
        let mut inner = self.inner.lock();
        if inner.contains(position) || !key_is_live() {
            return;
        }
        inner.insert(position, entry, self.bytes_max);
    }

    /// Drops every entry of `subject`. Linear in the cache's size; erasures
    /// are rare.
    pub(crate) fn forget(&self, subject: &str) {
        self.inner.lock().retain(|e| e.subject != subject);
    }

    /// Entries and bytes held, for tests.
    #[cfg(test)]
    pub(crate) fn usage(&self) -> (usize, usize) {
        self.inner.lock().usage()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_its_byte_budget_evicting_the_oldest() {
        let cache = PlainCache::new(8 * (ENTRY_OVERHEAD_BYTES + 100 + 3));
        for position in 0..20u64 {
            cache.insert_if(position, "c-1", Bytes::from(vec![b'x'; 100]), || true);
            let (_, bytes) = cache.usage();
            assert!(bytes <= 8 * (ENTRY_OVERHEAD_BYTES + 103));
        }
        assert_eq!(cache.usage().0, 8);
        assert!(cache.get(0, "c-1").is_none());
        assert!(cache.get(19, "c-1").is_some());
        // An entry over an eighth of the budget is not cached at all.
        cache.insert_if(100, "c-1", Bytes::from(vec![b'x'; 1000]), || true);
        assert!(cache.get(100, "c-1").is_none());
    }

    #[test]
    fn forgetting_drops_only_that_subjects_entries_and_a_dead_key_inserts_nothing() {
        let cache = PlainCache::new(1 << 20);
        cache.insert_if(1, "c-1", Bytes::from_static(b"{}"), || true);
        cache.insert_if(2, "c-2", Bytes::from_static(b"{}"), || true);
        cache.insert_if(3, "c-1", Bytes::from_static(b"{}"), || true);
        // Another subject's name at that position is a miss.
        assert!(cache.get(1, "c-2").is_none());
        cache.forget("c-1");
        assert!(cache.get(1, "c-1").is_none() && cache.get(3, "c-1").is_none());
        assert!(cache.get(2, "c-2").is_some());
        assert_eq!(cache.usage(), (1, 2 + 3 + ENTRY_OVERHEAD_BYTES));
        cache.insert_if(4, "c-1", Bytes::from_static(b"{}"), || false);
        assert!(cache.get(4, "c-1").is_none());
        let off = PlainCache::new(0);
        off.insert_if(1, "c-1", Bytes::from_static(b"{}"), || true);
        assert!(off.get(1, "c-1").is_none());
    }
}
