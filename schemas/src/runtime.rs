//! Events of the consumer runtime itself: the test event the counting
//! consumer reads, its output, and the dead letter.

use serde::{Deserialize, Serialize};

use crate::{impl_event, Envelope};

/// `mailfleet.runtime.TestEvent` (v2): a synthetic event to count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestEvent {
    pub envelope: Envelope,
    /// The counting key.
    pub key: String,
    /// Filler to size events in benchmarks.
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub payload: Vec<u8>,
    /// What the event adds to its key's count (v1 events read as 1).
    pub weight: i64,
}
impl_event!(TestEvent, "mailfleet.runtime.TestEvent");

/// `mailfleet.runtime.Counted`: a key's running count after one TestEvent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counted {
    pub envelope: Envelope,
    /// The counting key.
    pub key: String,
    /// The count including the event that caused this one.
    pub count: i64,
}
impl_event!(Counted, "mailfleet.runtime.Counted");

/// Why an input became a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeadLetterKind {
    /// Not an Avro single-object event, or a body that does not decode.
    Undecodable,
    /// A fingerprint no schema under `schemas/` has.
    UnknownSchema,
    /// An event of a type the consumer does not read.
    WrongType,
    /// The consumer's decision or effect was Permanent.
    Rejected,
    /// A symbol this reader does not know (written by a newer schema).
    Unknown,
}

/// `mailfleet.runtime.DeadLetter`: an input set aside with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub envelope: Envelope,
    /// The consumer that set it aside.
    pub consumer: String,
    /// Where the original record was.
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The class of failure.
    pub kind: DeadLetterKind,
    /// The reason, naming the bad value.
    pub reason: String,
    /// The original record's key and value, byte for byte.
    #[serde(with = "apache_avro::serde_avro_bytes_opt")]
    pub original_key: Option<Vec<u8>>,
    #[serde(with = "apache_avro::serde_avro_bytes_opt")]
    pub original_value: Option<Vec<u8>>,
    /// The original record's Kafka timestamp, ms.
    pub original_timestamp: Option<i64>,
}
impl_event!(DeadLetter, "mailfleet.runtime.DeadLetter");
