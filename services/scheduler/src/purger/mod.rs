//! The purge planner (`mailfleet run purger`): the staggered Trash and
//! Spam clean-ups of F6, as a consumer of the stored and purge topics.
//!
//! The original service emptied every Trash at midnight with one cron job
//! and caused load peaks. Here the scheduler writes one purge `JobDue` into
//! every partition of the purge topic; each partition plans its own
//! accounts (the shard: Kafka's hash of the account key) over the job's
//! window in the seconds it owns, so the partitions together stay within
//! the job's `max_purges_per_s` per second and per minute
//! ([`crate::stagger`]); the clock ticks then release each account's
//! `PurgeRequested` at its time, and the storage writer carries it out.
//! Everything is decided from events, so a replay plans the same times.
//!
//! Which accounts: those the writer delivered into the folder (Spam, by
//! the folder rules), less what was purged; for a folder that IMAP
//! clients fill (`client_folders`, Trash by default) every mailbox, since
//! a move in Dovecot is not in the log and a purge of an empty folder is
//! one directory read.

mod decide;
mod state;

use mailfleet_runtime::{metrics as m, Consumer, Decision, Input, StateError, StateView};
use serde::Deserialize;

pub use decide::{Planned, PurgerInput, Released};

/// The consumer's name.
pub const NAME: &str = "purger";

/// `[consumers.purger]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PurgerConfig {
    /// Where `PurgeRequested` goes: the topic whose partitions receive the
    /// purge `JobDue` and the clock ticks (the scheduler's `purge_topic`,
    /// one of `[clock] topics`).
    pub purge_topic: String,
    /// Where a plan that does not fit its window is reported.
    pub alerts_topic: String,
    /// Folders IMAP clients fill, not the writer: every mailbox is purged.
    pub client_folders: Vec<String>,
}

impl Default for PurgerConfig {
    fn default() -> Self {
        Self {
            purge_topic: "mail.purge".into(),
            alerts_topic: "admin.alerts".into(),
            client_folders: vec!["Trash".into()],
        }
    }
}

impl PurgerConfig {
    /// Every problem, naming the key and value.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (key, topic) in [
            ("purge_topic", &self.purge_topic),
            ("alerts_topic", &self.alerts_topic),
        ] {
            if topic.trim().is_empty() {
                out.push(format!("consumers.purger.{key} = {topic:?}: is empty"));
            }
        }
        for folder in &self.client_folders {
            if folder.trim().is_empty() || folder.eq_ignore_ascii_case("INBOX") {
                out.push(format!(
                    "consumers.purger.client_folders: {folder:?}: INBOX and empty names are never purged"
                ));
            }
        }
        out
    }

    fn is_client_folder(&self, folder: &str) -> bool {
        self.client_folders.iter().any(|f| f == folder)
    }
}

/// The purge planner.
pub struct Purger {
    cfg: PurgerConfig,
    /// Partitions of the input topics: the number of lanes.
    partitions: i32,
}

impl Purger {
    /// A planner whose input topics have `partitions` partitions.
    pub fn new(cfg: PurgerConfig, partitions: i32) -> Self {
        Self { cfg, partitions }
    }
}

impl Consumer for Purger {
    type Event = PurgerInput;

    fn name(&self) -> &str {
        NAME
    }

    fn decide(
        &self,
        state: &StateView<'_>,
        input: &Input<PurgerInput>,
    ) -> Result<Decision, StateError> {
        let partition = input.meta.partition;
        let d = decide::decide(&self.cfg, state, &input.event, partition, self.partitions)?;
        let partition = partition.to_string();
        if let Some(p) = d.intent_as::<Planned>() {
            metrics::counter!(m::PURGES_PLANNED, "job" => p.job.clone())
                .increment(p.accounts as u64);
            let labels = [("job", p.job.clone()), ("partition", partition.clone())];
            metrics::gauge!(m::PURGE_PLAN_PEAK_PER_MINUTE, &labels)
                .set(f64::from(p.peak_per_minute));
            metrics::gauge!(m::PURGE_PLAN_PAST_WINDOW, &labels).set(p.past_window as f64);
            tracing::info!(job = %p.job, partition = %partition, accounts = p.accounts,
                peak_per_minute = p.peak_per_minute, past_window = p.past_window, "purge planned");
        }
        if let Some(r) = d.intent_as::<Released>() {
            for (folder, n) in &r.per_folder {
                metrics::counter!(m::PURGES_RELEASED, "folder" => folder.clone()).increment(*n);
            }
            metrics::gauge!(m::PURGES_RELEASED_PEAK_PER_MINUTE, "partition" => partition)
                .set(r.peak_per_minute as f64);
        }
        Ok(d)
    }
}

/// The purge planner as `mailfleet run purger` runs it: its inputs are
/// co-partitioned, one lane per partition.
pub async fn build(
    cfg: &PurgerConfig,
    wiring: &mailfleet_runtime::Wiring,
) -> Result<Purger, mailfleet_runtime::RuntimeError> {
    Ok(Purger::new(cfg.clone(), wiring.input_partitions()))
}
