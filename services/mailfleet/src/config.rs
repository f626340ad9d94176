//! The mailfleet config file: one TOML document, `MAILFLEET_` environment
//! overrides (see `mailfleet_runtime::config`), checked as a whole before
//! anything starts.

use std::path::{Path, PathBuf};

use mailfleet_accounts::{
    api::ApiConfig,
    deleter::DeleterConfig,
    directory::{DirectoryConfig, LdapConfig},
    lifecycle::LifecycleConfig,
    notifier::NotifierConfig,
};
use mailfleet_counter::CounterConfig;
use mailfleet_greylist::GreylistConfig;
use mailfleet_ingest::{lmtp::LmtpConfig, scanner::ScannerConfig, BlobConfig};
use mailfleet_policy::PolicyConfig;
use mailfleet_runtime::{
    config::{from_document, load_document, KafkaConfig, MetricsConfig, RuntimeConfig},
    RuntimeError, Topology,
};
use mailfleet_storage::writer::StorageConfig;
use serde::Deserialize;

/// The whole config. Every section is optional; defaults live in each
/// section's `Default`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How to reach Kafka.
    pub kafka: KafkaConfig,
    /// Batching, retries and the state folder.
    pub runtime: RuntimeConfig,
    /// The Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// Log format and level.
    pub log: LogConfig,
    /// Where the topology comes from.
    pub pipelines: PipelinesConfig,
    /// The Postfix policy server.
    pub policy: PolicyConfig,
    /// The clock that writes ticks into clocked topics.
    pub clock: ClockConfig,
    /// The LMTP server Postfix delivers to.
    pub lmtp: LmtpConfig,
    /// The account API (`mailfleet api`) and the CLI's default address.
    pub api: ApiConfig,
    /// Where raw messages are kept.
    pub blobs: BlobConfig,
    /// The LDAP directory (slapd): where the accounts live, how to bind.
    pub ldap: LdapConfig,
    /// Per-consumer settings.
    pub consumers: ConsumersConfig,
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
            topics: vec!["smtp.attempts".into(), "accounts.events".into()],
            every_s: 3600,
        }
    }
}

/// `[pipelines]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelinesConfig {
    /// A topology file to use instead of the built-in `pipelines/topology.toml`.
    pub topology: Option<PathBuf>,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` for people, `json` for log shippers.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `mailfleet_runtime=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[consumers.*]`: one table per registered consumer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumersConfig {
    /// The counting consumer.
    pub counter: CounterConfig,
    /// The greylist consumer (postgrey's options).
    pub greylist: GreylistConfig,
    /// The scanner (clamd and the attachment policy).
    pub scanner: ScannerConfig,
    /// The storage writer (Maildirs, quota, quarantine, purges).
    pub storage: StorageConfig,
    /// The account lifecycle (inactivity, grace, deletion).
    pub lifecycle: LifecycleConfig,
    /// The deletion saga.
    pub deleter: DeleterConfig,
    /// The LDAP directory effector (its topics; the directory is `[ldap]`).
    pub directory: DirectoryConfig,
    /// The notifier (notices and admin alerts by SMTP).
    pub notifier: NotifierConfig,
}

impl Config {
    /// Load the file (if any) with environment overrides, and check it.
    pub fn load(path: Option<&Path>) -> Result<Config, RuntimeError> {
        let shown = path.map_or("<defaults>".to_string(), |p| p.display().to_string());
        let doc = load_document(path, std::env::vars())?;
        let cfg: Config = from_document(doc, &shown)?;
        let problems = cfg.problems();
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(RuntimeError::InvalidConfig(problems))
        }
    }

    /// Every problem in the config, each naming its key and value.
    pub fn problems(&self) -> Vec<String> {
        let mut out = self.kafka.problems();
        out.extend(self.runtime.problems());
        out.extend(self.metrics.problems());
        out.extend(self.policy.problems());
        out.extend(self.consumers.greylist.problems());
        out.extend(self.consumers.scanner.problems());
        out.extend(self.consumers.storage.problems());
        out.extend(self.consumers.lifecycle.problems());
        out.extend(self.consumers.deleter.problems());
        out.extend(self.consumers.directory.problems());
        out.extend(self.consumers.notifier.problems());
        out.extend(self.ldap.problems());
        out.extend(self.lmtp.problems());
        out.extend(self.api.problems());
        if self.blobs.dir.is_empty() {
            out.push("blobs.dir is empty".into());
        }
        if self.clock.every_s == 0 {
            out.push("clock.every_s = 0: must be > 0".into());
        }
        if let Err(e) = self.log.level.parse::<tracing_subscriber::EnvFilter>() {
            out.push(format!("log.level = {:?}: {e}", self.log.level));
        }
        if let Some(p) = &self.pipelines.topology {
            if !p.is_file() {
                out.push(format!(
                    "topology = {:?}: no such file",
                    p.display().to_string()
                ));
            }
        }
        out
    }

    /// The topology this config points to.
    pub fn topology(&self) -> Result<Topology, RuntimeError> {
        Topology::load(self.pipelines.topology.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut cfg = Config::default();
        cfg.runtime.batch_max_events = 0;
        cfg.metrics.listen = "nowhere".into();
        cfg.pipelines.topology = Some("/no/such/topology.toml".into());
        let problems = cfg.problems().join("\n");
        assert!(problems.contains("batch_max_events = 0"), "{problems}");
        assert!(problems.contains("\"nowhere\""), "{problems}");
        assert!(problems.contains("/no/such/topology.toml"), "{problems}");
    }

    #[test]
    fn the_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ops/mailfleet.toml");
        let doc = load_document(Some(&path), Vec::new()).unwrap();
        let cfg: Config = from_document(doc, "ops/mailfleet.toml").unwrap();
        assert!(cfg.problems().is_empty(), "{:?}", cfg.problems());
    }
}
