//! Typed state: keys serialise to prefixed bytes, values to compact bytes.
//!
//! A consumer declares a key type per table, each with a one-byte prefix,
//! and reads through a [`StateView`], which sees the changes already decided
//! in the current batch before the committed RocksDB state.
//!
//! In RocksDB every key is stored under its input partition
//! (`partition as i32 big-endian ++ table prefix ++ key body`), so the
//! state of one partition can be scanned, digested or dropped on its own.

use rustc_hash::FxHashMap;

use crate::{
    error::{StateError, ValueError},
    store::Store,
};

/// A typed state key. `PREFIX` separates tables inside the state column
/// family; prefixes `0xF0..=0xFF` are reserved for the runtime.
pub trait StateKey {
    /// The value type stored under this key.
    type Value: StateValue;
    /// One byte naming the table.
    const PREFIX: u8;
    /// Append the key's bytes after the prefix.
    fn encode_key(&self, out: &mut Vec<u8>);

    /// The full key: prefix then body.
    fn to_key_bytes(&self) -> Vec<u8> {
        with_key_bytes(self, <[u8]>::to_vec)
    }
}

thread_local! {
    /// Where keys are built for a lookup, reused: reading state is the
    /// hottest path of every consumer.
    static KEY_SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// `f` of `key`'s full bytes, built without an allocation once this
/// thread's scratch buffer has grown to the keys' size.
fn with_key_bytes<K: StateKey + ?Sized, R>(key: &K, f: impl FnOnce(&[u8]) -> R) -> R {
    // Taken out while in use, so a nested call builds in a buffer of its own.
    let mut buf = KEY_SCRATCH.take();
    buf.clear();
    buf.push(K::PREFIX);
    key.encode_key(&mut buf);
    let out = f(&buf);
    KEY_SCRATCH.set(buf);
    out
}

/// A value that can be stored in state.
pub trait StateValue: Sized {
    /// Serialise.
    fn to_bytes(&self) -> Vec<u8>;
    /// Deserialise; the error names what is wrong.
    fn from_bytes(bytes: &[u8]) -> Result<Self, ValueError>;
}

impl StateValue for u64 {
    fn to_bytes(&self) -> Vec<u8> {
        self.to_le_bytes().to_vec()
    }
    fn from_bytes(bytes: &[u8]) -> Result<Self, ValueError> {
        let arr: [u8; 8] = bytes.try_into().map_err(|_| ValueError::Length {
            len: bytes.len(),
            expected: 8,
        })?;
        Ok(u64::from_le_bytes(arr))
    }
}

impl StateValue for i64 {
    fn to_bytes(&self) -> Vec<u8> {
        self.to_le_bytes().to_vec()
    }
    fn from_bytes(bytes: &[u8]) -> Result<Self, ValueError> {
        u64::from_bytes(bytes).map(|v| v as i64)
    }
}

/// Two numbers, for the many (count, total) and (first, last) values.
impl StateValue for (i64, i64) {
    fn to_bytes(&self) -> Vec<u8> {
        [self.0.to_le_bytes(), self.1.to_le_bytes()].concat()
    }
    fn from_bytes(bytes: &[u8]) -> Result<Self, ValueError> {
        if bytes.len() != 16 {
            return Err(ValueError::Length {
                len: bytes.len(),
                expected: 16,
            });
        }
        let (a, b) = bytes.split_at(8);
        Ok((i64::from_bytes(a)?, i64::from_bytes(b)?))
    }
}

impl StateValue for () {
    fn to_bytes(&self) -> Vec<u8> {
        Vec::new()
    }
    fn from_bytes(_: &[u8]) -> Result<Self, ValueError> {
        Ok(())
    }
}

/// Changes decided but not yet committed, per input partition, by key
/// (table prefix and body, without the partition).
pub type Overlay = FxHashMap<Vec<u8>, Option<Vec<u8>>>;

/// A table scan: (key body, value) pairs in key order.
pub type Scanned<V> = Vec<(Vec<u8>, V)>;

/// The stored form of a key: its partition, then the key.
pub fn partition_key(partition: i32, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + key.len());
    out.extend_from_slice(&partition.to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// `f` of [`partition_key`], built on the stack for a short key.
fn with_partition_key<R>(partition: i32, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
    const SHORT: usize = 124;
    if key.len() > SHORT {
        return f(&partition_key(partition, key));
    }
    let mut buf = [0u8; SHORT + 4];
    buf[..4].copy_from_slice(&partition.to_be_bytes());
    buf[4..4 + key.len()].copy_from_slice(key);
    f(&buf[..4 + key.len()])
}

/// Split a stored key into its partition and the key.
pub fn split_partition_key(stored: &[u8]) -> Option<(i32, &[u8])> {
    let (p, key) = stored.split_at_checked(4)?;
    Some((i32::from_be_bytes(p.try_into().ok()?), key))
}

/// What a decider sees: its partition's pending changes over committed state.
///
/// Pending changes come in two layers: the current batch's (`overlay`),
/// and those of the batch before it when that one is still being
/// acknowledged and committed (`earlier`, see the runner's pipeline).
pub struct StateView<'a> {
    store: Option<&'a Store>,
    partition: i32,
    overlay: &'a Overlay,
    earlier: Option<&'a Overlay>,
}

impl<'a> StateView<'a> {
    /// A view of `partition` in `store` with `overlay`'s pending changes
    /// on top: what the runner hands a decider (benchmarks build one too).
    pub fn new(store: &'a Store, partition: i32, overlay: &'a Overlay) -> Self {
        Self {
            store: Some(store),
            partition,
            overlay,
            earlier: None,
        }
    }

    /// The same view with the decided but not yet committed changes of an
    /// earlier batch between `overlay` and the store.
    pub fn with_earlier(mut self, earlier: Option<&'a Overlay>) -> Self {
        self.earlier = earlier;
        self
    }

    /// A view over an overlay alone, for unit-testing deciders without I/O.
    pub fn in_memory(overlay: &'a Overlay) -> Self {
        Self {
            store: None,
            partition: 0,
            overlay,
            earlier: None,
        }
    }

    /// Read one typed value.
    pub fn get<K: StateKey>(&self, key: &K) -> Result<Option<K::Value>, StateError> {
        with_key_bytes(key, |raw| {
            self.with_bytes(raw, |bytes| {
                bytes.map(|b| decode_value::<K>(raw, b)).transpose()
            })?
        })
    }

    /// Read one value's stored bytes, undecoded: for a caller that can
    /// tell bytes it decoded before (a large value read per event).
    pub fn get_raw<K: StateKey>(&self, key: &K) -> Result<Option<Vec<u8>>, StateError> {
        with_key_bytes(key, |raw| {
            self.with_bytes(raw, |bytes| bytes.map(<[u8]>::to_vec))
        })
    }

    /// `f` of the value under `raw` (prefix and body), pending or committed,
    /// lent rather than copied.
    fn with_bytes<R>(
        &self,
        raw: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R, StateError> {
        let pending = self
            .overlay
            .get(raw)
            .or_else(|| self.earlier.and_then(|e| e.get(raw)));
        match (pending, self.store) {
            (Some(pending), _) => Ok(f(pending.as_deref())),
            (None, Some(store)) => with_partition_key(self.partition, raw, |stored| {
                store.with_state(stored, f).map_err(StateError::Read)
            }),
            (None, None) => Ok(f(None)),
        }
    }

    /// Decode bytes read with [`StateView::get_raw`] as `K`'s value; the
    /// error names the key, as [`StateView::get`]'s does.
    pub fn decode<K: StateKey>(key: &K, bytes: &[u8]) -> Result<K::Value, StateError> {
        with_key_bytes(key, |raw| decode_value::<K>(raw, bytes))
    }

    /// Every entry of one table in this partition, as (key body, value),
    /// ordered by key: for clock-driven sweeps such as expiry.
    pub fn scan<K: StateKey>(&self) -> Result<Scanned<K::Value>, StateError> {
        self.scan_prefix::<K>(&[])
    }

    /// The entries of one table whose key body starts with `prefix` (one
    /// account's rows, say), as (key body, value), ordered by key.
    pub fn scan_prefix<K: StateKey>(&self, prefix: &[u8]) -> Result<Scanned<K::Value>, StateError> {
        let mut table = vec![K::PREFIX];
        table.extend_from_slice(prefix);
        let mut merged: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = match self.store {
            Some(store) => store
                .scan_state(&partition_key(self.partition, &table))
                .map_err(StateError::Read)?
                .into_iter()
                .map(|(k, v)| (k[4..].to_vec(), v))
                .collect(),
            None => Default::default(),
        };
        for layer in self.earlier.into_iter().chain([self.overlay]) {
            for (k, v) in layer.iter().filter(|(k, _)| k.starts_with(&table)) {
                match v {
                    Some(v) => merged.insert(k.clone(), v.clone()),
                    None => merged.remove(k),
                };
            }
        }
        merged
            .into_iter()
            .map(|(k, v)| Ok((k[1..].to_vec(), decode_value::<K>(&k, &v)?)))
            .collect()
    }
}

fn decode_value<K: StateKey>(raw: &[u8], bytes: &[u8]) -> Result<K::Value, StateError> {
    K::Value::from_bytes(bytes).map_err(|source| StateError::Corrupt {
        key: String::from_utf8_lossy(raw).into_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Count<'a>(&'a str);
    impl StateKey for Count<'_> {
        type Value = u64;
        const PREFIX: u8 = b'c';
        fn encode_key(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(self.0.as_bytes());
        }
    }

    #[test]
    fn overlay_values_and_deletes_are_seen() {
        let mut overlay = Overlay::default();
        overlay.insert(Count("a").to_key_bytes(), Some(5u64.to_bytes()));
        overlay.insert(Count("b").to_key_bytes(), None);
        let view = StateView::in_memory(&overlay);
        assert_eq!(view.get(&Count("a")).unwrap(), Some(5));
        assert_eq!(view.get(&Count("b")).unwrap(), None);
        assert_eq!(view.get(&Count("c")).unwrap(), None);
    }

    fn view_prefix(store: &Store, overlay: &Overlay, prefix: &[u8]) -> Vec<(Vec<u8>, u64)> {
        StateView::new(store, 1, overlay)
            .scan_prefix::<Count>(prefix)
            .unwrap()
    }

    #[test]
    fn scan_merges_pending_changes_over_stored_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let stored = |p: i32, k: &str, v: u64| {
            (
                partition_key(p, &Count(k).to_key_bytes()),
                Some(v.to_bytes()),
            )
        };
        let commit = crate::store::Commit {
            state: vec![stored(1, "a", 1), stored(1, "b", 2), stored(2, "c", 3)],
            offsets: vec![],
        };
        store.commit(&commit).unwrap();
        let mut overlay = Overlay::default();
        overlay.insert(Count("b").to_key_bytes(), None);
        overlay.insert(Count("d").to_key_bytes(), Some(4u64.to_bytes()));
        let view = StateView::new(&store, 1, &overlay);
        let all = view.scan::<Count>().unwrap();
        assert_eq!(
            all,
            vec![(b"a".to_vec(), 1), (b"d".to_vec(), 4)],
            "partition 2's key is not seen"
        );
        assert_eq!(view.get(&Count("a")).unwrap(), Some(1));
        assert_eq!(
            StateView::new(&store, 2, &overlay)
                .get(&Count("a"))
                .unwrap(),
            None
        );
        assert_eq!(
            split_partition_key(&partition_key(7, b"xy")),
            Some((7, &b"xy"[..]))
        );
        overlay.insert(Count("ab").to_key_bytes(), Some(5u64.to_bytes()));
        assert_eq!(
            view_prefix(&store, &overlay, b"a"),
            vec![(b"a".to_vec(), 1), (b"ab".to_vec(), 5)],
            "a prefix scan sees stored and pending rows under it only"
        );
        overlay.insert(Count("a").to_key_bytes(), None);
        assert_eq!(
            view_prefix(&store, &overlay, b"a"),
            vec![(b"ab".to_vec(), 5)]
        );
    }

    #[test]
    fn an_earlier_batchs_pending_changes_sit_between_this_batch_and_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let stored = |k: &str, v: u64| {
            (
                partition_key(1, &Count(k).to_key_bytes()),
                Some(v.to_bytes()),
            )
        };
        store
            .commit(&crate::store::Commit {
                state: vec![stored("a", 1), stored("b", 2), stored("c", 3)],
                offsets: vec![],
            })
            .unwrap();
        let mut earlier = Overlay::default();
        earlier.insert(Count("a").to_key_bytes(), Some(10u64.to_bytes()));
        earlier.insert(Count("b").to_key_bytes(), None);
        earlier.insert(Count("d").to_key_bytes(), Some(40u64.to_bytes()));
        let mut overlay = Overlay::default();
        overlay.insert(Count("d").to_key_bytes(), None);
        overlay.insert(Count("e").to_key_bytes(), Some(50u64.to_bytes()));
        let view = StateView::new(&store, 1, &overlay).with_earlier(Some(&earlier));
        assert_eq!(
            view.get(&Count("a")).unwrap(),
            Some(10),
            "earlier over the store"
        );
        assert_eq!(
            view.get(&Count("b")).unwrap(),
            None,
            "an earlier delete hides the store"
        );
        assert_eq!(
            view.get(&Count("c")).unwrap(),
            Some(3),
            "the store under both"
        );
        assert_eq!(
            view.get(&Count("d")).unwrap(),
            None,
            "this batch over the earlier one"
        );
        assert_eq!(
            view.scan::<Count>().unwrap(),
            vec![(b"a".to_vec(), 10), (b"c".to_vec(), 3), (b"e".to_vec(), 50)]
        );
        let plain = StateView::new(&store, 1, &overlay);
        assert_eq!(
            plain.get(&Count("a")).unwrap(),
            Some(1),
            "no earlier layer: the store"
        );
    }

    /// A key read inside another key's read: the scratch buffer is not
    /// shared between them.
    struct Nested<'a>(&'a str);
    impl StateKey for Nested<'_> {
        type Value = u64;
        const PREFIX: u8 = b'c';
        fn encode_key(&self, out: &mut Vec<u8>) {
            let inner = Count("inner").to_key_bytes();
            assert_eq!(inner, b"cinner");
            out.extend_from_slice(self.0.as_bytes());
        }
    }

    #[test]
    fn keys_of_every_length_read_back_from_the_store_and_the_overlay() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        // Around the stack-built stored key's limit (124 key bytes), and far past it.
        let names: Vec<String> = [1, 123, 124, 125, 4000]
            .iter()
            .map(|n| "k".repeat(*n))
            .collect();
        let state = names
            .iter()
            .enumerate()
            .map(|(i, k)| {
                (
                    partition_key(3, &Count(k).to_key_bytes()),
                    Some((i as u64).to_bytes()),
                )
            })
            .collect();
        store
            .commit(&crate::store::Commit {
                state,
                offsets: vec![],
            })
            .unwrap();
        let mut overlay = Overlay::default();
        overlay.insert(
            Count(&"p".repeat(300)).to_key_bytes(),
            Some(7u64.to_bytes()),
        );
        let view = StateView::new(&store, 3, &overlay);
        for (i, k) in names.iter().enumerate() {
            assert_eq!(
                view.get(&Count(k)).unwrap(),
                Some(i as u64),
                "{} bytes",
                k.len()
            );
            assert_eq!(
                view.get_raw(&Count(k)).unwrap(),
                Some((i as u64).to_bytes())
            );
            // Twice: the second read is the cache's.
            assert_eq!(view.get(&Count(k)).unwrap(), Some(i as u64));
            assert_eq!(
                StateView::new(&store, 4, &overlay).get(&Count(k)).unwrap(),
                None
            );
        }
        assert_eq!(view.get(&Count(&"p".repeat(300))).unwrap(), Some(7));
        assert_eq!(view.get(&Nested(&names[0])).unwrap(), Some(0));
        assert_eq!(view.get(&Nested(&names[4])).unwrap(), Some(4));
    }

    #[test]
    fn a_corrupt_value_names_its_key() {
        let mut overlay = Overlay::default();
        overlay.insert(Count("bad").to_key_bytes(), Some(vec![1, 2, 3]));
        let err = StateView::in_memory(&overlay)
            .get(&Count("bad"))
            .unwrap_err();
        assert!(err.to_string().contains("cbad"), "{err}");
        assert!(err.to_string().contains("3 bytes"), "{err}");
    }
}
