//! Events through the runtime in-process, against the real broker.

use std::time::Duration;

use mailfleet_counter::{traffic, Counter, CounterConfig};
use mailfleet_events::{
    runtime::{Counted, DeadLetter, DeadLetterKind},
    Envelope, Registry,
};
use mailfleet_runtime::{producer::EventProducer, run, RunSpec, Shutdown};
use mailfleet_tests::*;

fn spec(world: &TestWorld, data: &str, stop_after: u64) -> RunSpec {
    let inputs = vec![world.input.clone()];
    RunSpec::new(world.group.clone(), inputs, &kafka(), &world.runtime(data)).stop_after(stop_after)
}

#[tokio::test(flavor = "multi_thread")]
async fn events_flow_end_to_end_through_the_counting_consumer() -> anyhow::Result<()> {
    let world = TestWorld::new("flow", 3).await?;
    produce_events(&world.input, &world.name, 0, 3000, 30).await?;
    let counter = Counter::new(CounterConfig::default(), world.output.clone());
    let stats = tokio::time::timeout(
        Duration::from_secs(120),
        run(counter, spec(&world, "a", 3000), Shutdown::new()),
    )
    .await??;
    assert_eq!(stats.events, 3000);
    assert_eq!(stats.outputs, 3000);
    assert_eq!(stats.dead_letters, 0);

    let expected = expected_counts(3000, 30);
    assert_eq!(stored_counts(&world.dir.join("a"))?, expected);
    let outputs = read_topic(&world.output, 3000, Duration::from_secs(10))?;
    let (pairs, dups) = dedup_counted(&outputs)?;
    assert_eq!(dups, 0);
    assert_eq!(pairs, expected_pairs(&expected));

    // A second run resumes from the stored offsets: only new events count.
    produce_events(&world.input, &world.name, 3000, 3300, 30).await?;
    let counter = Counter::new(CounterConfig::default(), world.output.clone());
    let stats = tokio::time::timeout(
        Duration::from_secs(120),
        run(counter, spec(&world, "a", 300), Shutdown::new()),
    )
    .await??;
    assert_eq!(stats.events, 300);
    assert_eq!(
        stored_counts(&world.dir.join("a"))?,
        expected_counts(3300, 30)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_goes_to_the_deadletter_topic_and_the_partition_keeps_flowing(
) -> anyhow::Result<()> {
    let world = TestWorld::new("badinput", 1).await?;
    let producer = EventProducer::new(&kafka(), &world.name)?;
    let good = |i| traffic::test_event(&world.name, i, 1, 4);
    let garbage = b"definitely not avro".to_vec();
    let unknown = vec![0xC3, 0x01, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 2];
    let mut empty_key = good(99);
    empty_key.key.clear();
    let wrong_type = Counted {
        envelope: Envelope::new("x", 0, "t"),
        key: "k".into(),
        count: 1,
    };

    producer.send(&world.input, b"k", &good(0)).await?;
    producer
        .send_raw(&world.input, b"garbage", &garbage)
        .await?;
    producer.send(&world.input, b"k", &good(1)).await?;
    producer
        .send_raw(&world.input, b"unknown", &unknown)
        .await?;
    producer.send(&world.input, b"empty", &empty_key).await?;
    producer.send(&world.input, b"wrong", &wrong_type).await?;
    producer.send(&world.input, b"k", &good(2)).await?;

    let counter = Counter::new(CounterConfig::default(), world.output.clone());
    let stats = tokio::time::timeout(
        Duration::from_secs(120),
        run(counter, spec(&world, "a", 7), Shutdown::new()),
    )
    .await??;
    assert_eq!((stats.events, stats.dead_letters), (7, 4));
    assert_eq!(
        stored_counts(&world.dir.join("a"))?.get("key-0"),
        Some(&3),
        "good events around the bad ones all counted"
    );

    let letters: Vec<DeadLetter> = read_topic(&world.deadletter, 4, Duration::from_secs(10))?
        .iter()
        .map(|(_, b)| Registry::builtin().decode(b))
        .collect::<Result<_, _>>()?;
    let summary: Vec<_> = letters.iter().map(|l| (l.offset, l.kind)).collect();
    assert_eq!(
        summary,
        vec![
            (1, DeadLetterKind::Undecodable),
            (3, DeadLetterKind::UnknownSchema),
            (4, DeadLetterKind::Rejected),
            (5, DeadLetterKind::WrongType),
        ]
    );
    assert_eq!(
        letters[0].original_value.as_deref(),
        Some(&garbage[..]),
        "original bytes kept"
    );
    assert_eq!(letters[0].original_key.as_deref(), Some(&b"garbage"[..]));
    assert!(
        letters[0].reason.contains("marker 64 65"),
        "{}",
        letters[0].reason
    );
    assert!(
        letters[1].reason.contains("deadbeef00000000"),
        "{}",
        letters[1].reason
    );
    assert!(
        letters[2].reason.contains("empty key"),
        "{}",
        letters[2].reason
    );
    assert!(
        letters[3].reason.contains("mailfleet.runtime.Counted"),
        "{}",
        letters[3].reason
    );
    assert!(letters
        .iter()
        .all(|l| l.consumer == "counter" && l.topic == world.input));
    Ok(())
}
