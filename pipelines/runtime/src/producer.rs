//! Producing events from edge services, tools and tests: the idempotent
//! producer (`acks=all`), returning only once Kafka has acknowledged.

use std::time::Duration;

use futures::{stream, StreamExt};
use mailfleet_events::Event;
use rdkafka::{
    producer::{FutureProducer, FutureRecord},
    util::Timeout,
};

use crate::{admin::client_config, config::KafkaConfig, error::RuntimeError};

/// How every producer sends, unless `kafka.properties` says otherwise.
/// Every caller awaits its acknowledgement (a policy request, an LMTP
/// transaction, a consumer's batch before its commit), so a record waiting
/// to be batched is waiting time for someone. `linger.ms` = 0: send at
/// once; under load librdkafka still batches what queues up while its
/// (up to 5) requests are in flight. `linger.ms` = 1 cost ~1.3 ms per
/// produce, not 1 (the broker thread's wake-ups), and 2.5 ms of a policy
/// round trip's 3.5 (docs/benchmarks.md, G5 policy). Nagle off: a request
/// written while another is unacknowledged must not wait for the ACK.
pub const LATENCY_DEFAULTS: &[(&str, &str)] =
    &[("linger.ms", "0"), ("socket.nagle.disable", "true")];

/// An acknowledged-delivery producer.
#[derive(Clone)]
pub struct EventProducer {
    inner: FutureProducer,
}

/// A record to send: topic, key, already-encoded value.
pub struct RawRecord {
    pub topic: String,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
}

impl EventProducer {
    /// A producer named `client_id`.
    pub fn new(kafka: &KafkaConfig, client_id: &str) -> Result<Self, RuntimeError> {
        Self::build(kafka, client_id, None)
    }

    /// A producer whose sends fail after `timeout` without an
    /// acknowledgement (librdkafka's `message.timeout.ms`, 300 s by
    /// default), for edge services that must answer their client in time.
    pub fn with_delivery_timeout(
        kafka: &KafkaConfig,
        client_id: &str,
        timeout: Duration,
    ) -> Result<Self, RuntimeError> {
        Self::build(kafka, client_id, Some(timeout))
    }

    fn build(
        kafka: &KafkaConfig,
        client_id: &str,
        timeout: Option<Duration>,
    ) -> Result<Self, RuntimeError> {
        let mut config = client_config(kafka);
        if let Some(timeout) = timeout {
            config.set("message.timeout.ms", timeout.as_millis().max(1).to_string());
        }
        for (key, value) in LATENCY_DEFAULTS {
            if config.get(key).is_none() {
                config.set(*key, *value);
            }
        }
        let inner = config
            .set("client.id", client_id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            .set("queue.buffering.max.messages", "500000")
            .create()
            .map_err(|source| RuntimeError::CreateClient {
                what: "producer",
                source,
            })?;
        Ok(Self { inner })
    }

    /// Send raw bytes; returns (partition, offset) once acknowledged.
    pub async fn send_raw(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
    ) -> Result<(i32, i64), RuntimeError> {
        let record = FutureRecord::to(topic).key(key).payload(payload);
        self.inner
            .send(record, Timeout::After(Duration::from_secs(60)))
            .await
            .map(|d| (d.partition, d.offset))
            .map_err(|(source, _)| RuntimeError::Kafka {
                op: "produce",
                source,
            })
    }

    /// Send raw bytes to one partition (clock ticks go to every partition).
    pub async fn send_to_partition(
        &self,
        topic: &str,
        partition: i32,
        payload: &[u8],
    ) -> Result<i64, RuntimeError> {
        let record = FutureRecord::<[u8], [u8]>::to(topic)
            .partition(partition)
            .payload(payload);
        self.inner
            .send(record, Timeout::After(Duration::from_secs(60)))
            .await
            .map(|d| d.offset)
            .map_err(|(source, _)| RuntimeError::Kafka {
                op: "produce",
                source,
            })
    }

    /// Encode and send an event.
    pub async fn send<E: Event>(
        &self,
        topic: &str,
        key: &[u8],
        event: &E,
    ) -> Result<(i32, i64), RuntimeError> {
        let payload = mailfleet_events::encode(event)?;
        self.send_raw(topic, key, &payload).await
    }

    /// Send many records with up to `in_flight` awaiting acknowledgement;
    /// `progress` is called with the number acknowledged so far.
    pub async fn send_all(
        &self,
        records: impl IntoIterator<Item = RawRecord>,
        in_flight: usize,
        mut progress: impl FnMut(u64),
    ) -> Result<u64, RuntimeError> {
        let mut acked = 0u64;
        let mut sends = stream::iter(records)
            .map(|r| async move { self.send_raw(&r.topic, &r.key, &r.payload).await })
            .buffer_unordered(in_flight.max(1));
        while let Some(result) = sends.next().await {
            result?;
            acked += 1;
            if acked.is_multiple_of(1000) {
                progress(acked);
            }
        }
        progress(acked);
        Ok(acked)
    }
}
