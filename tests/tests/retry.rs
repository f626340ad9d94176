//! Transient failures pause the partition and retry with backoff; nothing
//! is committed past the failure, and nothing is lost or applied twice.
//! Also checks that every runtime metric is emitted (this test binary
//! installs the Prometheus recorder in-process), and that a paused
//! partition a rebalance gives back is consumed again.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use mailfleet_counter::{Counter, CounterConfig};
use mailfleet_events::{
    runtime::{Counted, TestEvent},
    Registry,
};
use mailfleet_runtime::{
    admin, metrics as m, producer::EventProducer, run, Consumer, Decision, Input, Outcome, RunSpec,
    Shutdown, StateError, StateView,
};
use mailfleet_tests::*;
use rdkafka::consumer::{BaseConsumer, Consumer as _};

/// The counter, with an effect that fails for one key a few times, the way
/// an LDAP write fails while slapd restarts.
struct Flaky {
    inner: Counter,
    failing_key: String,
    failures_left: AtomicU32,
    attempts: Arc<AtomicU32>,
    /// The backoff of the first failure.
    first_retry: Duration,
}

impl Consumer for Flaky {
    type Event = TestEvent;
    fn name(&self) -> &str {
        "counter"
    }
    fn decide(
        &self,
        state: &StateView<'_>,
        input: &Input<TestEvent>,
    ) -> Result<Decision, StateError> {
        self.inner.decide(state, input)
    }
    fn has_effects(&self) -> bool {
        true
    }
    async fn effect(&self, input: &Input<TestEvent>, _decision: &Decision) -> Outcome {
        if input.event.key != self.failing_key {
            return Outcome::Done;
        }
        self.attempts.fetch_add(1, Ordering::SeqCst);
        match self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        {
            Ok(3) => Outcome::Retry {
                after: self.first_retry,
            },
            Ok(_) => Outcome::Temporary("directory unavailable (simulated)".into()),
            Err(_) => Outcome::Done,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_failures_retry_in_order_without_loss_and_every_metric_is_emitted(
) -> anyhow::Result<()> {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let world = TestWorld::new("retry", 2).await?;
    produce_events(&world.input, &world.name, 0, 2000, 10).await?;
    EventProducer::new(&kafka(), &world.name)?
        .send_raw(&world.input, b"junk", b"junk")
        .await?;

    let flaky = Flaky {
        inner: Counter::new(CounterConfig::default(), world.output.clone()),
        failing_key: "key-3".into(),
        failures_left: AtomicU32::new(3),
        attempts: Arc::default(),
        first_retry: Duration::from_millis(700),
    };
    let mut kafka = kafka();
    kafka
        .properties
        .insert("statistics.interval.ms".into(), "200".into());
    let inputs = vec![world.input.clone()];
    let spec =
        RunSpec::new(world.group.clone(), inputs, &kafka, &world.runtime("a")).stop_after(2001);
    let stats =
        tokio::time::timeout(Duration::from_secs(120), run(flaky, spec, Shutdown::new())).await??;
    assert_eq!((stats.events, stats.dead_letters), (2001, 1));

    let expected = expected_counts(2000, 10);
    assert_eq!(
        stored_counts(&world.dir.join("a"))?,
        expected,
        "each event counted once despite retries"
    );
    let outputs = read_topic(&world.output, 2000, Duration::from_secs(10))?;
    let (pairs, dups) = dedup_counted(&outputs)?;
    assert_eq!(
        dups, 0,
        "a stalled partition sends nothing past the failure"
    );
    assert_eq!(pairs, expected_pairs(&expected));
    // Per key, outputs appear in count order: the retry kept the order.
    let mut last: HashMap<String, i64> = HashMap::new();
    for (_, bytes) in &outputs {
        let c: Counted = Registry::builtin().decode(bytes)?;
        let prev = last.insert(c.key.clone(), c.count).unwrap_or(0);
        assert_eq!(c.count, prev + 1, "{} out of order", c.key);
    }

    let text = recorder.render();
    assert!(
        metric_sum(&text, m::RETRIES, &[]) >= 3.0,
        "three stalls counted:\n{text}"
    );
    assert_eq!(
        metric_sum(&text, m::DEADLETTERS, &["kind=\"Undecodable\""]),
        1.0
    );
    assert_eq!(metric_sum(&text, m::EVENTS_PROCESSED, &[]), 2001.0);
    for name in m::ALL {
        assert!(has_metric(&text, name), "{name} was never emitted:\n{text}");
    }
    Ok(())
}

/// librdkafka keeps a partition paused across a rebalance; the runner
/// forgets its pauses when the assignment changes. A partition paused for
/// a long retry, then revoked and assigned back to the same member, must
/// be consumed again at once, not stay paused for good (the four-host
/// test's storage writer stopped that way after a network cut).
#[tokio::test(flavor = "multi_thread")]
async fn a_paused_partition_assigned_back_by_a_rebalance_is_consumed_again() -> anyhow::Result<()> {
    let world = TestWorld::new("retry-rebalance", 2).await?;
    produce_events(&world.input, &world.name, 0, 400, 10).await?;
    let attempts = Arc::new(AtomicU32::new(0));
    let flaky = Flaky {
        inner: Counter::new(CounterConfig::default(), world.output.clone()),
        failing_key: "key-3".into(),
        // A retry far in the future, then two short ones, then it works.
        failures_left: AtomicU32::new(3),
        attempts: attempts.clone(),
        first_retry: Duration::from_secs(600),
    };
    let inputs = vec![world.input.clone()];
    let spec =
        RunSpec::new(world.group.clone(), inputs, &kafka(), &world.runtime("a")).stop_after(400);
    let shutdown = Shutdown::new();
    let running = tokio::spawn(run(flaky, spec, shutdown.clone()));

    wait_until(
        "the failing key's first attempt",
        Duration::from_secs(60),
        || attempts.load(Ordering::SeqCst) >= 1,
    )
    .await?;
    // The partition is paused now, for 600 s. A second member joins the
    // group for another topic: an eager rebalance revokes every partition
    // and gives the runner all of its input back.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let other: BaseConsumer = admin::client_config(&kafka())
        .set("group.id", &world.group)
        .set("partition.assignment.strategy", "range,roundrobin")
        .create()?;
    other.subscribe(&[world.output.as_str()])?;
    let joined = Instant::now();
    while other.assignment()?.count() == 0 && joined.elapsed() < Duration::from_secs(60) {
        other.poll(Duration::from_millis(200));
    }
    anyhow::ensure!(
        other.assignment()?.count() > 0,
        "the second member got no partition in 60 s"
    );

    // Within a minute, far before the 600 s retry: the record is tried again
    // once the partition comes back, and the run reaches its 400 events.
    let finished = tokio::time::timeout(Duration::from_secs(60), running).await;
    shutdown.trigger();
    let stats =
        finished.map_err(|_| anyhow::anyhow!("the partition assigned back stayed paused"))???;
    assert_eq!(stats.events, 400);
    assert!(
        attempts.load(Ordering::SeqCst) >= 2,
        "the failed record was tried again"
    );
    assert_eq!(
        stored_counts(&world.dir.join("a"))?,
        expected_counts(400, 10),
        "each event counted once"
    );
    Ok(())
}
