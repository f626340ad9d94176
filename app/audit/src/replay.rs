//! `mailfleet replay <consumer>`: run a consumer's decider over its input
//! topics into fresh state, with no outputs and no effects, and print each
//! partition's state digest and the last offsets applied.
//!
//! The range is per input partition: `--from earliest` (the default) or a
//! time (each partition's first offset at or after it), and `--to` an
//! offset (the same, exclusive, in every partition), a time, or by default
//! each partition's end when the replay starts. The replay runs the same
//! runtime as a live consumer (`RunSpec::replay`: a throwaway group,
//! `produce = false`, `run_effects = false`), so its state is what a live
//! consumer at those offsets holds: equal digests, equal state.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{atomic::AtomicU64, Arc},
    time::Duration,
};

use anyhow::Context;
use mailfleet_runtime::{
    admin::{client_config, watermarks},
    config::KafkaConfig,
    time::now_ms,
    Capture, RunSpec, RunStats, Shutdown, Store,
};
use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    Offset, TopicPartitionList,
};

use mailfleet_fleet::{config::Config, consumers};

/// A topic and partition.
pub type Tp = (String, i32);

/// `mailfleet replay` arguments.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The consumer, as in `mailfleet run`.
    pub consumer: String,
    #[command(flatten)]
    pub range: RangeArgs,
    /// Where the fresh state goes (must not hold this consumer's state yet).
    #[arg(long)]
    pub state_dir: PathBuf,
}

/// Which part of the log.
#[derive(Debug, Clone, clap::Args)]
pub struct RangeArgs {
    /// `earliest`, or an RFC 3339 time.
    #[arg(long, default_value = "earliest")]
    pub from: String,
    /// An offset (exclusive, per partition) or an RFC 3339 time; default:
    /// each partition's end when the replay starts.
    #[arg(long)]
    pub to: Option<String>,
}

/// Start and stop offsets per input partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Range {
    pub start: BTreeMap<Tp, i64>,
    pub stop: BTreeMap<Tp, i64>,
}

impl Range {
    /// Records in the range.
    pub fn len(&self) -> u64 {
        self.stop
            .iter()
            .map(|(tp, stop)| (stop - self.start.get(tp).copied().unwrap_or(0)).max(0) as u64)
            .sum()
    }

    /// Whether the range holds no records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `offset` of `tp` is inside.
    pub fn contains(&self, tp: &Tp, offset: i64) -> bool {
        let start = self.start.get(tp).copied().unwrap_or(0);
        self.stop
            .get(tp)
            .is_some_and(|&stop| offset >= start && offset < stop)
    }
}

fn parse_time(key: &str, value: &str) -> anyhow::Result<i64> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_millis())
        .map_err(|e| {
            anyhow::anyhow!(
                "--{key} {value:?}: not `earliest`, an offset or an RFC 3339 time ({e})"
            )
        })
}

/// Resolve `args` against the partitions of `topics` now.
pub fn resolve(kafka: &KafkaConfig, topics: &[String], args: &RangeArgs) -> anyhow::Result<Range> {
    let from = match args.from.as_str() {
        "earliest" => None,
        t => Some(parse_time("from", t)?),
    };
    enum To {
        End,
        Offset(i64),
        Time(i64),
    }
    let to = match args.to.as_deref() {
        None => To::End,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n >= 0 => To::Offset(n),
            Ok(_) => anyhow::bail!("--to {v}: an offset must be >= 0"),
            Err(_) => To::Time(parse_time("to", v)?),
        },
    };
    let consumer: BaseConsumer = client_config(kafka)
        .create()
        .context("creating a metadata client")?;
    let timeout = Duration::from_secs(10);
    let mut range = Range::default();
    for topic in topics {
        let partitions = watermarks(&consumer, topic, timeout)
            .with_context(|| format!("{topic}: reading its offsets"))?;
        anyhow::ensure!(!partitions.is_empty(), "{topic}: no such topic");
        for (id, low, high) in partitions {
            let at = |ms: i64| -> anyhow::Result<i64> {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(topic, id, Offset::Offset(ms))?;
                let found = consumer.offsets_for_times(tpl, timeout)?;
                Ok(found
                    .elements()
                    .first()
                    .and_then(|e| e.offset().to_raw())
                    .filter(|o| *o >= 0)
                    .unwrap_or(high))
            };
            let start = match from {
                None => low,
                Some(ms) => at(ms)?.max(low),
            };
            let stop = match to {
                To::End => high,
                To::Offset(n) => n.clamp(low, high),
                To::Time(ms) => at(ms)?,
            };
            range.start.insert((topic.clone(), id), start);
            range.stop.insert((topic.clone(), id), stop.max(start));
        }
    }
    Ok(range)
}

/// What a replay left.
pub struct Replayed {
    pub stats: RunStats,
    /// Per partition: state digest and entry count.
    pub digests: BTreeMap<i32, (String, u64)>,
    /// Next offset per input partition.
    pub offsets: BTreeMap<Tp, i64>,
    /// The store's folder.
    pub store_dir: PathBuf,
}

/// Replay `name` over `range` into `state_dir`, showing progress on
/// stderr; `capture` sees what it would have produced.
pub async fn replay(
    cfg: &Config,
    name: &str,
    range: &Range,
    state_dir: &Path,
    capture: Option<Capture>,
) -> anyhow::Result<Replayed> {
    let topology = cfg.topology()?;
    let route = topology.route(name)?;
    let store_dir = state_dir.join(name);
    anyhow::ensure!(
        !store_dir.exists(),
        "--state-dir {}: already holds {name}'s state; a replay starts from fresh state",
        state_dir.display()
    );
    let stamp = now_ms().to_string();
    let mut spec =
        RunSpec::for_route(route, &cfg.kafka, &cfg.runtime).replay(state_dir.to_path_buf(), &stamp);
    spec.start_at = Some(range.start.clone());
    spec.stop_at = Some(range.stop.clone());
    spec.capture = capture;
    let progress = Arc::new(AtomicU64::new(0));
    spec.progress = Some(progress.clone());
    let bar = indicatif::ProgressBar::new(range.len());
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} events, {per_sec}, ETA {eta}",
        )?
        .progress_chars("=> "),
    );
    bar.set_message(format!("replaying {name}"));
    let consumer: consumers::ConsumerName = name.parse()?;
    let run = consumers::run_consumer_with(consumer, cfg, &topology, spec, Shutdown::new());
    tokio::pin!(run);
    let stats = loop {
        tokio::select! {
            done = &mut run => break done?,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                bar.set_position(progress.load(std::sync::atomic::Ordering::Relaxed));
            }
        }
    };
    bar.set_position(progress.load(std::sync::atomic::Ordering::Relaxed));
    bar.finish();
    let store = Store::open(&store_dir, false)?;
    let digests = store.partition_digests()?;
    let offsets = store
        .offsets()
        .into_iter()
        .map(|(t, p, o)| ((t, p), o))
        .collect();
    Ok(Replayed {
        stats,
        digests,
        offsets,
        store_dir,
    })
}

/// Print one line per partition: its digest, and the offsets applied.
pub fn print_digests(r: &Replayed) {
    let mut partitions: Vec<i32> = r.digests.keys().copied().collect();
    partitions.extend(r.offsets.keys().map(|(_, p)| *p));
    partitions.sort_unstable();
    partitions.dedup();
    for p in partitions {
        let (digest, entries) = r
            .digests
            .get(&p)
            .cloned()
            .unwrap_or_else(|| ("empty".to_string(), 0));
        let applied: Vec<String> = r
            .offsets
            .iter()
            .filter(|((_, q), _)| *q == p)
            .map(|((t, _), next)| format!("{t}@{}", next - 1))
            .collect();
        println!(
            "partition {p}: state {digest} ({entries} entries), last applied {}",
            if applied.is_empty() {
                "none".to_string()
            } else {
                applied.join(" ")
            }
        );
    }
}

/// `mailfleet replay`.
pub async fn run(args: ReplayArgs, cfg: &Config) -> anyhow::Result<()> {
    let topology = cfg.topology()?;
    let route = topology.route(&args.consumer)?;
    let range = resolve(&cfg.kafka, &route.reads, &args.range)?;
    let r = replay(cfg, &args.consumer, &range, &args.state_dir, None).await?;
    println!(
        "replayed {} events of {} into {} (no outputs, no effects)",
        r.stats.events,
        args.consumer,
        r.store_dir.display()
    );
    print_digests(&r);
    Ok(())
}
