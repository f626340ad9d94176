//! The submission path end to end (G1), every part real: swaks with SMTP
//! AUTH → Postfix's submission listener (127.0.0.1:1587; SASL through
//! Dovecot binding as the user to slapd) → `mailfleet policy` on 10023 at
//! RCPT (the account's status, then the outbound limits) → `mailfleet
//! submission`, the milter on 10027 (clamd and the attachment policy) →
//! relayed to the sink. Behind them `mailfleet run outbound lifecycle
//! notifier`: the limits, the blocks, and the admin alert mailed.
//!
//! - a wrong password gets 535; a sender that is not the login 5.7.1;
//! - clean mail is relayed once;
//! - a burst over the hourly limit: the first N pass, the rest are
//!   deferred naming the limit, the abuse threshold blocks the account, and
//!   its next submission is refused at RCPT with 5.7.1;
//! - EICAR from an authenticated account: refused at the end of DATA,
//!   never relayed, the account blocked (VIRUS), the admin alert mailed;
//! - `mailfleet audit decisions outbound`: every decision recomputed alike;
//!   `mailfleet audit account` shows the block and why;
//! - the secrets scan (`tests/src/secrets.rs`) over the whole run: neither
//!   account's password nor the wrong one is in any record of the run's
//!   topics, any file of its processes, or what Postfix, Dovecot, slapd and
//!   Kafka logged meanwhile.

use std::{collections::BTreeMap, path::Path, process::Output, time::Duration};

use mailfleet_events::{
    accounts::{
        AccountBlocked, AccountRegistered, AccountStatus, AccountStatusChanged, BlockReason,
    },
    submission::{LimitAction, MessageSubmitted, SubmissionDecided, SubmitAction},
    Envelope, Event, Registry,
};
use mailfleet_runtime::{
    admin,
    producer::EventProducer,
    time::now_ms,
    topology::{Route, TopicSpec},
    Topology,
};
use mailfleet_tests::{
    ingest::{clamd_address, eicar, message_with_attachment, require_clamd, simple_message},
    notify::notifier_table,
    secrets::{files_below, scan_file, scan_topic, Needle, SharedLogs},
    submission::{
        account, data_reply, require_submission_postfix, sink_count, MILTER_PORT, POLICY_PORT,
    },
    *,
};

/// Recipients per hour for the free plan in this world.
const PER_HOUR: usize = 4;

struct World {
    dir: std::path::PathBuf,
    t: BTreeMap<&'static str, String>,
    topology: Topology,
}

impl World {
    async fn new() -> anyhow::Result<World> {
        let name = unique("submit-e2e");
        let t: BTreeMap<&str, String> = [
            "attempts",
            "decisions",
            "submitted",
            "accounts",
            "status",
            "notify",
            "alerts",
            "grey-attempts",
            "grey-decisions",
            "dead",
        ]
        .into_iter()
        .map(|k| (k, format!("{name}.{k}")))
        .collect();
        let route = |c: &str, reads: &[&str], writes: &[&str]| {
            let names = |ks: &[&str]| ks.iter().map(|k| t[k].clone()).collect();
            let route = Route {
                group: format!("{name}-{c}"),
                reads: names(reads),
                writes: names(writes),
            };
            (c.to_string(), route)
        };
        let topology = Topology {
            topics: t
                .values()
                .map(|n| (n.clone(), TopicSpec::scratch(3)))
                .collect(),
            consumers: BTreeMap::from([
                route(
                    "outbound",
                    &["attempts", "submitted", "accounts"],
                    &["decisions", "accounts", "alerts"],
                ),
                route(
                    "lifecycle",
                    &["accounts"],
                    &["accounts", "notify", "status"],
                ),
                route("notifier", &["notify", "alerts"], &[]),
            ]),
        };
        admin::apply(&kafka(), &topology).await?;
        Ok(World {
            dir: scratch_dir(&name),
            t,
            topology,
        })
    }

    /// A config for this world with its topics everywhere.
    fn config(&self, file: &str) -> anyhow::Result<std::path::PathBuf> {
        let t = &self.t;
        let rest = format!(
            "[policy]\nlisten = \"127.0.0.1:{POLICY_PORT}\"\nhost = \"submit-e2e\"\n\
             attempts_topic = {ga:?}\ndecisions_topic = {gd:?}\n\
             submission_attempts_topic = {a:?}\nsubmission_decisions_topic = {d:?}\n\
             status_topic = {s:?}\ntimeout_ms = 10000\n\
             [submission]\nlisten = \"127.0.0.1:{MILTER_PORT}\"\ntopic = {sub:?}\nhostname = \"test\"\n\
             [consumers.scanner.clamd]\naddress = {clamd:?}\n\
             [consumers.outbound]\ndecisions_topic = {d:?}\naccounts_topic = {acc:?}\nalerts_topic = {al:?}\n\
             abuse_deferrals_per_hour = 3\n\
             [consumers.outbound.plans.free]\nrecipients_per_hour = {PER_HOUR}\n\
             distinct_recipients_per_day = 200\nmessages_per_day = 500\nbytes_per_day = 250000000\n\
             [api]\nevents_topic = {acc:?}\n\
             [consumers.directory]\nevents_topic = {acc:?}\nalerts_topic = {al:?}\n\
             [consumers.lifecycle]\nevents_topic = {acc:?}\nnotify_topic = {n:?}\nstatus_topic = {s:?}\n\
             {notifier}",
            ga = t["grey-attempts"],
            gd = t["grey-decisions"],
            a = t["attempts"],
            d = t["decisions"],
            s = t["status"],
            sub = t["submitted"],
            acc = t["accounts"],
            al = t["alerts"],
            n = t["notify"],
            clamd = clamd_address(),
            notifier = notifier_table("127.0.0.1:2526", &["postmaster@admin.test"], ""),
        );
        ConfigFiles {
            dir: &self.dir,
            topology_file: "topology.toml",
            topology: &self.topology,
            brokers: &kafka().brokers,
            data_dir: &self.dir.join("state"),
            deadletter: &self.t["dead"],
            metrics_port: free_port(),
        }
        .write(file, &rest)
    }

    /// Every event of type `E` on topic `key` that `keep` keeps.
    fn events<E: Event>(&self, key: &str, keep: impl Fn(&E) -> bool) -> anyhow::Result<Vec<E>> {
        Ok(
            read_topic(&self.t[key], usize::MAX, Duration::from_secs(1))?
                .iter()
                .filter_map(|(_, b)| Registry::builtin().decode::<E>(b).ok())
                .filter(|e| keep(e))
                .collect(),
        )
    }

    /// Wait (up to 60 s) until `n` events of type `E` on `key` match.
    async fn wait_for<E: Event>(
        &self,
        key: &str,
        n: usize,
        what: &str,
        keep: impl Fn(&E) -> bool,
    ) -> anyhow::Result<Vec<E>> {
        for _ in 0..60 {
            let found = self.events::<E>(key, &keep)?;
            if found.len() >= n {
                return Ok(found);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        anyhow::bail!("fewer than {n} {what} on {}", self.t[key])
    }

    /// Register `account` (plan free) and wait until it is active.
    async fn register(&self, account: &str) -> anyhow::Result<()> {
        let secret = format!("Aa1{:032x}", rand::random::<u128>());
        let event = AccountRegistered {
            envelope: Envelope::new(format!("test:register:{account}"), now_ms(), "test"),
            account: account.into(),
            password_hash: mailfleet_password::hash(&secret)?,
            plan: "free".into(),
            display_name: None,
        };
        let producer = EventProducer::new(&kafka(), "submit-e2e")?;
        producer
            .send(&self.t["accounts"], account.as_bytes(), &event)
            .await?;
        self.wait_status(account, AccountStatus::Active).await
    }

    async fn wait_status(&self, account: &str, to: AccountStatus) -> anyhow::Result<()> {
        self.wait_for::<AccountStatusChanged>("status", 1, &format!("{account} {to:?}"), |s| {
            s.account == account && s.to == to
        })
        .await
        .map(|_| ())
    }
}

/// swaks at the submission listener: AUTH PLAIN as `login` with
/// `password`, MAIL FROM `from`; the whole transcript.
fn swaks(login: &str, password: &str, from: &str, to: &str, data: &Path) -> anyhow::Result<String> {
    let out: Output = std::process::Command::new("swaks")
        .args(["--server", "127.0.0.1:1587", "--auth", "PLAIN"])
        .args(["--auth-user", login, "--auth-password", password])
        .args(["--from", from, "--to", to, "--timeout", "60"])
        .arg("--data")
        .arg(format!("@{}", data.display()))
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

/// The server's reply lines (`<-` and `<**`) of a transcript.
fn replies(transcript: &str) -> Vec<&str> {
    transcript
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("<**").or_else(|| l.strip_prefix("<-")))
        .map(str::trim)
        .collect()
}

/// The reply to RCPT TO in a transcript.
fn rcpt_reply(transcript: &str) -> String {
    let mut lines = transcript.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if line.starts_with("-> RCPT TO:") {
            if let Some(reply) = lines.next() {
                return reply
                    .trim_start_matches("<**")
                    .trim_start_matches("<-")
                    .trim()
                    .into();
            }
        }
    }
    String::new()
}

#[tokio::test(flavor = "multi_thread")]
async fn submission_auth_limits_virus_blocks_and_audits() -> anyhow::Result<()> {
    require_submission_postfix()?;
    require_clamd()?;
    let shared_logs = SharedLogs::mark()?;
    let w = World::new().await?;
    let config = w.config("e2e.toml")?;
    let log = w.dir.join("children.log");
    let mut children = Children(vec![
        spawn_mailfleet(&config, &["run", "outbound", "lifecycle", "notifier"], &log)?,
        spawn_mailfleet(&w.config("policy.toml")?, &["policy"], &log)?,
        spawn_mailfleet(&w.config("milter.toml")?, &["submission"], &log)?,
    ]);
    for port in [POLICY_PORT, MILTER_PORT] {
        wait_until(
            &format!("127.0.0.1:{port}"),
            Duration::from_secs(60),
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        )
        .await?;
    }
    // The fixed ports answer: make sure it is these processes that listen
    // (a port taken by another test's server makes ours exit).
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (child, what) in children.0.iter_mut().zip(["run", "policy", "submission"]) {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "mailfleet {what} exited ({status}): is its port taken? see {}",
                log.display()
            );
        }
    }
    let tag = unique("sub");
    let (alice, bob) = (
        format!("{tag}-a@example.test"),
        format!("{tag}-b@example.test"),
    );
    let (alice_pw, _alice_entry) = account(&alice)?;
    let (bob_pw, _bob_entry) = account(&bob)?;
    w.register(&alice).await?;
    w.register(&bob).await?;

    // Wrong password: 535. Another sender than the login: 5.7.1.
    let clean = w.dir.join("clean.eml");
    std::fs::write(
        &clean,
        simple_message(&format!("{tag}-clean"), &format!("marker {tag}-clean")),
    )?;
    let wrong_pw = format!("Wrong{:032x}", rand::random::<u128>());
    let wrong = swaks(&alice, &wrong_pw, &alice, "x@remote.test", &clean)?;
    assert!(
        replies(&wrong).iter().any(|r| r.starts_with("535")),
        "{wrong}"
    );
    let forged = swaks(&alice, &alice_pw, &bob, "x@remote.test", &clean)?;
    let refused = rcpt_reply(&forged);
    assert!(
        refused.starts_with("553 5.7.1") || refused.starts_with("554 5.7.1"),
        "{forged}"
    );

    // Clean mail is relayed, once.
    let sent = swaks(&alice, &alice_pw, &alice, "friend@remote.test", &clean)?;
    assert!(data_reply(&sent).starts_with("250"), "{sent}");
    wait_until(
        "the clean mail at the sink",
        Duration::from_secs(60),
        || sink_count(&format!("marker {tag}-clean")).is_ok_and(|n| n == 1),
    )
    .await?;

    // A burst over the hourly limit: N pass, the rest deferred naming the
    // limit, until the abuse threshold blocks the account.
    let mut answers = Vec::new();
    for i in 0..(PER_HOUR + 5) {
        let mail = w.dir.join(format!("burst{i}.eml"));
        std::fs::write(
            &mail,
            simple_message(&format!("{tag}-burst{i}"), &format!("marker {tag}-burst")),
        )?;
        let t = swaks(&bob, &bob_pw, &bob, &format!("r{i}@remote.test"), &mail)?;
        answers.push(rcpt_reply(&t));
    }
    let passed = answers.iter().filter(|r| r.starts_with("250")).count();
    assert_eq!(passed, PER_HOUR, "{answers:#?}");
    assert!(
        answers[PER_HOUR].starts_with("450 4.7.1") || answers[PER_HOUR].starts_with("451 4.7.1"),
        "{answers:#?}"
    );
    assert!(
        answers[PER_HOUR].contains("recipients"),
        "the limit is named: {answers:#?}"
    );
    let abuse = w
        .wait_for::<AccountBlocked>("accounts", 1, "an abuse block", |b| {
            b.account == bob && b.reason == BlockReason::Abuse
        })
        .await?;
    assert_eq!(abuse.len(), 1, "blocked once: {abuse:?}");
    w.wait_status(&bob, AccountStatus::Blocked).await?;
    // The policy server sees the block: refused at RCPT, for good.
    let mut last = String::new();
    for _ in 0..20 {
        last = rcpt_reply(&swaks(&bob, &bob_pw, &bob, "late@remote.test", &clean)?);
        if last.starts_with("554 5.7.1") || last.starts_with("553 5.7.1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(last.contains("5.7.1") && last.contains("blocked"), "{last}");
    let decisions = w.events::<SubmissionDecided>("decisions", |d| d.account == bob)?;
    let deferred = decisions
        .iter()
        .filter(|d| d.action == LimitAction::Defer)
        .count();
    assert_eq!(
        (decisions.len() - deferred, deferred),
        (PER_HOUR, decisions.len() - PER_HOUR),
        "{decisions:#?}"
    );
    assert_eq!(sink_count(&format!("marker {tag}-burst"))?, PER_HOUR);

    // EICAR from an authenticated account: refused, never relayed, the
    // account blocked for a virus, the admin alert mailed.
    let virus = w.dir.join("virus.eml");
    std::fs::write(
        &virus,
        message_with_attachment(&format!("{tag}-virus"), "a.txt", eicar().as_bytes()),
    )?;
    let t = swaks(&alice, &alice_pw, &alice, "victim@remote.test", &virus)?;
    let reply = data_reply(&t);
    assert!(
        reply.starts_with("554 5.7.1") && reply.contains("Virus"),
        "{t}"
    );
    let submitted = w
        .wait_for::<MessageSubmitted>("submitted", 1, "the virus's MessageSubmitted", |m| {
            m.account == alice && m.action == SubmitAction::Rejected
        })
        .await?;
    assert!(submitted[0].signature.is_some(), "{submitted:?}");
    w.wait_for::<AccountBlocked>("accounts", 1, "a virus block", |b| {
        b.account == alice && b.reason == BlockReason::Virus
    })
    .await?;
    w.wait_status(&alice, AccountStatus::Blocked).await?;
    // The alert's summary, as the notifier mails it to the admins.
    let summary = format!("{alice} submitted a virus");
    wait_until(
        "the admin alert at the sink",
        Duration::from_secs(60),
        || sink_count(&summary).is_ok_and(|n| n == 1),
    )
    .await?;
    // (The alert names the message; the message itself has this line.)
    let virus_subject = format!("Subject: {tag}-virus");
    assert_eq!(sink_count(&virus_subject)?, 0, "the virus was relayed");

    // Audits: every outbound decision recomputed alike; the account's
    // history shows the block and its reason.
    let audit = run_cli(&config, &["audit", "decisions", "outbound"])?;
    let last_line = audit.lines().last().unwrap_or_default();
    assert!(last_line.contains("diffs=0"), "{audit}");
    assert!(!last_line.contains("audited=0 "), "{audit}");
    let history = run_cli(&config, &["audit", "account", &alice])?;
    assert!(
        history.contains("AccountBlocked") && history.contains("VIRUS"),
        "{history}"
    );
    let throttled = run_cli(&config, &["audit", "account", &bob])?;
    assert!(
        throttled.contains("SubmissionDecided") && throttled.contains("recipients_per_hour"),
        "the account's history shows why it was throttled: {throttled}"
    );
    children.terminate()?;

    // No password anywhere the run reached.
    let needles = [
        Needle::new("alice's password", &alice_pw),
        Needle::new("bob's password", &bob_pw),
        Needle::new("the wrong password", &wrong_pw),
    ];
    let (mut records, mut hits) = (0, Vec::new());
    for topic in w.t.values() {
        let (read, found) = scan_topic(&needles, topic)?;
        records += read;
        hits.extend(found);
    }
    let files = files_below(&w.dir);
    for path in &files {
        hits.extend(scan_file(&needles, path, 0)?);
    }
    let (lines, found) = shared_logs.scan(&needles)?;
    hits.extend(found);
    assert!(
        records > 0 && lines > 0,
        "the scan read nothing: {records} records, {lines} lines"
    );
    assert!(hits.is_empty(), "passwords found:\n{}", hits.join("\n"));
    eprintln!(
        "secrets scan: {records} records on {} topics, {} files, {lines} lines of the shared logs: no password",
        w.t.len(),
        files.len()
    );
    Ok(())
}
