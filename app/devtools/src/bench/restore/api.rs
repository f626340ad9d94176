//! `mailfleet api` start-up in `mailfleet bench restore`: the real process,
//! started from its projection's snapshot and folding the whole events
//! topic, at one history length.
//!
//! For one K:
//! 1. N·K account events on a fresh 12-partition topic (as
//!    `accounts.events`), keyed by account, in time order: each account's
//!    registration, then its logins over the channels, some failed logins
//!    and plan changes ([`event`]);
//! 2. one API (`api.snapshot_interval_s = 1`) folds them and writes its
//!    snapshot; it is stopped once every partition's offsets record in
//!    `<topic>.snapshot` is the topic's end;
//! 3. timed, alternately, `rounds` times: a fresh `mailfleet api` with the
//!    snapshot (it loads the snapshot and follows the events after it) and
//!    one with `api.snapshot_interval_s = 0` (no snapshot read: it folds
//!    the whole topic). Each is timed from the spawn of the process until
//!    `GET /accounts/<the last account>` answers 200 with that account's
//!    last login and plan. Every `/accounts` route answers 503 until the
//!    projection caught up: every partition read to the end offset it had
//!    when the follower started, after the snapshot was loaded
//!    (`mailfleet_runtime::follow`). Medians are reported.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;
use mailfleet_api::{snapshot, wire::AccountView, ApiClient};
use mailfleet_events::{
    accounts::{AccountRegistered, LoginChannel, LoginFailed, LoginRecorded, PlanChanged},
    Envelope,
};
use mailfleet_fleet::config::Config;
use mailfleet_runtime::{
    producer::{EventProducer, RawRecord},
    read,
};

use super::super::{consume::create_topic, median};
use super::PARTITIONS;

/// Event time of the first event (2026-01-01).
const T0: i64 = 1_767_225_600_000;
const HOUR: i64 = 3_600_000;
const CHANNELS: [LoginChannel; 4] = [
    LoginChannel::Imap,
    LoginChannel::Webmail,
    LoginChannel::Activesync,
    LoginChannel::Syncml,
];
const PLANS: [&str; 3] = ["free", "plus", "pro"];
/// How often the start-up is checked, and how long it may take.
const POLL: Duration = Duration::from_millis(10);
const START_WITHIN: Duration = Duration::from_secs(600);

/// One history's API figures.
pub struct ApiFigures {
    /// Median start-up from the snapshot, seconds.
    pub snapshot_s: f64,
    /// Median start-up folding the whole topic, seconds.
    pub fold_s: f64,
    /// Records in the snapshot topic.
    pub snapshot_records: usize,
}

/// What account `i`'s `j`-th event is (0: its registration).
enum Kind {
    Registered,
    Login(LoginChannel),
    Failed(LoginChannel),
    Plan(&'static str),
}

fn kind(i: u64, j: u64) -> Kind {
    let channel = CHANNELS[((i + j) % 4) as usize];
    match (j, (i + j) % 40) {
        (0, _) => Kind::Registered,
        (_, 3) => Kind::Plan(PLANS[(j % 3) as usize]),
        (_, 10 | 30) => Kind::Failed(channel),
        _ => Kind::Login(channel),
    }
}

fn account(i: u64) -> String {
    format!("user{i:07}@bench.test")
}

fn time(i: u64, j: u64) -> i64 {
    T0 + j as i64 * HOUR + i as i64
}

/// Account `i`'s `j`-th event, encoded for `topic`.
fn event(topic: &str, i: u64, j: u64) -> anyhow::Result<RawRecord> {
    let account = account(i);
    let envelope = Envelope::new(format!("bench:{i}:{j}"), time(i, j), "api");
    let ip = Some(format!("192.0.2.{}", i % 250 + 1));
    let payload = match kind(i, j) {
        Kind::Registered => mailfleet_events::encode(&AccountRegistered {
            envelope,
            account: account.clone(),
            password_hash: "{ARGON2}$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$aGFzaA".into(),
            plan: PLANS[0].into(),
            display_name: None,
        })?,
        Kind::Login(channel) => mailfleet_events::encode(&LoginRecorded {
            envelope,
            account: account.clone(),
            channel,
            ip,
        })?,
        Kind::Failed(channel) => mailfleet_events::encode(&LoginFailed {
            envelope,
            account: account.clone(),
            channel,
            ip,
            reason: "bad-password".into(),
        })?,
        Kind::Plan(plan) => mailfleet_events::encode(&PlanChanged {
            envelope,
            account: account.clone(),
            plan: plan.into(),
        })?,
    };
    Ok(RawRecord {
        topic: topic.to_string(),
        key: account.into_bytes(),
        payload,
    })
}

/// What the API must answer for the last account once it folded all.
struct Expect {
    account: String,
    last_login_at: Option<i64>,
    plan: String,
}

impl Expect {
    fn of(i: u64, k: u64) -> Expect {
        let (mut last_login_at, mut plan) = (None, PLANS[0]);
        for j in 0..k {
            match kind(i, j) {
                Kind::Login(_) => last_login_at = Some(time(i, j)),
                Kind::Plan(p) => plan = p,
                Kind::Registered | Kind::Failed(_) => {}
            }
        }
        Expect {
            account: account(i),
            last_login_at,
            plan: plan.to_string(),
        }
    }

    fn check(&self, view: &AccountView, log: &Path) -> anyhow::Result<()> {
        anyhow::ensure!(
            view.last_login_at == self.last_login_at && view.plan == self.plan,
            "the API answered before its projection was complete: {} has last login {:?} and plan {}, \
             the events say {:?} and {}; its log: {}",
            self.account,
            view.last_login_at,
            view.plan,
            self.last_login_at,
            self.plan,
            log.display()
        );
        Ok(())
    }
}

/// Produce the history to `{id}.accounts`, write its snapshot, and time
/// the API's start-up with and without it. The caller deletes the topics.
pub async fn history(
    cfg: &Config,
    accounts: u64,
    k: u64,
    rounds: usize,
    id: &str,
    dir: &Path,
) -> anyhow::Result<ApiFigures> {
    let bench = ApiBench {
        cfg,
        dir: dir.join("api"),
        topic: topic_of(id),
        want: Expect::of(accounts - 1, k),
    };
    std::fs::create_dir_all(&bench.dir)?;
    create_topic(cfg, &bench.topic, PARTITIONS).await?;
    bench.produce(id, accounts, k).await?;
    let (first, mut api) = bench.start(1, "first").await?;
    let snapshot_records = bench.wait_snapshot(&mut api).await?;
    api.stop()?;
    println!("K={k}: first API start (folding, then writing its snapshot of {snapshot_records} records): {first:.2} s");
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for round in 0..rounds.max(1) {
        with.push(bench.timed(1, &format!("snapshot-{round}")).await?);
        without.push(bench.timed(0, &format!("fold-{round}")).await?);
        println!(
            "K={k} round {round}: API start with the snapshot {:.2} s, folding the whole topic {:.2} s",
            with[round], without[round]
        );
    }
    Ok(ApiFigures {
        snapshot_s: median(&mut with),
        fold_s: median(&mut without),
        snapshot_records,
    })
}

/// The API's events topic of one history, and its snapshot topic.
pub fn topics(id: &str) -> [String; 2] {
    let topic = topic_of(id);
    let snapshot = snapshot::topic_for(&topic);
    [topic, snapshot]
}

fn topic_of(id: &str) -> String {
    format!("{id}.accounts")
}

struct ApiBench<'a> {
    cfg: &'a Config,
    dir: PathBuf,
    topic: String,
    want: Expect,
}

impl ApiBench<'_> {
    /// N·K events, event `j` of every account before event `j + 1` of any.
    async fn produce(&self, id: &str, accounts: u64, k: u64) -> anyhow::Result<()> {
        let producer = EventProducer::new(&self.cfg.kafka, id)?;
        let started = Instant::now();
        let mut failed = None;
        let records = (0..k)
            .flat_map(|j| (0..accounts).map(move |i| (i, j)))
            .map_while(|(i, j)| match event(&self.topic, i, j) {
                Ok(r) => Some(r),
                Err(e) => {
                    failed = Some(e);
                    None
                }
            });
        let sent = producer.send_all(records, 10_000, |_| {}).await?;
        if let Some(e) = failed {
            return Err(e.context("encoding an account event"));
        }
        anyhow::ensure!(
            sent == accounts * k,
            "produced {sent} of {} account events",
            accounts * k
        );
        println!(
            "K={k}: produced {sent} account events in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// One start, timed and stopped: seconds, with the log's breakdown shown.
    async fn timed(&self, snapshot_s: u64, label: &str) -> anyhow::Result<f64> {
        let (seconds, mut api) = self.start(snapshot_s, label).await?;
        // The API logs that it caught up within 100 ms of it.
        let caught_up = "account projection caught up";
        let mut text = String::new();
        for _ in 0..20 {
            text = std::fs::read_to_string(&api.log).unwrap_or_default();
            if text.contains(caught_up) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        api.stop()?;
        let field = |line: &str, name: &str| {
            text.lines()
                .find(|l| l.contains(line))
                .and_then(|l| l.split(name).nth(1))
                .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
                .unwrap_or("?")
                .to_string()
        };
        println!(
            "  {label}: {seconds:.3} s to the answer; the API's log: snapshot read in {} ms, \
             caught up {} ms after its follower started",
            field("account snapshot loaded", " ms="),
            field(caught_up, "after_ms=")
        );
        Ok(seconds)
    }

    /// Spawn `mailfleet api` with `api.snapshot_interval_s = snapshot_s`
    /// and wait until it answers the last account as the events say:
    /// the seconds since the spawn, and the running API.
    async fn start(&self, snapshot_s: u64, label: &str) -> anyhow::Result<(f64, ApiProcess)> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let config = self.config(port, snapshot_s, label)?;
        let log = self.dir.join(format!("{label}.log"));
        let client = ApiClient::new(&format!("http://127.0.0.1:{port}"), None)?;
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("--config").arg(&config).arg("api");
        // The generated file is the whole config: no overrides from ours.
        for (key, _) in std::env::vars() {
            if key.starts_with("MAILFLEET_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("MAILFLEET_LOG", "info");
        let started = Instant::now();
        let mut api = ApiProcess::spawn(cmd, log)?;
        loop {
            if let Ok(view) = client.show(&self.want.account).await {
                let seconds = started.elapsed().as_secs_f64();
                self.want.check(&view, &api.log)?;
                return Ok((seconds, api));
            }
            api.running()?;
            anyhow::ensure!(
                started.elapsed() < START_WITHIN,
                "the API did not answer within {START_WITHIN:?}; its log: {}",
                api.log.display()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// This config's Kafka, the bench's topic, a loopback port, no metrics.
    fn config(&self, port: u16, snapshot_s: u64, label: &str) -> anyhow::Result<PathBuf> {
        let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let kafka = &self.cfg.kafka;
        let files: String = kafka
            .property_files
            .iter()
            .map(|(k, v)| format!("{} = {}\n", q(k), q(&v.display().to_string())))
            .collect();
        let path = self.dir.join(format!("{label}.toml"));
        std::fs::write(
            &path,
            format!(
                "[kafka]\nbrokers = {brokers}\nreplication_factor = {rf}\n\n\
                 [kafka.properties]\n{props}\n[kafka.property_files]\n{files}\n\
                 [runtime]\ndata_dir = {data}\n\n[metrics]\nlisten = \"\"\n\n\
                 [api]\nlisten = \"127.0.0.1:{port}\"\nevents_topic = {topic}\nsnapshot_interval_s = {snapshot_s}\n",
                brokers = q(&kafka.brokers),
                rf = kafka.replication_factor,
                props = kafka.properties,
                data = q(&self.dir.join("state").display().to_string()),
                topic = q(&self.topic),
            ),
        )?;
        Ok(path)
    }

    /// Wait until the snapshot's offsets record of every partition is the
    /// topic's end; the records the snapshot topic holds then.
    async fn wait_snapshot(&self, api: &mut ApiProcess) -> anyhow::Result<usize> {
        let kafka = &self.cfg.kafka;
        let ends: BTreeMap<i32, i64> = read::end_offsets(kafka, std::slice::from_ref(&self.topic))?
            .into_iter()
            .filter(|(_, end)| *end > 0)
            .map(|((_, p), end)| (p, end))
            .collect();
        let topic = snapshot::topic_for(&self.topic);
        let started = Instant::now();
        loop {
            let last = read::read_last(kafka, &topic, "bench-restore-api", 1).unwrap_or_default();
            let written = |p: &i32, end: &i64| {
                last.iter().any(|r| {
                    r.partition == *p
                        && r.key.as_deref() == Some(snapshot::OFFSETS_KEY)
                        && r.payload == end.to_le_bytes()
                })
            };
            if ends.iter().all(|(p, end)| written(p, end)) {
                return Ok(read::read_to_end(kafka, &topic, "bench-restore-api")?.len());
            }
            api.running()?;
            anyhow::ensure!(
                started.elapsed() < START_WITHIN,
                "no complete snapshot in {topic} within {START_WITHIN:?}; the API's log: {}",
                api.log.display()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// A `mailfleet api` child, killed when dropped: a failed bench leaves
/// none running.
struct ApiProcess {
    child: Child,
    log: PathBuf,
}

impl ApiProcess {
    fn spawn(mut cmd: Command, log: PathBuf) -> anyhow::Result<ApiProcess> {
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting mailfleet api")?;
        Ok(ApiProcess { child, log })
    }

    /// An error if the API exited.
    fn running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => anyhow::bail!(
                "mailfleet api exited ({status}); its log: {}",
                self.log.display()
            ),
        }
    }

    /// SIGTERM, and wait (SIGKILL after 30 s).
    fn stop(&mut self) -> anyhow::Result<()> {
        if !crate::process::terminate(&mut self.child, Duration::from_secs(30))? {
            anyhow::bail!(
                "mailfleet api did not stop within 30 s (killed); its log: {}",
                self.log.display()
            );
        }
        Ok(())
    }
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
