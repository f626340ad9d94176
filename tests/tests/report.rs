//! The monthly report over the real broker (F8): the reporter consumer
//! counts two months of events from every topic it reads (the submission
//! path's too), `mailfleet report` gives the exact figures as JSON, the
//! changes in Markdown, and an HTML page that headless Chromium renders
//! with its SVG charts.

use std::{collections::BTreeMap, path::Path, process::Command};

use mailfleet_events::{
    accounts::{
        AccountBlocked, AccountRegistered, AccountStatus, AccountStatusChanged, BlockReason,
        LoginChannel, LoginRecorded, PlanChanged, UsageChanged,
    },
    greylist::{GreylistDecided, GreylistReason, GreylistVerdict},
    mail::{MessageScanned, MessageStored, MessagesPurged, ScanVerdict},
    notify::NotificationRequested,
    runtime::{DeadLetter, DeadLetterKind},
    submission::{LimitAction, MessageSubmitted, SubmissionDecided, SubmitAction},
    Envelope, Event,
};
use mailfleet_runtime::{
    admin,
    producer::EventProducer,
    topology::{Route, TopicSpec},
    Topology,
};
use mailfleet_tests::*;

/// 2026-09-10T00:00:00Z and 2026-10-10T00:00:00Z.
const SEP: i64 = 1_788_998_400_000;
const OCT: i64 = 1_791_590_400_000;

fn env(id: &str, at: i64) -> Envelope {
    Envelope::new(id, at, "test")
}

struct Topics {
    accounts: String,
    usage: String,
    decisions: String,
    scanned: String,
    stored: String,
    notify: String,
    dead: String,
    submitted: String,
    submission_decisions: String,
}

async fn send<E: Event>(p: &EventProducer, topic: &str, key: &str, e: &E) -> anyhow::Result<()> {
    p.send(topic, key.as_bytes(), e).await?;
    Ok(())
}

fn status(
    account: &str,
    id: &str,
    at: i64,
    from: AccountStatus,
    to: AccountStatus,
) -> AccountStatusChanged {
    AccountStatusChanged {
        envelope: env(id, at),
        account: account.into(),
        from,
        to,
        reason: "test".into(),
        settings_hash: None,
    }
}

fn usage(account: &str, id: &str, at: i64, used: i64, messages: i64) -> UsageChanged {
    UsageChanged {
        envelope: env(id, at),
        account: account.into(),
        used_bytes: used,
        messages,
        quota_bytes: 1_000_000,
        over_quota: false,
        settings_hash: None,
    }
}

fn decided(id: &str, at: i64, verdict: GreylistVerdict, reason: GreylistReason) -> GreylistDecided {
    GreylistDecided {
        envelope: env(id, at),
        triplet: Some(format!("t-{id}")),
        verdict,
        reason,
        action: "DUNNO".into(),
        delay_seconds: 0,
        policy_host: "mx1".into(),
        settings_hash: None,
    }
}

fn scanned(id: &str, at: i64, verdict: ScanVerdict) -> MessageScanned {
    MessageScanned {
        envelope: env(id, at),
        account: "alice@example.test".into(),
        recipient: "alice@example.test".into(),
        sender: "x@sender.test".into(),
        blob_id: format!("b-{id}"),
        size: 100,
        received_at: at,
        message_id: None,
        verdict,
        signature: None,
        file: None,
        rule: None,
        scanner: "test".into(),
        spam: None,
        spam_error: None,
    }
}

/// October on the submission path: alice relays one message and submits
/// a virus, two of her recipients are deferred for a limit, one passes,
/// and she is blocked for abuse.
async fn record_submission(t: &Topics, p: &EventProducer) -> anyhow::Result<()> {
    let alice = "alice@example.test";
    for (id, verdict, action) in [
        ("sub-1", ScanVerdict::Clean, SubmitAction::Accepted),
        ("sub-2", ScanVerdict::Infected, SubmitAction::Rejected),
    ] {
        let m = MessageSubmitted {
            envelope: env(id, OCT + 10),
            account: alice.into(),
            sasl_username: alice.into(),
            sender: alice.into(),
            recipients: vec!["x@remote.test".into()],
            size: 700,
            queue_id: String::new(),
            message_id: None,
            client_address: "192.0.2.1".into(),
            verdict,
            signature: None,
            file: None,
            rule: None,
            scanner: "test".into(),
            action,
        };
        send(p, &t.submitted, alice, &m).await?;
    }
    for (id, limit) in [
        ("sd-1", None),
        ("sd-2", Some("recipients_per_hour")),
        ("sd-3", Some("recipients_per_hour")),
    ] {
        let d = SubmissionDecided {
            envelope: env(id, OCT + 20),
            account: alice.into(),
            recipient: "x@remote.test".into(),
            action: if limit.is_some() {
                LimitAction::Defer
            } else {
                LimitAction::Pass
            },
            limit: limit.map(str::to_string),
            reply: "DUNNO".into(),
            recipients_last_hour: 1,
            distinct_recipients_last_day: 1,
            messages_last_day: 1,
            bytes_last_day: 700,
            plan: "free".into(),
            policy_host: "sub1".into(),
            settings_hash: None,
        };
        send(p, &t.submission_decisions, alice, &d).await?;
    }
    let blocked = AccountBlocked {
        envelope: env("block-alice", OCT + 30),
        account: alice.into(),
        reason: BlockReason::Abuse,
        message_id: None,
        blob_id: None,
        detail: "test".into(),
    };
    send(p, &t.accounts, alice, &blocked).await
}

async fn record(t: &Topics, p: &EventProducer) -> anyhow::Result<()> {
    use AccountStatus::*;
    let (alice, bob, carol) = (
        "alice@example.test",
        "bob@example.test",
        "carol@example.test",
    );
    // September: alice and bob register and are active; alice stores 1000 B.
    for (who, plan, at) in [(alice, "free", SEP), (bob, "plus", SEP + 1)] {
        let reg = AccountRegistered {
            envelope: env(&format!("reg-{who}"), at),
            account: who.into(),
            password_hash: "{ARGON2}$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$aGFzaA".into(),
            plan: plan.into(),
            display_name: None,
        };
        send(p, &t.accounts, who, &reg).await?;
        send(
            p,
            &t.accounts,
            who,
            &status(who, &format!("act-{who}"), at + 5, Pending, Active),
        )
        .await?;
    }
    let login = |who: &str, id: &str, at: i64, channel: LoginChannel| LoginRecorded {
        envelope: env(id, at),
        account: who.into(),
        channel,
        ip: None,
    };
    send(
        p,
        &t.accounts,
        alice,
        &login(alice, "l1", SEP + 10, LoginChannel::Activesync),
    )
    .await?;
    send(p, &t.usage, alice, &usage(alice, "u1", SEP + 20, 1000, 2)).await?;
    send(
        p,
        &t.decisions,
        "k",
        &decided("g1", SEP + 30, GreylistVerdict::Defer, GreylistReason::New),
    )
    .await?;

    // October: carol registers (free) and moves to plus; alice grows to 3000 B;
    // bob goes inactive; logins over three channels.
    let reg = AccountRegistered {
        envelope: env("reg-carol", OCT),
        account: carol.into(),
        password_hash: "{ARGON2}$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$aGFzaA".into(),
        plan: "free".into(),
        display_name: None,
    };
    send(p, &t.accounts, carol, &reg).await?;
    send(
        p,
        &t.accounts,
        carol,
        &status(carol, "act-carol", OCT + 5, Pending, Active),
    )
    .await?;
    send(p, &t.usage, carol, &usage(carol, "u2", OCT + 6, 400, 1)).await?;
    let plan = PlanChanged {
        envelope: env("plan-carol", OCT + 7),
        account: carol.into(),
        plan: "plus".into(),
    };
    send(p, &t.accounts, carol, &plan).await?;
    send(p, &t.usage, alice, &usage(alice, "u3", OCT + 8, 3000, 5)).await?;
    send(
        p,
        &t.accounts,
        bob,
        &status(bob, "inact-bob", OCT + 9, Active, Inactive),
    )
    .await?;
    for (i, (who, ch)) in [
        (alice, LoginChannel::Imap),
        (alice, LoginChannel::Imap),
        (carol, LoginChannel::Webmail),
        (carol, LoginChannel::Syncml),
    ]
    .into_iter()
    .enumerate()
    {
        send(
            p,
            &t.accounts,
            who,
            &login(who, &format!("l-oct-{i}"), OCT + 10 + i as i64, ch),
        )
        .await?;
    }
    // A duplicate (the same event id again, as after an upstream crash).
    send(
        p,
        &t.accounts,
        alice,
        &login(alice, "l-oct-0", OCT + 10, LoginChannel::Imap),
    )
    .await?;
    for (i, (v, r)) in [
        (GreylistVerdict::Defer, GreylistReason::New),
        (GreylistVerdict::Defer, GreylistReason::TooEarly),
        (GreylistVerdict::Pass, GreylistReason::Passed),
        (GreylistVerdict::Pass, GreylistReason::WhitelistedClient),
        (GreylistVerdict::Pass, GreylistReason::AutoWhitelisted),
    ]
    .into_iter()
    .enumerate()
    {
        send(
            p,
            &t.decisions,
            &format!("k{i}"),
            &decided(&format!("g-oct-{i}"), OCT + 20 + i as i64, v, r),
        )
        .await?;
    }
    for (i, v) in [
        ScanVerdict::Clean,
        ScanVerdict::Clean,
        ScanVerdict::Infected,
        ScanVerdict::Banned,
    ]
    .into_iter()
    .enumerate()
    {
        send(
            p,
            &t.scanned,
            alice,
            &scanned(&format!("s{i}"), OCT + 30 + i as i64, v),
        )
        .await?;
    }
    for i in 0..2 {
        let stored = MessageStored {
            envelope: env(&format!("st{i}"), OCT + 40 + i),
            account: alice.into(),
            delivery_id: format!("d{i}"),
            folder: "INBOX".into(),
            file: format!("{i}.M1P1.test"),
            size: 1000,
            stored_bytes: 1000,
            blob_id: format!("blob{i}"),
            received_at: OCT,
            message_id: None,
        };
        send(p, &t.stored, alice, &stored).await?;
    }
    for (folder, count, bytes) in [("Trash", 3, 300), ("Spam", 1, 50)] {
        let purged = MessagesPurged {
            envelope: env(&format!("purged-{folder}"), OCT + 50),
            account: alice.into(),
            folder: folder.into(),
            count,
            bytes,
            files: Vec::new(),
            job: format!("{}-purge", folder.to_lowercase()),
        };
        send(p, &t.stored, alice, &purged).await?;
    }
    let notice = NotificationRequested {
        envelope: env("notice-bob", OCT + 60),
        to: bob.into(),
        template: "deactivated".into(),
        account: Some(bob.into()),
        params: BTreeMap::new(),
    };
    send(p, &t.notify, bob, &notice).await?;
    let dead = DeadLetter {
        envelope: env("dead-1", OCT + 70),
        consumer: "greylist".into(),
        topic: t.decisions.clone(),
        partition: 0,
        offset: 7,
        kind: DeadLetterKind::Undecodable,
        reason: "garbage".into(),
        original_key: None,
        original_value: Some(b"garbage".to_vec()),
        original_timestamp: None,
    };
    send(p, &t.dead, "dead", &dead).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reporter_counts_a_month_and_the_report_renders_in_chromium() -> anyhow::Result<()> {
    let name = unique("report");
    let t = |s: &str| format!("{name}.{s}");
    let topics = Topics {
        accounts: t("accounts"),
        usage: t("usage"),
        decisions: t("decisions"),
        scanned: t("scanned"),
        stored: t("stored"),
        notify: t("notify"),
        dead: t("dead"),
        submitted: t("submitted"),
        submission_decisions: t("submission-decisions"),
    };
    let reads = vec![
        topics.accounts.clone(),
        topics.usage.clone(),
        topics.decisions.clone(),
        topics.scanned.clone(),
        topics.stored.clone(),
        topics.notify.clone(),
        topics.dead.clone(),
        topics.submission_decisions.clone(),
        topics.submitted.clone(),
    ];
    let topology = Topology {
        topics: reads
            .iter()
            .map(|t| {
                let partitions = if *t == topics.dead { 1 } else { 3 };
                (t.clone(), TopicSpec::scratch(partitions))
            })
            .collect(),
        consumers: BTreeMap::from([(
            "reporter".to_string(),
            Route {
                group: format!("{name}-reporter"),
                reads: reads.clone(),
                writes: Vec::new(),
            },
        )]),
    };
    admin::apply(&kafka(), &topology).await?;
    let dir = scratch_dir(&name);
    let config = ConfigFiles {
        dir: &dir,
        topology_file: "topology.toml",
        topology: &topology,
        brokers: &kafka().brokers,
        data_dir: &dir.join("state"),
        deadletter: &topics.dead,
        metrics_port: free_port(),
    }
    .write("report.toml", "")?;
    let producer = EventProducer::new(&kafka(), "report-test")?;
    record(&topics, &producer).await?;
    record_submission(&topics, &producer).await?;

    let log = dir.join("reporter.log");
    let mut child = Children(vec![spawn_mailfleet(&config, &["run", "reporter"], &log)?]);
    wait_applied(&dir.join("state/reporter"), &reads).await?;
    child.terminate()?;

    let json: serde_json::Value = serde_json::from_str(&run_cli(
        &config,
        &[
            "report", "--month", "2026-10", "--format", "json", "--months", "3",
        ],
    )?)?;
    let month = |i: usize| &json["months"][i];
    assert_eq!(json["month"], "2026-10");
    assert_eq!(month(2)["month"], "2026-10");
    let oct = month(2);
    let sep = month(1);
    let aug = month(0);
    // Levels: active accounts carried over, moved by October's changes.
    assert_eq!(sep["levels"]["accounts"]["active"], 2, "{json:#}");
    assert_eq!(oct["levels"]["accounts"]["active"], 2, "{json:#}");
    assert_eq!(oct["levels"]["accounts"]["inactive"], 1, "{json:#}");
    assert!(
        aug["levels"].as_object().is_some_and(|l| l.is_empty()),
        "{json:#}"
    );
    // Storage by plan: alice (free) 3000; carol moved to plus with her 400.
    assert_eq!(sep["levels"]["storage_bytes"]["free"], 1000, "{json:#}");
    assert_eq!(oct["levels"]["storage_bytes"]["free"], 3000, "{json:#}");
    assert_eq!(oct["levels"]["storage_bytes"]["plus"], 400, "{json:#}");
    assert_eq!(oct["levels"]["index_messages"]["free"], 5, "{json:#}");
    // Counts: October's only, the duplicate login counted once.
    assert_eq!(oct["counts"]["registrations"][""], 1);
    assert_eq!(sep["counts"]["registrations"][""], 2);
    assert_eq!(oct["counts"]["logins"]["imap"], 2, "{json:#}");
    assert_eq!(oct["counts"]["logins"]["webmail"], 1);
    assert_eq!(oct["counts"]["logins"]["syncml"], 1);
    assert_eq!(sep["counts"]["logins"]["activesync"], 1);
    assert_eq!(oct["counts"]["greylist"]["deferred"], 2);
    assert_eq!(oct["counts"]["greylist"]["passed"], 1);
    assert_eq!(oct["counts"]["greylist"]["whitelisted"], 1);
    assert_eq!(oct["counts"]["greylist"]["auto-whitelisted"], 1);
    assert_eq!(oct["counts"]["scans"]["infected"], 1);
    assert_eq!(oct["counts"]["scans"]["banned"], 1);
    assert_eq!(oct["counts"]["scans"]["clean"], 2);
    assert_eq!(oct["counts"]["delivered"][""], 2);
    assert_eq!(oct["counts"]["purged_messages"]["Trash"], 3);
    assert_eq!(oct["counts"]["purged_bytes"]["Spam"], 50);
    assert_eq!(oct["counts"]["notifications"]["deactivated"], 1);
    assert_eq!(oct["counts"]["dead_letters"]["greylist"], 1);
    assert_eq!(oct["counts"]["submitted"]["accepted"], 1, "{json:#}");
    assert_eq!(oct["counts"]["submitted"]["rejected"], 1);
    assert_eq!(oct["counts"]["submitted_bytes"][""], 700);
    assert_eq!(oct["counts"]["submitted_scans"]["infected"], 1);
    assert_eq!(
        oct["counts"]["submission_deferrals"]["recipients_per_hour"],
        2
    );
    assert_eq!(oct["counts"]["blocks"]["abuse"], 1);

    let md = run_cli(&config, &["report", "--month", "2026-10", "--format", "md"])?;
    assert!(
        md.starts_with("# mailfleet monthly report: 2026-10"),
        "{md}"
    );
    assert!(md.contains("| Active accounts | 2 | 2 | = |"), "{md}");
    assert!(md.contains("- Logins rose from 1 to 4 (+300.0%)."), "{md}");
    assert!(
        md.contains("- Viruses found rose from 0 to 1 (new)."),
        "{md}"
    );
    assert!(
        md.contains("| Storage used | 3.40 kB | 1.00 kB | +2,400 (+240.0%) |"),
        "{md}"
    );
    assert!(md.contains("### Logins by channel"), "{md}");
    assert!(
        md.contains("| Submissions deferred for limits | 2 | 0 | +2 (new) |"),
        "{md}"
    );
    assert!(md.contains("### Account blocks by reason"), "{md}");

    let html = dir.join("report-2026-10.html");
    run_cli(
        &config,
        &[
            "report",
            "--month",
            "2026-10",
            "--out",
            &html.display().to_string(),
        ],
    )?;
    let page = std::fs::read_to_string(&html)?;
    // Self-contained: no script, nothing to fetch.
    assert!(!page.contains("<script") && !page.contains("src=") && !page.contains("href="));
    chromium_renders(&dir, &html)
}

/// Headless Chromium loads the page: its DOM holds the SVG charts, and a
/// screenshot of it is not blank.
fn chromium_renders(dir: &Path, html: &Path) -> anyhow::Result<()> {
    let chromium = Path::new("/usr/bin/chromium");
    anyhow::ensure!(
        chromium.exists(),
        "Debian's chromium is missing: ops/bootstrap installs it"
    );
    let url = format!("file://{}", html.display());
    let run = |extra: &[&str]| -> anyhow::Result<std::process::Output> {
        let profile = tempfile::tempdir()?;
        Ok(Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(&url)
            .output()?)
    };
    let dom = run(&["--dump-dom"])?;
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    let charts = dom_text.matches("<svg").count();
    assert!(
        charts >= 17 + 5,
        "{charts} charts in the rendered DOM:\n{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let shot = dir.join("report.png");
    let out = run(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1280,2400",
    ])?;
    anyhow::ensure!(
        shot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (width, height, pixels) = decode_png(&std::fs::read(&shot)?)?;
    assert_eq!((width, height), (1280, 2400));
    // Not blank: many pixels differ from the background, in several colours.
    let background = pixels[0];
    let inked = pixels.iter().filter(|p| **p != background).count();
    let colours: std::collections::HashSet<_> = pixels.iter().collect();
    assert!(
        inked > pixels.len() / 50,
        "{inked} of {} pixels inked",
        pixels.len()
    );
    assert!(colours.len() > 20, "{} colours", colours.len());
    Ok(())
}

/// The RGB pixels of a PNG.
fn decode_png(bytes: &[u8]) -> anyhow::Result<(u32, u32, Vec<[u8; 3]>)> {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info()?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf)?;
    let channels = info.color_type.samples();
    anyhow::ensure!(
        info.bit_depth == png::BitDepth::Eight,
        "{:?} bit depth",
        info.bit_depth
    );
    let pixels = buf[..info.buffer_size()]
        .chunks(channels)
        .map(|c| [c[0], c[1 % channels], c[2 % channels]])
        .collect();
    Ok((info.width, info.height, pixels))
}
