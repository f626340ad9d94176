//! A consumer's state changelog (`runtime.changelog`): a member with an
//! empty store restores every partition from it, reading far fewer records
//! than the input holds and deciding no input again, to the same state as
//! the member that built it; and a process killed before it shipped its
//! outbox ships it at its next start, losing nothing.

use std::{collections::BTreeMap, path::Path, time::Duration};

use mailfleet_runtime::{changelog, metrics as m, read};
use mailfleet_tests::*;

const KEYS: u64 = 60;
const EVENTS: u64 = 20_000;
const CHANGELOG_ON: (&str, &str) = ("MAILFLEET_RUNTIME__CHANGELOG", "[\"counter\"]");

fn processed(port: u16) -> f64 {
    scrape(port).map_or(-1.0, |t| metric_sum(&t, m::EVENTS_PROCESSED, &[]))
}

/// The last offsets record of each changelog partition: (input topic,
/// partition) → next offset, from committed records only.
fn shipped_offsets(world: &TestWorld) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
    let topic = changelog::topic_for(&world.group);
    let mut out = BTreeMap::new();
    for r in read::read_committed(&kafka(), &topic, "test-changelog")? {
        let Some(input) = r
            .key
            .as_deref()
            .and_then(|k| k.strip_prefix(changelog::OFFSETS_PREFIX))
        else {
            continue;
        };
        let next = i64::from_le_bytes(r.payload.as_slice().try_into()?);
        out.insert((String::from_utf8(input.to_vec())?, r.partition), next);
    }
    Ok(out)
}

async fn wait_shipped(world: &TestWorld) -> anyhow::Result<()> {
    let ends: BTreeMap<(String, i32), i64> = end_offsets(std::slice::from_ref(&world.input))?
        .into_iter()
        .filter(|(_, end)| *end > 0)
        .collect();
    wait_until(
        "the changelog to hold every input offset",
        Duration::from_secs(90),
        || shipped_offsets(world).is_ok_and(|s| s == ends),
    )
    .await
}

/// The changelog records each restore of `log` read, one per partition.
fn restores(log: &Path) -> anyhow::Result<Vec<u64>> {
    let text = std::fs::read_to_string(log)?;
    Ok(text
        .lines()
        .filter(|l| l.contains("restored from the changelog"))
        .filter_map(|l| {
            let rest = l.split("records=").nth(1)?;
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect())
}

/// Start a fresh member `b` on `world`, let it settle on every partition,
/// and check it restored (not replayed) the state `a` left.
async fn check_restore(world: &TestWorld, events: u64) -> anyhow::Result<()> {
    let digests_a = live_digests(&world.dir.join("a").join("counter"))?;
    assert_eq!(digests_a.len(), 3, "a held state in every partition");
    let pb = free_port();
    let log = world.dir.join("b.log");
    let mut b = spawn_with_env(
        &world.write_config("b", pb, None)?,
        &["run", "counter"],
        &[CHANGELOG_ON],
        &log,
    )?;
    let store_b = world.dir.join("b").join("counter");
    wait_applied(&store_b, std::slice::from_ref(&world.input)).await?;
    wait_until("b's metrics", Duration::from_secs(30), || {
        processed(pb) >= 0.0
    })
    .await?;
    let decided = processed(pb);
    terminate(&mut b)?;
    assert_eq!(decided, 0.0, "b decided no input again: it restored all");
    assert_eq!(live_digests(&store_b)?, digests_a, "b's state equals a's");
    assert_eq!(
        stored_counts(&world.dir.join("b"))?,
        expected_counts(events, KEYS),
        "every event counted exactly once"
    );
    let read = restores(&log)?;
    assert_eq!(read.len(), 3, "one restore per partition: {read:?}");
    let total: u64 = read.iter().sum();
    assert!(
        total > 0 && total < events / 4,
        "the restores read {total} changelog records for {events} input events"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_member_restores_from_the_changelog() -> anyhow::Result<()> {
    let world = TestWorld::new("changelog", 3).await?;
    let pa = free_port();
    let mut a = spawn_with_env(
        &world.write_config("a", pa, None)?,
        &["run", "counter"],
        &[CHANGELOG_ON],
        &world.dir.join("a.log"),
    )?;
    produce_events(&world.input, &world.name, 0, EVENTS, KEYS).await?;
    wait_until("a to handle every event", Duration::from_secs(90), || {
        processed(pa) >= EVENTS as f64
    })
    .await?;
    wait_shipped(&world).await?;
    terminate(&mut a)?;
    check_restore(&world, EVENTS).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_before_shipping_loses_nothing() -> anyhow::Result<()> {
    let world = TestWorld::new("changelog-crash", 3).await?;
    let config = world.write_config("a", free_port(), None)?;
    let log = world.dir.join("a.log");
    let hold = ("MAILFLEET_FAULT_HOLD_CHANGELOG", "1");
    let mut a = spawn_with_env(&config, &["run", "counter"], &[CHANGELOG_ON, hold], &log)?;
    produce_events(&world.input, &world.name, 0, EVENTS / 2, KEYS).await?;
    let store_a = world.dir.join("a").join("counter");
    wait_applied(&store_a, std::slice::from_ref(&world.input)).await?;
    assert!(
        shipped_offsets(&world)?.is_empty(),
        "nothing shipped while held"
    );
    a.kill()?; // kill -9: committed, not shipped
    a.wait()?;

    let pa = free_port();
    let mut a = spawn_with_env(
        &world.write_config("a", pa, None)?,
        &["run", "counter"],
        &[CHANGELOG_ON],
        &log,
    )?;
    // A few more events, on a third of the keys: the others' state reaches
    // the changelog only from the outbox the killed process left.
    let events = EVENTS / 2 + KEYS / 3;
    produce_events(&world.input, &world.name, EVENTS / 2, events, KEYS).await?;
    wait_applied(&store_a, std::slice::from_ref(&world.input)).await?;
    wait_shipped(&world).await?;
    terminate(&mut a)?;
    check_restore(&world, events).await
}
