//! End to end with real Postfix and real clamd: swaks → Postfix
//! (127.0.0.1:2525, `virtual_transport = lmtp:inet:127.0.0.1:2424`, as
//! `ops/test` starts it) → `mailfleet lmtp` → Kafka → `mailfleet run
//! scanner` → `MessageScanned`.

use std::{process::Command, time::Duration};

use mailfleet_events::mail::{MessageReceived, MessageScanned, ScanVerdict};
use mailfleet_tests::{ingest::*, *};

/// Where ops/postfix's virtual_transport delivers in the test setup.
const LMTP_PORT: u16 = 2424;

fn swaks(subject: &str, attach: Option<&str>) -> anyhow::Result<String> {
    let mut cmd = Command::new("swaks");
    cmd.args([
        "--server",
        "127.0.0.1:2525",
        "--local-interface",
        "127.0.0.2",
    ])
    .args(["--from", "sender@example.net", "--to", "user@example.test"])
    .args(["--header", &format!("Subject: {subject}")])
    .args(["--header", &format!("Message-ID: <{subject}@example.net>")])
    .args([
        "--body",
        "a message through the whole chain",
        "--timeout",
        "30",
    ]);
    if let Some(path) = attach {
        cmd.args(["--attach", path]);
    }
    let out = cmd.output()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(out.status.success(), "swaks failed:\n{text}");
    Ok(text)
}

#[tokio::test(flavor = "multi_thread")]
async fn postfix_delivers_over_lmtp_into_the_pipeline_and_it_is_scanned() -> anyhow::Result<()> {
    anyhow::ensure!(
        std::net::TcpStream::connect("127.0.0.1:2525").is_ok(),
        "Postfix is not listening on 127.0.0.1:2525: run \
         `MAILFLEET_POSTFIX_TRANSPORT=lmtp:inet:127.0.0.1:2424 ops/postfix start` (ops/test does)"
    );
    require_clamd()?;
    let mut world = MailWorld::new("postfix-lmtp", kafka()).await?;
    world.lmtp_port = LMTP_PORT;
    let table = world.scanner_table(true, &[]);
    let log = world.dir.join("children.log");
    let lmtp_cfg = world.write_config("lmtp.toml", free_port(), &table)?;
    let mut lmtp = spawn_mailfleet(&lmtp_cfg, &["lmtp"], &log)?;
    let scan_cfg = world.write_config("scanner.toml", free_port(), &table)?;
    let mut scanner = spawn_mailfleet(&scan_cfg, &["run", "scanner"], &log)?;
    wait_until("the LMTP server on 2424", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", LMTP_PORT)).is_ok()
    })
    .await?;

    let tag = unique("e2e");
    let (clean, infected) = (format!("{tag}-clean"), format!("{tag}-virus"));
    let eicar_file = world.dir.join("eicar.txt");
    std::fs::write(&eicar_file, eicar())?;
    swaks(&clean, None)?;
    swaks(&infected, Some(&eicar_file.display().to_string()))?;

    // Postfix queues and delivers asynchronously; mail left in its queue by
    // earlier runs may arrive too, so look for this run's Message-IDs.
    let ours = |id: &Option<String>| id.as_deref().is_some_and(|m| m.starts_with(&tag));
    let mut received: Vec<MessageReceived> = Vec::new();
    let mut verdicts: Vec<MessageScanned> = Vec::new();
    for _ in 0..60 {
        received = decode_all(&read_topic(
            &world.received,
            usize::MAX,
            Duration::from_secs(1),
        )?)?;
        received.retain(|e| ours(&e.message_id));
        verdicts = decode_all(&read_topic(
            &world.scanned,
            usize::MAX,
            Duration::from_secs(1),
        )?)?;
        verdicts.retain(|e| ours(&e.message_id));
        if verdicts.len() >= 2 {
            break;
        }
    }
    assert_eq!(received.len(), 2, "{received:?}");
    assert!(received
        .iter()
        .all(|e| e.account == "user@example.test" && e.sender == "sender@example.net"));
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
    terminate(&mut scanner)?;
    terminate(&mut lmtp)
}
