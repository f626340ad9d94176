//! `kill -9` the counting consumer at random points while 100,000 events
//! are produced: afterwards its state holds exactly the right count per key
//! and the deduplicated outputs are exactly the expected set.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use mailfleet_events::{runtime::Counted, Registry};
use mailfleet_tests::*;
use rand::Rng;
use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    Message,
};

const EVENTS: u64 = 100_000;
const KEYS: u64 = 500;
const KILLS: usize = 10;

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_random_points_loses_nothing_and_counts_nothing_twice() -> anyhow::Result<()> {
    let world = TestWorld::new("crash", 6).await?;
    let port = free_port();
    // Static membership: a restarted process takes its partitions back at once.
    let config = world.write_config("state", port, Some("crash-test"))?;
    let log = world.dir.join("child.log");

    let (input, name) = (world.input.clone(), world.name.clone());
    let producing = tokio::spawn(async move {
        for chunk in 0..100 {
            produce_events(&input, &name, chunk * 1000, (chunk + 1) * 1000, KEYS).await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::Ok(())
    });

    let mut child = spawn_counter(&config, &log)?;
    let mut kills = 0;
    while kills < KILLS || !producing.is_finished() {
        let wait = rand::rng().random_range(300..2000);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        assert!(
            child.try_wait()?.is_none(),
            "child died by itself; see {}",
            log.display()
        );
        child.kill()?; // SIGKILL
        child.wait()?;
        kills += 1;
        child = spawn_counter(&config, &log)?;
    }
    producing.await??;

    let seen = wait_for_outputs(&world.output, EVENTS as usize, Duration::from_secs(240));
    terminate(&mut child)?;
    let (ids, records) = seen?;
    assert_eq!(
        ids, EVENTS as usize,
        "every input produced exactly one distinct output id"
    );

    let expected = expected_counts(EVENTS, KEYS);
    let counts = stored_counts(&world.dir.join("state"))?;
    assert_eq!(counts.len(), expected.len());
    for (key, want) in &expected {
        assert_eq!(
            counts.get(key),
            Some(want),
            "count of {key} after {kills} kills"
        );
    }
    let (pairs, dups) = dedup_counted(&records)?;
    assert_eq!(pairs, expected_pairs(&expected));
    eprintln!("{kills} kills; {dups} duplicate outputs dropped by event id");
    Ok(())
}

/// Read the output topic until `want` distinct event ids were seen.
fn wait_for_outputs(
    topic: &str,
    want: usize,
    limit: Duration,
) -> anyhow::Result<(usize, Vec<Consumed>)> {
    let consumer: BaseConsumer = mailfleet_runtime::admin::client_config(&kafka())
        .set("group.id", unique("crash-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    let (mut ids, mut records) = (HashSet::new(), Vec::new());
    let started = Instant::now();
    while ids.len() < want {
        anyhow::ensure!(
            started.elapsed() < limit,
            "only {} of {want} outputs after {limit:?}",
            ids.len()
        );
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = msg?;
        let bytes = msg.payload().unwrap_or_default().to_vec();
        let c: Counted = Registry::builtin().decode(&bytes)?;
        ids.insert(c.envelope.event_id);
        records.push((msg.key().map(<[u8]>::to_vec), bytes));
    }
    Ok((ids.len(), records))
}
