//! The lifecycle's pure part: what each input means for one account's
//! status, and the tick pass that fires due timers. The time is always the
//! input's event time, so a replay decides the same transitions.

use std::collections::BTreeMap;

use mailfleet_events::{
    accounts::{
        AccountBlocked, AccountDeleted, AccountReactivated, AccountRegistered, AccountStatus,
        AccountStatusChanged, AccountUnblocked, BlockReason, LoginRecorded,
    },
    clock::ClockTicked,
    config::ConfigChanged,
    notify::NotificationRequested,
    Envelope,
};
use mailfleet_runtime::{
    calendar::{date, date_time},
    Decision, StateError, StateKey, StateValue, StateView, ValueError,
};

use super::{
    config::LifecycleConfig,
    state::{Account, AccountKey, Earliest, EarliestKey, Status},
    NAME,
};

mailfleet_runtime::inputs! {
    /// Everything the lifecycle reads from `accounts.events` (keyed by
    /// account; clock ticks arrive in every partition). Any other event on
    /// the topic (its own `AccountStatusChanged`, `QuotaChanged`,
    /// `LoginFailed`, ...) is `Other`: ignored.
    #[derive(Debug)]
    pub enum LifecycleInput {
        Registered(AccountRegistered),
        Login(LoginRecorded),
        Blocked(AccountBlocked),
        Unblocked(AccountUnblocked),
        Reactivated(AccountReactivated),
        /// The deleter's tombstone.
        Deleted(AccountDeleted),
        Tick(ClockTicked),
        /// The settings in force from here on (handled by the consumer).
        Config(ConfigChanged),
        _ => Other,
    }
}

/// An event about one existing account, reduced to what the rules need.
#[derive(Debug, Clone, Copy)]
enum Happened {
    Login,
    Blocked(BlockReason),
    Unblocked,
    Reactivated,
}

/// What an event or a timer does to an account.
#[derive(Debug, PartialEq, Eq)]
enum Change {
    /// Nothing.
    None,
    /// The record changes, the status does not (a login moves the clock).
    Quiet(Account),
    /// A transition, with its reason.
    Move(Account, String),
}

/// Decide one input.
pub fn decide(
    cfg: &LifecycleConfig,
    state: &StateView<'_>,
    input: &LifecycleInput,
) -> Result<Decision, StateError> {
    let (account, cause, happened) = match input {
        LifecycleInput::Registered(e) => return registered(cfg, state, e),
        LifecycleInput::Deleted(e) => return deleted(cfg, state, e),
        LifecycleInput::Tick(t) => return tick(cfg, state, &t.envelope),
        LifecycleInput::Other(_) | LifecycleInput::Config(_) => return Ok(Decision::ignore()),
        LifecycleInput::Login(e) => (&e.account, &e.envelope, Happened::Login),
        LifecycleInput::Blocked(e) => (&e.account, &e.envelope, Happened::Blocked(e.reason)),
        LifecycleInput::Unblocked(e) => (&e.account, &e.envelope, Happened::Unblocked),
        LifecycleInput::Reactivated(e) => (&e.account, &e.envelope, Happened::Reactivated),
    };
    let name = account.to_ascii_lowercase();
    // An unknown account (never registered here, or deleted): nothing to
    // move. A login racing the tombstone is normal, not a poison message.
    let Some(current) = state.get(&AccountKey(&name))? else {
        return Ok(Decision::ignore());
    };
    let change = step(&current, happened, cause.event_time);
    let mut d = Decision::apply();
    match change {
        Change::None => return Ok(Decision::ignore()),
        Change::Quiet(next) => save(state, &mut d, &name, &next)?,
        Change::Move(next, reason) => {
            save(state, &mut d, &name, &next)?;
            let moved = (current.status.into(), next.status.into());
            changed(cfg, &mut d, cause, &name, moved, reason);
        }
    }
    Ok(d)
}

/// The rules for an event about an existing account at `now`.
fn step(a: &Account, happened: Happened, now: i64) -> Change {
    use Status::*;
    let active = |reason: &str| Change::Move(Account::new(Active, now, now), reason.into());
    match (a.status, happened) {
        (Pending | Inactive, Happened::Login) => active("login"),
        // The clock never goes back for a login with an older event time.
        (Active, Happened::Login) if now > a.clock => Change::Quiet(Account { clock: now, ..*a }),
        (Pending | Active | Inactive, Happened::Blocked(reason)) => Change::Move(
            Account::new(Blocked, now, a.clock),
            block_reason(reason).into(),
        ),
        (Blocked, Happened::Unblocked) => active("unblocked"),
        (Inactive, Happened::Reactivated) => active("reactivated"),
        // Too late while deleting; a login while blocked does not matter
        // (the clock restarts at the unblock); the rest are no-ops.
        _ => Change::None,
    }
}

fn block_reason(reason: BlockReason) -> &'static str {
    match reason {
        BlockReason::Virus => "virus",
        BlockReason::Admin => "admin",
        BlockReason::Abuse => "abuse",
        BlockReason::Unknown => "blocked",
    }
}

fn registered(
    cfg: &LifecycleConfig,
    state: &StateView<'_>,
    e: &AccountRegistered,
) -> Result<Decision, StateError> {
    let name = e.account.to_ascii_lowercase();
    if name.is_empty() {
        return Ok(Decision::reject(format!(
            "AccountRegistered {}: no account",
            e.envelope.event_id
        )));
    }
    if let Some(existing) = state.get(&AccountKey(&name))? {
        return Ok(Decision::reject(format!(
            "AccountRegistered {}: account {name} already exists ({:?})",
            e.envelope.event_id,
            AccountStatus::from(existing.status)
        )));
    }
    let now = e.envelope.event_time;
    let mut d = Decision::apply();
    if cfg.activate_on_register {
        save(
            state,
            &mut d,
            &name,
            &Account::new(Status::Active, now, now),
        )?;
        let moved = (AccountStatus::Pending, AccountStatus::Active);
        changed(cfg, &mut d, &e.envelope, &name, moved, "registered".into());
    } else {
        save(
            state,
            &mut d,
            &name,
            &Account::new(Status::Pending, now, now),
        )?;
        // Not a transition, but the LMTP server must know the address.
        let pending = status_changed(
            cfg,
            &e.envelope,
            &name,
            (AccountStatus::Pending, AccountStatus::Pending),
            "registered".into(),
        );
        d.emit(&cfg.status_topic, name.as_str(), pending);
    }
    Ok(d)
}

/// The tombstone is a fact: whatever the status, the account is gone. Its
/// record goes too, so the address may be registered again.
fn deleted(
    cfg: &LifecycleConfig,
    state: &StateView<'_>,
    e: &AccountDeleted,
) -> Result<Decision, StateError> {
    let name = e.account.to_ascii_lowercase();
    let Some(current) = state.get(&AccountKey(&name))? else {
        return Ok(Decision::ignore());
    };
    let mut d = Decision::apply();
    d.delete(&AccountKey(&name));
    let moved = (current.status.into(), AccountStatus::Deleted);
    changed(cfg, &mut d, &e.envelope, &name, moved, "deleted".into());
    Ok(d)
}

/// Write an account's record and lower the partition's watermark if its
/// timer is now the earliest. Every event-driven write goes through here.
fn save(
    state: &StateView<'_>,
    d: &mut Decision,
    name: &str,
    account: &Account,
) -> Result<(), StateError> {
    d.put(&AccountKey(name), account);
    let mut earliest = state.get(&EarliestKey)?.unwrap_or(Earliest::NONE);
    if earliest.include(account) {
        d.put(&EarliestKey, &earliest);
    }
    Ok(())
}

/// The tick pass at the tick's event time: when the watermark says a timer
/// may be due, scan the partition's accounts, fire every due timer (one
/// transition per account per tick, so an inactive account always gets
/// its full grace period after the notice) and recompute the watermark.
pub fn tick(
    cfg: &LifecycleConfig,
    state: &StateView<'_>,
    cause: &Envelope,
) -> Result<Decision, StateError> {
    let now = cause.event_time;
    let earliest = state.get(&EarliestKey)?.unwrap_or(Earliest::NONE);
    if earliest.due(cfg) > now {
        return Ok(Decision::ignore());
    }
    let mut d = Decision::apply();
    let mut next = Earliest::NONE;
    for (key, account) in state.scan::<AccountKey>()? {
        let account = match fire(cfg, &account, now) {
            Change::Move(fired, reason) => {
                let name = account_name(&key)?;
                d.put(&AccountKey(name), &fired);
                let moved = (account.status.into(), fired.status.into());
                changed(cfg, &mut d, cause, name, moved, reason);
                if fired.status == Status::Inactive {
                    d.emit(
                        &cfg.notify_topic,
                        name,
                        deactivated_notice(cfg, cause, name),
                    );
                }
                fired
            }
            Change::None | Change::Quiet(_) => account,
        };
        next.include(&account);
    }
    d.put(&EarliestKey, &next);
    Ok(d)
}

/// The timer rules: active → inactive once the inactivity threshold is
/// reached, inactive → deleting once the grace period has passed.
fn fire(cfg: &LifecycleConfig, a: &Account, now: i64) -> Change {
    if a.due(cfg).is_none_or(|due| due > now) {
        return Change::None;
    }
    match a.status {
        Status::Active => Change::Move(
            Account::new(Status::Inactive, now, a.clock),
            format!("no-login-since:{}", date(a.clock)),
        ),
        Status::Inactive => Change::Move(
            Account::new(Status::Deleting, now, a.clock),
            "grace-expired".into(),
        ),
        Status::Pending | Status::Deleting | Status::Blocked => Change::None,
    }
}

fn account_name(key: &[u8]) -> Result<&str, StateError> {
    std::str::from_utf8(key).map_err(|e| StateError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        source: ValueError::from(e).in_part("account name"),
    })
}

/// Tell the owner the account is inactive and when its deletion starts.
fn deactivated_notice(
    cfg: &LifecycleConfig,
    cause: &Envelope,
    name: &str,
) -> NotificationRequested {
    NotificationRequested {
        envelope: Envelope::caused_by(cause, NAME),
        to: name.to_string(),
        template: "deactivated".into(),
        account: Some(name.to_string()),
        params: BTreeMap::from([
            (
                "respond_within_hours".to_string(),
                cfg.grace_period_hours.to_string(),
            ),
            (
                "deletion_after".to_string(),
                date_time(cfg.deleting_at(cause.event_time)),
            ),
        ]),
    }
}

/// Announce one transition on the events topic, keyed by account, with a
/// copy on the status topic.
fn changed(
    cfg: &LifecycleConfig,
    d: &mut Decision,
    cause: &Envelope,
    name: &str,
    (from, to): (AccountStatus, AccountStatus),
    reason: String,
) {
    let event = status_changed(cfg, cause, name, (from, to), reason);
    metrics::counter!(mailfleet_runtime::metrics::LIFECYCLE_TRANSITIONS,
        "to" => format!("{to:?}").to_lowercase())
    .increment(1);
    d.emit(&cfg.status_topic, name, event.clone());
    d.emit(&cfg.events_topic, name, event);
}

fn status_changed(
    cfg: &LifecycleConfig,
    cause: &Envelope,
    name: &str,
    (from, to): (AccountStatus, AccountStatus),
    reason: String,
) -> AccountStatusChanged {
    let settings_hash = cfg.settings_hash.clone();
    AccountStatusChanged {
        envelope: Envelope::caused_by(cause, NAME),
        account: name.to_string(),
        from,
        to,
        reason,
        settings_hash,
    }
}

/// State for accounts as (key, value) changes without a partition, with
/// the watermark that covers them: for benchmarks and tests that load N
/// accounts into an [`mailfleet_runtime::Overlay`] (extend it) or a
/// [`mailfleet_runtime::Store`] (prefix each key with
/// [`mailfleet_runtime::partition_key`]) and then run one [`tick`].
pub fn seed<'a>(
    accounts: impl IntoIterator<Item = (&'a str, Account)>,
) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let mut earliest = Earliest::NONE;
    let mut out: Vec<_> = accounts
        .into_iter()
        .map(|(name, account)| {
            earliest.include(&account);
            let key = AccountKey(&name.to_ascii_lowercase()).to_key_bytes();
            (key, Some(account.to_bytes()))
        })
        .collect();
    out.push((EarliestKey.to_key_bytes(), Some(earliest.to_bytes())));
    out
}

#[cfg(test)]
mod tests;
