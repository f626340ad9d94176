//! The notifier end to end: `NotificationRequested` and `AdminAlert` on
//! the real Kafka → `mailfleet run notifier` → SMTP to the real Postfix
//! (127.0.0.1:2525) → LMTP (127.0.0.1:2424) → `mailfleet lmtp` → scanner →
//! storage writer → the recipients' Maildirs; exactly once, also after the
//! notifier re-reads its topics from the start. And a relay that is down
//! or answers 4xx: retried, nothing marked as sent, nothing dead-lettered.
//!
//! Only one test here uses port 2424 (the LMTP port the test Postfix
//! delivers to), so the tests of this file can run in parallel.

use std::{path::Path, process::Child, time::Duration};

use mailfleet_events::{admin::AlertSeverity, runtime::DeadLetter, Registry};
use mailfleet_tests::{ingest::*, notify::*, *};

const SENT: &str = "mailfleet_notifier_sent_total";
const FAILED: &str = "mailfleet_notifier_failed_total";
const DUPLICATES: &str = "mailfleet_notifier_duplicates_total";
/// Every notifier metric (`mailfleet_notifier::metrics::ALL`).
const ALL: &[&str] = &[
    SENT,
    FAILED,
    DUPLICATES,
    "mailfleet_notifier_unknown_outcome_total",
    "mailfleet_notifier_send_duration_seconds",
];

/// The mail side of the world: LMTP on 2424, scanner and storage writer.
async fn mail_side(world: &MailWorld, mail_root: &Path) -> anyhow::Result<Children> {
    let tables = world.scanner_table(false, &[]) + &world.storage_table(mail_root, None, "");
    let log = world.dir.join("mail.log");
    let lmtp_cfg = world.write_config("lmtp.toml", free_port(), &tables)?;
    let mut children = Children(vec![spawn_lmtp(&lmtp_cfg, world.lmtp_port, &log).await?]);
    let cfg = world.write_config("mail.toml", free_port(), &tables)?;
    children
        .0
        .push(spawn_mailfleet(&cfg, &["run", "scanner", "storage"], &log)?);
    Ok(children)
}

/// Start `mailfleet run notifier` on `config`; its metrics on `port`.
async fn start_notifier(config: &Path, port: u16, log: &Path) -> anyhow::Result<Child> {
    let child = spawn_mailfleet(config, &["run", "notifier"], log)?;
    wait_until("the notifier's metrics", Duration::from_secs(30), || {
        scrape(port).is_some()
    })
    .await?;
    Ok(child)
}

/// The notifier's dead letters on `topic`.
fn dead_letters(topic: &str) -> anyhow::Result<Vec<DeadLetter>> {
    Ok(read_topic(topic, usize::MAX, Duration::from_secs(2))?
        .iter()
        .filter_map(|(_, b)| Registry::builtin().decode::<DeadLetter>(b).ok())
        .filter(|d| d.consumer == "notifier")
        .collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn notifier_mails_arrive_through_postfix_exactly_once() -> anyhow::Result<()> {
    require_postfix()?;
    let mut world = MailWorld::new("notifier", kafka()).await?;
    world.lmtp_port = POSTFIX_LMTP_PORT;
    let mail_root = world.dir.join("mail");
    let mut children = mail_side(&world, &mail_root).await?;

    let tag = unique("notice");
    let (user, admin) = (
        format!("{tag}@example.test"),
        format!("{tag}-admin@example.test"),
    );
    let virus_id = format!("<{tag}-virus@example.test>");
    let deletion_after = "2026-06-01T10:00:00Z";
    produce(
        &world,
        &world.notify,
        &user,
        &deactivated_notice(&format!("{tag}-n1"), &user, deletion_after),
    )
    .await?;
    let virus = virus_alert(
        &format!("{tag}-a1"),
        AlertSeverity::Critical,
        &user,
        &virus_id,
        "Eicar-Signature-Test",
    );
    produce(&world, &world.alerts, &user, &virus).await?;
    let info = virus_alert(&format!("{tag}-a2"), AlertSeverity::Info, &user, "-", "x");
    produce(&world, &world.alerts, &user, &info).await?;
    let mut unknown = deactivated_notice(&format!("{tag}-n2"), &user, deletion_after);
    unknown.template = "no-such-template".into();
    produce(&world, &world.notify, &user, &unknown).await?;

    let log = world.dir.join("notifier.log");
    let table = notifier_table(
        POSTFIX,
        &[&admin],
        &format!("source_address = {TRUSTED_SOURCE:?}\n"),
    );
    let metrics = free_port();
    let config = notifier_config(&world, "notifier.toml", "notifier-state", metrics, &table)?;
    let mut notifier = start_notifier(&config, metrics, &log).await?;

    wait_until(
        "the notice and the alert in their Maildirs",
        Duration::from_secs(120),
        || inbox(&mail_root, &user).len() == 1 && inbox(&mail_root, &admin).len() == 1,
    )
    .await?;
    let notice = read_message(&inbox(&mail_root, &user)[0])?;
    for needle in [
        "Subject: Your mailbox ",
        "deactivated and no longer accepts new mail",
        "within 24 hours",
        deletion_after,
        "Auto-Submitted: auto-generated",
        ".notice@example.test>",
        "From: mailfleet <postmaster@example.test>",
    ] {
        assert!(notice.contains(needle), "{needle:?} not in:\n{notice}");
    }
    let alert = read_message(&inbox(&mail_root, &admin)[0])?;
    for needle in [&virus_id, "Eicar-Signature-Test", "virus-from-local-sender"] {
        assert!(alert.contains(needle), "{needle:?} not in:\n{alert}");
    }
    let dead = dead_letters(&world.deadletter)?;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].reason.contains("no-such-template"), "{dead:?}");
    let text = scrape(metrics).unwrap_or_default();
    assert_eq!(metric_sum(&text, SENT, &["template=\"deactivated\""]), 1.0);
    assert_eq!(metric_sum(&text, SENT, &["template=\"admin-alert\""]), 1.0);
    assert_eq!(metric_sum(&text, FAILED, &["kind=\"rejected\""]), 1.0);

    // Reset the consumer's state (not the sent-log beside it): the new
    // process re-reads both topics from the start and sends nothing again.
    terminate(&mut notifier)?;
    std::fs::remove_dir_all(world.dir.join("notifier-state").join("notifier"))?;
    let metrics = free_port();
    let config = notifier_config(&world, "notifier2.toml", "notifier-state", metrics, &table)?;
    let mut notifier = start_notifier(&config, metrics, &log).await?;
    wait_until(
        "both inputs skipped as sent",
        Duration::from_secs(60),
        || scrape(metrics).is_some_and(|t| metric_sum(&t, DUPLICATES, &[]) >= 2.0),
    )
    .await?;
    // A later notice, under the same key as the first inputs (so in the
    // same partition of both topics, taken after them): once it is in its
    // Maildir, the notifier has handled each earlier input, and a resend
    // of one would have been sent (and counted) before it.
    let later = format!("{tag}-later@example.test");
    let notice = deactivated_notice(&format!("{tag}-n3"), &later, deletion_after);
    produce(&world, &world.notify, &user, &notice).await?;
    wait_until("the later notice", Duration::from_secs(120), || {
        inbox(&mail_root, &later).len() == 1
    })
    .await?;
    let text = scrape(metrics).unwrap_or_default();
    assert_eq!(
        metric_sum(&text, SENT, &[]),
        1.0,
        "only the later one sent:\n{text}"
    );
    assert_eq!(inbox(&mail_root, &user).len(), 1, "the notice was resent");
    assert_eq!(inbox(&mail_root, &admin).len(), 1, "the alert was resent");
    for name in ALL {
        assert!(has_metric(&text, name), "{name} not emitted:\n{text}");
    }
    assert_eq!(
        dead_letters(&world.deadletter)?.len(),
        2,
        "the bad one again"
    );
    terminate(&mut notifier)?;
    children.terminate()
}

#[tokio::test(flavor = "multi_thread")]
async fn notifier_relay_down_or_4xx_is_retried_and_never_marked() -> anyhow::Result<()> {
    require_postfix()?;
    let world = MailWorld::new("notifier-retry", kafka()).await?;
    let tag = unique("retry");
    let to = format!("{tag}@elsewhere.invalid");
    produce(
        &world,
        &world.notify,
        &to,
        &deactivated_notice(&format!("{tag}-n1"), &to, "2026-06-01T10:00:00Z"),
    )
    .await?;
    let log = world.dir.join("notifier.log");
    let sent_log = world.dir.join("notifier-state").join("notifier-sent");
    // First nothing listens on the relay port; then the real Postfix,
    // reached from 127.0.0.1 (outside its mynetworks), answers
    // "454 4.7.1 Relay access denied" to a domain it does not serve.
    let relays = [format!("127.0.0.1:{}", free_port()), POSTFIX.to_string()];
    for (n, relay) in relays.iter().enumerate() {
        let metrics = free_port();
        let table = notifier_table(relay, &[], "");
        let file = format!("notifier{n}.toml");
        let config = notifier_config(&world, &file, "notifier-state", metrics, &table)?;
        let mut notifier = start_notifier(&config, metrics, &log).await?;
        let what = format!("a deferred attempt through {relay}");
        wait_until(&what, Duration::from_secs(60), || {
            scrape(metrics).is_some_and(|t| {
                metric_sum(
                    &t,
                    FAILED,
                    &["kind=\"deferred\"", "template=\"deactivated\""],
                ) >= 1.0
            })
        })
        .await?;
        terminate(&mut notifier)?;
        let text = std::fs::read_to_string(&log)?;
        assert!(
            text.contains(&format!("mail to {to} not sent: relay {relay}")),
            "no retry logged for {relay}:\n{text}"
        );
        assert!(
            files_below(&sent_log).is_empty(),
            "a marker was left for a mail that was not sent: {:?}",
            files_below(&sent_log)
        );
    }
    assert!(dead_letters(&world.deadletter)?.is_empty());
    Ok(())
}
