use mailfleet_events::{
    runtime::{Counted, TestEvent},
    Envelope,
};
use std::collections::HashMap;

use mailfleet_runtime::{
    Consumer, Decision, Input, RuntimeError, StateError, StateKey, StateValue, StateView, Store,
};

use crate::CounterConfig;

/// The count of one key.
pub struct CountKey<'a>(pub &'a str);

impl StateKey for CountKey<'_> {
    type Value = u64;
    const PREFIX: u8 = b'c';
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0.as_bytes());
    }
}

/// Every key's count in a counter's store (all partitions): for the demo
/// report and the tests.
pub fn stored_counts(store: &Store) -> Result<HashMap<String, u64>, RuntimeError> {
    let mut counts = HashMap::new();
    for (_, key, value) in store.scan_table(CountKey::PREFIX)? {
        let key = String::from_utf8_lossy(&key).into_owned();
        let count = u64::from_bytes(&value).map_err(|reason| {
            RuntimeError::InvalidConfig(vec![format!(
                "count of {key:?} in {}: {reason}",
                store.path().display()
            )])
        })?;
        counts.insert(key, count);
    }
    Ok(counts)
}

/// The counting consumer.
pub struct Counter {
    config: CounterConfig,
    /// Where `Counted` goes (the topology's first `writes` topic).
    output_topic: String,
}

impl Counter {
    pub fn new(config: CounterConfig, output_topic: impl Into<String>) -> Self {
        Self {
            config,
            output_topic: output_topic.into(),
        }
    }
}

impl Consumer for Counter {
    type Event = TestEvent;

    fn name(&self) -> &str {
        "counter"
    }

    fn decide(
        &self,
        state: &StateView<'_>,
        input: &Input<TestEvent>,
    ) -> Result<Decision, StateError> {
        let event = &input.event;
        if event.key.is_empty() {
            return Ok(Decision::reject("TestEvent with an empty key"));
        }
        if event.weight < 0 {
            return Ok(Decision::reject(format!(
                "negative weight {}",
                event.weight
            )));
        }
        let key = CountKey(&event.key);
        let count = state.get(&key)?.unwrap_or(0) + event.weight as u64;
        let mut decision = Decision::apply();
        decision.put(&key, &count);
        if self.config.emit {
            let counted = Counted {
                envelope: Envelope::caused_by(&event.envelope, "counter"),
                key: event.key.clone(),
                count: count as i64,
            };
            decision.emit(&self.output_topic, event.key.as_bytes(), counted);
        }
        Ok(decision)
    }
}

#[cfg(test)]
mod tests {
    use mailfleet_runtime::{Overlay, RecordMeta, Verdict};

    use super::*;

    fn input(key: &str, weight: i64, offset: i64) -> Input<TestEvent> {
        Input {
            event: TestEvent {
                envelope: Envelope::new(format!("e{offset}"), 1_000, "test"),
                key: key.into(),
                payload: vec![],
                weight,
            },
            meta: RecordMeta {
                topic: "in".into(),
                partition: 0,
                offset,
                key: Some(key.as_bytes().to_vec()),
                timestamp: None,
            },
        }
    }

    fn decide_all(counter: &Counter, inputs: &[Input<TestEvent>]) -> (Overlay, Vec<Decision>) {
        let mut overlay = Overlay::default();
        let mut decisions = Vec::new();
        for i in inputs {
            let d = counter.decide(&StateView::in_memory(&overlay), i).unwrap();
            overlay.extend(d.changes.iter().cloned());
            decisions.push(d);
        }
        (overlay, decisions)
    }

    #[test]
    fn counts_per_key_with_weights() {
        let counter = Counter::new(CounterConfig::default(), "out");
        let (overlay, decisions) = decide_all(
            &counter,
            &[input("a", 1, 0), input("b", 1, 1), input("a", 2, 2)],
        );
        let view = StateView::in_memory(&overlay);
        assert_eq!(view.get(&CountKey("a")).unwrap(), Some(3));
        assert_eq!(view.get(&CountKey("b")).unwrap(), Some(1));
        assert_eq!(decisions[2].outputs.len(), 1);
        assert_eq!(decisions[2].outputs[0].topic, "out");
        assert_eq!(decisions[2].outputs[0].key, b"a");
    }

    #[test]
    fn emitting_can_be_turned_off() {
        let counter = Counter::new(CounterConfig { emit: false }, "out");
        let (_, decisions) = decide_all(&counter, &[input("a", 1, 0)]);
        assert!(decisions[0].outputs.is_empty());
        assert_eq!(decisions[0].changes.len(), 1);
    }

    #[test]
    fn empty_keys_and_negative_weights_are_rejected_with_the_value() {
        let counter = Counter::new(CounterConfig::default(), "out");
        let (_, d) = decide_all(&counter, &[input("", 1, 0), input("k", -4, 1)]);
        assert!(matches!(&d[0].verdict, Verdict::Reject(r) if r.contains("empty key")));
        assert!(matches!(&d[1].verdict, Verdict::Reject(r) if r.contains("-4")));
        assert!(d[0].changes.is_empty() && d[1].changes.is_empty());
    }
}
