//! `mailfleet bench policy`: postgrey vs mailfleet's policy path (policy
//! server → Kafka → greylist consumer → Kafka → policy server), driven by
//! the same seeded request sequence from a load generator in a process of
//! its own ([`load`], `bench policy-load`), in alternating rounds, each
//! peer from fresh state every round: postgrey with its database deleted
//! (`ops/postgrey reset`), mailfleet with new topics and a new consumer
//! state. Each round and peer has three phases: flat out over
//! `--connections`, one connection sending requests one after another, and
//! `--rate` requests/s over `--connections`, optionally beside the
//! background load of [`background`]. Medians over the rounds go on the
//! last line.

mod background;
mod load;

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Context;
use mailfleet_fleet::config::Config;
use mailfleet_greylist::{whitelist::WhitelistFiles, Greylist};
use mailfleet_policy::{client::PolicyClient, PolicyConfig};
use mailfleet_runtime::{RunSpec, Shutdown};

pub use background::{run as run_background, BackgroundArgs};
pub use load::{run as run_load, LoadArgs};

use self::load::{Phase, Sequence};
use super::{consume::create_topic, median, scratch_dir};

/// The load's shape.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyLoad {
    /// Persistent connections, as Postfix smtpd processes hold them.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    #[command(flatten)]
    pub sequence: Sequence,
    /// Seconds of flat-out load per peer and round.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Seconds of the one-connection phase per peer and round.
    #[arg(long, default_value_t = 5)]
    pub one_seconds: u64,
    /// Requests per second of the fixed-rate latency run.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Seconds of the fixed-rate run per peer and round.
    #[arg(long, default_value_t = 10)]
    pub rate_seconds: u64,
    /// Rounds; the peers alternate, and medians are reported.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Run the background load during the fixed-rate phase: a greylist
    /// consumer catching up and `--background-cpu` busy threads.
    #[arg(long)]
    pub background: bool,
    /// Attempts the background consumer catches up on (produced once).
    #[arg(long, default_value_t = 2_000_000)]
    pub background_events: u64,
    /// Busy threads of the background load.
    #[arg(long, default_value_t = 2)]
    pub background_cpu: usize,
    /// The background load's niceness above the bench's own (0: the same
    /// priority; 10: a batch job's, as an operator runs a replay or a
    /// build beside the mail path).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=19))]
    pub background_nice: u8,
    /// The background consumer's Kafka `client.id` (default: the
    /// greylist's own, as the live path's), so that a broker quota can
    /// apply to it alone.
    #[arg(long)]
    pub background_client_id: Option<String>,
    /// The greylisting delay of both peers, seconds (postgrey's
    /// `--delay`, the greylist's `delay_s`); default: each one's own (300),
    /// so that no triplet passes within a round. A short delay lets
    /// repeats pass, as most of a real MX's traffic does.
    #[arg(long)]
    pub delay: Option<u64>,
    /// postgrey's address (`ops/postgrey start` runs it there).
    #[arg(long, default_value = "127.0.0.1:10030")]
    pub postgrey: String,
}

/// One peer's round.
#[derive(Debug, Clone, Copy)]
struct Round {
    flat: Phase,
    one: Phase,
    paced: Phase,
}

/// What every round shares.
struct Bench<'a> {
    cfg: &'a Config,
    load: &'a PolicyLoad,
    id: String,
    dir: PathBuf,
    /// The background consumer's input topic, with `--background`.
    background: Option<String>,
}

pub async fn run(cfg: &Config, load: PolicyLoad) -> anyhow::Result<()> {
    anyhow::ensure!(load.rounds > 0, "--rounds must be > 0");
    anyhow::ensure!(load.connections > 0, "--connections must be > 0");
    let id = format!("bench-policy-{}", rand::random::<u32>());
    let dir = std::path::absolute(scratch_dir(cfg, &id))?;
    let mut bench = Bench {
        cfg,
        load: &load,
        id: id.clone(),
        dir,
        background: None,
    };
    if load.background {
        let topic = format!("{id}.bg-attempts");
        background::fill(cfg, &topic, load.background_events).await?;
        bench.background = Some(topic);
    }
    let s = &load.sequence;
    println!(
        "seed {}: {} triplets ({:.0}% repeats), {} connections, {} rounds, delay {}{}",
        s.seed,
        s.triplets,
        s.repeat * 100.0,
        load.connections,
        load.rounds,
        load.delay
            .map_or("300 s (the defaults)".into(), |d| format!("{d} s")),
        if load.background {
            format!(
                "; background at {} req/s: a greylist consumer catching up on {} attempts and {} busy threads, at nice +{}",
                load.rate, load.background_events, load.background_cpu, load.background_nice
            )
        } else {
            String::new()
        }
    );
    // Every round restarts postgrey; it must not outlive the bench.
    let _postgrey = StopPostgrey;
    let (mut pg, mut mf) = (Vec::new(), Vec::new());
    for round in 1..=load.rounds {
        // Alternate which goes first, so neither always meets a warmer box.
        let order = if round % 2 == 1 {
            ["postgrey", "mailfleet"]
        } else {
            ["mailfleet", "postgrey"]
        };
        for peer in order {
            let r = bench.round(peer, round).await?;
            println!("round {round} {peer}: {}", r.line(&load));
            if peer == "postgrey" { &mut pg } else { &mut mf }.push(r);
        }
    }
    let _ = std::fs::remove_dir_all(&bench.dir);
    delete_topics(cfg, &id, load.rounds).await;
    summary(&pg, &mf);
    Ok(())
}

/// The medians over the rounds, the last line machine-readable.
fn summary(pg: &[Round], mf: &[Round]) {
    let med =
        |rs: &[Round], f: &dyn Fn(&Round) -> f64| median(&mut rs.iter().map(f).collect::<Vec<_>>());
    let rps = |r: &Round| r.flat.rps();
    let p99 = |r: &Round| r.paced.p99_ms;
    let (p50_1c, p99_1c) = (|r: &Round| r.one.p50_ms, |r: &Round| r.one.p99_ms);
    let (pg_rps, mf_rps) = (med(pg, &rps), med(mf, &rps));
    println!(
        "postgrey_rps={pg_rps:.0} mailfleet_rps={mf_rps:.0} ratio={:.2} postgrey_p99_ms={:.2} mailfleet_p99_ms={:.2} postgrey_p50_1c_ms={:.2} mailfleet_p50_1c_ms={:.2} postgrey_p99_1c_ms={:.2} mailfleet_p99_1c_ms={:.2}",
        mf_rps / pg_rps,
        med(pg, &p99),
        med(mf, &p99),
        med(pg, &p50_1c),
        med(mf, &p50_1c),
        med(pg, &p99_1c),
        med(mf, &p99_1c),
    );
}

impl Round {
    fn line(&self, load: &PolicyLoad) -> String {
        let (f, o, p) = (&self.flat, &self.one, &self.paced);
        format!(
            "{:.0} req/s flat out (p99 {:.2} ms, {} errors, {:.1}% deferred); one connection: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms; at {} req/s: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms ({} errors, {:.1}% deferred)",
            f.rps(), f.p99_ms, f.errors, f.deferred_pct(), o.rps(), o.p50_ms, o.p99_ms,
            load.rate, p.rps(), p.p50_ms, p.p99_ms, f.errors + o.errors + p.errors, p.deferred_pct()
        )
    }
}

impl Bench<'_> {
    /// One peer's three phases, from fresh state.
    async fn round(&self, peer: &str, round: usize) -> anyhow::Result<Round> {
        let shutdown = Shutdown::new();
        let round_id = format!("{}-{round}-{peer}", self.id);
        let addr = if peer == "postgrey" {
            fresh_postgrey(self.load.delay)?;
            self.load.postgrey.clone()
        } else {
            start_mailfleet(self.cfg, &round_id, self.load.delay, &shutdown).await?
        };
        let result = self.phases(&addr, &round_id).await;
        shutdown.trigger();
        if peer == "mailfleet" {
            // Let the consumer close its store, then drop it and the topics.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let _ =
                std::fs::remove_dir_all(self.cfg.runtime.data_dir.join("bench").join(&round_id));
        }
        result
    }

    async fn phases(&self, addr: &str, round_id: &str) -> anyhow::Result<Round> {
        let l = self.load;
        let flat = generate(addr, l, l.connections, l.seconds, 0, 0)?;
        let one = generate(addr, l, 1, l.one_seconds, 0, flat.requests)?;
        let skip = flat.requests + one.requests;
        let Some(input) = &self.background else {
            let paced = generate(addr, l, l.connections, l.rate_seconds, l.rate, skip)?;
            return Ok(Round { flat, one, paced });
        };
        let dir = self.dir.join(round_id);
        create_topic(self.cfg, &format!("{round_id}.bg-decisions"), 12).await?;
        let child = background::start(
            config_path().as_deref(),
            input,
            round_id,
            &dir,
            l.background_cpu,
            l.background_nice,
            l.background_client_id.as_deref(),
        )?;
        // Paced only once the consumer is catching up (its group joined).
        let started = Instant::now();
        while background::progress(self.cfg, round_id) == 0 {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(60),
                "the background consumer wrote nothing in 60 s; see {}",
                dir.join("log").display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let before = background::progress(self.cfg, round_id);
        let t = Instant::now();
        let paced = generate(addr, l, l.connections, l.rate_seconds, l.rate, skip);
        let (after, secs) = (
            background::progress(self.cfg, round_id),
            t.elapsed().as_secs_f64(),
        );
        let usage = child.stop()?;
        let _ = std::fs::remove_dir_all(&dir);
        println!(
            "  background: the consumer decided {} attempts during the phase ({:.0}/s), {} of {} by its end{}; background process CPU {:.1} s",
            after - before, (after - before) as f64 / secs, after, l.background_events,
            if after >= l.background_events { " (caught up before the end: use more --background-events)" } else { "" },
            usage.cpu_s
        );
        Ok(Round {
            flat,
            one,
            paced: paced?,
        })
    }
}

/// Delete the topics of every round (and the background's input).
async fn delete_topics(cfg: &Config, id: &str, rounds: usize) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    let mut names = vec![format!("{id}.bg-attempts")];
    for round in 1..=rounds {
        let r = format!("{id}-{round}-mailfleet");
        names.extend([format!("{r}.attempts"), format!("{r}.decisions")]);
        for peer in ["mailfleet", "postgrey"] {
            names.push(format!("{id}-{round}-{peer}.bg-decisions"));
        }
    }
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let admin: Result<AdminClient<rdkafka::client::DefaultClientContext>, _> =
        mailfleet_runtime::admin::client_config(&cfg.kafka).create();
    if let Ok(admin) = admin {
        let _ = admin.delete_topics(&names, &opts).await;
    }
}

/// Run one phase in the load generator's own process.
fn generate(
    addr: &str,
    load: &PolicyLoad,
    connections: usize,
    seconds: u64,
    rate: u64,
    skip: usize,
) -> anyhow::Result<Phase> {
    let s = &load.sequence;
    let out = Command::new(std::env::current_exe()?)
        .args(["bench", "policy-load", "--addr", addr])
        .args(["--connections", &connections.to_string()])
        .args(["--seconds", &seconds.to_string()])
        .args(["--rate", &rate.to_string()])
        .args(["--triplets", &s.triplets.to_string()])
        .args(["--repeat", &s.repeat.to_string()])
        .args(["--seed", &s.seed.to_string()])
        .args(["--skip", &skip.to_string()])
        .env("MAILFLEET_LOG__LEVEL", "warn")
        .output()
        .context("running the load generator (bench policy-load)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "the load generator failed: {}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .rev()
        .find_map(Phase::parse)
        .with_context(|| format!("no result line from the load generator: {text}"))
}

/// This process's `--config` (or `MAILFLEET_CONFIG`), for a child.
fn config_path() -> Option<PathBuf> {
    let mut args = std::env::args_os();
    while let Some(a) = args.next() {
        if a == "--config" || a == "-c" {
            return args.next().map(PathBuf::from);
        }
        if let Some(v) = a.to_str().and_then(|s| s.strip_prefix("--config=")) {
            return Some(PathBuf::from(v));
        }
    }
    std::env::var_os("MAILFLEET_CONFIG").map(PathBuf::from)
}

/// postgrey with an empty database (and `delay`, if given): stopped, its
/// dbdir deleted, started.
fn fresh_postgrey(delay: Option<u64>) -> anyhow::Result<()> {
    let args = delay.map(|d| format!("--delay={d}")).unwrap_or_default();
    for step in ["reset", "start"] {
        ops_postgrey(step, &args)?;
    }
    Ok(())
}

/// `ops/postgrey STEP`, with `args` for the daemon.
fn ops_postgrey(step: &str, args: &str) -> anyhow::Result<()> {
    let out = Command::new("ops/postgrey")
        .arg(step)
        .env("MAILFLEET_POSTGREY_ARGS", args)
        .output()
        .with_context(|| format!("running ops/postgrey {step} (run from the repository root)"))?;
    anyhow::ensure!(
        out.status.success(),
        "ops/postgrey {step} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Stops postgrey when the bench ends, however it ends: the rounds start
/// it, and nothing else would stop it.
struct StopPostgrey;

impl Drop for StopPostgrey {
    fn drop(&mut self) {
        if let Err(e) = ops_postgrey("stop", "") {
            eprintln!("{e:#}");
        }
    }
}

/// Start the mailfleet side in this process on fresh topics and state;
/// returns the policy server's address.
async fn start_mailfleet(
    cfg: &Config,
    id: &str,
    delay: Option<u64>,
    shutdown: &Shutdown,
) -> anyhow::Result<String> {
    let (attempts, decisions) = (format!("{id}.attempts"), format!("{id}.decisions"));
    create_topic(cfg, &attempts, 12).await?;
    create_topic(cfg, &decisions, 12).await?;
    let mut g = cfg.consumers.greylist.clone();
    if let Some(d) = delay {
        g.delay_s = i64::try_from(d)?;
    }
    let lists = WhitelistFiles::load(g.whitelist_clients.clone(), g.whitelist_recipients.clone())?;
    let spec = RunSpec::new(
        format!("{id}-greylist"),
        vec![attempts.clone()],
        &cfg.kafka,
        &cfg.runtime,
    )
    .data_dir(cfg.runtime.data_dir.join("bench").join(id));
    let grouping = g.grouping();
    tokio::spawn(mailfleet_runtime::run(
        Greylist::new(g, lists, decisions.clone()),
        spec,
        shutdown.clone(),
    ));
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let listen = format!("127.0.0.1:{port}");
    let policy = PolicyConfig {
        listen: listen.clone(),
        host: id.to_string(),
        attempts_topic: attempts,
        decisions_topic: decisions,
        ..cfg.policy.clone()
    };
    let (kafka, sd) = (cfg.kafka.clone(), shutdown.clone());
    tokio::spawn(async move { mailfleet_policy::serve(policy, grouping, &kafka, None, sd).await });
    warm_up(&listen).await?;
    Ok(listen)
}

/// Ask until a decision comes back: the consumer has joined its group.
async fn warm_up(listen: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "mailfleet policy path never answered"
        );
        if let Ok(mut c) = PolicyClient::connect(listen).await {
            let attrs = [
                ("protocol_state", "RCPT"),
                ("client_address", "192.0.2.1"),
                ("client_name", "warm.up"),
                ("sender", "a@warm.up"),
                ("recipient", "b@warm.up"),
            ];
            if let Ok(action) = c.ask(&attrs, Duration::from_secs(5)).await {
                if action.starts_with("DEFER") {
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
