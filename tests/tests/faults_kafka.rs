//! The Kafka broker down for [`OUTAGE`] under `mailfleet run counter` and
//! the producer feeding it, while events keep coming (they wait in the
//! producer's queue). The broker is a private one (`ops/kafka` with its own
//! folder and ports), so the shared broker is never stopped.
//!
//! Checked: the consumer stays up; its store never applies an input whose
//! output Kafka had not acknowledged before the broker went down (found
//! from the outputs' event ids, which name their input, and their append
//! times);
//! its metrics show the outage (outputs waiting for acknowledgement, or
//! poll errors and partitions let go when the group session runs out); once the broker is back, with no restart,
//! every input is on the log once (idempotent producer), counted once, has
//! one output by event id, and the group's committed offsets reach the
//! ends. The figures are printed as a `FAULT kafka` line (`--nocapture`).

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use mailfleet_events::runtime::Counted;
use mailfleet_runtime::{
    admin,
    config::KafkaConfig,
    metrics as m,
    producer::EventProducer,
    time::now_ms,
    topology::{Route, TopicSpec},
    Topology,
};
use mailfleet_tests::{outage::*, *};
use tokio::task::{block_in_place, JoinHandle};

/// How long the broker stays down.
const OUTAGE: Duration = Duration::from_secs(30);
/// Samples of the consumer during the outage.
const SAMPLES: u32 = 10;
/// How long the consumer may take to catch up once the broker is back.
const RECOVERY: Duration = Duration::from_secs(90);
/// Keys of the test events.
const KEYS: u64 = 10;
/// One event fed every this often, before, during and after the outage.
const FEED_EVERY: Duration = Duration::from_millis(10);

/// The counter's topics (3 partitions) on `kafka`, and a config for
/// `mailfleet run counter` with its state in `dir`.
async fn counter_world(
    kafka: &KafkaConfig,
    name: &str,
    dir: &std::path::Path,
    metrics: u16,
) -> anyhow::Result<(Topology, std::path::PathBuf)> {
    let topic = |t: &str| format!("{name}.{t}");
    let topology = Topology {
        topics: ["in", "out", "dead"]
            .iter()
            .map(|t| (topic(t), TopicSpec::scratch(3)))
            .collect(),
        consumers: [(
            "counter".to_string(),
            Route {
                group: format!("{name}-counter"),
                reads: vec![topic("in")],
                writes: vec![topic("out")],
            },
        )]
        .into(),
    };
    admin::apply(kafka, &topology).await?;
    let config = ConfigFiles {
        dir,
        topology_file: "topology.toml",
        topology: &topology,
        brokers: &kafka.brokers,
        data_dir: &dir.join("state"),
        deadletter: &topic("dead"),
        metrics_port: metrics,
    }
    .write("counter.toml", "")?;
    Ok((topology, config))
}

/// A send in progress: its (partition, offset) once acknowledged.
type Sending = JoinHandle<Result<(i32, i64), mailfleet_runtime::RuntimeError>>;

/// Send test event `i` without waiting for its acknowledgement.
fn send(producer: &EventProducer, run: &str, topic: &str, i: u64) -> Sending {
    let producer = producer.clone();
    let e = mailfleet_counter::traffic::test_event(run, i, KEYS, 16);
    let topic = topic.to_string();
    tokio::spawn(async move {
        let payload = mailfleet_events::encode(&e).expect("a test event encodes");
        producer.send_raw(&topic, e.key.as_bytes(), &payload).await
    })
}

/// Feed events `from..` every [`FEED_EVERY`] until `stop`; returns how many
/// were sent in all and their pending acknowledgements.
fn feeder(
    producer: EventProducer,
    run: String,
    topic: String,
    from: u64,
    stop: Arc<AtomicBool>,
) -> JoinHandle<(u64, Vec<Sending>)> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FEED_EVERY);
        let (mut i, mut sends) = (from, Vec::new());
        while !stop.load(Ordering::SeqCst) {
            tick.tick().await;
            sends.push(send(&producer, &run, &topic, i));
            i += 1;
        }
        (i, sends)
    })
}

/// For each input partition, the first input offset whose output was not
/// on the log by `down_ms` (the broker's append time): nothing from there
/// on may have been applied while the broker was down.
fn first_unacked(outputs: &[(i64, Vec<u8>)], input: &str, down_ms: i64) -> anyhow::Result<Offsets> {
    let mut acked: BTreeMap<i32, std::collections::BTreeSet<i64>> = BTreeMap::new();
    for (at, bytes) in outputs {
        let c: Counted = mailfleet_events::Registry::builtin().decode(bytes)?;
        // counter:<topic>:<partition>:<offset>:<index>
        let id = &c.envelope.event_id;
        let mut parts = id.rsplitn(4, ':');
        let (_, offset, partition) = (parts.next(), parts.next(), parts.next());
        let parse = |s: Option<&str>| s.and_then(|s| s.parse::<i64>().ok());
        let (Some(offset), Some(partition)) = (parse(offset), parse(partition)) else {
            anyhow::bail!("output id {id:?} does not name its input");
        };
        let set = acked.entry(partition as i32).or_default();
        if *at <= down_ms {
            set.insert(offset);
        }
    }
    Ok(acked
        .into_iter()
        .map(|(p, set)| {
            let first = (0..).find(|o| !set.contains(o)).unwrap_or(0);
            ((input.to_string(), p), first)
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_down_the_consumer_and_its_producers_resume_by_themselves_exactly_once(
) -> anyhow::Result<()> {
    let broker = Private::kafka("faults-kafka");
    let broker_start = broker.start()?;
    let kafka = broker.kafka_config();
    let name = unique("faults-kafka");
    let dir = scratch_dir(&name);
    let metrics = free_port();
    let (topology, config) = counter_world(&kafka, &name, &dir, metrics).await?;
    let (input, output) = (format!("{name}.in"), format!("{name}.out"));
    let log = dir.join("counter.log");
    let mut children = Children(vec![spawn_mailfleet(&config, &["run", "counter"], &log)?]);
    let store = dir.join("state/counter");
    let topics = vec![input.clone()];
    // One idempotent producer; sends are not awaited one by one, so those
    // made while the broker is down wait in its queue.
    let producer = EventProducer::new(&kafka, &name)?;
    let before = 300;
    let first: Vec<_> = (0..before)
        .map(|i| send(&producer, &name, &input, i))
        .collect();
    for s in first {
        s.await??;
    }
    wait_caught_up(&kafka, &store, &topics, RECOVERY).await?;

    // Events keep coming from here to after the restart, and the consumer
    // keeps up with them, so the broker goes away under work in flight.
    let stop_feeding = Arc::new(AtomicBool::new(false));
    let feeding = feeder(
        producer.clone(),
        name.clone(),
        input.clone(),
        before,
        stop_feeding.clone(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut watch = Watch::new(&store, metrics);
    watch.sample();
    let stop_took = block_in_place(|| broker.stop())?;
    let (down_at, down_ms) = (Instant::now(), now_ms());
    for _ in 0..SAMPLES {
        tokio::time::sleep(OUTAGE / SAMPLES).await;
        watch.sample();
        alive(&mut children, "mailfleet run counter")?;
    }
    let applied_down = watch.samples[1].applied.clone();
    let start_took = block_in_place(|| broker.start())?;
    let outage = down_at.elapsed();
    let back = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_feeding.store(true, Ordering::SeqCst);
    let (total_events, sends) = feeding.await?;
    for s in sends {
        s.await??;
    }
    let delivered_in = back.elapsed();
    wait_caught_up(&kafka, &store, &topics, RECOVERY).await?;
    let recovered = back.elapsed();

    // During: nothing applied past an output Kafka had not acknowledged.
    let outputs = read_timed(&kafka, &output, Duration::from_secs(5))?;
    let held = first_unacked(&outputs, &input, down_ms)?;
    watch.assert_held(&held)?;
    let label = consumer_label("counter");
    let all = watch;
    let (poll_errors, _) = all.growth(m::ERRORS, &[&label, "kind=\"poll\""]);
    let (unacked, _) = all.growth(m::ERRORS, &[&label, "kind=\"unacked\""]);
    let assigned = all.series(m::ASSIGNED_PARTITIONS, &[&label]);
    assert_eq!(assigned.first(), Some(&3.0), "{assigned:?}");
    // Caught with outputs in flight, the consumer waits for their acks
    // (counted every 5 s); caught polling, it counts poll errors and lets
    // its partitions go when the group session (10 s) runs out.
    let waited = unacked >= 3.0;
    let polled = poll_errors >= 1.0 && assigned.contains(&0.0);
    assert!(
        waited || polled,
        "the outage shows: unacked {unacked}, poll errors {poll_errors}, assigned {assigned:?}"
    );

    // After: every input on the log once, counted once, one output each.
    let ends_after = mailfleet_runtime::read::end_offsets(&kafka, &topics)?;
    assert_eq!(
        total(&ends_after) as u64,
        total_events,
        "inputs on the topic"
    );
    let expected = expected_counts(total_events, KEYS);
    let counts =
        mailfleet_counter::stored_counts(&mailfleet_runtime::Store::open_read_only(&store)?)?;
    assert_eq!(counts, expected, "each input counted once");
    let records: Vec<Consumed> = outputs.iter().map(|(_, b)| (None, b.clone())).collect();
    let (pairs, dups) = dedup_counted(&records)?;
    assert_eq!(
        pairs,
        expected_pairs(&expected),
        "one output per input, by event id"
    );
    let group = &topology.consumers["counter"].group;
    wait_until("the group's offsets at the ends", RECOVERY, || {
        committed(&kafka, group, &ends_after).is_ok_and(|c| c == ends_after)
    })
    .await?;
    let after = scrape(metrics).unwrap_or_default();
    let processed = metric_sum(&after, m::EVENTS_PROCESSED, &[&label]);
    assert_eq!(processed as u64, total_events, "each input handled once");
    let acked_down = outputs.iter().filter(|(at, _)| *at <= down_ms).count();
    report(
        "kafka",
        &[
            ("broker_first_start_s", secs(broker_start)),
            ("stop_s", secs(stop_took)),
            ("outage_s", secs(outage)),
            ("start_s", secs(start_took)),
            ("inputs_acked_after_start_s", secs(delivered_in)),
            ("recovered_s", secs(recovered)),
            ("poll_errors", poll_errors.to_string()),
            ("unacked", unacked.to_string()),
            (
                "unacked_per_sample",
                format!("{:?}", all.series(m::ERRORS, &[&label, "kind=\"unacked\""])),
            ),
            ("assigned_partitions", format!("{assigned:?}")),
            ("samples_at_s", format!("{:?}", all.times())),
            ("events", total_events.to_string()),
            ("outputs", outputs.len().to_string()),
            ("duplicate_outputs", dups.to_string()),
            ("outputs_on_log_when_down", acked_down.to_string()),
            ("applied_while_down", total(&applied_down).to_string()),
            ("first_unacked", format!("{held:?}")),
        ],
    );
    children.terminate()
}

fn secs(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64())
}
