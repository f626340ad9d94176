//! The demo's scheduled clean-up: each configured purge job (Trash daily,
//! Spam monthly) runs once, as `mailfleet scheduler` writes a run, in
//! compressed time. The run goes into every partition of the purge topic;
//! the purger plans each account's slot over the job's window; one clock
//! tick past the window releases them all; the storage writer carries the
//! `PurgeRequested` out and reports `MessagesPurged`.

use mailfleet_events::{clock::ClockTicked, mail::MessagesPurged, Envelope};
use mailfleet_runtime::{producer::EventProducer, RunSpec, Shutdown, Topology};
use mailfleet_scheduler::{schedule::run_id, JobKind};

use crate::{
    config::Config,
    consumers,
    demo_mail::{ends, read_all},
    scheduler::job_due,
};

pub async fn run(cfg: &Config, topology: &Topology, run: &str) -> anyhow::Result<()> {
    let sec = &cfg.scheduler;
    let jobs: Vec<(&String, i64)> = sec
        .core
        .jobs
        .iter()
        .filter(|(_, j)| j.kind == JobKind::Purge)
        .map(|(name, j)| (name, j.window_ms()))
        .collect();
    if jobs.is_empty() {
        println!("== purges: no purge job configured");
        return Ok(());
    }
    let topic = &sec.purge_topic;
    let partitions = topology.topics.get(topic).map_or(1, |t| t.partitions);
    let producer = EventProducer::new(&cfg.kafka, &format!("{run}-purges"))?;
    let due = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let mut last_slot = due;
    let mut runs = Vec::new();
    for (job, window_ms) in &jobs {
        let id = run_id(job, due)?;
        runs.push(id.clone());
        let event = job_due(&sec.core.jobs, run, job, due, id)?;
        let bytes = mailfleet_events::encode(&event)?;
        for partition in 0..partitions {
            producer.send_to_partition(topic, partition, &bytes).await?;
        }
        last_slot = last_slot.max(due + window_ms);
    }
    // The clock, compressed: one tick past the longest window.
    let at = last_slot + 60_000;
    for partition in 0..partitions {
        let tick = ClockTicked {
            envelope: Envelope::new(format!("clock:{topic}:{partition}:{at}"), at, run),
            clock: "demo".into(),
            period_ms: at - due,
        };
        let bytes = mailfleet_events::encode(&tick)?;
        producer.send_to_partition(topic, partition, &bytes).await?;
    }
    let names: Vec<&str> = jobs.iter().map(|(j, _)| j.as_str()).collect();
    println!(
        "== purges: {} due now into {partitions} partitions of {topic}, a tick at +{} min",
        names.join(", "),
        (at - due) / 60_000
    );
    for consumer in ["purger", "storage"] {
        let route = topology.route(consumer)?;
        let spec = RunSpec {
            stop_at: Some(ends(cfg, &route.reads)?),
            ..RunSpec::for_route(route, &cfg.kafka, &cfg.runtime)
        };
        let stats =
            consumers::run_consumer_with(consumer, cfg, topology, spec, Shutdown::new()).await?;
        println!(
            "== {consumer}: {} inputs, {} outputs",
            stats.events, stats.outputs
        );
    }
    let stored = &cfg.consumers.storage.stored_topic;
    let purged: Vec<MessagesPurged> = read_all::<MessagesPurged>(cfg, stored)?
        .into_iter()
        .filter(|p| runs.contains(&p.job))
        .collect();
    let mut by_folder: std::collections::BTreeMap<&str, (usize, i64, i64)> = Default::default();
    for p in &purged {
        let e = by_folder.entry(p.folder.as_str()).or_default();
        *e = (e.0 + 1, e.1 + p.count, e.2 + p.bytes);
    }
    for (folder, (accounts, count, bytes)) in by_folder {
        println!(
            "  {folder:<6} {accounts:>4} mailboxes purged, {count:>5} messages, {bytes:>9} bytes"
        );
    }
    Ok(())
}
