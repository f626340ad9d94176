//! The API's projection of `accounts.events`: each account's status, plan,
//! quota, password hash, registration and latest login, folded from the
//! topic on a thread of its own ([`mailfleet_runtime::follow`]) and
//! followed: from the [`crate::snapshot`]'s offsets after the snapshot's
//! accounts are loaded, else from the beginning.
//!
//! The status is the lifecycle's: `pending` (or `active`, when the
//! lifecycle activates on registration) right after `AccountRegistered`,
//! then whatever the latest `AccountStatusChanged` says, and `deleted`
//! after the `AccountDeleted` tombstone. A block, unblock or reactivation
//! changes the status only once the lifecycle has decided it.
//!
//! **Read-your-writes.** The API applies each event it produced as soon as
//! Kafka acknowledged it ([`Projection::apply_own`]); the follower reads the
//! same record later and applies it again. That is harmless because every
//! fold is idempotent at its place in the log (a field is set, a login
//! keeps the latest, a second registration of a live account is ignored),
//! and the fields the API writes (plan, quota, logins, registration) are
//! written by no one else, so an early own write is never overtaken.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard},
};

use mailfleet_events::{
    accounts::{
        AccountDeleted, AccountPasswordChanged, AccountRegistered, AccountStatus,
        AccountStatusChanged, LoginChannel, LoginRecorded, PlanChanged, QuotaChanged,
    },
    EventError, Registry,
};
use mailfleet_runtime::{
    config::KafkaConfig,
    follow::{follow_from, Following},
    RuntimeError, Shutdown,
};
use rdkafka::Message;

use super::{
    snapshot::{self, Snapshot},
    wire::{channel_name, status_name, AccountView},
};

/// One account as the API knows it (and as its snapshot keeps it).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Account {
    /// The lower-cased address.
    pub account: String,
    pub status: AccountStatus,
    pub plan: String,
    pub quota_bytes: Option<i64>,
    /// `{ARGON2}...` or `{SSHA512}...`: never shown, never logged.
    pub password_hash: String,
    pub display_name: Option<String>,
    pub registered_at: i64,
    /// Event time and channel of the latest recorded login.
    pub last_login: Option<(i64, LoginChannel)>,
}

impl Account {
    /// What the API answers: everything but the hash.
    pub fn view(&self) -> AccountView {
        AccountView {
            account: self.account.clone(),
            status: status_name(self.status).to_string(),
            plan: self.plan.clone(),
            quota_bytes: self.quota_bytes,
            display_name: self.display_name.clone(),
            registered_at: self.registered_at,
            last_login_at: self.last_login.map(|(at, _)| at),
            last_login_channel: self.last_login.map(|(_, c)| channel_name(c).to_string()),
            deleted: self.status == AccountStatus::Deleted,
        }
    }
}

/// `Debug` without the hash, in case an account ends up in a log line.
impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("account", &self.account)
            .field("status", &self.status)
            .field("plan", &self.plan)
            .field("quota_bytes", &self.quota_bytes)
            .finish_non_exhaustive()
    }
}

/// The events of the topic that change the projection.
#[derive(Debug, Clone)]
pub enum AccountEvent {
    Registered(AccountRegistered),
    StatusChanged(AccountStatusChanged),
    Login(LoginRecorded),
    Quota(QuotaChanged),
    Plan(PlanChanged),
    PasswordChanged(AccountPasswordChanged),
    Deleted(AccountDeleted),
    /// Anything else on the topic (logins that failed, blocks, clock ticks,
    /// deletion steps, ...): nothing for the projection.
    Other,
}

impl AccountEvent {
    /// Decode by the writer schema's name.
    pub fn decode(bytes: &[u8]) -> Result<Self, EventError> {
        let registry = Registry::builtin();
        Ok(match registry.writer_of(bytes)?.name.as_str() {
            "mailfleet.accounts.AccountRegistered" => Self::Registered(registry.decode(bytes)?),
            "mailfleet.accounts.AccountStatusChanged" => {
                Self::StatusChanged(registry.decode(bytes)?)
            }
            "mailfleet.accounts.LoginRecorded" => Self::Login(registry.decode(bytes)?),
            "mailfleet.accounts.QuotaChanged" => Self::Quota(registry.decode(bytes)?),
            "mailfleet.accounts.PlanChanged" => Self::Plan(registry.decode(bytes)?),
            "mailfleet.accounts.AccountPasswordChanged" => {
                Self::PasswordChanged(registry.decode(bytes)?)
            }
            "mailfleet.accounts.AccountDeleted" => Self::Deleted(registry.decode(bytes)?),
            _ => Self::Other,
        })
    }
}

/// A fresh event id for an event born at the API: `api:<128 random bits>`.
pub fn new_event_id() -> String {
    format!("api:{:032x}", rand::random::<u128>())
}

/// The accounts, shared by the follower thread and the request handlers.
#[derive(Clone)]
pub struct Projection {
    inner: Arc<RwLock<Inner>>,
    /// Set once the follower runs (after the snapshot is loaded).
    following: Arc<OnceLock<Following>>,
}

struct Inner {
    accounts: HashMap<String, Account>,
    /// The status right after registration.
    registered_status: AccountStatus,
    /// Next offset of each events partition that the follower applied.
    applied: HashMap<i32, i64>,
    /// Each account's events partition, once the follower saw one.
    partition_of: HashMap<String, i32>,
    /// Accounts changed since the last snapshot.
    dirty: HashSet<String>,
}

impl Projection {
    /// An empty projection fed by hand: ready at once (tests).
    /// `active_on_register` mirrors `consumers.lifecycle.activate_on_register`.
    pub fn ready(active_on_register: bool) -> Self {
        Self::with(active_on_register, Following::ready())
    }

    fn with(active_on_register: bool, following: Following) -> Self {
        let projection = Self::empty(active_on_register);
        let _ = projection.following.set(following);
        projection
    }

    fn empty(active_on_register: bool) -> Self {
        let registered_status = if active_on_register {
            AccountStatus::Active
        } else {
            AccountStatus::Pending
        };
        Self {
            inner: Arc::new(RwLock::new(Inner {
                accounts: HashMap::new(),
                registered_status,
                applied: HashMap::new(),
                partition_of: HashMap::new(),
                dirty: HashSet::new(),
            })),
            following: Arc::default(),
        }
    }

    /// On a thread: with `from_snapshot`, load `topic`'s snapshot, then
    /// follow the topic from the snapshot's offsets (from the beginning
    /// without one, or without `from_snapshot`) until shutdown.
    pub fn follow(
        kafka: &KafkaConfig,
        topic: &str,
        active_on_register: bool,
        from_snapshot: bool,
        shutdown: Shutdown,
    ) -> Result<Self, RuntimeError> {
        let projection = Self::empty(active_on_register);
        let (view, kafka, topic) = (projection.clone(), kafka.clone(), topic.to_string());
        std::thread::Builder::new()
            .name("api-snapshot".into())
            .spawn(move || {
                if let Err(e) = view.start(&kafka, &topic, from_snapshot, shutdown) {
                    tracing::error!(error = %e, %topic,
                        "cannot follow the account events; answering 503 until restarted");
                }
            })
            .map_err(|e| RuntimeError::Thread {
                consumer: "api".into(),
                reason: e.to_string(),
            })?;
        Ok(projection)
    }

    fn start(
        &self,
        kafka: &KafkaConfig,
        topic: &str,
        from_snapshot: bool,
        shutdown: Shutdown,
    ) -> Result<(), RuntimeError> {
        let offsets = if from_snapshot {
            match self.load_snapshot_retrying(kafka, topic, &shutdown) {
                Some(offsets) => offsets,
                None => return Ok(()),
            }
        } else {
            tracing::info!(%topic, "api.snapshot_interval_s = 0: no snapshot read; folding the whole events topic");
            HashMap::new()
        };
        let view = self.clone();
        let following = follow_from(
            kafka,
            topic,
            "api-accounts",
            offsets,
            shutdown,
            move |msg| match AccountEvent::decode(msg.payload().unwrap_or_default()) {
                Ok(event) => view.apply_at(&event, msg.partition(), msg.offset()),
                Err(e) => tracing::warn!(error = %e, partition = msg.partition(),
                    offset = msg.offset(), "undecodable account event; skipped"),
            },
        )?;
        let _ = self.following.set(following);
        Ok(())
    }

    /// [`Self::load_snapshot`], again while it fails, waiting 250 ms, then
    /// twice as long each time up to 5 s: a snapshot topic created a moment
    /// ago can answer "not leader for partition" for a while (seen on a
    /// single broker), and so can a broker that is restarting. `None` once
    /// shutdown is triggered.
    fn load_snapshot_retrying(
        &self,
        kafka: &KafkaConfig,
        topic: &str,
        shutdown: &Shutdown,
    ) -> Option<HashMap<i32, i64>> {
        let mut wait = std::time::Duration::from_millis(250);
        loop {
            match self.load_snapshot(kafka, topic) {
                Ok(offsets) => return Some(offsets),
                Err(e) => tracing::warn!(error = %e, snapshot = %snapshot::topic_for(topic),
                    retry_ms = wait.as_millis() as u64, "cannot read the account snapshot yet; answering 503 meanwhile"),
            }
            if shutdown.is_triggered() {
                return None;
            }
            std::thread::sleep(wait);
            wait = (wait * 2).min(std::time::Duration::from_secs(5));
        }
    }

    /// Load `topic`'s snapshot into the projection; the offsets it reflects.
    fn load_snapshot(
        &self,
        kafka: &KafkaConfig,
        topic: &str,
    ) -> Result<HashMap<i32, i64>, RuntimeError> {
        let started = std::time::Instant::now();
        let loaded = snapshot::load(kafka, topic)?;
        let offsets = loaded.offsets.clone();
        {
            let mut inner = self.write();
            for (partition, account) in loaded.accounts {
                inner
                    .partition_of
                    .insert(account.account.clone(), partition);
                inner.accounts.insert(account.account.clone(), account);
            }
            inner.applied = offsets.clone();
        }
        tracing::info!(accounts = self.len(), records = loaded.records, offsets = ?offsets,
            ms = started.elapsed().as_millis() as u64, "account snapshot loaded; following the events after it");
        Ok(offsets)
    }

    /// Whether every partition has been read up to the end it had when the
    /// follower started.
    pub fn is_ready(&self) -> bool {
        self.following.get().is_some_and(Following::caught_up)
    }

    /// The accounts changed since the last call whose partition is known,
    /// and the offsets applied: what the next snapshot writes.
    pub fn take_snapshot(&self) -> Snapshot {
        let mut inner = self.write();
        let dirty: Vec<String> = inner.dirty.drain().collect();
        let mut out = Snapshot {
            offsets: inner.applied.clone(),
            ..Snapshot::default()
        };
        for account in dirty {
            match (
                inner.partition_of.get(&account),
                inner.accounts.get(&account),
            ) {
                (Some(p), Some(a)) => out.accounts.push((*p, a.clone())),
                // Not read back from the topic yet: the next snapshot.
                _ => {
                    inner.dirty.insert(account);
                }
            }
        }
        out
    }

    /// `account` (lower-cased), deleted ones included.
    pub fn get(&self, account: &str) -> Option<Account> {
        self.read().accounts.get(account).cloned()
    }

    /// How many accounts are known.
    pub fn len(&self) -> usize {
        self.read().accounts.len()
    }

    /// Whether no account is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Apply an event this process produced, once Kafka acknowledged it
    /// (the follower applies it again when it reads it: see the module doc).
    pub fn apply_own(&self, event: &AccountEvent) {
        self.apply(event);
    }

    fn apply(&self, event: &AccountEvent) {
        let mut inner = self.write();
        let status = inner.registered_status;
        fold(&mut inner.accounts, status, event);
        if let Some(account) = account_of(event) {
            inner.dirty.insert(account.to_ascii_lowercase());
        }
    }

    /// A snapshot that could not be written: its accounts go in the next.
    pub fn unsent(&self, snapshot: &Snapshot) {
        let mut inner = self.write();
        for (_, a) in &snapshot.accounts {
            inner.dirty.insert(a.account.clone());
        }
    }

    /// Apply an event the follower read at `partition`/`offset`.
    fn apply_at(&self, event: &AccountEvent, partition: i32, offset: i64) {
        self.apply(event);
        let mut inner = self.write();
        if let Some(account) = account_of(event) {
            let account = account.to_ascii_lowercase();
            inner.partition_of.entry(account).or_insert(partition);
        }
        inner.applied.insert(partition, offset + 1);
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// The fold: what one event does to the accounts. An event about an
/// account never registered here is ignored, and so is a second
/// registration of a live account (the first wins, as in the lifecycle).
pub fn fold(
    accounts: &mut HashMap<String, Account>,
    registered_status: AccountStatus,
    event: &AccountEvent,
) {
    if let AccountEvent::Registered(e) = event {
        let key = e.account.to_ascii_lowercase();
        if accounts
            .get(&key)
            .is_none_or(|a| a.status == AccountStatus::Deleted)
        {
            accounts.insert(key.clone(), registered(key, registered_status, e));
        }
        return;
    }
    let Some((account, change)) = change_of(event) else {
        return;
    };
    if let Some(a) = accounts.get_mut(&account.to_ascii_lowercase()) {
        change(a);
    }
}

/// The account an event is about, if it changes the projection.
fn account_of(event: &AccountEvent) -> Option<&str> {
    match event {
        AccountEvent::Registered(e) => Some(&e.account),
        other => change_of(other).map(|(account, _)| account),
    }
}

fn registered(key: String, status: AccountStatus, e: &AccountRegistered) -> Account {
    Account {
        account: key,
        status,
        plan: e.plan.clone(),
        quota_bytes: None,
        password_hash: e.password_hash.clone(),
        display_name: e.display_name.clone(),
        registered_at: e.envelope.event_time,
        last_login: None,
    }
}

type Change<'e> = Box<dyn FnOnce(&mut Account) + 'e>;

/// The account an event is about and what it changes.
fn change_of(event: &AccountEvent) -> Option<(&str, Change<'_>)> {
    Some(match event {
        AccountEvent::StatusChanged(e) => (&e.account, Box::new(|a| a.status = e.to)),
        AccountEvent::Deleted(e) => (&e.account, Box::new(|a| a.status = AccountStatus::Deleted)),
        AccountEvent::Quota(e) => (&e.account, Box::new(|a| a.quota_bytes = e.quota_bytes)),
        AccountEvent::Plan(e) => (&e.account, Box::new(|a| a.plan = e.plan.clone())),
        AccountEvent::PasswordChanged(e) => (
            &e.account,
            Box::new(|a| a.password_hash = e.password_hash.clone()),
        ),
        AccountEvent::Login(e) => (
            &e.account,
            Box::new(|a| {
                // The latest login by event time: a late record never moves it back.
                let at = e.envelope.event_time;
                if a.last_login.is_none_or(|(seen, _)| at >= seen) {
                    a.last_login = Some((at, e.channel));
                }
            }),
        ),
        AccountEvent::Registered(_) | AccountEvent::Other => return None,
    })
}

#[cfg(test)]
mod tests;
