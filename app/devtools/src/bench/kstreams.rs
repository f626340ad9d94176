//! `mailfleet bench kstreams`: the greylist consumer (`mailfleet run
//! greylist`, its own process) vs the same decider as a Kafka Streams
//! application (`benches/kstreams`, `java -jar`), on the same broker and
//! the same input topic, each from a fresh group and fresh state, in
//! alternation for `--rounds`. Both must write one decision per attempt,
//! and the same one. `--state-only` gives the state-size figure instead:
//! the RSS of one greylist consumer after `--triplets` distinct triplets.

pub(super) mod attempts;
pub(super) mod child;
mod compare;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Context;
use mailfleet_events::{config::ConfigChanged, Envelope};
use mailfleet_fleet::config::Config;
use mailfleet_greylist::{settings_of, whitelist::WhitelistFiles};
use mailfleet_runtime::{admin, producer::EventProducer, time::now_ms};
use rdkafka::{
    admin::{AdminClient, AdminOptions},
    client::DefaultClientContext,
};

use self::{
    attempts::Attempts,
    child::{read_decisions, Peer, Usage},
    compare::Reference,
};
use super::{consume::create_topic, median, progress_bar, scratch_dir};

/// The load and the peers' settings.
#[derive(Debug, Clone, clap::Args)]
pub struct KstreamsLoad {
    /// Delivery attempts to produce; each peer decides all of them per round.
    #[arg(long, default_value_t = 1_000_000)]
    attempts: u64,
    /// Rounds (mailfleet, then Kafka Streams); medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Partitions of the attempts topic [default: smtp.attempts' in the topology].
    #[arg(long)]
    partitions: Option<i32>,
    /// Kafka Streams stream threads (num.stream.threads).
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// JVM options of the Streams application.
    #[arg(long, default_value = "-Xms256m -Xmx512m", allow_hyphen_values = true)]
    java_opts: String,
    /// The Streams application's one RocksDB block cache for all its stores,
    /// MiB, memtables counted in it; 0: Kafka Streams' defaults (50 MiB
    /// cache and 3 × 16 MiB memtables per partition's store).
    #[arg(long, default_value_t = 64)]
    kstreams_cache_mb: u64,
    /// Kafka Streams `processing.guarantee`: exactly_once_v2 or at_least_once.
    #[arg(long, default_value = "exactly_once_v2")]
    guarantee: String,
    /// Only the state-size figure: `--triplets` distinct triplets through
    /// one greylist consumer, and its RSS at the end.
    #[arg(long)]
    state_only: bool,
    /// Distinct triplets of the state-size run.
    #[arg(long, default_value_t = 10_000_000)]
    triplets: u64,
    /// Seed of the attempt stream.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Keep the scratch topics and folders.
    #[arg(long)]
    keep: bool,
}

/// One peer's run: what it wrote, when, and what it used.
struct Measured {
    /// Broker append times of its first and last decision, ms.
    first_ms: i64,
    last_ms: i64,
    started_ms: i64,
    usage: Usage,
}

impl Measured {
    /// Events/s from its first output to its last (the steady rate).
    fn eps(&self, n: u64) -> f64 {
        (n.saturating_sub(1)) as f64 * 1000.0 / (self.last_ms - self.first_ms).max(1) as f64
    }
    /// Events/s from process start to its last output (start-up included).
    fn eps_from_start(&self, n: u64) -> f64 {
        n as f64 * 1000.0 / (self.last_ms - self.started_ms).max(1) as f64
    }
    fn line(&self, n: u64) -> String {
        format!(
            "{:.0} events/s first→last output ({:.2}s), {:.0} events/s from process start ({:.2}s, first output after {:.2}s); peak RSS {:.1} MB (at the end {:.1} MB); CPU {:.1}s ({:.1} µs/event)",
            self.eps(n),
            (self.last_ms - self.first_ms) as f64 / 1000.0,
            self.eps_from_start(n),
            (self.last_ms - self.started_ms) as f64 / 1000.0,
            (self.first_ms - self.started_ms) as f64 / 1000.0,
            mb(self.usage.peak_rss_kb),
            mb(self.usage.rss_kb),
            self.usage.cpu_s,
            self.usage.cpu_s * 1e6 / n as f64
        )
    }
}

fn mb(kb: u64) -> f64 {
    kb as f64 * 1024.0 / 1e6
}

/// What the two peers' runs share.
struct Bench<'a> {
    cfg: &'a Config,
    load: &'a KstreamsLoad,
    id: String,
    input: String,
    partitions: i32,
    dir: PathBuf,
    /// Topics to delete at the end.
    topics: Vec<String>,
}

pub async fn run(cfg: &Config, load: KstreamsLoad) -> anyhow::Result<()> {
    anyhow::ensure!(
        matches!(load.guarantee.as_str(), "exactly_once_v2" | "at_least_once"),
        "--guarantee {:?}: must be exactly_once_v2 or at_least_once",
        load.guarantee
    );
    anyhow::ensure!(
        load.attempts > 0 && load.triplets > 0,
        "--attempts and --triplets must be > 0"
    );
    let topology = cfg.topology()?;
    let partitions = match load.partitions {
        Some(p) if p > 0 => p,
        Some(p) => anyhow::bail!("--partitions {p}: must be > 0"),
        None => topology
            .route("greylist")?
            .reads
            .first()
            .and_then(|t| topology.topics.get(t))
            .map_or(12, |t| t.partitions),
    };
    let id = format!("bench-kstreams-{}", rand::random::<u32>());
    let dir = std::path::absolute(scratch_dir(cfg, &id))?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let input = format!("{id}.attempts");
    let mut bench = Bench {
        cfg,
        load: &load,
        id,
        input,
        partitions,
        dir,
        topics: Vec::new(),
    };
    let result = if load.state_only {
        bench.state_size().await
    } else {
        bench.side_by_side().await
    };
    if !load.keep {
        bench.clean_up().await;
    }
    result
}

impl Bench<'_> {
    /// The attempts topic: the greylist's settings as a `ConfigChanged` in
    /// every partition first (what `mailfleet run greylist` records; both
    /// peers then stamp its hash), then `n` attempts.
    async fn fill_input(&mut self, attempts: Attempts, n: u64) -> anyhow::Result<String> {
        create_topic(self.cfg, &self.input, self.partitions).await?;
        self.topics.push(self.input.clone());
        let g = &self.cfg.consumers.greylist;
        let lists =
            WhitelistFiles::load(g.whitelist_clients.clone(), g.whitelist_recipients.clone())?;
        let settings =
            settings_of(g, &lists).map_err(|e| anyhow::anyhow!("greylist settings: {e}"))?;
        let producer = EventProducer::new(&self.cfg.kafka, &self.id)?;
        for p in 0..self.partitions {
            let event = ConfigChanged {
                envelope: Envelope::new(
                    format!("{}:config:{p}", self.id),
                    now_ms(),
                    "bench-kstreams",
                ),
                consumer: "greylist".into(),
                settings: settings.json.clone(),
                hash: settings.hash.clone(),
            };
            producer
                .send_to_partition(&self.input, p, &mailfleet_events::encode(&event)?)
                .await?;
        }
        let bar = progress_bar(n, "producing attempts");
        let started = Instant::now();
        let mut failed = None;
        let records = attempts.take(n as usize).map_while(|r| match r {
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
        anyhow::ensure!(sent == n, "produced {sent} of {n} attempts");
        println!(
            "produced {n} attempts to {} ({} partitions) in {:.1}s; settings {}",
            self.input,
            self.partitions,
            started.elapsed().as_secs_f64(),
            &settings.hash[..16]
        );
        Ok(settings.hash)
    }

    async fn side_by_side(&mut self) -> anyhow::Result<()> {
        let n = self.load.attempts;
        let attempts = Attempts::new(
            &self.id,
            &self.input,
            self.cfg.consumers.greylist.grouping(),
            self.load.seed,
        );
        self.fill_input(attempts, n).await?;
        let jar = build_jar()?;
        let mut reference: Option<Reference> = None;
        let mut disagreements = Vec::new();
        let (mut mf, mut ks) = (Vec::new(), Vec::new());
        for round in 1..=self.load.rounds {
            for peer in ["mailfleet", "kstreams"] {
                let name = format!("{peer}-{round}");
                let (measured, decisions) = self.one_run(peer, &name, &jar, n).await?;
                println!("round {round} {peer}: {}", measured.line(n));
                match &reference {
                    None => reference = Some(Reference::new(&name, decisions, n)?),
                    Some(r) => disagreements.extend(r.check(&name, decisions, n)?),
                }
                if peer == "mailfleet" {
                    &mut mf
                } else {
                    &mut ks
                }
                .push(measured);
            }
        }
        let reference = reference.context("no rounds")?;
        println!(
            "decisions per verdict/reason (every run): {}",
            reference.tally()
        );
        if disagreements.is_empty() {
            println!("checked: every run wrote {n} decisions, one per attempt, and all runs agree on each (verdict, reason, action, delay, triplet, settings hash, event id)");
        } else {
            for d in &disagreements {
                println!("DIFFERENCE: {d}");
            }
        }
        let med = |ms: &[Measured], f: &dyn Fn(&Measured) -> f64| {
            median(&mut ms.iter().map(f).collect::<Vec<_>>())
        };
        let (mf_eps, ks_eps) = (med(&mf, &|m| m.eps(n)), med(&ks, &|m| m.eps(n)));
        let (mf_start, ks_start) = (
            med(&mf, &|m| m.eps_from_start(n)),
            med(&ks, &|m| m.eps_from_start(n)),
        );
        let (mf_rss, ks_rss) = (
            med(&mf, &|m| mb(m.usage.peak_rss_kb)),
            med(&ks, &|m| mb(m.usage.peak_rss_kb)),
        );
        let (mf_cpu, ks_cpu) = (
            med(&mf, &|m| m.usage.cpu_s * 1e6 / n as f64),
            med(&ks, &|m| m.usage.cpu_s * 1e6 / n as f64),
        );
        println!(
            "medians over {} rounds, {n} attempts, {} partitions; kstreams: {} stream threads, {}, JVM {:?}, block cache {}",
            self.load.rounds, self.partitions, self.load.threads, self.load.guarantee, self.load.java_opts,
            match self.load.kstreams_cache_mb { 0 => "Kafka Streams' defaults".to_string(), c => format!("{c} MiB shared") }
        );
        println!(
            "mailfleet_eps={mf_eps:.0} kstreams_eps={ks_eps:.0} eps_ratio={:.2} mailfleet_start_eps={mf_start:.0} kstreams_start_eps={ks_start:.0} start_eps_ratio={:.2} mailfleet_rss_mb={mf_rss:.1} kstreams_rss_mb={ks_rss:.1} rss_ratio={:.2} mailfleet_cpu_us={mf_cpu:.1} kstreams_cpu_us={ks_cpu:.1} agree={}",
            mf_eps / ks_eps,
            mf_start / ks_start,
            mf_rss / ks_rss,
            disagreements.is_empty()
        );
        anyhow::ensure!(
            disagreements.is_empty(),
            "the peers' decisions differ ({} differences listed above)",
            disagreements.len()
        );
        Ok(())
    }

    /// One peer from a fresh group and state to its `n`th decision.
    async fn one_run(
        &mut self,
        peer: &str,
        name: &str,
        jar: &Path,
        n: u64,
    ) -> anyhow::Result<(
        Measured,
        Vec<(i64, mailfleet_events::greylist::GreylistDecided)>,
    )> {
        let output = format!("{}.{name}.decisions", self.id);
        create_topic(self.cfg, &output, self.partitions).await?;
        self.topics.push(output.clone());
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir)?;
        let group = format!("{}-{name}", self.id);
        let cmd = if peer == "mailfleet" {
            self.mailfleet_command(&dir, &group, &output)?
        } else {
            self.topics.push(format!("{group}-greylist-changelog"));
            self.kstreams_command(jar, &dir, &group, &output)
        };
        let mut child = Peer::spawn(cmd, &dir.join("log"))?;
        let started_ms = child.started_ms;
        let mut decisions = Vec::new();
        for _ in 0..3 {
            child.wait_for(self.cfg, &output, n, Duration::from_secs(3600))?;
            decisions = read_decisions(self.cfg, &output)?;
            if decisions.len() as u64 >= n {
                break;
            }
        }
        let usage = child.stop()?;
        anyhow::ensure!(
            decisions.len() as u64 == n,
            "{name} wrote {} decisions for {n} attempts",
            decisions.len()
        );
        let first_ms = decisions.iter().map(|(at, _)| *at).min().unwrap_or(0);
        let last_ms = decisions.iter().map(|(at, _)| *at).max().unwrap_or(0);
        if !self.load.keep {
            let _ = std::fs::remove_dir_all(dir.join("state"));
        }
        Ok((
            Measured {
                first_ms,
                last_ms,
                started_ms,
                usage,
            },
            decisions,
        ))
    }

    /// `mailfleet run greylist` with a generated config: this config's
    /// Kafka, runtime and greylist settings, a topology routing the
    /// greylist from the bench's input to `output`, fresh state, no metrics.
    fn mailfleet_command(&self, dir: &Path, group: &str, output: &str) -> anyhow::Result<Command> {
        let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let topology = dir.join("topology.toml");
        std::fs::write(
            &topology,
            format!(
                "[topics.{in_}]\npartitions = {p}\nretention_ms = 3600000\ncleanup_policy = \"delete\"\n\n\
                 [topics.{out}]\npartitions = {p}\nretention_ms = 3600000\ncleanup_policy = \"delete\"\n\n\
                 [consumers.greylist]\ngroup = {g}\nreads = [{in_}]\nwrites = [{out}]\n",
                in_ = q(&self.input),
                out = q(output),
                p = self.partitions,
                g = q(group),
            ),
        )?;
        let (rt, g) = (&self.cfg.runtime, &self.cfg.consumers.greylist);
        let paths = |ps: &[PathBuf]| {
            ps.iter()
                .map(|p| q(&p.display().to_string()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let config = dir.join("mailfleet.toml");
        std::fs::write(
            &config,
            format!(
                "[kafka]\nbrokers = {brokers}\n\n[kafka.properties]\n{props}\n\
                 [runtime]\ndata_dir = {data}\nbatch_max_events = {bme}\nbatch_max_wait_ms = {bmw}\nsync_writes = {sync}\ndeadletter_topic = {dl}\n\n\
                 [metrics]\nlisten = \"\"\n\n[log]\nlevel = \"warn\"\n\n[pipelines]\ntopology = {topo}\n\n\
                 [consumers.greylist]\ndelay_s = {}\nmax_age_days = {}\nretry_window_s = {}\nauto_whitelist_clients = {}\n\
                 ipv4_prefix = {}\nipv6_prefix = {}\nlookup_by_host = {}\ngreylist_action = {}\ngreylist_text = {}\n\
                 x_greylist_header = {}\nhostname = {}\nwhitelist_clients = [{}]\nwhitelist_recipients = [{}]\n",
                g.delay_s, g.max_age_days, g.retry_window_s, g.auto_whitelist_clients, g.ipv4_prefix, g.ipv6_prefix,
                g.lookup_by_host, q(&g.greylist_action), q(&g.greylist_text), q(&g.x_greylist_header), q(&g.hostname),
                paths(&g.whitelist_clients), paths(&g.whitelist_recipients),
                brokers = q(&self.cfg.kafka.brokers),
                props = self.cfg.kafka.properties,
                data = q(&dir.join("state").display().to_string()),
                bme = rt.batch_max_events,
                bmw = rt.batch_max_wait_ms,
                sync = rt.sync_writes,
                dl = q(&rt.deadletter_topic),
                topo = q(&topology.display().to_string()),
            ),
        )?;
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("--config").arg(&config).args(["run", "greylist"]);
        // The generated file is the whole config: no overrides from ours.
        for (key, _) in std::env::vars() {
            if key.starts_with("MAILFLEET_") && key.contains("__") {
                cmd.env_remove(key);
            }
        }
        Ok(cmd)
    }

    /// `java -jar greylist-kstreams.jar` on the same topics.
    fn kstreams_command(&self, jar: &Path, dir: &Path, group: &str, output: &str) -> Command {
        let g = &self.cfg.consumers.greylist;
        let mut cmd = Command::new("java");
        cmd.args(self.load.java_opts.split_whitespace())
            .arg("-jar")
            .arg(jar)
            .args([
                "--bootstrap",
                &self.cfg.kafka.brokers,
                "--application-id",
                group,
            ])
            .args(["--input", &self.input, "--output", output])
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--threads", &self.load.threads.to_string()])
            .args(["--guarantee", &self.load.guarantee])
            .args(["--cache-mb", &self.load.kstreams_cache_mb.to_string()])
            .args(["--version", env!("CARGO_PKG_VERSION")]);
        for p in &g.whitelist_clients {
            cmd.arg("--whitelist-clients").arg(p);
        }
        for p in &g.whitelist_recipients {
            cmd.arg("--whitelist-recipients").arg(p);
        }
        cmd
    }

    /// One greylist consumer over `--triplets` distinct triplets: its RSS
    /// at the end, and what the store holds on disk.
    async fn state_size(&mut self) -> anyhow::Result<()> {
        let n = self.load.triplets;
        let attempts = Attempts::new(
            &self.id,
            &self.input,
            self.cfg.consumers.greylist.grouping(),
            self.load.seed,
        )
        .distinct();
        self.fill_input(attempts, n).await?;
        let output = format!("{}.state.decisions", self.id);
        create_topic(self.cfg, &output, self.partitions).await?;
        self.topics.push(output.clone());
        let dir = self.dir.join("state-run");
        std::fs::create_dir_all(&dir)?;
        let cmd = self.mailfleet_command(&dir, &format!("{}-state", self.id), &output)?;
        let mut child = Peer::spawn(cmd, &dir.join("log"))?;
        let started = Instant::now();
        child.wait_for(self.cfg, &output, n, Duration::from_secs(3 * 3600))?;
        let secs = started.elapsed().as_secs_f64();
        let status = child.status_lines();
        let usage = child.stop()?;
        let store = dir.join("state").join("greylist");
        let on_disk = dir_bytes(&store);
        println!(
            "{n} distinct triplets through one greylist consumer in {secs:.0}s ({:.0} events/s from process start)",
            n as f64 / secs
        );
        println!("at the end: {status}");
        let budget = match self.cfg.runtime.store_memory_mb {
            0 => "none (runtime.store_memory_mb = 0: RocksDB's default block cache, memtables 64 MiB × 2)".to_string(),
            mb => format!("runtime.store_memory_mb = {mb}: one LRU block cache of {mb} MiB, memtables charged to it"),
        };
        println!(
            "store on disk: {:.1} MB ({}); store memory budget: {budget}",
            on_disk as f64 / 1e6,
            store.display()
        );
        println!(
            "triplets={n} peak_rss_mb={:.1} rss_mb={:.1} store_mb={:.1} goal_mb=250 met={}",
            mb(usage.peak_rss_kb),
            mb(usage.rss_kb),
            on_disk as f64 / 1e6,
            mb(usage.peak_rss_kb) <= 250.0
        );
        Ok(())
    }

    /// Best effort: a run that failed early may not have made them all.
    async fn clean_up(&self) {
        let names: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let admin: Result<AdminClient<DefaultClientContext>, _> =
            admin::client_config(&self.cfg.kafka).create();
        if let Ok(admin) = admin {
            let _ = admin.delete_topics(&names, &opts).await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `benches/kstreams/build` (from the repository root): the jar's path.
fn build_jar() -> anyhow::Result<PathBuf> {
    let out = Command::new("benches/kstreams/build")
        .output()
        .context("running benches/kstreams/build (run from the repository root)")?;
    anyhow::ensure!(
        out.status.success(),
        "benches/kstreams/build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .trim()
        .to_string();
    anyhow::ensure!(
        Path::new(&path).is_file(),
        "benches/kstreams/build printed {path:?}, not a jar"
    );
    Ok(PathBuf::from(path))
}

/// Bytes of the files below `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => dir_bytes(&e.path()),
                _ => e.metadata().map_or(0, |m| m.len()),
            })
            .sum()
    })
}
