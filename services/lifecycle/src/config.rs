use serde::{Deserialize, Serialize};

use mailfleet_runtime::calendar::{add_months, DAY_MS, HOUR_MS};

/// `[consumers.lifecycle]`: the account lifecycle's thresholds and topics.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleConfig {
    /// A registration is active at once; `false` keeps it pending until its
    /// first login (pending accounts have no timer).
    pub activate_on_register: bool,
    /// Calendar months without a login after which an active account
    /// becomes inactive (a day past the month's end is clamped to it).
    pub inactive_after_months: u32,
    /// Days added after `inactive_after_months`.
    pub inactive_after_days: u32,
    /// Hours an inactive account has, after the notice, to log in or be
    /// reactivated before its deletion starts.
    pub grace_period_hours: u32,
    /// Topic for `AccountStatusChanged` (the deletion saga keys off
    /// `to = DELETING` there); also the topic this consumer reads.
    pub events_topic: String,
    /// Topic for `NotificationRequested` (the "deactivated" notice).
    pub notify_topic: String,
    /// Compacted topic that gets a copy of every `AccountStatusChanged`
    /// (and one for a pending registration): the latest per account is
    /// what the LMTP server checks at RCPT.
    pub status_topic: String,
    /// The hash of the recorded settings this config was built from
    /// (`ConfigChanged`); `None` for the config file's own.
    #[serde(skip)]
    pub settings_hash: Option<String>,
}

/// The settings the lifecycle's transitions depend on: what a
/// `ConfigChanged` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleRules {
    pub activate_on_register: bool,
    pub inactive_after_months: u32,
    pub inactive_after_days: u32,
    pub grace_period_hours: u32,
}

impl LifecycleConfig {
    /// The decision-relevant settings.
    pub fn rules(&self) -> LifecycleRules {
        LifecycleRules {
            activate_on_register: self.activate_on_register,
            inactive_after_months: self.inactive_after_months,
            inactive_after_days: self.inactive_after_days,
            grace_period_hours: self.grace_period_hours,
        }
    }

    /// This config with recorded `rules` (whose settings hash is `hash`).
    pub fn with_rules(&self, rules: LifecycleRules, hash: String) -> LifecycleConfig {
        LifecycleConfig {
            activate_on_register: rules.activate_on_register,
            inactive_after_months: rules.inactive_after_months,
            inactive_after_days: rules.inactive_after_days,
            grace_period_hours: rules.grace_period_hours,
            settings_hash: Some(hash),
            ..self.clone()
        }
    }
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            activate_on_register: true,
            inactive_after_months: 3,
            inactive_after_days: 2,
            grace_period_hours: 24,
            events_topic: "accounts.events".into(),
            notify_topic: "notify.requests".into(),
            status_topic: "accounts.status".into(),
            settings_hash: None,
        }
    }
}

/// Upper bounds that keep every threshold far inside `i64` milliseconds.
const MAX_MONTHS: u32 = 1200;
const MAX_DAYS: u32 = 36_600;
const MAX_HOURS: u32 = 876_000;

impl LifecycleConfig {
    /// When an active account whose inactivity clock started at `clock`
    /// (ms) becomes inactive, if no login comes first.
    pub fn inactive_at(&self, clock: i64) -> i64 {
        add_months(clock, self.inactive_after_months)
            .saturating_add(i64::from(self.inactive_after_days) * DAY_MS)
    }

    /// When an account that became inactive at `since` (ms) starts deletion.
    pub fn deleting_at(&self, since: i64) -> i64 {
        since.saturating_add(self.grace_ms())
    }

    /// The grace period, ms.
    pub fn grace_ms(&self) -> i64 {
        i64::from(self.grace_period_hours) * HOUR_MS
    }

    /// Every problem, naming the key and value.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let key = |k: &str| format!("consumers.lifecycle.{k}");
        for (k, v, max) in [
            (
                "inactive_after_months",
                self.inactive_after_months,
                MAX_MONTHS,
            ),
            ("inactive_after_days", self.inactive_after_days, MAX_DAYS),
            ("grace_period_hours", self.grace_period_hours, MAX_HOURS),
        ] {
            if v > max {
                out.push(format!("{} = {v}: must be <= {max}", key(k)));
            }
        }
        if self.inactive_after_months == 0 && self.inactive_after_days == 0 {
            out.push(format!(
                "{} = 0 and {} = 0: an account would go inactive at once",
                key("inactive_after_months"),
                key("inactive_after_days")
            ));
        }
        if self.grace_period_hours == 0 {
            out.push(format!(
                "{} = 0: must be >= 1 (the notice promises time to respond)",
                key("grace_period_hours")
            ));
        }
        for (k, v) in [
            ("events_topic", &self.events_topic),
            ("notify_topic", &self.notify_topic),
            ("status_topic", &self.status_topic),
        ] {
            if v.trim().is_empty() {
                out.push(format!("{} = {v:?}: is empty", key(k)));
            }
        }
        out
    }
}

impl mailfleet_runtime::settings::RecordedRules for LifecycleConfig {
    type Rules = LifecycleRules;

    fn rules(&self) -> LifecycleRules {
        LifecycleConfig::rules(self)
    }

    fn with_rules(&self, rules: LifecycleRules, hash: String) -> LifecycleConfig {
        LifecycleConfig::with_rules(self, rules, hash)
    }

    fn problems(&self) -> Vec<String> {
        LifecycleConfig::problems(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_have_no_problems_and_every_problem_names_key_and_value() {
        assert_eq!(LifecycleConfig::default().problems(), Vec::<String>::new());
        let bad = LifecycleConfig {
            inactive_after_months: 0,
            inactive_after_days: 0,
            grace_period_hours: 0,
            events_topic: " ".into(),
            notify_topic: String::new(),
            ..LifecycleConfig::default()
        };
        let problems = bad.problems().join("\n");
        for expected in [
            "consumers.lifecycle.inactive_after_months = 0 and consumers.lifecycle.inactive_after_days = 0",
            "consumers.lifecycle.grace_period_hours = 0",
            "consumers.lifecycle.events_topic = \" \"",
            "consumers.lifecycle.notify_topic = \"\"",
        ] {
            assert!(problems.contains(expected), "{expected} not in\n{problems}");
        }
        let huge = LifecycleConfig {
            inactive_after_months: 5000,
            ..LifecycleConfig::default()
        };
        assert_eq!(
            huge.problems(),
            ["consumers.lifecycle.inactive_after_months = 5000: must be <= 1200"]
        );
    }

    #[test]
    fn unknown_keys_are_refused_and_missing_ones_default() {
        use serde::de::value::{Error, MapDeserializer};
        let read = |entries: Vec<(&'static str, u32)>| {
            LifecycleConfig::deserialize(MapDeserializer::<_, Error>::new(entries.into_iter()))
        };
        let cfg = read(vec![("grace_period_hours", 48)]).unwrap();
        assert_eq!(
            cfg,
            LifecycleConfig {
                grace_period_hours: 48,
                ..LifecycleConfig::default()
            }
        );
        let err = read(vec![("grace_hours", 48)]).unwrap_err().to_string();
        assert!(err.contains("unknown field `grace_hours`"), "{err}");
    }
}
