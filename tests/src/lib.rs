//! Helpers for the integration tests, which run against the real Kafka
//! broker that `ops/kafka start` runs (127.0.0.1:9092, or
//! `MAILFLEET_TEST_BROKERS`). Each test makes its own topics, groups and
//! state folders (`{test}-{random}`), so tests never see each other.
//!
//! Tests that run `mailfleet` as a child process need the binary built
//! first (`cargo build --workspace --bins`; `ops/test` does it).

use std::{
    collections::{BTreeMap, HashMap},
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;
use mailfleet_runtime::{
    admin,
    config::{KafkaConfig, RuntimeConfig},
    read::{self, Record},
    topology::{Route, TopicSpec},
    Topology,
};
pub mod api;
pub mod blobs;
pub mod cluster;
pub mod directory;
pub mod faults;
pub mod fleet;
pub mod full;
pub mod hosts;
pub mod ingest;
pub mod notify;
pub mod outage;
pub mod postfix_tls;
pub mod secrets;
pub mod submission;

use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    Offset, TopicPartitionList,
};

/// The broker under test.
pub fn kafka() -> KafkaConfig {
    KafkaConfig {
        brokers: std::env::var("MAILFLEET_TEST_BROKERS")
            .unwrap_or_else(|_| "127.0.0.1:9092".into()),
        ..KafkaConfig::default()
    }
}

/// `{name}-{random}`.
pub fn unique(name: &str) -> String {
    format!("{name}-{:08x}", rand::random::<u32>())
}

/// swaks against the test Postfix (`ops/postfix`, 127.0.0.1:2525) from
/// 127.0.0.2, which is in its mynetworks: no policy service is asked.
pub fn swaks_trusted() -> std::process::Command {
    let mut swaks = std::process::Command::new("swaks");
    swaks.args([
        "--server",
        "127.0.0.1:2525",
        "--local-interface",
        "127.0.0.2",
    ]);
    swaks
}

/// [`swaks_trusted`] sending the message file `data` from `from` to `to`;
/// its transcript, or an error with it when swaks failed.
pub fn swaks_send(from: &str, to: &str, data: &Path) -> anyhow::Result<String> {
    let out = swaks_trusted()
        .args(["--from", from, "--to", to, "--timeout", "30"])
        .arg("--data")
        .arg(format!("@{}", data.display()))
        .output()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(out.status.success(), "swaks failed:\n{text}");
    Ok(text)
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    // Cargo sets CARGO_MANIFEST_DIR when it runs a test; the compile-time
    // value can name another clone that shared the target folder (cargo
    // reuses a build across clones of one workspace).
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("..")
}

/// A fresh folder under `run/tests/` (never /tmp).
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = repo_root().join("run").join("tests").join(unique(name));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// One test's private world: topics, a consumer route, a state folder.
pub struct TestWorld {
    pub name: String,
    pub input: String,
    pub output: String,
    pub deadletter: String,
    pub group: String,
    pub dir: PathBuf,
    pub topology: Topology,
}

impl TestWorld {
    /// Create the topics (`partitions` each) on the real broker.
    pub async fn new(name: &str, partitions: i32) -> anyhow::Result<TestWorld> {
        let world = TestWorld::unapplied(name, partitions);
        admin::apply(&kafka(), &world.topology)
            .await
            .context("creating test topics")?;
        Ok(world)
    }

    /// The world's names, topology and folder, its topics not created yet
    /// (for another broker: `admin::apply` them there).
    pub fn unapplied(name: &str, partitions: i32) -> TestWorld {
        let name = unique(name);
        let (input, output, deadletter) = (
            format!("{name}.in"),
            format!("{name}.out"),
            format!("{name}.dead"),
        );
        let spec = TopicSpec::scratch;
        let topology = Topology {
            topics: BTreeMap::from([
                (input.clone(), spec(partitions)),
                (output.clone(), spec(partitions)),
                (deadletter.clone(), spec(1)),
            ]),
            consumers: BTreeMap::from([(
                "counter".to_string(),
                Route {
                    group: format!("{name}-group"),
                    reads: vec![input.clone()],
                    writes: vec![output.clone()],
                },
            )]),
        };
        TestWorld {
            group: format!("{name}-group"),
            dir: scratch_dir(&name),
            name,
            input,
            output,
            deadletter,
            topology,
        }
    }

    /// Runtime settings pointing at this world's folder and dead-letter topic.
    pub fn runtime(&self, data: &str) -> RuntimeConfig {
        RuntimeConfig {
            data_dir: self.dir.join(data),
            deadletter_topic: self.deadletter.clone(),
            batch_max_events: 500,
            retry_initial_ms: 50,
            retry_max_ms: 500,
            ..RuntimeConfig::default()
        }
    }

    /// Write a config + topology for a `mailfleet run counter` child using
    /// state folder `data`, metrics port `metrics_port` and, if given, a
    /// static group membership id.
    pub fn write_config(
        &self,
        data: &str,
        metrics_port: u16,
        instance_id: Option<&str>,
    ) -> anyhow::Result<PathBuf> {
        let topo_path = self.dir.join("topology.toml");
        let mut topo = String::new();
        for (name, t) in &self.topology.topics {
            topo += &format!(
                "[topics.\"{name}\"]\npartitions = {}\nretention_ms = {}\ncleanup_policy = \"delete\"\n\n",
                t.partitions, t.retention_ms
            );
        }
        topo += &format!(
            "[consumers.counter]\ngroup = \"{}\"\nreads = [\"{}\"]\nwrites = [\"{}\"]\n",
            self.group, self.input, self.output
        );
        std::fs::write(&topo_path, topo)?;
        let cfg_path = self.dir.join(format!("{data}.toml"));
        let mut f = std::fs::File::create(&cfg_path)?;
        writeln!(
            f,
            "[pipelines]\ntopology = {:?}",
            topo_path.display().to_string()
        )?;
        writeln!(f, "[kafka]\nbrokers = {:?}", kafka().brokers)?;
        writeln!(
            f,
            "[runtime]\ndata_dir = {:?}\ndeadletter_topic = {:?}\nbatch_max_events = 500",
            self.dir.join(data).display().to_string(),
            self.deadletter
        )?;
        if let Some(id) = instance_id {
            writeln!(f, "instance_id = {id:?}")?;
        }
        writeln!(f, "[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"")?;
        Ok(cfg_path)
    }
}

/// The `mailfleet` binary built next to this test executable.
pub fn mailfleet_bin() -> PathBuf {
    if let Ok(p) = std::env::var("MAILFLEET_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .join("mailfleet");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build --workspace --bins` (ops/test does)",
        bin.display()
    );
    bin
}

/// Start `mailfleet run counter` with a config file; its log goes to `log`.
pub fn spawn_counter(config: &Path, log: &Path) -> anyhow::Result<Child> {
    spawn_mailfleet(config, &["run", "counter"], log)
}

/// Start `mailfleet --config <config> <args>`; its log goes to `log`.
pub fn spawn_mailfleet(config: &Path, args: &[&str], log: &Path) -> anyhow::Result<Child> {
    spawn_with_env(config, args, &[], log)
}

/// [`spawn_mailfleet`] with extra environment.
pub fn spawn_with_env(
    config: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    log: &Path,
) -> anyhow::Result<Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    Command::new(mailfleet_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .envs(env.iter().copied())
        .env("MAILFLEET_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("spawning mailfleet")
}

/// A test's config files: a topology file and a config pointing to it,
/// with the broker, a state folder, quick retries and short batch waits.
pub struct ConfigFiles<'a> {
    /// The folder both files go to.
    pub dir: &'a Path,
    /// The topology file's name in `dir`.
    pub topology_file: &'a str,
    pub topology: &'a Topology,
    pub brokers: &'a str,
    pub data_dir: &'a Path,
    pub deadletter: &'a str,
    pub metrics_port: u16,
}

impl ConfigFiles<'_> {
    /// Write both, the config as `file` in `dir` ending with `rest` (more
    /// TOML tables); returns the config's path.
    pub fn write(&self, file: &str, rest: &str) -> anyhow::Result<PathBuf> {
        let topo = self.dir.join(self.topology_file);
        let mut text = String::new();
        for (name, t) in &self.topology.topics {
            text += &format!(
                "[topics.\"{name}\"]\npartitions = {}\nretention_ms = {}\ncleanup_policy = \"delete\"\n",
                t.partitions, t.retention_ms
            );
        }
        for (name, route) in &self.topology.consumers {
            text += &format!(
                "[consumers.{name}]\ngroup = {:?}\nreads = {:?}\nwrites = {:?}\n",
                route.group, route.reads, route.writes
            );
        }
        // Rewritten by every config of a test while earlier processes may
        // be starting and reading it: replaced whole, never seen empty.
        write_whole(&topo, &text)?;
        let config = format!(
            "[pipelines]\ntopology = {topo:?}\n\
             [kafka]\nbrokers = {brokers:?}\n\
             [runtime]\ndata_dir = {state:?}\ndeadletter_topic = {dead:?}\nbatch_max_wait_ms = 2\n\
             retry_initial_ms = 100\nretry_max_ms = 1000\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\
             {rest}\n",
            topo = topo.display().to_string(),
            brokers = self.brokers,
            state = self.data_dir.display().to_string(),
            dead = self.deadletter,
            metrics = self.metrics_port,
        );
        let path = self.dir.join(file);
        write_whole(&path, &config)?;
        Ok(path)
    }
}

/// Write `text` to a file beside `path`, then rename it over `path`: a
/// reader sees the old file or the new one, never a truncated one.
fn write_whole(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// A free loopback port, for a server a test starts.
///
/// nextest runs tests of different binaries side by side, and a port the
/// kernel hands out for `bind(0)` and that is then released can be handed
/// to another test process before the child binds it ("Address already in
/// use"). So each test process takes ports from a block of its own
/// (picked by its pid), below the kernel's ephemeral range (32768 and up)
/// so that no outgoing connection takes one either, checking each is free.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const FIRST: u32 = 20_000;
    const BLOCK: u32 = 100;
    const BLOCKS: u32 = 120; // 20000..32000
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let block = (std::process::id().wrapping_mul(7919)) % BLOCKS;
    for _ in 0..BLOCK {
        let index = u32::from(NEXT.fetch_add(1, Ordering::Relaxed)) % BLOCK;
        let port = (FIRST + block * BLOCK + index) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Fetch the Prometheus text of a child, if it answers.
pub fn scrape(port: u16) -> Option<String> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    // The exposition is the body of a 200; the headers are not samples.
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.lines().next()?.split(' ').nth(1)?;
    (status == "200").then(|| body.to_string())
}

/// One sample of the Prometheus text exposition format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of a scrape, comments skipped. A line that does not parse
/// is an error naming it: the exposition is part of what is tested.
pub fn parse_exposition(text: &str) -> anyhow::Result<Vec<Sample>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| parse_sample(l).with_context(|| format!("exposition line {l:?}")))
        .collect()
}

fn parse_sample(line: &str) -> anyhow::Result<Sample> {
    let name_end = line.find(['{', ' ']).context("no value")?;
    let name = line[..name_end].to_string();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            inner = inner.trim_start_matches([',', ' ']);
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = inner.split_once("=\"").context("label without =\"")?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                let (i, c) = chars.next().context("unclosed label value")?;
                match c {
                    '\\' => match chars.next().context("dangling escape")?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break i,
                    other => value.push(other),
                }
            };
            labels.insert(key.trim().to_string(), value);
            inner = &after[end + 1..];
        }
    }
    let value = rest.split_whitespace().next().context("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().with_context(|| format!("value {v:?}"))?,
    };
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// Sum of the samples named exactly `name` whose labels include every
/// `key="value"` pair of `labels` exactly. A scrape that does not parse,
/// or a malformed pair, fails the test.
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    let want: Vec<(String, String)> = labels
        .iter()
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .unwrap_or_else(|| panic!("label {pair:?}: expected key=\"value\""));
            let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
            let v = v.unwrap_or_else(|| panic!("label {pair:?}: the value is not quoted"));
            (k.to_string(), v.to_string())
        })
        .collect();
    parse_exposition(text)
        .unwrap_or_else(|e| panic!("{e:#}\n{text}"))
        .into_iter()
        .filter(|s| s.name == name && want.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| s.value)
        .sum()
}

/// Whether the scrape has a sample of the metric `name`: exactly that
/// name, or a histogram's or summary's `_bucket`, `_sum` or `_count` of it.
pub fn has_metric(text: &str, name: &str) -> bool {
    let parsed = parse_exposition(text).unwrap_or_else(|e| panic!("{e:#}\n{text}"));
    parsed.iter().any(|s| {
        s.name == name
            || s.name
                .strip_prefix(name)
                .is_some_and(|rest| ["_bucket", "_sum", "_count"].contains(&rest))
    })
}

/// A consumed record: (key, value).
pub type Consumed = (Option<Vec<u8>>, Vec<u8>);

/// Read every record of a topic from the beginning (all partitions), until
/// `want` records were read or nothing new came for `idle`.
pub fn read_topic(topic: &str, want: usize, idle: Duration) -> anyhow::Result<Vec<Consumed>> {
    read_topic_from(&kafka(), topic, want, idle)
}

/// [`read_topic`] on another broker.
pub fn read_topic_from(
    kafka: &KafkaConfig,
    topic: &str,
    want: usize,
    idle: Duration,
) -> anyhow::Result<Vec<Consumed>> {
    Ok(read_as_written(kafka, topic, want, idle)?
        .into_iter()
        .map(|r| (r.key, r.payload))
        .collect())
}

/// Every record of `topic` from the beginning (all partitions), read as
/// it is written: until `want` records were read or nothing new came for
/// `idle`. (Reading to the end the topic has now is
/// [`mailfleet_runtime::read::read_to_end`].)
pub fn read_as_written(
    kafka: &KafkaConfig,
    topic: &str,
    want: usize,
    idle: Duration,
) -> anyhow::Result<Vec<Record>> {
    let consumer: BaseConsumer = admin::client_config(kafka)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut out = Vec::new();
    let mut last = Instant::now();
    while out.len() < want && last.elapsed() < idle {
        if let Some(msg) = consumer.poll(Duration::from_millis(100)) {
            out.push(Record::of(&msg?));
            last = Instant::now();
        }
    }
    Ok(out)
}

/// Expected final count per key for `events` events over `keys` keys.
pub fn expected_counts(events: u64, keys: u64) -> HashMap<String, u64> {
    let mut m = HashMap::new();
    for i in 0..events {
        *m.entry(format!("key-{}", i % keys)).or_insert(0) += 1;
    }
    m
}

/// The counting consumer's count per key in a (closed) state folder.
pub fn stored_counts(data_dir: &Path) -> anyhow::Result<HashMap<String, u64>> {
    let store = mailfleet_runtime::Store::open(&data_dir.join("counter"), false)?;
    Ok(mailfleet_counter::stored_counts(&store)?)
}

/// Produce `TestEvent`s `from..to` of run `run` over `keys` keys.
pub async fn produce_events(
    topic: &str,
    run: &str,
    from: u64,
    to: u64,
    keys: u64,
) -> anyhow::Result<()> {
    produce_events_to(&kafka(), topic, run, from..to, keys).await
}

/// [`produce_events`] to another broker.
pub async fn produce_events_to(
    kafka: &KafkaConfig,
    topic: &str,
    run: &str,
    range: std::ops::Range<u64>,
    keys: u64,
) -> anyhow::Result<()> {
    let producer = mailfleet_runtime::producer::EventProducer::new(kafka, run)?;
    let records = range.map(|i| {
        let e = mailfleet_counter::traffic::test_event(run, i, keys, 16);
        let payload = mailfleet_events::encode(&e).expect("test events fit their schema");
        mailfleet_runtime::producer::RawRecord {
            topic: topic.to_string(),
            key: e.key.into_bytes(),
            payload,
        }
    });
    producer.send_all(records, 2_000, |_| {}).await?;
    Ok(())
}

/// Decode `Counted` outputs, dropping duplicates by event id; returns the
/// distinct (key, count) pairs and how many duplicates were dropped.
pub fn dedup_counted(
    records: &[Consumed],
) -> anyhow::Result<(std::collections::HashSet<(String, i64)>, usize)> {
    use mailfleet_events::runtime::Counted;
    let mut ids = std::collections::HashSet::new();
    let mut pairs = std::collections::HashSet::new();
    let mut dups = 0;
    for (_, bytes) in records {
        let c: Counted = mailfleet_events::Registry::builtin().decode(bytes)?;
        if ids.insert(c.envelope.event_id.clone()) {
            anyhow::ensure!(
                pairs.insert((c.key.clone(), c.count)),
                "two ids for {} = {}: double count",
                c.key,
                c.count
            );
        } else {
            dups += 1;
        }
    }
    Ok((pairs, dups))
}

/// The (key, count) pairs a correct run emits.
pub fn expected_pairs(counts: &HashMap<String, u64>) -> std::collections::HashSet<(String, i64)> {
    counts
        .iter()
        .flat_map(|(k, &n)| (1..=n as i64).map(move |c| (k.clone(), c)))
        .collect()
}

/// Child processes killed when dropped, so that a failing test leaves
/// nothing running (ports stay free for the next test).
#[derive(Default)]
pub struct Children(pub Vec<Child>);

impl Children {
    /// Stop each gracefully (SIGTERM; each must exit 0).
    pub fn terminate(&mut self) -> anyhow::Result<()> {
        for mut child in self.0.drain(..) {
            terminate(&mut child)?;
        }
        Ok(())
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// SIGTERM a child and wait: a graceful stop must exit 0.
pub fn terminate(child: &mut Child) -> anyhow::Result<()> {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "graceful shutdown exited with {status}");
    Ok(())
}

/// Poll `ok` every 250 ms until it holds, or fail naming `what`.
pub async fn wait_until(
    what: &str,
    limit: Duration,
    mut ok: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    while !ok() {
        anyhow::ensure!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// Wait (up to 30 s) until something accepts connections on
/// 127.0.0.1:`port`, or fail naming `what`.
pub async fn wait_listening(what: &str, port: u16) -> anyhow::Result<()> {
    wait_until(what, Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await
}

/// The end offset of every partition of `topics` on the broker under
/// test, now.
pub fn end_offsets(topics: &[String]) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
    Ok(read::end_offsets(&kafka(), topics)?)
}

/// How many consumer starts (`consumer started` lines) `log` holds.
pub fn starts_logged(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .map(|text| text.matches("consumer started").count())
        .unwrap_or(0)
}

/// Wait (up to 60 s) until `log` holds `more` consumer starts beyond the
/// `before` it held when the process was spawned: the marker of *this* run.
/// A restarted consumer whose store already applied every input meets
/// [`wait_applied`] at once, before it installed its signal handler or
/// opened its store; a stop sent then races its start.
pub async fn wait_started(log: &Path, before: usize, more: usize) -> anyhow::Result<()> {
    wait_until(
        &format!("{more} consumer start(s) in {}", log.display()),
        Duration::from_secs(60),
        || starts_logged(log) >= before + more,
    )
    .await
}

/// Wait until the consumer store in `store_dir` has applied every record
/// of `topics` up to their current ends.
pub async fn wait_applied(store_dir: &Path, topics: &[String]) -> anyhow::Result<()> {
    let ends = end_offsets(topics)?;
    wait_until(
        &format!("{} to apply its inputs", store_dir.display()),
        Duration::from_secs(60),
        || {
            mailfleet_runtime::Store::open_read_only(store_dir)
                .is_ok_and(|s| outage::caught_up(&outage::offsets(&s), &ends))
        },
    )
    .await
}

/// `partition -> digest` from `mailfleet replay`'s lines.
pub fn replay_digests(stdout: &str) -> BTreeMap<i32, String> {
    stdout
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("partition ")?;
            let (p, rest) = rest.split_once(": state ")?;
            let digest = rest.split(' ').next()?;
            (digest != "empty").then(|| Some((p.parse().ok()?, digest.to_string())))?
        })
        .collect()
}

/// `partition -> digest` of a stopped consumer's live store.
pub fn live_digests(store_dir: &Path) -> anyhow::Result<BTreeMap<i32, String>> {
    Ok(mailfleet_runtime::Store::open_read_only(store_dir)?
        .partition_digests()?
        .into_iter()
        .map(|(p, (d, _))| (p, d))
        .collect())
}

/// Run `mailfleet --config <config> <args>` to completion: its stdout, or
/// an error with its status and everything it printed.
pub fn run_cli(config: &Path, args: &[&str]) -> anyhow::Result<String> {
    stdout_of(
        Command::new(mailfleet_bin())
            .arg("--config")
            .arg(config)
            .args(args),
    )
}

/// Run `command` to completion: its stdout, or an error with the command,
/// its status and everything it printed.
pub fn stdout_of(command: &mut Command) -> anyhow::Result<String> {
    let out = command.output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(
        out.status.success(),
        "{command:?}: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

#[cfg(test)]
mod exposition_tests {
    use super::*;

    const SCRAPE: &str = "# HELP a_total x\n# TYPE a_total counter\n\
a_total{kind=\"clamd\",reason=\"a \\\"q\\\", b\"} 2\n\
a_total{kind=\"clamd_x\"} 5\n\
a_total_more{kind=\"clamd\"} 7\n\
h_seconds_bucket{le=\"+Inf\"} 3\nh_seconds_sum 0.5\nplain 1.5 1700000000\n";

    #[test]
    fn names_and_labels_match_exactly_not_by_prefix() {
        assert_eq!(metric_sum(SCRAPE, "a_total", &[]), 7.0);
        assert_eq!(metric_sum(SCRAPE, "a_total", &["kind=\"clamd\""]), 2.0);
        assert_eq!(metric_sum(SCRAPE, "a_total", &["kind=\"clam\""]), 0.0);
        assert_eq!(
            metric_sum(SCRAPE, "a_total", &["reason=\"a \"q\", b\""]),
            2.0
        );
        assert_eq!(metric_sum(SCRAPE, "plain", &[]), 1.5);
        assert!(has_metric(SCRAPE, "h_seconds"));
        assert!(has_metric(SCRAPE, "a_total_more"));
        assert!(!has_metric(SCRAPE, "a_tot"));
        assert!(!has_metric(SCRAPE, "h_sec"));
    }

    #[test]
    fn a_broken_line_is_named() {
        let e = parse_exposition("ok 1\nbad{x=\"1\" 2\n").unwrap_err();
        assert!(format!("{e:#}").contains("bad{x"), "{e:#}");
    }

    #[test]
    #[should_panic(expected = "expected key=")]
    fn a_bare_fragment_is_refused() {
        metric_sum(SCRAPE, "a_total", &["clamd"]);
    }
}
