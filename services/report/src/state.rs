//! The reporter's tables. Every figure is kept per input partition and
//! summed over partitions when a report is made.
//!
//! - `c` month, name, label: a count of what happened in the month;
//! - `d` month, name, label: how much a level (accounts by status, bytes
//!   by plan) moved in the month's events. A month's level is the sum of
//!   its own changes and every earlier month's, so an event that arrives
//!   after later months' events still lands in its own month and moves
//!   every month after it;
//! - `a` account: what the levels need of one account.
//!
//! Stores written before the changes were kept also hold `l` month, name,
//! label (the level as the month's last event to arrive left it) and `v`
//! name, label (the level then). Nothing writes them now; the report still
//! reads `l`, and adds the changes since to it.

use mailfleet_runtime::{StateKey, StateValue, ValueError};

use crate::{figures::ReadError, month::Month};

fn push_parts(out: &mut Vec<u8>, parts: &[&str]) {
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(0);
        }
        out.extend_from_slice(p.as_bytes());
    }
}

/// Split a key body written by [`push_parts`].
pub fn parts(body: &[u8]) -> Vec<String> {
    body.split(|b| *b == 0)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect()
}

/// A figure of one month, in the table `P`.
pub struct MonthKey<'a, const P: u8> {
    pub month: Month,
    pub name: &'a str,
    pub label: &'a str,
}

impl<const P: u8> StateKey for MonthKey<'_, P> {
    type Value = i64;
    const PREFIX: u8 = P;
    fn encode_key(&self, out: &mut Vec<u8>) {
        push_parts(out, &[&self.month.to_string(), self.name, self.label]);
    }
}

/// A count of one month.
pub type CountKey<'a> = MonthKey<'a, b'c'>;

/// How much a level moved in one month's events.
pub type ChangeKey<'a> = MonthKey<'a, b'd'>;

/// A level at the end of a month, in a store written before the changes
/// were kept (read, never written).
pub type SnapshotKey<'a> = MonthKey<'a, b'l'>;

/// One account, as the levels see it.
pub struct AccountKey<'a>(pub &'a str);

impl StateKey for AccountKey<'_> {
    type Value = AccountRow;
    const PREFIX: u8 = b'a';
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0.as_bytes());
    }
}

/// Status (empty before the first change), plan, and usage of one account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountRow {
    pub status: String,
    pub plan: String,
    pub used_bytes: i64,
    pub messages: i64,
}

impl StateValue for AccountRow {
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        push_parts(
            &mut out,
            &[
                &self.status,
                &self.plan,
                &self.used_bytes.to_string(),
                &self.messages.to_string(),
            ],
        );
        out
    }
    fn from_bytes(bytes: &[u8]) -> Result<Self, ValueError> {
        let p = parts(bytes);
        let [status, plan, used, messages] = p.as_slice() else {
            return Err(ValueError::invalid(ReadError::RowFields(p.len())));
        };
        let num = |s: &str| {
            s.parse::<i64>().map_err(|source| {
                ValueError::invalid(ReadError::RowNumber {
                    text: s.to_string(),
                    source,
                })
            })
        };
        Ok(AccountRow {
            status: status.clone(),
            plan: plan.clone(),
            used_bytes: num(used)?,
            messages: num(messages)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_row_round_trips_and_a_bad_one_is_named() {
        let row = AccountRow {
            status: "active".into(),
            plan: "free".into(),
            used_bytes: 1234,
            messages: 5,
        };
        assert_eq!(AccountRow::from_bytes(&row.to_bytes()).unwrap(), row);
        assert!(AccountRow::from_bytes(b"x")
            .unwrap_err()
            .to_string()
            .contains("1 fields"));
    }
}
