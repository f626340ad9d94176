//! Kafka down: the LMTP server answers `451 4.3.0` (Postfix keeps the mail
//! and retries), and once Kafka is back the retry is accepted. The test
//! runs its own broker (`ops/kafka` with a private folder and ports), so
//! stopping it disturbs no other test.

use std::time::Duration;

use mailfleet_events::mail::MessageReceived;
use mailfleet_tests::{ingest::*, outage::Private, *};

#[tokio::test(flavor = "multi_thread")]
async fn kafka_down_answers_451_and_the_retry_is_accepted() -> anyhow::Result<()> {
    let broker = Private::kafka("kafka-down");
    broker.start()?;
    let world = MailWorld::new("lmtp-kafka-down", broker.kafka_config()).await?;
    let config = world.write_config("lmtp.toml", free_port(), "ack_timeout_ms = 4000")?;
    let mut lmtp = spawn_mailfleet(&config, &["lmtp"], &world.dir.join("lmtp.log"))?;
    let port = world.lmtp_port;
    wait_listening("the LMTP server", port).await?;
    let (mut c, _) = LmtpClient::connect(port)?;
    c.command("LHLO mx")?;
    let before = c.deliver(
        "a@example.net",
        &["b@example.test"],
        &simple_message("before", "1"),
    )?;
    assert!(before[0].starts_with("250"), "{before:?}");

    broker.stop()?;
    let message = simple_message("during", "2");
    let during = c.deliver(
        "a@example.net",
        &["b@example.test", "c@example.test"],
        &message,
    )?;
    assert_eq!(during.len(), 2);
    for reply in &during {
        assert!(reply.starts_with("451 4.3.0"), "{during:?}");
    }

    broker.start()?;
    // Postfix retries the same message: same bytes, same blob, same event ids.
    let mut after = Vec::new();
    for _ in 0..30 {
        after = c.deliver(
            "a@example.net",
            &["b@example.test", "c@example.test"],
            &message,
        )?;
        if after.iter().all(|r| r.starts_with("250")) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(after.iter().all(|r| r.starts_with("250")), "{after:?}");
    let records = read_topic_from(
        &broker.kafka_config(),
        &world.received,
        10,
        Duration::from_secs(10),
    )?;
    let events: Vec<MessageReceived> = decode_all(&records)?;
    let mut ids: Vec<_> = events.iter().map(|e| e.envelope.event_id.clone()).collect();
    ids.sort();
    ids.dedup();
    let during_events = events
        .iter()
        .filter(|e| e.subject.as_deref() == Some("during"))
        .count();
    assert!(
        during_events >= 2,
        "the retried message is on the topic: {events:?}"
    );
    assert_eq!(
        ids.len(),
        3,
        "one id per (message, recipient), duplicates share it: {ids:?}"
    );
    terminate(&mut lmtp)
}
