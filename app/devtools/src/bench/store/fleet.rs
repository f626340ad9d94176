//! mailfleet's side in this process: the scratch topics, the LMTP server,
//! the scanner and the storage writer.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use mailfleet_blob::BlobStore;
use mailfleet_fleet::config::Config;
use mailfleet_runtime::{
    admin, config::RuntimeConfig, topology::TopicSpec, RunSpec, RunStats, RuntimeError, Shutdown,
    Topology,
};
use mailfleet_scanner::{Scanner, ScannerConfig};
use mailfleet_storage::writer::{StorageConfig, StorageWriter};
use rdkafka::{
    admin::{AdminClient, AdminOptions},
    client::DefaultClientContext,
};
use tokio::task::JoinHandle;

use super::{StoreLoad, POLL, TOPICS};

/// The scratch topics, with `partitions` (one for the dead letters), once
/// the broker's metadata shows them all: a consumer that subscribes to a
/// topic its first metadata lacks waits for librdkafka's next refresh
/// (`topic.metadata.refresh.interval.ms`, 5 minutes).
async fn create_topics(cfg: &Config, id: &str, partitions: i32) -> anyhow::Result<()> {
    let topics: BTreeMap<String, i32> = TOPICS
        .iter()
        .map(|&name| {
            (
                format!("{id}.{name}"),
                if name == "dead" { 1 } else { partitions },
            )
        })
        .collect();
    let topology = Topology {
        topics: topics
            .iter()
            .map(|(t, &n)| (t.clone(), TopicSpec::scratch(n)))
            .collect(),
        consumers: BTreeMap::new(),
    };
    admin::apply(&cfg.kafka, &topology)
        .await
        .context("creating the scratch topics")?;
    let client: AdminClient<DefaultClientContext> = admin::client_config(&cfg.kafka).create()?;
    let started = Instant::now();
    for (topic, &n) in &topics {
        loop {
            let md = client
                .inner()
                .fetch_metadata(Some(topic), Duration::from_secs(5))?;
            let seen = md.topics().iter().find(|t| t.error().is_none());
            if seen.is_some_and(|t| t.partitions().len() == n as usize) {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(30),
                "{topic} is not in the broker's metadata 30 s after its creation"
            );
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(())
}

/// Best effort: a run that failed early may not have made them.
pub(super) async fn delete_topics(cfg: &Config, id: &str) {
    let names: Vec<String> = TOPICS.iter().map(|t| format!("{id}.{t}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let admin: Result<AdminClient<DefaultClientContext>, _> =
        admin::client_config(&cfg.kafka).create();
    if let Ok(admin) = admin {
        let _ = admin.delete_topics(&names, &opts).await;
    }
}

/// The LMTP server, the scanner and the storage writer in this process.
pub(super) struct Fleet {
    pub(super) port: u16,
    pub(super) mail_root: PathBuf,
    shutdown: Shutdown,
    consumers: Vec<(&'static str, JoinHandle<Result<RunStats, RuntimeError>>)>,
}

impl Fleet {
    pub(super) async fn start(
        cfg: &Config,
        load: &StoreLoad,
        id: &str,
        dir: &Path,
        owner: (Option<u32>, Option<u32>),
    ) -> anyhow::Result<Fleet> {
        create_topics(cfg, id, load.partitions).await?;
        let t = |name: &str| scratch_topic(id, name);
        let blobs = Arc::new(BlobStore::open(dir.join("blobs"))?);
        let shutdown = Shutdown::new();
        let port = crate::bench::lmtp_in_process(
            cfg,
            &t("received"),
            load.sessions * 4,
            blobs.clone(),
            &shutdown,
        )
        .await?;
        let runtime = RuntimeConfig {
            data_dir: dir.join("state"),
            deadletter_topic: t("dead"),
            ..cfg.runtime.clone()
        };
        let spec = |name: &str, inputs: &[&str]| {
            let inputs = inputs.iter().map(|i| t(i)).collect();
            RunSpec::new(format!("{id}-{name}"), inputs, &cfg.kafka, &runtime)
        };
        let scanner = scanner_config(cfg, id);
        let mail_root = dir.join("mail");
        let storage = storage_config(cfg, id, dir, &mail_root, owner);
        // The storage writer's inputs, as in pipelines/topology.toml.
        let storage_inputs = ["scanned", "accounts", "purge", "stored"];
        let scanner = Scanner::new(scanner, blobs.clone());
        let writer = StorageWriter::new(storage, blobs);
        let consumers = vec![
            (
                "scanner",
                tokio::spawn(mailfleet_runtime::run(
                    scanner,
                    spec("scanner", &["received"]),
                    shutdown.clone(),
                )),
            ),
            (
                "storage",
                tokio::spawn(mailfleet_runtime::run(
                    writer,
                    spec("storage", &storage_inputs),
                    shutdown.clone(),
                )),
            ),
        ];
        Ok(Fleet {
            port,
            mail_root,
            shutdown,
            consumers,
        })
    }

    /// Stop all; the dead letters of both consumers.
    pub(super) async fn stop(self) -> anyhow::Result<u64> {
        self.shutdown.trigger();
        let mut dead = 0;
        for (name, handle) in self.consumers {
            let stats = handle.await?.with_context(|| format!("consumer {name}"))?;
            dead += stats.dead_letters;
        }
        Ok(dead)
    }
}

/// The scratch topic `<run id>.<name>`.
fn scratch_topic(id: &str, name: &str) -> String {
    format!("{id}.{name}")
}

/// The scanner's settings: with clamd, on the scratch topics.
fn scanner_config(cfg: &Config, id: &str) -> ScannerConfig {
    let t = |name: &str| scratch_topic(id, name);
    ScannerConfig {
        use_clamd: true,
        scanned_topic: t("scanned"),
        accounts_topic: t("accounts"),
        alerts_topic: t("alerts"),
        ..cfg.consumers.scanner.clone()
    }
}

/// The storage writer's settings: on the scratch topics, into `mail_root`
/// and a quarantine in `dir`, its files owned by `owner`.
fn storage_config(
    cfg: &Config,
    id: &str,
    dir: &Path,
    mail_root: &Path,
    owner: (Option<u32>, Option<u32>),
) -> StorageConfig {
    let t = |name: &str| scratch_topic(id, name);
    StorageConfig {
        mail_root: mail_root.display().to_string(),
        quarantine_dir: dir.join("quarantine").display().to_string(),
        mail_uid: owner.0,
        mail_gid: owner.1,
        stored_topic: t("stored"),
        usage_topic: t("usage"),
        notify_topic: t("notify"),
        ..cfg.consumers.storage.clone()
    }
}
