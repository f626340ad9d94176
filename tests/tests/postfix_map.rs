//! The Postfix recipient map end to end: account statuses on the real
//! broker, `mailfleet postfix-map` installing the map with postmap, and the
//! real Postfix (`ops/postfix start`, domain `mapped.test` checked against
//! the map) refusing inactive, blocked, deleted and unknown recipients with
//! `550` itself at RCPT, before any LMTP server or policy is asked. Then
//! the job path: `mailfleet scheduler` runs the map job every 2 s, and a
//! newly inactive account is refused after the next run.

use std::{path::PathBuf, process::Command, time::Duration};

use mailfleet_events::{
    accounts::{AccountStatus, AccountStatusChanged},
    Envelope,
};
use mailfleet_tests::{ingest::MailWorld, *};

/// The map `ops/postfix` points Postfix at.
fn map_path() -> anyhow::Result<PathBuf> {
    let out = Command::new(repo_root().join("ops/postfix"))
        .arg("map-path")
        .output()?;
    anyhow::ensure!(out.status.success(), "ops/postfix map-path failed");
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

/// Postfix's reply to `RCPT TO:<to>`, from a client in mynetworks
/// (127.0.0.2: no policy service asked), quitting after RCPT.
fn rcpt_reply(to: &str) -> anyhow::Result<String> {
    let out = swaks_trusted()
        .args(["--from", "someone@example.net", "--to", to])
        .args(["--quit-after", "RCPT", "--timeout", "20"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines().skip_while(|l| !l.contains("RCPT TO:"));
    lines.next();
    Ok(lines
        .next()
        .map(|l| {
            l.trim_start_matches([' ', '<', '-', '*', '~'])
                .trim()
                .to_string()
        })
        .unwrap_or_else(|| format!("no RCPT reply in: {text}")))
}

fn status(account: &str, to: AccountStatus) -> AccountStatusChanged {
    AccountStatusChanged {
        envelope: Envelope::new(unique("status"), 1, "test"),
        account: account.into(),
        from: AccountStatus::Pending,
        to,
        reason: "test".into(),
        settings_hash: None,
    }
}

fn postfix_map(config: &std::path::Path) -> anyhow::Result<String> {
    let out = Command::new(mailfleet_bin())
        .arg("--config")
        .arg(config)
        .args(["postfix-map", "--once"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(
        out.status.success(),
        "postfix-map --once: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(text)
}

#[tokio::test(flavor = "multi_thread")]
async fn postfix_refuses_closed_accounts_from_the_installed_map() -> anyhow::Result<()> {
    anyhow::ensure!(
        std::net::TcpStream::connect("127.0.0.1:2525").is_ok(),
        "Postfix is not listening on 127.0.0.1:2525: run `ops/postfix start` (ops/test does)"
    );
    let world = MailWorld::new("pfmap", kafka()).await?;
    // Fresh names each run, so the installed map changes.
    let tag = world.name.rsplit('-').next().unwrap_or("x").to_string();
    let at = |user: &str| format!("{user}-{tag}@mapped.test");
    let (alice, erin, bob, carol, dave) =
        (at("alice"), at("erin"), at("bob"), at("carol"), at("dave"));
    let fleet_producer = mailfleet_runtime::producer::EventProducer::new(&kafka(), "test")?;
    let produce = |account: String, to| {
        let producer = &fleet_producer;
        let topic = world.status.clone();
        async move {
            producer
                .send(&topic, account.as_bytes(), &status(&account, to))
                .await
        }
    };
    for (account, to) in [
        (&alice, AccountStatus::Active),
        (&erin, AccountStatus::Pending),
        (&bob, AccountStatus::Inactive),
        (&carol, AccountStatus::Blocked),
        (&dave, AccountStatus::Active),
        (&dave, AccountStatus::Deleted),
    ] {
        produce(account.clone(), to).await?;
    }

    let map = map_path()?;
    let conf_dir = map.parent().unwrap().to_path_buf();
    let jobs = "[scheduler.jobs.postfix-map]\ncron = \"*/2 * * * * *\"\nkind = \"postfix-map\"\n";
    let tables = world.scheduler_tables(jobs)
        + &format!(
            "[scheduler.postfix_map]\npath = {:?}\npostfix_config_dir = {:?}\nstatus_topic = {:?}\n",
            map.display().to_string(),
            conf_dir.display().to_string(),
            world.status
        );
    let config = world.write_config("map.toml", free_port(), &tables)?;

    let out = postfix_map(&config)?;
    assert!(out.contains("(installed)"), "{out}");
    let mut expected = [format!("{alice} OK\n"), format!("{erin} OK\n")];
    expected.sort();
    assert_eq!(
        std::fs::read_to_string(&map)?,
        expected.concat(),
        "exactly the accounts that take mail"
    );

    for open in [&alice, &erin] {
        let reply = rcpt_reply(open)?;
        assert!(reply.starts_with("250"), "{open}: {reply}");
    }
    let unknown = at("nobody");
    for closed in [&bob, &carol, &dave, &unknown] {
        let reply = rcpt_reply(closed)?;
        assert!(
            reply.starts_with("550 5.1.1")
                && reply.contains("User unknown in virtual mailbox table"),
            "{closed}: Postfix itself refuses: {reply}"
        );
    }

    let db = map.with_extension("db");
    let installed = std::fs::metadata(&db)?.modified()?;
    let out = postfix_map(&config)?;
    assert!(out.contains("(unchanged)"), "{out}");
    assert_eq!(
        std::fs::metadata(&db)?.modified()?,
        installed,
        "not rewritten"
    );

    // The job path: the installer installs once at start (unchanged
    // here), then only on the scheduler's runs.
    let log = world.dir.join("children.log");
    let metrics = free_port();
    let daemon = world.write_config("daemon.toml", metrics, &tables)?;
    let mut children = Children(vec![spawn_mailfleet(&daemon, &["postfix-map"], &log)?]);
    wait_until("the installer's start", Duration::from_secs(60), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("(unchanged)"))
    })
    .await?;
    produce(alice.clone(), AccountStatus::Inactive).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        rcpt_reply(&alice)?.starts_with("250"),
        "no job run yet: the map stays"
    );
    children
        .0
        .push(spawn_mailfleet(&config, &["scheduler"], &log)?);
    wait_until("alice refused by Postfix", Duration::from_secs(60), || {
        rcpt_reply(&alice).is_ok_and(|r| r.starts_with("550 5.1.1"))
    })
    .await?;
    assert!(rcpt_reply(&erin)?.starts_with("250"));
    assert_eq!(std::fs::read_to_string(&map)?, format!("{erin} OK\n"));
    let text = scrape(metrics).unwrap_or_default();
    assert_eq!(
        metric_sum(&text, "mailfleet_postfix_map_entries", &[]),
        1.0,
        "metrics on {metrics}: {text}"
    );
    assert!(
        metric_sum(
            &text,
            "mailfleet_postfix_map_runs_total",
            &["result=\"installed\""]
        ) >= 1.0,
        "{text}"
    );
    children.terminate()?;
    Ok(())
}
