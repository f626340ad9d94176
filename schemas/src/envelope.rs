use serde::{Deserialize, Serialize};

/// The fields every event carries (the `mailfleet.Envelope` record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Envelope {
    /// Unique id. A consumer's outputs derive it from their input's position,
    /// so a re-produced output has the same id and downstream drops it.
    pub event_id: String,
    /// Event time in ms since the Unix epoch; deciders use it, never the clock.
    pub event_time: i64,
    /// Who wrote it: a consumer name or an edge service with its host.
    pub producer: String,
    /// The event that caused this one.
    pub causation_id: Option<String>,
    /// Shared by all events of one flow.
    pub correlation_id: Option<String>,
}

impl Envelope {
    /// A fresh envelope for an event born at an edge service.
    pub fn new(event_id: impl Into<String>, event_time: i64, producer: impl Into<String>) -> Self {
        Self {
            event_id: event_id.into(),
            event_time,
            producer: producer.into(),
            causation_id: None,
            correlation_id: None,
        }
    }

    /// An envelope for an event caused by `cause`: same correlation, causation set.
    pub fn caused_by(cause: &Envelope, producer: impl Into<String>) -> Self {
        Self {
            event_id: String::new(),
            event_time: cause.event_time,
            producer: producer.into(),
            causation_id: Some(cause.event_id.clone()),
            correlation_id: cause
                .correlation_id
                .clone()
                .or_else(|| Some(cause.event_id.clone())),
        }
    }
}
