//! The consumer loop.
//!
//! # Guarantee
//!
//! State changes and input offsets are committed in one RocksDB
//! `WriteBatch`, after every output of the batch (and every dead letter) has
//! been acknowledged by Kafka (`acks=all`, idempotent producer). Hence:
//! - a crash before the commit re-reads the batch from the stored offsets and
//!   decides it again from the same state, so no input is lost or applied
//!   twice to state;
//! - outputs of a re-decided batch are sent again with the same
//!   deterministic event ids (consumer, topic, partition, offset, index), so
//!   downstream consumers drop them as duplicates (see [`crate::dedup`]).
//!
//! A store that has applied a partition past its log's end (the topic was
//! recreated, or the broker lost its data) stops the consumer with an
//! error naming the partition, rather than skipping the new records as
//! seen ones.
//!
//! Precondition: a state key is only ever written by inputs of one
//! partition, and decisions depend only on state and input. Kafka's
//! committed group offsets are lag telemetry and never a starting point.
//!
//! # The batch loop
//! 1. poll up to `batch_max_events` records or `batch_max_wait_ms`; a
//!    consumer of several topics then takes them in one order per partition,
//!    the same live and in a replay ([`merge`]);
//! 2. decode and decide each record ([`batch`]), running effects if any;
//! 3. produce outputs and dead letters, and await every acknowledgement;
//! 4. write one `WriteBatch` with state changes and next offsets;
//! 5. commit the offsets to Kafka asynchronously, for lag telemetry;
//! 6. pause partitions that hit a transient failure, and seek them back
//!    to the failed offset when their backoff ends.
//!
//! Steps 3 and 4 run on a second thread ([`pipeline`], unless
//! `runtime.pipeline` is off) while the loop takes steps 1 and 2 of the
//! next batch, deciding it against the first one's pending state. At most
//! one batch is in flight, and the next is handed over only once it is
//! committed, so the guarantee above holds batch by batch. A batch in
//! which a partition stalled is finished before anything more is polled,
//! so that its partition is paused first.
//!
//! The loop runs on its own OS thread: RocksDB and librdkafka calls block,
//! and are kept off the tokio workers.

mod batch;
mod client;
pub mod context;
mod fault;
mod merge;
pub mod offline;
mod pause;
mod pipeline;
mod spec;

use rustc_hash::FxHashMap;
use std::{
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use mailfleet_events::Registry;
use rdkafka::{
    consumer::{BaseConsumer, CommitMode, Consumer as _},
    message::Message,
    topic_partition_list::TopicPartitionList,
    Offset,
};

use crate::{
    consumer::{Consumer, RecordMeta},
    error::RuntimeError,
    metrics as m,
    shutdown::Shutdown,
    store::Store,
};

use batch::{commit_of, decide_parallel, decide_records, Decided, Decider, Record};
pub use client::FETCH_DEFAULTS;
use client::{cached_watermarks, consumer_client_config, wait_for_topics};
use context::{RuntimeContext, Shared, Tp};
use merge::{Merge, Source};
use pause::Paused;
use pipeline::{Batch, Committer, Pipeline};
pub use spec::{Capture, RunSpec, RunStats};

/// Run a consumer until `shutdown` trips, on a dedicated thread.
pub async fn run<C: Consumer>(
    consumer: C,
    spec: RunSpec,
    shutdown: Shutdown,
) -> Result<RunStats, RuntimeError> {
    let name = consumer.name().to_string();
    let tokio = tokio::runtime::Handle::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("consume-{name}"))
        .spawn(move || {
            let result = Runner::start(consumer, spec, tokio, &shutdown).and_then(|mut r| {
                let result = r.run(&shutdown);
                r.close();
                result
            });
            let _ = tx.send(result);
        })
        .map_err(|e| RuntimeError::Thread {
            consumer: name.clone(),
            reason: e.to_string(),
        })?;
    rx.await.map_err(|_| RuntimeError::Thread {
        consumer: name,
        reason: "panicked".into(),
    })?
}

struct Runner<C: Consumer> {
    consumer: C,
    name: String,
    spec: RunSpec,
    store: Arc<Store>,
    shared: Arc<Shared>,
    kc: BaseConsumer<RuntimeContext>,
    tokio: tokio::runtime::Handle,
    /// The committing thread, and the batch it holds.
    pipeline: Pipeline,
    in_flight: Option<Arc<Batch>>,
    paused: FxHashMap<Tp, Paused>,
    failures: FxHashMap<Tp, u32>,
    telemetry: FxHashMap<Tp, i64>,
    telemetry_at: Instant,
    stats: RunStats,
    /// The cross-topic order of a consumer of several topics.
    merge: Option<Merge>,
    /// The input partitions assigned, as of the last rebalance.
    assigned: std::collections::HashSet<Tp>,
    /// Every input topic's name, shared by its records.
    topic_names: Vec<Arc<str>>,
}

const TELEMETRY_EVERY: Duration = Duration::from_secs(1);

impl<C: Consumer> Runner<C> {
    fn start(
        consumer: C,
        mut spec: RunSpec,
        tokio: tokio::runtime::Handle,
        shutdown: &Shutdown,
    ) -> Result<Self, RuntimeError> {
        let name = consumer.name().to_string();
        let faults = fault::armed()?;
        let store = open_store(&name, &spec)?;
        let shared = Arc::new(Shared::default());
        let ctx = RuntimeContext::new(&name, &store, &shared, &spec, &tokio)?;
        let consumer_cfg = consumer_client_config(&spec, &name, consumer.client_defaults());
        let kc: BaseConsumer<RuntimeContext> =
            consumer_cfg
                .create_with_context(ctx)
                .map_err(|source| RuntimeError::CreateClient {
                    what: "consumer",
                    source,
                })?;
        let topics: Vec<&str> = spec.inputs.iter().map(String::as_str).collect();
        wait_for_topics(&kc, &topics, &name, shutdown);
        kc.subscribe(&topics)
            .map_err(|source| RuntimeError::Kafka {
                op: "subscribe",
                source,
            })?;
        if let Some(stops) = spec.stop_at.as_mut() {
            // A stop that retention already removed is reached from the start.
            for ((topic, partition), stop) in stops.iter_mut() {
                let wm = kc.fetch_watermarks(topic, *partition, Duration::from_secs(10));
                if wm.is_ok_and(|(low, _)| low >= *stop) {
                    *stop = 0;
                }
            }
        }
        let pipeline = Pipeline::start(Committer {
            name: name.clone(),
            store: store.clone(),
            producer: None,
            kafka: spec.kafka.clone(),
            tokio: tokio.clone(),
            faults,
            shutdown: shutdown.clone(),
            settings: pipeline::Settings::of(&spec),
        })?;
        let merge =
            (spec.inputs.len() > 1).then(|| Merge::new(&spec.inputs, spec.runtime.merge_grace_ms));
        if merge.is_some() {
            // Shown from the start, not from the first late record.
            metrics::counter!(m::MERGE_LATE, "consumer" => name.clone()).increment(0);
            metrics::gauge!(m::MERGE_HELD, "consumer" => name.clone()).set(0.0);
        }
        tracing::info!(consumer = %name, group = %spec.group, inputs = ?spec.inputs,
            store = %store.path().display(), "consumer started");
        Ok(Self {
            consumer,
            name,
            spec,
            store,
            shared,
            kc,
            tokio,
            pipeline,
            in_flight: None,
            paused: FxHashMap::default(),
            failures: FxHashMap::default(),
            telemetry: FxHashMap::default(),
            telemetry_at: Instant::now(),
            stats: RunStats::default(),
            merge,
            assigned: Default::default(),
            topic_names: Vec::new(),
        })
    }

    fn run(&mut self, shutdown: &Shutdown) -> Result<RunStats, RuntimeError> {
        while !shutdown.is_triggered() && !self.reached_stop() {
            self.resume_due();
            let generation = self.shared.generation.load(Ordering::SeqCst);
            let (records, started) = self.collect();
            if let Some(reason) = self
                .shared
                .fatal
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
            {
                return Err(RuntimeError::Thread {
                    consumer: self.name.clone(),
                    reason,
                });
            }
            if self.shared.generation.load(Ordering::SeqCst) != generation {
                // An assignment change resets pauses: assigned partitions
                // start at their stored offsets again, unpaused (the assign
                // callback resumes them in librdkafka too).
                self.paused.clear();
                self.forget_unassigned();
            }
            let records = self.order(records);
            if records.is_empty() {
                // Idle: the batch in flight is accounted for once it is
                // committed (polling goes on meanwhile, so a record that
                // comes is decided at once), and the last batch's offsets
                // still reach the group (at most a second late), so its lag
                // reads 0, not the lag of whichever batch came last within
                // the second.
                self.settle_if_done()?;
                self.commit_telemetry(false);
            } else {
                self.process(records, started)?;
            }
        }
        self.settle(None)?;
        self.commit_telemetry(true);
        Ok(self.stats.clone())
    }

    /// Leave the group, within `runtime.close_timeout_ms`. Every batch is
    /// committed by now: a consumer that cannot leave in time loses nothing.
    fn close(self) {
        tracing::info!(consumer = %self.name, stats = ?self.stats, "stopping: leaving the group");
        let within = Duration::from_millis(self.spec.runtime.close_timeout_ms);
        self.kc.context().stop_shipping(within);
        crate::shutdown::leave_group(self.kc, within, &self.name);
        tracing::info!(consumer = %self.name, "stopped");
    }

    fn reached_stop(&self) -> bool {
        if self.spec.stop_after.is_some_and(|n| self.stats.events >= n) {
            return true;
        }
        let Some(stop_at) = &self.spec.stop_at else {
            return false;
        };
        let start_at = self.spec.start_at.as_ref();
        stop_at.iter().all(|((topic, partition), &stop)| {
            let next = self
                .store
                .offset(topic, *partition)
                .ok()
                .flatten()
                .or_else(|| start_at?.get(&(topic.clone(), *partition)).copied())
                .unwrap_or(0);
            next >= stop
        })
    }

    /// Poll records until the batch is full or its time is up.
    fn collect(&mut self) -> (Vec<Record>, Instant) {
        let max = self.spec.runtime.batch_max_events;
        let wait = Duration::from_millis(self.spec.runtime.batch_max_wait_ms);
        // Sized for a full batch: growing it moved every record polled.
        let mut records = Vec::with_capacity(max.min(1 << 16));
        let mut started = Instant::now();
        let mut deadline: Option<Instant> = None;
        // The partition of the record before, and its topic's shared name:
        // records come in runs per partition, and each costs no allocation.
        let mut last: Option<(Tp, Arc<str>)> = None;
        while records.len() < max {
            // A record already fetched is taken without reading the clock
            // (a read per record cost 4% of the loop); the batch's time
            // only matters once the loop would wait for more.
            let polled = match self.kc.poll(Duration::ZERO) {
                Some(polled) => Some(polled),
                None => self.kc.poll(match deadline {
                    None => Duration::from_millis(100),
                    Some(d) => d.saturating_duration_since(Instant::now()),
                }),
            };
            let Some(polled) = polled else {
                break;
            };
            let msg = match polled {
                Ok(msg) => msg,
                Err(e) => {
                    tracing::warn!(consumer = %self.name, error = %e, "poll error");
                    metrics::counter!(m::ERRORS, "consumer" => self.name.clone(), "kind" => "poll")
                        .increment(1);
                    break;
                }
            };
            let same = last
                .as_ref()
                .is_some_and(|((t, p), _)| *p == msg.partition() && t == msg.topic());
            if !same {
                let name = msg.topic();
                let shared = topic_name(&mut self.topic_names, name);
                last = Some(((name.to_string(), msg.partition()), shared));
            }
            let Some((tp, topic)) = last.as_ref() else {
                continue; // set just above
            };
            if self.past_stop(tp, msg.offset()) {
                continue;
            }
            if (!self.paused.is_empty() && self.paused.contains_key(tp))
                || !self.admit(tp, msg.offset())
            {
                continue;
            }
            if deadline.is_none() {
                started = Instant::now();
                deadline = Some(started + wait);
            }
            records.push(Record {
                meta: RecordMeta {
                    topic: topic.clone(),
                    partition: tp.1,
                    offset: msg.offset(),
                    key: msg.key().map(<[u8]>::to_vec),
                    timestamp: msg.timestamp().to_millis(),
                },
                payload: msg.payload().map(<[u8]>::to_vec),
            });
        }
        (records, started)
    }

    /// The records to process now, in the order a replay takes too: as
    /// polled for a consumer of one topic, merged across topics otherwise.
    fn order(&mut self, records: Vec<Record>) -> Vec<Record> {
        let Some(mut merge) = self.merge.take() else {
            return records;
        };
        let mut out = merge.push(records);
        let late = merge.late();
        out.extend(merge.release(crate::time::now_ms(), |topic, partition| {
            self.source(topic, partition)
        }));
        if merge.late() > late {
            metrics::counter!(m::MERGE_LATE, "consumer" => self.name.clone())
                .increment(merge.late() - late);
        }
        metrics::gauge!(m::MERGE_HELD, "consumer" => self.name.clone()).set(merge.len() as f64);
        self.merge = Some(merge);
        out
    }

    /// Where an input partition with nothing queued stands, for the merge.
    fn source(&self, topic: &str, partition: i32) -> Source {
        let tp: Tp = (topic.to_string(), partition);
        if !self.assigned.contains(&tp) {
            // Not read here: a topic with fewer partitions, or one another
            // member was given. Nothing of it comes to this process.
            return Source::Exhausted;
        }
        if self.paused.contains_key(&tp) {
            return Source::Behind;
        }
        let next = self
            .shared
            .positions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&tp)
            .copied();
        if let Some(stops) = &self.spec.stop_at {
            match stops.get(&tp) {
                None => return Source::Exhausted,
                Some(&stop) if stop == 0 || next.unwrap_or(0) >= stop => return Source::Exhausted,
                Some(_) => {}
            }
        }
        let Some((low, high)) = cached_watermarks(&self.kc, topic, partition) else {
            return Source::Behind;
        };
        match next.or((low >= 0).then_some(low)) {
            Some(next) if next >= high => Source::CaughtUp,
            None if high == 0 => Source::CaughtUp,
            _ => Source::Behind,
        }
    }

    /// After a rebalance: drop what the merge holds of partitions no longer
    /// assigned, and note where they resume if they come back.
    fn forget_unassigned(&mut self) {
        let Some(merge) = self.merge.as_mut() else {
            return;
        };
        self.assigned = self.shared.assigned();
        let partitions: std::collections::HashSet<i32> =
            self.assigned.iter().map(|(_, p)| *p).collect();
        for (tp, offset) in merge.drop_unassigned(&partitions) {
            self.rewind(tp, offset);
        }
    }

    /// Read `tp` again from `offset`, also after a rebalance.
    fn rewind(&self, tp: Tp, offset: i64) {
        self.shared
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tp.clone(), offset);
        self.shared
            .positions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tp, offset);
    }

    /// Whether `stop_at` excludes this record (at or past its partition's
    /// stop, or a partition it does not list).
    fn past_stop(&self, tp: &Tp, offset: i64) -> bool {
        self.spec
            .stop_at
            .as_ref()
            .is_some_and(|stops| stops.get(tp).is_none_or(|&stop| offset >= stop))
    }

    /// Admit a record unless its offset was already handled; note it in flight.
    fn admit(&self, tp: &Tp, offset: i64) -> bool {
        let mut positions = self
            .shared
            .positions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // One lookup: this runs for every record polled.
        match positions.get_mut(tp) {
            Some(next) if offset < *next => {
                let next = *next;
                drop(positions);
                self.check_log_not_reset(tp, next);
                return false;
            }
            Some(next) => *next = offset + 1,
            None => {
                positions.insert(tp.clone(), offset + 1);
            }
        }
        drop(positions);
        let mut inflight = self
            .shared
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        set_position(&mut inflight, tp, offset + 1);
        true
    }

    /// A record below what this store applied is normally one seen before.
    /// But when the partition now ends before that point, its log was reset
    /// (a recreated topic, a broker that lost its data): every record would
    /// be skipped as seen, and new ones reuse old offsets, so their output
    /// ids would collide downstream. Stop, naming the partition and what
    /// to do, rather than skip silently.
    fn check_log_not_reset(&self, tp: &Tp, next: i64) {
        let Some((_, high)) = cached_watermarks(&self.kc, &tp.0, tp.1) else {
            return;
        };
        if high >= next {
            return;
        }
        let reason = format!(
            "{}/{}: the log ends at offset {high}, but this consumer's store applied it up to \
             {next}: the topic was recreated or the broker lost its data. Move the state folder \
             ({}) away to rebuild it from the log as it is now",
            tp.0,
            tp.1,
            self.store.path().display()
        );
        let mut fatal = self.shared.fatal.lock().unwrap_or_else(|p| p.into_inner());
        if fatal.is_none() {
            tracing::error!(consumer = %self.name, %reason, "log reset under the consumer");
            *fatal = Some(reason);
        }
    }

    fn process(&mut self, records: Vec<Record>, started: Instant) -> Result<(), RuntimeError> {
        let count = records.len();
        let decider = Decider {
            consumer: &self.consumer,
            name: &self.name,
            registry: Registry::builtin(),
            store: &self.store,
            deadletter_topic: &self.spec.runtime.deadletter_topic,
            tokio: &self.tokio,
            run_effects: self.spec.run_effects,
            earlier: self.in_flight.as_deref().map(|b| &b.overlays),
        };
        let Decided {
            work,
            overlays,
            unhandled,
        } = decide_parallel(&decider, records, self.spec.runtime.decide_threads);
        if let Some(merge) = self.merge.as_mut() {
            // What the merge holds of a stalled topic would come twice.
            for (tp, _) in work.iter().filter(|(_, w)| w.stall.is_some()) {
                merge.drop_topic(tp);
            }
            merge.unrelease(unhandled);
        }
        let batch = Arc::new(Batch {
            work,
            overlays,
            count,
            started,
        });
        // The batch before commits first; only then is this one handed over.
        self.settle(Some(&batch))?;
        self.pipeline.submit(batch.clone())?;
        self.in_flight = Some(batch.clone());
        if !self.spec.runtime.pipeline || batch.stalled() {
            self.settle(None)?;
        }
        Ok(())
    }

    /// Account for the batch in flight if it is committed by now.
    fn settle_if_done(&mut self) -> Result<(), RuntimeError> {
        let Some(batch) = self.in_flight.take() else {
            return Ok(());
        };
        match self.pipeline.try_wait() {
            None => {
                self.in_flight = Some(batch);
                Ok(())
            }
            Some(result) => {
                result?;
                self.after_commit(&batch, None);
                Ok(())
            }
        }
    }

    /// Wait for the batch in flight to be acknowledged and committed, then
    /// account for it. `next` is the batch decided after it, if any: its
    /// partitions' in-flight offsets are already past this one's.
    fn settle(&mut self, next: Option<&Batch>) -> Result<(), RuntimeError> {
        let Some(batch) = self.in_flight.take() else {
            return Ok(());
        };
        if next.is_some() {
            fault::next_decided();
        }
        self.pipeline.wait()?;
        self.after_commit(&batch, next);
        Ok(())
    }

    fn after_commit(&mut self, batch: &Batch, next_batch: Option<&Batch>) {
        let Batch {
            work,
            count,
            started,
            ..
        } = batch;
        let mut inflight = self
            .shared
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (tp, w) in work {
            if let Some(next) = w.next_offset {
                // Records the merge still holds, or the next batch took,
                // were taken past `next`.
                let taken_past = self.merge.as_ref().is_some_and(|m| m.holds(tp))
                    || next_batch.is_some_and(|b| b.work.contains_key(tp));
                if !taken_past {
                    inflight.insert(tp.clone(), next);
                }
                self.telemetry.insert(tp.clone(), next);
            }
        }
        drop(inflight);
        self.commit_telemetry(false);
        let name = self.name.clone();
        let (mut handled, mut outputs) = (0, 0);
        for (tp, w) in work {
            handled += w.handled;
            if let Some(progress) = &self.spec.progress {
                progress.fetch_add(w.handled, Ordering::Relaxed);
            }
            outputs += (w.outputs.len() - w.dead_letters.len()) as u64;
            for kind in &w.dead_letters {
                metrics::counter!(m::DEADLETTERS, "consumer" => name.clone(), "kind" => format!("{kind:?}"))
                    .increment(1);
            }
            self.stats.dead_letters += w.dead_letters.len() as u64;
            match &w.stall {
                Some(stall) => self.pause(tp.clone(), stall.clone()),
                None => {
                    self.failures.remove(tp);
                }
            }
        }
        self.stats.events += handled;
        self.stats.outputs += outputs;
        self.stats.batches += 1;
        metrics::counter!(m::EVENTS_PROCESSED, "consumer" => name.clone()).increment(handled);
        metrics::counter!(m::OUTPUTS_PRODUCED, "consumer" => name.clone()).increment(outputs);
        metrics::histogram!(m::BATCH_DURATION, "consumer" => name.clone())
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!(m::BATCH_EVENTS, "consumer" => name).record(*count as f64);
    }

    /// Commit the stored offsets to Kafka, for lag telemetry only, at most
    /// once a second: every commit is a coordinator round trip, and a
    /// closing consumer waits for all of them.
    fn commit_telemetry(&mut self, now: bool) {
        if self.telemetry.is_empty() || (!now && self.telemetry_at.elapsed() < TELEMETRY_EVERY) {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in self.telemetry.drain() {
            let _ = tpl.add_partition_offset(&topic, partition, Offset::Offset(next));
        }
        if let Err(e) = self.kc.commit(&tpl, CommitMode::Async) {
            tracing::debug!(consumer = %self.name, error = %e, "telemetry offset commit");
        }
        self.telemetry_at = Instant::now();
    }
}

/// Apply `runtime.store_memory_mb` to this process's stores; a process
/// has one budget, the first consumer's.
/// The consumer's store, under `runtime.data_dir`, within the process's
/// memory budget; hot keys update in place unless a changelog restore may
/// delete a partition's range in it.
fn open_store(name: &str, spec: &RunSpec) -> Result<Arc<Store>, RuntimeError> {
    let dir = spec.runtime.data_dir.join(name);
    std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::ReadConfig {
        path: dir.display().to_string(),
        source: e,
    })?;
    memory_budget(name, spec.runtime.store_memory_mb);
    let in_place = !crate::changelog::kept_for(name, spec);
    Ok(Arc::new(Store::open_for_run(
        &dir,
        spec.runtime.sync_writes,
        in_place,
    )?))
}

fn memory_budget(consumer: &str, mb: u64) {
    if let Err(in_force) = crate::store::set_memory_budget(mb) {
        tracing::warn!(
            consumer,
            asked = mb,
            in_force,
            "runtime.store_memory_mb: this process's stores already share a budget; it stays"
        );
    }
}

/// The one shared name of an input topic, from `known`.
fn topic_name(known: &mut Vec<Arc<str>>, name: &str) -> Arc<str> {
    if let Some(shared) = known.iter().find(|t| &***t == name) {
        return shared.clone();
    }
    let shared: Arc<str> = name.into();
    known.push(shared.clone());
    shared
}

/// Set a partition's offset, cloning its topic name only the first time
/// (this runs for every record polled).
fn set_position(map: &mut FxHashMap<Tp, i64>, tp: &Tp, offset: i64) {
    match map.get_mut(tp) {
        Some(at) => *at = offset,
        None => {
            map.insert(tp.clone(), offset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KafkaConfig, RuntimeConfig};

    fn spec(properties: &[(&str, &str)]) -> RunSpec {
        let mut kafka = KafkaConfig::default();
        for (k, v) in properties {
            kafka.properties.insert(k.to_string(), (*v).into());
        }
        let route = crate::topology::Route {
            group: "g".into(),
            reads: vec!["t".into()],
            writes: vec![],
        };
        RunSpec::for_route(&route, &kafka, &RuntimeConfig::default())
    }

    #[test]
    fn a_consumers_client_defaults_apply_unless_the_operator_sets_them() {
        let defaults = [("queued.min.messages", "10000"), ("client.id", "mine")];
        let cfg = consumer_client_config(&spec(&[]), "grey", &defaults);
        assert_eq!(cfg.get("queued.min.messages"), Some("10000"));
        assert_eq!(cfg.get("client.id"), Some("mine"));
        assert_eq!(cfg.get("fetch.queue.backoff.ms"), Some("10"));
        assert_eq!(cfg.get("group.id"), Some("g"));

        let cfg = consumer_client_config(
            &spec(&[
                ("queued.min.messages", "50000"),
                ("fetch.queue.backoff.ms", "1000"),
            ]),
            "grey",
            &defaults,
        );
        assert_eq!(cfg.get("queued.min.messages"), Some("50000"));
        assert_eq!(cfg.get("fetch.queue.backoff.ms"), Some("1000"));

        let cfg = consumer_client_config(&spec(&[]), "counter", &[]);
        assert_eq!(cfg.get("queued.min.messages"), None);
        assert_eq!(cfg.get("client.id"), Some("mailfleet-counter"));
    }
}
