//! `mailfleet bench policy`: postgrey vs mailfleet's policy path (policy
//! server → Kafka → greylist consumer → Kafka → policy server), driven by
//! the same request sequence over the same number of persistent
//! connections, first flat out for throughput, then at a fixed rate for
//! latency.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use mailfleet_fleet::config::Config;
use mailfleet_greylist::{whitelist::WhitelistFiles, Greylist};
use mailfleet_policy::{client::PolicyClient, PolicyConfig};
use mailfleet_runtime::{RunSpec, Shutdown};

use super::consume::create_topic;

/// The load's shape.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyLoad {
    /// Persistent connections, as Postfix smtpd processes hold them.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Distinct triplets in the request sequence.
    #[arg(long, default_value_t = 100_000)]
    pub triplets: usize,
    /// Share of requests that repeat an earlier triplet.
    #[arg(long, default_value_t = 0.5)]
    pub repeat: f64,
    /// Seconds of flat-out load per peer.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Requests per second of the fixed-rate latency run.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Seconds of the fixed-rate run per peer.
    #[arg(long, default_value_t = 10)]
    pub rate_seconds: u64,
    /// postgrey's address (`ops/postgrey start` runs it there).
    #[arg(long, default_value = "127.0.0.1:10030")]
    pub postgrey: String,
}

/// One RCPT request: (client address, sender, recipient).
type Request = (String, String, String);

/// The same sequence for both peers: each request is a new triplet or,
/// with probability `repeat`, one already sent.
fn requests(load: &PolicyLoad) -> Vec<Request> {
    let mut seen = 0usize;
    let total = (load.triplets as f64 / (1.0 - load.repeat.clamp(0.0, 0.95))) as usize;
    (0..total)
        .map(|_| {
            let i = if seen > 0 && rand::random::<f64>() < load.repeat {
                rand::random_range(0..seen)
            } else {
                seen += 1;
                seen - 1
            };
            let ip = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
            (
                ip,
                format!("s{i}@sender{}.example", i % 97),
                format!("r{i}@example.test"),
            )
        })
        .collect()
}

/// Latencies (µs) and the wall time of one run.
struct Run {
    latencies: Vec<u64>,
    errors: usize,
    elapsed: Duration,
}

impl Run {
    fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
    fn p99_ms(&mut self) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        self.latencies.sort_unstable();
        self.latencies[(self.latencies.len() * 99 / 100).min(self.latencies.len() - 1)] as f64
            / 1000.0
    }
}

/// Drive `addr` with `connections` clients over the shared sequence, for
/// `seconds`, at `rate` requests/s in all (0: flat out).
async fn drive(
    addr: &str,
    reqs: Arc<Vec<Request>>,
    connections: usize,
    seconds: u64,
    rate: u64,
) -> anyhow::Result<Run> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (addr, reqs, next) = (addr.to_string(), reqs.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = PolicyClient::connect(&addr).await?;
            let (mut lat, mut errors) = (Vec::new(), 0usize);
            // At a fixed rate each connection sends every `gap`, staggered.
            let gap = (rate > 0).then(|| Duration::from_secs_f64(connections as f64 / rate as f64));
            let mut due = Instant::now()
                + gap.map_or(Duration::ZERO, |g| g.mul_f64(c as f64 / connections as f64));
            while Instant::now() < deadline {
                if let Some(g) = gap {
                    tokio::time::sleep_until(due.into()).await;
                    due += g;
                }
                let (ip, from, to) = &reqs[next.fetch_add(1, Ordering::Relaxed) % reqs.len()];
                let attrs = [
                    ("protocol_state", "RCPT"),
                    ("protocol_name", "ESMTP"),
                    ("client_address", ip.as_str()),
                    ("client_name", "unknown"),
                    ("sender", from.as_str()),
                    ("recipient", to.as_str()),
                ];
                let t = Instant::now();
                match client.ask(&attrs, Duration::from_secs(10)).await {
                    Ok(_) => lat.push(t.elapsed().as_micros() as u64),
                    Err(_) => {
                        errors += 1;
                        client = PolicyClient::connect(&addr).await?;
                    }
                }
            }
            anyhow::Ok((lat, errors))
        }));
    }
    let mut run = Run {
        latencies: Vec::new(),
        errors: 0,
        elapsed: Duration::ZERO,
    };
    for t in tasks {
        let (lat, errors) = t.await??;
        run.latencies.extend(lat);
        run.errors += errors;
    }
    run.elapsed = started.elapsed();
    Ok(run)
}

/// Start the mailfleet side in this process on fresh topics; returns the
/// policy server's address.
async fn start_mailfleet(cfg: &Config, shutdown: &Shutdown) -> anyhow::Result<String> {
    let id = format!("bench-policy-{}", rand::random::<u32>());
    let (attempts, decisions) = (format!("{id}.attempts"), format!("{id}.decisions"));
    create_topic(cfg, &attempts, 12).await?;
    create_topic(cfg, &decisions, 12).await?;
    let g = cfg.consumers.greylist.clone();
    let lists = WhitelistFiles::load(g.whitelist_clients.clone(), g.whitelist_recipients.clone())?;
    let spec = RunSpec::new(
        format!("{id}-greylist"),
        vec![attempts.clone()],
        &cfg.kafka,
        &cfg.runtime,
    )
    .data_dir(cfg.runtime.data_dir.join("bench").join(&id));
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
        host: id.clone(),
        attempts_topic: attempts,
        decisions_topic: decisions,
        ..cfg.policy.clone()
    };
    let (kafka, sd) = (cfg.kafka.clone(), shutdown.clone());
    tokio::spawn(async move { mailfleet_policy::serve(policy, grouping, &kafka, None, sd).await });
    // Warm up until a decision comes back: the consumer has joined its group.
    let started = Instant::now();
    loop {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "mailfleet policy path never answered"
        );
        if let Ok(mut c) = PolicyClient::connect(&listen).await {
            let attrs = [
                ("protocol_state", "RCPT"),
                ("client_address", "192.0.2.1"),
                ("client_name", "warm.up"),
                ("sender", "a@warm.up"),
                ("recipient", "b@warm.up"),
            ];
            if let Ok(action) = c.ask(&attrs, Duration::from_secs(5)).await {
                if action.starts_with("DEFER") {
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(listen)
}

pub async fn run(cfg: &Config, load: PolicyLoad) -> anyhow::Result<()> {
    let status = std::process::Command::new("ops/postgrey")
        .arg("start")
        .status()
        .context("running ops/postgrey start (run from the repository root)")?;
    anyhow::ensure!(status.success(), "ops/postgrey start failed");
    let shutdown = Shutdown::new();
    let mailfleet = start_mailfleet(cfg, &shutdown).await?;
    let reqs = Arc::new(requests(&load));
    println!(
        "{} requests over {} triplets ({:.0}% repeats), {} connections",
        reqs.len(),
        load.triplets,
        load.repeat * 100.0,
        load.connections
    );

    let mut results = Vec::new();
    for (name, addr) in [
        ("postgrey", load.postgrey.as_str()),
        ("mailfleet", mailfleet.as_str()),
    ] {
        let mut flat = drive(addr, reqs.clone(), load.connections, load.seconds, 0).await?;
        let mut paced = drive(
            addr,
            reqs.clone(),
            load.connections,
            load.rate_seconds,
            load.rate,
        )
        .await?;
        println!(
            "{name}: {:.0} req/s flat out (p99 {:.2} ms, {} errors); at {} req/s: {:.0} req/s, p99 {:.2} ms ({} errors)",
            flat.rps(), flat.p99_ms(), flat.errors, load.rate, paced.rps(), paced.p99_ms(), paced.errors
        );
        results.push((flat.rps(), paced.p99_ms()));
    }
    shutdown.trigger();
    let ((pg_rps, pg_p99), (mf_rps, mf_p99)) = (results[0], results[1]);
    println!(
        "postgrey_rps={pg_rps:.0} mailfleet_rps={mf_rps:.0} ratio={:.2} postgrey_p99_ms={pg_p99:.2} mailfleet_p99_ms={mf_p99:.2}",
        mf_rps / pg_rps
    );
    Ok(())
}
