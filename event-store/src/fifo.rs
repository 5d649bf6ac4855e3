//! The bookkeeping the in-memory caches by log position share (decrypted
//! events in `plaincache`, upcast events in `upcast/cache.rs`): entries by
//! position, bounded by bytes, evicted in insertion order (FIFO). A hit
//! writes nothing to shared state, and a working set that fits is never
//! evicted. Locking and what an entry may hold are the caches' business.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// What an entry counts against the budget.
pub(crate) trait Cost {
    fn cost(&self) -> usize;
}

/// Hashes positions with one multiplication rather than SipHash, as a
/// cached read looks up every event it serves. Positions come from the
/// log, which numbers them in order, not from anyone who could aim for
/// collisions.
#[derive(Default, Clone, Copy)]
pub(crate) struct PositionHasher(u64);

impl Hasher for PositionHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        // The table takes its bucket from the low bits and its tag from the
        // top seven: both should depend on all of the position.
        self.0 ^ (self.0 >> 29)
    }
}

#[derive(Debug)]
pub(crate) struct ByteFifo<E> {
    entries: HashMap<u64, E, BuildHasherDefault<PositionHasher>>,
    /// Positions in insertion order, each at most once and only while it is
    /// in `entries`.
    order: VecDeque<u64>,
    bytes: usize,
}

impl<E> Default for ByteFifo<E> {
    fn default() -> Self {
        Self {
            entries: HashMap::default(),
            order: VecDeque::new(),
            bytes: 0,
        }
    }
}

impl<E: Cost> ByteFifo<E> {
    pub(crate) fn get(&self, position: u64) -> Option<&E> {
        self.entries.get(&position)
    }

    pub(crate) fn contains(&self, position: u64) -> bool {
        self.entries.contains_key(&position)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keeps `entry` for `position` within `bytes_max`: in place of an
    /// entry already there (keeping its turn), else as the newest, the
    /// oldest evicted until it fits. An entry over an eighth of the budget
    /// is not kept, so that a few large events cannot flush everything
    /// else.
    pub(crate) fn insert(&mut self, position: u64, entry: E, bytes_max: usize) {
        let cost = entry.cost();
        if cost > bytes_max / 8 {
            return;
        }
        if let Some(old) = self.entries.insert(position, entry) {
            self.bytes = self.bytes - old.cost() + cost;
            return;
        }
        self.bytes += cost;
        self.order.push_back(position);
        while self.bytes > bytes_max {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(evicted) = self.entries.remove(&oldest) {
                self.bytes -= evicted.cost();
            }
        }
    }

    /// Drops the entries `keep` refuses. Linear in the size.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&E) -> bool) {
        let Self {
            entries,
            order,
            bytes,
        } = self;
        entries.retain(|_, e| {
            let kept = keep(e);
            if !kept {
                *bytes -= e.cost();
            }
            kept
        });
        order.retain(|p| entries.contains_key(p));
    }

    /// Drops every entry, giving their memory back.
    pub(crate) fn clear(&mut self) {
        *self = Self::default();
    }

    /// Entries and bytes held.
    #[cfg(test)]
    pub(crate) fn usage(&self) -> (usize, usize) {
        (self.entries.len(), self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Cost for usize {
        fn cost(&self) -> usize {
            *self
        }
    }

    #[test]
    fn keeps_within_budget_evicting_the_oldest_and_replaces_in_place() {
        let mut fifo = ByteFifo::default();
        for position in 0..10 {
            fifo.insert(position, 10usize, 80);
        }
        assert_eq!(fifo.usage(), (8, 80));
        assert!(!fifo.contains(1) && fifo.contains(2) && fifo.contains(9));
        // Replaced in place: the oldest is still the first to go.
        fifo.insert(2, 5, 80);
        assert_eq!(fifo.usage(), (8, 75));
        fifo.insert(10, 10, 80);
        fifo.insert(11, 10, 80);
        assert!(!fifo.contains(2) && !fifo.contains(3) && fifo.contains(4));
        // Over an eighth of the budget: not kept.
        fifo.insert(12, 11, 80);
        assert!(!fifo.contains(12));
        fifo.retain(|cost| *cost != 10);
        assert_eq!(fifo.usage(), (0, 0));
        fifo.insert(13, 1, 80);
        fifo.clear();
        assert!(fifo.is_empty());
        assert_eq!(fifo.usage(), (0, 0));
    }
}
