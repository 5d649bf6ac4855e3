//! A bounded cache of aggregate states, so that a command on a recently used
//! aggregate skips loading it.
//!
//! A cached state may be stale (another process may have appended since),
//! so the handler trusts it only for a decision that appends: the append
//! names the cached version as the expected version and the store refuses
//! it if the stream moved on. Any other outcome (a refusal, a command that
//! changes nothing, a version precondition) is decided again on a fresh
//! load before it is answered.
//!
//! Eviction is first in, first out by last write: each put stamps the entry
//! and queues the stamp; evicting pops stamps until one is still current.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use event_store::Position;
use uuid::Uuid;

/// A state as of a stream version.
#[derive(Debug)]
pub(crate) struct CachedState<A> {
    pub state: A,
    pub version: u64,
    /// Position of the event at `version`, when known.
    pub position: Option<Position>,
}

#[derive(Debug)]
pub(crate) struct StateCache<A> {
    capacity: usize,
    inner: Mutex<Inner<A>>,
}

#[derive(Debug)]
struct Inner<A> {
    entries: HashMap<Uuid, (u64, CachedState<A>)>,
    order: VecDeque<(Uuid, u64)>,
    stamp: u64,
}

impl<A> StateCache<A> {
    /// A cache of at most `capacity` states (0: caching off).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                order: VecDeque::new(),
                stamp: 0,
            }),
        }
    }

    /// Removes and returns the state of `id`: the caller holds the
    /// aggregate's turn and puts back what it ends up with.
    pub fn take(&self, id: Uuid) -> Option<CachedState<A>> {
        if self.capacity == 0 {
            return None;
        }
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.entries.remove(&id).map(|(_, cached)| cached)
    }

    pub fn put(&self, id: Uuid, cached: CachedState<A>) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.stamp += 1;
        let stamp = inner.stamp;
        inner.entries.insert(id, (stamp, cached));
        inner.order.push_back((id, stamp));
        while inner.entries.len() > self.capacity {
            let Some((old, old_stamp)) = inner.order.pop_front() else {
                break;
            };
            if inner
                .entries
                .get(&old)
                .is_some_and(|(s, _)| *s == old_stamp)
            {
                inner.entries.remove(&old);
            }
        }
        // Stamps of entries written again (or taken) pile up in the queue;
        // rebuild it from the live entries before it outgrows them by far.
        if inner.order.len() > 2 * self.capacity + 64 {
            let mut live: Vec<(Uuid, u64)> =
                inner.entries.iter().map(|(id, (s, _))| (*id, *s)).collect();
            live.sort_unstable_by_key(|(_, s)| *s);
            inner.order = live.into();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .len()
    }

    #[cfg(test)]
    fn queued(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .order
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(version: u64) -> CachedState<u64> {
        CachedState {
            state: version,
            version,
            position: None,
        }
    }

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn take_removes_and_put_returns() {
        let cache = StateCache::new(4);
        assert!(cache.take(id(1)).is_none());
        cache.put(id(1), cached(3));
        assert_eq!(cache.take(id(1)).map(|c| c.version), Some(3));
        assert!(cache.take(id(1)).is_none());
    }

    #[test]
    fn the_oldest_write_is_evicted_first() {
        let cache = StateCache::new(3);
        for n in 1..=3 {
            cache.put(id(n), cached(n as u64));
        }
        // Rewriting 1 makes 2 the oldest.
        let one = cache.take(id(1)).unwrap();
        cache.put(id(1), one);
        cache.put(id(4), cached(4));
        assert_eq!(cache.len(), 3);
        assert!(cache.take(id(2)).is_none());
        for n in [1, 3, 4] {
            assert!(cache.take(id(n)).is_some(), "{n}");
        }
    }

    #[test]
    fn the_queue_stays_bounded_under_rewrites() {
        let cache = StateCache::new(10);
        for round in 0..1_000u64 {
            cache.put(id(u128::from(round % 3)), cached(round));
        }
        assert_eq!(cache.len(), 3);
        assert!(cache.queued() <= 2 * 10 + 64);
    }

    #[test]
    fn capacity_zero_caches_nothing() {
        let cache = StateCache::new(0);
        cache.put(id(1), cached(1));
        assert!(cache.take(id(1)).is_none());
    }
}
