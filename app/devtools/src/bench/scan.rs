//! `mailfleet bench scan`: scanning a fixed corpus ([`super::corpus`]).
//!
//! - (a) peer: a raw clamd `INSTREAM` loop (`Clamd::scan`) over the corpus;
//! - (b) `mailfleet_scan::scan` (clamd, then the attachment policy) over the
//!   same mix at the same concurrency, alternated with (a); the ratio is b/a;
//! - (c) the attachment policy alone (`policy::check`), on one thread;
//! - (d) the scanner consumer end to end: the corpus in a scratch blob store,
//!   one `MessageReceived` each on a scratch topic, the runtime with the
//!   `Scanner` until it has handled them all (with rspamd when the config
//!   enables it);
//! - (e, f) rspamd: `rspamc` alone vs clamd + policy + rspamd
//!   ([`super::scan_spam`]), unless `--no-rspamd`.
//!
//! clamd caches the hashes of clean files for its lifetime, so a corpus
//! scanned twice is mostly cache hits the second time. Every pass that
//! involves clamd therefore gets a corpus of its own: the same mix and
//! sizes, drawn from the next seed. Every pass checks its verdicts against
//! its corpus (EICAR infected, banned names banned, the rest clean), so a
//! wrong answer fails.

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{Arc, OnceLock},
    time::Instant,
};

use anyhow::Context;
use futures::{stream, StreamExt};
use mailfleet_blob::{blob_id, BlobStore};
use mailfleet_events::{
    mail::{BodyType, MessageReceived, MessageScanned, ScanVerdict},
    Envelope,
};
use mailfleet_fleet::config::Config;
use mailfleet_runtime::{
    producer::{EventProducer, RawRecord},
    read::read_events,
    Consumer, Decision, Input, Outcome, RunSpec, Shutdown, StateError, StateView,
};
use mailfleet_scan::{
    clamd::{Clamd, ClamdReply},
    policy, Verdict,
};
use mailfleet_scanner::{Scanner, ScannerConfig};

use super::{
    consume::create_topic,
    corpus::{corpus, Kind, Mail},
    cpu::{clamd_pid, kafka_pid, Cpu, Tally},
    scratch_dir,
};

/// The load's shape.
#[derive(Debug, Clone, clap::Args)]
pub struct ScanLoad {
    /// Messages in the corpus (40% plain, 30% pdf, 20% zip, 5% EICAR, 5% banned).
    #[arg(long, default_value_t = 1000)]
    pub messages: usize,
    /// Concurrent scans for the clamd comparison, each level measured.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    pub concurrency: Vec<usize>,
    /// Rounds of (clamd, mailfleet_scan) per level; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Partitions of the scanner's scratch input topic.
    #[arg(long, default_value_t = 3)]
    pub partitions: i32,
    /// Seed of the first corpus (each clamd pass takes the next); random by default.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Skip the rspamd stage (rspamc vs clamd + policy + rspamd).
    #[arg(long)]
    pub no_rspamd: bool,
}

/// Fresh corpora of one size: pass `k` gets seed `first + k`.
struct Corpora {
    messages: usize,
    next: u64,
}

impl Corpora {
    fn fresh(&mut self) -> Vec<Mail> {
        self.next = self.next.wrapping_add(1);
        corpus(self.messages, self.next)
    }
}

pub async fn run(cfg: &Config, load: ScanLoad) -> anyhow::Result<()> {
    let seed = load.seed.unwrap_or_else(rand::random);
    let mut corpora = Corpora {
        messages: load.messages,
        next: seed,
    };
    let mails = corpus(load.messages, seed);
    let n = mails.len() as u64;
    let bytes: usize = mails.iter().map(|m| m.raw.len()).sum();
    let mb = bytes as f64 / 1e6;
    let mut mix = BTreeMap::new();
    for m in mails.iter() {
        *mix.entry(m.kind.label()).or_insert(0) += 1;
    }
    println!(
        "corpus: {} messages, {mb:.1} MB, {mix:?}; seed {seed}, each clamd pass the next seed",
        mails.len()
    );
    let clamd = Clamd::new(cfg.consumers.scanner.clamd.clone());
    clamd
        .ping()
        .await
        .context("clamd does not answer PING: run `ops/clamav start`")?;
    println!("clamd: {}", clamd.version().await?);

    let mut last = Vec::new();
    for &c in &load.concurrency {
        let (raw, ours) = clamd_vs_scan(cfg, &clamd, &mut corpora, c.max(1), load.rounds).await?;
        let (raw_mps, our_mps) = (raw.rate(n), ours.rate(n));
        let ratio = our_mps / raw_mps;
        let (rc, oc) = (raw.ms_per_message(n), ours.ms_per_message(n));
        println!(
            "concurrency {c}: raw clamd {raw_mps:.0} msgs/s ({:.1} MB/s), mailfleet_scan::scan {our_mps:.0} msgs/s ({:.1} MB/s), ratio {ratio:.2}",
            raw_mps * mb / n as f64,
            our_mps * mb / n as f64
        );
        println!(
            "concurrency {c} CPU ms/msg: raw: clamd {:.2}, bench {:.2} (machine {:.0}% busy); scan: clamd {:.2}, bench {:.2} (machine {:.0}% busy)",
            rc.peer, rc.own, rc.busy(), oc.peer, oc.own, oc.busy()
        );
        last.push(format!(
            "clamd_c{c}_mps={raw_mps:.0} scan_c{c}_mps={our_mps:.0} ratio_c{c}={ratio:.2}"
        ));
    }

    if !load.no_rspamd {
        let dir = scratch_dir(cfg, &format!("bench-rspamc-{}", rand::random::<u32>()));
        let fields = super::scan_spam::every_level(cfg, &load, &mut || corpora.fresh(), &dir).await;
        let _ = std::fs::remove_dir_all(&dir);
        last.extend(fields?);
    }

    let (policy_mps, policy_mbps) = policy_alone(cfg, &mails)?;
    println!("policy::check alone, 1 thread: {policy_mps:.0} msgs/s, {policy_mbps:.1} MB/s");
    last.push(format!(
        "policy_mps={policy_mps:.0} policy_mbps={policy_mbps:.1}"
    ));

    let id = format!("bench-scan-{}", rand::random::<u32>());
    let dir = scratch_dir(cfg, &id);
    let e2e = consumer_end_to_end(cfg, &load, &corpora.fresh(), &id, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    let (total, from_first, cpu) = e2e?;
    println!(
        "scanner consumer end to end: {from_first:.0} msgs/s from its first input ({total:.0} msgs/s including the group join); effects run one at a time"
    );
    let per = cpu.scaled(1000.0 / n as f64);
    println!(
        "scanner consumer CPU ms/msg: clamd {:.2}, mailfleet {:.2}, kafka {:.2} (machine {:.0}% busy)",
        per.peer, per.own, per.kafka, per.busy()
    );
    last.push(format!("consumer_mps={from_first:.0}"));
    println!("{}", last.join(" "));
    Ok(())
}

/// (a) and (b), alternated for `rounds`, each pass on a fresh corpus.
async fn clamd_vs_scan(
    cfg: &Config,
    clamd: &Clamd,
    corpora: &mut Corpora,
    concurrency: usize,
    rounds: usize,
) -> anyhow::Result<(Tally, Tally)> {
    let policy = &cfg.consumers.scanner.policy;
    let (mut raw, mut ours) = (Tally::default(), Tally::default());
    for round in 1..=rounds.max(1) {
        let mails = &corpora.fresh();
        let (secs, cpu, replies) = over_corpus(mails, concurrency, |m| clamd.scan(&m.raw)).await;
        for (m, reply) in mails.iter().zip(replies) {
            let infected = matches!(reply?, ClamdReply::Found { .. });
            anyhow::ensure!(
                infected == (m.kind == Kind::Eicar),
                "clamd: {} gave infected={infected}",
                m.message_id
            );
        }
        raw.add(secs, cpu);
        let mails = &corpora.fresh();
        let (secs, cpu, verdicts) = over_corpus(mails, concurrency, |m| {
            mailfleet_scan::scan(&m.raw, policy, Some(clamd))
        })
        .await;
        for (m, verdict) in mails.iter().zip(verdicts) {
            let verdict = verdict?;
            anyhow::ensure!(
                expected(m, &verdict),
                "mailfleet_scan::scan: {} ({}) gave {verdict:?}",
                m.message_id,
                m.kind.label()
            );
        }
        ours.add(secs, cpu);
        let n = mails.len() as f64;
        println!(
            "concurrency {concurrency} round {round}: raw clamd {:.0} msgs/s, mailfleet_scan::scan {:.0} msgs/s",
            n / raw.secs[round - 1],
            n / ours.secs[round - 1]
        );
    }
    Ok((raw, ours))
}

/// Run `f` over every message with `concurrency` in flight; the seconds
/// and CPU taken, and the results in corpus order.
async fn over_corpus<'a, T, F, Fut>(
    mails: &'a [Mail],
    concurrency: usize,
    f: F,
) -> (f64, Cpu, Vec<T>)
where
    F: Fn(&'a Mail) -> Fut,
    Fut: Future<Output = T> + 'a,
{
    let before = Cpu::now(clamd_pid(), kafka_pid());
    let started = Instant::now();
    let results: Vec<T> = stream::iter(mails.iter().map(f))
        .buffered(concurrency)
        .collect()
        .await;
    let secs = started.elapsed().as_secs_f64();
    (
        secs,
        Cpu::now(clamd_pid(), kafka_pid()).minus(before),
        results,
    )
}

/// Whether a verdict is the one the corpus means.
fn expected(mail: &Mail, verdict: &Verdict) -> bool {
    match (mail.kind, verdict) {
        (Kind::Eicar, Verdict::Infected { .. }) => true,
        (Kind::Banned, Verdict::Banned { file, .. }) => Some(file) == mail.banned_file.as_ref(),
        (Kind::Plain | Kind::Pdf | Kind::Zip, Verdict::Clean) => true,
        _ => false,
    }
}

/// (c): msgs/s and MB/s of `policy::check` over the corpus, on this thread.
fn policy_alone(cfg: &Config, mails: &[Mail]) -> anyhow::Result<(f64, f64)> {
    let policy = &cfg.consumers.scanner.policy;
    let started = Instant::now();
    let reports: Vec<_> = mails
        .iter()
        .map(|m| policy::check(&m.raw, policy))
        .collect();
    let secs = started.elapsed().as_secs_f64();
    for (m, report) in mails.iter().zip(reports) {
        // Without clamd, EICAR is clean: only the banned names are banned.
        let verdict = report.banned.map_or(Verdict::Clean, Verdict::from);
        let ok = match m.kind {
            Kind::Eicar => verdict == Verdict::Clean,
            _ => expected(m, &verdict),
        };
        anyhow::ensure!(ok, "policy::check: {} gave {verdict:?}", m.message_id);
    }
    let bytes: usize = mails.iter().map(|m| m.raw.len()).sum();
    Ok((mails.len() as f64 / secs, bytes as f64 / 1e6 / secs))
}

/// (d): msgs/s of the scanner consumer, including and excluding the wait
/// for its group assignment, and the CPU of the whole run.
async fn consumer_end_to_end(
    cfg: &Config,
    load: &ScanLoad,
    mails: &[Mail],
    id: &str,
    dir: &std::path::Path,
) -> anyhow::Result<(f64, f64, Cpu)> {
    let store = Arc::new(BlobStore::open(dir.join("blobs"))?);
    let raws: Vec<Vec<u8>> = mails.iter().map(|m| m.raw.clone()).collect();
    let s = store.clone();
    let ids = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
        Ok(raws.iter().map(|r| s.put(r)).collect::<Result<_, _>>()?)
    })
    .await??;
    let topics = Topics::new(id);
    for (topic, partitions) in [
        (&topics.received, load.partitions),
        (&topics.scanned, load.partitions),
        (&topics.accounts, 1),
        (&topics.alerts, 1),
        (&topics.dead, 1),
    ] {
        create_topic(cfg, topic, partitions).await?;
    }
    produce_received(cfg, &topics.received, mails, &ids).await?;

    let scanner = ScannerConfig {
        use_clamd: true,
        local_domains: Vec::new(),
        scanned_topic: topics.scanned.clone(),
        accounts_topic: topics.accounts.clone(),
        alerts_topic: topics.alerts.clone(),
        ..cfg.consumers.scanner.clone()
    };
    let first = Arc::new(OnceLock::new());
    let consumer = FirstInput {
        inner: Scanner::new(scanner, store),
        first: first.clone(),
    };
    let runtime = mailfleet_runtime::config::RuntimeConfig {
        deadletter_topic: topics.dead.clone(),
        ..cfg.runtime.clone()
    };
    let spec = RunSpec::new(
        format!("{id}-scanner"),
        vec![topics.received.clone()],
        &cfg.kafka,
        &runtime,
    )
    .data_dir(dir.join("state"))
    .stop_after(mails.len() as u64);
    let before = Cpu::now(clamd_pid(), kafka_pid());
    let started = Instant::now();
    let stats = mailfleet_runtime::run(consumer, spec, Shutdown::new()).await?;
    let (ended, secs) = (Instant::now(), started.elapsed().as_secs_f64());
    let cpu = Cpu::now(clamd_pid(), kafka_pid()).minus(before);
    anyhow::ensure!(
        stats.events == mails.len() as u64 && stats.dead_letters == 0,
        "the scanner handled {} of {} inputs, {} dead letters",
        stats.events,
        mails.len(),
        stats.dead_letters
    );
    let from_first = first
        .get()
        .map_or(secs, |t| ended.duration_since(*t).as_secs_f64());
    check_verdicts(cfg, &topics.scanned, mails, &ids)?;
    let n = mails.len() as f64;
    Ok((n / secs, n / from_first, cpu))
}

/// The scratch topics of one run.
struct Topics {
    received: String,
    scanned: String,
    accounts: String,
    alerts: String,
    dead: String,
}

impl Topics {
    fn new(id: &str) -> Topics {
        let t = |name: &str| format!("{id}.{name}");
        Topics {
            received: t("received"),
            scanned: t("scanned"),
            accounts: t("accounts"),
            alerts: t("alerts"),
            dead: t("dead"),
        }
    }
}

/// One `MessageReceived` per message, as `mailfleet lmtp` writes them.
async fn produce_received(
    cfg: &Config,
    topic: &str,
    mails: &[Mail],
    ids: &[String],
) -> anyhow::Result<()> {
    let now = mailfleet_runtime::time::now_ms();
    let records = mails
        .iter()
        .zip(ids)
        .map(|(m, blob)| {
            let event = MessageReceived {
                envelope: Envelope::new(format!("lmtp:{blob}:{}", m.recipient), now, "bench"),
                account: m.recipient.clone(),
                recipient: m.recipient.clone(),
                sender: m.sender.clone(),
                blob_id: blob.clone(),
                size: m.raw.len() as i64,
                received_at: now,
                body_type: BodyType::SevenBit,
                lhlo: "bench".into(),
                session_id: "bench".into(),
                recipient_count: 1,
                recipient_index: 0,
                message_id: Some(m.message_id.clone()),
                header_from: Some(m.sender.clone()),
                subject: None,
                header_date: None,
                client_address: None,
                client_name: None,
                client_helo: None,
                queue_id: None,
            };
            Ok(RawRecord {
                topic: topic.to_string(),
                key: m.recipient.clone().into_bytes(),
                payload: mailfleet_events::encode(&event)?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let producer = EventProducer::new(&cfg.kafka, topic)?;
    producer.send_all(records, 1000, |_| {}).await?;
    Ok(())
}

/// Exactly one `MessageScanned` per message, with the corpus's verdict.
fn check_verdicts(cfg: &Config, topic: &str, mails: &[Mail], ids: &[String]) -> anyhow::Result<()> {
    let scanned = read_events::<MessageScanned>(&cfg.kafka, topic, "bench")?;
    anyhow::ensure!(
        scanned.len() == mails.len(),
        "{} MessageScanned for {} messages",
        scanned.len(),
        mails.len()
    );
    let by_blob: BTreeMap<&str, &MessageScanned> =
        scanned.iter().map(|s| (s.blob_id.as_str(), s)).collect();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (m, id) in mails.iter().zip(ids) {
        debug_assert_eq!(*id, blob_id(&m.raw));
        let s = by_blob
            .get(id.as_str())
            .with_context(|| format!("no verdict for {}", m.message_id))?;
        let want = match m.kind {
            Kind::Eicar => ScanVerdict::Infected,
            Kind::Banned => ScanVerdict::Banned,
            _ => ScanVerdict::Clean,
        };
        anyhow::ensure!(
            s.verdict == want && (want != ScanVerdict::Banned || s.file == m.banned_file),
            "scanner: {} ({}) got {:?} {:?}",
            m.message_id,
            m.kind.label(),
            s.verdict,
            s.file
        );
        *counts.entry(m.kind.label()).or_default() += 1;
    }
    println!(
        "checked: {} verdicts match the corpus {counts:?}",
        scanned.len()
    );
    Ok(())
}

/// The scanner, noting when its first input arrived: the group join and
/// assignment before it are not the scanner's speed.
struct FirstInput<C> {
    inner: C,
    first: Arc<OnceLock<Instant>>,
}

impl<C: Consumer> Consumer for FirstInput<C> {
    type Event = C::Event;

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn decide(
        &self,
        state: &StateView<'_>,
        input: &Input<Self::Event>,
    ) -> Result<Decision, StateError> {
        self.first.get_or_init(Instant::now);
        self.inner.decide(state, input)
    }

    fn has_effects(&self) -> bool {
        self.inner.has_effects()
    }

    fn effect(
        &self,
        input: &Input<Self::Event>,
        decision: &Decision,
    ) -> impl Future<Output = Outcome> + Send {
        self.inner.effect(input, decision)
    }
}
