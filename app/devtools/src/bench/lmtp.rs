//! `mailfleet bench lmtp`: LMTP ingest, mailfleet vs Postfix's `smtp-sink`.
//!
//! Both servers are driven by the same neutral load generator, Postfix's
//! `smtp-source -L` (same sessions, message count and size), as separate
//! processes on loopback. `smtp-sink -L` accepts and discards: the protocol
//! with no disk and no Kafka (one process, so for big messages its one core
//! is the limit). mailfleet runs `lmtp::serve` in this process with a
//! scratch blob store (fsync + rename per message) and a scratch topic (one
//! acknowledged `MessageReceived` per recipient before the 250). The rounds
//! alternate the two servers; medians are compared, and each process's CPU
//! per message is read from `/proc`.
//!
//! The answer is checked: the topic must hold exactly one `MessageReceived`
//! per message sent, each naming a distinct blob that is in the store.

use std::{
    collections::{BTreeMap, HashSet},
    path::Path,
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use mailfleet_blob::BlobStore;
use mailfleet_events::mail::MessageReceived;
use mailfleet_fleet::config::Config;
use mailfleet_runtime::{read::read_events, Shutdown};
use tokio::process::{Child, Command};

use super::{
    consume::create_topic,
    cpu::{kafka_pids, Cpu, Tally},
    scratch_dir,
};

const SMTP_SOURCE: &str = "/usr/sbin/smtp-source";
const SMTP_SINK: &str = "/usr/sbin/smtp-sink";
/// Body size of the warm-up messages (told apart from the measured sizes).
const WARM_UP_BYTES: usize = 100;

/// The load's shape.
#[derive(Debug, Clone, clap::Args)]
pub struct LmtpLoad {
    /// Messages per size, server and round.
    #[arg(long, default_value_t = 5000)]
    pub messages: u64,
    /// Message body sizes (smtp-source -l): a number of bytes, or with k or m (KiB, MiB).
    #[arg(long, value_delimiter = ',', value_parser = parse_size, default_value = "20k,1m")]
    pub sizes: Vec<usize>,
    /// Parallel LMTP sessions (Postfix's default destination concurrency is 20).
    #[arg(long, default_value_t = 20)]
    pub sessions: u32,
    /// Rounds of (smtp-sink, mailfleet) per size; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Partitions of the scratch topic.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
}

fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim().to_ascii_lowercase();
    let (digits, unit) = match s.strip_suffix('k') {
        Some(d) => (d, 1024),
        None => match s.strip_suffix('m') {
            Some(d) => (d, 1024 * 1024),
            None => (s.as_str(), 1),
        },
    };
    match digits.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n * unit),
        _ => Err(format!("{s:?}: expected e.g. 20k, 1m or 5000")),
    }
}

/// Human form of a size, as given on the command line.
fn shown(size: usize) -> String {
    match size {
        s if s % (1024 * 1024) == 0 => format!("{}m", s / (1024 * 1024)),
        s if s % 1024 == 0 => format!("{}k", s / 1024),
        s => s.to_string(),
    }
}

pub async fn run(cfg: &Config, load: LmtpLoad) -> anyhow::Result<()> {
    let id = format!("bench-lmtp-{}", rand::random::<u32>());
    let dir = scratch_dir(cfg, &id);
    let result = measure(cfg, &load, &id, &dir).await;
    // The blobs can be large: removed whatever happened.
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn measure(cfg: &Config, load: &LmtpLoad, id: &str, dir: &Path) -> anyhow::Result<()> {
    create_topic(cfg, id, load.partitions).await?;
    let blobs = Arc::new(BlobStore::open(dir.join("blobs"))?);
    let shutdown = Shutdown::new();
    let sessions = load.sessions as usize * 2;
    let mailfleet = super::lmtp_in_process(cfg, id, sessions, blobs.clone(), &shutdown).await?;
    let sink = Sink::start(load.sessions).await?;
    // Connections, the producer's metadata and the page cache, before timing.
    let mut sent = BTreeMap::from([(WARM_UP_BYTES, load.sessions as u64)]);
    for port in [sink.port, mailfleet] {
        source(port, load.sessions, load.sessions as u64, WARM_UP_BYTES).await?;
    }
    println!(
        "smtp-source -L -d -s {} -m {} per run; mailfleet: zstd blob + fsync, acks=all to a {}-partition topic",
        load.sessions, load.messages, load.partitions
    );
    let kafka = kafka_pids(&cfg.kafka.brokers);
    let mut results = Vec::new();
    for &size in &load.sizes {
        let (mut peer, mut ours) = (Tally::default(), Tally::default());
        for round in 1..=load.rounds.max(1) {
            let mut cpu = Cpu::default();
            for (port, tally) in [(sink.port, &mut peer), (mailfleet, &mut ours)] {
                let before = Cpu::now(sink.pid, kafka.iter().copied());
                let secs = source(port, load.sessions, load.messages, size).await?;
                cpu = Cpu::now(sink.pid, kafka.iter().copied()).minus(before);
                tally.add(secs, cpu);
            }
            *sent.entry(size).or_default() += load.messages;
            let n = load.messages as f64;
            println!(
                "{} round {round}: smtp-sink {:.0} msgs/s, mailfleet {:.0} msgs/s ({:.3} CPU ms/msg)",
                shown(size),
                n / peer.secs[round - 1],
                n / ours.secs[round - 1],
                cpu.own * 1000.0 / n
            );
        }
        results.push((size, peer, ours));
    }
    shutdown.trigger();
    drop(sink);
    check(cfg, id, &blobs, &sent)?;
    for &size in &load.sizes {
        println!("{}", put_probe(&blobs, size).await?);
    }
    report(load, &results);
    Ok(())
}

/// Postfix's smtp-sink in LMTP mode on a free loopback port.
struct Sink {
    child: Child,
    pid: Option<u32>,
    port: u16,
}

impl Sink {
    async fn start(sessions: u32) -> anyhow::Result<Sink> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut cmd = Command::new(SMTP_SINK);
        cmd.arg("-L").args(["-m", &(sessions + 8).to_string()]);
        if is_root().await {
            cmd.args(["-u", "nobody"]); // smtp-sink refuses to run as root
        }
        let child = cmd
            .arg(format!("127.0.0.1:{port}"))
            .arg("1024")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {SMTP_SINK} (Debian package postfix)"))?;
        let pid = child.id();
        let sink = Sink { child, pid, port };
        // Wait until it listens; readiness, not a measurement.
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(10),
                "smtp-sink never listened on 127.0.0.1:{port}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(sink)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn is_root() -> bool {
    let id = Command::new("id").arg("-u").output().await;
    id.is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

/// Run smtp-source against `port`; returns the wall seconds it took.
/// Any reply other than the expected one makes it exit non-zero.
async fn source(port: u16, sessions: u32, messages: u64, size: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let out = Command::new(SMTP_SOURCE)
        .args(["-L", "-d", "-N", "-M", "bench.example"])
        .args(["-s", &sessions.to_string()])
        .args(["-m", &messages.to_string()])
        .args(["-l", &size.to_string()])
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {SMTP_SOURCE} (Debian package postfix)"))?;
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        out.status.success(),
        "smtp-source against port {port} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(secs)
}

/// One `MessageReceived` per message sent, per size, each naming its own
/// blob, and every blob in the store: fsync and the ack happened for each.
fn check(
    cfg: &Config,
    topic: &str,
    blobs: &BlobStore,
    sent: &BTreeMap<usize, u64>,
) -> anyhow::Result<()> {
    let events = read_events::<MessageReceived>(&cfg.kafka, topic, "bench")?;
    let total: u64 = sent.values().sum();
    anyhow::ensure!(
        events.len() as u64 == total,
        "{} MessageReceived on {topic} for {total} messages sent",
        events.len()
    );
    // smtp-source adds ~200 bytes of headers to the body size it is given.
    let mut by_size: BTreeMap<usize, u64> = BTreeMap::new();
    for e in &events {
        let size = usize::try_from(e.size).unwrap_or(0);
        let nearest = sent.keys().min_by_key(|s| s.abs_diff(size)).copied();
        *by_size.entry(nearest.unwrap_or(0)).or_default() += 1;
    }
    anyhow::ensure!(
        &by_size == sent,
        "messages per size: received {by_size:?}, sent {sent:?}"
    );
    let ids: HashSet<&str> = events.iter().map(|e| e.blob_id.as_str()).collect();
    anyhow::ensure!(
        ids.len() == events.len(),
        "{} distinct blobs for {} messages: the bench needs unique messages",
        ids.len(),
        events.len()
    );
    let missing = ids.iter().filter(|id| !blobs.contains(id)).count();
    anyhow::ensure!(
        missing == 0,
        "{missing} announced blobs are not in the store"
    );
    println!("checked: {total} MessageReceived, {total} distinct blobs stored");
    Ok(())
}

/// What one blob store `put` (sha256, zstd, write, fsync, rename, fsync
/// of the folder) costs, one at a time, for smtp-source's body (all `X`,
/// compresses ~1000:1) and for base64 noise (as attachments are),
/// interleaved so that both see the same disk.
async fn put_probe(blobs: &Arc<BlobStore>, size: usize) -> anyhow::Result<String> {
    const PUTS: usize = 40;
    let seed = rand::random::<u64>();
    let bodies: Vec<Vec<u8>> = (0..PUTS)
        .map(|i| {
            let mut raw = format!("Message-Id: <probe-{seed}-{i}@bench>\r\n\r\n").into_bytes();
            raw.extend(match i % 2 {
                0 => source_body(size),
                _ => super::corpus::base64_noise(seed ^ i as u64, size),
            });
            raw
        })
        .collect();
    let b = blobs.clone();
    let (ms, stored) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let (mut ms, mut stored) = ([0.0f64; 2], [0u64; 2]);
        for (i, raw) in bodies.iter().enumerate() {
            let started = Instant::now();
            let id = b.put(raw)?;
            ms[i % 2] += started.elapsed().as_secs_f64() * 1000.0;
            stored[i % 2] += std::fs::metadata(b.path_of(&id)?)?.len();
        }
        Ok((ms, stored))
    })
    .await??;
    let per = (PUTS / 2) as f64;
    Ok(format!(
        "{} blob put, one at a time: smtp-source body {:.2} ms (stored as {:.0} bytes), base64 noise {:.2} ms (stored as {:.0} bytes)",
        shown(size),
        ms[0] / per,
        stored[0] as f64 / per,
        ms[1] / per,
        stored[1] as f64 / per
    ))
}

/// smtp-source's `-l` body: lines of 78 `X`, the first a digit, CRLF.
fn source_body(size: usize) -> Vec<u8> {
    let mut body = vec![b'X'; size];
    for i in (80..size).step_by(80) {
        body[i - 80] = b"0123456789"[(i / 80) % 10];
        body[i - 2] = b'\r';
        body[i - 1] = b'\n';
    }
    body
}

fn report(load: &LmtpLoad, results: &[(usize, Tally, Tally)]) {
    let mut last = Vec::new();
    for (size, peer_runs, our_runs) in results {
        let (peer, ours) = (peer_runs.rate(load.messages), our_runs.rate(load.messages));
        let mb = |rate: f64| rate * *size as f64 / 1e6;
        let ratio = ours / peer;
        let s = shown(*size);
        println!(
            "{s}: smtp-sink {peer:.0} msgs/s ({:.1} MB/s), mailfleet {ours:.0} msgs/s ({:.1} MB/s), ratio {ratio:.2} (medians of {})",
            mb(peer),
            mb(ours),
            load.rounds.max(1)
        );
        let (p, o) = (
            peer_runs.ms_per_message(load.messages),
            our_runs.ms_per_message(load.messages),
        );
        println!(
            "{s} CPU ms/msg: smtp-sink runs: smtp-sink {:.3}, smtp-source {:.3} (machine {:.0}% busy); mailfleet runs: mailfleet {:.3}, kafka {:.3}, smtp-source {:.3} (machine {:.0}% busy)",
            p.peer, p.children, p.busy(), o.own, o.kafka, o.children, o.busy()
        );
        last.push(format!(
            "sink_{s}_mps={peer:.0} mailfleet_{s}_mps={ours:.0} mailfleet_{s}_mbps={:.1} ratio_{s}={ratio:.2} mailfleet_{s}_cpu_ms={:.3}",
            mb(ours),
            o.own
        ));
    }
    println!("{}", last.join(" "));
}
