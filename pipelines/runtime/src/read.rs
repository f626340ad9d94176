//! Reading a topic to its end: what an audit, a replay's bounds, the demo's
//! checks and the benchmarks' counts need. The reader assigns partitions
//! itself (no consumer group membership, nothing committed) and stops at
//! the end offsets the topic had when the read began, so it reads exactly
//! what was there and never waits for more: from the beginning
//! ([`read_to_end`]), only the newest records of each partition
//! ([`read_last`], where the scheduler resumes), or a transactional
//! writer's committed records ([`read_committed`]). [`crate::follow`] is
//! the other half: reading on, as records come.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use mailfleet_events::{Event, Registry};
use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    message::{BorrowedMessage, Headers},
    Message, Offset, TopicPartitionList,
};

use crate::{
    admin::{client_config, watermarks},
    config::KafkaConfig,
    RuntimeError,
};

/// How long a read may see no record before it is called stalled.
pub const STALL: Duration = Duration::from_secs(30);

/// An error a reader's poll serves that librdkafka recovers from by itself:
/// a broker it cannot reach (one node of a cluster down: its address is
/// still a bootstrap address, and every reconnect to it fails), a request
/// timed out, a partition's leadership moving. The read goes on, and
/// [`STALL`] still ends a read that gets nothing; anything else (a topic
/// deleted, an authorization refused) fails it.
pub(crate) fn passing(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        e.rdkafka_error_code(),
        Some(
            Code::BrokerTransportFailure
                | Code::AllBrokersDown
                | Code::Resolve
                | Code::OperationTimedOut
                | Code::RequestTimedOut
                | Code::NetworkException
                | Code::NotLeaderForPartition
                | Code::LeaderNotAvailable
        )
    )
}

/// One record as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    /// Kafka's timestamp, ms (the producer's create time unless the topic
    /// says otherwise).
    pub timestamp: Option<i64>,
    pub payload: Vec<u8>,
    /// Its headers, in order: (key, value).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Record {
    /// Where it is: `topic/partition@offset`.
    pub fn place(&self) -> String {
        format!("{}/{}@{}", self.topic, self.partition, self.offset)
    }

    /// A copy of what `msg` holds.
    pub fn of(msg: &BorrowedMessage<'_>) -> Record {
        let headers = msg.headers().map_or_else(Vec::new, |hs| {
            hs.iter()
                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                .collect()
        });
        Record {
            topic: msg.topic().to_string(),
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().map(<[u8]>::to_vec),
            timestamp: msg.timestamp().to_millis(),
            payload: msg.payload().unwrap_or_default().to_vec(),
            headers,
        }
    }
}

/// A client that reads by assignment: a group id of its own (librdkafka
/// wants one), nothing committed, and the `extra` settings.
pub(crate) fn reader(
    kafka: &KafkaConfig,
    name: &str,
    extra: &[(&str, &str)],
) -> Result<BaseConsumer, RuntimeError> {
    let mut config = client_config(kafka);
    config
        .set(
            "group.id",
            format!("mailfleet-{name}-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false");
    for (key, value) in extra {
        config.set(*key, *value);
    }
    config
        .create()
        .map_err(|source| RuntimeError::CreateClient {
            what: "topic reader",
            source,
        })
}

/// Every record of `topic` from the beginning to its end now, in the
/// order polled (each partition in offset order). `name` names the reader
/// in the broker's logs. A read that sees nothing for [`STALL`] fails,
/// naming the partitions still to go.
pub fn read_to_end(
    kafka: &KafkaConfig,
    topic: &str,
    name: &str,
) -> Result<Vec<Record>, RuntimeError> {
    read(&reader(kafka, name, &[])?, topic, |low, _| low)
}

/// [`read_to_end`], but only the newest `last` records of each partition
/// (all of them where it holds fewer): where a writer resumes from what it
/// wrote last, without reading the whole topic.
pub fn read_last(
    kafka: &KafkaConfig,
    topic: &str,
    name: &str,
    last: i64,
) -> Result<Vec<Record>, RuntimeError> {
    read(&reader(kafka, name, &[])?, topic, |low, high| {
        low.max(high - last)
    })
}

/// [`read_to_end`] of a transactional writer's topic: committed records
/// only. Its commit markers take offsets too, so a partition's end is
/// where the reader's position gets to, not its last record.
pub fn read_committed(
    kafka: &KafkaConfig,
    topic: &str,
    name: &str,
) -> Result<Vec<Record>, RuntimeError> {
    let consumer = reader(kafka, name, &[("isolation.level", "read_committed")])?;
    read(&consumer, topic, |low, _| low)
}

/// Read each partition of `topic` from `start(low, high)` to its high
/// watermark now. A partition is done when a record at its last offset
/// was read, or, when nothing came, the reader's position is past it
/// (the last offsets were commit markers or aborted records).
fn read(
    consumer: &BaseConsumer,
    topic: &str,
    start: impl Fn(i64, i64) -> i64,
) -> Result<Vec<Record>, RuntimeError> {
    let kafka = |op, source| RuntimeError::Kafka { op, source };
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    let mut total = 0;
    for (id, low, high) in watermarks(consumer, topic, Duration::from_secs(10))? {
        if high > low {
            let from = start(low, high);
            tpl.add_partition_offset(topic, id, Offset::Offset(from))
                .map_err(|e| kafka("assign a partition", e))?;
            ends.insert(id, high);
            total += high - from;
        }
    }
    let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    if ends.is_empty() {
        return Ok(out);
    }
    consumer
        .assign(&tpl)
        .map_err(|e| kafka("assign the partitions", e))?;
    let mut last_seen = Instant::now();
    while !ends.is_empty() {
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            let positions = consumer
                .position()
                .map_err(|e| kafka("read the positions", e))?;
            ends.retain(|id, end| {
                !matches!(positions.find_partition(topic, *id).map(|p| p.offset()),
                    Some(Offset::Offset(at)) if at >= *end)
            });
            if !ends.is_empty() && last_seen.elapsed() >= STALL {
                return Err(RuntimeError::Read {
                    topic: topic.to_string(),
                    reason: format!("nothing read for {STALL:?}; partition ends to go: {ends:?}"),
                });
            }
            continue;
        };
        let msg = match msg {
            Ok(msg) => msg,
            Err(e) if passing(&e) => {
                tracing::warn!(%topic, error = %e, "reading on past a broker error");
                continue;
            }
            Err(e) => return Err(kafka("read a record", e)),
        };
        last_seen = Instant::now();
        if ends
            .get(&msg.partition())
            .is_some_and(|end| msg.offset() + 1 >= *end)
        {
            ends.remove(&msg.partition());
        }
        out.push(Record::of(&msg));
    }
    Ok(out)
}

/// [`read_to_end`], each record decoded as `E`. A record that is not an
/// `E` fails the read, naming its place.
pub fn read_events<E: Event>(
    kafka: &KafkaConfig,
    topic: &str,
    name: &str,
) -> Result<Vec<E>, RuntimeError> {
    read_to_end(kafka, topic, name)?
        .into_iter()
        .map(|r| decode(&r))
        .collect()
}

/// One record decoded as `E`; the error names its place.
pub fn decode<E: Event>(record: &Record) -> Result<E, RuntimeError> {
    Registry::builtin()
        .decode::<E>(&record.payload)
        .map_err(|source| RuntimeError::Decode {
            place: record.place(),
            source,
        })
}

/// Each partition's end offset now, for every topic of `topics`.
pub fn end_offsets(
    kafka: &KafkaConfig,
    topics: &[String],
) -> Result<BTreeMap<(String, i32), i64>, RuntimeError> {
    let consumer = reader(kafka, "end-offsets", &[])?;
    let mut out = BTreeMap::new();
    for topic in topics {
        for (id, _, high) in watermarks(&consumer, topic, Duration::from_secs(10))? {
            out.insert((topic.clone(), id), high);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use rdkafka::{error::KafkaError, types::RDKafkaErrorCode as Code};

    use super::passing;

    #[test]
    fn a_broker_out_of_reach_is_read_past_and_a_lasting_error_is_not() {
        // What a reader's poll served with one node of three down: its
        // address is still a bootstrap address (an audit failed on it).
        for passes in [Code::BrokerTransportFailure, Code::AllBrokersDown] {
            assert!(passing(&KafkaError::MessageConsumption(passes)));
        }
        for lasting in [
            Code::UnknownTopicOrPartition,
            Code::TopicAuthorizationFailed,
            Code::OffsetOutOfRange,
        ] {
            assert!(!passing(&KafkaError::MessageConsumption(lasting)));
        }
    }
}
