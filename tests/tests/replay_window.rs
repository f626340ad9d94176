//! `mailfleet replay` over the real broker: `--from`/`--to` cover exactly
//! their window, and a replay has no outputs and no effects.
//!
//! - The window: the counting consumer (its state is a count per key, one
//!   key per event here) replayed `--from` the first append time of the
//!   middle batch `--to` the first of the last: its state holds exactly
//!   the middle batch, and each partition's last applied offset is the
//!   batch's last there. `--to <offset>` holds exactly the records below
//!   that offset in every partition.
//! - No outputs, no effects: the storage writer applies a first batch of
//!   scanned mail live and stops; a second batch is logged. A replay over
//!   both writes no Maildir file, produces nothing to any topic (every
//!   end offset is unchanged) and leaves the live store as it was (its
//!   digests and offsets). Then the live writer catches up: the second
//!   batch's mail and outputs appear: what the replay did not do.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::Command,
    time::Duration,
};

use mailfleet_blob::BlobStore;
use mailfleet_events::{
    mail::{MessageScanned, ScanVerdict},
    Envelope,
};
use mailfleet_runtime::producer::EventProducer;
use mailfleet_tests::{faults::maildir_files, full::FullWorld, ingest::simple_message, outage, *};

/// An append time (ms) as RFC 3339, by `date` (UTC, milliseconds).
fn rfc3339(ms: i64) -> anyhow::Result<String> {
    let at = format!("@{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000));
    let out = stdout_of(Command::new("date").args(["-u", "-d", &at, "+%Y-%m-%dT%H:%M:%S.%3NZ"]))?;
    Ok(out.trim().to_string())
}

/// `partition -> (topic, last applied offset)` from `mailfleet replay`'s lines.
fn last_applied(stdout: &str) -> BTreeMap<i32, Vec<(String, i64)>> {
    stdout
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("partition ")?;
            let (p, rest) = rest.split_once(": ")?;
            let (_, applied) = rest.split_once("last applied ")?;
            let offsets = applied
                .split(' ')
                .filter_map(|a| {
                    let (t, o) = a.rsplit_once('@')?;
                    Some((t.to_string(), o.parse().ok()?))
                })
                .collect();
            Some((p.parse().ok()?, offsets))
        })
        .collect()
}

/// `replayed <n> events` of the first line.
fn replayed(stdout: &str) -> Option<u64> {
    stdout
        .lines()
        .next()?
        .strip_prefix("replayed ")?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_window_covers_exactly_its_records() -> anyhow::Result<()> {
    let world = TestWorld::new("replay-window", 3).await?;
    let config = world.write_config("live", free_port(), None)?;
    // Three batches of 30 events, one key each, their append times apart.
    for batch in 0..3u64 {
        produce_events(&world.input, &world.name, batch * 30, batch * 30 + 30, 90).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let records = read_as_written(&kafka(), &world.input, 90, Duration::from_secs(10))?;
    anyhow::ensure!(records.len() == 90, "read {} of 90 records", records.len());
    let key_of = |r: &mailfleet_runtime::read::Record| {
        String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned()
    };
    let index = |r: &mailfleet_runtime::read::Record| -> u64 {
        key_of(r)
            .trim_start_matches("key-")
            .parse()
            .unwrap_or(u64::MAX)
    };
    let time = |r: &mailfleet_runtime::read::Record| r.timestamp.unwrap_or(0);
    let batch = |b: u64| records.iter().filter(move |r| index(r) / 30 == b);
    let first = |b: u64| batch(b).map(time).min().unwrap_or(0);
    let last = |b: u64| batch(b).map(time).max().unwrap_or(0);
    anyhow::ensure!(
        last(0) < first(1) && last(1) < first(2),
        "the batches' append times overlap: {:?}",
        (first(0), last(0), first(1), last(1), first(2), last(2))
    );
    let (from, to) = (rfc3339(first(1))?, rfc3339(first(2))?);
    let outputs = [world.output.clone(), world.deadletter.clone()];
    let ends_before = end_offsets(&outputs)?;

    let dir = world.dir.join("replay-window");
    let args = ["replay", "counter", "--from", &from, "--to", &to];
    let out = run_cli(
        &config,
        &[&args[..], &["--state-dir", &dir.display().to_string()]].concat(),
    )?;
    eprintln!("replay-window: --from {from} --to {to}:\n{out}");
    let keys = |counts: &std::collections::HashMap<String, u64>| -> BTreeSet<String> {
        counts.keys().cloned().collect()
    };
    let counts = stored_counts(&dir)?;
    let middle: BTreeSet<String> = batch(1).map(key_of).collect();
    assert_eq!(
        keys(&counts),
        middle,
        "the state holds exactly the middle batch"
    );
    assert!(counts.values().all(|n| *n == 1), "each once: {counts:?}");
    assert_eq!(replayed(&out), Some(30), "{out}");
    let mut want: BTreeMap<i32, Vec<(String, i64)>> = BTreeMap::new();
    for r in batch(1) {
        let entry = want.entry(r.partition).or_default();
        match entry.first_mut() {
            Some((_, o)) => *o = (*o).max(r.offset),
            None => entry.push((world.input.clone(), r.offset)),
        }
    }
    assert_eq!(
        last_applied(&out),
        want,
        "the last offset applied per partition:\n{out}"
    );

    // An offset as the end: every partition below it, nothing else.
    let dir = world.dir.join("replay-to-offset");
    let out = run_cli(
        &config,
        &[
            "replay",
            "counter",
            "--to",
            "4",
            "--state-dir",
            &dir.display().to_string(),
        ],
    )?;
    let below: BTreeSet<String> = records
        .iter()
        .filter(|r| r.offset < 4)
        .map(key_of)
        .collect();
    assert_eq!(keys(&stored_counts(&dir)?), below, "{out}");
    assert_eq!(replayed(&out), Some(below.len() as u64), "{out}");
    assert!(
        last_applied(&out).values().flatten().all(|(_, o)| *o == 3),
        "{out}"
    );
    assert_eq!(
        end_offsets(&outputs)?,
        ends_before,
        "a replay produces nothing"
    );
    Ok(())
}

/// A clean scanned mail for `account`, its body in the blob store.
fn scanned(blobs: &BlobStore, account: &str, id: &str) -> anyhow::Result<MessageScanned> {
    let blob = blobs.put(simple_message(id, "replay has no effects").as_bytes())?;
    Ok(MessageScanned {
        envelope: Envelope::new(id, 1_795_996_800_000, "replay-test"),
        account: account.into(),
        recipient: account.into(),
        sender: "a@sender.test".into(),
        blob_id: blob,
        size: 200,
        received_at: 1_795_996_800_000,
        message_id: Some(format!("<{id}@example.net>")),
        verdict: ScanVerdict::Clean,
        signature: None,
        file: None,
        rule: None,
        scanner: "replay-test".into(),
        spam: None,
        spam_error: None,
    })
}

/// Run the storage writer until it has applied its inputs, then stop it.
async fn run_storage(world: &FullWorld, config: &Path, log: &Path) -> anyhow::Result<()> {
    let before = starts_logged(log);
    let mut child = Children(vec![spawn_mailfleet(config, &["run", "storage"], log)?]);
    wait_started(log, before, 1).await?;
    wait_applied(&world.store("storage"), &world.reads("storage")?).await?;
    child.terminate()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_has_no_outputs_and_no_effects() -> anyhow::Result<()> {
    let world = FullWorld::new("replay-effects").await?;
    let config = world.write_config("storage.toml", free_port(), &[], "")?;
    let log = world.dir.join("storage.log");
    let blobs = BlobStore::open(world.dir.join("blobs"))?;
    let p = EventProducer::new(&world.kafka, "replay-test")?;
    let scanned_topic = world.topic("mail.scanned");
    let accounts = ["ann@replay.test", "ben@replay.test", "cid@replay.test"];
    for (i, account) in accounts.iter().enumerate() {
        let mail = scanned(&blobs, account, &format!("first-{i}"))?;
        p.send(&scanned_topic, account.as_bytes(), &mail).await?;
    }
    run_storage(&world, &config, &log).await?;
    let files_live = maildir_files(&world.mail_root());
    assert_eq!(files_live.len(), 3, "the first batch stored");
    for (i, account) in accounts.iter().enumerate() {
        let mail = scanned(&blobs, account, &format!("second-{i}"))?;
        p.send(&scanned_topic, account.as_bytes(), &mail).await?;
    }

    // Everything a replay could touch, before it.
    let all_topics: Vec<String> = world.topology.topics.keys().cloned().collect();
    let ends = end_offsets(&all_topics)?;
    let store = world.store("storage");
    let (digests, applied) = (live_digests(&store)?, outage::applied(&store));
    let replay_dir = world.dir.join("replay");
    let out = run_cli(
        &config,
        &[
            "replay",
            "storage",
            "--state-dir",
            &replay_dir.display().to_string(),
        ],
    )?;
    eprintln!("replay-effects:\n{out}");
    let inputs = world.reads("storage")?;
    let in_log: i64 = end_offsets(&inputs)?.values().sum();
    assert_eq!(
        replayed(&out),
        Some(in_log as u64),
        "every input replayed: {out}"
    );
    assert!(out.contains("(no outputs, no effects)"), "{out}");
    assert!(!replay_digests(&out).is_empty(), "{out}");

    let mut files_after = maildir_files(&world.mail_root());
    files_after.sort();
    let mut files_before = files_live.clone();
    files_before.sort();
    assert_eq!(files_after, files_before, "no mail written by the replay");
    assert_eq!(
        end_offsets(&all_topics)?,
        ends,
        "no record produced to any topic"
    );
    assert_eq!(live_digests(&store)?, digests, "the live state untouched");
    assert_eq!(
        outage::applied(&store),
        applied,
        "the live offsets untouched"
    );

    // What the replay did not do, the live writer does: the second batch's
    // mail and outputs, and the state the replay computed.
    run_storage(&world, &config, &log).await?;
    assert_eq!(
        maildir_files(&world.mail_root()).len(),
        6,
        "the second batch stored"
    );
    let stored = world.topic("mail.stored");
    let grown = end_offsets(std::slice::from_ref(&stored))?
        .iter()
        .map(|(tp, end)| end - ends.get(tp).copied().unwrap_or(0))
        .sum::<i64>();
    assert!(
        grown >= 3,
        "the live writer's outputs: {grown} more on {stored}"
    );
    Ok(())
}
