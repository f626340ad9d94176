//! The figures of a month, summed over the reporter's partitions.

use std::collections::BTreeMap;

use mailfleet_runtime::{StateKey, StateValue, Store, ValueError};
use serde::Serialize;

use crate::{
    month::Month,
    names as n,
    state::{parts, CountKey, SnapshotKey},
};

/// `name -> label -> value`.
pub type Table = BTreeMap<String, BTreeMap<String, i64>>;

/// One headline figure: (key, title, value).
pub type Headline = (&'static str, &'static str, i64);

/// One month's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Figures {
    pub month: String,
    /// What happened in the month.
    pub counts: Table,
    /// Levels at the month's end.
    pub levels: Table,
}

impl Figures {
    /// A count's value for one label (0 if none).
    pub fn count(&self, name: &str, label: &str) -> i64 {
        get(&self.counts, name, label)
    }

    /// A count summed over its labels.
    pub fn count_total(&self, name: &str) -> i64 {
        self.counts.get(name).map_or(0, |l| l.values().sum())
    }

    /// A level's value for one label (0 if none).
    pub fn level(&self, name: &str, label: &str) -> i64 {
        get(&self.levels, name, label)
    }

    /// A level summed over its labels.
    pub fn level_total(&self, name: &str) -> i64 {
        self.levels.get(name).map_or(0, |l| l.values().sum())
    }

    /// The headline figures, in report order: (key, title, value).
    pub fn headline(&self) -> Vec<Headline> {
        let mut out = Vec::with_capacity(23);
        out.extend(self.account_headline());
        out.extend(self.storage_headline());
        out.extend(self.inbound_headline());
        out.extend(self.submission_headline());
        out.extend(self.housekeeping_headline());
        out
    }

    /// Accounts by status, and how they came and went.
    fn account_headline(&self) -> [Headline; 7] {
        [
            (
                "accounts_active",
                "Active accounts",
                self.level(n::ACCOUNTS, "active"),
            ),
            (
                "accounts_inactive",
                "Inactive accounts",
                self.level(n::ACCOUNTS, "inactive"),
            ),
            (
                "accounts_blocked",
                "Blocked accounts",
                self.level(n::ACCOUNTS, "blocked"),
            ),
            (
                "accounts_deleted",
                "Deleted accounts (to date)",
                self.level(n::ACCOUNTS, "deleted"),
            ),
            (
                "registrations",
                "New registrations",
                self.count_total(n::REGISTRATIONS),
            ),
            ("migrations", "Migrations", self.count_total(n::MIGRATIONS)),
            ("logins", "Logins", self.count_total(n::LOGINS)),
        ]
    }

    /// What is stored, and what was delivered.
    fn storage_headline(&self) -> [Headline; 3] {
        [
            (
                "storage_bytes",
                "Storage used",
                self.level_total(n::STORAGE_BYTES),
            ),
            (
                "index_messages",
                "Messages indexed",
                self.level_total(n::INDEX_MESSAGES),
            ),
            ("delivered", "Mails stored", self.count_total(n::DELIVERED)),
        ]
    }

    /// What the greylist and the scanner did to incoming mail.
    fn inbound_headline(&self) -> [Headline; 6] {
        [
            (
                "greylist_deferred",
                "Greylist: deferred",
                self.count(n::GREYLIST, "deferred"),
            ),
            (
                "greylist_passed",
                "Greylist: passed",
                self.count(n::GREYLIST, "passed"),
            ),
            ("viruses", "Viruses found", self.count(n::SCANS, "infected")),
            (
                "banned",
                "Banned attachments",
                self.count(n::SCANS, "banned"),
            ),
            ("spam", "Spam (Spam folder or quarantined)", self.spam()),
            (
                "spam_share_percent",
                "Spam, % of inbound mail scanned",
                self.spam_share_percent(),
            ),
        ]
    }

    /// Inbound mail rspamd called spam: flagged or quarantined.
    pub fn spam(&self) -> i64 {
        self.count(n::SPAM, "spam-folder") + self.count(n::SPAM, "quarantined")
    }

    /// [`Figures::spam`] as a share of every inbound scan, rounded to a
    /// whole percent.
    pub fn spam_share_percent(&self) -> i64 {
        let scans = self.count_total(n::SCANS);
        if scans == 0 {
            return 0;
        }
        (self.spam() * 100 + scans / 2) / scans
    }

    /// The `limit` symbols seen most on spam, most first (ties by name).
    pub fn top_spam_symbols(&self, limit: usize) -> Vec<(String, i64)> {
        let mut all: Vec<(String, i64)> = self
            .counts
            .get(n::SPAM_SYMBOLS)
            .map(|l| l.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(limit);
        all
    }

    /// What the users sent, and what the outbound limits did about it.
    fn submission_headline(&self) -> [Headline; 4] {
        [
            (
                "submitted",
                "Mails submitted by users",
                self.count_total(n::SUBMITTED),
            ),
            (
                "outbound_viruses",
                "Viruses submitted by users",
                self.count(n::SUBMITTED_SCANS, "infected"),
            ),
            (
                "submission_deferrals",
                "Submissions deferred for limits",
                self.count_total(n::SUBMISSION_DEFERRALS)
                    - self.count(n::SUBMISSION_DEFERRALS, "blocked"),
            ),
            (
                "abuse_blocks",
                "Accounts blocked for abuse",
                self.count(n::BLOCKS, "abuse"),
            ),
        ]
    }

    /// Purges, notices and dead letters.
    fn housekeeping_headline(&self) -> [Headline; 3] {
        [
            (
                "purged_messages",
                "Mails purged",
                self.count_total(n::PURGED_MESSAGES),
            ),
            (
                "notifications",
                "Notifications sent",
                self.count_total(n::NOTIFICATIONS),
            ),
            (
                "dead_letters",
                "Dead letters",
                self.count_total(n::DEAD_LETTERS),
            ),
        ]
    }
}

fn get(t: &Table, name: &str, label: &str) -> i64 {
    t.get(name).and_then(|l| l.get(label)).copied().unwrap_or(0)
}

/// A report's data: the month asked for and the months before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub month: String,
    /// Oldest first; the last is `month`.
    pub months: Vec<Figures>,
}

impl Report {
    /// The month asked for.
    pub fn this(&self) -> &Figures {
        self.months.last().expect("a report has its month")
    }

    /// The month before, if the report covers it.
    pub fn last(&self) -> Option<&Figures> {
        self.months.len().checked_sub(2).map(|i| &self.months[i])
    }
}

/// One stored figure: (partition, month, name, label, value).
pub type Entry = (i32, Month, String, String, i64);

/// The report for `month` and the `trend - 1` months before it, from the
/// reporter's count and level-snapshot entries.
pub fn report(counts: &[Entry], snapshots: &[Entry], month: Month, trend: usize) -> Report {
    let months = month.trailing(trend.max(1));
    let figures = months
        .iter()
        .map(|&m| {
            let mut f = Figures {
                month: m.to_string(),
                ..Figures::default()
            };
            for (_, em, name, label, v) in counts.iter().filter(|e| e.1 == m) {
                debug_assert_eq!(*em, m);
                *f.counts
                    .entry(name.clone())
                    .or_default()
                    .entry(label.clone())
                    .or_default() += v;
            }
            // Per partition and figure, the last snapshot at or before m.
            let mut latest: BTreeMap<(i32, &str, &str), (Month, i64)> = BTreeMap::new();
            for (p, em, name, label, v) in snapshots.iter().filter(|e| e.1 <= m) {
                let slot = latest.entry((*p, name, label)).or_insert((*em, *v));
                if *em >= slot.0 {
                    *slot = (*em, *v);
                }
            }
            for ((_, name, label), (_, v)) in latest {
                *f.levels
                    .entry(name.to_string())
                    .or_default()
                    .entry(label.to_string())
                    .or_default() += v;
            }
            f
        })
        .collect();
    Report {
        month: month.to_string(),
        months: figures,
    }
}

/// What went wrong reading a reporter store.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The store could not be scanned.
    #[error(transparent)]
    Store(#[from] mailfleet_runtime::RuntimeError),
    /// An entry that does not read back.
    #[error("reporter state entry {key:?}: {source}")]
    Corrupt {
        key: String,
        #[source]
        source: ValueError,
    },
    /// A figure's key body that is not month, name and label.
    #[error("{0} parts, expected 3")]
    KeyParts(usize),
    /// A stored account row without its four fields.
    #[error("{0} fields, expected 4")]
    RowFields(usize),
    /// A stored account row with a number field that is no number.
    #[error("{text:?}: {source}")]
    RowNumber {
        text: String,
        #[source]
        source: std::num::ParseIntError,
    },
}

/// The count and snapshot entries of a reporter store.
pub fn read_store(store: &Store) -> Result<(Vec<Entry>, Vec<Entry>), ReadError> {
    let table = |prefix: u8| -> Result<Vec<Entry>, ReadError> {
        store
            .scan_table(prefix)?
            .into_iter()
            .map(|(p, body, value)| {
                let corrupt = |source: ValueError| ReadError::Corrupt {
                    key: String::from_utf8_lossy(&body).replace('\0', "/"),
                    source,
                };
                let [month, name, label] = parts(&body).try_into().map_err(|v: Vec<String>| {
                    corrupt(ValueError::invalid(ReadError::KeyParts(v.len())))
                })?;
                let month = Month::parse(&month).map_err(|e| corrupt(ValueError::invalid(e)))?;
                let value = i64::from_bytes(&value).map_err(corrupt)?;
                Ok((p, month, name, label, value))
            })
            .collect()
    };
    Ok((table(CountKey::PREFIX)?, table(SnapshotKey::PREFIX)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(p: i32, m: &str, name: &str, label: &str, v: i64) -> Entry {
        (p, Month::parse(m).unwrap(), name.into(), label.into(), v)
    }

    #[test]
    fn counts_add_up_over_partitions_within_their_month() {
        let counts = vec![
            e(0, "2026-10", n::LOGINS, "imap", 3),
            e(1, "2026-10", n::LOGINS, "imap", 4),
            e(1, "2026-10", n::LOGINS, "webmail", 1),
            e(0, "2026-09", n::LOGINS, "imap", 100),
        ];
        let r = report(&counts, &[], Month::parse("2026-10").unwrap(), 2);
        assert_eq!(r.this().count(n::LOGINS, "imap"), 7);
        assert_eq!(r.this().count_total(n::LOGINS), 8);
        assert_eq!(r.last().unwrap().count_total(n::LOGINS), 100);
        assert_eq!(r.months.len(), 2);
    }

    #[test]
    fn a_level_carries_over_months_without_events() {
        let snaps = vec![
            e(0, "2026-08", n::ACCOUNTS, "active", 5),
            e(0, "2026-10", n::ACCOUNTS, "active", 7),
            e(1, "2026-08", n::ACCOUNTS, "active", 2),
        ];
        let r = report(&[], &snaps, Month::parse("2026-10").unwrap(), 3);
        let active: Vec<i64> = r
            .months
            .iter()
            .map(|f| f.level(n::ACCOUNTS, "active"))
            .collect();
        // August 5 + 2; September carries both; October: 7 + 2.
        assert_eq!(active, [7, 7, 9]);
        // A later month's snapshot does not leak into an earlier one.
        let r = report(&[], &snaps, Month::parse("2026-07").unwrap(), 1);
        assert_eq!(r.this().level(n::ACCOUNTS, "active"), 0);
    }
}
