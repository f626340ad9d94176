//! `mailfleet clock`: time as an event. Every `every_s`, a `ClockTicked`
//! goes into every partition of each clocked topic, stamped with the tick's
//! boundary time and a deterministic id, so a restarted clock re-sends the
//! same tick rather than a new one. A long-running clock serves
//! `/metrics` (`[metrics] listen`): `mailfleet_clock_ticks_total{clock}`.

use std::time::Duration;

use mailfleet_events::{clock::ClockTicked, Envelope};
use mailfleet_runtime::{metrics as m, producer::EventProducer, time, Shutdown, Topology};

use crate::{ProcessConfig, SchedulerError};

/// Tick once, or every period until shutdown.
pub async fn run(
    cfg: &ProcessConfig<'_>,
    topology: &Topology,
    once: bool,
    shutdown: Shutdown,
) -> Result<(), SchedulerError> {
    let producer = EventProducer::new(cfg.kafka, "mailfleet-clock")?;
    let period_ms = cfg.clock.every_s as i64 * 1000;
    let clock = format!("every-{}s", cfg.clock.every_s);
    if !once {
        m::install_exporter(cfg.metrics)?;
        // At 0 from the start, so that `rate()` and alerts see the series.
        metrics::counter!(m::CLOCK_TICKS, "clock" => clock.clone()).increment(0);
    }
    loop {
        let now_ms = time::now_ms();
        let tick_ms = now_ms - now_ms.rem_euclid(period_ms);
        for topic in &cfg.clock.topics {
            let spec = topology
                .topics
                .get(topic)
                .ok_or_else(|| SchedulerError::FindTopic {
                    key: "clock.topics",
                    topic: topic.clone(),
                })?;
            for partition in 0..spec.partitions {
                let tick = ClockTicked {
                    envelope: Envelope::new(
                        format!("clock:{topic}:{partition}:{tick_ms}"),
                        tick_ms,
                        "clock",
                    ),
                    clock: clock.clone(),
                    period_ms,
                };
                producer
                    .send_to_partition(topic, partition, &mailfleet_events::encode(&tick)?)
                    .await?;
            }
            tracing::info!(%topic, partitions = spec.partitions, tick_ms, "ticked");
        }
        metrics::counter!(m::CLOCK_TICKS, "clock" => clock.clone()).increment(1);
        if once {
            return Ok(());
        }
        let wait = Duration::from_millis((tick_ms + period_ms - now_ms).max(1) as u64);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait() => return Ok(()),
        }
    }
}
