//! The API a topic consumer implements: a pure decision, an optional effect.

use std::{future::Future, sync::Arc, time::Duration};

use mailfleet_events::{AnyEvent, Envelope, Event, EventError, Registry};

use crate::{
    error::StateError,
    state::{StateKey, StateValue, StateView},
};

/// Where an input record came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMeta {
    /// Shared by every record of the topic that one poll loop takes.
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    /// Kafka's timestamp, ms. Deciders use the envelope's event time instead.
    pub timestamp: Option<i64>,
}

/// A decoded input with its position.
#[derive(Debug)]
pub struct Input<E> {
    pub event: E,
    pub meta: RecordMeta,
}

/// How a consumer's input type is read from bytes. Implemented for every
/// [`Event`]; a consumer of several event types implements it for an enum.
pub trait Decode: Sized + Send {
    /// Read one input from its bytes.
    fn decode(registry: &Registry, bytes: &[u8]) -> Result<Self, EventError>;
    /// The input's envelope, for tracing and causation.
    fn envelope(&self) -> &Envelope;
}

impl<E: Event> Decode for E {
    fn decode(registry: &Registry, bytes: &[u8]) -> Result<Self, EventError> {
        registry.decode::<E>(bytes)
    }
    fn envelope(&self) -> &Envelope {
        Event::envelope(self)
    }
}

/// An output event, with the topic and key it goes to.
pub struct Emit {
    pub topic: String,
    pub key: Vec<u8>,
    pub event: Box<dyn AnyEvent>,
}

/// What the decider concluded about one input.
#[derive(Default)]
pub enum Verdict {
    /// Apply the changes and send the outputs.
    #[default]
    Apply,
    /// Nothing to do; the offset advances.
    Ignore,
    /// The input can never be handled: dead-letter it with this reason.
    Reject(String),
}

/// A decision: state changes plus output events, or a verdict to skip.
#[derive(Default)]
pub struct Decision {
    pub verdict: Verdict,
    pub changes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    pub outputs: Vec<Emit>,
    /// What the effect is to do, as the pure decision worked it out (for
    /// consumers with effects): see [`Decision::intend`].
    pub intent: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl Decision {
    /// An empty decision that applies (nothing yet).
    pub fn apply() -> Self {
        Self::default()
    }

    /// Nothing to do for this input.
    pub fn ignore() -> Self {
        Self {
            verdict: Verdict::Ignore,
            ..Self::default()
        }
    }

    /// The input is bad for good: dead-letter it.
    pub fn reject(reason: impl Into<String>) -> Self {
        Self {
            verdict: Verdict::Reject(reason.into()),
            ..Self::default()
        }
    }

    /// Hand the effect its plan: the decision decides, the effect only
    /// carries it out ([`Decision::intent_as`] reads it back).
    pub fn intend<T: std::any::Any + Send + Sync>(&mut self, intent: T) -> &mut Self {
        self.intent = Some(Box::new(intent));
        self
    }

    /// The plan set by [`Decision::intend`], if it is a `T`.
    pub fn intent_as<T: std::any::Any>(&self) -> Option<&T> {
        self.intent.as_ref()?.downcast_ref()
    }

    /// Set a typed state value.
    pub fn put<K: StateKey>(&mut self, key: &K, value: &K::Value) -> &mut Self {
        self.changes
            .push((key.to_key_bytes(), Some(value.to_bytes())));
        self
    }

    /// Delete a typed state value.
    pub fn delete<K: StateKey>(&mut self, key: &K) -> &mut Self {
        self.changes.push((key.to_key_bytes(), None));
        self
    }

    /// Send an event. The runtime stamps its `event_id` from the input's
    /// position and the output's index, so a replay sends the same id.
    pub fn emit<E: Event>(&mut self, topic: &str, key: impl Into<Vec<u8>>, event: E) -> &mut Self {
        self.outputs.push(Emit::new(topic, key, event));
        self
    }
}

impl Emit {
    /// `event` to `topic` under `key`.
    pub fn new<E: Event>(topic: &str, key: impl Into<Vec<u8>>, event: E) -> Self {
        Self {
            topic: topic.to_string(),
            key: key.into(),
            event: Box::new(event),
        }
    }
}

impl std::fmt::Debug for Emit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emit")
            .field("topic", &self.topic)
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("event", &self.event.name())
            .finish()
    }
}

/// The result of an effect. The runtime, not the consumer, decides what
/// follows: retry with backoff, dead-letter, or commit.
#[derive(Debug)]
pub enum Outcome {
    /// The effect happened; commit.
    Done,
    /// The effect happened and observed these outputs (a scan verdict, a
    /// stored file's name); commit. They are sent with the batch after the
    /// decision's own outputs, with the same deterministic ids, so an
    /// effect retried after a crash sends the same ids again.
    Emitted(Vec<Emit>),
    /// Try the same input again after this long; nothing is committed past it.
    Retry { after: Duration },
    /// A dependency is down; retry with the runtime's backoff.
    Temporary(String),
    /// This input can never succeed; dead-letter it.
    Permanent(String),
    /// The effect did not apply (already done); commit.
    Ignored,
}

/// A topic consumer: a pure decider plus an optional effect.
///
/// `decide` is a function of the state view and the input, using the
/// event's time, never the wall clock. It is re-run on replay. `effect`
/// does I/O and is skipped on replay.
///
/// Precondition for exactly-once state: every state key is written only by
/// inputs of one partition (state is co-partitioned with the input key).
pub trait Consumer: Send + Sync + 'static {
    /// The input event type.
    type Event: Decode;

    /// The consumer's name: metrics label, output id prefix, store folder.
    fn name(&self) -> &str;

    /// Decide what one input means.
    fn decide(
        &self,
        state: &StateView<'_>,
        input: &Input<Self::Event>,
    ) -> Result<Decision, StateError>;

    /// librdkafka properties for this consumer's Kafka consumer, applied
    /// unless `kafka.properties` sets them. For a consumer that is slow per
    /// event and holds a big state, a shallow prefetch: librdkafka's default
    /// queues up to 100,000 records per partition, far more than such a
    /// consumer needs to stay busy, and they sit in its memory.
    fn client_defaults(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }

    /// Whether [`Consumer::effect`] does anything; when false the runtime skips it.
    fn has_effects(&self) -> bool {
        false
    }

    /// Carry out a decision's I/O. Called only for applied decisions.
    fn effect(
        &self,
        _input: &Input<Self::Event>,
        _decision: &Decision,
    ) -> impl Future<Output = Outcome> + Send {
        async { Outcome::Done }
    }
}

/// The deterministic id of a consumer's `index`-th output for one input.
pub fn output_id(consumer: &str, meta: &RecordMeta, index: usize) -> String {
    use std::fmt::Write as _;
    // Sized once and written piece by piece: one per output, so `format!`
    // and its regrowths showed in the profile.
    let mut id = String::with_capacity(consumer.len() + meta.topic.len() + 36);
    id.push_str(consumer);
    id.push(':');
    id.push_str(&meta.topic);
    let _ = write!(id, ":{}:{}:{index}", meta.partition, meta.offset);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_ids_are_deterministic_and_distinct() {
        let meta = RecordMeta {
            topic: "t".into(),
            partition: 3,
            offset: 17,
            key: None,
            timestamp: None,
        };
        assert_eq!(output_id("counter", &meta, 0), "counter:t:3:17:0");
        assert_eq!(
            output_id("counter", &meta, 0),
            output_id("counter", &meta, 0)
        );
        assert_ne!(
            output_id("counter", &meta, 0),
            output_id("counter", &meta, 1)
        );
    }
}
