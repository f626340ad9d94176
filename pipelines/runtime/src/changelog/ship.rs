//! The shipper: a thread that sends the outbox to the changelog topic, in
//! order, one Kafka transaction per chunk, and deletes what was committed.
//!
//! Before each chunk it checks, for each partition in it, that the
//! changelog partition ends where this store last left it: a partition
//! someone else wrote is diverged here ([`Changelog::diverge`]) and its
//! changes are dropped. After a failed chunk the transaction is aborted
//! (its abort markers move the partitions' ends: they are noted as this
//! store's own), and the chunk is sent again after a pause.
//!
//! The transactional id is the changelog topic and the store's id, so a
//! process restarted on the same store fences its predecessor and aborts
//! the transaction a `kill -9` left open.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{atomic::Ordering, mpsc, Arc},
    time::Duration,
};

use futures::future::join_all;
use rdkafka::{
    error::{KafkaError, RDKafkaErrorCode},
    producer::{FutureProducer, FutureRecord, Producer},
    util::Timeout,
};

use super::{offsets_key, outbox::Entry, outbox::Item, Changelog};
use crate::{admin::client_config, error::RuntimeError};

/// Most changelog records in one transaction.
const MAX_RECORDS: usize = 50_000;
/// Most outbox entries looked at in one round.
const MAX_ENTRIES: usize = 20_000;
/// The pause when there is nothing to ship.
const IDLE: Duration = Duration::from_millis(20);
/// The pause after a failed chunk.
const BACKOFF: Duration = Duration::from_secs(1);
/// How long a transaction may stay open: what a restorer waits at most
/// for one that a crashed shipper left open.
const TXN_TIMEOUT_MS: &str = "10000";
const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);

/// A running shipper.
pub struct Shipping {
    changelog: Arc<Changelog>,
    done: mpsc::Receiver<()>,
}

impl Shipping {
    /// Start shipping `changelog` on a thread of its own.
    pub fn start(changelog: Arc<Changelog>) -> Result<Shipping, RuntimeError> {
        let (tx, done) = mpsc::channel();
        let cl = changelog.clone();
        std::thread::Builder::new()
            .name(
                format!("ship-{}", changelog.consumer)
                    .chars()
                    .take(15)
                    .collect(),
            )
            .spawn(move || {
                Shipper::new(cl).run();
                let _ = tx.send(());
            })
            .map_err(|e| RuntimeError::Thread {
                consumer: changelog.consumer.clone(),
                reason: e.to_string(),
            })?;
        Ok(Shipping { changelog, done })
    }

    /// Ship what is left of the partitions held, for at most `within`,
    /// then stop. What is not shipped stays in the outbox for next time.
    pub fn stop(self, within: Duration) {
        self.changelog.stop.store(true, Ordering::Release);
        if self.done.recv_timeout(within).is_err() {
            tracing::warn!(consumer = %self.changelog.consumer,
                "the changelog shipper did not finish in time; the rest ships at the next start");
        }
    }
}

struct Shipper {
    cl: Arc<Changelog>,
    producer: Option<FutureProducer>,
    /// Partitions of a failed chunk: their ends moved by this store's own
    /// aborted transaction, noted once the producer is back.
    refresh: BTreeSet<i32>,
}

impl Shipper {
    fn new(cl: Arc<Changelog>) -> Self {
        Self {
            cl,
            producer: None,
            refresh: BTreeSet::new(),
        }
    }

    fn run(mut self) {
        // Test-only fault point: hold everything in the outbox, as a
        // process killed before it ships would.
        let hold =
            cfg!(debug_assertions) && std::env::var_os("MAILFLEET_FAULT_HOLD_CHANGELOG").is_some();
        loop {
            let stopping = self.cl.stop.load(Ordering::Acquire);
            let shipped = if hold { Ok(0) } else { self.round() };
            match shipped {
                Ok(0) if stopping => return,
                Ok(0) => std::thread::sleep(IDLE),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(consumer = %self.cl.consumer, topic = %self.cl.topic,
                        error = %e, "shipping the changelog; retrying");
                    self.producer = None;
                    if stopping {
                        return;
                    }
                    std::thread::sleep(BACKOFF);
                }
            }
        }
    }

    /// Ship one chunk of the outbox; how many entries it handled.
    fn round(&mut self) -> Result<usize, RuntimeError> {
        let cl = self.cl.clone();
        let owned = cl.owned();
        let mut dropped = Vec::new();
        let mut chunk = Vec::new();
        let mut records = 0;
        for entry in cl.store.outbox_from(&[], MAX_ENTRIES)? {
            if cl.is_diverged(entry.1) {
                dropped.push(entry.0);
            } else if owned.contains(&entry.1) && records < MAX_RECORDS {
                records += entry.2.len();
                chunk.push(entry);
            }
        }
        if !dropped.is_empty() {
            cl.store.outbox_shipped(&dropped, &[])?;
        }
        if chunk.is_empty() {
            return Ok(dropped.len());
        }
        self.producer()?;
        let partitions: BTreeSet<i32> = chunk.iter().map(|e| e.1).collect();
        for &p in &partitions {
            let high = self.high(p)?;
            if cl.store.shipped_end(p)?.is_none_or(|s| high > s) {
                cl.diverge(p)?;
            }
        }
        chunk.retain(|e| !cl.is_diverged(e.1));
        if chunk.is_empty() {
            return Ok(1);
        }
        let ends = self.transaction(&chunk).inspect_err(|_| {
            self.refresh.extend(chunk.iter().map(|e| e.1));
        })?;
        let keys: Vec<Vec<u8>> = chunk.iter().map(|e| e.0.clone()).collect();
        // An end is after the last record and its commit marker.
        let ends: Vec<(i32, i64)> = ends.into_iter().map(|(p, last)| (p, last + 2)).collect();
        cl.store.outbox_shipped(&keys, &ends)?;
        Ok(chunk.len())
    }

    /// The transactional producer, made (and the ends of a failed chunk's
    /// partitions noted) if there is none.
    fn producer(&mut self) -> Result<&FutureProducer, RuntimeError> {
        if self.producer.is_none() {
            let producer = transactional(&self.cl)?;
            self.producer = Some(producer);
            let refresh = std::mem::take(&mut self.refresh);
            let mut ends = Vec::new();
            for p in refresh {
                ends.push((p, self.high(p)?));
            }
            self.cl.store.outbox_shipped(&[], &ends)?;
        }
        Ok(self.producer.as_ref().expect("made above"))
    }

    fn high(&self, p: i32) -> Result<i64, RuntimeError> {
        let producer = self.producer.as_ref().expect("made first");
        producer
            .client()
            .fetch_watermarks(&self.cl.topic, p, KAFKA_TIMEOUT)
            .map(|(_, high)| high)
            .map_err(|source| RuntimeError::Kafka {
                op: "fetch the changelog's end",
                source,
            })
    }

    /// Send `chunk` in one transaction; the last offset written per
    /// partition.
    fn transaction(&self, chunk: &[Entry]) -> Result<BTreeMap<i32, i64>, RuntimeError> {
        let producer = self.producer.as_ref().expect("made first");
        let kafka = |op| move |source| RuntimeError::Kafka { op, source };
        producer
            .begin_transaction()
            .map_err(kafka("begin a changelog transaction"))?;
        let sent = self.send(producer, chunk).and_then(|last| {
            producer
                .commit_transaction(KAFKA_TIMEOUT)
                .map_err(kafka("commit a changelog transaction"))?;
            Ok(last)
        });
        if sent.is_err() {
            let _ = producer.abort_transaction(KAFKA_TIMEOUT);
        }
        sent
    }

    fn send(
        &self,
        producer: &FutureProducer,
        chunk: &[Entry],
    ) -> Result<BTreeMap<i32, i64>, RuntimeError> {
        let topic = self.cl.topic.as_str();
        let mut pending = Vec::new();
        for (_, p, items) in chunk {
            for item in items {
                let (key, value) = match item {
                    Item::Put(k, v) => (k.clone(), Some(v.clone())),
                    Item::Delete(k) => (k.clone(), None),
                    Item::Offset(t, next) => (offsets_key(t), Some(next.to_le_bytes().to_vec())),
                };
                let mut record = FutureRecord::<[u8], [u8]>::to(topic)
                    .partition(*p)
                    .key(&key);
                if let Some(v) = &value {
                    record = record.payload(v);
                }
                let future = loop {
                    match producer.send_result(record) {
                        Ok(future) => break future,
                        // A seed is a whole partition: wait for room.
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                            record = r;
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err((source, _)) => {
                            return Err(RuntimeError::Kafka {
                                op: "queue a changelog record",
                                source,
                            })
                        }
                    }
                };
                pending.push(future);
            }
        }
        let mut last = BTreeMap::new();
        for result in futures::executor::block_on(join_all(pending)) {
            let delivery = result
                .map_err(|_| RuntimeError::Changelog {
                    topic: topic.to_string(),
                    reason: "the producer went away".into(),
                })?
                .map_err(|(source, _)| RuntimeError::Kafka {
                    op: "write the changelog",
                    source,
                })?;
            let at = last.entry(delivery.partition).or_insert(delivery.offset);
            *at = (*at).max(delivery.offset);
        }
        Ok(last)
    }
}

/// A transactional producer for `cl`'s store, its transactions initialised
/// (which fences a predecessor on the same store).
fn transactional(cl: &Changelog) -> Result<FutureProducer, RuntimeError> {
    let id = format!("{}.{}", cl.topic, cl.store.store_id()?);
    let producer: FutureProducer = client_config(&cl.kafka)
        .set("client.id", format!("mailfleet-{}-changelog", cl.consumer))
        .set("transactional.id", &id)
        .set("transaction.timeout.ms", TXN_TIMEOUT_MS)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "200000")
        .create()
        .map_err(|source| RuntimeError::CreateClient {
            what: "changelog producer",
            source,
        })?;
    producer
        .init_transactions(Timeout::After(KAFKA_TIMEOUT))
        .map_err(|source| RuntimeError::Kafka {
            op: "init the changelog's transactions",
            source,
        })?;
    Ok(producer)
}
