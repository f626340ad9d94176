//! Reading topics back for an audit: every record of a topic up to its end
//! now, or the one record at an offset, decoded to JSON.

use std::{collections::HashMap, time::Duration};

use anyhow::Context;
use mailfleet_events::Registry;
use mailfleet_runtime::{
    admin::{client_config, watermarks},
    config::KafkaConfig,
};
use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    Message, Offset, TopicPartitionList,
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
    pub(crate) fn id(&self) -> &str {
        self.json["envelope"]["event_id"].as_str().unwrap_or("")
    }

    pub(crate) fn time(&self) -> i64 {
        self.json["envelope"]["event_time"].as_i64().unwrap_or(0)
    }

    /// The event's short name (`GreylistDecided`).
    pub(crate) fn short(&self) -> &str {
        self.name.rsplit('.').next().unwrap_or(&self.name)
    }
}

/// Every record of `topic` from the beginning to its end now, decoded;
/// records that are no event of the registry are skipped.
pub fn read_all(kafka: &KafkaConfig, topic: &str) -> anyhow::Result<Vec<Read>> {
    let consumer: BaseConsumer = client_config(kafka)
        .set("enable.auto.commit", "false")
        .set("group.id", "mailfleet-audit")
        .create()
        .context("creating the audit reader")?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for (id, low, high) in watermarks(&consumer, topic, Duration::from_secs(10))
        .with_context(|| format!("{topic}: reading its offsets"))?
    {
        if high > low {
            tpl.add_partition_offset(topic, id, Offset::Offset(low))?;
            ends.insert(id, high);
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return Ok(out);
    }
    consumer.assign(&tpl)?;
    let mut idle = 0;
    while !ends.is_empty() {
        let Some(msg) = consumer.poll(Duration::from_millis(500)) else {
            idle += 1;
            anyhow::ensure!(idle < 60, "{topic}: reading stalled with {ends:?} to go");
            continue;
        };
        idle = 0;
        let msg = msg.with_context(|| format!("reading {topic}"))?;
        if let Ok((name, json)) = Registry::builtin().to_json(msg.payload().unwrap_or_default()) {
            out.push(Read {
                topic: topic.to_string(),
                partition: msg.partition(),
                offset: msg.offset(),
                key: msg.key().map(<[u8]>::to_vec),
                name,
                json,
            });
        }
        if ends
            .get(&msg.partition())
            .is_some_and(|end| msg.offset() + 1 >= *end)
        {
            ends.remove(&msg.partition());
        }
    }
    Ok(out)
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
            let (name, json) = Registry::builtin()
                .to_json(msg.payload().unwrap_or_default())
                .ok()?;
            return Some(Read {
                topic: topic.to_string(),
                partition,
                offset: msg.offset(),
                key: msg.key().map(<[u8]>::to_vec),
                name,
                json,
            });
        }
    }
    None
}
