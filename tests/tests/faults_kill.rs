//! F9: `kill -9` of each consumer at random points under steady load.
//!
//! The greylist, the scanner, the storage writer, the indexer and the
//! lifecycle each run as their own `mailfleet run <consumer>` process,
//! while delivery attempts, mail over LMTP and account events with clock
//! ticks flow. Every few hundred milliseconds one of them, picked at
//! random, is killed with SIGKILL and started again, at least
//! `ROUNDS` times each. Afterwards the run is compared with a run that
//! had no faults:
//! - **state:** `mailfleet replay` rebuilds each consumer from the log
//!   with no kill, and every partition's digest equals the killed
//!   consumer's live store (a transition applied twice, or lost, changes
//!   it);
//! - **decided outputs:** `mailfleet audit decisions` recomputes them and
//!   finds 0 diffs (a lost output is "never recorded");
//! - **every output transition once:** deduplicated by event id, each
//!   input has exactly one transition (0 lost, 0 recorded under two ids),
//!   and copies of one id are byte for byte the same;
//! - **Maildirs:** one file per message that got `250`, none twice.

use std::time::{Duration, Instant};

use mailfleet_events::{
    accounts::{AccountRegistered, AccountStatus, AccountStatusChanged, LoginRecorded},
    clock::ClockTicked,
    greylist::{DeliveryAttempted, GreylistDecided},
    mail::{MessageReceived, MessageScanned, MessageStored},
    Envelope, Event,
};
use mailfleet_runtime::producer::EventProducer;
use mailfleet_tests::{faults::*, fleet::deliver, *};
use rand::{seq::SliceRandom, Rng};

/// 2026-11-30T00:00:00Z, ms.
const T0: i64 = 1_795_996_800_000;
const DAY: i64 = 86_400_000;
/// Kill rounds: each round kills every consumer once, in random order.
const ROUNDS: usize = 5;
/// Load steps, one every `STEP`.
const STEPS: i64 = 120;
const STEP: Duration = Duration::from_millis(350);
const ATTEMPTS_PER_STEP: i64 = 12;
const TRIPLETS: i64 = 90;
const MAILS: usize = 240;
const MAILBOXES: usize = 8;

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_each_consumer_loses_nothing_and_doubles_nothing() -> anyhow::Result<()> {
    let started = Instant::now();
    let world = FaultWorld::new("faults-kill", kafka()).await?;
    let lmtp_cfg = world.mail_config("lmtp.toml", free_port())?;
    let mut lmtp = Children(vec![spawn_mailfleet(
        &lmtp_cfg,
        &["lmtp"],
        &world.mail.dir.join("lmtp.log"),
    )?]);
    let mut procs = CONSUMERS
        .iter()
        .map(|c| Proc::spawn(&world, c))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let port = world.mail.lmtp_port;
    wait_listening("the LMTP server", port).await?;

    // Steady load on all three entries of the pipeline.
    let attempts = tokio::spawn(produce_attempts(
        world.attempts.clone(),
        world.mail.name.clone(),
    ));
    let accounts = tokio::spawn(produce_accounts(
        world.mail.accounts.clone(),
        world.mail.name.clone(),
    ));
    let name = world.mail.name.clone();
    let mails = tokio::task::spawn_blocking(move || send_mails(port, &name));

    // Kill each consumer ROUNDS times at random moments, and keep killing
    // until the load is through.
    let mut rounds = 0;
    while rounds < ROUNDS || !(attempts.is_finished() && accounts.is_finished()) {
        let mut order: Vec<usize> = (0..procs.len()).collect();
        order.shuffle(&mut rand::rng());
        for i in order {
            let wait = rand::rng().random_range(150..1000);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            procs[i].kill_and_restart()?;
        }
        rounds += 1;
    }
    let load_done = started.elapsed();
    let accepted = mails.await??;
    let (attempts_sent, registered) = (attempts.await??, accounts.await??);

    world.settle(&CONSUMERS).await?;
    for p in &mut procs {
        p.terminate()?;
    }
    lmtp.terminate()?;
    let settled = started.elapsed();

    // The figures to quote.
    let kills: Vec<String> = procs
        .iter()
        .map(|p| {
            format!(
                "{}={} ({} at work, {} inputs committed between kills)",
                p.consumer, p.kills, p.kills_at_work, p.applied_between_kills
            )
        })
        .collect();
    let total_kills: u32 = procs.iter().map(|p| p.kills).sum();
    eprintln!(
        "faults-kill: {total_kills} kills ({}); load: {attempts_sent} attempts, {registered} \
         registrations, {} mails accepted of {MAILS}; load phase {:.0?}, settled at {:.0?}",
        kills.join(", "),
        accepted.len(),
        load_done,
        settled
    );
    assert!(total_kills >= 20, "at least 20 kills: {kills:?}");
    assert!(procs.iter().all(|p| p.kills >= ROUNDS as u32), "{kills:?}");
    // Killed at work, not only while starting: each one committed inputs
    // between most of its kills.
    assert!(
        procs.iter().all(|p| 2 * p.kills_at_work >= p.kills),
        "{kills:?}"
    );
    assert_eq!(
        accepted.len(),
        MAILS,
        "every mail got 250 (LMTP was never killed)"
    );

    // Outputs, deduplicated by event id, against the inputs.
    let decided = world.records(&world.decisions)?;
    let decisions = dedup::<GreylistDecided>(&decided, |d| cause(&d.envelope))?;
    let attempt_ids = ids::<DeliveryAttempted>(&world.records(&world.attempts)?);
    let received = ids::<MessageReceived>(&world.records(&world.mail.received)?);
    let scanned_records = world.records(&world.mail.scanned)?;
    let scanned = dedup::<MessageScanned>(&scanned_records, |s| cause(&s.envelope))?;
    let stored_records = world.records(&world.mail.stored)?;
    let stored = dedup::<MessageStored>(&stored_records, |s| s.delivery_id.clone())?;
    let status_records = world.records(&world.mail.status)?;
    let transitions = dedup::<AccountStatusChanged>(&status_records, |c| {
        format!(
            "{} {:?}->{:?} by {}",
            c.account,
            c.from,
            c.to,
            cause(&c.envelope)
        )
    })?;
    let registrations = ids::<AccountRegistered>(&world.records(&world.mail.accounts)?);
    let activations = dedup::<AccountStatusChanged>(&status_records, |c| {
        if c.from == AccountStatus::Pending && c.to == AccountStatus::Active {
            cause(&c.envelope)
        } else {
            format!("other {}", c.envelope.event_id)
        }
    })?;

    let lost = [
        ("greylist", missing(&attempt_ids, &decisions)),
        ("scanner", missing(&received, &scanned)),
        ("storage", missing(&received, &stored)),
        ("lifecycle", missing(&registrations, &activations)),
    ];
    let outputs = [
        ("greylist GreylistDecided", &decisions),
        ("scanner MessageScanned", &scanned),
        ("storage MessageStored", &stored),
        ("lifecycle AccountStatusChanged", &transitions),
    ];
    for (what, d) in &outputs {
        eprintln!(
            "faults-kill: {what}: {} distinct, {} copies dropped by id, {} conflicting, {} doubled",
            d.distinct,
            d.copies,
            d.conflicting.len(),
            d.doubled.len()
        );
    }
    eprintln!("faults-kill: lost (inputs without their transition): {lost:?}");
    let moved_on = transitions
        .by_identity
        .keys()
        .filter(|k| k.contains("Active->Inactive") || k.contains("Inactive->Deleting"))
        .count();

    // The clean run: replay each consumer from the log, and audit.
    let mut comparisons = Vec::new();
    for p in &procs {
        let replay_dir = world.mail.dir.join(format!("clean-{}", p.consumer));
        let c = compare_with_clean_run(
            &p.config,
            &p.consumer,
            &world.store(&p.consumer),
            &replay_dir,
        )?;
        eprintln!(
            "faults-kill: {} vs a clean run: {} of {} partitions differ in state; audit: \
             audited={} diffs={}",
            p.consumer, c.state_diffs, c.partitions, c.audited, c.audit_diffs
        );
        comparisons.push((p.consumer.clone(), c));
    }

    // The Maildirs: one file per accepted message.
    let on_disk = message_ids_on_disk(&world.mail_root)?;
    let twice: Vec<_> = on_disk.iter().filter(|(_, n)| **n > 1).collect();
    let absent: Vec<_> = accepted
        .iter()
        .filter(|id| !on_disk.contains_key(*id))
        .collect();
    eprintln!(
        "faults-kill: Maildir: {} files, {} distinct messages, {} on disk twice or more, {} \
         accepted but absent; {:.0?} in all",
        on_disk.values().sum::<usize>(),
        on_disk.len(),
        twice.len(),
        absent.len(),
        started.elapsed()
    );

    for (what, d) in &outputs {
        assert!(d.conflicting.is_empty(), "{what}: {:?}", d.conflicting);
        assert!(d.doubled.is_empty(), "{what}: {:?}", d.doubled);
    }
    assert!(lost.iter().all(|(_, n)| *n == 0), "lost: {lost:?}");
    assert_eq!(decisions.distinct, attempt_ids.len());
    assert_eq!(scanned.distinct, received.len());
    assert_eq!(stored.distinct, MAILS);
    assert!(moved_on > 0, "the ticks moved accounts on: {transitions:?}");
    for (consumer, c) in &comparisons {
        assert_eq!(
            c.state_diffs, 0,
            "{consumer}: state differs from a clean run"
        );
        assert_eq!(
            c.audit_diffs, 0,
            "{consumer}: outputs differ from a clean run"
        );
        if *consumer != "scanner" {
            // The scanner keeps no state and its verdicts are its effect's.
            assert!(c.partitions > 0, "{consumer}: no state compared");
        }
        if ["greylist", "lifecycle"].contains(&consumer.as_str()) {
            // Their decisions are their outputs: an audit of none proves nothing.
            assert!(c.audited > 0, "{consumer}: the audit compared no output");
        }
    }
    assert!(twice.is_empty(), "duplicate Maildir files: {twice:?}");
    assert!(absent.is_empty(), "accepted, not stored: {absent:?}");
    assert_eq!(on_disk.len(), MAILS);
    Ok(())
}

/// The id of the event that caused this one.
fn cause(e: &Envelope) -> String {
    e.causation_id.clone().unwrap_or_default()
}

/// The distinct event ids of the `E` records.
fn ids<E: Event>(records: &[Consumed]) -> std::collections::HashSet<String> {
    records
        .iter()
        .filter_map(|(_, b)| mailfleet_events::Registry::builtin().decode::<E>(b).ok())
        .map(|e| e.envelope().event_id.clone())
        .collect()
}

/// How many of `inputs` have no transition caused by them.
fn missing(inputs: &std::collections::HashSet<String>, outputs: &Deduped) -> i64 {
    inputs
        .iter()
        .filter(|id| !outputs.by_identity.contains_key(*id))
        .count() as i64
}

/// Delivery attempts: first tries and retries of `TRIPLETS` triplets, a
/// minute of event time per step (so retries after 5 steps pass).
async fn produce_attempts(topic: String, run: String) -> anyhow::Result<usize> {
    let producer = EventProducer::new(&kafka(), "faults-attempts")?;
    let mut sent = 0;
    for step in 0..STEPS {
        for j in 0..ATTEMPTS_PER_STEP {
            let t = (step * 7 + j * 13) % TRIPLETS;
            let at = T0 + step * 60_000 + j;
            let attempt = DeliveryAttempted {
                envelope: Envelope::new(format!("{run}:attempt:{step}:{j}"), at, "faults"),
                client_address: Some(format!("10.0.{t}.1")),
                client_name: Some(format!("mx{t}.sender.test")),
                reverse_client_name: Some(format!("mx{t}.sender.test")),
                helo_name: Some(format!("mx{t}.sender.test")),
                sender: Some(format!("s{t}@sender.test")),
                recipient: Some(format!("r{}@faults.test", t % 7)),
                instance: Some(format!("{run}:{step}:{j}")),
                size: Some(1000),
                queue_id: None,
                policy_host: "mx1".into(),
                answered: None,
            };
            let key = format!("10.0.{t}.0");
            producer.send(&topic, key.as_bytes(), &attempt).await?;
            sent += 1;
        }
        tokio::time::sleep(STEP).await;
    }
    Ok(sent)
}

/// Accounts: two registrations a day of event time, logins for some, and
/// a daily clock tick into every partition, so that accounts with no login
/// go inactive (after 3 months and 2 days) and then to deletion.
async fn produce_accounts(topic: String, run: String) -> anyhow::Result<usize> {
    let producer = EventProducer::new(&kafka(), "faults-accounts")?;
    let mut registered = 0;
    for day in 0..STEPS {
        let at = T0 + day * DAY;
        for i in 0..2 {
            let account = format!("u{day}-{i}-{run}@faults.test");
            let event = AccountRegistered {
                envelope: Envelope::new(format!("{run}:register:{day}:{i}"), at, "faults"),
                account: account.clone(),
                password_hash: "{ARGON2}$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$aGFzaA".into(),
                plan: "free".into(),
                display_name: None,
            };
            producer.send(&topic, account.as_bytes(), &event).await?;
            registered += 1;
        }
        if day % 3 == 0 && day >= 10 {
            let account = format!("u{}-0-{run}@faults.test", day - 10);
            let login = LoginRecorded {
                envelope: Envelope::new(format!("{run}:login:{day}"), at, "faults"),
                account: account.clone(),
                channel: mailfleet_events::accounts::LoginChannel::Imap,
                ip: None,
            };
            producer.send(&topic, account.as_bytes(), &login).await?;
        }
        for partition in 0..3 {
            let tick = ClockTicked {
                envelope: Envelope::new(format!("{run}:tick:{partition}:{day}"), at + 1, "faults"),
                clock: "daily".into(),
                period_ms: DAY,
            };
            let bytes = mailfleet_events::encode(&tick)?;
            producer
                .send_to_partition(&topic, partition, &bytes)
                .await?;
        }
        tokio::time::sleep(STEP).await;
    }
    Ok(registered)
}

/// Mail over LMTP, one message at a time, to `MAILBOXES` mailboxes;
/// returns the Message-IDs that got `250`.
fn send_mails(port: u16, run: &str) -> anyhow::Result<Vec<String>> {
    let mut accepted = Vec::new();
    for n in 0..MAILS {
        let subject = format!("m{n}-{run}");
        let to = format!("box{}@faults.test", n % MAILBOXES);
        let reply = deliver(port, &to, &subject, "steady load")?;
        anyhow::ensure!(reply.starts_with("250"), "mail {n}: {reply}");
        accepted.push(format!("<{subject}@example.net>"));
        std::thread::sleep(Duration::from_millis(120));
    }
    Ok(accepted)
}
