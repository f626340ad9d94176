//! F9: poison events on every input topic of the greylist, the scanner,
//! the storage writer, the indexer and the lifecycle.
//!
//! Into each topic go, on one partition: garbage, a framed event with a
//! fingerprint no schema has, and a well-formed event with an impossible
//! value (a bad settings hash, a negative size or quota, an empty account,
//! a folder outside the Maildir); then a valid event on the same
//! partition. Every consumer reading the topic sets each poison record
//! aside in the dead-letter topic, with its kind and a reason naming the
//! bad value, and goes on to handle the valid event after it: nothing
//! panics, stalls, or is dropped silently.

use std::collections::BTreeMap;

use mailfleet_blob::BlobStore;
use mailfleet_events::{
    accounts::{AccountRegistered, AccountStatusChanged, QuotaChanged, UsageChanged},
    config::ConfigChanged,
    greylist::{DeliveryAttempted, GreylistDecided, GreylistReason},
    mail::{
        BodyType, MessageReceived, MessageScanned, MessageStored, MessagesPurged, PurgeRequested,
        ScanVerdict,
    },
    runtime::{DeadLetter, DeadLetterKind},
    Envelope, Event, Registry,
};
use mailfleet_runtime::producer::EventProducer;
use mailfleet_tests::{faults::*, fleet::deliver, ingest::simple_message, *};

/// 2026-11-30T00:00:00Z, ms.
const T0: i64 = 1_795_996_800_000;
/// The account all mail-side records are keyed by, so they share a partition.
const ACCOUNT: &str = "valid@poison.test";

/// One poison record and who must dead-letter it, how, and naming what.
struct Poison {
    topic: String,
    partition: i32,
    offset: i64,
    what: &'static str,
    kind: DeadLetterKind,
    consumers: Vec<&'static str>,
    /// In the dead letter's reason.
    names: String,
}

/// A well-formed event with an impossible value: its topic and key, its
/// bytes, what is wrong, the consumer that must reject it, and what the
/// reason must name.
type Impossible<'a> = (
    &'a String,
    &'a [u8],
    Vec<u8>,
    &'static str,
    &'static str,
    String,
);

#[tokio::test(flavor = "multi_thread")]
async fn poison_events_are_dead_lettered_with_their_reason_and_later_events_flow(
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let world = FaultWorld::new("faults-poison", kafka()).await?;
    let w = &world.mail;
    let dir = &w.dir;
    let mail_cfg = world.mail_config("mail.toml", free_port())?;
    let grey_cfg = world.grey_config("grey.toml", free_port(), "")?;
    let lmtp_cfg = world.mail_config("lmtp.toml", free_port())?;
    let log = dir.join("children.log");
    let mut children = Children(vec![
        spawn_mailfleet(&grey_cfg, &["run", "greylist"], &log)?,
        spawn_mailfleet(
            &mail_cfg,
            &["run", "scanner", "storage", "index", "lifecycle"],
            &log,
        )?,
        spawn_mailfleet(&lmtp_cfg, &["lmtp"], &log)?,
    ]);
    // Running: each has applied its inputs (the recorded settings).
    world.settle(&CONSUMERS).await?;

    let p = EventProducer::new(&kafka(), "faults-poison")?;
    let mut poisons = Vec::new();
    let account = ACCOUNT.as_bytes();
    // Which of the five read each topic.
    let topics: [(&String, &[u8], Vec<&'static str>); 6] = [
        (&world.attempts, b"10.9.9.0", vec!["greylist"]),
        (&w.received, account, vec!["scanner"]),
        (&w.scanned, account, vec!["storage"]),
        (&w.accounts, account, vec!["storage", "lifecycle"]),
        (&w.purge, account, vec!["storage"]),
        (&w.stored, account, vec!["storage", "index"]),
    ];
    for (topic, key, consumers) in &topics {
        let garbage = b"\x00\xffnot an event at all".to_vec();
        let (partition, offset) = p.send_raw(topic, key, &garbage).await?;
        poisons.push(Poison {
            topic: topic.to_string(),
            partition,
            offset,
            what: "garbage",
            kind: DeadLetterKind::Undecodable,
            consumers: consumers.clone(),
            names: "marker 00 FF".into(),
        });
        let mut unknown = vec![0xC3, 0x01, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x01, 0x02, 0x03];
        unknown.extend_from_slice(b"\x02a body for no schema");
        let (partition, offset) = p.send_raw(topic, key, &unknown).await?;
        poisons.push(Poison {
            topic: topic.to_string(),
            partition,
            offset,
            what: "unknown fingerprint",
            kind: DeadLetterKind::UnknownSchema,
            consumers: consumers.clone(),
            names: "deadbeef00010203".into(),
        });
    }

    // A well-formed event with an impossible value, per topic and reader.
    let blobs = BlobStore::open(w.blob_dir())?;
    let blob = blobs.put(simple_message("poison-blob", "x").as_bytes())?;
    let impossible: Vec<Impossible> = vec![
        (
            &world.attempts,
            b"10.9.9.0",
            encode(&ConfigChanged {
                envelope: env("bad-settings"),
                consumer: "greylist".into(),
                settings: "{\"delay_s\":1}".into(),
                hash: "0".repeat(64),
            })?,
            "a settings hash that is not the settings'",
            "greylist",
            format!("hash {}", "0".repeat(64)),
        ),
        (
            &w.received,
            account,
            encode(&MessageReceived {
                size: -1,
                ..received("negative-size", &blob)
            })?,
            "a negative size",
            "scanner",
            "size -1".into(),
        ),
        (
            &w.scanned,
            account,
            encode(&MessageScanned {
                size: -5,
                ..scanned("negative-size", &blob)
            })?,
            "a negative size",
            "storage",
            "size -5".into(),
        ),
        (
            &w.accounts,
            account,
            encode(&QuotaChanged {
                envelope: env("negative-quota"),
                account: ACCOUNT.into(),
                quota_bytes: Some(-100),
            })?,
            "a negative quota",
            "storage",
            "quota_bytes -100".into(),
        ),
        (
            &w.accounts,
            account,
            encode(&AccountRegistered {
                envelope: env("empty-account"),
                account: String::new(),
                password_hash: "{ARGON2}x".into(),
                plan: "free".into(),
                display_name: None,
            })?,
            "an empty account",
            "lifecycle",
            "no account".into(),
        ),
        (
            &w.purge,
            account,
            encode(&PurgeRequested {
                envelope: env("folder-outside"),
                account: ACCOUNT.into(),
                folder: "../../etc".into(),
                received_before: None,
                job: "poison".into(),
            })?,
            "a folder outside the Maildir",
            "storage",
            "../../etc".into(),
        ),
        (
            &w.stored,
            account,
            encode(&MessageStored {
                envelope: env("negative-stored"),
                account: ACCOUNT.into(),
                delivery_id: "poison-delivery".into(),
                folder: "INBOX".into(),
                file: "1.M1P1.poison".into(),
                size: -7,
                stored_bytes: -7,
                blob_id: blob.clone(),
                received_at: T0,
                message_id: None,
            })?,
            "a negative size",
            "index",
            "size -7".into(),
        ),
    ];
    for (topic, key, bytes, what, consumer, names) in impossible {
        let (partition, offset) = p.send_raw(topic, key, &bytes).await?;
        poisons.push(Poison {
            topic: topic.to_string(),
            partition,
            offset,
            what,
            kind: DeadLetterKind::Rejected,
            consumers: vec![consumer],
            names,
        });
    }
    // The greylist answers an attempt with no triplet (postgrey's DUNNO):
    // the policy server waits for that answer, so it is not a dead letter.
    let no_triplet = DeliveryAttempted {
        sender: None,
        recipient: None,
        ..attempt("no-triplet")
    };
    p.send(&world.attempts, b"10.9.9.0", &no_triplet).await?;

    // Then valid events on the same partitions.
    p.send(&world.attempts, b"10.9.9.0", &attempt("valid-attempt"))
        .await?;
    let reply = deliver(w.lmtp_port, ACCOUNT, "after-poison", "still flowing")?;
    anyhow::ensure!(reply.starts_with("250"), "LMTP: {reply}");
    let quota = QuotaChanged {
        envelope: env("valid-quota"),
        account: ACCOUNT.into(),
        quota_bytes: Some(1_000_000),
    };
    p.send(&w.accounts, account, &quota).await?;
    let registered = AccountRegistered {
        envelope: env("valid-register"),
        account: ACCOUNT.into(),
        password_hash: "{ARGON2}x".into(),
        plan: "free".into(),
        display_name: None,
    };
    p.send(&w.accounts, account, &registered).await?;
    let purge = PurgeRequested {
        envelope: env("valid-purge"),
        account: ACCOUNT.into(),
        folder: "Spam".into(),
        received_before: None,
        job: "poison".into(),
    };
    p.send(&w.purge, account, &purge).await?;

    world.settle(&CONSUMERS).await?;
    for (i, child) in children.0.iter_mut().enumerate() {
        anyhow::ensure!(
            child.try_wait()?.is_none(),
            "process {i} died; see {}",
            log.display()
        );
    }
    children.terminate()?;

    // Every poison record dead-lettered by each reader, with its reason.
    let letters: Vec<DeadLetter> = world
        .records(&w.deadletter)?
        .iter()
        .filter_map(|(_, v)| Registry::builtin().decode(v).ok())
        .collect();
    let mut found = BTreeMap::new();
    let mut problems = Vec::new();
    for poison in &poisons {
        for consumer in &poison.consumers {
            let letter = letters.iter().find(|l| {
                l.consumer == *consumer
                    && l.topic == poison.topic
                    && l.partition == poison.partition
                    && l.offset == poison.offset
            });
            let Some(letter) = letter else {
                problems.push(format!(
                    "{consumer} on {}: {} at {}/{} not dead-lettered",
                    poison.topic, poison.what, poison.partition, poison.offset
                ));
                continue;
            };
            if letter.kind != poison.kind || !letter.reason.contains(&poison.names) {
                problems.push(format!(
                    "{consumer} on {}: {}: {:?} {:?}, expected {:?} naming {:?}",
                    poison.topic,
                    poison.what,
                    letter.kind,
                    letter.reason,
                    poison.kind,
                    poison.names
                ));
            }
            eprintln!(
                "faults-poison: {consumer} {} {}: {:?} {}",
                short(&poison.topic),
                poison.what,
                letter.kind,
                letter.reason
            );
            *found.entry(*consumer).or_insert(0) += 1;
        }
    }

    // The events after them were handled.
    let decided: Vec<GreylistDecided> = events(&world, &world.decisions)?;
    let decided_for = |id: &str| {
        decided
            .iter()
            .find(|d| d.envelope.causation_id.as_deref() == Some(id))
    };
    let flowed = [
        (
            "greylist: the attempt with no triplet answered DUNNO",
            decided_for("no-triplet")
                .is_some_and(|d| d.reason == GreylistReason::MissingAttributes),
        ),
        (
            "greylist: the valid attempt decided",
            decided_for("valid-attempt").is_some(),
        ),
        (
            "scanner: the mail after the poison scanned",
            events::<MessageScanned>(&world, &w.scanned)?
                .iter()
                .any(|s| s.message_id.as_deref() == Some("after-poison@example.net")),
        ),
        (
            "storage: the mail after the poison stored",
            events::<MessageStored>(&world, &w.stored)?
                .iter()
                .any(|s| s.message_id.as_deref() == Some("after-poison@example.net")),
        ),
        (
            "storage: the valid quota change applied",
            events::<UsageChanged>(&world, &w.usage)?.iter().any(|u| {
                u.envelope.causation_id.as_deref() == Some("valid-quota")
                    && u.quota_bytes == 1_000_000
            }),
        ),
        (
            "storage: the valid purge done",
            events::<MessagesPurged>(&world, &w.stored)?
                .iter()
                .any(|m| m.envelope.causation_id.as_deref() == Some("valid-purge")),
        ),
        (
            "lifecycle: the valid registration activated",
            events::<AccountStatusChanged>(&world, &w.status)?
                .iter()
                .any(|c| c.envelope.causation_id.as_deref() == Some("valid-register")),
        ),
    ];
    // The indexer: the stored mail, and nothing of the negative one.
    let show = run_cli(&mail_cfg, &["index", "show", ACCOUNT])?;
    let total = show
        .lines()
        .find(|l| l.trim_start().starts_with("total"))
        .unwrap_or_default()
        .to_string();
    for (what, ok) in &flowed {
        eprintln!("faults-poison: {what}: {ok}");
        if !ok {
            problems.push(what.to_string());
        }
    }
    eprintln!("faults-poison: index of {ACCOUNT}: {total}");
    if !total.contains(" 1 messages") {
        problems.push(format!("index: expected 1 message: {show}"));
    }
    eprintln!(
        "faults-poison: {} poison records, dead letters per consumer {found:?}, {} problems; {:.0?}",
        poisons.len(),
        problems.len(),
        started.elapsed()
    );
    assert!(problems.is_empty(), "{problems:#?}");
    Ok(())
}

fn short(topic: &str) -> &str {
    topic.split_once('.').map_or(topic, |(_, t)| t)
}

fn encode<E: Event>(e: &E) -> anyhow::Result<Vec<u8>> {
    Ok(mailfleet_events::encode(e)?)
}

fn env(id: &str) -> Envelope {
    Envelope::new(id, T0, "faults-poison")
}

fn events<E: Event>(world: &FaultWorld, topic: &str) -> anyhow::Result<Vec<E>> {
    Ok(world
        .records(topic)?
        .iter()
        .filter_map(|(_, v)| Registry::builtin().decode(v).ok())
        .collect())
}

fn attempt(id: &str) -> DeliveryAttempted {
    DeliveryAttempted {
        envelope: env(id),
        client_address: Some("10.9.9.1".into()),
        client_name: Some("mx.poison.test".into()),
        reverse_client_name: None,
        helo_name: Some("mx.poison.test".into()),
        sender: Some("a@sender.test".into()),
        recipient: Some(ACCOUNT.into()),
        instance: Some(id.into()),
        size: Some(100),
        queue_id: None,
        policy_host: "mx1".into(),
        answered: None,
    }
}

fn received(id: &str, blob: &str) -> MessageReceived {
    MessageReceived {
        envelope: env(id),
        account: ACCOUNT.into(),
        recipient: ACCOUNT.into(),
        sender: "a@sender.test".into(),
        blob_id: blob.into(),
        size: 100,
        received_at: T0,
        body_type: BodyType::SevenBit,
        lhlo: "mx".into(),
        session_id: "s".into(),
        recipient_count: 1,
        recipient_index: 0,
        message_id: Some(format!("<{id}@poison.test>")),
        header_from: None,
        subject: None,
        header_date: None,
        client_address: None,
        client_name: None,
        client_helo: None,
        queue_id: None,
    }
}

fn scanned(id: &str, blob: &str) -> MessageScanned {
    MessageScanned {
        envelope: env(id),
        account: ACCOUNT.into(),
        recipient: ACCOUNT.into(),
        sender: "a@sender.test".into(),
        blob_id: blob.into(),
        size: 100,
        received_at: T0,
        message_id: Some(format!("<{id}@poison.test>")),
        verdict: ScanVerdict::Clean,
        signature: None,
        file: None,
        rule: None,
        scanner: "poison".into(),
        spam: None,
        spam_error: None,
    }
}
