//! Reading topics back for an audit: every record of a topic up to its end
//! now ([`mailfleet_runtime::read::read_to_end`]), or the one record at an
//! offset, decoded to JSON.

use std::time::Duration;

use mailfleet_events::Registry;
use mailfleet_runtime::{
    admin::client_config,
    config::KafkaConfig,
    read::{read_to_end, Record},
};
use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    Offset, TopicPartitionList,
};
use serde_json::Value;

/// One record read back, decoded.
#[derive(Debug, Clone)]
pub struct Read {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub name: String,
    pub json: Value,
}

impl Read {
    /// `record` decoded; `None` if it is no event of the registry.
    fn of(record: Record) -> Option<Read> {
        let (name, json) = Registry::builtin().to_json(&record.payload).ok()?;
        Some(Read {
            topic: record.topic,
            partition: record.partition,
            offset: record.offset,
            key: record.key,
            name,
            json,
        })
    }

    pub(crate) fn id(&self) -> &str {
        self.json["envelope"]["event_id"].as_str().unwrap_or("")
    }

    pub(crate) fn time(&self) -> i64 {
        self.json["envelope"]["event_time"].as_i64().unwrap_or(0)
    }

    /// Where it lies and what it says: `topic/partition@offset Name {json}`.
    pub(crate) fn line(&self) -> String {
        format!(
            "{}/{}@{} {} {}",
            self.topic,
            self.partition,
            self.offset,
            self.short(),
            self.json
        )
    }

    /// The event's short name (`GreylistDecided`).
    pub(crate) fn short(&self) -> &str {
        self.name.rsplit('.').next().unwrap_or(&self.name)
    }
}

/// Every record of `topic` from the beginning to its end now, decoded;
/// records that are no event of the registry are skipped.
pub fn read_all(kafka: &KafkaConfig, topic: &str) -> anyhow::Result<Vec<Read>> {
    Ok(read_to_end(kafka, topic, "audit")?
        .into_iter()
        .filter_map(Read::of)
        .collect())
}

/// The record at one offset.
pub(super) fn read_one(
    kafka: &KafkaConfig,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Option<Read> {
    let consumer: BaseConsumer = client_config(kafka)
        .set("enable.auto.commit", "false")
        .set("group.id", "mailfleet-audit")
        .create()
        .ok()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
        .ok()?;
    consumer.assign(&tpl).ok()?;
    for _ in 0..20 {
        if let Some(Ok(msg)) = consumer.poll(Duration::from_millis(500)) {
            return Read::of(Record::of(&msg));
        }
    }
    None
}
