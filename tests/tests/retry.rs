//! Transient failures pause the partition and retry with backoff; nothing
//! is committed past the failure, and nothing is lost or applied twice.
//! Also checks that every runtime metric is emitted (this test binary
//! installs the Prometheus recorder in-process).

use std::{
    collections::HashMap,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use mailfleet_counter::{Counter, CounterConfig};
use mailfleet_events::{
    runtime::{Counted, TestEvent},
    Registry,
};
use mailfleet_runtime::{
    metrics as m, producer::EventProducer, run, Consumer, Decision, Input, Outcome, RunSpec,
    Shutdown, StateError, StateView,
};
use mailfleet_tests::*;

/// The counter, with an effect that fails for one key a few times, the way
/// an LDAP write fails while slapd restarts.
struct Flaky {
    inner: Counter,
    failing_key: String,
    failures_left: AtomicU32,
    attempts: AtomicU32,
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
                after: Duration::from_millis(700),
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
        attempts: AtomicU32::new(0),
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
