use mailfleet_events::{accounts::LoginChannel, Envelope};

use super::*;

fn env(id: &str, at: i64) -> Envelope {
    Envelope::new(id, at, "test")
}

fn registered(id: &str, account: &str, at: i64) -> AccountEvent {
    AccountEvent::Registered(AccountRegistered {
        envelope: env(id, at),
        account: account.into(),
        password_hash: "{ARGON2}$argon2id$stub".into(),
        plan: "free".into(),
        display_name: Some("Bob".into()),
    })
}

fn status(id: &str, account: &str, to: AccountStatus) -> AccountEvent {
    AccountEvent::StatusChanged(AccountStatusChanged {
        envelope: env(id, 5),
        account: account.into(),
        from: AccountStatus::Pending,
        to,
        reason: "t".into(),
        settings_hash: None,
    })
}

fn login(id: &str, account: &str, at: i64, channel: LoginChannel) -> AccountEvent {
    AccountEvent::Login(LoginRecorded {
        envelope: env(id, at),
        account: account.into(),
        channel,
        ip: None,
    })
}

fn plan(id: &str, account: &str, plan: &str) -> AccountEvent {
    AccountEvent::Plan(PlanChanged {
        envelope: env(id, 9),
        account: account.into(),
        plan: plan.into(),
    })
}

#[test]
fn api_projection_folds_registration_status_plan_quota_and_logins() {
    let p = Projection::ready(false);
    p.apply(&registered("r1", "Bob@X.test", 1));
    let bob = p.get("bob@x.test").expect("registered");
    assert_eq!(bob.status, AccountStatus::Pending);
    assert_eq!(bob.registered_at, 1);
    p.apply(&status("s1", "bob@x.test", AccountStatus::Active));
    p.apply(&plan("p1", "bob@x.test", "pro"));
    p.apply(&AccountEvent::Quota(QuotaChanged {
        envelope: env("q1", 9),
        account: "bob@x.test".into(),
        quota_bytes: Some(42),
    }));
    p.apply(&login("l1", "bob@x.test", 20, LoginChannel::Syncml));
    // An older login arriving late does not move the latest back.
    p.apply(&login("l2", "bob@x.test", 10, LoginChannel::Webmail));
    let view = p.get("bob@x.test").unwrap().view();
    assert_eq!(view.status, "active");
    assert_eq!(view.plan, "pro");
    assert_eq!(view.quota_bytes, Some(42));
    assert_eq!(view.last_login_at, Some(20));
    assert_eq!(view.last_login_channel.as_deref(), Some("syncml"));
    assert!(!view.deleted);
    // Events about unknown accounts are ignored.
    p.apply(&plan("p2", "nobody@x.test", "pro"));
    assert!(p.get("nobody@x.test").is_none());
    assert_eq!(p.len(), 1);
}

#[test]
fn api_projection_keeps_the_first_registration_until_the_tombstone() {
    let p = Projection::ready(true);
    p.apply(&registered("r1", "bob@x.test", 1));
    p.apply(&registered("r2", "bob@x.test", 2));
    assert_eq!(p.get("bob@x.test").unwrap().registered_at, 1);
    assert_eq!(p.get("bob@x.test").unwrap().status, AccountStatus::Active);
    p.apply(&AccountEvent::Deleted(AccountDeleted {
        envelope: env("d1", 3),
        account: "bob@x.test".into(),
        reason: "grace-expired".into(),
    }));
    let view = p.get("bob@x.test").unwrap().view();
    assert!(view.deleted && view.status == "deleted");
    p.apply(&registered("r3", "bob@x.test", 4));
    assert_eq!(p.get("bob@x.test").unwrap().registered_at, 4);
}

#[test]
fn api_projection_own_writes_apply_at_once_and_again_harmlessly() {
    let p = Projection::ready(true);
    p.apply(&registered("r1", "bob@x.test", 1));
    let own = plan(&new_event_id(), "bob@x.test", "plus");
    p.apply_own(&own);
    assert_eq!(p.get("bob@x.test").unwrap().plan, "plus");
    let seen = p.get("bob@x.test").unwrap();
    // The follower reads the registration and the own write again: no change.
    p.apply(&registered("r1", "bob@x.test", 1));
    p.apply(&own);
    assert_eq!(p.get("bob@x.test").unwrap(), seen);
    let own_login = login(&new_event_id(), "bob@x.test", 7, LoginChannel::Webmail);
    p.apply_own(&own_login);
    p.apply(&own_login);
    assert_eq!(
        p.get("bob@x.test").unwrap().last_login,
        Some((7, LoginChannel::Webmail))
    );
}

#[test]
fn api_projection_event_ids_are_fresh_and_hashes_never_debug_printed() {
    let (a, b) = (new_event_id(), new_event_id());
    assert_ne!(a, b);
    assert!(a.starts_with("api:") && a.len() == 36, "{a}");
    let p = Projection::ready(true);
    p.apply(&registered("r1", "bob@x.test", 1));
    let shown = format!("{:?}", p.get("bob@x.test").unwrap());
    assert!(!shown.contains("ARGON2"), "{shown}");
}

#[test]
fn api_projection_is_not_ready_until_the_follower_caught_up() {
    let p = Projection::with(true, Following::default());
    assert!(!p.is_ready());
    assert!(Projection::ready(true).is_ready());
}
