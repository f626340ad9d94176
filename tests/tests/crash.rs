//! `kill -9` the counting consumer at random points while 100,000 events
//! are produced: afterwards its state holds exactly the right count per key
//! and the deduplicated outputs are exactly the expected set.
//!
//! And a crash where it matters most, between the acknowledgement of a
//! batch's outputs and its commit (the fault point
//! `MAILFLEET_FAULT_CRASH_AFTER_ACK`, debug builds only): the outputs go out
//! twice, and the consumer downstream drops the copies. Then the same
//! window with the next batch being decided against the held one's pending
//! state (`MAILFLEET_FAULT_CRASH_PIPELINED`).

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use mailfleet_events::{
    greylist::{DeliveryAttempted, GreylistDecided},
    runtime::Counted,
    Envelope, Registry,
};
use mailfleet_runtime::{
    admin,
    producer::EventProducer,
    topology::{Route, TopicSpec},
    Topology,
};
use mailfleet_tests::*;
use rand::Rng;
use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    Message,
};

const EVENTS: u64 = 100_000;
const KEYS: u64 = 500;
const KILLS: usize = 10;

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_random_points_loses_nothing_and_counts_nothing_twice() -> anyhow::Result<()> {
    let world = TestWorld::new("crash", 6).await?;
    let port = free_port();
    // Static membership: a restarted process takes its partitions back at once.
    let config = world.write_config("state", port, Some("crash-test"))?;
    let log = world.dir.join("child.log");

    let (input, name) = (world.input.clone(), world.name.clone());
    let producing = tokio::spawn(async move {
        for chunk in 0..100 {
            produce_events(&input, &name, chunk * 1000, (chunk + 1) * 1000, KEYS).await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::Ok(())
    });

    let mut child = spawn_counter(&config, &log)?;
    let mut kills = 0;
    while kills < KILLS || !producing.is_finished() {
        let wait = rand::rng().random_range(300..2000);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        assert!(
            child.try_wait()?.is_none(),
            "child died by itself; see {}",
            log.display()
        );
        child.kill()?; // SIGKILL
        child.wait()?;
        kills += 1;
        child = spawn_counter(&config, &log)?;
    }
    producing.await??;

    let seen = wait_for_outputs(&world.output, EVENTS as usize, Duration::from_secs(240));
    terminate(&mut child)?;
    let (ids, records) = seen?;
    assert_eq!(
        ids, EVENTS as usize,
        "every input produced exactly one distinct output id"
    );

    let expected = expected_counts(EVENTS, KEYS);
    let counts = stored_counts(&world.dir.join("state"))?;
    assert_eq!(counts.len(), expected.len());
    for (key, want) in &expected {
        assert_eq!(
            counts.get(key),
            Some(want),
            "count of {key} after {kills} kills"
        );
    }
    let (pairs, dups) = dedup_counted(&records)?;
    assert_eq!(pairs, expected_pairs(&expected));
    eprintln!("{kills} kills; {dups} duplicate outputs dropped by event id");
    Ok(())
}

/// Read the output topic until `want` distinct event ids were seen.
fn wait_for_outputs(
    topic: &str,
    want: usize,
    limit: Duration,
) -> anyhow::Result<(usize, Vec<Consumed>)> {
    let consumer: BaseConsumer = mailfleet_runtime::admin::client_config(&kafka())
        .set("group.id", unique("crash-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    let (mut ids, mut records) = (HashSet::new(), Vec::new());
    let started = Instant::now();
    while ids.len() < want {
        anyhow::ensure!(
            started.elapsed() < limit,
            "only {} of {want} outputs after {limit:?}",
            ids.len()
        );
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = msg?;
        let bytes = msg.payload().unwrap_or_default().to_vec();
        let c: Counted = Registry::builtin().decode(&bytes)?;
        ids.insert(c.envelope.event_id);
        records.push((msg.key().map(<[u8]>::to_vec), bytes));
    }
    Ok((ids.len(), records))
}

/// Delivery attempts in the fault test: three partitions' worth of
/// triplets, several attempts each (deferred, then passed).
const ATTEMPTS: usize = 60;
/// 2026-11-10T00:00:00Z, ms: every attempt falls in 2026-11.
const NOV: i64 = 1_794_268_800_000;
/// SIGABRT: how `std::process::abort` ends a process.
const SIGABRT: i32 = 6;

/// The greylist, armed with the fault point `MAILFLEET_FAULT_CRASH_AFTER_ACK`,
/// aborts after its first batch's decisions were acknowledged and before
/// its commit. Restarted unarmed, it decides that batch again and sends its
/// decisions a second time under the same ids; the reporter downstream
/// drops every copy by event id (`mailfleet_runtime::dedup`) and counts
/// each decision once, and the greylist's own state matches a clean replay.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_between_ack_and_commit_resends_outputs_that_downstream_drops() -> anyhow::Result<()>
{
    let w = GreyReportWorld::new().await?;
    produce_attempts(&w.attempts, &w.name).await?;
    let log = w.dir.join("greylist.log");

    // A bad value is named at start.
    let bad = std::process::Command::new(mailfleet_bin())
        .arg("--config")
        .arg(&w.config)
        .args(["run", "greylist"])
        .env("MAILFLEET_FAULT_CRASH_AFTER_ACK", "soon")
        .output()?;
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "started with a bad fault value");
    assert!(
        stderr.contains("MAILFLEET_FAULT_CRASH_AFTER_ACK = \"soon\""),
        "{stderr}"
    );

    // Armed: the process must end by the fault point, at the first batch.
    let armed = [
        ("MAILFLEET_FAULT_CRASH_AFTER_ACK", "1"),
        ("MAILFLEET_RUNTIME__INSTANCE_ID", "crash-fault"),
    ];
    let sent_before = run_armed(&w, &armed, &log, "fault point crash_after_ack").await?;

    // Unarmed: the greylist takes the batch again and finishes the log.
    let env = [("MAILFLEET_RUNTIME__INSTANCE_ID", "crash-fault")];
    let records = finish_unarmed(&w, &env, &log, sent_before).await?;

    // The reporter reads every record, copies included, and counts once.
    let reporter_log = w.dir.join("reporter.log");
    let mut reporter = Children(vec![spawn_mailfleet(
        &w.config,
        &["run", "reporter"],
        &reporter_log,
    )?]);
    wait_applied(&w.dir.join("state/reporter"), &w.reporter_reads).await?;
    reporter.terminate()?;
    let counted = reported_greylist_decisions(&w.config)?;
    let dedup_hits = (records.len() as u64).saturating_sub(counted);
    eprintln!(
        "crash after ack: {sent_before} decisions acked before the abort, {} records, {counted} \
         counted, {dedup_hits} dropped by the reporter as duplicates",
        records.len()
    );
    assert_eq!(counted, ATTEMPTS as u64, "each decision counted once");
    assert!(dedup_hits >= 1, "the reporter's dedup path dropped a copy");
    Ok(())
}

/// The greylist, armed with `MAILFLEET_FAULT_CRASH_PIPELINED` and batches
/// of 10, holds its first batch uncommitted once its decisions are
/// acknowledged, and aborts while it decides the next batch against that
/// batch's pending state: the two stages of the pipeline both in flight.
/// Nothing of either is committed; restarted unarmed, the greylist decides
/// both again from its stored offsets, its decisions are the same (same
/// ids, no conflicting copy), and its state and outputs equal a clean
/// replay's.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_while_one_batch_commits_and_the_next_is_decided_loses_nothing(
) -> anyhow::Result<()> {
    let w = GreyReportWorld::new().await?;
    produce_attempts(&w.attempts, &w.name).await?;
    let log = w.dir.join("greylist.log");
    let small = ("MAILFLEET_RUNTIME__BATCH_MAX_EVENTS", "10");
    let member = ("MAILFLEET_RUNTIME__INSTANCE_ID", "crash-pipelined");

    let armed = [("MAILFLEET_FAULT_CRASH_PIPELINED", "1"), small, member];
    let sent_before =
        run_armed(&w, &armed, &log, "aborting while the next batch is decided").await?;

    finish_unarmed(&w, &[small, member], &log, sent_before).await?;
    Ok(())
}

/// Run the greylist armed with a fault point (in `env`) until it aborts;
/// check that it ended by SIGABRT with `names` in its log, that some
/// decisions were acknowledged and that nothing was committed. Returns
/// how many decisions went out before the abort.
async fn run_armed(
    w: &GreyReportWorld,
    env: &[(&str, &str)],
    log: &std::path::Path,
    names: &str,
) -> anyhow::Result<usize> {
    let mut armed = Children(vec![spawn_with_env(
        &w.config,
        &["run", "greylist"],
        env,
        log,
    )?]);
    let status = wait_exit(&mut armed.0[0], Duration::from_secs(120)).await?;
    let text = std::fs::read_to_string(log)?;
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(SIGABRT),
        "the armed greylist ended by abort ({status}); see {}",
        log.display()
    );
    assert!(
        text.contains(names),
        "the log names the fault point:\n{text}"
    );
    armed.0.clear();
    let sent_before = read_topic(&w.decisions, usize::MAX, Duration::from_secs(2))?.len();
    assert!(sent_before >= 1, "the aborted batch's decisions were acked");
    assert_eq!(
        applied(&w.dir.join("state/greylist")),
        0,
        "the aborted batch (and any after it) committed nothing"
    );
    Ok(sent_before)
}

/// Restart the greylist unarmed (with `env`) until it has applied every
/// attempt, then check that the `sent_before` decisions of the aborted
/// run came again under their ids, none conflicting, and that state and
/// outputs equal a clean replay's. Returns the decisions topic's records.
async fn finish_unarmed(
    w: &GreyReportWorld,
    env: &[(&str, &str)],
    log: &std::path::Path,
    sent_before: usize,
) -> anyhow::Result<Vec<Consumed>> {
    let store = w.dir.join("state/greylist");
    let mut grey = Children(vec![spawn_with_env(
        &w.config,
        &["run", "greylist"],
        env,
        log,
    )?]);
    wait_applied(&store, std::slice::from_ref(&w.attempts)).await?;
    grey.terminate()?;
    let records = read_topic(&w.decisions, usize::MAX, Duration::from_secs(2))?;
    let decided = mailfleet_tests::faults::dedup::<GreylistDecided>(&records, |d| {
        d.envelope.causation_id.clone().unwrap_or_default()
    })?;
    assert_eq!(decided.distinct, ATTEMPTS, "one decision per attempt");
    assert!(decided.conflicting.is_empty(), "{:?}", decided.conflicting);
    assert!(decided.doubled.is_empty(), "{:?}", decided.doubled);
    assert_eq!(
        decided.copies, sent_before,
        "every decision sent before the abort was sent again, under its id"
    );
    let clean = mailfleet_tests::faults::compare_with_clean_run(
        &w.config,
        "greylist",
        &store,
        &w.dir.join("replay"),
    )?;
    assert_eq!(
        (clean.state_diffs, clean.audit_diffs),
        (0, 0),
        "greylist state and outputs: {clean:?}"
    );
    assert_eq!(clean.audited, ATTEMPTS as u64, "{clean:?}");
    Ok(records)
}

/// The greylist and the reporter on a test's own topics, one config.
struct GreyReportWorld {
    name: String,
    dir: std::path::PathBuf,
    attempts: String,
    decisions: String,
    reporter_reads: Vec<String>,
    config: std::path::PathBuf,
}

impl GreyReportWorld {
    async fn new() -> anyhow::Result<Self> {
        let name = unique("crash-fault");
        let t = |s: &str| format!("{name}.{s}");
        let (attempts, decisions, dead) = (t("attempts"), t("decisions"), t("dead"));
        // The reporter reads nine topics; only the decisions have records.
        let mut reporter_reads = vec![decisions.clone(), dead.clone()];
        for other in [
            "accounts",
            "usage",
            "scanned",
            "stored",
            "notify",
            "submitted",
            "submission-decisions",
        ] {
            reporter_reads.push(t(other));
        }
        let mut topics: std::collections::BTreeMap<String, TopicSpec> = reporter_reads
            .iter()
            .map(|t| {
                (
                    t.clone(),
                    TopicSpec::scratch(if *t == dead { 1 } else { 3 }),
                )
            })
            .collect();
        topics.insert(attempts.clone(), TopicSpec::scratch(3));
        let route = |c: &str, reads: Vec<String>, writes: Vec<String>| {
            let group = format!("{name}-{c}");
            (
                c.to_string(),
                Route {
                    group,
                    reads,
                    writes,
                },
            )
        };
        let topology = Topology {
            topics,
            consumers: [
                route("greylist", vec![attempts.clone()], vec![decisions.clone()]),
                route("reporter", reporter_reads.clone(), Vec::new()),
            ]
            .into(),
        };
        admin::apply(&kafka(), &topology).await?;
        let dir = scratch_dir(&name);
        let list = |f: &str| repo_root().join("ops/greylist").join(f);
        let rest = format!(
            "[consumers.greylist]\nwhitelist_clients = [{:?}]\nwhitelist_recipients = [{:?}]\n\
             [policy]\nattempts_topic = {attempts:?}\ndecisions_topic = {decisions:?}\n",
            list("whitelist_clients").display().to_string(),
            list("whitelist_recipients").display().to_string(),
        );
        let config = ConfigFiles {
            dir: &dir,
            topology_file: "topology.toml",
            topology: &topology,
            brokers: &kafka().brokers,
            data_dir: &dir.join("state"),
            deadletter: &dead,
            metrics_port: free_port(),
        }
        .write("crash-fault.toml", &rest)?;
        Ok(Self {
            name,
            dir,
            attempts,
            decisions,
            reporter_reads,
            config,
        })
    }
}

/// `ATTEMPTS` delivery attempts over 12 triplets in November 2026, each
/// triplet retried a minute apart (so some are deferred, some pass).
async fn produce_attempts(topic: &str, run: &str) -> anyhow::Result<()> {
    let producer = EventProducer::new(&kafka(), "crash-fault")?;
    for i in 0..ATTEMPTS as i64 {
        let t = i % 12;
        let attempt = DeliveryAttempted {
            envelope: Envelope::new(format!("{run}:attempt:{i}"), NOV + i * 60_000, "crash"),
            client_address: Some(format!("10.1.{t}.1")),
            client_name: Some(format!("mx{t}.sender.test")),
            reverse_client_name: Some(format!("mx{t}.sender.test")),
            helo_name: Some(format!("mx{t}.sender.test")),
            sender: Some(format!("s{t}@sender.test")),
            recipient: Some(format!("r{t}@crash.test")),
            instance: Some(format!("{run}:{i}")),
            size: Some(1000),
            queue_id: None,
            policy_host: "mx1".into(),
            answered: None,
        };
        producer
            .send(topic, format!("10.1.{t}.0").as_bytes(), &attempt)
            .await?;
    }
    Ok(())
}

/// Wait for `child` to end by itself.
async fn wait_exit(
    child: &mut std::process::Child,
    limit: Duration,
) -> anyhow::Result<std::process::ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        anyhow::ensure!(
            started.elapsed() < limit,
            "still running after {limit:?}: the fault point never fired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The input records a (closed or running) store has committed.
fn applied(store: &std::path::Path) -> i64 {
    mailfleet_runtime::Store::open_read_only(store)
        .map(|s| s.offsets().iter().map(|(_, _, o)| o).sum())
        .unwrap_or(0)
}

/// The greylist decisions `mailfleet report` counts in 2026-11.
fn reported_greylist_decisions(config: &std::path::Path) -> anyhow::Result<u64> {
    let out = run_cli(
        config,
        &[
            "report", "--month", "2026-11", "--format", "json", "--months", "1",
        ],
    )?;
    let json: serde_json::Value = serde_json::from_str(&out)?;
    let greylist = &json["months"][0]["counts"]["greylist"];
    let Some(labels) = greylist.as_object() else {
        anyhow::bail!("no greylist counts in the report: {json:#}");
    };
    Ok(labels.values().filter_map(serde_json::Value::as_u64).sum())
}
