//! A consumer whose store is ahead of its log (the topic was recreated, or
//! the broker lost its data) stops with an error naming the partition and
//! the remedy, instead of skipping every new record as one already seen.

use std::time::Duration;

use mailfleet_tests::*;
use rdkafka::admin::{AdminClient, AdminOptions};

#[tokio::test(flavor = "multi_thread")]
async fn a_store_ahead_of_a_recreated_topic_stops_the_consumer_naming_it() -> anyhow::Result<()> {
    let world = TestWorld::new("logreset", 1).await?;
    let config = world.write_config("state", free_port(), None)?;
    let log = world.dir.join("child.log");
    produce_events(&world.input, &world.name, 0, 10, 3).await?;
    let mut child = spawn_counter(&config, &log)?;
    wait_applied(
        &world.dir.join("state/counter"),
        std::slice::from_ref(&world.input),
    )
    .await?;
    terminate(&mut child)?;

    // The topic goes and comes back empty; three new events follow.
    let admin: AdminClient<_> = mailfleet_runtime::admin::client_config(&kafka()).create()?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    admin.delete_topics(&[world.input.as_str()], &opts).await?;
    wait_until("the topic deleted", Duration::from_secs(30), || {
        end_offsets(std::slice::from_ref(&world.input)).is_ok_and(|e| e.is_empty())
    })
    .await?;
    mailfleet_runtime::admin::apply(&kafka(), &world.topology).await?;
    produce_events(&world.input, &world.name, 100, 103, 3).await?;

    let mut child = spawn_counter(&config, &log)?;
    let mut status = None;
    wait_until("the consumer to stop", Duration::from_secs(60), || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    })
    .await?;
    assert!(status.is_some_and(|s| !s.success()), "{status:?}");
    let text = std::fs::read_to_string(&log)?;
    let partition = format!("{}/0: the log ends at offset 3", world.input);
    assert!(text.contains(&partition), "{text}");
    assert!(text.contains("applied it up to 10"), "{text}");
    assert!(text.contains("Move the state folder"), "{text}");
    Ok(())
}
