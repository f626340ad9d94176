//! `mailfleet demo`: demo traffic through the fleet, and what happened.
//! The fleet runs as an operator runs it (`mailfleet run --all` and
//! `mailfleet lmtp`, see [`fleet`]); the demo plays the world
//! around it: the example counting consumer, SMTP clients asking the policy
//! server, an MX delivering mail over LMTP, users logging in and changing
//! plans, the clock, and at the end the monthly report of it all.

mod accounts;
mod fleet;
mod greylist;
mod mail;
mod purge;
mod report;

use std::time::Instant;

use anyhow::Context;
use clap::Args;
use mailfleet_counter::{stored_counts, traffic, Counter};
use mailfleet_events::runtime::DeadLetter;
use mailfleet_fleet::config::Config;
use mailfleet_runtime::{admin, producer::EventProducer, RunSpec, Shutdown, Store};

use crate::bench::{progress_bar, traffic_records};
use fleet::Fleet;

#[derive(Args)]
pub struct DemoArgs {
    /// Demo events to send.
    #[arg(long, default_value_t = 20_000)]
    events: u64,
    /// Distinct keys among them.
    #[arg(long, default_value_t = 50)]
    keys: u64,
    /// The fleet's `/metrics` port (`mailfleet run --all`); `mailfleet lmtp`
    /// takes the next one.
    #[arg(long, default_value_t = 9464)]
    metrics_port: u16,
}

pub async fn run(
    args: DemoArgs,
    cfg: &Config,
    config_path: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let topology = cfg.topology()?;
    println!("== topics");
    for (topic, change) in admin::apply(&cfg.kafka, &topology).await? {
        println!("  {topic}: {change:?}");
    }
    // Beside the state: run/state → run/fleet.log, run/reports.
    let run_dir = cfg
        .runtime
        .data_dir
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf();
    let log = run_dir.join("fleet.log");
    let mut fleet = Fleet::start(cfg, &topology, config_path, &log, args.metrics_port)?;
    println!("== the fleet (log: {}):", log.display());
    for line in fleet.describe() {
        println!("  {line}");
    }
    let route = topology.route("counter")?;
    let input = route.reads.first().context("counter reads no topic")?;
    let output = route.writes.first().cloned().unwrap_or_default();

    let run_id = format!("demo-{}", rand::random::<u32>());
    let producer = EventProducer::new(&cfg.kafka, &run_id)?;
    let bar = progress_bar(args.events, "demo traffic");
    let records = traffic_records(&run_id, input, args.events, args.keys, 64)?;
    producer
        .send_all(records, 5_000, |n| bar.set_position(n))
        .await?;
    bar.finish_and_clear();
    // Bad input, to show that it is set aside and the partition keeps flowing.
    producer
        .send_raw(input, b"bad-1", b"this is not an event")
        .await?;
    producer
        .send_raw(input, b"bad-2", &[0xC3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 0])
        .await?;
    let mut empty = traffic::test_event(&run_id, 0, 1, 0);
    empty.key.clear();
    producer.send(input, b"bad-3", &empty).await?;
    let sent = args.events + 3;
    println!(
        "== sent {} events and 3 bad records to {input}",
        args.events
    );

    let started = Instant::now();
    let spec = RunSpec::for_route(route, &cfg.kafka, &cfg.runtime).stop_after(sent);
    let counter = Counter::new(cfg.consumers.counter.clone(), output);
    let stats = mailfleet_runtime::run(counter, spec, Shutdown::new()).await?;
    println!(
        "== counter: {} inputs in {:.2}s, {} outputs, {} dead letters, {} batches",
        stats.events,
        started.elapsed().as_secs_f64(),
        stats.outputs,
        stats.dead_letters,
        stats.batches
    );
    print_counts(cfg)?;
    print_dead_letters(cfg, 3)?;
    greylist::run(cfg, &topology, &run_id).await?;
    mail::run(cfg, &topology, &run_id, &mut fleet).await?;
    accounts::run(cfg, &topology, &run_id, &mut fleet).await?;
    purge::run(cfg, &topology, &run_id, &mut fleet).await?;
    let (html, md) = report::run(cfg, &run_dir.join("reports"), fleet).await?;
    println!(
        "== the monthly report:\n  {}\n  {}",
        html.display(),
        md.display()
    );
    Ok(())
}

fn print_counts(cfg: &Config) -> anyhow::Result<()> {
    let store = Store::open(&cfg.runtime.data_dir.join("counter"), false)?;
    let mut counts: Vec<(String, u64)> = stored_counts(&store)?.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let total: u64 = counts.iter().map(|c| c.1).sum();
    println!(
        "== state: {} keys, {total} counted in all (all demo runs so far)",
        counts.len()
    );
    for (key, count) in counts.iter().take(5) {
        println!("  {key}: {count}");
    }
    Ok(())
}

fn print_dead_letters(cfg: &Config, last: usize) -> anyhow::Result<()> {
    let letters: Vec<DeadLetter> = mail::read_all(cfg, &cfg.runtime.deadletter_topic)?;
    println!("== dead letters (last {last} of {}):", letters.len());
    for l in letters.iter().rev().take(last).rev() {
        println!(
            "  {}/{}@{} {:?}: {}",
            l.topic, l.partition, l.offset, l.kind, l.reason
        );
    }
    Ok(())
}
