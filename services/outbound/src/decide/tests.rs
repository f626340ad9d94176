//! The rules one by one, with time injected through event times.

use std::collections::BTreeMap;

use mailfleet_events::{
    admin::{AdminAlert, AlertSeverity},
    Envelope, Event, Registry,
};
use mailfleet_runtime::{settings::Settings, Consumer, Input, Overlay, RecordMeta, Verdict};

use super::*;
use crate::{Outbound, ABUSE_KIND, VIRUS_KIND};

const T0: i64 = 1_795_996_800_000; // 2026-11-30T00:00:00Z
const SEC: i64 = 1_000;
const MIN: i64 = 60 * SEC;
const ALICE: &str = "alice@example.org";

fn limits(recipients_per_hour: u32, distinct: u32, messages: u32, bytes: u64) -> PlanLimits {
    PlanLimits {
        recipients_per_hour,
        distinct_recipients_per_day: distinct,
        messages_per_day: messages,
        bytes_per_day: bytes,
    }
}

/// Small limits: free 5 recipients/h, 4 distinct/day, 3 messages and
/// 1000 bytes a day; plus ten times that; abuse at 3 deferrals an hour.
fn config() -> OutboundConfig {
    OutboundConfig {
        plans: BTreeMap::from([
            ("free".to_string(), limits(5, 4, 3, 1_000)),
            ("plus".to_string(), limits(50, 40, 30, 10_000)),
        ]),
        abuse_deferrals_per_hour: 3,
        abuse_daily_messages_factor: 0,
        ..OutboundConfig::default()
    }
}

struct World {
    outbound: Outbound,
    state: Overlay,
    next: i64,
}

impl World {
    fn new(cfg: OutboundConfig) -> World {
        World {
            outbound: Outbound::new(cfg),
            state: Overlay::default(),
            next: 0,
        }
    }

    /// Decide `event` as the runtime would, applying its changes.
    fn feed(&mut self, event: OutboundInput) -> Decision {
        self.next += 1;
        let input = Input {
            event,
            meta: RecordMeta {
                topic: "in".into(),
                partition: 0,
                offset: self.next,
                key: Some(ALICE.as_bytes().to_vec()),
                timestamp: None,
            },
        };
        let d = self
            .outbound
            .decide(&StateView::in_memory(&self.state), &input)
            .unwrap();
        if matches!(d.verdict, Verdict::Apply) {
            self.state.extend(d.changes.iter().cloned());
        }
        d
    }

    /// One attempt from alice to `to` at `at`: its decision.
    fn attempt(&mut self, to: &str, at: i64) -> SubmissionDecided {
        self.attempt_of(ALICE, to, 0, at)
    }

    fn attempt_of(&mut self, account: &str, to: &str, size: i64, at: i64) -> SubmissionDecided {
        let d = self.feed(OutboundInput::Attempt(attempt(account, to, size, at)));
        let mut decided = outputs::<SubmissionDecided>(&d);
        assert_eq!(decided.len(), 1, "one decision per attempt");
        decided.remove(0)
    }
}

fn attempt(account: &str, to: &str, size: i64, at: i64) -> SubmissionAttempted {
    SubmissionAttempted {
        envelope: Envelope::new(format!("sub1:{at}:{to}"), at, "policy@sub1"),
        account: account.into(),
        sasl_username: account.into(),
        sender: account.into(),
        recipient: to.into(),
        client_address: "192.0.2.10".into(),
        client_name: "webmail.example.org".into(),
        size,
        queue_id: String::new(),
        instance: format!("i-{at}"),
        policy_host: "sub1".into(),
    }
}

fn submitted(
    id: &str,
    at: i64,
    size: i64,
    verdict: ScanVerdict,
    action: SubmitAction,
) -> MessageSubmitted {
    MessageSubmitted {
        envelope: Envelope::new(id, at, "milter@sub1"),
        account: ALICE.into(),
        sasl_username: "Alice@Example.org".into(),
        sender: ALICE.into(),
        recipients: vec!["bob@example.net".into()],
        size,
        queue_id: "Q1".into(),
        message_id: Some(format!("{id}@example.org")),
        client_address: "192.0.2.10".into(),
        verdict,
        signature: (verdict == ScanVerdict::Infected).then(|| "Eicar-Signature".into()),
        file: (verdict == ScanVerdict::Banned).then(|| "x.exe".into()),
        rule: (verdict == ScanVerdict::Banned).then(|| "banned-extension".into()),
        scanner: "ClamAV 1.4.3".into(),
        action,
    }
}

fn accepted(id: &str, at: i64, size: i64) -> OutboundInput {
    OutboundInput::Submitted(submitted(
        id,
        at,
        size,
        ScanVerdict::Clean,
        SubmitAction::Accepted,
    ))
}

/// The outputs of type `E`, decoded as a reader would.
fn outputs<E: Event>(d: &Decision) -> Vec<E> {
    d.outputs
        .iter()
        .filter(|o| o.event.name() == E::NAME)
        .map(|o| {
            Registry::builtin()
                .decode(&o.event.encode().unwrap())
                .unwrap()
        })
        .collect()
}

fn rejection(d: &Decision) -> String {
    match &d.verdict {
        Verdict::Reject(reason) => reason.clone(),
        _ => panic!("not rejected"),
    }
}

fn registered(plan: &str) -> AccountRegistered {
    AccountRegistered {
        envelope: Envelope::new("r1", T0, "api"),
        account: ALICE.into(),
        password_hash: "{ARGON2}x".into(),
        plan: plan.into(),
        display_name: None,
    }
}

#[test]
fn an_hourly_burst_passes_up_to_the_limit_then_defers_naming_it() {
    let mut w = World::new(OutboundConfig {
        abuse_deferrals_per_hour: 0,
        ..config()
    });
    let decided: Vec<_> = (0..8)
        .map(|i| w.attempt(&format!("r{}@example.net", i % 2), T0 + i * SEC))
        .collect();
    for (i, d) in decided.iter().enumerate() {
        assert_eq!(d.plan, "free", "the default plan");
        assert_eq!(
            d.envelope.causation_id.as_deref(),
            Some(&*format!(
                "sub1:{}:r{}@example.net",
                T0 + i as i64 * SEC,
                i % 2
            ))
        );
        if i < 5 {
            assert_eq!(
                (d.action, d.limit.as_deref(), d.reply.as_str()),
                (LimitAction::Pass, None, "DUNNO")
            );
            assert_eq!(d.recipients_last_hour, i as i64 + 1, "this one included");
        } else {
            assert_eq!(d.action, LimitAction::Defer);
            assert_eq!(d.limit.as_deref(), Some("recipients_per_hour"));
            assert_eq!(
                d.reply,
                "DEFER 4.7.1 recipients per hour limit 5 reached for alice@example.org"
            );
            assert_eq!(d.recipients_last_hour, 5, "deferred ones do not count");
        }
        assert_eq!(
            (d.policy_host.as_str(), d.settings_hash.as_ref()),
            ("sub1", None)
        );
    }
    // The window slides by the minute: an hour after the first, the
    // first minute's five are out and the deferrals never counted.
    let later = w.attempt("r9@example.net", T0 + 60 * MIN);
    assert_eq!(
        (later.action, later.recipients_last_hour),
        (LimitAction::Pass, 1)
    );
    assert_eq!(later.distinct_recipients_last_day, 3);
}

#[test]
fn distinct_recipients_per_day_defer_only_new_addresses() {
    let mut w = World::new(config());
    for (i, to) in ["a@x.test", "b@x.test", "C@X.test", "d@x.test"]
        .iter()
        .enumerate()
    {
        let d = w.attempt(to, T0 + i as i64 * 20 * MIN);
        assert_eq!(d.action, LimitAction::Pass, "{to}");
    }
    let new = w.attempt("e@x.test", T0 + 3 * 60 * MIN);
    assert_eq!(new.limit.as_deref(), Some("distinct_recipients_per_day"));
    assert_eq!(
        new.reply,
        "DEFER 4.7.1 distinct recipients per day limit 4 reached for alice@example.org"
    );
    let known = w.attempt("c@x.test", T0 + 3 * 60 * MIN + SEC);
    assert_eq!(
        (known.action, known.distinct_recipients_last_day),
        (LimitAction::Pass, 4)
    );
    // A day after the first, it has left the window: room for one more.
    let next_day = w.attempt("e@x.test", T0 + 24 * 60 * MIN);
    assert_eq!(next_day.action, LimitAction::Pass);
}

#[test]
fn relayed_messages_and_bytes_count_per_day_and_a_declared_size_pre_empts() {
    let mut w = World::new(config());
    w.feed(accepted("m1", T0, 400));
    w.feed(OutboundInput::Submitted(submitted(
        "m2",
        T0 + MIN,
        5_000,
        ScanVerdict::Banned,
        SubmitAction::Rejected,
    )));
    let d = w.attempt_of(ALICE, "b@x.test", 700, T0 + 2 * MIN);
    assert_eq!(
        (d.messages_last_day, d.bytes_last_day),
        (1, 400),
        "the rejected one is not counted"
    );
    assert_eq!(
        d.limit.as_deref(),
        Some("bytes_per_day"),
        "400 + 700 declared > 1000"
    );
    assert_eq!(
        d.reply,
        "DEFER 4.7.1 bytes per day limit 1000 reached for alice@example.org"
    );
    assert_eq!(
        w.attempt_of(ALICE, "b@x.test", 600, T0 + 3 * MIN).action,
        LimitAction::Pass
    );
    w.feed(accepted("m3", T0 + 4 * MIN, 100));
    w.feed(accepted("m4", T0 + 5 * MIN, 100));
    let d = w.attempt("b@x.test", T0 + 6 * MIN);
    assert_eq!((d.messages_last_day, d.bytes_last_day), (3, 600));
    assert_eq!(d.limit.as_deref(), Some("messages_per_day"));
    // A re-sent MessageSubmitted (same id) is not counted twice.
    assert!(matches!(
        w.feed(accepted("m4", T0 + 5 * MIN, 100)).verdict,
        Verdict::Ignore
    ));
    // 24 hours after the hour of m1, the day window has moved past it.
    let d = w.attempt("b@x.test", T0 + 24 * 60 * MIN);
    assert_eq!(
        (d.action, d.messages_last_day, d.bytes_last_day),
        (LimitAction::Pass, 0, 0)
    );
}

#[test]
fn the_plan_comes_from_the_account_events_and_deletion_forgets_the_account() {
    let mut w = World::new(config());
    w.feed(OutboundInput::Registered(registered("free")));
    for i in 0..5 {
        w.attempt(&format!("r{}@x.test", i % 2), T0 + i * SEC);
    }
    assert_eq!(
        w.attempt("r@x.test", T0 + 10 * SEC).action,
        LimitAction::Defer
    );
    w.feed(OutboundInput::Plan(PlanChanged {
        envelope: Envelope::new("p1", T0 + 11 * SEC, "api"),
        account: "Alice@Example.org".into(),
        plan: "plus".into(),
    }));
    let d = w.attempt("r@x.test", T0 + 12 * SEC);
    assert_eq!(
        (d.action, d.plan.as_str(), d.recipients_last_hour),
        (LimitAction::Pass, "plus", 6)
    );
    w.feed(OutboundInput::Deleted(AccountDeleted {
        envelope: Envelope::new("d1", T0 + 13 * SEC, "deleter"),
        account: ALICE.into(),
        reason: "inactive".into(),
    }));
    let view = StateView::in_memory(&w.state);
    assert!(view.scan::<AccountKey>().unwrap().is_empty());
    assert!(view.scan::<WindowsKey>().unwrap().is_empty());
    let d = w.attempt("r@x.test", T0 + 14 * SEC);
    assert_eq!((d.plan.as_str(), d.recipients_last_hour), ("free", 1));
}

#[test]
fn ticks_drop_idle_windows_and_keep_live_ones() {
    let mut w = World::new(config());
    w.attempt("r@x.test", T0);
    w.attempt_of("bob@example.org", "r@x.test", 0, T0 + 23 * 60 * MIN);
    let windows = |w: &World| {
        StateView::in_memory(&w.state)
            .scan::<WindowsKey>()
            .unwrap()
            .into_iter()
            .map(|(k, _)| String::from_utf8(k).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(windows(&w), ["alice@example.org", "bob@example.org"]);
    let tick = |at: i64| {
        OutboundInput::Tick(ClockTicked {
            envelope: Envelope::new(format!("clock:{at}"), at, "clock"),
            clock: "hourly".into(),
            period_ms: 3_600_000,
        })
    };
    w.feed(tick(T0 + 24 * 60 * MIN));
    assert_eq!(windows(&w), ["bob@example.org"], "alice's day is over");
    w.feed(tick(T0 + 48 * 60 * MIN));
    assert!(windows(&w).is_empty());
}

#[test]
fn recorded_settings_are_in_force_and_stamped_on_each_decision() {
    let mut w = World::new(config());
    assert_eq!(w.attempt("r@x.test", T0).settings_hash, None);
    let mut rules = config().rules();
    rules.plans.insert("free".into(), limits(1, 4, 3, 1_000));
    let settings = Settings::of(&rules).unwrap();
    let change = |s: &Settings, consumer: &str| {
        OutboundInput::Config(ConfigChanged {
            envelope: Envelope::new("c1", T0, "mailfleet-outbound"),
            consumer: consumer.into(),
            settings: s.json.clone(),
            hash: s.hash.clone(),
        })
    };
    assert!(matches!(
        w.feed(change(&settings, "greylist")).verdict,
        Verdict::Ignore
    ));
    assert!(matches!(
        w.feed(change(&settings, "outbound")).verdict,
        Verdict::Apply
    ));
    let d = w.attempt("r@x.test", T0 + SEC);
    assert_eq!(d.settings_hash.as_deref(), Some(settings.hash.as_str()));
    assert_eq!(
        d.reply,
        "DEFER 4.7.1 recipients per hour limit 1 reached for alice@example.org"
    );
    // Settings whose default plan has no limits are refused, naming why.
    rules.default_plan = "gold".into();
    let bad = Settings::of(&rules).unwrap();
    let d = w.feed(change(&bad, "outbound"));
    assert!(
        rejection(&d).contains("default_plan = \"gold\""),
        "{}",
        rejection(&d)
    );
}

#[test]
fn limits_are_checked_in_order_and_zero_is_off() {
    let f = Figures {
        recipients_last_hour: 5,
        deferrals_last_hour: 0,
        distinct_recipients_last_day: 4,
        messages_last_day: 3,
        bytes_last_day: 1_000,
    };
    let l = limits(5, 4, 3, 1_000);
    assert_eq!(
        limit_reached(&l, &f, false, 0),
        Some(Limit::RecipientsPerHour)
    );
    let l = limits(0, 4, 3, 1_000);
    assert_eq!(
        limit_reached(&l, &f, false, 0),
        Some(Limit::DistinctRecipientsPerDay)
    );
    assert_eq!(limit_reached(&l, &f, true, 0), Some(Limit::MessagesPerDay));
    assert_eq!(
        limit_reached(&limits(0, 0, 0, 1_000), &f, true, 0),
        Some(Limit::BytesPerDay)
    );
    assert_eq!(limit_reached(&limits(0, 0, 0, 1_001), &f, true, 1), None);
    assert_eq!(
        limit_reached(&limits(0, 0, 0, 1_001), &f, true, 2),
        Some(Limit::BytesPerDay)
    );
    assert_eq!(limit_reached(&limits(0, 0, 0, 0), &f, false, 1 << 40), None);
}

mod blocks;
