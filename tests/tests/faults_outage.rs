//! A dependency down for [`OUTAGE`] while events keep coming: slapd under
//! the directory consumer, clamd under the scanner (the broker's outage is
//! in `faults_kafka.rs`). Each runs `mailfleet run <consumer>` against a
//! private instance (`outage::Private`: the `ops/` script with its own
//! folder and port), so no shared server is stopped.
//!
//! Each test checks that during the outage the consumer stays up, its store
//! (and the group's committed offsets) stay at the first input that had to
//! fail, and its metrics show the outage; and that once the dependency is
//! back, with no restart of the consumer, every input is handled exactly
//! once (outputs counted by event id, side effects looked at). The figures
//! are printed as `FAULT ...` lines (`--nocapture`).
//!
//! The two run one after another, so that their timings do not disturb
//! each other on a small machine.

use std::time::{Duration, Instant};

use mailfleet_events::{
    accounts::{AccountRegistered, DeletionStep, DeletionStepCompleted, DeletionStepRequested},
    admin::AdminAlert,
    mail::{MessageScanned, ScanVerdict},
    runtime::DeadLetter,
    Envelope,
};
use mailfleet_runtime::{
    metrics as m,
    producer::EventProducer,
    topology::{Route, TopicSpec},
    Topology,
};
use mailfleet_tests::{
    directory::{account_dn, argon2_hash, events_of, random_password, DirectoryWorld, PEOPLE},
    ingest::*,
    outage::*,
    *,
};

/// How long each dependency stays down.
const OUTAGE: Duration = Duration::from_secs(30);
/// Inputs fed during the outage, evenly spread over it.
const FEEDS: u32 = 10;
/// How long a consumer may take to catch up once its dependency is back.
const RECOVERY: Duration = Duration::from_secs(60);

/// Every record of `topic` up to its end now.
fn to_end(topic: &str) -> anyhow::Result<Vec<Consumed>> {
    Ok(
        mailfleet_runtime::read::read_to_end(&kafka(), topic, "faults-outage")?
            .into_iter()
            .map(|r| (r.key, r.payload))
            .collect(),
    )
}

/// One outage test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------- slapd

fn registered(account: &str, hash: &str) -> AccountRegistered {
    AccountRegistered {
        envelope: Envelope::new(format!("reg-{account}"), 1_000, "test"),
        account: account.into(),
        password_hash: hash.into(),
        plan: "free".into(),
        display_name: None,
    }
}

/// A config for `mailfleet run directory` on the world's topics and the
/// private slapd.
fn directory_config(
    world: &DirectoryWorld,
    slapd: &Private,
    metrics: u16,
) -> anyhow::Result<std::path::PathBuf> {
    let topology = Topology {
        topics: [&world.accounts, &world.alerts, &world.deadletter]
            .iter()
            .map(|t| (t.to_string(), TopicSpec::scratch(3)))
            .collect(),
        consumers: [(
            "directory".to_string(),
            Route {
                group: format!("{}-directory", world.name),
                reads: vec![world.accounts.clone()],
                writes: vec![world.accounts.clone(), world.alerts.clone()],
            },
        )]
        .into(),
    };
    let rest = format!(
        "[ldap]\nurl = {url:?}\nbind_password_file = {password:?}\ntimeout_ms = 3000\n\
         [consumers.directory]\nevents_topic = {accounts:?}\nalerts_topic = {alerts:?}\n",
        url = slapd.ldap_url(),
        password = slapd.ldap_password_file().display().to_string(),
        accounts = world.accounts,
        alerts = world.alerts,
    );
    ConfigFiles {
        dir: &world.dir,
        topology_file: "topology.toml",
        topology: &topology,
        brokers: &kafka().brokers,
        data_dir: &world.dir.join("state"),
        deadletter: &world.deadletter,
        metrics_port: metrics,
    }
    .write("directory.toml", &rest)
}

#[tokio::test(flavor = "multi_thread")]
async fn slapd_down_the_directory_waits_at_the_failed_event_and_recovers_by_itself(
) -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let slapd = Private::slapd("faults-slapd");
    slapd.start()?;
    let world = DirectoryWorld::new("faults-slapd").await?;
    let metrics = free_port();
    let config = directory_config(&world, &slapd, metrics)?;
    let log = world.dir.join("directory.log");
    let mut children = Children(vec![spawn_mailfleet(&config, &["run", "directory"], &log)?]);
    let producer = EventProducer::new(&kafka(), &world.name)?;
    let store = world.dir.join("state/directory");
    let topics = vec![world.accounts.clone()];
    let hash = argon2_hash(&random_password())?;
    let entries = |a: &str| slapd.ldap_count(&account_dn(PEOPLE, a));

    let before: Vec<String> = (0..3).map(|i| world.address(&format!("b{i}"))).collect();
    for a in &before {
        producer
            .send(&world.accounts, a.as_bytes(), &registered(a, &hash))
            .await?;
    }
    wait_caught_up(&kafka(), &store, &topics, RECOVERY).await?;
    for a in &before {
        anyhow::ensure!(entries(a)? == 4, "{a}: no entry before the outage");
    }

    let held = end_offsets(&topics)?;
    let mut watch = Watch::new(&store, metrics);
    watch.sample();
    let stop_took = slapd.stop()?;
    let down_at = Instant::now();
    let during: Vec<String> = (0..FEEDS)
        .map(|i| world.address(&format!("d{i}")))
        .collect();
    for (i, a) in during.iter().enumerate() {
        producer
            .send(&world.accounts, a.as_bytes(), &registered(a, &hash))
            .await?;
        if i == 0 {
            // An effect with an output: the deletion of an account made before.
            let step = DeletionStepRequested {
                envelope: Envelope::new(format!("step-{}", before[0]), 2_000, "test"),
                account: before[0].clone(),
                step: DeletionStep::Directory,
                attempt: 1,
            };
            producer
                .send(&world.accounts, before[0].as_bytes(), &step)
                .await?;
        }
        tokio::time::sleep(OUTAGE / FEEDS).await;
        watch.sample();
        alive(&mut children, "mailfleet run directory")?;
    }
    let committed_during = committed(&kafka(), &format!("{}-directory", world.name), &held)?;
    let start_took = slapd.start()?;
    let outage = down_at.elapsed();
    let recovered = wait_caught_up(&kafka(), &store, &topics, RECOVERY).await?;

    // During: nothing applied or committed past the first failed input.
    watch.assert_held(&held)?;
    anyhow::ensure!(
        committed_during.iter().all(|(tp, o)| *o <= held[tp]),
        "committed past the failure: {committed_during:?} > {held:?}"
    );
    let label = consumer_label("directory");
    let (retries, _) = watch.growth(m::RETRIES, &[&label]);
    let (transient, _) = watch.growth(m::ERRORS, &[&label, "kind=\"transient\""]);
    let (_, lag) = watch.growth(m::CONSUMER_LAG, &[&label]);
    assert!(retries >= 5.0, "retries while slapd was down: {retries}");
    assert!(transient >= 5.0, "transient errors counted: {transient}");
    assert!(lag >= 1.0, "lag shown during the outage: {lag}");

    // After: every input handled once; the directory as the events say.
    for a in during.iter().chain(&before[1..]) {
        assert_eq!(entries(a)?, 4, "{a}'s entry and its three children");
    }
    assert_eq!(entries(&before[0])?, 0, "{} deleted", before[0]);
    // Caught up: every output is acknowledged, the topics as they are hold
    // all there is.
    let records = to_end(&world.accounts)?;
    let done: Vec<DeletionStepCompleted> = events_of(&records)?;
    let mut ids: Vec<_> = done.iter().map(|d| &d.envelope.event_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1, "one completion, by event id: {done:?}");
    assert_eq!(
        done[0].detail,
        format!("removed 4 entries under {}", account_dn(PEOPLE, &before[0]))
    );
    let dead: Vec<DeadLetter> = events_of(&to_end(&world.deadletter)?)?;
    let alerts: Vec<AdminAlert> = events_of(&to_end(&world.alerts)?)?;
    assert!(dead.is_empty() && alerts.is_empty(), "{dead:?} {alerts:?}");
    let inputs = total(&end_offsets(&topics)?);
    let after = scrape(metrics).unwrap_or_default();
    let processed = metric_sum(&after, m::EVENTS_PROCESSED, &[&label]);
    assert_eq!(processed as i64, inputs, "each input handled once");
    report(
        "slapd",
        &[
            ("stop_s", format!("{:.1}", stop_took.as_secs_f64())),
            ("outage_s", format!("{:.1}", outage.as_secs_f64())),
            ("start_s", format!("{:.1}", start_took.as_secs_f64())),
            ("recovered_s", format!("{:.1}", recovered.as_secs_f64())),
            ("retries", retries.to_string()),
            (
                "retries_per_sample",
                format!("{:?}", watch.series(m::RETRIES, &[&label])),
            ),
            ("transient_errors", transient.to_string()),
            ("lag_at_end_of_outage", lag.to_string()),
            ("held", format!("{held:?}")),
            ("committed_during", format!("{committed_during:?}")),
            ("inputs", inputs.to_string()),
            ("processed", processed.to_string()),
            ("completions", done.len().to_string()),
        ],
    );
    children.terminate()
}

// ---------------------------------------------------------------- clamd

#[tokio::test(flavor = "multi_thread")]
async fn clamd_down_the_scanner_waits_at_the_failed_message_and_recovers_by_itself(
) -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let clamd = Private::clamd("faults-clamd");
    clamd.start()?;
    let world = MailWorld::new("faults-clamd", kafka()).await?;
    let table = world
        .scanner_table(true, &[])
        .replace(&clamd_address(), &clamd.address());
    let log = world.dir.join("children.log");
    let lmtp_cfg = world.write_config("lmtp.toml", free_port(), "")?;
    let metrics = free_port();
    let scanner_cfg = world.write_config("scanner.toml", metrics, &table)?;
    let mut lmtp = Children(vec![spawn_mailfleet(&lmtp_cfg, &["lmtp"], &log)?]);
    let mut scanner = Children(vec![spawn_mailfleet(
        &scanner_cfg,
        &["run", "scanner"],
        &log,
    )?]);
    let port = world.lmtp_port;
    wait_listening("the LMTP server", port).await?;
    let (mut c, _) = LmtpClient::connect(port)?;
    c.command("LHLO mx")?;
    let store = world.dir.join("state/scanner");
    let topics = vec![world.received.clone()];
    // Even messages carry EICAR, odd ones are clean; one recipient each,
    // so they spread over the partitions.
    let mut deliver = |i: u32| -> anyhow::Result<()> {
        let subject = format!("m{i}");
        let mail = if i.is_multiple_of(2) {
            message_with_attachment(&subject, "a.txt", eicar().as_bytes())
        } else {
            simple_message(&subject, "hello")
        };
        let replies = c.deliver("a@example.net", &[&format!("r{i}@example.test")], &mail)?;
        anyhow::ensure!(replies[0].starts_with("250"), "{replies:?}");
        Ok(())
    };
    for i in 0..3 {
        deliver(i)?;
    }
    wait_caught_up(&kafka(), &store, &topics, RECOVERY).await?;

    let held = end_offsets(&topics)?;
    let mut watch = Watch::new(&store, metrics);
    watch.sample();
    let stop_took = clamd.stop()?;
    let down_at = Instant::now();
    for i in 3..3 + FEEDS {
        deliver(i)?;
        tokio::time::sleep(OUTAGE / FEEDS).await;
        watch.sample();
        alive(&mut scanner, "mailfleet run scanner")?;
    }
    let committed_during = committed(&kafka(), &format!("{}-scanner", world.name), &held)?;
    let start_took = clamd.start()?;
    let outage = down_at.elapsed();
    let recovered = wait_caught_up(&kafka(), &store, &topics, RECOVERY).await?;

    watch.assert_held(&held)?;
    anyhow::ensure!(
        committed_during.iter().all(|(tp, o)| *o <= held[tp]),
        "committed past the failure: {committed_during:?} > {held:?}"
    );
    let label = consumer_label("scanner");
    let (failures, _) = watch.growth(m::SCANNER_FAILURES, &["kind=\"clamd\""]);
    let (retries, _) = watch.growth(m::RETRIES, &[&label]);
    let (_, lag) = watch.growth(m::CONSUMER_LAG, &[&label]);
    assert!(failures >= 5.0, "clamd failures counted: {failures}");
    assert!(retries >= 5.0, "retries while clamd was down: {retries}");
    assert!(lag >= 1.0, "lag shown during the outage: {lag}");

    let messages = 3 + FEEDS as usize;
    // Caught up: every output is acknowledged, the topic as it is holds
    // all there is.
    let records = to_end(&world.scanned)?;
    let verdicts: Vec<MessageScanned> = decode_all(&records)?;
    let mut ids: Vec<_> = verdicts.iter().map(|v| &v.envelope.event_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), messages, "one verdict per message: {verdicts:?}");
    assert_eq!(verdicts.len(), messages, "and no duplicate");
    for i in 0..messages {
        let id = format!("m{i}@example.net");
        let v = verdicts
            .iter()
            .find(|v| v.message_id.as_deref() == Some(&id))
            .ok_or_else(|| anyhow::anyhow!("no verdict for {id}"))?;
        let expected = if i.is_multiple_of(2) {
            ScanVerdict::Infected
        } else {
            ScanVerdict::Clean
        };
        assert_eq!(v.verdict, expected, "{id}: {v:?}");
        assert!(
            v.scanner.starts_with("ClamAV"),
            "{id} scanned by clamd: {v:?}"
        );
    }
    assert!(to_end(&world.deadletter)?.is_empty());
    let after = scrape(metrics).unwrap_or_default();
    let processed = metric_sum(&after, m::EVENTS_PROCESSED, &[&label]);
    assert_eq!(processed as usize, messages, "each message handled once");
    report(
        "clamd",
        &[
            ("stop_s", format!("{:.1}", stop_took.as_secs_f64())),
            ("outage_s", format!("{:.1}", outage.as_secs_f64())),
            ("start_s", format!("{:.1}", start_took.as_secs_f64())),
            ("recovered_s", format!("{:.1}", recovered.as_secs_f64())),
            ("clamd_failures", failures.to_string()),
            ("retries", retries.to_string()),
            (
                "retries_per_sample",
                format!("{:?}", watch.series(m::RETRIES, &[&label])),
            ),
            ("lag_at_end_of_outage", lag.to_string()),
            ("held", format!("{held:?}")),
            ("committed_during", format!("{committed_during:?}")),
            ("messages", messages.to_string()),
            ("verdicts", verdicts.len().to_string()),
        ],
    );
    scanner.terminate()?;
    lmtp.terminate()
}
