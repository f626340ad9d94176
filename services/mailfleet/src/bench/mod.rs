//! `mailfleet bench ...`: side-by-side measurements in one run. These are
//! benchmarks, not tests; results go to `docs/benchmarks.md`.

mod consume;
mod policy;

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Config;

pub use consume::traffic_records;

#[derive(Subcommand)]
pub enum Bench {
    /// postgrey vs mailfleet's policy path: throughput flat out, and p99 at a fixed rate.
    Policy(policy::PolicyLoad),
    /// Raw rdkafka consume loop vs the runtime with the counting consumer (RocksDB state).
    Consume {
        /// Events to produce and then read twice.
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
        /// Rounds of (raw, runtime) over the same topic; medians are reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
}

pub async fn run(which: Bench, cfg: &Config) -> anyhow::Result<()> {
    match which {
        Bench::Policy(load) => policy::run(cfg, load).await,
        Bench::Consume {
            events,
            event_bytes,
            partitions,
            keys,
            rounds,
        } => {
            let shape = consume::Shape {
                events,
                event_bytes,
                partitions,
                keys,
            };
            consume::consume(cfg, shape, rounds.max(1)).await
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
