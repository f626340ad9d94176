//! The mailfleet config file: one TOML document, `MAILFLEET_` environment
//! overrides (see `mailfleet_runtime::config`), checked as a whole before
//! anything starts.

use std::path::{Path, PathBuf};

use mailfleet_api::ApiConfig;
use mailfleet_blob::BlobConfig;
use mailfleet_directory::LdapConfig;
use mailfleet_ingest::lmtp::LmtpConfig;
use mailfleet_policy::PolicyConfig;
use mailfleet_runtime::{
    config::{from_document, load_document, KafkaConfig, MetricsConfig, RuntimeConfig},
    RuntimeError, Topology,
};
use mailfleet_scheduler::{ClockConfig, SchedulerSection};
use mailfleet_submission::SubmissionConfig;
use serde::Deserialize;

pub use crate::consumers::ConsumersConfig;

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
    /// The submission milter Postfix's SASL submission listener calls.
    pub submission: SubmissionConfig,
    /// The account API (`mailfleet api`) and the CLI's default address.
    pub api: ApiConfig,
    /// Where raw messages are kept.
    pub blobs: BlobConfig,
    /// The LDAP directory (slapd): where the accounts live, how to bind.
    pub ldap: LdapConfig,
    /// Per-consumer settings.
    pub consumers: ConsumersConfig,
    /// `mailfleet scheduler`: the jobs, the tick, the lease.
    pub scheduler: SchedulerSection,
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
        let max_age_s = self.consumers.greylist.max_age_days.saturating_mul(86_400);
        if i64::try_from(self.policy.answer_repeats_s).unwrap_or(i64::MAX) >= max_age_s {
            out.push(format!(
                "policy.answer_repeats_s = {}: must be below consumers.greylist.max_age_days ({} s)",
                self.policy.answer_repeats_s, max_age_s
            ));
        }
        out.extend(self.consumers.problems());
        out.extend(self.ldap.problems());
        out.extend(self.lmtp.problems());
        out.extend(self.submission.problems());
        out.extend(self.api.problems());
        out.extend(self.scheduler.problems());
        out.extend(self.blobs.problems());
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
        // Each topic's replication with `[kafka]`'s defaults; a topology
        // that does not load says why when it is used.
        if let Ok(topology) = self.topology() {
            out.extend(topology.replication_problems(&self.kafka));
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
    fn replication_beyond_the_factor_is_named_at_load() {
        let env = [
            ("MAILFLEET_KAFKA__REPLICATION_FACTOR", "3"),
            ("MAILFLEET_KAFKA__MIN_INSYNC_REPLICAS", "4"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let cfg: Config = from_document(load_document(None, env).unwrap(), "test").unwrap();
        let problems = cfg.problems().join("\n");
        assert!(
            problems.contains("kafka.min_insync_replicas = 4: more than the replication factor 3"),
            "{problems}"
        );
        let mut cfg = Config::default();
        cfg.kafka.replication_factor = 0;
        let problems = cfg.problems().join("\n");
        assert!(
            problems.contains("kafka.replication_factor = 0: must be >= 1"),
            "{problems}"
        );
    }

    #[test]
    fn the_example_config_loads() {
        let path = Path::new(&crate::manifest_dir()).join("../../ops/mailfleet.toml");
        let doc = load_document(Some(&path), Vec::new()).unwrap();
        let cfg: Config = from_document(doc, "ops/mailfleet.toml").unwrap();
        assert!(cfg.problems().is_empty(), "{:?}", cfg.problems());
    }

    /// Every `listen` key and its value in `ops/mailfleet.toml`, walked.
    fn listen_keys(value: &serde_json::Value, at: &str, out: &mut Vec<(String, String)>) {
        let Some(table) = value.as_object() else {
            return;
        };
        for (key, v) in table {
            let path = if at.is_empty() {
                key.clone()
            } else {
                format!("{at}.{key}")
            };
            match v.as_str() {
                Some(text) if key == "listen" => out.push((path, text.to_string())),
                _ => listen_keys(v, &path, out),
            }
        }
    }

    #[test]
    fn every_server_listens_on_loopback_and_allows_loopback_by_default() {
        let path = Path::new(&crate::manifest_dir()).join("../../ops/mailfleet.toml");
        let doc = load_document(Some(&path), Vec::new()).unwrap();
        let mut in_file = Vec::new();
        listen_keys(&serde_json::to_value(&doc).unwrap(), "", &mut in_file);
        in_file.sort();
        let d = Config::default();
        let in_code = vec![
            ("api.listen".to_string(), d.api.listen.clone()),
            ("lmtp.listen".to_string(), d.lmtp.listen.clone()),
            ("metrics.listen".to_string(), d.metrics.listen.clone()),
            ("policy.listen".to_string(), d.policy.listen.clone()),
            ("submission.listen".to_string(), d.submission.listen.clone()),
        ];
        let names = |v: &[(String, String)]| v.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
        // A new server's listen key must join this test (and its default be loopback).
        assert_eq!(names(&in_file), names(&in_code));
        for (key, value) in in_file.iter().chain(&in_code) {
            let addr: std::net::SocketAddr = value.parse().unwrap();
            assert_eq!(addr.ip().to_string(), "127.0.0.1", "{key} = {value:?}");
        }
        let loopback = mailfleet_runtime::allow::loopback();
        assert_eq!(d.lmtp.allow, loopback);
        assert_eq!(d.policy.allow, loopback);
        assert_eq!(d.submission.allow, loopback);
        let file: Config = from_document(doc, "ops/mailfleet.toml").unwrap();
        assert_eq!(file.lmtp.allow, loopback);
        assert_eq!(file.policy.allow, loopback);
        assert_eq!(file.submission.allow, loopback);
        // The clients' defaults point at loopback too.
        assert_eq!(d.kafka.brokers, "127.0.0.1:9092");
        assert!(
            d.ldap.url.starts_with("ldap://127.0.0.1:"),
            "{}",
            d.ldap.url
        );
    }

    #[test]
    fn a_bad_allow_entry_is_named_at_load() {
        let env = [(
            "MAILFLEET_LMTP__ALLOW",
            "[\"127.0.0.1/32\", \"10.1.2.0/33\"]",
        )]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let cfg: Config = from_document(load_document(None, env).unwrap(), "test").unwrap();
        let problems = cfg.problems().join("\n");
        assert!(
            problems.contains("lmtp.allow[1] = \"10.1.2.0/33\""),
            "{problems}"
        );
    }

    /// A config from `MAILFLEET_SCHEDULER__...` overrides alone.
    fn scheduler_from(vars: &[(&str, &str)]) -> Result<Config, RuntimeError> {
        let env = vars
            .iter()
            .map(|(k, v)| (format!("MAILFLEET_SCHEDULER__{k}"), v.to_string()));
        from_document(load_document(None, env)?, "test")
    }

    #[test]
    fn scheduler_section_splits_its_own_keys_from_the_core() {
        let cfg = scheduler_from(&[
            ("TICK_EVERY_S", "5"),
            ("JOBS_TOPIC", "j"),
            ("LEASE_SESSION_TIMEOUT_MS", "7000"),
            ("JOBS__M__CRON", "0 */10 * * * *"),
            ("JOBS__M__KIND", "postfix-map"),
        ])
        .unwrap();
        assert_eq!(cfg.scheduler.core.tick_every_s, 5);
        assert_eq!(cfg.scheduler.jobs_topic, "j");
        assert_eq!(cfg.scheduler.lease_topic, "scheduler.lease");
        assert_eq!(cfg.scheduler.lease_session_timeout_ms, 7000);
        assert_eq!(cfg.scheduler.core.jobs.len(), 1);
        let err = scheduler_from(&[("TICK_EVRY_S", "5")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("tick_evry_s"), "{err}");
        let err = scheduler_from(&[("LEASE_TOPIC", "3")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("scheduler.lease_topic = 3"), "{err}");
    }

    #[test]
    fn scheduler_problems_join_the_config_problems() {
        let mut cfg = Config::default();
        cfg.scheduler.lease_session_timeout_ms = 100;
        cfg.scheduler.core.tick_every_s = 0;
        let problems = cfg.problems().join("\n");
        assert!(
            problems.contains("lease_session_timeout_ms = 100"),
            "{problems}"
        );
        assert!(
            problems.contains("scheduler.tick_every_s = 0"),
            "{problems}"
        );
    }
}
