//! `mailfleet bench submission` (issue G1): messages/s through Postfix's
//! submission listener to the relay, with the submission milter (clamd, the
//! attachment policy, `MessageSubmitted` acknowledged by Kafka before the
//! `250`) and without it, on the same box.
//!
//! The same load for both sides: `--sessions` SMTP sessions, each
//! authenticated (`AUTH PLAIN`, through Dovecot against slapd) as one
//! scratch account this bench adds to the directory and removes at the end,
//! sending unique messages of `--bytes` (a line of text and a base64
//! "photo") to one remote recipient. Postfix relays them to `ops/smtp-sink`.
//! A side's time runs from the first connection until the sink holds every
//! message of its batch; the client's own rate (its `250`s) is shown too.
//!
//! The bench switches the submission listener per side with `ops/postfix
//! stop` and `start` (a reload would leave idle smtpd processes with the
//! other setting for a session or two): `MAILFLEET_SUBMISSION_MILTER=1` or
//! `0`, both with
//! `MAILFLEET_SUBMISSION_POLICY=0` (the outbound limits are not measured
//! here) and the relay set to the sink; at the end it puts back the relay,
//! transport and policy check it found. The milter runs in this process
//! (`mailfleet_submission::serve` on `[submission] listen`, a scratch topic,
//! `[consumers.scanner]`'s clamd and policy). Rounds alternate the sides;
//! medians are compared.
//!
//! Checked: every batch arrives whole at the sink, and the milter's topic
//! holds one accepted `MessageSubmitted` per message of each measured batch
//! with the milter, none of a batch without it, each id once.

use std::{collections::HashSet, sync::Arc, time::Instant};

use anyhow::Context;
use mailfleet_directory::{entry::NewAccount, DirectoryClient};
use mailfleet_events::submission::{MessageSubmitted, SubmitAction};
use mailfleet_fleet::config::Config;
use mailfleet_password as password;
use mailfleet_runtime::{read::read_events, Shutdown};
use mailfleet_scan::{clamd::Clamd, Engine};

use super::{
    consume::create_topic,
    cpu::{clamd_pid, kafka_pid, Cpu, Tally},
    median,
    store::{shell, MainCf},
    submit_client as smtp,
};

/// Postfix's submission listener as `ops/postfix` runs it.
const SUBMISSION: &str = "127.0.0.1:1587";
/// The relay the bench points Postfix at: `ops/smtp-sink`.
const SINK_RELAY: &str = "smtp:[127.0.0.1]:2526";

/// The load's shape.
#[derive(Debug, Clone, clap::Args)]
pub struct SubmissionLoad {
    /// Messages per side and round.
    #[arg(long, default_value_t = 1000)]
    pub messages: u64,
    /// Size of each message, bytes.
    #[arg(long, default_value_t = 20 * 1024)]
    pub bytes: usize,
    /// Parallel SMTP sessions.
    #[arg(long, default_value_t = 8)]
    pub sessions: u64,
    /// Rounds of (without, with the milter); medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// The domain of the scratch account (one Postfix accepts as a sender).
    #[arg(long, default_value = "example.test")]
    pub domain: String,
}

/// Whether a side runs with the milter.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Plain,
    Milter,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Plain => "without milter",
            Side::Milter => "with milter",
        }
    }
}

pub async fn run(cfg: &Config, load: SubmissionLoad) -> anyhow::Result<()> {
    let found = Found::read()?;
    preflight(cfg).await?;
    let id = format!("bench-submission-{:08x}", rand::random::<u32>());
    let login = format!("{id}@{}", load.domain);
    let password = format!("Bench{:016x}7", rand::random::<u64>());
    let directory = DirectoryClient::new(cfg.ldap.clone())
        .map_err(|p| anyhow::anyhow!("[ldap]: {}", p.join("; ")))?;
    add_account(&directory, &login, &password).await?;
    let result = measure(cfg, &load, &id, &login, &password).await;
    let restored = found.restore().await;
    let dn = directory.layout().account_dn(&login);
    let removed = directory.conn().await?.delete_subtree(&dn).await;
    let outcome = result?;
    restored?;
    removed.context("removing the bench account")?;
    report(&load, &outcome);
    Ok(())
}

/// What the bench changes in Postfix, as it was before.
struct Found {
    transport: String,
    relay: String,
    policy: bool,
}

impl Found {
    fn read() -> anyhow::Result<Found> {
        let main_cf = MainCf::read()?;
        let setting = |key: &str| main_cf.setting(key);
        Ok(Found {
            transport: setting("virtual_transport").context("main.cf has no virtual_transport")?,
            relay: setting("default_transport").context("main.cf has no default_transport")?,
            policy: submission_policy(&main_cf.text),
        })
    }

    async fn restore(&self) -> anyhow::Result<()> {
        let policy = if self.policy { "1" } else { "0" };
        postfix(&[
            ("MAILFLEET_SUBMISSION_MILTER", "1"),
            ("MAILFLEET_SUBMISSION_POLICY", policy),
            ("MAILFLEET_POSTFIX_RELAY", &self.relay),
            ("MAILFLEET_POSTFIX_TRANSPORT", &self.transport),
        ])
        .await
    }
}

/// Whether main.cf's `submission_recipient_restrictions` ask the policy
/// service (its continuation lines are indented).
fn submission_policy(main_cf: &str) -> bool {
    let mut lines = main_cf.lines();
    let Some(first) = lines.find(|l| l.starts_with("submission_recipient_restrictions")) else {
        return false;
    };
    let continued = lines.take_while(|l| l.starts_with([' ', '\t']));
    std::iter::once(first)
        .chain(continued)
        .any(|l| l.contains("check_policy_service"))
}

/// `ops/postfix start` with `env` (a reload when it changes the config).
async fn postfix(env: &[(&str, &str)]) -> anyhow::Result<()> {
    let (ok, out) = shell("ops/postfix", &["start"], env, None).await?;
    anyhow::ensure!(ok, "ops/postfix start {env:?}: {out}");
    Ok(())
}

async fn preflight(cfg: &Config) -> anyhow::Result<()> {
    Clamd::new(cfg.consumers.scanner.clamd.clone())
        .ping()
        .await
        .context("clamd does not answer PING: run `ops/clamav start`")?;
    for service in ["ops/ldap", "ops/dovecot", "ops/postfix"] {
        let (ok, out) = shell(service, &["status"], &[], None).await?;
        anyhow::ensure!(ok, "{service} status: {out}: run `{service} start`");
    }
    let (ok, out) = shell("ops/smtp-sink", &["start"], &[], None).await?;
    anyhow::ensure!(ok, "ops/smtp-sink start: {out}");
    Ok(())
}

/// An active account with `password`, in the people base.
async fn add_account(dir: &DirectoryClient, login: &str, password: &str) -> anyhow::Result<()> {
    let hash = password::hash(password).context("hashing the bench password")?;
    let entry = NewAccount {
        account: login.to_string(),
        password_hash: hash,
        plan: "free".into(),
        display_name: None,
        status: "active".into(),
    };
    let dn = dir.layout().account_dn(login);
    dir.conn().await?.put(&dn, &entry.attrs()).await?;
    Ok(())
}

/// Per side: the seconds to the sink (with the CPU used meanwhile) and
/// the client's, per round.
#[derive(Default)]
struct Outcome {
    plain: (Tally, Vec<f64>),
    milter: (Tally, Vec<f64>),
}

async fn measure(
    cfg: &Config,
    load: &SubmissionLoad,
    id: &str,
    login: &str,
    password: &str,
) -> anyhow::Result<Outcome> {
    create_topic(cfg, id, 6).await?;
    let shutdown = Shutdown::new();
    milter_in_process(cfg, id, &shutdown).await?;
    let to = format!("{id}@bench-remote.test");
    let mut out = Outcome::default();
    let mut measured = Vec::new();
    let sessions = load.sessions.max(1);
    println!(
        "{} messages of {} bytes per side and round over {sessions} AUTH PLAIN sessions to {SUBMISSION}, relayed to {SINK_RELAY}",
        load.messages, load.bytes
    );
    for round in 1..=load.rounds.max(1) {
        for side in [Side::Plain, Side::Milter] {
            switch(side).await?;
            let warm = format!("{id}-r{round}-{}-warm", side_tag(side));
            batch(&warm, login, password, &to, sessions, load.bytes, sessions).await?;
            let name = format!("{id}-r{round}-{}", side_tag(side));
            let before = Cpu::now(clamd_pid(), kafka_pid());
            let (to_sink, client) = batch(
                &name,
                login,
                password,
                &to,
                load.messages,
                load.bytes,
                sessions,
            )
            .await?;
            let cpu = Cpu::now(clamd_pid(), kafka_pid()).minus(before);
            measured.push((name, side));
            let n = load.messages as f64;
            println!(
                "round {round} {}: {:.1} msgs/s to the sink ({:.1} msgs/s accepted)",
                side.name(),
                n / to_sink,
                n / client
            );
            let slot = if side == Side::Plain {
                &mut out.plain
            } else {
                &mut out.milter
            };
            slot.0.add(to_sink, cpu);
            slot.1.push(client);
        }
    }
    shutdown.trigger();
    check(cfg, id, &measured, load.messages)?;
    Ok(out)
}

fn side_tag(side: Side) -> &'static str {
    match side {
        Side::Plain => "plain",
        Side::Milter => "milter",
    }
}

/// Point the submission listener's milter on or off (relay: the sink).
/// Postfix is stopped first: after a reload, idle smtpd processes would
/// serve a session or two with the old setting.
async fn switch(side: Side) -> anyhow::Result<()> {
    let (ok, out) = shell("ops/postfix", &["stop"], &[], None).await?;
    anyhow::ensure!(ok, "ops/postfix stop: {out}");
    let milter = if side == Side::Milter { "1" } else { "0" };
    let found = Found::read()?;
    postfix(&[
        ("MAILFLEET_SUBMISSION_MILTER", milter),
        ("MAILFLEET_SUBMISSION_POLICY", "0"),
        ("MAILFLEET_POSTFIX_RELAY", SINK_RELAY),
        ("MAILFLEET_POSTFIX_TRANSPORT", &found.transport),
    ])
    .await
}

/// The milter on `[submission] listen`, recording to `topic`.
async fn milter_in_process(cfg: &Config, topic: &str, shutdown: &Shutdown) -> anyhow::Result<()> {
    let scanner = &cfg.consumers.scanner;
    let engine = Engine::new(
        scanner.policy.clone(),
        scanner.use_clamd.then(|| scanner.clamd.clone()),
    );
    let listener = tokio::net::TcpListener::bind(&cfg.submission.listen)
        .await
        .with_context(|| {
            format!(
                "submission.listen = {:?} (is a `mailfleet submission` running?)",
                cfg.submission.listen
            )
        })?;
    let config = mailfleet_submission::SubmissionConfig {
        topic: topic.to_string(),
        ..cfg.submission.clone()
    };
    let (kafka, sd) = (cfg.kafka.clone(), shutdown.clone());
    tokio::spawn(async move {
        if let Err(e) = mailfleet_submission::serve(config, listener, engine, &kafka, sd).await {
            eprintln!("mailfleet submission: {e}");
        }
    });
    Ok(())
}

/// Send `n` messages of batch `name` over `sessions` sessions; the seconds
/// until the sink holds all of them, and until the last `250`.
async fn batch(
    name: &str,
    login: &str,
    password: &str,
    to: &str,
    n: u64,
    bytes: usize,
    sessions: u64,
) -> anyhow::Result<(f64, f64)> {
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..sessions {
        let (name, login, password, to, next) = (
            name.to_string(),
            login.to_string(),
            password.to_string(),
            to.to_string(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut session = smtp::Session::open(SUBMISSION, &login, &password).await?;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let data = smtp::message(&name, &login, &to, i, bytes);
                let reply = session.send(&login, &to, &data).await?;
                anyhow::ensure!(reply.starts_with("250"), "message {i}: {reply}");
            }
            session.quit().await;
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let client = started.elapsed().as_secs_f64();
    wait_sink(name, n).await?;
    Ok((started.elapsed().as_secs_f64(), client))
}

/// Poll `ops/smtp-sink count` until the batch is whole.
async fn wait_sink(name: &str, n: u64) -> anyhow::Result<()> {
    let marker = format!("X-Bench-Batch: {name};");
    let waited = Instant::now();
    loop {
        let (ok, out) = shell("ops/smtp-sink", &["count", &marker], &[], None).await?;
        anyhow::ensure!(ok, "ops/smtp-sink count: {out}");
        let count: u64 = out.trim().parse().unwrap_or(0);
        anyhow::ensure!(
            count <= n,
            "{count} messages of batch {name} at the sink for {n} sent"
        );
        if count == n {
            return Ok(());
        }
        anyhow::ensure!(
            waited.elapsed().as_secs() < 300,
            "{count} of {n} messages of batch {name} at the sink after 300 s (see `ops/postfix log`)"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Per measured batch, one accepted `MessageSubmitted` for each message
/// with the milter and none without; every id once.
fn check(cfg: &Config, topic: &str, batches: &[(String, Side)], n: u64) -> anyhow::Result<()> {
    let events = read_events::<MessageSubmitted>(&cfg.kafka, topic, "bench")?;
    let ids: HashSet<&str> = events
        .iter()
        .map(|e| e.envelope.event_id.as_str())
        .collect();
    anyhow::ensure!(
        ids.len() == events.len(),
        "{} distinct ids for {} events",
        ids.len(),
        events.len()
    );
    let accepted = events
        .iter()
        .filter(|e| e.action == SubmitAction::Accepted)
        .count();
    anyhow::ensure!(
        accepted == events.len(),
        "{accepted} of {} accepted",
        events.len()
    );
    for (name, side) in batches {
        let prefix = format!("<{name}.");
        let seen = events
            .iter()
            .filter(|e| {
                e.message_id
                    .as_deref()
                    .is_some_and(|m| m.starts_with(&prefix))
            })
            .count() as u64;
        let want = if *side == Side::Milter { n } else { 0 };
        anyhow::ensure!(
            seen == want,
            "batch {name} ({}): {seen} MessageSubmitted, {want} expected",
            side.name()
        );
    }
    println!("checked: every measured batch whole at the sink; {n} accepted MessageSubmitted per batch with the milter, none without; each id once");
    Ok(())
}

fn report(load: &SubmissionLoad, out: &Outcome) {
    let n = load.messages as f64;
    let rate = |secs: &[f64]| median(&mut secs.iter().map(|s| n / s).collect::<Vec<_>>());
    let (plain, milter) = (
        out.plain.0.rate(load.messages),
        out.milter.0.rate(load.messages),
    );
    let (plain_acc, milter_acc) = (rate(&out.plain.1), rate(&out.milter.1));
    let ratio = milter / plain;
    println!(
        "without milter {plain:.1} msgs/s, with milter {milter:.1} msgs/s to the sink, ratio {ratio:.2}; \
         accepted: {plain_acc:.1} vs {milter_acc:.1} msgs/s (medians of {})",
        out.plain.1.len()
    );
    for (side, tally) in [(Side::Plain, &out.plain.0), (Side::Milter, &out.milter.0)] {
        let c = tally.ms_per_message(load.messages);
        println!(
            "{} CPU ms/msg: this process {:.3} (the SMTP client, and the milter), clamd {:.3}, kafka {:.3} (machine {:.0}% busy)",
            side.name(),
            c.own,
            c.peer,
            c.kafka,
            c.busy()
        );
    }
    let own = out.milter.0.ms_per_message(load.messages).own;
    println!(
        "plain_mps={plain:.1} milter_mps={milter:.1} ratio={ratio:.2} plain_accept_mps={plain_acc:.1} milter_accept_mps={milter_acc:.1} milter_process_cpu_ms={own:.3}"
    );
}
