//! The projection's snapshot, so that `mailfleet api` starts in O(accounts)
//! rather than folding the whole of `accounts.events` (kept forever).
//!
//! The topic `<events topic>.snapshot` is compacted: key the account
//! (lower-cased), value the account as JSON, on the partition its events
//! are on (same key, same partition count, same partitioner); and per
//! partition one offsets record (key [`OFFSETS_KEY`], value the next offset
//! of the events topic's partition that the snapshot holds, i64
//! little-endian), written after that partition's accounts.
//!
//! At start the API reads the snapshot (the latest record per key), then
//! follows the events topic from each partition's offsets record (from the
//! beginning without one). Every `api.snapshot_interval_s` it writes the
//! accounts that changed since the last snapshot, then the offsets; with
//! 0 it neither writes nor reads one and folds the whole topic. An
//! account in the snapshot may be ahead of its partition's offsets (the
//! API's own writes are applied before the follower reads them, and a
//! crash may fall between the accounts and the offsets): the events after
//! the offsets are folded again on top, which the fold allows, as it does
//! for the API's own writes (see [`crate::projection`]).

use std::{collections::HashMap, time::Duration};

use mailfleet_runtime::{
    admin,
    config::KafkaConfig,
    read,
    topology::{CleanupPolicy, TopicSpec, Topology},
    RuntimeError,
};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::{errors::ApiError, projection::Account};

/// The offsets record's key.
pub const OFFSETS_KEY: &[u8] = b"\xFFoffsets";

/// The snapshot topic of an events topic.
pub fn topic_for(events_topic: &str) -> String {
    format!("{events_topic}.snapshot")
}

/// A snapshot read back.
#[derive(Default)]
pub struct Loaded {
    /// (partition, account).
    pub accounts: Vec<(i32, Account)>,
    /// Partition → next offset of the events topic.
    pub offsets: HashMap<i32, i64>,
    /// Records read.
    pub records: usize,
}

/// What one snapshot writes.
#[derive(Default)]
pub struct Snapshot {
    /// (partition, account).
    pub accounts: Vec<(i32, Account)>,
    /// Partition → next offset of the events topic.
    pub offsets: HashMap<i32, i64>,
}

/// Create the snapshot topic if it is missing (compacted, kept forever,
/// as many partitions as the events topic).
pub async fn ensure_topic(kafka: &KafkaConfig, events_topic: &str) -> Result<(), RuntimeError> {
    let topic = topic_for(events_topic);
    let have = read::end_offsets(kafka, std::slice::from_ref(&topic))?.len();
    let want = read::end_offsets(kafka, &[events_topic.to_string()])?.len();
    if want == 0 || have >= want {
        return Ok(());
    }
    let spec = TopicSpec {
        partitions: want as i32,
        replication_factor: None,
        min_insync_replicas: None,
        retention_ms: -1,
        cleanup_policy: CleanupPolicy::Compact,
        segment_ms: Some(mailfleet_runtime::changelog::SEGMENT_MS),
        min_cleanable_dirty_ratio: Some(mailfleet_runtime::changelog::DIRTY_RATIO),
        doc: String::new(),
    };
    let topology = Topology {
        topics: [(topic, spec)].into(),
        consumers: Default::default(),
    };
    admin::apply(kafka, &topology).await.map(drop)
}

/// Read the snapshot of `events_topic` (empty if there is none).
pub fn load(kafka: &KafkaConfig, events_topic: &str) -> Result<Loaded, RuntimeError> {
    let mut out = Loaded::default();
    let mut latest: HashMap<Vec<u8>, (i32, Vec<u8>)> = HashMap::new();
    for r in read::read_to_end(kafka, &topic_for(events_topic), "api-snapshot")? {
        out.records += 1;
        let key = r.key.unwrap_or_default();
        if key == OFFSETS_KEY {
            if let Ok(next) = r.payload.as_slice().try_into().map(i64::from_le_bytes) {
                out.offsets.insert(r.partition, next);
            }
        } else {
            latest.insert(key, (r.partition, r.payload));
        }
    }
    for (key, (partition, value)) in latest {
        match serde_json::from_slice::<Account>(&value) {
            Ok(a) => out.accounts.push((partition, a)),
            Err(e) => tracing::warn!(account = %String::from_utf8_lossy(&key), error = %e,
                "unreadable snapshot record; the account comes from the events"),
        }
    }
    Ok(out)
}

/// Write `snapshot`: the accounts, then each partition's offsets record.
pub async fn write(
    producer: &FutureProducer,
    events_topic: &str,
    snapshot: &Snapshot,
) -> Result<(), ApiError> {
    let topic = topic_for(events_topic);
    let timeout = Duration::from_secs(30);
    let failed =
        |e: rdkafka::error::KafkaError| ApiError::Internal(format!("writing {topic}: {e}"));
    let values: Vec<(i32, &str, Vec<u8>)> = snapshot
        .accounts
        .iter()
        .map(|(p, a)| Ok((*p, a.account.as_str(), serde_json::to_vec(a)?)))
        .collect::<Result<_, serde_json::Error>>()
        .map_err(|e| ApiError::Internal(format!("encoding a snapshot: {e}")))?;
    let sends = values.iter().map(|(p, key, value)| {
        producer.send(
            FutureRecord::to(&topic)
                .partition(*p)
                .key(*key)
                .payload(value),
            timeout,
        )
    });
    for sent in futures::future::join_all(sends).await {
        sent.map_err(|(e, _)| failed(e))?;
    }
    for (p, next) in &snapshot.offsets {
        let value = next.to_le_bytes();
        let record = FutureRecord::to(&topic)
            .partition(*p)
            .key(OFFSETS_KEY)
            .payload(&value[..]);
        producer
            .send(record, timeout)
            .await
            .map_err(|(e, _)| failed(e))?;
    }
    Ok(())
}
