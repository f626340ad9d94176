//! `[consumers.outbound]`: the limits per plan, the abuse thresholds and
//! the topics. Every default is in [`OutboundConfig::default`]; the
//! figures and where they come from are in `docs/submission.md`
//! ("Outbound limits").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The most distinct recipients one account's day window remembers: the
/// bound of its state (16 bytes each). A `distinct_recipients_per_day`
/// limit must be below it.
pub const MAX_TRACKED_RECIPIENTS: u32 = 10_000;

/// `[consumers.outbound]`: the outbound limits consumer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// The plan of an account whose `AccountRegistered` or `PlanChanged`
    /// this consumer has not seen (it predates the consumer).
    pub default_plan: String,
    /// The limits of each plan, `[consumers.outbound.plans.<plan>]`.
    /// Setting any plan replaces the whole built-in table: list every plan
    /// the account API hands out (`free`, `plus`, `pro` by default).
    pub plans: BTreeMap<String, PlanLimits>,
    /// Deferrals for limits within 60 minutes after which the account is
    /// taken as hijacked: `AccountBlocked { ABUSE }` and an `AdminAlert`,
    /// once until it is unblocked. 0 turns this trigger off.
    pub abuse_deferrals_per_hour: u32,
    /// Messages relayed in 24 hours, as a multiple of the plan's
    /// `messages_per_day`, that also count as abuse (only reachable when
    /// mail is submitted around the policy check). 0 turns it off.
    pub abuse_daily_messages_factor: u32,
    /// Topic `SubmissionDecided` goes to (the policy server follows it).
    pub decisions_topic: String,
    /// Topic `AccountBlocked` goes to; also the account topic this
    /// consumer reads plans and blocks from.
    pub accounts_topic: String,
    /// Topic `AdminAlert` goes to.
    pub alerts_topic: String,
    /// The hash of the recorded settings this config was built from
    /// (`ConfigChanged`); `None` for the config file's own.
    #[serde(skip)]
    pub settings_hash: Option<String>,
}

/// One plan's limits. A limit of 0 is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanLimits {
    /// Recipients passed in any 60 minutes (each RCPT of each message).
    pub recipients_per_hour: u32,
    /// Different recipient addresses passed in any 24 hours; at most
    /// [`MAX_TRACKED_RECIPIENTS`].
    pub distinct_recipients_per_day: u32,
    /// Messages relayed (`MessageSubmitted` ACCEPTED) in any 24 hours.
    pub messages_per_day: u32,
    /// Bytes of those messages in any 24 hours; a declared `SIZE` that
    /// would cross it is deferred before the data is sent.
    pub bytes_per_day: u64,
}

/// The settings the decisions depend on: what a `ConfigChanged` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundRules {
    pub default_plan: String,
    pub plans: BTreeMap<String, PlanLimits>,
    pub abuse_deferrals_per_hour: u32,
    pub abuse_daily_messages_factor: u32,
}

const MB: u64 = 1_000_000;

impl Default for OutboundConfig {
    fn default() -> Self {
        let plan =
            |recipients_per_hour, distinct_recipients_per_day, messages_per_day, mb| PlanLimits {
                recipients_per_hour,
                distinct_recipients_per_day,
                messages_per_day,
                bytes_per_day: mb * MB,
            };
        Self {
            default_plan: "free".into(),
            plans: BTreeMap::from([
                ("free".to_string(), plan(100, 200, 500, 250)),
                ("plus".to_string(), plan(500, 1_000, 2_000, 1_000)),
                ("pro".to_string(), plan(1_000, 2_000, 5_000, 2_000)),
            ]),
            abuse_deferrals_per_hour: 300,
            abuse_daily_messages_factor: 2,
            decisions_topic: "submission.decisions".into(),
            accounts_topic: "accounts.events".into(),
            alerts_topic: "admin.alerts".into(),
            settings_hash: None,
        }
    }
}

impl OutboundConfig {
    /// The decision-relevant settings.
    pub fn rules(&self) -> OutboundRules {
        OutboundRules {
            default_plan: self.default_plan.clone(),
            plans: self.plans.clone(),
            abuse_deferrals_per_hour: self.abuse_deferrals_per_hour,
            abuse_daily_messages_factor: self.abuse_daily_messages_factor,
        }
    }

    /// This config with recorded `rules` (whose settings hash is `hash`).
    pub fn with_rules(&self, rules: OutboundRules, hash: String) -> OutboundConfig {
        OutboundConfig {
            default_plan: rules.default_plan,
            plans: rules.plans,
            abuse_deferrals_per_hour: rules.abuse_deferrals_per_hour,
            abuse_daily_messages_factor: rules.abuse_daily_messages_factor,
            settings_hash: Some(hash),
            ..self.clone()
        }
    }

    /// The limits of `plan`, or of the default plan for `None`.
    pub fn limits(&self, plan: Option<&str>) -> Option<(&str, &PlanLimits)> {
        let name = plan.unwrap_or(&self.default_plan);
        self.plans.get_key_value(name).map(|(k, v)| (k.as_str(), v))
    }

    /// Every problem, naming the key and value.
    pub fn problems(&self) -> Vec<String> {
        let k = "consumers.outbound";
        let mut out = Vec::new();
        if !self.plans.contains_key(&self.default_plan) {
            out.push(format!(
                "{k}.default_plan = {:?}: not in {k}.plans ({:?})",
                self.default_plan,
                self.plans.keys().collect::<Vec<_>>()
            ));
        }
        for (name, limits) in &self.plans {
            if name.trim().is_empty() {
                out.push(format!("{k}.plans: a plan named {name:?}"));
            }
            if limits.distinct_recipients_per_day > MAX_TRACKED_RECIPIENTS {
                out.push(format!(
                    "{k}.plans.{name}.distinct_recipients_per_day = {}: must be <= {MAX_TRACKED_RECIPIENTS}",
                    limits.distinct_recipients_per_day
                ));
            }
        }
        for (key, topic) in [
            ("decisions_topic", &self.decisions_topic),
            ("accounts_topic", &self.accounts_topic),
            ("alerts_topic", &self.alerts_topic),
        ] {
            if topic.trim().is_empty() {
                out.push(format!("{k}.{key} = {topic:?}: must not be empty"));
            }
        }
        out
    }
}

impl mailfleet_runtime::settings::RecordedRules for OutboundConfig {
    type Rules = OutboundRules;

    fn rules(&self) -> OutboundRules {
        OutboundConfig::rules(self)
    }

    fn with_rules(&self, rules: OutboundRules, hash: String) -> OutboundConfig {
        OutboundConfig::with_rules(self, rules, hash)
    }

    fn problems(&self) -> Vec<String> {
        OutboundConfig::problems(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_every_problem_names_its_key_and_value() {
        assert_eq!(OutboundConfig::default().problems(), Vec::<String>::new());
        let mut cfg = OutboundConfig {
            default_plan: "gold".into(),
            decisions_topic: String::new(),
            ..OutboundConfig::default()
        };
        if let Some(free) = cfg.plans.get_mut("free") {
            free.distinct_recipients_per_day = 20_000;
        }
        let problems = cfg.problems().join("\n");
        assert!(
            problems.contains("consumers.outbound.default_plan = \"gold\""),
            "{problems}"
        );
        assert!(
            problems.contains("plans.free.distinct_recipients_per_day = 20000"),
            "{problems}"
        );
        assert!(
            problems.contains("consumers.outbound.decisions_topic = \"\""),
            "{problems}"
        );
    }

    #[test]
    fn recorded_rules_round_trip_and_keep_the_topics() {
        let file = OutboundConfig {
            alerts_topic: "alerts".into(),
            ..OutboundConfig::default()
        };
        let mut rules = file.rules();
        rules.abuse_deferrals_per_hour = 7;
        let cfg = file.with_rules(rules.clone(), "h".into());
        assert_eq!(cfg.rules(), rules);
        assert_eq!(cfg.alerts_topic, "alerts");
        assert_eq!(cfg.settings_hash.as_deref(), Some("h"));
        assert_eq!(cfg.limits(None).map(|(p, _)| p), Some("free"));
        assert!(cfg.limits(Some("gold")).is_none());
    }

    #[test]
    fn a_plan_table_needs_every_limit() {
        let text = "[plans.free]\nrecipients_per_hour = 5\n";
        let err = toml_err(text);
        assert!(err.contains("distinct_recipients_per_day"), "{err}");
        assert!(toml_err("recipients_per_hour = 5\n").contains("recipients_per_hour"));
    }

    fn toml_err(text: &str) -> String {
        toml::from_str::<OutboundConfig>(text)
            .map(|_| String::new())
            .unwrap_or_else(|e| e.to_string())
    }
}
