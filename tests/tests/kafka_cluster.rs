//! A replicated Kafka (`ops/kafka cluster`: three KRaft nodes, a private
//! instance on its own ports and folder) and what mailfleet does with it
//! (docs/reliability.md, "A replicated Kafka"):
//! - `topics apply` with `kafka.replication_factor = 3` and
//!   `kafka.min_insync_replicas = 2` puts every partition on 3 brokers, all
//!   in sync, with min ISR 2; applied again, nothing changes;
//! - a declaration that would lower the replication factor, or ask for
//!   more replicas than the cluster has brokers, or a min ISR above the
//!   factor, is refused naming the key and value (and the topic);
//! - a running consumer goes on through `kill -9` of one node and its
//!   restart, and counts every input exactly once;
//! - with that node down (its address still the first bootstrap address),
//!   a topic is read to its end, as audits and restores read it.
//!
//! One test, in phases: the cluster takes half a minute to start on two
//! busy cores, and three more JVMs side by side would not help.

use std::{path::PathBuf, time::Duration};

use mailfleet_tests::{
    cluster::Cluster,
    outage::{alive, wait_caught_up},
    *,
};

const PARTITIONS: i32 = 6;
const KEYS: u64 = 40;
const BATCH: u64 = 2_000;

const RF_3: [(&str, &str); 2] = [
    ("MAILFLEET_KAFKA__REPLICATION_FACTOR", "3"),
    ("MAILFLEET_KAFKA__MIN_INSYNC_REPLICAS", "2"),
];

/// The counting consumer's world, its topics not created yet, and a
/// config for it on the cluster.
struct World {
    w: TestWorld,
    config: PathBuf,
}

impl World {
    fn new(cluster: &Cluster) -> anyhow::Result<World> {
        let w = TestWorld::unapplied("kafka-cluster", PARTITIONS);
        let config = ConfigFiles {
            dir: &w.dir,
            topology_file: "topology.toml",
            topology: &w.topology,
            brokers: &cluster.brokers(),
            data_dir: &w.dir.join("state"),
            deadletter: &w.deadletter,
            metrics_port: free_port(),
        }
        .write("counter.toml", "")?;
        Ok(World { w, config })
    }

    fn topics(&self) -> [&String; 2] {
        [&self.w.input, &self.w.output]
    }
}

/// `mailfleet topics apply` with `env`: whether it succeeded, and all it printed.
fn apply(cluster: &Cluster, world: &World, env: &[(&str, &str)]) -> anyhow::Result<(bool, String)> {
    let out = cluster.mailfleet(&world.config, &["topics", "apply"], env)?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Ok((out.status.success(), text))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_three_node_cluster_replicates_refuses_bad_replication_and_survives_a_node_lost(
) -> anyhow::Result<()> {
    let cluster = Cluster::start("replicated")?;
    let world = World::new(&cluster)?;
    topics_are_replicated(&cluster, &world).await?;
    bad_replication_is_refused(&cluster, &world)?;
    a_consumer_survives_a_node_killed(&cluster, &world).await
}

async fn topics_are_replicated(cluster: &Cluster, world: &World) -> anyhow::Result<()> {
    let w = &world.w;
    let (ok, text) = apply(cluster, world, &RF_3)?;
    anyhow::ensure!(ok, "topics apply on the cluster failed:\n{text}");
    for topic in world.topics() {
        assert!(text.contains(&format!("{topic}: Created")), "{text}");
    }
    // A new partition's followers join the ISR once they fetched.
    for topic in world.topics() {
        wait_until(
            &format!("{topic}: 3 replicas, all in sync"),
            Duration::from_secs(60),
            || {
                cluster.replicas(topic).is_ok_and(|ps| {
                    ps.len() == PARTITIONS as usize
                        && ps.iter().all(|p| p.replicas.len() == 3 && p.isr.len() == 3)
                })
            },
        )
        .await?;
    }
    let placements = cluster.replicas(&w.input)?;
    eprintln!("{}: {placements:?}", w.input);
    assert!(describe(cluster, &w.input)?.contains("ReplicationFactor: 3"));
    let (ok, text) = apply(cluster, world, &RF_3)?;
    anyhow::ensure!(ok, "the second topics apply failed:\n{text}");
    for topic in world.topics() {
        assert!(text.contains(&format!("{topic}: Unchanged")), "{text}");
    }
    // A declared min ISR is the topic's own config: raised, then back.
    for (min_isr, topic_config) in [("3", true), ("2", false)] {
        let env = [RF_3[0], ("MAILFLEET_KAFKA__MIN_INSYNC_REPLICAS", min_isr)];
        let (ok, text) = apply(cluster, world, &env)?;
        anyhow::ensure!(ok, "topics apply with min ISR {min_isr} failed:\n{text}");
        assert!(
            text.contains(&format!("{}: ConfigUpdated", w.input)),
            "{text}"
        );
        let described = describe(cluster, &w.input)?;
        let shown = described.contains("min.insync.replicas=3");
        assert_eq!(shown, topic_config, "min ISR {min_isr}:\n{described}");
    }
    Ok(())
}

/// Kafka's own `TopicCommand --describe` of `topic`.
fn describe(cluster: &Cluster, topic: &str) -> anyhow::Result<String> {
    stdout_of(
        cluster
            .command()
            .args(["tool", "org.apache.kafka.tools.TopicCommand", "--describe"])
            .args(["--bootstrap-server", &cluster.brokers(), "--topic", topic]),
    )
}

fn bad_replication_is_refused(cluster: &Cluster, world: &World) -> anyhow::Result<()> {
    let w = &world.w;
    let refused = |factor: &str, min_isr: &str, said: &str| -> anyhow::Result<()> {
        let env = [
            ("MAILFLEET_KAFKA__REPLICATION_FACTOR", factor),
            ("MAILFLEET_KAFKA__MIN_INSYNC_REPLICAS", min_isr),
        ];
        let (ok, text) = apply(cluster, world, &env)?;
        assert!(!ok, "RF {factor}, min ISR {min_isr} was applied:\n{text}");
        assert!(
            text.contains(said),
            "RF {factor}, min ISR {min_isr}:\n{text}"
        );
        Ok(())
    };
    let lower = format!(
        "topic {}: replication factor 3 on the cluster, 2 declared (kafka.replication_factor)",
        w.input
    );
    refused("2", "2", &lower)?;
    refused(
        "4",
        "2",
        "kafka.replication_factor = 4: more than the 3 live broker(s)",
    )?;
    refused(
        "3",
        "4",
        "kafka.min_insync_replicas = 4: more than the replication factor 3",
    )?;
    // Nothing was changed by the refused runs.
    assert!(cluster
        .replicas(&w.input)?
        .iter()
        .all(|p| p.replicas.len() == 3));
    Ok(())
}

async fn a_consumer_survives_a_node_killed(cluster: &Cluster, world: &World) -> anyhow::Result<()> {
    let w = &world.w;
    let kafka = cluster.kafka_config();
    let log = w.dir.join("counter.log");
    let mut children = Children(vec![spawn_with_env(
        &world.config,
        &["run", "counter"],
        &RF_3,
        &log,
    )?]);
    let store = w.dir.join("state/counter");
    let inputs = [w.input.clone()];
    let limit = Duration::from_secs(120);
    produce_events_to(&kafka, &w.input, &w.name, 0..BATCH, KEYS).await?;
    wait_caught_up(&kafka, &store, &inputs, limit).await?;

    // Node 1: the controllers' first leader and a third of the partitions'.
    cluster.kill(1)?;
    let killed = std::time::Instant::now();
    produce_events_to(&kafka, &w.input, &w.name, BATCH..2 * BATCH, KEYS).await?;
    let produced = killed.elapsed();
    let during = wait_caught_up(&kafka, &store, &inputs, limit).await?;
    alive(&mut children, "the counter")?;
    // The controllers fence the dead node and take it out of every ISR.
    wait_until("node 1 out of every ISR", limit, || {
        cluster
            .replicas(&w.input)
            .is_ok_and(|ps| ps.iter().all(|p| p.isr.len() == 2 && !p.isr.contains(&1)))
    })
    .await?;
    reads_to_the_end_with_a_node_down(&kafka, &w.input, 2 * BATCH).await?;

    let restart = cluster.node(1, "start")?;
    produce_events_to(&kafka, &w.input, &w.name, 2 * BATCH..3 * BATCH, KEYS).await?;
    wait_caught_up(&kafka, &store, &inputs, limit).await?;
    wait_until("node 1 back in every ISR", limit, || {
        cluster
            .replicas(&w.input)
            .is_ok_and(|ps| ps.iter().all(|p| p.isr.len() == 3))
    })
    .await?;
    children.terminate()?;
    eprintln!(
        "KAFKA-CLUSTER node 1 killed: {BATCH} events acknowledged (acks=all) {produced:?} after \
         the kill, the consumer caught up {during:?} later; node 1 restarted in {restart:?}"
    );

    let counts = stored_counts(&w.dir.join("state"))?;
    assert_eq!(counts, expected_counts(3 * BATCH, KEYS), "state counts");
    let want = expected_pairs(&counts);
    let outputs = read_topic_from(&kafka, &w.output, usize::MAX, Duration::from_secs(5))?;
    let (pairs, dups) = dedup_counted(&outputs)?;
    eprintln!(
        "KAFKA-CLUSTER outputs: {} records, {} distinct, {dups} duplicate(s) dropped",
        outputs.len(),
        pairs.len()
    );
    assert_eq!(pairs.len(), (3 * BATCH) as usize, "distinct outputs");
    assert_eq!(pairs, want, "every count once");
    Ok(())
}

/// `read_to_end` of `topic` (audits, a replay's bounds) with node 1 down,
/// several times: each reader meets the refused connection to node 1's
/// bootstrap address as an error its poll serves, and must read past it.
async fn reads_to_the_end_with_a_node_down(
    kafka: &mailfleet_runtime::config::KafkaConfig,
    topic: &str,
    want: u64,
) -> anyhow::Result<()> {
    for _ in 0..6 {
        let (kafka, topic) = (kafka.clone(), topic.to_string());
        let read = tokio::task::spawn_blocking(move || {
            mailfleet_runtime::read::read_to_end(&kafka, &topic, "kafka-cluster")
        })
        .await??;
        assert_eq!(read.len() as u64, want, "records read with node 1 down");
    }
    Ok(())
}
