//! F9: the broker restarted under load. Postfix-like LMTP traffic (a
//! client that records which messages got `250`, and retries the others
//! as Postfix does) and policy traffic (one persistent connection, every
//! answer and its latency recorded) flow through `mailfleet lmtp` and
//! `mailfleet policy` while the broker is killed (SIGKILL) and started
//! again. The broker is a private one (`ops/kafka` with its own folder and
//! ports): the shared broker is never touched.
//!
//! Afterwards every message that got `250` is in the Maildir exactly once,
//! and every policy answer was either a greylist decision or the fail-mode
//! answer, within `policy.timeout_ms` (plus a scheduling margin).

use std::{
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use mailfleet_policy::client::PolicyClient;
use mailfleet_tests::{faults::*, fleet::deliver, outage::Private, *};

/// The policy server's wait for a decision, then `fail_mode` (DUNNO).
const POLICY_TIMEOUT_MS: u64 = 1000;
/// Scheduling slack on top of the timeout on a busy 2-core machine.
const MARGIN_MS: u64 = 700;
/// The LMTP server's wait for Kafka's ack before `451`.
const ACK_TIMEOUT_MS: u64 = 3000;
/// Traffic before the kill.
const BEFORE: Duration = Duration::from_secs(6);
/// Traffic after the policy server decides again (then it stops).
const AFTER: Duration = Duration::from_secs(5);
/// How long the policy server may take to decide again once the broker
/// is back (the consumer group and the clients reconnect).
const RECOVERY: Duration = Duration::from_secs(90);

/// SIGKILL the private broker's JVM (its pid from its own run folder).
fn crash(broker: &Private) -> anyhow::Result<()> {
    let pid = std::fs::read_to_string(broker.run_dir.join("kafka/kafka.pid"))?;
    let status = Command::new("kill").args(["-KILL", pid.trim()]).status()?;
    anyhow::ensure!(status.success(), "kill -KILL {pid}: {status}");
    let gone = |pid: &str| !std::path::Path::new(&format!("/proc/{pid}")).exists();
    while !gone(pid.trim()) {
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// One policy answer.
struct Answer {
    action: String,
    latency: Duration,
    /// When it came.
    at: Instant,
}

impl Answer {
    /// A greylist decision (every triplet is new: a deferral), not the
    /// fail mode.
    fn decided(&self) -> bool {
        self.action.contains("Greylisted")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_restart_under_load_loses_no_accepted_mail_and_policy_stays_in_fail_mode(
) -> anyhow::Result<()> {
    let started = Instant::now();
    let broker = Private::kafka("faults-broker");
    broker.start()?;
    let world = FaultWorld::new("faults-broker", broker.kafka_config()).await?;
    let policy_port = free_port();
    let policy = format!(
        "listen = \"127.0.0.1:{policy_port}\"\nhost = \"mx-faults\"\n\
         timeout_ms = {POLICY_TIMEOUT_MS}\nfail_mode = \"dunno\"\n"
    );
    let grey_cfg = world.grey_config("grey.toml", free_port(), &policy)?;
    let policy_cfg = world.grey_config("policy.toml", free_port(), &policy)?;
    let mail_cfg = world.mail_config("mail.toml", free_port())?;
    let lmtp_cfg = world.mail_config("lmtp.toml", free_port())?;
    let lmtp_cfg_text = std::fs::read_to_string(&lmtp_cfg)?.replace(
        "[lmtp]\n",
        &format!("[lmtp]\nack_timeout_ms = {ACK_TIMEOUT_MS}\n"),
    );
    std::fs::write(&lmtp_cfg, lmtp_cfg_text)?;
    let log = world.mail.dir.join("children.log");
    let mut children = Children(vec![
        spawn_mailfleet(&grey_cfg, &["run", "greylist"], &log)?,
        spawn_mailfleet(&policy_cfg, &["policy"], &log)?,
        spawn_mailfleet(&mail_cfg, &["run", "scanner", "storage", "index"], &log)?,
        spawn_mailfleet(&lmtp_cfg, &["lmtp"], &log)?,
    ]);
    let lmtp_port = world.mail.lmtp_port;
    wait_until(
        "the LMTP and policy servers",
        Duration::from_secs(60),
        || {
            [lmtp_port, policy_port]
                .iter()
                .all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok())
        },
    )
    .await?;
    // Warm: a decided answer (not the fail mode) comes back.
    let addr = format!("127.0.0.1:{policy_port}");
    let mut client = PolicyClient::connect(&addr).await?;
    let mut warm = 0;
    while !ask(&mut client, "warm", warm).await?.decided() {
        warm += 1;
        anyhow::ensure!(warm < 60, "no greylist decision before the restart");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Traffic until told to stop.
    let stop = Arc::new(Mutex::new(false));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let policy = tokio::spawn(policy_traffic(client, stop.clone(), answers.clone()));
    let (run, stop_mail) = (world.mail.name.clone(), stop.clone());
    let mails = tokio::task::spawn_blocking(move || lmtp_traffic(lmtp_port, &run, &stop_mail));

    tokio::time::sleep(BEFORE).await;
    let down_at = started.elapsed();
    crash(&broker)?;
    let restart = Instant::now();
    broker.start()?;
    let outage = restart.elapsed();
    let back = Instant::now();
    // Decided again: five decisions in a row after the broker was back.
    let recovered = wait_until("the policy server to decide again", RECOVERY, || {
        let answers = answers.lock().unwrap_or_else(|p| p.into_inner());
        let after: Vec<&Answer> = answers.iter().filter(|a| a.at > back).collect();
        after.len() >= 5 && after.iter().rev().take(5).all(|a| a.decided())
    })
    .await;
    let recovery = back.elapsed();
    tokio::time::sleep(AFTER).await;
    *stop.lock().unwrap_or_else(|p| p.into_inner()) = true;
    policy.await??;
    let answers = std::mem::take(&mut *answers.lock().unwrap_or_else(|p| p.into_inner()));
    let mut deliveries = mails.await??;

    // Postfix retries what got 4xx until it is accepted.
    let retry_deadline = Instant::now() + Duration::from_secs(60);
    for d in deliveries.iter_mut().filter(|d| !d.accepted()) {
        while !d.accepted() {
            anyhow::ensure!(
                Instant::now() < retry_deadline,
                "{} still refused: {:?}",
                d.subject,
                d.replies
            );
            let reply = deliver(lmtp_port, &d.to, &d.subject, "under load")?;
            d.replies.push(reply);
            if !d.accepted() {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }

    // Every accepted message stored, once.
    let root = world.mail_root.clone();
    let wanted: Vec<String> = deliveries.iter().map(|d| d.message_id()).collect();
    let all_there =
        || message_ids_on_disk(&root).is_ok_and(|on| wanted.iter().all(|id| on.contains_key(id)));
    let stored_wait = wait_until(
        "every accepted message in the Maildir",
        Duration::from_secs(120),
        all_there,
    )
    .await;
    // Anything late (a second copy) would show in this time too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (i, child) in children.0.iter_mut().enumerate() {
        anyhow::ensure!(
            child.try_wait()?.is_none(),
            "process {i} died during the restart; see {}",
            log.display()
        );
    }
    children.terminate()?;
    let on_disk = message_ids_on_disk(&world.mail_root)?;

    // The figures.
    let first_250 = deliveries
        .iter()
        .filter(|d| d.replies[0].starts_with("250"))
        .count();
    let refused: Vec<&str> = deliveries
        .iter()
        .filter(|d| !d.replies[0].starts_with("250"))
        .map(|d| d.replies[0].as_str())
        .collect();
    let temp_refused = refused.iter().filter(|r| r.starts_with("451")).count();
    let decided = answers.iter().filter(|a| a.decided()).count();
    let fail_mode = answers.iter().filter(|a| a.action == "DUNNO").count();
    let other: Vec<&str> = answers
        .iter()
        .filter(|a| !a.decided() && a.action != "DUNNO")
        .map(|a| a.action.as_str())
        .collect();
    let max_latency = answers.iter().map(|a| a.latency).max().unwrap_or_default();
    let slow = answers
        .iter()
        .filter(|a| a.latency > Duration::from_millis(POLICY_TIMEOUT_MS + MARGIN_MS))
        .count();
    let twice: Vec<_> = on_disk.iter().filter(|(_, n)| **n > 1).collect();
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|id| !on_disk.contains_key(*id))
        .collect();
    eprintln!(
        "faults-broker: policy timeline (D decided, F fail mode): {}",
        runs(
            answers.iter().map(|a| (a.decided(), a.at)),
            'D',
            'F',
            started
        )
    );
    let lmtp_max = deliveries.iter().map(|d| d.took).max().unwrap_or_default();
    eprintln!(
        "faults-broker: LMTP timeline (A 250, R refused): {}; slowest first reply {lmtp_max:.1?} \
         (ack_timeout_ms {ACK_TIMEOUT_MS})",
        runs(
            deliveries
                .iter()
                .map(|d| (d.replies[0].starts_with("250"), d.at)),
            'A',
            'R',
            started
        )
    );
    eprintln!(
        "faults-broker: broker killed at {down_at:.1?}, back after {outage:.1?}; policy decisions \
         again {recovery:.1?} after that; LMTP: {} mails, \
         {first_250} got 250 at once, {} refused ({temp_refused} with 451) and retried until 250; \
         Maildir: {} files for {} messages, {} twice, {} missing; policy: {} answers, {decided} \
         decided, {fail_mode} fail mode (DUNNO), {} other, max latency {max_latency:.0?} \
         (timeout {POLICY_TIMEOUT_MS} ms), {slow} over timeout+{MARGIN_MS} ms; {:.0?} in all",
        deliveries.len(),
        refused.len(),
        on_disk.values().sum::<usize>(),
        on_disk.len(),
        twice.len(),
        missing.len(),
        answers.len(),
        other.len(),
        started.elapsed()
    );
    stored_wait?;
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    assert!(missing.is_empty(), "accepted but not stored: {missing:?}");
    assert_eq!(on_disk.len(), deliveries.len(), "nothing else stored");
    assert!(
        refused.iter().all(|r| r.starts_with('4')),
        "only temporary refusals: {refused:?}"
    );
    assert!(other.is_empty(), "answers outside the fail mode: {other:?}");
    assert_eq!(slow, 0, "answers slower than the timeout");
    assert!(fail_mode > 0, "the outage was seen by the policy server");
    assert!(temp_refused > 0, "the outage was seen by the LMTP server");
    recovered?;
    Ok(())
}

/// Runs of outcomes: `D12@3.1s F5@18.9s ...` (`yes` or `no`, how many in
/// a row, when the run began).
fn runs(
    outcomes: impl Iterator<Item = (bool, Instant)>,
    yes: char,
    no: char,
    started: Instant,
) -> String {
    let mut runs: Vec<(char, usize, Duration)> = Vec::new();
    for (ok, at) in outcomes {
        let c = if ok { yes } else { no };
        match runs.last_mut() {
            Some((last, n, _)) if *last == c => *n += 1,
            _ => runs.push((c, 1, at - started)),
        }
    }
    runs.iter()
        .map(|(c, n, at)| format!("{c}{n}@{:.1}s", at.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One policy request with a new triplet; the answer and its latency.
async fn ask(client: &mut PolicyClient, run: &str, n: u32) -> anyhow::Result<Answer> {
    let (sender, ip) = (
        format!("s{n}-{run}@sender.test"),
        format!("10.7.{}.{}", n / 250 % 250, n % 250 + 1),
    );
    let attrs = [
        ("protocol_state", "RCPT"),
        ("client_address", ip.as_str()),
        ("client_name", "mx.sender.test"),
        ("helo_name", "mx.sender.test"),
        ("sender", sender.as_str()),
        ("recipient", "rcpt@faults.test"),
        ("instance", sender.as_str()),
    ];
    let asked = Instant::now();
    let action = client.ask(&attrs, Duration::from_secs(30)).await?;
    Ok(Answer {
        action,
        latency: asked.elapsed(),
        at: Instant::now(),
    })
}

/// Ask, one request after the other, until `stop`.
async fn policy_traffic(
    mut client: PolicyClient,
    stop: Arc<Mutex<bool>>,
    answers: Arc<Mutex<Vec<Answer>>>,
) -> anyhow::Result<()> {
    let mut n = 0;
    while !*stop.lock().unwrap_or_else(|p| p.into_inner()) {
        let answer = ask(&mut client, "load", n).await?;
        answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(answer);
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// One message and the replies it got, first try first.
struct Delivery {
    to: String,
    subject: String,
    replies: Vec<String>,
    /// When the first reply came, and how long it took.
    at: Instant,
    took: Duration,
}

impl Delivery {
    fn accepted(&self) -> bool {
        self.replies.last().is_some_and(|r| r.starts_with("250"))
    }

    /// As `ingest::simple_message` writes it.
    fn message_id(&self) -> String {
        format!("<{}@example.net>", self.subject)
    }
}

/// Deliver one message after the other until `stop`.
fn lmtp_traffic(port: u16, run: &str, stop: &Mutex<bool>) -> anyhow::Result<Vec<Delivery>> {
    let mut out = Vec::new();
    while !*stop.lock().unwrap_or_else(|p| p.into_inner()) {
        let n = out.len();
        let (to, subject) = (format!("box{}@faults.test", n % 5), format!("b{n}-{run}"));
        let sent = Instant::now();
        let reply = deliver(port, &to, &subject, "under load")?;
        out.push(Delivery {
            to,
            subject,
            replies: vec![reply],
            at: Instant::now(),
            took: sent.elapsed(),
        });
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(out)
}
