//! `mailfleet bench hot`: the hot paths in this process, without the
//! broker, for a profiler. Each path is one function, so that callgrind's
//! inclusive cost of it divided by `--events` is the instructions per event:
//!
//! - `avro`: the four Avro steps of a policy round trip through the
//!   registry: encode `DeliveryAttempted` (policy server), decode it
//!   (greylist), encode `GreylistDecided` (greylist), decode it (the policy
//!   server's decisions reader);
//! - `policy`: the policy server's own work for one request: parse the
//!   request text, build the attempt and its key, encode it, decode the
//!   decision, format the reply;
//! - `greylist`: the runtime's per-event batch work for the greylist
//!   consumer (decode, decide against RocksDB state with the settings in
//!   force, encode the decision, one `WriteBatch` of state and offsets per
//!   `--batch` events) over a request mix with repeats, retries after the
//!   delay, auto-whitelisting and whitelisted clients;
//! - `counter`: the same for the counting consumer of `bench consume`.
//!
//! The request mix is deterministic (a fixed-seed generator), so two runs
//! count the same instructions. See `docs/benchmarks.md`, "Profile and
//! fix (F10)", for the callgrind commands.

use std::{collections::BTreeMap, time::Instant};

use anyhow::Context;
use mailfleet_counter::{Counter, CounterConfig};
use mailfleet_events::{
    config::ConfigChanged,
    greylist::{DeliveryAttempted, GreylistDecided},
    Envelope, Registry,
};
use mailfleet_fleet::config::Config;
use mailfleet_greylist::{whitelist::WhitelistFiles, Greylist};
use mailfleet_policy::{attempt, protocol, PolicyConfig};
use mailfleet_runtime::{config::MetricsConfig, offline, Consumer, RecordMeta, Store};

/// Which hot path to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HotPath {
    Avro,
    Policy,
    Greylist,
    Counter,
}

/// The shape of a `bench hot` run.
#[derive(Debug, Clone, clap::Args)]
pub struct HotLoad {
    /// Events (requests) per path.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// The paths to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',',
          default_values_t = [HotPath::Avro, HotPath::Policy, HotPath::Greylist, HotPath::Counter])]
    paths: Vec<HotPath>,
    /// Events per committed batch of the greylist path (the policy path
    /// sees small batches: each holds what arrived since the last one).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Events per committed batch of the counter path (`bench consume`
    /// runs with `batch_max_events` 5000).
    #[arg(long, default_value_t = 5000)]
    counter_batch: usize,
    /// Input partitions the records are spread over.
    #[arg(long, default_value_t = 12)]
    partitions: i32,
    /// Run without a metrics recorder (by default the Prometheus recorder
    /// is installed, as every mailfleet process has it, on a free port).
    #[arg(long)]
    no_metrics: bool,
}

/// One RCPT request of the mix.
struct Req {
    ip: String,
    name: String,
    sender: String,
    rcpt: String,
    instance: String,
    /// Event time, ms.
    at: i64,
}

/// A fixed-seed xorshift generator: the same mix on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// `n` requests, one second of event time apart: half of them repeat an
/// earlier triplet (half of those one of the last 1,000, as a retry does,
/// the others any earlier one), so some come too early and many after the
/// 300 s delay; a fifth of the triplets come from 50 bulk senders, which
/// pass often enough over the hours to be auto-whitelisted, the rest from
/// 3,000 other hosts, 3% of them named under a whitelisted provider; one
/// in ten senders is a VERP address.
fn mix(n: usize) -> Vec<Req> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut triplets: Vec<(u64, u64)> = Vec::new(); // (triplet number, host)
    (0..n)
        .map(|i| {
            let (t, host) = if !triplets.is_empty() && rng.below(2) == 0 {
                let len = triplets.len() as u64;
                let back = if rng.below(2) == 0 {
                    rng.below(len.min(1_000))
                } else {
                    rng.below(len)
                };
                triplets[(len - 1 - back) as usize]
            } else {
                let t = triplets.len() as u64;
                let host = if rng.below(5) == 0 {
                    rng.below(50)
                } else {
                    50 + rng.below(3_000)
                };
                triplets.push((t, host));
                triplets[t as usize]
            };
            let name = if host % 33 == 0 {
                format!("mail-{host}.google.com")
            } else {
                format!("mx{host}.example.net")
            };
            let sender = if t % 10 == 0 {
                format!("bounce-{t}-{}@lists.example.org", rng.below(1_000_000))
            } else {
                format!("s{t}@sender{}.example", t % 97)
            };
            Req {
                // One host a /24: the triplets' keys spread over 3,000 networks.
                ip: format!("10.{}.{}.{}", host / 256, host % 256, 1 + host % 7),
                name,
                sender,
                rcpt: format!("r{t}@example.test"),
                instance: format!("{:x}.{i}", 0x1000 + i),
                at: 1_700_000_000_000 + 1000 * i as i64,
            }
        })
        .collect()
}

fn attempt_of(r: &Req) -> DeliveryAttempted {
    DeliveryAttempted {
        envelope: Envelope::new(format!("bench:{:032x}", r.at), r.at, "policy@bench"),
        client_address: Some(r.ip.clone()),
        client_name: Some(r.name.clone()),
        reverse_client_name: Some(r.name.clone()),
        helo_name: Some(r.name.clone()),
        sender: Some(r.sender.clone()),
        recipient: Some(r.rcpt.clone()),
        instance: Some(r.instance.clone()),
        size: Some(4096),
        queue_id: None,
        policy_host: "bench".into(),
        answered: None,
    }
}

fn decided_for(a: &DeliveryAttempted) -> GreylistDecided {
    GreylistDecided {
        envelope: Envelope::caused_by(&a.envelope, "greylist"),
        triplet: Some(format!(
            "10.0.0.0/{}/{}",
            a.sender.as_deref().unwrap_or(""),
            a.recipient.as_deref().unwrap_or("")
        )),
        verdict: mailfleet_events::greylist::GreylistVerdict::Defer,
        reason: mailfleet_events::greylist::GreylistReason::New,
        action: "DEFER_IF_PERMIT Greylisted, try again in 300 seconds".into(),
        delay_seconds: 300,
        policy_host: "bench".into(),
        settings_hash: Some("ab".repeat(32)),
    }
}

pub async fn run(cfg: &Config, load: HotLoad) -> anyhow::Result<()> {
    if !load.no_metrics {
        let listen = MetricsConfig {
            listen: "127.0.0.1:0".into(),
        };
        mailfleet_runtime::metrics::install_exporter(&listen)?;
    }
    // Loaded once per process, before any path is measured.
    let _ = Registry::builtin();
    let n = load.events;
    let reqs = mix(n);
    println!(
        "{n} requests, {} distinct triplets",
        reqs.iter()
            .map(|r| (&r.sender, &r.rcpt))
            .collect::<std::collections::HashSet<_>>()
            .len()
    );
    for path in &load.paths {
        let started = Instant::now();
        let note = match path {
            HotPath::Avro => {
                let attempts: Vec<DeliveryAttempted> = reqs.iter().map(attempt_of).collect();
                let decided: Vec<GreylistDecided> = attempts.iter().map(decided_for).collect();
                let started = Instant::now();
                let bytes = avro_round_trips(&attempts, &decided)?;
                let secs = started.elapsed().as_secs_f64();
                report("avro", n, secs, &format!("{bytes} bytes encoded"));
                continue;
            }
            HotPath::Policy => {
                let texts = request_texts(&reqs);
                let decisions: Vec<Vec<u8>> = reqs
                    .iter()
                    .map(|r| mailfleet_events::encode(&decided_for(&attempt_of(r))))
                    .collect::<Result<_, _>>()?;
                let policy = PolicyConfig {
                    host: "bench".into(),
                    ..cfg.policy.clone()
                };
                let grouping = cfg.consumers.greylist.grouping();
                let started = Instant::now();
                let bytes = policy_requests(&policy, grouping, &texts, &decisions)?;
                let secs = started.elapsed().as_secs_f64();
                report("policy", n, secs, &format!("{bytes} reply bytes"));
                continue;
            }
            HotPath::Greylist => greylist_path(cfg, &load, &reqs)?,
            HotPath::Counter => counter_path(cfg, &load)?,
        };
        let secs = started.elapsed().as_secs_f64();
        report(&format!("{path:?}").to_lowercase(), n, secs, &note);
    }
    Ok(())
}

fn report(path: &str, n: usize, secs: f64, note: &str) {
    println!(
        "{path}: {n} events in {secs:.3}s, {:.0} ns/event wall ({note})",
        secs * 1e9 / n.max(1) as f64
    );
}

/// Encode and decode both events of each round trip; returns the bytes encoded.
#[inline(never)]
fn avro_round_trips(
    attempts: &[DeliveryAttempted],
    decided: &[GreylistDecided],
) -> anyhow::Result<usize> {
    let registry = Registry::builtin();
    let mut total = 0;
    for (a, d) in attempts.iter().zip(decided) {
        let bytes = registry.encode(a)?;
        let back: DeliveryAttempted = registry.decode(&bytes)?;
        anyhow::ensure!(back == *a, "DeliveryAttempted changed in a round trip");
        total += bytes.len();
        let bytes = registry.encode(d)?;
        let back: GreylistDecided = registry.decode(&bytes)?;
        anyhow::ensure!(back == *d, "GreylistDecided changed in a round trip");
        total += bytes.len();
    }
    Ok(total)
}

/// Each request as Postfix's smtpd writes it.
fn request_texts(reqs: &[Req]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in reqs {
        let text = format!(
            "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n\
             client_address={}\nclient_name={}\nreverse_client_name={}\nhelo_name={}\n\
             sender={}\nrecipient={}\nrecipient_count=0\nqueue_id=\ninstance={}\nsize=4096\n\
             etrn_domain=\nstress=\nsasl_method=\nsasl_username=\nsasl_sender=\n\
             ccert_subject=\nccert_issuer=\nccert_fingerprint=\nencryption_protocol=TLSv1.3\n\
             encryption_cipher=TLS_AES_256_GCM_SHA384\nencryption_keysize=256\n\n",
            r.ip, r.name, r.name, r.name, r.sender, r.rcpt, r.instance
        );
        out.extend_from_slice(text.as_bytes());
    }
    out
}

/// The policy server's per-request work besides Kafka: parse, build the
/// attempt and its key, encode it, decode the decision, format the reply.
/// (A plain function polling the reads itself, so that a profiler sees
/// its cost apart from the caller's.)
#[inline(never)]
fn policy_requests(
    cfg: &PolicyConfig,
    grouping: mailfleet_events::greylist::triplet::Grouping,
    texts: &[u8],
    decisions: &[Vec<u8>],
) -> anyhow::Result<usize> {
    futures::executor::block_on(async {
        let mut reader = tokio::io::BufReader::new(texts);
        let registry = Registry::builtin();
        let mut replied = 0;
        for decision in decisions {
            let req = protocol::read_request(&mut reader, protocol::Limits::default())
                .await?
                .context("request text ended early")?;
            let a = attempt::attempt(cfg, &req);
            let key = attempt::key(&a, grouping);
            let bytes = mailfleet_events::encode(&a)?;
            std::hint::black_box((&key, &bytes));
            let decided: GreylistDecided = registry.decode(decision)?;
            replied += protocol::reply(&decided.action).len();
        }
        Ok(replied)
    })
}

/// Records for the runtime: each partition's offsets count up from 0.
struct Records {
    topic: std::sync::Arc<str>,
    partitions: i32,
    next: BTreeMap<i32, i64>,
}

impl Records {
    fn meta(&mut self, key: &[u8], partition: Option<i32>) -> RecordMeta {
        let partition = partition.unwrap_or_else(|| {
            let h = key
                .iter()
                .fold(0u32, |h, &b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
            (h % self.partitions as u32) as i32
        });
        let next = self.next.entry(partition).or_insert(0);
        *next += 1;
        RecordMeta {
            topic: self.topic.clone(),
            partition,
            offset: *next - 1,
            key: Some(key.to_vec()),
            timestamp: None,
        }
    }
}

/// A fresh store under the bench scratch folder.
fn scratch_store(cfg: &Config, name: &str) -> anyhow::Result<(Store, std::path::PathBuf)> {
    let dir = super::scratch_dir(cfg, &format!("hot-{name}-{}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir)?;
    Ok((Store::open(&dir, cfg.runtime.sync_writes)?, dir))
}

fn greylist_path(cfg: &Config, load: &HotLoad, reqs: &[Req]) -> anyhow::Result<String> {
    let g = cfg.consumers.greylist.clone();
    let grouping = g.grouping();
    let lists = WhitelistFiles::load(g.whitelist_clients.clone(), g.whitelist_recipients.clone())?;
    let greylist = Greylist::new(g, lists, "bench.decisions");
    let (store, dir) = scratch_store(cfg, "greylist")?;
    let tokio = tokio::runtime::Handle::current();
    let mut records = Records {
        topic: "bench.attempts".into(),
        partitions: load.partitions,
        next: BTreeMap::new(),
    };
    // As a live start does: the settings in force, in every partition.
    let settings = greylist.settings().map_err(anyhow::Error::msg)?;
    let mut setup = Vec::new();
    for p in 0..load.partitions {
        let event = ConfigChanged {
            envelope: Envelope::new(format!("config:{p}"), reqs[0].at, "bench"),
            consumer: greylist.name().to_string(),
            settings: settings.json.clone(),
            hash: settings.hash.clone(),
        };
        setup.push((
            records.meta(b"", Some(p)),
            mailfleet_events::encode(&event)?,
        ));
    }
    let applied = offline::process(&greylist, &store, setup, &tokio)?;
    anyhow::ensure!(applied.dead_letters == 0, "the settings were refused");
    let mut batches = Vec::new();
    for chunk in reqs.chunks(load.batch.max(1)) {
        let mut batch = Vec::with_capacity(chunk.len());
        for r in chunk {
            let a = attempt_of(r);
            let key = attempt::key(&a, grouping);
            batch.push((
                records.meta(key.as_bytes(), None),
                mailfleet_events::encode(&a)?,
            ));
        }
        batches.push(batch);
    }
    let outputs = greylist_batches(&greylist, &store, batches, &tokio)?;
    anyhow::ensure!(
        outputs.len() == reqs.len(),
        "{} decisions for {} requests",
        outputs.len(),
        reqs.len()
    );
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for (_, _, bytes) in &outputs {
        let d: GreylistDecided = Registry::builtin().decode(bytes)?;
        *reasons.entry(format!("{:?}", d.reason)).or_default() += 1;
    }
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(format!("batch {}, {reasons:?}", load.batch))
}

/// An output as the batch work returns it: (topic, key, value).
type Output = (String, Vec<u8>, Vec<u8>);

/// The runtime's batch work for every batch; returns the outputs.
#[inline(never)]
fn greylist_batches(
    greylist: &Greylist,
    store: &Store,
    batches: Vec<Vec<(RecordMeta, Vec<u8>)>>,
    tokio: &tokio::runtime::Handle,
) -> anyhow::Result<Vec<Output>> {
    let mut outputs = Vec::new();
    for batch in batches {
        let done = offline::process(greylist, store, batch, tokio)?;
        anyhow::ensure!(done.dead_letters == 0, "dead letters in the greylist path");
        outputs.extend(done.outputs);
    }
    Ok(outputs)
}

fn counter_path(cfg: &Config, load: &HotLoad) -> anyhow::Result<String> {
    let counter = Counter::new(CounterConfig { emit: false }, "");
    let (store, dir) = scratch_store(cfg, "counter")?;
    let tokio = tokio::runtime::Handle::current();
    let run_id = "bench-hot";
    let payload_len = mailfleet_counter::traffic::payload_len_for(run_id, 200);
    let mut records = Records {
        topic: "bench.counter".into(),
        partitions: load.partitions,
        next: BTreeMap::new(),
    };
    let mut batches = Vec::new();
    let all = super::traffic_records(
        run_id,
        "bench.counter",
        load.events as u64,
        10_000,
        payload_len,
    )?;
    for chunk in all.chunks(load.counter_batch.max(1)) {
        batches.push(
            chunk
                .iter()
                .map(|r| (records.meta(&r.key, None), r.payload.clone()))
                .collect(),
        );
    }
    let handled = counter_batches(&counter, &store, batches, &tokio)?;
    let counted: u64 = mailfleet_counter::stored_counts(&store)?.values().sum();
    anyhow::ensure!(
        handled == load.events as u64 && counted == handled,
        "counted {counted} of {handled} handled"
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(format!(
        "batch {}, 200-byte events, 10000 keys",
        load.counter_batch
    ))
}

/// The runtime's batch work for every batch; returns the events handled.
#[inline(never)]
fn counter_batches(
    counter: &Counter,
    store: &Store,
    batches: Vec<Vec<(RecordMeta, Vec<u8>)>>,
    tokio: &tokio::runtime::Handle,
) -> anyhow::Result<u64> {
    let mut handled = 0;
    for batch in batches {
        let done = offline::process(counter, store, batch, tokio)?;
        anyhow::ensure!(done.dead_letters == 0, "dead letters in the counter path");
        handled += done.handled;
    }
    Ok(handled)
}
