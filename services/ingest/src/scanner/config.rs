use mailfleet_scan::{clamd::ClamdConfig, policy::PolicyConfig};
use serde::Deserialize;

/// `[consumers.scanner]`: the scanner consumer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScannerConfig {
    /// Scan with clamd. Off, only the attachment policy runs: for sites
    /// without clamd, never a silent fallback when clamd is down.
    pub use_clamd: bool,
    /// Where clamd listens.
    pub clamd: ClamdConfig,
    /// The attachment policy: banned names, types and archive limits.
    pub policy: PolicyConfig,
    /// Domains whose addresses are the service's own accounts: a virus
    /// sent from one of them blocks the sender.
    pub local_domains: Vec<String>,
    /// Topic the verdicts go to.
    pub scanned_topic: String,
    /// Topic `AccountBlocked` goes to.
    pub accounts_topic: String,
    /// Topic `AdminAlert` goes to.
    pub alerts_topic: String,
}

impl Default for ScannerConfig {
    fn default() -> Self {
        Self {
            use_clamd: true,
            clamd: ClamdConfig::default(),
            policy: PolicyConfig::default(),
            local_domains: Vec::new(),
            scanned_topic: "mail.scanned".into(),
            accounts_topic: "accounts.events".into(),
            alerts_topic: "admin.alerts".into(),
        }
    }
}

impl ScannerConfig {
    /// Every problem, naming the key and value.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let prefix = |p: String| format!("consumers.scanner.{p}");
        if self.use_clamd {
            out.extend(self.clamd.problems().into_iter().map(prefix));
        }
        if let Err(problems) = self.policy.validate() {
            out.extend(
                problems
                    .into_iter()
                    .map(|p| format!("consumers.scanner.policy.{p}")),
            );
        }
        for domain in &self.local_domains {
            if domain.is_empty() || domain.contains('@') || domain.contains(char::is_whitespace) {
                out.push(format!(
                    "consumers.scanner.local_domains: {domain:?} is not a domain"
                ));
            }
        }
        for (key, topic) in [
            ("scanned_topic", &self.scanned_topic),
            ("accounts_topic", &self.accounts_topic),
            ("alerts_topic", &self.alerts_topic),
        ] {
            if topic.is_empty() {
                out.push(format!("consumers.scanner.{key} is empty"));
            }
        }
        out
    }

    /// Whether `address` belongs to one of the local domains.
    pub fn is_local(&self, address: &str) -> bool {
        address.rsplit_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && self
                    .local_domains
                    .iter()
                    .any(|d| d.eq_ignore_ascii_case(domain))
        })
    }
}
