//! `mailfleet bench ...`: side-by-side measurements in one run. These are
//! benchmarks, not tests; results go to `docs/benchmarks.md`.

mod consume;
mod corpus;
mod cpu;
mod hot;
mod kstreams;
mod lifecycle;
mod lmtp;
mod policy;
mod restore;
mod scan;
mod scan_spam;
mod store;
mod submission;
mod submit_client;

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use mailfleet_fleet::config::Config;

pub use consume::traffic_records;

#[derive(Subcommand)]
pub enum Bench {
    /// postgrey vs mailfleet's policy path: throughput flat out, and p99 at a fixed rate.
    Policy(policy::PolicyLoad),
    /// smtp-sink (LMTP, discards) vs `mailfleet lmtp` (fsync + Kafka acks), both driven by smtp-source.
    Lmtp(lmtp::LmtpLoad),
    /// Raw clamd INSTREAM vs `mailfleet_scan::scan`, the policy alone, and the scanner consumer.
    Scan(scan::ScanLoad),
    /// Postfix → Dovecot LMTP vs Postfix → mailfleet (LMTP, scanner, storage writer), to the Maildir file.
    Store(store::StoreLoad),
    /// The lifecycle pass that finds inactive accounts among 1M, vs a raw RocksDB scan of the same state.
    Lifecycle(lifecycle::LifecycleLoad),
    /// Raw rdkafka consume loop vs the runtime with the counting consumer (RocksDB state).
    Consume(ConsumeLoad),
    /// The greylist consumer vs the same decider as a Kafka Streams application
    /// (events/s, RSS), or `--state-only`: its RSS holding 10M triplets.
    Kstreams(kstreams::KstreamsLoad),
    /// Raw rdkafka consume loop vs a state restore (a fleet member rebuilding
    /// a partition's state from the earliest offset) vs `mailfleet replay`.
    Replay(ConsumeLoad),
    /// A fresh member's state: restored from the compacted changelog vs
    /// replayed from the input, and `mailfleet api`'s start-up from its
    /// snapshot vs folding the whole topic, at two history lengths for the
    /// same accounts.
    Restore(restore::RestoreLoad),
    /// Postfix submission (AUTH PLAIN) to the relay, with the submission milter vs without it.
    Submission(submission::SubmissionLoad),
    /// The hot paths in process, without the broker, for a profiler:
    /// Avro round trips, the policy server's request work, the runtime's
    /// batch work for the greylist and the counting consumer.
    Hot(hot::HotLoad),
    /// `bench policy`'s load generator, run by it in a process of its own.
    #[command(hide = true)]
    PolicyLoad(policy::LoadArgs),
    /// `bench policy --background`'s background load, run by it in a process of its own.
    #[command(hide = true)]
    PolicyBackground(policy::BackgroundArgs),
}

pub async fn run(which: Bench, cfg: &Config) -> anyhow::Result<()> {
    if !matches!(which, Bench::PolicyLoad(_) | Bench::PolicyBackground(_)) {
        warn_of_a_full_broker(cfg);
    }
    match which {
        Bench::Policy(load) => policy::run(cfg, load).await,
        Bench::Lmtp(load) => lmtp::run(cfg, load).await,
        Bench::Scan(load) => scan::run(cfg, load).await,
        Bench::Store(load) => store::run(cfg, load).await,
        Bench::Lifecycle(load) => lifecycle::run(cfg, load).await,
        Bench::Kstreams(load) => kstreams::run(cfg, load).await,
        Bench::Consume(load) => consume::consume(cfg, load.shape(), load.rounds.max(1)).await,
        Bench::Replay(load) => consume::replay(cfg, load.shape(), load.rounds.max(1)).await,
        Bench::Restore(load) => restore::run(cfg, load).await,
        Bench::Submission(load) => submission::run(cfg, load).await,
        Bench::Hot(load) => hot::run(cfg, load).await,
        Bench::PolicyLoad(args) => policy::run_load(args).await,
        Bench::PolicyBackground(args) => policy::run_background(cfg, args).await,
    }
}

/// More partitions than this on the broker, and a bench says so first.
const FULL_BROKER_PARTITIONS: usize = 500;

/// Warn, before a bench starts, of a broker that holds many partitions:
/// every broker-touched figure is lower there (the policy path made
/// 6.9k-7.2k requests/s on a broker a full `ops/test` had left ~3,000
/// partitions on, 8.3k-8.9k after `ops/kafka reset`: docs/benchmarks.md,
/// G5, session 21). A broker that cannot be asked is left to the bench.
fn warn_of_a_full_broker(cfg: &Config) {
    let partitions = mailfleet_runtime::admin::client_config(&cfg.kafka)
        .create::<rdkafka::consumer::BaseConsumer>()
        .ok()
        .and_then(|client| {
            use rdkafka::consumer::Consumer;
            client
                .fetch_metadata(None, std::time::Duration::from_secs(10))
                .ok()
        })
        .map(|md| {
            md.topics()
                .iter()
                .map(|t| t.partitions().len())
                .sum::<usize>()
        });
    if let Some(n) = partitions.filter(|&n| n > FULL_BROKER_PARTITIONS) {
        eprintln!(
            "warning: the broker holds {n} partitions (more than {FULL_BROKER_PARTITIONS}); \
             figures are lower on a broker the tests have filled: for figures to compare, \
             run `ops/kafka reset` and `ops/kafka start` first"
        );
    }
}

/// The topic a consume or replay bench reads, and how often.
#[derive(Debug, clap::Args)]
pub struct ConsumeLoad {
    /// Events to produce and then read in each round.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Encoded size of each event, bytes.
    #[arg(long, default_value_t = 200)]
    event_bytes: usize,
    /// Partitions of the benchmark topic.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Distinct counting keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Rounds over the same topic; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

impl ConsumeLoad {
    fn shape(&self) -> consume::Shape {
        consume::Shape {
            events: self.events,
            event_bytes: self.event_bytes,
            partitions: self.partitions,
            keys: self.keys,
        }
    }
}

/// The median of some measurements.
pub fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

pub fn progress_bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

/// A scratch folder for one bench run, beside the blob store (`run/bench/<id>`
/// by default), so that fsyncs hit the file system of the configured store.
pub fn scratch_dir(cfg: &Config, id: &str) -> std::path::PathBuf {
    let blobs = std::path::Path::new(&cfg.blobs.dir);
    blobs
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join("bench")
        .join(id)
}

/// Delete a bench's scratch topics; best effort (a run that failed early
/// may not have made them all).
pub async fn delete_topics(cfg: &Config, names: &[String]) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let opts = AdminOptions::new().operation_timeout(Some(std::time::Duration::from_secs(30)));
    let admin: Result<AdminClient<rdkafka::client::DefaultClientContext>, _> =
        mailfleet_runtime::admin::client_config(&cfg.kafka).create();
    if let Ok(admin) = admin {
        let _ = admin.delete_topics(&names, &opts).await;
    }
}

/// `mailfleet lmtp` in this process, accepting every recipient, on a free
/// loopback port; returns the port. For the demo and the benchmarks.
pub async fn lmtp_in_process(
    cfg: &Config,
    topic: &str,
    max_connections: usize,
    blobs: std::sync::Arc<mailfleet_blob::BlobStore>,
    shutdown: &mailfleet_runtime::Shutdown,
) -> anyhow::Result<u16> {
    use mailfleet_ingest::lmtp;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let config = lmtp::LmtpConfig {
        listen: format!("127.0.0.1:{port}"),
        max_connections: cfg.lmtp.max_connections.max(max_connections),
        topic: topic.to_string(),
        ..cfg.lmtp.clone()
    };
    let (kafka, sd) = (cfg.kafka.clone(), shutdown.clone());
    tokio::spawn(async move {
        let all = std::sync::Arc::new(lmtp::AcceptAll);
        if let Err(e) = lmtp::serve(config, listener, blobs, &kafka, all, sd).await {
            eprintln!("mailfleet lmtp: {e}");
        }
    });
    Ok(port)
}
