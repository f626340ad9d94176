//! The staggered clean-ups end to end over the real broker:
//! `mailfleet scheduler` emits a Spam and a Trash purge run into every
//! partition of the purge topic; each partition of the purge planner
//! (`mailfleet run purger`) plans its accounts over the window, the clock
//! ticks release one `PurgeRequested` per account with mail in the folder
//! (every mailbox for Trash, which IMAP clients fill), and the storage
//! writer empties exactly those folders of mail older than the run.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    time::{Duration, Instant},
};

use mailfleet_events::{
    mail::{MessageStored, MessagesPurged, PurgeRequested},
    scheduler::JobDue,
};
use mailfleet_runtime::time::now_ms;
use mailfleet_tests::{
    fleet::{deliver, files, Fleet, FleetOptions},
    ingest::{simple_message, LmtpClient},
    *,
};

fn spam(port: u16, to: &str, n: usize) -> anyhow::Result<()> {
    let (mut c, _) = LmtpClient::connect(port)?;
    c.command("LHLO test")?;
    let message = format!(
        "X-Spam-Flag: YES\r\n{}",
        simple_message(&format!("spam{n}"), "buy")
    );
    let replies = c.deliver("spammer@example.net", &[to], &message)?;
    anyhow::ensure!(replies[0].starts_with("250"), "{replies:?}");
    Ok(())
}

/// A message an IMAP client moved to Trash (Dovecot's moves are not in
/// the log): a file in the folder's cur/, named `name`.
fn put_in_trash(mailbox: &Path, name: &str) -> anyhow::Result<()> {
    let cur = mailbox.join(".Trash/cur");
    std::fs::create_dir_all(&cur)?;
    std::fs::write(cur.join(name), simple_message(name, "old"))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_purges_empty_spam_and_trash_once_per_account_and_keep_newer_mail(
) -> anyhow::Result<()> {
    let mut fleet = Fleet::launch(
        "purges",
        FleetOptions {
            clamd: false,
            consumers: &["scanner", "storage", "purger"],
            world_tables: |world| world.scheduler_tables(""),
            ..FleetOptions::default()
        },
    )
    .await?;
    let port = fleet.world.lmtp_port;
    let log = fleet.world.dir.join("children.log");

    let (a, b, c) = ("a@purges.test", "b@purges.test", "c@purges.test");
    spam(port, a, 0)?;
    spam(port, a, 1)?;
    spam(port, b, 2)?;
    for (to, n) in [(a, 0), (c, 1), (c, 2)] {
        assert!(deliver(port, to, &format!("ham{n}"), "hello")?.starts_with("250"));
    }
    fleet
        .wait_for::<MessageStored>(&fleet.world.stored, 6)
        .await?;
    let root = &fleet.mail_root;
    let mailbox = |account: &str| {
        let (user, domain) = account.split_once('@').unwrap();
        root.join(domain).join(user).join("Maildir")
    };
    // A Maildir name with its delivery time (as Dovecot keeps it on a
    // move), and a foreign one dated by its modification time.
    let secs = now_ms() / 1000;
    put_in_trash(&mailbox(a), &format!("{}.M1P1.imap,S=40:2,S", secs - 3600))?;
    put_in_trash(&mailbox(c), "moved-by-hand")?;

    // Both runs at one whole second a little ahead, spread over a minute.
    let due = now_ms() / 1000 + 8;
    let cron = format!("{} {} {} * * *", due % 60, due / 60 % 60, due / 3600 % 24);
    let due_ms = due * 1000;
    let jobs = ["Spam", "Trash"]
        .iter()
        .map(|folder| {
            format!(
                "[scheduler.jobs.{}-purge]\ncron = {cron:?}\nkind = \"purge\"\nfolder = {folder:?}\n\
                 window_minutes = 1\nmax_purges_per_s = 1.0\n",
                folder.to_lowercase()
            )
        })
        .collect::<String>();
    let sched_cfg = fleet.world.write_config(
        "scheduler.toml",
        free_port(),
        &fleet.world.scheduler_tables(&jobs),
    )?;
    let mut scheduler = Children(vec![spawn_mailfleet(&sched_cfg, &["scheduler"], &log)?]);

    // Mail that arrives after the run was due is not the run's to purge.
    let until_due = Duration::from_millis(u64::try_from(due_ms + 2000 - now_ms()).unwrap_or(0));
    tokio::time::sleep(until_due).await;
    spam(port, b, 3)?;

    // Spam: a and b; Trash: every mailbox (a, b, c).
    let started = Instant::now();
    let purged = loop {
        let purged: Vec<MessagesPurged> = fleet.events(&fleet.world.stored)?;
        if purged.len() >= 5 {
            break purged;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "{} of 5 MessagesPurged after 120 s: {purged:?}",
            purged.len()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let counts: BTreeMap<(String, String), i64> = purged
        .iter()
        .map(|p| ((p.account.clone(), p.folder.clone()), p.count))
        .collect();
    let key = |a: &str, f: &str| (a.to_string(), f.to_string());
    assert_eq!(
        counts,
        BTreeMap::from([
            (key(a, "Spam"), 2),
            (key(b, "Spam"), 1),
            (key(a, "Trash"), 1),
            (key(b, "Trash"), 0),
            (key(c, "Trash"), 1),
        ])
    );
    assert_eq!(purged.len(), 5, "one purge per account and folder");

    // The ticks stop: the purge topic can be read to its end.
    scheduler.terminate()?;
    let requests: Vec<PurgeRequested> = fleet.events(&fleet.world.purge)?;
    assert_eq!(requests.len(), 5, "{requests:?}");
    let planned: BTreeSet<(String, String)> = requests
        .iter()
        .map(|r| (r.account.clone(), r.folder.clone()))
        .collect();
    assert_eq!(planned.len(), 5);
    for r in &requests {
        assert_eq!(r.received_before, Some(due_ms), "{r:?}");
        let t = r.envelope.event_time;
        assert!(
            (due_ms..due_ms + 60_000).contains(&t),
            "in the window: {r:?}"
        );
    }
    let fanned: Vec<JobDue> = fleet.events(&fleet.world.purge)?;
    for folder in ["spam", "trash"] {
        let copies = fanned
            .iter()
            .filter(|j| j.job == format!("{folder}-purge"))
            .count();
        assert_eq!(
            copies, 3,
            "{folder}: one run per partition of the purge topic"
        );
    }

    assert_eq!(files(&mailbox(a), "Spam").len(), 0);
    assert_eq!(files(&mailbox(a), "Trash").len(), 0);
    assert_eq!(
        files(&mailbox(a), "INBOX").len(),
        1,
        "INBOX is never purged"
    );
    assert_eq!(
        files(&mailbox(b), "Spam").len(),
        1,
        "newer than the run: kept"
    );
    assert_eq!(files(&mailbox(c), "Trash").len(), 0);
    assert_eq!(files(&mailbox(c), "INBOX").len(), 2);

    let text = scrape(fleet.metrics).unwrap_or_default();
    for name in mailfleet_runtime::metrics::PURGER_ALL {
        assert!(has_metric(&text, name), "{name} not emitted:\n{text}");
    }
    assert_eq!(
        metric_sum(&text, "mailfleet_purges_released_total", &[]),
        5.0
    );
    fleet.stop()?;
    Ok(())
}
