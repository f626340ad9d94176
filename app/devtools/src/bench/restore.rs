//! `mailfleet bench restore`: how long a fresh fleet member takes to get a
//! consumer's state, from the compacted changelog (`runtime.changelog`)
//! and by replaying the input from the beginning, and how long `mailfleet
//! api` takes to start, from its snapshot and by folding the whole events
//! topic, at K and 10·K events per account for the same N accounts. The
//! goal: the changelog restore and the API's start from its snapshot at
//! 10× the history take at most 1.3× the time.
//!
//! For each K:
//! 1. N·K `TestEvent`s keyed by N accounts on a fresh 12-partition topic
//!    (the counting consumer: one state row per account, which every event
//!    of the account changes, as a login changes an account's row);
//! 2. the consumer runs live with its changelog on, to the end, and ships;
//! 3. the changelog is compacted: its segments roll after 2 s here (an hour
//!    in `pipelines/topology.toml`) and the broker's cleaner runs; the
//!    bench waits until the changelog holds about one record per account;
//! 4. timed, alternately, `rounds` times: a fresh member of the same group
//!    restoring from the changelog, and a fresh member of another group,
//!    without a changelog, replaying the input; each until its store holds
//!    every partition's end offset. Medians are reported.
//! 5. `mailfleet api` start-up, with its projection's snapshot and folding
//!    the whole events topic, on N·K account events for the same N
//!    accounts ([`api`]).
//!
//! Each history's topics are deleted after it is measured.

mod api;

use std::time::{Duration, Instant};

use mailfleet_counter::{Counter, CounterConfig};
use mailfleet_fleet::config::Config;
use mailfleet_runtime::{
    admin, changelog,
    producer::EventProducer,
    read::{self, end_offsets},
    RunSpec, Shutdown, Topology,
};

use rdkafka::producer::{FutureProducer, FutureRecord};

use super::{consume::traffic_records, delete_topics, median};

#[derive(clap::Args, Debug)]
pub struct RestoreLoad {
    /// Accounts (state keys).
    #[arg(long, default_value_t = 20_000)]
    accounts: u64,
    /// Events per account; each value is one history, all for the same accounts.
    #[arg(long, value_delimiter = ',', default_value = "10,100")]
    events_per_account: Vec<u64>,
    /// Timed rounds of (restore, replay) per history.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Longest wait for the broker's cleaner, seconds.
    #[arg(long, default_value_t = 300)]
    compaction_wait_s: u64,
}

const PARTITIONS: i32 = 12;

/// One history's figures.
struct Figures {
    k: u64,
    restore_s: f64,
    replay_s: f64,
    changelog_records: usize,
    api: api::ApiFigures,
}

pub async fn run(cfg: &Config, load: RestoreLoad) -> anyhow::Result<()> {
    anyhow::ensure!(
        load.accounts > 0 && !load.events_per_account.contains(&0),
        "--accounts and --events-per-account must be > 0"
    );
    let run_id = format!("bench-restore-{}", std::process::id());
    let mut all = Vec::new();
    for &k in &load.events_per_account {
        let id = format!("{run_id}-k{k}");
        let figures = history(cfg, &load, &id, k).await;
        let [accounts, snapshot] = api::topics(&id);
        let changelog = changelog::topic_for(&live_group(&id));
        let topics = [format!("{id}.in"), changelog, accounts, snapshot];
        delete_topics(cfg, &topics).await;
        all.push(figures?);
    }
    let load_avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load_avg = load_avg.split(' ').next().unwrap_or("?").to_string();
    for f in &all {
        println!(
            "K={:>4}: {} events, changelog {} records: restore {:.2} s, replay {:.2} s ({:.1}x); \
             API start with its snapshot ({} records) {:.2} s, folding the whole topic {:.2} s",
            f.k,
            f.k * load.accounts,
            f.changelog_records,
            f.restore_s,
            f.replay_s,
            f.replay_s / f.restore_s,
            f.api.snapshot_records,
            f.api.snapshot_s,
            f.api.fold_s,
        );
    }
    println!("{}", last_line(&load, &all, &load_avg));
    Ok(())
}

/// The machine-readable line: the lowest and the highest history.
fn last_line(load: &RestoreLoad, all: &[Figures], load_avg: &str) -> String {
    let (first, last) = (&all[0], &all[all.len() - 1]);
    format!(
        "restore accounts={} k_low={} k_high={} restore_low_s={:.2} restore_high_s={:.2} ratio={:.2} \
         replay_low_s={:.2} replay_high_s={:.2} replay_ratio={:.2} load1={load_avg} \
         api_low_s={:.2} api_high_s={:.2} api_ratio={:.2} \
         api_fold_low_s={:.2} api_fold_high_s={:.2} api_fold_ratio={:.2}",
        load.accounts,
        first.k,
        last.k,
        first.restore_s,
        last.restore_s,
        last.restore_s / first.restore_s,
        first.replay_s,
        last.replay_s,
        last.replay_s / first.replay_s,
        first.api.snapshot_s,
        last.api.snapshot_s,
        last.api.snapshot_s / first.api.snapshot_s,
        first.api.fold_s,
        last.api.fold_s,
        last.api.fold_s / first.api.fold_s,
    )
}

/// The group of the member that runs live and writes the changelog.
fn live_group(id: &str) -> String {
    format!("{id}-live")
}

async fn history(cfg: &Config, load: &RestoreLoad, id: &str, k: u64) -> anyhow::Result<Figures> {
    let topic = format!("{id}.in");
    let group = live_group(id);
    super::consume::create_topic(cfg, &topic, PARTITIONS).await?;
    let events = load.accounts * k;
    let producer = EventProducer::new(&cfg.kafka, id)?;
    let started = Instant::now();
    let records = traffic_records(id, &topic, events, load.accounts, 64)?;
    producer.send_all(records, 10_000, |_| {}).await?;
    println!(
        "K={k}: produced {events} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // The changelog, declared as the runtime would, but rolling fast.
    let mut spec = changelog::topic_spec(PARTITIONS);
    spec.segment_ms = Some(2_000);
    spec.min_cleanable_dirty_ratio = Some(0.01);
    let cl_topic = changelog::topic_for(&group);
    let topology = Topology {
        topics: [(cl_topic.clone(), spec)].into(),
        consumers: Default::default(),
    };
    admin::apply(&cfg.kafka, &topology).await?;
    let dir = super::scratch_dir(cfg, id);
    let started = Instant::now();
    member(cfg, &group, &topic, &dir.join("live"), true, Some(events)).await?;
    println!(
        "K={k}: live with changelog in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let changelog_records = compacted(cfg, &cl_topic, load).await?;
    let (mut restore, mut replay) = (Vec::new(), Vec::new());
    for round in 0..load.rounds.max(1) {
        let at = dir.join(format!("restore-{round}"));
        restore.push(member(cfg, &group, &topic, &at, true, None).await?);
        let at = dir.join(format!("replay-{round}"));
        let other = format!("{id}-replay-{round}");
        replay.push(member(cfg, &other, &topic, &at, false, None).await?);
        println!(
            "K={k} round {round}: restore {:.2} s, replay {:.2} s",
            restore[round], replay[round]
        );
    }
    let api = api::history(cfg, load.accounts, k, load.rounds, id, &dir).await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Figures {
        k,
        restore_s: median(&mut restore),
        replay_s: median(&mut replay),
        changelog_records,
        api,
    })
}

/// Run a member of `group` on a fresh store in `dir` until it holds every
/// partition's end offset (or, live, `events` were handled); seconds.
async fn member(
    cfg: &Config,
    group: &str,
    topic: &str,
    dir: &std::path::Path,
    with_changelog: bool,
    events: Option<u64>,
) -> anyhow::Result<f64> {
    let mut runtime = cfg.runtime.clone();
    runtime.changelog = if with_changelog {
        vec!["counter".to_string()]
    } else {
        vec![]
    };
    let mut spec = RunSpec::new(group, vec![topic.to_string()], &cfg.kafka, &runtime)
        .data_dir(dir.to_path_buf());
    match events {
        Some(n) => spec = spec.stop_after(n),
        None => spec.stop_at = Some(end_offsets(&cfg.kafka, &[topic.to_string()])?),
    }
    let started = Instant::now();
    let counter = Counter::new(CounterConfig { emit: false }, "");
    mailfleet_runtime::run(counter, spec, Shutdown::new()).await?;
    Ok(started.elapsed().as_secs_f64())
}

/// Wait until the broker's cleaner compacted `topic` to about one record
/// per account; the records it holds then.
async fn compacted(cfg: &Config, topic: &str, load: &RestoreLoad) -> anyhow::Result<usize> {
    let producer: FutureProducer = admin::client_config(&cfg.kafka).create()?;
    let give_up = Instant::now() + Duration::from_secs(load.compaction_wait_s);
    let target = (load.accounts as f64 * 1.2) as usize + 1000;
    loop {
        // A segment rolls only when a record comes after `segment.ms`: a
        // tombstone of a key no state has (a restore deletes nothing).
        tokio::time::sleep(Duration::from_secs(3)).await;
        for p in 0..PARTITIONS {
            let nudge = FutureRecord::<[u8], [u8]>::to(topic)
                .partition(p)
                .key(b"\xFFnudge");
            producer
                .send(nudge, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| e)?;
        }
        let held = read::read_committed(&cfg.kafka, topic, "bench-restore-count")?.len();
        println!("changelog {topic}: {held} records");
        if held <= target || Instant::now() >= give_up {
            return Ok(held);
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}
