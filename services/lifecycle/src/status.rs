//! The account status projection the LMTP server checks at RCPT: the
//! latest `AccountStatusChanged` per account from the compacted
//! `accounts.status` topic the lifecycle keeps, read from the beginning and
//! followed.
//!
//! | latest status                 | RCPT answer                        |
//! |-------------------------------|------------------------------------|
//! | none (never registered)       | unknown: `550 5.1.1`               |
//! | pending, active               | accepted                           |
//! | blocked                       | disabled: `550 5.2.1`              |
//! | inactive, deleting, deleted   | disabled: `550 5.1.1`              |
//! | (projection not caught up)    | try later: `451 4.3.0`             |

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use mailfleet_events::{
    accounts::{AccountStatus, AccountStatusChanged},
    Registry,
};
use mailfleet_runtime::{
    config::KafkaConfig,
    follow::{follow, Following},
    RuntimeError, Shutdown,
};
use rdkafka::Message;

/// What the projection says of one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mailbox {
    /// It takes mail.
    Open,
    /// No such account.
    Unknown,
    /// The account exists but takes no mail (inactive, being deleted, gone).
    Closed(AccountStatus),
    /// The projection is still reading the topic.
    NotReady,
}

/// Each account's latest status.
#[derive(Clone, Default)]
pub struct StatusProjection {
    statuses: Arc<RwLock<HashMap<String, AccountStatus>>>,
    following: Following,
}

impl StatusProjection {
    /// Follow `topic` on a thread until shutdown.
    pub fn follow(
        kafka: &KafkaConfig,
        topic: &str,
        shutdown: Shutdown,
    ) -> Result<Self, RuntimeError> {
        let mut projection = Self::default();
        let view = projection.clone();
        projection.following = follow(kafka, topic, "lmtp-status", shutdown, move |msg| {
            let bytes = msg.payload().unwrap_or_default();
            match Registry::builtin().decode::<AccountStatusChanged>(bytes) {
                Ok(s) => view.apply(&s),
                Err(e) => tracing::warn!(error = %e, partition = msg.partition(),
                    offset = msg.offset(), "undecodable account status record; skipped"),
            }
        })?;
        Ok(projection)
    }

    /// A projection fed by hand, ready at once.
    pub fn ready() -> Self {
        Self {
            following: Following::ready(),
            ..Self::default()
        }
    }

    /// Take one status record.
    pub fn apply(&self, s: &AccountStatusChanged) {
        let mut map = self.statuses.write().unwrap_or_else(|p| p.into_inner());
        map.insert(s.account.to_ascii_lowercase(), s.to);
    }

    /// What `account` (lower-cased) is.
    pub fn mailbox(&self, account: &str) -> Mailbox {
        if !self.following.caught_up() {
            return Mailbox::NotReady;
        }
        let map = self.statuses.read().unwrap_or_else(|p| p.into_inner());
        match map.get(account) {
            None => Mailbox::Unknown,
            Some(status) if status.takes_mail() => Mailbox::Open,
            Some(closed) => Mailbox::Closed(*closed),
        }
    }

    /// Every account's latest status, sorted by account; `None` while the
    /// projection is still catching up (a partial list would close open
    /// accounts).
    pub fn snapshot(&self) -> Option<Vec<(String, AccountStatus)>> {
        if !self.following.caught_up() {
            return None;
        }
        let map = self.statuses.read().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = map.iter().map(|(a, s)| (a.clone(), *s)).collect();
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Some(all)
    }

    /// Accounts known, by status (for metrics and `show`).
    pub fn counts(&self) -> HashMap<AccountStatus, usize> {
        let map = self.statuses.read().unwrap_or_else(|p| p.into_inner());
        let mut out = HashMap::new();
        for s in map.values() {
            *out.entry(*s).or_default() += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use mailfleet_events::Envelope;

    use super::*;

    fn to(account: &str, status: AccountStatus) -> AccountStatusChanged {
        AccountStatusChanged {
            envelope: Envelope::new("s", 1, "lifecycle"),
            account: account.into(),
            from: AccountStatus::Pending,
            to: status,
            reason: "t".into(),
            settings_hash: None,
        }
    }

    #[test]
    fn the_latest_status_decides_and_nothing_is_answered_before_catching_up() {
        let p = StatusProjection::default();
        assert_eq!(p.mailbox("bob@x"), Mailbox::NotReady);
        let p = StatusProjection::ready();
        assert_eq!(p.mailbox("bob@x"), Mailbox::Unknown);
        for (status, expected) in [
            (AccountStatus::Pending, Mailbox::Open),
            (AccountStatus::Active, Mailbox::Open),
            (
                AccountStatus::Blocked,
                Mailbox::Closed(AccountStatus::Blocked),
            ),
            (
                AccountStatus::Inactive,
                Mailbox::Closed(AccountStatus::Inactive),
            ),
            (
                AccountStatus::Deleting,
                Mailbox::Closed(AccountStatus::Deleting),
            ),
            (
                AccountStatus::Deleted,
                Mailbox::Closed(AccountStatus::Deleted),
            ),
            (AccountStatus::Active, Mailbox::Open),
        ] {
            p.apply(&to("Bob@X", status));
            assert_eq!(p.mailbox("bob@x"), expected, "{status:?}");
        }
        assert_eq!(p.counts().get(&AccountStatus::Active), Some(&1));
        assert_eq!(
            p.snapshot(),
            Some(vec![("bob@x".to_string(), AccountStatus::Active)])
        );
        assert_eq!(StatusProjection::default().snapshot(), None);
    }
}
