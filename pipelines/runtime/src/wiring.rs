//! What a consumer is built from ([`Wiring`]): its name, its route in the
//! topology, the Kafka and runtime settings, and whether this run writes
//! to Kafka. Each consumer crate has a `build(config, …, &Wiring)`; the
//! registry (`app/fleet`) calls it, one line a consumer.
//!
//! Here too: recording a consumer's settings in its input topics (the
//! `ConfigChanged` of [`crate::settings`]) when a live run starts with
//! settings other than those in force.

use mailfleet_events::{config::ConfigChanged, Envelope};

use crate::{
    config::{KafkaConfig, RuntimeConfig},
    producer::EventProducer,
    settings::Settings,
    time::now_ms,
    topology::{Route, Topology},
    RunSpec, RuntimeError, Shutdown, Store,
};

/// What a consumer is built from.
#[derive(Clone)]
pub struct Wiring {
    /// The consumer's name: its route in the topology, its state folder.
    pub name: String,
    pub route: Route,
    pub topology: Topology,
    pub kafka: KafkaConfig,
    pub runtime: RuntimeConfig,
    /// Whether this run produces (a live run) or only decides (a replay,
    /// an audit): settings are recorded only by a live run.
    pub produce: bool,
    pub shutdown: Shutdown,
}

impl Wiring {
    /// The wiring of consumer `name` for a run of `spec`.
    pub fn new(
        name: &str,
        topology: &Topology,
        spec: &RunSpec,
        shutdown: &Shutdown,
    ) -> Result<Wiring, RuntimeError> {
        Ok(Wiring {
            name: name.to_string(),
            route: topology.route(name)?.clone(),
            topology: topology.clone(),
            kafka: spec.kafka.clone(),
            runtime: spec.runtime.clone(),
            produce: spec.produce,
            shutdown: shutdown.clone(),
        })
    }

    /// The first topic the consumer writes to ("" when it writes none).
    pub fn first_output(&self) -> String {
        self.route.writes.first().cloned().unwrap_or_default()
    }

    /// The most partitions any of its input topics has (1 if unknown).
    pub fn input_partitions(&self) -> i32 {
        self.route
            .reads
            .iter()
            .filter_map(|t| self.topology.topics.get(t).map(|spec| spec.partitions))
            .max()
            .unwrap_or(1)
    }

    /// Record `settings` as the ones the consumer decides with from here
    /// on (a live run only): a `ConfigChanged` into every partition of its
    /// input topics, unless its local store says they are in force in
    /// every partition already. (Every member of a fleet must run with the
    /// same settings; a member whose store lacks a partition writes the
    /// same settings again, which the decider ignores.)
    pub async fn record_settings(&self, settings: &Settings) -> Result<(), RuntimeError> {
        if !self.produce {
            return Ok(());
        }
        let Some(topic) = self.route.reads.first() else {
            return Ok(());
        };
        let partitions = self.topology.topics.get(topic).map_or(1, |t| t.partitions);
        let store_dir = self.runtime.data_dir.join(&self.name);
        let in_force: Vec<(i32, String)> = match Store::open_read_only(&store_dir) {
            Ok(store) => store
                .scan_table(b'@')?
                .into_iter()
                .map(|(p, _, json)| {
                    let json = String::from_utf8_lossy(&json).into_owned();
                    (p, Settings::from_json(json).hash)
                })
                .collect(),
            Err(_) => Vec::new(), // no store yet
        };
        let current = (0..partitions).all(|p| in_force.contains(&(p, settings.hash.clone())));
        if current {
            tracing::info!(consumer = %self.name, hash = %settings.hash, "settings in force");
            return Ok(());
        }
        self.publish_settings(settings).await
    }

    /// Write `settings` as a `ConfigChanged` into every partition of each
    /// input topic: on whichever topic an event comes, the settings
    /// recorded before it on that topic are in force for it.
    pub async fn publish_settings(&self, settings: &Settings) -> Result<(), RuntimeError> {
        let name = &self.name;
        let producer = EventProducer::new(&self.kafka, &format!("mailfleet-{name}-settings"))?;
        let now = now_ms();
        for topic in &self.route.reads {
            let partitions = self.topology.topics.get(topic).map_or(1, |t| t.partitions);
            for partition in 0..partitions {
                let event = ConfigChanged {
                    envelope: Envelope::new(
                        format!("config:{name}:{}:{topic}:{partition}", &settings.hash[..16]),
                        now,
                        format!("mailfleet-{name}"),
                    ),
                    consumer: name.to_string(),
                    settings: settings.json.clone(),
                    hash: settings.hash.clone(),
                };
                let bytes = mailfleet_events::encode(&event)?;
                producer.send_to_partition(topic, partition, &bytes).await?;
            }
        }
        tracing::info!(consumer = %name, hash = %settings.hash, settings = %settings.json,
            topics = ?self.route.reads, "new settings recorded (ConfigChanged)");
        Ok(())
    }

    /// `message` about this consumer's config, as a config error
    /// (`consumers.<name>: <message>`).
    pub fn invalid(&self, message: impl std::fmt::Display) -> RuntimeError {
        RuntimeError::InvalidConfig(vec![format!("consumers.{}: {message}", self.name)])
    }
}
