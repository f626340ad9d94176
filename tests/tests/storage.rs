//! The storage writer and the indexer over the real broker (and the real
//! clamd, as the scanner runs in front): quota, replay idempotence, purges
//! with the index agreeing and rebuilding to the same digest, and crash
//! safety of deliveries.

use std::{process::Command, time::Duration};

use mailfleet_events::{
    accounts::{PlanChanged, QuotaChanged, UsageChanged},
    mail::{MessageRejected, MessageStored, MessagesPurged, PurgeRequested},
    notify::NotificationRequested,
    Envelope,
};
use mailfleet_tests::{fleet::*, ingest::*, *};

#[tokio::test(flavor = "multi_thread")]
async fn over_quota_mail_is_rejected_and_quota_changed_lifts_the_limit() -> anyhow::Result<()> {
    let mut fleet = Fleet::start(
        "quota",
        "default_plan = \"tiny\"\n[consumers.storage.plans]\ntiny = 1500\n",
    )
    .await?;
    let port = fleet.world.lmtp_port;
    let body = "x".repeat(800);
    assert!(deliver(port, "bob@quota.test", "first", &body)?.starts_with("250"));
    fleet
        .wait_for::<MessageStored>(&fleet.world.stored, 1)
        .await?;
    // Accepted by LMTP (not over quota yet), then not written: over quota.
    assert!(deliver(port, "bob@quota.test", "second", &body)?.starts_with("250"));
    let rejected: Vec<MessageRejected> = fleet.wait_for(&fleet.world.stored, 1).await?;
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0].quota_bytes, 1500);
    // Decided with the quota plans the writer recorded at start.
    let recorded = rejected[0].settings_hash.clone();
    assert!(
        recorded.as_ref().is_some_and(|h| h.len() == 64),
        "{rejected:?}"
    );
    let usage: Vec<UsageChanged> = fleet.wait_for(&fleet.world.usage, 1).await?;
    // (A quota change read before the recorded settings, on another
    // topic of the partition, may still carry none.)
    assert!(
        usage.iter().any(|u| u.settings_hash == recorded),
        "{usage:?}"
    );
    let notices: Vec<NotificationRequested> = fleet.wait_for(&fleet.world.notify, 2).await?;
    let mut to: Vec<_> = notices
        .iter()
        .map(|n| (n.to.as_str(), n.template.as_str()))
        .collect();
    to.sort();
    assert_eq!(
        to,
        [
            ("alice@example.net", "over-quota-sender"),
            ("bob@quota.test", "over-quota-recipient")
        ]
    );
    let mailbox = fleet.mail_root.join("quota.test/bob/Maildir");
    assert_eq!(
        files(&mailbox, "INBOX").len(),
        1,
        "the second message was not written"
    );

    // A quota below the usage: the LMTP server refuses at RCPT.
    let quota = |bytes: Option<i64>| QuotaChanged {
        envelope: Envelope::new(format!("quota-{bytes:?}"), 0, "test"),
        account: "bob@quota.test".into(),
        quota_bytes: bytes,
    };
    fleet
        .produce(&fleet.world.accounts, "bob@quota.test", &quota(Some(500)))
        .await?;
    wait_until("552 at RCPT", Duration::from_secs(30), || {
        deliver(port, "bob@quota.test", "refused", "x").is_ok_and(|r| r.starts_with("552 5.2.2"))
    })
    .await?;
    // Lifted: accepted and written again.
    fleet
        .produce(
            &fleet.world.accounts,
            "bob@quota.test",
            &quota(Some(1_000_000)),
        )
        .await?;
    let mut reply = String::new();
    wait_until("250 again", Duration::from_secs(30), || {
        reply = deliver(port, "bob@quota.test", "third", &body).unwrap_or_default();
        reply.starts_with("250")
    })
    .await?;
    wait_until("the third message on disk", Duration::from_secs(30), || {
        files(&mailbox, "INBOX").len() == 2
    })
    .await?;

    // The writer's decisions hang on the order of deliveries and quota
    // changes across its topics. A replay takes the same order: the same
    // state, and every recorded decision recomputed alike.
    let inputs = mailfleet_runtime::Topology::load(Some(&fleet.world.dir.join("topology.toml")))?
        .route("storage")?
        .reads
        .clone();
    let store = fleet.world.dir.join("state/storage");
    wait_applied(&store, &inputs).await?;
    // The writer reads several topics: the merge's metrics are served.
    let text = scrape(fleet.metrics).unwrap_or_default();
    for name in [
        mailfleet_runtime::metrics::MERGE_HELD,
        mailfleet_runtime::metrics::MERGE_LATE,
    ] {
        assert!(
            text.contains(&format!("{name}{{consumer=\"storage\"}}")),
            "{name} missing:\n{text}"
        );
    }
    assert_eq!(
        metric_sum(&text, mailfleet_runtime::metrics::MERGE_LATE, &[]),
        0.0,
        "no record came out of order"
    );
    fleet.stop()?;
    let live = live_digests(&store)?;
    assert!(!live.is_empty());
    let replay_dir = fleet.world.dir.join("replay-storage").display().to_string();
    let out = run_cli(
        &fleet.config,
        &["replay", "storage", "--state-dir", &replay_dir],
    )?;
    assert_eq!(replay_digests(&out), live, "{out}");
    let out = run_cli(&fleet.config, &["audit", "decisions", "storage"])?;
    let last = out.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("audited=") && last.ends_with(" diffs=0") && last != "audited=0 diffs=0",
        "{out}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_removes_only_the_folder_and_the_index_agrees_and_rebuilds() -> anyhow::Result<()> {
    let mut fleet = Fleet::start("purge", "").await?;
    let port = fleet.world.lmtp_port;
    for n in 0..3 {
        let (mut c, _) = LmtpClient::connect(port)?;
        c.command("LHLO test")?;
        let spam = format!(
            "X-Spam-Flag: YES\r\n{}",
            simple_message(&format!("spam{n}"), "buy")
        );
        let replies = c.deliver("spammer@example.net", &["carol@purge.test"], &spam)?;
        assert!(replies[0].starts_with("250"), "{replies:?}");
        assert!(deliver(port, "carol@purge.test", &format!("ham{n}"), "hello")?.starts_with("250"));
    }
    fleet
        .wait_for::<MessageStored>(&fleet.world.stored, 6)
        .await?;
    let mailbox = fleet.mail_root.join("purge.test/carol/Maildir");
    assert_eq!(
        (
            files(&mailbox, "Spam").len(),
            files(&mailbox, "INBOX").len()
        ),
        (3, 3)
    );
    let request = PurgeRequested {
        envelope: Envelope::new("purge-1", 0, "test"),
        account: "carol@purge.test".into(),
        folder: "Spam".into(),
        received_before: None,
        job: "spam-cleanup".into(),
    };
    fleet
        .produce(&fleet.world.purge, "carol@purge.test", &request)
        .await?;
    let purged: Vec<MessagesPurged> = fleet.wait_for(&fleet.world.stored, 1).await?;
    assert_eq!(purged.len(), 1);
    assert_eq!(purged[0].count, 3);
    assert_eq!(
        (
            files(&mailbox, "Spam").len(),
            files(&mailbox, "INBOX").len()
        ),
        (0, 3)
    );
    // carol moves to the plus plan: `index show` counts her use against
    // that plan's quota, read from the writer's state.
    let plan = PlanChanged {
        envelope: Envelope::new("plan-1", 0, "test"),
        account: "carol@purge.test".into(),
        plan: "plus".into(),
    };
    fleet
        .produce(&fleet.world.accounts, "carol@purge.test", &plan)
        .await?;
    let topology = mailfleet_runtime::Topology::load(Some(&fleet.world.dir.join("topology.toml")))?;
    let state = fleet.world.dir.join("state");
    for consumer in ["storage", "index"] {
        let inputs = &topology.route(consumer)?.reads;
        wait_applied(&state.join(consumer), inputs).await?;
    }
    let text = scrape(fleet.metrics).unwrap_or_default();
    for name in mailfleet_runtime::metrics::STORAGE_ALL {
        assert!(has_metric(&text, name), "{name} not emitted:\n{text}");
    }
    // carol's bytes went with her to the plus plan.
    let plus = metric_sum(&text, "mailfleet_storage_bytes", &["plan=\"plus\""]);
    let free = metric_sum(&text, "mailfleet_storage_bytes", &["plan=\"free\""]);
    assert!(plus > 0.0 && free == 0.0, "bytes of the plans: {text}");
    fleet.stop()?;
    let show = |extra: &[&str]| {
        Command::new(mailfleet_bin())
            .arg("--config")
            .arg(&fleet.config)
            .args(["index"])
            .args(extra)
            .output()
    };
    let out = show(&["show", "carol@purge.test"])?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |folder: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(folder))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("INBOX").contains(" 3 messages"), "{text}");
    assert!(line("Spam").contains(" 0 messages"), "{text}");
    assert!(line("total").contains(" 3 messages"), "{text}");
    assert!(
        line("total").contains("of the plan plus's 53687091200 bytes"),
        "{text}"
    );
    let out = show(&["show", "nobody@purge.test"])?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("of the default plan free's 10737418240 bytes"),
        "{text}"
    );
    let out = show(&["rebuild"])?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.lines().last() == Some("equal"), "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_from_scratch_writes_no_second_file() -> anyhow::Result<()> {
    let mut fleet = Fleet::start("replay", "").await?;
    for n in 0..5 {
        assert!(deliver(
            fleet.world.lmtp_port,
            "dan@replay.test",
            &format!("m{n}"),
            "x"
        )?
        .starts_with("250"));
    }
    fleet
        .wait_for::<MessageStored>(&fleet.world.stored, 5)
        .await?;
    fleet.stop()?;
    let mailbox = fleet.mail_root.join("replay.test/dan/Maildir");
    let before = files(&mailbox, "INBOX");
    assert_eq!(before.len(), 5);
    // A new writer with no state replays every input from the start.
    let fresh = std::fs::read_to_string(&fleet.config)?.replace(
        &fleet.world.dir.join("state").display().to_string(),
        &fleet.world.dir.join("state2").display().to_string(),
    );
    let fresh_cfg = fleet.world.dir.join("fresh.toml");
    std::fs::write(&fresh_cfg, fresh)?;
    let fresh_log = fleet.world.dir.join("fresh.log");
    let mut writer = Children(vec![spawn_mailfleet(
        &fresh_cfg,
        &["run", "storage"],
        &fresh_log,
    )?]);
    fleet
        .wait_for::<MessageStored>(&fleet.world.stored, 10)
        .await?;
    writer.terminate()?;
    let mut after = files(&mailbox, "INBOX");
    after.sort();
    let mut before = before;
    before.sort();
    assert_eq!(after, before, "the replay found every file and wrote none");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_writer_mid_delivery_loses_nothing_and_leaves_no_partial_file(
) -> anyhow::Result<()> {
    let mut fleet = Fleet::start("crash", "").await?;
    // The writer alone in its own process, to be killed.
    let writer_cfg = fleet
        .world
        .write_config("writer.toml", free_port(), &fleet.tables)?;
    fleet
        .children
        .0
        .pop()
        .map(|mut c| terminate(&mut c))
        .transpose()?;
    let log = fleet.world.dir.join("children.log");
    fleet.children.0.push(spawn_mailfleet(
        &fleet.config,
        &["run", "scanner", "index"],
        &log,
    )?);
    let mut writer = Children(vec![spawn_mailfleet(
        &writer_cfg,
        &["run", "storage"],
        &log,
    )?]);
    let port = fleet.world.lmtp_port;
    let body = "y".repeat(200_000);
    let sender = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
        let mut refused = Vec::new();
        for n in 0..60 {
            let reply = deliver(port, "erin@crash.test", &format!("c{n}"), &body)?;
            if !reply.starts_with("250") {
                refused.push(reply);
            }
        }
        Ok(refused)
    });
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        // SIGKILL (Children's drop) in the middle of whatever it does.
        drop(std::mem::take(&mut writer));
        writer = Children(vec![spawn_mailfleet(
            &writer_cfg,
            &["run", "storage"],
            &log,
        )?]);
    }
    let refused = sender.await??;
    assert!(refused.is_empty(), "{refused:?}");
    let mailbox = fleet.mail_root.join("crash.test/erin/Maildir");
    wait_until("every message on disk", Duration::from_secs(90), || {
        files(&mailbox, "INBOX").len() >= 60
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    writer.terminate()?;
    let on_disk = files(&mailbox, "INBOX");
    assert_eq!(on_disk.len(), 60, "one file per message, no duplicates");
    for file in &on_disk {
        let name = file
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let size = mailfleet_storage::maildir::parse_name(&name).size;
        assert_eq!(
            size,
            Some(std::fs::metadata(file)?.len()),
            "partial file {name}"
        );
    }
    Ok(())
}
