//! A private three-node Kafka cluster for a test: `ops/kafka cluster` with
//! its own run folder and ports (`MAILFLEET_RUN_DIR`,
//! `MAILFLEET_KAFKA_CLUSTER_PORT_BASE`), so that a node killed or stopped
//! disturbs no other test. Dropping it resets it (every node stopped, data
//! deleted), also when the test fails.

use std::{
    path::PathBuf,
    process::{Command, Output},
    time::{Duration, Instant},
};

use mailfleet_runtime::{admin, config::KafkaConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::{repo_root, scratch_dir};

/// Nodes in the cluster `ops/kafka cluster` runs.
pub const NODES: u16 = 3;

/// A running private cluster.
pub struct Cluster {
    /// Its run folder: node N keeps its files in `kafka-cluster/nodeN/`.
    pub run_dir: PathBuf,
    /// Node N's client port is `base + N - 1`, its controller's `base + 100 + N - 1`.
    pub base: u16,
    /// Node N's address (`MAILFLEET_KAFKA_NODE_HOSTS`): 127.0.0.1 each, or
    /// the hosts of [`crate::hosts::Hosts`].
    pub node_hosts: [String; NODES as usize],
}

impl Cluster {
    /// Start the three nodes (each answering) in a scratch folder of `test`.
    pub fn start(test: &str) -> anyhow::Result<Cluster> {
        let cluster = Cluster::prepare(test, ["127.0.0.1"; NODES as usize].map(String::from))?;
        cluster.ops(&["cluster", "start"])?;
        Ok(cluster)
    }

    /// A cluster whose node N runs on `node_hosts[N - 1]`, not started
    /// (see [`crate::hosts::Hosts::start_kafka`]); dropping it resets it.
    pub fn prepare(test: &str, node_hosts: [String; NODES as usize]) -> anyhow::Result<Cluster> {
        Ok(Cluster {
            run_dir: scratch_dir(&format!("{test}-kafka-cluster")),
            base: free_base()?,
            node_hosts,
        })
    }

    /// `ops/kafka` with this cluster's folder and ports, to add arguments to.
    pub fn command(&self) -> Command {
        let mut command = Command::new(repo_root().join("ops/kafka"));
        command
            .env("MAILFLEET_RUN_DIR", &self.run_dir)
            .env("MAILFLEET_KAFKA_CLUSTER_PORT_BASE", self.base.to_string())
            .env("MAILFLEET_KAFKA_NODE_HOSTS", self.node_hosts.join(" "));
        command
    }

    fn ops(&self, args: &[&str]) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let out = self.command().args(args).output()?;
        anyhow::ensure!(
            out.status.success(),
            "ops/kafka {} (base port {}): {}\n{}",
            args.join(" "),
            self.base,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(started.elapsed())
    }

    /// `ops/kafka node N <action>` (`start` waits until it answers); how
    /// long that took.
    pub fn node(&self, n: u16, action: &str) -> anyhow::Result<Duration> {
        self.ops(&["node", &n.to_string(), action])
    }

    /// `kill -9` node N's JVM: a host lost, no controlled shutdown.
    pub fn kill(&self, n: u16) -> anyhow::Result<()> {
        let pid_file = self
            .run_dir
            .join(format!("kafka-cluster/node{n}/kafka.pid"));
        let pid = std::fs::read_to_string(&pid_file)?;
        let status = Command::new("kill").args(["-KILL", pid.trim()]).status()?;
        anyhow::ensure!(status.success(), "kill -9 {} ({pid_file:?})", pid.trim());
        Ok(())
    }

    /// The bootstrap list: every node's `<host>:<port>`.
    pub fn brokers(&self) -> String {
        (0..NODES)
            .map(|i| format!("{}:{}", self.node_hosts[usize::from(i)], self.base + i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Client settings for the cluster.
    pub fn kafka_config(&self) -> KafkaConfig {
        KafkaConfig {
            brokers: self.brokers(),
            ..KafkaConfig::default()
        }
    }

    /// Each partition of `topic` with its replicas and in-sync replicas
    /// (broker ids), as the cluster's metadata shows them now.
    pub fn replicas(&self, topic: &str) -> anyhow::Result<Vec<Placement>> {
        let client: BaseConsumer = admin::client_config(&self.kafka_config()).create()?;
        let md = client.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let mut out: Vec<Placement> = md
            .topics()
            .iter()
            .flat_map(|t| t.partitions())
            .map(|p| Placement {
                partition: p.id(),
                replicas: p.replicas().to_vec(),
                isr: p.isr().to_vec(),
            })
            .collect();
        out.sort_by_key(|p| p.partition);
        Ok(out)
    }

    /// Run `mailfleet --config <config> <args>` against the cluster with
    /// extra environment (e.g. `MAILFLEET_KAFKA__REPLICATION_FACTOR`).
    pub fn mailfleet(
        &self,
        config: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Output> {
        Ok(Command::new(crate::mailfleet_bin())
            .arg("--config")
            .arg(config)
            .args(args)
            .envs(env.iter().copied())
            .output()?)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(e) = self.ops(&["cluster", "reset"]) {
            eprintln!("resetting the private Kafka cluster: {e}");
        }
    }
}

/// Where one partition's copies are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub partition: i32,
    /// Broker ids holding a replica.
    pub replicas: Vec<i32>,
    /// Those in sync with the leader.
    pub isr: Vec<i32>,
}

/// A base port whose three client ports and three controller ports are
/// free. Taken from 13000..14900: below the blocks [`crate::free_port`]
/// hands out (20000..32000) and the kernel's ephemeral range, above the
/// fixed ports of `ops/` (e.g. 10023, 11334).
fn free_base() -> anyhow::Result<u16> {
    let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    for _ in 0..200 {
        let base = 13_000 + rand::random::<u16>() % 1_900;
        let mut ports = (0..NODES).flat_map(|i| [base + i, base + 100 + i]);
        if ports.all(free) {
            return Ok(base);
        }
    }
    anyhow::bail!("no free base port for a Kafka cluster in 13000..14900")
}
