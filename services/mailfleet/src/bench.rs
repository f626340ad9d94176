//! `mailfleet bench ...`: side-by-side measurements in one run. These are
//! benchmarks, not tests; results go to `docs/benchmarks.md`.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use mailfleet_counter::{traffic, Counter, CounterConfig};
use mailfleet_runtime::{
    admin,
    producer::{EventProducer, RawRecord},
    topology::{CleanupPolicy, TopicSpec},
    RunSpec, Shutdown, Topology,
};
use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    Message,
};

use crate::config::Config;

#[derive(Subcommand)]
pub enum Bench {
    /// Raw rdkafka consume loop vs the runtime with the counting consumer (RocksDB state).
    Consume {
        /// Events to produce and then read twice.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Encoded size of each event, bytes.
        #[arg(long, default_value_t = 200)]
        event_bytes: usize,
        /// Partitions of the benchmark topic.
        #[arg(long, default_value_t = 6)]
        partitions: i32,
        /// Distinct counting keys.
        #[arg(long, default_value_t = 10_000)]
        keys: u64,
    },
}

pub async fn run(which: Bench, cfg: &Config) -> anyhow::Result<()> {
    match which {
        Bench::Consume {
            events,
            event_bytes,
            partitions,
            keys,
        } => consume(cfg, events, event_bytes, partitions, keys).await,
    }
}

async fn consume(
    cfg: &Config,
    events: u64,
    event_bytes: usize,
    partitions: i32,
    keys: u64,
) -> anyhow::Result<()> {
    let run_id = format!("bench-consume-{}", rand::random::<u32>());
    let topic = run_id.clone();
    create_topic(cfg, &topic, partitions).await?;
    produce(cfg, &run_id, &topic, events, event_bytes, keys).await?;

    let raw = raw_loop(cfg, &topic, &format!("{run_id}-raw"), events)?;
    let raw_eps = events as f64 / raw.as_secs_f64();
    println!(
        "raw rdkafka loop: {events} events in {:.2}s = {raw_eps:.0} events/s",
        raw.as_secs_f64()
    );

    let state_dir = cfg.runtime.data_dir.join("bench").join(&run_id);
    let started = Instant::now();
    let spec = RunSpec {
        group: format!("{run_id}-runtime"),
        inputs: vec![topic.clone()],
        kafka: cfg.kafka.clone(),
        runtime: mailfleet_runtime::config::RuntimeConfig {
            data_dir: state_dir.clone(),
            ..cfg.runtime.clone()
        },
        run_effects: true,
        stop_after: Some(events),
    };
    let counter = Counter::new(CounterConfig { emit: false }, "");
    let stats = mailfleet_runtime::run(counter, spec, Shutdown::new()).await?;
    let rt = started.elapsed();
    let runtime_eps = stats.events as f64 / rt.as_secs_f64();
    println!(
        "runtime + counter (RocksDB state, batch {}): {} events in {:.2}s = {runtime_eps:.0} events/s, {} batches",
        cfg.runtime.batch_max_events, stats.events, rt.as_secs_f64(), stats.batches
    );
    anyhow::ensure!(
        stats.events == events,
        "runtime handled {} of {events} events",
        stats.events
    );
    let _ = std::fs::remove_dir_all(&state_dir);
    println!(
        "raw_eps={raw_eps:.0} runtime_eps={runtime_eps:.0} ratio={:.2}",
        runtime_eps / raw_eps
    );
    Ok(())
}

async fn create_topic(cfg: &Config, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let topology = Topology {
        topics: BTreeMap::from([(
            topic.to_string(),
            TopicSpec {
                partitions,
                replication_factor: 1,
                retention_ms: 3_600_000,
                cleanup_policy: CleanupPolicy::Delete,
                doc: "benchmark".into(),
            },
        )]),
        consumers: BTreeMap::new(),
    };
    admin::apply(&cfg.kafka, &topology)
        .await
        .context("creating the benchmark topic")?;
    Ok(())
}

async fn produce(
    cfg: &Config,
    run_id: &str,
    topic: &str,
    events: u64,
    bytes: usize,
    keys: u64,
) -> anyhow::Result<()> {
    let producer = EventProducer::new(&cfg.kafka, run_id)?;
    let payload_len = traffic::payload_len_for(run_id, bytes);
    let bar = progress_bar(events, "producing");
    let records = traffic_records(run_id, topic, events, keys, payload_len)?;
    let started = Instant::now();
    producer
        .send_all(records, 10_000, |n| bar.set_position(n))
        .await?;
    bar.finish_and_clear();
    println!(
        "produced {events} events of ~{bytes} bytes in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Encoded `TestEvent` records for a topic.
pub fn traffic_records(
    run_id: &str,
    topic: &str,
    events: u64,
    keys: u64,
    payload_len: usize,
) -> anyhow::Result<Vec<RawRecord>> {
    (0..events)
        .map(|i| {
            let event = traffic::test_event(run_id, i, keys, payload_len);
            Ok(RawRecord {
                topic: topic.to_string(),
                key: event.key.clone().into_bytes(),
                payload: mailfleet_events::encode(&event)?,
            })
        })
        .collect()
}

/// The peer: a plain rdkafka poll loop that only counts.
fn raw_loop(cfg: &Config, topic: &str, group: &str, events: u64) -> anyhow::Result<Duration> {
    let consumer: BaseConsumer = admin::client_config(&cfg.kafka)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[topic])?;
    let started = Instant::now();
    let (mut seen, mut bytes) = (0u64, 0usize);
    while seen < events {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "raw loop timed out at {seen}"
        );
        if let Some(msg) = consumer.poll(Duration::from_millis(100)) {
            bytes += msg?.payload().map_or(0, <[u8]>::len);
            seen += 1;
        }
    }
    let elapsed = started.elapsed();
    std::hint::black_box(bytes);
    Ok(elapsed)
}

pub fn progress_bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}
