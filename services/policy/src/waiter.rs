//! Waiting for the greylist's answer: one reader follows the whole
//! decisions topic from its current end and hands each decision meant for
//! this policy host to the request waiting on its causation id.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use mailfleet_events::{greylist::GreylistDecided, Registry};
use mailfleet_runtime::{admin::client_config, config::KafkaConfig, RuntimeError, Shutdown};
use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    Message, Offset, TopicPartitionList,
};
use tokio::sync::oneshot;

/// Requests waiting for their decision, by attempt event id.
#[derive(Clone, Default)]
pub struct Waiters {
    pending: Arc<Mutex<HashMap<String, oneshot::Sender<GreylistDecided>>>>,
}

impl Waiters {
    /// Register before producing the attempt, so the answer cannot be missed.
    pub fn register(&self, attempt_id: &str) -> oneshot::Receiver<GreylistDecided> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(attempt_id.to_string(), tx);
        rx
    }

    /// Forget a request that timed out.
    pub fn forget(&self, attempt_id: &str) {
        self.lock().remove(attempt_id);
    }

    fn deliver(&self, decided: GreylistDecided) {
        let Some(cause) = decided.envelope.causation_id.clone() else {
            return;
        };
        if let Some(tx) = self.lock().remove(&cause) {
            let _ = tx.send(decided);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<GreylistDecided>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Follow the decisions topic on a thread until shutdown.
pub fn follow(
    kafka: &KafkaConfig,
    topic: &str,
    host: &str,
    waiters: Waiters,
    shutdown: Shutdown,
) -> Result<(), RuntimeError> {
    let consumer: BaseConsumer = client_config(kafka)
        .set("group.id", format!("mailfleet-policy-{host}"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .map_err(|source| RuntimeError::CreateClient {
            what: "decisions reader",
            source,
        })?;
    // Start at each partition's current end, fixed now: decisions written
    // after this point are never missed, however long the first fetch takes.
    // A topic created a moment ago may not be in the metadata yet: look
    // again for a while before calling it missing.
    let mut tries = 0;
    let md = loop {
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|source| RuntimeError::Kafka {
                op: "decisions metadata",
                source,
            })?;
        let partitions = md
            .topics()
            .iter()
            .map(|t| t.partitions().len())
            .sum::<usize>();
        tries += 1;
        if partitions > 0 || tries >= 30 {
            break md;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let mut tpl = TopicPartitionList::new();
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        let (_, high) = consumer
            .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
            .map_err(|source| RuntimeError::Kafka {
                op: "decisions watermarks",
                source,
            })?;
        tpl.add_partition_offset(topic, p.id(), Offset::Offset(high))
            .map_err(|source| RuntimeError::Kafka {
                op: "decisions assignment",
                source,
            })?;
    }
    if tpl.count() == 0 {
        return Err(RuntimeError::ApplyTopic {
            topic: topic.to_string(),
            reason: "no partitions; run `mailfleet topics apply`".into(),
        });
    }
    consumer
        .assign(&tpl)
        .map_err(|source| RuntimeError::Kafka {
            op: "assign decisions",
            source,
        })?;
    let host = host.to_string();
    std::thread::Builder::new()
        .name("policy-decisions".into())
        .spawn(move || {
            while !shutdown.is_triggered() {
                let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
                    continue;
                };
                let Ok(msg) = msg else { continue };
                let Some(bytes) = msg.payload() else { continue };
                match Registry::builtin().decode::<GreylistDecided>(bytes) {
                    Ok(d) if d.policy_host == host => waiters.deliver(d),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, offset = msg.offset(), "undecodable decision")
                    }
                }
            }
        })
        .map_err(|e| RuntimeError::Thread {
            consumer: "policy-decisions".into(),
            reason: e.to_string(),
        })?;
    Ok(())
}
