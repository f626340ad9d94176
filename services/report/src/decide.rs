//! What each event adds to the month's figures.

use std::collections::BTreeMap;

use mailfleet_events::{
    accounts::{
        AccountBlocked, AccountRegistered, AccountStatusChanged, LoginFailed, LoginRecorded,
        MigrationCompleted, PlanChanged, UsageChanged,
    },
    clock::ClockTicked,
    greylist::{GreylistDecided, GreylistReason, GreylistVerdict},
    mail::{
        MessageQuarantined, MessageRejected, MessageScanned, MessageStored, MessagesPurged,
        ScanVerdict,
    },
    notify::NotificationRequested,
    runtime::DeadLetter,
    submission::{LimitAction, MessageSubmitted, SubmissionDecided, SubmitAction},
};
use mailfleet_runtime::{dedup, Decision, Decode, StateError, StateKey, StateView};

use crate::{
    month::Month,
    names as n,
    state::{AccountKey, AccountRow, ChangeKey, CountKey, MonthKey},
};

mailfleet_runtime::inputs! {
    /// The events the reporter counts; anything else on its topics is ignored.
    pub enum ReporterInput {
        Registered(AccountRegistered),
        Login(LoginRecorded),
        LoginFailed(LoginFailed),
        Status(AccountStatusChanged),
        Plan(PlanChanged),
        Usage(UsageChanged),
        Migrated(MigrationCompleted),
        Greylist(GreylistDecided),
        Scanned(MessageScanned),
        Stored(MessageStored),
        Rejected(MessageRejected),
        Quarantined(MessageQuarantined),
        Purged(MessagesPurged),
        Notification(NotificationRequested),
        DeadLetter(DeadLetter),
        Blocked(AccountBlocked),
        Submitted(MessageSubmitted),
        SubmissionDecided(SubmissionDecided),
        /// The clock's ticks (on `accounts.events`): they forget old event ids.
        Tick(ClockTicked),
        _ => Other,
    }
}

/// A label from an enum symbol: `WHITELISTED_CLIENT` → `whitelisted-client`.
pub fn label<T: std::fmt::Debug>(v: &T) -> String {
    let debug = format!("{v:?}");
    let mut out = String::new();
    for (i, c) in debug.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('-');
        }
        out.extend(c.to_lowercase());
    }
    out
}

/// How long an event id is remembered, to drop a duplicate of it: an
/// upstream consumer sends an event again only after a crash, within
/// minutes of the first copy. Counted from when the reporter read it.
pub const DEDUP_WINDOW_MS: i64 = 7 * 24 * 3_600_000;

/// The plan an account without one is counted under.
pub const NO_PLAN: &str = "unknown";

/// The changes of one event, read through the state and kept in order.
struct Tx<'s, 'v> {
    state: &'s StateView<'v>,
    month: Month,
    values: BTreeMap<(u8, String, String), i64>,
    decision: Decision,
}

impl<'s, 'v> Tx<'s, 'v> {
    fn new(state: &'s StateView<'v>, month: Month) -> Self {
        Tx {
            state,
            month,
            values: BTreeMap::new(),
            decision: Decision::apply(),
        }
    }

    /// Count `by` in this event's month.
    fn count(&mut self, name: &str, label: &str, by: i64) -> Result<(), StateError> {
        self.add::<{ CountKey::PREFIX }>(name, label, by)
    }

    /// Move a level by `delta` in this event's month.
    fn level(&mut self, name: &str, label: &str, delta: i64) -> Result<(), StateError> {
        if delta == 0 {
            return Ok(());
        }
        self.add::<{ ChangeKey::PREFIX }>(name, label, delta)
    }

    /// Add `by` to the month's figure in table `P`, read through this
    /// event's earlier changes.
    fn add<const P: u8>(&mut self, name: &str, label: &str, by: i64) -> Result<(), StateError> {
        let key = MonthKey::<P> {
            month: self.month,
            name,
            label,
        };
        let slot = (P, name.to_string(), label.to_string());
        let now = match self.values.get(&slot) {
            Some(v) => *v,
            None => self.state.get(&key)?.unwrap_or(0),
        } + by;
        self.values.insert(slot, now);
        self.decision.put(&key, &now);
        Ok(())
    }
}

/// Apply one event to the figures of its month (its event time, UTC).
pub fn decide(state: &StateView<'_>, input: &ReporterInput) -> Result<Decision, StateError> {
    let envelope = input.envelope();
    match input {
        ReporterInput::Other(_) => return Ok(Decision::ignore()),
        ReporterInput::Tick(tick) => return forget(state, tick),
        _ => {}
    }
    if let Some(why) = impossible(input) {
        return Ok(Decision::reject(format!(
            "event {}: {why}",
            envelope.event_id
        )));
    }
    if dedup::is_duplicate(state, envelope)? {
        return Ok(Decision::ignore());
    }
    let mut tx = Tx::new(state, Month::of_ms(envelope.event_time));
    add(&mut tx, input)?;
    let mut decision = tx.decision;
    dedup::remember(state, &mut decision, envelope)?;
    Ok(decision)
}

/// A value no writer sends (a negative size, count or byte total): set
/// aside with its reason, as the writers' other readers do, instead of
/// moving a month's figures by it.
fn impossible(input: &ReporterInput) -> Option<String> {
    use ReporterInput as I;
    let negative = |what: &str, v: i64| (v < 0).then(|| format!("{what} {v} is negative"));
    match input {
        I::Stored(e) => negative("size", e.size),
        I::Usage(e) => {
            negative("used_bytes", e.used_bytes).or_else(|| negative("messages", e.messages))
        }
        I::Purged(e) => negative("count", e.count).or_else(|| negative("bytes", e.bytes)),
        I::Submitted(e) => negative("size", e.size),
        _ => None,
    }
}

/// A tick: forget the event ids read longer ago than the dedup window.
fn forget(state: &StateView<'_>, tick: &ClockTicked) -> Result<Decision, StateError> {
    let mut decision = Decision::apply();
    dedup::forget_older(
        state,
        &mut decision,
        tick.envelope.event_time,
        DEDUP_WINDOW_MS,
    )?;
    Ok(decision)
}

/// What one event, not seen before, adds to the figures.
fn add(tx: &mut Tx<'_, '_>, input: &ReporterInput) -> Result<(), StateError> {
    use ReporterInput as I;
    match input {
        I::Registered(e) => registered(tx, e)?,
        I::Login(e) => tx.count(n::LOGINS, &label(&e.channel), 1)?,
        I::LoginFailed(e) => tx.count(n::LOGIN_FAILURES, &e.reason, 1)?,
        I::Status(e) => status_changed(tx, e)?,
        I::Plan(e) => plan_changed(tx, e)?,
        I::Usage(e) => usage_changed(tx, e)?,
        I::Migrated(_) => tx.count(n::MIGRATIONS, "", 1)?,
        I::Greylist(e) => tx.count(n::GREYLIST, greylist_outcome(e), 1)?,
        I::Scanned(e) => scanned(tx, e)?,
        I::Stored(e) => {
            tx.count(n::DELIVERED, "", 1)?;
            tx.count(n::DELIVERED_BYTES, "", e.size)?;
        }
        I::Rejected(_) => tx.count(n::REJECTED_OVER_QUOTA, "", 1)?,
        I::Quarantined(e) => tx.count(n::QUARANTINED, &label(&e.reason), 1)?,
        I::Purged(e) => {
            tx.count(n::PURGES, &e.folder, 1)?;
            tx.count(n::PURGED_MESSAGES, &e.folder, e.count)?;
            tx.count(n::PURGED_BYTES, &e.folder, e.bytes)?;
        }
        I::Notification(e) => tx.count(n::NOTIFICATIONS, &e.template, 1)?,
        I::DeadLetter(e) => tx.count(n::DEAD_LETTERS, &e.consumer, 1)?,
        I::Blocked(e) => tx.count(n::BLOCKS, &label(&e.reason), 1)?,
        I::Submitted(e) => submitted(tx, e)?,
        I::SubmissionDecided(e) if e.action == LimitAction::Defer => {
            let limit = e.limit.as_deref().unwrap_or("unknown");
            tx.count(n::SUBMISSION_DEFERRALS, limit, 1)?;
        }
        I::SubmissionDecided(_) => {}
        I::Tick(_) | I::Other(_) => {}
    }
    Ok(())
}

/// A registration: counted, and the account's usage moved to its plan.
fn registered(tx: &mut Tx<'_, '_>, e: &AccountRegistered) -> Result<(), StateError> {
    tx.count(n::REGISTRATIONS, "", 1)?;
    let mut row = account(tx.state, &e.account)?;
    move_usage(tx, &row, &e.plan)?;
    row.plan = e.plan.clone();
    tx.decision.put(&AccountKey(&e.account), &row);
    Ok(())
}

/// A status change: the account moves between the status levels.
fn status_changed(tx: &mut Tx<'_, '_>, e: &AccountStatusChanged) -> Result<(), StateError> {
    let mut row = account(tx.state, &e.account)?;
    let to = label(&e.to);
    if row.status != to {
        if !row.status.is_empty() {
            tx.level(n::ACCOUNTS, &row.status, -1)?;
        }
        tx.level(n::ACCOUNTS, &to, 1)?;
    }
    tx.count(n::STATUS_CHANGES, &to, 1)?;
    row.status = to;
    tx.decision.put(&AccountKey(&e.account), &row);
    Ok(())
}

/// A plan change: counted, and the account's usage moved to the new plan.
fn plan_changed(tx: &mut Tx<'_, '_>, e: &PlanChanged) -> Result<(), StateError> {
    let mut row = account(tx.state, &e.account)?;
    tx.count(n::PLAN_CHANGES, &e.plan, 1)?;
    move_usage(tx, &row, &e.plan)?;
    row.plan = e.plan.clone();
    tx.decision.put(&AccountKey(&e.account), &row);
    Ok(())
}

/// New usage: the plan's storage and message levels move by the difference.
fn usage_changed(tx: &mut Tx<'_, '_>, e: &UsageChanged) -> Result<(), StateError> {
    let mut row = account(tx.state, &e.account)?;
    let plan = plan_of(&row).to_string();
    tx.level(n::STORAGE_BYTES, &plan, e.used_bytes - row.used_bytes)?;
    tx.level(n::INDEX_MESSAGES, &plan, e.messages - row.messages)?;
    row.used_bytes = e.used_bytes;
    row.messages = e.messages;
    tx.decision.put(&AccountKey(&e.account), &row);
    Ok(())
}

/// The greylist figure's label: whitelisting first, then the verdict.
fn greylist_outcome(e: &GreylistDecided) -> &'static str {
    match (e.verdict, e.reason) {
        (_, GreylistReason::WhitelistedClient | GreylistReason::WhitelistedRecipient) => {
            "whitelisted"
        }
        (_, GreylistReason::AutoWhitelisted) => "auto-whitelisted",
        (GreylistVerdict::Defer, _) => "deferred",
        (GreylistVerdict::Pass, _) => "passed",
        (GreylistVerdict::Unknown, _) => "unknown",
    }
}

/// A submitted message: its outcome, its verdict, and the bytes relayed.
fn submitted(tx: &mut Tx<'_, '_>, e: &MessageSubmitted) -> Result<(), StateError> {
    let outcome = match e.action {
        SubmitAction::Accepted => "accepted",
        SubmitAction::Rejected => "rejected",
        SubmitAction::Unknown => "unknown",
    };
    tx.count(n::SUBMITTED, outcome, 1)?;
    tx.count(n::SUBMITTED_SCANS, &label(&e.verdict), 1)?;
    if e.action == SubmitAction::Accepted {
        tx.count(n::SUBMITTED_BYTES, "", e.size)?;
    }
    Ok(())
}

/// A verdict, and rspamd's say on it when it was asked.
fn scanned(tx: &mut Tx<'_, '_>, e: &MessageScanned) -> Result<(), StateError> {
    tx.count(n::SCANS, &label(&e.verdict), 1)?;
    let spam = match (&e.spam, &e.spam_error) {
        (_, Some(_)) => "unscored",
        (None, None) => return Ok(()),
        (Some(_), None) if e.verdict == ScanVerdict::Spam => "quarantined",
        (Some(s), None) if s.flagged => "spam-folder",
        (Some(_), None) => "ham",
    };
    tx.count(n::SPAM, spam, 1)?;
    if let (Some(result), "quarantined" | "spam-folder") = (&e.spam, spam) {
        for symbol in &result.symbols {
            tx.count(n::SPAM_SYMBOLS, &symbol.name, 1)?;
        }
    }
    Ok(())
}

fn account(state: &StateView<'_>, account: &str) -> Result<AccountRow, StateError> {
    Ok(state.get(&AccountKey(account))?.unwrap_or_default())
}

fn plan_of(row: &AccountRow) -> &str {
    if row.plan.is_empty() {
        NO_PLAN
    } else {
        &row.plan
    }
}

/// The account's usage leaves its old plan's levels for `to`'s.
fn move_usage(tx: &mut Tx<'_, '_>, row: &AccountRow, to: &str) -> Result<(), StateError> {
    let from = plan_of(row).to_string();
    if from == to {
        return Ok(());
    }
    tx.level(n::STORAGE_BYTES, &from, -row.used_bytes)?;
    tx.level(n::STORAGE_BYTES, to, row.used_bytes)?;
    tx.level(n::INDEX_MESSAGES, &from, -row.messages)?;
    tx.level(n::INDEX_MESSAGES, to, row.messages)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use mailfleet_events::{
        accounts::{AccountStatus, BlockReason},
        mail::{QuarantineReason, RejectReason, ScanVerdict},
        Envelope,
    };
    use mailfleet_runtime::{Overlay, StateValue};

    use super::*;

    /// Apply events in order to an in-memory state; return it.
    fn apply(events: Vec<ReporterInput>) -> Overlay {
        let mut overlay = Overlay::default();
        for e in events {
            let d = decide(&StateView::in_memory(&overlay), &e).unwrap();
            overlay.extend(d.changes);
        }
        overlay
    }

    fn value<K: StateKey<Value = i64>>(o: &Overlay, key: K) -> i64 {
        StateView::in_memory(o).get(&key).unwrap().unwrap_or(0)
    }

    fn count(o: &Overlay, month: &str, name: &str, label: &str) -> i64 {
        let month = Month::parse(month).unwrap();
        value(o, CountKey { month, name, label })
    }

    fn env(id: &str, at: i64) -> Envelope {
        Envelope::new(id, at, "test")
    }

    const OCT: i64 = 1_791_590_400_000;

    fn status(id: &str, to: AccountStatus) -> ReporterInput {
        ReporterInput::Status(AccountStatusChanged {
            envelope: env(id, OCT),
            account: "a@x.test".into(),
            from: AccountStatus::Unknown,
            to,
            reason: "test".into(),
            settings_hash: None,
        })
    }

    #[test]
    fn a_status_change_moves_one_account_between_levels() {
        let o = apply(vec![
            status("s1", AccountStatus::Active),
            status("s2", AccountStatus::Inactive),
            status("s3", AccountStatus::Active),
            status("s4", AccountStatus::Deleted),
        ]);
        let level = |label| {
            value(
                &o,
                ChangeKey {
                    month: Month::of_ms(OCT),
                    name: n::ACCOUNTS,
                    label,
                },
            )
        };
        assert_eq!(
            (level("active"), level("inactive"), level("deleted")),
            (0, 0, 1)
        );
        assert_eq!(count(&o, "2026-10", n::STATUS_CHANGES, "active"), 2);
    }

    /// The figures an in-memory state holds, as a store would give them.
    fn stored(o: &Overlay) -> crate::Stored {
        let mut out = crate::Stored::default();
        for (key, value) in o {
            let (Some((&prefix, body)), Some(value)) = (key.split_first(), value) else {
                continue;
            };
            let table = match prefix {
                CountKey::PREFIX => &mut out.counts,
                ChangeKey::PREFIX => &mut out.changes,
                _ => continue,
            };
            let [month, name, label] = crate::state::parts(body).try_into().unwrap();
            let v = i64::from_bytes(value).unwrap();
            table.push((0, Month::parse(&month).unwrap(), name, label, v));
        }
        out
    }

    fn status_of(id: &str, account: &str, at: i64, to: AccountStatus) -> ReporterInput {
        ReporterInput::Status(AccountStatusChanged {
            envelope: env(id, at),
            account: account.into(),
            from: AccountStatus::Unknown,
            to,
            reason: "test".into(),
            settings_hash: None,
        })
    }

    #[test]
    fn an_event_of_an_earlier_month_that_arrives_late_revises_that_month_and_the_ones_after() {
        const SEP: i64 = OCT - 30 * 86_400_000;
        const NOV: i64 = OCT + 31 * 86_400_000;
        let event = |i: usize| match i {
            0 => status_of("b1", "b@x.test", SEP, AccountStatus::Active),
            1 => status_of("a1", "a@x.test", OCT, AccountStatus::Active),
            _ => status_of("b2", "b@x.test", NOV, AccountStatus::Inactive),
        };
        let nov = Month::of_ms(NOV);
        // In event time, then b's September change arriving after a's October one.
        for order in [[0, 1, 2], [1, 0, 2]] {
            let r = crate::report(&stored(&apply(order.map(event).into())), nov, 3);
            let by_month: Vec<(i64, i64)> = r
                .months
                .iter()
                .map(|f| {
                    (
                        f.level(n::ACCOUNTS, "active"),
                        f.level(n::ACCOUNTS, "inactive"),
                    )
                })
                .collect();
            assert_eq!(by_month, [(1, 0), (2, 0), (1, 1)]);
        }
    }

    #[test]
    fn a_negative_size_or_usage_is_rejected_and_counts_nothing() {
        let usage = ReporterInput::Usage(UsageChanged {
            envelope: env("u", OCT),
            account: "a@x.test".into(),
            used_bytes: -1,
            messages: 1,
            quota_bytes: 10,
            over_quota: false,
            settings_hash: None,
        });
        let d = decide(&StateView::in_memory(&Overlay::default()), &usage).unwrap();
        assert!(
            matches!(&d.verdict, mailfleet_runtime::Verdict::Reject(r) if r.contains("used_bytes -1")),
            "{:?}",
            d.changes
        );
        assert!(d.changes.is_empty());
    }

    #[test]
    fn a_duplicate_event_id_counts_once() {
        let o = apply(vec![
            status("same", AccountStatus::Active),
            status("same", AccountStatus::Active),
        ]);
        assert_eq!(count(&o, "2026-10", n::STATUS_CHANGES, "active"), 1);
    }

    fn tick(at: i64) -> ReporterInput {
        ReporterInput::Tick(ClockTicked {
            envelope: env(&format!("clock:{at}"), at),
            clock: "minute".into(),
            period_ms: 60_000,
        })
    }

    fn seen_ids(o: &Overlay) -> usize {
        o.iter()
            .filter(|(k, v)| k.first() == Some(&0xF0) && v.is_some())
            .count()
    }

    #[test]
    fn ticks_forget_event_ids_after_the_window_and_the_figures_stay() {
        let day = 24 * 3_600_000;
        let o = apply(vec![
            tick(OCT),
            status("s1", AccountStatus::Active),
            tick(OCT + day),
            status("s1", AccountStatus::Active),
            status("s2", AccountStatus::Inactive),
        ]);
        assert_eq!(seen_ids(&o), 2);
        assert_eq!(count(&o, "2026-10", n::STATUS_CHANGES, "active"), 1);
        let mut later = o.clone();
        let d = decide(
            &StateView::in_memory(&later),
            &tick(OCT + day + DEDUP_WINDOW_MS + 3_600_000),
        )
        .unwrap();
        later.extend(d.changes);
        assert_eq!(seen_ids(&later), 0, "the ids outlived the window");
        assert_eq!(count(&later, "2026-10", n::STATUS_CHANGES, "active"), 1);
        assert_eq!(count(&later, "2026-10", n::STATUS_CHANGES, "inactive"), 1);
    }

    #[test]
    fn rejections_quarantines_and_migrations_are_counted() {
        let rejected = ReporterInput::Rejected(MessageRejected {
            envelope: env("r", OCT),
            account: "a@x.test".into(),
            delivery_id: "d".into(),
            reason: RejectReason::OverQuota,
            size: 10,
            used_bytes: 100,
            quota_bytes: 100,
            sender: "s@y.test".into(),
            blob_id: "b".into(),
            message_id: None,
            settings_hash: None,
        });
        let quarantined = ReporterInput::Quarantined(MessageQuarantined {
            envelope: env("q", OCT),
            account: "a@x.test".into(),
            delivery_id: "d2".into(),
            reason: QuarantineReason::Infected,
            detail: "Eicar".into(),
            path: "/q/1".into(),
            size: 68,
            blob_id: "b2".into(),
            sender: "s@y.test".into(),
            message_id: None,
        });
        let migrated = ReporterInput::Migrated(MigrationCompleted {
            envelope: env("m", OCT),
            account: "a@x.test".into(),
            target_mail_root: "/new".into(),
            target_ldap_base: "ou=new".into(),
            messages: 1,
            bytes: 1,
            entries: 1,
            token_delivery: "t".into(),
        });
        let o = apply(vec![
            rejected,
            quarantined,
            migrated,
            ReporterInput::Other(env("o", OCT)),
        ]);
        assert_eq!(count(&o, "2026-10", n::REJECTED_OVER_QUOTA, ""), 1);
        assert_eq!(count(&o, "2026-10", n::QUARANTINED, "infected"), 1);
        assert_eq!(count(&o, "2026-10", n::MIGRATIONS, ""), 1);
    }

    fn submitted(id: &str, verdict: ScanVerdict, action: SubmitAction) -> ReporterInput {
        ReporterInput::Submitted(MessageSubmitted {
            envelope: env(id, OCT),
            account: "a@x.test".into(),
            sasl_username: "a@x.test".into(),
            sender: "a@x.test".into(),
            recipients: vec!["b@y.test".into()],
            size: 1_000,
            queue_id: String::new(),
            message_id: None,
            client_address: "192.0.2.1".into(),
            verdict,
            signature: None,
            file: None,
            rule: None,
            scanner: "ClamAV".into(),
            action,
        })
    }

    fn decided(id: &str, limit: Option<&str>) -> ReporterInput {
        ReporterInput::SubmissionDecided(SubmissionDecided {
            envelope: env(id, OCT),
            account: "a@x.test".into(),
            recipient: "b@y.test".into(),
            action: if limit.is_some() {
                LimitAction::Defer
            } else {
                LimitAction::Pass
            },
            limit: limit.map(str::to_string),
            reply: "DUNNO".into(),
            recipients_last_hour: 1,
            distinct_recipients_last_day: 1,
            messages_last_day: 0,
            bytes_last_day: 0,
            plan: "free".into(),
            policy_host: "sub1".into(),
            settings_hash: None,
        })
    }

    fn blocked(id: &str, reason: BlockReason) -> ReporterInput {
        ReporterInput::Blocked(AccountBlocked {
            envelope: env(id, OCT),
            account: "a@x.test".into(),
            reason,
            message_id: None,
            blob_id: None,
            detail: "d".into(),
        })
    }

    #[test]
    fn the_submission_path_is_counted() {
        let o = apply(vec![
            submitted("s1", ScanVerdict::Clean, SubmitAction::Accepted),
            submitted("s2", ScanVerdict::Clean, SubmitAction::Accepted),
            submitted("s3", ScanVerdict::Infected, SubmitAction::Rejected),
            submitted("s4", ScanVerdict::Banned, SubmitAction::Rejected),
            decided("d1", None),
            decided("d2", Some("recipients_per_hour")),
            decided("d3", Some("recipients_per_hour")),
            decided("d4", Some("blocked")),
            blocked("b1", BlockReason::Abuse),
            blocked("b2", BlockReason::Virus),
            blocked("b2", BlockReason::Virus),
        ]);
        let c = |name, label| count(&o, "2026-10", name, label);
        assert_eq!(
            (c(n::SUBMITTED, "accepted"), c(n::SUBMITTED, "rejected")),
            (2, 2)
        );
        assert_eq!(c(n::SUBMITTED_BYTES, ""), 2_000, "relayed bytes only");
        assert_eq!(c(n::SUBMITTED_SCANS, "infected"), 1);
        assert_eq!(c(n::SUBMITTED_SCANS, "banned"), 1);
        assert_eq!(c(n::SUBMISSION_DEFERRALS, "recipients_per_hour"), 2);
        assert_eq!(c(n::SUBMISSION_DEFERRALS, "blocked"), 1);
        assert_eq!((c(n::BLOCKS, "abuse"), c(n::BLOCKS, "virus")), (1, 1));
    }

    #[test]
    fn labels_come_from_enum_symbols() {
        assert_eq!(
            label(&GreylistReason::WhitelistedClient),
            "whitelisted-client"
        );
        assert_eq!(label(&AccountStatus::Active), "active");
    }

    fn scanned_with(
        id: &str,
        verdict: ScanVerdict,
        spam: Option<(bool, &[&str])>,
        error: bool,
    ) -> ReporterInput {
        use mailfleet_events::mail::{SpamAction, SpamResult, SpamSymbol};
        ReporterInput::Scanned(MessageScanned {
            envelope: env(id, OCT),
            account: "a@x.test".into(),
            recipient: "a@x.test".into(),
            sender: "s@y.test".into(),
            blob_id: "b".into(),
            size: 10,
            received_at: OCT,
            message_id: None,
            verdict,
            signature: None,
            file: None,
            rule: None,
            scanner: "t".into(),
            spam: spam.map(|(flagged, symbols)| SpamResult {
                action: SpamAction::AddHeader,
                score: 9.0,
                required: 15.0,
                symbols: symbols
                    .iter()
                    .map(|s| SpamSymbol {
                        name: (*s).into(),
                        score: 1.0,
                    })
                    .collect(),
                flagged,
            }),
            spam_error: error.then(|| "rspamd down".into()),
        })
    }

    #[test]
    fn spam_is_counted_by_outcome_with_the_symbols_that_made_it() {
        let o = apply(vec![
            scanned_with("h", ScanVerdict::Clean, Some((false, &["HAM_SYM"])), false),
            scanned_with("f", ScanVerdict::Clean, Some((true, &["A", "B"])), false),
            scanned_with(
                "q",
                ScanVerdict::Spam,
                Some((false, &["GTUBE", "A"])),
                false,
            ),
            scanned_with("u", ScanVerdict::Clean, None, true),
            scanned_with("v", ScanVerdict::Infected, None, false),
        ]);
        let c = |name, label| count(&o, "2026-10", name, label);
        assert_eq!(
            (
                c(n::SPAM, "ham"),
                c(n::SPAM, "spam-folder"),
                c(n::SPAM, "quarantined"),
                c(n::SPAM, "unscored")
            ),
            (1, 1, 1, 1)
        );
        assert_eq!(
            (c(n::SPAM_SYMBOLS, "A"), c(n::SPAM_SYMBOLS, "GTUBE")),
            (2, 1)
        );
        assert_eq!(
            c(n::SPAM_SYMBOLS, "HAM_SYM"),
            0,
            "ham's symbols are not spam's"
        );
        assert_eq!(c(n::SCANS, "spam"), 1);
        let figures = crate::figures::Figures {
            month: "2026-10".into(),
            counts: [
                (
                    n::SCANS.to_string(),
                    [("clean".to_string(), 6), ("spam".to_string(), 2)].into(),
                ),
                (
                    n::SPAM.to_string(),
                    [
                        ("spam-folder".to_string(), 1),
                        ("quarantined".to_string(), 2),
                    ]
                    .into(),
                ),
                (
                    n::SPAM_SYMBOLS.to_string(),
                    [
                        ("A".to_string(), 2),
                        ("B".to_string(), 1),
                        ("C".to_string(), 2),
                    ]
                    .into(),
                ),
            ]
            .into(),
            levels: Default::default(),
        };
        assert_eq!(figures.spam(), 3);
        assert_eq!(figures.spam_share_percent(), 38, "3 of 8, rounded");
        assert_eq!(
            figures.top_spam_symbols(2),
            [("A".to_string(), 2), ("C".to_string(), 2)]
        );
    }
}
