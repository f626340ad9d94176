//! One test per postgrey rule, with injected time.

use mailfleet_events::greylist::GreylistReason as R;
use mailfleet_runtime::{Overlay, Verdict};

use super::*;
use crate::whitelist::Whitelists;

const T0: i64 = 1_795_881_600; // 2026-11-28 16:00 UTC
const DAY: i64 = 86_400;

fn greylist(config: GreylistConfig) -> Greylist {
    let mut lists = Whitelists::default();
    lists
        .add_clients("clients", "google.com\n198.51.100.0/24\n")
        .unwrap();
    lists.add_recipients("recipients", "postmaster@\n").unwrap();
    Greylist::new(config, WhitelistFiles::fixed(lists), "decisions")
}

fn attempt(ip: &str, sender: &str, rcpt: &str) -> DeliveryAttempted {
    DeliveryAttempted {
        envelope: Envelope::new("a", 0, "policy"),
        client_address: Some(ip.into()),
        client_name: Some("mx.sender.example".into()),
        reverse_client_name: None,
        helo_name: None,
        sender: Some(sender.into()),
        recipient: Some(rcpt.into()),
        instance: None,
        size: None,
        queue_id: None,
        policy_host: "mx1".into(),
        answered: None,
    }
}

/// Judge at `now` and apply the changes, as the runtime would.
fn step(g: &Greylist, state: &mut Overlay, a: &DeliveryAttempted, now: i64) -> Answer {
    let mut d = Decision::apply();
    let answer = g
        .judge(&StateView::in_memory(state), a, now, &mut d)
        .unwrap();
    state.extend(d.changes);
    answer
}

fn tick(g: &Greylist, state: &mut Overlay, now: i64) -> usize {
    let mut d = Decision::apply();
    let removed = g.sweep(&StateView::in_memory(state), now, &mut d).unwrap();
    state.extend(d.changes);
    removed
}

fn defaults() -> (Greylist, Overlay, DeliveryAttempted) {
    (
        greylist(GreylistConfig::default()),
        Overlay::default(),
        attempt("192.0.2.10", "alice@example.net", "bob@example.org"),
    )
}

#[test]
fn a_new_triplet_is_deferred_then_passes_after_the_delay_with_one_header() {
    let (g, mut s, a) = defaults();
    let first = step(&g, &mut s, &a, T0);
    assert_eq!(
        (first.verdict, first.reason, first.delay_seconds),
        (GreylistVerdict::Defer, R::New, 300)
    );
    assert_eq!(
        first.action,
        "DEFER_IF_PERMIT Greylisted, try again in 300 seconds"
    );
    assert_eq!(
        first.triplet.as_deref(),
        Some("192.0.2.0/alice@example.net/bob@example.org")
    );

    let early = step(&g, &mut s, &a, T0 + 100);
    assert_eq!((early.reason, early.delay_seconds), (R::TooEarly, 200));

    let pass = step(&g, &mut s, &a, T0 + 300);
    assert_eq!(
        (pass.verdict, pass.reason, pass.delay_seconds),
        (GreylistVerdict::Pass, R::Passed, 300)
    );
    assert_eq!(pass.action, "PREPEND X-Greylist: delayed 300 seconds by mailfleet at localhost; Sat, 28 Nov 2026 16:05:00 UTC");

    let later = step(&g, &mut s, &a, T0 + 4000);
    assert_eq!((later.action.as_str(), later.reason), ("DUNNO", R::Passed));
}

#[test]
fn a_first_retry_after_the_retry_window_starts_over() {
    let (g, mut s, a) = defaults();
    step(&g, &mut s, &a, T0);
    let late = step(&g, &mut s, &a, T0 + 2 * DAY + 1);
    assert_eq!(
        (late.verdict, late.reason, late.delay_seconds),
        (GreylistVerdict::Defer, R::RetryWindowExpired, 300)
    );
    let pass = step(&g, &mut s, &a, T0 + 2 * DAY + 301);
    assert_eq!(pass.verdict, GreylistVerdict::Pass);
}

#[test]
fn a_passed_triplet_is_not_restarted_by_the_retry_window() {
    let (g, mut s, a) = defaults();
    step(&g, &mut s, &a, T0);
    step(&g, &mut s, &a, T0 + 300);
    let much_later = step(&g, &mut s, &a, T0 + 10 * DAY);
    assert_eq!(
        (much_later.verdict, much_later.action.as_str()),
        (GreylistVerdict::Pass, "DUNNO")
    );
}

#[test]
fn ticks_expire_triplets_at_max_age_and_unpassed_ones_at_the_retry_window() {
    let (g, mut s, a) = defaults();
    step(&g, &mut s, &a, T0);
    step(&g, &mut s, &a, T0 + 300); // passed, last seen T0+300
    let stale = attempt("192.0.2.10", "eve@example.net", "bob@example.org");
    step(&g, &mut s, &stale, T0); // never retried

    assert_eq!(tick(&g, &mut s, T0 + DAY), 0);
    assert_eq!(
        tick(&g, &mut s, T0 + 2 * DAY + 1),
        1,
        "the unpassed triplet goes after the retry window"
    );
    assert_eq!(
        tick(&g, &mut s, T0 + 300 + 35 * DAY),
        0,
        "exactly max-age is kept"
    );
    assert!(
        tick(&g, &mut s, T0 + 301 + 35 * DAY) >= 1,
        "past max-age it goes"
    );
    let again = step(&g, &mut s, &a, T0 + 36 * DAY);
    assert_eq!(again.reason, R::New, "an expired triplet is new again");
}

#[test]
fn the_auto_whitelist_counts_at_most_one_pass_an_hour() {
    let (g, mut s, _) = defaults();
    let pass_new_triplet = |s: &mut Overlay, n: usize, at: i64| {
        let a = attempt(
            "192.0.2.10",
            "alice@example.net",
            &format!("user{n}x@example.org"),
        );
        step(&g, s, &a, at);
        step(&g, s, &a, at + 300)
    };
    // Two passes in the same hour count once.
    pass_new_triplet(&mut s, 0, T0);
    pass_new_triplet(&mut s, 1, T0 + 10);
    for n in 2..6 {
        pass_new_triplet(&mut s, n, T0 + n as i64 * 3 * 3600);
    }
    // 5 counted passes (hours 0, 6, 9, 12, 15): whitelisted.
    let a = attempt("192.0.2.10", "new@example.net", "fresh@example.org");
    let answer = step(&g, &mut s, &a, T0 + DAY);
    assert_eq!(
        (answer.reason, answer.action.as_str()),
        (R::AutoWhitelisted, "DUNNO")
    );
    // Another address of the same /24 is not whitelisted: the list is per address.
    let other = attempt("192.0.2.11", "new@example.net", "fresh@example.org");
    assert_eq!(
        step(&g, &mut s, &other, T0 + DAY).verdict,
        GreylistVerdict::Defer
    );
}

#[test]
fn the_auto_whitelist_needs_the_fifth_counted_pass_and_zero_turns_it_off() {
    let run = |awl: u32| {
        let g = greylist(GreylistConfig {
            auto_whitelist_clients: awl,
            ..GreylistConfig::default()
        });
        let mut s = Overlay::default();
        for n in 0..4 {
            let a = attempt(
                "192.0.2.10",
                "alice@example.net",
                &format!("u{n}x@example.org"),
            );
            step(&g, &mut s, &a, T0 + n * 7200);
            step(&g, &mut s, &a, T0 + n * 7200 + 300);
        }
        step(
            &g,
            &mut s,
            &attempt("192.0.2.10", "z@example.net", "z@example.org"),
            T0 + DAY,
        )
        .reason
    };
    assert_eq!(run(5), R::New, "four passes are not enough");
    assert_eq!(run(4), R::AutoWhitelisted);
    assert_eq!(run(0), R::New);
}

#[test]
fn ipv6_clients_share_a_triplet_within_a_64() {
    let (g, mut s, _) = defaults();
    let a = attempt("2001:db8:1:2::25", "alice@example.net", "bob@example.org");
    let b = attempt(
        "2001:db8:1:2:ffff::9",
        "alice@example.net",
        "bob@example.org",
    );
    let c = attempt("2001:db8:1:3::25", "alice@example.net", "bob@example.org");
    assert_eq!(
        step(&g, &mut s, &a, T0).triplet.as_deref(),
        Some("2001:db8:1:2::/alice@example.net/bob@example.org")
    );
    assert_eq!(
        step(&g, &mut s, &b, T0 + 300).verdict,
        GreylistVerdict::Pass,
        "same /64 retries pass"
    );
    assert_eq!(
        step(&g, &mut s, &c, T0 + 300).reason,
        R::New,
        "another /64 is another triplet"
    );
}

#[test]
fn lookup_by_host_uses_the_full_address() {
    let g = greylist(GreylistConfig {
        lookup_by_host: true,
        ..GreylistConfig::default()
    });
    let mut s = Overlay::default();
    step(
        &g,
        &mut s,
        &attempt("192.0.2.10", "a@example.net", "b@example.org"),
        T0,
    );
    let other_host = step(
        &g,
        &mut s,
        &attempt("192.0.2.11", "a@example.net", "b@example.org"),
        T0 + 300,
    );
    assert_eq!(other_host.reason, R::New);
}

#[test]
fn batv_extensions_and_verp_retries_match_the_first_attempt() {
    let (g, mut s, _) = defaults();
    step(
        &g,
        &mut s,
        &attempt(
            "192.0.2.10",
            "prvs=0123456789=alice@example.net",
            "bob@example.org",
        ),
        T0,
    );
    let batv = step(
        &g,
        &mut s,
        &attempt(
            "192.0.2.10",
            "prvs=9876543210=alice@example.net",
            "bob@example.org",
        ),
        T0 + 300,
    );
    assert_eq!(batv.verdict, GreylistVerdict::Pass);
    step(
        &g,
        &mut s,
        &attempt(
            "192.0.2.10",
            "list+bounce-17@example.net",
            "bob@example.org",
        ),
        T0,
    );
    let verp = step(
        &g,
        &mut s,
        &attempt(
            "192.0.2.10",
            "list+bounce-99@example.net",
            "bob@example.org",
        ),
        T0 + 300,
    );
    assert_eq!(verp.verdict, GreylistVerdict::Pass);
    step(
        &g,
        &mut s,
        &attempt(
            "192.0.2.10",
            "bounce-17-4@lists.example.net",
            "bob@example.org",
        ),
        T0,
    );
    let digits = step(
        &g,
        &mut s,
        &attempt(
            "192.0.2.10",
            "bounce-18-5@lists.example.net",
            "bob@example.org",
        ),
        T0 + 300,
    );
    assert_eq!(digits.verdict, GreylistVerdict::Pass);
}

#[test]
fn missing_attributes_get_dunno_but_the_null_sender_is_greylisted() {
    let (g, mut s, a) = defaults();
    for strip in 0..4 {
        let mut m = a.clone();
        match strip {
            0 => m.client_address = None,
            1 => m.client_name = None,
            2 => m.recipient = None,
            _ => m.sender = None,
        }
        let answer = step(&g, &mut s, &m, T0);
        assert_eq!(
            (answer.reason, answer.action.as_str()),
            (R::MissingAttributes, "DUNNO")
        );
    }
    let mut bad_ip = a.clone();
    bad_ip.client_address = Some("not-an-ip".into());
    assert_eq!(step(&g, &mut s, &bad_ip, T0).reason, R::MissingAttributes);
    let bounce = attempt("192.0.2.10", "", "bob@example.org");
    assert_eq!(step(&g, &mut s, &bounce, T0).reason, R::New);
}

#[test]
fn whitelisted_clients_and_recipients_pass_at_once() {
    let (g, mut s, mut a) = defaults();
    a.client_name = Some("mail-wm1-f54.google.com".into());
    assert_eq!(step(&g, &mut s, &a, T0).reason, R::WhitelistedClient);
    let by_ip = attempt("198.51.100.7", "x@example.net", "y@example.org");
    assert_eq!(step(&g, &mut s, &by_ip, T0).reason, R::WhitelistedClient);
    let postmaster = attempt("192.0.2.10", "x@example.net", "postmaster@example.org");
    assert_eq!(
        step(&g, &mut s, &postmaster, T0).reason,
        R::WhitelistedRecipient
    );
    assert!(s.is_empty(), "whitelisted attempts leave no greylist state");
}

#[test]
fn the_header_is_prepended_once_per_message() {
    let (g, mut s, _) = defaults();
    let mut one = attempt("192.0.2.10", "a@example.net", "one@example.org");
    let mut two = attempt("192.0.2.10", "a@example.net", "two@example.org");
    one.instance = Some("1a2b.3c4d".into());
    two.instance = Some("1a2b.3c4d".into());
    step(&g, &mut s, &one, T0);
    step(&g, &mut s, &two, T0);
    assert!(step(&g, &mut s, &one, T0 + 300)
        .action
        .starts_with("PREPEND "));
    let second = step(&g, &mut s, &two, T0 + 300);
    assert_eq!(
        (second.verdict, second.action.as_str()),
        (GreylistVerdict::Pass, "DUNNO")
    );
}

#[test]
fn the_texts_are_configurable() {
    let config = GreylistConfig {
        greylist_action: "DEFER".into(),
        greylist_text: "come back in %s s to %r".into(),
        delay_s: 60,
        ..GreylistConfig::default()
    };
    let g = greylist(config);
    let mut s = Overlay::default();
    let answer = step(
        &g,
        &mut s,
        &attempt("192.0.2.10", "a@example.net", "b@example.org"),
        T0,
    );
    assert_eq!(answer.action, "DEFER come back in 60 s to example.org");
}

fn config_changed(settings: &Settings, hash: &str) -> ConfigChanged {
    ConfigChanged {
        envelope: Envelope::new("cfg", 0, "test"),
        consumer: NAME.into(),
        settings: settings.json.clone(),
        hash: hash.into(),
    }
}

#[test]
fn settings_in_force_come_from_the_log_not_the_file() {
    let (g, mut state, a) = defaults();
    assert_eq!(step(&g, &mut state, &a, T0).reason, R::New);
    // A recorded delay of 60 s is in force from here on, whatever the file says.
    let short = GreylistConfig {
        delay_s: 60,
        ..GreylistConfig::default()
    };
    let settings = Settings::of(&short.rules()).unwrap();
    let d = g
        .take_settings(
            &StateView::in_memory(&state),
            &config_changed(&settings, &settings.hash),
        )
        .unwrap();
    assert!(matches!(d.verdict, Verdict::Apply));
    state.extend(d.changes);
    let (cfg, hash) = g.config_in_force(&StateView::in_memory(&state)).unwrap();
    assert_eq!(
        (cfg.config.delay_s, hash),
        (60, Some(settings.hash.clone()))
    );
    assert_eq!(step(&g, &mut state, &a, T0 + 61).reason, R::Passed);
    // The same settings again change nothing; a forged hash is refused.
    let again = g
        .take_settings(
            &StateView::in_memory(&state),
            &config_changed(&settings, &settings.hash),
        )
        .unwrap();
    assert!(matches!(again.verdict, Verdict::Ignore));
    let forged = g
        .take_settings(
            &StateView::in_memory(&state),
            &config_changed(&settings, "00"),
        )
        .unwrap();
    assert!(matches!(&forged.verdict, Verdict::Reject(r) if r.contains("is not the SHA-256")));
    let bad = Settings::from_json(r#"{"delay_s":"soon"}"#.into());
    let refused = g
        .take_settings(
            &StateView::in_memory(&state),
            &config_changed(&bad, &bad.hash),
        )
        .unwrap();
    assert!(matches!(&refused.verdict, Verdict::Reject(r) if r.contains("soon")));
}

#[test]
fn metric_labels_are_the_variant_names_in_lower_case() {
    use GreylistVerdict as V;
    for v in [V::Defer, V::Pass, V::Unknown] {
        assert_eq!(verdict_label(v), format!("{v:?}").to_lowercase());
    }
    for r in [
        R::New,
        R::TooEarly,
        R::Passed,
        R::WhitelistedClient,
        R::WhitelistedRecipient,
        R::AutoWhitelisted,
        R::MissingAttributes,
        R::RetryWindowExpired,
        R::Unknown,
    ] {
        assert_eq!(reason_label(r), format!("{r:?}").to_lowercase());
    }
}
