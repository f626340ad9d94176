//! Two processes in one group split the partitions; when one is killed the
//! other takes over. A partition whose state is not local is restored by
//! replaying its input from the earliest offset.

use std::time::Duration;

use mailfleet_runtime::metrics as m;
use mailfleet_tests::*;

const KEYS: u64 = 60;

fn assigned(port: u16) -> f64 {
    scrape(port).map_or(-1.0, |t| metric_sum(&t, m::ASSIGNED_PARTITIONS, &[]))
}

fn processed(port: u16) -> f64 {
    scrape(port).map_or(0.0, |t| metric_sum(&t, m::EVENTS_PROCESSED, &[]))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_survivor_takes_over_and_restores_state_by_replay() -> anyhow::Result<()> {
    let world = TestWorld::new("rebalance", 6).await?;
    let (pa, pb) = (free_port(), free_port());
    let mut a = spawn_counter(
        &world.write_config("a", pa, None)?,
        &world.dir.join("a.log"),
    )?;
    let mut b = spawn_counter(
        &world.write_config("b", pb, None)?,
        &world.dir.join("b.log"),
    )?;

    wait_until(
        "both processes to hold 3 partitions",
        Duration::from_secs(60),
        || assigned(pa) == 3.0 && assigned(pb) == 3.0,
    )
    .await?;
    produce_events(&world.input, &world.name, 0, 20_000, KEYS).await?;
    wait_until(
        "both processes to handle all 20000",
        Duration::from_secs(60),
        || {
            let (x, y) = (processed(pa), processed(pb));
            x > 0.0 && y > 0.0 && x + y >= 20_000.0
        },
    )
    .await?;

    a.kill()?; // kill -9
    a.wait()?;
    produce_events(&world.input, &world.name, 20_000, 40_000, KEYS).await?;
    wait_until(
        "b to take all 6 partitions",
        Duration::from_secs(60),
        || assigned(pb) == 6.0,
    )
    .await?;
    // b handles its own partitions once and replays a's from the start:
    // every one of the 40000 events exactly once.
    wait_until("b to catch up", Duration::from_secs(120), || {
        processed(pb) >= 40_000.0
    })
    .await?;
    terminate(&mut b)?;

    // b's own store now holds the exact totals of every key, including the
    // keys of the partitions it never had before: replay rebuilt them.
    assert_eq!(
        stored_counts(&world.dir.join("b"))?,
        expected_counts(40_000, KEYS)
    );
    let a_counts = stored_counts(&world.dir.join("a"))?;
    assert!(
        !a_counts.is_empty() && a_counts.len() < KEYS as usize,
        "a held only its own partitions' keys"
    );

    let outputs = read_topic(&world.output, usize::MAX, Duration::from_secs(5))?;
    let (pairs, _) = dedup_counted(&outputs)?;
    assert_eq!(pairs, expected_pairs(&expected_counts(40_000, KEYS)));
    Ok(())
}
