//! A dependency down for [`OUTAGE`] while events keep coming: slapd under
//! the directory consumer, clamd under the scanner, and the Kafka broker
//! under a consumer and the producers around it. Each runs `mailfleet run
//! <consumer>` against a private instance (`outage::Private`: the `ops/`
//! script with its own folder and port), so no shared server is stopped.
//!
//! Each test checks that during the outage the consumer stays up, its store
//! (and the group's committed offsets) stay at the first input that had to
//! fail, and its metrics show the outage; and that once the dependency is
//! back, with no restart of the consumer, every input is handled exactly
//! once (outputs counted by event id, side effects looked at). The figures
//! are printed as `FAULT ...` lines (`--nocapture`).
//!
//! The three run one after another, so that their timings do not disturb
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
    admin, metrics as m,
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

/// One outage test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn consumer(name: &str) -> String {
    format!("consumer=\"{name}\"")
}

/// Fail unless the child is still running.
fn alive(children: &mut Children, what: &str) -> anyhow::Result<()> {
    for child in &mut children.0 {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("{what} exited during the outage: {status}");
        }
    }
    Ok(())
}

/// The increase of a metric over the watch, and its last value.
fn growth(watch: &Watch, name: &str, labels: &[&str]) -> (f64, f64) {
    let series = watch.series(name, labels);
    let first = series.first().copied().unwrap_or(0.0);
    let last = series.last().copied().unwrap_or(0.0);
    (last - first, last)
}

fn total(offsets: &Offsets) -> i64 {
    offsets.values().sum()
}

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

    let held = ends(&kafka(), &topics)?;
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
    let label = consumer("directory");
    let (retries, _) = growth(&watch, m::RETRIES, &[&label]);
    let (transient, _) = growth(&watch, m::ERRORS, &[&label, "kind=\"transient\""]);
    let (_, lag) = growth(&watch, m::CONSUMER_LAG, &[&label]);
    assert!(retries >= 5.0, "retries while slapd was down: {retries}");
    assert!(transient >= 5.0, "transient errors counted: {transient}");
    assert!(lag >= 1.0, "lag shown during the outage: {lag}");

    // After: every input handled once; the directory as the events say.
    for a in during.iter().chain(&before[1..]) {
        assert_eq!(entries(a)?, 4, "{a}'s entry and its three children");
    }
    assert_eq!(entries(&before[0])?, 0, "{} deleted", before[0]);
    let records = read_topic(&world.accounts, usize::MAX, Duration::from_secs(3))?;
    let done: Vec<DeletionStepCompleted> = events_of(&records)?;
    let mut ids: Vec<_> = done.iter().map(|d| &d.envelope.event_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1, "one completion, by event id: {done:?}");
    assert_eq!(
        done[0].detail,
        format!("removed 4 entries under {}", account_dn(PEOPLE, &before[0]))
    );
    let dead: Vec<DeadLetter> = world.events(&world.deadletter, Duration::from_secs(1))?;
    let alerts: Vec<AdminAlert> = world.events(&world.alerts, Duration::from_secs(1))?;
    assert!(dead.is_empty() && alerts.is_empty(), "{dead:?} {alerts:?}");
    let inputs = total(&ends(&kafka(), &topics)?);
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
    wait_until("the LMTP server", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await?;
    let (mut c, _) = LmtpClient::connect(port)?;
    c.command("LHLO mx")?;
    let store = world.dir.join("state/scanner");
    let topics = vec![world.received.clone()];
    // Even messages carry EICAR, odd ones are clean; one recipient each,
    // so they spread over the partitions.
    let mut deliver = |i: u32| -> anyhow::Result<()> {
        let subject = format!("m{i}");
        let mail = if i % 2 == 0 {
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

    let held = ends(&kafka(), &topics)?;
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
    let label = consumer("scanner");
    let (failures, _) = growth(&watch, m::SCANNER_FAILURES, &["kind=\"clamd\""]);
    let (retries, _) = growth(&watch, m::RETRIES, &[&label]);
    let (_, lag) = growth(&watch, m::CONSUMER_LAG, &[&label]);
    assert!(failures >= 5.0, "clamd failures counted: {failures}");
    assert!(retries >= 5.0, "retries while clamd was down: {retries}");
    assert!(lag >= 1.0, "lag shown during the outage: {lag}");

    let messages = 3 + FEEDS as usize;
    let records = read_topic(&world.scanned, usize::MAX, Duration::from_secs(3))?;
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
        let expected = if i % 2 == 0 {
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
    assert!(read_topic(&world.deadletter, 1, Duration::from_secs(1))?.is_empty());
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

// ---------------------------------------------------------------- Kafka

/// The counter's topics (3 partitions) on `kafka`, and a config for
/// `mailfleet run counter` with its state in `dir`.
async fn counter_world(
    kafka: &mailfleet_runtime::config::KafkaConfig,
    name: &str,
    dir: &std::path::Path,
    metrics: u16,
) -> anyhow::Result<(Topology, std::path::PathBuf)> {
    let topic = |t: &str| format!("{name}.{t}");
    let topology = Topology {
        topics: ["in", "out", "dead"]
            .iter()
            .map(|t| (topic(t), TopicSpec::scratch(3)))
            .collect(),
        consumers: [(
            "counter".to_string(),
            Route {
                group: format!("{name}-counter"),
                reads: vec![topic("in")],
                writes: vec![topic("out")],
            },
        )]
        .into(),
    };
    admin::apply(kafka, &topology).await?;
    let config = ConfigFiles {
        dir,
        topology_file: "topology.toml",
        topology: &topology,
        brokers: &kafka.brokers,
        data_dir: &dir.join("state"),
        deadletter: &topic("dead"),
        metrics_port: metrics,
    }
    .write("counter.toml", "")?;
    Ok((topology, config))
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_down_the_consumer_and_its_producers_resume_by_themselves_exactly_once(
) -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let broker = Private::kafka("faults-kafka");
    let broker_start = broker.start()?;
    let kafka = broker.kafka_config();
    let name = unique("faults-kafka");
    let dir = scratch_dir(&name);
    let metrics = free_port();
    let (topology, config) = counter_world(&kafka, &name, &dir, metrics).await?;
    let (input, output) = (format!("{name}.in"), format!("{name}.out"));
    let mut children = Children(vec![spawn_mailfleet(
        &config,
        &["run", "counter"],
        &dir.join("counter.log"),
    )?]);
    let store = dir.join("state/counter");
    let topics = vec![input.clone()];
    // The input side: one idempotent producer, sends not awaited one by
    // one, so that those made while the broker is down wait in its queue.
    let producer = EventProducer::new(&kafka, &name)?;
    let keys = 10;
    let send = |i: u64| {
        let producer = producer.clone();
        let e = mailfleet_counter::traffic::test_event(&name, i, keys, 16);
        let topic = input.clone();
        tokio::spawn(async move {
            let payload = mailfleet_events::encode(&e).expect("a test event encodes");
            producer.send_raw(&topic, e.key.as_bytes(), &payload).await
        })
    };
    let before = 300;
    let mut sends: Vec<_> = (0..before).map(send).collect();
    for s in sends.drain(..) {
        s.await??;
    }
    wait_caught_up(&kafka, &store, &topics, RECOVERY).await?;
    let held = ends(&kafka, &topics)?;

    let mut watch = Watch::new(&store, metrics);
    watch.sample();
    let stop_took = broker.stop()?;
    let down_at = Instant::now();
    let per_feed = 20;
    let mut next = before;
    for _ in 0..FEEDS {
        sends.extend((next..next + per_feed).map(send));
        next += per_feed;
        tokio::time::sleep(OUTAGE / FEEDS).await;
        watch.sample();
        alive(&mut children, "mailfleet run counter")?;
    }
    let start_took = broker.start()?;
    let outage = down_at.elapsed();
    let back = Instant::now();
    for s in sends.drain(..) {
        s.await??;
    }
    let delivered_in = back.elapsed();
    wait_caught_up(&kafka, &store, &topics, RECOVERY).await?;
    let recovered = back.elapsed();
    let total_events = next;

    watch.assert_held(&held)?;
    let label = consumer("counter");
    let (poll_errors, _) = growth(&watch, m::ERRORS, &[&label, "kind=\"poll\""]);
    let (_, assigned) = growth(&watch, m::ASSIGNED_PARTITIONS, &[&label]);
    assert!(
        poll_errors >= 1.0,
        "poll errors while Kafka was down: {poll_errors}"
    );

    // Every input sent once (idempotent producer), handled once.
    let ends_after = ends(&kafka, &topics)?;
    assert_eq!(
        total(&ends_after) as u64,
        total_events,
        "inputs on the topic"
    );
    let expected = expected_counts(total_events, keys);
    let counts =
        mailfleet_counter::stored_counts(&mailfleet_runtime::Store::open_read_only(&store)?)?;
    assert_eq!(counts, expected, "each input counted once");
    let outputs = read_topic_from(&kafka, &output, usize::MAX, Duration::from_secs(5))?;
    let (pairs, dups) = dedup_counted(&outputs)?;
    assert_eq!(
        pairs,
        expected_pairs(&expected),
        "one output per input, by event id"
    );
    let group = &topology.consumers["counter"].group;
    wait_until("the group's offsets at the ends", RECOVERY, || {
        committed(&kafka, group, &ends_after).is_ok_and(|c| c == ends_after)
    })
    .await?;
    let after = scrape(metrics).unwrap_or_default();
    let processed = metric_sum(&after, m::EVENTS_PROCESSED, &[&label]);
    assert_eq!(processed as u64, total_events, "each input handled once");
    report(
        "kafka",
        &[
            (
                "broker_first_start_s",
                format!("{:.1}", broker_start.as_secs_f64()),
            ),
            ("stop_s", format!("{:.1}", stop_took.as_secs_f64())),
            ("outage_s", format!("{:.1}", outage.as_secs_f64())),
            ("start_s", format!("{:.1}", start_took.as_secs_f64())),
            (
                "inputs_acked_after_start_s",
                format!("{:.1}", delivered_in.as_secs_f64()),
            ),
            ("recovered_s", format!("{:.1}", recovered.as_secs_f64())),
            ("poll_errors", poll_errors.to_string()),
            ("assigned_partitions", format!("{assigned:?}")),
            ("events", total_events.to_string()),
            ("outputs", outputs.len().to_string()),
            ("duplicate_outputs", dups.to_string()),
            ("held", format!("{held:?}")),
            (
                "metric_samples",
                format!("{:?}", watch.series(m::ERRORS, &[&label])),
            ),
        ],
    );
    children.terminate()
}
