//! Blocks (abuse, viruses) and dead letters.

use super::*;

#[test]
fn sustained_deferrals_block_the_account_once_and_an_unblock_starts_over() {
    let mut w = World::new(config());
    let mut blocks = Vec::new();
    let mut alerts = Vec::new();
    let mut limits_named = Vec::new();
    for i in 0..12 {
        let d = w.feed(OutboundInput::Attempt(attempt(
            ALICE,
            "r@x.test",
            0,
            T0 + i * SEC,
        )));
        blocks.extend(outputs::<AccountBlocked>(&d));
        alerts.extend(outputs::<AdminAlert>(&d));
        limits_named.push(outputs::<SubmissionDecided>(&d)[0].limit.clone());
    }
    let named: Vec<Option<&str>> = limits_named.iter().map(|l| l.as_deref()).collect();
    let rph = Some("recipients_per_hour");
    assert_eq!(
        named,
        [vec![None; 5], vec![rph; 3], vec![Some("blocked"); 4]].concat(),
        "5 pass, 3 deferrals reach the threshold, then the account is blocked"
    );
    assert_eq!(blocks.len(), 1, "{blocks:?}");
    assert_eq!(
        (blocks[0].reason, blocks[0].account.as_str()),
        (BlockReason::Abuse, ALICE)
    );
    assert!(
        blocks[0]
            .detail
            .starts_with("3 deferrals for outbound limits in the last hour (threshold 3)"),
        "{}",
        blocks[0].detail
    );
    assert_eq!(
        blocks[0].envelope.causation_id.as_deref(),
        Some(&*format!("sub1:{}:r@x.test", T0 + 7 * SEC))
    );
    assert_eq!(alerts.len(), 1);
    assert_eq!(
        (alerts[0].kind.as_str(), alerts[0].severity),
        (ABUSE_KIND, AlertSeverity::Critical)
    );
    assert!(alerts[0]
        .detail
        .as_deref()
        .unwrap_or("")
        .contains("5 recipients in the last hour"));
    assert!(alerts[0]
        .detail
        .as_deref()
        .unwrap_or("")
        .contains("mailfleet account unblock alice@example.org"));

    // Our own AccountBlocked comes back on accounts.events: nothing new.
    assert!(matches!(
        w.feed(OutboundInput::Blocked(blocks[0].clone())).verdict,
        Verdict::Ignore
    ));
    // The admin clears it: the hour's recipients still count, the
    // deferrals start over, so it takes three more to block again.
    w.feed(OutboundInput::Unblocked(AccountUnblocked {
        envelope: Envelope::new("u1", T0 + 20 * SEC, "api"),
        account: ALICE.into(),
        by: "admin".into(),
        note: "false positive".into(),
    }));
    let mut again = 0;
    for i in 0..3 {
        let d = w.feed(OutboundInput::Attempt(attempt(
            ALICE,
            "r@x.test",
            0,
            T0 + (30 + i) * SEC,
        )));
        assert_eq!(outputs::<SubmissionDecided>(&d)[0].limit.as_deref(), rph);
        again += outputs::<AccountBlocked>(&d).len();
        assert_eq!(again, usize::from(i == 2));
    }
}

#[test]
fn relaying_far_over_the_daily_limit_is_abuse_too() {
    let mut w = World::new(OutboundConfig {
        abuse_daily_messages_factor: 2,
        ..config()
    });
    let blocks: Vec<Vec<AccountBlocked>> = (0..8)
        .map(|i| outputs(&w.feed(accepted(&format!("m{i}"), T0 + i * MIN, 10))))
        .collect();
    let at: Vec<usize> = blocks.iter().map(Vec::len).collect();
    assert_eq!(at, [0, 0, 0, 0, 0, 1, 0, 0], "6 = 2 x 3 messages, once");
    assert!(blocks[5][0]
        .detail
        .starts_with("6 messages relayed in the last day, 2 times the plan's 3"));
}

#[test]
fn a_virus_from_an_account_blocks_it_and_banned_never_does() {
    let mut w = World::new(config());
    let banned = w.feed(OutboundInput::Submitted(submitted(
        "b1",
        T0,
        10,
        ScanVerdict::Banned,
        SubmitAction::Rejected,
    )));
    assert!(banned.outputs.is_empty());
    let virus = submitted(
        "v1",
        T0 + SEC,
        68,
        ScanVerdict::Infected,
        SubmitAction::Rejected,
    );
    let d = w.feed(OutboundInput::Submitted(virus.clone()));
    let blocked = outputs::<AccountBlocked>(&d);
    assert_eq!(blocked.len(), 1);
    assert_eq!(
        (
            blocked[0].reason,
            blocked[0].message_id.as_deref(),
            blocked[0].detail.as_str()
        ),
        (
            BlockReason::Virus,
            Some("v1@example.org"),
            "Eicar-Signature"
        )
    );
    assert_eq!(d.outputs[0].topic, "accounts.events");
    assert_eq!(d.outputs[1].topic, "admin.alerts");
    let alerts = outputs::<AdminAlert>(&d);
    let alert = &alerts[0];
    assert_eq!(alert.kind, VIRUS_KIND);
    assert_eq!(
        alert.summary,
        "alice@example.org submitted a virus (Eicar-Signature); the account is blocked"
    );
    let detail = alert.detail.as_deref().unwrap_or("");
    assert!(
        detail.contains("queue id Q1") && detail.contains("to bob@example.net"),
        "{detail}"
    );
    assert!(
        detail.contains("`mailfleet account unblock alice@example.org`"),
        "{detail}"
    );
    // Once per message: the same event again is dropped.
    assert!(matches!(
        w.feed(OutboundInput::Submitted(virus)).verdict,
        Verdict::Ignore
    ));
    let after = w.attempt("r@x.test", T0 + 2 * SEC);
    assert_eq!(
        (after.action, after.limit.as_deref(), after.reply.as_str()),
        (
            LimitAction::Defer,
            Some("blocked"),
            "DEFER 4.7.1 account alice@example.org is blocked"
        )
    );
    // A second infected message: blocked (and alerted) again, for it.
    let d = w.feed(OutboundInput::Submitted(submitted(
        "v2",
        T0 + 3 * SEC,
        68,
        ScanVerdict::Infected,
        SubmitAction::Rejected,
    )));
    assert_eq!(outputs::<AccountBlocked>(&d).len(), 1);
}

#[test]
fn bad_input_is_dead_lettered_naming_the_value() {
    let mut w = World::new(config());
    let d = w.feed(OutboundInput::Attempt(attempt("", "r@x.test", 0, T0)));
    assert!(
        rejection(&d).contains("account \"\" is empty"),
        "{}",
        rejection(&d)
    );
    let d = w.feed(OutboundInput::Attempt(attempt(ALICE, "r@x.test", -5, T0)));
    assert!(
        rejection(&d).contains("size -5 is negative"),
        "{}",
        rejection(&d)
    );
    let mut m = submitted("m", T0, -1, ScanVerdict::Clean, SubmitAction::Accepted);
    let d = w.feed(OutboundInput::Submitted(m.clone()));
    assert!(rejection(&d).contains("size -1 is negative"));
    m.size = 1;
    m.account = " ".into();
    assert!(rejection(&w.feed(OutboundInput::Submitted(m))).contains("account \" \" is empty"));
    let d = w.feed(OutboundInput::Plan(PlanChanged {
        envelope: Envelope::new("p1", T0, "api"),
        account: ALICE.into(),
        plan: "gold".into(),
    }));
    assert!(
        rejection(&d).contains("plan \"gold\" has no limits"),
        "{}",
        rejection(&d)
    );
    let d = w.feed(OutboundInput::Registered(registered("platinum")));
    assert!(
        rejection(&d).starts_with("AccountRegistered r1: plan \"platinum\""),
        "{}",
        rejection(&d)
    );
    // Nothing of them was kept: the next attempt is the first.
    assert_eq!(w.attempt("r@x.test", T0 + SEC).recipients_last_hour, 1);
}
