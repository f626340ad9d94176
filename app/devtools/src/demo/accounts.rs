//! The accounts part of `mailfleet demo`: a season of accounts, told in
//! event time. Thirty accounts register a hundred days ago; most log in
//! now and then over every channel (webmail, IMAP, ActiveSync, SyncML),
//! some change plan and one gets a bigger quota, one is blocked by an
//! admin, the rest never come back. Clock ticks move the lifecycle on: the
//! idle accounts go inactive (a notice each, mailed through Postfix back
//! into their mailboxes), two reactivate within the grace period and one
//! logs in, and the others are deleted everywhere by the saga. The fleet's
//! lifecycle, deleter, LDAP directory (real slapd), notifier, storage
//! writer and indexer do the work; then the tally, and one account's
//! history.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context;
use mailfleet_directory as directory;
use mailfleet_events::{
    accounts::{
        AccountBlocked, AccountDeleted, AccountReactivated, AccountRegistered, AccountStatus,
        AccountStatusChanged, BlockReason, DeletionStepCompleted, LoginChannel, LoginRecorded,
        PlanChanged, QuotaChanged,
    },
    clock::ClockTicked,
    notify::NotificationRequested,
    Envelope, Event, Registry,
};
use mailfleet_fleet::config::Config;
use mailfleet_lifecycle::{self as lifecycle, deleter};
use mailfleet_password as password;
use mailfleet_runtime::{producer::EventProducer, read::read_to_end, time::now_ms, Topology};
use rand::{rngs::StdRng, Rng, SeedableRng};

use super::{fleet::Fleet, mail::read_all};

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;
const ACCOUNTS: usize = 30;
/// Every channel a login comes over.
const CHANNELS: [LoginChannel; 4] = [
    LoginChannel::Webmail,
    LoginChannel::Imap,
    LoginChannel::Activesync,
    LoginChannel::Syncml,
];

/// What each demo account does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// Logs in every few weeks: stays active.
    Regular,
    /// Blocked by an admin early on: no timers while blocked.
    Blocked,
    /// Never logs in; answers the notice by reactivating.
    Reactivates,
    /// Never logs in; logs in again within the grace period.
    LateLogin,
    /// Never logs in again: deleted.
    Gone,
}

fn plan_of(i: usize) -> Plan {
    match i {
        0..=16 => Plan::Regular,
        17 => Plan::Blocked,
        18 | 19 => Plan::Reactivates,
        20 => Plan::LateLogin,
        _ => Plan::Gone,
    }
}

pub async fn run(
    cfg: &Config,
    topology: &Topology,
    run_id: &str,
    fleet: &mut Fleet,
) -> anyhow::Result<()> {
    let events = cfg.consumers.lifecycle.events_topic.clone();
    let domain = cfg
        .consumers
        .scanner
        .local_domains
        .first()
        .cloned()
        .unwrap_or_else(|| "example.test".into());
    let accounts: Vec<String> = (0..ACCOUNTS)
        .map(|i| format!("{run_id}-acct{i:02}@{domain}"))
        .collect();
    let expected_deleted = (0..ACCOUNTS).filter(|i| plan_of(*i) == Plan::Gone).count();

    // The fleet's lifecycle, deleter, directory, storage writer, indexer
    // and notifier take the season from here.
    let now = now_ms();
    let t0 = now - 100 * DAY_MS;
    let timeline = timeline(&accounts, cfg, t0, run_id).await?;
    let producer = EventProducer::new(&cfg.kafka, &format!("{run_id}-accounts"))?;
    let partitions = topology.topics.get(&events).map_or(1, |t| t.partitions);
    let mut sent = 0;
    for step in &timeline {
        match step {
            Step::Event(key, bytes) => {
                producer.send_raw(&events, key.as_bytes(), bytes).await?;
            }
            Step::Tick(at) => tick(&producer, &events, partitions, *at, run_id).await?,
        }
        sent += 1;
    }
    println!(
        "== accounts: {ACCOUNTS} registered 100 days ago (event time), {} events and clock ticks to {events}",
        sent
    );

    let took = fleet
        .settle(
            &[
                lifecycle::NAME,
                deleter::NAME,
                directory::NAME,
                "storage",
                "index",
                "notifier",
            ],
            Duration::from_secs(240),
        )
        .await
        .context(
            "the accounts' season (is slapd up? ops/ldap start; Postfix? ops/postfix start)",
        )?;
    let deleted = mine::<AccountDeleted>(cfg, &events, run_id, |e| &e.account)?;
    println!(
        "== the fleet's lifecycle, deleter, directory, storage, index and notifier caught up in {:.1}s: {} of {expected_deleted} deletions done",
        took.as_secs_f64(),
        deleted.len(),
    );
    report(cfg, run_id, &accounts).await
}

/// One step of the season.
enum Step {
    /// An encoded event and its key.
    Event(String, Vec<u8>),
    /// A clock tick at this event time into every partition.
    Tick(i64),
}

async fn timeline(
    accounts: &[String],
    cfg: &Config,
    t0: i64,
    run_id: &str,
) -> anyhow::Result<Vec<Step>> {
    let mut rng = StdRng::seed_from_u64(11);
    let mut out = Vec::new();
    for (i, account) in accounts.iter().enumerate() {
        out.push(register(cfg, &mut rng, run_id, i, account, t0).await?);
        match plan_of(i) {
            Plan::Regular => out.extend(regular(&mut rng, run_id, i, account, t0)?),
            Plan::Blocked => {
                let block = AccountBlocked {
                    envelope: env(run_id, "block", i, t0 + 10 * DAY_MS),
                    account: account.clone(),
                    reason: BlockReason::Admin,
                    message_id: None,
                    blob_id: None,
                    detail: "spam complaints (demo)".into(),
                };
                out.push(step(account, &block)?);
            }
            Plan::Reactivates | Plan::LateLogin | Plan::Gone => {}
        }
    }
    // The tick that finds the idle accounts: the last registration's
    // threshold (3 months and 2 days), plus an hour.
    let last = t0 + (accounts.len() as i64 - 1) * 60_000;
    let inactive_tick = cfg.consumers.lifecycle.inactive_at(last) + HOUR_MS;
    out.push(Step::Tick(inactive_tick));
    for (i, account) in accounts.iter().enumerate() {
        let at = inactive_tick + 2 * HOUR_MS;
        match plan_of(i) {
            Plan::Reactivates => {
                let e = AccountReactivated {
                    envelope: env(run_id, "reactivate", i, at),
                    account: account.clone(),
                    by: "user (answered the notice)".into(),
                };
                out.push(step(account, &e)?);
            }
            Plan::LateLogin => {
                let e = LoginRecorded {
                    envelope: env(run_id, "late-login", i, at),
                    account: account.clone(),
                    channel: LoginChannel::Syncml,
                    ip: None,
                };
                out.push(step(account, &e)?);
            }
            _ => {}
        }
    }
    // The grace period ends for the rest.
    out.push(Step::Tick(
        inactive_tick + cfg.consumers.lifecycle.grace_ms() + HOUR_MS,
    ));
    Ok(out)
}

/// The envelope of this run's `what` of account `i`, at `at`.
fn env(run_id: &str, what: &str, i: usize, at: i64) -> Envelope {
    Envelope::new(format!("{run_id}:{what}:{i}"), at, "demo")
}

/// `event`, encoded, keyed by `account`.
fn step<E: Event>(account: &str, event: &E) -> anyhow::Result<Step> {
    Ok(Step::Event(
        account.to_string(),
        mailfleet_events::encode(event)?,
    ))
}

/// Account `i` registers, a minute after the one before it.
async fn register(
    cfg: &Config,
    rng: &mut StdRng,
    run_id: &str,
    i: usize,
    account: &str,
    t0: i64,
) -> anyhow::Result<Step> {
    // A password of its own, hashed as the API would; never shown.
    let secret = format!("Demo{:016x}9", rng.random::<u64>());
    let hash = tokio::task::spawn_blocking(move || password::hash(&secret)).await??;
    let at = t0 + i as i64 * 60_000;
    let registered = AccountRegistered {
        envelope: env(run_id, "register", i, at),
        account: account.to_string(),
        password_hash: hash,
        plan: cfg.consumers.storage.default_plan.clone(),
        display_name: Some(format!("Demo user {i}")),
    };
    step(account, &registered)
}

/// A regular's logins over every channel; some change plan, and one gets
/// a bigger quota.
fn regular(
    rng: &mut StdRng,
    run_id: &str,
    i: usize,
    account: &str,
    t0: i64,
) -> anyhow::Result<Vec<Step>> {
    let mut out = Vec::new();
    for n in 0..rng.random_range(1..=4) {
        let day = rng.random_range(20..95);
        let login = LoginRecorded {
            envelope: env(run_id, &format!("login{n}"), i, t0 + day * DAY_MS),
            account: account.to_string(),
            channel: CHANNELS[(i + n) % CHANNELS.len()],
            ip: Some(format!("192.0.2.{}", 10 + i)),
        };
        out.push(step(account, &login)?);
    }
    // Some upgrade their plan; support raises one quota by hand.
    if i % 5 == 1 {
        let plan = PlanChanged {
            envelope: env(run_id, "plan", i, t0 + (30 + i as i64) * DAY_MS),
            account: account.to_string(),
            plan: if i % 10 == 1 { "plus" } else { "pro" }.into(),
        };
        out.push(step(account, &plan)?);
    }
    if i == 3 {
        let quota = QuotaChanged {
            envelope: env(run_id, "quota", i, t0 + 45 * DAY_MS),
            account: account.to_string(),
            quota_bytes: Some(20 * 1024 * 1024 * 1024),
        };
        out.push(step(account, &quota)?);
    }
    Ok(out)
}

async fn tick(
    producer: &EventProducer,
    topic: &str,
    partitions: i32,
    at: i64,
    run_id: &str,
) -> anyhow::Result<()> {
    for partition in 0..partitions {
        let tick = ClockTicked {
            envelope: Envelope::new(format!("{run_id}:tick:{partition}:{at}"), at, "demo-clock"),
            clock: "demo".into(),
            period_ms: HOUR_MS,
        };
        producer
            .send_to_partition(topic, partition, &mailfleet_events::encode(&tick)?)
            .await?;
    }
    Ok(())
}

/// This run's events of type `E` on `topic`.
fn mine<E: Event>(
    cfg: &Config,
    topic: &str,
    run_id: &str,
    account: impl Fn(&E) -> &String,
) -> anyhow::Result<Vec<E>> {
    Ok(read_all::<E>(cfg, topic)?
        .into_iter()
        .filter(|e| account(e).starts_with(run_id))
        .collect())
}

async fn report(cfg: &Config, run_id: &str, accounts: &[String]) -> anyhow::Result<()> {
    let events = &cfg.consumers.lifecycle.events_topic;
    let changes = mine::<AccountStatusChanged>(cfg, events, run_id, |e| &e.account)?;
    let mut moves: BTreeMap<String, usize> = BTreeMap::new();
    for c in &changes {
        let reason = c.reason.split(':').next().unwrap_or_default();
        *moves
            .entry(format!("{:?} -> {:?} ({reason})", c.from, c.to))
            .or_default() += 1;
    }
    println!("== lifecycle transitions (accounts.events):");
    for (what, n) in &moves {
        println!("  {n:>3}  {what}");
    }
    let notices =
        mine::<NotificationRequested>(cfg, &cfg.consumers.lifecycle.notify_topic, run_id, |e| {
            &e.to
        })?;
    println!(
        "== notices requested: {} `deactivated` (respond within {} h); the fleet's notifier mails them through Postfix to `mailfleet lmtp` (in compressed time a deleted account's notice bounces: 550 5.1.1)",
        notices.len(),
        cfg.consumers.lifecycle.grace_period_hours
    );
    let steps = mine::<DeletionStepCompleted>(cfg, events, run_id, |e| &e.account)?;
    let mut by_step: BTreeMap<String, usize> = BTreeMap::new();
    for s in &steps {
        *by_step.entry(format!("{:?}", s.step)).or_default() += 1;
    }
    println!("== deletion saga steps completed: {by_step:?}");
    let client = directory::DirectoryClient::new(cfg.ldap.clone())
        .map_err(|p| anyhow::anyhow!("[ldap]: {}", p.join("; ")))?;
    let mut in_ldap = 0;
    for account in accounts {
        if client.account_entry(account).await.is_ok() {
            in_ldap += 1;
        }
    }
    println!(
        "== slapd: {in_ldap} of {} demo accounts still have an entry under {}",
        accounts.len(),
        cfg.ldap.people_base
    );
    // One deleted account's whole story, as an auditor reads it.
    let Some(gone) = accounts.iter().find(|a| {
        changes
            .iter()
            .any(|c| &c.account == *a && c.to == AccountStatus::Deleted)
    }) else {
        return Ok(());
    };
    print_history(cfg, events, gone)
}

/// `gone`'s transitions, deletion steps and deletion on `events`, in order.
fn print_history(cfg: &Config, events: &str, gone: &str) -> anyhow::Result<()> {
    println!("== the history of {gone}:");
    let registry = Registry::builtin();
    for record in read_to_end(&cfg.kafka, events, "demo")? {
        let (place, bytes) = (
            format!("{}@{}", record.partition, record.offset),
            record.payload,
        );
        let Ok(writer) = registry.writer_of(&bytes) else {
            continue;
        };
        let line = match writer.name.as_str() {
            AccountStatusChanged::NAME => story::<AccountStatusChanged>(&bytes, gone, |e| {
                (
                    &e.account,
                    format!("{:?} -> {:?}: {}", e.from, e.to, e.reason),
                )
            }),
            DeletionStepCompleted::NAME => story::<DeletionStepCompleted>(&bytes, gone, |e| {
                (
                    &e.account,
                    format!("deletion step {:?} done: {}", e.step, e.detail),
                )
            }),
            AccountDeleted::NAME => story::<AccountDeleted>(&bytes, gone, |e| {
                (&e.account, format!("AccountDeleted ({})", e.reason))
            }),
            _ => None,
        };
        if let Some((at, text)) = line {
            println!(
                "  {}  {place:>8}  {text}",
                mailfleet_runtime::calendar::date_time(at)
            );
        }
    }
    Ok(())
}

/// One line of an account's history: `bytes` as an `E` about `account`,
/// with its event time and what `tell` says of it.
fn story<E: Event>(
    bytes: &[u8],
    account: &str,
    tell: impl Fn(&E) -> (&String, String),
) -> Option<(i64, String)> {
    let event = Registry::builtin().decode::<E>(bytes).ok()?;
    let (about, text) = tell(&event);
    (about == account).then(|| (event.envelope().event_time, text))
}
