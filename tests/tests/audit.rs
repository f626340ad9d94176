//! Replay and audit over the real broker (F7): the greylist, lifecycle and
//! index consumers run live on recorded inputs; `mailfleet replay` twice
//! gives identical digests, equal to the live stores' at the same offsets;
//! `mailfleet audit decisions` finds no diff, then catches a falsified
//! decision planted on the output topic; `audit account` and `audit mail`
//! tell an account's history and a mail's path from the events alone.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use mailfleet_events::{
    accounts::{
        AccountDeleted, AccountRegistered, AccountStatusChanged, LoginChannel, LoginRecorded,
    },
    clock::ClockTicked,
    greylist::{DeliveryAttempted, GreylistDecided, GreylistReason, GreylistVerdict},
    mail::{MailboxDeleted, MessageReceived, MessageScanned, MessageStored, ScanVerdict},
    Envelope, Event, Registry,
};
use mailfleet_runtime::{
    admin,
    producer::EventProducer,
    topology::{Route, TopicSpec},
    Topology,
};
use mailfleet_tests::*;

/// 2026-11-30T00:00:00Z.
const T0: i64 = 1_795_996_800_000;
const DAY: i64 = 86_400_000;

struct World {
    name: String,
    dir: PathBuf,
    config: PathBuf,
    attempts: String,
    decisions: String,
    accounts: String,
    stored: String,
    received: String,
    scanned: String,
}

async fn world() -> anyhow::Result<World> {
    let name = unique("audit");
    let t = |s: &str| format!("{name}.{s}");
    let (attempts, decisions, accounts, notify, status, stored, received, scanned, alerts, dead) = (
        t("attempts"),
        t("decisions"),
        t("accounts"),
        t("notify"),
        t("status"),
        t("stored"),
        t("received"),
        t("scanned"),
        t("alerts"),
        t("dead"),
    );
    let route = |c: &str, reads: &[&String], writes: &[&String]| {
        (
            c.to_string(),
            Route {
                group: format!("{name}-{c}"),
                reads: reads.iter().map(|s| s.to_string()).collect(),
                writes: writes.iter().map(|s| s.to_string()).collect(),
            },
        )
    };
    let topology = Topology {
        topics: [
            &attempts, &decisions, &accounts, &notify, &status, &stored, &received, &scanned,
            &alerts,
        ]
        .iter()
        .map(|t| (t.to_string(), TopicSpec::scratch(3)))
        .chain([(dead.clone(), TopicSpec::scratch(1))])
        .collect(),
        consumers: BTreeMap::from([
            route("greylist", &[&attempts], &[&decisions]),
            route("lifecycle", &[&accounts], &[&accounts, &notify, &status]),
            route("index", &[&stored], &[&accounts]),
        ]),
    };
    admin::apply(&kafka(), &topology).await?;
    let dir = scratch_dir(&name);
    let root = repo_root();
    // Copies of the whitelists: the test edits one.
    let (wc, wr) = (
        dir.join("whitelist_clients"),
        dir.join("whitelist_recipients"),
    );
    std::fs::copy(root.join("ops/greylist/whitelist_clients"), &wc)?;
    std::fs::copy(root.join("ops/greylist/whitelist_recipients"), &wr)?;
    let brokers = kafka().brokers;
    let rest = format!(
        "[lmtp]\ntopic = {received:?}\n\
         [api]\nevents_topic = {accounts:?}\n\
         [consumers.greylist]\nwhitelist_reload_s = 1\nwhitelist_clients = [{wc:?}]\nwhitelist_recipients = [{wr:?}]\n\
         [consumers.lifecycle]\nevents_topic = {accounts:?}\nnotify_topic = {notify:?}\nstatus_topic = {status:?}\n\
         [consumers.scanner]\nscanned_topic = {scanned:?}\nalerts_topic = {alerts:?}\naccounts_topic = {accounts:?}\n\
         [consumers.storage]\nstored_topic = {stored:?}\nnotify_topic = {notify:?}\naccounts_topic = {accounts:?}\n",
        wc = wc.display().to_string(),
        wr = wr.display().to_string(),
    );
    let config = ConfigFiles {
        dir: &dir,
        topology_file: "topology.toml",
        topology: &topology,
        brokers: &brokers,
        data_dir: &dir.join("state"),
        deadletter: &dead,
        metrics_port: free_port(),
    }
    .write("audit.toml", &rest)?;
    Ok(World {
        name,
        dir,
        config,
        attempts,
        decisions,
        accounts,
        stored,
        received,
        scanned,
    })
}

fn env(id: &str, at: i64) -> Envelope {
    Envelope::new(id, at, "test")
}

fn attempt(id: &str, at: i64, ip: &str, from: &str, to: &str) -> DeliveryAttempted {
    DeliveryAttempted {
        envelope: env(id, at),
        client_address: Some(ip.into()),
        client_name: Some("mx.sender.test".into()),
        reverse_client_name: Some("mx.sender.test".into()),
        helo_name: Some("mx.sender.test".into()),
        sender: Some(from.into()),
        recipient: Some(to.into()),
        instance: Some(format!("i-{id}")),
        size: Some(100),
        queue_id: None,
        policy_host: "mx1".into(),
        answered: None,
    }
}

async fn send<E: Event>(p: &EventProducer, topic: &str, key: &str, e: &E) -> anyhow::Result<()> {
    p.send(topic, key.as_bytes(), e).await?;
    Ok(())
}

/// The recorded inputs: attempts (first tries and retries), an account's
/// life, and stored mail.
async fn record_inputs(w: &World, p: &EventProducer) -> anyhow::Result<()> {
    for i in 0..12 {
        let (ip, from, to) = (
            format!("192.0.2.{}", i % 4 + 1),
            format!("s{i}@sender.test"),
            format!("r{}@example.test", i % 3),
        );
        let key = format!("192.0.2.0/{}", i % 4);
        let first = attempt(&format!("a{i}"), T0 + i * 1000, &ip, &from, &to);
        send(p, &w.attempts, &key, &first).await?;
        if i % 2 == 0 {
            let retry = attempt(&format!("r{i}"), T0 + 600_000 + i * 1000, &ip, &from, &to);
            send(p, &w.attempts, &key, &retry).await?;
        }
    }
    let bob = "bob@example.test";
    send(
        p,
        &w.accounts,
        bob,
        &AccountRegistered {
            envelope: env("reg-bob", T0),
            account: bob.into(),
            password_hash: "{ARGON2}$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$aGFzaA".into(),
            plan: "free".into(),
            display_name: None,
        },
    )
    .await?;
    send(
        p,
        &w.accounts,
        bob,
        &LoginRecorded {
            envelope: env("login-bob", T0 + DAY),
            account: bob.into(),
            channel: LoginChannel::Imap,
            ip: Some("198.51.100.7".into()),
        },
    )
    .await?;
    for (n, days) in [(1, 30), (2, 100)] {
        for partition in 0..3 {
            let tick = ClockTicked {
                envelope: env(
                    &format!("clock:{}:{partition}:{n}", w.accounts),
                    T0 + days * DAY,
                ),
                clock: "daily".into(),
                period_ms: DAY,
            };
            let bytes = mailfleet_events::encode(&tick)?;
            p.send_to_partition(&w.accounts, partition, &bytes).await?;
        }
    }
    for (i, (account, folder)) in [
        ("carol@example.test", "INBOX"),
        ("carol@example.test", "Spam"),
        ("dan@example.test", "INBOX"),
    ]
    .iter()
    .enumerate()
    {
        let stored = MessageStored {
            envelope: env(&format!("st{i}"), T0 + i as i64),
            account: account.to_string(),
            delivery_id: format!("d{i}"),
            folder: folder.to_string(),
            file: format!("{i}.M1P1.test"),
            size: 100 + i as i64,
            stored_bytes: 100 + i as i64,
            blob_id: format!("blob{i}"),
            received_at: T0,
            message_id: None,
        };
        send(p, &w.stored, account, &stored).await?;
    }
    // The deletion saga's mailbox step: the indexer reports its own step.
    let dan = "dan@example.test";
    let gone = MailboxDeleted {
        envelope: env("gone-dan", T0 + DAY),
        account: dan.into(),
        files: 1,
        bytes: 102,
        reason: "account-deleted".into(),
    };
    send(p, &w.stored, dan, &gone).await?;
    Ok(())
}

/// Run `consumer` live until its store holds every input, then stop it.
async fn run_live(w: &World, consumer: &str) -> anyhow::Result<()> {
    run_live_with(w, &w.config, consumer).await
}

async fn run_live_with(w: &World, config: &Path, consumer: &str) -> anyhow::Result<()> {
    let log = w.dir.join(format!("{consumer}.log"));
    let before = starts_logged(&log);
    let mut child = Children(vec![spawn_mailfleet(config, &["run", consumer], &log)?]);
    let topology = Topology::load(Some(&w.dir.join("topology.toml")))?;
    let inputs = topology.route(consumer)?.reads.clone();
    // A restart's store has applied the inputs already: wait for this run.
    wait_started(&log, before, 1).await?;
    wait_applied(&w.dir.join("state").join(consumer), &inputs).await?;
    child.terminate()?;
    Ok(())
}

fn mailfleet(config: &Path, args: &[&str]) -> anyhow::Result<Output> {
    Ok(Command::new(mailfleet_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .output()?)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_is_deterministic_and_audits_catch_a_falsified_decision() -> anyhow::Result<()> {
    let w = world().await?;
    let producer = EventProducer::new(&kafka(), "audit-test")?;
    // The first starts record the settings before any traffic.
    run_live(&w, "greylist").await?;
    run_live(&w, "lifecycle").await?;
    record_inputs(&w, &producer).await?;
    for consumer in ["greylist", "lifecycle", "index"] {
        run_live(&w, consumer).await?;
        let live = live_digests(&w.dir.join("state").join(consumer))?;
        assert!(!live.is_empty(), "{consumer}: live state is empty");
        let mut replays = Vec::new();
        for n in 0..2 {
            let dir = w.dir.join(format!("replay-{consumer}-{n}"));
            let out = mailfleet(
                &w.config,
                &[
                    "replay",
                    consumer,
                    "--state-dir",
                    &dir.display().to_string(),
                ],
            )?;
            assert!(out.status.success(), "replay {consumer}: {}", text(&out));
            replays.push(replay_digests(&String::from_utf8_lossy(&out.stdout)));
        }
        assert_eq!(replays[0], replays[1], "{consumer}: replaying twice");
        assert_eq!(
            replays[0], live,
            "{consumer}: the live state at the same offsets"
        );

        let out = mailfleet(&w.config, &["audit", "decisions", consumer])?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let last = stdout.lines().last().unwrap_or_default();
        assert!(out.status.success(), "audit {consumer}: {}", text(&out));
        assert!(
            last.starts_with("audited=")
                && last.ends_with(" diffs=0")
                && last != "audited=0 diffs=0",
            "{consumer}: {stdout}"
        );
    }
    let replayed_out = mailfleet(
        &w.config,
        &[
            "replay",
            "greylist",
            "--state-dir",
            &w.dir.join("replay-greylist-0").display().to_string(),
        ],
    )?;
    assert!(
        !replayed_out.status.success(),
        "a used state folder is refused"
    );
    assert!(
        text(&replayed_out).contains("already holds"),
        "{}",
        text(&replayed_out)
    );

    // The lifecycle's transitions carry the hash of its thresholds.
    let changes: Vec<AccountStatusChanged> =
        read_topic(&w.accounts, usize::MAX, Duration::from_secs(2))?
            .iter()
            .filter_map(|(_, v)| Registry::builtin().decode(v).ok())
            .collect();
    assert!(changes.len() >= 2, "{changes:?}");
    assert!(
        changes
            .iter()
            .all(|c| c.settings_hash.as_ref().is_some_and(|h| h.len() == 64)),
        "{changes:?}"
    );

    // The settings in force are part of the log: a shorter delay from now
    // on changes new decisions, and yesterday's stay right in the audit
    // under either config file.
    let shorter = w.dir.join("audit-delay60.toml");
    std::fs::write(
        &shorter,
        std::fs::read_to_string(&w.config)?.replace(
            "[consumers.greylist]\n",
            "[consumers.greylist]\ndelay_s = 60\n",
        ),
    )?;
    // Restarted with it: the new settings are recorded, then traffic.
    run_live_with(&w, &shorter, "greylist").await?;
    for i in 0..3 {
        let (ip, from, to) = (
            "198.51.100.9",
            format!("late{i}@sender.test"),
            "r9@example.test",
        );
        let at = T0 + 2 * DAY + i * 1000;
        let key = "198.51.100.0";
        send(
            &producer,
            &w.attempts,
            key,
            &attempt(&format!("l{i}"), at, ip, &from, to),
        )
        .await?;
        let retry = attempt(&format!("lr{i}"), at + 90_000, ip, &from, to);
        send(&producer, &w.attempts, key, &retry).await?;
    }
    run_live_with(&w, &shorter, "greylist").await?;
    let decided: Vec<GreylistDecided> =
        read_topic(&w.decisions, usize::MAX, Duration::from_secs(2))?
            .iter()
            .filter_map(|(_, v)| Registry::builtin().decode(v).ok())
            .collect();
    let hash_of = |prefix: &str| -> Vec<Option<String>> {
        decided
            .iter()
            .filter(|d| {
                d.envelope
                    .causation_id
                    .as_deref()
                    .is_some_and(|c| c.starts_with(prefix))
            })
            .map(|d| d.settings_hash.clone())
            .collect()
    };
    let (old, new) = (hash_of("a"), hash_of("l"));
    assert!(old.iter().all(|h| h.is_some() && *h == old[0]), "{old:?}");
    assert!(new.iter().all(|h| h.is_some() && *h == new[0]), "{new:?}");
    assert_ne!(old[0], new[0], "each decision records the settings it used");
    let late_retries: Vec<&GreylistDecided> = decided
        .iter()
        .filter(|d| {
            d.envelope
                .causation_id
                .as_deref()
                .is_some_and(|c| c.starts_with("lr"))
        })
        .collect();
    assert_eq!(late_retries.len(), 3);
    assert!(
        late_retries
            .iter()
            .all(|d| d.verdict == GreylistVerdict::Pass),
        "90 s is past the new 60 s delay: {late_retries:?}"
    );
    // An edited whitelist is new settings too: the running greylist
    // records it, and decides with it from that point of the log on.
    let log = w.dir.join("greylist-live.log");
    let mut live = Children(vec![spawn_mailfleet(&shorter, &["run", "greylist"], &log)?]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let clients = w.dir.join("whitelist_clients");
    let mut edited = std::fs::read_to_string(&clients)?;
    edited.push_str("\n# added by the audit test\n203.0.113.0/24\n");
    std::fs::write(&clients, edited)?;
    wait_until(
        "the edited whitelist recorded",
        Duration::from_secs(30),
        || {
            read_topic(&w.attempts, usize::MAX, Duration::from_secs(1)).is_ok_and(|records| {
                records.iter().any(|(_, v)| {
                    Registry::builtin()
                        .decode::<mailfleet_events::config::ConfigChanged>(v)
                        .is_ok_and(|c| c.settings.contains("203.0.113.0/24"))
                })
            })
        },
    )
    .await?;
    live.terminate()?;
    let from_new = attempt(
        "wl0",
        T0 + 3 * DAY,
        "203.0.113.5",
        "x@new.test",
        "r9@example.test",
    );
    send(&producer, &w.attempts, "203.0.113.0", &from_new).await?;
    run_live_with(&w, &shorter, "greylist").await?;
    let whitelisted = read_topic(&w.decisions, usize::MAX, Duration::from_secs(2))?
        .iter()
        .filter_map(|(_, v)| Registry::builtin().decode::<GreylistDecided>(v).ok())
        .find(|d| d.envelope.causation_id.as_deref() == Some("wl0"))
        .expect("a decision for the new client");
    assert_eq!(
        whitelisted.reason,
        GreylistReason::WhitelistedClient,
        "{whitelisted:?}"
    );
    for config in [&w.config, &shorter] {
        let out = mailfleet(config, &["audit", "decisions", "greylist"])?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{}: {}", config.display(), text(&out));
        assert!(stdout.trim_end().ends_with(" diffs=0"), "{stdout}");
    }

    // Falsify one recorded decision: the same id, the other verdict.
    let decisions = read_topic(&w.decisions, usize::MAX, Duration::from_secs(2))?;
    let (key, mut forged) = decisions
        .iter()
        .find_map(|(k, v)| {
            let d: GreylistDecided = Registry::builtin().decode(v).ok()?;
            (d.verdict == GreylistVerdict::Defer).then(|| (k.clone().unwrap_or_default(), d))
        })
        .expect("a deferred attempt");
    forged.verdict = GreylistVerdict::Pass;
    forged.delay_seconds = 0;
    let forged_id = forged.envelope.event_id.clone();
    producer.send(&w.decisions, &key, &forged).await?;
    let out = mailfleet(&w.config, &["audit", "decisions", "greylist"])?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "a diff exits non-zero: {stdout}");
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.ends_with(" diffs=1"), "{stdout}");
    assert!(stdout.contains(&format!("diff {forged_id}")), "{stdout}");
    for part in [
        "  input ",
        "  recorded ",
        "  recomputed ",
        "DeliveryAttempted",
        "PASS",
        "DEFER",
    ] {
        assert!(stdout.contains(part), "{part:?} missing: {stdout}");
    }

    // An account's history, from the events alone.
    let out = mailfleet(&w.config, &["audit", "account", "Bob@Example.test"])?;
    let history = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", text(&out));
    let order: Vec<usize> = [
        "AccountRegistered",
        "pending -> active (reason: registered)",
        "LoginRecorded",
        "active -> inactive (reason: ",
        "NotificationRequested",
    ]
    .iter()
    .map(|p| {
        history
            .find(p)
            .unwrap_or_else(|| panic!("{p:?} missing: {history}"))
    })
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "in order: {history}");
    assert!(history.contains("channel=IMAP"), "{history}");
    assert!(!history.contains("ARGON2"), "no password hash: {history}");
    // After the deletion saga's tombstone the history is still all there.
    let bob = "bob@example.test";
    let tombstone = AccountDeleted {
        envelope: env("deleted-bob", T0 + 102 * DAY),
        account: bob.into(),
        reason: "grace-expired".into(),
    };
    send(&producer, &w.accounts, bob, &tombstone).await?;
    let out = mailfleet(&w.config, &["audit", "account", bob])?;
    let after = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", text(&out));
    assert!(after.starts_with(&history), "{after}");
    let last = after.lines().last().unwrap_or_default();
    assert!(
        last.contains("AccountDeleted") && last.contains("reason=grace-expired"),
        "{after}"
    );

    // A mail's path: greylisting, reception, scan, storage.
    let to = "r0@example.test";
    let received = MessageReceived {
        envelope: env("recv-1", T0 + 700_000),
        account: to.into(),
        recipient: to.into(),
        sender: "s0@sender.test".into(),
        blob_id: "blob-1".into(),
        size: 120,
        received_at: T0 + 700_000,
        body_type: mailfleet_events::mail::BodyType::SevenBit,
        lhlo: "mx".into(),
        session_id: "sess".into(),
        recipient_count: 1,
        recipient_index: 0,
        message_id: Some("<m1@sender.test>".into()),
        header_from: None,
        subject: Some("hello".into()),
        header_date: None,
        client_address: None,
        client_name: None,
        client_helo: None,
        queue_id: None,
    };
    send(&producer, &w.received, to, &received).await?;
    let scanned = MessageScanned {
        envelope: Envelope::caused_by(&received.envelope, "scanner"),
        account: to.into(),
        recipient: to.into(),
        sender: received.sender.clone(),
        blob_id: "blob-1".into(),
        size: 120,
        received_at: received.received_at,
        message_id: received.message_id.clone(),
        verdict: ScanVerdict::Clean,
        signature: None,
        file: None,
        rule: None,
        scanner: "test".into(),
        spam: None,
        spam_error: None,
    };
    let mut scanned = scanned;
    scanned.envelope.event_id = "scan-1".into();
    send(&producer, &w.scanned, to, &scanned).await?;
    let stored = MessageStored {
        envelope: Envelope::caused_by(&scanned.envelope, "storage"),
        account: to.into(),
        delivery_id: "recv-1".into(),
        folder: "INBOX".into(),
        file: "1.M2P2.test".into(),
        size: 120,
        stored_bytes: 120,
        blob_id: "blob-1".into(),
        received_at: received.received_at,
        message_id: received.message_id.clone(),
    };
    send(&producer, &w.stored, to, &stored).await?;
    let out = mailfleet(&w.config, &["audit", "mail", "m1@sender.test"])?;
    let path = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", text(&out));
    let order: Vec<usize> = [
        "greylisting of <s0@sender.test> -> <r0@example.test>",
        "DEFER (",
        "PASS (",
        "received for r0@example.test",
        "scanned: verdict=CLEAN",
        "stored in INBOX",
    ]
    .iter()
    .map(|p| {
        path.find(p)
            .unwrap_or_else(|| panic!("{p:?} missing: {path}"))
    })
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "in order: {path}");
    let _ = &w.name;
    Ok(())
}

/// The line of `history` holding `event`, which must hold every one of
/// `fields` too; its position, for the order.
fn line_of(history: &str, event: &str, fields: &[&str]) -> usize {
    let (at, line) = history
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains(event) && fields.iter().all(|f| l.contains(f)))
        .unwrap_or_else(|| panic!("no line with {event:?} and {fields:?}:\n{history}"));
    assert!(!line.contains("ARGON2"), "no password hash: {line}");
    at
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_account_and_mail_tell_every_step() -> anyhow::Result<()> {
    use mailfleet_events::{
        accounts::{
            AccountBlocked, AccountReactivated, AccountStatus, BlockReason, DeletionStep,
            DeletionStepCompleted, DeletionStepRequested, MigrationCompleted, MigrationStarted,
            PlanChanged, QuotaChanged,
        },
        mail::{MessageQuarantined, QuarantineReason},
    };
    let w = world().await?;
    let p = EventProducer::new(&kafka(), "audit-test")?;
    let eve = "eve@example.test";
    let at = |s: i64| T0 + s * 1000;
    let status = |id: &str, s: i64, from, to, reason: &str| AccountStatusChanged {
        envelope: env(id, at(s)),
        account: eve.into(),
        from,
        to,
        reason: reason.into(),
        settings_hash: None,
    };
    let registered = AccountRegistered {
        envelope: env("eve-reg", at(0)),
        account: eve.into(),
        password_hash: "{ARGON2}$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$aGFzaA".into(),
        plan: "free".into(),
        display_name: None,
    };
    send(&p, &w.accounts, eve, &registered).await?;
    let quota = QuotaChanged {
        envelope: env("eve-quota", at(1)),
        account: eve.into(),
        quota_bytes: Some(2_000_000),
    };
    send(&p, &w.accounts, eve, &quota).await?;
    let plan = PlanChanged {
        envelope: env("eve-plan", at(2)),
        account: eve.into(),
        plan: "plus".into(),
    };
    send(&p, &w.accounts, eve, &plan).await?;
    let blocked = AccountBlocked {
        envelope: env("eve-block", at(3)),
        account: eve.into(),
        reason: BlockReason::Abuse,
        message_id: None,
        blob_id: None,
        detail: "spam complaints".into(),
    };
    send(&p, &w.accounts, eve, &blocked).await?;
    let inactive = status(
        "eve-inactive",
        4,
        AccountStatus::Active,
        AccountStatus::Inactive,
        "idle",
    );
    send(&p, &w.accounts, eve, &inactive).await?;
    let reactivated = AccountReactivated {
        envelope: env("eve-reactivated", at(5)),
        account: eve.into(),
        by: "admin@example.test".into(),
    };
    send(&p, &w.accounts, eve, &reactivated).await?;
    let started = MigrationStarted {
        envelope: env("eve-mig-start", at(6)),
        account: eve.into(),
        target_mail_root: "/srv/mail2".into(),
        target_ldap_base: "ou=people,dc=two,dc=test".into(),
        by: "ops".into(),
    };
    send(&p, &w.accounts, eve, &started).await?;
    let migrated = MigrationCompleted {
        envelope: env("eve-mig-done", at(7)),
        account: eve.into(),
        target_mail_root: "/srv/mail2".into(),
        target_ldap_base: "ou=people,dc=two,dc=test".into(),
        messages: 3,
        bytes: 300,
        entries: 4,
        token_delivery: "mailed to the account".into(),
    };
    send(&p, &w.accounts, eve, &migrated).await?;
    let deleting = status(
        "eve-deleting",
        8,
        AccountStatus::Active,
        AccountStatus::Deleting,
        "admin",
    );
    send(&p, &w.accounts, eve, &deleting).await?;
    let steps = [DeletionStep::Maildir, DeletionStep::Directory];
    for (i, step) in steps.into_iter().enumerate() {
        let s = 9 + 3 * i as i64;
        let requested = DeletionStepRequested {
            envelope: env(&format!("eve-req-{i}"), at(s)),
            account: eve.into(),
            step,
            attempt: 1,
        };
        send(&p, &w.accounts, eve, &requested).await?;
        if step == DeletionStep::Maildir {
            let gone = MailboxDeleted {
                envelope: env("eve-mailbox-gone", at(s + 1)),
                account: eve.into(),
                files: 3,
                bytes: 300,
                reason: "account-deleted".into(),
            };
            send(&p, &w.stored, eve, &gone).await?;
        }
        let done = DeletionStepCompleted {
            envelope: env(&format!("eve-done-{i}"), at(s + 2)),
            account: eve.into(),
            step,
            detail: format!("step {i} removed"),
        };
        send(&p, &w.accounts, eve, &done).await?;
    }
    let tombstone = AccountDeleted {
        envelope: env("eve-deleted", at(20)),
        account: eve.into(),
        reason: "admin".into(),
    };
    send(&p, &w.accounts, eve, &tombstone).await?;

    let out = mailfleet(&w.config, &["audit", "account", "EVE@example.test"])?;
    let history = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", text(&out));
    let expected: [(&str, &[&str]); 16] = [
        ("AccountRegistered", &["plan=free"]),
        ("QuotaChanged", &["quota_bytes=2000000"]),
        ("PlanChanged", &["plan=plus"]),
        (
            "AccountBlocked",
            &["reason=ABUSE", "detail=spam complaints"],
        ),
        (
            "AccountStatusChanged",
            &["active -> inactive (reason: idle)"],
        ),
        ("AccountReactivated", &["by=admin@example.test"]),
        (
            "MigrationStarted",
            &[
                "target_mail_root=/srv/mail2",
                "target_ldap_base=ou=people,dc=two,dc=test",
                "by=ops",
            ],
        ),
        (
            "MigrationCompleted",
            &[
                "messages=3",
                "bytes=300",
                "entries=4",
                "target_mail_root=/srv/mail2",
            ],
        ),
        (
            "AccountStatusChanged",
            &["active -> deleting (reason: admin)"],
        ),
        ("DeletionStepRequested", &["step=MAILDIR", "attempt=1"]),
        (
            "MailboxDeleted",
            &["files=3", "bytes=300", "reason=account-deleted"],
        ),
        (
            "DeletionStepCompleted",
            &["step=MAILDIR", "detail=step 0 removed"],
        ),
        ("DeletionStepRequested", &["step=DIRECTORY", "attempt=1"]),
        (
            "DeletionStepCompleted",
            &["step=DIRECTORY", "detail=step 1 removed"],
        ),
        ("AccountDeleted", &["reason=admin"]),
        ("2026-11-30T00:00:20.000Z", &["AccountDeleted"]),
    ];
    let order: Vec<usize> = expected
        .iter()
        .map(|(event, fields)| line_of(&history, event, fields))
        .collect();
    assert!(
        order[..15].windows(2).all(|w| w[0] < w[1]),
        "in order {order:?}:\n{history}"
    );
    // One line per event, each once: 15 events and the head.
    assert_eq!(history.lines().count(), 16, "{history}");

    // A mail found by the MX's queue id, as the LMTP server recorded it
    // (XFORWARD IDENT); Postfix reports none at the first RCPT, so the
    // policy request has none.
    let (to, from) = ("r1@example.test", "q@sender.test");
    let first = attempt("q-a", T0 + 50_000, "192.0.2.77", from, to);
    send(&p, &w.attempts, "192.0.2.0", &first).await?;
    let copy = |id: &str, message_id: &str, queue_id: &str| MessageReceived {
        envelope: env(id, T0 + 60_000),
        account: to.into(),
        recipient: to.into(),
        sender: from.into(),
        blob_id: format!("blob-{id}"),
        size: 321,
        received_at: T0 + 60_000,
        body_type: mailfleet_events::mail::BodyType::SevenBit,
        lhlo: "mx".into(),
        session_id: "sess".into(),
        recipient_count: 1,
        recipient_index: 0,
        message_id: Some(message_id.into()),
        header_from: None,
        subject: None,
        header_date: None,
        client_address: Some("192.0.2.77".into()),
        client_name: None,
        client_helo: None,
        queue_id: Some(queue_id.into()),
    };
    let scan = |received: &MessageReceived, id: &str, verdict, signature: Option<&str>| {
        let mut s = MessageScanned {
            envelope: Envelope::caused_by(&received.envelope, "scanner"),
            account: to.into(),
            recipient: to.into(),
            sender: from.into(),
            blob_id: received.blob_id.clone(),
            size: received.size,
            received_at: received.received_at,
            message_id: received.message_id.clone(),
            verdict,
            signature: signature.map(str::to_string),
            file: None,
            rule: None,
            scanner: "clamd".into(),
            spam: None,
            spam_error: None,
        };
        s.envelope.event_id = id.into();
        s
    };
    let clean = copy("recv-q", "<q1@sender.test>", "4QxTest1");
    send(&p, &w.received, to, &clean).await?;
    let clean_scan = scan(&clean, "scan-q", ScanVerdict::Clean, None);
    send(&p, &w.scanned, to, &clean_scan).await?;
    let stored = MessageStored {
        envelope: Envelope::caused_by(&clean_scan.envelope, "storage"),
        account: to.into(),
        delivery_id: "recv-q".into(),
        folder: "INBOX".into(),
        file: "9.M9P9.test".into(),
        size: 321,
        stored_bytes: 321,
        blob_id: clean.blob_id.clone(),
        received_at: clean.received_at,
        message_id: clean.message_id.clone(),
    };
    send(&p, &w.stored, to, &stored).await?;
    // A quarantined one: a virus.
    let virus = copy("recv-v", "<v1@sender.test>", "4QxTest2");
    send(&p, &w.received, to, &virus).await?;
    let virus_scan = scan(
        &virus,
        "scan-v",
        ScanVerdict::Infected,
        Some("Eicar-Test-Signature"),
    );
    send(&p, &w.scanned, to, &virus_scan).await?;
    let quarantined = MessageQuarantined {
        envelope: Envelope::caused_by(&virus_scan.envelope, "storage"),
        account: to.into(),
        delivery_id: "recv-v".into(),
        reason: QuarantineReason::Infected,
        detail: "Eicar-Test-Signature".into(),
        path: "quarantine/v1.eml".into(),
        size: 321,
        blob_id: virus.blob_id.clone(),
        sender: from.into(),
        message_id: virus.message_id.clone(),
    };
    send(&p, &w.stored, to, &quarantined).await?;

    let path_of = |id: &str| -> anyhow::Result<String> {
        let out = mailfleet(&w.config, &["audit", "mail", id])?;
        anyhow::ensure!(out.status.success(), "audit mail {id}: {}", text(&out));
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let in_order = |path: &str, parts: &[&str]| {
        let at: Vec<usize> = parts
            .iter()
            .map(|p| {
                path.find(p)
                    .unwrap_or_else(|| panic!("{p:?} missing: {path}"))
            })
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "in order: {path}");
    };
    let by_queue = path_of("4QxTest1")?;
    in_order(
        &by_queue,
        &[
            "path of 4QxTest1",
            "greylisting of <q@sender.test> -> <r1@example.test>",
            "attempt from 192.0.2.77",
            "received for r1@example.test from <q@sender.test>, 321 bytes, blob blob-recv-q",
            "scanned: verdict=CLEAN",
            "stored in INBOX as 9.M9P9.test",
        ],
    );
    assert!(
        !by_queue.contains("blob-recv-v"),
        "only that mail: {by_queue}"
    );
    let virus_path = path_of("v1@sender.test")?;
    in_order(
        &virus_path,
        &["received for r1@example.test", "scanned: ", "quarantined: "],
    );
    let scanned_line = line_of(
        &virus_path,
        "scanned: ",
        &["verdict=INFECTED", "signature=Eicar-Test-Signature"],
    );
    let quarantine_line = line_of(
        &virus_path,
        "quarantined: ",
        &[
            "reason=INFECTED",
            "path=quarantine/v1.eml",
            "detail=Eicar-Test-Signature",
        ],
    );
    assert!(scanned_line < quarantine_line, "{virus_path}");
    assert!(
        !virus_path.contains("stored in"),
        "never stored: {virus_path}"
    );
    // By its queue id too.
    let virus_by_queue = path_of("4QxTest2")?;
    assert!(virus_by_queue.contains("quarantined: "), "{virus_by_queue}");
    Ok(())
}

/// An attempt the policy server answered at once carries that answer; the
/// audit compares it with what the rules give: one that agrees passes, one
/// planted with an answer the rules do not give is listed and fails it.
#[tokio::test(flavor = "multi_thread")]
async fn an_answer_given_at_once_is_audited_against_the_rules() -> anyhow::Result<()> {
    let w = world().await?;
    let producer = EventProducer::new(&kafka(), "audit-test")?;
    run_live(&w, "greylist").await?;
    let (ip, key) = ("192.0.2.9", "192.0.2.0/24");
    let (from, to) = ("known@sender.test", "r@example.test");
    // Deferred, then let through after the delay, then a repeat that the
    // policy server answered at once: the rules agree.
    send(
        &producer,
        &w.attempts,
        key,
        &attempt("k1", T0, ip, from, to),
    )
    .await?;
    send(
        &producer,
        &w.attempts,
        key,
        &attempt("k2", T0 + 301_000, ip, from, to),
    )
    .await?;
    let repeat = DeliveryAttempted {
        answered: Some("DUNNO".into()),
        ..attempt("k3", T0 + 400_000, ip, from, to)
    };
    send(&producer, &w.attempts, key, &repeat).await?;
    run_live(&w, "greylist").await?;
    let out = mailfleet(&w.config, &["audit", "decisions", "greylist"])?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout.contains("answered at once: 1 inputs, 0 answered otherwise"),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with(" diffs=0"), "{stdout}");

    // A new triplet "answered" DUNNO: the rules defer it.
    let wrong = DeliveryAttempted {
        answered: Some("DUNNO".into()),
        ..attempt("k4", T0 + 500_000, ip, "new@sender.test", to)
    };
    send(&producer, &w.attempts, key, &wrong).await?;
    run_live(&w, "greylist").await?;
    let out = mailfleet(&w.config, &["audit", "decisions", "greylist"])?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !out.status.success(),
        "a wrong answer fails the audit: {stdout}"
    );
    assert!(
        stdout.contains("answered at once: 2 inputs, 1 answered otherwise"),
        "{stdout}"
    );
    assert!(
        stdout.contains("answered \"DUNNO\" at once, but the rules give Some(\"DEFER_IF_PERMIT"),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with(" diffs=1"), "{stdout}");
    Ok(())
}
