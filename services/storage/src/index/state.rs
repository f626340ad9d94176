//! The indexer's tables. Keys start with the account and a NUL, so one
//! account's entries sort together.

use mailfleet_runtime::{StateKey, StateValue, ValueError};

use crate::StorageError;

fn account_key(out: &mut Vec<u8>, account: &str, rest: &str) {
    out.extend_from_slice(account.as_bytes());
    out.push(0);
    out.extend_from_slice(rest.as_bytes());
}

/// One stored message: `m` + account + NUL + file base name.
pub struct MessageKey {
    pub account: String,
    pub base: String,
}

/// Where a message is and what it weighs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageEntry {
    pub folder: String,
    pub size: i64,
    pub received_at: i64,
    /// The full Maildir file name as written.
    pub file: String,
}

/// Count and bytes of one folder: `f` + account + NUL + folder.
pub struct FolderKey {
    pub account: String,
    pub folder: String,
}

/// Count and bytes of an account's stored mail: `t` + account.
pub struct TotalKey(pub String);

/// Count and bytes of an account's quarantined mail: `q` + account.
pub struct QuarantineKey(pub String);

/// A quarantined delivery already counted: `x` + delivery id.
pub struct QuarantinedKey(pub String);

/// A count and a byte total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub count: i64,
    pub bytes: i64,
}

impl Tally {
    /// One more message of `bytes`.
    pub fn plus_one(self, bytes: i64) -> Self {
        self.shift(Tally { count: 1, bytes })
    }

    /// Add a signed change, never going below zero.
    pub fn shift(self, delta: Tally) -> Self {
        Self {
            count: (self.count + delta.count).max(0),
            bytes: (self.bytes + delta.bytes).max(0),
        }
    }
}

impl StateKey for MessageKey {
    type Value = MessageEntry;
    const PREFIX: u8 = b'm';
    fn encode_key(&self, out: &mut Vec<u8>) {
        account_key(out, &self.account, &self.base);
    }
}

impl StateKey for FolderKey {
    type Value = Tally;
    const PREFIX: u8 = b'f';
    fn encode_key(&self, out: &mut Vec<u8>) {
        account_key(out, &self.account, &self.folder);
    }
}

impl StateKey for TotalKey {
    type Value = Tally;
    const PREFIX: u8 = b't';
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0.as_bytes());
    }
}

impl StateKey for QuarantineKey {
    type Value = Tally;
    const PREFIX: u8 = b'q';
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0.as_bytes());
    }
}

impl StateKey for QuarantinedKey {
    type Value = ();
    const PREFIX: u8 = b'x';
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0.as_bytes());
    }
}

impl StateValue for Tally {
    fn to_bytes(&self) -> Vec<u8> {
        (self.count, self.bytes).to_bytes()
    }
    fn from_bytes(bytes: &[u8]) -> Result<Self, ValueError> {
        let (count, bytes) = <(i64, i64)>::from_bytes(bytes).map_err(|e| e.in_part("tally"))?;
        Ok(Tally { count, bytes })
    }
}

impl StateValue for MessageEntry {
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + self.folder.len() + self.file.len());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.received_at.to_le_bytes());
        out.extend_from_slice(&(self.folder.len() as u32).to_le_bytes());
        out.extend_from_slice(self.folder.as_bytes());
        out.extend_from_slice(self.file.as_bytes());
        out
    }
    fn from_bytes(bytes: &[u8]) -> Result<Self, ValueError> {
        let bad = || ValueError::invalid(StorageError::MessageEntry(bytes.len()));
        let size = i64::from_bytes(bytes.get(0..8).ok_or_else(bad)?)?;
        let received_at = i64::from_bytes(bytes.get(8..16).ok_or_else(bad)?)?;
        let len = u32::from_le_bytes(
            bytes
                .get(16..20)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        ) as usize;
        let folder = bytes.get(20..20 + len).ok_or_else(bad)?;
        let file = bytes.get(20 + len..).ok_or_else(bad)?;
        let text = |b: &[u8]| String::from_utf8(b.to_vec());
        Ok(MessageEntry {
            folder: text(folder)?,
            size,
            received_at,
            file: text(file)?,
        })
    }
}

/// The partition's index size: `s`.
pub struct StatsKey;

impl StateKey for StatsKey {
    type Value = Tally;
    const PREFIX: u8 = b's';
    fn encode_key(&self, _out: &mut Vec<u8>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let e = MessageEntry {
            folder: "Spam".into(),
            size: 9,
            received_at: -1,
            file: "1.M2.h,S=9,W=9".into(),
        };
        assert_eq!(MessageEntry::from_bytes(&e.to_bytes()).unwrap(), e);
        assert!(MessageEntry::from_bytes(b"short").is_err());
        let t = Tally { count: 2, bytes: 5 };
        assert_eq!(Tally::from_bytes(&t.to_bytes()).unwrap(), t);
    }
}
