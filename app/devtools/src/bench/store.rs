//! `mailfleet bench store` (issue F4): messages/s end to end, from SMTP
//! into Postfix to the file in the Maildir, and the latency from
//! mailfleet's LMTP `250` to that file, for 20 KB messages.
//!
//! Both sides get the same load: unique messages of `--bytes` (a line of
//! text and a base64 "photo"), one recipient each, round robin over
//! `--users` fresh accounts of `--domain`, injected by this process over
//! `--sessions` SMTP connections into the local Postfix (`ops/postfix`)
//! from an address in its `mynetworks`, which skips the greylisting policy.
//! Postfix's queue manager and LMTP client deliver them to:
//! - the anchor: Dovecot's LMTP (`ops/dovecot`), which writes the Maildir
//!   file (fsync) and indexes it before its `250`;
//! - mailfleet: `lmtp::serve` in this process (blob fsync, `MessageReceived`
//!   acknowledged by Kafka before the `250`), the scanner (clamd) and the
//!   storage writer under `mailfleet_runtime::run` on scratch topics, into
//!   a scratch mail root owned like Dovecot's.
//!
//! Per round and side: a warm-up batch (connections, Postfix's reload, the
//! group join), `--messages` flat out for the rate, then `--rate` msgs/s
//! for `--rate-seconds` for the latencies (flat out they are only the
//! backlog). The bench switches Postfix's `virtual_transport` per side
//! (`ops/postfix start` with `MAILFLEET_POSTFIX_TRANSPORT`: a reload) and
//! puts it back at the end. smtp-source is not used: it can neither bind a
//! source address nor send XCLIENT, and spreads recipients only within one
//! transaction (`-r`).
//!
//! A batch's time runs from the first connection to the newest file's ctime
//! (its rename into `new/`); a message's latency from Postfix's `250` after
//! DATA to its file. For mailfleet also from `MessageReceived.received_at`
//! (taken just before the acks: the LMTP `250`) to the file, with the
//! stages between from the Kafka record timestamps. Dovecot answers `250`
//! after its file is written, so its `250 → file` is ≤ 0 by construction;
//! Postfix's maillog `delay=` (arrival to the LMTP `250`) is shown for both.
//!
//! Checked: exactly N files per batch, each Message-ID once; for mailfleet
//! one clean `MessageScanned` and one `MessageStored` per message, each
//! naming a file that is there, and no dead letters. Scratch Maildirs,
//! blobs, state and topics, the Dovecot users and their Maildirs, and any
//! bench mail left in Postfix's queue are removed afterwards.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    io::Read,
    net::{IpAddr, SocketAddr},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use mailfleet_events::mail::{MessageScanned, MessageStored, ScanVerdict};
use mailfleet_fleet::config::Config;
use mailfleet_ingest::{
    blob::BlobStore,
    scanner::{Scanner, ScannerConfig},
};
use mailfleet_runtime::{
    admin, config::RuntimeConfig, topology::TopicSpec, RunSpec, RunStats, RuntimeError, Shutdown,
    Topology,
};
use mailfleet_scan::clamd::Clamd;
use mailfleet_storage::writer::{StorageConfig, StorageWriter};
use rdkafka::{
    admin::{AdminClient, AdminOptions},
    client::DefaultClientContext,
};
use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpSocket,
    process::Command,
    task::JoinHandle,
};

use super::{
    corpus::base64_noise,
    cpu::{clamd_pid, kafka_pid, Cpu, Tally},
    read_all_timed, scratch_dir,
};

/// A batch whose file count has not grown for this long has failed.
const STALL: Duration = Duration::from_secs(60);
/// How often the Maildirs are counted while waiting (the times themselves
/// come from the files' ctimes, not from this).
const POLL: Duration = Duration::from_millis(100);
/// The scratch topics, `<run id>.<name>`.
const TOPICS: [&str; 9] = [
    "received", "scanned", "accounts", "alerts", "purge", "stored", "usage", "notify", "dead",
];

/// The load's shape.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreLoad {
    /// Messages per side and round, flat out.
    #[arg(long, default_value_t = 2000)]
    pub messages: usize,
    /// Then this many messages per second, for the latencies.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// For this long, per side and round.
    #[arg(long, default_value_t = 10.0)]
    pub rate_seconds: f64,
    /// Size of each message as sent, headers included, bytes.
    #[arg(long, default_value_t = 20 * 1024)]
    pub bytes: usize,
    /// Fresh recipients per batch, one per message, round robin.
    #[arg(long, default_value_t = 50)]
    pub users: usize,
    /// SMTP sessions injecting into Postfix at once.
    #[arg(long, default_value_t = 20)]
    pub sessions: usize,
    /// Rounds of (Dovecot, mailfleet); medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Partitions of the scratch topics (production: 12).
    #[arg(long, default_value_t = 12)]
    pub partitions: i32,
    /// Postfix's smtpd (`ops/postfix`).
    #[arg(long, default_value = "127.0.0.1:2525")]
    pub smtp: SocketAddr,
    /// Source address of the injection: in Postfix's `mynetworks`, so the policy check is skipped.
    #[arg(long, default_value = "127.0.0.2")]
    pub source: IpAddr,
    /// Dovecot's LMTP listener (`ops/dovecot`).
    #[arg(long, default_value = "127.0.0.1:2425")]
    pub dovecot_lmtp: SocketAddr,
    /// Recipient domain: one of Postfix's `virtual_mailbox_domains`.
    #[arg(long, default_value = "example.test")]
    pub domain: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Dovecot,
    Mailfleet,
}

/// What a batch is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    WarmUp,
    FlatOut,
    /// At `StoreLoad::rate`.
    Paced,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::WarmUp => "warm-up",
            Phase::FlatOut => "flat out",
            Phase::Paced => "paced",
        }
    }
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Dovecot => "Dovecot",
            Side::Mailfleet => "mailfleet",
        }
    }
}

pub async fn run(cfg: &Config, load: StoreLoad) -> anyhow::Result<()> {
    anyhow::ensure!(
        load.rate > 0.0 && load.rate_seconds > 0.0,
        "--rate and --rate-seconds must be positive"
    );
    let tag = format!("{:08x}", rand::random::<u32>());
    let id = format!("bench-store-{tag}");
    let dir = scratch_dir(cfg, &id);
    let ops = Ops::read(&load, &format!("bs{tag}"))?;
    let result = measure(cfg, &load, &ops, &id, &dir).await;
    // Put everything back whatever happened, Postfix's transport first.
    let restored = ops.restore().await;
    let _ = std::fs::remove_dir_all(&dir);
    delete_topics(cfg, &id).await;
    result.and(restored)
}

async fn measure(
    cfg: &Config,
    load: &StoreLoad,
    ops: &Ops,
    id: &str,
    dir: &Path,
) -> anyhow::Result<()> {
    ops.preflight(cfg).await?;
    let plan = Plan::new(load, &ops.prefix);
    ops.add_dovecot_users(&plan).await?;
    let fleet = Fleet::start(cfg, load, id, dir, ops.owner()).await?;
    println!(
        "{} messages of {} bytes flat out, then {} msgs/s for {} s, per side and round; {} users; \
         {} SMTP sessions from {} into Postfix {}; mailfleet: {}-partition topics, clamd, Maildir fsync",
        load.messages,
        load.bytes,
        load.rate,
        load.rate_seconds,
        load.users,
        load.sessions,
        load.source,
        load.smtp,
        load.partitions
    );
    let runs = deliver_all(load, ops, &fleet, plan).await;
    // Stopped before reading the topics: the last batch's outputs are sent.
    let dead_letters = fleet.stop().await;
    let runs = runs?;
    anyhow::ensure!(
        dead_letters? == 0,
        "mailfleet's consumers dead-lettered inputs"
    );
    let stages = mailfleet_stages(cfg, id, &runs)?;
    report(load, &runs, &stages);
    Ok(())
}

/// One batch of messages to fresh accounts, through one side.
struct Batch {
    side: Side,
    phase: Phase,
    round: usize,
    /// Unique in the run, in every account and Message-ID of the batch.
    tag: String,
    /// Full addresses.
    users: Vec<String>,
    messages: usize,
    /// Messages per second; `None`: flat out.
    rate: Option<f64>,
    seed: u64,
}

impl Batch {
    /// The raw message `i` (CRLF; no line starts with a dot) and its Message-ID.
    fn message(&self, i: usize, bytes: usize) -> (String, Vec<u8>) {
        let id = format!("{}-{i}@bench.example.net", self.tag);
        let to = self.recipient(i);
        let mut raw = format!(
            "Message-ID: <{id}>\r\nFrom: Bench <bench@example.net>\r\nTo: <{to}>\r\n\
             Subject: store bench {i}\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\r\nThe photo from today.\r\n--b{i}\r\n\
             Content-Type: image/jpeg; name=\"photo-{i}.jpg\"\r\n\
             Content-Disposition: attachment; filename=\"photo-{i}.jpg\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n"
        )
        .into_bytes();
        let tail = format!("--b{i}--\r\n");
        // Whole base64 lines (76 characters and CRLF), unique per message.
        let fill = bytes.saturating_sub(raw.len() + tail.len()) / 78 * 78;
        raw.extend(base64_noise(self.seed ^ i as u64, fill));
        raw.extend(tail.as_bytes());
        (id, raw)
    }

    fn recipient(&self, i: usize) -> &str {
        &self.users[i % self.users.len()]
    }

    /// The `new/` folder of each account's INBOX under `root`.
    fn inboxes(&self, root: &Path) -> Vec<PathBuf> {
        self.users
            .iter()
            .filter_map(|u| u.split_once('@'))
            .map(|(user, domain)| root.join(domain).join(user).join("Maildir/new"))
            .collect()
    }
}

/// Every batch of the run, in order: per round and side a warm-up, flat
/// out, paced.
struct Plan(Vec<Batch>);

impl Plan {
    fn new(load: &StoreLoad, prefix: &str) -> Plan {
        let paced = (load.rate * load.rate_seconds).round().max(1.0) as usize;
        let mut batches = Vec::new();
        for round in 1..=load.rounds.max(1) {
            for side in [Side::Dovecot, Side::Mailfleet] {
                for (phase, messages, rate) in [
                    (Phase::WarmUp, load.sessions.max(1), None),
                    (Phase::FlatOut, load.messages.max(1), None),
                    (Phase::Paced, paced, Some(load.rate)),
                ] {
                    let first = |s: &str| s[..1].to_lowercase();
                    let tag = format!(
                        "{prefix}-{round}{}{}",
                        first(side.name()),
                        first(phase.name())
                    );
                    let n = load.users.clamp(1, messages);
                    batches.push(Batch {
                        side,
                        phase,
                        round,
                        users: (0..n)
                            .map(|k| format!("{tag}-{k}@{}", load.domain))
                            .collect(),
                        tag,
                        messages,
                        rate,
                        seed: rand::random(),
                    });
                }
            }
        }
        Plan(batches)
    }
}

/// What one batch gave.
struct BatchRun {
    batch: Batch,
    /// First connection to the newest file's ctime.
    secs: f64,
    /// How long Postfix took to accept all of them.
    inject_secs: f64,
    cpu: Cpu,
    /// Wall time `cpu` covers.
    cpu_secs: f64,
    /// Per message, Postfix's `250` after DATA to the file, ms.
    e2e_ms: Vec<f64>,
    /// Postfix's maillog per message: delay= and delays=a/b/c/d, s.
    delays: Vec<[f64; 5]>,
    /// File name → ctime (ms since the epoch).
    files: HashMap<String, f64>,
}

async fn deliver_all(
    load: &StoreLoad,
    ops: &Ops,
    fleet: &Fleet,
    plan: Plan,
) -> anyhow::Result<Vec<BatchRun>> {
    let mut runs = Vec::new();
    let mut transport = String::new();
    for batch in plan.0 {
        let (wanted, root) = match batch.side {
            Side::Dovecot => (format!("lmtp:inet:{}", load.dovecot_lmtp), &ops.mail_root),
            Side::Mailfleet => (
                format!("lmtp:inet:127.0.0.1:{}", fleet.port),
                &fleet.mail_root,
            ),
        };
        if wanted != transport {
            ops.set_transport(&wanted).await?;
            transport = wanted;
        }
        let what = format!(
            "round {} {} {}",
            batch.round,
            batch.side.name(),
            batch.phase.name()
        );
        let run = deliver(load, ops, root, batch)
            .await
            .context(what.clone())?;
        let n = run.batch.messages as f64;
        match run.batch.phase {
            Phase::WarmUp => {}
            Phase::FlatOut => println!(
                "{what}: {:.0} msgs/s ({:.2} s to the last file; Postfix accepted all in {:.2} s)",
                n / run.secs,
                run.secs,
                run.inject_secs
            ),
            Phase::Paced => println!(
                "{what}: {:.0} msgs/s offered, {:.0} stored; Postfix 250 → file {}",
                n / run.inject_secs,
                n / run.secs,
                spread(&mut run.e2e_ms.clone())
            ),
        }
        runs.push(run);
    }
    Ok(runs)
}

/// Inject one batch, wait for its files and check them.
async fn deliver(
    load: &StoreLoad,
    ops: &Ops,
    root: &Path,
    batch: Batch,
) -> anyhow::Result<BatchRun> {
    let log_from = std::fs::metadata(&ops.maillog).map_or(0, |m| m.len());
    let (before, clock) = (Cpu::now(clamd_pid(), kafka_pid()), Instant::now());
    let started = epoch_ms(SystemTime::now());
    let queued = inject(load, &batch).await?;
    let inject_secs = clock.elapsed().as_secs_f64();
    let inboxes = batch.inboxes(root);
    wait_files(&inboxes, batch.messages).await?;
    let cpu = Cpu::now(clamd_pid(), kafka_pid()).minus(before);
    let cpu_secs = clock.elapsed().as_secs_f64();
    let (mut files, mut e2e_ms, mut seen) = (HashMap::new(), Vec::new(), HashSet::new());
    for (name, at, message_id) in read_files(&inboxes)? {
        let id = message_id.with_context(|| format!("no Message-ID in {name}"))?;
        let sent = queued
            .get(&id)
            .with_context(|| format!("{name} holds <{id}>, which this batch did not send"))?;
        anyhow::ensure!(seen.insert(id.clone()), "<{id}> was delivered twice");
        e2e_ms.push(at - sent);
        files.insert(name, at);
    }
    let newest = files.values().copied().fold(started, f64::max);
    Ok(BatchRun {
        secs: (newest - started) / 1000.0,
        inject_secs,
        cpu,
        cpu_secs,
        e2e_ms,
        delays: ops.delays(log_from, &batch).await,
        files,
        batch,
    })
}

/// Send the batch over `load.sessions` SMTP sessions; Postfix's `250`
/// after DATA per Message-ID (ms since the epoch).
async fn inject(load: &StoreLoad, batch: &Batch) -> anyhow::Result<HashMap<String, f64>> {
    let (next, start) = (AtomicUsize::new(0), tokio::time::Instant::now());
    let sessions =
        (0..load.sessions.clamp(1, batch.messages)).map(|_| session(load, batch, &next, start));
    let queued: HashMap<String, f64> = futures::future::try_join_all(sessions)
        .await?
        .into_iter()
        .flatten()
        .collect();
    anyhow::ensure!(
        queued.len() == batch.messages,
        "Postfix queued {} of {} messages",
        queued.len(),
        batch.messages
    );
    Ok(queued)
}

/// One SMTP session: messages from the shared counter until none are left,
/// each at its time when the batch is paced.
async fn session(
    load: &StoreLoad,
    batch: &Batch,
    next: &AtomicUsize,
    start: tokio::time::Instant,
) -> anyhow::Result<Vec<(String, f64)>> {
    let socket = match load.source {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket
        .bind(SocketAddr::new(load.source, 0))
        .with_context(|| format!("binding {}", load.source))?;
    let stream = socket.connect(load.smtp).await.with_context(|| {
        format!(
            "connecting to Postfix at {}: run `ops/postfix start`",
            load.smtp
        )
    })?;
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    expect(&mut read, "220").await?;
    write.write_all(b"EHLO bench.example.net\r\n").await?;
    expect(&mut read, "250").await?;
    let mut queued = Vec::new();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= batch.messages {
            break;
        }
        if let Some(rate) = batch.rate {
            tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        }
        let (id, raw) = batch.message(i, load.bytes);
        let envelope = [
            ("MAIL FROM:<bench@example.net>".to_string(), "250"),
            (format!("RCPT TO:<{}>", batch.recipient(i)), "250"),
            ("DATA".to_string(), "354"),
        ];
        for (command, code) in envelope {
            write.write_all(format!("{command}\r\n").as_bytes()).await?;
            expect(&mut read, code).await.context(command)?;
        }
        write.write_all(&raw).await?;
        write.write_all(b".\r\n").await?;
        expect(&mut read, "250").await?;
        queued.push((id, epoch_ms(SystemTime::now())));
    }
    write.write_all(b"QUIT\r\n").await?;
    Ok(queued)
}

/// Read one reply (all its lines); it must have `code`.
async fn expect<R: AsyncBufRead + Unpin>(read: &mut R, code: &str) -> anyhow::Result<()> {
    let mut line = String::new();
    loop {
        line.clear();
        anyhow::ensure!(
            read.read_line(&mut line).await? > 0,
            "Postfix closed the connection"
        );
        if line.as_bytes().get(3) != Some(&b'-') {
            break;
        }
    }
    anyhow::ensure!(
        line.starts_with(code),
        "Postfix answered {:?}, expected {code}",
        line.trim_end()
    );
    Ok(())
}

/// Wait until the inboxes hold `n` files in all; fail on more, or when
/// their number stops growing for [`STALL`].
async fn wait_files(inboxes: &[PathBuf], n: usize) -> anyhow::Result<()> {
    let (mut most, mut progress) = (0, Instant::now());
    loop {
        let count: usize = inboxes
            .iter()
            .map(|d| std::fs::read_dir(d).map_or(0, Iterator::count))
            .sum();
        anyhow::ensure!(count <= n, "{count} files for {n} messages");
        if count == n {
            return Ok(());
        }
        if count > most {
            (most, progress) = (count, Instant::now());
        }
        anyhow::ensure!(
            progress.elapsed() < STALL,
            "{count} of {n} files after {} s without a new one (see `ops/postfix log`)",
            STALL.as_secs()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// (name, ctime in ms since the epoch, Message-ID) of every file.
fn read_files(inboxes: &[PathBuf]) -> anyhow::Result<Vec<(String, f64, Option<String>)>> {
    let mut out = Vec::new();
    for dir in inboxes {
        for entry in std::fs::read_dir(dir).with_context(|| dir.display().to_string())? {
            let path = entry?.path();
            let meta = std::fs::metadata(&path)?;
            let at = meta.ctime() as f64 * 1000.0 + meta.ctime_nsec() as f64 / 1e6;
            // The header is in the first few KB (Dovecot and Postfix add ~600 bytes).
            let mut head = Vec::with_capacity(8192);
            std::fs::File::open(&path)?
                .take(8192)
                .read_to_end(&mut head)?;
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            out.push((name.into_owned(), at, message_id(&head)));
        }
    }
    Ok(out)
}

/// The Message-ID of a header section that starts with another field.
fn message_id(head: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(head);
    let field = "\nmessage-id: <";
    let at = text.to_ascii_lowercase().find(field)? + field.len();
    let rest = &text[at..];
    Some(rest[..rest.find('>')?].to_string())
}

/// mailfleet's `250 → file` and the stages between, per message, from the
/// stored and scanned topics.
#[derive(Default)]
struct Stages {
    lmtp_to_file: Vec<f64>,
    lmtp_to_scanned: Vec<f64>,
    scanned_to_file: Vec<f64>,
    file_to_stored: Vec<f64>,
}

/// The stages of the flat-out and of the paced batches; checks one clean
/// `MessageScanned` and one `MessageStored` per message, naming its file.
fn mailfleet_stages(cfg: &Config, id: &str, runs: &[BatchRun]) -> anyhow::Result<[Stages; 2]> {
    let stored = read_all_timed::<MessageStored>(cfg, &format!("{id}.stored"))?;
    let scanned = read_all_timed::<MessageScanned>(cfg, &format!("{id}.scanned"))?;
    let ours = || runs.iter().filter(|r| r.batch.side == Side::Mailfleet);
    let sent: usize = ours().map(|r| r.batch.messages).sum();
    anyhow::ensure!(
        stored.len() == sent && scanned.len() == sent,
        "{} MessageStored and {} MessageScanned for {sent} messages",
        stored.len(),
        scanned.len()
    );
    let mut scanned_at = HashMap::new();
    for (at, s) in &scanned {
        anyhow::ensure!(
            s.verdict == ScanVerdict::Clean,
            "{} is {:?}",
            s.blob_id,
            s.verdict
        );
        let received = s.envelope.causation_id.clone().unwrap_or_default();
        scanned_at.insert(received, at.unwrap_or_default() as f64);
    }
    let mut by_account = HashMap::new();
    for (at, s) in &stored {
        by_account
            .entry(s.account.as_str())
            .or_insert_with(Vec::new)
            .push((*at, s));
    }
    let mut out = [Stages::default(), Stages::default()];
    for run in ours() {
        let batch = &run.batch;
        // Warm-ups are checked, not timed: the first one waits for the group join.
        let mut st = match batch.phase {
            Phase::WarmUp => None,
            Phase::FlatOut => Some(&mut out[0]),
            Phase::Paced => Some(&mut out[1]),
        };
        let mine: Vec<_> = batch
            .users
            .iter()
            .flat_map(|u| by_account.remove(u.as_str()))
            .flatten()
            .collect();
        anyhow::ensure!(
            mine.len() == batch.messages,
            "{} MessageStored for the {} messages of round {} {}",
            mine.len(),
            batch.messages,
            batch.round,
            batch.phase.name()
        );
        for (at, s) in mine {
            let file = run.files.get(&s.file).with_context(|| {
                format!(
                    "MessageStored names {} of {}, which is not there",
                    s.file, s.account
                )
            })?;
            let scanned = scanned_at
                .get(&s.delivery_id)
                .with_context(|| format!("no MessageScanned for {}", s.delivery_id))?;
            let Some(st) = st.as_mut() else {
                continue;
            };
            let (received, stored) = (s.received_at as f64, at.unwrap_or_default() as f64);
            st.lmtp_to_file.push(file - received);
            st.lmtp_to_scanned.push(scanned - received);
            st.scanned_to_file.push(file - scanned);
            st.file_to_stored.push(stored - file);
        }
    }
    Ok(out)
}

fn report(load: &StoreLoad, runs: &[BatchRun], stages: &[Stages; 2]) {
    let (dovecot, dovecot_p99) = side_report(load, runs, Side::Dovecot);
    let (mailfleet, mailfleet_p99) = side_report(load, runs, Side::Mailfleet);
    let at = ["flat out".to_string(), format!("at {} msgs/s", load.rate)];
    for (st, at) in stages.iter().zip(at) {
        println!(
            "mailfleet {at}: LMTP 250 → Maildir file {}",
            spread(&mut st.lmtp_to_file.clone())
        );
        println!(
            "mailfleet {at}: 250 → MessageScanned produced {}; → file {}; file → MessageStored produced {}",
            spread(&mut st.lmtp_to_scanned.clone()),
            spread(&mut st.scanned_to_file.clone()),
            spread(&mut st.file_to_stored.clone())
        );
    }
    let files = |side: Option<Side>| -> usize {
        let runs = runs
            .iter()
            .filter(|r| side.is_none_or(|s| r.batch.side == s));
        runs.map(|r| r.files.len()).sum()
    };
    println!(
        "checked: {} files, each Message-ID once; mailfleet: {} MessageStored naming theirs, \
         all scanned clean, 0 dead letters",
        files(None),
        files(Some(Side::Mailfleet))
    );
    let mut paced = stages[1].lmtp_to_file.clone();
    println!(
        "dovecot_mps={dovecot:.0} mailfleet_mps={mailfleet:.0} ratio={:.2} dovecot_p99_ms={dovecot_p99:.0} \
         mailfleet_p99_ms={mailfleet_p99:.0} mailfleet_250_to_file_p50_ms={:.0} mailfleet_250_to_file_p99_ms={:.0}",
        mailfleet / dovecot,
        pct(&mut paced, 0.5),
        pct(&mut paced, 0.99)
    );
}

/// One side's lines: flat-out rate (median) and CPU, and per phase the
/// latency from Postfix's `250` to the file and Postfix's own delays.
/// Returns the rate and the paced p99.
fn side_report(load: &StoreLoad, runs: &[BatchRun], side: Side) -> (f64, f64) {
    let of = |phase| {
        runs.iter()
            .filter(move |r| r.batch.side == side && r.batch.phase == phase)
    };
    let name = side.name();
    let mut tally = Tally::default();
    for r in of(Phase::FlatOut) {
        tally.add(r.secs, r.cpu);
    }
    let rate = tally.rate(load.messages as u64);
    let cpu = cpu_line(&tally, of(Phase::FlatOut), load.messages);
    let rounds = tally.secs.len();
    println!("{name} flat out: {rate:.0} msgs/s (median of {rounds}); {cpu}");
    let mut p99 = f64::NAN;
    for phase in [Phase::FlatOut, Phase::Paced] {
        let mut e2e: Vec<f64> = of(phase).flat_map(|r| r.e2e_ms.clone()).collect();
        let delays: Vec<[f64; 5]> = of(phase).flat_map(|r| r.delays.clone()).collect();
        let mut total: Vec<f64> = delays.iter().map(|d| d[0] * 1000.0).collect();
        let mean = |k: usize| {
            delays.iter().map(|d| d[k] * 1000.0).sum::<f64>() / delays.len().max(1) as f64
        };
        let at = match phase {
            Phase::Paced => format!("at {} msgs/s", load.rate),
            _ => "flat out".into(),
        };
        println!("{name} {at}: Postfix 250 → file {}", spread(&mut e2e));
        println!(
            "{name} {at}: Postfix delay= (arrival → LMTP 250; 10 ms steps; {} messages) {}; \
             mean delays= before qmgr {:.0}, in qmgr {:.0}, connect {:.0}, LMTP {:.0} ms",
            delays.len(),
            spread(&mut total),
            mean(1),
            mean(2),
            mean(3),
            mean(4)
        );
        p99 = pct(&mut e2e, 0.99);
    }
    (rate, p99)
}

/// CPU per message of this process (injector; for mailfleet also LMTP and
/// consumers), Kafka, clamd and the rest of the machine (Postfix, Dovecot).
fn cpu_line<'a>(tally: &Tally, runs: impl Iterator<Item = &'a BatchRun>, n: usize) -> String {
    let cpu = tally.ms_per_message(n as u64);
    let cores = std::thread::available_parallelism().map_or(2, |c| c.get()) as f64;
    let wall: f64 = runs.map(|r| r.cpu_secs).sum();
    let busy = cpu.busy() / 100.0 * wall * cores * 1000.0 / (n * tally.secs.len()) as f64;
    format!(
        "CPU ms/msg: this process {:.2}, kafka {:.2}, clamd {:.2}, the rest (Postfix, Dovecot) {:.2} (machine {:.0}% busy)",
        cpu.own,
        cpu.kafka,
        cpu.peer,
        busy - cpu.own - cpu.kafka - cpu.peer,
        cpu.busy()
    )
}

/// The `q` quantile (nearest rank) of `xs`, which it sorts.
fn pct(xs: &mut [f64], q: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    xs[((q * xs.len() as f64).ceil() as usize).clamp(1, xs.len()) - 1]
}

fn spread(xs: &mut [f64]) -> String {
    let (p50, p99, max) = (pct(xs, 0.5), pct(xs, 0.99), pct(xs, 1.0));
    format!("p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms")
}

fn epoch_ms(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// The scratch topics, with `partitions` (one for the dead letters), once
/// the broker's metadata shows them all: a consumer that subscribes to a
/// topic its first metadata lacks waits for librdkafka's next refresh
/// (`topic.metadata.refresh.interval.ms`, 5 minutes).
async fn create_topics(cfg: &Config, id: &str, partitions: i32) -> anyhow::Result<()> {
    let topics: BTreeMap<String, i32> = TOPICS
        .iter()
        .map(|&name| {
            (
                format!("{id}.{name}"),
                if name == "dead" { 1 } else { partitions },
            )
        })
        .collect();
    let topology = Topology {
        topics: topics
            .iter()
            .map(|(t, &n)| (t.clone(), TopicSpec::scratch(n)))
            .collect(),
        consumers: BTreeMap::new(),
    };
    admin::apply(&cfg.kafka, &topology)
        .await
        .context("creating the scratch topics")?;
    let client: AdminClient<DefaultClientContext> = admin::client_config(&cfg.kafka).create()?;
    let started = Instant::now();
    for (topic, &n) in &topics {
        loop {
            let md = client
                .inner()
                .fetch_metadata(Some(topic), Duration::from_secs(5))?;
            let seen = md.topics().iter().find(|t| t.error().is_none());
            if seen.is_some_and(|t| t.partitions().len() == n as usize) {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(30),
                "{topic} is not in the broker's metadata 30 s after its creation"
            );
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(())
}

/// Best effort: a run that failed early may not have made them.
async fn delete_topics(cfg: &Config, id: &str) {
    let names: Vec<String> = TOPICS.iter().map(|t| format!("{id}.{t}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let admin: Result<AdminClient<DefaultClientContext>, _> =
        admin::client_config(&cfg.kafka).create();
    if let Ok(admin) = admin {
        let _ = admin.delete_topics(&names, &opts).await;
    }
}

/// The LMTP server, the scanner and the storage writer in this process.
struct Fleet {
    port: u16,
    mail_root: PathBuf,
    shutdown: Shutdown,
    consumers: Vec<(&'static str, JoinHandle<Result<RunStats, RuntimeError>>)>,
}

impl Fleet {
    async fn start(
        cfg: &Config,
        load: &StoreLoad,
        id: &str,
        dir: &Path,
        owner: (Option<u32>, Option<u32>),
    ) -> anyhow::Result<Fleet> {
        create_topics(cfg, id, load.partitions).await?;
        let t = |name: &str| format!("{id}.{name}");
        let blobs = Arc::new(BlobStore::open(dir.join("blobs"))?);
        let shutdown = Shutdown::new();
        let port = super::lmtp_in_process(
            cfg,
            &t("received"),
            load.sessions * 4,
            blobs.clone(),
            &shutdown,
        )
        .await?;
        let runtime = RuntimeConfig {
            data_dir: dir.join("state"),
            deadletter_topic: t("dead"),
            ..cfg.runtime.clone()
        };
        let spec = |name: &str, inputs: &[&str]| RunSpec {
            group: format!("{id}-{name}"),
            inputs: inputs.iter().map(|i| t(i)).collect(),
            kafka: cfg.kafka.clone(),
            runtime: runtime.clone(),
            run_effects: true,
            stop_after: None,
            stop_at: None,
            start_at: None,
            produce: true,
            capture: None,
            progress: None,
        };
        let scanner = ScannerConfig {
            use_clamd: true,
            scanned_topic: t("scanned"),
            accounts_topic: t("accounts"),
            alerts_topic: t("alerts"),
            ..cfg.consumers.scanner.clone()
        };
        let mail_root = dir.join("mail");
        let storage = StorageConfig {
            mail_root: mail_root.display().to_string(),
            quarantine_dir: dir.join("quarantine").display().to_string(),
            mail_uid: owner.0,
            mail_gid: owner.1,
            stored_topic: t("stored"),
            usage_topic: t("usage"),
            notify_topic: t("notify"),
            ..cfg.consumers.storage.clone()
        };
        // The storage writer's inputs, as in pipelines/topology.toml.
        let storage_inputs = ["scanned", "accounts", "purge", "stored"];
        let scanner = Scanner::new(scanner, blobs.clone());
        let writer = StorageWriter::new(storage, blobs);
        let consumers = vec![
            (
                "scanner",
                tokio::spawn(mailfleet_runtime::run(
                    scanner,
                    spec("scanner", &["received"]),
                    shutdown.clone(),
                )),
            ),
            (
                "storage",
                tokio::spawn(mailfleet_runtime::run(
                    writer,
                    spec("storage", &storage_inputs),
                    shutdown.clone(),
                )),
            ),
        ];
        Ok(Fleet {
            port,
            mail_root,
            shutdown,
            consumers,
        })
    }

    /// Stop all; the dead letters of both consumers.
    async fn stop(self) -> anyhow::Result<u64> {
        self.shutdown.trigger();
        let mut dead = 0;
        for (name, handle) in self.consumers {
            let stats = handle.await?.with_context(|| format!("consumer {name}"))?;
            dead += stats.dead_letters;
        }
        Ok(dead)
    }
}

/// The local Postfix and Dovecot as `ops/` runs them, and what the bench
/// changes in them (Postfix's transport, Dovecot users) to put back.
struct Ops {
    /// Of every bench account's local part: `bs<hex>`.
    prefix: String,
    domain: String,
    postfix_conf: PathBuf,
    /// Postfix's `virtual_transport` before the bench.
    transport: String,
    maillog: PathBuf,
    /// Dovecot's mail root.
    mail_root: PathBuf,
    /// Dovecot's passwd file of the domain.
    passwd: PathBuf,
    /// `<uid>:<gid>` of Dovecot's mail user.
    mail_owner: String,
}

impl Ops {
    fn read(load: &StoreLoad, prefix: &str) -> anyhow::Result<Ops> {
        let run =
            PathBuf::from(std::env::var("MAILFLEET_RUN_DIR").unwrap_or_else(|_| "run".into()));
        let postfix_conf = run.join("postfix/etc");
        let main_cf = std::fs::read_to_string(postfix_conf.join("main.cf")).with_context(|| {
            format!(
                "reading {}: run `ops/postfix start` (from the repository root)",
                postfix_conf.display()
            )
        })?;
        let setting = |key: &str| {
            main_cf.lines().find_map(|l| {
                let value = l.strip_prefix(key)?.trim_start().strip_prefix('=')?;
                Some(value.trim().to_string())
            })
        };
        let dovecot = run.join("dovecot");
        let mail_root = std::fs::read_to_string(dovecot.join("mail_root"))
            .context("reading Dovecot's mail root: run `ops/dovecot start`")?;
        Ok(Ops {
            prefix: prefix.to_string(),
            domain: load.domain.clone(),
            transport: setting("virtual_transport").context("main.cf has no virtual_transport")?,
            maillog: setting("maillog_file")
                .context("main.cf has no maillog_file")?
                .into(),
            postfix_conf,
            mail_root: mail_root.trim().into(),
            passwd: dovecot.join("passwd").join(&load.domain),
            mail_owner: std::fs::read_to_string(dovecot.join("mail_owner")).unwrap_or_default(),
        })
    }

    /// The owner mailfleet's files get: Dovecot's mail user, when running as root.
    fn owner(&self) -> (Option<u32>, Option<u32>) {
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        match self.mail_owner.trim().split_once(':') {
            Some((uid, gid)) if root => (uid.parse().ok(), gid.parse().ok()),
            _ => (None, None),
        }
    }

    async fn preflight(&self, cfg: &Config) -> anyhow::Result<()> {
        Clamd::new(cfg.consumers.scanner.clamd.clone())
            .ping()
            .await
            .context("clamd does not answer PING: run `ops/clamav start`")?;
        for service in ["ops/dovecot", "ops/postfix"] {
            let (ok, out) = shell(service, &["status"], &[], None).await?;
            anyhow::ensure!(ok, "{service} status: {out}: run `{service} start`");
        }
        let conf = self.postfix_conf.display().to_string();
        let (_, queue) = shell("postqueue", &["-c", &conf, "-p"], &[], None).await?;
        if !queue.contains("Mail queue is empty") {
            let summary = queue.lines().last().unwrap_or_default();
            println!("note: Postfix's queue is not empty ({summary}); only this run's accounts are counted");
        }
        Ok(())
    }

    /// Point Postfix's `virtual_transport` at `transport` (a reload).
    async fn set_transport(&self, transport: &str) -> anyhow::Result<()> {
        let env = [("MAILFLEET_POSTFIX_TRANSPORT", transport)];
        let (ok, out) = shell("ops/postfix", &["start"], &env, None).await?;
        anyhow::ensure!(ok, "ops/postfix start with transport {transport}: {out}");
        Ok(())
    }

    /// Add the Dovecot side's accounts to Dovecot's passwd file, under the
    /// lock `ops/dovecot adduser` takes (one hash for all: LMTP only looks up).
    async fn add_dovecot_users(&self, plan: &Plan) -> anyhow::Result<()> {
        let pw = ["pw", "-s", "SHA512-CRYPT", "-p", &self.prefix];
        let (ok, hash) = shell("doveadm", &pw, &[], None).await?;
        anyhow::ensure!(ok, "doveadm pw: {hash}");
        let lines: String = plan
            .0
            .iter()
            .filter(|b| b.side == Side::Dovecot)
            .flat_map(|b| &b.users)
            .filter_map(|u| u.split_once('@'))
            .map(|(user, _)| format!("{user}:{hash}\n"))
            .collect();
        self.passwd_locked("touch \"$0\" && cat >> \"$0\"", Some(lines))
            .await
    }

    /// Run `script` under `sh` with the passwd file as `$0` and the bench's
    /// account prefix as `$1`, holding the lock `ops/dovecot adduser` takes.
    async fn passwd_locked(&self, script: &str, stdin: Option<String>) -> anyhow::Result<()> {
        let lock = self.passwd.with_file_name(format!(".{}.lock", self.domain));
        let lock = lock.display().to_string();
        let file = self.passwd.display().to_string();
        let prefix = format!("{}-", self.prefix);
        let args = [lock.as_str(), "sh", "-c", script, &file, &prefix];
        let (ok, out) = shell("flock", &args, &[], stdin).await?;
        anyhow::ensure!(ok, "editing {file}: {out}");
        Ok(())
    }

    /// Put back Postfix's transport; remove the bench's Dovecot users,
    /// their Maildirs, and its mail still in Postfix's queue. Every step
    /// runs; the first failure is returned.
    async fn restore(&self) -> anyhow::Result<()> {
        let transport = self.set_transport(&self.transport).await;
        let script =
            "grep -v \"^$1\" \"$0\" > \"$0.tmp\"; chmod 0644 \"$0.tmp\" && mv \"$0.tmp\" \"$0\"";
        let users = self.passwd_locked(script, None).await;
        let prefix = format!("{}-", self.prefix);
        let domain = self.mail_root.join(&self.domain);
        for entry in std::fs::read_dir(&domain).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let queue = self.purge_queue().await;
        transport.and(users).and(queue)
    }

    /// Delete this run's messages still in Postfix's queue (after a failure).
    async fn purge_queue(&self) -> anyhow::Result<()> {
        let conf = self.postfix_conf.display().to_string();
        let (_, json) = shell("postqueue", &["-c", &conf, "-j"], &[], None).await?;
        let ours = |m: &serde_json::Value| {
            let to = m["recipients"].as_array().into_iter().flatten();
            to.filter_map(|r| r["address"].as_str())
                .any(|a| a.starts_with(&self.prefix))
        };
        let ids: String = json
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(ours)
            .filter_map(|m| Some(format!("{}\n", m["queue_id"].as_str()?)))
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        println!(
            "removing {} bench messages from Postfix's queue",
            ids.lines().count()
        );
        let (ok, out) = shell("postsuper", &["-c", &conf, "-d", "-"], &[], Some(ids)).await?;
        anyhow::ensure!(ok, "postsuper -d: {out}");
        Ok(())
    }

    /// Postfix's maillog for the batch's recipients, from byte `from`:
    /// delay= and delays=a/b/c/d of each delivered message. postlogd
    /// writes asynchronously: waits up to 2 s for all of them.
    async fn delays(&self, from: u64, batch: &Batch) -> Vec<[f64; 5]> {
        let to = format!("to=<{}-", batch.tag);
        let started = Instant::now();
        loop {
            let text = std::fs::read(&self.maillog).unwrap_or_default();
            let tail = String::from_utf8_lossy(text.get(from as usize..).unwrap_or_default());
            let found: Vec<[f64; 5]> = tail
                .lines()
                .filter(|l| l.contains(&to) && l.contains("status=sent"))
                .filter_map(parse_delays)
                .collect();
            if found.len() >= batch.messages || started.elapsed() > Duration::from_secs(2) {
                return found;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// `delay=0.12, delays=0.01/0/0/0.11` of one maillog line.
fn parse_delays(line: &str) -> Option<[f64; 5]> {
    let field = |name: &str| {
        let start = line.find(name)? + name.len();
        line[start..].split(',').next()
    };
    let mut out = [field(" delay=")?.parse().ok()?, 0.0, 0.0, 0.0, 0.0];
    for (slot, part) in out[1..].iter_mut().zip(field(" delays=")?.split('/')) {
        *slot = part.parse().ok()?;
    }
    Some(out)
}

/// Run a program; (success, its stdout and stderr, trimmed).
pub(super) async fn shell(
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<String>,
) -> anyhow::Result<(bool, String)> {
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {program} (from the repository root)"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    let text = [out.stdout, out.stderr].concat();
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&text).trim().to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        load: StoreLoad,
    }

    #[test]
    fn maillog_delays_and_message_ids_parse() {
        let line = "Nov 28 19:26:15 mx postfix/lmtp[11204]: D9BA151092C: to=<a@example.test>, \
                    relay=127.0.0.1[127.0.0.1]:2424, delay=0.12, delays=0.01/0/0.02/0.09, dsn=2.0.0, status=sent (250 ok)";
        assert_eq!(parse_delays(line), Some([0.12, 0.01, 0.0, 0.02, 0.09]));
        assert_eq!(parse_delays("no delays here"), None);
        let head = b"Return-Path: <x>\r\nMESSAGE-ID: <bsab-1dp-7@bench.example.net>\r\n\r\n";
        assert_eq!(
            message_id(head).as_deref(),
            Some("bsab-1dp-7@bench.example.net")
        );
        assert_eq!(message_id(b"Subject: x\r\n\r\n"), None);
    }

    #[test]
    fn the_plan_has_every_phase_and_messages_their_size_and_recipient() {
        let load = Cli::parse_from(["x", "--messages", "10", "--users", "3", "--rounds", "1"]).load;
        let plan = Plan::new(&load, "bsab");
        let phases: Vec<_> = plan
            .0
            .iter()
            .map(|b| (b.side, b.phase, b.messages))
            .collect();
        assert_eq!(phases.len(), 6, "{phases:?}");
        assert_eq!(phases[1], (Side::Dovecot, Phase::FlatOut, 10));
        assert_eq!(phases[5], (Side::Mailfleet, Phase::Paced, 1000));
        let tags: HashSet<_> = plan.0.iter().map(|b| b.tag.as_str()).collect();
        assert_eq!(tags.len(), 6, "{tags:?}");
        let batch = &plan.0[1];
        assert_eq!(batch.users.len(), 3);
        let (id, raw) = batch.message(4, load.bytes);
        assert!(
            raw.len() <= load.bytes && raw.len() > load.bytes - 80,
            "{}",
            raw.len()
        );
        let text = String::from_utf8(raw.clone()).unwrap();
        assert!(text.starts_with(&format!("Message-ID: <{id}>\r\n")));
        assert_eq!(
            message_id(format!("Received: x\r\n{text}").as_bytes()),
            Some(id)
        );
        assert!(text.contains(&format!("To: <{}>", batch.recipient(4))));
        assert!(text.ends_with("--b4--\r\n") && !text.contains("\n."));
        assert!(text
            .split("\r\n")
            .all(|l| !l.contains('\n') && l.len() <= 998));
        assert_ne!(raw, batch.message(5, load.bytes).1);
    }
}
