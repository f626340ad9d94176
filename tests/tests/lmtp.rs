//! LMTP conformance against a real `mailfleet lmtp` child and the real
//! broker: pipelining, per-recipient replies, dot-unstuffing, the size
//! limit, a connection cut during DATA, and a failing disk.

use std::{process::Child, time::Duration};

use mailfleet_blob::BlobStore;
use mailfleet_events::mail::{BodyType, MessageReceived};
use mailfleet_runtime::read;
use mailfleet_tests::{ingest::*, *};

struct Lmtp {
    world: MailWorld,
    child: Child,
    metrics: u16,
}

async fn start(name: &str, extra: &str) -> anyhow::Result<Lmtp> {
    let world = MailWorld::new(name, kafka()).await?;
    let metrics = free_port();
    let config = world.write_config("lmtp.toml", metrics, extra)?;
    let child = spawn_mailfleet(&config, &["lmtp"], &world.dir.join("lmtp.log"))?;
    let port = world.lmtp_port;
    wait_listening("the LMTP server", port).await?;
    Ok(Lmtp {
        world,
        child,
        metrics,
    })
}

impl Lmtp {
    /// Every `MessageReceived` on the topic up to its end now. The server
    /// replies to DATA only once its events are acknowledged, so after a
    /// reply the topic as it is holds everything announced before it.
    fn received(&self) -> anyhow::Result<Vec<MessageReceived>> {
        Ok(read::read_events(
            &kafka(),
            &self.world.received,
            "lmtp-test",
        )?)
    }

    fn stop(mut self) -> anyhow::Result<()> {
        terminate(&mut self.child)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_transaction_with_mixed_recipients_and_dot_stuffing() -> anyhow::Result<()> {
    let lmtp = start("lmtp-pipe", "").await?;
    let (mut c, greeting) = LmtpClient::connect(lmtp.world.lmtp_port)?;
    assert!(greeting[0].starts_with("220 lmtp.test"), "{greeting:?}");
    // Everything up to DATA in one write, as a PIPELINING client does.
    c.send(
        b"LHLO mx.example.test\r\nMAIL FROM:<alice@example.net> BODY=8BITMIME\r\n\
          RCPT TO:<Bob@Example.test>\r\nRCPT TO:<not-an-address>\r\nRCPT TO:<carol@example.test>\r\nDATA\r\n",
    )?;
    let lhlo = c.reply()?;
    for ext in [
        "PIPELINING",
        "ENHANCEDSTATUSCODES",
        "8BITMIME",
        "SIZE 52428800",
    ] {
        assert!(
            lhlo.iter().any(|l| l.ends_with(ext)),
            "{ext} missing from {lhlo:?}"
        );
    }
    assert_eq!(c.reply()?, ["250 2.1.0 Ok"]);
    assert_eq!(c.reply()?, ["250 2.1.5 Ok"]);
    assert!(c.reply()?[0].starts_with("501 5.1.3"));
    assert_eq!(c.reply()?, ["250 2.1.5 Ok"]);
    assert!(c.reply()?[0].starts_with("354"));
    let message = "Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nnot the end\r\n";
    c.send(&dot_stuff(message.as_bytes()))?;
    let bob = c.reply()?;
    let carol = c.reply()?;
    assert!(
        bob[0].starts_with("250 2.0.0 <Bob@Example.test>"),
        "{bob:?}"
    );
    assert!(
        carol[0].starts_with("250 2.0.0 <carol@example.test>"),
        "{carol:?}"
    );
    assert_eq!(c.command("QUIT")?, "221 2.0.0 Bye");

    let events = lmtp.received()?;
    assert_eq!(
        events.len(),
        2,
        "one MessageReceived per accepted recipient"
    );
    let mut accounts: Vec<_> = events.iter().map(|e| e.account.as_str()).collect();
    accounts.sort();
    assert_eq!(accounts, ["bob@example.test", "carol@example.test"]);
    let mut indexes: Vec<_> = events.iter().map(|e| e.recipient_index).collect();
    indexes.sort();
    assert_eq!(indexes, [0, 1]);
    let e = &events[0];
    assert_eq!(e.body_type, BodyType::EightBitMime);
    assert_eq!(e.sender, "alice@example.net");
    assert_eq!(e.recipient_count, 2);
    assert_eq!(e.subject.as_deref(), Some("dots"));
    assert_eq!(events[0].blob_id, events[1].blob_id, "stored once");
    assert_eq!(
        e.envelope.event_id,
        format!("lmtp:{}:{}", e.blob_id, e.account)
    );
    let blobs = BlobStore::open(lmtp.world.blob_dir())?;
    assert_eq!(
        blobs.get(&e.blob_id)?,
        message.as_bytes(),
        "dots unstuffed, bytes kept"
    );
    assert_eq!(e.size, message.len() as i64);

    let text = scrape(lmtp.metrics).unwrap_or_default();
    let accepted = metric_sum(
        &text,
        "mailfleet_lmtp_recipients_total",
        &["result=\"accepted\""],
    );
    assert_eq!(accepted, 2.0, "{text}");
    lmtp.stop()
}

#[tokio::test(flavor = "multi_thread")]
async fn size_limit_before_and_after_data() -> anyhow::Result<()> {
    let lmtp = start("lmtp-size", "max_message_bytes = 2000").await?;
    let (mut c, _) = LmtpClient::connect(lmtp.world.lmtp_port)?;
    c.command("LHLO mx")?;
    let declared = c.command("MAIL FROM:<a@example.net> SIZE=5000")?;
    assert_eq!(
        declared,
        "552 5.3.4 Message size 5000 exceeds fixed limit 2000"
    );
    // Undeclared and too big: read to the end, then 552 per recipient.
    let big = simple_message("big", &"x".repeat(3000));
    let replies = c.deliver("a@example.net", &["b@example.test", "c@example.test"], &big)?;
    assert_eq!(replies.len(), 2);
    for r in &replies {
        assert!(r.starts_with("552 5.3.4"), "{r}");
    }
    // The session goes on: a small message still gets through.
    let ok = c.deliver(
        "a@example.net",
        &["b@example.test"],
        &simple_message("small", "hi"),
    )?;
    assert!(ok[0].starts_with("250 2.0.0"), "{ok:?}");
    let events = lmtp.received()?;
    assert_eq!(events.len(), 1, "only the small message: {events:?}");
    assert_eq!(events[0].subject.as_deref(), Some("small"));
    lmtp.stop()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_cut_during_data_announces_nothing() -> anyhow::Result<()> {
    let lmtp = start("lmtp-cut", "").await?;
    {
        let (mut c, _) = LmtpClient::connect(lmtp.world.lmtp_port)?;
        c.command("LHLO mx")?;
        c.command("MAIL FROM:<a@example.net>")?;
        c.command("RCPT TO:<b@example.test>")?;
        assert!(c.command("DATA")?.starts_with("354"));
        c.send(b"Subject: cut\r\n\r\nhalf of a message that never ends\r\n")?;
        // Dropped here: the socket closes without the final dot.
    }
    // The server is through with that connection (whatever it announced
    // is acknowledged by then); the next message, to the same recipient
    // (the same partition), is the marker after it.
    wait_until("the cut connection closed", Duration::from_secs(30), || {
        let text = scrape(lmtp.metrics).unwrap_or_default();
        metric_sum(&text, "mailfleet_lmtp_aborted_total", &[]) == 1.0
            && metric_sum(&text, "mailfleet_lmtp_connections", &[]) == 0.0
    })
    .await?;
    let (mut c, _) = LmtpClient::connect(lmtp.world.lmtp_port)?;
    c.command("LHLO mx")?;
    let ok = c.deliver(
        "a@example.net",
        &["b@example.test"],
        &simple_message("whole", "x"),
    )?;
    assert!(ok[0].starts_with("250"), "{ok:?}");
    let events = lmtp.received()?;
    let subjects: Vec<_> = events
        .iter()
        .map(|e| e.subject.clone().unwrap_or_default())
        .collect();
    assert_eq!(subjects, ["whole"]);
    let text = scrape(lmtp.metrics).unwrap_or_default();
    assert_eq!(
        metric_sum(&text, "mailfleet_lmtp_aborted_total", &[]),
        1.0,
        "{text}"
    );
    lmtp.stop()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_disk_answers_452_and_the_retry_is_accepted() -> anyhow::Result<()> {
    let lmtp = start("lmtp-disk", "").await?;
    // The store writes into tmp/ first; a file in its place makes writes fail
    // even for root.
    let tmp = lmtp.world.blob_dir().join("tmp");
    std::fs::remove_dir_all(&tmp)?;
    std::fs::write(&tmp, b"not a folder")?;
    let (mut c, _) = LmtpClient::connect(lmtp.world.lmtp_port)?;
    c.command("LHLO mx")?;
    let message = simple_message("disk", "x");
    let failed = c.deliver("a@example.net", &["b@example.test"], &message)?;
    assert!(failed[0].starts_with("452 4.3.1"), "{failed:?}");
    std::fs::remove_file(&tmp)?;
    std::fs::create_dir(&tmp)?;
    let ok = c.deliver("a@example.net", &["b@example.test"], &message)?;
    assert!(ok[0].starts_with("250"), "{ok:?}");
    let events = lmtp.received()?;
    assert_eq!(
        events.len(),
        1,
        "nothing was announced for the failed attempt"
    );
    let text = scrape(lmtp.metrics).unwrap_or_default();
    for name in mailfleet_runtime::metrics::LMTP_ALL {
        assert!(has_metric(&text, name), "{name} not emitted:\n{text}");
    }
    lmtp.stop()
}
