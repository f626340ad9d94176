//! A compacted changelog of a consumer's state, so that a member without
//! a partition's state restores it by reading O(keys), not the partition's
//! whole input (docs/changelog.md).
//!
//! # Guarantee
//!
//! The changelog topic `<group>.changelog` holds, per state partition, the
//! state's keys (key: the state key without its partition; value: the
//! value, or a tombstone for a delete) and, after them, the next offset of
//! each input partition (key [`offsets_key`]). Read to its end, with
//! compaction or without, it is the state of some commit of that partition
//! and the input offsets of that same commit. Hence a restore followed by
//! the input from those offsets gives the state the partition would have
//! had, and re-decided inputs send their outputs again under the same ids
//! (downstream drops them, as after a crash).
//!
//! How:
//! - **Outbox.** [`crate::store::Store::commit`] writes the commit's
//!   changes into the store's `outbox` in the commit's own `WriteBatch`
//!   ([`outbox`]): nothing is shipped that was not committed, nothing
//!   committed is lost by a crash before it is shipped. The runner's loop
//!   is not touched.
//! - **Shipping** ([`ship`]): a thread sends the outbox in order, each chunk
//!   in one Kafka transaction (its state records and the offsets records
//!   after them), and deletes it from the outbox once committed. A crash
//!   mid-chunk aborts the transaction (a reader sees none of it) and the
//!   chunk is sent again; a crash after the commit sends it again too: the
//!   same values in the same order, harmless for a compacted topic.
//! - **Restore** ([`restore`]): on assignment, a partition that this store
//!   does not hold current is read from its changelog partition (committed
//!   records only) into the store, then consumed from the offsets read.
//!   With no changelog (empty, or never written), the partition is replayed
//!   from its input's beginning, as without a changelog.
//!
//! # Precondition
//!
//! One writer per changelog partition: the member assigned the partition.
//! A member ships a partition only while it holds it, and only if nothing
//! was appended to its changelog partition since its own last shipment
//! (checked against the partition's end before each chunk). A partition
//! written by another member meanwhile is *diverged* here: its changes
//! stop shipping from this member until it restores the partition from the
//! changelog (at its next assignment without records in flight). What is
//! not closed is the window between that check and the chunk's commit: a
//! member that loses a partition while a chunk of it is in flight can
//! still append it after the new owner restored. Fencing each partition's
//! writer (a transactional id per partition) would close it.
//!
//! Every state key is stored under its input partition (`StateView`), so
//! the changelog partition of a change is that partition, and the
//! changelog has as many partitions as the consumer's widest input.

pub mod outbox;
mod restore;
mod ship;

use std::{
    collections::HashSet,
    sync::{atomic::AtomicBool, Arc, Mutex},
    time::Duration,
};

use crate::{
    admin,
    config::KafkaConfig,
    error::RuntimeError,
    runner::RunSpec,
    store::Store,
    topology::{CleanupPolicy, TopicSpec, Topology},
};

pub use ship::Shipping;

/// The record key prefix of the offsets records (the last table prefix,
/// which the runtime keeps for itself: no state key starts with it).
pub const OFFSETS_PREFIX: &[u8] = b"\xFFoffsets/";

/// The changelog topic of a consumer group.
pub fn topic_for(group: &str) -> String {
    format!("{group}.changelog")
}

/// The record key of an input topic's offsets record.
pub fn offsets_key(topic: &str) -> Vec<u8> {
    [OFFSETS_PREFIX, topic.as_bytes()].concat()
}

/// How a changelog topic is declared: compacted, kept forever, and with
/// segments that roll (so the cleaner, which never touches the active
/// segment, gets to them) and a low dirty ratio (so it cleans soon).
pub fn topic_spec(partitions: i32) -> TopicSpec {
    TopicSpec {
        partitions,
        replication_factor: None,
        min_insync_replicas: None,
        retention_ms: -1,
        cleanup_policy: CleanupPolicy::Compact,
        segment_ms: Some(SEGMENT_MS),
        min_cleanable_dirty_ratio: Some(DIRTY_RATIO),
        doc: String::new(),
    }
}

/// A changelog segment rolls after an hour: what a restore reads besides
/// the latest value per key is at most the last hour's changes.
pub const SEGMENT_MS: i64 = 3_600_000;
/// The cleaner takes a log once a tenth of it is superseded records.
pub const DIRTY_RATIO: f64 = 0.1;

/// One consumer's changelog: where it goes, and what this member ships.
pub struct Changelog {
    pub topic: String,
    pub consumer: String,
    pub kafka: KafkaConfig,
    /// The consumer's input topics (their offsets go in the changelog).
    pub inputs: Vec<String>,
    pub store: Arc<Store>,
    /// State partitions this member ships: assigned, and current here.
    owned: Mutex<HashSet<i32>>,
    /// Partitions whose changelog another member wrote since this one
    /// shipped to it: their changes are dropped, not shipped.
    diverged: Mutex<HashSet<i32>>,
    /// Tells the shipper to ship what it holds and stop.
    stop: Arc<AtomicBool>,
}

/// Whether the consumer `name` keeps a changelog in `spec`'s run
/// (`runtime.changelog`, and the run produces: a replay writes nothing).
pub fn kept_for(name: &str, spec: &RunSpec) -> bool {
    spec.produce && spec.runtime.changelog.iter().any(|c| c == name)
}

impl Changelog {
    /// The changelog of the consumer `name` for `spec`'s run, if its
    /// consumer keeps one (`runtime.changelog`) and the run produces (a
    /// replay writes nothing). Creates the topic if it is missing and
    /// turns the store's outbox on.
    pub fn for_run(
        name: &str,
        spec: &RunSpec,
        store: &Arc<Store>,
        tokio: &tokio::runtime::Handle,
    ) -> Result<Option<Arc<Changelog>>, RuntimeError> {
        if !kept_for(name, spec) {
            return Ok(None);
        }
        let topic = topic_for(&spec.group);
        tokio.block_on(ensure_topic(&spec.kafka, &topic, &spec.inputs))?;
        store.enable_outbox();
        tracing::info!(consumer = %name, %topic, "state changelog on");
        Ok(Some(Arc::new(Changelog {
            topic,
            consumer: name.to_string(),
            kafka: spec.kafka.clone(),
            inputs: spec.inputs.clone(),
            store: store.clone(),
            owned: Mutex::default(),
            diverged: Mutex::default(),
            stop: Arc::default(),
        })))
    }

    /// State partitions this member ships now.
    fn owned(&self) -> HashSet<i32> {
        self.owned.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn own(&self, partition: i32) {
        self.owned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(partition);
    }

    /// The partitions revoked: stop shipping them.
    pub fn disown(&self, partitions: &[i32]) {
        let mut owned = self.owned.lock().unwrap_or_else(|p| p.into_inner());
        for p in partitions {
            owned.remove(p);
        }
    }

    fn is_diverged(&self, partition: i32) -> bool {
        self.diverged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&partition)
    }

    /// Another member wrote `partition`'s changelog: ship none of it.
    fn diverge(&self, partition: i32) -> Result<(), RuntimeError> {
        tracing::warn!(consumer = %self.consumer, topic = %self.topic, partition,
            "the changelog partition was written by another member; this member stops \
             shipping it until it restores the partition from the changelog");
        self.disown(&[partition]);
        self.diverged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(partition);
        self.store.mark_diverged(partition)
    }
}

/// Create the changelog topic if it is missing, with as many partitions as
/// the widest input. An existing one is left as it is (`mailfleet topics
/// apply` keeps a declared one in line with `pipelines/topology.toml`).
async fn ensure_topic(
    kafka: &KafkaConfig,
    topic: &str,
    inputs: &[String],
) -> Result<(), RuntimeError> {
    let reader = crate::read::reader(kafka, "changelog-setup", &[])?;
    let partitions =
        |t: &str| admin::watermarks(&reader, t, Duration::from_secs(10)).map(|w| w.len() as i32);
    let have = partitions(topic)?;
    let mut want = 1;
    for input in inputs {
        want = want.max(partitions(input)?);
    }
    if have >= want {
        return Ok(());
    }
    let topology = Topology {
        topics: [(topic.to_string(), topic_spec(want))].into(),
        consumers: Default::default(),
    };
    admin::apply(kafka, &topology).await.map(drop)
}
