//! One test per lifecycle rule, with injected time (the events' time).

use mailfleet_events::{
    accounts::{LoginChannel, LoginFailed, QuotaChanged},
    encode, Event, Registry,
};
use mailfleet_runtime::{Consumer, Decode, Emit, Input, Overlay, RecordMeta, Verdict};

use super::*;
use crate::Lifecycle;
use mailfleet_runtime::calendar::{days_from_civil, DAY_MS, HOUR_MS};

const SECOND: i64 = 1000;
const ALICE: &str = "alice@example.org";
const BOB: &str = "bob@example.org";

/// A UTC time, ms.
fn at(y: i64, m: i64, d: i64, h: i64, min: i64) -> i64 {
    days_from_civil(y, m, d) * DAY_MS + h * HOUR_MS + min * 60 * SECOND
}

fn env(t: i64) -> Envelope {
    Envelope::new(format!("in-{t}"), t, "test")
}

fn registered(account: &str, t: i64) -> LifecycleInput {
    LifecycleInput::Registered(AccountRegistered {
        envelope: env(t),
        account: account.into(),
        password_hash: "{SSHA512}x".into(),
        plan: "free".into(),
        display_name: None,
    })
}

fn login(account: &str, t: i64) -> LifecycleInput {
    LifecycleInput::Login(LoginRecorded {
        envelope: env(t),
        account: account.into(),
        channel: LoginChannel::Imap,
        ip: None,
    })
}

fn blocked(account: &str, reason: BlockReason, t: i64) -> LifecycleInput {
    LifecycleInput::Blocked(AccountBlocked {
        envelope: env(t),
        account: account.into(),
        reason,
        message_id: None,
        blob_id: None,
        detail: "test".into(),
    })
}

fn unblocked(account: &str, t: i64) -> LifecycleInput {
    LifecycleInput::Unblocked(AccountUnblocked {
        envelope: env(t),
        account: account.into(),
        by: "admin".into(),
        note: String::new(),
    })
}

fn reactivated(account: &str, t: i64) -> LifecycleInput {
    LifecycleInput::Reactivated(AccountReactivated {
        envelope: env(t),
        account: account.into(),
        by: account.into(),
    })
}

fn deleted(account: &str, t: i64) -> LifecycleInput {
    LifecycleInput::Deleted(AccountDeleted {
        envelope: env(t),
        account: account.into(),
        reason: "saga".into(),
    })
}

fn tick_at(t: i64) -> LifecycleInput {
    LifecycleInput::Tick(ClockTicked {
        envelope: env(t),
        clock: "hourly".into(),
        period_ms: HOUR_MS,
    })
}

/// One output, decoded back from its wire form.
fn describe(emit: &Emit) -> String {
    let bytes = emit.event.encode().expect("outputs fit their schema");
    let registry = Registry::builtin();
    let key = String::from_utf8_lossy(&emit.key);
    match emit.event.name() {
        AccountStatusChanged::NAME => {
            let e: AccountStatusChanged = registry.decode(&bytes).unwrap();
            assert_eq!(e.account, key);
            format!("{} {key} {:?}->{:?} {}", emit.topic, e.from, e.to, e.reason)
        }
        NotificationRequested::NAME => {
            let e: NotificationRequested = registry.decode(&bytes).unwrap();
            assert_eq!((e.to.as_str(), e.account.as_deref()), (&*key, Some(&*key)));
            format!("{} {key} {} {:?}", emit.topic, e.template, e.params)
        }
        other => panic!("unexpected output {other}"),
    }
}

/// The outputs without the status topic's copies, checking that every
/// transition has its copy just before it (a pending registration has a
/// copy alone).
fn mirrored(outputs: Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut copy: Option<String> = None;
    for o in outputs {
        if let Some(rest) = o.strip_prefix("accounts.status ") {
            assert!(copy.is_none(), "two copies in a row: {o}");
            copy = Some(rest.to_string());
            continue;
        }
        if let Some(rest) = o.strip_prefix("accounts.events ") {
            if o.contains("->") {
                assert_eq!(copy.take().as_deref(), Some(rest), "no status copy of {o}");
            }
        }
        out.push(o);
    }
    if let Some(alone) = copy {
        assert!(
            alone.contains("Pending->Pending registered"),
            "stray copy {alone}"
        );
    }
    out
}

/// A decider with its state, applying decisions as the runtime would.
struct World {
    cfg: LifecycleConfig,
    state: Overlay,
}

impl World {
    fn new() -> Self {
        Self::with(LifecycleConfig::default())
    }

    fn with(cfg: LifecycleConfig) -> Self {
        Self {
            cfg,
            state: Overlay::default(),
        }
    }

    /// Decide one input: "ignored", "rejected: ..." or the outputs.
    fn feed(&mut self, input: LifecycleInput) -> Vec<String> {
        let d = decide(&self.cfg, &StateView::in_memory(&self.state), &input).unwrap();
        match d.verdict {
            Verdict::Ignore => vec!["ignored".into()],
            Verdict::Reject(reason) => vec![format!("rejected: {reason}")],
            Verdict::Apply => {
                self.state.extend(d.changes);
                mirrored(d.outputs.iter().map(describe).collect())
            }
        }
    }

    /// A tick's outputs; whether the watermark skipped the scan or the
    /// scan found nothing is the same here.
    fn tick(&mut self, t: i64) -> Vec<String> {
        let mut out = self.feed(tick_at(t));
        out.retain(|o| o != "ignored");
        out
    }

    fn account(&self, name: &str) -> Option<Account> {
        StateView::in_memory(&self.state)
            .get(&AccountKey(name))
            .unwrap()
    }

    fn status(&self, name: &str) -> Option<Status> {
        self.account(name).map(|a| a.status)
    }
}

fn ev(account: &str, from: &str, to: &str, reason: &str) -> String {
    format!("accounts.events {account} {from}->{to} {reason}")
}

fn notice(account: &str, hours: &str, deletion_after: &str) -> String {
    format!(
        "notify.requests {account} deactivated {{\"deletion_after\": {deletion_after:?}, \"respond_within_hours\": {hours:?}}}"
    )
}

const EMPTY: [&str; 0] = [];

/// 2026-01-31 10:00 + 3 months = 2026-04-30 10:00 (clamped), + 2 days.
fn threshold_of_jan_31() -> (i64, i64) {
    (at(2026, 1, 31, 10, 0), at(2026, 5, 2, 10, 0))
}

/// Alice registered and logged in last at 2026-01-31 10:00.
fn alice_last_seen_jan_31() -> World {
    let mut w = World::new();
    let (last, _) = threshold_of_jan_31();
    w.feed(registered(ALICE, last - 10 * DAY_MS));
    assert_eq!(
        w.feed(login(ALICE, last)),
        EMPTY,
        "a login while active is quiet"
    );
    w
}

/// Alice made inactive by a tick at the threshold; returns that time.
fn alice_inactive() -> (World, i64) {
    let mut w = alice_last_seen_jan_31();
    let (_, threshold) = threshold_of_jan_31();
    w.tick(threshold);
    assert_eq!(w.status(ALICE), Some(Status::Inactive));
    (w, threshold)
}

#[test]
fn a_registration_is_active_at_once_by_default() {
    let mut w = World::new();
    let t = at(2026, 3, 1, 8, 0);
    assert_eq!(
        w.feed(registered("Alice@Example.org", t)),
        [ev(ALICE, "Pending", "Active", "registered")],
        "announced under the lower-cased address"
    );
    assert_eq!(w.account(ALICE), Some(Account::new(Status::Active, t, t)));
}

#[test]
fn without_activate_on_register_the_first_login_activates_and_pending_has_no_timer() {
    let mut w = World::with(LifecycleConfig {
        activate_on_register: false,
        ..LifecycleConfig::default()
    });
    let t = at(2026, 3, 1, 8, 0);
    assert_eq!(w.feed(registered(ALICE, t)), EMPTY);
    assert_eq!(w.status(ALICE), Some(Status::Pending));
    assert_eq!(w.tick(at(2027, 3, 1, 8, 0)), EMPTY);
    assert_eq!(w.status(ALICE), Some(Status::Pending));
    let first = at(2027, 3, 2, 8, 0);
    assert_eq!(
        w.feed(login(ALICE, first)),
        [ev(ALICE, "Pending", "Active", "login")]
    );
    assert_eq!(w.account(ALICE).map(|a| a.clock), Some(first));
}

#[test]
fn an_account_becomes_inactive_at_three_calendar_months_and_two_days_with_a_notice() {
    let mut w = alice_last_seen_jan_31();
    let (_, threshold) = threshold_of_jan_31();
    assert_eq!(w.tick(threshold - SECOND), EMPTY);
    assert_eq!(w.status(ALICE), Some(Status::Active));
    assert_eq!(
        w.tick(threshold),
        [
            ev(ALICE, "Active", "Inactive", "no-login-since:2026-01-31"),
            notice(ALICE, "24", "2026-05-03T10:00:00Z"),
        ]
    );
    assert_eq!(w.tick(threshold + HOUR_MS), EMPTY, "fired once");
}

#[test]
fn a_login_one_second_before_the_threshold_keeps_the_account_active() {
    let mut w = alice_last_seen_jan_31();
    let (_, threshold) = threshold_of_jan_31();
    assert_eq!(w.feed(login(ALICE, threshold - SECOND)), EMPTY);
    assert_eq!(w.tick(threshold), EMPTY, "scanned, nothing due");
    assert_eq!(w.status(ALICE), Some(Status::Active));
    // The clock restarted at 2026-05-02 09:59:59: + 3 months + 2 days.
    let next = at(2026, 8, 4, 9, 59) + 59 * SECOND;
    assert_eq!(w.tick(next - SECOND), EMPTY);
    assert_eq!(
        w.tick(next)[0],
        ev(ALICE, "Active", "Inactive", "no-login-since:2026-05-02")
    );
}

#[test]
fn a_login_with_an_older_event_time_does_not_turn_the_clock_back() {
    let mut w = alice_last_seen_jan_31();
    let (last, threshold) = threshold_of_jan_31();
    assert_eq!(w.feed(login(ALICE, last - DAY_MS)), ["ignored"]);
    assert_eq!(w.account(ALICE).map(|a| a.clock), Some(last));
    assert_eq!(w.tick(threshold).len(), 2);
}

#[test]
fn the_grace_period_runs_from_the_notice_then_deletion_starts() {
    let (mut w, since) = alice_inactive();
    let grace_end = since + 24 * HOUR_MS;
    assert_eq!(w.tick(grace_end - SECOND), EMPTY);
    assert_eq!(w.status(ALICE), Some(Status::Inactive));
    assert_eq!(
        w.tick(grace_end),
        [ev(ALICE, "Inactive", "Deleting", "grace-expired")]
    );
    assert_eq!(w.tick(grace_end + DAY_MS), EMPTY, "no timer");
}

#[test]
fn a_reactivation_in_the_last_minute_of_the_grace_keeps_the_account() {
    let (mut w, since) = alice_inactive();
    let grace_end = since + 24 * HOUR_MS;
    let back = grace_end - 30 * SECOND;
    assert_eq!(
        w.feed(reactivated(ALICE, back)),
        [ev(ALICE, "Inactive", "Active", "reactivated")]
    );
    assert_eq!(w.tick(grace_end + HOUR_MS), EMPTY);
    assert_eq!(w.status(ALICE), Some(Status::Active));
    // The inactivity clock restarted at the reactivation.
    let next = w.cfg.inactive_at(back);
    assert_eq!(w.tick(next - SECOND), EMPTY);
    assert_eq!(w.tick(next).len(), 2, "inactive again, with a notice");
}

#[test]
fn a_login_within_the_grace_reactivates_and_restarts_the_clock() {
    let (mut w, since) = alice_inactive();
    let back = since + 23 * HOUR_MS;
    assert_eq!(
        w.feed(login(ALICE, back)),
        [ev(ALICE, "Inactive", "Active", "login")]
    );
    assert_eq!(w.tick(since + 25 * HOUR_MS), EMPTY);
    // The only account's timer was the grace; the login re-arms the
    // inactivity timer (the partition watermark went down with it).
    assert_eq!(
        w.tick(w.cfg.inactive_at(back))[0],
        ev(ALICE, "Active", "Inactive", "no-login-since:2026-05-03")
    );
}

#[test]
fn a_login_while_deleting_is_too_late_and_the_tombstone_ends_it() {
    let (mut w, since) = alice_inactive();
    let grace_end = since + 24 * HOUR_MS;
    w.tick(grace_end);
    assert_eq!(w.feed(login(ALICE, grace_end + SECOND)), ["ignored"]);
    assert_eq!(w.feed(reactivated(ALICE, grace_end + SECOND)), ["ignored"]);
    assert_eq!(
        w.feed(blocked(ALICE, BlockReason::Admin, grace_end)),
        ["ignored"]
    );
    assert_eq!(w.tick(grace_end + 400 * DAY_MS), EMPTY);
    assert_eq!(w.status(ALICE), Some(Status::Deleting));
    assert_eq!(
        w.feed(deleted(ALICE, grace_end + HOUR_MS)),
        [ev(ALICE, "Deleting", "Deleted", "deleted")]
    );
    assert_eq!(w.status(ALICE), None, "the record is gone");
    assert_eq!(w.feed(login(ALICE, grace_end + 2 * HOUR_MS)), ["ignored"]);
    assert_eq!(
        w.feed(registered(ALICE, grace_end + DAY_MS)),
        [ev(ALICE, "Pending", "Active", "registered")],
        "the address may be registered again"
    );
}

#[test]
fn the_tombstone_is_accepted_from_any_status() {
    let mut w = World::new();
    w.feed(registered(ALICE, 0));
    assert_eq!(
        w.feed(deleted(ALICE, 5)),
        [ev(ALICE, "Active", "Deleted", "deleted")]
    );
}

#[test]
fn a_blocked_account_has_no_timer_and_its_clock_restarts_at_the_unblock() {
    let mut w = alice_last_seen_jan_31();
    let (_, threshold) = threshold_of_jan_31();
    let block = threshold - DAY_MS;
    assert_eq!(
        w.feed(blocked(ALICE, BlockReason::Virus, block)),
        [ev(ALICE, "Active", "Blocked", "virus")]
    );
    assert_eq!(
        w.feed(blocked(ALICE, BlockReason::Admin, block + 1)),
        ["ignored"]
    );
    assert_eq!(w.feed(login(ALICE, block + 2)), ["ignored"]);
    assert_eq!(w.tick(threshold + 200 * DAY_MS), EMPTY);
    assert_eq!(w.status(ALICE), Some(Status::Blocked));
    let unblock = threshold + 201 * DAY_MS;
    assert_eq!(
        w.feed(unblocked(ALICE, unblock)),
        [ev(ALICE, "Blocked", "Active", "unblocked")]
    );
    assert_eq!(w.feed(unblocked(ALICE, unblock + 1)), ["ignored"]);
    let next = w.cfg.inactive_at(unblock);
    assert_eq!(w.tick(next - SECOND), EMPTY);
    assert_eq!(w.tick(next).len(), 2);
}

#[test]
fn blocking_an_inactive_account_stops_its_grace_timer() {
    let (mut w, since) = alice_inactive();
    assert_eq!(
        w.feed(blocked(ALICE, BlockReason::Abuse, since + HOUR_MS)),
        [ev(ALICE, "Inactive", "Blocked", "abuse")]
    );
    assert_eq!(w.tick(since + 30 * DAY_MS), EMPTY);
    assert_eq!(w.status(ALICE), Some(Status::Blocked));
    assert_eq!(
        w.feed(blocked(BOB, BlockReason::Admin, 0)),
        ["ignored"],
        "unknown"
    );
}

#[test]
fn one_tick_after_a_long_outage_moves_an_account_one_step_only() {
    let mut w = alice_last_seen_jan_31();
    let late = at(2027, 6, 1, 0, 0);
    assert_eq!(w.tick(late).len(), 2);
    assert_eq!(w.status(ALICE), Some(Status::Inactive));
    assert_eq!(w.tick(late + 23 * HOUR_MS), EMPTY);
    assert_eq!(w.tick(late + 24 * HOUR_MS).len(), 1);
    assert_eq!(w.status(ALICE), Some(Status::Deleting));
}

#[test]
fn a_shorter_threshold_in_the_config_applies_to_stored_accounts() {
    let mut w = alice_last_seen_jan_31();
    let (last, _) = threshold_of_jan_31();
    w.cfg.inactive_after_months = 1;
    w.cfg.inactive_after_days = 0;
    assert_eq!(
        w.tick(at(2026, 2, 28, 10, 0))[0],
        ev(ALICE, "Active", "Inactive", "no-login-since:2026-01-31")
    );
    assert!(w.account(ALICE).is_some_and(|a| a.clock == last));
}

#[test]
fn a_later_clock_clamped_to_the_same_month_end_is_not_missed() {
    let mut w = World::new();
    let (evening, night) = (at(2026, 1, 30, 18, 0), at(2026, 1, 31, 1, 0));
    w.feed(registered(ALICE, evening));
    w.feed(registered(BOB, night));
    // Bob's threshold (Apr 30 01:00 + 2 days) comes before Alice's.
    assert_eq!(
        w.tick(at(2026, 5, 2, 1, 0))[0],
        ev(BOB, "Active", "Inactive", "no-login-since:2026-01-31")
    );
    assert_eq!(w.status(ALICE), Some(Status::Active));
}

#[test]
fn a_tick_fires_only_the_due_accounts_of_many() {
    let cfg = LifecycleConfig::default();
    let now = at(2026, 11, 28, 16, 0);
    let names: Vec<String> = (0..10_000)
        .map(|i| format!("user{i}@example.org"))
        .collect();
    // Every 100th account's clock is old enough; every 1000th is inactive
    // and past its grace; the rest logged in yesterday.
    let accounts = names.iter().enumerate().map(|(i, name)| {
        let a = match i {
            i if i % 1000 == 0 => Account::new(Status::Inactive, now - 2 * DAY_MS, 0),
            i if i % 100 == 0 => Account::new(Status::Active, 0, now - 100 * DAY_MS),
            _ => Account::new(Status::Active, 0, now - DAY_MS),
        };
        (name.as_str(), a)
    });
    let mut w = World::with(cfg);
    w.state.extend(seed(accounts));
    let out = w.tick(now);
    let count = |needle: &str| out.iter().filter(|o| o.contains(needle)).count();
    assert_eq!(count("Active->Inactive"), 90);
    assert_eq!(count("deactivated"), 90);
    assert_eq!(count("Inactive->Deleting"), 10);
    assert_eq!(out.len(), 190);
    assert_eq!(
        w.feed(tick_at(now + HOUR_MS)),
        ["ignored"],
        "watermark moved on"
    );
}

#[test]
fn replaying_the_same_inputs_gives_the_same_outputs_and_state() {
    let (last, threshold) = threshold_of_jan_31();
    let script = || {
        vec![
            registered(ALICE, last - DAY_MS),
            registered(BOB, last - DAY_MS),
            login(ALICE, last),
            blocked(BOB, BlockReason::Virus, last + DAY_MS),
            tick_at(threshold),
            unblocked(BOB, threshold + HOUR_MS),
            tick_at(threshold + 24 * HOUR_MS),
            deleted(ALICE, threshold + 25 * HOUR_MS),
            tick_at(threshold + 200 * DAY_MS),
        ]
    };
    let run = || {
        let mut w = World::new();
        let out: Vec<Vec<String>> = script().into_iter().map(|i| w.feed(i)).collect();
        let mut state: Vec<_> = w.state.into_iter().collect();
        state.sort();
        (out, state)
    };
    let (first, second) = (run(), run());
    assert_eq!(first, second);
    assert_eq!(
        first.0.concat().len(),
        10,
        "the script moves both accounts: {:#?}",
        first.0
    );
}

#[test]
fn a_registration_for_an_existing_account_is_rejected_naming_it() {
    let mut w = World::new();
    w.feed(registered(ALICE, 0));
    let again = w.feed(registered("ALICE@example.org", 5));
    assert_eq!(
        again,
        ["rejected: AccountRegistered in-5: account alice@example.org already exists (Active)"]
    );
    assert_eq!(
        w.feed(registered("", 6)),
        ["rejected: AccountRegistered in-6: no account"]
    );
}

#[test]
fn events_for_an_unknown_account_are_ignored() {
    let mut w = World::new();
    for input in [
        login(BOB, 1),
        blocked(BOB, BlockReason::Virus, 1),
        unblocked(BOB, 1),
        reactivated(BOB, 1),
        deleted(BOB, 1),
    ] {
        assert_eq!(w.feed(input), ["ignored"]);
    }
    assert!(w.state.is_empty());
}

#[test]
fn inputs_decode_by_writer_and_other_events_on_the_topic_are_ignored() {
    let registry = Registry::builtin();
    let read = |bytes: Vec<u8>| LifecycleInput::decode(registry, &bytes).unwrap();
    let own = AccountStatusChanged {
        envelope: env(1),
        account: ALICE.into(),
        from: AccountStatus::Active,
        to: AccountStatus::Inactive,
        reason: "x".into(),
        settings_hash: None,
    };
    let quota = QuotaChanged {
        envelope: env(2),
        account: ALICE.into(),
        quota_bytes: None,
    };
    let failed = LoginFailed {
        envelope: env(3),
        account: ALICE.into(),
        channel: LoginChannel::Imap,
        ip: None,
        reason: "bad password".into(),
    };
    let mut w = World::new();
    w.feed(registered(ALICE, 0));
    for other in [
        read(encode(&own).unwrap()),
        read(encode(&quota).unwrap()),
        read(encode(&failed).unwrap()),
    ] {
        assert!(matches!(other, LifecycleInput::Other(_)), "{other:?}");
        assert_eq!(w.feed(other), ["ignored"]);
    }
    let LifecycleInput::Login(l) = login(ALICE, 7) else {
        unreachable!()
    };
    let decoded = read(encode(&l).unwrap());
    assert!(matches!(&decoded, LifecycleInput::Login(d) if *d == l));
    assert_eq!(decoded.envelope().event_time, 7);
    let LifecycleInput::Tick(t) = tick_at(9) else {
        unreachable!()
    };
    assert!(matches!(read(encode(&t).unwrap()), LifecycleInput::Tick(d) if d == t));
    let LifecycleInput::Deleted(x) = deleted(ALICE, 9) else {
        unreachable!()
    };
    assert!(matches!(read(encode(&x).unwrap()), LifecycleInput::Deleted(d) if d == x));
}

#[test]
fn the_consumer_is_named_lifecycle_and_has_no_effects() {
    let lifecycle = Lifecycle::new(LifecycleConfig::default());
    assert_eq!(
        (lifecycle.name(), lifecycle.has_effects()),
        ("lifecycle", false)
    );
    let input = Input {
        event: registered(ALICE, 0),
        meta: RecordMeta {
            topic: "accounts.events".into(),
            partition: 0,
            offset: 0,
            key: Some(ALICE.into()),
            timestamp: None,
        },
    };
    let overlay = Overlay::default();
    let d = lifecycle
        .decide(&StateView::in_memory(&overlay), &input)
        .unwrap();
    let out: Vec<String> = d.outputs.iter().map(describe).collect();
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(
        mirrored(out),
        [ev(ALICE, "Pending", "Active", "registered")]
    );
    assert_eq!(d.outputs[0].event.name(), AccountStatusChanged::NAME);
}
