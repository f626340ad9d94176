//! One batch, per input partition: decode, decide, run the effect, and
//! gather state changes, outputs and dead letters, all still uncommitted.

use rustc_hash::FxHashMap;
use std::{sync::Arc, time::Duration};

use mailfleet_events::{
    runtime::{DeadLetter, DeadLetterKind},
    Envelope, EventError, Registry,
};

use crate::{
    consumer::{output_id, Consumer, Decision, Decode, Emit, Input, Outcome, RecordMeta, Verdict},
    error::{RuntimeError, StateError},
    state::{partition_key, Overlay, StateView},
    store::{Commit, Store},
};

use super::context::Tp;

/// A consumed record, owned so that polling can go on.
pub struct Record {
    pub meta: RecordMeta,
    pub payload: Option<Vec<u8>>,
}

/// An encoded record to produce.
pub struct Outgoing {
    pub topic: String,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
}

/// A transient failure that stops its partition at `offset`.
#[derive(Debug, Clone)]
pub struct Stall {
    pub offset: i64,
    /// The effect asked for this delay; otherwise the runtime's backoff.
    pub after: Option<Duration>,
    pub reason: String,
}

/// The uncommitted work of one input partition in one batch. (The state
/// changes are kept per partition number instead, in an [`Overlay`]
/// shared by co-partitioned topics: a consumer reading two topics sees
/// either's changes decided earlier in the batch.)
#[derive(Default)]
pub struct PartitionWork {
    pub outputs: Vec<Outgoing>,
    /// Next offset to read once this work commits.
    pub next_offset: Option<i64>,
    pub handled: u64,
    pub dead_letters: Vec<DeadLetterKind>,
    pub stall: Option<Stall>,
}

/// Everything one batch needs to decide.
pub struct Decider<'a, C: Consumer> {
    pub consumer: &'a C,
    pub name: &'a str,
    pub registry: &'a Registry,
    pub store: &'a Store,
    pub deadletter_topic: &'a str,
    pub tokio: &'a tokio::runtime::Handle,
    pub run_effects: bool,
    /// The state changes of the batch before, per partition, while that
    /// batch is still being acknowledged and committed.
    pub earlier: Option<&'a FxHashMap<i32, Overlay>>,
}

impl<C: Consumer> Decider<'_, C> {
    /// Handle one record into its partition's work.
    pub fn handle(&self, rec: Record, work: &mut PartitionWork, overlay: &mut Overlay) {
        if work.stall.is_some() {
            return; // the partition is stopped at an earlier offset
        }
        let span = tracing::debug_span!("event", consumer = %self.name,
            topic = %rec.meta.topic, partition = rec.meta.partition, offset = rec.meta.offset,
            event_id = tracing::field::Empty);
        let _enter = span.enter();
        let event = match rec.payload.as_deref() {
            None => Err((
                DeadLetterKind::Undecodable,
                "record has no value".to_string(),
            )),
            Some(bytes) => C::Event::decode(self.registry, bytes).map_err(classify),
        };
        if let Ok(event) = &event {
            span.record("event_id", event.envelope().event_id.as_str());
        }
        match event {
            Ok(event) => self.decide(
                Input {
                    event,
                    meta: rec.meta,
                },
                rec.payload,
                work,
                overlay,
            ),
            Err((kind, reason)) => self.dead_letter(&rec.meta, rec.payload, kind, reason, work),
        }
    }

    fn decide(
        &self,
        input: Input<C::Event>,
        payload: Option<Vec<u8>>,
        work: &mut PartitionWork,
        overlay: &mut Overlay,
    ) {
        let partition = input.meta.partition;
        let earlier = self.earlier.and_then(|e| e.get(&partition));
        let view = StateView::new(self.store, partition, overlay).with_earlier(earlier);
        let decision = match self.consumer.decide(&view, &input) {
            Ok(d) => d,
            Err(StateError::Read(e)) => return self.stall(&input.meta, None, e.to_string(), work),
            Err(e @ StateError::Corrupt { .. }) => {
                return self.reject(&input.meta, payload, e.to_string(), work)
            }
        };
        match &decision.verdict {
            Verdict::Ignore => self.done(&input.meta, work),
            Verdict::Reject(reason) => {
                let reason = reason.clone();
                self.reject(&input.meta, payload, reason, work)
            }
            Verdict::Apply => self.apply(input, payload, decision, work, overlay),
        }
    }

    fn apply(
        &self,
        input: Input<C::Event>,
        payload: Option<Vec<u8>>,
        mut decision: Decision,
        work: &mut PartitionWork,
        overlay: &mut Overlay,
    ) {
        // Encode first: an output that does not fit its schema must not
        // leave half-applied state behind.
        let mut encoded = match self.encode(&input.meta, &mut decision.outputs, 0) {
            Ok(encoded) => encoded,
            Err(e) => return self.reject(&input.meta, payload, e.to_string(), work),
        };
        if self.run_effects && self.consumer.has_effects() {
            match self.tokio.block_on(self.consumer.effect(&input, &decision)) {
                Outcome::Done | Outcome::Ignored => {}
                Outcome::Emitted(mut observed) => {
                    let first = decision.outputs.len();
                    match self.encode(&input.meta, &mut observed, first) {
                        Ok(more) => encoded.extend(more),
                        Err(e) => return self.reject(&input.meta, payload, e.to_string(), work),
                    }
                }
                Outcome::Permanent(reason) => {
                    return self.reject(&input.meta, payload, reason, work)
                }
                Outcome::Temporary(reason) => return self.stall(&input.meta, None, reason, work),
                Outcome::Retry { after } => {
                    return self.stall(&input.meta, Some(after), "retry requested".into(), work)
                }
            }
        }
        overlay.extend(decision.changes);
        work.outputs.extend(encoded);
        self.done(&input.meta, work);
    }

    /// Stamp deterministic ids on outputs numbered from `first` and encode
    /// them; the error names the output that does not fit its schema.
    fn encode(
        &self,
        meta: &RecordMeta,
        outputs: &mut [Emit],
        first: usize,
    ) -> Result<Vec<Outgoing>, RuntimeError> {
        let mut encoded = Vec::with_capacity(outputs.len());
        for (offset, emit) in outputs.iter_mut().enumerate() {
            let index = first + offset;
            let envelope = emit.event.envelope_mut();
            envelope.event_id = output_id(self.name, meta, index);
            if envelope.producer.is_empty() {
                envelope.producer = self.name.to_string();
            }
            let payload = emit
                .event
                .encode()
                .map_err(|source| RuntimeError::EncodeOutput {
                    index,
                    event: emit.event.name(),
                    source,
                })?;
            encoded.push(Outgoing {
                topic: emit.topic.clone(),
                key: emit.key.clone(),
                payload,
            });
        }
        Ok(encoded)
    }

    fn reject(
        &self,
        meta: &RecordMeta,
        payload: Option<Vec<u8>>,
        reason: String,
        work: &mut PartitionWork,
    ) {
        self.dead_letter(meta, payload, DeadLetterKind::Rejected, reason, work)
    }

    fn done(&self, meta: &RecordMeta, work: &mut PartitionWork) {
        work.next_offset = Some(meta.offset + 1);
        work.handled += 1;
    }

    fn stall(
        &self,
        meta: &RecordMeta,
        after: Option<Duration>,
        reason: String,
        work: &mut PartitionWork,
    ) {
        tracing::warn!(consumer = %self.name, topic = %meta.topic, partition = meta.partition,
            offset = meta.offset, %reason, "transient failure: partition paused for retry");
        work.next_offset = Some(meta.offset);
        work.stall = Some(Stall {
            offset: meta.offset,
            after,
            reason,
        });
    }

    fn dead_letter(
        &self,
        meta: &RecordMeta,
        payload: Option<Vec<u8>>,
        kind: DeadLetterKind,
        reason: String,
        work: &mut PartitionWork,
    ) {
        tracing::warn!(consumer = %self.name, topic = %meta.topic, partition = meta.partition,
            offset = meta.offset, ?kind, %reason, "dead letter");
        let letter = DeadLetter {
            envelope: Envelope::new(
                format!(
                    "{}:deadletter:{}:{}:{}",
                    self.name, meta.topic, meta.partition, meta.offset
                ),
                meta.timestamp.unwrap_or_default(),
                self.name,
            ),
            consumer: self.name.to_string(),
            topic: meta.topic.to_string(),
            partition: meta.partition,
            offset: meta.offset,
            kind,
            reason,
            original_key: meta.key.clone(),
            original_value: payload,
            original_timestamp: meta.timestamp,
        };
        match mailfleet_events::encode(&letter) {
            Ok(bytes) => work.outputs.push(Outgoing {
                topic: self.deadletter_topic.to_string(),
                key: meta.key.clone().unwrap_or_default(),
                payload: bytes,
            }),
            // A DeadLetter always fits its own schema; if it ever does not,
            // stop the partition rather than lose the record.
            Err(e) => return self.stall(meta, None, format!("encoding dead letter: {e}"), work),
        }
        work.dead_letters.push(kind);
        self.done(meta, work);
    }
}

/// Map a decode error to its dead-letter class and reason.
fn classify(e: EventError) -> (DeadLetterKind, String) {
    let kind = match &e {
        EventError::UnknownFingerprint(_) => DeadLetterKind::UnknownSchema,
        EventError::WrongType { .. } => DeadLetterKind::WrongType,
        _ => DeadLetterKind::Undecodable,
    };
    (kind, e.to_string())
}

/// A batch decided but not yet sent or committed.
pub(super) struct Decided {
    pub(super) work: FxHashMap<Tp, PartitionWork>,
    pub(super) overlays: FxHashMap<i32, Overlay>,
    /// Records after a stall on their partition, left for the merge.
    pub(super) unhandled: Vec<Record>,
}

/// Fewest records in a batch before it is split across threads: below it,
/// a thread's start costs more than it saves.
const PARALLEL_MIN_RECORDS: usize = 512;

/// [`decide_records`] on up to `threads` threads, each taking the records
/// of its own input partitions (by partition number, so co-partitioned
/// topics stay together) in their order. Partitions are independent (the
/// runner's precondition), so the result is the one of a single thread.
pub(super) fn decide_parallel<C: Consumer>(
    decider: &Decider<'_, C>,
    records: Vec<Record>,
    threads: usize,
) -> Decided {
    let mut partitions: Vec<i32> = records.iter().map(|r| r.meta.partition).collect();
    partitions.sort_unstable();
    partitions.dedup();
    let threads = threads.min(partitions.len());
    if threads < 2 || records.len() < PARALLEL_MIN_RECORDS {
        return decide_records(decider, records);
    }
    let group_of: FxHashMap<i32, usize> = partitions
        .iter()
        .enumerate()
        .map(|(i, p)| (*p, i % threads))
        .collect();
    let mut groups: Vec<Vec<Record>> = (0..threads).map(|_| Vec::new()).collect();
    for rec in records {
        groups[group_of[&rec.meta.partition]].push(rec);
    }
    let mut first = groups.remove(0);
    let results = std::thread::scope(|scope| {
        let others: Vec<_> = groups
            .into_iter()
            .map(|group| scope.spawn(move || decide_records(decider, group)))
            .collect();
        let mut all = vec![decide_records(decider, std::mem::take(&mut first))];
        all.extend(others.into_iter().map(|h| match h.join() {
            Ok(decided) => decided,
            Err(panic) => std::panic::resume_unwind(panic),
        }));
        all
    });
    let mut merged = Decided {
        work: FxHashMap::default(),
        overlays: FxHashMap::default(),
        unhandled: Vec::new(),
    };
    for d in results {
        merged.work.extend(d.work);
        merged.overlays.extend(d.overlays);
        merged.unhandled.extend(d.unhandled);
    }
    merged
}

/// Decode and decide each record of a batch, in order, into its
/// partition's work and overlay.
pub(super) fn decide_records<C: Consumer>(
    decider: &Decider<'_, C>,
    records: Vec<Record>,
) -> Decided {
    // Per input partition, in first-seen order; found by a scan (a batch
    // has a few partitions), so a record costs no key clone or hash.
    let mut work: Vec<(Arc<str>, i32, PartitionWork)> = Vec::new();
    let mut overlays: Vec<(i32, Overlay)> = Vec::new();
    // A partition stops at a stalled record, whichever of its topics the
    // later records come from: they wait to be decided in the same order.
    let mut stalled: Vec<i32> = Vec::new();
    let mut unhandled = Vec::new();
    for rec in records {
        let partition = rec.meta.partition;
        let w = slot(&mut work, &rec.meta.topic, partition);
        if stalled.contains(&partition) {
            // The stalled topic is read again from its stall; the others'
            // records wait in the merge.
            if work[w].2.stall.is_none() {
                unhandled.push(rec);
            }
            continue;
        }
        let o = match overlays.iter().position(|(p, _)| *p == partition) {
            Some(o) => o,
            None => {
                overlays.push((partition, Overlay::default()));
                overlays.len() - 1
            }
        };
        let (w, overlay) = (&mut work[w].2, &mut overlays[o].1);
        decider.handle(rec, w, overlay);
        super::fault::while_deciding(decider.earlier.is_some());
        if w.stall.is_some() {
            stalled.push(partition);
        }
    }
    Decided {
        // A partition only seen after its stall has no work to commit.
        work: work
            .into_iter()
            .filter(|(_, _, w)| w.next_offset.is_some() || w.stall.is_some())
            .map(|(topic, partition, w)| ((topic.to_string(), partition), w))
            .collect(),
        overlays: overlays.into_iter().collect(),
        unhandled,
    }
}

/// The index of `(topic, partition)`'s work, added if new. A poll loop
/// shares one name per topic, so the names compare by pointer first.
fn slot(work: &mut Vec<(Arc<str>, i32, PartitionWork)>, topic: &Arc<str>, partition: i32) -> usize {
    if let Some(i) = work
        .iter()
        .position(|(t, p, _)| *p == partition && (Arc::ptr_eq(t, topic) || t == topic))
    {
        return i;
    }
    work.push((topic.clone(), partition, PartitionWork::default()));
    work.len() - 1
}

/// One WriteBatch's contents: every partition's state changes and every
/// input partition's next offset.
pub(super) fn commit_of(
    work: &FxHashMap<Tp, PartitionWork>,
    overlays: &FxHashMap<i32, Overlay>,
) -> Commit {
    let mut commit = Commit::default();
    for (partition, overlay) in overlays {
        commit.state.extend(
            overlay
                .iter()
                .map(|(k, v)| (partition_key(*partition, k), v.clone())),
        );
    }
    for ((topic, partition), w) in work {
        if let Some(next) = w.next_offset {
            commit.offsets.push((topic.clone(), *partition, next));
        }
    }
    commit
}
