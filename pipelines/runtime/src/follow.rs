//! Following a topic from its beginning on a thread of its own: how the
//! servers keep the projections they answer from (an account's usage, an
//! account's status), usually from a compacted topic.
//!
//! The follower assigns every partition (no consumer group, nothing
//! committed), reads from the beginning, and hands each record to the
//! caller. [`Following::caught_up`] turns true once every partition has
//! been read up to the end it had when the follower started, so a server
//! can answer "try later" until then instead of answering from half a
//! projection.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    message::BorrowedMessage,
    Message, Offset, TopicPartitionList,
};

use crate::{admin::client_config, config::KafkaConfig, RuntimeError, Shutdown};

/// A running follower.
#[derive(Clone, Default)]
pub struct Following {
    caught_up: Arc<AtomicBool>,
}

impl Following {
    /// Whether the projection holds everything the topic held at start.
    pub fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    /// A follower that never started, already caught up (tests, and
    /// projections fed by hand).
    pub fn ready() -> Self {
        let f = Self::default();
        f.caught_up.store(true, Ordering::Release);
        f
    }
}

/// Follow `topic` until shutdown, calling `apply` with each record. A
/// missing topic is waited for (logged every 5 s) and is not caught up.
pub fn follow(
    kafka: &KafkaConfig,
    topic: &str,
    name: &str,
    shutdown: Shutdown,
    mut apply: impl FnMut(&BorrowedMessage<'_>) + Send + 'static,
) -> Result<Following, RuntimeError> {
    let consumer: BaseConsumer = client_config(kafka)
        .set(
            "group.id",
            format!("mailfleet-{name}-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|source| RuntimeError::CreateClient {
            what: "topic follower",
            source,
        })?;
    let following = Following::default();
    let (flag, topic, label) = (following.clone(), topic.to_string(), name.to_string());
    std::thread::Builder::new()
        .name(name.chars().take(15).collect())
        .spawn(move || {
            let mut ends = loop {
                if shutdown.is_triggered() {
                    return;
                }
                match assign(&consumer, &topic) {
                    Some(ends) => break ends,
                    None => {
                        tracing::warn!(%topic, follower = %label, "topic not there yet; waiting");
                        std::thread::sleep(Duration::from_secs(5));
                    }
                }
            };
            mark(&flag, &ends);
            while !shutdown.is_triggered() {
                let Some(Ok(msg)) = consumer.poll(Duration::from_millis(200)) else {
                    continue;
                };
                apply(&msg);
                if ends
                    .get(&msg.partition())
                    .is_some_and(|end| msg.offset() + 1 >= *end)
                {
                    ends.remove(&msg.partition());
                    mark(&flag, &ends);
                }
            }
        })
        .map_err(|e| RuntimeError::Thread {
            consumer: name.to_string(),
            reason: e.to_string(),
        })?;
    Ok(following)
}

fn mark(flag: &Following, ends: &HashMap<i32, i64>) {
    if ends.is_empty() {
        flag.caught_up.store(true, Ordering::Release);
    }
}

/// Assign every partition from the beginning; the end offsets of the
/// partitions that hold records.
fn assign(consumer: &BaseConsumer, topic: &str) -> Option<HashMap<i32, i64>> {
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .ok()?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        let (low, high) = consumer
            .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
            .ok()?;
        if high > low {
            ends.insert(p.id(), high);
        }
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .ok()?;
    }
    (tpl.count() > 0 && consumer.assign(&tpl).is_ok()).then_some(ends)
}
