//! `[api]`: where the account API listens and what it accepts.

use std::{collections::BTreeSet, path::PathBuf};

use mailfleet_scan::rspamd::learn::LearnConfig;
use serde::Deserialize;

/// `[api]`: the account API (`mailfleet api`) and the default address of
/// the `mailfleet account` CLI.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// `ip:port` to listen on; keep it on loopback or behind a proxy that
    /// terminates TLS (the API speaks plain HTTP).
    pub listen: String,
    /// The topic of account events: read from the beginning into the
    /// projection, and written to.
    pub events_topic: String,
    /// A file holding a bearer token (surrounding whitespace ignored).
    /// When set, every request needs `Authorization: Bearer <token>`; the
    /// token is read once at start and never logged.
    pub token_file: Option<PathBuf>,
    /// Largest request body, bytes; more is answered 413.
    pub max_body_bytes: usize,
    /// How long a write waits for Kafka's acknowledgement (`acks=all`)
    /// before it answers 503; also librdkafka's `message.timeout.ms`.
    pub ack_timeout_ms: u64,
    /// `[api.spam]`: the learn route (`POST /accounts/{account}/spam`),
    /// which `mailfleet spam` reads too. Unset: the route answers 404
    /// and the API opens no blob store.
    pub spam: Option<LearnConfig>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            events_topic: "accounts.events".into(),
            token_file: None,
            max_body_bytes: 16 * 1024,
            ack_timeout_ms: 10_000,
            spam: None,
        }
    }
}

impl ApiConfig {
    /// Every problem, naming the key and value.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            out.push(format!("api.listen = {:?}: not an ip:port", self.listen));
        }
        if self.events_topic.trim().is_empty() {
            out.push(format!(
                "api.events_topic = {:?}: is empty",
                self.events_topic
            ));
        }
        if self.max_body_bytes < 256 {
            out.push(format!(
                "api.max_body_bytes = {}: must be >= 256 (a registration does not fit in less)",
                self.max_body_bytes
            ));
        }
        if self.ack_timeout_ms == 0 {
            out.push("api.ack_timeout_ms = 0: must be > 0".into());
        }
        if let Some(spam) = &self.spam {
            out.extend(spam.problems("api.spam"));
        }
        if let Some(path) = &self.token_file {
            if !path.is_file() {
                out.push(format!(
                    "api.token_file = {:?}: no such file",
                    path.display().to_string()
                ));
            }
        }
        out
    }
}

/// The plans an account may have: the storage writer's plan table
/// (`[consumers.storage.plans]`), so the API never accepts a plan the
/// quota check does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plans {
    allowed: BTreeSet<String>,
    default: String,
}

impl Plans {
    /// `allowed` plan names and the one a registration without a plan
    /// gets (it need not be listed: it is added).
    pub fn new(allowed: impl IntoIterator<Item = String>, default: &str) -> Self {
        let mut allowed: BTreeSet<String> = allowed.into_iter().collect();
        allowed.insert(default.to_string());
        Self {
            allowed,
            default: default.to_string(),
        }
    }

    /// The plan of a registration that names none.
    pub fn default_plan(&self) -> &str {
        &self.default
    }

    /// Whether `plan` is known.
    pub fn allows(&self, plan: &str) -> bool {
        self.allowed.contains(plan)
    }

    /// The known plans, comma-separated, for error messages.
    pub fn listed(&self) -> String {
        self.allowed.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_config_defaults_are_valid_and_problems_name_key_and_value() {
        assert_eq!(ApiConfig::default().problems(), Vec::<String>::new());
        let bad = ApiConfig {
            listen: "localhost".into(),
            events_topic: " ".into(),
            token_file: Some("/no/such/token".into()),
            max_body_bytes: 10,
            ack_timeout_ms: 0,
            spam: Some(LearnConfig {
                topic: String::new(),
                ..LearnConfig::default()
            }),
        };
        let problems = bad.problems().join("\n");
        for expected in [
            "api.listen = \"localhost\"",
            "api.events_topic = \" \"",
            "api.token_file = \"/no/such/token\"",
            "api.max_body_bytes = 10",
            "api.ack_timeout_ms = 0",
            "api.spam.topic = \"\"",
        ] {
            assert!(problems.contains(expected), "{expected} not in\n{problems}");
        }
    }

    #[test]
    fn api_plans_include_the_default() {
        let plans = Plans::new(["plus".to_string(), "pro".to_string()], "free");
        assert!(plans.allows("free") && plans.allows("pro") && !plans.allows("gold"));
        assert_eq!(plans.listed(), "free, plus, pro");
        assert_eq!(plans.default_plan(), "free");
    }
}
