//! The figures of a month, summed over the reporter's partitions.

use std::collections::BTreeMap;

use mailfleet_runtime::{StateKey, StateValue, Store, ValueError};
use serde::Serialize;

use crate::{
    month::Month,
    names as n,
    state::{parts, ChangeKey, CountKey, SnapshotKey},
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

/// What a reporter store holds, by table ([`crate::state`]).
#[derive(Debug, Clone, Default)]
pub struct Stored {
    /// Counts by month.
    pub counts: Vec<Entry>,
    /// How much each level moved by month.
    pub changes: Vec<Entry>,
    /// Levels at a month's end, from a store written before the changes
    /// were kept.
    pub snapshots: Vec<Entry>,
}

/// The report for `month` and the `trend - 1` months before it.
///
/// A level at a month's end is every change up to that month, added to the
/// last snapshot at or before it (none in a store written since the
/// changes were kept).
pub fn report(stored: &Stored, month: Month, trend: usize) -> Report {
    let Stored {
        counts,
        changes,
        snapshots,
    } = stored;
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
            let upto = changes.iter().filter(|e| e.1 <= m);
            let summed = latest
                .into_iter()
                .map(|((_, name, label), (_, v))| (name, label, v))
                .chain(upto.map(|(_, _, name, label, v)| (name.as_str(), label.as_str(), *v)));
            for (name, label, v) in summed {
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

/// The figures of a reporter store.
pub fn read_store(store: &Store) -> Result<Stored, ReadError> {
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
    Ok(Stored {
        counts: table(CountKey::PREFIX)?,
        changes: table(ChangeKey::PREFIX)?,
        snapshots: table(SnapshotKey::PREFIX)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(p: i32, m: &str, name: &str, label: &str, v: i64) -> Entry {
        (p, Month::parse(m).unwrap(), name.into(), label.into(), v)
    }

    /// Accounts active in partition `p`, month `m`.
    fn act(p: i32, m: &str, v: i64) -> Entry {
        e(p, m, n::ACCOUNTS, "active", v)
    }

    fn active(r: &Report) -> Vec<i64> {
        r.months
            .iter()
            .map(|f| f.level(n::ACCOUNTS, "active"))
            .collect()
    }

    #[test]
    fn counts_add_up_over_partitions_within_their_month() {
        let counts = vec![
            e(0, "2026-10", n::LOGINS, "imap", 3),
            e(1, "2026-10", n::LOGINS, "imap", 4),
            e(1, "2026-10", n::LOGINS, "webmail", 1),
            e(0, "2026-09", n::LOGINS, "imap", 100),
        ];
        let stored = Stored {
            counts,
            ..Stored::default()
        };
        let r = report(&stored, Month::parse("2026-10").unwrap(), 2);
        assert_eq!(r.this().count(n::LOGINS, "imap"), 7);
        assert_eq!(r.this().count_total(n::LOGINS), 8);
        assert_eq!(r.last().unwrap().count_total(n::LOGINS), 100);
        assert_eq!(r.months.len(), 2);
    }

    #[test]
    fn a_level_is_every_change_up_to_the_month_over_partitions() {
        let stored = Stored {
            changes: vec![
                act(0, "2026-08", 5),
                act(0, "2026-10", 2),
                act(1, "2026-08", 2),
                act(1, "2026-11", -1),
            ],
            ..Stored::default()
        };
        let r = report(&stored, Month::parse("2026-10").unwrap(), 4);
        // July none; August 5 + 2; September carries it; October + 2. A
        // later month's change does not leak into an earlier one.
        assert_eq!(active(&r), [0, 7, 7, 9]);
        let r = report(&stored, Month::parse("2026-11").unwrap(), 1);
        assert_eq!(active(&r), [8]);
    }

    #[test]
    fn a_store_from_before_the_changes_carries_its_snapshots_and_adds_the_changes_since() {
        // Snapshots up to September, written by the reporter before it kept
        // changes; then a change in October and a late one in August.
        let stored = Stored {
            snapshots: vec![
                act(0, "2026-08", 5),
                act(0, "2026-09", 6),
                act(1, "2026-08", 2),
            ],
            changes: vec![act(0, "2026-10", 3), act(1, "2026-08", -1)],
            ..Stored::default()
        };
        let r = report(&stored, Month::parse("2026-10").unwrap(), 4);
        assert_eq!(active(&r), [0, 5 + 2 - 1, 6 + 2 - 1, 6 + 3 + 2 - 1]);
    }
}
