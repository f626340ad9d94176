//! The registered consumers: one line each in [`run_consumer`]. Adding a
//! consumer is adding its crate, its route in `pipelines/topology.toml`,
//! its config table in [`crate::config::ConsumersConfig`], and one arm here.

use std::{sync::Arc, time::Duration};

use mailfleet_blob::BlobStore;
use mailfleet_counter::Counter;
use mailfleet_directory::Directory;
use mailfleet_events::{config::ConfigChanged, Envelope};
use mailfleet_greylist::{whitelist::WhitelistFiles, Greylist};
use mailfleet_lifecycle::{deleter::Deleter, Lifecycle};
use mailfleet_notifier::Notifier;
use mailfleet_outbound::Outbound;
use mailfleet_runtime::{
    producer::EventProducer, run, settings::Settings, RunSpec, RunStats, RuntimeError, Shutdown,
    Store, Topology,
};
use mailfleet_scanner::Scanner;
use mailfleet_scheduler::purger::Purger;
use mailfleet_storage::{index::Indexer, writer::StorageWriter};

use crate::config::Config;

/// Every consumer `mailfleet run` knows.
pub const NAMES: &[&str] = &[
    "counter",
    "greylist",
    "scanner",
    "storage",
    "index",
    "lifecycle",
    "deleter",
    "directory",
    "notifier",
    "purger",
    "outbound",
    "reporter",
];

/// Run one consumer until shutdown.
pub async fn run_consumer(
    name: &str,
    cfg: &Config,
    topology: &Topology,
    shutdown: Shutdown,
) -> Result<RunStats, RuntimeError> {
    let route = topology.route(name)?;
    let spec = RunSpec::for_route(route, &cfg.kafka, &cfg.runtime);
    mailfleet_runtime::metrics::init_consumer(name);
    run_consumer_with(name, cfg, topology, spec, shutdown).await
}

/// Run one consumer with `spec` (a replay's, say) until shutdown or its
/// stop. A spec that captures outputs without running effects (an audit)
/// is refused for a consumer whose effect emits events: those cannot be
/// recomputed without doing the effect again.
pub async fn run_consumer_with(
    name: &str,
    cfg: &Config,
    topology: &Topology,
    spec: RunSpec,
    shutdown: Shutdown,
) -> Result<RunStats, RuntimeError> {
    let route = topology.route(name)?;
    let first_output = || route.writes.first().cloned().unwrap_or_default();
    match name {
        "counter" => {
            run(
                Counter::new(cfg.consumers.counter.clone(), first_output()),
                spec,
                shutdown,
            )
            .await
        }
        "greylist" => {
            let g = &cfg.consumers.greylist;
            let lists =
                WhitelistFiles::load(g.whitelist_clients.clone(), g.whitelist_recipients.clone())
                    .map_err(|e| RuntimeError::InvalidConfig(vec![e.to_string()]))?;
            lists.watch(Duration::from_secs(g.whitelist_reload_s));
            let greylist = Greylist::new(g.clone(), lists.clone(), first_output());
            if spec.produce {
                let settings = greylist.settings().map_err(|e| {
                    RuntimeError::InvalidConfig(vec![format!("consumers.greylist: {e}")])
                })?;
                let recorded = settings.hash.clone();
                record_settings(cfg, name, route, topology, settings).await?;
                // An edited whitelist file is new settings: recorded in the
                // log, and in force from there, like any other change.
                let (cfg, route, topology) = (cfg.clone(), route.clone(), topology.clone());
                let (every, stop) = (Duration::from_secs(g.whitelist_reload_s), shutdown.clone());
                let g = g.clone();
                tokio::spawn(async move {
                    let mut last = recorded;
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep(every) => {}
                            _ = stop.wait() => return,
                        }
                        let settings = match mailfleet_greylist::settings_of(&g, &lists) {
                            Ok(s) if s.hash != last => s,
                            Ok(_) => continue,
                            Err(e) => {
                                tracing::error!(error = %e, "greylist settings not recorded");
                                continue;
                            }
                        };
                        let hash = settings.hash.clone();
                        match publish_settings(&cfg, "greylist", &route, &topology, &settings).await
                        {
                            Ok(()) => last = hash,
                            Err(e) => {
                                tracing::error!(error = %e, "greylist settings not recorded; retrying")
                            }
                        }
                    }
                });
            }
            run(greylist, spec, shutdown).await
        }
        "scanner" => {
            let blobs = BlobStore::open(&cfg.blobs.dir)
                .map_err(|e| RuntimeError::InvalidConfig(vec![format!("blobs.dir: {e}")]))?;
            let scanner = Scanner::new(cfg.consumers.scanner.clone(), Arc::new(blobs));
            run(scanner, spec, shutdown).await
        }
        "storage" => {
            let blobs = BlobStore::open(&cfg.blobs.dir)
                .map_err(|e| RuntimeError::InvalidConfig(vec![format!("blobs.dir: {e}")]))?;
            let writer = StorageWriter::new(cfg.consumers.storage.clone(), Arc::new(blobs));
            if spec.produce {
                let settings = writer.settings().map_err(|e| {
                    RuntimeError::InvalidConfig(vec![format!("consumers.storage: {e}")])
                })?;
                record_settings(cfg, name, route, topology, settings).await?;
            }
            run(writer, spec, shutdown).await
        }
        "index" => run(Indexer::new(first_output()), spec, shutdown).await,
        "lifecycle" => {
            let lifecycle = Lifecycle::new(cfg.consumers.lifecycle.clone());
            if spec.produce {
                let settings = lifecycle.settings().map_err(|e| {
                    RuntimeError::InvalidConfig(vec![format!("consumers.lifecycle: {e}")])
                })?;
                record_settings(cfg, name, route, topology, settings).await?;
            }
            run(lifecycle, spec, shutdown).await
        }
        "deleter" => {
            let blobs = BlobStore::open(&cfg.blobs.dir)
                .map_err(|e| RuntimeError::InvalidConfig(vec![format!("blobs.dir: {e}")]))?;
            let deleter = Deleter::new(cfg.consumers.deleter.clone(), Arc::new(blobs));
            run(deleter, spec, shutdown).await
        }
        "directory" => {
            let directory = Directory::new(cfg.consumers.directory.clone(), cfg.ldap.clone())
                .map_err(RuntimeError::InvalidConfig)?;
            run(directory, spec, shutdown).await
        }
        "notifier" => {
            let n = &cfg.consumers.notifier;
            let notifier = Notifier::new(n, &n.sent_log_dir(&cfg.runtime.data_dir))
                .map_err(|e| RuntimeError::InvalidConfig(vec![e.to_string()]))?;
            run(notifier, spec, shutdown).await
        }
        "purger" => {
            // Its inputs are co-partitioned: one lane per partition.
            let partitions = route
                .reads
                .iter()
                .filter_map(|t| topology.topics.get(t).map(|spec| spec.partitions))
                .max()
                .unwrap_or(1);
            let purger = Purger::new(cfg.consumers.purger.clone(), partitions);
            run(purger, spec, shutdown).await
        }
        "outbound" => {
            let outbound = Outbound::new(cfg.consumers.outbound.clone());
            if spec.produce {
                let settings = outbound.settings().map_err(|e| {
                    RuntimeError::InvalidConfig(vec![format!("consumers.outbound: {e}")])
                })?;
                record_settings(cfg, name, route, topology, settings).await?;
            }
            run(outbound, spec, shutdown).await
        }
        "reporter" => run(mailfleet_report::Reporter, spec, shutdown).await,
        other => Err(RuntimeError::InvalidConfig(vec![format!(
            "unknown consumer {other:?} (known: {})",
            NAMES.join(", ")
        )])),
    }
}

/// Record `settings` as the ones `name` decides with from here on: a
/// `ConfigChanged` into every partition of its input topics, unless
/// its local store says they are in force in every partition already.
/// (Every member of a fleet must run with the same settings; a member
/// whose store lacks a partition writes the same settings again, which
/// the decider ignores.)
async fn record_settings(
    cfg: &Config,
    name: &str,
    route: &mailfleet_runtime::topology::Route,
    topology: &Topology,
    settings: Settings,
) -> Result<(), RuntimeError> {
    let Some(topic) = route.reads.first() else {
        return Ok(());
    };
    let partitions = topology.topics.get(topic).map_or(1, |t| t.partitions);
    let store_dir = cfg.runtime.data_dir.join(name);
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
        tracing::info!(consumer = %name, hash = %settings.hash, "settings in force");
        return Ok(());
    }
    publish_settings(cfg, name, route, topology, &settings).await
}

/// Write `settings` as a `ConfigChanged` into every partition of each of
/// `name`'s input topics: on whichever topic an event comes, the settings
/// recorded before it on that topic are in force for it.
async fn publish_settings(
    cfg: &Config,
    name: &str,
    route: &mailfleet_runtime::topology::Route,
    topology: &Topology,
    settings: &Settings,
) -> Result<(), RuntimeError> {
    let producer = EventProducer::new(&cfg.kafka, &format!("mailfleet-{name}-settings"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    for topic in &route.reads {
        let partitions = topology.topics.get(topic).map_or(1, |t| t.partitions);
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
            let bytes = mailfleet_events::encode(&event).map_err(|e| {
                RuntimeError::InvalidConfig(vec![format!("encoding ConfigChanged: {e}")])
            })?;
            producer.send_to_partition(topic, partition, &bytes).await?;
        }
    }
    tracing::info!(consumer = %name, hash = %settings.hash, settings = %settings.json,
        topics = ?route.reads, "new settings recorded (ConfigChanged)");
    Ok(())
}

/// Consumers all of whose outputs are decided, none emitted by an effect:
/// `mailfleet audit decisions` compares every output of theirs.
pub const ALL_DECIDED: &[&str] = &[
    "counter",
    "greylist",
    "index",
    "lifecycle",
    "purger",
    "outbound",
];
