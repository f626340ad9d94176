//! `mailfleet bench ...`: side-by-side measurements in one run. These are
//! benchmarks, not tests; results go to `docs/benchmarks.md`.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::Context;
use mailfleet_counter::{traffic, Counter, CounterConfig};
use mailfleet_fleet::config::Config;
use mailfleet_runtime::{
    admin,
    producer::{EventProducer, RawRecord},
    topology::TopicSpec,
    RunSpec, Shutdown, Topology,
};
use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    Message,
};

use super::{median, progress_bar};

/// The benchmark topic's contents.
pub struct Shape {
    pub events: u64,
    pub event_bytes: usize,
    pub partitions: i32,
    pub keys: u64,
}

/// Both readers in alternation over one topic, so that broker and page
/// cache conditions are shared; the medians are compared.
pub async fn consume(cfg: &Config, shape: Shape, rounds: usize) -> anyhow::Result<()> {
    let partitions = shape.partitions;
    on_scratch_topic(cfg, "bench-consume", partitions, |run_id| {
        consume_rounds(cfg, shape, rounds, run_id)
    })
    .await
}

/// Run `bench` on a new topic named as the run (`prefix-N`), then delete
/// the topic: a broker that keeps every bench's topic slows the next ones.
async fn on_scratch_topic<F, Fut>(
    cfg: &Config,
    prefix: &str,
    partitions: i32,
    bench: F,
) -> anyhow::Result<()>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let run_id = format!("{prefix}-{}", rand::random::<u32>());
    create_topic(cfg, &run_id, partitions).await?;
    let result = bench(run_id.clone()).await;
    super::delete_topics(cfg, &[run_id]).await;
    result
}

async fn consume_rounds(
    cfg: &Config,
    shape: Shape,
    rounds: usize,
    run_id: String,
) -> anyhow::Result<()> {
    let topic = run_id.clone();
    produce(
        cfg,
        &run_id,
        &topic,
        shape.events,
        shape.event_bytes,
        shape.keys,
    )
    .await?;
    let (mut raw, mut runtime) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let secs =
            raw_loop(cfg, &topic, &format!("{run_id}-raw-{round}"), shape.events)?.as_secs_f64();
        raw.push(shape.events as f64 / secs);
        println!(
            "round {round}: raw rdkafka loop {:.0} events/s ({secs:.2}s)",
            raw[round - 1]
        );
        let secs = runtime_run(cfg, &run_id, &topic, round, shape.events).await?;
        runtime.push(shape.events as f64 / secs);
        println!(
            "round {round}: runtime + counter {:.0} events/s ({secs:.2}s)",
            runtime[round - 1]
        );
    }
    let (raw_eps, runtime_eps) = (median(&mut raw), median(&mut runtime));
    println!(
        "medians over {rounds} rounds, {} events of {} bytes, {} partitions, {} keys, batch {}",
        shape.events, shape.event_bytes, shape.partitions, shape.keys, cfg.runtime.batch_max_events
    );
    println!(
        "raw_eps={raw_eps:.0} runtime_eps={runtime_eps:.0} ratio={:.2}",
        runtime_eps / raw_eps
    );
    Ok(())
}

/// Three readers in alternation over one topic: the raw loop; a restore
/// (the runtime rebuilding state from the earliest offset into an empty
/// store, which is how a fleet member takes over a partition whose state
/// it lacks); and a replay (the same with no outputs, no effects, no
/// offsets committed to the group). Medians are compared.
pub async fn replay(cfg: &Config, shape: Shape, rounds: usize) -> anyhow::Result<()> {
    let partitions = shape.partitions;
    on_scratch_topic(cfg, "bench-replay", partitions, |run_id| {
        replay_rounds(cfg, shape, rounds, run_id)
    })
    .await
}

async fn replay_rounds(
    cfg: &Config,
    shape: Shape,
    rounds: usize,
    run_id: String,
) -> anyhow::Result<()> {
    let topic = run_id.clone();
    let events = shape.events;
    produce(cfg, &run_id, &topic, events, shape.event_bytes, shape.keys).await?;
    let (mut raw, mut restore, mut replay) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let secs = raw_loop(cfg, &topic, &format!("{run_id}-raw-{round}"), events)?.as_secs_f64();
        raw.push(secs);
        let restored = runtime_run_as(cfg, &run_id, &topic, round, events, false).await?;
        restore.push(restored);
        let replayed = runtime_run_as(cfg, &run_id, &topic, round, events, true).await?;
        replay.push(replayed);
        println!(
            "round {round}: raw {:.0} events/s ({secs:.2}s), restore {:.0} events/s ({restored:.2}s), replay {:.0} events/s ({replayed:.2}s)",
            events as f64 / secs,
            events as f64 / restored,
            events as f64 / replayed
        );
    }
    let (raw_s, restore_s, replay_s) =
        (median(&mut raw), median(&mut restore), median(&mut replay));
    let eps = |s: f64| events as f64 / s;
    println!(
        "medians over {rounds} rounds, {events} events of {} bytes, {} partitions, {} keys, batch {}",
        shape.event_bytes, shape.partitions, shape.keys, cfg.runtime.batch_max_events
    );
    println!(
        "raw_eps={:.0} restore_eps={:.0} replay_eps={:.0} restore_time_ratio={:.2} replay_ratio={:.2}",
        eps(raw_s),
        eps(restore_s),
        eps(replay_s),
        restore_s / raw_s,
        eps(replay_s) / eps(raw_s)
    );
    Ok(())
}

/// The runtime with the counting consumer keeping RocksDB state, from a
/// fresh group and a fresh store; returns the seconds it took.
async fn runtime_run(
    cfg: &Config,
    run_id: &str,
    topic: &str,
    round: usize,
    events: u64,
) -> anyhow::Result<f64> {
    runtime_run_as(cfg, run_id, topic, round, events, false).await
}

/// [`runtime_run`], or as a replay (`RunSpec::replay`).
async fn runtime_run_as(
    cfg: &Config,
    run_id: &str,
    topic: &str,
    round: usize,
    events: u64,
    as_replay: bool,
) -> anyhow::Result<f64> {
    let state_dir = cfg
        .runtime
        .data_dir
        .join("bench")
        .join(format!("{run_id}-{round}"));
    let spec = RunSpec::new(
        format!("{run_id}-runtime-{round}"),
        vec![topic.to_string()],
        &cfg.kafka,
        &cfg.runtime,
    )
    .data_dir(state_dir.clone())
    .stop_after(events);
    let spec = if as_replay {
        spec.replay(state_dir.clone(), &format!("{round}"))
    } else {
        spec
    };
    let started = Instant::now();
    let stats = mailfleet_runtime::run(
        Counter::new(CounterConfig { emit: false }, ""),
        spec,
        Shutdown::new(),
    )
    .await?;
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        stats.events == events,
        "runtime handled {} of {events} events",
        stats.events
    );
    // A fast wrong answer is no result: the counts must add up.
    let store = mailfleet_runtime::Store::open(&state_dir.join("counter"), false)?;
    let counted: u64 = mailfleet_counter::stored_counts(&store)?.values().sum();
    anyhow::ensure!(
        counted == events,
        "the runtime counted {counted} of {events} events"
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&state_dir);
    Ok(secs)
}

pub(super) async fn create_topic(cfg: &Config, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let topology = Topology {
        topics: BTreeMap::from([(topic.to_string(), TopicSpec::scratch(partitions))]),
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

/// The peer: a plain rdkafka poll loop that only counts. It fetches as the
/// runtime does (`FETCH_DEFAULTS`, unless `kafka.properties` overrides).
fn raw_loop(cfg: &Config, topic: &str, group: &str, events: u64) -> anyhow::Result<Duration> {
    let mut client = admin::client_config(&cfg.kafka);
    client
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    for (key, value) in mailfleet_runtime::FETCH_DEFAULTS {
        if client.get(key).is_none() {
            client.set(*key, *value);
        }
    }
    let consumer: BaseConsumer = client.create()?;
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
