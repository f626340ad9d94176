use thiserror::Error;

/// What went wrong in the scheduler's core; every variant names the value.
#[derive(Debug, Error)]
pub enum SchedulerError {
    /// `[scheduler]` has problems, each naming its key and value
    /// ([`crate::SchedulerConfig::problems`]).
    #[error("invalid [scheduler] configuration:\n  {}", .0.join("\n  "))]
    Validate(Vec<String>),
    /// A cron expression the pre-check let through but `cron` refused.
    #[error("scheduler.jobs.{job}.cron = {expr:?}: {source}")]
    ParseCron {
        job: String,
        expr: String,
        #[source]
        source: cron::error::Error,
    },
    /// An instant outside the range the calendar handles.
    #[error("time {ms} ms since the epoch is out of range")]
    ConvertTime { ms: i64 },
    /// A purge plan was asked for with a window or rate that cannot work.
    #[error("cannot plan a purge: {what} = {value}: {reason}")]
    PlanPurge {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    /// A purge `JobDue` without a parameter the plan needs.
    #[error("JobDue {run_id}: no param {name:?}")]
    ParamMissing { run_id: String, name: &'static str },
    /// A purge `JobDue` for a folder that is never purged.
    #[error("JobDue {run_id}: param folder = {folder:?}: INBOX and empty names are never purged")]
    ParamFolder { run_id: String, folder: String },
    /// A purge `JobDue` whose window is not a whole number of minutes.
    #[error("JobDue {run_id}: param window_minutes = {value:?}: not a whole number >= 1")]
    ParamWindow { run_id: String, value: String },
    /// A purge `JobDue` whose rate is not a number.
    #[error("JobDue {run_id}: param max_purges_per_s = {value:?}: {source}")]
    ParamRate {
        run_id: String,
        value: String,
        #[source]
        source: std::num::ParseFloatError,
    },
    /// A purge `JobDue` whose `received_before` is not a time in ms.
    #[error("JobDue {run_id}: param received_before = {value:?}: {source}")]
    ParamReceivedBefore {
        run_id: String,
        value: String,
        #[source]
        source: std::num::ParseIntError,
    },
    /// A stored slot key too short for its time.
    #[error("slot key of {0} bytes")]
    SlotKeySize(usize),
    /// A stored slot key without the NUL between run and account.
    #[error("slot key without NUL")]
    SlotKeyWithoutNul,
    /// A stored pending purge too short for its time.
    #[error("pending purge of {0} bytes")]
    PendingSize(usize),
}
