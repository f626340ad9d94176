//! G3: four hosts on one machine, and a host lost under load. `ops/hosts`
//! makes four network namespaces on a bridge (tests/src/hosts.rs); a
//! private three-node Kafka runs on hosts 1-3 (RF 3, min.insync 2), a
//! private S3 server (SeaweedFS) on host 4. Hosts 1 and 2 are the MX hosts
//! (`mailfleet policy` and `mailfleet lmtp`, bound to their addresses);
//! every host runs a member of each consumer group (`run greylist` and
//! `run scanner storage index lifecycle`), so each group survives one host.
//! clamd runs on host 4 too (a private `ops/clamav`, bound to its address):
//! every host's scanner asks it over the bridge.
//!
//! Load, from the root namespace: policy requests to both MX hosts (a
//! persistent connection each, reconnecting); mail through a private
//! Postfix, which delivers by LMTP to the two MX hosts (two nexthops: the
//! second when the first cannot be reached; a 4xx retried from its queue);
//! account events (registrations, logins, and clock ticks at the end). The
//! faults, in turn:
//! 1. host 3 (a Kafka node and a member of every group) cut off the
//!    network for 60 s, then healed;
//! 2. `kill -9` of every mailfleet process of host 2 (an MX host; its
//!    Kafka node stays up), left dead until
//!    the other members applied its partitions, then started again with
//!    empty state folders (restored by replay);
//! 3. the S3 server stopped for 30 s.
//!
//! Afterwards: Postfix's queue is empty, every message Postfix answered 250
//! is in the Maildir exactly once (but for one whose LMTP reply Postfix's
//! log shows lost after the data: that one it sends again),
//! no policy answer came later than the timeout (plus a margin), `mailfleet
//! audit decisions` finds 0 diffs for the greylist and the lifecycle, and
//! every partition's state of every consumer equals a single-process
//! replay of the log.

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use mailfleet_events::{
    accounts::{AccountRegistered, LoginChannel, LoginRecorded},
    clock::ClockTicked,
    Envelope,
};
use mailfleet_policy::client::PolicyClient;
use mailfleet_runtime::{config::KafkaConfig, producer::EventProducer, read::end_offsets};
use mailfleet_tests::{
    blobs::{use_s3, S3Server},
    faults::*,
    hosts::{self, Hosts},
    ingest::{clamd_address, simple_message, LmtpClient},
    outage::{report, Offsets, Private},
    *,
};

/// The policy server's wait for a decision, then `fail_mode` (DUNNO).
const POLICY_TIMEOUT_MS: u64 = 1000;
/// Scheduling slack on top of the timeout on a busy 2-core machine.
const MARGIN_MS: u64 = 1000;
/// The LMTP server's wait for Kafka's ack before `451`.
const ACK_TIMEOUT_MS: u64 = 3000;
const HOSTS: u8 = 4;
/// The MX hosts: policy and LMTP servers.
const MX: [u8; 2] = [1, 2];
const CUT: Duration = Duration::from_secs(60);
const S3_DOWN: Duration = Duration::from_secs(30);
/// How long a group may take to apply its inputs to their ends.
const LAG_LIMIT: Duration = Duration::from_secs(180);
/// 2026-11-30T00:00:00Z.
const T0: i64 = 1_795_996_800_000;
const DAY: i64 = 86_400_000;

/// The world, its configs and every state folder a member ever had.
struct Layout {
    world: FaultWorld,
    kafka: KafkaConfig,
    grey_cfg: PathBuf,
    mail_cfg: PathBuf,
    policy_port: u16,
    lmtp_port: u16,
    states: Vec<PathBuf>,
}

impl Layout {
    async fn new(kafka: KafkaConfig, s3: &S3Server, clamd: &str) -> anyhow::Result<Layout> {
        let world = FaultWorld::new("hosts-loss", kafka.clone()).await?;
        let policy_port = free_port();
        // The load comes from the root namespace: the bridge's address.
        let allow = format!("allow = [\"{}.0/24\"]\n", hosts::PREFIX);
        let policy = format!(
            "listen = \"127.0.0.1:{policy_port}\"\nhost = \"mx-hosts\"\n{allow}\
             timeout_ms = {POLICY_TIMEOUT_MS}\nfail_mode = \"dunno\"\n"
        );
        let grey_cfg = world.grey_config("grey.toml", free_port(), &policy)?;
        let mail_cfg = world.mail_config("mail.toml", free_port())?;
        use_s3(&mail_cfg)?;
        let text = std::fs::read_to_string(&mail_cfg)?
            .replacen("[lmtp]\n", &format!("[lmtp]\n{allow}"), 1)
            .replacen("use_clamd = false", "use_clamd = true", 1)
            .replacen(
                &format!("address = {:?}", clamd_address()),
                &format!("address = {clamd:?}"),
                1,
            )
            + &s3.table(&world.mail.name);
        anyhow::ensure!(
            text.contains(&format!("address = {clamd:?}")),
            "the scanner's clamd address not set in {}",
            mail_cfg.display()
        );
        std::fs::write(&mail_cfg, text)?;
        Ok(Layout {
            lmtp_port: world.mail.lmtp_port,
            world,
            kafka,
            grey_cfg,
            mail_cfg,
            policy_port,
            states: Vec::new(),
        })
    }

    /// Start host `k`'s processes, with state folders of their own
    /// (`generation` 0 at first; a host brought back gets a new one: empty).
    fn start_host(&mut self, hosts: &mut Hosts, k: u8, generation: u32) -> anyhow::Result<()> {
        let dir = self.world.mail.dir.clone();
        let state = dir.join(format!("state-h{k}-{generation}"));
        self.states.push(state.clone());
        let addr = Hosts::addr(k);
        let env = |extra: &[(&'static str, String)]| {
            let mut env = vec![
                ("MAILFLEET_RUNTIME__DATA_DIR", state.display().to_string()),
                (
                    "MAILFLEET_METRICS__LISTEN",
                    format!("{addr}:{}", free_port()),
                ),
                ("MAILFLEET_KAFKA__REPLICATION_FACTOR", "3".to_string()),
            ];
            env.extend_from_slice(extra);
            env
        };
        let log = dir.join(format!("h{k}.log"));
        let mail = ["run", "scanner", "storage", "index", "lifecycle"];
        hosts.spawn(
            k,
            &format!("h{k} greylist"),
            &self.grey_cfg,
            &["run", "greylist"],
            &env(&[]),
            &log,
        )?;
        hosts.spawn(
            k,
            &format!("h{k} mail"),
            &self.mail_cfg,
            &mail,
            &env(&[]),
            &log,
        )?;
        if MX.contains(&k) {
            let listen = |port: u16| format!("{addr}:{port}");
            let policy = env(&[
                ("MAILFLEET_POLICY__LISTEN", listen(self.policy_port)),
                ("MAILFLEET_POLICY__HOST", format!("mx-h{k}")),
            ]);
            hosts.spawn(
                k,
                &format!("h{k} policy"),
                &self.grey_cfg,
                &["policy"],
                &policy,
                &log,
            )?;
            let lmtp = env(&[
                ("MAILFLEET_LMTP__LISTEN", listen(self.lmtp_port)),
                ("MAILFLEET_LMTP__ACK_TIMEOUT_MS", ACK_TIMEOUT_MS.to_string()),
            ]);
            hosts.spawn(
                k,
                &format!("h{k} lmtp"),
                &self.mail_cfg,
                &["lmtp"],
                &lmtp,
                &log,
            )?;
        }
        Ok(())
    }

    /// Wait until both servers of MX host `k` accept connections.
    async fn wait_mx(&self, k: u8) -> anyhow::Result<()> {
        let ports = [self.lmtp_port, self.policy_port];
        wait_until(
            &format!("the LMTP and policy servers of host {k}"),
            Duration::from_secs(90),
            || {
                ports
                    .iter()
                    .all(|p| std::net::TcpStream::connect((Hosts::addr(k), *p)).is_ok())
            },
        )
        .await
    }

    /// Every member's store of `consumer` (dead members' too).
    fn stores(&self, consumer: &str) -> Vec<PathBuf> {
        self.states.iter().map(|s| s.join(consumer)).collect()
    }

    fn config(&self, consumer: &str) -> &PathBuf {
        if consumer == "greylist" {
            &self.grey_cfg
        } else {
            &self.mail_cfg
        }
    }

    /// Wait until every group has applied its inputs up to their ends as
    /// they are now (lag zero); how long that took since `since`.
    async fn lag_zero(&self, since: Instant) -> anyhow::Result<Duration> {
        let mut groups: Vec<(Vec<PathBuf>, Offsets)> = Vec::new();
        for consumer in CONSUMERS {
            let ends = ends_now(&self.kafka, &self.world.inputs(consumer)?).await?;
            groups.push((self.stores(consumer), ends));
        }
        wait_until("every group's lag to be zero", LAG_LIMIT, || {
            groups
                .iter()
                .all(|(stores, ends)| fleet_caught_up(stores, ends))
        })
        .await?;
        Ok(since.elapsed())
    }

    /// [`Layout::lag_zero`] until a round ends with the ends where they
    /// were (the storage writer and the lifecycle write to their inputs).
    async fn settle(&self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut topics: Vec<String> = Vec::new();
        for consumer in CONSUMERS {
            topics.extend(self.world.inputs(consumer)?);
        }
        for _ in 0..10 {
            let before = ends_now(&self.kafka, &topics).await?;
            self.lag_zero(started).await?;
            if ends_now(&self.kafka, &topics).await? == before {
                return Ok(started.elapsed());
            }
        }
        anyhow::bail!("the pipeline never became idle")
    }
}

/// The end offsets of `topics`, retried while the cluster elects leaders.
async fn ends_now(kafka: &KafkaConfig, topics: &[String]) -> anyhow::Result<Offsets> {
    let mut tries = 0;
    loop {
        match end_offsets(kafka, topics) {
            Ok(ends) => return Ok(ends),
            Err(e) if tries < 10 => {
                eprintln!("hosts-loss: end offsets: {e}; retrying");
                tries += 1;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// One policy answer from MX host `mx`.
struct Answer {
    action: String,
    latency: Duration,
}

impl Answer {
    /// A greylist decision (every triplet is new: a deferral).
    fn decided(&self) -> bool {
        self.action.contains("Greylisted")
    }
}

async fn ask(client: &mut PolicyClient, mx: u8, n: u32) -> anyhow::Result<Answer> {
    let (sender, ip) = (
        format!("s{n}-h{mx}@sender.test"),
        format!("10.{}.{}.{}", 100 + mx, n / 250 % 250, n % 250 + 1),
    );
    let attrs = [
        ("protocol_state", "RCPT"),
        ("client_address", ip.as_str()),
        ("client_name", "mx.sender.test"),
        ("helo_name", "mx.sender.test"),
        ("sender", sender.as_str()),
        ("recipient", "rcpt@hosts.test"),
        ("instance", sender.as_str()),
    ];
    let asked = Instant::now();
    let action = client.ask(&attrs, Duration::from_secs(30)).await?;
    Ok(Answer {
        action,
        latency: asked.elapsed(),
    })
}

/// Policy traffic and its outcome.
#[derive(Default)]
struct PolicyLoad {
    answers: Mutex<Vec<Answer>>,
    /// Connections refused or broken (the MX host was down).
    unreachable: AtomicU64,
}

/// Ask MX host `mx`, one request after the other, until `stop`;
/// reconnect after a refused or broken connection.
async fn policy_traffic(mx: u8, port: u16, stop: Arc<AtomicBool>, load: Arc<PolicyLoad>) {
    let addr = format!("{}:{port}", Hosts::addr(mx));
    let mut client: Option<PolicyClient> = None;
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        if client.is_none() {
            client = PolicyClient::connect(&addr).await.ok();
            if client.is_none() {
                load.unreachable.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            continue;
        }
        let Some(c) = client.as_mut() else {
            continue;
        };
        match ask(c, mx, n).await {
            Ok(a) => load
                .answers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(a),
            Err(_) => {
                load.unreachable.fetch_add(1, Ordering::SeqCst);
                client = None;
            }
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The mail load's Postfix (`ops/postfix`, private, in the root namespace):
/// hosts.test goes by LMTP to both MX hosts, a list of two nexthops
/// (Postfix 3.5+: the second is tried when the first cannot be reached; a
/// 4xx is retried from its deferred queue, every 5-30 s). The load connects
/// from 127.0.0.1, in this instance's mynetworks: no policy check (the
/// policy load asks the MX hosts' policy servers directly).
fn mail_postfix(lmtp_port: u16) -> Private {
    let [a, b] = MX.map(Hosts::addr);
    Private::postfix("hosts-loss")
        .with_env(
            "MAILFLEET_POSTFIX_TRANSPORT",
            // `inet:` once, before the list (lmtp(8) strips it from the
            // whole nexthop; a second one is "no valid hostname").
            format!("lmtp:inet:[{a}]:{lmtp_port}, [{b}]:{lmtp_port}"),
        )
        .with_env("MAILFLEET_POSTFIX_DOMAINS", "hosts.test".into())
        .with_env("MAILFLEET_POSTFIX_MAPPED_DOMAINS", String::new())
        .with_env("MAILFLEET_POSTFIX_MYNETWORKS", "127.0.0.0/8".into())
        .with_env("MAILFLEET_POLICY_PORT", free_port().to_string())
        .with_env("MAILFLEET_SUBMISSION_MILTER", "0".into())
}

/// `postqueue -c <conf> args` of the private Postfix; its output.
fn postqueue(postfix: &Private, args: &[&str]) -> anyhow::Result<String> {
    let conf = postfix.run_dir.join("postfix/etc");
    stdout_of(
        std::process::Command::new("postqueue")
            .arg("-c")
            .arg(conf)
            .args(args),
    )
}

/// One message given to Postfix, and its answer.
struct Delivery {
    subject: String,
    reply: String,
}

impl Delivery {
    fn accepted(&self) -> bool {
        self.reply.starts_with("250")
    }

    /// As `ingest::simple_message` writes it.
    fn message_id(&self) -> String {
        format!("<{}@example.net>", self.subject)
    }

    /// Postfix's queue id, from "250 2.0.0 Ok: queued as ID".
    fn queue_id(&self) -> Option<&str> {
        self.reply
            .rsplit("queued as ")
            .next()
            .filter(|_| self.accepted())
    }

    /// One SMTP transaction with Postfix on `port`.
    fn send(&mut self, port: u16, to: &str) -> anyhow::Result<()> {
        let (mut c, _) = LmtpClient::connect(port)?;
        anyhow::ensure!(c.command("EHLO load.test")?.starts_with("250"));
        let message = simple_message(&self.subject, "load");
        let replies = c.deliver("alice@example.net", &[to], &message)?;
        self.reply = replies.join("\n");
        let _ = c.command("QUIT");
        Ok(())
    }
}

/// Give Postfix one message after the other until `stop`; a message it
/// does not take (it should take all: no policy check) is tried again.
fn mail_traffic(port: u16, run: &str, stop: &AtomicBool) -> Vec<Delivery> {
    let mut out = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let n = out.len();
        let mut d = Delivery {
            subject: format!("h{n}-{run}"),
            reply: String::new(),
        };
        let to = format!("box{}@hosts.test", n % 6);
        for _ in 0..20 {
            if let Err(e) = d.send(port, &to) {
                d.reply = format!("error: {e}");
            }
            if d.accepted() {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        out.push(d);
        std::thread::sleep(Duration::from_millis(100));
    }
    out
}

/// What Postfix's log says about the LMTP side: deferrals, and the queue
/// ids whose connection broke after the message was sent (Postfix cannot
/// know whether it was taken, and sends it again: LMTP's known duplicate
/// window, as with any SMTP/LMTP client).
struct PostfixLog {
    /// 4xx answers from an MX host ("host ... said: 4..").
    answered_4xx: usize,
    /// Deliveries deferred to the queue (no host took them this time).
    deferred: usize,
    reply_lost: std::collections::HashSet<String>,
}

/// Also keeps a copy of the log at `keep` (the instance's folder goes
/// with its guard).
fn postfix_log(postfix: &Private, keep: &std::path::Path) -> anyhow::Result<PostfixLog> {
    let log = std::fs::read_to_string(postfix.run_dir.join("postfix/maillog"))?;
    std::fs::write(keep, &log)?;
    let mut out = PostfixLog {
        answered_4xx: 0,
        deferred: 0,
        reply_lost: Default::default(),
    };
    for line in log.lines().filter(|l| l.contains("postfix/lmtp[")) {
        out.answered_4xx += usize::from(line.contains(" said: 4"));
        out.deferred += usize::from(line.contains("status=deferred"));
        anyhow::ensure!(
            !line.contains("fatal:"),
            "Postfix's LMTP client failed: {line}"
        );
        let after_data = ["while receiving the final response", "after end of data"];
        if after_data.iter().any(|w| line.contains(w)) {
            // "postfix/lmtp[PID]: QUEUEID: ..."
            if let Some(id) = line.split("]: ").nth(1).and_then(|r| r.split(':').next()) {
                out.reply_lost.insert(id.to_string());
            }
        }
    }
    Ok(out)
}

/// Account events until `stop` (registrations, logins of earlier
/// accounts), then a clock tick per partition past the inactivity
/// threshold, so that the lifecycle decides transitions; how many.
async fn account_events(
    kafka: KafkaConfig,
    topic: String,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<u64> {
    let p = EventProducer::new(&kafka, "hosts-loss-load")?;
    let mut i: i64 = 0;
    while !stop.load(Ordering::SeqCst) {
        let at = T0 + i * 1000;
        let account = format!("u{i}@hosts.test");
        let reg = AccountRegistered {
            envelope: Envelope::new(format!("reg-{i}"), at, "test"),
            account: account.clone(),
            password_hash: "{ARGON2}$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$aGFzaA".into(),
            plan: "free".into(),
            display_name: None,
        };
        p.send(&topic, account.as_bytes(), &reg).await?;
        if i % 3 == 2 {
            let earlier = format!("u{}@hosts.test", i / 2);
            let login = LoginRecorded {
                envelope: Envelope::new(format!("login-{i}"), at, "test"),
                account: earlier.clone(),
                channel: LoginChannel::Imap,
                ip: None,
            };
            p.send(&topic, earlier.as_bytes(), &login).await?;
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for partition in 0..3 {
        let tick = ClockTicked {
            envelope: Envelope::new(format!("clock:{topic}:{partition}"), T0 + 100 * DAY, "test"),
            clock: "daily".into(),
            period_ms: DAY,
        };
        p.send_to_partition(&topic, partition, &mailfleet_events::encode(&tick)?)
            .await?;
    }
    Ok(i as u64 + 3)
}

/// Sets the flag the load tasks stop on when dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// How long each group took to apply its inputs to their ends after each
/// fault, and how many processes host 2 had.
struct Lags {
    after_cut: Duration,
    without_h2: Duration,
    after_h2_back: Duration,
    after_s3: Duration,
    killed: usize,
}

/// The three faults, in turn, with the load flowing.
async fn faults(hosts: &mut Hosts, layout: &mut Layout, s3: &Private) -> anyhow::Result<Lags> {
    // 1. A Kafka host (and a member of every group) off the network.
    hosts.cut(3)?;
    tokio::time::sleep(CUT).await;
    hosts.heal(3)?;
    let after_cut = layout.lag_zero(Instant::now()).await?;

    // 2. An MX host lost: every process killed; the others take its
    // partitions (lag zero without it), then it comes back empty.
    let killed = hosts.kill_host(2)?;
    let without_h2 = layout.lag_zero(Instant::now()).await?;
    layout.start_host(hosts, 2, 1)?;
    layout.wait_mx(2).await?;
    let after_h2_back = layout.lag_zero(Instant::now()).await?;

    // 3. The object store down.
    s3.stop()?;
    tokio::time::sleep(S3_DOWN).await;
    Hosts::start_in(4, s3)?;
    let after_s3 = layout.lag_zero(Instant::now()).await?;
    Ok(Lags {
        after_cut,
        without_h2,
        after_h2_back,
        after_s3,
        killed,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn losing_a_host_under_load_loses_no_mail_and_every_state_matches_a_replay(
) -> anyhow::Result<()> {
    let started = Instant::now();
    // Declared first: dropped last, after the servers' own guards.
    let mut hosts = Hosts::up(HOSTS)?;
    let cluster = hosts.start_kafka("hosts-loss")?;
    let (s3_server, s3) = hosts.start_s3(4, "hosts-loss")?;
    let kafka = KafkaConfig {
        replication_factor: 3,
        ..cluster.kafka_config()
    };
    // clamd in host 4 too: the scanners of every host ask it over the bridge.
    let clamd = Private::clamd("hosts-loss").with_env("MAILFLEET_CLAMAV_HOST", Hosts::addr(4));
    Hosts::start_in(4, &clamd)?;
    let clamd_addr = format!("{}:{}", Hosts::addr(4), clamd.port);
    let mut layout = Layout::new(kafka.clone(), &s3, &clamd_addr).await?;
    for k in 1..=HOSTS {
        layout.start_host(&mut hosts, k, 0)?;
    }
    for k in MX {
        layout.wait_mx(k).await?;
    }
    let postfix = mail_postfix(layout.lmtp_port);
    postfix.start()?;
    let ready = started.elapsed();
    // Warm: a decided answer (not the fail mode) from both MX hosts.
    for k in MX {
        let mut client =
            PolicyClient::connect(&format!("{}:{}", Hosts::addr(k), layout.policy_port)).await?;
        let mut n = 0;
        while !ask(&mut client, k, 1_000_000 + n).await?.decided() {
            n += 1;
            anyhow::ensure!(n < 120, "no greylist decision from host {k}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    // The load stops however the test ends (the runtime waits for the
    // LMTP thread before the test can return).
    let _stop_load = StopOnDrop(stop.clone());
    let policy = Arc::new(PolicyLoad::default());
    let policy_tasks: Vec<_> = MX
        .iter()
        .map(|k| {
            tokio::spawn(policy_traffic(
                *k,
                layout.policy_port,
                stop.clone(),
                policy.clone(),
            ))
        })
        .collect();
    let (port, run, stop_mail) = (postfix.port, layout.world.mail.name.clone(), stop.clone());
    let mails = tokio::task::spawn_blocking(move || mail_traffic(port, &run, &stop_mail));
    let accounts = tokio::spawn(account_events(
        kafka.clone(),
        layout.world.mail.accounts.clone(),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(10)).await;

    let lags = faults(&mut hosts, &mut layout, &s3_server).await?;

    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::SeqCst);
    for t in policy_tasks {
        t.await?;
    }
    let deliveries = mails.await?;
    let account_events = accounts.await??;
    let load_done = started.elapsed();

    // Postfix delivers what it deferred (flushed now, not at its next
    // retry), then its queue is empty.
    let _ = postqueue(&postfix, &["-f"]);
    let queue_empty = wait_until(
        "Postfix's queue to be empty",
        Duration::from_secs(180),
        || postqueue(&postfix, &["-p"]).is_ok_and(|q| q.contains("Mail queue is empty")),
    )
    .await;
    let root = layout.world.mail_root.clone();
    let wanted: Vec<String> = deliveries
        .iter()
        .filter(|d| d.accepted())
        .map(Delivery::message_id)
        .collect();
    let stored_wait = wait_until(
        "every accepted message in the Maildir",
        Duration::from_secs(120),
        || message_ids_on_disk(&root).is_ok_and(|on| wanted.iter().all(|id| on.contains_key(id))),
    )
    .await;
    let settled = layout.settle().await?;
    hosts.check_alive()?;

    // The figures.
    let on_disk = message_ids_on_disk(&layout.world.mail_root)?;
    let postfix_log = postfix_log(&postfix, &layout.world.mail.dir.join("maillog"))?;
    let ambiguous: Vec<String> = deliveries
        .iter()
        .filter(|d| {
            d.queue_id()
                .is_some_and(|q| postfix_log.reply_lost.contains(q))
        })
        .map(Delivery::message_id)
        .collect();
    let not_taken: Vec<&str> = deliveries
        .iter()
        .filter(|d| !d.accepted())
        .map(|d| d.reply.as_str())
        .collect();
    let twice: Vec<_> = on_disk
        .iter()
        .filter(|(id, n)| **n > 1 && !ambiguous.contains(*id))
        .collect();
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|id| !on_disk.contains_key(*id))
        .collect();
    let answers = std::mem::take(&mut *policy.answers.lock().unwrap_or_else(|p| p.into_inner()));
    let decided = answers.iter().filter(|a| a.decided()).count();
    let fail_mode = answers.iter().filter(|a| a.action == "DUNNO").count();
    let other: Vec<&str> = answers
        .iter()
        .filter(|a| !a.decided() && a.action != "DUNNO")
        .map(|a| a.action.as_str())
        .collect();
    let slow = answers
        .iter()
        .filter(|a| a.latency > Duration::from_millis(POLICY_TIMEOUT_MS + MARGIN_MS))
        .count();
    let max_latency = answers.iter().map(|a| a.latency).max().unwrap_or_default();

    // The fleet is idle and still running (its stores open, read here
    // read-only): every state against a single-process replay.
    let mut comparisons = Vec::new();
    for consumer in CONSUMERS {
        let inputs = layout.world.inputs(consumer)?;
        let c = compare_fleet_with_clean_run(
            layout.config(consumer),
            consumer,
            (&kafka, &inputs, &layout.stores(consumer)),
            &layout.world.mail.dir.join(format!("clean-{consumer}")),
        )?;
        comparisons.push((consumer, c));
    }
    // Stopped only now: each member stopping hands its partitions to the
    // others, and a member given a partition it has no state for replays it
    // from the start (runner/context.rs), sending its outputs again (dropped
    // downstream as duplicates): the ends would move after the comparison
    // had been made against them.
    hosts.check_alive()?;
    hosts.terminate_all()?;
    let mut figures = vec![
        ("mails", deliveries.len().to_string()),
        ("postfix_refused", not_taken.len().to_string()),
        ("lmtp_4xx", postfix_log.answered_4xx.to_string()),
        (
            "postfix_deferred_then_sent",
            postfix_log.deferred.to_string(),
        ),
        ("accepted_lost", missing.len().to_string()),
        ("stored_twice", twice.len().to_string()),
        ("reply_lost_resent", ambiguous.len().to_string()),
        ("policy_answers", answers.len().to_string()),
        ("policy_decided", decided.to_string()),
        ("policy_fail_mode", fail_mode.to_string()),
        ("policy_over_timeout", slow.to_string()),
        ("policy_max_latency", format!("{max_latency:.0?}")),
        (
            "policy_unreachable",
            policy.unreachable.load(Ordering::SeqCst).to_string(),
        ),
        ("account_events", account_events.to_string()),
        ("h2_processes_killed", lags.killed.to_string()),
        ("lag_zero_after_cut", format!("{:.1?}", lags.after_cut)),
        ("lag_zero_without_h2", format!("{:.1?}", lags.without_h2)),
        (
            "lag_zero_after_h2_back",
            format!("{:.1?}", lags.after_h2_back),
        ),
        ("lag_zero_after_s3", format!("{:.1?}", lags.after_s3)),
        ("settled_after_load", format!("{settled:.1?}")),
        ("ready", format!("{ready:.0?}")),
        ("load_done", format!("{load_done:.0?}")),
        ("total", format!("{:.0?}", started.elapsed())),
    ];
    for (consumer, c) in &comparisons {
        figures.push((
            *consumer,
            format!(
                "state_diffs={}/{} audited={} audit_diffs={}",
                c.state_diffs, c.partitions, c.audited, c.audit_diffs
            ),
        ));
    }
    report("hosts-loss", &figures);

    queue_empty?;
    stored_wait?;
    assert!(not_taken.is_empty(), "Postfix did not take: {not_taken:?}");
    assert!(
        postfix_log.answered_4xx > 0,
        "no MX host answered 4xx: the Kafka and S3 faults never reached LMTP"
    );
    assert!(
        missing.is_empty(),
        "answered 250 but not stored: {missing:?}"
    );
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    assert!(
        other.is_empty(),
        "answers neither decided nor the fail mode: {other:?}"
    );
    assert_eq!(
        slow, 0,
        "policy answers later than the timeout + {MARGIN_MS} ms"
    );
    assert!(decided > 0 && !deliveries.is_empty(), "load flowed");
    for (consumer, c) in &comparisons {
        assert_eq!(
            c.state_diffs, 0,
            "{consumer}: a partition's state differs from a replay"
        );
        if ["greylist", "lifecycle"].contains(consumer) {
            assert!(c.partitions > 0, "{consumer}: no state compared");
            assert!(c.audited > 0, "{consumer}: nothing audited");
            assert_eq!(c.audit_diffs, 0, "{consumer}: outputs differ from a replay");
        }
    }
    Ok(())
}
