//! `mailfleet demo`: demo traffic through the fleet, and what happened.
//! The fleet runs as an operator runs it (`mailfleet run --all`,
//! `mailfleet lmtp`, `mailfleet api` and, in compressed time,
//! `mailfleet scheduler`; see [`fleet`]); the demo plays the world around
//! it: the example counting consumer, SMTP clients asking the policy
//! server, users registering through the API, an MX delivering mail over
//! LMTP, users moving mail to Trash over IMAP, a season of logins, plan
//! changes and notices in compressed time ([`season`]), and at the end the
//! monthly report of it all.

mod accounts;
mod fleet;
mod greylist;
mod imap;
mod mail;
mod purge;
mod report;
mod season;
mod smtp;

use std::time::Instant;

use anyhow::Context;
use clap::Args;
use mailfleet_counter::{stored_counts, traffic, Counter};
use mailfleet_events::runtime::DeadLetter;
use mailfleet_fleet::config::Config;
use mailfleet_runtime::{
    admin,
    producer::EventProducer,
    time::{now_ms, Clock},
    RunSpec, Shutdown, Store,
};

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
    /// The accounts' season runs in compressed time, this many times
    /// faster than the wall clock (`mailfleet api` and `mailfleet
    /// scheduler --time-scale`); the default makes a day 0.1 s.
    #[arg(long, default_value_t = 864_000,
          value_parser = clap::value_parser!(u32).range(1_000..=10_000_000))]
    time_scale: u32,
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
    // The policy server runs in compressed time: a day of greylisting,
    // retries after the delay included, passes in seconds.
    let policy_clock = Clock::Compressed {
        origin_ms: now_ms(),
        scale: greylist::POLICY_SCALE,
    };
    let mut fleet = Fleet::start(
        cfg,
        &topology,
        config_path,
        (&log, args.metrics_port),
        policy_clock,
    )?;
    println!("== the fleet (log: {}):", log.display());
    for line in fleet.describe() {
        println!("  {line}");
    }
    let listens = [&cfg.lmtp.listen, &cfg.policy.listen, &cfg.api.listen];
    fleet.wait_listening(&listens.map(String::as_str)).await?;
    let run_id = format!("demo-{}", rand::random::<u32>());
    count(&args, cfg, &topology, &run_id).await?;
    let greylisted = greylist::run(&run_id, fleet.policy_clock()).await?;
    let api = accounts::connect(&accounts::api_base(cfg)).await?;
    let demo_accounts = accounts::register(cfg, &run_id, &api).await?;
    season::settle(&mut fleet, "provisioning the accounts").await?;
    let mail = mail::run(cfg, &run_id, &demo_accounts.list, &mut fleet).await?;
    purge::move_to_trash(&demo_accounts).await?;
    let span = season::run(cfg, &demo_accounts, &mut fleet, args.time_scale).await?;
    season::settle(&mut fleet, "the season").await?;
    accounts::report(cfg, &run_id, &demo_accounts.list).await?;
    purge::print_purged(cfg, &span)?;
    let (html, md) = report::run(cfg, &run_dir.join("reports"), fleet, span.last).await?;
    println!(
        "== the monthly report:\n  {}\n  {}",
        html.display(),
        md.display()
    );
    // One line for a check of the report against the traffic
    // (tests/python/test_quickstart.py).
    println!(
        "== sent: registrations={} logins={} rcpt_deferred={} rcpt_accepted={} messages={} recipients={} infected={} banned={} last_month={}",
        accounts::ACCOUNTS,
        span.logins,
        greylisted.0 + mail.rcpt_deferred as u32,
        greylisted.1 + mail.rcpt_accepted as u32,
        mail.messages,
        mail.recipients,
        mail.infected,
        mail.banned,
        mailfleet_report::Month::of_ms(span.last)
    );
    Ok(())
}

/// The example counting consumer over `args.events` demo events and three
/// bad records, run in this process; then its counts and dead letters.
async fn count(
    args: &DemoArgs,
    cfg: &Config,
    topology: &mailfleet_runtime::Topology,
    run_id: &str,
) -> anyhow::Result<()> {
    let route = topology.route("counter")?;
    let input = route.reads.first().context("counter reads no topic")?;
    let output = route.writes.first().cloned().unwrap_or_default();

    let producer = EventProducer::new(&cfg.kafka, run_id)?;
    let bar = progress_bar(args.events, "demo traffic");
    let records = traffic_records(run_id, input, args.events, args.keys, 64)?;
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
    let mut empty = traffic::test_event(run_id, 0, 1, 0);
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
    print_dead_letters(cfg, 3)
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
