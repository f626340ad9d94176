//! The outbox: the changelog's share of each commit, kept in the store
//! until it is shipped.
//!
//! [`Store::commit`] calls [`Outbox::add`] with the commit's own
//! `WriteBatch`, so an outbox entry exists if and only if its commit does.
//! One entry per (commit, state partition): key `sequence ++ partition`
//! (both big-endian, so the queue reads in commit order), value the
//! partition's [`Item`]s: every state put and delete (keys without their
//! partition prefix: the changelog partition is the state partition), then
//! the next offset of each of its input partitions.
//!
//! Also here: the bookkeeping in the `changelog` column family (the store's
//! id, how far each partition was shipped, partitions not to ship) and the
//! partition-wide writes of a restore.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rocksdb::{ColumnFamily, Direction, IteratorMode, WriteBatch};

use crate::{
    error::RuntimeError,
    state::{partition_key, split_partition_key},
    store::{offset_key, Commit, Store, CF_CHANGELOG, CF_OFFSETS, CF_OUTBOX},
};

/// Whether commits fill the outbox, and the next sequence number.
#[derive(Default)]
pub struct Outbox {
    on: AtomicBool,
    next: AtomicU64,
}

/// One change of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A state key (table prefix and body) and its new value.
    Put(Vec<u8>, Vec<u8>),
    /// A state key deleted.
    Delete(Vec<u8>),
    /// The next offset to read of an input topic's partition.
    Offset(String, i64),
}

/// An outbox entry: its key and the partition's items.
pub type Entry = (Vec<u8>, i32, Vec<Item>);

const PUT: u8 = 0;
const DELETE: u8 = 1;
const OFFSET: u8 = 2;

impl Outbox {
    /// Whether commits fill the outbox.
    pub fn enabled(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    /// Add `commit`'s items to `batch`, one entry per state partition.
    pub fn add(&self, batch: &mut WriteBatch, cf: &ColumnFamily, commit: &Commit) {
        let mut parts: std::collections::BTreeMap<i32, Vec<u8>> = Default::default();
        for (stored, value) in &commit.state {
            // Every state key is stored under its partition (`StateView`).
            let Some((partition, key)) = split_partition_key(stored) else {
                continue;
            };
            let out = parts.entry(partition).or_default();
            match value {
                Some(v) => {
                    out.push(PUT);
                    put_bytes(out, key);
                    put_bytes(out, v);
                }
                None => {
                    out.push(DELETE);
                    put_bytes(out, key);
                }
            }
        }
        for (topic, partition, next) in &commit.offsets {
            let out = parts.entry(*partition).or_default();
            out.push(OFFSET);
            put_bytes(out, topic.as_bytes());
            out.extend_from_slice(&next.to_le_bytes());
        }
        let seq = self.next.fetch_add(1, Ordering::AcqRel);
        for (partition, body) in parts {
            batch.put_cf(cf, entry_key(seq, partition), body);
        }
    }
}

fn entry_key(seq: u64, partition: i32) -> [u8; 12] {
    let mut k = [0; 12];
    k[..8].copy_from_slice(&seq.to_be_bytes());
    k[8..].copy_from_slice(&partition.to_be_bytes());
    k
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Encode items as an outbox value (a restore's seed, tests).
pub fn encode(items: &[Item]) -> Vec<u8> {
    let mut out = Vec::new();
    for item in items {
        match item {
            Item::Put(k, v) => {
                out.push(PUT);
                put_bytes(&mut out, k);
                put_bytes(&mut out, v);
            }
            Item::Delete(k) => {
                out.push(DELETE);
                put_bytes(&mut out, k);
            }
            Item::Offset(t, next) => {
                out.push(OFFSET);
                put_bytes(&mut out, t.as_bytes());
                out.extend_from_slice(&next.to_le_bytes());
            }
        }
    }
    out
}

/// Decode an outbox value; `None` if it is cut short or unknown.
pub fn decode(mut bytes: &[u8]) -> Option<Vec<Item>> {
    let mut out = Vec::new();
    while let Some((&tag, rest)) = bytes.split_first() {
        bytes = rest;
        let key = take(&mut bytes)?;
        out.push(match tag {
            PUT => Item::Put(key, take(&mut bytes)?),
            DELETE => Item::Delete(key),
            OFFSET => {
                let (n, rest) = bytes.split_at_checked(8)?;
                bytes = rest;
                Item::Offset(
                    String::from_utf8(key).ok()?,
                    i64::from_le_bytes(n.try_into().ok()?),
                )
            }
            _ => return None,
        });
    }
    Some(out)
}

fn take(bytes: &mut &[u8]) -> Option<Vec<u8>> {
    let (len, rest) = bytes.split_at_checked(4)?;
    let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
    let (v, rest) = rest.split_at_checked(len)?;
    *bytes = rest;
    Some(v.to_vec())
}

fn store_err(op: &'static str) -> impl Fn(rocksdb::Error) -> RuntimeError {
    move |source| RuntimeError::Store { op, source }
}

const META_ID: &[u8] = b"id";
const META_SHIPPED: u8 = b's';
const META_DIVERGED: u8 = b'd';

fn meta_key(kind: u8, partition: i32) -> [u8; 5] {
    let mut k = [kind; 5];
    k[1..].copy_from_slice(&partition.to_be_bytes());
    k
}

impl Store {
    /// Make every commit from now on fill the outbox.
    pub(crate) fn enable_outbox(&self) {
        let last = self
            .db()
            .iterator_cf(self.cf(CF_OUTBOX), IteratorMode::End)
            .flatten()
            .next()
            .and_then(|(k, _)| Some(u64::from_be_bytes(k.get(..8)?.try_into().ok()?)));
        let outbox = self.outbox();
        outbox
            .next
            .store(last.map_or(0, |l| l + 1), Ordering::Release);
        outbox.on.store(true, Ordering::Release);
    }

    /// Up to `max` outbox entries from `from` on, in commit order.
    pub(crate) fn outbox_from(&self, from: &[u8], max: usize) -> Result<Vec<Entry>, RuntimeError> {
        let iter = self.db().iterator_cf(
            self.cf(CF_OUTBOX),
            IteratorMode::From(from, Direction::Forward),
        );
        let mut out = Vec::new();
        for entry in iter.take(max) {
            let (k, v) = entry.map_err(store_err("read the outbox"))?;
            let partition = k
                .get(8..12)
                .and_then(|p| p.try_into().ok())
                .map(i32::from_be_bytes);
            let (Some(partition), Some(items)) = (partition, decode(&v)) else {
                return Err(RuntimeError::Changelog {
                    topic: self.path().display().to_string(),
                    reason: format!("corrupt outbox entry {}", hex::encode(&k)),
                });
            };
            out.push((k.to_vec(), partition, items));
        }
        Ok(out)
    }

    /// Shipped: delete these entries and note where each partition's
    /// changelog ends now, in one batch.
    pub(crate) fn outbox_shipped(
        &self,
        keys: &[Vec<u8>],
        ends: &[(i32, i64)],
    ) -> Result<(), RuntimeError> {
        let mut batch = WriteBatch::default();
        for k in keys {
            batch.delete_cf(self.cf(CF_OUTBOX), k);
        }
        for (p, end) in ends {
            batch.put_cf(
                self.cf(CF_CHANGELOG),
                meta_key(META_SHIPPED, *p),
                end.to_le_bytes(),
            );
        }
        self.db()
            .write(batch)
            .map_err(store_err("note the shipped outbox"))
    }

    /// This store's id (made on first use): its changelog shipper's
    /// transactional id, which a restarted process takes up again.
    pub(crate) fn store_id(&self) -> Result<String, RuntimeError> {
        let cf = self.cf(CF_CHANGELOG);
        if let Some(id) = self
            .db()
            .get_cf(cf, META_ID)
            .map_err(store_err("read the store id"))?
        {
            return Ok(String::from_utf8_lossy(&id).into_owned());
        }
        // Unique enough: where, when and by which process it was made.
        let made = format!(
            "{} {:?} {}",
            self.path().display(),
            std::time::SystemTime::now(),
            std::process::id()
        );
        let id = hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(made)[..8]);
        self.db()
            .put_cf(cf, META_ID, id.as_bytes())
            .map_err(store_err("write the store id"))?;
        Ok(id)
    }

    /// Where `partition`'s changelog ended after this store last shipped
    /// to it, or restored from it.
    pub(crate) fn shipped_end(&self, partition: i32) -> Result<Option<i64>, RuntimeError> {
        let raw = self
            .db()
            .get_cf(self.cf(CF_CHANGELOG), meta_key(META_SHIPPED, partition))
            .map_err(store_err("read the shipped end"))?;
        Ok(raw.and_then(|v| Some(i64::from_le_bytes(v.try_into().ok()?))))
    }

    /// Whether `partition`'s changelog was written by another member since
    /// this store last shipped to it: nothing of it ships from here until
    /// the partition is restored.
    pub(crate) fn diverged(&self, partition: i32) -> Result<bool, RuntimeError> {
        self.db()
            .get_cf(self.cf(CF_CHANGELOG), meta_key(META_DIVERGED, partition))
            .map(|v| v.is_some())
            .map_err(store_err("read the diverged mark"))
    }

    /// Mark `partition` diverged and drop its unshipped entries.
    pub(crate) fn mark_diverged(&self, partition: i32) -> Result<(), RuntimeError> {
        let mut batch = WriteBatch::default();
        self.drop_outbox_of(&mut batch, partition)?;
        batch.put_cf(
            self.cf(CF_CHANGELOG),
            meta_key(META_DIVERGED, partition),
            [],
        );
        self.db().write(batch).map_err(store_err("mark diverged"))
    }

    fn drop_outbox_of(&self, batch: &mut WriteBatch, partition: i32) -> Result<(), RuntimeError> {
        for entry in self
            .db()
            .iterator_cf(self.cf(CF_OUTBOX), IteratorMode::Start)
        {
            let (k, _) = entry.map_err(store_err("read the outbox"))?;
            if k.get(8..12) == Some(&partition.to_be_bytes()[..]) {
                batch.delete_cf(self.cf(CF_OUTBOX), k);
            }
        }
        Ok(())
    }

    /// Forget `partition` before a restore: its state, its offsets in
    /// `topics`, its unshipped outbox entries and its marks.
    pub(crate) fn reset_partition(
        &self,
        partition: i32,
        topics: &[String],
    ) -> Result<(), RuntimeError> {
        if self.in_place() {
            // Never so: the runner opens a changelog consumer's store
            // without in-place updates (`Store::open_for_run`).
            return Err(RuntimeError::InvalidConfig(vec![format!(
                "store {}: a partition reset needs a range deletion, which a store updating in place cannot take",
                self.path().display()
            )]));
        }
        let mut batch = WriteBatch::default();
        let from = partition.to_be_bytes();
        let to = (partition + 1).to_be_bytes();
        batch.delete_range_cf(self.cf(crate::store::CF_STATE), from, to);
        for topic in topics {
            batch.delete_cf(self.cf(CF_OFFSETS), offset_key(topic, partition));
        }
        self.drop_outbox_of(&mut batch, partition)?;
        batch.delete_cf(self.cf(CF_CHANGELOG), meta_key(META_DIVERGED, partition));
        batch.delete_cf(self.cf(CF_CHANGELOG), meta_key(META_SHIPPED, partition));
        let written = self
            .db()
            .write(batch)
            .map_err(store_err("reset a partition"));
        self.cache().clear();
        written
    }

    /// Write restored state of `partition` (puts and deletes, in order).
    pub(crate) fn write_restored(
        &self,
        partition: i32,
        items: &[Item],
    ) -> Result<(), RuntimeError> {
        let mut batch = WriteBatch::default();
        let state = self.cf(crate::store::CF_STATE);
        for item in items {
            match item {
                Item::Put(k, v) => batch.put_cf(state, partition_key(partition, k), v),
                Item::Delete(k) => batch.delete_cf(state, partition_key(partition, k)),
                Item::Offset(..) => {}
            }
        }
        self.db()
            .write(batch)
            .map_err(store_err("write restored state"))
    }

    /// End a restore of `partition`: its offsets, and where its changelog
    /// ended when read. State written before is consistent with these.
    pub(crate) fn finish_restore(
        &self,
        partition: i32,
        offsets: &[(String, i64)],
        end: i64,
    ) -> Result<(), RuntimeError> {
        let mut batch = WriteBatch::default();
        for (topic, next) in offsets {
            batch.put_cf(
                self.cf(CF_OFFSETS),
                offset_key(topic, partition),
                next.to_le_bytes(),
            );
        }
        batch.put_cf(
            self.cf(CF_CHANGELOG),
            meta_key(META_SHIPPED, partition),
            end.to_le_bytes(),
        );
        let written = self
            .db()
            .write(batch)
            .map_err(store_err("finish a restore"));
        self.cache().clear();
        written
    }

    /// Put `partition`'s whole state and offsets in the outbox, as one
    /// entry after everything in it: a changelog started on a store that
    /// already has state begins with all of it. `false` if the partition
    /// has no offsets here.
    pub(crate) fn seed_outbox(
        &self,
        partition: i32,
        topics: &[String],
    ) -> Result<bool, RuntimeError> {
        let offsets: Vec<Item> = topics
            .iter()
            .filter_map(|t| Some(Item::Offset(t.clone(), self.offset(t, partition).ok()??)))
            .collect();
        if offsets.is_empty() {
            return Ok(false);
        }
        let rows = self
            .scan_state(&partition.to_be_bytes())
            .map_err(store_err("scan state"))?;
        let mut items: Vec<Item> = rows
            .into_iter()
            .map(|(k, v)| Item::Put(k[4..].to_vec(), v))
            .collect();
        items.extend(offsets);
        let seq = self.outbox().next.fetch_add(1, Ordering::AcqRel);
        self.db()
            .put_cf(
                self.cf(CF_OUTBOX),
                entry_key(seq, partition),
                encode(&items),
            )
            .map_err(store_err("seed the outbox"))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_round_trip_and_a_cut_entry_is_refused() {
        let items = vec![
            Item::Put(b"ka".to_vec(), vec![1, 2]),
            Item::Put(b"kb".to_vec(), vec![]),
            Item::Delete(b"kc".to_vec()),
            Item::Offset("t".into(), 42),
        ];
        let bytes = encode(&items);
        assert_eq!(decode(&bytes), Some(items));
        assert_eq!(decode(&bytes[..bytes.len() - 1]), None);
    }

    #[test]
    fn a_commit_fills_the_outbox_in_its_own_batch_per_partition() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let commit = |v: u8| Commit {
            state: vec![
                (partition_key(1, b"ka"), Some(vec![v])),
                (partition_key(2, b"kb"), None),
            ],
            offsets: vec![("t".into(), 1, 10 + i64::from(v)), ("t".into(), 2, 5)],
        };
        store.commit(&commit(0)).unwrap();
        assert!(
            store.outbox_from(&[], 10).unwrap().is_empty(),
            "off by default"
        );
        store.enable_outbox();
        store.commit(&commit(1)).unwrap();
        store.commit(&commit(2)).unwrap();
        let entries = store.outbox_from(&[], 10).unwrap();
        let shape: Vec<(i32, Vec<Item>)> =
            entries.iter().map(|(_, p, i)| (*p, i.clone())).collect();
        assert_eq!(
            shape,
            vec![
                (
                    1,
                    vec![
                        Item::Put(b"ka".to_vec(), vec![1]),
                        Item::Offset("t".into(), 11)
                    ]
                ),
                (
                    2,
                    vec![Item::Delete(b"kb".to_vec()), Item::Offset("t".into(), 5)]
                ),
                (
                    1,
                    vec![
                        Item::Put(b"ka".to_vec(), vec![2]),
                        Item::Offset("t".into(), 12)
                    ]
                ),
                (
                    2,
                    vec![Item::Delete(b"kb".to_vec()), Item::Offset("t".into(), 5)]
                ),
            ]
        );
        let keys: Vec<Vec<u8>> = entries[..2].iter().map(|e| e.0.clone()).collect();
        store.outbox_shipped(&keys, &[(1, 7)]).unwrap();
        assert_eq!(store.outbox_from(&[], 10).unwrap().len(), 2);
        assert_eq!(store.shipped_end(1).unwrap(), Some(7));
        drop(store);
        // Reopened, the sequence goes on after what is still queued.
        let store = Store::open(dir.path(), false).unwrap();
        store.enable_outbox();
        store.commit(&commit(3)).unwrap();
        let entries = store.outbox_from(&[], 10).unwrap();
        assert_eq!(entries.len(), 4);
        assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
        store.reset_partition(1, &["t".to_string()]).unwrap();
        assert!(store.outbox_from(&[], 10).unwrap().iter().all(|e| e.1 == 2));
        assert_eq!(store.offset("t", 1).unwrap(), None);
        assert_eq!(store.get_state(&partition_key(1, b"ka")).unwrap(), None);
    }
}
