//! A bounded, in-memory cache of upcast event data by log position, for
//! [`super::Upcasting`]'s aggregate loads and stream reads.
//!
//! Upcasting an old event scans its JSON, runs the steps and writes the
//! result, which costs about half of what reading and decoding the event
//! costs in the first place; an aggregate loaded again (a command handler
//! without a state cache, a stream read over HTTP) would pay it for the same
//! events every time. Steps are pure functions of the stored data, so the
//! upcast data of a position can be kept — as long as it is only served for
//! the very bytes it was made from.
//!
//! That is how an entry stays honest without this layer knowing anything
//! about what lies beneath it: each entry keeps a fingerprint of the data it
//! was upcast from (64-bit xxh3 under a seed drawn for each cache), and a
//! hit requires the data read now to have the same fingerprint. Under
//! [`crate::Shredding`], a forgotten subject's events read back with their
//! personal fields erased, so their old entries (which hold plaintext) no
//! longer match and are never served, whichever way the erasure went; two
//! different readings of one position share a fingerprint with a chance of
//! one in 2^64. A fingerprint rather than a copy of the stored data: a hit
//! then touches the entry's upcast data only, not a second copy to compare
//! byte by byte (which cost about as much as the rest of a hit), and an
//! entry takes half the memory.
//! `Upcasting`'s [`forget_subject`](crate::EventStore::forget_subject) also empties the cache, so that
//! the plaintext does not outlive the erasure in this process's memory;
//! and a read that began before it (so may have read plaintext) inserts
//! nothing after it, as each emptying starts a new generation and a read
//! inserts only into the generation it began in.
//!
//! Sequential reads (catch-up, subscriptions, `read_all`) read each event
//! once and do not use it. It is bounded by bytes (each entry's upcast data
//! plus a fixed overhead) and evicts in insertion order (FIFO): a hit
//! writes nothing to shared state, and a working set that fits is never
//! evicted. Entries share buffers (see [`UpcastCache::insert_all`]), so
//! what the process holds can exceed the bound by what evicted or replaced
//! entries leave in buffers that still hold a live entry: as entries leave
//! in the order they came, that is one partly evicted buffer at the oldest
//! end (at most [`SHARED_BUFFER_BYTES`]), plus the old data of entries
//! replaced in place (a position read again as other bytes, after an
//! erasure), which stays until the rest of its buffer goes.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;

use crate::fifo::{ByteFifo, Cost};

/// What one entry costs beyond its bytes: the map slot (with the
/// fingerprint), the order queue slot, the `Bytes` header and the shared
/// allocation's header.
const ENTRY_OVERHEAD_BYTES: usize = 96;

/// The most upcast data one shared buffer holds (see
/// [`UpcastCache::insert_all`]).
const SHARED_BUFFER_BYTES: usize = 256 * 1024;

#[derive(Debug)]
pub(crate) struct UpcastCache {
    bytes_max: usize,
    inner: Mutex<Inner>,
    /// Counts the emptyings. Changed only under `inner`'s lock, so an
    /// insertion that checks it there sees every emptying before it; read
    /// without the lock by every load, which takes it only to insert.
    generation: AtomicU64,
    /// Seeds the fingerprints, so that which data share one cannot be
    /// worked out in advance.
    seed: u64,
    /// Bytes the last insert copied into its buffers, for tests.
    #[cfg(test)]
    buffered: std::sync::atomic::AtomicUsize,
}

#[derive(Debug, Default)]
struct Inner {
    entries: ByteFifo<Entry>,
}

/// The upcast data of one position, and what it was upcast from.
#[derive(Debug)]
struct Entry {
    upcast: Bytes,
    /// [`UpcastCache::fingerprint`] of the stored data.
    stored: u64,
    version: u32,
}

impl Cost for Entry {
    fn cost(&self) -> usize {
        cost_of(self.upcast.len())
    }
}

/// What an entry of `upcast_len` bytes of upcast data counts against the
/// budget.
fn cost_of(upcast_len: usize) -> usize {
    upcast_len + ENTRY_OVERHEAD_BYTES
}

/// What the cache holds for one position: upcast data and its version.
pub(crate) type Upcast = (Bytes, u32);

impl UpcastCache {
    /// A cache of at most `bytes_max` bytes; 0 caches nothing.
    pub(crate) fn new(bytes_max: usize) -> Self {
        Self {
            bytes_max,
            inner: Mutex::new(Inner::default()),
            generation: AtomicU64::new(0),
            seed: rand::random(),
            #[cfg(test)]
            buffered: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn fingerprint(&self, stored: &[u8]) -> u64 {
        xxhash_rust::xxh3::xxh3_64_with_seed(stored, self.seed)
    }

    pub(crate) fn is_enabled(&self) -> bool {
        self.bytes_max > 0
    }

    /// For each `(position, stored data)` asked, the cached upcast of that
    /// data (by its fingerprint), if any; one lock for the whole batch.
    pub(crate) fn get_all<'a>(
        &self,
        asked: impl Iterator<Item = (u64, &'a [u8])>,
        mut found: impl FnMut(usize, Upcast),
    ) {
        let inner = self.inner.lock();
        if inner.entries.is_empty() {
            return;
        }
        for (i, (position, stored)) in asked.enumerate() {
            let Some(entry) = inner.entries.get(position) else {
                continue;
            };
            if entry.stored == self.fingerprint(stored) {
                found(i, (entry.upcast.clone(), entry.version));
            }
        }
    }

    /// The generation to pass to [`insert_all`](Self::insert_all) for data
    /// read from now on.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Caches the upcasts of a batch, `(position, stored data, upcast data,
    /// version)` each, read in `generation`: nothing if the cache was
    /// emptied since.
    pub(crate) fn insert_all<'a>(
        &self,
        generation: u64,
        upcasts: impl Iterator<Item = (u64, &'a [u8], &'a [u8], u32)>,
    ) {
        // Copied out before the lock is taken: the upcast data is a slice
        // of the batch's shared buffer, which an entry must not keep alive
        // (it also holds what was not cached). Copied into buffers shared
        // by consecutive entries, though: a load that hits reads the
        // entries of its stream in order from adjacent memory, and counts
        // its references on a few allocations rather than on one per event
        // (each a cache miss on a large load). Entries are evicted in the
        // order they were inserted, so a buffer goes with the last of its
        // entries; buffers of at most `SHARED_BUFFER_BYTES` bound what
        // evicted entries keep alive meanwhile.
        //
        // One entry may not take more than an eighth of the budget, so that
        // a few large events cannot flush everything else; and of a batch
        // larger than the budget only its end is kept, as it would evict
        // the rest at once (whose buffers would stay alive with it).
        let upcasts: Vec<_> = upcasts
            .filter(|(_, _, upcast, _)| cost_of(upcast.len()) <= self.bytes_max / 8)
            .collect();
        let mut kept_bytes = 0;
        let first = upcasts
            .iter()
            .rposition(|(_, _, upcast, _)| {
                kept_bytes += cost_of(upcast.len());
                kept_bytes > self.bytes_max
            })
            .map_or(0, |i| i + 1);
        let upcasts = &upcasts[first..];
        #[cfg(test)]
        self.buffered.store(0, Ordering::SeqCst);
        let mut left: usize = upcasts.iter().map(|u| u.2.len()).sum();
        let mut buffer = BytesMut::new();
        let mut entries: Vec<(u64, Entry)> = Vec::with_capacity(upcasts.len());
        for &(position, stored, upcast, version) in upcasts {
            if buffer.capacity() < upcast.len() {
                // Room for what is left, up to a buffer's most (at least
                // this entry, however large).
                buffer = BytesMut::with_capacity(left.min(SHARED_BUFFER_BYTES).max(upcast.len()));
            }
            buffer.extend_from_slice(upcast);
            left -= upcast.len();
            #[cfg(test)]
            self.buffered.fetch_add(upcast.len(), Ordering::SeqCst);
            let entry = Entry {
                // Shares the buffer's allocation.
                upcast: buffer.split().freeze(),
                stored: self.fingerprint(stored),
                version,
            };
            entries.push((position, entry));
        }
        if entries.is_empty() {
            return;
        }
        let mut inner = self.inner.lock();
        if self.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        for (position, entry) in entries {
            // The same position read as other bytes (an erasure since)
            // replaces the old upcast in its place in line.
            inner.entries.insert(position, entry, self.bytes_max);
        }
    }

    /// Drops every entry, and starts a new generation.
    pub(crate) fn clear(&self) {
        let mut inner = self.inner.lock();
        inner.entries.clear();
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Entries and bytes held, for tests.
    #[cfg(test)]
    pub(crate) fn usage(&self) -> (usize, usize) {
        self.inner.lock().entries.usage()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(cache: &UpcastCache, position: u64, stored: &[u8]) -> Option<Upcast> {
        let mut hit = None;
        cache.get_all(std::iter::once((position, stored)), |_, u| hit = Some(u));
        hit
    }

    fn put(cache: &UpcastCache, position: u64, stored: &[u8], upcast: &[u8]) {
        let generation = cache.generation();
        cache.insert_all(generation, std::iter::once((position, stored, upcast, 2)));
    }

    #[test]
    fn a_hit_needs_the_very_bytes_the_entry_was_upcast_from() {
        let cache = UpcastCache::new(1 << 20);
        put(&cache, 7, br#"{"name":"Ada"}"#, br#"{"given":"Ada"}"#);
        let (data, version) = get(&cache, 7, br#"{"name":"Ada"}"#).unwrap();
        assert_eq!(&data[..], br#"{"given":"Ada"}"#);
        assert_eq!(version, 2);
        // Erased since: the stored data reads otherwise, so no hit.
        assert!(get(&cache, 7, br#"{"name":"<erased>"}"#).is_none());
        assert!(get(&cache, 8, br#"{"name":"Ada"}"#).is_none());
        // The new upcast replaces the old one in place.
        put(
            &cache,
            7,
            br#"{"name":"<erased>"}"#,
            br#"{"given":"<erased>"}"#,
        );
        assert_eq!(cache.usage().0, 1);
        assert!(get(&cache, 7, br#"{"name":"Ada"}"#).is_none());
        let (data, _) = get(&cache, 7, br#"{"name":"<erased>"}"#).unwrap();
        assert_eq!(&data[..], br#"{"given":"<erased>"}"#);
        cache.clear();
        assert_eq!(cache.usage(), (0, 0));
        assert!(get(&cache, 7, br#"{"name":"<erased>"}"#).is_none());
    }

    #[test]
    fn a_read_that_began_before_an_emptying_inserts_nothing() {
        let cache = UpcastCache::new(1 << 20);
        let before = cache.generation();
        cache.clear();
        cache.insert_all(
            before,
            std::iter::once((1, &b"{}"[..], &br#"{"a":1}"#[..], 2)),
        );
        assert_eq!(cache.usage(), (0, 0));
        put(&cache, 1, b"{}", br#"{"a":1}"#);
        assert_eq!(cache.usage().0, 1);
    }

    #[test]
    fn stays_within_its_byte_budget_evicting_the_oldest() {
        let data = [b'x'; 100];
        let cost = 100 + ENTRY_OVERHEAD_BYTES;
        let cache = UpcastCache::new(cost * 10);
        cache.insert_all(
            cache.generation(),
            (0..25u64).map(|p| (p, &data[..], &data[..], 2)),
        );
        let (entries, bytes) = cache.usage();
        assert_eq!(entries, 10);
        assert!(bytes <= cost * 10);
        assert!(get(&cache, 14, &data).is_none());
        assert!(get(&cache, 15, &data).is_some());
        assert!(get(&cache, 24, &data).is_some());
        // Too large for an eighth of the budget: never cached.
        let big = vec![b'y'; cost * 2];
        put(&cache, 99, &big, &big);
        assert!(get(&cache, 99, &big).is_none());
        // Disabled: nothing is kept.
        let off = UpcastCache::new(0);
        assert!(!off.is_enabled());
        put(&off, 1, &data, &data);
        assert_eq!(off.usage(), (0, 0));
    }

    #[test]
    fn of_an_insert_larger_than_the_budget_only_the_end_is_kept_and_buffered() {
        // Entries of 1,000 bytes, 5,000 of them, into 1 MiB: the end that
        // fits is cached, across several shared buffers, and the rest is
        // not even copied (its buffers would stay alive with the end).
        let many = UpcastCache::new(1 << 20);
        let event = vec![b'z'; 1000];
        many.insert_all(
            many.generation(),
            (0..5_000u64).map(|p| (p, &event[..], &event[..], 2)),
        );
        let (kept, kept_bytes) = many.usage();
        assert_eq!(kept, (1 << 20) / (1000 + ENTRY_OVERHEAD_BYTES));
        assert!(kept_bytes <= 1 << 20);
        assert!(get(&many, 5_000 - kept as u64 - 1, &event).is_none());
        for p in [5_000 - kept as u64, 4_500, 4_999] {
            assert_eq!(&get(&many, p, &event).unwrap().0[..], &event[..]);
        }
        let buffered = many.buffered.load(Ordering::SeqCst);
        assert_eq!(buffered, kept * 1000);
        assert!(kept * 1000 > SHARED_BUFFER_BYTES, "several buffers");
    }
}
