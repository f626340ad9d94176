//! End to end with real Postfix, real clamd and real Dovecot: swaks →
//! Postfix (127.0.0.1:2525, `virtual_transport = lmtp:inet:127.0.0.1:2424`,
//! as `ops/test` starts it) → `mailfleet lmtp` → Kafka → `mailfleet run
//! scanner` → `mailfleet run storage` → Maildir → Dovecot IMAP, where the
//! message is fetched byte for byte; the virus never reaches a folder.
//! Postfix passes on its SMTP client and queue id with XFORWARD
//! (`lmtp_send_xforward_command = yes`), and `MessageReceived` carries them.

use std::{path::Path, process::Command, time::Duration};

use mailfleet_events::{
    mail::{MessageReceived, MessageScanned, MessageStored, ScanVerdict},
    Registry,
};
use mailfleet_tests::{ingest::*, *};

/// Where ops/postfix's virtual_transport delivers in the test setup.
const LMTP_PORT: u16 = 2424;

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The rest of the first line of a swaks transcript that has `marker`.
fn said<'a>(transcript: &'a str, marker: &str) -> anyhow::Result<&'a str> {
    transcript
        .lines()
        .find_map(|line| line.split_once(marker).map(|(_, rest)| rest.trim()))
        .ok_or_else(|| anyhow::anyhow!("no {marker:?} in the swaks transcript:\n{transcript}"))
}

/// The end of Postfix's maillog (`ops/postfix log`).
fn postfix_log() -> anyhow::Result<String> {
    let out = Command::new(repo_root().join("ops/postfix"))
        .args(["log", "20000"])
        .output()?;
    anyhow::ensure!(out.status.success(), "ops/postfix log failed");
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// This run's events of type `E` on `topic` (by Message-ID prefix).
fn ours<E: mailfleet_events::Event>(
    topic: &str,
    tag: &str,
    message_id: impl Fn(&E) -> Option<&str>,
) -> anyhow::Result<Vec<E>> {
    let records = read_topic(topic, usize::MAX, Duration::from_secs(1))?;
    Ok(records
        .iter()
        .filter_map(|(_, b)| Registry::builtin().decode::<E>(b).ok())
        .filter(|e| message_id(e).is_some_and(|m| m.starts_with(tag)))
        .collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn postfix_delivers_over_lmtp_and_dovecot_serves_it() -> anyhow::Result<()> {
    anyhow::ensure!(
        std::net::TcpStream::connect("127.0.0.1:2525").is_ok(),
        "Postfix is not listening on 127.0.0.1:2525: run \
         `MAILFLEET_POSTFIX_TRANSPORT=lmtp:inet:127.0.0.1:2424 ops/postfix start` (ops/test does)"
    );
    require_clamd()?;
    let (mail_root, owner) = dovecot()?;
    let mut world = MailWorld::new("postfix-lmtp", kafka()).await?;
    world.lmtp_port = LMTP_PORT;
    let tables = world.scanner_table(true, &[]) + &world.storage_table(&mail_root, Some(owner), "");
    let log = world.dir.join("children.log");
    let mut children = Children::default();
    let roles: [(&str, &[&str]); 3] = [
        ("lmtp", &["lmtp"]),
        ("scanner", &["run", "scanner"]),
        ("storage", &["run", "storage", "index"]),
    ];
    for (name, args) in roles {
        let cfg = world.write_config(&format!("{name}.toml"), free_port(), &tables)?;
        children.0.push(spawn_mailfleet(&cfg, args, &log)?);
    }
    wait_until("the LMTP server on 2424", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", LMTP_PORT)).is_ok()
    })
    .await?;

    let tag = unique("e2e");
    let user = format!("{tag}@example.test");
    let password = dovecot_user(&user)?;
    let (clean, infected) = (format!("{tag}-clean"), format!("{tag}-virus"));
    let clean_mail = simple_message(&clean, "through the whole chain\r\n.a leading dot");
    let virus_mail = message_with_attachment(&infected, "eicar.txt", eicar().as_bytes());
    let mut transcripts = Vec::new();
    for (name, mail) in [("clean.eml", &clean_mail), ("virus.eml", &virus_mail)] {
        let path = world.dir.join(name);
        std::fs::write(&path, mail)?;
        transcripts.push(swaks_send("sender@example.net", &user, &path)?);
    }

    // Postfix queues and delivers asynchronously; mail left in its queue by
    // earlier runs may arrive too, so look for this run's Message-IDs.
    let (mut received, mut verdicts, mut stored) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..60 {
        received = ours::<MessageReceived>(&world.received, &tag, |e| e.message_id.as_deref())?;
        verdicts = ours::<MessageScanned>(&world.scanned, &tag, |e| e.message_id.as_deref())?;
        stored = ours::<MessageStored>(&world.stored, &tag, |e| e.message_id.as_deref())?;
        if verdicts.len() >= 2 && !stored.is_empty() {
            break;
        }
    }
    assert_eq!(received.len(), 2, "{received:?}");
    assert!(received
        .iter()
        .all(|e| e.account == user && e.sender == "sender@example.net"));
    // XFORWARD: what Postfix knew of swaks (which connects from 127.0.0.2,
    // see `swaks_trusted`) and the queue id it answered swaks with, which
    // finds the message in Postfix's log.
    for (subject, transcript) in [(&clean, &transcripts[0]), (&infected, &transcripts[1])] {
        let message_id = format!("{subject}@example.net");
        let e = received
            .iter()
            .find(|e| e.message_id.as_deref() == Some(message_id.as_str()))
            .ok_or_else(|| anyhow::anyhow!("no MessageReceived for {message_id}"))?;
        assert_eq!(e.client_address.as_deref(), Some("127.0.0.2"), "{e:?}");
        let helo = said(transcript, "-> EHLO ")?;
        assert_eq!(e.client_helo.as_deref(), Some(helo), "{e:?}");
        let queue_id = said(transcript, "queued as ")?;
        assert_eq!(e.queue_id.as_deref(), Some(queue_id), "{e:?}");
        let line = format!("{queue_id}: client=");
        wait_until(
            "the queue id in Postfix's log",
            Duration::from_secs(10),
            || postfix_log().is_ok_and(|log| log.contains(&line)),
        )
        .await?;
    }
    let verdict_of = |subject: &str| {
        verdicts
            .iter()
            .find(|v| v.message_id.as_deref() == Some(&format!("{subject}@example.net")))
            .map(|v| v.verdict)
    };
    assert_eq!(verdict_of(&clean), Some(ScanVerdict::Clean), "{verdicts:?}");
    assert_eq!(
        verdict_of(&infected),
        Some(ScanVerdict::Infected),
        "{verdicts:?}"
    );
    assert_eq!(
        stored.len(),
        1,
        "only the clean message is stored: {stored:?}"
    );

    // Dovecot serves what Postfix received from swaks, byte for byte, after
    // the Received header Postfix puts in front.
    let inbox = imap_fetch(&user, &password, "INBOX")?;
    assert_eq!(inbox.len(), 1, "exactly one message in INBOX");
    // (swaks ends DATA with CRLF . CRLF after the file's own last CRLF,
    // so what it sent is the file plus an empty line.)
    let sent = format!("{clean_mail}\r\n");
    let delivered = mailfleet_blob::BlobStore::open(world.blob_dir())?.get(&stored[0].blob_id)?;
    assert_eq!(
        inbox[0], delivered,
        "IMAP serves exactly what Postfix delivered over LMTP"
    );
    assert!(
        inbox[0].ends_with(sent.as_bytes()),
        "fetched message differs from the one sent:\n{}",
        String::from_utf8_lossy(&inbox[0])
    );
    assert!(
        inbox[0].starts_with(b"Received: "),
        "{}",
        String::from_utf8_lossy(&inbox[0])
    );
    // The virus is in no folder of the mailbox, only in the quarantine.
    let (local, domain) = user.split_once('@').unwrap_or_default();
    let needle = format!("Message-ID: <{infected}@example.net>");
    let files = walk(&mail_root.join(domain).join(local));
    assert!(!files.is_empty());
    for file in files {
        let text = String::from_utf8_lossy(&std::fs::read(&file)?).into_owned();
        assert!(
            !text.contains(&needle),
            "the virus is in {}",
            file.display()
        );
    }
    assert_eq!(
        walk(&world.dir.join("quarantine")).len(),
        1,
        "one quarantined copy"
    );
    children.terminate()
}
