//! On assignment: is the store current for each new partition, and if not,
//! restore it from the changelog.
//!
//! For each state partition of the assignment:
//! - **held in this run** (records of it are in flight or were committed
//!   by this process since it started): its store is this member's own
//!   latest; it ships on, unless it diverged;
//! - **current**: the store has its offsets, and its changelog partition
//!   ends where this store last shipped to it (or restored from it):
//!   nobody wrote it since; it ships on;
//! - **state, no changelog yet** (the changelog was just turned on): the
//!   partition's whole state and offsets go into the outbox first (a seed),
//!   so the changelog starts complete;
//! - **otherwise** (no state here, or the changelog moved on without this
//!   store, or it diverged): the partition's state, offsets and unshipped
//!   changes are dropped and the changelog partition is read to its end
//!   (committed records only) into the store. Its last offsets records are
//!   where consuming resumes. A changelog without any (empty) leaves the
//!   partition without offsets: it is replayed from its input's beginning.
//!
//! This runs in the rebalance callback, before the partition's start
//! offset is chosen (`runner::context`). It never calls the group
//! consumer: it reads the changelog with a client of its own, and a
//! restore reads O(keys) of one partition. It must end within
//! `max.poll.interval.ms` (5 minutes by default): at about a million keys
//! a partition, that is far. A read that fails leaves the partition
//! without state, replayed from its input as without a changelog.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    Message, Offset, TopicPartitionList,
};

use super::{outbox::Item, Changelog, OFFSETS_PREFIX};
use crate::{
    error::RuntimeError,
    read::{passing, STALL},
    runner::context::Tp,
};

/// State records written to the store in one batch during a restore.
const CHUNK: usize = 10_000;

/// What a restore of one partition read.
#[derive(Debug, Default)]
pub struct Restored {
    /// Changelog records read.
    pub records: u64,
    /// The last offsets record of each input topic.
    pub offsets: BTreeMap<String, i64>,
    /// The changelog partition's end when read.
    pub end: i64,
}

impl Changelog {
    /// Settle each state partition of a new assignment `tps`; `held` are
    /// the input partitions this process has had records of in this run.
    /// A partition that cannot be settled is neither restored nor shipped
    /// in this run (logged).
    pub fn on_assign(&self, tps: &[Tp], held: &rustc_hash::FxHashMap<Tp, i64>) {
        let partitions: BTreeSet<i32> = tps.iter().map(|(_, p)| *p).collect();
        let mut reader = None;
        for p in partitions {
            if held.keys().any(|(_, q)| *q == p) {
                if !self.is_diverged(p) {
                    self.own(p);
                }
                continue;
            }
            if let Err(e) = self.settle(p, &mut reader) {
                tracing::warn!(consumer = %self.consumer, topic = %self.topic, partition = p,
                    error = %e, "cannot settle the partition with its changelog; \
                    it is not shipped in this run");
            }
        }
    }

    fn settle(&self, p: i32, reader: &mut Option<BaseConsumer>) -> Result<(), RuntimeError> {
        if reader.is_none() {
            let name = format!("{}-restore", self.consumer);
            // The end is found from the position past the last transaction
            // marker, which an empty fetch brings: do not let it wait.
            let settings = [
                ("isolation.level", "read_committed"),
                ("fetch.wait.max.ms", "10"),
            ];
            *reader = Some(crate::read::reader(&self.kafka, &name, &settings)?);
        }
        let reader = reader.as_ref().expect("made above");
        let (low, high) = reader
            .fetch_watermarks(&self.topic, p, Duration::from_secs(10))
            .map_err(|source| RuntimeError::Kafka {
                op: "fetch the changelog's watermarks",
                source,
            })?;
        let store = &self.store;
        let mut stored = false;
        for topic in &self.inputs {
            stored |= store.offset(topic, p)?.is_some();
        }
        let (shipped, diverged) = (store.shipped_end(p)?, store.diverged(p)?);
        if stored && !diverged {
            if shipped.is_some_and(|s| high <= s) {
                self.own(p);
                return Ok(());
            }
            if shipped.is_none() && high <= low && store.seed_outbox(p, &self.inputs)? {
                store.finish_restore(p, &[], high)?;
                tracing::info!(consumer = %self.consumer, partition = p,
                    "changelog started: the partition's state goes first");
                self.own(p);
                return Ok(());
            }
        }
        store.reset_partition(p, &self.inputs)?;
        self.diverged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&p);
        let started = Instant::now();
        let restored = self.read_into_store(reader, p, (low, high))?;
        let offsets: Vec<(String, i64)> = restored.offsets.clone().into_iter().collect();
        store.finish_restore(p, &offsets, restored.end)?;
        self.own(p);
        if offsets.is_empty() {
            tracing::info!(consumer = %self.consumer, partition = p,
                "no changelog for the partition yet: replaying its input from the beginning");
        } else {
            tracing::info!(consumer = %self.consumer, partition = p, records = restored.records,
                offsets = ?restored.offsets, ms = started.elapsed().as_millis() as u64,
                "restored from the changelog");
        }
        Ok(())
    }

    /// Read changelog partition `p` from `low` to `high` into the store
    /// (whose partition is empty).
    fn read_into_store(
        &self,
        reader: &BaseConsumer,
        p: i32,
        (low, high): (i64, i64),
    ) -> Result<Restored, RuntimeError> {
        let kafka = |op, source| RuntimeError::Kafka { op, source };
        let mut out = Restored {
            end: high,
            ..Restored::default()
        };
        if high <= low {
            return Ok(out);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, p, Offset::Beginning)
            .map_err(|e| kafka("assign the changelog", e))?;
        reader
            .assign(&tpl)
            .map_err(|e| kafka("assign the changelog", e))?;
        let mut items = Vec::with_capacity(CHUNK.min(1024));
        let mut last_seen = Instant::now();
        loop {
            let Some(polled) = reader.poll(Duration::from_millis(200)) else {
                // The last offsets may be transaction markers: no record
                // comes, but the position passes them.
                if self.read_to(reader, p, high)? {
                    break;
                }
                if last_seen.elapsed() >= STALL {
                    return Err(RuntimeError::Changelog {
                        topic: self.topic.clone(),
                        reason: format!("partition {p}: nothing read for {STALL:?} before {high}"),
                    });
                }
                continue;
            };
            let msg = match polled {
                Ok(msg) => msg,
                Err(e) if passing(&e) => {
                    tracing::warn!(topic = %self.topic, error = %e, "restoring on past a broker error");
                    continue;
                }
                Err(e) => return Err(kafka("read the changelog", e)),
            };
            last_seen = Instant::now();
            out.records += 1;
            let key = msg.key().unwrap_or_default();
            match (key.strip_prefix(OFFSETS_PREFIX), msg.payload()) {
                (Some(topic), Some(v)) => {
                    let next = v.try_into().map(i64::from_le_bytes).ok();
                    let topic = String::from_utf8_lossy(topic).into_owned();
                    out.offsets.extend(next.map(|n| (topic, n)));
                }
                (Some(_), None) => {}
                (None, Some(v)) => items.push(Item::Put(key.to_vec(), v.to_vec())),
                (None, None) => items.push(Item::Delete(key.to_vec())),
            }
            if items.len() >= CHUNK {
                self.store.write_restored(p, &items)?;
                items.clear();
            }
            if msg.offset() + 1 >= high {
                break;
            }
        }
        self.store.write_restored(p, &items)?;
        Ok(out)
    }

    /// Whether the reader's position in partition `p` is at `high`.
    fn read_to(&self, reader: &BaseConsumer, p: i32, high: i64) -> Result<bool, RuntimeError> {
        let positions = reader.position().map_err(|source| RuntimeError::Kafka {
            op: "read the changelog's position",
            source,
        })?;
        Ok(matches!(
            positions.find_partition(&self.topic, p).map(|e| e.offset()),
            Some(Offset::Offset(at)) if at >= high
        ))
    }
}
