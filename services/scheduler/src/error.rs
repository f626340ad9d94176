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
}
