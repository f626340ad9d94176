//! Typed state: keys serialise to prefixed bytes, values to compact bytes.
//!
//! A consumer declares a key type per table, each with a one-byte prefix,
//! and reads through a [`StateView`], which sees the changes already decided
//! in the current batch before the committed RocksDB state.

use std::collections::HashMap;

use crate::{error::StateError, store::Store};

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
        let mut out = vec![Self::PREFIX];
        self.encode_key(&mut out);
        out
    }
}

/// A value that can be stored in state.
pub trait StateValue: Sized {
    /// Serialise.
    fn to_bytes(&self) -> Vec<u8>;
    /// Deserialise; the error names what is wrong.
    fn from_bytes(bytes: &[u8]) -> Result<Self, String>;
}

impl StateValue for u64 {
    fn to_bytes(&self) -> Vec<u8> {
        self.to_le_bytes().to_vec()
    }
    fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let arr: [u8; 8] = bytes
            .try_into()
            .map_err(|_| format!("{} bytes, expected 8", bytes.len()))?;
        Ok(u64::from_le_bytes(arr))
    }
}

impl StateValue for i64 {
    fn to_bytes(&self) -> Vec<u8> {
        self.to_le_bytes().to_vec()
    }
    fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        u64::from_bytes(bytes).map(|v| v as i64)
    }
}

impl StateValue for () {
    fn to_bytes(&self) -> Vec<u8> {
        Vec::new()
    }
    fn from_bytes(_: &[u8]) -> Result<Self, String> {
        Ok(())
    }
}

/// Changes decided but not yet committed, per input partition.
pub type Overlay = HashMap<Vec<u8>, Option<Vec<u8>>>;

/// What a decider sees: its partition's pending changes over committed state.
pub struct StateView<'a> {
    store: Option<&'a Store>,
    overlay: &'a Overlay,
}

impl<'a> StateView<'a> {
    pub(crate) fn new(store: &'a Store, overlay: &'a Overlay) -> Self {
        Self {
            store: Some(store),
            overlay,
        }
    }

    /// A view over an overlay alone, for unit-testing deciders without I/O.
    pub fn in_memory(overlay: &'a Overlay) -> Self {
        Self {
            store: None,
            overlay,
        }
    }

    /// Read one typed value.
    pub fn get<K: StateKey>(&self, key: &K) -> Result<Option<K::Value>, StateError> {
        let raw = key.to_key_bytes();
        let bytes = match self.overlay.get(&raw) {
            Some(pending) => pending.clone(),
            None => match self.store {
                Some(store) => store.get_state(&raw).map_err(StateError::Read)?,
                None => None,
            },
        };
        bytes
            .map(|b| {
                K::Value::from_bytes(&b).map_err(|reason| StateError::Corrupt {
                    key: String::from_utf8_lossy(&raw).into_owned(),
                    reason,
                })
            })
            .transpose()
    }
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
        let mut overlay = Overlay::new();
        overlay.insert(Count("a").to_key_bytes(), Some(5u64.to_bytes()));
        overlay.insert(Count("b").to_key_bytes(), None);
        let view = StateView::in_memory(&overlay);
        assert_eq!(view.get(&Count("a")).unwrap(), Some(5));
        assert_eq!(view.get(&Count("b")).unwrap(), None);
        assert_eq!(view.get(&Count("c")).unwrap(), None);
    }

    #[test]
    fn a_corrupt_value_names_its_key() {
        let mut overlay = Overlay::new();
        overlay.insert(Count("bad").to_key_bytes(), Some(vec![1, 2, 3]));
        let err = StateView::in_memory(&overlay)
            .get(&Count("bad"))
            .unwrap_err();
        assert!(err.to_string().contains("cbad"), "{err}");
        assert!(err.to_string().contains("3 bytes"), "{err}");
    }
}
