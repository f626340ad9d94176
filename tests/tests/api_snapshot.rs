//! `mailfleet api` starts from its projection's snapshot: with
//! `api.snapshot_interval_s` set, the accounts go to the compacted
//! `<events topic>.snapshot` with the offsets they reflect; a restart loads
//! them and folds only the events after those offsets, and answers as
//! before, including for an event written while it was down. With
//! `api.snapshot_interval_s = 0` it reads no snapshot and folds the events
//! alone.

use std::{collections::BTreeMap, time::Duration};

use mailfleet_api::{
    projection::Account,
    snapshot::{self, Snapshot},
    wire::{Channel, LoginRequest, RegisterRequest, Secret},
    ApiError,
};
use mailfleet_events::{
    accounts::{AccountStatus, PlanChanged},
    Envelope,
};
use mailfleet_runtime::{admin, producer::EventProducer, read};
use mailfleet_tests::{api::*, *};
use rdkafka::producer::FutureProducer;

/// The snapshot's offsets records: partition → next events offset.
fn snapshot_offsets(world: &ApiWorld) -> anyhow::Result<BTreeMap<i32, i64>> {
    let topic = snapshot::topic_for(&world.topic);
    let mut out = BTreeMap::new();
    for r in read::read_to_end(&kafka(), &topic, "test-api-snapshot")? {
        if r.key.as_deref() == Some(snapshot::OFFSETS_KEY) {
            out.insert(
                r.partition,
                i64::from_le_bytes(r.payload.as_slice().try_into()?),
            );
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_starts_from_its_snapshot_and_the_events_after_it() -> anyhow::Result<()> {
    let world = ApiWorld::new("api-snapshot", "snapshot_interval_s = 1").await?;
    let mut children = Children(vec![world.spawn()?]);
    world.wait_ready().await?;
    let api = world.client()?;
    let secret = strong_password();
    let accounts: Vec<String> = (0..5).map(|i| world.address(&format!("u{i}"))).collect();
    for a in &accounts {
        api.register(&RegisterRequest {
            account: a.clone(),
            password: Secret::new(&secret),
            plan: None,
            display_name: None,
        })
        .await?;
    }
    let login = LoginRequest {
        channel: Channel::Imap,
        ip: Some("192.0.2.7".into()),
        password: Some(Secret::new(&secret)),
    };
    api.login(&accounts[0], &login).await?;
    api.set_plan(&accounts[1], "pro").await?;
    let before: Vec<_> = {
        let mut v = Vec::new();
        for a in &accounts {
            v.push(api.show(a).await?);
        }
        v
    };
    // Every event so far is in the snapshot.
    let ends: BTreeMap<i32, i64> = end_offsets(std::slice::from_ref(&world.topic))?
        .into_iter()
        .filter(|(_, end)| *end > 0)
        .map(|((_, p), end)| (p, end))
        .collect();
    wait_until(
        "the snapshot to reach the topic's end",
        Duration::from_secs(30),
        || snapshot_offsets(&world).is_ok_and(|s| ends.iter().all(|(p, e)| s.get(p) == Some(e))),
    )
    .await?;
    children.terminate()?;

    // Written while the API is down: only the events can bring it.
    let producer = EventProducer::new(&kafka(), "test-api-snapshot")?;
    let late = PlanChanged {
        envelope: Envelope::new("test:late-plan", mailfleet_runtime::time::now_ms(), "test"),
        account: accounts[2].clone(),
        plan: "pro".into(),
    };
    producer
        .send(&world.topic, accounts[2].as_bytes(), &late)
        .await?;

    let log_before = world.log_text().len();
    children.0.push(world.spawn()?);
    world.wait_ready().await?;
    let log = world.log_text()[log_before..].to_string();
    let loaded = log
        .lines()
        .find(|l| l.contains("account snapshot loaded"))
        .unwrap_or_else(|| panic!("no snapshot line in\n{log}"));
    assert!(loaded.contains("accounts=5"), "{loaded}");
    let api = world.client()?;
    for (a, was) in accounts.iter().zip(&before) {
        let now = api.show(a).await?;
        if a == &accounts[2] {
            assert_eq!(now.plan, "pro", "the event after the snapshot is folded");
        } else {
            assert_eq!(&now, was, "{a} answers as before the restart");
        }
    }
    // And it goes on working: a login, and a second registration refused.
    api.login(&accounts[3], &login).await?;
    assert!(api.show(&accounts[3]).await?.last_login_at.is_some());
    let again = api
        .register(&RegisterRequest {
            account: accounts[4].clone(),
            password: Secret::new(&secret),
            plan: None,
            display_name: None,
        })
        .await;
    assert!(again.is_err(), "{again:?}");
    children.terminate()?;
    Ok(())
}

/// `api.snapshot_interval_s = 0` reads no snapshot: an account that only
/// the snapshot holds is unknown, and known once snapshots are on again.
#[tokio::test(flavor = "multi_thread")]
async fn with_snapshots_off_the_api_folds_the_events_alone() -> anyhow::Result<()> {
    let world = ApiWorld::new("api-snapshot-off", "snapshot_interval_s = 0").await?;
    let ghost = world.address("ghost");
    snapshot::ensure_topic(&kafka(), &world.topic).await?;
    let producer: FutureProducer = admin::client_config(&kafka()).create()?;
    let account = Account {
        account: ghost.clone(),
        status: AccountStatus::Active,
        plan: "free".into(),
        quota_bytes: None,
        password_hash: "{ARGON2}$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$aGFzaA".into(),
        display_name: None,
        registered_at: 1,
        last_login: None,
    };
    let only_in_snapshot = Snapshot {
        accounts: vec![(0, account)],
        offsets: Default::default(),
    };
    snapshot::write(&producer, &world.topic, &only_in_snapshot).await?;

    let mut children = Children(vec![world.spawn()?]);
    world.wait_ready().await?;
    let off = world.client()?.show(&ghost).await;
    assert!(
        matches!(off, Err(ApiError::Refused { status: 404, .. })),
        "snapshots off, yet: {off:?}"
    );
    assert!(world.log_text().contains("no snapshot read"));
    children.terminate()?;

    let on = [("MAILFLEET_API__SNAPSHOT_INTERVAL_S", "1")];
    children
        .0
        .push(spawn_with_env(&world.config, &["api"], &on, &world.log)?);
    world.wait_ready().await?;
    let view = world.client()?.show(&ghost).await?;
    assert_eq!(view.account, ghost, "snapshots on: the snapshot's account");
    children.terminate()?;
    Ok(())
}
