//! The usage projection the LMTP server checks at RCPT: which accounts are
//! over quota, from the latest `UsageChanged` per account (a compacted
//! topic the storage writer keeps), read from the beginning and followed.

use std::{
    collections::HashSet,
    sync::{Arc, RwLock},
    time::Duration,
};

use mailfleet_events::{accounts::UsageChanged, Registry};
use mailfleet_ingest::lmtp::{RcptStatus, RecipientCheck};
use mailfleet_runtime::{admin::client_config, config::KafkaConfig, RuntimeError, Shutdown};
use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    Message, Offset, TopicPartitionList,
};

/// Accounts currently over quota.
#[derive(Clone, Default)]
pub struct UsageProjection {
    over: Arc<RwLock<HashSet<String>>>,
}

impl UsageProjection {
    /// Follow `topic` on a thread until shutdown. A missing topic is
    /// waited for (everyone is accepted meanwhile), not an error.
    pub fn follow(
        kafka: &KafkaConfig,
        topic: &str,
        shutdown: Shutdown,
    ) -> Result<Self, RuntimeError> {
        let consumer: BaseConsumer = client_config(kafka)
            .set(
                "group.id",
                format!("mailfleet-lmtp-usage-{}", std::process::id()),
            )
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|source| RuntimeError::CreateClient {
                what: "usage reader",
                source,
            })?;
        let projection = Self::default();
        let (view, topic) = (projection.clone(), topic.to_string());
        std::thread::Builder::new()
            .name("lmtp-usage".into())
            .spawn(move || view.run(&consumer, &topic, &shutdown))
            .map_err(|e| RuntimeError::Thread {
                consumer: "lmtp-usage".into(),
                reason: e.to_string(),
            })?;
        Ok(projection)
    }

    fn run(&self, consumer: &BaseConsumer, topic: &str, shutdown: &Shutdown) {
        while !shutdown.is_triggered() && !assign(consumer, topic) {
            tracing::warn!(%topic, "usage topic not there yet; accepting every recipient meanwhile");
            std::thread::sleep(Duration::from_secs(5));
        }
        while !shutdown.is_triggered() {
            let Some(Ok(msg)) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            match Registry::builtin().decode::<UsageChanged>(msg.payload().unwrap_or_default()) {
                Ok(u) => self.apply(&u),
                Err(e) => {
                    tracing::warn!(error = %e, offset = msg.offset(), "undecodable usage record")
                }
            }
        }
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
}

fn assign(consumer: &BaseConsumer, topic: &str) -> bool {
    let Ok(md) = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)) else {
        return false;
    };
    let mut tpl = TopicPartitionList::new();
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        let _ = tpl.add_partition_offset(topic, p.id(), Offset::Beginning);
    }
    tpl.count() > 0 && consumer.assign(&tpl).is_ok()
}

impl RecipientCheck for UsageProjection {
    fn check(&self, account: &str) -> RcptStatus {
        let over = self.over.read().unwrap_or_else(|p| p.into_inner());
        if over.contains(account) {
            RcptStatus::OverQuota
        } else {
            RcptStatus::Accept
        }
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
        };
        assert_eq!(p.check("bob@x"), RcptStatus::Accept);
        p.apply(&usage(true));
        assert_eq!(p.check("bob@x"), RcptStatus::OverQuota);
        p.apply(&usage(false));
        assert_eq!(p.check("bob@x"), RcptStatus::Accept);
    }
}
