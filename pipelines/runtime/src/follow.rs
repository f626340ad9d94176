//! Following a topic on a thread of its own. From its beginning
//! ([`follow`]): how the servers keep the projections they answer from (an
//! account's usage, an account's status), usually from a compacted topic.
//! From its end ([`follow_from_end`]): how a server waits for the answers
//! to what it just asked (the policy server and the consumers' decisions).
//! [`crate::read`] is the other half: reading a topic to its end, once.
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
    time::{Duration, Instant},
};

use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    message::BorrowedMessage,
    Message, Offset, TopicPartitionList,
};

use crate::{admin::watermarks, config::KafkaConfig, read::reader, RuntimeError, Shutdown};

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

/// Follow `topic` from its beginning until shutdown, calling `apply` with
/// each record. A missing topic is waited for (logged every 5 s) and is
/// not caught up.
pub fn follow(
    kafka: &KafkaConfig,
    topic: &str,
    name: &str,
    shutdown: Shutdown,
    apply: impl FnMut(&BorrowedMessage<'_>) + Send + 'static,
) -> Result<Following, RuntimeError> {
    follow_from(kafka, topic, name, HashMap::new(), shutdown, apply)
}

/// [`follow`], but partition `p` from `starts[p]` where given (a
/// projection restored from a snapshot that far): caught up once every
/// partition is read up to the end it had at start.
pub fn follow_from(
    kafka: &KafkaConfig,
    topic: &str,
    name: &str,
    starts: HashMap<i32, i64>,
    shutdown: Shutdown,
    mut apply: impl FnMut(&BorrowedMessage<'_>) + Send + 'static,
) -> Result<Following, RuntimeError> {
    let consumer = reader(kafka, name, &[])?;
    let following = Following::default();
    let (flag, topic, label) = (following.clone(), topic.to_string(), name.to_string());
    spawn(name, move || {
        let mut ends = loop {
            if shutdown.is_triggered() {
                return;
            }
            match assign(&consumer, &topic, &starts) {
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
    })?;
    Ok(following)
}

/// Follow `topic` from its end now until shutdown, calling `apply` with
/// each record written from here on: how a server waits for the answers
/// to its own requests. The ends are fixed before this returns, so no
/// record written after it is missed, however long the first fetch takes.
/// A topic created a moment ago may not be in the metadata yet: it is
/// looked for again for `patience` before it is called missing.
pub fn follow_from_end(
    kafka: &KafkaConfig,
    topic: &str,
    name: &str,
    patience: Duration,
    shutdown: Shutdown,
    mut apply: impl FnMut(&BorrowedMessage<'_>) + Send + 'static,
) -> Result<(), RuntimeError> {
    // Answers are awaited by someone: fetch them as soon as they are there,
    // and send the next fetch without waiting for an ACK (Nagle off).
    let consumer = reader(
        kafka,
        name,
        &[
            ("fetch.wait.max.ms", "10"),
            ("socket.nagle.disable", "true"),
        ],
    )?;
    let give_up = Instant::now() + patience;
    let partitions = loop {
        let partitions = match watermarks(&consumer, topic, Duration::from_secs(10)) {
            Ok(p) => p,
            Err(e) => {
                // librdkafka says why (a refused SASL login, a certificate)
                // in an error event that only a poll serves; the client is
                // not assigned yet, so a poll reads no record. Log it before
                // the bare BrokerTransportFailure ends the process.
                let _ = consumer.poll(Duration::ZERO);
                return Err(e);
            }
        };
        if !partitions.is_empty() || Instant::now() >= give_up {
            break partitions;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    if partitions.is_empty() {
        return Err(RuntimeError::ApplyTopic {
            topic: topic.to_string(),
            reason: "no partitions; run `mailfleet topics apply`".into(),
        });
    }
    let mut tpl = TopicPartitionList::new();
    for (id, _, high) in partitions {
        tpl.add_partition_offset(topic, id, Offset::Offset(high))
            .map_err(|source| RuntimeError::Kafka {
                op: "follow from the end",
                source,
            })?;
    }
    consumer
        .assign(&tpl)
        .map_err(|source| RuntimeError::Kafka {
            op: "follow from the end",
            source,
        })?;
    spawn(name, move || {
        while !shutdown.is_triggered() {
            if let Some(Ok(msg)) = consumer.poll(Duration::from_millis(100)) {
                apply(&msg);
            }
        }
    })
}

/// Run `poll` on a thread named after the follower.
fn spawn(name: &str, poll: impl FnOnce() + Send + 'static) -> Result<(), RuntimeError> {
    std::thread::Builder::new()
        .name(name.chars().take(15).collect())
        .spawn(poll)
        .map(drop)
        .map_err(|e| RuntimeError::Thread {
            consumer: name.to_string(),
            reason: e.to_string(),
        })
}

fn mark(flag: &Following, ends: &HashMap<i32, i64>) {
    if ends.is_empty() {
        flag.caught_up.store(true, Ordering::Release);
    }
}

/// Assign every partition from its start (the beginning unless `starts`
/// names one); the end offsets of the partitions with records to read.
fn assign(
    consumer: &BaseConsumer,
    topic: &str,
    starts: &HashMap<i32, i64>,
) -> Option<HashMap<i32, i64>> {
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for (id, low, high) in watermarks(consumer, topic, Duration::from_secs(10)).ok()? {
        let start = starts.get(&id).copied();
        if high > start.unwrap_or(low).max(low) {
            ends.insert(id, high);
        }
        let from = start.map_or(Offset::Beginning, Offset::Offset);
        tpl.add_partition_offset(topic, id, from).ok()?;
    }
    (tpl.count() > 0 && consumer.assign(&tpl).is_ok()).then_some(ends)
}
