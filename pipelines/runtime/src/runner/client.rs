//! The Kafka consumer client of a run: its settings, and the wait for its
//! input topics.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};

use super::{context::RuntimeContext, RunSpec};
use crate::{admin::client_config, shutdown::Shutdown};

/// Wait (up to [`TOPIC_WAIT`]) until the broker lists every input topic
/// with partitions. A subscription to a topic created a moment ago may
/// otherwise see no partitions until librdkafka's next metadata refresh,
/// minutes later. Still missing after the wait: subscribe anyway (the
/// refresh interval is lowered so it shows up soon) and say so.
pub(super) fn wait_for_topics(
    kc: &BaseConsumer<RuntimeContext>,
    topics: &[&str],
    name: &str,
    shutdown: &Shutdown,
) {
    let deadline = Instant::now() + TOPIC_WAIT;
    let listed = |topic: &str| {
        kc.fetch_metadata(Some(topic), Duration::from_secs(5))
            .is_ok_and(|md| md.topics().iter().any(|t| !t.partitions().is_empty()))
    };
    while let Some(missing) = topics.iter().find(|t| !listed(t)) {
        if shutdown.is_triggered() {
            return; // the loop stops before its first poll
        }
        if Instant::now() >= deadline {
            tracing::warn!(consumer = %name, topic = %missing,
                "input topic not found; subscribing anyway (run `mailfleet topics apply`)");
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// How long a starting consumer waits for its input topics to exist.
const TOPIC_WAIT: Duration = Duration::from_secs(30);

/// How every consumer of the runtime fetches, unless `kafka.properties`
/// says otherwise. librdkafka (since 2.1) waits `fetch.queue.backoff.ms`,
/// 1 s by default, before fetching again for a partition whose local queue
/// was full: a consumer catching up then idles on every partition in turn.
/// 10 ms doubled `bench consume` for both the runtime and the raw loop
/// (docs/benchmarks.md), and with a shallow prefetch (the greylist's) it
/// is what keeps the queue from running dry.
pub const FETCH_DEFAULTS: &[(&str, &str)] = &[("fetch.queue.backoff.ms", "10")];

/// The Kafka consumer's settings for consumer `name`: the fixed ones, then
/// `kafka.properties`, then the consumer's own defaults and the runtime's,
/// each only where nothing before set the key.
pub(super) fn consumer_client_config(
    spec: &RunSpec,
    name: &str,
    defaults: &[(&str, &str)],
) -> rdkafka::ClientConfig {
    let mut consumer_cfg = client_config(&spec.kafka);
    consumer_cfg
        .set("group.id", &spec.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest");
    if let Some(id) = &spec.runtime.instance_id {
        consumer_cfg.set("group.instance.id", format!("{id}-{name}"));
    }
    // Defaults an operator may override in `kafka.properties`.
    for (key, value) in defaults {
        set_default(&mut consumer_cfg, key, value);
    }
    for (key, value) in FETCH_DEFAULTS {
        set_default(&mut consumer_cfg, key, value);
    }
    set_default(&mut consumer_cfg, "client.id", &format!("mailfleet-{name}"));
    set_default(
        &mut consumer_cfg,
        "partition.assignment.strategy",
        "range,roundrobin",
    );
    set_default(&mut consumer_cfg, "statistics.interval.ms", "5000");
    set_default(&mut consumer_cfg, "session.timeout.ms", "10000");
    set_default(&mut consumer_cfg, "heartbeat.interval.ms", "1000");
    // Notice new partitions and topics within seconds, not 5 minutes.
    set_default(
        &mut consumer_cfg,
        "topic.metadata.refresh.interval.ms",
        "10000",
    );
    consumer_cfg
}

fn set_default(cfg: &mut rdkafka::ClientConfig, key: &str, value: &str) {
    if cfg.get(key).is_none() {
        cfg.set(key, value);
    }
}

/// The low and high watermarks librdkafka last learned for a partition
/// (from fetch responses; no request is made). `None` while unknown.
pub(super) fn cached_watermarks(
    kc: &BaseConsumer<RuntimeContext>,
    topic: &str,
    partition: i32,
) -> Option<(i64, i64)> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1_i64, -1_i64);
    // SAFETY: the client handle lives as long as `kc`, the topic name is a
    // NUL-terminated string that outlives the call, and librdkafka only
    // writes the two offsets through the pointers given.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            kc.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some((low, high))
}
