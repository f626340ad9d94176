//! The stores' read cache: state values (misses included) kept in front of
//! RocksDB so that a hot key is served without a memtable search.
//!
//! Its bound is in bytes, and one bound holds for every store of the
//! process: it is a share of `runtime.store_memory_mb`
//! ([`crate::store::set_memory_budget`]), so the budget covers it as it
//! covers the block cache and the memtables. A store whose next entry would
//! take the process over the bound empties its own cache and refills it
//! (no bookkeeping per entry); if the other stores' caches still fill the
//! bound, the entry is not kept. Every commit updates the entries it
//! touches, so the cache always equals what is committed.

use std::sync::atomic::{AtomicUsize, Ordering};

use rustc_hash::FxHashMap;

/// What one entry costs beyond its key and value bytes: its slot in the
/// table (two `Vec` headers and a control byte, at the table's load) and
/// the allocator's share of two small allocations.
const ENTRY_OVERHEAD: usize = 96;

/// Bytes held by every store's cache in this process.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// One store's cache.
pub(crate) struct ReadCache {
    map: FxHashMap<Vec<u8>, Option<Vec<u8>>>,
    /// What this cache holds, as counted in `held`.
    bytes: usize,
    /// What every cache sharing the bound holds: [`HELD`], the process's.
    held: &'static AtomicUsize,
}

impl Default for ReadCache {
    fn default() -> Self {
        Self {
            map: FxHashMap::default(),
            bytes: 0,
            held: &HELD,
        }
    }
}

fn cost(key: &[u8], value: &Option<Vec<u8>>) -> usize {
    key.len() + value.as_ref().map_or(0, Vec::len) + ENTRY_OVERHEAD
}

impl ReadCache {
    pub fn get(&self, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        self.map.get(key)
    }

    /// Keep a value just read, within `limit` bytes for the process.
    pub fn remember(&mut self, key: &[u8], value: Option<Vec<u8>>, limit: usize) {
        let add = cost(key, &value);
        if !self.room(add, limit) {
            return;
        }
        self.map.insert(key.to_vec(), value);
        self.bytes += add;
        self.held.fetch_add(add, Ordering::Relaxed);
    }

    /// A committed change: replace the entry if it is here, else keep it
    /// if there is room without emptying the cache.
    pub fn update(&mut self, key: &[u8], value: &Option<Vec<u8>>, limit: usize) {
        let add = cost(key, value);
        if let Some(old) = self.map.get_mut(key) {
            let before = cost(key, old);
            old.clone_from(value);
            self.bytes = self.bytes - before + add;
            self.held.fetch_sub(before, Ordering::Relaxed);
            self.held.fetch_add(add, Ordering::Relaxed);
        } else if self.held.load(Ordering::Relaxed) + add <= limit {
            self.map.insert(key.to_vec(), value.clone());
            self.bytes += add;
            self.held.fetch_add(add, Ordering::Relaxed);
        }
    }

    /// Whether `add` more bytes fit, after emptying this cache if they
    /// would not otherwise.
    fn room(&mut self, add: usize, limit: usize) -> bool {
        if self.held.load(Ordering::Relaxed) + add <= limit {
            return true;
        }
        self.clear();
        self.held.load(Ordering::Relaxed) + add <= limit
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.held
            .fetch_sub(std::mem::take(&mut self.bytes), Ordering::Relaxed);
    }

    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for ReadCache {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache with a bound of its own, shared with no other test.
    fn alone() -> ReadCache {
        ReadCache {
            map: FxHashMap::default(),
            bytes: 0,
            held: Box::leak(Box::new(AtomicUsize::new(0))),
        }
    }

    #[test]
    fn a_cache_over_the_bound_starts_over() {
        let mut cache = alone();
        let limit = 3 * (8 + ENTRY_OVERHEAD) + 1;
        for k in 0u64..3 {
            cache.remember(&k.to_be_bytes(), None, limit);
        }
        assert_eq!(cache.bytes(), 3 * (8 + ENTRY_OVERHEAD));
        cache.remember(&9u64.to_be_bytes(), Some(vec![1]), limit);
        assert_eq!(cache.get(&0u64.to_be_bytes()), None, "emptied first");
        assert_eq!(cache.get(&9u64.to_be_bytes()), Some(&Some(vec![1])));
        assert_eq!(cache.bytes(), 8 + 1 + ENTRY_OVERHEAD);
    }

    #[test]
    fn a_commit_replaces_an_entry_and_its_size() {
        let mut cache = alone();
        let limit = usize::MAX / 2;
        cache.remember(b"k", None, limit);
        cache.update(b"k", &Some(vec![7; 10]), limit);
        assert_eq!(cache.get(b"k"), Some(&Some(vec![7; 10])));
        assert_eq!(cache.bytes(), 1 + 10 + ENTRY_OVERHEAD);
        cache.update(b"k", &None, limit);
        assert_eq!(cache.bytes(), 1 + ENTRY_OVERHEAD);
        cache.clear();
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn nothing_is_kept_past_a_bound_already_full() {
        let mut cache = alone();
        cache.remember(b"k", Some(vec![1]), 0);
        assert_eq!(cache.get(b"k"), None);
        cache.update(b"k", &Some(vec![1]), 0);
        assert_eq!(cache.get(b"k"), None);
        assert_eq!(cache.bytes(), 0);
    }
}
