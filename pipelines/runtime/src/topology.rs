//! The topology: which topics exist (partitions, retention, clean-up) and
//! which consumer reads and writes which. Declared in `pipelines/topology.toml`.

use std::{collections::BTreeMap, path::Path};

use serde::Deserialize;

use crate::{
    config::{check_topic_name, KafkaConfig},
    error::RuntimeError,
    replication::{self, Replication},
};

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
    /// Replication factor; unset: `kafka.replication_factor` (see
    /// [`Replication::of`]).
    pub replication_factor: Option<i32>,
    /// `min.insync.replicas`; unset: `kafka.min_insync_replicas`.
    pub min_insync_replicas: Option<i32>,
    /// Retention in ms; -1 keeps forever.
    pub retention_ms: i64,
    /// `delete` or `compact`.
    pub cleanup_policy: CleanupPolicy,
    /// `segment.ms`: a segment rolls after this long. A compacted topic
    /// sets it so that the cleaner, which never cleans the active segment,
    /// gets to its records. Unset: the broker's (7 days).
    #[serde(default)]
    pub segment_ms: Option<i64>,
    /// `min.cleanable.dirty.ratio`: the share of superseded records at
    /// which the cleaner takes the log. Unset: the broker's (0.5).
    #[serde(default)]
    pub min_cleanable_dirty_ratio: Option<f64>,
    /// What flows on it.
    #[serde(default)]
    pub doc: String,
}

impl TopicSpec {
    /// A short-lived topic (one hour, delete): tests and benchmarks.
    pub fn scratch(partitions: i32) -> TopicSpec {
        TopicSpec {
            partitions,
            replication_factor: None,
            min_insync_replicas: None,
            retention_ms: 3_600_000,
            cleanup_policy: CleanupPolicy::Delete,
            segment_ms: None,
            min_cleanable_dirty_ratio: None,
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
            out.extend(replication::problems(
                &format!("topics.{name}"),
                spec.replication_factor,
                spec.min_insync_replicas,
            ));
            if spec.segment_ms.is_some_and(|ms| ms < 1) {
                out.push(format!(
                    "topics.{name}.segment_ms = {:?}: must be > 0",
                    spec.segment_ms
                ));
            }
            if spec
                .min_cleanable_dirty_ratio
                .is_some_and(|r| !(0.0..=1.0).contains(&r))
            {
                out.push(format!(
                    "topics.{name}.min_cleanable_dirty_ratio = {:?}: must be 0..=1",
                    spec.min_cleanable_dirty_ratio
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

    /// Every topic's min ISR that exceeds its replication factor, where
    /// either is the topic's own (both from `[kafka]`: `kafka`'s own
    /// problems name them once).
    pub fn replication_problems(&self, kafka: &KafkaConfig) -> Vec<String> {
        self.topics
            .iter()
            .filter(|(_, s)| s.replication_factor.is_some() || s.min_insync_replicas.is_some())
            .filter_map(|(name, spec)| Replication::of(name, spec, kafka).problems())
            .collect()
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
    fn replication_values_are_checked_with_the_kafka_defaults() {
        let text = "[topics.a]\npartitions = 1\nretention_ms = 1\ncleanup_policy = \"delete\"\n\
                    replication_factor = 0\n\
                    [topics.b]\npartitions = 1\nretention_ms = 1\ncleanup_policy = \"delete\"\n\
                    min_insync_replicas = 3\n";
        let err = Topology::parse(text, "t.toml").unwrap_err().to_string();
        assert!(err.contains("topics.a.replication_factor = 0"), "{err}");
        let topo = Topology::parse(&text.replace("= 0", "= 2"), "t.toml").unwrap();
        let kafka = KafkaConfig {
            replication_factor: 3,
            ..KafkaConfig::default()
        };
        assert!(topo.replication_problems(&kafka).is_empty());
        let kafka = KafkaConfig::default();
        let problems = topo.replication_problems(&kafka).join("\n");
        assert!(
            problems.contains("topics.b.min_insync_replicas = 3: more than the replication factor 1 (kafka.replication_factor)"),
            "{problems}"
        );
        assert!(!problems.contains("topics.a"), "{problems}");
    }

    #[test]
    fn a_bad_cleanup_policy_is_named() {
        let text = "[topics.t]\npartitions = 1\nretention_ms = 1\ncleanup_policy = \"shred\"\n";
        let err = Topology::parse(text, "t.toml").unwrap_err().to_string();
        assert!(err.contains("shred"), "{err}");
    }
}
