//! The scheduler processes' own config: `[scheduler]` as `mailfleet
//! scheduler` reads it ([`SchedulerSection`]: the pure core's
//! [`SchedulerConfig`] plus the topics and the lease),
//! `[scheduler.postfix_map]` for `mailfleet postfix-map`, and `[clock]`
//! for the clocked topics both `mailfleet clock` and `mailfleet scheduler`
//! tick; and [`ProcessConfig`], what those processes take from the whole
//! config file (which lives above this crate, in the binary's wiring).

use std::path::PathBuf;

use mailfleet_runtime::config::{KafkaConfig, MetricsConfig, RuntimeConfig};
use serde::Deserialize;

use crate::SchedulerConfig;

/// The sections of the whole config that `mailfleet scheduler`, `mailfleet
/// clock` and `mailfleet postfix-map` read.
#[derive(Debug, Clone, Copy)]
pub struct ProcessConfig<'a> {
    /// How to reach Kafka.
    pub kafka: &'a KafkaConfig,
    /// The state folder and the close timeout (leaving the lease group).
    pub runtime: &'a RuntimeConfig,
    /// The Prometheus endpoint.
    pub metrics: &'a MetricsConfig,
    /// The clocked topics and the clock's period.
    pub clock: &'a ClockConfig,
    /// The jobs, the tick, the lease, the Postfix map.
    pub scheduler: &'a SchedulerSection,
}

/// `[scheduler]`: the pure core's settings ([`SchedulerConfig`]: the tick,
/// the catch-up bounds, `[scheduler.jobs.*]`) and where the process writes
/// and takes its lease. Ticks go into the `[clock] topics`. Deserialized
/// by splitting the table: the keys below are taken out, the rest must be
/// the core's (which still refuses unknown keys).
#[derive(Debug, Clone)]
pub struct SchedulerSection {
    /// The core's settings.
    pub core: SchedulerConfig,
    /// Where `JobDue` runs and the progress marks go (`scheduler.jobs`).
    pub jobs_topic: String,
    /// The one-partition topic whose owner is the active scheduler.
    pub lease_topic: String,
    /// The consumer group every scheduler instance joins on it.
    pub lease_group: String,
    /// How long a silent active scheduler keeps the lease (Kafka's
    /// `session.timeout.ms`): the longest pause before a standby takes over.
    pub lease_session_timeout_ms: u32,
    /// Every purge `JobDue` is also written into each partition of this
    /// topic, where each partition of the purge planner plans its accounts
    /// (`mail.purge`; it must be one of the `[clock] topics` too).
    pub purge_topic: String,
    /// The Postfix recipient map (`mailfleet postfix-map`).
    pub postfix_map: PostfixMapConfig,
}

/// `[scheduler.postfix_map]`: where `mailfleet postfix-map` installs the
/// `virtual_mailbox_maps` table, rendered from the account status
/// projection on each `postfix-map` job run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostfixMapConfig {
    /// The map's source file; Postfix reads `<type>:<path>` (the `.db`
    /// postmap writes beside it). `ops/postfix map-path` prints the test
    /// instance's.
    pub path: PathBuf,
    /// The table type given to postmap and Postfix.
    pub map_type: String,
    /// The postmap program.
    pub postmap: String,
    /// `postmap -c`: the Postfix config folder (needed when
    /// /etc/postfix/main.cf does not exist); empty: postmap's default.
    pub postfix_config_dir: PathBuf,
    /// The compacted status topic the map is rendered from.
    pub status_topic: String,
}

impl Default for PostfixMapConfig {
    fn default() -> Self {
        Self {
            path: "run/postfix/etc/recipients".into(),
            map_type: "hash".into(),
            postmap: "postmap".into(),
            postfix_config_dir: "run/postfix/etc".into(),
            status_topic: "accounts.status".into(),
        }
    }
}

impl Default for SchedulerSection {
    fn default() -> Self {
        Self {
            core: SchedulerConfig::default(),
            jobs_topic: "scheduler.jobs".into(),
            lease_topic: "scheduler.lease".into(),
            lease_group: "mailfleet-scheduler".into(),
            lease_session_timeout_ms: 10_000,
            purge_topic: "mail.purge".into(),
            postfix_map: PostfixMapConfig::default(),
        }
    }
}

impl<'de> Deserialize<'de> for SchedulerSection {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut table = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let mut out = Self::default();
        let mut take_string = |key: &str, into: &mut String| match table.remove(key) {
            None => Ok(()),
            Some(serde_json::Value::String(v)) => {
                *into = v;
                Ok(())
            }
            Some(other) => Err(D::Error::custom(format!(
                "scheduler.{key} = {other}: must be a string"
            ))),
        };
        take_string("jobs_topic", &mut out.jobs_topic)?;
        take_string("lease_topic", &mut out.lease_topic)?;
        take_string("lease_group", &mut out.lease_group)?;
        take_string("purge_topic", &mut out.purge_topic)?;
        if let Some(v) = table.remove("postfix_map") {
            out.postfix_map = serde_json::from_value(v)
                .map_err(|e| D::Error::custom(format!("[scheduler.postfix_map]: {e}")))?;
        }
        if let Some(v) = table.remove("lease_session_timeout_ms") {
            out.lease_session_timeout_ms = v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    D::Error::custom(format!(
                        "scheduler.lease_session_timeout_ms = {v}: must be a whole number of ms"
                    ))
                })?;
        }
        out.core = serde_json::from_value(serde_json::Value::Object(table))
            .map_err(|e| D::Error::custom(format!("[scheduler]: {e}")))?;
        Ok(out)
    }
}

impl SchedulerSection {
    /// Every problem, each naming its key and value.
    pub fn problems(&self) -> Vec<String> {
        let mut out = self.core.problems();
        for (key, value) in [
            ("jobs_topic", &self.jobs_topic),
            ("lease_topic", &self.lease_topic),
            ("lease_group", &self.lease_group),
            ("purge_topic", &self.purge_topic),
            ("postfix_map.map_type", &self.postfix_map.map_type),
            ("postfix_map.postmap", &self.postfix_map.postmap),
            ("postfix_map.status_topic", &self.postfix_map.status_topic),
        ] {
            if value.trim().is_empty() {
                out.push(format!("scheduler.{key} = {value:?}: must not be empty"));
            }
        }
        if self.postfix_map.path.as_os_str().is_empty() {
            out.push("scheduler.postfix_map.path = \"\": must not be empty".into());
        }
        // The broker's group.min/max.session.timeout.ms defaults.
        if !(6_000..=300_000).contains(&self.lease_session_timeout_ms) {
            out.push(format!(
                "scheduler.lease_session_timeout_ms = {}: must be 6000..=300000",
                self.lease_session_timeout_ms
            ));
        }
        out
    }
}

/// `[clock]`: ticks are written into every partition of each listed topic,
/// so that the consumers reading it fire timers at the same log positions
/// on replay (time is an event).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClockConfig {
    /// Topics to tick.
    pub topics: Vec<String>,
    /// Seconds between ticks.
    pub every_s: u64,
}

impl Default for ClockConfig {
    fn default() -> Self {
        Self {
            topics: vec![
                "smtp.attempts".into(),
                "accounts.events".into(),
                "mail.purge".into(),
            ],
            every_s: 3600,
        }
    }
}
