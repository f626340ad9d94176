//! The usage projection the LMTP server checks at RCPT: which accounts are
//! over quota, from the latest `UsageChanged` per account (a compacted
//! topic the storage writer keeps), read from the beginning and followed.

use std::{
    collections::HashSet,
    sync::{Arc, RwLock},
};

use mailfleet_events::{accounts::UsageChanged, Registry};
use mailfleet_runtime::{config::KafkaConfig, follow::follow, RuntimeError, Shutdown};
use rdkafka::Message;

/// Accounts currently over quota.
#[derive(Clone, Default)]
pub struct UsageProjection {
    over: Arc<RwLock<HashSet<String>>>,
}

impl UsageProjection {
    /// Follow `topic` on a thread until shutdown. Until the topic exists
    /// and is read, nobody is over quota (the writer still refuses).
    pub fn follow(
        kafka: &KafkaConfig,
        topic: &str,
        shutdown: Shutdown,
    ) -> Result<Self, RuntimeError> {
        let projection = Self::default();
        let view = projection.clone();
        follow(
            kafka,
            topic,
            "lmtp-usage",
            shutdown,
            move |msg| match Registry::builtin()
                .decode::<UsageChanged>(msg.payload().unwrap_or_default())
            {
                Ok(u) => view.apply(&u),
                Err(e) => {
                    tracing::warn!(error = %e, offset = msg.offset(), "undecodable usage record")
                }
            },
        )?;
        Ok(projection)
    }

    /// Take one usage record into the projection.
    pub fn apply(&self, usage: &UsageChanged) {
        let mut over = self.over.write().unwrap_or_else(|p| p.into_inner());
        if usage.over_quota {
            over.insert(usage.account.clone());
        } else {
            over.remove(&usage.account);
        }
    }

    /// Whether `account` (lower-cased) is over its quota: what RCPT
    /// refuses with `552 5.2.2` (`mailfleet lmtp`'s recipient check).
    pub fn over_quota(&self, account: &str) -> bool {
        let over = self.over.read().unwrap_or_else(|p| p.into_inner());
        over.contains(account)
    }
}

#[cfg(test)]
mod tests {
    use mailfleet_events::Envelope;

    use super::*;

    #[test]
    fn the_latest_record_per_account_decides() {
        let p = UsageProjection::default();
        let usage = |over_quota| UsageChanged {
            envelope: Envelope::new("u", 1, "storage"),
            account: "bob@x".into(),
            used_bytes: 10,
            messages: 1,
            quota_bytes: 10,
            over_quota,
            settings_hash: None,
        };
        assert!(!p.over_quota("bob@x"));
        p.apply(&usage(true));
        assert!(p.over_quota("bob@x"));
        p.apply(&usage(false));
        assert!(!p.over_quota("bob@x"));
    }
}
