//! The accounts part of `mailfleet demo`: thirty accounts register
//! through `mailfleet api` (passwords generated at run time, never shown;
//! the API hashes them), then live a season in compressed time
//! ([`super::season`]); then the tally, and one account's history. The
//! fleet's lifecycle, deleter, LDAP directory (real slapd), notifier,
//! storage writer and indexer do the work.

use std::collections::BTreeMap;

use anyhow::Context;
use futures::{stream, StreamExt, TryStreamExt};
use mailfleet_api::{
    wire::{RegisterRequest, Secret},
    ApiClient,
};
use mailfleet_directory as directory;
use mailfleet_events::{
    accounts::{AccountDeleted, AccountStatus, AccountStatusChanged, DeletionStepCompleted},
    notify::NotificationRequested,
    Event, Registry,
};
use mailfleet_fleet::config::Config;
use mailfleet_runtime::read::read_to_end;

use super::mail::read_all;

pub const ACCOUNTS: usize = 30;

/// What each demo account does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
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

pub fn plan_of(i: usize) -> Plan {
    match i {
        0..=16 => Plan::Regular,
        17 => Plan::Blocked,
        18 | 19 => Plan::Reactivates,
        20 => Plan::LateLogin,
        _ => Plan::Gone,
    }
}

/// This run's accounts, their passwords (generated here, held in memory
/// only) and when the API registered them.
pub struct DemoAccounts {
    pub list: Vec<String>,
    passwords: Vec<Secret>,
    pub registered_at: Vec<i64>,
}

impl DemoAccounts {
    /// Account `i`'s password, for its logins (API, IMAP).
    pub fn password(&self, i: usize) -> &Secret {
        &self.passwords[i]
    }
}

/// A fresh password that passes the API's rules; never logged.
fn new_password() -> Secret {
    Secret::new(format!("Demo-{:032x}-Q7", rand::random::<u128>()))
}

/// The API at `api`, once its projection has caught up.
pub async fn connect(api: &str) -> anyhow::Result<ApiClient> {
    let client = ApiClient::new(api, None)?;
    for _ in 0..300 {
        if client.ready().await.is_ok_and(|r| r.ready) {
            return Ok(client);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    anyhow::bail!("mailfleet api at {api} was not ready in 60 s")
}

/// Register the run's accounts through the API (two at a time: each
/// registration is an argon2 hash, and the API hashes as many at once as
/// the machine has cores).
pub async fn register(cfg: &Config, run_id: &str, api: &ApiClient) -> anyhow::Result<DemoAccounts> {
    let domain = super::mail::local_domain(cfg);
    let list: Vec<String> = (0..ACCOUNTS)
        .map(|i| format!("{run_id}-acct{i:02}@{domain}"))
        .collect();
    let passwords: Vec<Secret> = (0..ACCOUNTS).map(|_| new_password()).collect();
    let views: Vec<_> = stream::iter(list.iter().zip(&passwords).enumerate())
        .map(|(i, (account, password))| async move {
            let req = RegisterRequest {
                account: account.clone(),
                password: password.clone(),
                plan: None,
                display_name: Some(format!("Demo user {i}")),
            };
            api.register(&req)
                .await
                .with_context(|| format!("registering {account} through mailfleet api"))
        })
        .buffered(2)
        .try_collect()
        .await?;
    let registered_at = views.iter().map(|v| v.registered_at).collect();
    println!(
        "== accounts: {ACCOUNTS} registered through mailfleet api ({}), passwords generated at run time (never shown)",
        api_base(cfg)
    );
    Ok(DemoAccounts {
        list,
        passwords,
        registered_at,
    })
}

/// The API's base URL (`[api] listen`, plain HTTP on loopback).
pub fn api_base(cfg: &Config) -> String {
    format!("{}://{}", cfg.api.scheme(), cfg.api.listen)
}

/// This run's events of type `E` on `topic`.
pub fn mine<E: Event>(
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

pub async fn report(cfg: &Config, run_id: &str, accounts: &[String]) -> anyhow::Result<()> {
    let events = &cfg.consumers.lifecycle.events_topic;
    let deleted = mine::<AccountDeleted>(cfg, events, run_id, |e| &e.account)?;
    let expected = (0..ACCOUNTS).filter(|i| plan_of(*i) == Plan::Gone).count();
    println!(
        "== deletions done: {} of {expected} (the accounts that never came back)",
        deleted.len()
    );
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
