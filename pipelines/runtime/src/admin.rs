//! `mailfleet topics apply`: make the broker's topics match the topology,
//! idempotently. Missing topics are created, partitions are raised (never
//! lowered; not at all for a topic a consumer reads that holds records),
//! and retention, clean-up policy and min ISR are set. A
//! replication factor is set at creation and only checked afterwards: a
//! declaration below what a topic has, or above the brokers the cluster
//! has, is refused before anything changes ([`crate::replication`]).

use std::time::Duration;

use rdkafka::{
    admin::{
        AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier,
        TopicReplication,
    },
    client::DefaultClientContext,
    ClientConfig,
};

use crate::{
    config::KafkaConfig,
    error::RuntimeError,
    replication::{self, against_cluster, Replication},
    topology::{TopicSpec, Topology},
};

/// What `apply` did to one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicChange {
    Created,
    PartitionsRaised {
        from: i32,
        to: i32,
    },
    ConfigUpdated,
    Unchanged,
    /// The broker has more partitions than declared; Kafka cannot lower them.
    MorePartitionsThanDeclared {
        actual: i32,
        declared: i32,
    },
    /// A partition has fewer replicas than declared (the topic was made
    /// before the cluster grew): `topics apply` does not move replicas;
    /// Kafka's `kafka-reassign-partitions` does.
    FewerReplicasThanDeclared {
        actual: i32,
        declared: i32,
    },
}

/// Build a librdkafka client config with the common settings, the
/// `properties` and the `property_files` (read now: a rotated secret is
/// picked up by the next client).
pub fn client_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &kafka.brokers);
    for (key, value) in &kafka.properties {
        if let Some(v) = value.as_str() {
            cfg.set(key, v);
        }
    }
    for key in kafka.property_files.keys() {
        // Checked at load (`problems`); a file gone since then leaves the
        // property unset, and the broker refuses the client.
        match kafka.read_property_file(key) {
            Ok(v) => {
                cfg.set(key, v);
            }
            Err(e) => tracing::error!(error = %e, "Kafka client made without a secret"),
        }
    }
    cfg
}

/// Each partition of `topic` with its low and high watermarks (oldest
/// offset kept, next offset to be written); an empty list when the topic
/// does not exist.
pub fn watermarks<C: rdkafka::consumer::ConsumerContext>(
    consumer: &rdkafka::consumer::BaseConsumer<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<(i32, i64, i64)>, RuntimeError> {
    use rdkafka::consumer::Consumer;
    let kafka = |op, source| RuntimeError::Kafka { op, source };
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| kafka("fetch metadata", e))?;
    let mut out = Vec::new();
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        // A partition just created or raised can be listed with its leader
        // before that broker leads it: it answers "not leader" for a
        // moment. Asked again until `timeout`.
        let started = std::time::Instant::now();
        let (low, high) = loop {
            match consumer.fetch_watermarks(topic, p.id(), timeout) {
                Ok(wm) => break wm,
                Err(e) if leader_moving(&e) && started.elapsed() < timeout => {
                    std::thread::sleep(LEADER_RETRY);
                }
                Err(e) => return Err(kafka("fetch watermarks", e)),
            }
        };
        out.push((p.id(), low, high));
    }
    out.sort_unstable();
    Ok(out)
}

/// How long [`watermarks`] waits before asking a partition again.
const LEADER_RETRY: Duration = Duration::from_millis(100);

/// A partition's leadership is being settled (a new partition, a broker
/// restarted): the same request succeeds shortly.
fn leader_moving(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        e.rdkafka_error_code(),
        Some(Code::NotLeaderForPartition | Code::LeaderNotAvailable)
    )
}

/// Create or update every topic of the topology. Refuses (an
/// [`RuntimeError::InvalidConfig`] naming each key and value, before any
/// change) a replication the cluster cannot or must not get, and more
/// partitions for a topic whose records a consumer keeps state by.
pub async fn apply(
    kafka: &KafkaConfig,
    topology: &Topology,
) -> Result<Vec<(String, TopicChange)>, RuntimeError> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(kafka)
            .create()
            .map_err(|source| RuntimeError::CreateClient {
                what: "admin",
                source,
            })?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let names: Vec<&str> = topology.topics.keys().map(String::as_str).collect();
    // A broker that has just created a topic can answer metadata with the
    // topic in an error state and no partitions for a moment; wait until the
    // declared topics that exist are settled, so that none is misread.
    let existing = settled(&admin, &names, |_| 0).await?;
    let declared: Vec<(&String, &TopicSpec, Replication)> = topology
        .topics
        .iter()
        .map(|(name, spec)| (name, spec, Replication::of(name, spec, kafka)))
        .collect();
    refuse_bad_replication(&declared, &existing, kafka)?;
    refuse_moving_keys(topology, &existing, kafka)?;
    let mut report = Vec::new();
    for (name, spec, rep) in &declared {
        let change = match existing.topic(name) {
            None => create(&admin, &opts, name, spec, rep).await?,
            Some(t) => update(&admin, &opts, name, spec, rep, t).await?,
        };
        report.push((name.to_string(), change));
    }
    // The controller acknowledges a change before the broker's metadata shows
    // it. Return only once the declared layout is visible, so that the next
    // apply, or a consumer started right after, sees what this one did.
    settled(&admin, &names, |name| topology.topics[name].partitions).await?;
    Ok(report)
}

/// Every replication problem of the declaration, alone and then against
/// the cluster's `existing` layout, as one error (each problem once).
fn refuse_bad_replication(
    declared: &[(&String, &TopicSpec, Replication)],
    existing: &Layout,
    kafka: &KafkaConfig,
) -> Result<(), RuntimeError> {
    let mut problems = replication::problems(
        "kafka",
        Some(kafka.replication_factor),
        kafka.min_insync_replicas,
    );
    for (name, spec, rep) in declared {
        let prefix = format!("topics.{name}");
        problems.extend(replication::problems(
            &prefix,
            spec.replication_factor,
            spec.min_insync_replicas,
        ));
        problems.extend(rep.problems());
    }
    if problems.is_empty() {
        for (name, _, rep) in declared {
            let actual = existing.topic(name).map(|t| t.replicas);
            let (brokers, bootstrap) = (existing.brokers, &kafka.brokers);
            problems.extend(against_cluster(name, rep, actual, brokers, bootstrap));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    problems.retain(|p| seen.insert(p.clone()));
    match problems.is_empty() {
        true => Ok(()),
        false => Err(RuntimeError::InvalidConfig(problems)),
    }
}

/// Refuse (before any change) to raise the partitions of a topic that a
/// consumer of the topology reads and that has ever held a record. A
/// producer places a record by its key's hash modulo the count, so more
/// partitions send a key's new records to another partition than the one
/// whose state its history built (docs/deployment.md, "Partitions"); the
/// consumer would decide them without that state. An empty topic, or one
/// no consumer reads, is raised.
fn refuse_moving_keys(
    topology: &Topology,
    existing: &Layout,
    kafka: &KafkaConfig,
) -> Result<(), RuntimeError> {
    let raised: Vec<(&String, i32, i32)> = topology
        .topics
        .iter()
        .filter_map(|(name, spec)| {
            let actual = existing.topic(name)?.partitions;
            (actual < spec.partitions).then_some((name, actual, spec.partitions))
        })
        .collect();
    if raised.is_empty() {
        return Ok(());
    }
    let client: rdkafka::consumer::BaseConsumer =
        client_config(kafka)
            .create()
            .map_err(|source| RuntimeError::CreateClient {
                what: "consumer",
                source,
            })?;
    let mut problems = Vec::new();
    for (name, actual, declared) in raised {
        let readers: Vec<&str> = topology
            .consumers
            .iter()
            .filter(|(_, route)| route.reads.contains(name))
            .map(|(consumer, _)| consumer.as_str())
            .collect();
        if readers.is_empty() {
            continue;
        }
        // Records that retention has since deleted built state too.
        let written = watermarks(&client, name, Duration::from_secs(10))?
            .iter()
            .any(|&(_, _, high)| high > 0);
        if written {
            problems.push(format!(
                "topics.{name}.partitions = {declared}: the topic has {actual} partitions \
                 holding records, and {} keep(s) state by partition; more partitions would \
                 send each key's new records away from its state (docs/deployment.md, \
                 \"Partitions\"): keep {actual}, or move to new topics",
                readers.join(", ")
            ));
        }
    }
    match problems.is_empty() {
        true => Ok(()),
        false => Err(RuntimeError::InvalidConfig(problems)),
    }
}

/// How long `apply` waits for the broker's metadata to show its changes.
const METADATA_SETTLE: Duration = Duration::from_secs(30);

/// What the cluster's metadata shows of the declared topics.
struct Layout {
    /// Live brokers (the metadata lists no other).
    brokers: usize,
    /// The declared topics that exist.
    topics: Vec<TopicLayout>,
}

impl Layout {
    fn topic(&self, name: &str) -> Option<&TopicLayout> {
        self.topics.iter().find(|t| t.name == name)
    }
}

struct TopicLayout {
    name: String,
    partitions: i32,
    /// The most replicas any of its partitions has.
    replicas: i32,
}

/// The layout of the topics of `names` that exist, once each of them is
/// settled: no error, a leader for every partition, and at least
/// `min_partitions(name)` partitions (0: absent is settled too). Past
/// [`METADATA_SETTLE`], the names still unsettled are the error.
async fn settled(
    admin: &AdminClient<DefaultClientContext>,
    names: &[&str],
    min_partitions: impl Fn(&str) -> i32,
) -> Result<Layout, RuntimeError> {
    let deadline = std::time::Instant::now() + METADATA_SETTLE;
    loop {
        let md = admin
            .inner()
            .fetch_metadata(None, Duration::from_secs(15))
            .map_err(|source| RuntimeError::Kafka {
                op: "fetch metadata",
                source,
            })?;
        let mut topics = Vec::new();
        let mut unsettled = Vec::new();
        for name in names {
            let want = min_partitions(name);
            match md.topics().iter().find(|t| t.name() == *name) {
                None if want == 0 => {}
                None => unsettled.push(*name),
                Some(t) => {
                    let n = t.partitions().len() as i32;
                    if t.error().is_some()
                        || n < want.max(1)
                        || t.partitions().iter().any(|p| p.leader() < 0)
                    {
                        unsettled.push(*name);
                    } else {
                        let replicas = t.partitions().iter().map(|p| p.replicas().len());
                        topics.push(TopicLayout {
                            name: name.to_string(),
                            partitions: n,
                            replicas: replicas.max().unwrap_or(0) as i32,
                        });
                    }
                }
            }
        }
        if unsettled.is_empty() {
            let brokers = md.brokers().len();
            return Ok(Layout { brokers, topics });
        }
        if std::time::Instant::now() >= deadline {
            return Err(RuntimeError::ApplyTopic {
                topic: unsettled.join(", "),
                reason: format!(
                    "the broker's metadata did not show it settled within {}s",
                    METADATA_SETTLE.as_secs()
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every topic's records carry the broker's append time: a consumer of
/// several topics orders them by it, the same live and in a replay. A
/// declared min ISR is set; an undeclared one is left to the broker's
/// default (a set of configs replaces the topic's whole set).
fn configs(spec: &TopicSpec, rep: &Replication) -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("retention.ms", spec.retention_ms.to_string()),
        ("cleanup.policy", spec.cleanup_policy.as_kafka().to_string()),
        ("message.timestamp.type", "LogAppendTime".to_string()),
    ];
    if let Some(m) = rep.min_insync {
        out.push(("min.insync.replicas", m.to_string()));
    }
    if let Some(ms) = spec.segment_ms {
        out.push(("segment.ms", ms.to_string()));
    }
    if let Some(r) = spec.min_cleanable_dirty_ratio {
        out.push(("min.cleanable.dirty.ratio", r.to_string()));
    }
    out
}

async fn create(
    admin: &AdminClient<DefaultClientContext>,
    opts: &AdminOptions,
    name: &str,
    spec: &TopicSpec,
    rep: &Replication,
) -> Result<TopicChange, RuntimeError> {
    let cfgs = configs(spec, rep);
    let mut topic = NewTopic::new(name, spec.partitions, TopicReplication::Fixed(rep.factor));
    for (k, v) in &cfgs {
        topic = topic.set(k, v);
    }
    let results = admin
        .create_topics([&topic], opts)
        .await
        .map_err(|source| RuntimeError::Kafka {
            op: "create topics",
            source,
        })?;
    for r in results {
        match r {
            Ok(_) => {}
            // Another process created it between metadata and now: fine.
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(RuntimeError::ApplyTopic {
                    topic: t,
                    reason: code.to_string(),
                })
            }
        }
    }
    Ok(TopicChange::Created)
}

async fn update(
    admin: &AdminClient<DefaultClientContext>,
    opts: &AdminOptions,
    name: &str,
    spec: &TopicSpec,
    rep: &Replication,
    layout: &TopicLayout,
) -> Result<TopicChange, RuntimeError> {
    let actual = layout.partitions;
    let mut change = TopicChange::Unchanged;
    if actual < spec.partitions {
        let np = NewPartitions::new(name, spec.partitions as usize);
        for r in admin
            .create_partitions([&np], opts)
            .await
            .map_err(|source| RuntimeError::Kafka {
                op: "create partitions",
                source,
            })?
        {
            r.map_err(|(t, code)| RuntimeError::ApplyTopic {
                topic: t,
                reason: code.to_string(),
            })?;
        }
        change = TopicChange::PartitionsRaised {
            from: actual,
            to: spec.partitions,
        };
    } else if actual > spec.partitions {
        change = TopicChange::MorePartitionsThanDeclared {
            actual,
            declared: spec.partitions,
        };
    }
    if set_configs(admin, opts, name, &configs(spec, rep)).await?
        && change == TopicChange::Unchanged
    {
        change = TopicChange::ConfigUpdated;
    }
    if layout.replicas < rep.factor {
        tracing::warn!(topic = name, actual = layout.replicas, declared = rep.factor,
            key = %rep.factor_key, "fewer replicas than declared: move them with kafka-reassign-partitions");
        if matches!(change, TopicChange::Unchanged | TopicChange::ConfigUpdated) {
            change = TopicChange::FewerReplicasThanDeclared {
                actual: layout.replicas,
                declared: rep.factor,
            };
        }
    }
    Ok(change)
}

/// Give topic `name` the configs `cfgs` if it has others, and wait until
/// the broker shows them; whether anything changed.
async fn set_configs(
    admin: &AdminClient<DefaultClientContext>,
    opts: &AdminOptions,
    name: &str,
    cfgs: &[(&'static str, String)],
) -> Result<bool, RuntimeError> {
    if !config_differs(admin, opts, name, cfgs).await? {
        return Ok(false);
    }
    let mut alter = AlterConfig::new(ResourceSpecifier::Topic(name));
    for (k, v) in cfgs {
        alter = alter.set(k, v);
    }
    for r in admin
        .alter_configs([&alter], opts)
        .await
        .map_err(|source| RuntimeError::Kafka {
            op: "alter configs",
            source,
        })?
    {
        r.map_err(|(_, code)| RuntimeError::ApplyTopic {
            topic: name.to_string(),
            reason: code.to_string(),
        })?;
    }
    // Like a new partition, a new config shows in describe only once the
    // broker has applied the controller's record.
    let deadline = std::time::Instant::now() + METADATA_SETTLE;
    while config_differs(admin, opts, name, cfgs).await? {
        if std::time::Instant::now() >= deadline {
            return Err(RuntimeError::ApplyTopic {
                topic: name.to_string(),
                reason: format!(
                    "the altered config did not show within {}s",
                    METADATA_SETTLE.as_secs()
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(true)
}

async fn config_differs(
    admin: &AdminClient<DefaultClientContext>,
    opts: &AdminOptions,
    name: &str,
    cfgs: &[(&'static str, String)],
) -> Result<bool, RuntimeError> {
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(name)], opts)
        .await
        .map_err(|source| RuntimeError::Kafka {
            op: "describe configs",
            source,
        })?;
    let Some(Ok(resource)) = described.into_iter().next() else {
        return Ok(true);
    };
    Ok(cfgs
        .iter()
        .any(|(k, v)| resource.get(k).and_then(|e| e.value.as_deref()) != Some(v.as_str())))
}

#[cfg(test)]
mod tests {
    use rdkafka::{error::KafkaError, types::RDKafkaErrorCode as Code};

    use super::leader_moving;

    #[test]
    fn only_a_moving_leader_is_asked_again() {
        // What a broker answered a watermark query on a partition raised a
        // moment before (the API's start failed on it once).
        assert!(leader_moving(&KafkaError::MetadataFetch(
            Code::NotLeaderForPartition
        )));
        assert!(leader_moving(&KafkaError::MetadataFetch(
            Code::LeaderNotAvailable
        )));
        for lasting in [
            Code::UnknownTopicOrPartition,
            Code::TopicAuthorizationFailed,
            Code::BrokerTransportFailure,
        ] {
            assert!(!leader_moving(&KafkaError::MetadataFetch(lasting)));
        }
    }
}
