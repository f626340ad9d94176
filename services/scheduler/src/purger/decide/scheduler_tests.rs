use std::collections::{BTreeMap, BTreeSet};

use mailfleet_events::{Event, Registry};
use mailfleet_runtime::{Emit, Overlay, Verdict};

use super::*;

/// 2026-11-28T00:00:00Z.
const MIDNIGHT: i64 = 1_795_824_000_000;
const MINUTE: i64 = 60_000;

fn env(id: &str, at: i64) -> Envelope {
    Envelope::new(id, at, "test")
}

fn stored(account: &str, folder: &str) -> PurgerInput {
    PurgerInput::Stored(MessageStored {
        envelope: env("st", MIDNIGHT - 3_600_000),
        account: account.into(),
        delivery_id: "d".into(),
        folder: folder.into(),
        file: "f".into(),
        size: 10,
        stored_bytes: 10,
        blob_id: "b".into(),
        received_at: MIDNIGHT - 3_600_000,
        message_id: None,
    })
}

fn job(folder: &str, window_minutes: u32, rate: &str, due_at: i64) -> PurgerInput {
    let name = format!("{}-purge", folder.to_lowercase());
    let run_id = crate::schedule::run_id(&name, due_at).unwrap();
    let mut params = BTreeMap::new();
    params.insert("folder".into(), folder.into());
    params.insert("window_minutes".into(), window_minutes.to_string());
    params.insert("max_purges_per_s".into(), rate.into());
    PurgerInput::Job(JobDue {
        envelope: env(&run_id, due_at),
        job: name,
        kind: "purge".into(),
        due_at,
        run_id,
        params,
    })
}

fn tick(at: i64) -> PurgerInput {
    PurgerInput::Tick(ClockTicked {
        envelope: env(&format!("clock:mail.purge:0:{at}"), at),
        clock: "every-60s".into(),
        period_ms: 60_000,
    })
}

fn requests(outputs: &[Emit]) -> Vec<PurgeRequested> {
    outputs
        .iter()
        .filter(|o| o.event.name() == PurgeRequested::NAME)
        .map(|o| {
            let bytes = o.event.encode().expect("outputs fit their schema");
            Registry::builtin().decode(&bytes).unwrap()
        })
        .collect()
}

/// One partition's planner and its state.
struct Partition {
    state: Overlay,
    partition: i32,
    partitions: i32,
}

impl Partition {
    fn new(partition: i32, partitions: i32) -> Self {
        Self {
            state: Overlay::default(),
            partition,
            partitions,
        }
    }

    fn feed(&mut self, input: PurgerInput) -> Result<Vec<Emit>, String> {
        let cfg = PurgerConfig::default();
        let view = StateView::in_memory(&self.state);
        let d = decide(&cfg, &view, &input, self.partition, self.partitions).unwrap();
        match d.verdict {
            Verdict::Ignore => Ok(Vec::new()),
            Verdict::Reject(r) => Err(r),
            Verdict::Apply => {
                self.state.extend(d.changes.clone());
                Ok(d.outputs)
            }
        }
    }

    fn released_until(&mut self, end: i64) -> Vec<PurgeRequested> {
        let mut out = Vec::new();
        let mut t = MIDNIGHT;
        while t <= end {
            out.extend(requests(&self.feed(tick(t)).unwrap()));
            t += MINUTE;
        }
        out
    }
}

#[test]
fn purger_spam_plans_only_the_accounts_with_spam_and_releases_them_on_ticks() {
    let mut p = Partition::new(0, 1);
    for (account, folder) in [
        ("a@x.test", "Spam"),
        ("a@x.test", "Spam"),
        ("b@x.test", "INBOX"),
        ("C@X.test", "Spam"),
    ] {
        p.feed(stored(account, folder)).unwrap();
    }
    assert!(p.feed(job("Spam", 2, "1", MIDNIGHT)).unwrap().is_empty());
    assert!(
        p.feed(job("Spam", 2, "1", MIDNIGHT)).unwrap().is_empty(),
        "the same run again is ignored"
    );
    assert!(requests(&p.feed(tick(MIDNIGHT - MINUTE)).unwrap()).is_empty());
    let released = p.released_until(MIDNIGHT + 3 * MINUTE);
    let accounts: BTreeSet<&str> = released.iter().map(|r| r.account.as_str()).collect();
    assert_eq!(accounts, BTreeSet::from(["a@x.test", "c@x.test"]));
    assert_eq!(
        released.len(),
        2,
        "once each, the repeated run planned nothing"
    );
    for r in &released {
        assert_eq!(r.folder, "Spam");
        assert_eq!(
            r.received_before,
            Some(MIDNIGHT),
            "nothing newer than the run"
        );
        assert_eq!(r.job, "spam-purge:2026-11-28T00:00:00Z");
        assert!(r.envelope.event_time >= MIDNIGHT && r.envelope.event_time < MIDNIGHT + 2 * MINUTE);
    }
    assert!(
        p.released_until(MIDNIGHT + 10 * MINUTE).is_empty(),
        "released once"
    );
}

#[test]
fn purger_trash_is_planned_for_every_mailbox_and_purged_spam_is_forgotten() {
    let mut p = Partition::new(0, 1);
    p.feed(stored("a@x.test", "INBOX")).unwrap();
    p.feed(stored("b@x.test", "Spam")).unwrap();
    p.feed(job("Trash", 1, "5", MIDNIGHT)).unwrap();
    let trash: BTreeSet<String> = p
        .released_until(MIDNIGHT + MINUTE)
        .into_iter()
        .map(|r| r.account)
        .collect();
    assert_eq!(
        trash,
        BTreeSet::from(["a@x.test".into(), "b@x.test".into()])
    );

    p.feed(PurgerInput::Purged(MessagesPurged {
        envelope: env("pu", MIDNIGHT),
        account: "b@x.test".into(),
        folder: "Spam".into(),
        count: 1,
        bytes: 10,
        files: vec!["f".into()],
        job: "spam-purge:x".into(),
    }))
    .unwrap();
    p.feed(job("Spam", 1, "5", MIDNIGHT + 86_400_000)).unwrap();
    let mut t = MIDNIGHT + 86_400_000;
    let mut spam = Vec::new();
    while t < MIDNIGHT + 86_400_000 + 2 * MINUTE {
        spam.extend(requests(&p.feed(tick(t)).unwrap()));
        t += MINUTE;
    }
    assert!(spam.is_empty(), "no Spam left: {spam:?}");
}

#[test]
fn purger_a_mailbox_deleted_before_its_time_is_not_purged() {
    let mut p = Partition::new(0, 1);
    p.feed(stored("a@x.test", "Spam")).unwrap();
    p.feed(stored("b@x.test", "Spam")).unwrap();
    p.feed(job("Spam", 60, "1", MIDNIGHT)).unwrap();
    p.feed(PurgerInput::MailboxGone(MailboxDeleted {
        envelope: env("md", MIDNIGHT),
        account: "b@x.test".into(),
        files: 1,
        bytes: 10,
        reason: "account-deleted".into(),
    }))
    .unwrap();
    let released = p.released_until(MIDNIGHT + 61 * MINUTE);
    let accounts: Vec<&str> = released.iter().map(|r| r.account.as_str()).collect();
    assert_eq!(accounts, ["a@x.test"]);
}

#[test]
fn purger_bad_job_params_are_refused_naming_them() {
    let mut p = Partition::new(0, 1);
    let with = |key: &str, value: &str| {
        let PurgerInput::Job(mut j) = job("Spam", 10, "5", MIDNIGHT) else {
            unreachable!()
        };
        j.params.insert(key.into(), value.into());
        PurgerInput::Job(j)
    };
    for (key, value, expected) in [
        ("folder", "INBOX", "param folder = \"INBOX\""),
        ("window_minutes", "0", "param window_minutes = \"0\""),
        ("window_minutes", "lots", "param window_minutes = \"lots\""),
        (
            "max_purges_per_s",
            "fast",
            "param max_purges_per_s = \"fast\"",
        ),
        (
            "received_before",
            "yesterday",
            "param received_before = \"yesterday\"",
        ),
    ] {
        let err = p.feed(with(key, value)).unwrap_err();
        assert!(err.contains(expected), "{err}");
        assert!(err.contains("spam-purge:2026-11-28T00:00:00Z"), "{err}");
    }
    let mut twelve = Partition::new(3, 12);
    let err = twelve.feed(job("Spam", 10, "0.1", MIDNIGHT)).unwrap_err();
    assert!(err.contains("max_purges_per_s = 0.1"), "{err}");
}

#[test]
fn purger_10000_accounts_over_12_partitions_stay_within_the_limit_per_minute() {
    let partitions = 12;
    let mut shards: Vec<Partition> = (0..partitions)
        .map(|p| Partition::new(p, partitions))
        .collect();
    for i in 0..10_000 {
        let account = format!("user{i:05}@mailfleet.test");
        // Any sharding will do; Kafka's murmur2 is not needed here.
        shards[i % partitions as usize]
            .feed(stored(&account, "Spam"))
            .unwrap();
    }
    // 10,000 accounts in a 60-minute window at 5/s: 18,000 places.
    let mut released = Vec::new();
    for shard in &mut shards {
        shard.feed(job("Spam", 60, "5", MIDNIGHT)).unwrap();
        released.extend(shard.released_until(MIDNIGHT + 61 * MINUTE));
    }
    assert_eq!(released.len(), 10_000);
    let distinct: BTreeSet<&str> = released.iter().map(|r| r.account.as_str()).collect();
    assert_eq!(distinct.len(), 10_000, "each account once");
    let mut per_minute: BTreeMap<i64, usize> = BTreeMap::new();
    let mut per_second: BTreeMap<i64, usize> = BTreeMap::new();
    for r in &released {
        let t = r.envelope.event_time;
        assert!(
            (MIDNIGHT..MIDNIGHT + 60 * MINUTE).contains(&t),
            "in the window"
        );
        *per_minute.entry(t / MINUTE).or_default() += 1;
        *per_second.entry(t / 1000).or_default() += 1;
    }
    let peak_minute = per_minute.values().max().copied().unwrap();
    let peak_second = per_second.values().max().copied().unwrap();
    println!(
        "10,000 accounts, 12 partitions, 5/s over 60 min: peak {peak_second}/s, {peak_minute}/min, {} minutes used",
        per_minute.len()
    );
    assert!(peak_minute <= 300, "peak {peak_minute}/min > 5/s");
    assert!(peak_second <= 5, "peak {peak_second}/s");
    assert!(
        peak_minute >= 10_000 / 60,
        "spread over the window: {peak_minute}"
    );
}
