//! The consumer's RocksDB: its state and its input offsets, in one database
//! so that one `WriteBatch` commits both.
//!
//! Column families and their profiles:
//! - `state`: point lookups by typed key (bloom filter, block cache);
//! - `offsets`: a handful of keys, `topic \0 partition` → next offset to read;
//! - `outbox`: a queue, `sequence ++ partition` → one commit's changes of one
//!   partition, written in the commit's own `WriteBatch` when the consumer
//!   keeps a changelog, and deleted once shipped ([`crate::changelog`]);
//! - `changelog`: the changelog's bookkeeping (this store's id, how far each
//!   partition's changelog was shipped).

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
};

use rocksdb::{
    BlockBasedOptions, ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch,
    WriteOptions, DB,
};

use crate::{error::RuntimeError, read_cache::ReadCache};

pub(crate) const CF_STATE: &str = "state";
pub(crate) const CF_OFFSETS: &str = "offsets";
pub(crate) const CF_OUTBOX: &str = "outbox";
pub(crate) const CF_CHANGELOG: &str = "changelog";

/// The read caches' bound when no budget is set (`store_memory_mb = 0`).
const UNBUDGETED_READ_CACHE: usize = 32 << 20;

/// A raw state entry: (stored key, value).
pub type RawEntry = (Vec<u8>, Vec<u8>);
/// A table entry: (partition, key body, value).
pub type TableEntry = (i32, Vec<u8>, Vec<u8>);

/// One consumer's local store.
///
/// Reads go through a small cache of state values (misses included) that
/// every commit updates, so it always equals RocksDB: hot keys are served
/// without a memtable search ([`ReadCache`]: bounded in bytes, a share of
/// the process's memory budget).
pub struct Store {
    db: DB,
    path: PathBuf,
    sync: bool,
    cache: Mutex<ReadCache>,
    /// Whether commits also fill the outbox, and its next sequence number.
    outbox: crate::changelog::outbox::Outbox,
    /// Whether the state family updates hot keys in place.
    in_place: bool,
}

/// What one batch commits: state changes and the next offset per partition.
#[derive(Debug, Default)]
pub struct Commit {
    /// Key → new value, or `None` to delete.
    pub state: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// (topic, partition, next offset to read).
    pub offsets: Vec<(String, i32, i64)>,
}

pub(crate) fn offset_key(topic: &str, partition: i32) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.len() + 5);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

fn parse_offset_entry(key: &[u8], value: &[u8]) -> Option<(String, i32, i64)> {
    let sep = key.iter().position(|&b| b == 0)?;
    let topic = String::from_utf8(key[..sep].to_vec()).ok()?;
    let partition = i32::from_be_bytes(key[sep + 1..].try_into().ok()?);
    let next = i64::from_le_bytes(value.try_into().ok()?);
    Some((topic, partition, next))
}

/// The memory every store of this process shares: one block cache, a
/// `WriteBufferManager` that charges every memtable to it, and the read
/// caches' bound, so that cached blocks, memtables and cached values
/// together stay within one budget.
struct MemoryBudget {
    cache: rocksdb::Cache,
    write_buffers: rocksdb::WriteBufferManager,
    memtable_bytes: usize,
    read_cache_bytes: usize,
    mb: u64,
}

/// `None`: no budget (`runtime.store_memory_mb = 0`), RocksDB's defaults.
static BUDGET: std::sync::OnceLock<Option<MemoryBudget>> = std::sync::OnceLock::new();

/// The budget when none was set (`runtime.store_memory_mb`'s default).
const DEFAULT_BUDGET_MB: u64 = 128;

/// Set the process's store memory budget, MiB (`runtime.store_memory_mb`;
/// 0: none, RocksDB's defaults), before its first store opens. One process
/// has one budget: a later call with another size is refused with the
/// size in force.
pub fn set_memory_budget(mb: u64) -> Result<(), u64> {
    let budget = BUDGET.get_or_init(|| (mb > 0).then(|| MemoryBudget::new(mb)));
    let in_force = budget.as_ref().map_or(0, MemoryBudget::mb);
    if in_force == mb {
        Ok(())
    } else {
        Err(in_force)
    }
}

fn memory_budget() -> Option<&'static MemoryBudget> {
    BUDGET
        .get_or_init(|| Some(MemoryBudget::new(DEFAULT_BUDGET_MB)))
        .as_ref()
}

/// What every store's read cache may hold together, bytes.
fn read_cache_limit() -> usize {
    memory_budget().map_or(UNBUDGETED_READ_CACHE, |b| b.read_cache_bytes)
}

impl MemoryBudget {
    /// The read caches hold an eighth of `mb` MiB, the block cache the
    /// rest; memtables may take half of the block cache before the manager
    /// flushes the largest, each memtable a quarter of it.
    fn new(mb: u64) -> Self {
        let read_cache_bytes = ((mb as usize) << 20) / 8;
        let bytes = ((mb as usize) << 20) - read_cache_bytes;
        let cache = rocksdb::Cache::new_lru_cache(bytes);
        let write_buffers = rocksdb::WriteBufferManager::new_write_buffer_manager_with_cache(
            bytes / 2,
            false,
            cache.clone(),
        );
        Self {
            cache,
            write_buffers,
            memtable_bytes: (bytes / 4).min(64 << 20),
            read_cache_bytes,
            mb,
        }
    }

    fn mb(&self) -> u64 {
        self.mb
    }
}

/// The state family's options: point lookups through bloom filters in
/// the shared budget, and (with `in_place`) hot keys updated in place.
fn state_options(budget: Option<&MemoryBudget>, in_place: bool) -> Options {
    let mut state_opts = Options::default();
    let mut block = BlockBasedOptions::default();
    block.set_bloom_filter(10.0, false);
    block.set_cache_index_and_filter_blocks(true);
    if let Some(budget) = budget {
        // Index and filter blocks live in the shared cache, so a big
        // file's whole-file filter (megabytes at 10M keys) is evicted
        // and read again, checksum and all, for a lookup: that was
        // 90% of the greylist loop's time at 10M triplets. Partitioned,
        // a lookup loads one 4 KiB partition; the top levels stay pinned.
        block.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
        block.set_partition_filters(true);
        block.set_metadata_block_size(4096);
        block.set_pin_top_level_index_and_filter(true);
        block.set_cache_index_and_filter_blocks_with_high_priority(true);
        block.set_pin_l0_filter_and_index_blocks_in_cache(true);
        block.set_block_cache(&budget.cache);
        state_opts.set_write_buffer_size(budget.memtable_bytes);
    }
    state_opts.set_block_based_table_factory(&block);
    state_opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    // A lookup of a key the memtable does not hold (a greylist
    // triplet seen for the first time) is answered by a bloom filter,
    // not a skiplist search: 5% of the memtable's size.
    state_opts.set_memtable_prefix_bloom_ratio(0.05);
    state_opts.set_memtable_whole_key_filtering(true);
    // A key updated again while its last value is still in the
    // memtable (a counter, an account's last login) is overwritten in
    // place when the new value is no longer: the memtable holds one
    // entry per hot key instead of one per update, so a commit's inserts
    // search a short skiplist (the memtable insert was 44% of the
    // committing thread's time). Iterators give up point-in-time
    // consistency against concurrent writes: the only concurrent writer
    // is the committing thread, and every key it writes is read from the
    // in-flight batch's overlay first (`StateView::with_earlier`). A
    // range deletion from an earlier run with a changelog cannot meet
    // an in-place update: RocksDB flushes the memtable it recovers from
    // the WAL when it opens (`avoid_flush_during_recovery` is off).
    state_opts.set_inplace_update_support(in_place);
    state_opts
}

impl Store {
    /// Open (or create) the store at `path`. With `sync`, every commit is
    /// fsynced (survives a machine crash); without it, the WAL still makes a
    /// commit survive a process crash (`kill -9`).
    pub fn open(path: &Path, sync: bool) -> Result<Store, RuntimeError> {
        Self::open_for_run(path, sync, false)
    }

    /// [`Store::open`], and with `in_place`, hot keys are updated in place
    /// in the memtable. Only for a store that never deletes a range: a
    /// key updated in place keeps its old sequence number, so a range
    /// deletion written after it would hide the new value. The runner asks
    /// for it when the consumer keeps no changelog (whose restore deletes
    /// a partition's range, [`crate::changelog`]).
    pub(crate) fn open_for_run(
        path: &Path,
        sync: bool,
        in_place: bool,
    ) -> Result<Store, RuntimeError> {
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.increase_parallelism(2);
        if in_place {
            // One thread writes (the committing thread); RocksDB updates in
            // place only without concurrent memtable writes.
            db_opts.set_allow_concurrent_memtable_write(false);
        }
        let budget = memory_budget();
        if let Some(budget) = budget {
            db_opts.set_write_buffer_manager(&budget.write_buffers);
        }

        let state_opts = state_options(budget, in_place);

        let cfs = vec![
            ColumnFamilyDescriptor::new(CF_STATE, state_opts),
            ColumnFamilyDescriptor::new(CF_OFFSETS, Options::default()),
            // A queue, written and deleted in order; small, as long as the
            // shipper keeps up.
            ColumnFamilyDescriptor::new(CF_OUTBOX, Options::default()),
            ColumnFamilyDescriptor::new(CF_CHANGELOG, Options::default()),
        ];
        let db = DB::open_cf_descriptors(&db_opts, path, cfs).map_err(|source| {
            RuntimeError::OpenStore {
                path: path.display().to_string(),
                source,
            }
        })?;
        Ok(Store {
            db,
            path: path.to_path_buf(),
            sync,
            cache: Mutex::new(ReadCache::default()),
            outbox: Default::default(),
            in_place,
        })
    }

    /// Open an existing store read-only, beside the process that owns it
    /// (for tools: `mailfleet index show`); it sees what was committed.
    pub fn open_read_only(path: &Path) -> Result<Store, RuntimeError> {
        let in_place = false;
        let cfs = [CF_STATE, CF_OFFSETS];
        let db =
            DB::open_cf_for_read_only(&Options::default(), path, cfs, false).map_err(|source| {
                RuntimeError::OpenStore {
                    path: path.display().to_string(),
                    source,
                }
            })?;
        Ok(Store {
            db,
            path: path.to_path_buf(),
            sync: false,
            cache: Mutex::new(ReadCache::default()),
            outbox: Default::default(),
            in_place,
        })
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        // Every family is created on open, so it exists (a read-only
        // store opens `state` and `offsets` only, and never asks for more).
        self.db
            .cf_handle(name)
            .expect("column family created on open")
    }

    /// The next offset to read for a partition, if this store has consumed it.
    pub fn offset(&self, topic: &str, partition: i32) -> Result<Option<i64>, RuntimeError> {
        let raw = self
            .db
            .get_cf(self.cf(CF_OFFSETS), offset_key(topic, partition))
            .map_err(|source| RuntimeError::Store {
                op: "read offset",
                source,
            })?;
        Ok(raw.and_then(|v| v.try_into().ok().map(i64::from_le_bytes)))
    }

    /// Every stored (topic, partition, next offset).
    pub fn offsets(&self) -> Vec<(String, i32, i64)> {
        self.db
            .iterator_cf(self.cf(CF_OFFSETS), IteratorMode::Start)
            .flatten()
            .filter_map(|(k, v)| parse_offset_entry(&k, &v))
            .collect()
    }

    /// One raw state value.
    pub fn get_state(&self, key: &[u8]) -> Result<Option<Vec<u8>>, rocksdb::Error> {
        self.with_state(key, |value| value.map(<[u8]>::to_vec))
    }

    /// One raw state value, lent to `f`: a cache hit is not copied.
    pub fn with_state<R>(
        &self,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R, rocksdb::Error> {
        {
            let cache = self.cache();
            if let Some(hit) = cache.get(key) {
                return Ok(f(hit.as_deref()));
            }
        }
        let value = self.db.get_cf(self.cf(CF_STATE), key)?;
        let out = f(value.as_deref());
        self.cache().remember(key, value, read_cache_limit());
        Ok(out)
    }

    pub(crate) fn cache(&self) -> std::sync::MutexGuard<'_, ReadCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every raw state entry whose stored key starts with `prefix`.
    pub fn scan_state(&self, prefix: &[u8]) -> Result<Vec<RawEntry>, rocksdb::Error> {
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(CF_STATE),
            IteratorMode::From(prefix, Direction::Forward),
        );
        for entry in iter {
            let (k, v) = entry?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Each partition's state digest: SHA-256 over its entries in key
    /// order (each key and value length-prefixed), and the entry count.
    /// Equal digests, equal state: how a replay is compared with the live
    /// store, or with another replay.
    pub fn partition_digests(
        &self,
    ) -> Result<std::collections::BTreeMap<i32, (String, u64)>, RuntimeError> {
        use sha2::{Digest, Sha256};
        let mut out: std::collections::BTreeMap<i32, (Sha256, u64)> = Default::default();
        for entry in self.db.iterator_cf(self.cf(CF_STATE), IteratorMode::Start) {
            let (k, v) = entry.map_err(|source| RuntimeError::Store {
                op: "scan state",
                source,
            })?;
            let Some((partition, key)) = crate::state::split_partition_key(&k) else {
                continue;
            };
            let (hash, count) = out.entry(partition).or_default();
            hash.update((key.len() as u64).to_le_bytes());
            hash.update(key);
            hash.update((v.len() as u64).to_le_bytes());
            hash.update(&v);
            *count += 1;
        }
        Ok(out
            .into_iter()
            .map(|(p, (hash, count))| (p, (hex::encode(hash.finalize()), count)))
            .collect())
    }

    /// Every entry of one table across all partitions, as
    /// (partition, key body, value): for tools and tests.
    pub fn scan_table(&self, table: u8) -> Result<Vec<TableEntry>, RuntimeError> {
        let all = self.scan_state(&[]).map_err(|source| RuntimeError::Store {
            op: "scan state",
            source,
        })?;
        Ok(all
            .into_iter()
            .filter_map(|(k, v)| {
                let (partition, key) = crate::state::split_partition_key(&k)?;
                let body = key.strip_prefix(&[table])?;
                Some((partition, body.to_vec(), v))
            })
            .collect())
    }

    /// Write the batch's state changes and offsets atomically.
    pub fn commit(&self, commit: &Commit) -> Result<(), RuntimeError> {
        let mut batch = WriteBatch::default();
        let state = self.cf(CF_STATE);
        for (key, value) in &commit.state {
            match value {
                Some(v) => batch.put_cf(state, key, v),
                None => batch.delete_cf(state, key),
            }
        }
        let offsets = self.cf(CF_OFFSETS);
        for (topic, partition, next) in &commit.offsets {
            batch.put_cf(offsets, offset_key(topic, *partition), next.to_le_bytes());
        }
        if self.outbox.enabled() {
            // The changelog's share of the commit, in the same batch: it is
            // shipped if and only if the commit happened.
            self.outbox.add(&mut batch, self.cf(CF_OUTBOX), commit);
        }
        self.write(batch, commit)
    }

    /// The underlying database, for the changelog's bookkeeping.
    pub(crate) fn db(&self) -> &DB {
        &self.db
    }

    /// Whether the state family updates hot keys in place (no range
    /// deletions then).
    pub(crate) fn in_place(&self) -> bool {
        self.in_place
    }

    /// The outbox switch and sequence.
    pub(crate) fn outbox(&self) -> &crate::changelog::outbox::Outbox {
        &self.outbox
    }

    /// Write `batch` (which holds `commit`), keeping the cache equal to it.
    fn write(&self, batch: WriteBatch, commit: &Commit) -> Result<(), RuntimeError> {
        let mut opts = WriteOptions::default();
        opts.set_sync(self.sync);
        let written = self
            .db
            .write_opt(batch, &opts)
            .map_err(|source| RuntimeError::Store {
                op: "commit batch",
                source,
            });
        let mut cache = self.cache();
        match written {
            // Keep the cache equal to what is now committed.
            Ok(()) => {
                let limit = read_cache_limit();
                for (key, value) in &commit.state {
                    cache.update(key, value, limit);
                }
            }
            Err(_) => cache.clear(),
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_keeps_one_memory_budget() {
        let in_force = match set_memory_budget(64) {
            Ok(()) => 64,
            Err(mb) => mb,
        };
        assert_eq!(
            set_memory_budget(999),
            Err(in_force),
            "a second size is refused"
        );
        assert_eq!(set_memory_budget(in_force), Ok(()), "the same size is fine");
        let dir = tempfile::tempdir().unwrap();
        Store::open(dir.path(), false).expect("a store opens within the budget");
    }

    #[test]
    fn the_read_cache_follows_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let put = |v: Option<u8>| Commit {
            state: vec![(b"k".to_vec(), v.map(|v| vec![v]))],
            offsets: vec![],
        };
        assert_eq!(store.get_state(b"k").unwrap(), None, "a miss is cached...");
        store.commit(&put(Some(1))).unwrap();
        assert_eq!(
            store.get_state(b"k").unwrap(),
            Some(vec![1]),
            "...and replaced by the commit"
        );
        store.commit(&put(Some(2))).unwrap();
        assert_eq!(store.get_state(b"k").unwrap(), Some(vec![2]));
        store.commit(&put(None)).unwrap();
        assert_eq!(store.get_state(b"k").unwrap(), None);
    }

    #[test]
    fn a_hot_key_is_updated_in_place_in_the_memtable() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_for_run(dir.path(), false, true).unwrap();
        for n in 0u64..100 {
            let commit = Commit {
                state: vec![(b"counter".to_vec(), Some(n.to_le_bytes().to_vec()))],
                offsets: vec![],
            };
            store.commit(&commit).unwrap();
        }
        let entries = store
            .db
            .property_int_value_cf(store.cf(CF_STATE), "rocksdb.num-entries-active-mem-table")
            .unwrap()
            .unwrap();
        assert_eq!(entries, 1, "100 updates of one key, one memtable entry");
        store.cache().clear();
        assert_eq!(
            store.get_state(b"counter").unwrap(),
            Some(99u64.to_le_bytes().to_vec())
        );
        let longer = Commit {
            state: vec![(b"counter".to_vec(), Some(vec![1; 16]))],
            offsets: vec![],
        };
        store.commit(&longer).unwrap();
        store.cache().clear();
        assert_eq!(store.get_state(b"counter").unwrap(), Some(vec![1; 16]));
    }

    #[test]
    fn a_store_updating_in_place_refuses_a_range_deletion() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_for_run(dir.path(), false, true).unwrap();
        let refused = store.reset_partition(0, &["t".to_string()]).unwrap_err();
        assert!(refused.to_string().contains("range deletion"), "{refused}");
        drop(store);
        let store = Store::open_for_run(dir.path(), false, false).unwrap();
        store.reset_partition(0, &["t".to_string()]).unwrap();
    }

    #[test]
    fn state_and_offsets_commit_together_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), false).unwrap();
            assert_eq!(store.offset("t", 0).unwrap(), None);
            let commit = Commit {
                state: vec![
                    (b"ca".to_vec(), Some(vec![1])),
                    (b"cb".to_vec(), Some(vec![2])),
                ],
                offsets: vec![("t".into(), 0, 42), ("t".into(), 3, 7)],
            };
            store.commit(&commit).unwrap();
            let delete = Commit {
                state: vec![(b"cb".to_vec(), None)],
                offsets: vec![],
            };
            store.commit(&delete).unwrap();
        }
        let store = Store::open(dir.path(), true).unwrap();
        assert_eq!(store.offset("t", 0).unwrap(), Some(42));
        assert_eq!(store.offset("t", 3).unwrap(), Some(7));
        assert_eq!(store.offset("u", 0).unwrap(), None);
        assert_eq!(
            store.scan_state(b"c").unwrap(),
            vec![(b"ca".to_vec(), vec![1])]
        );
        let mut all = store.offsets();
        all.sort();
        assert_eq!(all, vec![("t".into(), 0, 42), ("t".into(), 3, 7)]);
    }
}
