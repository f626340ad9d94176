//! F9 for the consumers `faults_poison` does not cover: the deleter, the
//! directory, the notifier, the purger and the reporter, each on its real
//! routes (`FullWorld`: the whole topology under the test's prefix).
//!
//! Into each input topic of the consumer go, on one partition: garbage and
//! a framed event with a fingerprint no schema has, and, where the
//! consumer checks values, a well-formed event with an impossible one (a
//! deletion step it does not know, an empty account, a negative quota or
//! size, an unknown template, a recipient that is no address, an alert
//! without an event id, a purge of INBOX or over a zero-minute window).
//! Then a valid event on the same partition, whose output must be seen:
//! the partition is not stalled. Every poison record must be in the
//! dead-letter topic, from this consumer, naming its kind, topic,
//! partition and offset, and a reason naming the bad value.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use mailfleet_events::{
    accounts::{
        AccountRegistered, AccountStatus, AccountStatusChanged, DeletionStep,
        DeletionStepCompleted, DeletionStepRequested, QuotaChanged, UsageChanged,
    },
    admin::AlertSeverity,
    clock::ClockTicked,
    mail::{MessageReceived, MessageStored, PurgeRequested},
    runtime::{DeadLetter, DeadLetterKind},
    scheduler::JobDue,
    Envelope, Event, Registry,
};
use mailfleet_runtime::producer::EventProducer;
use mailfleet_tests::{
    directory as ldap,
    full::FullWorld,
    notify::{deactivated_notice, require_postfix, spawn_lmtp, virus_alert, POSTFIX_LMTP_PORT},
    *,
};

/// 2026-11-30T00:00:00Z, ms.
const T0: i64 = 1_795_996_800_000;
/// How long the output of the valid event may take.
const WITHIN: Duration = Duration::from_secs(90);

/// One poison record, and what its dead letter must say.
struct Poison {
    topic: String,
    partition: i32,
    offset: i64,
    what: String,
    kind: DeadLetterKind,
    /// In the dead letter's reason.
    names: String,
}

/// One consumer running alone on a [`FullWorld`], and the poison sent to it.
struct Run {
    world: FullWorld,
    consumer: &'static str,
    config: PathBuf,
    log: PathBuf,
    children: Children,
    producer: EventProducer,
    poisons: Vec<Poison>,
}

impl Run {
    /// `mailfleet run <consumer>` on a fresh world, started.
    async fn start(
        world: FullWorld,
        consumer: &'static str,
        admins: &[&str],
    ) -> anyhow::Result<Run> {
        let config = world.write_config("config.toml", free_port(), admins, "")?;
        let log = world.dir.join(format!("{consumer}.log"));
        let children = Children(vec![spawn_mailfleet(&config, &["run", consumer], &log)?]);
        wait_started(&log, 0, 1).await?;
        let producer = EventProducer::new(&world.kafka, "faults-poison-more")?;
        Ok(Run {
            world,
            consumer,
            config,
            log,
            children,
            producer,
            poisons: Vec::new(),
        })
    }

    /// The world's copy of the real topic `real`.
    fn topic(&self, real: &str) -> String {
        self.world.topic(real)
    }

    /// Garbage and an unknown fingerprint on `topic` under `key`.
    async fn undecodable(&mut self, topic: &str, key: &str) -> anyhow::Result<()> {
        let garbage = b"\x00\xffnot an event at all".to_vec();
        let mut unknown = vec![0xC3, 0x01, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x01, 0x02, 0x03];
        unknown.extend_from_slice(b"\x02a body for no schema");
        for (bytes, what, kind, names) in [
            (
                garbage,
                "garbage",
                DeadLetterKind::Undecodable,
                "marker 00 FF",
            ),
            (
                unknown,
                "unknown fingerprint",
                DeadLetterKind::UnknownSchema,
                "deadbeef00010203",
            ),
        ] {
            let (partition, offset) = self
                .producer
                .send_raw(topic, key.as_bytes(), &bytes)
                .await?;
            self.poisons.push(Poison {
                topic: topic.to_string(),
                partition,
                offset,
                what: what.into(),
                kind,
                names: names.into(),
            });
        }
        Ok(())
    }

    /// A well-formed `event` with an impossible value, which the consumer
    /// must reject with a reason naming `names`.
    async fn impossible<E: Event>(
        &mut self,
        topic: &str,
        key: &str,
        event: &E,
        names: &str,
    ) -> anyhow::Result<()> {
        let (partition, offset) = self.producer.send(topic, key.as_bytes(), event).await?;
        self.poisons.push(Poison {
            topic: topic.to_string(),
            partition,
            offset,
            what: format!("{} {}", E::NAME, event.envelope().event_id),
            kind: DeadLetterKind::Rejected,
            names: names.into(),
        });
        Ok(())
    }

    /// Send a valid event.
    async fn send<E: Event>(&self, topic: &str, key: &str, event: &E) -> anyhow::Result<i32> {
        Ok(self.producer.send(topic, key.as_bytes(), event).await?.0)
    }

    /// Every `E` on `topic` up to its end now.
    fn events<E: Event>(&self, topic: &str) -> Vec<E> {
        mailfleet_runtime::read::read_to_end(&self.world.kafka, topic, "poison-test")
            .unwrap_or_default()
            .iter()
            .filter_map(|r| Registry::builtin().decode(&r.payload).ok())
            .collect()
    }

    /// Wait until `what` holds (the valid event's output is seen).
    async fn wait_for(&self, what: &str, ok: impl FnMut() -> bool) -> anyhow::Result<()> {
        wait_until(what, WITHIN, ok)
            .await
            .map_err(|e| anyhow::anyhow!("{e}; the consumer's log: {}", self.log.display()))
    }

    /// Wait until the consumer has applied its inputs to their ends, check
    /// it is alive, stop it, and check each poison's dead letter.
    async fn finish(mut self) -> anyhow::Result<()> {
        let reads = self.world.reads(self.consumer)?;
        wait_applied(&self.world.store(self.consumer), &reads).await?;
        let alive = self.children.0[0].try_wait()?.is_none();
        anyhow::ensure!(alive, "{} died; see {}", self.consumer, self.log.display());
        self.children.terminate()?;
        let letters: Vec<DeadLetter> = self.events(&self.topic("deadletter"));
        let mut problems = Vec::new();
        for p in &self.poisons {
            let letter = letters.iter().find(|l| {
                l.consumer == self.consumer
                    && l.topic == p.topic
                    && l.partition == p.partition
                    && l.offset == p.offset
            });
            let Some(letter) = letter else {
                problems.push(format!(
                    "{}: {} on {} at {}/{} not dead-lettered",
                    self.consumer, p.what, p.topic, p.partition, p.offset
                ));
                continue;
            };
            eprintln!(
                "faults-poison-more: {} {} {}: {:?} {}",
                self.consumer, p.topic, p.what, letter.kind, letter.reason
            );
            if letter.kind != p.kind || !letter.reason.contains(&p.names) {
                problems.push(format!(
                    "{}: {} on {}: {:?} {:?}, expected {:?} naming {:?}",
                    self.consumer, p.what, p.topic, letter.kind, letter.reason, p.kind, p.names
                ));
            }
        }
        let ours = letters
            .iter()
            .filter(|l| l.consumer == self.consumer)
            .count();
        if ours != self.poisons.len() {
            problems.push(format!(
                "{}: {ours} dead letters for {} poison records",
                self.consumer,
                self.poisons.len()
            ));
        }
        eprintln!(
            "faults-poison-more: {}: {} poison records on {} topics, {} problems",
            self.consumer,
            self.poisons.len(),
            reads.len(),
            problems.len()
        );
        assert!(problems.is_empty(), "{problems:#?}");
        Ok(())
    }
}

fn env(id: &str, at: i64) -> Envelope {
    Envelope::new(id, at, "faults-poison-more")
}

/// A hash-shaped password (never checked against a password here).
const HASH: &str = "{ARGON2}$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$aGFzaA";

fn registered(id: &str, account: &str) -> AccountRegistered {
    AccountRegistered {
        envelope: env(id, T0),
        account: account.into(),
        password_hash: HASH.into(),
        plan: "free".into(),
        display_name: None,
    }
}

fn step_done(id: &str, account: &str, step: DeletionStep) -> DeletionStepCompleted {
    DeletionStepCompleted {
        envelope: env(id, T0 + 1000),
        account: account.into(),
        step,
        detail: "done by the test".into(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deleter_dead_letters_poison_and_goes_on() -> anyhow::Result<()> {
    let mut run = Run::start(FullWorld::new("poison-deleter").await?, "deleter", &[]).await?;
    let events = run.topic("accounts.events");
    let account = format!("d@{}", run.world.domain());
    let deleting = AccountStatusChanged {
        envelope: env("deleting", T0),
        account: account.clone(),
        from: AccountStatus::Inactive,
        to: AccountStatus::Deleting,
        reason: "grace-expired".into(),
        settings_hash: None,
    };
    run.send(&events, &account, &deleting).await?;
    run.undecodable(&events, &account).await?;
    let unknown = step_done("unknown-step", &account, DeletionStep::Unknown);
    run.impossible(
        &events,
        &account,
        &unknown,
        "a step this deleter does not know",
    )
    .await?;
    run.send(
        &events,
        &account,
        &step_done("maildir", &account, DeletionStep::Maildir),
    )
    .await?;
    run.send(
        &events,
        &account,
        &step_done("index", &account, DeletionStep::Index),
    )
    .await?;
    run.wait_for("the DIRECTORY step asked for after the poison", || {
        run.events::<DeletionStepRequested>(&events)
            .iter()
            .any(|r| {
                r.account == account
                    && r.step == DeletionStep::Directory
                    && r.envelope.causation_id.as_deref() == Some("index")
            })
    })
    .await?;
    run.finish().await
}

#[tokio::test(flavor = "multi_thread")]
async fn directory_dead_letters_poison_and_goes_on() -> anyhow::Result<()> {
    ldap::require_slapd()?;
    let _slapd = ldap::SLAPD.read().await;
    let mut run = Run::start(FullWorld::new("poison-directory").await?, "directory", &[]).await?;
    let events = run.topic("accounts.events");
    let account = format!("b@{}", run.world.domain());
    let dn = ldap::account_dn(ldap::PEOPLE, &account);
    let _cleanup = ldap::Cleanup(vec![dn.clone()]);
    run.undecodable(&events, &account).await?;
    let empty = registered("empty-account", "");
    run.impossible(&events, &account, &empty, "the account is empty")
        .await?;
    let negative = QuotaChanged {
        envelope: env("negative-quota", T0),
        account: account.clone(),
        quota_bytes: Some(-5),
    };
    run.impossible(&events, &account, &negative, "quota_bytes = -5 is negative")
        .await?;
    let hash = ldap::argon2_hash(&ldap::random_password())?;
    let valid = AccountRegistered {
        password_hash: hash,
        ..registered("valid-register", &account)
    };
    run.send(&events, &account, &valid).await?;
    run.wait_for(
        "the entry of the account registered after the poison",
        || ldap::values(&dn, "mailfleetStatus").is_ok_and(|v| v == ["pending"]),
    )
    .await?;
    run.finish().await
}

#[tokio::test(flavor = "multi_thread")]
async fn notifier_dead_letters_poison_and_goes_on() -> anyhow::Result<()> {
    require_postfix()?;
    let mut world = FullWorld::new("poison-notifier").await?;
    // The notices come back from the test Postfix by LMTP on its port.
    world.lmtp_port = POSTFIX_LMTP_PORT;
    let tag = world.name.clone();
    let (user, admin) = (
        format!("{tag}@example.test"),
        format!("{tag}-admin@example.test"),
    );
    let mut run = Run::start(world, "notifier", &[&admin]).await?;
    let lmtp_config = run
        .world
        .write_config("lmtp.toml", free_port(), &[&admin], "")?;
    let lmtp_log = run.world.dir.join("lmtp.log");
    let lmtp = spawn_lmtp(&lmtp_config, POSTFIX_LMTP_PORT, &lmtp_log).await?;
    run.children.0.push(lmtp);
    // Ours, not another process on the port: it says so once bound.
    let ours =
        || std::fs::read_to_string(&lmtp_log).is_ok_and(|l| l.contains("LMTP server listening"));
    wait_until(
        "our LMTP server bound to 2424",
        Duration::from_secs(30),
        ours,
    )
    .await?;
    let (notify, alerts) = (run.topic("notify.requests"), run.topic("admin.alerts"));
    let after = "2026-12-30T00:00:00Z";

    run.undecodable(&notify, &user).await?;
    let mut unknown = deactivated_notice(&format!("{tag}-unknown"), &user, after);
    unknown.template = "no-such-template".into();
    run.impossible(
        &notify,
        &user,
        &unknown,
        "unknown template \"no-such-template\"",
    )
    .await?;
    let mut nowhere = deactivated_notice(&format!("{tag}-nowhere"), &user, after);
    nowhere.to = "not an address".into();
    run.impossible(
        &notify,
        &user,
        &nowhere,
        "recipient \"not an address\" is not a mail address",
    )
    .await?;
    run.undecodable(&alerts, &user).await?;
    let mut anonymous = virus_alert("", AlertSeverity::Critical, &user, "<x@y>", "Eicar");
    anonymous.envelope.event_id = String::new();
    run.impossible(&alerts, &user, &anonymous, "the event has no event_id")
        .await?;

    let notice = deactivated_notice(&format!("{tag}-valid"), &user, after);
    run.send(&notify, &user, &notice).await?;
    let id = format!("{tag}-valid-alert");
    let alert = virus_alert(&id, AlertSeverity::Critical, &user, "<v@y>", "Eicar");
    run.send(&alerts, &user, &alert).await?;
    let received = run.topic("mail.received");
    run.wait_for("the valid notice and alert back through Postfix", || {
        let got = run.events::<MessageReceived>(&received);
        [&user, &admin]
            .iter()
            .all(|to| got.iter().any(|m| m.recipient == **to))
    })
    .await?;
    run.finish().await
}

fn job(id: &str, params: &[(&str, &str)]) -> JobDue {
    JobDue {
        envelope: env(id, T0),
        job: "spam-purge".into(),
        kind: "purge".into(),
        due_at: T0,
        run_id: id.into(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn purger_dead_letters_poison_and_goes_on() -> anyhow::Result<()> {
    let mut run = Run::start(FullWorld::new("poison-purger").await?, "purger", &[]).await?;
    let (stored, purge) = (run.topic("mail.stored"), run.topic("mail.purge"));
    let account = format!("p@{}", run.world.domain());
    run.undecodable(&stored, &account).await?;
    let spam = MessageStored {
        envelope: env("stored-spam", T0 - 1000),
        account: account.clone(),
        delivery_id: "d1".into(),
        folder: "Spam".into(),
        file: "1.M1P1.test".into(),
        size: 100,
        stored_bytes: 100,
        blob_id: "blob1".into(),
        received_at: T0 - 1000,
        message_id: None,
    };
    run.send(&stored, &account, &spam).await?;
    // The purge topic's records of this partition: keyed by the account.
    run.undecodable(&purge, &account).await?;
    let good = [
        ("folder", "Spam"),
        ("window_minutes", "1"),
        ("max_purges_per_s", "10"),
    ];
    let inbox = job("spam-purge:inbox", &[good[1], good[2], ("folder", "INBOX")]);
    run.impossible(&purge, &account, &inbox, "folder = \"INBOX\"")
        .await?;
    let zero = job(
        "spam-purge:zero",
        &[good[0], good[2], ("window_minutes", "0")],
    );
    run.impossible(&purge, &account, &zero, "window_minutes = \"0\"")
        .await?;
    run.send(&purge, &account, &job("spam-purge:good", &good))
        .await?;
    let tick = ClockTicked {
        envelope: env("tick-after-window", T0 + 120_000),
        clock: "minutely".into(),
        period_ms: 60_000,
    };
    run.send(&purge, &account, &tick).await?;
    run.wait_for("the purge planned after the poison, released", || {
        run.events::<PurgeRequested>(&purge)
            .iter()
            .any(|r| r.account == account && r.folder == "Spam" && r.job == "spam-purge:good")
    })
    .await?;
    run.finish().await
}

#[tokio::test(flavor = "multi_thread")]
async fn reporter_dead_letters_poison_and_goes_on() -> anyhow::Result<()> {
    let mut run = Run::start(FullWorld::new("poison-reporter").await?, "reporter", &[]).await?;
    let account = format!("r@{}", run.world.domain());
    let reads = run.world.reads("reporter")?;
    for topic in &reads {
        run.undecodable(topic, &account).await?;
    }
    let negative = MessageStored {
        envelope: env("negative-size", T0),
        account: account.clone(),
        delivery_id: "d1".into(),
        folder: "INBOX".into(),
        file: "1.M1P1.test".into(),
        size: -7,
        stored_bytes: -7,
        blob_id: "blob1".into(),
        received_at: T0,
        message_id: None,
    };
    run.impossible(&run.topic("mail.stored"), &account, &negative, "size -7")
        .await?;
    let usage = UsageChanged {
        envelope: env("negative-usage", T0),
        account: account.clone(),
        used_bytes: -1,
        messages: 1,
        quota_bytes: 1000,
        over_quota: false,
        settings_hash: None,
    };
    run.impossible(
        &run.topic("accounts.usage"),
        &account,
        &usage,
        "used_bytes -1",
    )
    .await?;
    // After the poison, on each topic's partition: a dead letter to count,
    // one label per topic (the reporter counts any event it knows on any
    // of its topics).
    let label = |topic: &str| format!("after-{}", topic.split_once('.').map_or(topic, |t| t.1));
    for (i, topic) in reads.iter().enumerate() {
        let marker = DeadLetter {
            envelope: env(&format!("marker-{i}"), T0),
            consumer: label(topic),
            topic: "elsewhere".into(),
            partition: 0,
            offset: i as i64,
            kind: DeadLetterKind::Undecodable,
            reason: "a marker".into(),
            original_key: None,
            original_value: None,
            original_timestamp: None,
        };
        run.send(topic, &account, &marker).await?;
    }
    let mut month = serde_json::Value::Null;
    let counted = |month: &serde_json::Value| -> BTreeMap<String, i64> {
        reads
            .iter()
            .map(|t| {
                let n = month["counts"]["dead_letters"][label(t)].as_i64();
                (label(t), n.unwrap_or(0))
            })
            .collect()
    };
    let report = [
        "report", "--month", "2026-11", "--format", "json", "--months", "1",
    ];
    run.wait_for("the marker after the poison counted on every topic", || {
        month = run_cli(&run.config, &report)
            .ok()
            .and_then(|out| serde_json::from_str::<serde_json::Value>(&out).ok())
            .map(|json| json["months"][0].clone())
            .unwrap_or_default();
        counted(&month).values().all(|n| *n == 1)
    })
    .await?;
    // The impossible values counted nothing.
    let delivered = &month["counts"]["delivered_bytes"];
    assert!(delivered.is_null() || delivered[""] == 0, "{month:#}");
    let storage = &month["levels"]["storage_bytes"];
    assert!(
        storage.is_null() || storage["unknown"].as_i64().unwrap_or(0) >= 0,
        "{month:#}"
    );
    run.finish().await
}
