//! Answering a repeat at once: the triplets the greylist let through, as
//! its decisions say, so that the next attempt of such a triplet is
//! answered `DUNNO` as soon as Kafka has acknowledged the attempt, without
//! waiting for the greylist to decide it.
//!
//! Why the answer is the greylist's own: once a triplet has waited out the
//! delay (its state's `last - first >= delay`), every later attempt of it
//! is let through (`DUNNO`: whitelisted, auto-whitelisted or passed before)
//! until the nightly clean-up forgets it, `max_age_days` after it was last
//! seen. A repeat is answered here only within `policy.answer_repeats_s`
//! of the latest decision that let it through, far inside that age, and
//! only while the settings in force are the ones that decision was made
//! with. The attempt still goes to `smtp.attempts` and is decided as
//! always; it carries the answer given (`answered`), the greylist counts
//! a decision that differs, and `audit decisions greylist` lists it.
//!
//! A pass stamped before the one it follows (a policy host whose clock is
//! behind) moves the greylist's record of the triplet back, so the triplet
//! is forgotten here. What this cannot see: a settings change, until the
//! first decision made under it (until then a repeat is answered by the
//! old settings), and an attempt from such a host still on its way to the
//! greylist. Both are counted and audited, never silent.

use std::sync::Mutex;

use mailfleet_events::greylist::{GreylistDecided, GreylistVerdict};
use rustc_hash::FxHashMap;

/// The triplets let through, learned from every policy host's decisions.
pub struct Passed {
    /// How long after the latest pass a repeat is answered here, seconds.
    within_s: i64,
    /// Most triplets kept; past it the table starts again empty.
    max: usize,
    inner: Mutex<Known>,
}

#[derive(Default)]
struct Known {
    /// The settings hash of the latest decision seen.
    settings: Option<String>,
    /// Triplet → event time of the latest decision that let it through, s.
    passed: FxHashMap<String, i64>,
}

impl Passed {
    pub fn new(within_s: u64, max: usize) -> Self {
        Self {
            within_s: i64::try_from(within_s).unwrap_or(i64::MAX),
            max: max.max(1),
            inner: Mutex::default(),
        }
    }

    /// Take in one decision, from any policy host, in partition order.
    pub fn learn(&self, d: &GreylistDecided) {
        let mut known = self.lock();
        if known.settings != d.settings_hash {
            // Other settings: what the old ones let through proves nothing.
            known.passed.clear();
            known.settings = d.settings_hash.clone();
        }
        let Some(triplet) = &d.triplet else {
            // Whitelisted or auto-whitelisted: the triplet was not looked at.
            return;
        };
        let at = d.envelope.event_time.div_euclid(1000);
        match d.verdict {
            GreylistVerdict::Pass => {
                match known.passed.get(triplet) {
                    // Stamped before the pass it follows: the greylist's
                    // record of the triplet went back with it, and may
                    // no longer say it waited out the delay.
                    Some(&latest) if at < latest => {
                        known.passed.remove(triplet);
                    }
                    Some(_) => {
                        known.passed.insert(triplet.clone(), at);
                    }
                    None => {
                        if known.passed.len() >= self.max {
                            known.passed.clear();
                        }
                        known.passed.insert(triplet.clone(), at);
                    }
                }
            }
            GreylistVerdict::Defer | GreylistVerdict::Unknown => {
                known.passed.remove(triplet);
            }
        }
    }

    /// Whether an attempt of `triplet` at `now` (seconds) is let through
    /// by what the greylist decided: it passed at most `within_s` before,
    /// and not after `now` (a clock behind the one that stamped the pass
    /// is not trusted).
    pub fn lets_through(&self, triplet: &str, now: i64) -> bool {
        self.lock()
            .passed
            .get(triplet)
            .is_some_and(|&at| at <= now && now - at <= self.within_s)
    }

    /// How many triplets are known to have passed.
    pub fn len(&self) -> usize {
        self.lock().passed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use mailfleet_events::{greylist::GreylistReason, Envelope};

    use super::*;

    fn decided(
        triplet: Option<&str>,
        verdict: GreylistVerdict,
        at_s: i64,
        hash: &str,
    ) -> GreylistDecided {
        GreylistDecided {
            envelope: Envelope::new("d", at_s * 1000, "greylist"),
            triplet: triplet.map(str::to_string),
            verdict,
            reason: GreylistReason::Passed,
            action: "DUNNO".into(),
            delay_seconds: 0,
            policy_host: "mx2".into(),
            settings_hash: Some(hash.into()),
        }
    }

    #[test]
    fn a_passed_triplet_is_let_through_within_the_window_only() {
        let p = Passed::new(3600, 100);
        p.learn(&decided(Some("t1"), GreylistVerdict::Pass, 1000, "h"));
        assert!(p.lets_through("t1", 1000));
        assert!(p.lets_through("t1", 4600));
        assert!(!p.lets_through("t1", 4601), "past the window");
        assert!(!p.lets_through("t1", 999), "a clock behind the pass");
        assert!(!p.lets_through("t2", 1000), "never seen");
    }

    #[test]
    fn a_deferral_or_other_settings_forget_what_passed() {
        let p = Passed::new(3600, 100);
        p.learn(&decided(Some("t1"), GreylistVerdict::Pass, 1000, "h"));
        p.learn(&decided(Some("t2"), GreylistVerdict::Pass, 1000, "h"));
        p.learn(&decided(Some("t1"), GreylistVerdict::Defer, 1001, "h"));
        assert!(!p.lets_through("t1", 1002));
        assert!(p.lets_through("t2", 1002));
        // A whitelisted decision (no triplet) changes nothing...
        p.learn(&decided(None, GreylistVerdict::Pass, 1003, "h"));
        assert!(p.lets_through("t2", 1003));
        // ...but one made with other settings empties the table.
        p.learn(&decided(None, GreylistVerdict::Pass, 1004, "h2"));
        assert!(!p.lets_through("t2", 1004));
    }

    #[test]
    fn the_latest_pass_counts_and_the_table_is_bounded() {
        let p = Passed::new(10, 2);
        p.learn(&decided(Some("t1"), GreylistVerdict::Pass, 90, "h"));
        p.learn(&decided(Some("t1"), GreylistVerdict::Pass, 100, "h"));
        assert!(p.lets_through("t1", 110), "the latest pass counts");
        p.learn(&decided(Some("t1"), GreylistVerdict::Pass, 95, "h"));
        assert!(
            !p.lets_through("t1", 110),
            "a pass stamped earlier: forgotten"
        );
        p.learn(&decided(Some("t1"), GreylistVerdict::Pass, 100, "h"));
        p.learn(&decided(Some("t2"), GreylistVerdict::Pass, 100, "h"));
        assert_eq!(p.len(), 2);
        p.learn(&decided(Some("t3"), GreylistVerdict::Pass, 100, "h"));
        assert_eq!(p.len(), 1, "full: starts again with the newest");
        assert!(p.lets_through("t3", 100) && !p.lets_through("t1", 100));
    }
}
