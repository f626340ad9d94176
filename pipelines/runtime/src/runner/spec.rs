//! [`RunSpec`]: where and how one consumer runs, built one way
//! ([`RunSpec::new`], [`RunSpec::for_route`], then the setters), and
//! [`RunStats`], what one run did.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc};

use crate::config::{KafkaConfig, RuntimeConfig};

/// Where and how one consumer runs.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// Consumer group id (from the topology).
    pub group: String,
    /// Input topics (from the topology).
    pub inputs: Vec<String>,
    pub kafka: KafkaConfig,
    pub runtime: RuntimeConfig,
    /// Run effects (false when replaying for an audit).
    pub run_effects: bool,
    /// Stop by itself once this many inputs were handled (demo, benchmarks).
    pub stop_after: Option<u64>,
    /// Read each listed partition only up to this offset (exclusive), and
    /// stop once every one is there: a rebuild or an audit "as of" these
    /// offsets. Other partitions are not read.
    pub stop_at: Option<BTreeMap<(String, i32), i64>>,
    /// Where a partition without a stored offset starts (a replay `--from`
    /// a time); unlisted ones start at the beginning.
    pub start_at: Option<BTreeMap<(String, i32), i64>>,
    /// Produce outputs and dead letters (false when replaying: nothing is
    /// written to Kafka; `capture`, if set, sees what would have been).
    pub produce: bool,
    /// Sees every output and dead letter of a committed batch.
    pub capture: Option<Capture>,
    /// Counts the inputs handled, for a progress display.
    pub progress: Option<Arc<std::sync::atomic::AtomicU64>>,
}

/// Sees each output as it would be produced: topic, key, encoded event.
#[derive(Clone)]
pub struct Capture(pub Arc<CaptureFn>);

/// What a [`Capture`] calls: (topic, key, encoded event).
pub type CaptureFn = dyn Fn(&str, &[u8], &[u8]) + Send + Sync;

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Capture")
    }
}

impl RunSpec {
    /// A live run of group `group` over `inputs`: effects on, outputs
    /// produced, every partition from its stored offset, no end.
    pub fn new(
        group: impl Into<String>,
        inputs: Vec<String>,
        kafka: &KafkaConfig,
        runtime: &RuntimeConfig,
    ) -> RunSpec {
        RunSpec {
            group: group.into(),
            inputs,
            kafka: kafka.clone(),
            runtime: runtime.clone(),
            run_effects: true,
            stop_after: None,
            stop_at: None,
            start_at: None,
            produce: true,
            capture: None,
            progress: None,
        }
    }

    /// A live run of a topology route: its group and inputs.
    pub fn for_route(
        route: &crate::topology::Route,
        kafka: &KafkaConfig,
        runtime: &RuntimeConfig,
    ) -> RunSpec {
        RunSpec::new(route.group.clone(), route.reads.clone(), kafka, runtime)
    }

    /// Stop by itself once `inputs` inputs were handled.
    pub fn stop_after(mut self, inputs: u64) -> RunSpec {
        self.stop_after = Some(inputs);
        self
    }

    /// Keep the state (and the offsets) in `data_dir`.
    pub fn data_dir(mut self, data_dir: PathBuf) -> RunSpec {
        self.runtime.data_dir = data_dir;
        self
    }

    /// A replay of this run into `data_dir`: a throwaway group, no effects,
    /// nothing produced.
    pub fn replay(mut self, data_dir: PathBuf, stamp: &str) -> RunSpec {
        self.group = format!("{}-replay-{stamp}", self.group);
        self.runtime.data_dir = data_dir;
        self.run_effects = false;
        self.produce = false;
        self
    }
}

/// Totals of one run, for reports and benchmarks.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunStats {
    pub events: u64,
    pub outputs: u64,
    pub dead_letters: u64,
    pub batches: u64,
}
