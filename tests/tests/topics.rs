//! `topics apply` against the real broker: create, idempotent re-apply,
//! raise partitions, update retention, refuse to lower partitions.

use std::{collections::BTreeMap, process::Command};

use mailfleet_runtime::{
    admin::{apply, TopicChange},
    topology::{CleanupPolicy, Route, TopicSpec},
    RuntimeError, Topology,
};
use mailfleet_tests::*;

fn topology(name: &str, partitions: i32, retention_ms: i64) -> Topology {
    let spec = TopicSpec {
        partitions,
        replication_factor: Some(1),
        min_insync_replicas: None,
        retention_ms,
        cleanup_policy: CleanupPolicy::Delete,
        segment_ms: None,
        min_cleanable_dirty_ratio: None,
        doc: String::new(),
    };
    Topology {
        topics: BTreeMap::from([(name.to_string(), spec)]),
        consumers: BTreeMap::new(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_creates_then_converges_idempotently() -> anyhow::Result<()> {
    let name = unique("topics");
    let change = |t: &Topology| {
        let t = t.clone();
        async move { apply(&kafka(), &t).await.map(|r| r[0].1.clone()) }
    };
    assert_eq!(
        change(&topology(&name, 2, 3_600_000)).await?,
        TopicChange::Created
    );
    assert_eq!(
        change(&topology(&name, 2, 3_600_000)).await?,
        TopicChange::Unchanged
    );
    assert_eq!(
        change(&topology(&name, 4, 3_600_000)).await?,
        TopicChange::PartitionsRaised { from: 2, to: 4 }
    );
    assert_eq!(
        change(&topology(&name, 4, 7_200_000)).await?,
        TopicChange::ConfigUpdated
    );
    assert_eq!(
        change(&topology(&name, 4, 7_200_000)).await?,
        TopicChange::Unchanged
    );
    assert_eq!(
        change(&topology(&name, 3, 7_200_000)).await?,
        TopicChange::MorePartitionsThanDeclared {
            actual: 4,
            declared: 3
        }
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_refuses_more_partitions_for_a_read_topic_with_records() -> anyhow::Result<()> {
    let name = unique("topics-keyed");
    let read = |partitions: i32| {
        let mut t = topology(&name, partitions, 3_600_000);
        let route = Route {
            group: format!("{name}-counter"),
            reads: vec![name.clone()],
            writes: vec![],
        };
        t.consumers.insert("counter".into(), route);
        t
    };
    assert_eq!(apply(&kafka(), &read(2)).await?[0].1, TopicChange::Created);
    // Empty, it is raised: no key has state anywhere yet.
    assert_eq!(
        apply(&kafka(), &read(3)).await?[0].1,
        TopicChange::PartitionsRaised { from: 2, to: 3 }
    );
    produce_events(&name, &name, 0, 10, 5).await?;
    let err = match apply(&kafka(), &read(4)).await {
        Err(RuntimeError::InvalidConfig(problems)) => problems.join("\n"),
        other => anyhow::bail!("raising a read topic with records: {other:?}"),
    };
    assert!(
        err.contains(&format!(
            "topics.{name}.partitions = 4: the topic has 3 partitions"
        )) && err.contains("counter keep(s) state by partition"),
        "{err}"
    );
    assert_eq!(
        apply(&kafka(), &read(3)).await?[0].1,
        TopicChange::Unchanged,
        "nothing was changed"
    );
    // A topic no consumer of the topology reads is raised.
    assert_eq!(
        apply(&kafka(), &topology(&name, 4, 3_600_000)).await?[0].1,
        TopicChange::PartitionsRaised { from: 3, to: 4 }
    );
    Ok(())
}

#[test]
fn the_cli_applies_the_built_in_topology_twice() -> anyhow::Result<()> {
    let run = || -> anyhow::Result<String> {
        let out = Command::new(mailfleet_bin())
            .args(["topics", "apply"])
            .env("MAILFLEET_KAFKA__BROKERS", kafka().brokers)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    };
    run()?;
    let second = run()?;
    for topic in Topology::load(None)?.topics.keys() {
        assert!(
            second.contains(&format!("{topic}: Unchanged")),
            "{topic} not converged:\n{second}"
        );
    }
    Ok(())
}

#[test]
fn more_replicas_than_brokers_are_refused_naming_the_key() -> anyhow::Result<()> {
    let out = Command::new(mailfleet_bin())
        .args(["topics", "apply"])
        .env("MAILFLEET_KAFKA__BROKERS", kafka().brokers)
        .env("MAILFLEET_KAFKA__REPLICATION_FACTOR", "2")
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("kafka.replication_factor = 2: more than the 1 live broker(s)"),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_bad_config_value_is_named_and_nothing_starts() -> anyhow::Result<()> {
    let out = Command::new(mailfleet_bin())
        .args(["topics", "apply"])
        .env("MAILFLEET_RUNTIME__BATCH_MAX_EVENTS", "0")
        .env("MAILFLEET_METRICS__LISTEN", "everywhere")
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("runtime.batch_max_events = 0"), "{err}");
    assert!(err.contains("metrics.listen = \"everywhere\""), "{err}");
    Ok(())
}
