use mailfleet_events::mail::{SpamAction, SpamResult, SpamSymbol};
use mailfleet_runtime::{Overlay, Verdict};

use super::*;
use crate::writer::state::PlanBytesKey;

fn scanned(id: &str, account: &str, size: i64, verdict: ScanVerdict) -> MessageScanned {
    MessageScanned {
        envelope: Envelope {
            causation_id: Some(format!("lmtp:{id}:{account}")),
            ..Envelope::new(format!("scanner:{id}"), 1_000, "scanner")
        },
        account: account.into(),
        recipient: account.into(),
        sender: "alice@example.net".into(),
        blob_id: "ab".repeat(32),
        size,
        received_at: 1_000,
        message_id: None,
        verdict,
        signature: (verdict == ScanVerdict::Infected).then(|| "Eicar".into()),
        file: None,
        rule: None,
        scanner: "t".into(),
        spam: None,
        spam_error: None,
    }
}

fn cfg() -> StorageConfig {
    StorageConfig {
        plans: [("free".to_string(), 100), ("plus".to_string(), 1000)].into(),
        ..StorageConfig::default()
    }
}

/// Decide and apply to the overlay; returns the decision.
fn run(state: &mut Overlay, input: StorageInput) -> Decision {
    let mut d = decide(&cfg(), &StateView::in_memory(state), &input).unwrap();
    state.extend(std::mem::take(&mut d.changes));
    d
}

/// The writer's own report of one Trash file of `bytes` purged from bob@x.
fn purged_trash(bytes: i64) -> StorageInput {
    StorageInput::Purged(MessagesPurged {
        envelope: Envelope::new("pd", 2, "storage"),
        account: "bob@x".into(),
        folder: "Trash".into(),
        count: 1,
        bytes,
        files: vec!["f".into()],
        job: "j".into(),
    })
}

fn topics(d: &Decision) -> Vec<&str> {
    d.outputs.iter().map(|o| o.topic.as_str()).collect()
}

#[test]
fn clean_mail_is_delivered_once_and_counted() {
    let mut state = Overlay::default();
    let d = run(
        &mut state,
        StorageInput::Scanned(scanned("m1", "bob@x", 40, ScanVerdict::Clean)),
    );
    assert_eq!(d.intent_as::<Plan>(), Some(&Plan::Deliver));
    assert_eq!(topics(&d), ["accounts.usage"]);
    let again = run(
        &mut state,
        StorageInput::Scanned(scanned("m1", "bob@x", 40, ScanVerdict::Clean)),
    );
    assert!(
        matches!(again.verdict, Verdict::Ignore),
        "same delivery id: done already"
    );
    let usage = StateView::in_memory(&state)
        .get(&UsageKey("bob@x".into()))
        .unwrap();
    assert_eq!(
        usage,
        Some(Usage {
            bytes: 40,
            messages: 1
        })
    );
}

#[test]
fn infected_and_banned_go_to_quarantine_never_to_a_folder() {
    let mut state = Overlay::default();
    for (id, verdict) in [
        ("v", ScanVerdict::Infected),
        ("b", ScanVerdict::Banned),
        ("u", ScanVerdict::Unknown),
    ] {
        let d = run(
            &mut state,
            StorageInput::Scanned(scanned(id, "bob@x", 10, verdict)),
        );
        assert!(
            matches!(d.intent_as::<Plan>(), Some(Plan::Quarantine { .. })),
            "{verdict:?}"
        );
        assert_eq!(topics(&d), ["mail.stored"]);
    }
    let usage = StateView::in_memory(&state)
        .get(&UsageKey("bob@x".into()))
        .unwrap();
    assert_eq!(
        usage, None,
        "quarantined mail does not count against the quota"
    );
}

#[test]
fn over_quota_is_rejected_with_notices_until_the_quota_is_raised() {
    let mut state = Overlay::default();
    run(
        &mut state,
        StorageInput::Scanned(scanned("m1", "bob@x", 90, ScanVerdict::Clean)),
    );
    let d = run(
        &mut state,
        StorageInput::Scanned(scanned("m2", "bob@x", 20, ScanVerdict::Clean)),
    );
    assert_eq!(d.intent_as::<Plan>(), None, "nothing to write");
    assert_eq!(
        topics(&d),
        ["mail.stored", "notify.requests", "notify.requests"]
    );
    // A notice or bounce (null sender) to the full mailbox is rejected
    // without notices of its own, which would loop.
    let mut bounce = scanned("m9", "bob@x", 20, ScanVerdict::Clean);
    bounce.sender = String::new();
    let d = run(&mut state, StorageInput::Scanned(bounce));
    assert_eq!(topics(&d), ["mail.stored"]);
    // A retry of the rejected delivery stays rejected: no second notice.
    let again = run(
        &mut state,
        StorageInput::Scanned(scanned("m2", "bob@x", 20, ScanVerdict::Clean)),
    );
    assert!(matches!(again.verdict, Verdict::Ignore));
    let raised = QuotaChanged {
        envelope: Envelope::new("q", 2_000, "accounts"),
        account: "bob@x".into(),
        quota_bytes: Some(500),
    };
    assert_eq!(
        topics(&run(&mut state, StorageInput::Quota(raised))),
        ["accounts.usage"]
    );
    let d = run(
        &mut state,
        StorageInput::Scanned(scanned("m3", "bob@x", 20, ScanVerdict::Clean)),
    );
    assert_eq!(d.intent_as::<Plan>(), Some(&Plan::Deliver));
}

#[test]
fn plans_set_the_quota_and_unknown_plans_are_named() {
    let mut state = Overlay::default();
    let plan = |name: &str| PlanChanged {
        envelope: Envelope::new("p", 1, "accounts"),
        account: "bob@x".into(),
        plan: name.into(),
    };
    let d = run(&mut state, StorageInput::Plan(plan("gold")));
    assert!(matches!(&d.verdict, Verdict::Reject(r) if r.contains("\"gold\"")));
    run(&mut state, StorageInput::Plan(plan("plus")));
    let d = run(
        &mut state,
        StorageInput::Scanned(scanned("big", "bob@x", 900, ScanVerdict::Clean)),
    );
    assert_eq!(
        d.intent_as::<Plan>(),
        Some(&Plan::Deliver),
        "plus allows 1000"
    );
}

#[test]
fn purges_lower_the_usage_and_inbox_is_never_purged() {
    let mut state = Overlay::default();
    run(
        &mut state,
        StorageInput::Scanned(scanned("m1", "bob@x", 90, ScanVerdict::Clean)),
    );
    let inbox = PurgeRequested {
        envelope: Envelope::new("p", 1, "scheduler"),
        account: "bob@x".into(),
        folder: "INBOX".into(),
        received_before: None,
        job: "j".into(),
    };
    assert!(matches!(
        run(&mut state, StorageInput::Purge(inbox)).verdict,
        Verdict::Reject(_)
    ));
    run(&mut state, purged_trash(90));
    let usage = StateView::in_memory(&state)
        .get(&UsageKey("bob@x".into()))
        .unwrap();
    assert_eq!(
        usage,
        Some(Usage {
            bytes: 0,
            messages: 0
        })
    );
}

#[test]
fn bytes_per_plan_follow_deliveries_plan_moves_and_purges() {
    let mut state = Overlay::default();
    let plan_bytes = |state: &Overlay, plan: &str| {
        StateView::in_memory(state)
            .get(&PlanBytesKey(plan.into()))
            .unwrap()
            .unwrap_or(0)
    };
    run(
        &mut state,
        StorageInput::Scanned(scanned("m1", "bob@x", 40, ScanVerdict::Clean)),
    );
    assert_eq!(plan_bytes(&state, "free"), 40);
    let plan = PlanChanged {
        envelope: Envelope::new("p", 1, "accounts"),
        account: "bob@x".into(),
        plan: "plus".into(),
    };
    let d = decide(
        &cfg(),
        &StateView::in_memory(&state),
        &StorageInput::Plan(plan),
    )
    .unwrap();
    let mut changes = plan_bytes_changes(&d);
    changes.sort();
    assert_eq!(changes, [("free".to_string(), 0), ("plus".to_string(), 40)]);
    state.extend(d.changes);
    run(&mut state, purged_trash(30));
    assert_eq!(plan_bytes(&state, "plus"), 10);
}

#[test]
fn the_maildir_step_forgets_usage_but_never_redelivers_old_mail() {
    let mut state = Overlay::default();
    let first = StorageInput::Scanned(scanned("m1", "bob@x", 40, ScanVerdict::Clean));
    run(&mut state, first);
    let request = |step| {
        StorageInput::DeleteMailbox(DeletionStepRequested {
            envelope: Envelope::new("dr", 2_000, "deleter"),
            account: "bob@x".into(),
            step,
            attempt: 1,
        })
    };
    let d = run(&mut state, request(DeletionStep::Maildir));
    assert_eq!(d.intent_as::<Plan>(), Some(&Plan::DeleteMailbox));
    assert_eq!(
        topics(&d),
        ["accounts.usage"],
        "the effect reports the rest"
    );
    let view = StateView::in_memory(&state);
    assert_eq!(view.get(&UsageKey("bob@x".into())).unwrap(), None);
    assert_eq!(view.get(&PlanBytesKey("free".into())).unwrap(), Some(0));
    let replay = StorageInput::Scanned(scanned("m1", "bob@x", 40, ScanVerdict::Clean));
    assert!(matches!(run(&mut state, replay).verdict, Verdict::Ignore));
    for other in [
        DeletionStep::Index,
        DeletionStep::Directory,
        DeletionStep::Blobs,
    ] {
        assert!(matches!(
            run(&mut state, request(other)).verdict,
            Verdict::Ignore
        ));
    }
}

#[test]
fn a_negative_size_or_quota_is_rejected_with_the_value() {
    let mut state = Overlay::default();
    let d = run(
        &mut state,
        StorageInput::Scanned(scanned("neg", "bob@x", -5, ScanVerdict::Clean)),
    );
    match d.verdict {
        Verdict::Reject(reason) => assert!(reason.contains("size -5"), "{reason}"),
        _ => panic!("expected a rejection"),
    }
    let quota = QuotaChanged {
        envelope: Envelope::new("q", 1, "api"),
        account: "bob@x".into(),
        quota_bytes: Some(-100),
    };
    match run(&mut state, StorageInput::Quota(quota)).verdict {
        Verdict::Reject(reason) => assert!(reason.contains("quota_bytes -100"), "{reason}"),
        _ => panic!("expected a rejection"),
    }
    assert!(state.is_empty(), "no usage, no quota");
}

fn spam_result(action: SpamAction, flagged: bool) -> SpamResult {
    SpamResult {
        action,
        score: 1001.0,
        required: 15.0,
        symbols: vec![SpamSymbol {
            name: "GTUBE".into(),
            score: 0.0,
        }],
        flagged,
    }
}

#[test]
fn spam_the_scanner_rejects_is_quarantined_with_its_score() {
    let mut state = Overlay::default();
    let mut s = scanned("sp", "bob@x", 10, ScanVerdict::Spam);
    s.spam = Some(spam_result(SpamAction::Reject, false));
    let d = run(&mut state, StorageInput::Scanned(s));
    assert!(matches!(
        d.intent_as::<Plan>(),
        Some(Plan::Quarantine { .. })
    ));
    let bytes = d.outputs[0].event.encode().unwrap();
    let q: MessageQuarantined = mailfleet_events::Registry::builtin()
        .decode(&bytes)
        .unwrap();
    assert_eq!(q.reason, QuarantineReason::Spam);
    assert_eq!(q.detail, "score 1001.0/15.0 reject: GTUBE");
}

#[test]
fn scored_mail_counts_its_spam_headers_against_the_quota() {
    let mut state = Overlay::default();
    let mut s = scanned("fl", "bob@x", 10, ScanVerdict::Clean);
    s.spam = Some(spam_result(SpamAction::AddHeader, true));
    let added = crate::writer::spam::added_bytes(&s);
    assert!(added > 0);
    let cfg = StorageConfig {
        plans: [("free".to_string(), 10_000)].into(),
        ..StorageConfig::default()
    };
    let mut d = decide(
        &cfg,
        &StateView::in_memory(&state),
        &StorageInput::Scanned(s),
    )
    .unwrap();
    state.extend(std::mem::take(&mut d.changes));
    assert_eq!(d.intent_as::<Plan>(), Some(&Plan::Deliver));
    let usage = StateView::in_memory(&state)
        .get(&UsageKey("bob@x".into()))
        .unwrap()
        .unwrap();
    assert_eq!(usage.bytes, 10 + added);
}
