//! The background load of `bench policy --background`, beside the paced
//! phase: what a busy MX host runs while it answers Postfix.
//!
//! - A consumer catching up: a greylist consumer (`bench policy-background`,
//!   a process of its own) from a fresh group and fresh state over a topic
//!   of `--background-events` attempts produced before the first round
//!   (the seeded stream of `bench kstreams`), writing its decisions to a
//!   scratch topic. It runs flat out for the whole phase, on the same broker
//!   as the policy path.
//! - A build-sized CPU load: `--background-cpu` threads in that process
//!   (default 2, one per core of the bench machine, as `cargo build` keeps
//!   every core busy), each in a loop
//!   over an 8 MiB buffer of its own (xorshift fill, then a dependent sum:
//!   integer work with a working set larger than the L2 cache, like a
//!   compiler's).
//!
//! Both run at the bench's own priority, or `--background-nice` above it
//! (a batch job's priority: `nice -n 10`). `--background-client-id` gives
//! the consumer a Kafka `client.id` of its own, for a broker quota
//! (`ops/kafka tool kafka.admin.ConfigCommand ... --entity-type clients`).

use std::{
    hint::black_box,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use mailfleet_fleet::config::Config;
use mailfleet_greylist::{whitelist::WhitelistFiles, Greylist};
use mailfleet_runtime::{producer::EventProducer, RunSpec, Shutdown};

use super::super::{
    consume::create_topic,
    kstreams::{attempts::Attempts, child::Peer},
    progress_bar,
};

/// `bench policy-background` (hidden): the background child.
#[derive(Debug, Clone, clap::Args)]
pub struct BackgroundArgs {
    /// The topic of attempts to catch up on.
    #[arg(long)]
    pub input: String,
    /// Where its decisions go.
    #[arg(long)]
    pub output: String,
    /// The consumer group (fresh each round: the consumer starts from the beginning).
    #[arg(long)]
    pub group: String,
    /// Its state folder (fresh each round).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Busy threads beside it.
    #[arg(long, default_value_t = 2)]
    pub cpu: usize,
    /// Its Kafka `client.id` (default: the greylist's own), so that a
    /// broker quota can tell it from the live path's greylist.
    #[arg(long)]
    pub client_id: Option<String>,
}

/// Run the catch-up consumer and the busy threads until SIGTERM.
/// The parent stops it with SIGTERM, which ends the process.
pub async fn run(cfg: &Config, args: BackgroundArgs) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    for _ in 0..args.cpu {
        let stop = shutdown.clone();
        std::thread::spawn(move || busy(&stop));
    }
    let g = cfg.consumers.greylist.clone();
    let lists = WhitelistFiles::load(g.whitelist_clients.clone(), g.whitelist_recipients.clone())?;
    let mut kafka = cfg.kafka.clone();
    if let Some(id) = args.client_id {
        kafka.properties.insert("client.id".into(), id.into());
    }
    let spec =
        RunSpec::new(args.group, vec![args.input], &kafka, &cfg.runtime).data_dir(args.data_dir);
    mailfleet_runtime::run(Greylist::new(g, lists, args.output), spec, shutdown).await?;
    Ok(())
}

/// One busy thread: fill and sum an 8 MiB buffer until shutdown.
fn busy(shutdown: &Shutdown) {
    let mut buf = vec![0u64; 1 << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while !shutdown.is_triggered() {
        for v in buf.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *v = x;
        }
        let mut sum = 0u64;
        for i in 0..buf.len() {
            // Each index depends on the sum so far: no prefetching it away.
            sum = sum.wrapping_add(buf[(i ^ sum as usize) & (buf.len() - 1)]);
        }
        black_box(sum);
    }
}

/// The attempts every round's background consumer catches up on.
pub async fn fill(cfg: &Config, topic: &str, events: u64) -> anyhow::Result<()> {
    create_topic(cfg, topic, 12).await?;
    let attempts = Attempts::new(topic, topic, cfg.consumers.greylist.grouping(), 42);
    let producer = EventProducer::new(&cfg.kafka, topic)?;
    let bar = progress_bar(events, "producing the background consumer's attempts");
    let mut failed = None;
    let records = attempts.take(events as usize).map_while(|r| match r {
        Ok(r) => Some(r),
        Err(e) => {
            failed = Some(e);
            None
        }
    });
    let sent = producer
        .send_all(records, 10_000, |k| bar.set_position(k))
        .await?;
    bar.finish_and_clear();
    if let Some(e) = failed {
        return Err(e.context("encoding an attempt"));
    }
    anyhow::ensure!(sent == events, "produced {sent} of {events} attempts");
    Ok(())
}

/// Start the background child for one round; its log goes to `dir`.
pub fn start(
    cfg_path: Option<&Path>,
    input: &str,
    round_id: &str,
    dir: &Path,
    cpu: usize,
    nice: u8,
    client_id: Option<&str>,
) -> anyhow::Result<Peer> {
    std::fs::create_dir_all(dir)?;
    // `nice -n 0` changes nothing: the bench's own priority.
    let mut cmd = Command::new("nice");
    cmd.args(["-n", &nice.to_string()])
        .arg(std::env::current_exe()?);
    if let Some(path) = cfg_path {
        cmd.arg("--config").arg(path);
    }
    cmd.args(["bench", "policy-background", "--input", input])
        .args(["--output", &format!("{round_id}.bg-decisions")])
        .args(["--group", &format!("{round_id}-bg")])
        .arg("--data-dir")
        .arg(dir.join("state"))
        .args(["--cpu", &cpu.to_string()]);
    if let Some(id) = client_id {
        cmd.args(["--client-id", id]);
    }
    Peer::spawn(cmd, &dir.join("log"))
}

/// How far the background consumer got: decisions written so far.
pub fn progress(cfg: &Config, round_id: &str) -> u64 {
    let topic = format!("{round_id}.bg-decisions");
    let consumer: Result<rdkafka::consumer::BaseConsumer, _> =
        mailfleet_runtime::admin::client_config(&cfg.kafka)
            .set("group.id", format!("{round_id}-watch"))
            .create();
    let Ok(consumer) = consumer else { return 0 };
    mailfleet_runtime::admin::watermarks(&consumer, &topic, Duration::from_secs(10))
        .map(|marks| marks.iter().map(|(_, low, high)| (high - low) as u64).sum())
        .unwrap_or(0)
}
