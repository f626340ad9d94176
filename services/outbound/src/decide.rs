//! The outbound decider: one account's windows and status against its
//! plan's limits, with the event's time as "now".
//!
//! - `SubmissionAttempted` → `SubmissionDecided` (PASS, or DEFER naming
//!   the limit); a passed attempt counts one recipient, a deferred one
//!   counts towards the abuse threshold and nothing else;
//! - `MessageSubmitted` → its message and bytes into the day window when
//!   relayed; a virus blocks the account;
//! - `AccountRegistered`, `PlanChanged` → the plan; `AccountBlocked`,
//!   `AccountUnblocked` → the block (an unblock also forgets the
//!   deferrals, so the abuse count starts over); `AccountDeleted` → the
//!   account's state goes;
//! - `ClockTicked` → idle windows and old event ids are dropped.

use mailfleet_events::{
    accounts::{
        AccountBlocked, AccountDeleted, AccountRegistered, AccountUnblocked, BlockReason,
        PlanChanged,
    },
    clock::ClockTicked,
    config::ConfigChanged,
    mail::ScanVerdict,
    submission::{
        LimitAction, MessageSubmitted, SubmissionAttempted, SubmissionDecided, SubmitAction,
    },
    Envelope,
};
use mailfleet_runtime::{dedup, Decision, StateError, StateView};

use crate::{
    config::{OutboundConfig, PlanLimits, MAX_TRACKED_RECIPIENTS},
    metrics,
    outputs::{self, Abuse},
    state::{AccountKey, AccountRow, WindowsKey},
    windows::{recipient_hash, Figures, Windows},
    NAME,
};

mailfleet_runtime::inputs! {
    /// What the outbound consumer reads from its three topics.
    pub enum OutboundInput {
        Attempt(SubmissionAttempted),
        Submitted(MessageSubmitted),
        Registered(AccountRegistered),
        Plan(PlanChanged),
        Blocked(AccountBlocked),
        Unblocked(AccountUnblocked),
        Deleted(AccountDeleted),
        Tick(ClockTicked),
        /// The settings in force from here on (handled by the consumer).
        Config(ConfigChanged),
        _ => Other,
    }
}

/// How long a `MessageSubmitted` id is remembered to drop a re-sent copy:
/// longer than the day window it counts in.
pub const DEDUP_WINDOW_MS: i64 = 2 * 86_400_000;

/// The limit that deferred an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    RecipientsPerHour,
    DistinctRecipientsPerDay,
    MessagesPerDay,
    BytesPerDay,
    /// The account is blocked: nothing passes until it is unblocked.
    Blocked,
}

impl Limit {
    /// Its name in `SubmissionDecided.limit` and the metric label.
    pub fn name(self) -> &'static str {
        match self {
            Limit::RecipientsPerHour => "recipients_per_hour",
            Limit::DistinctRecipientsPerDay => "distinct_recipients_per_day",
            Limit::MessagesPerDay => "messages_per_day",
            Limit::BytesPerDay => "bytes_per_day",
            Limit::Blocked => "blocked",
        }
    }

    /// The reply text after `DEFER 4.7.1`: the limit, its value and window.
    fn text(self, limits: &PlanLimits, account: &str) -> String {
        let (what, value) = match self {
            Limit::RecipientsPerHour => ("recipients per hour", limits.recipients_per_hour.into()),
            Limit::DistinctRecipientsPerDay => (
                "distinct recipients per day",
                limits.distinct_recipients_per_day.into(),
            ),
            Limit::MessagesPerDay => ("messages per day", limits.messages_per_day.into()),
            Limit::BytesPerDay => ("bytes per day", limits.bytes_per_day),
            Limit::Blocked => return format!("account {account} is blocked"),
        };
        format!("{what} limit {value} reached for {account}")
    }
}

/// The limit an attempt of `size` declared bytes to recipient `hash`
/// would cross, given the windows' `figures` (first match, in the order
/// of the checks); `None` when it is within all of them. 0 is no limit.
pub fn limit_reached(
    limits: &PlanLimits,
    figures: &Figures,
    known: bool,
    size: i64,
) -> Option<Limit> {
    let at =
        |value: i64, limit: u64| limit > 0 && value >= i64::try_from(limit).unwrap_or(i64::MAX);
    if at(
        figures.recipients_last_hour,
        limits.recipients_per_hour.into(),
    ) {
        return Some(Limit::RecipientsPerHour);
    }
    if !known
        && at(
            figures.distinct_recipients_last_day,
            limits.distinct_recipients_per_day.into(),
        )
    {
        return Some(Limit::DistinctRecipientsPerDay);
    }
    if at(figures.messages_last_day, limits.messages_per_day.into()) {
        return Some(Limit::MessagesPerDay);
    }
    // The declared size pre-empts the bytes limit: a message that would
    // cross it is deferred before its data is sent.
    let bytes = figures.bytes_last_day.saturating_add(size.max(0));
    let over = size > 0 && bytes > i64::try_from(limits.bytes_per_day).unwrap_or(i64::MAX);
    if limits.bytes_per_day > 0 && (over || at(figures.bytes_last_day, limits.bytes_per_day)) {
        return Some(Limit::BytesPerDay);
    }
    None
}

/// One account's state as read for an event, and whether it changed.
struct Account {
    name: String,
    row: AccountRow,
    windows: Windows,
}

impl Account {
    fn load(state: &StateView<'_>, account: &str) -> Result<Account, StateError> {
        let name = account.trim().to_ascii_lowercase();
        Ok(Account {
            row: state.get(&AccountKey(&name))?.unwrap_or_default(),
            windows: state.get(&WindowsKey(&name))?.unwrap_or_default(),
            name,
        })
    }

    /// The plan in force and its limits: the account's, or the default
    /// plan's when it has none or its plan is no longer configured.
    fn limits<'c>(&self, cfg: &'c OutboundConfig) -> Option<(&'c str, &'c PlanLimits)> {
        cfg.limits(self.row.plan.as_deref())
            .or_else(|| cfg.limits(None))
    }

    fn save_windows(&self, d: &mut Decision) {
        d.put(&WindowsKey(&self.name), &self.windows);
    }

    fn save_row(&self, d: &mut Decision) {
        if self.row == AccountRow::default() {
            d.delete(&AccountKey(&self.name));
        } else {
            d.put(&AccountKey(&self.name), &self.row);
        }
    }
}

/// Decide one input with the settings in force (`cfg`).
pub fn decide(
    cfg: &OutboundConfig,
    state: &StateView<'_>,
    input: &OutboundInput,
) -> Result<Decision, StateError> {
    use OutboundInput as I;
    match input {
        I::Attempt(a) => attempt(cfg, state, a),
        I::Submitted(m) => submitted(cfg, state, m),
        I::Registered(e) => set_plan(
            cfg,
            state,
            &e.account,
            &e.plan,
            "AccountRegistered",
            &e.envelope,
        ),
        I::Plan(e) => set_plan(cfg, state, &e.account, &e.plan, "PlanChanged", &e.envelope),
        I::Blocked(e) => set_blocked(state, &e.account, true),
        I::Unblocked(e) => set_blocked(state, &e.account, false),
        I::Deleted(e) => {
            let name = e.account.trim().to_ascii_lowercase();
            let mut d = Decision::apply();
            d.delete(&AccountKey(&name)).delete(&WindowsKey(&name));
            Ok(d)
        }
        I::Tick(t) => tick(state, t.envelope.event_time),
        I::Config(_) | I::Other(_) => Ok(Decision::ignore()),
    }
}

fn attempt(
    cfg: &OutboundConfig,
    state: &StateView<'_>,
    a: &SubmissionAttempted,
) -> Result<Decision, StateError> {
    if let Some(reason) = attempt_problem(a) {
        return Ok(Decision::reject(reason));
    }
    let mut acct = Account::load(state, &a.account)?;
    let Some((plan, limits)) = acct.limits(cfg) else {
        return Ok(Decision::reject(format!(
            "SubmissionAttempted {}: no limits for plan {:?} nor the default plan",
            a.envelope.event_id, acct.row.plan
        )));
    };
    let limit = count_attempt(&mut acct, limits, a);
    let figures = acct.windows.figures();
    let mut d = Decision::apply();
    let reply = match limit {
        None => "DUNNO".to_string(),
        Some(l) => format!("DEFER 4.7.1 {}", l.text(limits, &acct.name)),
    };
    metrics::decided(limit);
    d.emit(
        &cfg.decisions_topic,
        acct.name.as_bytes(),
        SubmissionDecided {
            envelope: Envelope::caused_by(&a.envelope, NAME),
            account: acct.name.clone(),
            recipient: a.recipient.clone(),
            action: if limit.is_some() {
                LimitAction::Defer
            } else {
                LimitAction::Pass
            },
            limit: limit.map(|l| l.name().to_string()),
            reply,
            recipients_last_hour: figures.recipients_last_hour,
            distinct_recipients_last_day: figures.distinct_recipients_last_day,
            messages_last_day: figures.messages_last_day,
            bytes_last_day: figures.bytes_last_day,
            plan: plan.to_string(),
            policy_host: a.policy_host.clone(),
            settings_hash: cfg.settings_hash.clone(),
        },
    );
    if limit.is_some_and(|l| l != Limit::Blocked) {
        check_abuse(cfg, limits, &mut acct, &figures, &a.envelope, &mut d);
    }
    acct.save_windows(&mut d);
    Ok(d)
}

/// Why an attempt can never be decided, if it cannot: the dead-letter
/// reason.
fn attempt_problem(a: &SubmissionAttempted) -> Option<String> {
    let id = &a.envelope.event_id;
    if a.account.trim().is_empty() {
        return Some(format!(
            "SubmissionAttempted {id}: account {:?} is empty",
            a.account
        ));
    }
    if a.size < 0 {
        return Some(format!(
            "SubmissionAttempted {id}: size {} is negative",
            a.size
        ));
    }
    None
}

/// Judge one attempt against the account's windows at its event time,
/// and count it in them: as passed (a recipient more), or as deferred.
/// The limit it reaches, if any (a blocked account's is
/// [`Limit::Blocked`], which counts nothing).
fn count_attempt(
    acct: &mut Account,
    limits: &PlanLimits,
    a: &SubmissionAttempted,
) -> Option<Limit> {
    let now = a.envelope.event_time;
    acct.windows.prune(now);
    let hash = recipient_hash(&a.recipient);
    let limit = if acct.row.blocked {
        Some(Limit::Blocked)
    } else {
        let known = acct.windows.knows(hash);
        limit_reached(limits, &acct.windows.figures(), known, a.size)
    };
    match limit {
        None => {
            let max = match limits.distinct_recipients_per_day {
                0 => MAX_TRACKED_RECIPIENTS,
                n => n.min(MAX_TRACKED_RECIPIENTS),
            };
            acct.windows.pass(hash, now, max as usize);
        }
        Some(Limit::Blocked) => {}
        Some(_) => acct.windows.defer(now),
    }
    limit
}

fn submitted(
    cfg: &OutboundConfig,
    state: &StateView<'_>,
    m: &MessageSubmitted,
) -> Result<Decision, StateError> {
    let id = &m.envelope.event_id;
    if m.account.trim().is_empty() {
        return Ok(Decision::reject(format!(
            "MessageSubmitted {id}: account {:?} is empty",
            m.account
        )));
    }
    if m.size < 0 {
        return Ok(Decision::reject(format!(
            "MessageSubmitted {id}: size {} is negative",
            m.size
        )));
    }
    if dedup::is_duplicate(state, &m.envelope)? {
        return Ok(Decision::ignore());
    }
    let mut acct = Account::load(state, &m.account)?;
    let mut d = Decision::apply();
    dedup::remember(state, &mut d, &m.envelope)?;
    let now = m.envelope.event_time;
    acct.windows.prune(now);
    if m.action == SubmitAction::Accepted {
        acct.windows.relayed(m.size, now);
    }
    if m.verdict == ScanVerdict::Infected {
        // The account proved by its SASL login sent a virus: blocked at
        // once, for every such message (the alert names each one).
        for emit in outputs::virus(cfg, &acct.name, m) {
            d.outputs.push(emit);
        }
        metrics::blocked(BlockReason::Virus);
        acct.row.blocked = true;
        acct.save_row(&mut d);
    } else if let Some((_, limits)) = acct.limits(cfg) {
        let figures = acct.windows.figures();
        check_abuse(cfg, limits, &mut acct, &figures, &m.envelope, &mut d);
    }
    acct.save_windows(&mut d);
    Ok(d)
}

/// Block an account that is not blocked yet when its figures show
/// sustained abuse: too many deferrals in the hour, or messages far over
/// the daily limit.
fn check_abuse(
    cfg: &OutboundConfig,
    limits: &PlanLimits,
    acct: &mut Account,
    figures: &Figures,
    cause: &Envelope,
    d: &mut Decision,
) {
    if acct.row.blocked {
        return;
    }
    let deferrals = i64::from(cfg.abuse_deferrals_per_hour);
    let daily = i64::from(cfg.abuse_daily_messages_factor) * i64::from(limits.messages_per_day);
    let trigger = if deferrals > 0 && figures.deferrals_last_hour >= deferrals {
        Abuse::Deferrals(cfg.abuse_deferrals_per_hour)
    } else if daily > 0 && figures.messages_last_day >= daily {
        Abuse::Messages(cfg.abuse_daily_messages_factor, limits.messages_per_day)
    } else {
        return;
    };
    for emit in outputs::abuse(cfg, &acct.name, trigger, figures, cause) {
        d.outputs.push(emit);
    }
    metrics::blocked(BlockReason::Abuse);
    acct.row.blocked = true;
    acct.save_row(d);
}

fn set_plan(
    cfg: &OutboundConfig,
    state: &StateView<'_>,
    account: &str,
    plan: &str,
    event: &str,
    envelope: &Envelope,
) -> Result<Decision, StateError> {
    if !cfg.plans.contains_key(plan) {
        return Ok(Decision::reject(format!(
            "{event} {}: plan {plan:?} has no limits in consumers.outbound.plans ({:?})",
            envelope.event_id,
            cfg.plans.keys().collect::<Vec<_>>()
        )));
    }
    let mut acct = Account::load(state, account)?;
    if acct.row.plan.as_deref() == Some(plan) {
        return Ok(Decision::ignore());
    }
    acct.row.plan = Some(plan.to_string());
    let mut d = Decision::apply();
    acct.save_row(&mut d);
    Ok(d)
}

fn set_blocked(
    state: &StateView<'_>,
    account: &str,
    blocked: bool,
) -> Result<Decision, StateError> {
    let mut acct = Account::load(state, account)?;
    let mut d = Decision::apply();
    if !blocked && !acct.windows.deferrals.is_empty() {
        // Cleared by an admin: the abuse count starts over.
        acct.windows.clear_deferrals();
        acct.save_windows(&mut d);
    }
    if acct.row.blocked == blocked && d.changes.is_empty() {
        return Ok(Decision::ignore());
    }
    acct.row.blocked = blocked;
    acct.save_row(&mut d);
    Ok(d)
}

/// On a tick: drop the windows of accounts with nothing left in them, and
/// forget `MessageSubmitted` ids older than [`DEDUP_WINDOW_MS`].
fn tick(state: &StateView<'_>, now: i64) -> Result<Decision, StateError> {
    let mut d = Decision::apply();
    for (key, windows) in state.scan::<WindowsKey>()? {
        if windows.is_idle(now) {
            d.delete(&WindowsKey(&String::from_utf8_lossy(&key)));
        }
    }
    dedup::forget_older(state, &mut d, now, DEDUP_WINDOW_MS)?;
    Ok(d)
}

#[cfg(test)]
mod tests;
