//! Event → intent, without I/O.

use mailfleet_events::{
    accounts::{LoginChannel, LoginRecorded},
    Envelope, Registry,
};
use mailfleet_runtime::{Decode, Overlay, Verdict};

use super::*;

const ALICE: &str = "alice@example.test";
const HASH: &str = "{ARGON2}$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g";

fn env() -> Envelope {
    Envelope::new("in-1", 1_000, "test")
}

fn registered(account: &str, hash: &str) -> DirectoryInput {
    DirectoryInput::Registered(AccountRegistered {
        envelope: env(),
        account: account.into(),
        password_hash: hash.into(),
        plan: "free".into(),
        display_name: Some("Alice".into()),
    })
}

fn status(to: AccountStatus) -> DirectoryInput {
    DirectoryInput::StatusChanged(AccountStatusChanged {
        envelope: env(),
        account: ALICE.into(),
        from: AccountStatus::Active,
        to,
        reason: "test".into(),
        settings_hash: None,
    })
}

fn step(step: DeletionStep) -> DirectoryInput {
    DirectoryInput::DeletionStep(DeletionStepRequested {
        envelope: env(),
        account: ALICE.into(),
        step,
        attempt: 1,
    })
}

/// Decide `input` over `overlay`, then apply its changes to it.
fn run(overlay: &mut Overlay, input: &DirectoryInput) -> Decision {
    let d = decide(&StateView::in_memory(overlay), input).unwrap();
    if matches!(d.verdict, Verdict::Apply) {
        overlay.extend(d.changes.iter().cloned());
    }
    d
}

fn intent(d: &Decision) -> Option<&Intent> {
    d.intent_as::<Intent>()
}

fn rejected(d: &Decision) -> String {
    match &d.verdict {
        Verdict::Reject(reason) => reason.clone(),
        _ => panic!("not rejected"),
    }
}

fn modify(account: &str, change: Change, gone: bool) -> Intent {
    Intent::Modify {
        account: account.into(),
        change,
        gone,
    }
}

#[test]
fn a_registration_adds_a_pending_entry_for_the_lower_cased_account() {
    let d = run(
        &mut Overlay::default(),
        &registered("Alice@Example.TEST", HASH),
    );
    let Some(Intent::Add(new)) = intent(&d) else {
        panic!("expected an add");
    };
    assert_eq!(new.account, ALICE);
    assert_eq!(new.status, "pending");
    assert_eq!(new.password_hash, HASH);
    assert_eq!(new.display_name.as_deref(), Some("Alice"));
}

#[test]
fn a_hash_without_a_scheme_is_rejected_without_showing_it() {
    for bad in ["Secret123", "{}abc", "{SSHA512}", "", "{ARGON2"] {
        let reason = rejected(&run(&mut Overlay::default(), &registered(ALICE, bad)));
        assert!(reason.contains("not a {SCHEME}"), "{reason}");
        if !bad.is_empty() {
            assert!(!reason.contains(bad), "the value leaked: {reason}");
        }
    }
    let reason = rejected(&run(
        &mut Overlay::default(),
        &DirectoryInput::Password(AccountPasswordChanged {
            envelope: env(),
            account: ALICE.into(),
            password_hash: "Plain-text-1".into(),
            reason: "reset".into(),
        }),
    ));
    assert!(!reason.contains("Plain-text-1"), "{reason}");
}

#[test]
fn status_changes_set_the_lower_case_status_and_deleted_sets_nothing() {
    let mut overlay = Overlay::default();
    for (to, expected) in [
        (AccountStatus::Active, "active"),
        (AccountStatus::Inactive, "inactive"),
        (AccountStatus::Blocked, "blocked"),
        (AccountStatus::Pending, "pending"),
    ] {
        let d = run(&mut overlay, &status(to));
        assert_eq!(
            intent(&d),
            Some(&modify(ALICE, Change::Status(expected.into()), false))
        );
    }
    let d = run(&mut overlay, &status(AccountStatus::Deleted));
    assert!(matches!(d.verdict, Verdict::Apply) && intent(&d).is_none());
    let reason = rejected(&run(
        &mut Overlay::default(),
        &status(AccountStatus::Unknown),
    ));
    assert!(
        reason.contains("Unknown") && reason.contains(ALICE),
        "{reason}"
    );
}

#[test]
fn deleting_marks_the_account_gone_so_later_changes_may_miss_the_entry() {
    let mut overlay = Overlay::default();
    let quota = DirectoryInput::Quota(QuotaChanged {
        envelope: env(),
        account: ALICE.into(),
        quota_bytes: Some(5),
    });
    assert_eq!(
        intent(&run(&mut overlay, &quota)),
        Some(&modify(ALICE, Change::Quota(Some(5)), false))
    );
    assert_eq!(
        intent(&run(&mut overlay, &status(AccountStatus::Deleting))),
        Some(&modify(ALICE, Change::Status("deleting".into()), true))
    );
    assert_eq!(
        intent(&run(&mut overlay, &quota)),
        Some(&modify(ALICE, Change::Quota(Some(5)), true))
    );
    // A new registration of the address is a new account.
    run(&mut overlay, &registered(ALICE, HASH));
    assert_eq!(
        intent(&run(&mut overlay, &quota)),
        Some(&modify(ALICE, Change::Quota(Some(5)), false))
    );
}

#[test]
fn only_the_directory_step_deletes_the_subtree() {
    let mut overlay = Overlay::default();
    let d = run(&mut overlay, &step(DeletionStep::Maildir));
    assert!(matches!(d.verdict, Verdict::Apply) && intent(&d).is_none());
    assert_eq!(d.changes.len(), 1, "marks the account gone");
    let d = run(&mut overlay, &step(DeletionStep::Directory));
    assert_eq!(
        intent(&d),
        Some(&Intent::DeleteSubtree {
            account: ALICE.into()
        })
    );
    assert!(d.changes.is_empty(), "already marked");
}

#[test]
fn quota_plan_and_password_modify_and_bad_values_are_rejected() {
    let mut overlay = Overlay::default();
    let back_to_plan = DirectoryInput::Quota(QuotaChanged {
        envelope: env(),
        account: ALICE.into(),
        quota_bytes: None,
    });
    assert_eq!(
        intent(&run(&mut overlay, &back_to_plan)),
        Some(&modify(ALICE, Change::Quota(None), false))
    );
    let negative = DirectoryInput::Quota(QuotaChanged {
        envelope: env(),
        account: ALICE.into(),
        quota_bytes: Some(-1),
    });
    assert!(rejected(&run(&mut overlay, &negative)).contains("-1"));
    let plan = DirectoryInput::Plan(PlanChanged {
        envelope: env(),
        account: ALICE.into(),
        plan: "pro".into(),
    });
    assert_eq!(
        intent(&run(&mut overlay, &plan)),
        Some(&modify(ALICE, Change::Plan("pro".into()), false))
    );
    let password = DirectoryInput::Password(AccountPasswordChanged {
        envelope: env(),
        account: ALICE.into(),
        password_hash: HASH.into(),
        reason: "reset".into(),
    });
    assert_eq!(
        intent(&run(&mut overlay, &password)),
        Some(&modify(ALICE, Change::Password(HASH.into()), false))
    );
}

#[test]
fn other_events_and_empty_accounts() {
    let d = run(&mut Overlay::default(), &DirectoryInput::Other(env()));
    assert!(matches!(d.verdict, Verdict::Ignore));
    let login = LoginRecorded {
        envelope: env(),
        account: ALICE.into(),
        channel: LoginChannel::Webmail,
        ip: None,
    };
    let bytes = mailfleet_events::encode(&login).unwrap();
    let decoded = DirectoryInput::decode(Registry::builtin(), &bytes).unwrap();
    assert!(matches!(decoded, DirectoryInput::Other(_)));
    let bytes = mailfleet_events::encode(&AccountDeleted {
        envelope: env(),
        account: ALICE.into(),
        reason: "deleted".into(),
    })
    .unwrap();
    let decoded = DirectoryInput::decode(Registry::builtin(), &bytes).unwrap();
    assert!(matches!(decoded, DirectoryInput::Deleted(_)));
    let reason = rejected(&run(&mut Overlay::default(), &registered("  ", HASH)));
    assert!(
        reason.contains("in-1") && reason.contains("empty"),
        "{reason}"
    );
}
