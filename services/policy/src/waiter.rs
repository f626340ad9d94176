//! Waiting for an answer: one reader per decisions topic (the greylist's,
//! the outbound limits') follows it from its current end and hands each
//! decision meant for this policy host to the request waiting on its
//! causation id.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use mailfleet_events::{greylist::GreylistDecided, submission::SubmissionDecided, Event, Registry};
use mailfleet_runtime::{admin::client_config, config::KafkaConfig, RuntimeError, Shutdown};
use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    Message, Offset, TopicPartitionList,
};
use tokio::sync::oneshot;

/// A decision a request waits for: which attempt caused it, and which
/// policy host asked.
pub trait Answer: Event + Send + 'static {
    /// The attempt's event id.
    fn cause(&self) -> Option<&str>;
    /// The policy host that produced the attempt.
    fn host(&self) -> &str;
}

impl Answer for GreylistDecided {
    fn cause(&self) -> Option<&str> {
        self.envelope.causation_id.as_deref()
    }
    fn host(&self) -> &str {
        &self.policy_host
    }
}

impl Answer for SubmissionDecided {
    fn cause(&self) -> Option<&str> {
        self.envelope.causation_id.as_deref()
    }
    fn host(&self) -> &str {
        &self.policy_host
    }
}

/// Requests waiting for their decision, by attempt event id.
pub struct Waiters<A> {
    pending: Arc<Mutex<HashMap<String, oneshot::Sender<A>>>>,
}

impl<A> Clone for Waiters<A> {
    fn clone(&self) -> Self {
        Self {
            pending: self.pending.clone(),
        }
    }
}

impl<A> Default for Waiters<A> {
    fn default() -> Self {
        Self {
            pending: Arc::default(),
        }
    }
}

impl<A: Answer> Waiters<A> {
    /// Register before producing the attempt, so the answer cannot be missed.
    pub fn register(&self, attempt_id: &str) -> oneshot::Receiver<A> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(attempt_id.to_string(), tx);
        rx
    }

    /// Forget a request that timed out.
    pub fn forget(&self, attempt_id: &str) {
        self.lock().remove(attempt_id);
    }

    fn deliver(&self, decided: A) {
        let Some(cause) = decided.cause().map(str::to_string) else {
            return;
        };
        if let Some(tx) = self.lock().remove(&cause) {
            let _ = tx.send(decided);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<A>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Follow the decisions topic on a thread until shutdown.
pub fn follow<A: Answer>(
    kafka: &KafkaConfig,
    topic: &str,
    host: &str,
    waiters: Waiters<A>,
    patience: Duration,
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
    let tpl = current_ends(&consumer, topic, patience)?;
    consumer
        .assign(&tpl)
        .map_err(|source| RuntimeError::Kafka {
            op: "assign decisions",
            source,
        })?;
    spawn_reader(consumer, topic, host, waiters, shutdown)
}

/// Each partition of `topic` at its current end, fixed now: decisions
/// written after this point are never missed, however long the first fetch
/// takes. A topic created a moment ago may not be in the metadata yet: look
/// again for `patience` before calling it missing.
fn current_ends(
    consumer: &BaseConsumer,
    topic: &str,
    patience: Duration,
) -> Result<TopicPartitionList, RuntimeError> {
    let give_up = std::time::Instant::now() + patience;
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
        if partitions > 0 || std::time::Instant::now() >= give_up {
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
    Ok(tpl)
}

/// The reader thread: hands each decision for `host` to its waiter until
/// shutdown.
fn spawn_reader<A: Answer>(
    consumer: BaseConsumer,
    topic: &str,
    host: &str,
    waiters: Waiters<A>,
    shutdown: Shutdown,
) -> Result<(), RuntimeError> {
    let host = host.to_string();
    std::thread::Builder::new()
        .name(format!("policy-{topic}").chars().take(15).collect())
        .spawn(move || {
            while !shutdown.is_triggered() {
                let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
                    continue;
                };
                let Ok(msg) = msg else { continue };
                let Some(bytes) = msg.payload() else { continue };
                match Registry::builtin().decode::<A>(bytes) {
                    Ok(d) if d.host() == host => waiters.deliver(d),
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
