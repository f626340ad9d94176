//! The batch loop's per-event work without Kafka: the same decode, decide,
//! output encoding and `WriteBatch` commit as a live batch, over records
//! held in memory. For profiling (`mailfleet bench hot`): a profiler then
//! counts what the runtime does per event, apart from librdkafka's poll and
//! produce.

use mailfleet_events::Registry;

use super::{
    batch::{Decider, Record},
    commit_of, decide_records,
};
use crate::{consumer::RecordMeta, Consumer, RuntimeError, Store};

/// What one offline batch gave.
#[derive(Debug, Default)]
pub struct OfflineBatch {
    /// Inputs handled (applied, ignored or dead-lettered).
    pub handled: u64,
    /// Of them, dead-lettered.
    pub dead_letters: u64,
    /// Every encoded output and dead letter: (topic, key, payload).
    pub outputs: Vec<(String, Vec<u8>, Vec<u8>)>,
}

/// Decide `records` as one batch of `consumer` (effects run if it has
/// any) and commit the batch's state and next offsets to `store`.
pub fn process<C: Consumer>(
    consumer: &C,
    store: &Store,
    records: Vec<(RecordMeta, Vec<u8>)>,
    tokio: &tokio::runtime::Handle,
) -> Result<OfflineBatch, RuntimeError> {
    let decider = Decider {
        consumer,
        name: consumer.name(),
        registry: Registry::builtin(),
        store,
        deadletter_topic: "deadletters",
        tokio,
        run_effects: true,
        earlier: None,
    };
    let records = records
        .into_iter()
        .map(|(meta, payload)| Record {
            meta,
            payload: Some(payload),
        })
        .collect();
    let decided = decide_records(&decider, records);
    store.commit(&commit_of(&decided.work, &decided.overlays))?;
    let mut out = OfflineBatch::default();
    for w in decided.work.into_values() {
        out.handled += w.handled;
        out.dead_letters += w.dead_letters.len() as u64;
        out.outputs
            .extend(w.outputs.into_iter().map(|o| (o.topic, o.key, o.payload)));
    }
    Ok(out)
}
