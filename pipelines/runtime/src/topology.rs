//! The topology: which topics exist (partitions, retention, clean-up) and
//! which consumer reads and writes which. Declared in `pipelines/topology.toml`.

use std::{collections::BTreeMap, path::Path};

use serde::Deserialize;

use crate::{config::check_topic_name, error::RuntimeError};

/// The topology compiled into the binary; a config may point to another file.
pub const BUILTIN: &str = include_str!("../../topology.toml");

/// All topics and consumer routes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Topic name → its settings.
    pub topics: BTreeMap<String, TopicSpec>,
    /// Consumer name → what it reads and writes.
    #[serde(default)]
    pub consumers: BTreeMap<String, Route>,
}

/// How Kafka discards old records of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CleanupPolicy {
    /// Delete segments past the retention.
    Delete,
    /// Keep the newest record per key.
    Compact,
}

impl CleanupPolicy {
    /// Kafka's spelling of it.
    pub fn as_kafka(self) -> &'static str {
        match self {
            Self::Delete => "delete",
            Self::Compact => "compact",
        }
    }
}

/// One topic's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    /// Number of partitions; can grow, never shrink.
    pub partitions: i32,
    /// Replication factor; 1 on a single broker.
    #[serde(default = "one")]
    pub replication_factor: i32,
    /// Retention in ms; -1 keeps forever.
    pub retention_ms: i64,
    /// `delete` or `compact`.
    pub cleanup_policy: CleanupPolicy,
    /// What flows on it.
    #[serde(default)]
    pub doc: String,
}

fn one() -> i32 {
    1
}

impl TopicSpec {
    /// A short-lived topic (one hour, delete): tests and benchmarks.
    pub fn scratch(partitions: i32) -> TopicSpec {
        TopicSpec {
            partitions,
            replication_factor: 1,
            retention_ms: 3_600_000,
            cleanup_policy: CleanupPolicy::Delete,
            doc: String::new(),
        }
    }
}

/// A consumer's group and topics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Consumer group id; every process of the fleet uses the same one.
    pub group: String,
    /// Input topics.
    pub reads: Vec<String>,
    /// Output topics.
    #[serde(default)]
    pub writes: Vec<String>,
}

impl Topology {
    /// Parse and check a topology document.
    pub fn parse(text: &str, shown: &str) -> Result<Topology, RuntimeError> {
        let topo: Topology = toml::from_str(text).map_err(|e| RuntimeError::ParseConfig {
            path: shown.to_string(),
            message: e.to_string().trim().to_string(),
        })?;
        let problems = topo.problems();
        if problems.is_empty() {
            Ok(topo)
        } else {
            Err(RuntimeError::InvalidConfig(problems))
        }
    }

    /// Load a topology file, or the built-in one.
    pub fn load(path: Option<&Path>) -> Result<Topology, RuntimeError> {
        match path {
            None => Topology::parse(BUILTIN, "pipelines/topology.toml (built in)"),
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).map_err(|source| RuntimeError::ReadConfig {
                        path: p.display().to_string(),
                        source,
                    })?;
                Topology::parse(&text, &p.display().to_string())
            }
        }
    }

    /// A consumer's route, or an error naming the consumer and what exists.
    pub fn route(&self, consumer: &str) -> Result<&Route, RuntimeError> {
        self.consumers.get(consumer).ok_or_else(|| {
            RuntimeError::InvalidConfig(vec![format!(
                "no consumer {consumer:?} in the topology (known: {})",
                self.consumers
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )])
        })
    }

    /// Every problem, each naming the topic or consumer.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, spec) in &self.topics {
            if let Err(e) = check_topic_name(name) {
                out.push(format!("topic {name:?}: {e}"));
            }
            if spec.partitions < 1 {
                out.push(format!(
                    "topics.{name}.partitions = {}: must be >= 1",
                    spec.partitions
                ));
            }
            if spec.replication_factor < 1 {
                out.push(format!(
                    "topics.{name}.replication_factor = {}: must be >= 1",
                    spec.replication_factor
                ));
            }
            if spec.retention_ms < -1 || spec.retention_ms == 0 {
                out.push(format!(
                    "topics.{name}.retention_ms = {}: must be -1 (forever) or > 0",
                    spec.retention_ms
                ));
            }
        }
        for (consumer, route) in &self.consumers {
            if route.group.trim().is_empty() {
                out.push(format!("consumers.{consumer}.group is empty"));
            }
            if route.reads.is_empty() {
                out.push(format!("consumers.{consumer}.reads is empty"));
            }
            for topic in route.reads.iter().chain(&route.writes) {
                if !self.topics.contains_key(topic) {
                    out.push(format!(
                        "consumers.{consumer}: topic {topic:?} is not declared"
                    ));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_topology_is_valid() {
        let topo = Topology::load(None).unwrap();
        assert!(topo.topics.contains_key("deadletter"));
        let route = topo.route("counter").unwrap();
        assert!(!route.reads.is_empty());
    }

    #[test]
    fn undeclared_topics_and_bad_values_are_named() {
        let text = r#"
            [topics."bad name"]
            partitions = 0
            retention_ms = 0
            cleanup_policy = "delete"
            [consumers.c]
            group = "g"
            reads = ["missing"]
        "#;
        let err = Topology::parse(text, "t.toml").unwrap_err().to_string();
        assert!(err.contains("\"bad name\""), "{err}");
        assert!(err.contains("partitions = 0"), "{err}");
        assert!(err.contains("retention_ms = 0"), "{err}");
        assert!(err.contains("\"missing\" is not declared"), "{err}");
        let err = Topology::load(None)
            .unwrap()
            .route("nope")
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"nope\"") && err.contains("counter"), "{err}");
    }

    #[test]
    fn a_bad_cleanup_policy_is_named() {
        let text = "[topics.t]\npartitions = 1\nretention_ms = 1\ncleanup_policy = \"shred\"\n";
        let err = Topology::parse(text, "t.toml").unwrap_err().to_string();
        assert!(err.contains("shred"), "{err}");
    }
}
