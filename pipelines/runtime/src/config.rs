//! Runtime settings, and loading one TOML file with environment overrides.
//!
//! Every key can be overridden by an environment variable: `MAILFLEET_`
//! then the key path in upper case with `__` between levels, e.g.
//! `MAILFLEET_KAFKA__BROKERS=127.0.0.1:9092` or
//! `MAILFLEET_RUNTIME__BATCH_MAX_EVENTS=500`. Only names with a `__` are
//! overrides (every key lives in a section), so `MAILFLEET_CONFIG` and
//! `MAILFLEET_LOG` keep their own meaning. Values that parse as TOML
//! (numbers, booleans, arrays) are taken as such, anything else as a string.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use serde::Deserialize;

use crate::error::RuntimeError;

/// The environment variable prefix for overrides.
pub const ENV_PREFIX: &str = "MAILFLEET_";

/// How to reach Kafka.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub brokers: String,
    /// Extra librdkafka properties for every client, e.g. `{"socket.timeout.ms" = "10000"}`.
    pub properties: toml::Table,
    /// librdkafka properties whose values are secrets, read from these
    /// files each time a client is made (one trailing newline dropped),
    /// e.g. `{"sasl.password" = "run/secrets/kafka.password"}`: the secret
    /// stays out of the config file and the environment.
    pub property_files: BTreeMap<String, PathBuf>,
    /// Replication factor of every topic whose topology entry sets none
    /// (`topics apply` creates them so, and refuses to lower it): 1 on a
    /// single broker, 3 on a cluster of three or more (docs/reliability.md).
    pub replication_factor: i32,
    /// `min.insync.replicas` of every topic whose topology entry sets none:
    /// how many replicas must have a record before an `acks=all` write of
    /// it is acknowledged. Unset: the broker's `min.insync.replicas`.
    pub min_insync_replicas: Option<i32>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            properties: toml::Table::new(),
            property_files: BTreeMap::new(),
            replication_factor: 1,
            min_insync_replicas: None,
        }
    }
}

/// How the consumer runtime batches, retries and stores.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Folder holding one RocksDB per consumer.
    pub data_dir: PathBuf,
    /// Most events decided and committed in one batch.
    pub batch_max_events: usize,
    /// Longest a batch waits to fill before it is processed, ms. 0 processes
    /// what has already arrived at once: lowest latency, and under load the
    /// batches still fill while the previous one is processed.
    pub batch_max_wait_ms: u64,
    /// A consumer of several topics orders each partition's records by
    /// append time across its topics (see the runner's `merge`). A record
    /// waits at most this long, ms, for a caught-up topic that might still
    /// bring an earlier one: it must exceed the broker's clock skew and
    /// fetch latency.
    pub merge_grace_ms: u64,
    /// Where undecodable and rejected inputs go.
    pub deadletter_topic: String,
    /// First backoff after a transient failure, ms; doubles up to `retry_max_ms`.
    pub retry_initial_ms: u64,
    /// Longest backoff, ms.
    pub retry_max_ms: u64,
    /// fsync every commit (survives power loss, not only `kill -9`).
    pub sync_writes: bool,
    /// Static group membership id of this process (e.g. its host name). A
    /// restarted process then gets its partitions back at once, without a
    /// rebalance of the whole fleet. Unset: dynamic membership.
    pub instance_id: Option<String>,
    /// glibc malloc arenas for the whole process (`M_ARENA_MAX`); 0 keeps
    /// glibc's default of 8 per core. librdkafka's and RocksDB's threads
    /// each get an arena of their own otherwise, and the memory freed in
    /// one is not reused by the others: 2 took 60 MB off a greylist
    /// consumer's 450 MB at no cost in throughput (docs/benchmarks.md).
    /// The `MALLOC_ARENA_MAX` environment variable, if set, wins.
    pub malloc_arena_max: u32,
    /// glibc malloc's mmap threshold, KiB (`M_MMAP_THRESHOLD`): a block
    /// this large or larger is mapped on its own and given back to the
    /// system when freed. 0 keeps glibc's sliding threshold, which rises
    /// to the largest block freed (up to 32 MiB): RocksDB's compactions
    /// then leave their multi-megabyte buffers in the arenas, and the
    /// resident size keeps the peak of the largest compaction. 128 took
    /// 15 MB off the peak and 34 MB off the end of a 10M-triplet greylist
    /// at the same speed (docs/benchmarks.md, session 18). The
    /// `MALLOC_MMAP_THRESHOLD_` environment variable, if set, wins.
    pub malloc_mmap_threshold_kb: u32,
    /// Longest a stopping consumer waits to leave its group, ms, after its
    /// last batch is committed. A group that cannot be left in time (the
    /// broker is down, the coordinator gone) is abandoned with a log line:
    /// state and offsets are already in RocksDB, so nothing is lost, and the
    /// group notices the member gone after `session.timeout.ms`.
    pub close_timeout_ms: u64,
    /// Overlap batches: while one batch's outputs wait for Kafka's
    /// acknowledgements and its `WriteBatch` is written (on a second
    /// thread), the next batch is polled, decoded and decided against the
    /// first one's pending state. The guarantee is the same either way
    /// (the runner's module documentation); `false` runs one batch at a
    /// time, for comparison.
    pub pipeline: bool,
    /// Threads that decide one batch, each taking its own input
    /// partitions' records in order. 1 decides on the loop's thread.
    pub decide_threads: usize,
    /// One memory budget, MiB, for the process: every consumer store it
    /// opens shares one RocksDB block cache of this size, and their
    /// memtables are charged to it through a `WriteBufferManager` (at most
    /// half of it), so cached blocks and memtables together stay within it.
    /// 0: no budget (RocksDB's defaults: a 32 MiB cache per store, two
    /// 64 MiB memtables per column family).
    pub store_memory_mb: u64,
    /// Consumers (by name) that keep a compacted changelog of their state
    /// in `<group>.changelog`, so that a member without a partition's
    /// state restores it from there, reading O(keys) rather than the whole
    /// input (`crate::changelog`, docs/changelog.md). Empty: none; a
    /// partition's state is rebuilt by replaying its input.
    pub changelog: Vec<String>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("run/state"),
            batch_max_events: 5000,
            batch_max_wait_ms: 0,
            merge_grace_ms: 1000,
            deadletter_topic: "deadletter".into(),
            retry_initial_ms: 200,
            retry_max_ms: 30_000,
            sync_writes: false,
            instance_id: None,
            malloc_arena_max: 2,
            malloc_mmap_threshold_kb: 128,
            close_timeout_ms: 10_000,
            pipeline: true,
            decide_threads: 1,
            store_memory_mb: 128,
            changelog: Vec::new(),
        }
    }
}

/// The Prometheus endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `host:port` to serve `/metrics` on; empty turns the exporter off.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

impl KafkaConfig {
    /// Problems with these settings, each naming its key and value.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.brokers.trim().is_empty() {
            out.push("kafka.brokers is empty".to_string());
        }
        out.extend(crate::replication::problems(
            "kafka",
            Some(self.replication_factor),
            self.min_insync_replicas,
        ));
        out.extend(crate::replication::Replication::defaults(self).problems());
        for (key, value) in &self.properties {
            if !value.is_str() {
                out.push(format!(
                    "kafka.properties.{key} = {value}: must be a string"
                ));
            }
        }
        for (key, path) in &self.property_files {
            if self.properties.contains_key(key) {
                out.push(format!(
                    "kafka.property_files.{key}: also set in kafka.properties; keep one"
                ));
            }
            match self.read_property_file(key) {
                Ok(v) if v.is_empty() => out.push(format!(
                    "kafka.property_files.{key} = {:?}: the file is empty",
                    path.display().to_string()
                )),
                Ok(_) => {}
                Err(e) => out.push(e.to_string()),
            }
        }
        out
    }

    /// The value of `key` from its file in `property_files`, or why not.
    pub fn read_property_file(&self, key: &str) -> Result<String, RuntimeError> {
        let path = self
            .property_files
            .get(key)
            .ok_or_else(|| RuntimeError::PropertyFileUnset {
                key: key.to_string(),
            })?;
        let text =
            std::fs::read_to_string(path).map_err(|source| RuntimeError::ReadPropertyFile {
                key: key.to_string(),
                path: path.display().to_string(),
                source,
            })?;
        let text = text.strip_suffix('\n').unwrap_or(&text);
        Ok(text.strip_suffix('\r').unwrap_or(text).to_string())
    }
}

impl RuntimeConfig {
    /// Problems with these settings, each naming its key and value.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.data_dir.as_os_str().is_empty() {
            out.push("runtime.data_dir is empty".to_string());
        }
        if !(1..=100_000).contains(&self.batch_max_events) {
            out.push(format!(
                "runtime.batch_max_events = {}: must be 1..=100000",
                self.batch_max_events
            ));
        }
        if self.batch_max_wait_ms > 10_000 {
            out.push(format!(
                "runtime.batch_max_wait_ms = {}: must be at most 10000",
                self.batch_max_wait_ms
            ));
        }
        if !(1..=60_000).contains(&self.merge_grace_ms) {
            out.push(format!(
                "runtime.merge_grace_ms = {}: must be 1..=60000",
                self.merge_grace_ms
            ));
        }
        if let Err(e) = check_topic_name(&self.deadletter_topic) {
            out.push(format!(
                "runtime.deadletter_topic = {:?}: {e}",
                self.deadletter_topic
            ));
        }
        if self.retry_initial_ms == 0 || self.retry_initial_ms > self.retry_max_ms {
            out.push(format!(
                "runtime.retry_initial_ms = {}: must be > 0 and <= retry_max_ms ({})",
                self.retry_initial_ms, self.retry_max_ms
            ));
        }
        if !(100..=600_000).contains(&self.close_timeout_ms) {
            out.push(format!(
                "runtime.close_timeout_ms = {}: must be 100..=600000",
                self.close_timeout_ms
            ));
        }
        if !(1..=64).contains(&self.decide_threads) {
            out.push(format!(
                "runtime.decide_threads = {}: must be 1..=64",
                self.decide_threads
            ));
        }
        if self.store_memory_mb != 0 && !(16..=65_536).contains(&self.store_memory_mb) {
            out.push(format!(
                "runtime.store_memory_mb = {}: must be 16..=65536, or 0 for RocksDB's defaults",
                self.store_memory_mb
            ));
        }
        for name in self.changelog.iter().filter(|n| n.trim().is_empty()) {
            out.push(format!(
                "runtime.changelog: {name:?} is not a consumer name"
            ));
        }
        if self.malloc_arena_max > 1024 {
            out.push(format!(
                "runtime.malloc_arena_max = {}: must be 0..=1024 (0: glibc's default)",
                self.malloc_arena_max
            ));
        }
        // glibc's HEAP_MAX mmap threshold on 64-bit: 32 MiB.
        if self.malloc_mmap_threshold_kb > 32 * 1024 {
            out.push(format!(
                "runtime.malloc_mmap_threshold_kb = {}: must be 0..=32768 (0: glibc's sliding threshold)",
                self.malloc_mmap_threshold_kb
            ));
        }
        out
    }

    /// Apply `malloc_arena_max` and `malloc_mmap_threshold_kb` to this
    /// process: call it first thing in `main`, before other threads start.
    /// Returns the values set (`None` for one left alone).
    pub fn apply_malloc_arenas(&self) -> (Option<u32>, Option<u32>) {
        let arenas = (self.malloc_arena_max != 0 && std::env::var_os("MALLOC_ARENA_MAX").is_none())
            .then_some(self.malloc_arena_max)
            .filter(|&n| mallopt(Tunable::ArenaMax, n));
        let kb = self.malloc_mmap_threshold_kb;
        let mmap = (kb != 0 && std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none())
            .then_some(kb)
            .filter(|&kb| mallopt(Tunable::MmapThreshold, kb.saturating_mul(1024)));
        (arenas, mmap)
    }
}

/// The glibc malloc tunables the runtime sets.
#[derive(Clone, Copy)]
enum Tunable {
    ArenaMax,
    MmapThreshold,
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn mallopt(tunable: Tunable, value: u32) -> bool {
    let value = i32::try_from(value).unwrap_or(i32::MAX);
    let param = match tunable {
        Tunable::ArenaMax => libc::M_ARENA_MAX,
        Tunable::MmapThreshold => libc::M_MMAP_THRESHOLD,
    };
    // SAFETY: mallopt only sets a glibc tunable. M_ARENA_MAX takes effect
    // for arenas created afterwards; M_MMAP_THRESHOLD (which also stops
    // the threshold from sliding) for allocations made afterwards.
    unsafe { libc::mallopt(param, value) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn mallopt(_: Tunable, _: u32) -> bool {
    false
}

impl MetricsConfig {
    /// Problems with these settings, each naming its key and value.
    pub fn problems(&self) -> Vec<String> {
        match self.listen.as_str() {
            "" => vec![],
            s => match s.parse::<SocketAddr>() {
                Ok(_) => vec![],
                Err(e) => vec![format!("metrics.listen = {s:?}: {e}")],
            },
        }
    }

    /// The address to serve on, if enabled.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.listen.parse().ok()
    }
}

/// Kafka's rules for a topic name.
pub fn check_topic_name(name: &str) -> Result<(), RuntimeError> {
    if name.is_empty() || name.len() > 249 {
        return Err(RuntimeError::TopicNameLength(name.len()));
    }
    if name == "." || name == ".." {
        return Err(RuntimeError::TopicNameDots);
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some(c) => Err(RuntimeError::TopicNameChar(c)),
        None => Ok(()),
    }
}

/// Read a TOML file (if given) and apply `MAILFLEET_` environment overrides.
pub fn load_document(
    path: Option<&std::path::Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<toml::Table, RuntimeError> {
    let shown = path.map_or("<defaults>".to_string(), |p| p.display().to_string());
    let mut doc = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| RuntimeError::ReadConfig {
                path: shown.clone(),
                source,
            })?;
            text.parse::<toml::Table>()
                .map_err(|e| RuntimeError::ParseConfig {
                    path: shown.clone(),
                    message: e.to_string(),
                })?
        }
        None => toml::Table::new(),
    };
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if !rest.contains("__") {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            return Err(RuntimeError::ParseConfig {
                path: shown,
                message: format!("environment variable {name}: empty key segment"),
            });
        }
        set_path(&mut doc, &path, parse_env_value(&value)).map_err(|e| {
            RuntimeError::ParseConfig {
                path: shown.clone(),
                message: format!("environment variable {name}: {e}"),
            }
        })?;
    }
    Ok(doc)
}

/// Deserialize a loaded document into a typed config, naming the bad key.
pub fn from_document<T: serde::de::DeserializeOwned>(
    doc: toml::Table,
    shown: &str,
) -> Result<T, RuntimeError> {
    T::deserialize(toml::Value::Table(doc)).map_err(|e| RuntimeError::ParseConfig {
        path: shown.to_string(),
        message: e.to_string().trim().to_string(),
    })
}

fn parse_env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

fn set_path(
    doc: &mut toml::Table,
    path: &[String],
    value: toml::Value,
) -> Result<(), RuntimeError> {
    let (last, parents) = path.split_last().ok_or(RuntimeError::EnvNoKey)?;
    let mut table = doc;
    for part in parents {
        let entry = table
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| RuntimeError::EnvNotATable { part: part.clone() })?;
    }
    table.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        #[serde(default)]
        kafka: KafkaConfig,
        #[serde(default)]
        runtime: RuntimeConfig,
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn environment_overrides_file_values_with_types() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[kafka]\nbrokers = \"file:1\"\n").unwrap();
        let doc = load_document(
            Some(&path),
            env(&[
                ("MAILFLEET_KAFKA__BROKERS", "env:2"),
                ("MAILFLEET_RUNTIME__BATCH_MAX_EVENTS", "500"),
                ("MAILFLEET_RUNTIME__SYNC_WRITES", "true"),
                ("OTHER", "ignored"),
                ("MAILFLEET_LOG", "debug"),
            ]),
        )
        .unwrap();
        let cfg: Doc = from_document(doc, "c.toml").unwrap();
        assert_eq!(cfg.kafka.brokers, "env:2");
        assert_eq!(cfg.runtime.batch_max_events, 500);
        assert!(cfg.runtime.sync_writes);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let doc = load_document(None, env(&[("MAILFLEET_KAFKA__BROKER", "x")])).unwrap();
        let err = from_document::<Doc>(doc, "c.toml").unwrap_err().to_string();
        assert!(err.contains("broker"), "{err}");

        let rt = RuntimeConfig {
            batch_max_events: 0,
            deadletter_topic: "dead letters".into(),
            malloc_arena_max: 5000,
            ..RuntimeConfig::default()
        };
        let problems = rt.problems().join("\n");
        assert!(
            problems.contains("runtime.batch_max_events = 0"),
            "{problems}"
        );
        assert!(
            problems.contains("runtime.malloc_arena_max = 5000"),
            "{problems}"
        );
        assert!(problems.contains("\"dead letters\""), "{problems}");
        let m = MetricsConfig {
            listen: "localhost".into(),
        };
        assert!(m.problems()[0].contains("\"localhost\""));
    }

    #[test]
    fn property_files_are_read_and_bad_ones_named() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("kafka.password");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let mut kafka = KafkaConfig::default();
        kafka
            .property_files
            .insert("sasl.password".into(), secret.clone());
        assert!(kafka.problems().is_empty(), "{:?}", kafka.problems());
        assert_eq!(kafka.read_property_file("sasl.password").unwrap(), "s3cret");
        kafka
            .property_files
            .insert("ssl.key.password".into(), dir.path().join("missing"));
        std::fs::write(&secret, "").unwrap();
        let problems = kafka.problems().join("\n");
        assert!(
            problems.contains("kafka.property_files.sasl.password"),
            "{problems}"
        );
        assert!(problems.contains("the file is empty"), "{problems}");
        assert!(
            problems.contains("kafka.property_files.ssl.key.password"),
            "{problems}"
        );
        assert!(problems.contains("missing"), "{problems}");
        assert!(!format!("{kafka:?}").contains("s3cret"));
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = load_document(Some(std::path::Path::new("/nonexistent/x.toml")), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/x.toml"), "{err}");
    }
}
