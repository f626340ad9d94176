//! Time as an event.

use serde::{Deserialize, Serialize};

use crate::{impl_event, Envelope};

/// `mailfleet.clock.ClockTicked`: a tick in one partition of a clocked topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockTicked {
    /// `event_time` is the tick's time.
    pub envelope: Envelope,
    /// Which clock, e.g. `hourly`.
    pub clock: String,
    /// Its period, ms.
    pub period_ms: i64,
}
impl_event!(ClockTicked, "mailfleet.clock.ClockTicked");
