//! The purge planner's tables, per partition.
//!
//! | key                                             | value                       |
//! |-------------------------------------------------|-----------------------------|
//! | `b` + account                                   | `()`: it has a mailbox      |
//! | `f` + account + NUL + folder                    | messages delivered there    |
//! | `r` + run id                                    | `()`: the run is planned    |
//! | `s` + due ms (8 bytes, sortable) + run id + NUL + account | [`Pending`]        |
//!
//! The slot keys sort by time, so a tick releases a prefix of the table.

use mailfleet_runtime::{StateKey, StateValue, ValueError};

use crate::SchedulerError;

/// An account with a mailbox.
pub struct MailboxKey<'a>(pub &'a str);

/// Messages the writer delivered into one folder of one account (IMAP
/// moves are not in the log: a lower bound for folders clients fill).
pub struct FolderKey<'a> {
    pub account: &'a str,
    pub folder: &'a str,
}

/// A purge run already planned: a repeated `JobDue` is ignored.
pub struct RunKey<'a>(pub &'a str);

/// One account's purge, waiting for its time.
pub struct SlotKey<'a> {
    pub at: i64,
    pub run_id: &'a str,
    pub account: &'a str,
}

/// What a slot releases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub folder: String,
    pub received_before: i64,
}

impl StateKey for MailboxKey<'_> {
    type Value = ();
    const PREFIX: u8 = b'b';
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0.as_bytes());
    }
}

impl StateKey for FolderKey<'_> {
    type Value = i64;
    const PREFIX: u8 = b'f';
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.account.as_bytes());
        out.push(0);
        out.extend_from_slice(self.folder.as_bytes());
    }
}

impl StateKey for RunKey<'_> {
    type Value = ();
    const PREFIX: u8 = b'r';
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0.as_bytes());
    }
}

/// `at` with its sign bit flipped, big-endian: byte order is time order.
pub fn sortable(at: i64) -> [u8; 8] {
    ((at as u64) ^ (1 << 63)).to_be_bytes()
}

impl StateKey for SlotKey<'_> {
    type Value = Pending;
    const PREFIX: u8 = b's';
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&sortable(self.at));
        out.extend_from_slice(self.run_id.as_bytes());
        out.push(0);
        out.extend_from_slice(self.account.as_bytes());
    }
}

/// A slot key read back from a scan (the body after the table byte).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotBody {
    pub at: i64,
    pub run_id: String,
    pub account: String,
}

impl SlotBody {
    pub fn parse(body: &[u8]) -> Result<Self, ValueError> {
        let (time, rest) = body
            .split_first_chunk::<8>()
            .ok_or_else(|| ValueError::invalid(SchedulerError::SlotKeySize(body.len())))?;
        let at = (u64::from_be_bytes(*time) ^ (1 << 63)) as i64;
        let nul = rest
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| ValueError::invalid(SchedulerError::SlotKeyWithoutNul))?;
        let text = |b: &[u8]| String::from_utf8(b.to_vec());
        Ok(Self {
            at,
            run_id: text(&rest[..nul])?,
            account: text(&rest[nul + 1..])?,
        })
    }

    pub fn key(&self) -> SlotKey<'_> {
        SlotKey {
            at: self.at,
            run_id: &self.run_id,
            account: &self.account,
        }
    }
}

impl StateValue for Pending {
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.folder.len());
        out.extend_from_slice(&self.received_before.to_le_bytes());
        out.extend_from_slice(self.folder.as_bytes());
        out
    }
    fn from_bytes(bytes: &[u8]) -> Result<Self, ValueError> {
        let (before, folder) = bytes
            .split_first_chunk::<8>()
            .ok_or_else(|| ValueError::invalid(SchedulerError::PendingSize(bytes.len())))?;
        Ok(Self {
            received_before: i64::from_le_bytes(*before),
            folder: String::from_utf8(folder.to_vec())?,
        })
    }
}

#[cfg(test)]
mod scheduler_tests {
    use super::*;

    #[test]
    fn purger_slot_keys_sort_by_time_and_read_back() {
        let key = |at: i64| {
            SlotKey {
                at,
                run_id: "trash-purge:2026-11-28T00:00:00Z",
                account: "bob@x.test",
            }
            .to_key_bytes()
        };
        assert!(key(-5) < key(0) && key(0) < key(7) && key(7) < key(1_000_000));
        let back = SlotBody::parse(&key(1_795_824_001_000)[1..]).unwrap();
        assert_eq!(back.at, 1_795_824_001_000);
        assert_eq!(back.account, "bob@x.test");
        assert_eq!(back.run_id, "trash-purge:2026-11-28T00:00:00Z");
        let p = Pending {
            folder: "Trash".into(),
            received_before: -3,
        };
        assert_eq!(Pending::from_bytes(&p.to_bytes()).unwrap(), p);
        assert!(SlotBody::parse(b"short").is_err());
    }
}
