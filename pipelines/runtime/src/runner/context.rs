//! Group membership: where a newly assigned partition starts.
//!
//! On assignment each partition starts at the offset its RocksDB says was
//! consumed last (state and offset were committed together), or, when this
//! process has no state for it, at the earliest offset, so that replaying
//! the partition rebuilds its state. Kafka's committed group offsets are
//! never used to start: they are telemetry only.
//!
//! A consumer with a changelog first settles each new partition with it
//! ([`Changelog::on_assign`]): one not current here is restored from its
//! changelog partition, and then starts at the offsets restored. That read
//! is done here, before the start offset is chosen, because only here is
//! it known which partitions came and where they must start; it uses a
//! client of its own (never this consumer, see below), reads O(keys) of
//! the partition, and must end within `max.poll.interval.ms`. Revoked
//! partitions stop shipping at once ([`Changelog::disown`]).
//!
//! A rebalance can fire inside `poll` while a batch is being collected. The
//! batch's records are not committed yet, so a partition assigned again
//! starts after the records already in the batch (`inflight`), and the batch
//! is then committed as usual.
//!
//! The callback never calls back into librdkafka for anything that waits on
//! the consumer group (`assignment()`, `committed()`, `position()`, a
//! synchronous commit): it runs on the consumer's own thread, also while the
//! consumer closes, and such a call can then wait for ever on a group that
//! is going away (a `SIGTERM` during a rebalance hung `mailfleet run` in
//! `rd_kafka_assignment`). What it needs it keeps itself: the assignment is
//! [`Shared::assigned`], kept from the partition lists the callback is given.

use rustc_hash::FxHashMap;
use std::{
    collections::HashSet,
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

use crate::{
    changelog::{Changelog, Shipping},
    error::RuntimeError,
    metrics as m,
    store::Store,
};

/// (topic, partition).
pub type Tp = (String, i32);

/// What the poll loop and the rebalance callback share.
#[derive(Default)]
pub struct Shared {
    /// Next offset after the records collected but not yet committed.
    pub inflight: Mutex<FxHashMap<Tp, i64>>,
    /// Records below this offset were already handled: skip them.
    pub positions: Mutex<FxHashMap<Tp, i64>>,
    /// Bumped on every assignment change.
    pub generation: AtomicU64,
    /// A store read failed during a rebalance; the loop must stop.
    pub fatal: Mutex<Option<String>>,
    /// The partitions assigned to this member, kept by the rebalance
    /// callback from the lists it is given (never asked of librdkafka).
    pub assigned: Mutex<HashSet<Tp>>,
}

impl Shared {
    /// The partitions assigned now.
    pub fn assigned(&self) -> HashSet<Tp> {
        self.assigned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Note an assignment change: an assignment is `tpl` (the callback's
    /// `assign` replaces the whole assignment, as eager rebalancing gives
    /// it), a revocation removes the partitions of `tpl`, an error forgets
    /// them all. Returns how many are assigned after it.
    pub fn note_assignment(&self, change: Assignment, tpl: &TopicPartitionList) -> usize {
        let mut assigned = self.assigned.lock().unwrap_or_else(|p| p.into_inner());
        let tps = tpl
            .elements()
            .into_iter()
            .map(|e| (e.topic().to_string(), e.partition()));
        match change {
            Assignment::Set => {
                assigned.clear();
                assigned.extend(tps);
            }
            Assignment::Remove => {
                for tp in tps {
                    assigned.remove(&tp);
                }
            }
            Assignment::Clear => assigned.clear(),
        }
        assigned.len()
    }
}

/// How a rebalance changes the assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignment {
    Set,
    Remove,
    Clear,
}

/// The rdkafka context of a runtime consumer.
pub struct RuntimeContext {
    pub consumer: String,
    pub store: Arc<Store>,
    pub shared: Arc<Shared>,
    /// Start offsets for partitions without a stored one (a replay from a
    /// time); others start at the beginning.
    pub start_at: std::collections::BTreeMap<Tp, i64>,
    /// The consumer's state changelog, if it keeps one.
    pub changelog: Option<Arc<Changelog>>,
    /// Its shipper, while it runs.
    pub shipping: Mutex<Option<Shipping>>,
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
        // `assign`/`unassign` are what librdkafka expects of this callback,
        // also while closing; nothing else here may wait on the group.
        let (result, change) = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                (self.assign(base, tpl), Assignment::Set)
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(consumer = %self.consumer, partitions = %describe(tpl), "revoked");
                self.disown(tpl.elements().iter().map(|e| e.partition()).collect());
                (base.unassign(), Assignment::Remove)
            }
            other => {
                tracing::error!(consumer = %self.consumer, error = ?other, "rebalance error");
                self.disown(self.shared.assigned().iter().map(|(_, p)| *p).collect());
                (base.unassign(), Assignment::Clear)
            }
        };
        if let Err(e) = result {
            tracing::error!(consumer = %self.consumer, error = %e, "applying assignment");
        }
        let assigned = self.shared.note_assignment(change, tpl);
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        metrics::gauge!(m::ASSIGNED_PARTITIONS, "consumer" => self.consumer.clone())
            .set(assigned as f64);
    }
}

impl RuntimeContext {
    /// The context of consumer `name`'s run of `spec`, with its changelog
    /// (if it keeps one) and the changelog's shipper started.
    pub fn new(
        name: &str,
        store: &Arc<Store>,
        shared: &Arc<Shared>,
        spec: &super::RunSpec,
        tokio: &tokio::runtime::Handle,
    ) -> Result<Self, RuntimeError> {
        let changelog = Changelog::for_run(name, spec, store, tokio)?;
        let shipping = changelog.clone().map(Shipping::start).transpose()?;
        Ok(Self {
            consumer: name.to_string(),
            store: store.clone(),
            shared: shared.clone(),
            start_at: spec.start_at.clone().unwrap_or_default(),
            changelog,
            shipping: Mutex::new(shipping),
        })
    }

    /// Ship what is left for at most `within`, then stop the shipper.
    pub fn stop_shipping(&self, within: std::time::Duration) {
        let shipping = self
            .shipping
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(shipping) = shipping {
            shipping.stop(within);
        }
    }

    fn disown(&self, partitions: Vec<i32>) {
        if let Some(cl) = &self.changelog {
            cl.disown(&partitions);
        }
    }

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
        if let Some(cl) = &self.changelog {
            // Before the stored offsets are read: a restore writes them.
            cl.on_assign(&tps, &inflight);
        }
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
        base.assign(tpl)?;
        // librdkafka keeps a partition's pause across a rebalance, while
        // the runner forgets its pauses on an assignment change: a
        // partition paused for a retry, revoked and assigned back would
        // stay paused for good, silently. Every assigned partition starts
        // unpaused, at its stored offset.
        base.resume(tpl)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tpl(tps: &[(&str, i32)]) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in tps {
            tpl.add_partition(topic, *partition);
        }
        tpl
    }

    #[test]
    fn the_assignment_is_kept_from_the_callbacks_lists() {
        let shared = Shared::default();
        let n = shared.note_assignment(Assignment::Set, &tpl(&[("a", 0), ("a", 1), ("b", 0)]));
        assert_eq!(n, 3);
        // An eager rebalance hands the whole new assignment over at once.
        let n = shared.note_assignment(Assignment::Set, &tpl(&[("a", 1), ("b", 1)]));
        assert_eq!(n, 2);
        assert!(shared.assigned().contains(&("b".to_string(), 1)));
        assert!(!shared.assigned().contains(&("a".to_string(), 0)));
        let n = shared.note_assignment(Assignment::Remove, &tpl(&[("a", 1), ("c", 9)]));
        assert_eq!(n, 1, "a revocation removes its partitions, and only those");
        assert_eq!(shared.note_assignment(Assignment::Clear, &tpl(&[])), 0);
        assert!(shared.assigned().is_empty());
    }
}
