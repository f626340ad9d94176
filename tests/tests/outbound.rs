//! The outbound limits consumer against the real broker: `mailfleet run
//! outbound` decides a burst of one free account's submissions (the
//! first ones pass, the rest are deferred naming the limit, and sustained
//! deferrals block the account once, with one alert), blocks an account
//! that submits a virus, dead-letters poison records with the offending
//! value while later events still flow, serves its metrics, and
//! `mailfleet audit decisions outbound` recomputes every output from the
//! log with no diff.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use mailfleet_events::{
    accounts::{AccountBlocked, AccountRegistered, BlockReason, PlanChanged},
    admin::AdminAlert,
    mail::ScanVerdict,
    runtime::{DeadLetter, DeadLetterKind},
    submission::{
        LimitAction, MessageSubmitted, SubmissionAttempted, SubmissionDecided, SubmitAction,
    },
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
const ALICE: &str = "alice@example.test";
const BOB: &str = "bob@example.test";
/// The test's free plan: 10 recipients an hour; 5 deferrals in an hour
/// are abuse.
const PER_HOUR: usize = 10;
const ABUSE_AT: usize = 5;
const BURST: usize = 20;

struct World {
    dir: PathBuf,
    config: PathBuf,
    metrics_port: u16,
    attempts: String,
    submitted: String,
    accounts: String,
    decisions: String,
    alerts: String,
    dead: String,
}

async fn world() -> anyhow::Result<World> {
    let name = unique("outbound");
    let t = |s: &str| format!("{name}.{s}");
    let (attempts, submitted, accounts, decisions, alerts, dead) = (
        t("attempts"),
        t("submitted"),
        t("accounts"),
        t("decisions"),
        t("alerts"),
        t("dead"),
    );
    let topology = Topology {
        topics: [&attempts, &submitted, &accounts, &decisions, &alerts]
            .iter()
            .map(|t| (t.to_string(), TopicSpec::scratch(3)))
            .chain([(dead.clone(), TopicSpec::scratch(1))])
            .collect(),
        consumers: BTreeMap::from([(
            "outbound".to_string(),
            Route {
                group: format!("{name}-outbound"),
                reads: vec![attempts.clone(), submitted.clone(), accounts.clone()],
                writes: vec![decisions.clone(), accounts.clone(), alerts.clone()],
            },
        )]),
    };
    admin::apply(&kafka(), &topology).await?;
    let dir = scratch_dir(&name);
    let metrics_port = free_port();
    let rest = format!(
        "[consumers.outbound]\n\
         decisions_topic = {decisions:?}\naccounts_topic = {accounts:?}\nalerts_topic = {alerts:?}\n\
         abuse_deferrals_per_hour = {ABUSE_AT}\n\
         [consumers.outbound.plans.free]\n\
         recipients_per_hour = {PER_HOUR}\ndistinct_recipients_per_day = 100\n\
         messages_per_day = 50\nbytes_per_day = 10000000\n\
         [consumers.outbound.plans.plus]\n\
         recipients_per_hour = 100\ndistinct_recipients_per_day = 1000\n\
         messages_per_day = 500\nbytes_per_day = 100000000\n"
    );
    let config = ConfigFiles {
        dir: &dir,
        topology_file: "topology.toml",
        topology: &topology,
        brokers: &kafka().brokers,
        data_dir: &dir.join("state"),
        deadletter: &dead,
        metrics_port,
    }
    .write("outbound.toml", &rest)?;
    Ok(World {
        dir,
        config,
        metrics_port,
        attempts,
        submitted,
        accounts,
        decisions,
        alerts,
        dead,
    })
}

fn attempt(id: &str, account: &str, to: &str, size: i64, at: i64) -> SubmissionAttempted {
    SubmissionAttempted {
        envelope: Envelope::new(id, at, "policy@sub1"),
        account: account.into(),
        sasl_username: account.into(),
        sender: account.into(),
        recipient: to.into(),
        client_address: "192.0.2.10".into(),
        client_name: "webmail.example.test".into(),
        size,
        queue_id: String::new(),
        instance: format!("i-{id}"),
        policy_host: "sub1".into(),
    }
}

fn virus(id: &str, at: i64) -> MessageSubmitted {
    MessageSubmitted {
        envelope: Envelope::new(id, at, "milter@sub1"),
        account: BOB.into(),
        sasl_username: "Bob@Example.test".into(),
        sender: BOB.into(),
        recipients: vec!["victim@example.net".into()],
        size: 68,
        queue_id: "4Xq1".into(),
        message_id: Some("v1@example.test".into()),
        client_address: "192.0.2.11".into(),
        verdict: ScanVerdict::Infected,
        signature: Some("Eicar-Test-Signature".into()),
        file: None,
        rule: None,
        scanner: "ClamAV 1.4.3".into(),
        action: SubmitAction::Rejected,
    }
}

/// Every event of type `E` on `topic` (others skipped).
fn read<E: Event>(topic: &str) -> anyhow::Result<Vec<E>> {
    Ok(read_topic(topic, usize::MAX, Duration::from_secs(2))?
        .iter()
        .filter_map(|(_, v)| Registry::builtin().decode(v).ok())
        .collect())
}

/// The inputs: alice's registration and burst, bob's virus, three poison
/// records, then carol's attempt behind them.
async fn produce_inputs(w: &World, p: &EventProducer) -> anyhow::Result<()> {
    let registered = AccountRegistered {
        envelope: Envelope::new("reg-alice", T0, "api"),
        account: ALICE.into(),
        password_hash: "{ARGON2}x".into(),
        plan: "free".into(),
        display_name: None,
    };
    p.send(&w.accounts, ALICE.as_bytes(), &registered).await?;
    for i in 0..BURST {
        let a = attempt(
            &format!("burst-{i:02}"),
            ALICE,
            &format!("r{i}@example.net"),
            0,
            T0 + 60_000 + i as i64 * 1000,
        );
        p.send(&w.attempts, ALICE.as_bytes(), &a).await?;
    }
    p.send(
        &w.submitted,
        BOB.as_bytes(),
        &virus("virus-1", T0 + 120_000),
    )
    .await?;
    // Poison: no account, a negative size, a plan without limits.
    let empty = attempt("poison-empty", "", "r@example.net", 0, T0 + 130_000);
    p.send(&w.attempts, b"nobody", &empty).await?;
    let negative = attempt("poison-size", BOB, "r@example.net", -7, T0 + 131_000);
    p.send(&w.attempts, BOB.as_bytes(), &negative).await?;
    let gold = PlanChanged {
        envelope: Envelope::new("poison-plan", T0 + 132_000, "api"),
        account: BOB.into(),
        plan: "gold".into(),
    };
    p.send(&w.accounts, BOB.as_bytes(), &gold).await?;
    let carol = "carol@example.test";
    let after = attempt("after-poison", carol, "r@example.net", 100, T0 + 140_000);
    p.send(&w.attempts, carol.as_bytes(), &after).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_defer_a_burst_block_abuse_and_viruses_and_audit_clean() -> anyhow::Result<()> {
    let w = world().await?;
    let log = w.dir.join("outbound.log");
    let mut child = Children(vec![spawn_mailfleet(
        &w.config,
        &["run", "outbound"],
        &log,
    )?]);
    // It records its settings (a ConfigChanged in every input partition)
    // before it consumes: traffic after that is decided under them.
    let inputs = vec![w.attempts.clone(), w.submitted.clone(), w.accounts.clone()];
    wait_until(
        "the settings to be recorded",
        Duration::from_secs(60),
        || end_offsets(&inputs).is_ok_and(|ends| ends.values().sum::<i64>() >= 9),
    )
    .await?;
    let producer = EventProducer::new(&kafka(), "outbound-test")?;
    produce_inputs(&w, &producer).await?;
    let store = w.dir.join("state").join("outbound");
    wait_applied(&store, &inputs).await?;
    // Its own AccountBlocked outputs came back on the accounts topic.
    wait_applied(&store, &inputs).await?;

    let decided: Vec<SubmissionDecided> = read(&w.decisions)?;
    let mut burst: Vec<&SubmissionDecided> =
        decided.iter().filter(|d| d.account == ALICE).collect();
    burst.sort_by_key(|d| d.envelope.causation_id.clone());
    assert_eq!(burst.len(), BURST, "one decision per attempt: {decided:?}");
    for (i, d) in burst.iter().enumerate() {
        assert_eq!(
            d.envelope.causation_id.as_deref(),
            Some(&*format!("burst-{i:02}"))
        );
        assert_eq!(d.policy_host, "sub1");
        assert!(
            d.settings_hash.as_ref().is_some_and(|h| h.len() == 64),
            "{d:?}"
        );
        let expected = match i {
            i if i < PER_HOUR => None,
            i if i < PER_HOUR + ABUSE_AT => Some("recipients_per_hour"),
            _ => Some("blocked"),
        };
        assert_eq!(d.limit.as_deref(), expected, "attempt {i}: {d:?}");
        match expected {
            None => assert_eq!((d.action, d.reply.as_str()), (LimitAction::Pass, "DUNNO")),
            Some("recipients_per_hour") => assert_eq!(
                (d.action, d.reply.as_str()),
                (
                    LimitAction::Defer,
                    "DEFER 4.7.1 recipients per hour limit 10 reached for alice@example.test"
                )
            ),
            Some(_) => assert_eq!(d.action, LimitAction::Defer),
        }
        assert_eq!(d.recipients_last_hour, (i + 1).min(PER_HOUR) as i64);
    }

    let blocks: Vec<AccountBlocked> = read(&w.accounts)?;
    let abuse: Vec<_> = blocks
        .iter()
        .filter(|b| b.reason == BlockReason::Abuse)
        .collect();
    assert_eq!(abuse.len(), 1, "{blocks:?}");
    assert_eq!(abuse[0].account, ALICE);
    let viruses: Vec<_> = blocks
        .iter()
        .filter(|b| b.reason == BlockReason::Virus)
        .collect();
    assert_eq!(viruses.len(), 1, "{blocks:?}");
    assert_eq!(
        (
            viruses[0].account.as_str(),
            viruses[0].message_id.as_deref(),
            viruses[0].detail.as_str()
        ),
        (BOB, Some("v1@example.test"), "Eicar-Test-Signature")
    );
    let alerts: Vec<AdminAlert> = read(&w.alerts)?;
    let kinds: Vec<(&str, Option<&str>)> = alerts
        .iter()
        .map(|a| (a.kind.as_str(), a.account.as_deref()))
        .collect();
    assert_eq!(
        kinds.len(),
        2,
        "one abuse alert and one virus alert: {alerts:?}"
    );
    assert!(
        kinds.contains(&("abuse-from-account", Some(ALICE))),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("virus-from-account", Some(BOB))),
        "{kinds:?}"
    );
    assert!(alerts.iter().all(|a| a
        .detail
        .as_deref()
        .is_some_and(|d| d.contains("mailfleet account unblock"))));

    let letters: Vec<DeadLetter> = read(&w.dead)?;
    let reasons: Vec<&str> = letters.iter().map(|l| l.reason.as_str()).collect();
    assert_eq!(letters.len(), 3, "{reasons:?}");
    assert!(letters
        .iter()
        .all(|l| l.kind == DeadLetterKind::Rejected && l.consumer == "outbound"));
    for value in [
        "account \"\" is empty",
        "size -7 is negative",
        "plan \"gold\"",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(value)),
            "{value} in {reasons:?}"
        );
    }
    let carol: Vec<_> = decided
        .iter()
        .filter(|d| d.account == "carol@example.test")
        .collect();
    assert_eq!(carol.len(), 1, "events after the poison still flow");
    assert_eq!(
        (carol[0].action, carol[0].plan.as_str()),
        (LimitAction::Pass, "free")
    );

    let metrics = scrape(w.metrics_port).unwrap_or_default();
    for name in mailfleet_outbound::metrics::ALL {
        assert!(has_metric(&metrics, name), "{name} not served:\n{metrics}");
    }
    let deferred = metric_sum(
        &metrics,
        mailfleet_outbound::metrics::DECISIONS,
        &["action=\"defer\""],
    );
    assert_eq!(deferred, (BURST - PER_HOUR) as f64);
    child.terminate()?;

    let out = run_cli(&w.config, &["audit", "decisions", "outbound"])?;
    let last = out.lines().last().unwrap_or_default();
    let audited: usize = last
        .strip_prefix("audited=")
        .and_then(|r| r.strip_suffix(" diffs=0"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("audit: {out}"));
    // Every decision, both blocks, both alerts and the three dead letters.
    assert_eq!(audited, BURST + 1 + 2 + 2 + 3, "{out}");
    Ok(())
}
