use std::path::PathBuf;

use mailfleet_runtime::RuntimeError;
use rdkafka::error::KafkaError;
use thiserror::Error;

/// What went wrong in the scheduler's core and its processes; every
/// variant names the value.
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
    /// A configured topic (`key`) is not in the topology.
    #[error("{key}: {topic:?} is not in the topology")]
    FindTopic { key: &'static str, topic: String },
    /// A purge job is configured but the purge topic is not clocked.
    #[error("scheduler.purge_topic = {topic:?}: is not in clock.topics {clocked:?}; the purge planner releases purges on its ticks")]
    CheckPurgeTopic { topic: String, clocked: Vec<String> },
    /// The lease topic must have exactly one partition.
    #[error("scheduler.lease_topic = {topic:?}: has {partitions} partitions, must have exactly 1")]
    CheckLeaseTopic { topic: String, partitions: i32 },
    /// The lease consumer could not be created.
    #[error("creating the lease consumer")]
    CreateLeaseConsumer(#[source] KafkaError),
    /// The lease consumer could not subscribe to the lease topic.
    #[error("subscribing to {topic:?}")]
    SubscribeLease {
        topic: String,
        #[source]
        source: KafkaError,
    },
    /// The lease thread could not be started.
    #[error("starting the lease thread")]
    StartLeaseThread(#[source] std::io::Error),
    /// The lease thread panicked.
    #[error("the lease thread panicked")]
    JoinLeaseThread,
    /// A job is due that `[scheduler.jobs]` does not configure.
    #[error("job {job:?} is due but not configured")]
    FindJob { job: String },
    /// The jobs topic's offsets could not be read.
    #[error("scheduler.jobs_topic = {topic:?}: reading its offsets")]
    ReadJobsOffsets {
        topic: String,
        #[source]
        source: Box<RuntimeError>,
    },
    /// The jobs topic does not exist.
    #[error("scheduler.jobs_topic = {topic:?}: no such topic (run `mailfleet topics apply`)")]
    FindJobsTopic { topic: String },
    /// Reading back the jobs topic's last records took too long.
    #[error("{topic}: reading back the last records timed out")]
    FinishReadBack { topic: String },
    /// `scheduler.postfix_map.map_type` is no type postmap writes a table for.
    #[error("scheduler.postfix_map.map_type = {map_type:?}: not an indexed type postmap writes (hash, btree, lmdb, cdb)")]
    CheckMapType { map_type: String },
    /// The installed map could not be read.
    #[error("reading {}", path.display())]
    ReadMap {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The map's folder could not be created.
    #[error("creating {}", dir.display())]
    CreateMapDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The new map could not be written.
    #[error("writing {}", path.display())]
    WriteMap {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// postmap could not be started.
    #[error("running {postmap:?} {target}")]
    RunPostmap {
        postmap: String,
        target: String,
        #[source]
        source: std::io::Error,
    },
    /// postmap failed.
    #[error("{postmap} {target}: {status}: {stderr}")]
    BuildTable {
        postmap: String,
        target: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    /// The new map or table could not be renamed into place.
    #[error("renaming {} to {}", from.display(), to.display())]
    RenameMap {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The map's folder could not be synced.
    #[error("syncing {}", dir.display())]
    SyncMapDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The status projection did not catch up in time for `--once`.
    #[error("{topic}: not caught up after 120 s; no map installed")]
    CatchUpStatuses { topic: String },
    /// Kafka, the producer, the metrics exporter or a follower failed
    /// (boxed: it is large).
    #[error(transparent)]
    Runtime(Box<RuntimeError>),
    /// A Kafka call failed.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// An event could not be encoded.
    #[error(transparent)]
    Encode(#[from] mailfleet_events::EventError),
    /// The system clock is before the epoch.
    #[error(transparent)]
    SystemTime(#[from] std::time::SystemTimeError),
    /// The time does not fit in an `i64` of milliseconds.
    #[error(transparent)]
    TimeRange(#[from] std::num::TryFromIntError),
    /// A blocking task panicked or was cancelled.
    #[error(transparent)]
    Join(#[from] tokio::task::JoinError),
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

impl From<RuntimeError> for SchedulerError {
    fn from(e: RuntimeError) -> Self {
        Self::Runtime(Box::new(e))
    }
}
