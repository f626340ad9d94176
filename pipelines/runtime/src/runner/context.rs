//! Group membership: where a newly assigned partition starts.
//!
//! On assignment each partition starts at the offset its RocksDB says was
//! consumed last (state and offset were committed together), or, when this
//! process has no state for it, at the earliest offset, so that replaying
//! the partition rebuilds its state. Kafka's committed group offsets are
//! never used to start: they are telemetry only.
//!
//! A rebalance can fire inside `poll` while a batch is being collected. The
//! batch's records are not committed yet, so a partition assigned again
//! starts after the records already in the batch (`inflight`), and the batch
//! is then committed as usual.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use rdkafka::{
    consumer::{BaseConsumer, Consumer, ConsumerContext},
    error::KafkaResult,
    statistics::Statistics,
    topic_partition_list::TopicPartitionList,
    types::RDKafkaRespErr,
    ClientContext, Offset,
};

use crate::{metrics as m, store::Store};

/// (topic, partition).
pub type Tp = (String, i32);

/// What the poll loop and the rebalance callback share.
#[derive(Default)]
pub struct Shared {
    /// Next offset after the records collected but not yet committed.
    pub inflight: Mutex<HashMap<Tp, i64>>,
    /// Records below this offset were already handled: skip them.
    pub positions: Mutex<HashMap<Tp, i64>>,
    /// Bumped on every assignment change.
    pub generation: AtomicU64,
    /// A store read failed during a rebalance; the loop must stop.
    pub fatal: Mutex<Option<String>>,
}

/// The rdkafka context of a runtime consumer.
pub struct RuntimeContext {
    pub consumer: String,
    pub store: Arc<Store>,
    pub shared: Arc<Shared>,
    /// Start offsets for partitions without a stored one (a replay from a
    /// time); others start at the beginning.
    pub start_at: std::collections::BTreeMap<Tp, i64>,
}

impl ClientContext for RuntimeContext {
    fn stats(&self, stats: Statistics) {
        for (topic, t) in &stats.topics {
            for (partition, p) in &t.partitions {
                // librdkafka reports -1 for partitions this client does not consume.
                if *partition < 0 || p.consumer_lag < 0 {
                    continue;
                }
                metrics::gauge!(m::CONSUMER_LAG,
                    "consumer" => self.consumer.clone(),
                    "topic" => topic.clone(),
                    "partition" => partition.to_string())
                .set(p.consumer_lag as f64);
            }
        }
    }
}

impl ConsumerContext for RuntimeContext {
    fn rebalance(
        &self,
        base: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.assign(base, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(consumer = %self.consumer, partitions = %describe(tpl), "revoked");
                base.unassign()
            }
            other => {
                tracing::error!(consumer = %self.consumer, error = ?other, "rebalance error");
                base.unassign()
            }
        };
        if let Err(e) = result {
            tracing::error!(consumer = %self.consumer, error = %e, "applying assignment");
        }
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        let assigned = base.assignment().map(|a| a.count()).unwrap_or(0);
        metrics::gauge!(m::ASSIGNED_PARTITIONS, "consumer" => self.consumer.clone())
            .set(assigned as f64);
    }
}

impl RuntimeContext {
    fn assign(&self, base: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) -> KafkaResult<()> {
        let inflight = self
            .shared
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut positions = self
            .shared
            .positions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let tps: Vec<Tp> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        for tp in tps {
            let stored = self.store.offset(&tp.0, tp.1).unwrap_or_else(|e| {
                *self.shared.fatal.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                None
            });
            let start = match (stored, inflight.get(&tp).copied()) {
                (Some(s), Some(i)) => Some(s.max(i)),
                (s, i) => s.or(i).or_else(|| self.start_at.get(&tp).copied()),
            };
            let offset = match start {
                Some(o) => Offset::Offset(o),
                None => Offset::Beginning,
            };
            tpl.set_partition_offset(&tp.0, tp.1, offset)?;
            match start {
                Some(o) => positions.insert(tp, o),
                None => positions.remove(&tp),
            };
        }
        tracing::info!(consumer = %self.consumer, partitions = %describe(tpl), "assigned");
        base.assign(tpl)
    }
}

/// `topic/partition@offset, ...` for logs.
pub fn describe(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| format!("{}/{}@{:?}", e.topic(), e.partition(), e.offset()))
        .collect::<Vec<_>>()
        .join(", ")
}
