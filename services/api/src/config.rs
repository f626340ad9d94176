//! `[api]`: where the account API listens, what it accepts and how the
//! `mailfleet account` CLI reaches it.
//!
//! The bearer token exists only as a file (`token_file`): there is no
//! `token` key, so a token is never written into the config, which is
//! shown, copied and checked in far more often than a secret should be
//! (the unknown key is refused, and serde's message lists `token_file`).

use std::{collections::BTreeSet, net::SocketAddr, path::PathBuf};

use mailfleet_scan::rspamd::learn::LearnConfig;
use mailfleet_tls::{ClientTls, ServerTls};
use serde::Deserialize;

use super::errors::ApiError;

/// `[api]`: the account API (`mailfleet api`) and the default address of
/// the `mailfleet account` CLI.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// `ip:port` to listen on. Anything but a loopback address needs
    /// `token_file` (the API refuses to start without it) and should have
    /// `[api.tls]`, or a proxy in front that terminates TLS.
    pub listen: String,
    /// The topic of account events: read from the beginning into the
    /// projection, and written to.
    pub events_topic: String,
    /// A file holding a bearer token (surrounding whitespace ignored).
    /// When set, every request needs `Authorization: Bearer <token>`; the
    /// token is read once at start and never logged. Required when
    /// `listen` is not a loopback address.
    pub token_file: Option<PathBuf>,
    /// `[api.tls]`: serve HTTPS only, with this certificate and key, and
    /// with `client_ca_file` require client certificates (mutual TLS).
    /// Unset: plain HTTP.
    pub tls: Option<ServerTls>,
    /// `[api.client]`: what the `mailfleet account` CLI trusts to sign
    /// the API's certificate (`ca_file`, else the system's roots; the
    /// CLI's `--ca-file` wins) and the certificate it shows to an API
    /// that asks for one. Not read by the server.
    pub client: ClientTls,
    /// Largest request body, bytes; more is answered 413.
    pub max_body_bytes: usize,
    /// How long a write waits for Kafka's acknowledgement (`acks=all`)
    /// before it answers 503; also librdkafka's `message.timeout.ms`.
    pub ack_timeout_ms: u64,
    /// `[api.spam]`: the learn route (`POST /accounts/{account}/spam`),
    /// which `mailfleet spam` reads too. Unset: the route answers 404
    /// and the API opens no blob store.
    pub spam: Option<LearnConfig>,
    /// Every this many seconds, the accounts changed since the last time
    /// go to the projection's snapshot topic (`<events_topic>.snapshot`),
    /// from which the next start loads them before following the events
    /// after it (docs/changelog.md). 0: no snapshots; every start folds
    /// the whole events topic.
    pub snapshot_interval_s: u64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            events_topic: "accounts.events".into(),
            token_file: None,
            tls: None,
            client: ClientTls::default(),
            max_body_bytes: 16 * 1024,
            ack_timeout_ms: 10_000,
            spam: None,
            snapshot_interval_s: 60,
        }
    }
}

impl ApiConfig {
    /// Every problem, naming the key and value.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.listen.parse::<SocketAddr>().is_err() {
            out.push(format!("api.listen = {:?}: not an ip:port", self.listen));
        }
        if let Some(refusal) = self.unprotected() {
            out.push(refusal.to_string());
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
        if self.snapshot_interval_s > 86_400 {
            out.push(format!(
                "api.snapshot_interval_s = {}: must be 0..=86400 (0: no snapshots)",
                self.snapshot_interval_s
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

    /// The refusal to serve a non-loopback `listen` without a bearer
    /// token: anyone who can reach the port could register, block and
    /// read accounts. `None` when `listen` is loopback or a token is set
    /// (or `listen` does not parse, which [`Self::problems`] reports).
    pub fn unprotected(&self) -> Option<ApiError> {
        let addr: SocketAddr = self.listen.parse().ok()?;
        (!addr.ip().is_loopback() && self.token_file.is_none()).then(|| ApiError::Unprotected {
            listen: self.listen.clone(),
        })
    }

    /// `https` with `[api.tls]`, else `http`: the scheme the CLI calls by
    /// default.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
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
            tls: None,
            client: ClientTls::default(),
            ack_timeout_ms: 0,
            snapshot_interval_s: 86_401,
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
            "api.snapshot_interval_s = 86401",
            "api.spam.topic = \"\"",
        ] {
            assert!(problems.contains(expected), "{expected} not in\n{problems}");
        }
    }

    #[test]
    fn api_refuses_a_non_loopback_listen_without_a_token() {
        let at = |listen: &str, token: Option<&str>| ApiConfig {
            listen: listen.into(),
            token_file: token.map(PathBuf::from),
            ..ApiConfig::default()
        };
        for open in ["0.0.0.0:8080", "192.0.2.1:8080", "[::]:8080"] {
            let refusal = at(open, None).unprotected().expect(open).to_string();
            let expected = format!("api.listen = {open:?} is not loopback: set api.token_file");
            assert_eq!(refusal, expected);
            assert!(
                at(open, None).problems().contains(&expected),
                "{open}: {:?}",
                at(open, None).problems()
            );
            assert!(at(open, Some("/t")).unprotected().is_none(), "{open}");
        }
        for closed in ["127.0.0.1:8080", "127.9.9.9:1", "[::1]:8080", "nonsense"] {
            assert!(at(closed, None).unprotected().is_none(), "{closed}");
        }
        // With TLS too: TLS hides the requests, the token says who may send them.
        let tls = ApiConfig {
            tls: Some(ServerTls {
                cert_file: "c.pem".into(),
                key_file: "k.pem".into(),
                client_ca_file: None,
            }),
            ..at("0.0.0.0:8443", None)
        };
        assert!(tls.unprotected().is_some());
        assert_eq!(
            (tls.scheme(), ApiConfig::default().scheme()),
            ("https", "http")
        );
    }

    #[test]
    fn api_tables_parse_and_a_token_in_the_config_is_refused() {
        let cfg: ApiConfig = serde_json::from_value(serde_json::json!({
            "listen": "0.0.0.0:8443",
            "token_file": "/etc/mailfleet/api.token",
            "tls": {"cert_file": "s.pem", "key_file": "s.key", "client_ca_file": "ca.pem"},
            "client": {"ca_file": "ca.pem"},
        }))
        .unwrap();
        let tls = cfg.tls.as_ref().unwrap();
        assert_eq!(tls.client_ca_file.as_deref(), Some("ca.pem".as_ref()));
        assert_eq!(cfg.client.ca_file.as_deref(), Some("ca.pem".as_ref()));
        assert!(cfg.unprotected().is_none());
        let err = serde_json::from_value::<ApiConfig>(serde_json::json!({"token": "t0ps3cret"}))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown field `token`") && err.contains("token_file"),
            "{err}"
        );
        let err = serde_json::from_value::<ApiConfig>(serde_json::json!({"tls": {"cert": "x"}}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cert"), "{err}");
    }

    #[test]
    fn api_plans_include_the_default() {
        let plans = Plans::new(["plus".to_string(), "pro".to_string()], "free");
        assert!(plans.allows("free") && plans.allows("pro") && !plans.allows("gold"));
        assert_eq!(plans.listed(), "free, plus, pro");
        assert_eq!(plans.default_plan(), "free");
    }
}
