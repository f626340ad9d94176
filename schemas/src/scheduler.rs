//! Scheduled jobs: what `mailfleet scheduler` writes besides clock ticks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{impl_event, Envelope};

/// `mailfleet.scheduler.JobDue`: one run of a scheduled job is due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobDue {
    /// `event_id` is `run_id`; `event_time` is the due time.
    pub envelope: Envelope,
    /// The job's name in `[scheduler.jobs]`; the record key.
    pub job: String,
    /// `purge`, `postfix-map`, or `scheduler-mark` (the scheduler's own
    /// progress mark, no job to run).
    pub kind: String,
    /// When the run was due, ms since the epoch.
    pub due_at: i64,
    /// `<job>:<due time, RFC 3339>`: consumers deduplicate runs by it.
    pub run_id: String,
    /// The job's settings (folder, window, rate, ...).
    pub params: BTreeMap<String, String>,
}
impl_event!(JobDue, "mailfleet.scheduler.JobDue");
